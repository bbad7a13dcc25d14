//! `HashAggregate`: GROUP BY with DataFusion accumulators, maintained under retractions.
//! Sums, counts and moments use DataFusion's sliding accumulators (`retract_batch`); min,
//! max, DISTINCT and collectors (string_agg, array_agg, percentiles, ordered first_value)
//! keep the group's argument values (and ORDER BY values) as a multiset and evaluate from
//! it, so deleting the current extreme is exact. After each batch every touched group
//! emits `-old`/`+new`. A global aggregate (no GROUP BY) always has its one row. Windowed groups close at the watermark:
//! their state is freed, and under EMIT ON WINDOW CLOSE their final row is emitted then.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int8Array, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion_common::ScalarValue;
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;
use datafusion_physical_expr::expressions::Column;

mod snapshot;

use crate::message::{Barrier, Watermark};
use crate::operator::{Emitter, Operator};
use crate::state::StateSnapshot;
use crate::{ChangeBatch, EngineError, HashMap, Result};

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

/// Aggregates whose result ignores duplicates: evaluated over the distinct values.
const IDEMPOTENT: &[&str] = &["bool_and", "bool_or"];

/// Aggregates evaluated from the multiset of their arguments.
const FROM_MULTISET: &[&str] = &[
    "bool_and",
    "bool_or",
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

/// How one aggregate is maintained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sliding,
    Min,
    Max,
    /// Re-run a fresh accumulator over the multiset (DISTINCT: each value once).
    Recompute,
    /// DataFusion's ordinary accumulator, for input that never retracts: O(1) per group.
    Plain,
}

struct Aggregate {
    expr: Arc<AggregateFunctionExpr>,
    kind: Kind,
    /// Row encoding of the arguments, for multiset kinds (made from the first batch).
    args: Option<RowConverter>,
}

impl Aggregate {
    /// What the accumulator is fed: the arguments, then the ORDER BY expressions of an
    /// ordered aggregate (`string_agg(a, ',' ORDER BY b)`), as DataFusion's accumulators
    /// take them. A multiset kind keeps all of them per value.
    fn inputs(&self) -> Vec<Arc<dyn PhysicalExpr>> {
        let all = self.expr.all_expressions();
        all.args.into_iter().chain(all.order_by_exprs).collect()
    }

    /// A new accumulator for the sliding and plain kinds.
    fn fresh_accumulator(&self) -> Result<Box<dyn datafusion_expr::Accumulator>> {
        let acc = if self.kind == Kind::Sliding {
            self.expr.create_sliding_accumulator()
        } else {
            self.expr.create_accumulator()
        };
        acc.map_err(EngineError::from)
    }
}

/// One aggregate's state in one group.
enum State {
    Sliding(Box<dyn datafusion_expr::Accumulator>),
    Multiset(BTreeMap<OwnedRow, i64>),
}

/// One group's state.
struct Group {
    key: Vec<ScalarValue>,
    states: Vec<State>,
    rows: i64,
    /// The row the view holds for it (key, then aggregate values).
    emitted: Option<Vec<ScalarValue>>,
    /// Changed since the last flush (listed in `HashAggregate::dirty`).
    dirty: bool,
}

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

/// Incremental GROUP BY over change batches.
pub struct HashAggregate {
    group_by: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Vec<Aggregate>,
    /// Output data columns: group keys, then aggregates.
    schema: SchemaRef,
    keys: RowConverter,
    /// Groups by their key's row encoding (looked up by the encoded bytes: no allocation
    /// per input row).
    groups: HashMap<Box<[u8]>, Group>,
    close: Option<WindowClose>,
    /// Open groups by the event time at which they close.
    closing: BTreeMap<i64, Vec<Box<[u8]>>>,
    /// Groups changed since the last flush: their change goes out once per epoch.
    dirty: Vec<Box<[u8]>>,
}

impl HashAggregate {
    /// Fails for an aggregate that cannot be kept under arbitrary retractions.
    pub fn try_new(
        group_by: Vec<Arc<dyn PhysicalExpr>>,
        aggregates: Vec<Arc<AggregateFunctionExpr>>,
        schema: SchemaRef,
    ) -> Result<Self> {
        let mut aggs = Vec::with_capacity(aggregates.len());
        for a in aggregates {
            let name = a.fun().name().to_ascii_lowercase();
            let sliding = RETRACTABLE.contains(&name.as_str())
                && !a.is_distinct()
                && a.create_sliding_accumulator()
                    .is_ok_and(|acc| acc.supports_retract_batch());
            let ordered = !a.order_bys().is_empty();
            let kind = match name.as_str() {
                _ if sliding => Kind::Sliding,
                "min" => Kind::Min,
                "max" => Kind::Max,
                n if a.is_distinct() || FROM_MULTISET.contains(&n) => Kind::Recompute,
                // `first_value(x ORDER BY y)` (also what DISTINCT ON is planned as).
                n if ordered && ORDERED_ONLY.contains(&n) => Kind::Recompute,
                _ => {
                    return Err(EngineError::Config(format!(
                        "aggregate {name} cannot be maintained under retractions yet"
                    )));
                }
            };
            aggs.push(Aggregate {
                expr: a,
                kind,
                args: None,
            });
        }
        let key_fields = if group_by.is_empty() {
            vec![SortField::new(arrow::datatypes::DataType::Int8)]
        } else {
            (0..group_by.len())
                .map(|i| SortField::new(schema.field(i).data_type().clone()))
                .collect()
        };
        Ok(Self {
            group_by,
            aggregates: aggs,
            schema,
            keys: RowConverter::new(key_fields)?,
            groups: HashMap::default(),
            close: None,
            closing: BTreeMap::new(),
            dirty: Vec::new(),
        })
    }

    /// For input that only ever inserts (sources, APPEND ONLY tables): min, max, DISTINCT
    /// and the rest keep DataFusion's ordinary accumulators instead of value multisets.
    pub fn with_append_only_input(mut self) -> Self {
        for a in &mut self.aggregates {
            if a.kind != Kind::Sliding {
                a.kind = Kind::Plain;
            }
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

    fn new_group(&mut self, k: &[u8], key: Vec<ScalarValue>) -> Result<()> {
        let states = self
            .aggregates
            .iter()
            .map(|a| match a.kind {
                Kind::Sliding | Kind::Plain => a.fresh_accumulator().map(State::Sliding),
                _ => Ok(State::Multiset(BTreeMap::new())),
            })
            .collect::<Result<_>>()?;
        if let Some(c) = self.close
            && let Some(ScalarValue::TimestampNanosecond(Some(t), _)) =
                key.get(c.column).and_then(|v| {
                    v.cast_to(&arrow::datatypes::DataType::Timestamp(
                        arrow::datatypes::TimeUnit::Nanosecond,
                        None,
                    ))
                    .ok()
                })
        {
            self.closing
                .entry(t.saturating_add(c.offset_ns))
                .or_default()
                .push(k.into());
        }
        self.groups.insert(
            k.into(),
            Group {
                key,
                states,
                rows: 0,
                emitted: None,
                dirty: false,
            },
        );
        Ok(())
    }

    /// Emits the change of every group touched since the last flush: one retraction of
    /// its old row and one insert of its new row, however many batches touched it in the
    /// epoch. Groups left with no rows go.
    fn flush(&mut self, out: &mut Emitter) -> Result<()> {
        if self.dirty.is_empty() {
            return Ok(());
        }
        let global = self.is_global();
        let mut changes = Vec::new();
        for k in std::mem::take(&mut self.dirty) {
            let Some(g) = self.groups.get_mut(&k) else {
                continue;
            };
            g.dirty = false;
            let new = evaluate_group(&self.aggregates, global, g)?;
            if new != g.emitted {
                if let Some(old) = g.emitted.take() {
                    changes.push((old, -1));
                }
                if let Some(new) = &new {
                    changes.push((new.clone(), 1));
                }
                g.emitted = new;
            }
            if g.rows == 0 && !global {
                self.groups.remove(&k);
            }
        }
        out.emit(self.output(changes)?);
        Ok(())
    }

    /// Output rows from whole rows of scalars (group key, then aggregate values).
    fn output(&self, changes: Vec<(Vec<ScalarValue>, i64)>) -> Result<ChangeBatch> {
        let columns = (0..self.schema.fields().len())
            .map(|c| self.column_of(c, changes.iter().map(|(row, _)| &row[c])))
            .collect::<Result<Vec<_>>>()?;
        ChangeBatch::from_columns(&self.schema, columns, changes.iter().map(|(_, w)| *w))
    }

    /// Output column `c` from scalars.
    fn column_of<'s>(
        &self,
        c: usize,
        values: impl ExactSizeIterator<Item = &'s ScalarValue>,
    ) -> Result<ArrayRef> {
        let ty = self.schema.field(c).data_type();
        let array = if values.len() == 0 {
            arrow::array::new_empty_array(ty)
        } else {
            ScalarValue::iter_to_array(values.cloned()).map_err(EngineError::from)?
        };
        Ok(arrow::compute::cast(&array, ty)?)
    }
}

/// A group's output row now, key then aggregate values (None once it holds no rows,
/// unless the aggregate is global).
fn evaluate_group(
    aggregates: &[Aggregate],
    global: bool,
    g: &mut Group,
) -> Result<Option<Vec<ScalarValue>>> {
    if g.rows <= 0 && !global {
        return Ok(None);
    }
    let mut row = g.key.clone();
    for (a, state) in aggregates.iter().zip(g.states.iter_mut()) {
        row.push(evaluate_state(a, state)?);
    }
    Ok(Some(row))
}

fn evaluate_state(a: &Aggregate, state: &mut State) -> Result<ScalarValue> {
    let out_type = a.expr.field().data_type().clone();
    match state {
        State::Sliding(acc) => acc.evaluate().map_err(EngineError::from),
        State::Multiset(values) => {
            let Some(converter) = a.args.as_ref() else {
                // No input yet: the aggregate of nothing.
                let mut acc = a.expr.create_accumulator().map_err(EngineError::from)?;
                return acc.evaluate().map_err(EngineError::from);
            };
            let pick = match a.kind {
                Kind::Min => values.keys().next(),
                Kind::Max => values.keys().next_back(),
                _ => None,
            };
            if matches!(a.kind, Kind::Min | Kind::Max) {
                return match pick {
                    Some(r) => {
                        let cols = converter.convert_rows([r.row()])?;
                        ScalarValue::try_from_array(&cols[0], 0)
                            .and_then(|v| v.cast_to(&out_type))
                            .map_err(EngineError::from)
                    }
                    None => ScalarValue::try_from(&out_type).map_err(EngineError::from),
                };
            }
            let distinct = a.expr.is_distinct()
                || IDEMPOTENT.contains(&a.expr.fun().name().to_ascii_lowercase().as_str());
            let rows = values.iter().flat_map(|(r, &n)| {
                std::iter::repeat_n(r.row(), if distinct { 1 } else { n.max(0) as usize })
            });
            let cols = converter.convert_rows(rows)?;
            let mut acc = a.expr.create_accumulator().map_err(EngineError::from)?;
            acc.update_batch(&cols).map_err(EngineError::from)?;
            acc.evaluate().map_err(EngineError::from)
        }
    }
}

fn evaluate(expr: &dyn PhysicalExpr, data: &RecordBatch) -> Result<ArrayRef> {
    expr.evaluate(data)
        .and_then(|v| v.into_array(data.num_rows()))
        .map_err(EngineError::from)
}

/// Row indexes repeated by their weights' magnitudes: (for inserts, for retractions).
fn expand(weights: &Int64Array) -> (UInt32Array, UInt32Array) {
    let (mut ins, mut del) = (Vec::new(), Vec::new());
    for (i, &w) in weights.values().iter().enumerate() {
        let target = if w > 0 { &mut ins } else { &mut del };
        target.extend(std::iter::repeat_n(i as u32, w.unsigned_abs() as usize));
    }
    (UInt32Array::from(ins), UInt32Array::from(del))
}

/// Applies one group's rows (`args`, the aggregate's argument columns, and `weights`: this
/// group's slice of the batch) to one aggregate's state.
fn update_state(
    a: &Aggregate,
    state: &mut State,
    args: &[ArrayRef],
    weights: &Int64Array,
) -> Result<()> {
    match state {
        State::Sliding(acc) => {
            let w = weights.values();
            // The common cases need no copy: all inserts, or all retractions, once each.
            if w.iter().all(|&w| w == 1) {
                return acc.update_batch(args).map_err(EngineError::from);
            }
            if w.iter().all(|&w| w == -1) {
                return acc.retract_batch(args).map_err(EngineError::from);
            }
            let (ins, del) = expand(weights);
            if !ins.is_empty() {
                let values = args
                    .iter()
                    .map(|c| take(c, &ins, None))
                    .collect::<Result<Vec<_>, _>>()?;
                acc.update_batch(&values).map_err(EngineError::from)?;
            }
            if !del.is_empty() {
                let values = args
                    .iter()
                    .map(|c| take(c, &del, None))
                    .collect::<Result<Vec<_>, _>>()?;
                acc.retract_batch(&values).map_err(EngineError::from)?;
            }
        }
        State::Multiset(values) => {
            let converter = a
                .args
                .as_ref()
                .expect("invariant: multiset kinds have args");
            let rows = converter.convert_columns(args)?;
            // min and max are read off the multiset, so it must not hold NULLs; the others
            // replay it to DataFusion's accumulator, which skips NULLs where the aggregate
            // does (string_agg) and keeps them where it does not (array_agg, first_value).
            let skip_nulls = matches!(a.kind, Kind::Min | Kind::Max);
            for (j, &w) in weights.values().iter().enumerate() {
                if skip_nulls && args.first().is_some_and(|c| c.is_null(j)) {
                    continue;
                }
                let e = values.entry(rows.row(j).owned()).or_insert(0);
                *e += w;
                if *e == 0 {
                    values.remove(&rows.row(j).owned());
                }
            }
        }
    }
    Ok(())
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
        let key_arrays = if self.is_global() {
            vec![Arc::new(Int8Array::from(vec![0; data.num_rows()])) as ArrayRef]
        } else {
            self.group_by
                .iter()
                .map(|e| evaluate(e.as_ref(), &data))
                .collect::<Result<Vec<_>>>()?
        };
        let key_rows = self.keys.convert_columns(&key_arrays)?;
        let args: Vec<Vec<ArrayRef>> = self
            .aggregates
            .iter()
            .map(|a| {
                a.inputs()
                    .iter()
                    .map(|e| evaluate(e.as_ref(), &data))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        for (a, args) in self.aggregates.iter_mut().zip(&args) {
            if matches!(a.kind, Kind::Min | Kind::Max | Kind::Recompute) && a.args.is_none() {
                let fields = args
                    .iter()
                    .map(|c| SortField::new(c.data_type().clone()))
                    .collect();
                a.args = Some(RowConverter::new(fields)?);
            }
        }
        // Rows of this batch by group (by the key's encoded bytes), in first-seen order.
        let mut by_group: HashMap<&[u8], usize> = HashMap::default();
        let mut batch_groups: Vec<(&[u8], Vec<u32>)> = Vec::new();
        for i in 0..data.num_rows() {
            let k = key_rows.row(i).data();
            let at = *by_group.entry(k).or_insert_with(|| {
                batch_groups.push((k, Vec::new()));
                batch_groups.len() - 1
            });
            batch_groups[at].1.push(i as u32);
        }
        // The batch's rows ordered by group (one take per column); each group is then a
        // zero-copy slice.
        let order = UInt32Array::from_iter_values(
            batch_groups
                .iter()
                .flat_map(|(_, rows)| rows.iter().copied()),
        );
        let args = args
            .iter()
            .map(|cols| {
                cols.iter()
                    .map(|c| take(c, &order, None))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let weights = take(batch.weights(), &order, None)?;
        let weights = weights
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("invariant: weights are Int64");
        let global = self.is_global();
        let emit_on_close = self.emit_on_close();
        let mut offset = 0;
        for (k, indices) in batch_groups {
            let (start, len) = (offset, indices.len());
            offset += len;
            if !self.groups.contains_key(k) {
                let first = indices[0] as usize;
                let key = if global {
                    Vec::new()
                } else {
                    key_arrays
                        .iter()
                        .map(|a| ScalarValue::try_from_array(a, first).map_err(EngineError::from))
                        .collect::<Result<_>>()?
                };
                self.new_group(k, key)?;
            }
            let g = self.groups.get_mut(k).expect("invariant: inserted above");
            let group_weights = weights.slice(start, len);
            for ((a, state), args) in self.aggregates.iter().zip(&mut g.states).zip(&args) {
                let group_args: Vec<ArrayRef> = args.iter().map(|c| c.slice(start, len)).collect();
                update_state(a, state, &group_args, &group_weights)?;
            }
            g.rows += group_weights.values().iter().sum::<i64>();
            if emit_on_close {
                if g.rows == 0 && !global {
                    self.groups.remove(k);
                }
            } else if !g.dirty {
                // Its change goes out at the barrier (or when its window closes).
                g.dirty = true;
                self.dirty.push(k.into());
            }
        }
        if self.dirty.len() >= FLUSH_GROUPS {
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
        // A closing group's last change goes out before its state does.
        if closed
            .values()
            .flatten()
            .any(|k| self.groups.get(k).is_some_and(|g| g.dirty))
        {
            self.flush(out)?;
        }
        let mut changes = Vec::new();
        for k in closed.into_values().flatten() {
            if let Some(mut g) = self.groups.remove(&k)
                && self.emit_on_close()
                && let Some(row) = evaluate_group(&self.aggregates, self.is_global(), &mut g)?
            {
                changes.push((row, 1));
            }
        }
        out.emit(self.output(changes)?);
        Ok(watermark)
    }

    fn holds_watermarks(&self) -> bool {
        // Changes wait for the barrier; a watermark passed on before them could make
        // them late downstream (an interval join that drops late rows by the aggregate's
        // time columns). A closing window's change already goes out before its watermark.
        !self.emit_on_close()
    }

    fn on_barrier(&mut self, _barrier: Barrier, out: &mut Emitter) -> Result<()> {
        self.flush(out)?;
        // A global aggregate has its row from the start, even over no input.
        if self.is_global() && self.groups.is_empty() {
            let k = self
                .keys
                .convert_columns(&[Arc::new(Int8Array::from(vec![0])) as ArrayRef])?;
            let k: Box<[u8]> = k.row(0).data().into();
            self.new_group(&k, Vec::new())?;
            let mut g = self.groups.remove(&k).expect("invariant: inserted above");
            let row = evaluate_group(&self.aggregates, self.is_global(), &mut g)?;
            if let Some(row) = &row {
                out.emit(self.output(vec![(row.clone(), 1)])?);
            }
            // A global group's key is empty: its row is its aggregate values.
            g.emitted = row;
            self.groups.insert(k, g);
        }
        Ok(())
    }

    fn snapshot(&mut self) -> Result<StateSnapshot> {
        self.snapshot_state()
    }

    fn restore(&mut self, snapshot: &StateSnapshot) -> Result<()> {
        self.restore_state(snapshot)
    }

    fn state_bytes(&self) -> usize {
        self.groups
            .values()
            .map(|g| {
                64 + g
                    .states
                    .iter()
                    .map(|s| match s {
                        State::Sliding(a) => a.size(),
                        State::Multiset(m) => m.keys().map(|r| r.row().as_ref().len() + 40).sum(),
                    })
                    .sum::<usize>()
            })
            .sum()
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
