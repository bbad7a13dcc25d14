//! The `Operator` trait: a synchronous, deterministic state machine over change batches.
//! The runtime owns channels, clocks and barrier alignment; operators only compute.

mod eval;
mod filter_project;
mod hash_aggregate;
mod hash_join;
mod materialize;
mod over_window;
#[cfg(test)]
mod proptests;
mod session_window;
mod time_window;
mod top_n;
mod union;

pub use filter_project::FilterProject;
pub use hash_aggregate::{HashAggregate, WindowClose, column};
pub use hash_join::{Expiry, HashJoin, JoinKind};
pub use materialize::{
    Materialize, Pace, Retention, SharedView, ViewEvent, ViewState, ViewSubscriber,
};
pub use over_window::OverWindow;
pub use session_window::SessionWindow;
pub use time_window::{TimeWindow, WindowKind, timestamps_ns};
pub use top_n::{Limit, SortKey, TopN};
pub use union::Union;

use futures::future::BoxFuture;

use crate::message::{Barrier, Watermark};
use crate::state::{StateRouter, StateSnapshot};
use crate::{ChangeBatch, Result};

/// Collects what an operator emits while handling one message.
#[derive(Debug, Default)]
pub struct Emitter {
    batches: Vec<ChangeBatch>,
}

impl Emitter {
    pub fn emit(&mut self, batch: ChangeBatch) {
        if !batch.is_empty() {
            self.batches.push(batch);
        }
    }

    /// Takes everything emitted so far.
    pub fn drain(&mut self) -> Vec<ChangeBatch> {
        std::mem::take(&mut self.batches)
    }
}

/// An incremental operator: its output is the change in its query's answer.
pub trait Operator: Send + 'static {
    fn name(&self) -> &'static str;

    /// The operator and its parameters, for EXPLAIN.
    fn describe(&self) -> String {
        self.name().to_string()
    }

    /// Handles a change batch arriving on `input`.
    fn on_batch(&mut self, input: usize, batch: ChangeBatch, out: &mut Emitter) -> Result<()>;

    /// Closes windows and frees state up to `watermark`; returns the watermark to forward.
    fn on_watermark(&mut self, watermark: Watermark, _out: &mut Emitter) -> Result<Watermark> {
        Ok(watermark)
    }

    /// The watermark of input `port` alone (the minimum over its edges) when it moves,
    /// before `on_watermark` gets the minimum over all inputs.
    fn on_input_watermark(&mut self, _port: usize, _watermark: Watermark) {}

    /// Whether the watermarks it forwards wait for the next barrier: true for an operator
    /// that emits its changes at barriers, so they reach downstream ahead of the watermark.
    fn holds_watermarks(&self) -> bool {
        false
    }

    /// Called once all inputs have delivered `barrier` (the runtime aligns them).
    fn on_barrier(&mut self, _barrier: Barrier, _out: &mut Emitter) -> Result<()> {
        Ok(())
    }

    /// After a barrier, what the dataflow waits for before it reads on: a reader of the
    /// operator's output that is behind (a sink's writer) slows the dataflow, and through its
    /// bounded channels the sources it reads, to the reader's pace. None: read on.
    fn backpressure(&self) -> Option<BoxFuture<'static, ()>> {
        None
    }

    /// Approximate bytes of state held (`weir_catalog.dataflows.state_bytes`).
    fn state_bytes(&self) -> usize {
        0
    }

    /// Its state after a barrier (when the epoch's changes have all gone out), as Arrow
    /// tables. An operator built from the same plan and given it by `restore` carries on
    /// exactly as this one would: what checkpoints store per epoch. None when stateless.
    fn snapshot(&mut self) -> Result<StateSnapshot> {
        Ok(StateSnapshot::default())
    }

    /// Rebuilds the state `snapshot` holds, before the operator sees any input.
    fn restore(&mut self, _snapshot: &StateSnapshot) -> Result<()> {
        Ok(())
    }

    /// Deals the snapshots of this operator's instances (`old`, one per former instance,
    /// empty for one that held nothing) to `router.instances()` new ones, for a restore at
    /// another parallelism: new instance `i` gets the state of the keys the exchange now
    /// sends it, and carries on as if it had held them all along. Called on an operator
    /// built from the same plan (its state is not read). Stateless operators need nothing;
    /// a stateful one that does not implement it cannot change parallelism.
    fn rescale(&self, old: Vec<StateSnapshot>, router: &StateRouter) -> Result<Vec<StateSnapshot>> {
        if old.iter().all(StateSnapshot::is_empty) {
            return Ok(vec![StateSnapshot::default(); router.instances()]);
        }
        Err(crate::EngineError::Unsupported(format!(
            "{} cannot be restored at another parallelism",
            self.name()
        )))
    }
}
