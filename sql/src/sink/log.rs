//! `SinkLog`: a sink's input kept until its destination has it, so that a checkpoint never
//! waits for the destination (RisingWave calls this sink decoupling; its log store plays the
//! same part).
//!
//! The view's commits are appended, as they happen, to the log's open segment: in memory up
//! to the sink's buffer bound, on disk past it. At the first barrier of each checkpoint the
//! segment is closed and handed to the log's own thread, which reports the sink's part of
//! the checkpoint once one of two things holds:
//! - the writer has prepared the destination at that checkpoint (its state saved beside the
//!   log): the segment is not needed and is dropped; or
//! - `PREPARE_GRACE` passed first (the destination is slow or away): the segment is written
//!   under the checkpoint's number and fsynced.
//!
//! So a committed checkpoint R always finds, on disk, the newest state P ≤ R the writer
//! prepared and every commit after P up to R: restored, the destination opens with P's state
//! and the segments after P up to R are written again before the view's new commits.
//! Nothing is lost, an exactly-once destination commits nothing twice, and a writer that
//! keeps up costs no disk writes. Segments after R, and states prepared after R, are
//! discarded: the restored view sends those commits again. Once checkpoint C is committed
//! and the destination with it, the segments up to the newest state prepared by C go.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::mpsc;
use weir_engine::runtime::GraphSnapshot;
use weir_engine::{Barrier, EngineError, Epoch, Result, SplitPosition, StateSnapshot};

use super::SinkEvent;

/// How long a closed segment waits for the writer to prepare its checkpoint before it is
/// written to disk (the checkpoint waits as long, at most, for a lagging sink).
pub(crate) const PREPARE_GRACE: Duration = Duration::from_secs(1);

/// The segment being appended to once past the memory bound.
const OPEN_SEGMENT: &str = "open.log";
const SEGMENT_SUFFIX: &str = ".log";
/// A closed segment on disk before its fsync.
const PARTIAL_SUFFIX: &str = ".partial";
const PREPARED_PREFIX: &str = "prepared-";
/// The checkpoint current when the sink was created: neither the log nor the writer takes
/// part in it (the checkpoint does not wait for the sink).
const CREATED_FILE: &str = "created";

/// The appending end, owned by the view's subscription to the sink.
pub(crate) struct SinkLog {
    dir: PathBuf,
    open: Segment,
    memory_bytes: usize,
    /// The newest checkpoint whose segment was closed (or the sink's first).
    last_checkpoint: Epoch,
    closed: std_mpsc::Sender<Closed>,
    prepared: Arc<Prepared>,
    /// The frame being encoded (its buffer kept).
    scratch: Vec<u8>,
    /// Set when the sink is dropped: nothing more is written.
    stopped: Arc<AtomicBool>,
}

/// The open segment: in memory until it passes the bound, then in `OPEN_SEGMENT`.
enum Segment {
    Memory(Vec<SinkEvent>, usize),
    Disk(BufWriter<File>),
}

/// A closed segment on its way to the log's thread.
struct Closed {
    barrier: Barrier,
    /// In memory, or on disk under its partial name.
    events: Option<Vec<SinkEvent>>,
}

/// The newest checkpoint the writer prepared the destination at (its state saved).
#[derive(Default)]
pub(crate) struct Prepared {
    checkpoint: Mutex<Epoch>,
    changed: Condvar,
}

impl Prepared {
    fn set(&self, checkpoint: Epoch) {
        let mut c = self.checkpoint.lock();
        *c = (*c).max(checkpoint);
        self.changed.notify_all();
    }

    /// Whether it reaches `checkpoint` by `deadline`.
    fn wait_for(&self, checkpoint: Epoch, deadline: Instant) -> bool {
        let mut c = self.checkpoint.lock();
        while *c < checkpoint {
            if self.changed.wait_until(&mut c, deadline).timed_out() {
                return *c >= checkpoint;
            }
        }
        true
    }
}

/// What a restart finds in the log: the destination's state to open with, the segments to
/// write again, and the checkpoint after which the writer prepares.
pub(crate) struct Recovered {
    pub(crate) prepared: Option<(Epoch, StateSnapshot)>,
    pub(crate) replay: Vec<PathBuf>,
    pub(crate) last_checkpoint: Epoch,
}

impl SinkLog {
    /// A new sink's log (whatever a sink of its name left is removed), taking part in the
    /// checkpoints after `created`, keeping up to `memory_bytes` of an open segment in
    /// memory.
    pub(crate) fn create(
        dir: PathBuf,
        created: Epoch,
        memory_bytes: usize,
        report: mpsc::UnboundedSender<GraphSnapshot>,
    ) -> Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        replace(&dir.join(CREATED_FILE), created.to_string().as_bytes())?;
        Ok(Self::start(dir, created, 0, memory_bytes, report))
    }

    /// The log of a sink restored at checkpoint `restored` (whose part it has); see the
    /// module doc. `legacy` is the writer's state in a checkpoint taken before sinks had
    /// logs.
    pub(crate) fn recover(
        dir: PathBuf,
        restored: Epoch,
        legacy: Option<StateSnapshot>,
        memory_bytes: usize,
        report: mpsc::UnboundedSender<GraphSnapshot>,
    ) -> Result<(Self, Recovered)> {
        std::fs::create_dir_all(&dir)?;
        let created = std::fs::read_to_string(dir.join(CREATED_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<Epoch>().ok())
            .unwrap_or(0);
        let listed = listing(&dir)?;
        let base = listed
            .prepared
            .iter()
            .copied()
            .filter(|&p| p <= restored)
            .max();
        for &p in listed
            .prepared
            .iter()
            .filter(|&&p| base.is_none_or(|b| p != b))
        {
            std::fs::remove_file(prepared_path(&dir, p))?;
        }
        let prepared = match base {
            Some(p) => Some((
                p,
                StateSnapshot::from_bytes(&std::fs::read(prepared_path(&dir, p))?)?,
            )),
            None => legacy.map(|s| (restored, s)),
        };
        let after = prepared.as_ref().map_or(created, |(p, _)| *p);
        let mut replay = Vec::new();
        for s in listed.segments {
            let path = segment_path(&dir, s);
            if s > after && s <= restored {
                replay.push(path);
            } else {
                std::fs::remove_file(path)?;
            }
        }
        for stray in listed.other {
            std::fs::remove_file(dir.join(stray))?;
        }
        let last_checkpoint = after.max(created);
        let log = Self::start(
            dir,
            restored.max(created),
            last_checkpoint,
            memory_bytes,
            report,
        );
        Ok((
            log,
            Recovered {
                prepared,
                replay,
                last_checkpoint,
            },
        ))
    }

    fn start(
        dir: PathBuf,
        last_checkpoint: Epoch,
        prepared_at: Epoch,
        memory_bytes: usize,
        report: mpsc::UnboundedSender<GraphSnapshot>,
    ) -> Self {
        let (closed, segments) = std_mpsc::channel::<Closed>();
        let prepared = Arc::new(Prepared::default());
        prepared.set(prepared_at);
        let thread_dir = dir.clone();
        let waits = Arc::clone(&prepared);
        let stopped = Arc::new(AtomicBool::new(false));
        let stops = Arc::clone(&stopped);
        // Ends when the log is dropped (its sender with it).
        let spawned = std::thread::Builder::new()
            .name("weir-sink-log".into())
            .spawn(move || {
                for c in segments {
                    if stops.load(Ordering::Relaxed) {
                        break;
                    }
                    let checkpoint = c.barrier.checkpoint;
                    let kept = if waits.wait_for(checkpoint, Instant::now() + PREPARE_GRACE) {
                        drop_segment(&thread_dir, checkpoint)
                    } else {
                        persist(&thread_dir, checkpoint, c.events.as_deref())
                    };
                    match kept {
                        Ok(()) => {
                            let _ = report.send(part(&c.barrier));
                        }
                        // Unreported, the checkpoint is abandoned rather than committed
                        // without this segment.
                        Err(e) => {
                            tracing::error!(error = %e, "a sink's log segment is not on disk")
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "no thread for a sink's log: its checkpoints are abandoned");
        }
        Self {
            dir,
            open: Segment::Memory(Vec::new(), 0),
            memory_bytes,
            last_checkpoint,
            closed,
            prepared,
            scratch: Vec::new(),
            stopped,
        }
    }

    /// Set it, and the log writes nothing more (its sink was dropped, its directory goes).
    pub(crate) fn stopper(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stopped)
    }

    /// Where the writer records what it prepared.
    pub(crate) fn prepared(&self) -> Arc<Prepared> {
        Arc::clone(&self.prepared)
    }

    /// Appends one event; at a checkpoint's first barrier, closes the segment.
    pub(crate) fn append(&mut self, event: &SinkEvent) -> Result<()> {
        if self.stopped.load(Ordering::Relaxed) {
            return Ok(());
        }
        match &mut self.open {
            Segment::Memory(events, bytes) if *bytes + event.bytes() <= self.memory_bytes => {
                *bytes += event.bytes();
                events.push(event.clone());
            }
            Segment::Memory(events, _) => {
                let mut out = BufWriter::new(File::create(self.dir.join(OPEN_SEGMENT))?);
                for e in events.iter().chain(std::iter::once(event)) {
                    e.write_frame(&mut out, &mut self.scratch)?;
                }
                self.open = Segment::Disk(out);
            }
            Segment::Disk(out) => event.write_frame(out, &mut self.scratch)?,
        }
        let SinkEvent::Commit(barrier, _) = event else {
            return Ok(());
        };
        if barrier.checkpoint <= self.last_checkpoint {
            return Ok(());
        }
        self.last_checkpoint = barrier.checkpoint;
        let events = match std::mem::replace(&mut self.open, Segment::Memory(Vec::new(), 0)) {
            Segment::Memory(events, _) => Some(events),
            Segment::Disk(out) => {
                out.into_inner()
                    .map_err(|e| EngineError::Io(e.into_error()))?;
                std::fs::rename(
                    self.dir.join(OPEN_SEGMENT),
                    partial_path(&self.dir, barrier.checkpoint),
                )?;
                None
            }
        };
        let _ = self.closed.send(Closed {
            barrier: *barrier,
            events,
        });
        Ok(())
    }
}

/// The writer prepared the segment's checkpoint in time: what it spilled goes.
fn drop_segment(dir: &Path, checkpoint: Epoch) -> Result<()> {
    match std::fs::remove_file(partial_path(dir, checkpoint)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Writes a closed segment (or completes its spilled file) under its checkpoint's number,
/// on disk before it returns.
fn persist(dir: &Path, checkpoint: Epoch, events: Option<&[SinkEvent]>) -> Result<()> {
    let partial = partial_path(dir, checkpoint);
    let file = match events {
        Some(events) => {
            let mut out = BufWriter::new(File::create(&partial)?);
            let mut scratch = Vec::new();
            for e in events {
                e.write_frame(&mut out, &mut scratch)?;
            }
            out.into_inner()
                .map_err(|e| EngineError::Io(e.into_error()))?
        }
        None => File::open(&partial)?,
    };
    file.sync_all()?;
    std::fs::rename(&partial, segment_path(dir, checkpoint))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// The writer's end: what it prepared, and the log it may drop once that is committed.
pub(crate) struct WriterRecord {
    dir: PathBuf,
    prepared: Vec<Epoch>,
    progress: Arc<Prepared>,
}

impl WriterRecord {
    pub(crate) fn new(dir: PathBuf, restored: Option<Epoch>, progress: Arc<Prepared>) -> Self {
        Self {
            dir,
            prepared: restored.into_iter().collect(),
            progress,
        }
    }

    /// Saves the destination's state prepared at checkpoint `checkpoint`; the log then
    /// needs nothing up to it.
    pub(crate) fn prepared(&mut self, checkpoint: Epoch, state: &StateSnapshot) -> Result<()> {
        replace(&prepared_path(&self.dir, checkpoint), &state.to_bytes()?)?;
        self.prepared.push(checkpoint);
        self.progress.set(checkpoint);
        Ok(())
    }

    /// Checkpoint `committed` is committed and the destination with it: the segments up to
    /// the newest state prepared by then go, and the states before that one.
    pub(crate) fn committed(&mut self, committed: Epoch) -> Result<()> {
        let Some(upto) = self
            .prepared
            .iter()
            .copied()
            .filter(|&p| p <= committed)
            .max()
        else {
            return Ok(());
        };
        for s in listing(&self.dir)?
            .segments
            .into_iter()
            .filter(|&s| s <= upto)
        {
            std::fs::remove_file(segment_path(&self.dir, s))?;
        }
        for p in self.prepared.iter().filter(|&&p| p < upto) {
            std::fs::remove_file(prepared_path(&self.dir, *p))?;
        }
        self.prepared.retain(|&p| p >= upto);
        Ok(())
    }
}

/// The events of a closed segment, in order.
pub(crate) fn read_segment(path: &Path) -> Result<Vec<SinkEvent>> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut events = Vec::new();
    let in_path = |e| match e {
        EngineError::CorruptCheckpoint(m) => {
            EngineError::CorruptCheckpoint(format!("sink log {}: {m}", path.display()))
        }
        e => e,
    };
    while let Some((event, _)) = SinkEvent::read_frame(&mut reader).map_err(in_path)? {
        events.push(event);
    }
    Ok(events)
}

/// The sink's part of a checkpoint: the epoch its log holds up to (its state is in the log
/// directory, not in the checkpoint).
fn part(barrier: &Barrier) -> GraphSnapshot {
    GraphSnapshot {
        checkpoint: barrier.checkpoint,
        epoch: barrier.epoch,
        task: 0,
        nodes: Vec::new(),
        positions: vec![(
            0,
            SplitPosition {
                partition: 0,
                offset: barrier.epoch as i64,
                watermark: None,
            },
        )],
    }
}

fn segment_path(dir: &Path, checkpoint: Epoch) -> PathBuf {
    dir.join(format!("{checkpoint:020}{SEGMENT_SUFFIX}"))
}

fn partial_path(dir: &Path, checkpoint: Epoch) -> PathBuf {
    dir.join(format!("{checkpoint:020}{PARTIAL_SUFFIX}"))
}

fn prepared_path(dir: &Path, checkpoint: Epoch) -> PathBuf {
    dir.join(format!("{PREPARED_PREFIX}{checkpoint:020}"))
}

/// What a log directory holds.
struct Listing {
    /// Closed segments on disk, by checkpoint, ascending.
    segments: Vec<Epoch>,
    /// Prepared states, by checkpoint, ascending.
    prepared: Vec<Epoch>,
    /// Open, partial and temporary files: left by a crash, never needed.
    other: Vec<String>,
}

fn listing(dir: &Path) -> Result<Listing> {
    let mut listed = Listing {
        segments: Vec::new(),
        prepared: Vec::new(),
        other: Vec::new(),
    };
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(c) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .and_then(|n| n.parse::<Epoch>().ok())
        {
            listed.segments.push(c);
        } else if let Some(c) = name
            .strip_prefix(PREPARED_PREFIX)
            .and_then(|n| n.parse::<Epoch>().ok())
        {
            listed.prepared.push(c);
        } else if name != CREATED_FILE {
            listed.other.push(name);
        }
    }
    listed.segments.sort_unstable();
    listed.prepared.sort_unstable();
    Ok(listed)
}

/// `write_private`: a temporary file, fsync, rename, fsync of the directory.
fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::catalog::write_private(path, bytes)
        .map_err(|e| EngineError::Io(std::io::Error::other(e.to_string())))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    use weir_engine::ChangeBatch;

    use super::*;

    fn commit(epoch: Epoch, checkpoint: Epoch) -> SinkEvent {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let data =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![epoch as i64]))])
                .unwrap();
        let barrier = Barrier {
            epoch,
            ts_ms: 0,
            checkpoint,
        };
        SinkEvent::Commit(barrier, Some(ChangeBatch::from_data(&data, 1).unwrap()))
    }

    fn epochs(paths: &[PathBuf]) -> Vec<Epoch> {
        paths
            .iter()
            .flat_map(|p| read_segment(p).unwrap())
            .map(|e| match e {
                SinkEvent::Commit(b, _) => b.epoch,
                SinkEvent::Snapshot(..) => 0,
            })
            .collect()
    }

    fn state(n: i64) -> StateSnapshot {
        let mut s = StateSnapshot::default();
        s.put_values("writer", &[("n", Some(n))]).unwrap();
        s
    }

    /// Appends epochs 1..=7 with checkpoints started at epochs 2, 4 and 6 (the first
    /// barrier of each carries it): segments 2, 4 and 6 close, epoch 7 stays open. The
    /// writer prepares checkpoint 2 (only) in time.
    fn appended(
        dir: &Path,
        memory_bytes: usize,
    ) -> (WriterRecord, mpsc::UnboundedReceiver<GraphSnapshot>) {
        let (report, reports) = mpsc::unbounded_channel();
        let mut log = SinkLog::create(dir.to_path_buf(), 0, memory_bytes, report).unwrap();
        let mut record = WriterRecord::new(dir.to_path_buf(), None, log.prepared());
        let checkpoints = [0, 0, 2, 2, 4, 4, 6, 6];
        for epoch in 1..=7 {
            log.append(&commit(epoch, checkpoints[epoch as usize]))
                .unwrap();
            if epoch == 2 {
                record.prepared(2, &state(2)).unwrap();
            }
        }
        (record, reports)
    }

    /// Each closed segment is reported: the one whose checkpoint the writer prepared in
    /// time without reaching disk, the others once on disk. A restart at checkpoint 4 opens
    /// the destination with its state prepared at 2, replays what followed up to 4, and
    /// drops what came after 4 (the view sends it again).
    #[tokio::test]
    async fn a_restart_replays_what_followed_the_newest_prepared_state() {
        for memory_bytes in [1, 1 << 20] {
            let dir = tempfile::tempdir().unwrap();
            let (mut record, mut reports) = appended(dir.path(), memory_bytes);
            for (checkpoint, epoch) in [(2, 2), (4, 4), (6, 6)] {
                let part = reports.recv().await.unwrap();
                assert_eq!((part.checkpoint, part.epoch), (checkpoint, epoch));
            }
            assert_eq!(listing(dir.path()).unwrap().segments, vec![4, 6]);
            record.prepared(6, &state(6)).unwrap();
            let (report, _reports) = mpsc::unbounded_channel();
            let (_, recovered) =
                SinkLog::recover(dir.path().to_path_buf(), 4, None, memory_bytes, report).unwrap();
            let (p, s) = recovered.prepared.unwrap();
            assert_eq!((p, s), (2, state(2)));
            assert_eq!(epochs(&recovered.replay), vec![3, 4]);
            assert_eq!(recovered.last_checkpoint, 2);
            let listed = listing(dir.path()).unwrap();
            assert_eq!((listed.segments, listed.prepared), (vec![4], vec![2]));
            assert!(listed.other.is_empty(), "{:?}", listed.other);
        }
    }

    /// A destination that had prepared nothing by the checkpoint replays the log from the
    /// sink's start; once checkpoint 5 is committed with states prepared at 2 and 4, the
    /// segments up to 4 and the state of 2 go.
    #[tokio::test]
    async fn the_log_is_kept_until_the_destination_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (report, mut reports) = mpsc::unbounded_channel();
        let mut log = SinkLog::create(dir.path().to_path_buf(), 0, 1 << 20, report).unwrap();
        let checkpoints = [0, 0, 2, 2, 4, 4, 6, 6];
        for epoch in 1..=7 {
            log.append(&commit(epoch, checkpoints[epoch as usize]))
                .unwrap();
        }
        for _ in 0..3 {
            reports.recv().await.unwrap();
        }
        let (report, _r) = mpsc::unbounded_channel();
        let (log, recovered) =
            SinkLog::recover(dir.path().to_path_buf(), 6, None, 1 << 20, report.clone()).unwrap();
        assert!(recovered.prepared.is_none());
        assert_eq!(epochs(&recovered.replay), vec![1, 2, 3, 4, 5, 6]);
        let mut record = WriterRecord::new(dir.path().to_path_buf(), None, log.prepared());
        record.prepared(2, &state(2)).unwrap();
        record.prepared(4, &state(4)).unwrap();
        record.committed(5).unwrap();
        let listed = listing(dir.path()).unwrap();
        assert_eq!((listed.segments, listed.prepared), (vec![6], vec![4]));
        let (_, recovered) =
            SinkLog::recover(dir.path().to_path_buf(), 6, None, 1 << 20, report).unwrap();
        assert_eq!(recovered.prepared.unwrap().0, 4);
        assert_eq!(epochs(&recovered.replay), vec![5, 6]);
    }
}
