//! Sinks: a view's committed changes leave weir. `SinkWriter` is what every destination
//! implements: `KafkaSink` (at-least-once messages encoded by `SinkEncoder`),
//! `TransactionalKafkaSink` (exactly-once, through Kafka transactions) and `FileSink`
//! (Parquet files, exactly-once).

mod encode;
mod file;
mod kafka;
mod transactional;

use async_trait::async_trait;

pub use encode::{SinkEncoder, SinkFormat, SinkMessage, SinkMessages};
pub use file::{DEFAULT_MAX_FILE_BYTES, FileSink, FileSinkConfig};
pub use kafka::{KafkaSink, KafkaSinkConfig, MAX_IN_FLIGHT, PRODUCER_DEFAULTS, SinkProgress};
pub use transactional::{CRASH_BEFORE_COMMIT, TransactionalKafkaSink};

use crate::{Barrier, ChangeBatch, Epoch, Result, StateSnapshot};

/// A sink's destination, driven by one writer task in commit order. Checkpoints tie it to
/// the view it writes: at a checkpoint's first barrier the writer calls `prepare` and keeps
/// the state it returns; once the checkpoint is committed, `commit`. After a crash the
/// destination is opened again with the newest state it prepared by the checkpoint
/// restored, and gets the view's changes from that state's epoch on (the caller keeps
/// them until the destination commits).
#[async_trait]
pub trait SinkWriter: Send {
    /// Writes one commit's changes, or the view's rows when the sink starts (`snapshot`);
    /// `ts_ms` is the commit's time.
    async fn write(&mut self, changes: &ChangeBatch, ts_ms: i64, snapshot: bool) -> Result<()>;

    /// Makes everything written so far durable, as part of checkpoint `barrier.checkpoint`
    /// (visible already for an at-least-once sink, not until `commit` for an exactly-once
    /// one). Returns what the checkpoint keeps for recovery.
    async fn prepare(&mut self, barrier: &Barrier) -> Result<StateSnapshot>;

    /// Checkpoint `checkpoint` is committed: what was prepared for it, and for any earlier
    /// one not yet committed, becomes visible.
    async fn commit(&mut self, checkpoint: Epoch) -> Result<()>;
}
