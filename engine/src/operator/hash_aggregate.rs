//! `HashAggregate`: GROUP BY maintained under retractions. Groups are slots in columnar
//! state: counts, sums and averages are weighted sums, min/max over append-only input one
//! value per group, and the rest (moments, min/max under retractions, DISTINCT, collectors)
//! DataFusion accumulators or value multisets per group (`group_state`, `per_group`).
//! After each epoch every touched group emits `-old`/`+new`. A global aggregate (no GROUP
//! BY) always has its one row. Windowed groups close at the watermark: their state is
//! freed, and under EMIT ON WINDOW CLOSE their final row is emitted then.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int8Array, Int64Array, UInt32Array};
use arrow::compute::{cast, concat, take};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;
use datafusion_physical_expr::expressions::Column;

mod group_state;
mod groups;
mod per_group;
mod snapshot;

use group_state::{GroupState, LinearState, extreme};
use groups::Groups;
use per_group::{Kind, PerGroupState};

use crate::message::{Barrier, Watermark};
use crate::operator::eval::{ValueErrors, evaluate};
use crate::operator::{Emitter, Operator, timestamps_ns};
use crate::state::{StateRouter, StateSnapshot};
use crate::{ChangeBatch, EngineError, Result};

/// Aggregates whose sliding accumulators retract in any order (sums and counts of moments).
const RETRACTABLE: &[&str] = &[
    "sum",
    "count",
    "avg",
    "mean",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "var",
    "var_pop",
    "var_samp",
];

/// Aggregates evaluated from the multiset of their arguments.
const FROM_MULTISET: &[&str] = &[
    "bool_and",
    "bool_or",
    "bit_and",
    "bit_or",
    "bit_xor",
    "min",
    "max",
    "string_agg",
    "array_agg",
    "approx_percentile_cont",
    "percentile_cont",
    "median",
    "approx_median",
    "approx_distinct",
];

/// Aggregates kept only with an ORDER BY (without one their result depends on arrival
/// order), evaluated from the multiset of their arguments and ordering values.
const ORDERED_ONLY: &[&str] = &["first_value", "last_value"];

/// Changed groups that make an epoch's changes go out before its barrier: the burst at
/// the barrier (on the path of every commit) stays bounded.
const FLUSH_GROUPS: usize = 4096;

/// When groups close: group-key column `column` (a timestamp) plus `offset_ns` (e.g. the
/// window size for `window_start`) reaching the watermark.
#[derive(Debug, Clone, Copy)]
pub struct WindowClose {
    pub column: usize,
    pub offset_ns: i64,
    /// EMIT ON WINDOW CLOSE: emit each group once, when it closes.
    pub emit_on_close: bool,
}

/// One aggregate: its expression and its state over all groups.
struct Aggregate {
    expr: Arc<AggregateFunctionExpr>,
    state: Box<dyn GroupState>,
}

impl Aggregate {
    /// What the state is fed: the arguments, then the ORDER BY expressions of an ordered
    /// aggregate (`string_agg(a, ',' ORDER BY b)`), as DataFusion's accumulators take them.
    fn inputs(&self) -> Vec<Arc<dyn PhysicalExpr>> {
        let all = self.expr.all_expressions();
        all.args.into_iter().chain(all.order_by_exprs).collect()
    }
}

/// The state that keeps aggregate `expr`; fails for one that cannot be kept under
/// arbitrary retractions (when `append_only` is false).
fn state_for(expr: &Arc<AggregateFunctionExpr>, append_only: bool) -> Result<Box<dyn GroupState>> {
    let name = expr.fun().name().to_ascii_lowercase();
    let out = expr.field().data_type().clone();
    let ordered = !expr.order_bys().is_empty();
    if !expr.is_distinct() && !ordered {
        if let Some(linear) = LinearState::for_aggregate(&name, expr.expressions().len(), &out) {
            return Ok(Box::new(linear));
        }
        if append_only
            && matches!(name.as_str(), "min" | "max")
            && let Some(state) = extreme(name == "max", &out)
        {
            return Ok(state);
        }
    }
    let sliding = RETRACTABLE.contains(&name.as_str())
        && !expr.is_distinct()
        && expr
            .create_sliding_accumulator()
            .is_ok_and(|acc| acc.supports_retract_batch());
    let kind = match name.as_str() {
        _ if sliding => Kind::Sliding,
        _ if append_only => Kind::Plain,
        "min" => Kind::Min,
        "max" => Kind::Max,
        n if expr.is_distinct() || FROM_MULTISET.contains(&n) => Kind::Recompute,
        // `first_value(x ORDER BY y)` (also what DISTINCT ON is planned as).
        n if ordered && ORDERED_ONLY.contains(&n) => Kind::Recompute,
        _ => {
            return Err(EngineError::Unsupported(format!(
                "aggregate {name} cannot be maintained under retractions yet"
            )));
        }
    };
    // Accumulators are made per group as rows arrive: one that cannot be made (such as
    // `string_agg` with a delimiter that is not a literal) fails here, at CREATE.
    expr.create_accumulator().map_err(|e| {
        EngineError::Unsupported(format!("aggregate {name} in a materialized view: {e}"))
    })?;
    Ok(Box::new(PerGroupState::new(Arc::clone(expr), kind)))
}

/// Incremental GROUP BY over change batches.
pub struct HashAggregate {
    group_by: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Vec<Aggregate>,
    /// Output data columns: group keys, then aggregates.
    schema: SchemaRef,
    /// Row encoding of the group key (an Int8 constant for a global aggregate).
    keys: RowConverter,
    /// The key of a global aggregate's one group.
    global_key: Option<Box<[u8]>>,
    /// Row encoding of a group's aggregate values, what it last emitted.
    values: RowConverter,
    groups: Groups,
    close: Option<WindowClose>,
    /// Open groups by the event time at which they close.
    closing: BTreeMap<i64, Vec<u32>>,
    /// Rows whose aggregate argument could not be computed.
    value_errors: ValueErrors,
}

impl HashAggregate {
    /// Fails for an aggregate that cannot be kept under arbitrary retractions.
    pub fn try_new(
        group_by: Vec<Arc<dyn PhysicalExpr>>,
        aggregates: Vec<Arc<AggregateFunctionExpr>>,
        schema: SchemaRef,
    ) -> Result<Self> {
        let aggregates = aggregates
            .into_iter()
            .map(|expr| {
                Ok(Aggregate {
                    state: state_for(&expr, false)?,
                    expr,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let key_fields = if group_by.is_empty() {
            vec![SortField::new(DataType::Int8)]
        } else {
            (0..group_by.len())
                .map(|i| SortField::new(schema.field(i).data_type().clone()))
                .collect()
        };
        let keys = RowConverter::new(key_fields)?;
        let global_key = if group_by.is_empty() {
            let rows = keys.convert_columns(&[Arc::new(Int8Array::from(vec![0])) as ArrayRef])?;
            Some(rows.row(0).data().into())
        } else {
            None
        };
        let value_fields = schema.fields()[group_by.len()..]
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Self {
            group_by,
            aggregates,
            schema,
            keys,
            global_key,
            values: RowConverter::new(value_fields)?,
            groups: Groups::default(),
            close: None,
            closing: BTreeMap::new(),
            value_errors: ValueErrors::default(),
        })
    }

    /// For input that only ever inserts (sources, APPEND ONLY tables): min and max keep one
    /// value per group, DISTINCT and the rest DataFusion's ordinary accumulators, instead
    /// of value multisets.
    pub fn with_append_only_input(mut self) -> Self {
        for a in &mut self.aggregates {
            a.state = state_for(&a.expr, true).expect("append-only input keeps any aggregate");
        }
        self
    }

    /// Makes groups close (and their state go) when the watermark passes them.
    pub fn with_window_close(mut self, close: WindowClose) -> Self {
        self.close = Some(close);
        self
    }

    /// Number of groups held (for state-size reporting and tests).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    fn is_global(&self) -> bool {
        self.group_by.is_empty()
    }

    fn emit_on_close(&self) -> bool {
        self.close.is_some_and(|c| c.emit_on_close)
    }

    /// The event time at which each row's group closes (window key column plus offset).
    fn close_times(&self, key_arrays: &[ArrayRef]) -> Result<Option<Int64Array>> {
        let Some(c) = self.close else {
            return Ok(None);
        };
        let Some(column) = key_arrays.get(c.column) else {
            return Ok(None);
        };
        Ok(Some(
            timestamps_ns(column)?
                .iter()
                .map(|t| t.map(|t| t.saturating_add(c.offset_ns)))
                .collect(),
        ))
    }

    /// Frees a group and its state.
    fn remove(&mut self, slot: u32) {
        self.groups.remove(slot);
        for a in &mut self.aggregates {
            a.state.clear(slot);
        }
    }

    /// The aggregate values of `slots` now, in the output types.
    fn evaluate(&mut self, slots: &[u32]) -> Result<Vec<ArrayRef>> {
        let width = self.group_by.len();
        self.aggregates
            .iter_mut()
            .enumerate()
            .map(|(j, a)| {
                let values = a.state.evaluate(slots)?;
                Ok(cast(&values, self.schema.field(width + j).data_type())?)
            })
            .collect()
    }

    /// Output rows: the keys of `slots` followed by `values` (one array per aggregate).
    fn rows_of(&self, slots: &[u32], values: Vec<ArrayRef>) -> Result<Vec<ArrayRef>> {
        let mut columns = if self.is_global() {
            Vec::new()
        } else {
            let parser = self.keys.parser();
            self.keys
                .convert_rows(slots.iter().map(|&s| parser.parse(self.groups.key(s))))?
        };
        columns.extend(values);
        Ok(columns)
    }

    /// Emits the change of every group touched since the last flush: one retraction of
    /// its old row and one insert of its new row, however many batches touched it in the
    /// epoch. Groups left with no rows go.
    fn flush(&mut self, out: &mut Emitter) -> Result<()> {
        let dirty = self.groups.take_dirty();
        if dirty.is_empty() {
            return Ok(());
        }
        let global = self.is_global();
        let live: Vec<u32> = dirty
            .iter()
            .copied()
            .filter(|&s| global || self.groups.rows(s) > 0)
            .collect();
        let values = self.evaluate(&live)?;
        // Without aggregates (GROUP BY only) a group's row is its key: empty values.
        let encoded = if self.aggregates.is_empty() {
            None
        } else {
            Some(self.values.convert_columns(&values)?)
        };
        let (mut retracted, mut old, mut inserted) = (Vec::new(), Vec::new(), Vec::new());
        let mut next = 0;
        for &s in &dirty {
            let new = (live.get(next) == Some(&s)).then(|| {
                next += 1;
                next - 1
            });
            let new_row = new.map(|i| encoded.as_ref().map_or(&[][..], |e| e.row(i).data()));
            if new_row == self.groups.emitted(s) {
                continue;
            }
            if let Some(row) = self.groups.set_emitted(s, new_row) {
                retracted.push(s);
                old.push(row);
            }
            if let Some(i) = new {
                inserted.push(i as u32);
            }
        }
        let parser = self.values.parser();
        let old_values = self
            .values
            .convert_rows(old.iter().map(|r| parser.parse(r)))?;
        let retractions = self.rows_of(&retracted, old_values)?;
        let inserted = UInt32Array::from(inserted);
        let new_slots: Vec<u32> = inserted
            .values()
            .iter()
            .map(|&i| live[i as usize])
            .collect();
        let new_values = values
            .iter()
            .map(|c| take(c, &inserted, None))
            .collect::<Result<Vec<_>, _>>()?;
        let insertions = self.rows_of(&new_slots, new_values)?;
        let columns = retractions
            .iter()
            .zip(&insertions)
            .map(|(r, i)| concat(&[r.as_ref(), i.as_ref()]))
            .collect::<Result<Vec<_>, _>>()?;
        let weights =
            std::iter::repeat_n(-1, retracted.len()).chain(std::iter::repeat_n(1, new_slots.len()));
        out.emit(ChangeBatch::from_columns(&self.schema, columns, weights)?);
        if !global {
            for s in dirty {
                if self.groups.rows(s) <= 0 {
                    self.remove(s);
                }
            }
        }
        Ok(())
    }
}

impl Operator for HashAggregate {
    fn name(&self) -> &'static str {
        "HashAggregate"
    }

    fn describe(&self) -> String {
        let aggs: Vec<String> = self
            .aggregates
            .iter()
            .map(|a| a.expr.name().to_string())
            .collect();
        let mut s = format!(
            "HashAggregate(group by {} column(s): {})",
            self.group_by.len(),
            aggs.join(", ")
        );
        if let Some(c) = self.close {
            s.push_str(if c.emit_on_close {
                " emit on window close"
            } else {
                " windows freed at watermark"
            });
        }
        s
    }

    fn on_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Emitter) -> Result<()> {
        let data = batch.data();
        let n = data.num_rows();
        let weights = batch.weights();
        let slots: Vec<u32> = if let Some(key) = &self.global_key {
            let slot = self.groups.find_or_insert(key, None);
            vec![slot; n]
        } else {
            let key_arrays = self
                .group_by
                .iter()
                .map(|e| evaluate(e.as_ref(), &data))
                .collect::<Result<Vec<_>>>()?;
            let close_times = self.close_times(&key_arrays)?;
            let key_rows = self.keys.convert_columns(&key_arrays)?;
            let mut slots = Vec::with_capacity(n);
            for i in 0..n {
                let close_at = close_times
                    .as_ref()
                    .and_then(|t| t.is_valid(i).then(|| t.value(i)));
                let (slot, new) = self
                    .groups
                    .find_or_insert_new(key_rows.row(i).data(), close_at);
                if new && let Some(t) = close_at {
                    self.closing.entry(t).or_default().push(slot);
                }
                slots.push(slot);
            }
            slots
        };
        // An argument that cannot be computed for a row is NULL for it (`sum(a / b)` with
        // b = 0 skips the row), as the same row's retraction will find.
        for a in &mut self.aggregates {
            let args = a
                .inputs()
                .iter()
                .map(|e| Ok(self.value_errors.evaluate(e.as_ref(), &data)?.0))
                .collect::<Result<Vec<_>>>()?;
            a.state.update(&slots, &args, weights)?;
        }
        let emit_on_close = self.emit_on_close();
        for (&s, &w) in slots.iter().zip(weights.values()) {
            self.groups.add_rows(s, w, !emit_on_close);
        }
        if emit_on_close && !self.is_global() {
            for &s in &slots {
                if self.groups.in_use(s) && self.groups.rows(s) == 0 {
                    self.remove(s);
                }
            }
        }
        if self.groups.dirty_count() >= FLUSH_GROUPS {
            self.flush(out)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Watermark, out: &mut Emitter) -> Result<Watermark> {
        let Some(t) = watermark.time() else {
            return Ok(watermark);
        };
        // Groups whose close time is <= t are complete.
        let open = self.closing.split_off(&t.saturating_add(1));
        let closed = std::mem::replace(&mut self.closing, open);
        // A slot freed and reused since it was listed closes with its new group's time.
        let closed: Vec<u32> = closed
            .into_values()
            .flatten()
            .filter(|&s| self.groups.in_use(s) && self.groups.close_at(s).is_some_and(|c| c <= t))
            .collect();
        // A closing group's last change goes out before its state does.
        if closed.iter().any(|&s| self.groups.is_dirty(s)) {
            self.flush(out)?;
        }
        let mut closed: Vec<u32> = closed
            .into_iter()
            .filter(|&s| self.groups.in_use(s))
            .collect();
        closed.sort_unstable();
        closed.dedup();
        if self.emit_on_close() {
            let live: Vec<u32> = closed
                .iter()
                .copied()
                .filter(|&s| self.groups.rows(s) > 0)
                .collect();
            let values = self.evaluate(&live)?;
            let columns = self.rows_of(&live, values)?;
            out.emit(ChangeBatch::from_columns(
                &self.schema,
                columns,
                std::iter::repeat_n(1, live.len()),
            )?);
        }
        for s in closed {
            self.remove(s);
        }
        Ok(watermark)
    }

    fn holds_watermarks(&self) -> bool {
        // Changes wait for the barrier; a watermark passed on before them could make
        // them late downstream (an interval join that drops late rows by the aggregate's
        // time columns). A closing window's change already goes out before its watermark.
        !self.emit_on_close()
    }

    fn on_barrier(&mut self, _barrier: Barrier, out: &mut Emitter) -> Result<()> {
        // A global aggregate has its row from the start, even over no input.
        if let Some(key) = &self.global_key
            && self.groups.len() == 0
        {
            let slot = self.groups.find_or_insert(key, None);
            self.groups.mark_dirty(slot);
        }
        self.flush(out)
    }

    fn snapshot(&mut self) -> Result<StateSnapshot> {
        self.snapshot_state()
    }

    fn restore(&mut self, snapshot: &StateSnapshot) -> Result<()> {
        self.restore_state(snapshot)
    }

    fn rescale(&self, old: Vec<StateSnapshot>, router: &StateRouter) -> Result<Vec<StateSnapshot>> {
        self.rescale_state(&old, router)
    }

    fn state_bytes(&self) -> usize {
        self.groups.size()
            + self
                .aggregates
                .iter()
                .map(|a| a.state.size())
                .sum::<usize>()
    }
}

/// A column reference by position, for callers building group keys.
pub fn column(name: &str, index: usize) -> Arc<dyn PhysicalExpr> {
    Arc::new(Column::new(name, index))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion_functions_aggregate::count::count_udaf;
    use datafusion_functions_aggregate::sum::sum_udaf;
    use datafusion_physical_expr::aggregate::AggregateExprBuilder;

    use super::*;
    use crate::with_weight;

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
    fn global_min_survives_deleting_the_extreme() {
        let min = AggregateExprBuilder::new(
            datafusion_functions_aggregate::min_max::min_udaf(),
            vec![column("v", 1)],
        )
        .schema(input_schema())
        .alias("m")
        .build()
        .unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("m", DataType::Int64, true)]));
        let mut op = HashAggregate::try_new(vec![], vec![Arc::new(min)], schema).unwrap();
        let mut out = Emitter::default();
        let b = Barrier::new(1, 0);
        op.on_barrier(b, &mut out).unwrap();
        let min_of = |out: &mut Emitter| -> Vec<(Option<i64>, i64)> {
            out.drain()
                .iter()
                .flat_map(|b| {
                    let m = b
                        .batch()
                        .column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap()
                        .clone();
                    let w = b.weights().clone();
                    (0..m.len()).map(move |i| (m.is_valid(i).then(|| m.value(i)), w.value(i)))
                })
                .collect()
        };
        assert_eq!(min_of(&mut out), vec![(None, 1)], "one row over no input");
        let mut step = |rows: &[(&str, i64, i64)], out: &mut Emitter| {
            op.on_batch(0, input(rows), out).unwrap();
            op.on_barrier(b, out).unwrap();
        };
        step(&[("a", 3, 1), ("b", 1, 1), ("c", 1, 1)], &mut out);
        assert_eq!(min_of(&mut out), vec![(None, -1), (Some(1), 1)]);
        step(&[("b", 1, -1)], &mut out);
        assert!(min_of(&mut out).is_empty(), "another 1 remains");
        step(&[("c", 1, -1)], &mut out);
        assert_eq!(min_of(&mut out), vec![(Some(1), -1), (Some(3), 1)]);
    }

    #[test]
    fn groups_update_retract_and_disappear() {
        let mut op = op();
        let mut out = Emitter::default();
        let b = Barrier::new(1, 0);
        op.on_batch(
            0,
            input(&[("a", 1, 1), ("b", 10, 1), ("a", 2, 2)]),
            &mut out,
        )
        .unwrap();
        assert!(rows(&mut out).is_empty(), "changes wait for the barrier");
        op.on_barrier(b, &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            vec![("a".into(), Some(5), 3, 1), ("b".into(), Some(10), 1, 1)],
            "weight 2 counts the row twice"
        );
        // Retract one ("a", 2): the group's row is replaced.
        op.on_batch(0, input(&[("a", 2, -1)]), &mut out).unwrap();
        op.on_barrier(b, &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            vec![("a".into(), Some(5), 3, -1), ("a".into(), Some(3), 2, 1)]
        );
        // Delete all of "b": its row is retracted and its state freed.
        op.on_batch(0, input(&[("b", 10, -1)]), &mut out).unwrap();
        op.on_barrier(b, &mut out).unwrap();
        assert_eq!(rows(&mut out), vec![("b".into(), Some(10), 1, -1)]);
        assert_eq!(op.group_count(), 1);
        // An insert and its retraction in one batch change nothing.
        op.on_batch(0, input(&[("a", 7, 1), ("a", 7, -1)]), &mut out)
            .unwrap();
        op.on_barrier(b, &mut out).unwrap();
        assert!(rows(&mut out).is_empty());
        // Several batches in one epoch: one retraction and one insert for the group.
        op.on_batch(0, input(&[("a", 4, 1)]), &mut out).unwrap();
        op.on_batch(0, input(&[("a", 6, 1), ("c", 1, 1)]), &mut out)
            .unwrap();
        op.on_batch(0, input(&[("c", 1, -1)]), &mut out).unwrap();
        op.on_barrier(b, &mut out).unwrap();
        assert_eq!(
            rows(&mut out),
            vec![("a".into(), Some(3), 2, -1), ("a".into(), Some(13), 4, 1)],
            "c came and went within the epoch"
        );
        assert_eq!(op.group_count(), 1);
    }
}
