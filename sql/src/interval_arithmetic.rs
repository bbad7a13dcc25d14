//! `interval * number`, `number * interval` and `interval / number`, which DataFusion cannot
//! plan, as Postgres computes them: `interval_mul(interval, factor)`.
//!
//! Postgres multiplies months, days and time separately and carries each fraction down
//! (a fraction of a month as 30 days, a fraction of a day as 24 hours), rounding to
//! microseconds: `interval '1 month' * 1.5` is `1 mon 15 days`. Division is the same with
//! the reciprocal steps, so `interval '1 day' / 3` is `08:00:00`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, IntervalMonthDayNanoArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, IntervalMonthDayNano, IntervalUnit};
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::sql::sqlparser::ast::BinaryOperator;

use crate::error::SqlError;

/// Days in a month and seconds in a day, as Postgres carries fractions down.
const DAYS_PER_MONTH: f64 = 30.0;
const SECONDS_PER_DAY: f64 = 86_400.0;

/// Plans the interval products and quotients as `interval_mul` and `interval_div`.
#[derive(Debug)]
pub(crate) struct IntervalArithmetic;

impl ExprPlanner for IntervalArithmetic {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let is_interval = |e: &Expr| {
            matches!(
                e.get_type(schema),
                Ok(DataType::Interval(IntervalUnit::MonthDayNano))
            )
        };
        let is_number = |e: &Expr| e.get_type(schema).is_ok_and(|t| t.is_numeric());
        let (name, interval, factor) = match expr.op {
            BinaryOperator::Multiply if is_interval(&expr.left) && is_number(&expr.right) => {
                ("interval_mul", &expr.left, &expr.right)
            }
            BinaryOperator::Multiply if is_number(&expr.left) && is_interval(&expr.right) => {
                ("interval_mul", &expr.right, &expr.left)
            }
            BinaryOperator::Divide if is_interval(&expr.left) && is_number(&expr.right) => {
                ("interval_div", &expr.left, &expr.right)
            }
            _ => return Ok(PlannerResult::Original(expr)),
        };
        let udf = Arc::new(ScalarUDF::new_from_impl(IntervalTimes {
            name,
            signature: Signature::any(2, Volatility::Immutable),
        }));
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            datafusion::logical_expr::expr::ScalarFunction::new_udf(
                udf,
                vec![interval.clone(), factor.clone()],
            ),
        )))
    }
}

/// `interval_mul(interval, factor)` and `interval_div(interval, divisor)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalTimes {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for IntervalTimes {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Interval(IntervalUnit::MonthDayNano))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let intervals =
            arrays[0].as_primitive::<datafusion::arrow::datatypes::IntervalMonthDayNanoType>();
        let factors = datafusion::arrow::compute::cast(&arrays[1], &DataType::Float64)?;
        let factors = factors.as_primitive::<Float64Type>();
        let out = (0..intervals.len())
            .map(|i| {
                if intervals.is_null(i) || factors.is_null(i) {
                    return Ok(None);
                }
                let (span, factor) = (intervals.value(i), factors.value(i));
                if self.name == "interval_div" {
                    if factor == 0.0 {
                        return Err(SqlError::new("22012", "division by zero").into());
                    }
                    Ok(Some(divide(span, factor)))
                } else {
                    Ok(Some(multiply(span, factor)))
                }
            })
            .collect::<Result<IntervalMonthDayNanoArray>>()?;
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

/// Rounds to microseconds, as Postgres's `TSROUND`.
fn round_micros(x: f64) -> f64 {
    (x * 1e6).round_ties_even() / 1e6
}

/// Postgres's `interval_mul`.
fn multiply(span: IntervalMonthDayNano, factor: f64) -> IntervalMonthDayNano {
    scale(span, |x| x * factor)
}

/// Postgres's `interval_div` (which divides each part, rather than multiply by the
/// reciprocal, so its rounding is its own).
fn divide(span: IntervalMonthDayNano, divisor: f64) -> IntervalMonthDayNano {
    scale(span, |x| x / divisor)
}

/// Each part of `span` through `by`: whole months and days, a month's fraction carried
/// down as days (rounded to microseconds of a day), a day's fraction as seconds added to
/// the scaled time, and seconds that round to a whole day as a day.
fn scale(span: IntervalMonthDayNano, by: impl Fn(f64) -> f64) -> IntervalMonthDayNano {
    let months = by(f64::from(span.months));
    let days = by(f64::from(span.days));
    let (whole_months, whole_days) = (months.trunc(), days.trunc());
    let month_remainder_days = round_micros((months - whole_months) * DAYS_PER_MONTH);
    let mut seconds =
        round_micros((days - whole_days + month_remainder_days.fract()) * SECONDS_PER_DAY);
    let mut days = whole_days as i64;
    if seconds.abs() >= SECONDS_PER_DAY {
        let extra = (seconds / SECONDS_PER_DAY).trunc();
        days += extra as i64;
        seconds -= extra * SECONDS_PER_DAY;
    }
    days += month_remainder_days.trunc() as i64;
    let micros = (by(span.nanoseconds as f64 / 1000.0) + seconds * 1e6).round_ties_even();
    IntervalMonthDayNano::new(
        whole_months as i32,
        days.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
        (micros * 1000.0) as i64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(months: i32, days: i32, micros: i64) -> IntervalMonthDayNano {
        IntervalMonthDayNano::new(months, days, micros * 1000)
    }

    #[test]
    fn fractions_carry_down_as_postgres_carries_them() {
        let hour = 3_600_000_000;
        assert_eq!(multiply(iv(0, 0, hour), 3.0), iv(0, 0, 3 * hour));
        assert_eq!(multiply(iv(1, 0, 0), 1.5), iv(1, 15, 0));
        assert_eq!(multiply(iv(0, 1, 0), 0.5), iv(0, 0, 12 * hour));
        assert_eq!(multiply(iv(1, 1, hour), -2.0), iv(-2, -2, -2 * hour));
        assert_eq!(divide(iv(0, 1, 0), 3.0), iv(0, 0, 8 * hour));
        assert_eq!(divide(iv(1, 0, 0), 2.0), iv(0, 15, 0));
        assert_eq!(divide(iv(0, 0, hour), 4.0), iv(0, 0, hour / 4));
        // A month's remainder is rounded to microseconds of a day before it is carried.
        assert_eq!(divide(iv(1, 0, 0), 7.0), iv(0, 4, 24_685_689_600));
    }
}
