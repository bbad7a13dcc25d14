//! `HashJoin`: incremental equi-join (inner, outer, semi, anti) of two change streams. Each
//! side keeps its rows by join key; a change on one side joins the other side's current rows
//! (the DBSP delta rule), and rows whose output depends on whether their key has matches
//! (outer joins' NULL padding, semi and anti joins) are retracted or re-emitted when a key's
//! matches appear or disappear. Rows with a NULL key never match. With a condition beyond the
//! keys (`with_condition`), a match is a pair of equal keys that also satisfies it, and each
//! stored row counts its matches, so outer, semi and anti joins flip row by row.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array, new_null_array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion_physical_expr::PhysicalExpr;

mod arena;
mod snapshot;

use arena::{ByteArena, Output};

use crate::message::{Barrier, Watermark};
use crate::operator::time_window::EventClock;
use crate::operator::{Emitter, Operator, timestamps_ns};
use crate::state::{StateRouter, StateSnapshot};
use crate::{ChangeBatch, EngineError, Result, row_converter};

/// What a join emits. Sides are 0 (left) and 1 (right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    /// Rows of the side that have a match, once each (EXISTS, IN).
    Semi(usize),
    /// Rows of the side that have no match (NOT EXISTS).
    Anti(usize),
}

impl JoinKind {
    /// Whether matched pairs are emitted (both sides' columns).
    fn pairs(self) -> bool {
        matches!(self, Self::Inner | Self::Left | Self::Right | Self::Full)
    }

    /// Whether rows of `side` without a match are emitted (outer: padded with NULLs).
    fn unmatched(self, side: usize) -> bool {
        match self {
            Self::Full => true,
            Self::Left => side == 0,
            Self::Right => side == 1,
            Self::Anti(s) => s == side,
            Self::Inner | Self::Semi(_) => false,
        }
    }

    /// Whether rows of `side` with a match are emitted alone.
    fn matched_alone(self, side: usize) -> bool {
        self == Self::Semi(side)
    }

    /// Which sides' columns the output has.
    fn columns(self, side: usize) -> bool {
        match self {
            Self::Semi(s) | Self::Anti(s) => s == side,
            _ => true,
        }
    }
}

/// Maps keyed by the bytes of arrow `Row`s (a side's rows, or join keys), looked up by
/// `&[u8]` without allocating.
/// (`Vec` rather than `Box`: hashbrown's `entry_ref` makes a key with `ToOwned`.)
type ByteMap<V> = hashbrown::HashMap<Vec<u8>, V, foldhash::fast::RandomState>;

/// What `state_bytes` counts for a stored row beyond its row and key bytes: its map entry
/// and its count.
const ROW_OVERHEAD_BYTES: usize = 48;

/// What `state_bytes` counts for one stored row of `key`.
fn stored_bytes(row: &[u8], key: &[u8]) -> usize {
    row.len() + key.len() + ROW_OVERHEAD_BYTES
}

/// A stored row's count and, with a condition, the weight of the other side's rows it
/// matches.
#[derive(Debug, Default, Clone, Copy)]
struct Stored {
    count: i64,
    hits: i64,
}

/// One side's rows with one key value.
#[derive(Default)]
struct Rows {
    rows: ByteMap<Stored>,
    total: i64,
}

/// The other side's rows (with their weights) that one input row matches.
type Matches = Vec<(Box<[u8]>, i64)>;

/// Incremental equi-join.
pub struct HashJoin {
    kind: JoinKind,
    keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    key_types: Vec<DataType>,
    key_rows: RowConverter,
    rows: [RowConverter; 2],
    widths: [usize; 2],
    /// Output data columns: left's then right's.
    schema: SchemaRef,
    state: [ByteMap<Rows>; 2],
    nulls_equal: bool,
    /// A condition over (left columns, right columns) a matching pair must also meet.
    condition: Option<(Arc<dyn PhysicalExpr>, SchemaRef)>,
    /// Temporal (lookup) join: see `with_lookup`.
    lookup: bool,
    /// Lookup: stream rows held until the table's first epoch (its backfill) is in.
    held: Option<Vec<ChangeBatch>>,
    /// Window and interval joins: when each side's rows can no longer match.
    expiry: [Option<Expiry>; 2],
    /// Stored rows (key, then row) by the event time after which they are freed.
    expiring: [BTreeMap<i64, ByteArena>; 2],
    /// Interval joins: per side, the time column by which its rows behind its own
    /// watermark are dropped.
    late: [Option<usize>; 2],
    /// The watermark over both inputs (what frees rows) and each input's own (what
    /// makes one of its rows late).
    clock: EventClock,
    side_clocks: [EventClock; 2],
    late_rows: Arc<AtomicU64>,
    bytes: usize,
    /// What the batch being processed emits (kept between batches for its buffers).
    output: Output,
}

/// When one side's stored rows can no longer match: once the watermark is past the row's
/// `column` (a timestamp) plus `offset_ns`, no row of the other side that is still to come
/// can join it, so it is freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub column: usize,
    pub offset_ns: i64,
}

impl HashJoin {
    /// `left_keys[i] = right_keys[i]` for all i; `schema` is left's columns then right's.
    pub fn try_new(
        kind: JoinKind,
        left_keys: Vec<Arc<dyn PhysicalExpr>>,
        right_keys: Vec<Arc<dyn PhysicalExpr>>,
        inputs: [SchemaRef; 2],
        schema: SchemaRef,
        nulls_equal: bool,
    ) -> Result<Self> {
        if left_keys.is_empty() || left_keys.len() != right_keys.len() {
            return Err(EngineError::Internal(
                "a join needs pairs of equal keys".into(),
            ));
        }
        let key_types = left_keys
            .iter()
            .map(|k| k.data_type(&inputs[0]).map_err(EngineError::from))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            kind,
            key_rows: RowConverter::new(
                key_types
                    .iter()
                    .map(|t| SortField::new(t.clone()))
                    .collect(),
            )?,
            key_types,
            keys: [left_keys, right_keys],
            rows: [
                row_converter(inputs[0].fields())?,
                row_converter(inputs[1].fields())?,
            ],
            widths: [inputs[0].fields().len(), inputs[1].fields().len()],
            schema,
            state: [ByteMap::default(), ByteMap::default()],
            nulls_equal,
            condition: None,
            lookup: false,
            held: None,
            expiry: [None, None],
            expiring: [BTreeMap::new(), BTreeMap::new()],
            late: [None, None],
            clock: EventClock::default(),
            side_clocks: [EventClock::default(); 2],
            late_rows: Arc::new(AtomicU64::new(0)),
            bytes: 0,
            output: Output::default(),
        })
    }

    /// Frees each side's rows once the watermark passes their expiry (window joins: the
    /// window's close; interval joins: the end of the other side's interval). Where
    /// `late[side]` names a time column, that side's rows whose value there is behind
    /// their own input's watermark are dropped and counted: the other side's rows they
    /// could match may be freed already (rows are freed by the watermark over both inputs,
    /// which is never ahead of either).
    pub fn with_expiry(mut self, expiry: [Option<Expiry>; 2], late: [Option<usize>; 2]) -> Self {
        self.expiry = expiry;
        self.late = late;
        self
    }

    /// Pairs of equal keys match only where `condition` (over `pairs`: the left input's
    /// columns, then the right's) is true; outer, semi and anti joins then pad, keep or drop
    /// each row by whether it has such matches.
    pub fn with_condition(mut self, condition: Arc<dyn PhysicalExpr>, pairs: SchemaRef) -> Self {
        self.condition = Some((condition, pairs));
        self
    }

    /// With a condition: for each input row of `side` (None where skipped: a NULL key), the
    /// rows of the other side with its key that meet the condition with it. The other
    /// side's rows do not change while one batch is processed, so this is one evaluation
    /// of the condition over all candidate pairs of the batch.
    fn condition_matches(
        &self,
        side: usize,
        rows: &arrow::row::Rows,
        keys: &arrow::row::Rows,
        skip: impl Fn(usize) -> bool,
    ) -> Result<Option<Vec<Matches>>> {
        let Some((condition, pairs_schema)) = &self.condition else {
            return Ok(None);
        };
        let other = 1 - side;
        let mut candidates: Vec<(usize, &[u8], i64)> = Vec::new();
        for i in (0..rows.num_rows()).filter(|&i| !skip(i)) {
            if let Some(m) = self.state[other].get(keys.row(i).as_ref()) {
                candidates.extend(m.rows.iter().map(|(r, s)| (i, &r[..], s.count)));
            }
        }
        let mut out: Vec<Matches> = vec![Vec::new(); rows.num_rows()];
        if candidates.is_empty() {
            return Ok(Some(out));
        }
        let mine = self.rows[side].convert_rows(candidates.iter().map(|c| rows.row(c.0)))?;
        let parser = self.rows[other].parser();
        let theirs = self.rows[other].convert_rows(candidates.iter().map(|c| parser.parse(c.1)))?;
        let columns = if side == 0 {
            [mine, theirs].concat()
        } else {
            [theirs, mine].concat()
        };
        let pairs = RecordBatch::try_new(Arc::clone(pairs_schema), columns)?;
        let verdict = crate::operator::eval::evaluate(condition.as_ref(), &pairs)?;
        let verdict = verdict
            .as_any()
            .downcast_ref::<arrow::array::BooleanArray>()
            .ok_or_else(|| EngineError::Internal("a join condition must be boolean".into()))?;
        for (n, (i, r, w)) in candidates.into_iter().enumerate() {
            if verdict.is_valid(n) && verdict.value(n) {
                out[i].push((r.into(), w));
            }
        }
        Ok(Some(out))
    }

    /// Rows dropped for arriving behind the watermark.
    pub fn late_rows(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.late_rows)
    }

    /// A temporal join (`FOR SYSTEM_TIME AS OF PROCTIME()`): each left (stream) row joins
    /// the right (table) rows of the moment it arrives and is not kept; later table changes
    /// emit nothing, so they do not rewrite past results.
    /// Stream rows that arrive before the first barrier wait for it, so they find the
    /// table as it was when the view was created, not half loaded.
    pub fn with_lookup(mut self) -> Self {
        self.lookup = true;
        self.held = Some(Vec::new());
        self
    }

    /// The key columns of `data` (one side's rows), in the left side's key types.
    fn key_columns(&self, side: usize, data: &RecordBatch) -> Result<Vec<ArrayRef>> {
        self.keys[side]
            .iter()
            .zip(&self.key_types)
            .map(|(k, ty)| {
                let a = crate::operator::eval::evaluate(k.as_ref(), data)?;
                Ok(if a.data_type() == ty {
                    a
                } else {
                    cast(&a, ty)?
                })
            })
            .collect()
    }

    /// What a change of the batch's row `i` on `side` produces against the other side's
    /// rows of `key` (with a condition: against `met`, those of them it matches).
    fn probe(
        &self,
        side: usize,
        i: usize,
        key: &[u8],
        w: i64,
        met: Option<&Matches>,
        out: &mut Output,
    ) {
        let matched = match met {
            Some(met) => {
                if self.kind.pairs() {
                    for (r, ow) in met {
                        out.push(Some(i), Some(r), w * ow);
                    }
                }
                met.iter().map(|m| m.1).sum::<i64>() > 0
            }
            None => {
                let matches = self.state[1 - side].get(key);
                if self.kind.pairs() {
                    for (r, stored) in matches.iter().flat_map(|m| &m.rows) {
                        out.push(Some(i), Some(r), w * stored.count);
                    }
                }
                matches.is_some_and(|m| m.total > 0)
            }
        };
        if (!matched && self.kind.unmatched(side)) || (matched && self.kind.matched_alone(side)) {
            out.push(Some(i), None, w);
        }
    }

    /// Adds the change to `side`'s rows; when `key` gains its first row there or loses its
    /// last, the other side's rows emitted alone (padded, semi, anti) flip. With a
    /// condition, each row of `met` (the other side's rows this one matches) flips alone
    /// when its own match count crosses zero.
    fn store(
        &mut self,
        side: usize,
        row: &[u8],
        key: &[u8],
        w: i64,
        met: Option<&Matches>,
        out: &mut Output,
    ) {
        let other = 1 - side;
        let size = stored_bytes(row, key);
        let mine = self.state[side].entry_ref(key).or_default();
        let had = mine.total > 0;
        mine.total += w;
        let has = mine.total > 0;
        let stored = mine.rows.entry_ref(row).or_default();
        stored.count += w;
        let count = stored.count;
        if let Some(met) = met {
            stored.hits = met.iter().map(|m| m.1).sum();
        }
        if count == 0 {
            mine.rows.remove(row);
            self.bytes = self.bytes.saturating_sub(size);
        } else if count == w {
            self.bytes += size;
        }
        if mine.rows.is_empty() {
            self.state[side].remove(key);
        }
        let kind = self.kind;
        let alone = |has: bool| {
            if kind.unmatched(other) {
                Some(if has { -1 } else { 1 })
            } else if kind.matched_alone(other) {
                Some(if has { 1 } else { -1 })
            } else {
                None
            }
        };
        if let Some(met) = met {
            let Some(theirs) = self.state[other].get_mut(key) else {
                return;
            };
            for (r, ow) in met {
                let Some(stored) = theirs.rows.get_mut(&r[..]) else {
                    continue;
                };
                let (had, has) = (stored.hits > 0, stored.hits + w > 0);
                stored.hits += w;
                if had != has
                    && let Some(sign) = alone(has)
                {
                    out.push(None, Some(r), sign * ow);
                }
            }
            return;
        }
        if had != has
            && !self.lookup
            && let Some(sign) = alone(has)
        {
            for (r, stored) in self.state[other].get(key).iter().flat_map(|m| &m.rows) {
                out.push(None, Some(r), sign * stored.count);
            }
        }
    }

    /// The output batch of what a batch of `side` (its data columns `data`) produced: that
    /// side's columns taken from `data`, the other side's converted from the stored rows.
    fn output(&self, side: usize, data: &RecordBatch, out: &Output) -> Result<ChangeBatch> {
        let other = 1 - side;
        let mut halves: [Vec<ArrayRef>; 2] = [Vec::new(), Vec::new()];
        if self.kind.columns(side) {
            let mine = UInt32Array::from_iter(out.mine.iter().copied());
            halves[side] = data
                .columns()
                .iter()
                .map(|c| take(c, &mine, None))
                .collect::<std::result::Result<_, _>>()?;
        }
        if self.kind.columns(other) {
            halves[other] = self.stored_columns(other, &out.stored, &out.theirs)?;
        }
        let [left, right] = halves;
        let columns = left.into_iter().chain(right).collect();
        ChangeBatch::from_columns(&self.schema, columns, out.weights.iter().copied())
    }

    /// Output columns of `side` from its rows copied into `stored`: row `theirs[n]` in
    /// output row n, NULLs where None.
    fn stored_columns(
        &self,
        side: usize,
        stored: &ByteArena,
        theirs: &[Option<u32>],
    ) -> Result<Vec<ArrayRef>> {
        if stored.is_empty() {
            let offset = if side == 1 && self.kind.columns(0) {
                self.widths[0]
            } else {
                0
            };
            return Ok((0..self.widths[side])
                .map(|c| new_null_array(self.schema.field(offset + c).data_type(), theirs.len()))
                .collect());
        }
        let parser = self.rows[side].parser();
        let columns = self.rows[side].convert_rows(stored.iter().map(|r| parser.parse(r)))?;
        let indices = UInt32Array::from_iter(theirs.iter().copied());
        Ok(columns
            .iter()
            .map(|c| take(c, &indices, None))
            .collect::<std::result::Result<_, _>>()?)
    }
}

impl Operator for HashJoin {
    fn name(&self) -> &'static str {
        "HashJoin"
    }

    fn describe(&self) -> String {
        let lookup = if self.lookup { ", lookup" } else { "" };
        let expiry = match self.expiry {
            [None, None] => String::new(),
            e => format!(", expiry {e:?}"),
        };
        format!(
            "HashJoin({:?} on {} key(s){lookup}{expiry})",
            self.kind,
            self.key_types.len()
        )
    }

    fn on_batch(&mut self, input: usize, batch: ChangeBatch, emitter: &mut Emitter) -> Result<()> {
        let side = input.min(1);
        if side == 0
            && let Some(held) = &mut self.held
        {
            held.push(batch);
            return Ok(());
        }
        let data = batch.data();
        let weights = batch.weights();
        let keys = self.key_columns(side, &data)?;
        let key_rows = self.key_rows.convert_columns(&keys)?;
        let rows = self.rows[side].convert_columns(data.columns())?;
        let null_key = |i: usize| keys.iter().any(|k| k.is_null(i));
        let met =
            self.condition_matches(side, &rows, &key_rows, |i| !self.nulls_equal && null_key(i))?;
        let expiry = self.expiry[side];
        let times = match expiry {
            Some(e) => Some(timestamps_ns(data.column(e.column))?),
            None => None,
        };
        let late_times = match self.late[side] {
            Some(column) => Some(timestamps_ns(data.column(column))?),
            None => None,
        };
        let mut out = std::mem::take(&mut self.output);
        let mut late = 0;
        for i in 0..data.num_rows() {
            let (w, row) = (weights.value(i), rows.row(i));
            let time = times.as_ref().map(|t| t.is_valid(i).then(|| t.value(i)));
            if let Some(t) = &late_times
                && t.is_valid(i)
                && self.side_clocks[side].is_late(t.value(i))
            {
                late += 1;
                continue;
            }
            if !self.nulls_equal && null_key(i) {
                if self.kind.unmatched(side) && !(self.lookup && side == 1) {
                    out.push(Some(i), None, w);
                }
                continue;
            }
            let key = key_rows.row(i);
            let (row, key) = (row.as_ref(), key.as_ref());
            let met = met.as_ref().map(|m| &m[i]);
            // A lookup join's table side (1) only updates what the stream side (0) finds.
            if !(self.lookup && side == 1) {
                self.probe(side, i, key, w, met, &mut out);
            }
            match (expiry, time) {
                // A row without a time never satisfies the time bound: nothing to keep.
                (Some(_), Some(None)) => {}
                (Some(e), Some(Some(t))) => {
                    if w > 0 {
                        let at = t.saturating_add(e.offset_ns);
                        let expiring = self.expiring[side].entry(at).or_default();
                        expiring.push(key);
                        expiring.push(row);
                    }
                    self.store(side, row, key, w, met, &mut out);
                }
                _ if !(self.lookup && side == 0) => self.store(side, row, key, w, met, &mut out),
                _ => {}
            }
        }
        self.late_rows.fetch_add(late, Ordering::Relaxed);
        let batch = (!out.is_empty()).then(|| self.output(side, &data, &out));
        out.clear();
        self.output = out;
        if let Some(batch) = batch {
            emitter.emit(batch?);
        }
        Ok(())
    }

    fn on_input_watermark(&mut self, port: usize, watermark: Watermark) {
        self.side_clocks[port.min(1)].advance(watermark);
    }

    fn on_watermark(&mut self, watermark: Watermark, _out: &mut Emitter) -> Result<Watermark> {
        let Some(wm) = self.clock.advance(watermark) else {
            return Ok(watermark);
        };
        for side in 0..2 {
            let keep = self.expiring[side].split_off(&wm);
            let expired = std::mem::replace(&mut self.expiring[side], keep);
            for (key, row) in expired.values().flat_map(ByteArena::pairs) {
                let Some(rows) = self.state[side].get_mut(key) else {
                    continue;
                };
                if let Some(stored) = rows.rows.remove(row) {
                    rows.total -= stored.count;
                    self.bytes = self.bytes.saturating_sub(stored_bytes(row, key));
                }
                if rows.rows.is_empty() {
                    self.state[side].remove(key);
                }
            }
        }
        Ok(watermark)
    }

    fn on_barrier(&mut self, _barrier: Barrier, out: &mut Emitter) -> Result<()> {
        for batch in self.held.take().unwrap_or_default() {
            self.on_batch(0, batch, out)?;
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    fn snapshot(&mut self) -> Result<StateSnapshot> {
        self.snapshot_state()
    }

    fn restore(&mut self, snapshot: &StateSnapshot) -> Result<()> {
        self.restore_state(snapshot)
    }

    fn rescale(&self, old: Vec<StateSnapshot>, router: &StateRouter) -> Result<Vec<StateSnapshot>> {
        Self::rescale_state(&old, router)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use arrow::datatypes::{Field, Schema};
    use datafusion_physical_expr::expressions::Column;
    use proptest::prelude::*;

    use super::*;
    use arrow::array::Int64Array;

    use crate::operator::proptests::{Parallel, rescales, restored};
    use crate::with_weight;

    type Row = (Option<i64>, i64);
    type Joined = (Option<i64>, Option<i64>, Option<i64>, Option<i64>);

    fn side_schema(prefix: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(format!("{prefix}k"), DataType::Int64, true),
            Field::new(format!("{prefix}v"), DataType::Int64, true),
        ]))
    }

    fn batch(prefix: &str, rows: &[(Row, i64)]) -> ChangeBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0.1))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ];
        let schema = with_weight(&side_schema(prefix));
        ChangeBatch::try_new(RecordBatch::try_new(schema, cols).unwrap()).unwrap()
    }

    fn join(kind: JoinKind) -> HashJoin {
        let (l, r) = (side_schema("l"), side_schema("r"));
        let mut fields: Vec<Field> = Vec::new();
        for (side, s) in [&l, &r].into_iter().enumerate() {
            if kind.columns(side) {
                fields.extend(s.fields().iter().map(|f| f.as_ref().clone()));
            }
        }
        let key = |name: &str| vec![Arc::new(Column::new(name, 0)) as Arc<dyn PhysicalExpr>];
        let schema = Arc::new(Schema::new(fields));
        HashJoin::try_new(kind, key("lk"), key("rk"), [l, r], schema, false).unwrap()
    }

    /// The join recomputed from both sides' current multisets (semi and anti joins: the
    /// kept side's row in the first two columns); `cond(left, right)` is the condition
    /// beyond equal keys.
    fn recompute_with(
        kind: JoinKind,
        sides: &[HashMap<Row, i64>; 2],
        cond: impl Fn(&Row, &Row) -> bool,
    ) -> HashMap<Joined, i64> {
        let meets = |l: &Row, r: &Row| l.0.is_some() && l.0 == r.0 && cond(l, r);
        // The weight of the other side's rows `row` (on `side`) matches.
        let hits = |side: usize, row: &Row| -> i64 {
            sides[1 - side]
                .iter()
                .filter(|(o, _)| {
                    if side == 0 {
                        meets(row, o)
                    } else {
                        meets(o, row)
                    }
                })
                .map(|(_, w)| w)
                .sum()
        };
        let mut out = HashMap::new();
        if let JoinKind::Semi(s) | JoinKind::Anti(s) = kind {
            let semi = matches!(kind, JoinKind::Semi(_));
            for (row, w) in &sides[s] {
                if (hits(s, row) > 0) == semi {
                    *out.entry((row.0, Some(row.1), None, None)).or_insert(0) += w;
                }
            }
            out.retain(|_, w| *w != 0);
            return out;
        }
        for (l, lw) in &sides[0] {
            for (r, rw) in &sides[1] {
                if meets(l, r) {
                    *out.entry((l.0, Some(l.1), r.0, Some(r.1))).or_insert(0) += lw * rw;
                }
            }
            if kind.unmatched(0) && hits(0, l) <= 0 {
                *out.entry((l.0, Some(l.1), None, None)).or_insert(0) += lw;
            }
        }
        if kind.unmatched(1) {
            for (r, rw) in &sides[1] {
                if hits(1, r) <= 0 {
                    *out.entry((None, None, r.0, Some(r.1))).or_insert(0) += rw;
                }
            }
        }
        out.retain(|_, w| *w != 0);
        out
    }

    /// Feeds `steps` to a join `make` builds, on `width` instances each owning the keys
    /// that hash to it, and after each step compares their accumulated output with the
    /// join of both sides recomputed from scratch under `cond`. After step i, if
    /// `rescales[i]`, a barrier passes and the instances are replaced by that many
    /// restored from their snapshots.
    fn run_against_recomputation(
        make: impl Fn() -> HashJoin + 'static,
        kind: JoinKind,
        steps: Vec<(usize, Vec<(Row, i64)>)>,
        width: usize,
        rescales: Vec<Option<usize>>,
        cond: impl Fn(&Row, &Row) -> bool + Copy,
    ) -> Result<(), TestCaseError> {
        let key = |name: &str| vec![Arc::new(Column::new(name, 0)) as Arc<dyn PhysicalExpr>];
        let mut op = Parallel::new(make, vec![key("lk"), key("rk")], width);
        let mut sides: [HashMap<Row, i64>; 2] = [HashMap::new(), HashMap::new()];
        let mut output = HashMap::new();
        let mut out = Emitter::default();
        for ((side, rows), rescale) in steps.into_iter().zip(rescales) {
            let prefix = if side == 0 { "l" } else { "r" };
            op.on_batch(side, batch(prefix, &rows), &mut out);
            for (row, w) in rows {
                *sides[side].entry(row).or_insert(0) += w;
            }
            sides[side].retain(|_, w| *w != 0);
            if let Some(to) = rescale {
                op.each(
                    |op, out| op.on_barrier(Barrier::new(1, 0), out).unwrap(),
                    &mut out,
                );
                op.rescale(to);
            }
            collect(&mut output, out.drain());
            prop_assert_eq!(&output, &recompute_with(kind, &sides, cond));
        }
        Ok(())
    }

    fn recompute(kind: JoinKind, sides: &[HashMap<Row, i64>; 2]) -> HashMap<Joined, i64> {
        recompute_with(kind, sides, |_, _| true)
    }

    fn collect(into: &mut HashMap<Joined, i64>, batches: Vec<ChangeBatch>) {
        for b in batches {
            let d = b.batch();
            let col = |c: usize| d.column(c).as_any().downcast_ref::<Int64Array>().unwrap();
            let get = |c: usize, i: usize| {
                (c + 1 < d.num_columns() && !col(c).is_null(i)).then(|| col(c).value(i))
            };
            for i in 0..d.num_rows() {
                let key = (get(0, i), get(1, i), get(2, i), get(3, i));
                *into.entry(key).or_insert(0) += b.weights().value(i);
            }
        }
        into.retain(|_, w| *w != 0);
    }

    fn step() -> impl Strategy<Value = (usize, Vec<(Row, i64)>)> {
        let key = prop_oneof![1 => Just(None), 6 => (0i64..3).prop_map(Some)];
        let row = ((key, 0i64..3), -1i64..=2);
        (0usize..2, proptest::collection::vec(row, 0..6))
    }

    /// Whether the join is restored from a snapshot after each step.
    fn restores() -> impl Strategy<Value = Vec<bool>> {
        proptest::collection::vec(prop::bool::weighted(0.2), 40)
    }

    fn kind() -> impl Strategy<Value = JoinKind> {
        prop_oneof![
            Just(JoinKind::Inner),
            Just(JoinKind::Left),
            Just(JoinKind::Right),
            Just(JoinKind::Full),
            (0usize..2).prop_map(JoinKind::Semi),
            (0usize..2).prop_map(JoinKind::Anti)
        ]
    }

    #[test]
    fn lookup_join_uses_the_table_row_of_the_moment() {
        let mut op = join(JoinKind::Left).with_lookup();
        let mut out = Emitter::default();
        let mut output = HashMap::new();
        // Stream rows before the first barrier wait for the table's first epoch.
        let first = batch("l", &[((Some(1), 0), 1), ((Some(2), 0), 1)]);
        op.on_batch(0, first, &mut out).unwrap();
        op.on_batch(1, batch("r", &[((Some(1), 10), 1)]), &mut out)
            .unwrap();
        assert!(out.drain().is_empty());
        op.on_barrier(Barrier::new(1, 0), &mut out).unwrap();
        collect(&mut output, out.drain());
        let joined: HashMap<Joined, i64> = [
            ((Some(1), Some(0), Some(1), Some(10)), 1),
            ((Some(2), Some(0), None, None), 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(output, joined);
        // The table changes: nothing already emitted is rewritten.
        let change = [((Some(1), 10), -1), ((Some(1), 11), 1), ((Some(2), 20), 1)];
        op.on_batch(1, batch("r", &change), &mut out).unwrap();
        assert!(out.drain().is_empty(), "table changes emit nothing");
        // A restored join carries on with the table as it is now.
        let mut op = restored(&mut op, join(JoinKind::Left).with_lookup());
        op.on_batch(0, batch("l", &[((Some(1), 5), 1)]), &mut out)
            .unwrap();
        output.clear();
        collect(&mut output, out.drain());
        let later: HashMap<Joined, i64> = [((Some(1), Some(5), Some(1), Some(11)), 1)]
            .into_iter()
            .collect();
        assert_eq!(output, later);
        assert!(op.state[0].is_empty(), "the stream side keeps no state");
    }

    /// A step of an interval-join run: rows for a side, or a watermark advance.
    #[derive(Debug, Clone)]
    enum Step {
        Rows(usize, Vec<(Row, i64)>),
        Advance(i64),
    }

    fn interval_step() -> impl Strategy<Value = Step> {
        let row = (((0i64..3).prop_map(Some), 0i64..24), 1i64..=2);
        prop_oneof![
            3 => (0usize..2, proptest::collection::vec(row, 0..5))
                .prop_map(|(s, rows)| Step::Rows(s, rows)),
            1 => (0i64..5).prop_map(Step::Advance),
        ]
    }

    proptest! {
        /// An interval join (`r.v - l.v` in [-3, 2], v a time in ns) that frees rows at the
        /// watermark and drops late ones gives, after every step, exactly the pairs of the
        /// rows it accepted, also when restored from a snapshot at random steps.
        #[test]
        fn interval_join_frees_only_rows_that_cannot_match(steps in proptest::collection::vec(interval_step(), 1..40), restores in restores()) {
            let (lo, hi) = (-3, 2);
            let expiry = |offset_ns| Some(Expiry { column: 1, offset_ns });
            let make = || join(JoinKind::Inner).with_expiry([expiry(hi), expiry(-lo)], [Some(1), Some(1)]);
            let mut op = make();
            let mut sides: [HashMap<Row, i64>; 2] = [HashMap::new(), HashMap::new()];
            let (mut wm, mut late) = (i64::MIN, 0);
            let mut output = HashMap::new();
            let mut out = Emitter::default();
            for (step, restore) in steps.into_iter().zip(restores) {
                match step {
                    Step::Advance(by) => {
                        wm = if wm == i64::MIN { by } else { wm + by };
                        // As the graph does: each input's own, then the minimum.
                        for port in 0..2 {
                            op.on_input_watermark(port, Watermark::EventTime(wm));
                        }
                        op.on_watermark(Watermark::EventTime(wm), &mut out).unwrap();
                    }
                    Step::Rows(side, rows) => {
                        op.on_batch(side, batch(if side == 0 { "l" } else { "r" }, &rows), &mut out).unwrap();
                        for (row, w) in rows {
                            if row.1 < wm {
                                late += 1;
                            } else {
                                *sides[side].entry(row).or_insert(0) += w;
                            }
                        }
                    }
                }
                if restore {
                    // Late counts are metrics, not state: the new join counts afresh.
                    op.on_barrier(Barrier::new(1, 0), &mut out).unwrap();
                    late -= op.late_rows().load(Ordering::Relaxed);
                    op = restored(&mut op, make());
                }
                collect(&mut output, out.drain());
                let within = |j: &Joined| (lo..=hi).contains(&(j.3.unwrap() - j.1.unwrap()));
                let got: HashMap<Joined, i64> = output.iter().filter(|(j, _)| within(j)).map(|(j, w)| (*j, *w)).collect();
                let want: HashMap<Joined, i64> = recompute(JoinKind::Inner, &sides).into_iter().filter(|(j, _)| within(j)).collect();
                prop_assert_eq!(got, want);
                prop_assert_eq!(op.late_rows().load(Ordering::Relaxed), late);
            }
            // Everything is freed once the watermark passes every row's expiry.
            op.on_watermark(Watermark::EventTime(100), &mut out).unwrap();
            prop_assert!(op.state[0].is_empty() && op.state[1].is_empty());
            prop_assert_eq!(op.state_bytes(), 0);
        }

        /// With a condition beyond the keys (`l.v < r.v`), every kind still equals its
        /// recomputation: outer rows are padded, semi rows kept and anti rows dropped by
        /// whether they have a pair that meets it.
        #[test]
        fn with_a_condition_equals_recomputation(kind in kind(), steps in proptest::collection::vec(step(), 1..25), width in 1usize..=4, rescales in rescales(25)) {
            use datafusion_expr::Operator as Op;
            use datafusion_physical_expr::expressions::BinaryExpr;
            let pairs = Arc::new(Schema::new(
                [side_schema("l"), side_schema("r")].iter().flat_map(|s| s.fields().iter().map(|f| f.as_ref().clone())).collect::<Vec<_>>(),
            ));
            let less: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
                Arc::new(Column::new("lv", 1)),
                Op::Lt,
                Arc::new(Column::new("rv", 3)),
            ));
            let make = move || join(kind).with_condition(Arc::clone(&less), Arc::clone(&pairs));
            run_against_recomputation(make, kind, steps, width, rescales, |l, r| l.1 < r.1)?;
        }

        /// After every batch the join's accumulated output equals the join recomputed
        /// from scratch over both sides (weights -1..=2, NULL and duplicate keys), on 1 to
        /// 4 instances restored at random steps at another number of instances.
        #[test]
        fn equals_recomputation(kind in kind(), steps in proptest::collection::vec(step(), 1..25), width in 1usize..=4, rescales in rescales(25)) {
            run_against_recomputation(move || join(kind), kind, steps, width, rescales, |_, _| true)?;
        }
    }
}
