//! Postgres's text output format for Arrow values: what psql prints and COPY TO writes,
//! as Postgres 15 prints it (`1` not `1.0`, `+00` offsets, `1 day 02:00:00`, `{1,2}`, `\x..`).

use std::fmt::Write;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike};
use chrono_tz::Tz;
use datafusion::arrow::array::{Array, AsArray, GenericListArray, OffsetSizeTrait};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Decimal256Type, DurationMicrosecondType,
    DurationMillisecondType, DurationNanosecondType, DurationSecondType, Float16Type, Float32Type,
    Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, IntervalDayTimeType,
    IntervalMonthDayNanoType, IntervalUnit, IntervalYearMonthType, Time32MillisecondType,
    Time32SecondType, Time64MicrosecondType, Time64NanosecondType, TimeUnit, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use weir_sql::UNCONSTRAINED_NUMERIC;

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// The session's `TimeZone`, in which timestamptz values are printed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Zone {
    Fixed(FixedOffset),
    Named(Tz),
}

impl Zone {
    /// A zone name as `SET TimeZone` takes it (`UTC`, `Europe/Paris`); unknown names are UTC.
    pub(crate) fn parse(name: &str) -> Zone {
        let name = name.trim();
        match name.to_ascii_uppercase().as_str() {
            "UTC" | "GMT" | "Z" | "ETC/UTC" | "ZULU" => return Zone::utc(),
            _ => {}
        }
        Tz::from_str_insensitive(name)
            .map(Zone::Named)
            .unwrap_or_else(|_| Zone::utc())
    }

    fn utc() -> Zone {
        Zone::Fixed(FixedOffset::east_opt(0).expect("zero offset"))
    }

    /// The local time and its offset from UTC in seconds at an instant.
    fn local(&self, utc: NaiveDateTime) -> (NaiveDateTime, i32) {
        let offset = match self {
            Zone::Fixed(f) => *f,
            Zone::Named(tz) => tz.offset_from_utc_datetime(&utc).fix(),
        };
        let seconds = offset.local_minus_utc();
        (utc + chrono::Duration::seconds(seconds.into()), seconds)
    }
}

/// Whether `array[row]` is NULL (a column of type Null has no validity bitmap).
pub(crate) fn is_null(array: &dyn Array, row: usize) -> bool {
    array.data_type() == &DataType::Null || array.is_null(row)
}

/// Appends the text of `array[row]` (which must not be null) to `out`. Types Postgres does
/// not have print as Arrow displays them.
pub(crate) fn write_value(array: &dyn Array, row: usize, zone: &Zone, out: &mut String) {
    macro_rules! int {
        ($t:ty) => {{
            let _ = write!(out, "{}", array.as_primitive::<$t>().value(row));
        }};
    }
    match array.data_type() {
        DataType::Boolean => out.push(if array.as_boolean().value(row) {
            't'
        } else {
            'f'
        }),
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Float16 => {
            let v = array.as_primitive::<Float16Type>().value(row).to_f32();
            write_float(f64::from(v), &format!("{v:e}"), 6, out)
        }
        DataType::Float32 => {
            let v = array.as_primitive::<Float32Type>().value(row);
            write_float(f64::from(v), &format!("{v:e}"), 6, out)
        }
        DataType::Float64 => {
            let v = array.as_primitive::<Float64Type>().value(row);
            write_float(v, &format!("{v:e}"), 15, out)
        }
        DataType::Decimal128(_, scale) => {
            let v = array.as_primitive::<Decimal128Type>().value(row);
            let start = out.len();
            write_decimal(&v.to_string(), *scale, out);
            if *array.data_type() == UNCONSTRAINED_NUMERIC && *scale > 0 {
                let kept = out.trim_end_matches('0').trim_end_matches('.').len();
                out.truncate(kept.max(start + 1));
            }
        }
        DataType::Decimal256(_, scale) => {
            let v = array.as_primitive::<Decimal256Type>().value(row);
            write_decimal(&v.to_string(), *scale, out)
        }
        DataType::Utf8 => out.push_str(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => out.push_str(array.as_string::<i64>().value(row)),
        DataType::Utf8View => out.push_str(array.as_string_view().value(row)),
        DataType::Binary => write_bytea(array.as_binary::<i32>().value(row), out),
        DataType::LargeBinary => write_bytea(array.as_binary::<i64>().value(row), out),
        DataType::BinaryView => write_bytea(array.as_binary_view().value(row), out),
        DataType::FixedSizeBinary(_) => write_bytea(array.as_fixed_size_binary().value(row), out),
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            write_date(i64::from(days) * MICROS_PER_DAY, out)
        }
        DataType::Date64 => {
            let ms = array.as_primitive::<Date64Type>().value(row);
            write_date(ms.saturating_mul(1000), out)
        }
        DataType::Time32(unit) => {
            let micros = match unit {
                TimeUnit::Second => {
                    i64::from(array.as_primitive::<Time32SecondType>().value(row))
                        * MICROS_PER_SECOND
                }
                _ => i64::from(array.as_primitive::<Time32MillisecondType>().value(row)) * 1000,
            };
            write_time_of_day(micros, out)
        }
        DataType::Time64(unit) => {
            let micros = match unit {
                TimeUnit::Nanosecond => {
                    nanos_to_micros(array.as_primitive::<Time64NanosecondType>().value(row))
                }
                _ => array.as_primitive::<Time64MicrosecondType>().value(row),
            };
            write_time_of_day(micros, out)
        }
        DataType::Timestamp(unit, tz) => {
            let micros = timestamp_micros(array, row, *unit);
            write_timestamp(micros, tz.is_some().then_some(zone), out)
        }
        DataType::Interval(unit) => {
            let (months, days, micros) = match unit {
                IntervalUnit::YearMonth => (
                    array.as_primitive::<IntervalYearMonthType>().value(row),
                    0,
                    0,
                ),
                IntervalUnit::DayTime => {
                    let v = array.as_primitive::<IntervalDayTimeType>().value(row);
                    (0, v.days, i64::from(v.milliseconds) * 1000)
                }
                IntervalUnit::MonthDayNano => {
                    let v = array.as_primitive::<IntervalMonthDayNanoType>().value(row);
                    (v.months, v.days, nanos_to_micros(v.nanoseconds))
                }
            };
            write_interval(months, days, micros, out)
        }
        DataType::Duration(unit) => {
            let micros = match unit {
                TimeUnit::Second => array
                    .as_primitive::<DurationSecondType>()
                    .value(row)
                    .saturating_mul(MICROS_PER_SECOND),
                TimeUnit::Millisecond => array
                    .as_primitive::<DurationMillisecondType>()
                    .value(row)
                    .saturating_mul(1000),
                TimeUnit::Microsecond => array.as_primitive::<DurationMicrosecondType>().value(row),
                TimeUnit::Nanosecond => {
                    nanos_to_micros(array.as_primitive::<DurationNanosecondType>().value(row))
                }
            };
            // As Postgres's timestamp subtraction justifies hours into days.
            let (days, micros) = (micros / MICROS_PER_DAY, micros % MICROS_PER_DAY);
            write_interval(0, days as i32, micros, out)
        }
        DataType::List(_) => write_list(array.as_list::<i32>(), row, zone, out),
        DataType::LargeList(_) => write_list(array.as_list::<i64>(), row, zone, out),
        DataType::Struct(_) => {
            let s = array.as_struct();
            out.push('(');
            for (i, column) in s.columns().iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if !is_null(column.as_ref(), row) {
                    let mut value = String::new();
                    write_value(column.as_ref(), row, zone, &mut value);
                    push_quoted(&value, "(),\"\\", out);
                }
            }
            out.push(')');
        }
        DataType::Dictionary(_, _) => {
            let d = array.as_any_dictionary();
            let key = d.normalized_keys()[row];
            write_value(d.values().as_ref(), key, zone, out)
        }
        _ => {
            let options = FormatOptions::default();
            match ArrayFormatter::try_new(array, &options) {
                Ok(f) => {
                    let _ = write!(out, "{}", f.value(row));
                }
                Err(e) => {
                    let _ = write!(out, "<{e}>");
                }
            }
        }
    }
}

/// A float as Postgres's shortest-exact output prints it: fixed notation for decimal
/// exponents in [-4, `digits`), otherwise `d.ddde+XX`. `sci` is Rust's shortest round-trip
/// rendering in scientific notation (`{:e}`), whose digits both forms use.
fn write_float(v: f64, sci: &str, digits: i32, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    } else if v == 0.0 {
        out.push_str(if v.is_sign_negative() { "-0" } else { "0" });
        return;
    }
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if !(-4..digits).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "{mantissa}e{sign}{:02}", exponent.abs());
        return;
    }
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    if negative {
        out.push('-');
    }
    // The significant digits, without the point: `1.2345` -> `12345`.
    let (first, rest) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let significant = first.len() + rest.len();
    let digit = |i: usize| {
        if i < first.len() {
            first.as_bytes()[i] as char
        } else {
            rest.as_bytes()[i - first.len()] as char
        }
    };
    if exponent < 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
        out.extend((0..significant).map(digit));
    } else {
        let whole = exponent as usize + 1;
        out.extend((0..whole).map(|i| if i < significant { digit(i) } else { '0' }));
        if significant > whole {
            out.push('.');
            out.extend((whole..significant).map(digit));
        }
    }
}

/// An unscaled decimal integer with `scale` digits after the point (`123`, 2 -> `1.23`).
fn write_decimal(unscaled: &str, scale: i8, out: &mut String) {
    let (sign, digits) = match unscaled.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", unscaled),
    };
    out.push_str(sign);
    if scale <= 0 {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', scale.unsigned_abs() as usize));
        return;
    }
    let scale = scale as usize;
    if digits.len() > scale {
        let (whole, fraction) = digits.split_at(digits.len() - scale);
        let _ = write!(out, "{whole}.{fraction}");
    } else {
        let _ = write!(out, "0.{digits:0>scale$}");
    }
}

fn write_bytea(bytes: &[u8], out: &mut String) {
    out.push_str("\\x");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// Nanoseconds to microseconds, rounding half to even as Postgres rounds input.
fn nanos_to_micros(nanos: i64) -> i64 {
    let (q, r) = (nanos.div_euclid(1000), nanos.rem_euclid(1000));
    match r.cmp(&500) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    }
}

fn timestamp_micros(array: &dyn Array, row: usize, unit: TimeUnit) -> i64 {
    use datafusion::arrow::datatypes::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
        TimestampSecondType,
    };
    match unit {
        TimeUnit::Second => array
            .as_primitive::<TimestampSecondType>()
            .value(row)
            .saturating_mul(MICROS_PER_SECOND),
        TimeUnit::Millisecond => array
            .as_primitive::<TimestampMillisecondType>()
            .value(row)
            .saturating_mul(1000),
        TimeUnit::Microsecond => array.as_primitive::<TimestampMicrosecondType>().value(row),
        TimeUnit::Nanosecond => {
            nanos_to_micros(array.as_primitive::<TimestampNanosecondType>().value(row))
        }
    }
}

fn datetime(micros: i64) -> NaiveDateTime {
    DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .naive_utc()
}

/// `YYYY-MM-DD`, with ` BC` for years before 1 as Postgres writes them.
fn write_ymd(date: NaiveDate, out: &mut String) -> bool {
    use chrono::Datelike;
    let (year, bc) = match date.year() {
        y if y <= 0 => (1 - y, true),
        y => (y, false),
    };
    let _ = write!(out, "{year:04}-{:02}-{:02}", date.month(), date.day());
    bc
}

fn write_date(micros: i64, out: &mut String) {
    if write_ymd(datetime(micros).date(), out) {
        out.push_str(" BC");
    }
}

/// `HH:MM:SS` and a fraction without trailing zeros.
fn write_hms(hours: i64, minutes: i64, seconds: i64, micros: i64, out: &mut String) {
    let _ = write!(out, "{hours:02}:{minutes:02}:{seconds:02}");
    if micros != 0 {
        let fraction = format!("{micros:06}");
        let _ = write!(out, ".{}", fraction.trim_end_matches('0'));
    }
}

fn write_time_of_day(micros: i64, out: &mut String) {
    let seconds = micros.div_euclid(MICROS_PER_SECOND);
    write_hms(
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        micros.rem_euclid(MICROS_PER_SECOND),
        out,
    )
}

/// A timestamp; with a zone (timestamptz) in that zone, followed by its offset (`+00`,
/// `+05:30`, `-03`).
fn write_timestamp(micros: i64, zone: Option<&Zone>, out: &mut String) {
    let utc = datetime(micros);
    let (local, offset) = match zone {
        Some(z) => z.local(utc),
        None => (utc, 0),
    };
    let bc = write_ymd(local.date(), out);
    out.push(' ');
    let t = local.time();
    write_hms(
        t.hour().into(),
        t.minute().into(),
        t.second().into(),
        i64::from(t.nanosecond() / 1000),
        out,
    );
    if zone.is_some() {
        let sign = if offset < 0 { '-' } else { '+' };
        let offset = offset.abs();
        let _ = write!(out, "{sign}{:02}", offset / 3600);
        if offset % 3600 != 0 {
            let _ = write!(out, ":{:02}", offset / 60 % 60);
            if offset % 60 != 0 {
                let _ = write!(out, ":{:02}", offset % 60);
            }
        }
    }
    if bc {
        out.push_str(" BC");
    }
}

/// An interval in Postgres's default `IntervalStyle` (`postgres`): `1 year 2 mons`,
/// `-1 days +02:00:00`, `00:00:00` for zero. A field's sign is written when it differs
/// from the one before, as Postgres's EncodeInterval does.
fn write_interval(months: i32, days: i32, micros: i64, out: &mut String) {
    let mut is_zero = true;
    let mut is_before = false;
    let mut part = |value: i64, unit: &str, out: &mut String| {
        if value == 0 {
            return;
        }
        let _ = write!(
            out,
            "{}{}{value} {unit}{}",
            if is_zero { "" } else { " " },
            if is_before && value > 0 { "+" } else { "" },
            if value != 1 { "s" } else { "" }
        );
        is_before = value < 0;
        is_zero = false;
    };
    part(i64::from(months / 12), "year", out);
    part(i64::from(months % 12), "mon", out);
    part(i64::from(days), "day", out);
    if is_zero || micros != 0 {
        let minus = micros < 0;
        let _ = write!(
            out,
            "{}{}",
            if is_zero { "" } else { " " },
            if minus {
                "-"
            } else if is_before {
                "+"
            } else {
                ""
            }
        );
        let abs = micros.unsigned_abs() as i64;
        let seconds = abs / MICROS_PER_SECOND;
        write_hms(
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60,
            abs % MICROS_PER_SECOND,
            out,
        );
    }
}

/// An array as Postgres prints it: `{1,2,NULL}`, elements quoted when they must be.
fn write_list<O: OffsetSizeTrait>(
    list: &GenericListArray<O>,
    row: usize,
    zone: &Zone,
    out: &mut String,
) {
    let values = list.value(row);
    out.push('{');
    let mut element = String::new();
    for i in 0..values.len() {
        if i > 0 {
            out.push(',');
        }
        if is_null(values.as_ref(), i) {
            out.push_str("NULL");
            continue;
        }
        element.clear();
        write_value(values.as_ref(), i, zone, &mut element);
        if matches!(
            values.data_type(),
            DataType::List(_) | DataType::LargeList(_)
        ) {
            out.push_str(&element);
        } else if element.eq_ignore_ascii_case("NULL") {
            let _ = write!(out, "\"{element}\"");
        } else {
            push_quoted(&element, "{},\"\\", out);
        }
    }
    out.push('}');
}

/// `value`, double-quoted (with `"` and `\` escaped) if it is empty or holds whitespace or
/// one of `special`.
fn push_quoted(value: &str, special: &str, out: &mut String) {
    let quote = value.is_empty()
        || value
            .chars()
            .any(|c| c.is_ascii_whitespace() || special.contains(c));
    if !quote {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, Float32Array, Float64Array, IntervalMonthDayNanoArray, TimestampNanosecondArray,
    };
    use datafusion::arrow::datatypes::IntervalMonthDayNano;

    use super::*;

    fn text(array: ArrayRef, zone: &str) -> Vec<String> {
        let zone = Zone::parse(zone);
        (0..array.len())
            .map(|i| {
                let mut s = String::new();
                write_value(array.as_ref(), i, &zone, &mut s);
                s
            })
            .collect()
    }

    #[test]
    fn floats_print_as_postgres_prints_them() {
        let f8 = Float64Array::from(vec![
            1.0,
            1.5,
            1e15,
            1e14,
            1e-5,
            0.0001,
            -0.0,
            f64::NAN,
            f64::NEG_INFINITY,
            0.1 + 0.2,
        ]);
        assert_eq!(
            text(Arc::new(f8), "UTC"),
            [
                "1",
                "1.5",
                "1e+15",
                "100000000000000",
                "1e-05",
                "0.0001",
                "-0",
                "NaN",
                "-Infinity",
                "0.30000000000000004"
            ]
        );
        let f4 = Float32Array::from(vec![1234567.0, 123456.7, 0.1]);
        assert_eq!(
            text(Arc::new(f4), "UTC"),
            ["1.234567e+06", "123456.7", "0.1"]
        );
        // Fixed notation is what Rust's shortest Display prints, for every exponent kept.
        let values = [
            -2.25,
            0.00012345,
            123.456,
            -999999999999999.0,
            1.5e14,
            0.000999,
            42.0,
            -0.5,
        ];
        let expected: Vec<String> = values.iter().map(f64::to_string).collect();
        assert_eq!(
            text(Arc::new(Float64Array::from(values.to_vec())), "UTC"),
            expected
        );
    }

    #[test]
    fn intervals_print_in_the_postgres_style() {
        let hours = 3_600_000_000_000;
        let iv = IntervalMonthDayNanoArray::from(vec![
            IntervalMonthDayNano::new(0, 1, 2 * hours),
            IntervalMonthDayNano::new(14, 0, 0),
            IntervalMonthDayNano::new(0, -1, 2 * hours),
            IntervalMonthDayNano::new(0, 0, -1_000_000_000),
            IntervalMonthDayNano::new(0, 0, 0),
            IntervalMonthDayNano::new(0, 21, 24 * hours - 1_000_000_000),
        ]);
        assert_eq!(
            text(Arc::new(iv), "UTC"),
            [
                "1 day 02:00:00",
                "1 year 2 mons",
                "-1 days +02:00:00",
                "-00:00:01",
                "00:00:00",
                "21 days 23:59:59"
            ]
        );
    }

    #[test]
    fn timestamptz_prints_in_the_session_zone_with_its_offset() {
        // 2020-07-01 12:00:00.5 UTC
        let ts =
            TimestampNanosecondArray::from(vec![1_593_604_800_500_000_000]).with_timezone("+00:00");
        assert_eq!(
            text(Arc::new(ts.clone()), "UTC"),
            ["2020-07-01 12:00:00.5+00"]
        );
        assert_eq!(
            text(Arc::new(ts.clone()), "Asia/Kolkata"),
            ["2020-07-01 17:30:00.5+05:30"]
        );
        assert_eq!(
            text(Arc::new(ts), "America/New_York"),
            ["2020-07-01 08:00:00.5-04"]
        );
    }
}
