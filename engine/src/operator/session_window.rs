//! `SessionWindow`: SESSION(rel, ts, gap) per key. Appends `window_start` and `window_end`
//! to each row; a session is `[first, last + gap)`, and when a change merges, extends or
//! splits a key's sessions, the rows of its old sessions are retracted and re-emitted with
//! the new bounds. Sessions the watermark has passed are final: their rows are freed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, SortField};

use crate::message::Watermark;
use crate::operator::time_window::{CLOCK, EventClock, ns_to};
use crate::operator::{Emitter, Operator, timestamps_ns};
use crate::state::rescale::{deal_input_rows, lowest_values};
use crate::state::{StateRouter, StateSnapshot, counted_rows_table, read_counted_rows};
use crate::{ChangeBatch, EngineError, HashMap, Result, row_converter};

/// One key's open rows, by event time, and the sessions they form (sorted, disjoint).
#[derive(Default)]
struct KeySessions {
    rows: BTreeMap<i64, Vec<(OwnedRow, i64)>>,
    sessions: Vec<(i64, i64)>,
}

/// A row leaving the operator: the input row, its session, its weight.
type Out = (OwnedRow, (i64, i64), i64);

/// Assigns rows to per-key sessions.
pub struct SessionWindow {
    key: Vec<usize>,
    time_column: usize,
    gap: i64,
    schema: SchemaRef,
    keys: RowConverter,
    rows: RowConverter,
    state: HashMap<OwnedRow, KeySessions>,
    /// Keys by the end of a session they had (stale entries are re-checked).
    closing: BTreeMap<i64, Vec<OwnedRow>>,
    clock: EventClock,
    late_rows: Arc<AtomicU64>,
    bytes: usize,
}

impl SessionWindow {
    /// `input` plus `window_start`, `window_end`; sessions per distinct `key` columns.
    pub fn try_new(input: &Schema, key: Vec<usize>, time_column: usize, gap: i64) -> Result<Self> {
        let time = input.field(time_column).data_type().clone();
        if !matches!(time, DataType::Timestamp(..)) {
            return Err(EngineError::InvalidParameter(format!(
                "session time column {} must be a TIMESTAMP, not {time}",
                input.field(time_column).name()
            )));
        }
        if gap <= 0 {
            return Err(EngineError::InvalidParameter(
                "a session gap must be positive".into(),
            ));
        }
        let sort = |i: &usize| SortField::new(input.field(*i).data_type().clone());
        let key_fields = if key.is_empty() {
            vec![SortField::new(DataType::Int8)]
        } else {
            key.iter().map(sort).collect()
        };
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("window_start", time.clone(), true));
        fields.push(Field::new("window_end", time, true));
        Ok(Self {
            keys: RowConverter::new(key_fields)?,
            rows: row_converter(input.fields())?,
            key,
            time_column,
            gap,
            schema: Arc::new(Schema::new(fields)),
            state: HashMap::default(),
            closing: BTreeMap::new(),
            clock: EventClock::default(),
            late_rows: Arc::new(AtomicU64::new(0)),
            bytes: 0,
        })
    }

    /// Rows dropped for arriving behind the watermark.
    pub fn late_rows(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.late_rows)
    }

    /// Applies one key's changes (time, row, weight) and returns what changes downstream.
    fn apply(&mut self, key: OwnedRow, delta: Vec<(i64, OwnedRow, i64)>, out: &mut Vec<Out>) {
        let gap = self.gap;
        let st = self.state.entry(key.clone()).or_default();
        // Which times hold rows once the delta is applied.
        let mut times: BTreeSet<i64> = st.rows.keys().copied().collect();
        let mut by_time: BTreeMap<i64, Vec<(&OwnedRow, i64)>> = BTreeMap::new();
        for (t, row, w) in &delta {
            by_time.entry(*t).or_default().push((row, *w));
        }
        for (t, changes) in &by_time {
            let mut rows = st.rows.get(t).cloned().unwrap_or_default();
            for (row, w) in changes {
                add(&mut rows, row, *w);
            }
            if rows.is_empty() {
                times.remove(t);
            } else {
                times.insert(*t);
            }
        }
        let new = sessions(times, gap);
        let old = std::mem::take(&mut st.sessions);
        for s in old.iter().filter(|s| new.binary_search(s).is_err()) {
            for (row, w) in st.rows.range(s.0..s.1).flat_map(|(_, rows)| rows) {
                out.push((row.clone(), *s, -w));
            }
        }
        for (t, row, w) in delta {
            let rows = st.rows.entry(t).or_default();
            let size = (row.as_ref().len() + 24) * w.unsigned_abs() as usize;
            self.bytes = if w > 0 {
                self.bytes + size
            } else {
                self.bytes.saturating_sub(size)
            };
            add(rows, &row, w);
            if rows.is_empty() {
                st.rows.remove(&t);
            }
            if let Some(s) = containing(&new, t).filter(|s| old.binary_search(s).is_ok()) {
                out.push((row, s, w));
            }
        }
        for s in new.iter().filter(|s| old.binary_search(s).is_err()) {
            for (row, w) in st.rows.range(s.0..s.1).flat_map(|(_, rows)| rows) {
                out.push((row.clone(), *s, *w));
            }
            self.closing.entry(s.1).or_default().push(key.clone());
        }
        st.sessions = new;
        if st.rows.is_empty() {
            self.state.remove(&key);
        }
    }

    /// Keys with open rows (for tests).
    #[cfg(test)]
    pub(crate) fn open_keys(&self) -> usize {
        self.state.len()
    }

    /// The session key's columns of `n` input rows (one constant column without a key).
    fn key_columns(&self, columns: &[ArrayRef], n: usize) -> Vec<ArrayRef> {
        if self.key.is_empty() {
            vec![Arc::new(arrow::array::Int8Array::from(vec![0; n]))]
        } else {
            self.key.iter().map(|&i| Arc::clone(&columns[i])).collect()
        }
    }

    fn output(&self, out: Vec<Out>) -> Result<ChangeBatch> {
        let mut columns = self
            .rows
            .convert_rows(out.iter().map(|(r, _, _)| r.row()))?;
        let ty = self.schema.field(self.time_column).data_type();
        columns.push(ns_to(out.iter().map(|(_, s, _)| s.0).collect(), ty)?);
        columns.push(ns_to(out.iter().map(|(_, s, _)| s.1).collect(), ty)?);
        ChangeBatch::from_columns(&self.schema, columns, out.iter().map(|o| o.2))
    }
}

/// The sessions ascending event times form: runs of times less than `gap` apart, each
/// `[first, last + gap)`.
fn sessions(times: impl IntoIterator<Item = i64>, gap: i64) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for t in times {
        match out.last_mut() {
            Some((_, end)) if t < *end => *end = t.saturating_add(gap),
            _ => out.push((t, t.saturating_add(gap))),
        }
    }
    out
}

/// Adds `w` copies of `row` to a small multiset, dropping it at zero.
fn add(rows: &mut Vec<(OwnedRow, i64)>, row: &OwnedRow, w: i64) {
    match rows.iter().position(|(r, _)| r == row) {
        Some(i) => {
            rows[i].1 += w;
            if rows[i].1 == 0 {
                rows.swap_remove(i);
            }
        }
        None if w != 0 => rows.push((row.clone(), w)),
        None => {}
    }
}

/// The session of sorted, disjoint `sessions` that contains `t`.
fn containing(sessions: &[(i64, i64)], t: i64) -> Option<(i64, i64)> {
    let i = sessions.partition_point(|s| s.1 <= t);
    sessions.get(i).copied().filter(|s| s.0 <= t)
}

impl Operator for SessionWindow {
    fn name(&self) -> &'static str {
        "SessionWindow"
    }

    fn describe(&self) -> String {
        format!(
            "SessionWindow(gap {} ns on column {}, key columns {:?})",
            self.gap, self.time_column, self.key
        )
    }

    fn on_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Emitter) -> Result<()> {
        let data = batch.data();
        let weights = batch.weights();
        let times = timestamps_ns(data.column(self.time_column))?;
        let keys = self
            .keys
            .convert_columns(&self.key_columns(data.columns(), data.num_rows()))?;
        let rows = self.rows.convert_columns(data.columns())?;
        let mut deltas: HashMap<OwnedRow, Vec<(i64, OwnedRow, i64)>> = HashMap::default();
        for (i, t) in self.clock.on_time(&times, &self.late_rows) {
            deltas.entry(keys.row(i).owned()).or_default().push((
                t,
                rows.row(i).owned(),
                weights.value(i),
            ));
        }
        let mut changes = Vec::new();
        for (key, delta) in deltas {
            self.apply(key, delta, &mut changes);
        }
        if !changes.is_empty() {
            out.emit(self.output(changes)?);
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Watermark, _out: &mut Emitter) -> Result<Watermark> {
        let Some(wm) = self.clock.advance(watermark) else {
            return Ok(watermark);
        };
        let open = self.closing.split_off(&wm.saturating_add(1));
        for key in std::mem::replace(&mut self.closing, open)
            .into_values()
            .flatten()
        {
            let Some(st) = self.state.get_mut(&key) else {
                continue;
            };
            // Sessions that ended at or before the watermark can no longer change.
            let first_open = st.sessions.partition_point(|s| s.1 <= wm);
            st.sessions.drain(..first_open);
            let keep_from = st.sessions.first().map_or(i64::MAX, |s| s.0);
            let kept = st.rows.split_off(&keep_from);
            for (row, w) in std::mem::replace(&mut st.rows, kept)
                .into_values()
                .flatten()
            {
                let size = (row.as_ref().len() + 24) * w.unsigned_abs() as usize;
                self.bytes = self.bytes.saturating_sub(size);
            }
            if st.rows.is_empty() {
                self.state.remove(&key);
            }
        }
        Ok(watermark)
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    /// The open rows with their counts, and the watermark; keys, times and sessions are
    /// recomputed from the rows on restore.
    fn snapshot(&mut self) -> Result<StateSnapshot> {
        let mut snapshot = StateSnapshot::default();
        snapshot.put_values(CLOCK, &[("watermark", self.clock.watermark)])?;
        let stored = self
            .state
            .values()
            .flat_map(|st| st.rows.values().flatten());
        if let Some(table) = counted_rows_table(&self.rows, stored.map(|(r, n)| (r, *n)))? {
            snapshot.put(ROWS, table);
        }
        Ok(snapshot)
    }

    /// Its rows are its input's rows: they go where the exchange sends them, and every
    /// instance keeps the (equal) watermark.
    fn rescale(&self, old: Vec<StateSnapshot>, router: &StateRouter) -> Result<Vec<StateSnapshot>> {
        let mut parts = vec![StateSnapshot::default(); router.instances()];
        lowest_values(&old, &mut parts, CLOCK)?;
        deal_input_rows(&old, &mut parts, ROWS, 0, 1, router)?;
        Ok(parts)
    }

    fn restore(&mut self, snapshot: &StateSnapshot) -> Result<()> {
        self.clock.watermark = snapshot.value(CLOCK, "watermark")?;
        let Some(table) = snapshot.table(ROWS) else {
            return Ok(());
        };
        let (columns, rows, counts) = read_counted_rows(&self.rows, table)?;
        let keys = self
            .keys
            .convert_columns(&self.key_columns(&columns, table.num_rows()))?;
        let times = timestamps_ns(&columns[self.time_column])?;
        for i in 0..table.num_rows() {
            let (row, n) = (rows.row(i).owned(), counts.value(i));
            self.bytes += (row.as_ref().len() + 24) * n.unsigned_abs() as usize;
            let st = self.state.entry(keys.row(i).owned()).or_default();
            st.rows.entry(times.value(i)).or_default().push((row, n));
        }
        for (key, st) in &mut self.state {
            st.sessions = sessions(st.rows.keys().copied(), self.gap);
            for s in &st.sessions {
                self.closing.entry(s.1).or_default().push(key.clone());
            }
        }
        Ok(())
    }
}

/// The state table of the open rows.
const ROWS: &str = "rows";

#[cfg(test)]
mod tests {
    use arrow::array::{StringArray, TimestampMillisecondArray};
    use arrow::datatypes::TimeUnit;

    use super::*;
    use arrow::array::{Int64Array, RecordBatch};

    use crate::with_weight;

    fn input() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("u", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    fn rows(rows: &[(&str, i64, i64)]) -> ChangeBatch {
        let data = RecordBatch::try_new(
            input(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.1),
                )),
            ],
        )
        .unwrap();
        let mut cols = data.columns().to_vec();
        cols.push(Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.2),
        )));
        ChangeBatch::try_new(RecordBatch::try_new(with_weight(&input()), cols).unwrap()).unwrap()
    }

    /// (user, ts ms, start ms, end ms, weight), sorted.
    fn decode(batches: Vec<ChangeBatch>) -> Vec<(String, i64, i64, i64, i64)> {
        let mut out = Vec::new();
        for b in batches {
            let d = b.batch();
            let u = d.column(0).as_any().downcast_ref::<StringArray>().unwrap();
            let ms = |c: usize| timestamps_ns(d.column(c)).unwrap();
            let (t, s, e) = (ms(1), ms(2), ms(3));
            for i in 0..d.num_rows() {
                out.push((
                    u.value(i).to_string(),
                    t.value(i) / 1_000_000,
                    s.value(i) / 1_000_000,
                    e.value(i) / 1_000_000,
                    b.weights().value(i),
                ));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn sessions_extend_merge_split_and_close() {
        let mut w = SessionWindow::try_new(&input(), vec![0], 1, 5_000_000).unwrap();
        let mut out = Emitter::default();
        w.on_batch(0, rows(&[("a", 1, 1), ("a", 9, 1), ("b", 2, 1)]), &mut out)
            .unwrap();
        assert_eq!(
            decode(out.drain()),
            [
                ("a".into(), 1, 1, 6, 1),
                ("a".into(), 9, 9, 14, 1),
                ("b".into(), 2, 2, 7, 1)
            ]
        );
        // 5 joins [1, 6), whose end moves to 10 and so reaches [9, 14): both are
        // retracted, one merged session replaces them.
        w.on_batch(0, rows(&[("a", 5, 1)]), &mut out).unwrap();
        assert_eq!(
            decode(out.drain()),
            [
                ("a".into(), 1, 1, 6, -1),
                ("a".into(), 1, 1, 14, 1),
                ("a".into(), 5, 1, 14, 1),
                ("a".into(), 9, 1, 14, 1),
                ("a".into(), 9, 9, 14, -1),
            ]
        );
        // Deleting the bridge splits them again.
        w.on_batch(0, rows(&[("a", 5, -1)]), &mut out).unwrap();
        assert_eq!(decode(out.drain()).len(), 5);
        // b's session [2, 7) and a's [1, 6) close at watermark 7; a's [9, 14) stays open.
        w.on_watermark(Watermark::EventTime(7_000_000), &mut out)
            .unwrap();
        assert_eq!(w.state.len(), 1, "b's rows are freed");
        w.on_batch(0, rows(&[("b", 6, 1), ("a", 12, 1)]), &mut out)
            .unwrap();
        assert_eq!(w.late_rows().load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(
            decode(out.drain()),
            [
                ("a".into(), 9, 9, 14, -1),
                ("a".into(), 9, 9, 17, 1),
                ("a".into(), 12, 9, 17, 1)
            ]
        );
    }
}
