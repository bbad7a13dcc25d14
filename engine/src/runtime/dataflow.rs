//! `Dataflow`: a view's graph, lowered once per core, cut at its exchange edges into stages.
//! Each stage instance runs as its own task; `Router` channels join them, hash-partitioned.
//!
//! Sources are dealt by split to the instances of the stage that reads them; a keyed
//! operator (join, grouped aggregate, TopN, session window) starts a stage whose instance
//! `i` owns the keys that hash to `i`; the view's `Materialize` is a stage of one. Barriers
//! and watermarks cross every exchange to every instance, and each instance aligns them
//! over its inputs as a whole dataflow does, so epochs stay consistent across stages.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};

use super::alignment::Alignment;
use super::exchange::{Partitioning, Router};
use super::graph::{ExchangeEdge, Graph, NodeId, PlanNode};
use super::operator_stats::{OperatorStats, Topology};
use super::rescale::rescale;
use super::stage::{DataflowStats, GraphSnapshot, StageTask};
use super::{CHANNEL_CAPACITY, channel_stream};
use crate::{EngineError, Message, Result};

/// A connected part of the graph between exchanges, run as `width` instances.
pub(super) struct Stage {
    /// Its nodes, ascending (so topological).
    pub(super) nodes: Vec<NodeId>,
    pub(super) width: usize,
    /// The exchange its output leaves by (none for the last stage).
    exit: Option<usize>,
    /// The exchanges it reads.
    entries: Vec<usize>,
}

/// How a plan runs at one parallelism: its stages, and the stage of each node. Its tasks
/// are the stages' instances in order (what `GraphSnapshot::task` counts).
pub(super) struct Stages {
    pub(super) stages: Vec<Stage>,
    pub(super) stage_of: Vec<usize>,
}

impl Stages {
    /// Cuts a plan of `nodes` at its exchanges, for `parallelism` instances of each keyed
    /// stage. On one instance exchanges are plain edges: the plan is one task.
    pub(super) fn cut(
        nodes: usize,
        edges: &[(NodeId, NodeId)],
        exchanges: &[ExchangeEdge],
        parallelism: usize,
    ) -> Result<Self> {
        let mut root: Vec<NodeId> = (0..nodes).collect();
        fn find(root: &mut [NodeId], mut x: NodeId) -> NodeId {
            while root[x] != x {
                root[x] = root[root[x]];
                x = root[x];
            }
            x
        }
        let inlined = exchanges.iter().map(|e| (e.from, e.to));
        let joined: Vec<(NodeId, NodeId)> = if parallelism == 1 {
            edges.iter().copied().chain(inlined).collect()
        } else {
            edges.to_vec()
        };
        for (from, to) in joined {
            let (a, b) = (find(&mut root, from), find(&mut root, to));
            root[a.max(b)] = a.min(b);
        }
        let mut stages: Vec<Stage> = Vec::new();
        let mut of_root = vec![usize::MAX; nodes];
        let stage_of: Vec<usize> = (0..nodes)
            .map(|node| {
                let r = find(&mut root, node);
                if of_root[r] == usize::MAX {
                    of_root[r] = stages.len();
                    stages.push(Stage {
                        nodes: Vec::new(),
                        width: parallelism,
                        exit: None,
                        entries: Vec::new(),
                    });
                }
                stages[of_root[r]].nodes.push(node);
                of_root[r]
            })
            .collect();
        if parallelism > 1 {
            for (i, e) in exchanges.iter().enumerate() {
                let from = &mut stages[stage_of[e.from]];
                if from.exit.replace(i).is_some() {
                    return Err(EngineError::Internal(format!(
                        "node {} feeds two exchanges",
                        e.from
                    )));
                }
                let to = &mut stages[stage_of[e.to]];
                to.entries.push(i);
                if matches!(e.partitioning, Partitioning::Single) {
                    to.width = 1;
                }
            }
        }
        Ok(Self { stages, stage_of })
    }

    /// Each task's (stage, instance), in task order.
    pub(super) fn tasks(&self) -> Vec<(usize, usize)> {
        self.stages
            .iter()
            .enumerate()
            .flat_map(|(s, stage)| (0..stage.width).map(move |i| (s, i)))
            .collect()
    }
}

/// A dataflow ready to start: one graph per core, and the streams of its relations.
pub struct Dataflow {
    instances: Vec<Graph>,
    layout: Stages,
    /// The plan's edges within stages and its exchanges (before one instance inlines
    /// them): how it ran at another parallelism, for a checkpoint taken then.
    edges: Vec<(NodeId, NodeId)>,
    exchanges: Vec<ExchangeEdge>,
    streams: Vec<(NodeId, Vec<BoxStream<'static, Message>>)>,
    checkpoints: Option<mpsc::UnboundedSender<GraphSnapshot>>,
    /// Per task, the state it starts from.
    restored: Vec<Option<GraphSnapshot>>,
}

/// A started dataflow: one future per stage instance, and how many of them take part in
/// checkpoints (an instance given no split has nothing to read and ends at once).
pub struct Started {
    pub tasks: Vec<BoxFuture<'static, Result<()>>>,
    pub checkpointing: usize,
    /// What each operator has done, while the tasks run.
    pub operators: Arc<OperatorStats>,
    /// The plan's operators (node ids as in `operators`).
    pub topology: Topology,
}

impl Dataflow {
    /// `instances` are the same plan lowered once per core (identical shapes, fresh state).
    /// With one instance, exchanges become plain edges and the dataflow runs as one task.
    pub fn new(mut instances: Vec<Graph>) -> Result<Self> {
        if instances.is_empty() {
            return Err(EngineError::Internal("a dataflow needs a graph".into()));
        }
        let edges = instances[0].edges();
        let exchanges = instances[0].exchanges.clone();
        if instances.len() == 1 {
            instances[0].inline_exchanges()?;
        }
        let layout = Stages::cut(
            instances[0].nodes.len(),
            &edges,
            &exchanges,
            instances.len(),
        )?;
        Ok(Self {
            instances,
            layout,
            edges,
            exchanges,
            streams: Vec::new(),
            checkpoints: None,
            restored: Vec::new(),
        })
    }

    /// Every task sends its operators' snapshot to `to` at each checkpoint barrier; a
    /// checkpoint of the dataflow is one snapshot from each of its `tasks()` that still
    /// runs (an instance given no split ends at once, with nothing to keep).
    pub fn checkpoint_to(&mut self, to: mpsc::UnboundedSender<GraphSnapshot>) {
        self.checkpoints = Some(to);
    }

    /// Starts each task from its snapshot in `checkpoint`: snapshots of one checkpoint of
    /// a dataflow built from the same plan, at `parallelism` instances (when that is not
    /// this dataflow's, keyed state is dealt to its instances as its exchanges deal rows).
    pub fn restore(&mut self, checkpoint: Vec<GraphSnapshot>, parallelism: usize) -> Result<()> {
        let checkpoint = if parallelism == self.instances.len() {
            checkpoint
        } else {
            let nodes = self.instances[0].nodes.len();
            let old = Stages::cut(nodes, &self.edges, &self.exchanges, parallelism)?;
            let plan = &self.instances[0];
            rescale(plan, &self.exchanges, &old, &self.layout, checkpoint)?
        };
        let tasks = self.tasks();
        let ids: std::collections::BTreeSet<_> = checkpoint.iter().map(|s| s.checkpoint).collect();
        if ids.len() > 1 {
            return Err(EngineError::CorruptCheckpoint(format!(
                "a dataflow's task snapshots are from {} checkpoints",
                ids.len()
            )));
        }
        self.restored = vec![None; tasks];
        for s in checkpoint {
            match self.restored.get_mut(s.task) {
                Some(slot @ None) => *slot = Some(s),
                _ => {
                    return Err(EngineError::CorruptCheckpoint(format!(
                        "task {} of a checkpoint does not fit a dataflow of {tasks} tasks",
                        s.task
                    )));
                }
            }
        }
        Ok(())
    }

    /// The streams of the relation entering at `node` (one per split); `start` deals them
    /// to the instances of the stage that reads it.
    pub fn input(&mut self, node: NodeId, streams: Vec<BoxStream<'static, Message>>) {
        self.streams.push((node, streams));
    }

    /// How many tasks the dataflow runs as.
    pub fn tasks(&self) -> usize {
        self.layout.stages.iter().map(|s| s.width).sum()
    }

    /// One future per stage instance; the last stage's commits are published on
    /// `committed`. Every future must be spawned for the dataflow to make progress.
    pub fn start(mut self, committed: Arc<watch::Sender<DataflowStats>>) -> Result<Started> {
        let first = &self.instances[0];
        let alignment = first
            .align
            .then(|| Arc::new(Alignment::new(first.limits.clone())));
        // Per exchange, the senders of each upstream instance and the receivers of each
        // downstream one.
        // On one instance the exchanges are plain edges: no stage reads or leaves by one.
        let exchanges: &[ExchangeEdge] = if self.instances.len() > 1 {
            &self.exchanges
        } else {
            &[]
        };
        let mut senders: Vec<Vec<Vec<mpsc::Sender<Message>>>> = Vec::with_capacity(exchanges.len());
        let mut receivers: Vec<Vec<Vec<mpsc::Receiver<Message>>>> =
            Vec::with_capacity(exchanges.len());
        for e in exchanges {
            let up = self.layout.stages[self.layout.stage_of[e.from]].width;
            let down = self.layout.stages[self.layout.stage_of[e.to]].width;
            let mut tx = vec![Vec::with_capacity(down); up];
            let mut rx: Vec<Vec<_>> = (0..down).map(|_| Vec::with_capacity(up)).collect();
            for sender in tx.iter_mut() {
                for receiver in rx.iter_mut() {
                    let (t, r) = mpsc::channel(CHANNEL_CAPACITY);
                    sender.push(t);
                    receiver.push(r);
                }
            }
            senders.push(tx);
            receivers.push(rx);
        }
        let operators = Arc::new(OperatorStats::new(first.nodes.len(), self.tasks()));
        let splits: Vec<(NodeId, usize)> =
            self.streams.iter().map(|(n, s)| (*n, s.len())).collect();
        let topology = first.topology_with(&splits);
        let mut tasks = Vec::new();
        let mut checkpointing = 0;
        let mut instances: Vec<Vec<Option<PlanNode>>> = self
            .instances
            .iter_mut()
            .map(|g| std::mem::take(&mut g.nodes).into_iter().map(Some).collect())
            .collect();
        for (s, stage) in self.layout.stages.iter().enumerate() {
            for i in 0..stage.width {
                let mut task = StageTask::new(tasks.len(), Arc::clone(&operators));
                let mut local = vec![usize::MAX; instances[i].len()];
                let mut edges = Vec::new();
                for &id in &stage.nodes {
                    let node = instances[i][id]
                        .take()
                        .expect("invariant: a node belongs to one stage");
                    local[id] = task.add(node.op, id);
                    edges.extend(node.outputs.into_iter().map(|(to, port)| (id, to, port)));
                }
                for (from, to, port) in edges {
                    task.connect(local[from], local[to], port);
                }
                let mut streams = Vec::new();
                let mut reads = !stage.entries.is_empty();
                if let Some(e) = stage.exit {
                    let edge = &self.exchanges[e];
                    let router = Router::new(
                        edge.partitioning.clone(),
                        std::mem::take(&mut senders[e][i]),
                    );
                    task.set_exit(local[edge.from], router);
                }
                for &e in &stage.entries {
                    let edge = &self.exchanges[e];
                    for rx in std::mem::take(&mut receivers[e][i]) {
                        task.input(local[edge.to], edge.port, None);
                        streams.push(channel_stream(rx));
                    }
                }
                for (node, relation) in self.streams.iter_mut() {
                    if self.layout.stage_of[*node] != s {
                        continue;
                    }
                    let mut mine: Vec<_> = relation
                        .iter_mut()
                        .enumerate()
                        .filter(|(k, _)| k % stage.width == i)
                        .map(|(_, st)| std::mem::replace(st, futures::stream::empty().boxed()))
                        .collect();
                    reads |= !mine.is_empty();
                    // No split for this instance: an input that ends at once is idle.
                    let label = (!mine.is_empty()).then_some(*node);
                    if mine.is_empty() {
                        mine.push(futures::stream::empty().boxed());
                    }
                    for st in mine {
                        let id = task.input(local[*node], 0, label);
                        if let Some(a) = &alignment {
                            task.align_input(id, a, *node);
                        }
                        streams.push(st);
                    }
                }
                checkpointing += usize::from(reads);
                if let Some(to) = &self.checkpoints {
                    task.checkpoint_to(to.clone());
                }
                if let Some(snapshot) = self.restored.get_mut(tasks.len()).and_then(Option::take) {
                    task.restore(&snapshot)?;
                }
                let committed = Arc::clone(&committed);
                tasks.push(async move { task.run(streams, &committed).await }.boxed());
            }
        }
        Ok(Started {
            tasks,
            checkpointing,
            operators,
            topology,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::graph::tests::{messages, sorted, windowed_sums};

    /// Runs the windowed sums on `width` instances over `input` (one split), restored from
    /// `checkpoint` (taken at the parallelism it comes with) if given; returns the view's
    /// rows and the checkpoints taken.
    async fn run(
        width: usize,
        input: Vec<Message>,
        checkpoint: Option<(Vec<GraphSnapshot>, usize)>,
    ) -> (Vec<Vec<Option<i64>>>, Vec<GraphSnapshot>) {
        let mut graphs = Vec::new();
        let mut view = None;
        for _ in 0..width {
            let (g, v) = windowed_sums();
            view.get_or_insert(v);
            graphs.push(g);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for m in input {
            tx.send(m).unwrap();
        }
        drop(tx);
        let mut dataflow = Dataflow::new(graphs).unwrap();
        dataflow.input(0, vec![super::super::unbounded_stream(rx)]);
        let (to, mut taken) = mpsc::unbounded_channel();
        dataflow.checkpoint_to(to);
        if let Some((c, at)) = checkpoint {
            dataflow.restore(c, at).unwrap();
        }
        let (stats, _) = watch::channel(DataflowStats::default());
        let started = dataflow.start(Arc::new(stats)).unwrap();
        // One split: the first window instance reads it, the others have nothing to read.
        let expected = if width == 1 { 1 } else { width + 2 };
        assert_eq!(started.checkpointing, expected);
        let handles: Vec<_> = started.tasks.into_iter().map(tokio::spawn).collect();
        for h in handles {
            h.await.unwrap().unwrap();
        }
        let mut snapshots = Vec::new();
        while let Ok(s) = taken.try_recv() {
            snapshots.push(s);
        }
        (sorted(view.as_ref().unwrap()), snapshots)
    }

    /// A dataflow across two instances and three stages, restored from one checkpoint
    /// (a snapshot per task, taken at the same barrier) and fed what followed it, ends
    /// with the uninterrupted run's view.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_parallel_dataflow_resumes_from_a_checkpoint() {
        let all = messages(20);
        let (whole, checkpoint) = run(2, all.clone(), None).await;
        // Two window tasks (one has no split and ends at once), two aggregate tasks and
        // the view's: one snapshot each, at the one checkpoint barrier.
        assert_eq!(checkpoint.len(), 4);
        assert!(checkpoint.iter().all(|s| s.epoch == 21));
        assert!(
            checkpoint
                .iter()
                .any(|s| s.nodes[0].table("groups").is_some()),
            "open windows at the checkpoint"
        );
        let after = all
            .iter()
            .position(|m| matches!(m, Message::Barrier(b) if b.checkpoint > 0))
            .unwrap();
        let rest = all[after + 1..].to_vec();
        let (resumed, _) = run(2, rest.clone(), Some((checkpoint.clone(), 2))).await;
        assert!(whole.len() > 10);
        assert_eq!(resumed, whole);
        let (one, at_one) = run(1, all.clone(), None).await;
        assert_eq!(one, whole, "the same view on one instance");
        // Restored at another parallelism: keyed state is dealt to the new instances.
        for (from, to) in [(1, 1), (2, 3), (2, 1), (1, 3)] {
            let taken = if from == 2 { &checkpoint } else { &at_one };
            let (rescaled, _) = run(to, rest.clone(), Some((taken.clone(), from))).await;
            assert_eq!(rescaled, whole, "checkpointed at {from}, restored at {to}");
        }
        let mut twice = checkpoint.clone();
        twice.push(checkpoint[0].clone());
        let (graphs, _): (Vec<_>, Vec<_>) = (0..2).map(|_| windowed_sums()).unzip();
        assert!(
            Dataflow::new(graphs)
                .unwrap()
                .restore(twice.clone(), 2)
                .is_err()
        );
        let (graphs, _): (Vec<_>, Vec<_>) = (0..3).map(|_| windowed_sums()).unzip();
        assert!(
            Dataflow::new(graphs).unwrap().restore(twice, 2).is_err(),
            "rescaled too"
        );
    }
}
