//! Evaluating a `PhysicalExpr` over a batch, for every operator: `evaluate` with one error
//! mapping, and `ValueErrors::evaluate`, which keeps a view running past a row whose value
//! cannot be computed (division by zero, overflow, a failed cast) by making it NULL.
//!
//! A view keeps running where a query would stop: `count(*) / count(x)` over a table that
//! is still empty is 0/0. The same row always gives the same answer, so its retraction
//! retracts exactly what its insert added.

use arrow::array::{Array, ArrayRef, RecordBatch, new_null_array};
use arrow::compute::concat;
use datafusion_common::DataFusionError;
use datafusion_physical_expr::PhysicalExpr;

use crate::{EngineError, Result};

/// `expr` over every row of `data`.
pub(crate) fn evaluate(expr: &dyn PhysicalExpr, data: &RecordBatch) -> Result<ArrayRef> {
    evaluate_inner(expr, data)
        .map_err(|e| EngineError::DataFusion(e.context(format!("evaluating {expr}"))))
}

fn evaluate_inner(
    expr: &dyn PhysicalExpr,
    data: &RecordBatch,
) -> datafusion_common::Result<ArrayRef> {
    expr.evaluate(data)
        .and_then(|v| v.into_array(data.num_rows()))
}

/// Counts the rows one operator could not compute a value for, and warns of them in the
/// log (at the 1st, 2nd, 4th, 8th, ... such row).
#[derive(Debug, Default)]
pub(crate) struct ValueErrors {
    rows: u64,
}

impl ValueErrors {
    /// `expr` over `data`, with NULL for a row whose value cannot be computed; which rows
    /// those were, when there were any.
    pub(crate) fn evaluate(
        &mut self,
        expr: &dyn PhysicalExpr,
        data: &RecordBatch,
    ) -> Result<(ArrayRef, Option<Vec<bool>>)> {
        let error = match evaluate_inner(expr, data) {
            Ok(values) => return Ok((values, None)),
            Err(e) if is_value_error(&e) => e,
            Err(e) => {
                return Err(EngineError::DataFusion(
                    e.context(format!("evaluating {expr}")),
                ));
            }
        };
        let data_type = expr.data_type(&data.schema())?;
        let before = self.rows;
        let mut values = Vec::with_capacity(data.num_rows());
        let mut failed = Vec::with_capacity(data.num_rows());
        for i in 0..data.num_rows() {
            match evaluate_inner(expr, &data.slice(i, 1)) {
                Ok(v) => {
                    values.push(v);
                    failed.push(false);
                }
                Err(e) if is_value_error(&e) => {
                    self.rows += 1;
                    values.push(new_null_array(&data_type, 1));
                    failed.push(true);
                }
                Err(e) => return Err(EngineError::DataFusion(e)),
            }
        }
        // Warned of at the rows that reach a power of two.
        if self.rows.checked_ilog2() != before.checked_ilog2() {
            tracing::warn!(
                "{} row(s) so far had a value that cannot be computed (NULL, or the row left \
                 out where the column cannot be NULL): {expr}: {error}",
                self.rows
            );
        }
        let values: Vec<&dyn Array> = values.iter().map(AsRef::as_ref).collect();
        Ok((concat(&values)?, Some(failed)))
    }
}

/// Whether `e` is about a value (division by zero, overflow, a cast or parse that failed),
/// not about the expression itself.
fn is_value_error(e: &DataFusionError) -> bool {
    use arrow::error::ArrowError as A;
    match e {
        DataFusionError::ArrowError(a, _) => matches!(
            a.as_ref(),
            A::DivideByZero | A::ArithmeticOverflow(_) | A::CastError(_) | A::ParseError(_)
        ),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            is_value_error(inner)
        }
        DataFusionError::Shared(inner) => is_value_error(inner),
        DataFusionError::Execution(m) => {
            m.contains("Divide by zero")
                || m.contains("division by zero")
                || m.contains("verflow")
                || m.contains("Cast error")
                || m.contains("Cannot cast")
        }
        _ => false,
    }
}
