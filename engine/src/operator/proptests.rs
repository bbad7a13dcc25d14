//! Model-based property tests for the stateful operators whose files hold only example
//! tests: random change batches go through the operator, and after every step its
//! accumulated output must equal the answer recomputed from scratch by a plain model.
//! The operator runs as several instances behind a hash exchange (`Parallel`), and at
//! random barriers they are replaced by instances restored from their snapshots, at
//! another parallelism too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion_functions_aggregate::count::count_udaf;
use datafusion_functions_aggregate::min_max::{max_udaf, min_udaf};
use datafusion_functions_aggregate::sum::sum_udaf;
use datafusion_physical_expr::aggregate::AggregateExprBuilder;
use proptest::prelude::*;

use arrow::array::UInt32Array;
use arrow::compute::take_record_batch;
use datafusion_physical_expr::PhysicalExpr;

use crate::message::{Barrier, Watermark};
use crate::operator::{Emitter, HashAggregate, Operator, SessionWindow, column, timestamps_ns};
use crate::runtime::Partitioning;
use crate::state::{StateRouter, StateSnapshot};
use crate::{ChangeBatch, with_weight};

/// One change: insert a row `weight` times, or delete one copy of the n-th live row.
#[derive(Debug, Clone)]
enum Change {
    Insert((i64, Option<i64>), i64),
    Delete(usize),
}

fn changes(max_weight: i64) -> impl Strategy<Value = Vec<Vec<Change>>> {
    let value = prop_oneof![1 => Just(None), 5 => (0i64..6).prop_map(Some)];
    let change = prop_oneof![
        3 => ((0i64..3, value), 1i64..=max_weight).prop_map(|(r, w)| Change::Insert(r, w)),
        1 => (0usize..50).prop_map(Change::Delete),
    ];
    proptest::collection::vec(proptest::collection::vec(change, 0..6), 1..25)
}

/// What a checkpoint gives back: `op`'s snapshot after a barrier, through its Arrow IPC
/// bytes, restored into `fresh` (an operator built from the same plan).
pub(super) fn restored<O: Operator>(op: &mut O, mut fresh: O) -> O {
    let bytes = op.snapshot().unwrap().to_bytes().unwrap();
    fresh
        .restore(&StateSnapshot::from_bytes(&bytes).unwrap())
        .unwrap();
    fresh
}

/// Instances of one keyed operator behind hash exchanges, as a stage runs them: each input
/// port's rows go to the instance their key hashes to (the exchange's rule), and
/// `rescale` replaces the instances by another number of them restored from their
/// snapshots (through Arrow IPC bytes), as a checkpoint restored at another parallelism is.
pub(super) struct Parallel<O: Operator> {
    make: Box<dyn Fn() -> O>,
    pub(super) ops: Vec<O>,
    /// The key of each input port.
    ports: Vec<Option<Partitioning>>,
}

impl<O: Operator> Parallel<O> {
    pub(super) fn new(
        make: impl Fn() -> O + 'static,
        keys: Vec<Vec<Arc<dyn PhysicalExpr>>>,
        instances: usize,
    ) -> Self {
        Self {
            ops: (0..instances).map(|_| make()).collect(),
            make: Box::new(make),
            ports: keys
                .into_iter()
                .map(|k| Some(Partitioning::Hash(k)))
                .collect(),
        }
    }

    fn router(&self, instances: usize) -> StateRouter {
        StateRouter::new(instances, self.ports.clone())
    }

    /// Deals `batch` (rows of input `port`) to the instances that own its keys.
    pub(super) fn on_batch(&mut self, port: usize, batch: ChangeBatch, out: &mut Emitter) {
        let owners = self
            .router(self.ops.len())
            .owners_of_rows(port, batch.batch())
            .unwrap();
        for (i, op) in self.ops.iter_mut().enumerate() {
            let rows: Vec<u32> = (0..owners.len() as u32)
                .filter(|&r| owners[r as usize] == i)
                .collect();
            let part = take_record_batch(batch.batch(), &UInt32Array::from(rows)).unwrap();
            op.on_batch(port, ChangeBatch::try_new(part).unwrap(), out)
                .unwrap();
        }
    }

    /// `f` on every instance, in order.
    pub(super) fn each(&mut self, mut f: impl FnMut(&mut O, &mut Emitter), out: &mut Emitter) {
        for op in &mut self.ops {
            f(op, out);
        }
    }

    /// Replaces the instances by `instances` new ones, each restored from its part of
    /// their snapshots (taken after a barrier).
    pub(super) fn rescale(&mut self, instances: usize) {
        let old: Vec<StateSnapshot> = self
            .ops
            .iter_mut()
            .map(|op| {
                let bytes = op.snapshot().unwrap().to_bytes().unwrap();
                StateSnapshot::from_bytes(&bytes).unwrap()
            })
            .collect();
        let parts = (self.make)().rescale(old, &self.router(instances)).unwrap();
        assert_eq!(parts.len(), instances);
        self.ops = parts
            .iter()
            .map(|part| {
                let mut op = (self.make)();
                op.restore(part).unwrap();
                op
            })
            .collect();
    }
}

/// Per step, None, or the number of instances (1 to 4) to rescale to after it.
pub(super) fn rescales(steps: usize) -> impl Strategy<Value = Vec<Option<usize>>> {
    let at = prop_oneof![3 => Just(None), 1 => (1usize..=4).prop_map(Some)];
    proptest::collection::vec(at, steps)
}

/// Whether a barrier follows each step (a step per batch, so epochs of random length).
fn epoch_ends() -> impl Strategy<Value = Vec<bool>> {
    proptest::collection::vec(proptest::bool::ANY, 25)
}

/// Applies a step's changes to the model multiset; returns the batch rows and weights.
fn resolve(
    live: &mut BTreeMap<(i64, Option<i64>), i64>,
    step: &[Change],
) -> Vec<((i64, Option<i64>), i64)> {
    let mut out = Vec::new();
    for change in step {
        let (row, w) = match change {
            Change::Insert(row, w) => (*row, *w),
            Change::Delete(n) if !live.is_empty() => {
                let row = *live
                    .keys()
                    .nth(n % live.len())
                    .expect("invariant: non-empty");
                (row, -1)
            }
            Change::Delete(_) => continue,
        };
        let count = live.entry(row).or_insert(0);
        *count += w;
        if *count == 0 {
            live.remove(&row);
        }
        out.push((row, w));
    }
    out
}

fn kv_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
    ]))
}

fn kv_batch(rows: &[((i64, Option<i64>), i64)]) -> ChangeBatch {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0.0))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0.1))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
    ];
    ChangeBatch::try_new(RecordBatch::try_new(with_weight(&kv_schema()), cols).unwrap()).unwrap()
}

/// `SELECT k, sum(v), count(v), min(v), max(v), count(DISTINCT v) FROM t GROUP BY k`
fn aggregate(append_only: bool) -> HashAggregate {
    let v = column("v", 1);
    let agg = |f, name: &str, distinct: bool| {
        let mut b = AggregateExprBuilder::new(f, vec![Arc::clone(&v)])
            .schema(kv_schema())
            .alias(name);
        if distinct {
            b = b.distinct();
        }
        Arc::new(b.build().unwrap())
    };
    let schema = Arc::new(Schema::new(
        ["k", "s", "c", "lo", "hi", "d"]
            .map(|n| Field::new(n, DataType::Int64, true))
            .to_vec(),
    ));
    let aggs = vec![
        agg(sum_udaf(), "s", false),
        agg(count_udaf(), "c", false),
        agg(min_udaf(), "lo", false),
        agg(max_udaf(), "hi", false),
        agg(count_udaf(), "d", true),
    ];
    let op = HashAggregate::try_new(vec![column("k", 0)], aggs, schema).unwrap();
    if append_only {
        op.with_append_only_input()
    } else {
        op
    }
}

type AggRow = Vec<Option<i64>>;

fn aggregate_model(live: &BTreeMap<(i64, Option<i64>), i64>) -> HashMap<AggRow, i64> {
    let mut groups: BTreeMap<i64, Vec<Option<i64>>> = BTreeMap::new();
    for (&(k, v), &n) in live {
        groups
            .entry(k)
            .or_default()
            .extend(std::iter::repeat_n(v, n as usize));
    }
    groups
        .into_iter()
        .map(|(k, vs)| {
            let present: Vec<i64> = vs.iter().flatten().copied().collect();
            let distinct: BTreeSet<i64> = present.iter().copied().collect();
            let row = vec![
                Some(k),
                (!present.is_empty()).then(|| present.iter().sum()),
                Some(present.len() as i64),
                present.iter().min().copied(),
                present.iter().max().copied(),
                Some(distinct.len() as i64),
            ];
            (row, 1)
        })
        .collect()
}

fn accumulate(into: &mut HashMap<AggRow, i64>, batches: Vec<ChangeBatch>) {
    for b in batches {
        let d = b.data();
        for i in 0..d.num_rows() {
            let row = (0..d.num_columns())
                .map(|c| {
                    let a = d.column(c).as_any().downcast_ref::<Int64Array>().unwrap();
                    a.is_valid(i).then(|| a.value(i))
                })
                .collect();
            *into.entry(row).or_insert(0) += b.weights().value(i);
        }
    }
    into.retain(|_, w| *w != 0);
}

proptest! {
    /// Sums, counts, min/max (also when the extreme is deleted) and count(DISTINCT) per
    /// group equal the model at every barrier, with epochs of random numbers of batches,
    /// on 1 to 4 instances, restored from snapshots at random barriers at another number
    /// of instances; groups vanish with their last row.
    #[test]
    fn hash_aggregate_equals_recomputation(steps in changes(2), ends in epoch_ends(), width in 1usize..=4, rescales in rescales(25)) {
        run_aggregate(false, steps, &ends, width, &rescales)?;
    }

    /// Over insert-only input (plain accumulators, O(1) per group) the same holds.
    #[test]
    fn hash_aggregate_over_inserts_equals_recomputation(steps in changes(2), ends in epoch_ends(), width in 1usize..=4, rescales in rescales(25)) {
        run_aggregate(true, steps, &ends, width, &rescales)?;
    }
}

/// Feeds `steps` to the aggregate on `width` instances (only their inserts when
/// `append_only`), with a barrier after step i when `ends[i]` (and after the last),
/// comparing with the model at each barrier and rescaling to `rescales[i]` instances there.
fn run_aggregate(
    append_only: bool,
    steps: Vec<Vec<Change>>,
    ends: &[bool],
    width: usize,
    rescales: &[Option<usize>],
) -> Result<(), TestCaseError> {
    let mut op = Parallel::new(
        move || aggregate(append_only),
        vec![vec![column("k", 0)]],
        width,
    );
    let (mut live, mut output) = (BTreeMap::new(), HashMap::new());
    let mut out = Emitter::default();
    let last = steps.len() - 1;
    for (i, mut step) in steps.into_iter().enumerate() {
        if append_only {
            step.retain(|c| matches!(c, Change::Insert(..)));
        }
        let rows = resolve(&mut live, &step);
        op.on_batch(0, kv_batch(&rows), &mut out);
        if ends[i] || i == last {
            op.each(
                |op, out| op.on_barrier(Barrier::new(i as u64, 0), out).unwrap(),
                &mut out,
            );
            accumulate(&mut output, out.drain());
            prop_assert_eq!(&output, &aggregate_model(&live));
            if let Some(to) = rescales[i] {
                op.rescale(to);
            }
        }
    }
    Ok(())
}

/// A session-window step: rows (user, time s, payload) with weights, or a watermark move.
#[derive(Debug, Clone)]
enum SessionStep {
    Rows(Vec<((i64, i64, i64), i64)>),
    Advance(i64),
}

fn session_steps() -> impl Strategy<Value = Vec<SessionStep>> {
    let row = ((0i64..2, 0i64..30, 0i64..2), -1i64..=2);
    let step = prop_oneof![
        4 => proptest::collection::vec(row, 0..6).prop_map(SessionStep::Rows),
        1 => (0i64..6).prop_map(SessionStep::Advance),
    ];
    proptest::collection::vec(step, 1..30)
}

const S: i64 = 1_000_000_000;
const GAP: i64 = 3;

fn session_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("u", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("p", DataType::Int64, true),
    ]))
}

type SessionRow = (i64, i64, i64, i64, i64);

/// Each row of the model multiset with the bounds of its user's session: a session is a
/// maximal run of times (of rows with a non-zero weight) less than GAP apart.
fn session_model(live: &BTreeMap<(i64, i64, i64), i64>) -> HashMap<SessionRow, i64> {
    let mut out = HashMap::new();
    for user in live.keys().map(|r| r.0).collect::<BTreeSet<_>>() {
        let times: BTreeSet<i64> = live.keys().filter(|r| r.0 == user).map(|r| r.1).collect();
        let mut sessions: Vec<(i64, i64)> = Vec::new();
        for t in times {
            match sessions.last_mut() {
                Some(s) if t < s.1 => s.1 = t + GAP,
                _ => sessions.push((t, t + GAP)),
            }
        }
        for (&(u, t, p), &w) in live.iter().filter(|(r, _)| r.0 == user) {
            let s = sessions
                .iter()
                .find(|s| s.0 <= t && t < s.1)
                .expect("invariant: t is in one");
            out.insert((u, t, p, s.0, s.1), w);
        }
    }
    out
}

proptest! {
    /// Per-user sessions under inserts, retractions (weights -1..=2) and watermarks: the
    /// accumulated output equals every accepted row with its session now, late rows are
    /// dropped and counted, and closed sessions are freed without changing the result,
    /// also on 1 to 4 instances restored from snapshots at another number of them.
    #[test]
    fn session_window_equals_recomputation(steps in session_steps(), width in 1usize..=4, rescales in rescales(30)) {
        let make = || SessionWindow::try_new(&session_schema(), vec![0], 1, GAP * S).unwrap();
        let mut op = Parallel::new(make, vec![vec![column("u", 0)]], width);
        let late_rows = |op: &Parallel<SessionWindow>| -> u64 {
            op.ops.iter().map(|o| o.late_rows().load(std::sync::atomic::Ordering::Relaxed)).sum()
        };
        let mut live: BTreeMap<(i64, i64, i64), i64> = BTreeMap::new();
        let (mut output, mut wm, mut late) = (HashMap::new(), None::<i64>, 0u64);
        let mut out = Emitter::default();
        for (step, rescale) in steps.into_iter().zip(rescales) {
            if let Some(to) = rescale {
                // Late counts are metrics, not state: the new operators count afresh.
                late -= late_rows(&op);
                op.each(|op, out| op.on_barrier(Barrier::new(1, 0), out).unwrap(), &mut out);
                op.rescale(to);
            }
            match step {
                SessionStep::Advance(by) => {
                    let next = wm.map_or(by, |w| w + by);
                    wm = Some(next);
                    op.each(|op, out| { op.on_watermark(Watermark::EventTime(next * S), out).unwrap(); }, &mut out);
                }
                SessionStep::Rows(rows) => {
                    let cols: Vec<ArrayRef> = vec![
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0.0))),
                        Arc::new(TimestampNanosecondArray::from_iter_values(rows.iter().map(|r| r.0.1 * S))),
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0.2))),
                        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                    ];
                    let batch = RecordBatch::try_new(with_weight(&session_schema()), cols).unwrap();
                    op.on_batch(0, ChangeBatch::try_new(batch).unwrap(), &mut out);
                    for (row, w) in rows {
                        if wm.is_some_and(|wm| row.1 < wm) {
                            late += 1;
                            continue;
                        }
                        let n = live.entry(row).or_insert(0);
                        *n += w;
                        if *n == 0 {
                            live.remove(&row);
                        }
                    }
                }
            }
            for b in out.drain() {
                let d = b.batch();
                let int = |c: usize| d.column(c).as_any().downcast_ref::<Int64Array>().unwrap().clone();
                let time = |c: usize| timestamps_ns(d.column(c)).unwrap();
                let (u, t, p, s, e) = (int(0), time(1), int(2), time(3), time(4));
                for i in 0..d.num_rows() {
                    let key = (u.value(i), t.value(i) / S, p.value(i), s.value(i) / S, e.value(i) / S);
                    *output.entry(key).or_insert(0) += b.weights().value(i);
                }
            }
            output.retain(|_, w| *w != 0);
            prop_assert_eq!(&output, &session_model(&live));
            prop_assert_eq!(late_rows(&op), late);
        }
        // Once the watermark passes every session, no key is left.
        op.each(|op, out| { op.on_watermark(Watermark::EventTime(1000 * S), out).unwrap(); }, &mut out);
        prop_assert_eq!(op.ops.iter().map(SessionWindow::open_keys).sum::<usize>(), 0);
    }
}
