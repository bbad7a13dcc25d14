//! A dataflow's checkpoint restored at another parallelism: each task snapshot is cut into
//! its nodes' states, each node's operator deals the states of its old instances to its new
//! ones (`Operator::rescale`), and they are put together again per new task.

use super::dataflow::Stages;
use super::graph::{ExchangeEdge, Graph};
use super::stage::GraphSnapshot;
use crate::state::{StateRouter, StateSnapshot};
use crate::{EngineError, Result};

/// The snapshots, one per task of `new`, that `checkpoint` (taken of the tasks of `old`,
/// the same plan at another parallelism) gives. A task of `old` with no snapshot (an
/// instance given no split) held no state.
pub(super) fn rescale(
    plan: &Graph,
    exchanges: &[ExchangeEdge],
    old: &Stages,
    new: &Stages,
    checkpoint: Vec<GraphSnapshot>,
) -> Result<Vec<GraphSnapshot>> {
    let Some(first) = checkpoint.first() else {
        return Ok(Vec::new());
    };
    let (id, epoch) = (first.checkpoint, first.epoch);
    let nodes = plan.nodes.len();
    // Per node, its state in each old instance.
    let mut states: Vec<Vec<StateSnapshot>> = (0..nodes)
        .map(|n| vec![StateSnapshot::default(); old.stages[old.stage_of[n]].width])
        .collect();
    let old_tasks = old.tasks();
    let mut seen = vec![false; old_tasks.len()];
    for snapshot in checkpoint {
        let &(s, instance) = old_tasks.get(snapshot.task).ok_or_else(|| {
            EngineError::CorruptCheckpoint(format!(
                "task {} is not a task of this plan at its checkpointed parallelism",
                snapshot.task
            ))
        })?;
        if std::mem::replace(&mut seen[snapshot.task], true) {
            return Err(EngineError::CorruptCheckpoint(format!(
                "task {} appears twice in a checkpoint",
                snapshot.task
            )));
        }
        let stage = &old.stages[s];
        if snapshot.nodes.len() != stage.nodes.len() {
            return Err(EngineError::CorruptCheckpoint(format!(
                "task {} holds {} operators, its stage {}",
                snapshot.task,
                snapshot.nodes.len(),
                stage.nodes.len()
            )));
        }
        for (&node, state) in stage.nodes.iter().zip(snapshot.nodes) {
            states[node][instance] = state;
        }
    }
    // Per node, its state in each new instance.
    let mut dealt: Vec<Vec<StateSnapshot>> = Vec::with_capacity(nodes);
    for (node, old_states) in states.into_iter().enumerate() {
        let width = new.stages[new.stage_of[node]].width;
        if old_states.len() == width {
            dealt.push(old_states);
            continue;
        }
        let mut ports = Vec::new();
        for e in exchanges.iter().filter(|e| e.to == node) {
            if ports.len() <= e.port {
                ports.resize(e.port + 1, None);
            }
            ports[e.port] = Some(e.partitioning.clone());
        }
        let router = StateRouter::new(width, ports);
        let parts = plan.nodes[node].op.rescale(old_states, &router)?;
        if parts.len() != width {
            return Err(EngineError::Internal(format!(
                "operator {node} dealt its state to {} instances, not {width}",
                parts.len()
            )));
        }
        dealt.push(parts);
    }
    let mut dealt: Vec<std::vec::IntoIter<StateSnapshot>> =
        dealt.into_iter().map(Vec::into_iter).collect();
    Ok(new
        .tasks()
        .into_iter()
        .enumerate()
        .map(|(task, (s, _))| GraphSnapshot {
            checkpoint: id,
            epoch,
            task,
            nodes: new.stages[s]
                .nodes
                .iter()
                .map(|&n| dealt[n].next().expect("invariant: one state per instance"))
                .collect(),
            // Positions are given back to the split readers by relation, not by task.
            positions: Vec::new(),
        })
        .collect())
}
