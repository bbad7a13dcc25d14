//! Postgres functions clients call that DataFusion and the pg_catalog emulation lack:
//! `version()` (weir's own text), `to_regtype(name)` (psycopg's type lookup),
//! `current_setting` and `session_user` (with the session's value added by the server), and
//! `pg_function_is_visible(oid)` and `pg_type_is_visible(oid)` (psql's `\df`, `\dT`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{
    ColumnarValue, ScalarUDF, Signature, SimpleScalarUDF, TypeSignature, Volatility, create_udf,
};
use datafusion::scalar::ScalarValue;

use crate::database::SERVER_VERSION;

/// Type names and their Postgres OIDs, for the types weir has.
const TYPE_OIDS: &[(&str, i32)] = &[
    ("bool", 16),
    ("boolean", 16),
    ("bytea", 17),
    ("int8", 20),
    ("bigint", 20),
    ("int2", 21),
    ("smallint", 21),
    ("int4", 23),
    ("integer", 23),
    ("int", 23),
    ("text", 25),
    ("json", 114),
    ("float4", 700),
    ("real", 700),
    ("float8", 701),
    ("double precision", 701),
    ("varchar", 1043),
    ("character varying", 1043),
    ("date", 1082),
    ("time", 1083),
    ("timestamp", 1114),
    ("timestamp without time zone", 1114),
    ("timestamptz", 1184),
    ("timestamp with time zone", 1184),
    ("interval", 1186),
    ("numeric", 1700),
    ("decimal", 1700),
    ("jsonb", 3802),
];

pub(crate) fn version_udf() -> ScalarUDF {
    let text = format!(
        "PostgreSQL {SERVER_VERSION} (weir {})",
        env!("CARGO_PKG_VERSION")
    );
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_args| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    )
}

/// `current_setting(name, value)`: `value`. The server adds the session's value of `name`
/// to each `current_setting(name)` it is sent, since sessions share this planner.
pub(crate) fn current_setting_udf() -> ScalarUDF {
    create_udf(
        "current_setting",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args| Ok(args[1].clone())),
    )
}

/// `pg_get_userbyid(oid)`: every relation, schema and database is owned by the bootstrap
/// superuser `weir` (weir keeps no owner per object; superusers create them).
pub(crate) fn user_by_id_udf() -> ScalarUDF {
    constant_udf(
        "pg_get_userbyid",
        vec![DataType::Int64],
        ScalarValue::from(crate::roles::BOOTSTRAP_ROLE),
    )
}

/// `session_user` (what `current_user` and `user` are planned as): the server adds the
/// session's user as an argument; without one (no session), the bootstrap superuser.
pub(crate) fn session_user_udf() -> ScalarUDF {
    let signature = Signature::one_of(
        vec![
            TypeSignature::Exact(vec![]),
            TypeSignature::Exact(vec![DataType::Utf8]),
        ],
        Volatility::Stable,
    );
    ScalarUDF::from(SimpleScalarUDF::new_with_signature(
        "session_user",
        signature,
        DataType::Utf8,
        Arc::new(|args| {
            Ok(args.first().cloned().unwrap_or_else(|| {
                ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                    crate::roles::BOOTSTRAP_ROLE.to_string(),
                )))
            }))
        }),
    ))
}

/// `pg_function_is_visible(oid)`, `pg_type_is_visible(oid)` and `pg_collation_is_visible`:
/// true, as every function, type and collation weir has is in the search path.
pub(crate) fn is_visible_udf(name: &str) -> ScalarUDF {
    constant_udf(
        name,
        vec![DataType::Int64],
        ScalarValue::Boolean(Some(true)),
    )
}

/// A catalog function of `args` that answers `answer` whatever they are.
fn constant_udf(name: &str, args: Vec<DataType>, answer: ScalarValue) -> ScalarUDF {
    create_udf(
        name,
        args,
        answer.data_type(),
        Volatility::Stable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(answer.clone()))),
    )
}

/// Catalog functions that describe what weir never has, so they answer NULL:
/// `pg_get_function_result(oid)` and `pg_get_function_arguments(oid)` (psql's `\df`: pg_proc
/// lists no user-defined functions), and `col_description(oid, int)` and
/// `obj_description(oid, name)` and `shobj_description` (`\d+`, `\du+`: weir keeps no
/// comments), `pg_get_serial_sequence(table, column)` (no sequences), `pg_get_expr` and
/// `pg_get_partkeydef`.
pub(crate) fn nothing_to_describe_udfs() -> Vec<ScalarUDF> {
    [
        ("pg_get_function_result", vec![DataType::Int64]),
        ("pg_get_function_arguments", vec![DataType::Int64]),
        ("col_description", vec![DataType::Int64, DataType::Int32]),
        ("obj_description", vec![DataType::Int64, DataType::Utf8]),
        ("shobj_description", vec![DataType::Int64, DataType::Utf8]),
        (
            "pg_get_serial_sequence",
            vec![DataType::Utf8, DataType::Utf8],
        ),
    ]
    .into_iter()
    .map(|(name, args)| constant_udf(name, args, ScalarValue::Utf8(None)))
    .chain(["pg_get_expr", "pg_get_partkeydef"].map(|name| {
        ScalarUDF::new_from_impl(NullOfAnyArguments {
            name,
            signature: Signature::variadic_any(Volatility::Stable),
        })
    }))
    .collect()
}

/// `pg_get_expr(expr, relation[, pretty])` and `pg_get_partkeydef(relation)`: NULL. weir's
/// catalog has no expressions to decompile (its `adbin`, `relpartbound`, `indpred` and
/// `indexprs` are NULL, and so is `pg_get_expr` of NULL in Postgres) and no partitioned
/// tables (DBeaver reads both for every relation).
#[derive(Debug, PartialEq, Eq, Hash)]
struct NullOfAnyArguments {
    name: &'static str,
    signature: Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for NullOfAnyArguments {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        _args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))
    }
}

/// `to_regtype(name)`: the type's OID, or NULL when weir has no such type.
pub(crate) fn to_regtype_udf() -> ScalarUDF {
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(|args| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = cast(&arrays[0], &DataType::Utf8)?;
            let names = names
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal("to_regtype needs text".into())
                })?;
            let oids: Int32Array = names
                .iter()
                .map(|n| {
                    let n = n?
                        .trim()
                        .trim_start_matches("pg_catalog.")
                        .to_ascii_lowercase();
                    TYPE_OIDS
                        .iter()
                        .find(|(name, _)| *name == n)
                        .map(|(_, oid)| *oid)
                })
                .collect();
            let out: ArrayRef = Arc::new(oids);
            Ok(
                if out.len() == 1 && args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
                    ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
                } else {
                    ColumnarValue::Array(out)
                },
            )
        }),
    )
}

/// `pg_size_pretty(bigint)`: a size as Postgres 15 prints it (`10239 bytes`, `10 kB`,
/// `10 MB`, ...: a unit below 10240 of it, rounded half away from zero).
pub(crate) fn size_pretty_udf() -> ScalarUDF {
    create_udf(
        "pg_size_pretty",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let sizes = arrays[0].as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let pretty: StringArray = sizes.iter().map(|s| s.map(size_pretty)).collect();
            Ok(ColumnarValue::Array(Arc::new(pretty)))
        }),
    )
}

/// Postgres's `pg_size_pretty` (src/backend/utils/adt/dbsize.c): units with the bits that
/// make one of them, and whether the figure is rounded.
fn size_pretty(size: i64) -> String {
    const UNITS: [(&str, i64, bool, u32); 6] = [
        ("bytes", 10 * 1024, false, 0),
        ("kB", 20 * 1024 - 1, true, 10),
        ("MB", 20 * 1024 - 1, true, 20),
        ("GB", 20 * 1024 - 1, true, 30),
        ("TB", 20 * 1024 - 1, true, 40),
        ("PB", 20 * 1024 - 1, true, 50),
    ];
    let half_rounded = |x: i64| (x + if x < 0 { -1 } else { 1 }) / 2;
    let mut size = size;
    for (i, &(name, limit, round, bits)) in UNITS.iter().enumerate() {
        let Some(&(_, _, next_round, next_bits)) = UNITS.get(i + 1) else {
            return format!("{} {name}", if round { half_rounded(size) } else { size });
        };
        if size.unsigned_abs() < limit as u64 {
            return format!("{} {name}", if round { half_rounded(size) } else { size });
        }
        let shift = next_bits - bits - u32::from(next_round) + u32::from(round);
        size /= 1i64 << shift;
    }
    unreachable!("the last unit returns")
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes_print_as_postgres_prints_them() {
        for (size, pretty) in [
            (0, "0 bytes"),
            (10239, "10239 bytes"),
            (10240, "10 kB"),
            (-10240, "-10 kB"),
            (10_485_247, "10239 kB"),
            (10_485_759, "10 MB"),
            (1_000_000_000, "954 MB"),
            (i64::MAX, "8192 PB"),
        ] {
            assert_eq!(super::size_pretty(size), pretty, "{size}");
        }
    }
}

/// `like_pattern(pattern, escape)`: a LIKE pattern written with `escape` as its escape
/// character, rewritten with backslash (the only escape DataFusion reads).
pub(crate) fn like_pattern_udf() -> ScalarUDF {
    create_udf(
        "like_pattern",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let patterns = arrays[0].as_string::<i32>();
            let escapes = arrays[1].as_string::<i32>();
            let out: StringArray = patterns
                .iter()
                .zip(escapes.iter())
                .map(|(p, e)| {
                    let p = p?;
                    Some(match e.and_then(|e| e.chars().next()) {
                        Some(c) => like_pattern(p, c),
                        None => p.replace('\\', "\\\\"),
                    })
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    )
}

/// `pg_data_type(arrow_type)`: the Postgres name of a type DataFusion's
/// `information_schema.columns.data_type` spells the Arrow way (`Int64` -> `bigint`,
/// `Timestamp(ns)` -> `timestamp without time zone`), without length or precision, as
/// Postgres's `data_type` is; `ARRAY` for lists. Other types keep their Arrow name.
pub(crate) fn pg_data_type_udf() -> ScalarUDF {
    create_udf(
        PG_DATA_TYPE,
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let out: StringArray = arrays[0]
                .as_string::<i32>()
                .iter()
                .map(|t| t.map(pg_data_type))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    )
}

/// The name `pg_data_type_udf` registers.
pub(crate) const PG_DATA_TYPE: &str = "pg_data_type";

/// The Postgres name of the Arrow type DataFusion writes as `arrow` (its `Display`); a name
/// that does not parse is kept.
fn pg_data_type(arrow: &str) -> String {
    match arrow.parse::<DataType>() {
        Ok(ty) => crate::types::information_schema_type_name(&ty),
        Err(_) => arrow.to_string(),
    }
}

#[cfg(test)]
mod data_type_tests {
    #[test]
    fn arrow_names_become_postgres_names() {
        for (arrow, pg) in [
            ("Int64", "bigint"),
            ("Utf8", "character varying"),
            ("Timestamp(ns)", "timestamp without time zone"),
            ("Timestamp(µs, \"UTC\")", "timestamp with time zone"),
            ("Decimal128(10, 2)", "numeric"),
            ("List(Int32)", "ARRAY"),
            ("UInt32", "bigint"),
            ("Duration(ms)", "interval"),
            ("Struct(a Int64)", "Struct(a Int64)"),
        ] {
            assert_eq!(super::pg_data_type(arrow), pg, "{arrow}");
        }
    }
}

/// `pattern` with escape character `escape` as a backslash-escaped LIKE pattern: an
/// escaped character keeps its escape (as a backslash), a backslash becomes literal.
pub(crate) fn like_pattern(pattern: &str, escape: char) -> String {
    let mut out = String::with_capacity(pattern.len() + 2);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c == escape {
            out.push('\\');
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod like_tests {
    #[test]
    fn escapes_become_backslashes() {
        assert_eq!(super::like_pattern("pg/_%", '/'), "pg\\_%");
        assert_eq!(super::like_pattern("a//b", '/'), "a\\/b");
        assert_eq!(super::like_pattern("a\\b", '/'), "a\\\\b");
    }
}

/// `json_build_object(key, value, ...)`: a JSON object of the pairs, as Postgres writes it
/// (`{"a" : 1, "b" : "x"}`); numbers and booleans as themselves, NULL as `null`, other
/// values as their text in quotes.
pub(crate) fn json_build_object_udf() -> ScalarUDF {
    ScalarUDF::from(SimpleScalarUDF::new_with_signature(
        "json_build_object",
        Signature::new(TypeSignature::VariadicAny, Volatility::Immutable),
        DataType::Utf8,
        Arc::new(|args| {
            if args.len() % 2 == 1 {
                return datafusion::common::exec_err!(
                    "argument list must have even number of elements"
                );
            }
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let rows = arrays.first().map_or(1, |a| a.len());
            let mut out = Vec::with_capacity(rows);
            for row in 0..rows {
                let mut object = String::from("{");
                for (i, pair) in arrays.chunks(2).enumerate() {
                    if i > 0 {
                        object.push_str(", ");
                    }
                    let key = ScalarValue::try_from_array(&pair[0], row)?;
                    if key.is_null() {
                        return datafusion::common::exec_err!(
                            "null value not allowed for object key"
                        );
                    }
                    object.push_str(&serde_json::Value::String(key.to_string()).to_string());
                    object.push_str(" : ");
                    object.push_str(&json_value(&ScalarValue::try_from_array(&pair[1], row)?));
                }
                object.push('}');
                out.push(object);
            }
            Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
        }),
    ))
}

/// A value as JSON text (see `json_build_object_udf`).
fn json_value(value: &ScalarValue) -> String {
    if value.is_null() {
        return "null".into();
    }
    match value {
        ScalarValue::Boolean(_)
        | ScalarValue::Int8(_)
        | ScalarValue::Int16(_)
        | ScalarValue::Int32(_)
        | ScalarValue::Int64(_)
        | ScalarValue::UInt8(_)
        | ScalarValue::UInt16(_)
        | ScalarValue::UInt32(_)
        | ScalarValue::UInt64(_)
        | ScalarValue::Decimal128(..) => value.to_string(),
        ScalarValue::Float32(Some(f)) if f.is_finite() => value.to_string(),
        ScalarValue::Float64(Some(f)) if f.is_finite() => value.to_string(),
        other => serde_json::Value::String(other.to_string()).to_string(),
    }
}
