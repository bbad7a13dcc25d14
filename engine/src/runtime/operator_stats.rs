//! What a running dataflow's operators are and have done: its `Topology` (the shape EXPLAIN
//! CREATE MATERIALIZED VIEW prints), rows into and state held by each operator summed over
//! its instances (`OperatorStats`), and how long its epochs took to commit (`CommitLatency`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::graph::NodeId;

/// One operator of a dataflow's plan, as its graph was built (before stages are cut).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorInfo {
    pub id: NodeId,
    /// `Operator::describe`: its name and what it computes.
    pub operator: String,
    /// Input channels that feed it from outside the graph (its relation's splits).
    pub input_channels: usize,
    /// Downstream operators; an exchange's partitioning when rows are dealt to instances.
    pub outputs: Vec<(NodeId, Option<String>)>,
}

/// A dataflow's operators, inputs-first.
pub type Topology = Vec<OperatorInfo>;

/// Counters every instance of every operator of one dataflow adds to: rows delivered to
/// each operator, and each instance's last measured state size.
#[derive(Debug)]
pub struct OperatorStats {
    nodes: usize,
    rows: Vec<AtomicU64>,
    /// Task-major: `state[task * nodes + node]`.
    state: Vec<AtomicUsize>,
}

impl OperatorStats {
    /// For a plan of `nodes` operators run as `tasks` stage instances.
    pub fn new(nodes: usize, tasks: usize) -> Self {
        Self {
            nodes,
            rows: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            state: (0..nodes * tasks.max(1))
                .map(|_| AtomicUsize::new(0))
                .collect(),
        }
    }

    pub(super) fn add_rows(&self, node: NodeId, rows: usize) {
        if let Some(r) = self.rows.get(node) {
            r.fetch_add(rows as u64, Ordering::Relaxed);
        }
    }

    pub(super) fn set_state(&self, task: usize, node: NodeId, bytes: usize) {
        if let Some(s) = self.state.get(task * self.nodes + node) {
            s.store(bytes, Ordering::Relaxed);
        }
    }

    /// Change rows (inserts and retractions) delivered to `node` since the dataflow started.
    pub fn rows(&self, node: NodeId) -> u64 {
        self.rows.get(node).map_or(0, |r| r.load(Ordering::Relaxed))
    }

    /// State bytes `node` holds over all its instances (measured about once a second).
    pub fn state_bytes(&self, node: NodeId) -> usize {
        if node >= self.nodes {
            return 0;
        }
        self.state
            .iter()
            .skip(node)
            .step_by(self.nodes)
            .map(|s| s.load(Ordering::Relaxed))
            .sum()
    }

    /// State bytes of the whole dataflow.
    pub fn total_state_bytes(&self) -> usize {
        self.state.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }
}

/// Upper bounds (ms) of `CommitLatency`'s buckets; one more bucket holds the rest.
pub const COMMIT_LATENCY_BUCKETS_MS: [f64; 12] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10_000.0, 30_000.0,
];

/// Per committed epoch, wall time from its barrier entering the sources to the dataflow's
/// last stage committing it: a histogram (per-bucket counts, not cumulative).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitLatency {
    counts: [u64; COMMIT_LATENCY_BUCKETS_MS.len() + 1],
    pub sum_ms: f64,
    pub count: u64,
}

impl CommitLatency {
    pub fn observe(&mut self, ms: f64) {
        let ms = ms.max(0.0);
        let bucket = COMMIT_LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(COMMIT_LATENCY_BUCKETS_MS.len());
        self.counts[bucket] += 1;
        self.sum_ms += ms;
        self.count += 1;
    }

    /// (upper bound, observations in that bucket alone); the last bound is +inf.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        COMMIT_LATENCY_BUCKETS_MS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_sums_over_instances_and_rows_over_calls() {
        let stats = OperatorStats::new(3, 2);
        stats.set_state(0, 1, 100);
        stats.set_state(1, 1, 50);
        stats.set_state(1, 2, 7);
        stats.set_state(0, 1, 10);
        stats.add_rows(2, 4);
        stats.add_rows(2, 5);
        assert_eq!(
            (
                stats.state_bytes(1),
                stats.state_bytes(2),
                stats.state_bytes(0)
            ),
            (60, 7, 0)
        );
        assert_eq!((stats.rows(2), stats.total_state_bytes()), (9, 67));
    }

    #[test]
    fn latency_lands_in_the_first_bucket_that_holds_it() {
        let mut l = CommitLatency::default();
        for ms in [1.0, 5.0, 6.0, 99_999.0] {
            l.observe(ms);
        }
        let b = l.buckets();
        assert_eq!((b[0], b[1]), ((5.0, 2), (10.0, 1)));
        assert_eq!(b.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!((l.count, l.sum_ms), (4, 100_011.0));
    }
}
