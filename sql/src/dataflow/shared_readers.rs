//! One reader per split of a Kafka or generator source, shared by every dataflow that reads
//! it (a source is read once however many views use it). A dataflow that starts
//! after the readers did backfills each split up to where it joined, then reads along.
//!
//! A dataflow restored from a checkpoint starts each split at its checkpointed position.
//! Restored views of one source may be at different positions (one was still backfilling):
//! the readers start at the furthest (`resume_at`), and each view backfills from its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use weir_engine::runtime::{
    CHANNEL_CAPACITY, Handover, SplitOutput, SplitProgress, SplitReader, SplitShare, SplitStart,
    channel_stream,
};
use weir_engine::{Message, SplitPosition};

use super::inputs::InputContext;
use crate::error::{Result, SqlError};

/// One split of a source: its partition number (in `source_progress`), the offset a
/// dataflow without a checkpoint starts at, and the share.
struct Split {
    partition: i32,
    origin: i64,
    share: Arc<SplitShare>,
}

/// Makes a reader of one split: (partition, start offset, end offset for a backfill,
/// progress).
pub(crate) type MakeReader<'a> =
    &'a dyn Fn(i32, i64, Option<i64>, Arc<Mutex<SplitProgress>>) -> Result<Box<dyn SplitReader>>;

/// The shared readers of one source, started by the first dataflow that reads it and
/// stopped when the last one is gone.
#[derive(Debug, Default)]
pub(crate) struct SharedReaders {
    splits: Mutex<Vec<Split>>,
    /// Where the readers start, per partition, when they start next (after a restart:
    /// the furthest position any restored view of the source has).
    resume_at: Mutex<BTreeMap<i32, SplitPosition>>,
}

impl std::fmt::Debug for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "split {} from {}", self.partition, self.origin)
    }
}

impl SharedReaders {
    /// Starts the readers at `positions` (per partition) when they start next.
    pub(crate) fn resume_at(&self, positions: BTreeMap<i32, SplitPosition>) {
        *self.resume_at.lock() = positions;
    }

    /// One stream per split for a relation of a dataflow. `splits` lists (partition,
    /// origin offset) when readers must start; `reader` makes a split's reader.
    pub(crate) fn open(
        &self,
        cx: &InputContext<'_>,
        splits: impl FnOnce() -> Result<Vec<(i32, i64)>>,
        reader: MakeReader<'_>,
    ) -> Result<Vec<BoxStream<'static, Message>>> {
        let mut current = self.splits.lock();
        if !current.is_empty()
            && current.iter().all(|s| !s.share.is_closed())
            && let Some(streams) = Self::join(&current, cx, reader)?
        {
            return Ok(streams);
        }
        // No reader runs (or the last one just stopped): start them, this dataflow first.
        let resume = std::mem::take(&mut *self.resume_at.lock());
        let fresh: Vec<(Split, SplitStart)> = splits()?
            .into_iter()
            .map(|(partition, origin)| {
                let at = resume.get(&partition);
                let start = at.map_or(origin, |p| p.offset);
                let split = Split {
                    partition,
                    origin,
                    share: SplitShare::new(start),
                };
                let watermark = at.and_then(|p| p.watermark);
                (
                    split,
                    SplitStart {
                        partition,
                        watermark,
                    },
                )
            })
            .collect();
        let shares: Vec<Split> = fresh
            .iter()
            .map(|(s, _)| Split {
                partition: s.partition,
                origin: s.origin,
                share: Arc::clone(&s.share),
            })
            .collect();
        // Joined before the readers run, so this dataflow's messages start at `start`.
        let streams = Self::join(&shares, cx, reader)?
            .ok_or_else(|| SqlError::new("XX000", "a new split share is closed"))?;
        for (split, start) in fresh {
            let offset = split.share.position();
            let progress = cx.progress(split.partition);
            let reader = reader(split.partition, offset, None, Arc::clone(&progress))?;
            let output = SplitOutput::Shared(Arc::clone(&split.share));
            cx.spawn_reader(start, reader, output, progress)?;
        }
        *current = shares;
        Ok(streams)
    }

    /// Joins the readers of `splits`, each from this dataflow's own start (its checkpointed
    /// position, else the split's origin): a backfill up to where the reader is, then the
    /// shared messages. None if a reader has stopped.
    fn join(
        splits: &[Split],
        cx: &InputContext<'_>,
        reader: MakeReader<'_>,
    ) -> Result<Option<Vec<BoxStream<'static, Message>>>> {
        let mut joined = Vec::with_capacity(splits.len());
        for s in splits {
            match s.share.join(Arc::clone(cx.read_limit)) {
                Some(j) => joined.push(j),
                None => return Ok(None),
            }
        }
        let mut streams = Vec::with_capacity(splits.len());
        for (s, j) in splits.iter().zip(joined) {
            let own = cx.resume.and_then(|r| r.get(&s.partition));
            let from = own.map_or(s.origin, |p| p.offset);
            let shared = channel_stream(j.messages);
            if j.offset == from || (own.is_none() && j.offset < from) {
                streams.push(shared);
                continue;
            }
            if j.offset < from {
                return Err(SqlError::new(
                    "XX000",
                    format!(
                        "split {} of {} is read from {}, behind the checkpointed {from}",
                        s.partition, cx.relation, j.offset
                    ),
                ));
            }
            // Backfill what the shared reader read before this dataflow joined; its
            // progress is its own (`source_progress` counts each message once).
            let progress = Arc::new(Mutex::new(SplitProgress::default()));
            let backfill = reader(s.partition, from, Some(j.offset), Arc::clone(&progress))?;
            let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
            let output = SplitOutput::Backfill {
                tx,
                read_limit: Arc::clone(cx.read_limit),
            };
            let start = SplitStart {
                partition: s.partition,
                watermark: own.and_then(|p| p.watermark),
            };
            cx.spawn_reader(start, backfill, output, progress)?;
            streams.push(Handover::new(channel_stream(rx), shared).boxed());
        }
        Ok(Some(streams))
    }
}
