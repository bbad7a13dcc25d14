//! `HashAggregate`: GROUP BY with DataFusion accumulators, maintained under retractions.
//! Per group it keeps DataFusion's sliding accumulators (the retractable ones window frames
//! use: `update_batch` for inserts, `retract_batch` for retractions), the group's row count, and the row it last emitted.
//! After each input batch every touched group emits `-old` and `+new` (only what changed);
//! a group whose count drops to zero retracts its row and is freed.
//! Not yet: global aggregates (no GROUP BY, which must emit a row even for empty input),
//! min/max and DISTINCT aggregates, state checkpoints.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion_common::ScalarValue;
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;
use datafusion_physical_expr::expressions::Column;

use crate::operator::{Emitter, Operator};
use crate::{ChangeBatch, EngineError, Result, with_weight};

/// Aggregates whose sliding accumulators retract in any order (sums and counts of moments).
const RETRACTABLE: &[&str] = &[
    "sum",
    "count",
    "avg",
    "mean",
    "bool_and",
    "bool_or",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "var",
    "var_pop",
    "var_samp",
];

type Accumulators = Vec<Box<dyn datafusion_expr::Accumulator>>;

/// One group's state.
struct Group {
    key: Vec<ScalarValue>,
    accumulators: Accumulators,
    rows: i64,
    emitted: Option<Vec<ScalarValue>>,
}

/// Incremental GROUP BY over change batches.
pub struct HashAggregate {
    group_by: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Output data columns: group keys, then aggregates.
    schema: SchemaRef,
    keys: RowConverter,
    groups: HashMap<OwnedRow, Group>,
}

impl HashAggregate {
    /// Fails for an aggregate that cannot be kept under arbitrary retractions. DataFusion's
    /// sliding min/max retract only in arrival order (window frames), so they are refused here
    /// and need a per-group multiset instead.
    pub fn try_new(
        group_by: Vec<Arc<dyn PhysicalExpr>>,
        aggregates: Vec<Arc<AggregateFunctionExpr>>,
        schema: SchemaRef,
    ) -> Result<Self> {
        for a in &aggregates {
            let name = a.fun().name().to_ascii_lowercase();
            let retractable = a
                .create_sliding_accumulator()
                .map_err(df)?
                .supports_retract_batch();
            if !RETRACTABLE.contains(&name.as_str()) || !retractable || a.is_distinct() {
                return Err(EngineError::Config(format!(
                    "aggregate {name} cannot be maintained under retractions yet"
                )));
            }
        }
        let key_fields = (0..group_by.len())
            .map(|i| SortField::new(schema.field(i).data_type().clone()))
            .collect();
        Ok(Self {
            group_by,
            aggregates,
            schema,
            keys: RowConverter::new(key_fields)?,
            groups: HashMap::new(),
        })
    }

    /// Number of groups held (for state-size reporting and tests).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    fn new_group(&self, key: Vec<ScalarValue>) -> Result<Group> {
        let accumulators = self
            .aggregates
            .iter()
            .map(|a| a.create_sliding_accumulator().map_err(df))
            .collect::<Result<_>>()?;
        Ok(Group {
            key,
            accumulators,
            rows: 0,
            emitted: None,
        })
    }

    fn output(&self, changes: Vec<(Vec<ScalarValue>, i64)>) -> Result<ChangeBatch> {
        let n_cols = self.schema.fields().len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(n_cols + 1);
        for c in 0..n_cols {
            let values = changes.iter().map(|(row, _)| row[c].clone());
            let array = if changes.is_empty() {
                arrow::array::new_empty_array(self.schema.field(c).data_type())
            } else {
                ScalarValue::iter_to_array(values).map_err(df)?
            };
            columns.push(arrow::compute::cast(
                &array,
                self.schema.field(c).data_type(),
            )?);
        }
        columns.push(Arc::new(Int64Array::from_iter_values(
            changes.iter().map(|(_, w)| *w),
        )));
        ChangeBatch::try_new(RecordBatch::try_new(with_weight(&self.schema), columns)?)
    }
}

fn df(e: datafusion_common::DataFusionError) -> EngineError {
    EngineError::Config(e.to_string())
}

fn evaluate(expr: &dyn PhysicalExpr, data: &RecordBatch) -> Result<ArrayRef> {
    expr.evaluate(data)
        .and_then(|v| v.into_array(data.num_rows()))
        .map_err(df)
}

/// Row indexes repeated by their weights' magnitudes: (for inserts, for retractions).
fn expand(indices: &[u32], weights: &Int64Array) -> (UInt32Array, UInt32Array) {
    let (mut ins, mut del) = (Vec::new(), Vec::new());
    for &i in indices {
        let w = weights.value(i as usize);
        let target = if w > 0 { &mut ins } else { &mut del };
        target.extend(std::iter::repeat_n(i, w.unsigned_abs() as usize));
    }
    (UInt32Array::from(ins), UInt32Array::from(del))
}

impl Operator for HashAggregate {
    fn name(&self) -> &'static str {
        "HashAggregate"
    }

    fn on_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Emitter) -> Result<()> {
        let data = batch.data();
        let key_arrays = self
            .group_by
            .iter()
            .map(|e| evaluate(e.as_ref(), &data))
            .collect::<Result<Vec<_>>>()?;
        let key_rows = self.keys.convert_columns(&key_arrays)?;
        let args: Vec<Vec<ArrayRef>> = self
            .aggregates
            .iter()
            .map(|a| {
                a.expressions()
                    .iter()
                    .map(|e| evaluate(e.as_ref(), &data))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        // Rows of this batch by group, in first-seen order.
        let mut order: Vec<OwnedRow> = Vec::new();
        let mut by_group: HashMap<OwnedRow, Vec<u32>> = HashMap::new();
        for i in 0..data.num_rows() {
            let k = key_rows.row(i).owned();
            by_group
                .entry(k.clone())
                .or_insert_with(|| {
                    order.push(k);
                    Vec::new()
                })
                .push(i as u32);
        }
        let weights = batch.weights();
        let mut changes = Vec::new();
        for k in order {
            let indices = &by_group[&k];
            if !self.groups.contains_key(&k) {
                let first = indices[0] as usize;
                let key = key_arrays
                    .iter()
                    .map(|a| ScalarValue::try_from_array(a, first).map_err(df))
                    .collect::<Result<_>>()?;
                let g = self.new_group(key)?;
                self.groups.insert(k.clone(), g);
            }
            let g = self.groups.get_mut(&k).expect("invariant: inserted above");
            let (ins, del) = expand(indices, weights);
            for (acc, a) in g.accumulators.iter_mut().zip(&args) {
                if !ins.is_empty() {
                    let values = a
                        .iter()
                        .map(|c| take(c, &ins, None))
                        .collect::<Result<Vec<_>, _>>()?;
                    acc.update_batch(&values).map_err(df)?;
                }
                if !del.is_empty() {
                    let values = a
                        .iter()
                        .map(|c| take(c, &del, None))
                        .collect::<Result<Vec<_>, _>>()?;
                    acc.retract_batch(&values).map_err(df)?;
                }
            }
            g.rows += indices
                .iter()
                .map(|&i| weights.value(i as usize))
                .sum::<i64>();
            let new = if g.rows > 0 {
                let mut row = g.key.clone();
                for acc in g.accumulators.iter_mut() {
                    row.push(acc.evaluate().map_err(df)?);
                }
                Some(row)
            } else {
                None
            };
            if new != g.emitted {
                if let Some(old) = g.emitted.take() {
                    changes.push((old, -1));
                }
                if let Some(new) = &new {
                    changes.push((new.clone(), 1));
                }
                g.emitted = new;
            }
            if g.rows == 0 {
                self.groups.remove(&k);
            }
        }
        out.emit(self.output(changes)?);
        Ok(())
    }
}

/// A column reference by position, for callers building group keys.
pub fn column(name: &str, index: usize) -> Arc<dyn PhysicalExpr> {
    Arc::new(Column::new(name, index))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion_functions_aggregate::count::count_udaf;
    use datafusion_functions_aggregate::sum::sum_udaf;
    use datafusion_physical_expr::aggregate::AggregateExprBuilder;

    use super::*;

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn input(rows: &[(&str, i64, i64)]) -> ChangeBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
        ];
        ChangeBatch::try_new(RecordBatch::try_new(with_weight(&input_schema()), cols).unwrap())
            .unwrap()
    }

    /// `SELECT k, sum(v), count(v) FROM t GROUP BY k`
    fn op() -> HashAggregate {
        let v = column("v", 1);
        let agg = |f, name: &str| {
            Arc::new(
                AggregateExprBuilder::new(f, vec![Arc::clone(&v)])
                    .schema(input_schema())
                    .alias(name)
                    .build()
                    .unwrap(),
            )
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("s", DataType::Int64, true),
            Field::new("c", DataType::Int64, true),
        ]));
        HashAggregate::try_new(
            vec![column("k", 0)],
            vec![agg(sum_udaf(), "s"), agg(count_udaf(), "c")],
            schema,
        )
        .unwrap()
    }

    fn rows(out: &mut Emitter) -> Vec<(String, Option<i64>, i64, i64)> {
        let mut v = Vec::new();
        for b in out.drain() {
            let d = b.batch();
            let k = d.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            let s = d.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            let c = d.column(2).as_any().downcast_ref::<Int64Array>().unwrap();
            for i in 0..d.num_rows() {
                v.push((
                    k.value(i).to_string(),
                    s.is_valid(i).then(|| s.value(i)),
                    c.value(i),
                    b.weights().value(i),
                ));
            }
        }
        v
    }

    #[test]
    fn order_dependent_aggregates_are_refused() {
        let min = AggregateExprBuilder::new(
            datafusion_functions_aggregate::min_max::min_udaf(),
            vec![column("v", 1)],
        )
        .schema(input_schema())
        .alias("m")
        .build()
        .unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("m", DataType::Int64, true)]));
        assert!(HashAggregate::try_new(vec![], vec![Arc::new(min)], schema).is_err());
    }

    #[test]
    fn groups_update_retract_and_disappear() {
        let mut op = op();
        let mut out = Emitter::default();
        op.on_batch(
            0,
            input(&[("a", 1, 1), ("b", 10, 1), ("a", 2, 2)]),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            rows(&mut out),
            vec![("a".into(), Some(5), 3, 1), ("b".into(), Some(10), 1, 1)],
            "weight 2 counts the row twice"
        );
        // Retract one ("a", 2): the group's row is replaced.
        op.on_batch(0, input(&[("a", 2, -1)]), &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            vec![("a".into(), Some(5), 3, -1), ("a".into(), Some(3), 2, 1)]
        );
        // Delete all of "b": its row is retracted and its state freed.
        op.on_batch(0, input(&[("b", 10, -1)]), &mut out).unwrap();
        assert_eq!(rows(&mut out), vec![("b".into(), Some(10), 1, -1)]);
        assert_eq!(op.group_count(), 1);
        // An insert and its retraction in one batch change nothing.
        op.on_batch(0, input(&[("a", 7, 1), ("a", 7, -1)]), &mut out)
            .unwrap();
        assert!(rows(&mut out).is_empty());
    }
}
