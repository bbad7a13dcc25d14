//! jsonb's functions: `x::jsonb` is `jsonb(x)`, `j -> k` is `jsonb_get(j, k)`, `j ->> k`
//! is `jsonb_get_text(j, k)` (spellings rewrite the operators). Values are kept in jsonb's
//! text form (`weir_engine::jsonb`); the server reports a jsonb column as OID 3802.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use weir_engine::jsonb::{Json, Key, parse};
pub use weir_engine::jsonb::{is_jsonb, jsonb_field, normalize};

use crate::error::SqlError;

/// The error Postgres gives for text that is not JSON (22P02), with what is wrong.
pub(crate) fn invalid(text: &str, detail: &str) -> DataFusionError {
    let shown: String = text.chars().take(64).collect();
    SqlError::new(
        "22P02",
        format!("invalid input syntax for type json: \"{shown}\" ({detail})"),
    )
    .into()
}

/// The jsonb functions: the cast, `->` and `->>`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonbFunction {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for JsonbFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        Ok(Arc::new(if self.name == "jsonb_get_text" {
            Field::new(self.name, DataType::Utf8, true)
        } else {
            jsonb_field(self.name, true)
        }))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let text = datafusion::arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
        let text = text.as_string::<i32>();
        let out: StringArray = match self.name {
            "jsonb" => (0..text.len())
                .map(|i| {
                    (!text.is_null(i))
                        .then(|| normalize(text.value(i)).map_err(|e| invalid(text.value(i), &e)))
                        .transpose()
                })
                .collect::<Result<_>>()?,
            _ => {
                let keys = lookup_keys(&arrays[1])?;
                (0..text.len())
                    .map(|i| {
                        if text.is_null(i) {
                            return Ok(None);
                        }
                        let Some(key) = &keys[i] else { return Ok(None) };
                        let json = parse(text.value(i)).map_err(|e| invalid(text.value(i), &e))?;
                        let mut out = String::new();
                        match json.get(key) {
                            None => return Ok(None),
                            Some(Json::Null) if self.name == "jsonb_get_text" => return Ok(None),
                            Some(Json::String(s)) if self.name == "jsonb_get_text" => {
                                out.push_str(s)
                            }
                            Some(v) => v.write(&mut out),
                        }
                        Ok(Some(out))
                    })
                    .collect::<Result<_>>()?
            }
        };
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// The keys of `->` and `->>`: text names a member, an integer an item.
fn lookup_keys(keys: &ArrayRef) -> Result<Vec<Option<Key>>> {
    if keys.data_type().is_integer() {
        let ints = datafusion::arrow::compute::cast(keys, &DataType::Int64)?;
        let ints = ints.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        return Ok((0..ints.len())
            .map(|i| (!ints.is_null(i)).then(|| Key::Index(ints.value(i))))
            .collect());
    }
    let names = datafusion::arrow::compute::cast(keys, &DataType::Utf8)?;
    let names = names.as_string::<i32>();
    Ok((0..names.len())
        .map(|i| (!names.is_null(i)).then(|| Key::Name(names.value(i).to_string())))
        .collect())
}

/// `jsonb(text)`, `jsonb_get(jsonb, key)` and `jsonb_get_text(jsonb, key)`.
pub(crate) fn udfs() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(JsonbFunction {
            name: "jsonb",
            signature: Signature::any(1, Volatility::Immutable),
        }),
        ScalarUDF::new_from_impl(JsonbFunction {
            name: "jsonb_get",
            signature: Signature::any(2, Volatility::Immutable),
        }),
        ScalarUDF::new_from_impl(JsonbFunction {
            name: "jsonb_get_text",
            signature: Signature::any(2, Volatility::Immutable),
        }),
    ]
}
