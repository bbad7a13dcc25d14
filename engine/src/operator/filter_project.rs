//! `FilterProject`: a WHERE predicate then a SELECT list, as DataFusion `PhysicalExpr`s
//! evaluated on whole batches. Stateless: a row's weight passes through unchanged, so a
//! retraction of a row that passed the filter retracts its projection, and an update that
//! flips the predicate becomes a lone insert or a lone retraction.
//!
//! A value that cannot be computed for a row (`eval::ValueErrors`) is NULL (in a column
//! that cannot be NULL, the row is left out), and a predicate that cannot be is not true.

use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use datafusion_physical_expr::PhysicalExpr;

use crate::operator::eval::ValueErrors;
use crate::operator::{Emitter, Operator};
use crate::{ChangeBatch, EngineError, Result, with_weight};

/// Filters, then projects, each change batch.
pub struct FilterProject {
    predicate: Option<Arc<dyn PhysicalExpr>>,
    projections: Vec<Arc<dyn PhysicalExpr>>,
    /// The output's data columns (without `__weight`).
    schema: SchemaRef,
    /// Rows whose value could not be computed.
    value_errors: ValueErrors,
}

impl FilterProject {
    /// Expressions are bound to the input's data columns; `schema` names the outputs.
    pub fn new(
        predicate: Option<Arc<dyn PhysicalExpr>>,
        projections: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Self {
        Self {
            predicate,
            projections,
            schema,
            value_errors: ValueErrors::default(),
        }
    }

    fn apply(&mut self, batch: &ChangeBatch) -> Result<ChangeBatch> {
        let mut input = batch.batch().clone();
        if let Some(predicate) = &self.predicate {
            let (mask, _) = self
                .value_errors
                .evaluate(predicate.as_ref(), &batch.data())?;
            let mask = mask
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| EngineError::Internal("filter predicate is not boolean".into()))?;
            // NULL counts as false, as in WHERE.
            input = filter_record_batch(&input, mask)?;
        }
        let filtered = ChangeBatch::try_new(input)?;
        let data = filtered.data();
        let mut columns = Vec::with_capacity(self.projections.len() + 1);
        // Rows with a value that cannot be computed in a column that cannot be NULL.
        let mut dropped: Option<Vec<bool>> = None;
        for (i, e) in self.projections.iter().enumerate() {
            let (values, failed) = self.value_errors.evaluate(e.as_ref(), &data)?;
            if let Some(failed) = failed
                && !self.schema.field(i).is_nullable()
            {
                let all = dropped.get_or_insert_with(|| vec![false; data.num_rows()]);
                all.iter_mut().zip(failed).for_each(|(d, f)| *d |= f);
            }
            columns.push(values);
        }
        columns.push(Arc::new(filtered.weights().clone()));
        let Some(dropped) = dropped else {
            return ChangeBatch::try_new(RecordBatch::try_new(with_weight(&self.schema), columns)?);
        };
        let keep = BooleanArray::from_iter(dropped.iter().map(|&d| Some(!d)));
        let columns = columns
            .iter()
            .map(|c| arrow::compute::filter(c, &keep))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        ChangeBatch::try_new(RecordBatch::try_new(with_weight(&self.schema), columns)?)
    }
}

impl Operator for FilterProject {
    fn name(&self) -> &'static str {
        "FilterProject"
    }

    fn on_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Emitter) -> Result<()> {
        out.emit(self.apply(&batch)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion_common::ScalarValue;
    use datafusion_expr::Operator as Op;
    use datafusion_physical_expr::expressions::{BinaryExpr, Column, Literal};

    use super::*;

    fn input(a: &[i64], weights: i64) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let data =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(a.to_vec()))]).unwrap();
        ChangeBatch::from_data(&data, weights).unwrap()
    }

    /// `SELECT a * 10 AS b FROM t WHERE a > 2`
    fn op() -> FilterProject {
        let a: Arc<dyn PhysicalExpr> = Arc::new(Column::new("a", 0));
        let lit =
            |v: i64| Arc::new(Literal::new(ScalarValue::Int64(Some(v)))) as Arc<dyn PhysicalExpr>;
        let pred = Arc::new(BinaryExpr::new(Arc::clone(&a), Op::Gt, lit(2)));
        let proj = Arc::new(BinaryExpr::new(a, Op::Multiply, lit(10)));
        let schema = Arc::new(Schema::new(vec![Field::new("b", DataType::Int64, true)]));
        FilterProject::new(Some(pred), vec![proj], schema)
    }

    fn values(b: &ChangeBatch) -> Vec<(i64, i64)> {
        let col = b
            .batch()
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        col.values()
            .iter()
            .copied()
            .zip(b.weights().values().iter().copied())
            .collect()
    }

    #[test]
    fn a_value_that_cannot_be_computed_is_null_for_its_row_alone() {
        // SELECT 10 / a AS b FROM t WHERE 100 / a > 5
        let a: Arc<dyn PhysicalExpr> = Arc::new(Column::new("a", 0));
        let lit =
            |v: i64| Arc::new(Literal::new(ScalarValue::Int64(Some(v)))) as Arc<dyn PhysicalExpr>;
        let quotient = |n: i64| {
            Arc::new(BinaryExpr::new(lit(n), Op::Divide, Arc::clone(&a))) as Arc<dyn PhysicalExpr>
        };
        let schema = Arc::new(Schema::new(vec![Field::new("b", DataType::Int64, true)]));
        let mut plain = FilterProject::new(None, vec![quotient(10)], Arc::clone(&schema));
        let mut out = Emitter::default();
        plain.on_batch(0, input(&[2, 0, 5], 1), &mut out).unwrap();
        plain.on_batch(0, input(&[0], -1), &mut out).unwrap();
        let got: Vec<Vec<Option<i64>>> = out
            .drain()
            .iter()
            .map(|b| {
                let col = b
                    .batch()
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                col.iter().collect()
            })
            .collect();
        assert_eq!(got, vec![vec![Some(5), None, Some(2)], vec![None]]);
        let filter = Arc::new(BinaryExpr::new(quotient(100), Op::Gt, lit(5)));
        let mut filtered = FilterProject::new(Some(filter), vec![quotient(10)], schema);
        filtered
            .on_batch(0, input(&[2, 0, 50], 1), &mut out)
            .unwrap();
        let got: Vec<Vec<(i64, i64)>> = out.drain().iter().map(values).collect();
        assert_eq!(got, vec![vec![(5, 1)]]);
        // In a column that cannot be NULL, the row is left out.
        let strict = Arc::new(Schema::new(vec![Field::new("b", DataType::Int64, false)]));
        let mut strict = FilterProject::new(None, vec![quotient(10)], strict);
        strict.on_batch(0, input(&[2, 0, 5], 1), &mut out).unwrap();
        let got: Vec<Vec<(i64, i64)>> = out.drain().iter().map(values).collect();
        assert_eq!(got, vec![vec![(5, 1), (2, 1)]]);
    }

    #[test]
    fn weights_pass_through_filter_and_projection() {
        let mut op = op();
        let mut out = Emitter::default();
        op.on_batch(0, input(&[1, 3, 5], 1), &mut out).unwrap();
        op.on_batch(0, input(&[3, 2], -1), &mut out).unwrap();
        let got: Vec<Vec<(i64, i64)>> = out.drain().iter().map(values).collect();
        assert_eq!(got, vec![vec![(30, 1), (50, 1)], vec![(30, -1)]]);
    }

    #[test]
    fn update_that_flips_the_predicate_is_a_lone_retraction() {
        let mut op = op();
        let mut out = Emitter::default();
        // a: 4 -> 1 is (-1, 4), (+1, 1): only the retraction survives the filter.
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let data =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![4, 1]))]).unwrap();
        let mut cols = data.columns().to_vec();
        cols.push(Arc::new(Int64Array::from(vec![-1, 1])));
        let update =
            ChangeBatch::try_new(RecordBatch::try_new(with_weight(&data.schema()), cols).unwrap())
                .unwrap();
        op.on_batch(0, update, &mut out).unwrap();
        assert_eq!(
            out.drain().iter().map(values).collect::<Vec<_>>(),
            vec![vec![(40, -1)]]
        );
    }
}
