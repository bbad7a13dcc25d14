//! Postgres functions clients call that DataFusion and the pg_catalog emulation lack:
//! `version()` (weir's own text), `to_regtype(name)` (psycopg's type lookup),
//! `current_setting` and `session_user` (with the session's value added by the server), and
//! `pg_function_is_visible(oid)` and `pg_type_is_visible(oid)` (psql's `\df`, `\dT`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int32Array, StringArray};
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

/// `pg_function_is_visible(oid)` and `pg_type_is_visible(oid)`: true, as every function
/// and type weir has is in the search path.
pub(crate) fn is_visible_udf(name: &str) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|args| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let visible: datafusion::arrow::array::BooleanArray =
                (0..arrays[0].len()).map(|_| Some(true)).collect();
            Ok(ColumnarValue::Array(Arc::new(visible)))
        }),
    )
}

/// `pg_get_function_result(oid)` and `pg_get_function_arguments(oid)` (psql's `\df`): weir
/// has no user-defined functions (pg_proc lists none), so there is never one to describe:
/// NULL.
pub(crate) fn no_function_udf(name: &str) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let none: StringArray = (0..arrays[0].len()).map(|_| None::<&str>).collect();
            Ok(ColumnarValue::Array(Arc::new(none)))
        }),
    )
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
