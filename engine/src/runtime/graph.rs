//! `Graph`: operators wired in topological order and driven by one task (a whole dataflow,
//! or one instance of one of its stages). It aligns epoch barriers over its input channels
//! and keeps each node's watermark the minimum over that node's inputs (idle excluded).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::task::Poll;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{mpsc, watch};

use super::alignment::Alignment;
use super::exchange::{Partitioning, Router};
use super::operator_stats::{CommitLatency, OperatorInfo, OperatorStats, Topology};
use crate::message::{Barrier, Epoch, Message, SplitPosition, Watermark};
use crate::operator::{Emitter, Operator};
use crate::state::StateSnapshot;
use crate::{ChangeBatch, EngineError, Result};

pub type NodeId = usize;
pub type InputId = usize;

/// Where a stage's output leaves its graph (through the `Router`), in a node's outputs.
const EXIT: NodeId = usize::MAX;

/// A watermark input's state.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    /// Nothing heard yet: holds the node back.
    Pending,
    Idle,
    At(i64),
}

pub(super) struct Node {
    pub(super) op: Box<dyn Operator>,
    /// Downstream (node, port, slot).
    outputs: Vec<(NodeId, usize, usize)>,
    slots: Vec<Slot>,
    /// The input port each slot feeds.
    slot_ports: Vec<usize>,
    /// Event time reached (monotone) and the last watermark sent on.
    time: Option<i64>,
    forwarded: Option<Watermark>,
    /// A watermark waiting for the next barrier (`Operator::holds_watermarks`).
    held: Option<Slot>,
}

impl Node {
    /// The nodes it feeds within its graph.
    pub(super) fn targets(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.outputs.iter().map(|o| o.0).filter(|&t| t != EXIT)
    }

    /// Renumbers its outputs when its graph is cut into stages (`local[old] = new`).
    pub(super) fn remap_outputs(&mut self, local: &[NodeId]) {
        for o in &mut self.outputs {
            o.0 = local[o.0];
        }
    }
}

/// What `weir_catalog.dataflows` shows for a running dataflow.
#[derive(Debug, Default, Clone)]
pub struct DataflowStats {
    pub epoch: Epoch,
    pub state_bytes: usize,
    pub last_commit_ms: i64,
    pub error: Option<String>,
    pub commit_latency: CommitLatency,
}

/// An edge whose rows are repartitioned between stages (see `Dataflow`).
#[derive(Clone)]
pub(super) struct ExchangeEdge {
    pub(super) from: NodeId,
    pub(super) to: NodeId,
    pub(super) port: usize,
    pub(super) partitioning: Partitioning,
}

/// Operators and their edges. Nodes are added inputs-first.
#[derive(Default)]
pub struct Graph {
    pub(super) nodes: Vec<Node>,
    /// Each input channel's (node, port, slot).
    inputs: Vec<(NodeId, usize, usize)>,
    /// Watermark alignment across relations (see `align_watermarks`).
    pub(super) align: bool,
    /// Each relation's (entry node's) read limit in event time, for its split readers.
    pub(super) limits: Vec<(NodeId, Arc<AtomicI64>)>,
    pub(super) exchanges: Vec<ExchangeEdge>,
    /// Set on stage instances: the shared alignment and each input's registration in it.
    pub(super) alignment: Option<Arc<Alignment>>,
    aligned: Vec<Option<usize>>,
    /// A stage instance's exit: what its last node emits, sent on after each message.
    pub(super) router: Option<Router>,
    outbox: Vec<Message>,
    /// The dataflow's operator counters, and the plan's node id of each local node.
    pub(super) stats: Option<(Arc<OperatorStats>, Vec<NodeId>)>,
    /// Where the snapshots taken at checkpoint barriers go.
    pub(super) checkpoints: Option<mpsc::UnboundedSender<GraphSnapshot>>,
    /// Which task of its dataflow it is (stage instances in order; 0 for a lone graph).
    pub(super) task: usize,
    /// Per input, the relation (its entry node in the whole plan) whose split it reads,
    /// and that split's last position.
    relations: Vec<Option<NodeId>>,
    positions: Vec<Option<SplitPosition>>,
    /// The newest checkpoint its state was snapshotted (or restored) at.
    last_checkpoint: Epoch,
}

/// Every operator's state of a graph after a checkpoint barrier (by node id), and where
/// each source split it reads was at that barrier.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphSnapshot {
    /// The checkpoint it belongs to (the epoch that started it).
    pub checkpoint: Epoch,
    /// The barrier it was taken at (the checkpoint's or a later one, see `Barrier`).
    pub epoch: Epoch,
    /// The task of its dataflow it was taken of (`Dataflow::restore` gives it back there).
    pub task: usize,
    pub nodes: Vec<StateSnapshot>,
    /// (relation entry node, position) per source split the task reads.
    pub positions: Vec<(NodeId, SplitPosition)>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds back a relation whose watermark runs more than a second ahead of another's,
    /// for dataflows whose state depends on both sides' progress (time-bounded joins).
    pub fn align_watermarks(&mut self) {
        self.align = true;
    }

    /// The event time up to which the relation entering at `node` may be read (its split
    /// readers wait beyond it); i64::MAX unless alignment holds it back.
    pub fn read_limit(&mut self, node: NodeId) -> Arc<AtomicI64> {
        if let Some((_, l)) = self.limits.iter().find(|(n, _)| *n == node) {
            return Arc::clone(l);
        }
        let limit = Arc::new(AtomicI64::new(i64::MAX));
        self.limits.push((node, Arc::clone(&limit)));
        limit
    }

    pub fn add(&mut self, op: Box<dyn Operator>) -> NodeId {
        self.nodes.push(Node {
            op,
            outputs: Vec::new(),
            slots: Vec::new(),
            slot_ports: Vec::new(),
            time: None,
            forwarded: None,
            held: None,
        });
        self.nodes.len() - 1
    }

    /// Feeds `from`'s output into `to`'s input `port` across an exchange: when the
    /// dataflow runs on several cores, `to` starts a new stage whose instances each get
    /// the rows `partitioning` deals them (on one core it is a plain edge).
    pub fn exchange(
        &mut self,
        from: NodeId,
        to: NodeId,
        port: usize,
        partitioning: Partitioning,
    ) -> Result<()> {
        if from >= to || to >= self.nodes.len() {
            return Err(EngineError::Internal(format!(
                "edge {from} -> {to} is not in topological order"
            )));
        }
        self.exchanges.push(ExchangeEdge {
            from,
            to,
            port,
            partitioning,
        });
        Ok(())
    }

    /// Sends what `node` emits (rows, watermarks) and every barrier out through `router`.
    pub(super) fn set_exit(&mut self, node: NodeId, router: Router) {
        self.nodes[node].outputs.push((EXIT, 0, 0));
        self.router = Some(router);
    }

    /// Reports input `input`'s event time to the dataflow's watermark alignment.
    pub(super) fn align_input(
        &mut self,
        input: InputId,
        alignment: &Arc<Alignment>,
        relation: usize,
    ) {
        self.aligned[input] = Some(alignment.register(relation));
        self.alignment = Some(Arc::clone(alignment));
    }

    /// Feeds `from`'s output into `to`'s input `port`.
    pub fn connect(&mut self, from: NodeId, to: NodeId, port: usize) -> Result<()> {
        if from >= to || to >= self.nodes.len() {
            return Err(EngineError::Internal(format!(
                "edge {from} -> {to} is not in topological order"
            )));
        }
        let slot = self.new_slot(to, port);
        self.nodes[from].outputs.push((to, port, slot));
        Ok(())
    }

    /// A stream feeding `to`'s input `port`; `run` takes the streams in this order.
    pub fn input(&mut self, to: NodeId, port: usize) -> InputId {
        let slot = self.new_slot(to, port);
        self.inputs.push((to, port, slot));
        self.aligned.push(None);
        self.relations.push(None);
        self.positions.push(None);
        self.inputs.len() - 1
    }

    /// Marks `input` as a split of the relation entering at `relation` (a node id of the
    /// whole plan): its positions go into this graph's snapshots.
    pub(super) fn label_input(&mut self, input: InputId, relation: NodeId) {
        self.relations[input] = Some(relation);
    }

    fn new_slot(&mut self, node: NodeId, port: usize) -> usize {
        self.nodes[node].slots.push(Slot::Pending);
        self.nodes[node].slot_ports.push(port);
        self.nodes[node].slots.len() - 1
    }

    /// Each node, what it feeds and how many outside channels feed it.
    pub fn topology(&self) -> Topology {
        (0..self.nodes.len())
            .map(|id| OperatorInfo {
                id,
                operator: self.nodes[id].op.describe(),
                input_channels: self.inputs.iter().filter(|(n, ..)| *n == id).count(),
                outputs: self.nodes[id]
                    .targets()
                    .map(|to| (to, None))
                    .chain(
                        self.exchanges
                            .iter()
                            .filter(|e| e.from == id)
                            .map(|e| (e.to, Some(e.partitioning.describe()))),
                    )
                    .collect(),
            })
            .collect()
    }

    /// One line per node, sinks last: what EXPLAIN CREATE MATERIALIZED VIEW prints.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for op in self.topology() {
            let mut line = format!("{}: {}", op.id, op.operator);
            if op.input_channels > 0 {
                let _ = write!(line, " <- {} input channel(s)", op.input_channels);
            }
            let outs: Vec<String> = op
                .outputs
                .iter()
                .map(|(to, exchange)| match exchange {
                    Some(p) => format!("{to} (exchange: {p})"),
                    None => to.to_string(),
                })
                .collect();
            if !outs.is_empty() {
                let _ = write!(line, " -> {}", outs.join(", "));
            }
            lines.push(line);
        }
        lines
    }

    /// Runs until every input closes; publishes each committed epoch on `committed`.
    pub async fn run(
        mut self,
        mut receivers: Vec<BoxStream<'static, Message>>,
        committed: &watch::Sender<DataflowStats>,
    ) -> Result<()> {
        if receivers.len() != self.inputs.len() {
            return Err(EngineError::Internal(
                "one receiver per input expected".into(),
            ));
        }
        let n = receivers.len();
        let mut blocked: Vec<Option<Barrier>> = vec![None; n];
        let mut closed = vec![false; n];
        let mut start = 0;
        let mut sized = Instant::now();
        let mut state_bytes = 0;
        loop {
            let live: Vec<usize> = (0..n).filter(|&i| !closed[i]).collect();
            if live.is_empty() {
                return Ok(());
            }
            if live.iter().all(|&i| blocked[i].is_some()) {
                let barrier = live
                    .iter()
                    .filter_map(|&i| blocked[i])
                    .min_by_key(|b| b.epoch)
                    .expect("invariant: live inputs are all blocked");
                self.barrier(barrier)?;
                if barrier.checkpoint > self.last_checkpoint && self.checkpoints.is_some() {
                    self.last_checkpoint = barrier.checkpoint;
                    let nodes = self.snapshot()?;
                    let positions = self
                        .relations
                        .iter()
                        .zip(&self.positions)
                        .filter_map(|(r, p)| Some(((*r)?, (*p)?)))
                        .collect();
                    let to = self.checkpoints.as_ref().expect("invariant: checked above");
                    // A closed receiver has stopped taking checkpoints.
                    let _ = to.send(GraphSnapshot {
                        checkpoint: barrier.checkpoint,
                        epoch: barrier.epoch,
                        task: self.task,
                        nodes,
                        positions,
                    });
                }
                for b in blocked.iter_mut() {
                    if b.is_some_and(|b| b.epoch == barrier.epoch) {
                        *b = None;
                    }
                }
                if sized.elapsed().as_millis() >= 1000 || state_bytes == 0 {
                    state_bytes = self.measure_state();
                    sized = Instant::now();
                }
                if self.router.is_some() {
                    // A stage before the last: the view commits when the barrier reaches it.
                    self.outbox.push(Message::Barrier(barrier));
                    if !self.send_outbox().await? {
                        return Ok(());
                    }
                } else {
                    let now_ms = chrono::Utc::now().timestamp_millis();
                    committed.send_modify(|s| {
                        s.epoch = barrier.epoch;
                        s.last_commit_ms = barrier.ts_ms;
                        s.state_bytes = state_bytes;
                        s.commit_latency.observe((now_ms - barrier.ts_ms) as f64);
                    });
                }
                continue;
            }
            let (i, msg) = std::future::poll_fn(|cx| {
                for k in 0..n {
                    let i = (start + k) % n;
                    if closed[i] || blocked[i].is_some() {
                        continue;
                    }
                    match receivers[i].poll_next_unpin(cx) {
                        Poll::Ready(m) => return Poll::Ready((i, m)),
                        Poll::Pending => {}
                    }
                }
                Poll::Pending
            })
            .await;
            start = i + 1;
            let (node, port, slot) = self.inputs[i];
            match msg {
                None => {
                    closed[i] = true;
                    self.report_time(i, None);
                    self.watermark(node, slot, Slot::Idle)?;
                }
                Some(Message::Barrier(b)) => blocked[i] = Some(b),
                Some(Message::Position(p)) => self.positions[i] = Some(p),
                Some(Message::Data(batch)) => self.deliver(node, port, batch)?,
                Some(Message::Watermark(w)) => {
                    // The end of a bounded input (+inf) holds nothing back either.
                    self.report_time(i, w.time().filter(|&t| t < i64::MAX));
                    let s = w.time().map_or(Slot::Idle, Slot::At);
                    self.watermark(node, slot, s)?;
                }
            }
            if !self.send_outbox().await? {
                return Ok(());
            }
        }
    }

    /// Records each node's state size; returns the whole dataflow's (this graph's alone
    /// when it runs outside a `Dataflow`).
    fn measure_state(&self) -> usize {
        let Some((stats, global)) = &self.stats else {
            return self.nodes.iter().map(|n| n.op.state_bytes()).sum();
        };
        for (node, &id) in self.nodes.iter().zip(global) {
            stats.set_state(self.task, id, node.op.state_bytes());
        }
        stats.total_state_bytes()
    }

    /// Sends what reached the exit on to the next stage; false once it is gone.
    async fn send_outbox(&mut self) -> Result<bool> {
        let Some(router) = &mut self.router else {
            return Ok(true);
        };
        for msg in self.outbox.drain(..) {
            if !router.send(msg).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Tells watermark alignment (when the dataflow uses it) where an input is.
    fn report_time(&self, input: InputId, time: Option<i64>) {
        if let (Some(alignment), Some(index)) = (&self.alignment, self.aligned[input]) {
            alignment.update(index, time);
        }
    }

    /// Pushes a batch into `node` and everything downstream of it.
    fn deliver(&mut self, node: NodeId, port: usize, batch: ChangeBatch) -> Result<()> {
        let mut queue = VecDeque::from([(node, port, batch)]);
        let mut out = Emitter::default();
        while let Some((id, port, batch)) = queue.pop_front() {
            if id == EXIT {
                self.outbox.push(Message::Data(batch));
                continue;
            }
            if let Some((stats, global)) = &self.stats {
                stats.add_rows(global[id], batch.num_rows());
            }
            let node = &mut self.nodes[id];
            node.op.on_batch(port, batch, &mut out)?;
            Self::fan_out(&node.outputs, &mut out, &mut queue);
        }
        Ok(())
    }

    fn fan_out(
        outputs: &[(NodeId, usize, usize)],
        out: &mut Emitter,
        queue: &mut VecDeque<(NodeId, usize, ChangeBatch)>,
    ) {
        for b in out.drain() {
            for &(to, port, _) in outputs {
                queue.push_back((to, port, b.clone()));
            }
        }
    }

    /// Records a slot's watermark; advances the node (and its downstream) when the minimum
    /// over its slots moves.
    fn watermark(&mut self, node: NodeId, slot: usize, value: Slot) -> Result<()> {
        let mut pending = VecDeque::from([(node, slot, value)]);
        while let Some((id, slot, value)) = pending.pop_front() {
            if id == EXIT {
                let w = match value {
                    Slot::At(t) => Watermark::EventTime(t),
                    _ => Watermark::Idle,
                };
                self.outbox.push(Message::Watermark(w));
                continue;
            }
            let node = &mut self.nodes[id];
            node.slots[slot] = value;
            // The slot's port alone: operators that judge each input by its own progress.
            let port = node.slot_ports[slot];
            let of_port = || {
                node.slots
                    .iter()
                    .zip(&node.slot_ports)
                    .filter(|(_, p)| **p == port)
            };
            if !of_port().any(|(s, _)| *s == Slot::Pending) {
                let min = of_port()
                    .filter_map(|(s, _)| match s {
                        Slot::At(t) => Some(*t),
                        _ => None,
                    })
                    .min();
                let w = min.map_or(Watermark::Idle, Watermark::EventTime);
                node.op.on_input_watermark(port, w);
            }
            if node.slots.contains(&Slot::Pending) {
                continue;
            }
            let min = node
                .slots
                .iter()
                .filter_map(|s| match s {
                    Slot::At(t) => Some(*t),
                    _ => None,
                })
                .min();
            let next = match (min, node.time) {
                (None, _) => Watermark::Idle,
                (Some(t), Some(prev)) => Watermark::EventTime(t.max(prev)),
                (Some(t), None) => Watermark::EventTime(t),
            };
            if node.forwarded == Some(next) {
                continue;
            }
            let mut forward = next;
            if let Watermark::EventTime(t) = next
                && node.time.is_none_or(|prev| t > prev)
            {
                node.time = Some(t);
                let mut out = Emitter::default();
                forward = node.op.on_watermark(next, &mut out)?;
                let mut queue = VecDeque::new();
                Self::fan_out(&node.outputs, &mut out, &mut queue);
                for (to, port, batch) in queue {
                    self.deliver(to, port, batch)?;
                }
            }
            let node = &mut self.nodes[id];
            node.forwarded = Some(next);
            let s = forward.time().map_or(Slot::Idle, Slot::At);
            if node.op.holds_watermarks() {
                node.held = Some(s);
                continue;
            }
            for &(to, _, slot) in &node.outputs {
                pending.push_back((to, slot, s));
            }
        }
        Ok(())
    }

    /// Sends a snapshot of every operator's state to `to` at the first barrier of each new
    /// checkpoint (see `Barrier::checkpoint`), once every operator has handled it.
    pub fn checkpoint_to(&mut self, to: mpsc::UnboundedSender<GraphSnapshot>) {
        self.checkpoints = Some(to);
    }

    /// Every node's state (by node id) after the last barrier: what a checkpoint stores
    /// for this graph (a view, or one stage instance of it).
    pub fn snapshot(&mut self) -> Result<Vec<StateSnapshot>> {
        self.nodes.iter_mut().map(|n| n.op.snapshot()).collect()
    }

    /// Gives each node the state `snapshot` holds for it, before the graph runs; the
    /// snapshot comes from a graph built from the same plan.
    pub fn restore(&mut self, snapshot: &GraphSnapshot) -> Result<()> {
        self.restore_nodes(&snapshot.nodes)?;
        self.last_checkpoint = snapshot.checkpoint;
        Ok(())
    }

    fn restore_nodes(&mut self, snapshots: &[StateSnapshot]) -> Result<()> {
        if snapshots.len() != self.nodes.len() {
            return Err(EngineError::CorruptCheckpoint(format!(
                "a snapshot of {} operators does not fit a dataflow of {}",
                snapshots.len(),
                self.nodes.len()
            )));
        }
        for (node, snapshot) in self.nodes.iter_mut().zip(snapshots) {
            node.op.restore(snapshot)?;
        }
        Ok(())
    }

    /// Commits an epoch: every node in topological order, so what a node emits at its
    /// barrier reaches its consumers before theirs.
    fn barrier(&mut self, barrier: Barrier) -> Result<()> {
        for id in 0..self.nodes.len() {
            let mut out = Emitter::default();
            self.nodes[id].op.on_barrier(barrier, &mut out)?;
            let mut queue = VecDeque::new();
            Self::fan_out(&self.nodes[id].outputs, &mut out, &mut queue);
            for (to, port, batch) in queue {
                self.deliver(to, port, batch)?;
            }
            // What it emitted is downstream now: its held watermark may follow.
            if let Some(s) = self.nodes[id].held.take() {
                for (to, _, slot) in self.nodes[id].outputs.clone() {
                    self.watermark(to, slot, s)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use tokio::sync::mpsc;

    use arrow::array::{Array, ArrayRef, TimestampNanosecondArray};
    use arrow::datatypes::TimeUnit;

    use super::*;
    use crate::operator::{
        HashAggregate, Materialize, SharedView, TimeWindow, Union, WindowClose, WindowKind, column,
    };
    use crate::runtime::channel_stream;

    fn rows(v: &[i64]) -> Message {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let data =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(v.to_vec()))]).unwrap();
        Message::Data(ChangeBatch::from_data(&data, 1).unwrap())
    }

    fn barrier(epoch: Epoch) -> Message {
        Message::Barrier(Barrier::new(epoch, 0))
    }

    /// TUMBLE(ts, 10 s) -> sum(v), count(v) per (window_start, k), freed at the watermark
    /// -> Materialize (behind exchanges by the group key, and to one instance, when
    /// `exchanges`).
    pub(in crate::runtime) fn windowed_sums(exchanges: bool) -> (Graph, SharedView) {
        use datafusion_functions_aggregate::{count::count_udaf, sum::sum_udaf};
        use datafusion_physical_expr::aggregate::AggregateExprBuilder;
        let window = TimeWindow::try_new(&kvt(), 2, WindowKind::Tumble { size: 10 * S }).unwrap();
        let input = window.schema();
        let agg = |f, name: &str| {
            Arc::new(
                AggregateExprBuilder::new(f, vec![column("v", 1)])
                    .schema(Arc::clone(&input))
                    .alias(name)
                    .build()
                    .unwrap(),
            )
        };
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let out = Arc::new(Schema::new(vec![
            Field::new("window_start", ts, true),
            Field::new("k", DataType::Int64, true),
            Field::new("s", DataType::Int64, true),
            Field::new("c", DataType::Int64, true),
        ]));
        let keys = vec![column("window_start", 3), column("k", 0)];
        let aggs = vec![agg(sum_udaf(), "s"), agg(count_udaf(), "c")];
        let close = WindowClose {
            column: 0,
            offset_ns: 10 * S,
            emit_on_close: false,
        };
        let aggregate = HashAggregate::try_new(keys, aggs, Arc::clone(&out))
            .unwrap()
            .with_window_close(close);
        let m = Materialize::new(out).unwrap();
        let view = m.view();
        let mut g = Graph::new();
        let w = g.add(Box::new(window));
        let a = g.add(Box::new(aggregate));
        let v = g.add(Box::new(m));
        if exchanges {
            let key = vec![column("window_start", 3), column("k", 0)];
            g.exchange(w, a, 0, Partitioning::Hash(key)).unwrap();
            g.exchange(a, v, 0, Partitioning::Single).unwrap();
        } else {
            g.connect(w, a, 0).unwrap();
            g.connect(a, v, 0).unwrap();
            g.input(w, 0);
        }
        (g, view)
    }

    const S: i64 = 1_000_000_000;

    fn kvt() -> Schema {
        Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        ])
    }

    /// Rows (k, v, ts in s) out of order within 5 s, retractions of earlier rows, a
    /// watermark 5 s behind every third step, and a barrier every second step; the one
    /// after step `checkpoint` is a checkpoint barrier.
    pub(in crate::runtime) fn messages(checkpoint: usize) -> Vec<Message> {
        let rows = |i: i64| -> Vec<(i64, i64, i64)> {
            (0..5)
                .map(|j| ((i * 7 + j) % 3, (i * 13 + j * 5) % 10, i * 2 + (j * 3) % 5))
                .collect()
        };
        let batch = |rows: &[(i64, i64, i64)], w: i64| {
            let columns: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(TimestampNanosecondArray::from_iter_values(
                    rows.iter().map(|r| r.2 * S),
                )),
            ];
            let data = RecordBatch::try_new(Arc::new(kvt()), columns).unwrap();
            Message::Data(ChangeBatch::from_data(&data, w).unwrap())
        };
        let mut out = Vec::new();
        for i in 0..40 {
            out.push(batch(&rows(i), 1));
            if i % 4 == 3 {
                out.push(batch(&rows(i - 1)[..2], -1));
            }
            if i % 3 == 2 {
                out.push(Message::Watermark(Watermark::EventTime((i * 2 - 5) * S)));
            }
            if i % 2 == 1 || i as usize == checkpoint {
                let epoch = i as u64 + 1;
                out.push(Message::Barrier(if i as usize == checkpoint {
                    Barrier::checkpoint(epoch, 0)
                } else {
                    Barrier::new(epoch, 0)
                }));
            }
        }
        out
    }

    async fn run(g: Graph, messages: Vec<Message>) {
        let (tx, rx) = mpsc::channel(messages.len() + 1);
        for m in messages {
            tx.send(m).await.unwrap();
        }
        drop(tx);
        let (stats, _) = watch::channel(DataflowStats::default());
        g.run(vec![channel_stream(rx)], &stats).await.unwrap();
    }

    pub(in crate::runtime) fn sorted(view: &SharedView) -> Vec<Vec<Option<i64>>> {
        let rows = view.lock().rows().unwrap();
        let mut out: Vec<Vec<Option<i64>>> = (0..rows.num_rows())
            .map(|i| {
                (0..rows.num_columns())
                    .map(|c| {
                        let ns = timestamps_or_ints(rows.column(c));
                        ns.is_valid(i).then(|| ns.value(i))
                    })
                    .collect()
            })
            .collect();
        out.sort();
        out
    }

    fn timestamps_or_ints(c: &ArrayRef) -> Int64Array {
        arrow::compute::cast(c, &DataType::Int64)
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .clone()
    }

    /// A graph restored from the checkpoint taken mid-stream, fed what came after it, ends
    /// with the view the uninterrupted graph ends with.
    #[tokio::test]
    async fn a_graph_restored_from_a_checkpoint_ends_as_the_uninterrupted_one() {
        let checkpoint = 20;
        let all = messages(checkpoint);
        let (to, mut taken) = mpsc::unbounded_channel();
        let (mut g, whole) = windowed_sums(false);
        g.checkpoint_to(to);
        run(g, all.clone()).await;
        let snapshot = taken.recv().await.expect("a checkpoint was taken");
        assert_eq!(snapshot.epoch, checkpoint as u64 + 1);
        assert!(
            taken.try_recv().is_err(),
            "one checkpoint barrier, one snapshot"
        );
        assert!(
            snapshot.nodes[1].table("groups").is_some(),
            "open windows at the checkpoint"
        );
        let after = all
            .iter()
            .position(|m| matches!(m, Message::Barrier(b) if b.checkpoint > 0))
            .unwrap();
        let (mut g, resumed) = windowed_sums(false);
        g.restore(&snapshot).unwrap();
        assert_eq!(resumed.lock().epoch(), snapshot.epoch);
        run(g, all[after + 1..].to_vec()).await;
        let expected = sorted(&whole);
        assert!(expected.len() > 10, "windows closed and open: {expected:?}");
        assert_eq!(sorted(&resumed), expected);
    }

    #[tokio::test]
    async fn epochs_commit_only_when_every_input_reached_them() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let mut g = Graph::new();
        let union = g.add(Box::new(Union::new("t")));
        let m = Materialize::new(schema).unwrap();
        let view = m.view();
        let sink = g.add(Box::new(m));
        g.connect(union, sink, 0).unwrap();
        let (a_tx, a_rx) = mpsc::channel(16);
        let (b_tx, b_rx) = mpsc::channel(16);
        g.input(union, 0);
        g.input(union, 0);
        let (stats_tx, mut stats) = watch::channel(DataflowStats::default());
        let task = tokio::spawn(async move {
            g.run(vec![channel_stream(a_rx), channel_stream(b_rx)], &stats_tx)
                .await
        });
        a_tx.send(rows(&[1, 2])).await.unwrap();
        a_tx.send(barrier(1)).await.unwrap();
        // Input a's rows after its barrier belong to epoch 2.
        a_tx.send(rows(&[3])).await.unwrap();
        b_tx.send(rows(&[10])).await.unwrap();
        // b skipped epoch 1: its barrier 2 covers it.
        b_tx.send(barrier(2)).await.unwrap();
        stats.wait_for(|s| s.epoch >= 1).await.unwrap();
        assert_eq!(view.lock().len(), 3, "epoch 1 holds a's first rows and b's");
        a_tx.send(barrier(2)).await.unwrap();
        stats.wait_for(|s| s.epoch >= 2).await.unwrap();
        assert_eq!(view.lock().len(), 4);
        drop((a_tx, b_tx));
        task.await.unwrap().unwrap();
    }
}
