//! One reader per split of a Kafka or generator source, shared by every dataflow that reads
//! it (SPEC §2: a source is read once however many views use it). A dataflow that starts
//! after the readers did backfills each split up to where it joined, then reads along.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use weir_engine::Message;
use weir_engine::runtime::{
    CHANNEL_CAPACITY, Handover, SplitOutput, SplitProgress, SplitReader, SplitShare, channel_stream,
};

use super::inputs::InputContext;
use crate::error::Result;

/// One split of a source: its partition number (in `source_progress`), the offset its
/// shared reader started at, and the share.
struct Split {
    partition: i32,
    start: i64,
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
}

impl std::fmt::Debug for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "split {} from {}", self.partition, self.start)
    }
}

impl SharedReaders {
    /// One stream per split for a relation of a dataflow. `splits` lists (partition,
    /// start offset) when readers must start; `reader` makes a split's reader.
    pub(crate) fn open(
        &self,
        cx: &InputContext<'_>,
        splits: impl FnOnce() -> Result<Vec<(i32, i64)>>,
        reader: MakeReader<'_>,
    ) -> Result<Vec<BoxStream<'static, Message>>> {
        let mut current = self.splits.lock();
        if let Some(streams) = Self::join(&current, cx, reader)? {
            return Ok(streams);
        }
        // No reader runs (or the last one just stopped): start them, this dataflow first.
        let fresh: Vec<Split> = splits()?
            .into_iter()
            .map(|(partition, start)| Split {
                partition,
                start,
                share: SplitShare::new(start),
            })
            .collect();
        let mut streams = Vec::with_capacity(fresh.len());
        for split in &fresh {
            let joined = split
                .share
                .join(Arc::clone(cx.read_limit))
                .expect("invariant: a new share is open");
            streams.push(channel_stream(joined.messages));
            let progress = cx.progress(split.partition);
            let reader = reader(split.partition, split.start, None, Arc::clone(&progress))?;
            let output = SplitOutput::Shared(Arc::clone(&split.share));
            cx.spawn_reader(split.partition, reader, output, progress)?;
        }
        *current = fresh;
        Ok(streams)
    }

    /// Joins the running readers (None if there are none, or they have stopped).
    fn join(
        splits: &[Split],
        cx: &InputContext<'_>,
        reader: MakeReader<'_>,
    ) -> Result<Option<Vec<BoxStream<'static, Message>>>> {
        if splits.is_empty() || splits.iter().any(|s| s.share.is_closed()) {
            return Ok(None);
        }
        let mut joined = Vec::with_capacity(splits.len());
        for s in splits {
            match s.share.join(Arc::clone(cx.read_limit)) {
                Some(j) => joined.push(j),
                None => return Ok(None),
            }
        }
        let mut streams = Vec::with_capacity(splits.len());
        for (s, j) in splits.iter().zip(joined) {
            let shared = channel_stream(j.messages);
            if j.offset <= s.start {
                streams.push(shared);
                continue;
            }
            // Backfill what the shared reader read before this dataflow joined; its
            // progress is its own (`source_progress` counts each message once).
            let progress = Arc::new(Mutex::new(SplitProgress::default()));
            let backfill = reader(s.partition, s.start, Some(j.offset), Arc::clone(&progress))?;
            let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
            let output = SplitOutput::Backfill {
                tx,
                read_limit: Arc::clone(cx.read_limit),
            };
            cx.spawn_reader(s.partition, backfill, output, progress)?;
            streams.push(Handover::new(channel_stream(rx), shared).boxed());
        }
        Ok(Some(streams))
    }
}
