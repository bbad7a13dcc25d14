//! How each kind of relation feeds a dataflow: sources start one reader thread per split,
//! tables stream their changelog, views their committed changes (snapshot first).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Weak};

use futures::stream::BoxStream;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use weir_engine::runtime::{
    Barriers, CHANNEL_CAPACITY, SplitOutput, SplitProgress, SplitReader, SplitStart, WatermarkSpec,
    channel_stream, spawn_split, unbounded_stream,
};
use weir_engine::{ChangeBatch, Message, SplitPosition, Watermark};

use crate::catalog::CatalogRelation;
use crate::dataflow::ViewTable;
use crate::error::{Result, SqlError};

/// A source, a partition, and the progress of a reader of it (gone with its dataflow).
type ProgressEntry = (String, i32, Weak<Mutex<SplitProgress>>);

/// The splits a dataflow is reading, for `weir_catalog.source_progress`.
#[derive(Debug, Default)]
pub(crate) struct ProgressRegistry {
    entries: Mutex<Vec<ProgressEntry>>,
}

impl ProgressRegistry {
    fn register(&self, source: &str, partition: i32) -> Arc<Mutex<SplitProgress>> {
        let p = Arc::new(Mutex::new(SplitProgress::default()));
        let mut entries = self.entries.lock();
        entries.retain(|(.., w)| w.strong_count() > 0);
        entries.push((source.to_string(), partition, Arc::downgrade(&p)));
        p
    }

    /// One row per (source, partition) being read, oldest reader first.
    pub(crate) fn snapshot(&self) -> Vec<(String, i32, SplitProgress)> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out: Vec<_> = self
            .entries
            .lock()
            .iter()
            .filter_map(|(s, p, w)| Some((s.clone(), *p, w.upgrade()?.lock().clone())))
            .filter(|(s, p, _)| seen.insert((s.clone(), *p)))
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }
}

/// What a relation needs to start feeding a dataflow.
pub(crate) struct InputContext<'a> {
    pub(crate) relation: &'a str,
    pub(crate) barriers: &'a Barriers,
    pub(crate) watermark: Option<WatermarkSpec>,
    pub(crate) parallelism: usize,
    /// Where sources report their splits' progress (None for tables and views).
    pub(crate) progress: Option<&'a ProgressRegistry>,
    /// The event time the relation's splits may read up to (watermark alignment).
    pub(crate) read_limit: &'a Arc<AtomicI64>,
    /// Where each split (by partition) resumes, when the dataflow is restored from a
    /// checkpoint (`StreamInput::can_resume` said it can).
    pub(crate) resume: Option<&'a BTreeMap<i32, SplitPosition>>,
}

impl InputContext<'_> {
    /// Where a reader of `partition` reports its progress (`source_progress` for sources).
    pub(crate) fn progress(&self, partition: i32) -> Arc<Mutex<SplitProgress>> {
        match self.progress {
            Some(registry) => registry.register(self.relation, partition),
            None => Arc::new(Mutex::new(SplitProgress::default())),
        }
    }

    /// Starts a reader thread for one split that sends to `output`.
    pub(crate) fn spawn_reader(
        &self,
        start: SplitStart,
        reader: Box<dyn SplitReader>,
        output: SplitOutput,
        progress: Arc<Mutex<SplitProgress>>,
    ) -> Result<()> {
        spawn_split(
            format!("{}-{}", self.relation, start.partition),
            start,
            reader,
            self.watermark.clone(),
            self.barriers.subscribe(),
            output,
            progress,
        )
        .map_err(|e| SqlError::new("53000", format!("cannot start a reader thread: {e}")))?;
        Ok(())
    }

    /// Starts a reader thread for one split of this dataflow alone; returns its stream.
    pub(crate) fn spawn(
        &self,
        partition: i32,
        reader: impl FnOnce(Arc<Mutex<SplitProgress>>) -> Result<Box<dyn SplitReader>>,
    ) -> Result<BoxStream<'static, Message>> {
        let progress = self.progress(partition);
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let output = SplitOutput::Channel {
            tx,
            read_limit: Arc::clone(self.read_limit),
        };
        let start = SplitStart {
            partition,
            watermark: self
                .resume
                .and_then(|r| r.get(&partition))
                .and_then(|p| p.watermark),
        };
        self.spawn_reader(start, reader(Arc::clone(&progress))?, output, progress)?;
        Ok(channel_stream(rx))
    }
}

/// A relation a dataflow can read continuously.
pub(crate) trait StreamInput {
    /// Starts reading: one stream per split, each with barriers and watermarks (and each
    /// barrier preceded by the split's position), from `cx.resume` when given.
    fn open(&self, cx: &InputContext<'_>) -> Result<Vec<BoxStream<'static, Message>>>;

    /// Whether its splits report in `weir_catalog.source_progress` though it is a table
    /// (sources always do): a table read from Kafka has offsets, lag and parse errors.
    fn reports_progress(&self) -> bool {
        false
    }

    /// Whether `open` can resume its splits at `positions` (a checkpoint's), exactly.
    fn can_resume(&self, _positions: &BTreeMap<i32, SplitPosition>) -> bool {
        false
    }
}

impl StreamInput for ViewTable {
    /// The view's rows as of now, then each epoch's changes; the position is the epoch.
    fn open(&self, cx: &InputContext<'_>) -> Result<Vec<BoxStream<'static, Message>>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let view = self.view();
        let mut view = view.lock();
        let snapshot = view.subscribe(Box::new(move |event| {
            use weir_engine::operator::ViewEvent;
            match event {
                ViewEvent::Commit { barrier, changes } => {
                    let position = SplitPosition {
                        partition: 0,
                        offset: barrier.epoch as i64,
                        watermark: None,
                    };
                    changes.is_none_or(|c| tx.send(Message::Data(c.clone())).is_ok())
                        && tx.send(Message::Position(position)).is_ok()
                        && tx.send(Message::Barrier(*barrier)).is_ok()
                }
                ViewEvent::Watermark(w) => tx.send(Message::Watermark(*w)).is_ok(),
            }
        }))?;
        // Chained views are in-process edges: unbounded, so an upstream commit never waits.
        let (first_tx, first_rx) = mpsc::unbounded_channel();
        // A dataflow restored at the view's epoch has its rows in its state already.
        let resumed = cx.resume.is_some();
        if snapshot.num_rows() > 0 && !resumed {
            let _ = first_tx.send(Message::Data(ChangeBatch::from_data(&snapshot, 1)?));
        }
        let _ = first_tx.send(Message::Watermark(
            view.watermark().unwrap_or(Watermark::Idle),
        ));
        drop(first_tx);
        use futures::StreamExt;
        Ok(vec![
            unbounded_stream(first_rx)
                .chain(unbounded_stream(rx))
                .boxed(),
        ])
    }

    /// Only at the epoch the view itself is at (both restored from one checkpoint, and
    /// nothing committed since: dataflows start after every view is restored).
    fn can_resume(&self, positions: &BTreeMap<i32, SplitPosition>) -> bool {
        positions
            .get(&0)
            .is_some_and(|p| p.offset == self.view().lock().epoch() as i64)
    }
}

impl CatalogRelation for ViewTable {
    fn stream_input(&self) -> Option<&dyn StreamInput> {
        Some(self)
    }

    fn inserts_only(&self) -> bool {
        self.append_only()
    }

    fn as_view(&self) -> Option<&ViewTable> {
        Some(self)
    }
}
