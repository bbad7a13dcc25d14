//! The aggregates that have no columnar state: DataFusion accumulators (sliding ones for
//! moments, plain ones over append-only input) and value multisets (min/max under
//! retractions, DISTINCT, collectors), one per group, fed each group's slice of a batch.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, UInt32Array};
use arrow::compute::take;
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion_common::ScalarValue;
use datafusion_expr::Accumulator;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;

use super::group_state::GroupState;
use crate::state::{StateSnapshot, counter, rows_table, table_rows};
use crate::{EngineError, Result};

/// Aggregates whose result ignores duplicates: evaluated over the distinct values.
const IDEMPOTENT: &[&str] = &["bool_and", "bool_or", "bit_and", "bit_or"];

/// How one aggregate is kept per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// DataFusion's sliding accumulator (`retract_batch`).
    Sliding,
    Min,
    Max,
    /// Re-run a fresh accumulator over the multiset (DISTINCT: each value once).
    Recompute,
    /// DataFusion's ordinary accumulator, for input that never retracts: O(1) per group.
    Plain,
}

enum State {
    Empty,
    Accumulator(Box<dyn Accumulator>),
    Multiset(BTreeMap<OwnedRow, i64>),
}

/// One aggregate kept group by group.
pub(super) struct PerGroupState {
    expr: Arc<AggregateFunctionExpr>,
    kind: Kind,
    /// Row encoding of the arguments, for multiset kinds (made from the first batch).
    args: Option<RowConverter>,
    states: Vec<State>,
}

impl PerGroupState {
    pub(super) fn new(expr: Arc<AggregateFunctionExpr>, kind: Kind) -> Self {
        Self {
            expr,
            kind,
            args: None,
            states: Vec::new(),
        }
    }

    fn is_multiset(&self) -> bool {
        matches!(self.kind, Kind::Min | Kind::Max | Kind::Recompute)
    }

    fn fresh_accumulator(&self) -> Result<Box<dyn Accumulator>> {
        let acc = if self.kind == Kind::Sliding {
            self.expr.create_sliding_accumulator()
        } else {
            self.expr.create_accumulator()
        };
        acc.map_err(EngineError::from)
    }

    fn fresh_state(&self) -> Result<State> {
        Ok(if self.is_multiset() {
            State::Multiset(BTreeMap::new())
        } else {
            State::Accumulator(self.fresh_accumulator()?)
        })
    }

    fn state_mut(&mut self, slot: u32) -> Result<&mut State> {
        let s = slot as usize;
        if self.states.len() <= s {
            self.states.resize_with(s + 1, || State::Empty);
        }
        if matches!(self.states[s], State::Empty) {
            self.states[s] = self.fresh_state()?;
        }
        Ok(&mut self.states[s])
    }

    /// Applies one group's rows (`args` and `weights` are its slice of the batch).
    fn update_group(&mut self, slot: u32, args: &[ArrayRef], weights: &Int64Array) -> Result<()> {
        let kind = self.kind;
        let rows = match &self.args {
            Some(converter) => Some(converter.convert_columns(args)?),
            None => None,
        };
        match self.state_mut(slot)? {
            State::Accumulator(acc) => {
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
                    acc.update_batch(&take_all(args, &ins)?)?;
                }
                if !del.is_empty() {
                    acc.retract_batch(&take_all(args, &del)?)?;
                }
            }
            State::Multiset(values) => {
                let rows = rows.expect("invariant: multiset kinds have args");
                // min and max are read off the multiset, so it must not hold NULLs; the
                // others replay it to DataFusion's accumulator, which skips NULLs where the
                // aggregate does (string_agg) and keeps them where it does not (array_agg).
                let skip_nulls = matches!(kind, Kind::Min | Kind::Max);
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
            State::Empty => unreachable!("state_mut makes a state"),
        }
        Ok(())
    }

    fn evaluate_group(&mut self, slot: u32) -> Result<ScalarValue> {
        let out_type = self.expr.field().data_type().clone();
        let (values, converter) = match (self.states.get_mut(slot as usize), &self.args) {
            (Some(State::Accumulator(acc)), _) => return acc.evaluate().map_err(EngineError::from),
            (Some(State::Multiset(values)), Some(converter)) => (values, converter),
            // No input yet: the aggregate of nothing.
            _ => {
                let mut acc = self.expr.create_accumulator()?;
                return acc.evaluate().map_err(EngineError::from);
            }
        };
        if matches!(self.kind, Kind::Min | Kind::Max) {
            let pick = if self.kind == Kind::Min {
                values.keys().next()
            } else {
                values.keys().next_back()
            };
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
        let distinct = self.expr.is_distinct()
            || IDEMPOTENT.contains(&self.expr.fun().name().to_ascii_lowercase().as_str());
        let rows = values.iter().flat_map(|(r, &n)| {
            std::iter::repeat_n(r.row(), if distinct { 1 } else { n.max(0) as usize })
        });
        let cols = converter.convert_rows(rows)?;
        let mut acc = self.expr.create_accumulator()?;
        acc.update_batch(&cols)?;
        acc.evaluate().map_err(EngineError::from)
    }
}

impl GroupState for PerGroupState {
    fn update(&mut self, slots: &[u32], args: &[ArrayRef], weights: &Int64Array) -> Result<()> {
        if slots.is_empty() {
            return Ok(());
        }
        if self.is_multiset() && self.args.is_none() {
            let fields = args
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect();
            self.args = Some(RowConverter::new(fields)?);
        }
        if slots.iter().all(|&s| s == slots[0]) {
            return self.update_group(slots[0], args, weights);
        }
        // The rows ordered by group (stable: arrival order within a group stays), so each
        // group is a zero-copy slice.
        let mut order: Vec<u32> = (0..slots.len() as u32).collect();
        order.sort_by_key(|&i| slots[i as usize]);
        let order = UInt32Array::from(order);
        let args = take_all(args, &order)?;
        let weights = take(weights, &order, None)?;
        let weights = weights
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("invariant: weights are Int64");
        let mut start = 0;
        while start < order.len() {
            let slot = slots[order.value(start) as usize];
            let mut end = start + 1;
            while end < order.len() && slots[order.value(end) as usize] == slot {
                end += 1;
            }
            let len = end - start;
            let group_args: Vec<ArrayRef> = args.iter().map(|c| c.slice(start, len)).collect();
            self.update_group(slot, &group_args, &weights.slice(start, len))?;
            start = end;
        }
        Ok(())
    }

    fn evaluate(&mut self, slots: &[u32]) -> Result<ArrayRef> {
        let ty = self.expr.field().data_type().clone();
        if slots.is_empty() {
            return Ok(arrow::array::new_empty_array(&ty));
        }
        let values = slots
            .iter()
            .map(|&s| self.evaluate_group(s))
            .collect::<Result<Vec<_>>>()?;
        let array = ScalarValue::iter_to_array(values)?;
        Ok(arrow::compute::cast(&array, &ty)?)
    }

    fn clear(&mut self, slot: u32) {
        if let Some(s) = self.states.get_mut(slot as usize) {
            *s = State::Empty;
        }
    }

    fn size(&self) -> usize {
        self.states
            .iter()
            .map(|s| match s {
                State::Empty => 8,
                State::Accumulator(a) => a.size(),
                State::Multiset(m) => m.keys().map(|r| r.row().as_ref().len() + 40).sum(),
            })
            .sum()
    }

    /// Accumulators write their `state()`, one column per state field. A `state()` may be
    /// taken only once, so each accumulator is rebuilt from it: the operator carries on
    /// from exactly what the snapshot holds. Multisets go to table `{prefix}multiset`.
    fn snapshot(
        &mut self,
        slots: &[u32],
        prefix: &str,
        extra: &mut StateSnapshot,
    ) -> Result<Vec<ArrayRef>> {
        if self.is_multiset() {
            let Some(converter) = &self.args else {
                return Ok(Vec::new());
            };
            let (mut rows, mut group, mut count) = (Vec::new(), Vec::new(), Vec::new());
            for (i, &s) in slots.iter().enumerate() {
                if let Some(State::Multiset(values)) = self.states.get(s as usize) {
                    for (r, &n) in values {
                        rows.push(r.row());
                        group.push(i as i64);
                        count.push(n);
                    }
                }
            }
            let table = rows_table(converter, rows, &[("__group", group), ("__count", count)])?;
            extra.put(format!("{prefix}multiset"), table);
            return Ok(Vec::new());
        }
        let mut states: Vec<Vec<ScalarValue>> = Vec::with_capacity(slots.len());
        for &s in slots {
            let fresh = self.fresh_accumulator()?;
            let State::Accumulator(acc) = self.state_mut(s)? else {
                unreachable!("accumulator kinds hold accumulators");
            };
            let state = acc.state()?;
            let mut rebuilt = fresh;
            rebuilt.merge_batch(&one_row(&state)?)?;
            *acc = rebuilt;
            states.push(state);
        }
        let width = states.first().map_or(0, Vec::len);
        (0..width)
            .map(|f| {
                ScalarValue::iter_to_array(states.iter().map(|v| v[f].clone()))
                    .map_err(EngineError::from)
            })
            .collect()
    }

    fn restore(
        &mut self,
        slots: &[u32],
        columns: &[ArrayRef],
        prefix: &str,
        extra: &StateSnapshot,
    ) -> Result<()> {
        if !self.is_multiset() {
            for (i, &s) in slots.iter().enumerate() {
                let state: Vec<ArrayRef> = columns.iter().map(|c| c.slice(i, 1)).collect();
                let State::Accumulator(acc) = self.state_mut(s)? else {
                    unreachable!("accumulator kinds hold accumulators");
                };
                acc.merge_batch(&state)?;
            }
            return Ok(());
        }
        let Some(table) = extra.table(&format!("{prefix}multiset")) else {
            return Ok(());
        };
        let width = table.num_columns() - 2;
        if self.args.is_none() {
            let fields = table.columns()[..width]
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect();
            self.args = Some(RowConverter::new(fields)?);
        }
        let converter = self.args.as_ref().expect("invariant: set above");
        let (_, values) = table_rows(converter, table, width)?;
        let (group, count) = (counter(table, "__group")?, counter(table, "__count")?);
        for r in 0..table.num_rows() {
            let slot = slots[group.value(r) as usize];
            let row = values.row(r).owned();
            if let State::Multiset(m) = self.state_mut(slot)? {
                m.insert(row, count.value(r));
            }
        }
        Ok(())
    }
}

/// `columns`, each taken at `indices`.
fn take_all(columns: &[ArrayRef], indices: &UInt32Array) -> Result<Vec<ArrayRef>> {
    columns
        .iter()
        .map(|c| take(c, indices, None).map_err(EngineError::from))
        .collect()
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

/// A state's values as one-row arrays, what `merge_batch` takes.
fn one_row(state: &[ScalarValue]) -> Result<Vec<ArrayRef>> {
    state
        .iter()
        .map(|v| v.to_array().map_err(EngineError::from))
        .collect()
}
