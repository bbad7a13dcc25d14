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
    /// Wall-clock time the epoch was started, in ms since the Unix epoch: every change the
    /// epoch commits carries it (SUBSCRIBE's `weir_ts`).
    pub ts_ms: i64,
    /// Operators' state is snapshotted once they have handled it (`Graph::checkpoint_to`).
    pub checkpoint: bool,
}

impl Barrier {
    /// An epoch's barrier that takes no checkpoint.
    pub fn new(epoch: Epoch, ts_ms: i64) -> Self {
        Self {
            epoch,
            ts_ms,
            checkpoint: false,
        }
    }
}

impl Watermark {
    /// The event time, if this watermark holds anything back.
    pub fn time(self) -> Option<i64> {
        match self {
            Self::EventTime(t) => Some(t),
            Self::Idle => None,
        }
    }
}

/// One message on an edge.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Data(ChangeBatch),
    Watermark(Watermark),
    Barrier(Barrier),
}
