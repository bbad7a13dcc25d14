//! `Graph`: a dataflow's operators wired in topological order and driven by one task. It
//! aligns epoch barriers over its input channels and keeps each node's watermark the
//! minimum over that node's inputs (idle inputs excluded).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::Poll;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::watch;

use crate::message::{Barrier, Epoch, Message, Watermark};
use crate::operator::{Emitter, Operator};
use crate::{ChangeBatch, EngineError, Result};

/// How far (event time) one relation may run ahead of another under watermark alignment.
const ALIGNMENT_NS: i64 = 1_000_000_000;

pub type NodeId = usize;
pub type InputId = usize;

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
}

/// What `weir_catalog.dataflows` shows for a running dataflow.
#[derive(Debug, Default, Clone)]
pub struct DataflowStats {
    pub epoch: Epoch,
    pub state_bytes: usize,
    pub last_commit_ms: i64,
    pub error: Option<String>,
}

/// Operators and their edges. Nodes are added inputs-first.
#[derive(Default)]
pub struct Graph {
    nodes: Vec<Node>,
    /// Each input channel's (node, port, slot).
    inputs: Vec<(NodeId, usize, usize)>,
    /// Watermark alignment across relations (see `align_watermarks`).
    align: bool,
    /// Each relation's (entry node's) read limit in event time, for its split readers.
    limits: Vec<(NodeId, Arc<AtomicI64>)>,
}

/// The smaller of two optional times (None = no time).
fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
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
        });
        self.nodes.len() - 1
    }

    /// Feeds `from`'s output into `to`'s input `port`.
    pub fn connect(&mut self, from: NodeId, to: NodeId, port: usize) -> Result<()> {
        if from >= to || to >= self.nodes.len() {
            return Err(EngineError::Config(format!(
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
        self.inputs.len() - 1
    }

    fn new_slot(&mut self, node: NodeId, port: usize) -> usize {
        self.nodes[node].slots.push(Slot::Pending);
        self.nodes[node].slot_ports.push(port);
        self.nodes[node].slots.len() - 1
    }

    /// One line per node, sinks last: what EXPLAIN CREATE MATERIALIZED VIEW prints.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (id, node) in self.nodes.iter().enumerate() {
            let mut line = format!("{id}: {}", node.op.describe());
            let inputs = self.inputs.iter().filter(|(n, ..)| *n == id).count();
            if inputs > 0 {
                let _ = write!(line, " <- {inputs} input channel(s)");
            }
            let outs: Vec<String> = node.outputs.iter().map(|(n, ..)| n.to_string()).collect();
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
            return Err(EngineError::Config(
                "one receiver per input expected".into(),
            ));
        }
        let n = receivers.len();
        let mut blocked: Vec<Option<Barrier>> = vec![None; n];
        let mut closed = vec![false; n];
        // Each input's last event-time watermark (None: idle or ended); an input that has
        // sent none yet holds the others back as if at the start of time.
        let mut input_time: Vec<Option<i64>> = vec![Some(i64::MIN); n];
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
                for b in blocked.iter_mut() {
                    if b.is_some_and(|b| b.epoch == barrier.epoch) {
                        *b = None;
                    }
                }
                if sized.elapsed().as_millis() >= 1000 || state_bytes == 0 {
                    state_bytes = self.nodes.iter().map(|n| n.op.state_bytes()).sum();
                    sized = Instant::now();
                }
                committed.send_modify(|s| {
                    s.epoch = barrier.epoch;
                    s.last_commit_ms = barrier.ts_ms;
                    s.state_bytes = state_bytes;
                });
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
                    input_time[i] = None;
                    self.publish_limits(&input_time);
                    self.watermark(node, slot, Slot::Idle)?;
                }
                Some(Message::Barrier(b)) => blocked[i] = Some(b),
                Some(Message::Data(batch)) => self.deliver(node, port, batch)?,
                Some(Message::Watermark(w)) => {
                    // The end of a bounded input (+inf) holds nothing back either.
                    input_time[i] = w.time().filter(|&t| t < i64::MAX);
                    self.publish_limits(&input_time);
                    let s = w.time().map_or(Slot::Idle, Slot::At);
                    self.watermark(node, slot, s)?;
                }
            }
        }
    }

    /// Watermark alignment (when enabled): each relation may read up to `ALIGNMENT_NS`
    /// past the slowest *other* relation that still moves; its split readers see the
    /// limit and wait (barriers still flow), so a join does not hold the leader's rows
    /// while the other side catches up. Partitions of one relation never hold each other.
    fn publish_limits(&self, input_time: &[Option<i64>]) {
        if !self.align {
            return;
        }
        // A relation's time: the minimum over its inputs that have one.
        let mut relation: Vec<(NodeId, Option<i64>)> = Vec::new();
        for (i, &(node, ..)) in self.inputs.iter().enumerate() {
            let t = input_time[i];
            match relation.iter_mut().find(|r| r.0 == node) {
                Some(r) => r.1 = min_some(r.1, t),
                None => relation.push((node, t)),
            }
        }
        for (node, limit) in &self.limits {
            let others = relation
                .iter()
                .filter(|r| r.0 != *node)
                .fold(None, |m, r| min_some(m, r.1));
            let value = others.map_or(i64::MAX, |t| t.saturating_add(ALIGNMENT_NS));
            limit.store(value, Ordering::Relaxed);
        }
    }

    /// Pushes a batch into `node` and everything downstream of it.
    fn deliver(&mut self, node: NodeId, port: usize, batch: ChangeBatch) -> Result<()> {
        let mut queue = VecDeque::from([(node, port, batch)]);
        let mut out = Emitter::default();
        while let Some((id, port, batch)) = queue.pop_front() {
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
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::operator::{Materialize, Union};
    use crate::runtime::channel_stream;

    fn rows(v: &[i64]) -> Message {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let data =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(v.to_vec()))]).unwrap();
        Message::Data(ChangeBatch::from_data(&data, 1).unwrap())
    }

    fn barrier(epoch: Epoch) -> Message {
        Message::Barrier(Barrier { epoch, ts_ms: 0 })
    }

    #[tokio::test]
    async fn each_relation_may_read_one_second_past_the_others() {
        let mut g = Graph::new();
        g.align_watermarks();
        let a = g.add(Box::new(Union::new("a")));
        let b = g.add(Box::new(Union::new("b")));
        let (limit_a, limit_b) = (g.read_limit(a), g.read_limit(b));
        // Two splits for a, one for b.
        g.input(a, 0);
        g.input(a, 0);
        g.input(b, 0);
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..3).map(|_| mpsc::channel(4)).unzip();
        let (stats_tx, _stats) = watch::channel(DataflowStats::default());
        let streams = rxs.into_iter().map(channel_stream).collect();
        let task = tokio::spawn(async move { g.run(streams, &stats_tx).await });
        let s = 1_000_000_000;
        let wm = |t: i64| Message::Watermark(Watermark::EventTime(t * s));
        // The graph task publishes limits as it takes each watermark in: wait for it.
        let until = |limit: &Arc<AtomicI64>, want: fn(i64) -> bool| {
            let limit = Arc::clone(limit);
            async move {
                for _ in 0..1000 {
                    if want(limit.load(Ordering::Relaxed)) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                panic!("limit stayed at {}", limit.load(Ordering::Relaxed));
            }
        };
        txs[0].send(wm(10)).await.unwrap();
        // b has said nothing yet: a may not read on.
        until(&limit_a, |l| l < 0).await;
        txs[2].send(wm(4)).await.unwrap();
        until(&limit_a, |l| l == 5_000_000_000).await;
        // a's second split has no watermark yet, so a holds b back.
        assert!(limit_b.load(Ordering::Relaxed) < 0);
        txs[1].send(wm(7)).await.unwrap();
        // a is at min(10, 7).
        until(&limit_b, |l| l == 8_000_000_000).await;
        assert_eq!(limit_a.load(Ordering::Relaxed), 5 * s);
        // b goes idle: it holds nothing back.
        txs[2]
            .send(Message::Watermark(Watermark::Idle))
            .await
            .unwrap();
        until(&limit_a, |l| l == i64::MAX).await;
        drop(txs);
        task.await.unwrap().unwrap();
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
