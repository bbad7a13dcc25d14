//! `FilterProject`: a WHERE predicate then a SELECT list, as DataFusion `PhysicalExpr`s
//! evaluated on whole batches. Stateless: a row's weight passes through unchanged, so a
//! retraction of a row that passed the filter retracts its projection, and an update that
//! flips the predicate becomes a lone insert or a lone retraction.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use datafusion_physical_expr::PhysicalExpr;

use crate::operator::{Emitter, Operator};
use crate::{ChangeBatch, EngineError, Result, with_weight};

/// Filters, then projects, each change batch.
pub struct FilterProject {
    predicate: Option<Arc<dyn PhysicalExpr>>,
    projections: Vec<Arc<dyn PhysicalExpr>>,
    /// The output's data columns (without `__weight`).
    schema: SchemaRef,
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
        }
    }

    fn apply(&self, batch: &ChangeBatch) -> Result<ChangeBatch> {
        let mut input = batch.batch().clone();
        if let Some(predicate) = &self.predicate {
            let mask = evaluate(predicate.as_ref(), &batch.data())?;
            let mask = mask
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| EngineError::Internal("filter predicate is not boolean".into()))?;
            // NULL counts as false, as in WHERE.
            input = filter_record_batch(&input, mask)?;
        }
        let filtered = ChangeBatch::try_new(input)?;
        let data = filtered.data();
        let mut columns = self
            .projections
            .iter()
            .map(|e| evaluate(e.as_ref(), &data))
            .collect::<Result<Vec<_>>>()?;
        columns.push(Arc::new(filtered.weights().clone()));
        ChangeBatch::try_new(RecordBatch::try_new(with_weight(&self.schema), columns)?)
    }
}

fn evaluate(expr: &dyn PhysicalExpr, data: &RecordBatch) -> Result<ArrayRef> {
    expr.evaluate(data)
        .and_then(|v| v.into_array(data.num_rows()))
        .map_err(|e| EngineError::DataFusion(e.context(format!("evaluating {expr}"))))
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
