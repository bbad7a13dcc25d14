//! What flows on a dataflow edge: change batches, watermarks (event-time progress) and
//! epoch barriers (the consistent points where views commit and state checkpoints).

use crate::ChangeBatch;

/// A checkpoint/commit epoch; increases by one per barrier.
pub type Epoch = u64;

/// Event-time progress: no row with an earlier time will follow (later ones are "late").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watermark {
    /// Event time in nanoseconds since the epoch.
    EventTime(i64),
    /// The input is idle and holds nothing back.
    Idle,
}

/// Marks the end of an epoch on every edge; operators commit their state when all inputs have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    pub epoch: Epoch,
    /// The dataflow stops after this barrier (shutdown or DROP).
    pub stop: bool,
}

/// One message on an edge.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Data(ChangeBatch),
    Watermark(Watermark),
    Barrier(Barrier),
}
