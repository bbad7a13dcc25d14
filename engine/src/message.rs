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
    /// The newest checkpoint started by the time this epoch was (0: none): checkpoints are
    /// numbered by the epoch that started them. A stage task snapshots its operators at the
    /// first barrier it handles whose `checkpoint` is newer than its last snapshot's
    /// (`Dataflow::checkpoint_to`), so an input that skipped the starting epoch still takes
    /// part, at its next barrier.
    pub checkpoint: Epoch,
}

impl Barrier {
    /// An epoch's barrier that takes no checkpoint.
    pub fn new(epoch: Epoch, ts_ms: i64) -> Self {
        Self {
            epoch,
            ts_ms,
            checkpoint: 0,
        }
    }

    /// The barrier that starts checkpoint `epoch`.
    pub fn checkpoint(epoch: Epoch, ts_ms: i64) -> Self {
        Self {
            epoch,
            ts_ms,
            checkpoint: epoch,
        }
    }
}

/// Where a split's reader was when it sent the barrier that follows this position on the
/// same stream: the offset it reads next (a Kafka offset, a generator shard's rows made, a
/// changelog's changes, a view's epoch) and its watermark. A checkpoint stores it so that
/// the split resumes exactly there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitPosition {
    /// The split (Kafka partition, generator shard).
    pub partition: i32,
    pub offset: i64,
    /// The split's watermark so far (event time in ns), restored with it.
    pub watermark: Option<i64>,
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
    /// A source split's position, sent right before each of its barriers.
    Position(SplitPosition),
}
