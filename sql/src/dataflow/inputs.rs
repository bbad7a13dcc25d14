//! How each kind of relation feeds a dataflow: sources start one reader thread per split,
//! tables stream their changelog, views their committed changes (snapshot first).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Weak};

use datafusion::catalog::TableProvider;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use weir_engine::connector::file::FileFormat;
use weir_engine::connector::kafka::{KafkaSplit, PartitionRange, StartupMode};
use weir_engine::connector::nexmark::NexmarkReader;
use weir_engine::connector::splits::{ChangelogSplit, DatagenSplit, FileSplit, GeneratedSplit};
use weir_engine::connector::upsert::UpsertSplit;
use weir_engine::runtime::{
    Barriers, CHANNEL_CAPACITY, Paced, SplitOutput, SplitProgress, SplitReader, SplitStart,
    WatermarkSpec, channel_stream, spawn_split, unbounded_stream,
};
use weir_engine::{ChangeBatch, Message, SplitPosition, Watermark};

use crate::dataflow::ViewTable;
use crate::dataflow::shared_readers::{MakeReader, SharedReaders};
use crate::error::{Result, SqlError};
use crate::provider::{
    DmlTable, FileEncoding, FileSource, Generator, GeneratorSource, KafkaSource, UpsertTable,
};

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
    fn spawn(
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

/// The shared readers of a source that has them (Kafka and generator sources).
pub(crate) fn shared_readers_of(provider: &dyn TableProvider) -> Option<&SharedReaders> {
    let any: &dyn std::any::Any = provider;
    any.downcast_ref::<GeneratorSource>()
        .map(GeneratorSource::shared_readers)
        .or_else(|| {
            any.downcast_ref::<KafkaSource>()
                .map(KafkaSource::shared_readers)
        })
}

/// The streaming side of a catalog relation, if it has one.
pub(crate) fn stream_input(provider: &dyn TableProvider) -> Option<&dyn StreamInput> {
    let any: &dyn std::any::Any = provider;
    None.or_else(|| {
        any.downcast_ref::<GeneratorSource>()
            .map(|p| p as &dyn StreamInput)
    })
    .or_else(|| {
        any.downcast_ref::<KafkaSource>()
            .map(|p| p as &dyn StreamInput)
    })
    .or_else(|| {
        any.downcast_ref::<FileSource>()
            .map(|p| p as &dyn StreamInput)
    })
    .or_else(|| {
        any.downcast_ref::<DmlTable>()
            .map(|p| p as &dyn StreamInput)
    })
    .or_else(|| {
        any.downcast_ref::<ViewTable>()
            .map(|p| p as &dyn StreamInput)
    })
    .or_else(|| {
        any.downcast_ref::<UpsertTable>()
            .map(|p| p as &dyn StreamInput)
    })
}

impl StreamInput for GeneratorSource {
    /// Shards of the source, as many as the cores of the dataflow that starts them;
    /// offsets are rows made. A backfill is not paced.
    fn open(&self, cx: &InputContext<'_>) -> Result<Vec<BoxStream<'static, Message>>> {
        let splits = self.shard_count(cx.parallelism.max(1) as u64);
        let reader: MakeReader<'_> = &|s, start, until, progress| {
            let (s, done) = (s as u64, start.max(0) as u64);
            let reader: Box<dyn SplitReader> = match self.generator() {
                Generator::Nexmark(o) => Box::new(NexmarkReader::resume(o, s, splits, done)),
                Generator::Datagen(o) => Box::new(DatagenSplit::resume(o.clone(), s, splits, done)),
            };
            {
                let mut p = progress.lock();
                p.next_offset = start;
                p.high_watermark = start;
            }
            let reader = GeneratedSplit::new(reader, progress);
            Ok(match (until, self.rate()) {
                (Some(end), _) => Box::new(reader.until(end)),
                (None, Some(r)) => Box::new(Paced::new(Box::new(reader), r / splits as f64)),
                (None, None) => Box::new(reader),
            })
        };
        let shards = || Ok((0..splits as i32).map(|s| (s, 0)).collect());
        self.shared_readers().open(cx, shards, reader)
    }

    /// A shard's rows are computed from their index: it resumes at any row, as long as the
    /// source is read as the shards the positions are of (a source created before its
    /// shard count was fixed takes the checkpoint's).
    fn can_resume(&self, positions: &BTreeMap<i32, SplitPosition>) -> bool {
        let shards = self.shard_count(positions.len().max(1) as u64);
        positions.is_empty()
            || (positions.len() as u64 == shards
                && positions.keys().all(|&p| p >= 0 && (p as u64) < shards))
    }
}

impl StreamInput for KafkaSource {
    fn open(&self, cx: &InputContext<'_>) -> Result<Vec<BoxStream<'static, Message>>> {
        let (config, value_schema, includes) = self.parts();
        let reader: MakeReader<'_> = &|partition, start, until, progress| {
            let range = PartitionRange {
                partition,
                start,
                end: until.unwrap_or(start),
            };
            let split = KafkaSplit::new(
                config.clone(),
                range,
                Arc::clone(value_schema),
                includes.to_vec(),
                progress,
            );
            Ok(Box::new(match until {
                Some(end) => split.until(end),
                None => split,
            }))
        };
        let partitions = || match config.partition_ranges() {
            Ok(ranges) => Ok(ranges.iter().map(|r| (r.partition, r.start)).collect()),
            // The broker is down: a restored dataflow knows its partitions and offsets, so
            // it is served from its checkpoint and reads on once the broker is back (its
            // readers retry). Views created later backfill from these offsets.
            Err(e) => match cx.resume.filter(|r| !r.is_empty()) {
                Some(resume) => {
                    tracing::warn!(source = %cx.relation, error = %e, "broker unreachable; resuming at the checkpointed offsets");
                    Ok(resume.iter().map(|(p, at)| (*p, at.offset)).collect())
                }
                None => Err(e.into()),
            },
        };
        self.shared_readers().open(cx, partitions, reader)
    }

    /// A partition resumes at its stored offset (a partition the checkpoint does not
    /// name, added since, starts where the source starts).
    fn can_resume(&self, _positions: &BTreeMap<i32, SplitPosition>) -> bool {
        true
    }
}

impl StreamInput for FileSource {
    fn open(&self, cx: &InputContext<'_>) -> Result<Vec<BoxStream<'static, Message>>> {
        let (pattern, encoding, schema) = self.parts();
        let format = match *encoding {
            FileEncoding::Json => FileFormat::Json,
            FileEncoding::Csv { header, delimiter } => FileFormat::Csv { header, delimiter },
            FileEncoding::Parquet => FileFormat::Parquet,
        };
        // Files are dealt to readers (one per core where the source was created): each
        // decodes its own.
        let splits = self.splits().unwrap_or(cx.parallelism.max(1) as u64) as usize;
        (0..splits)
            .map(|s| {
                let skip = cx
                    .resume
                    .and_then(|r| r.get(&(s as i32)))
                    .map_or(0, |p| p.offset.max(0));
                cx.spawn(s as i32, |progress| {
                    {
                        let mut p = progress.lock();
                        p.next_offset = skip;
                        p.high_watermark = skip;
                    }
                    Ok(Box::new(FileSplit::new(
                        pattern.to_string(),
                        format,
                        Arc::clone(schema),
                        (s, splits),
                        skip as u64,
                        progress,
                    )))
                })
            })
            .collect()
    }

    /// A split skips the rows it had emitted, when the source's splits are fixed (a source
    /// created before they were is derived again).
    fn can_resume(&self, positions: &BTreeMap<i32, SplitPosition>) -> bool {
        self.splits()
            .is_some_and(|splits| positions.keys().all(|&p| p >= 0 && (p as u64) < splits))
    }
}

impl StreamInput for DmlTable {
    /// The table's rows, then its changes; the position is the table's log position. A
    /// dataflow restored at a position gets the changes after it instead of the rows.
    fn open(&self, cx: &InputContext<'_>) -> Result<Vec<BoxStream<'static, Message>>> {
        let (tx, rx) = std::sync::mpsc::channel::<(u64, ChangeBatch)>();
        let first = tx.clone();
        let deliver = Box::new(move |lsn, c| tx.send((lsn, c)).is_ok());
        {
            // What goes first is taken under the store's lock: nothing missed or doubled.
            let store = self.store();
            let mut store = store.lock();
            match cx.resume.and_then(|r| r.get(&0)) {
                Some(p) => {
                    for change in store.subscribe_from(p.offset.max(0) as u64, deliver)? {
                        let _ = first.send(change);
                    }
                }
                None => {
                    let (lsn, snapshot) = store.subscribe(deliver)?;
                    let _ = first.send((lsn, ChangeBatch::from_data(&snapshot, 1)?));
                }
            }
        }
        let stream = cx.spawn(0, |progress| {
            Ok(Box::new(ChangelogSplit::new(rx, progress)))
        })?;
        Ok(vec![stream])
    }

    fn can_resume(&self, positions: &BTreeMap<i32, SplitPosition>) -> bool {
        positions
            .get(&0)
            .is_some_and(|p| self.store().lock().can_resume_from(p.offset.max(0) as u64))
    }
}

impl StreamInput for UpsertTable {
    fn open(&self, cx: &InputContext<'_>) -> Result<Vec<BoxStream<'static, Message>>> {
        // A table is all of its topic: read from the start whatever the source said.
        let mut config = self.config().clone();
        config.startup = StartupMode::Earliest;
        let schema = self.schema();
        config
            .partition_ranges()?
            .into_iter()
            .map(|range| {
                let resume = cx.resume.and_then(|r| r.get(&range.partition));
                cx.spawn(range.partition, |progress| {
                    let split = UpsertSplit::new(
                        config.clone(),
                        range,
                        Arc::clone(&schema),
                        self.format().clone(),
                        progress,
                    )?;
                    Ok(Box::new(match resume {
                        Some(at) => split.resume_at(at.offset),
                        None => split,
                    }))
                })
            })
            .collect()
    }

    fn reports_progress(&self) -> bool {
        true
    }

    /// Each partition is read from its start again (the keys' rows), sending only the
    /// changes after the checkpointed offset.
    fn can_resume(&self, _positions: &BTreeMap<i32, SplitPosition>) -> bool {
        true
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
