//! `StageTask`: one instance of one stage of a dataflow, driven by one task. It aligns
//! epoch barriers over its input channels, keeps each node's watermark the minimum over
//! that node's inputs (idle excluded), and snapshots its operators at checkpoint barriers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use futures::StreamExt;
use futures::future::{BoxFuture, join_all};
use futures::stream::BoxStream;
use tokio::sync::{mpsc, watch};

use super::alignment::Alignment;
use super::exchange::Router;
use super::graph::{InputId, NodeId};
use super::operator_stats::{CommitLatency, OperatorStats};
use crate::message::{Barrier, Epoch, Message, SplitPosition, Watermark};
use crate::operator::{Emitter, Operator};
use crate::state::StateSnapshot;
use crate::{ChangeBatch, EngineError, Result};

/// Where a stage's output leaves its task (through the `Router`), in a node's outputs.
const EXIT: NodeId = usize::MAX;

/// How often a task measures its operators' state, at most.
const STATE_MEASURE_INTERVAL_MS: u128 = 1000;

/// A watermark input's state.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    /// Nothing heard yet: holds the node back.
    Pending,
    Idle,
    At(i64),
}

struct Node {
    op: Box<dyn Operator>,
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

/// What `weir_catalog.dataflows` shows for a running dataflow.
#[derive(Debug, Default, Clone)]
pub struct DataflowStats {
    pub epoch: Epoch,
    pub state_bytes: usize,
    pub last_commit_ms: i64,
    pub error: Option<String>,
    pub commit_latency: CommitLatency,
}

/// Every operator's state of a task after a checkpoint barrier (by its node order), and
/// where each source split it reads was at that barrier.
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

/// A channel into the task: the (node, port, slot) it feeds, the relation whose split it
/// reads (by the plan's entry node) and that split's last position, and its registration
/// in watermark alignment.
struct Input {
    node: NodeId,
    port: usize,
    slot: usize,
    relation: Option<NodeId>,
    position: Option<SplitPosition>,
    aligned: Option<usize>,
}

/// One stage instance's operators (its own node ids, in topological order) and channels.
pub(super) struct StageTask {
    nodes: Vec<Node>,
    inputs: Vec<Input>,
    alignment: Option<Arc<Alignment>>,
    /// Its exit: what its last node emits, sent on after each message (none for the last
    /// stage, which commits epochs).
    router: Option<Router>,
    outbox: Vec<Message>,
    /// The dataflow's operator counters, and the plan's node id of each local node.
    stats: Arc<OperatorStats>,
    plan_ids: Vec<NodeId>,
    /// Where the snapshots taken at checkpoint barriers go.
    checkpoints: Option<mpsc::UnboundedSender<GraphSnapshot>>,
    /// Which task of its dataflow it is (stage instances in order).
    task: usize,
    /// The newest checkpoint its state was snapshotted (or restored) at.
    last_checkpoint: Epoch,
    /// When it last measured its operators' state, and what the dataflow's was then.
    measured: Option<(Instant, usize)>,
}

impl StageTask {
    pub(super) fn new(task: usize, stats: Arc<OperatorStats>) -> Self {
        Self {
            nodes: Vec::new(),
            inputs: Vec::new(),
            alignment: None,
            router: None,
            outbox: Vec::new(),
            stats,
            plan_ids: Vec::new(),
            checkpoints: None,
            task,
            last_checkpoint: 0,
            measured: None,
        }
    }

    /// Adds the plan's node `plan_id`; returns its id in this task.
    pub(super) fn add(&mut self, op: Box<dyn Operator>, plan_id: NodeId) -> NodeId {
        self.nodes.push(Node {
            op,
            outputs: Vec::new(),
            slots: Vec::new(),
            slot_ports: Vec::new(),
            time: None,
            forwarded: None,
            held: None,
        });
        self.plan_ids.push(plan_id);
        self.nodes.len() - 1
    }

    /// Feeds `from`'s output into `to`'s input `port`.
    pub(super) fn connect(&mut self, from: NodeId, to: NodeId, port: usize) {
        let slot = self.new_slot(to, port);
        self.nodes[from].outputs.push((to, port, slot));
    }

    /// A stream feeding `to`'s input `port`; `run` takes the streams in this order.
    /// `relation`: the plan's entry node of the relation whose split it reads (its
    /// positions go into snapshots), for a split.
    pub(super) fn input(&mut self, to: NodeId, port: usize, relation: Option<NodeId>) -> InputId {
        let slot = self.new_slot(to, port);
        self.inputs.push(Input {
            node: to,
            port,
            slot,
            relation,
            position: None,
            aligned: None,
        });
        self.inputs.len() - 1
    }

    fn new_slot(&mut self, node: NodeId, port: usize) -> usize {
        self.nodes[node].slots.push(Slot::Pending);
        self.nodes[node].slot_ports.push(port);
        self.nodes[node].slots.len() - 1
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
        self.inputs[input].aligned = Some(alignment.register(relation));
        self.alignment = Some(Arc::clone(alignment));
    }

    /// Sends a snapshot of every operator's state to `to` at the first barrier of each new
    /// checkpoint (see `Barrier::checkpoint`), once every operator has handled it.
    pub(super) fn checkpoint_to(&mut self, to: mpsc::UnboundedSender<GraphSnapshot>) {
        self.checkpoints = Some(to);
    }

    /// Gives each node the state `snapshot` holds for it, before the task runs; the
    /// snapshot is of the same stage of the same plan.
    pub(super) fn restore(&mut self, snapshot: &GraphSnapshot) -> Result<()> {
        if snapshot.nodes.len() != self.nodes.len() {
            return Err(EngineError::CorruptCheckpoint(format!(
                "a snapshot of {} operators does not fit a task of {}",
                snapshot.nodes.len(),
                self.nodes.len()
            )));
        }
        for (node, state) in self.nodes.iter_mut().zip(&snapshot.nodes) {
            node.op.restore(state)?;
        }
        self.last_checkpoint = snapshot.checkpoint;
        Ok(())
    }

    /// Runs until every input closes; the last stage publishes each committed epoch on
    /// `committed`.
    pub(super) async fn run(
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
        loop {
            let live: Vec<usize> = (0..n).filter(|&i| !closed[i]).collect();
            if live.is_empty() {
                return Ok(());
            }
            if live.iter().all(|&i| blocked[i].is_some()) {
                // Every live input reached a barrier: the oldest one is complete.
                let barrier = live
                    .iter()
                    .filter_map(|&i| blocked[i])
                    .min_by_key(|b| b.epoch)
                    .expect("invariant: live inputs are all blocked");
                for b in blocked.iter_mut() {
                    if b.is_some_and(|b| b.epoch == barrier.epoch) {
                        *b = None;
                    }
                }
                if !self.complete(barrier, committed).await? {
                    return Ok(());
                }
                continue;
            }
            let (i, msg) = std::future::poll_fn(|cx| {
                for k in 0..n {
                    let i = (start + k) % n;
                    if closed[i] || blocked[i].is_some() {
                        continue;
                    }
                    if let Poll::Ready(m) = receivers[i].poll_next_unpin(cx) {
                        return Poll::Ready((i, m));
                    }
                }
                Poll::Pending
            })
            .await;
            start = i + 1;
            match msg {
                None => closed[i] = true,
                Some(Message::Barrier(b)) => blocked[i] = Some(b),
                _ => {}
            }
            self.on_message(i, msg)?;
            if !self.send_outbox().await? {
                return Ok(());
            }
        }
    }

    /// Handles input `i`'s next message (None: the input closed). Barriers are handled
    /// once every input reached them (`complete`).
    fn on_message(&mut self, i: InputId, msg: Option<Message>) -> Result<()> {
        let (node, port, slot) = (
            self.inputs[i].node,
            self.inputs[i].port,
            self.inputs[i].slot,
        );
        match msg {
            None => {
                self.report_time(i, None);
                self.watermark(node, slot, Slot::Idle)
            }
            Some(Message::Barrier(_)) => Ok(()),
            Some(Message::Position(p)) => {
                self.inputs[i].position = Some(p);
                Ok(())
            }
            Some(Message::Data(batch)) => self.deliver(node, port, batch),
            Some(Message::Watermark(w)) => {
                // The end of a bounded input (+inf) holds nothing back either.
                self.report_time(i, w.time().filter(|&t| t < i64::MAX));
                let s = w.time().map_or(Slot::Idle, Slot::At);
                self.watermark(node, slot, s)
            }
        }
    }

    /// Completes an epoch every input reached: the operators handle the barrier, the
    /// state is snapshotted if it starts a checkpoint, and the barrier goes on to the next
    /// stage (or the epoch commits, in the last one). False once the next stage is gone.
    async fn complete(
        &mut self,
        barrier: Barrier,
        committed: &watch::Sender<DataflowStats>,
    ) -> Result<bool> {
        self.barrier(barrier)?;
        if barrier.checkpoint > self.last_checkpoint && self.checkpoints.is_some() {
            self.last_checkpoint = barrier.checkpoint;
            let snapshot = self.snapshot(barrier)?;
            if let Some(to) = &self.checkpoints {
                // A closed receiver has stopped taking checkpoints.
                let _ = to.send(snapshot);
            }
        }
        let state_bytes = self.measure_state();
        if self.router.is_some() {
            // A stage before the last: the view commits when the barrier reaches it.
            self.outbox.push(Message::Barrier(barrier));
            join_all(self.backpressure()).await;
            return self.send_outbox().await;
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        committed.send_modify(|s| {
            s.epoch = barrier.epoch;
            s.last_commit_ms = barrier.ts_ms;
            s.state_bytes = state_bytes;
            s.commit_latency.observe((now_ms - barrier.ts_ms) as f64);
        });
        join_all(self.backpressure()).await;
        Ok(true)
    }

    /// What to wait for until the readers of its operators' output can take more
    /// (`Operator::backpressure`): meanwhile its inputs, bounded channels, fill and slow
    /// what feeds them.
    fn backpressure(&self) -> Vec<BoxFuture<'static, ()>> {
        self.nodes
            .iter()
            .filter_map(|n| n.op.backpressure())
            .collect()
    }

    /// Every node's state after `barrier`, and its splits' positions there.
    fn snapshot(&mut self, barrier: Barrier) -> Result<GraphSnapshot> {
        let nodes = self
            .nodes
            .iter_mut()
            .map(|n| n.op.snapshot())
            .collect::<Result<Vec<_>>>()?;
        let positions = self
            .inputs
            .iter()
            .filter_map(|i| Some((i.relation?, i.position?)))
            .collect();
        Ok(GraphSnapshot {
            checkpoint: barrier.checkpoint,
            epoch: barrier.epoch,
            task: self.task,
            nodes,
            positions,
        })
    }

    /// Records each node's state size (at most once a `STATE_MEASURE_INTERVAL_MS`);
    /// returns the whole dataflow's.
    fn measure_state(&mut self) -> usize {
        if let Some((at, bytes)) = self.measured
            && at.elapsed().as_millis() < STATE_MEASURE_INTERVAL_MS
            && bytes > 0
        {
            return bytes;
        }
        for (node, &id) in self.nodes.iter().zip(&self.plan_ids) {
            self.stats.set_state(self.task, id, node.op.state_bytes());
        }
        let bytes = self.stats.total_state_bytes();
        self.measured = Some((Instant::now(), bytes));
        bytes
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
        if let (Some(alignment), Some(index)) = (&self.alignment, self.inputs[input].aligned) {
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
            self.stats.add_rows(self.plan_ids[id], batch.num_rows());
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
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use tokio::sync::{mpsc, watch};

    use super::*;
    use crate::operator::{Materialize, Union};
    use crate::runtime::{Dataflow, Graph, channel_stream};

    fn rows(v: &[i64]) -> Message {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let data =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(v.to_vec()))]).unwrap();
        Message::Data(ChangeBatch::from_data(&data, 1).unwrap())
    }

    fn barrier(epoch: Epoch) -> Message {
        Message::Barrier(Barrier::new(epoch, 0))
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
        let mut dataflow = Dataflow::new(vec![g]).unwrap();
        dataflow.input(union, vec![channel_stream(a_rx), channel_stream(b_rx)]);
        let (stats_tx, mut stats) = watch::channel(DataflowStats::default());
        let started = dataflow.start(Arc::new(stats_tx)).unwrap();
        let task = tokio::spawn(join_all(started.tasks));
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
        for result in task.await.unwrap() {
            result.unwrap();
        }
    }
}
