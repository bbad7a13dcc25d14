//! SQL types (docs/postgres-compatibility.md) to Arrow types, and back to the names users see.
//! One table of truth: DDL, DESCRIBE and the JSON decoder all go through it.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, IntervalUnit, TimeUnit};
use datafusion::sql::sqlparser::ast::{self, ExactNumberInfo, TimezoneInfo};

use crate::error::{Result, SqlError};

/// The Arrow type of a `numeric` declared without precision. Arrow's decimals have a fixed
/// scale and Postgres's unconstrained `numeric` keeps each value's own, so weir stores ten
/// digits after the point and prints a value of this type without its trailing zeros
/// (`1::numeric` is `1`, as in Postgres). Its `atttypmod` is -1, and its name `numeric`.
pub const UNCONSTRAINED_NUMERIC: DataType = DataType::Decimal128(38, 10);

/// The Arrow type that stores a column declared with `ty`.
pub(crate) fn arrow_type(ty: &ast::DataType) -> Result<DataType> {
    use ast::DataType as S;
    Ok(match ty {
        S::Boolean | S::Bool => DataType::Boolean,
        S::SmallInt(_) | S::Int2(_) => DataType::Int16,
        S::Int(_) | S::Integer(_) | S::Int4(_) => DataType::Int32,
        S::BigInt(_) | S::Int8(_) => DataType::Int64,
        S::Real | S::Float4 => DataType::Float32,
        S::Double(_) | S::DoublePrecision | S::Float8 => DataType::Float64,
        S::Float(_) => DataType::Float64,
        S::Decimal(info) | S::Numeric(info) | S::Dec(info) => match info {
            ExactNumberInfo::None => UNCONSTRAINED_NUMERIC,
            ExactNumberInfo::Precision(p) => DataType::Decimal128(*p as u8, 0),
            ExactNumberInfo::PrecisionAndScale(p, s) => DataType::Decimal128(*p as u8, *s as i8),
        },
        S::Varchar(_) | S::CharVarying(_) | S::CharacterVarying(_) | S::Text | S::String(_) => {
            DataType::Utf8
        }
        S::Char(_) | S::Character(_) => DataType::Utf8,
        S::Date => DataType::Date32,
        S::Time(_, _) => DataType::Time64(TimeUnit::Microsecond),
        S::Timestamp(_, TimezoneInfo::Tz | TimezoneInfo::WithTimeZone) => {
            DataType::Timestamp(TimeUnit::Nanosecond, Some(Arc::from("+00:00")))
        }
        S::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Nanosecond, None),
        S::Interval { .. } => DataType::Interval(IntervalUnit::MonthDayNano),
        S::JSONB | S::JSON => DataType::Utf8,
        S::Bytea | S::Blob(_) | S::Binary(_) | S::Varbinary(_) => DataType::Binary,
        other => {
            return Err(SqlError::unsupported(format!(
                "type {other} is not supported"
            )));
        }
    })
}

/// The SQL name of a column's type, as DESCRIBE and SHOW print it: `jsonb` for a string
/// field marked as jsonb, else its Arrow type's name.
pub fn field_type_name(field: &datafusion::arrow::datatypes::Field) -> String {
    if crate::jsonb::is_jsonb(field) {
        return "jsonb".into();
    }
    sql_type_name(field.data_type())
}

/// The SQL name of a column's type, as DESCRIBE and SHOW print it.
pub fn sql_type_name(ty: &DataType) -> String {
    match ty {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        ty if *ty == UNCONSTRAINED_NUMERIC => "numeric".into(),
        DataType::Decimal128(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "character varying".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time without time zone".into(),
        DataType::Timestamp(_, None) => "timestamp without time zone".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        DataType::Interval(_) => "interval".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        other => other.to_string(),
    }
}

/// The name `information_schema.columns.data_type` gives a column of type `ty`, as
/// Postgres's does: `sql_type_name` without length or precision, `ARRAY` for lists, and the
/// Arrow types Postgres has no name for (unsigned integers, ...) under the type that holds
/// their values.
pub(crate) fn information_schema_type_name(ty: &DataType) -> String {
    match ty {
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(..)
        | DataType::ListView(_) => "ARRAY".into(),
        DataType::UInt8 => "smallint".into(),
        DataType::UInt16 => "integer".into(),
        DataType::UInt32 => "bigint".into(),
        DataType::UInt64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => "numeric".into(),
        DataType::Float16 => "real".into(),
        DataType::Duration(_) => "interval".into(),
        DataType::FixedSizeBinary(_) => "bytea".into(),
        other => sql_type_name(other),
    }
}
