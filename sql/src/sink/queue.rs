//! `SinkQueue`: the commits a sink has yet to write, in order. They are kept in memory up to
//! a bound, and past it appended to a spill file (Arrow IPC frames) that the writer reads
//! back in order as it catches up: a slow or unreachable destination costs disk, never
//! unbounded memory, and never holds back the view or the other views of its sources.
//!
//! A sink's own dataflow (`CREATE SINK ... AS`, or FROM a source) is paced by its queue
//! instead while the writer keeps taking commits: past `PACE_BYTES` it waits for the writer
//! (and its sources with it), so a destination that is merely slower than the sources costs
//! neither disk nor memory. A writer that took nothing for `STALLED_AFTER` (its broker is
//! away) paces nothing: its commits queue, and its checkpoints go on.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::Notify;
use weir_engine::operator::Pace;
use weir_engine::{Barrier, ChangeBatch, EngineError, Result, StateSnapshot};

use super::SinkEvent;

/// Bytes of commits a sink keeps in memory before it spills (`sink.buffer.bytes`).
pub(crate) const DEFAULT_MEMORY_BYTES: usize = 64 << 20;

/// Bytes queued past which a sink's own dataflow waits for the writer (at most half the
/// memory bound): a few commits' worth, so a paced writer is never far behind its view and
/// prepares each checkpoint before its log would write it to disk.
pub(crate) const PACE_BYTES: usize = 16 << 20;

/// How long a writer takes nothing before it counts as stalled and paces nothing.
pub(crate) const STALLED_AFTER: Duration = Duration::from_secs(1);

/// The writing end, called at each commit of the view (on its dataflow's thread), and the
/// reading end, the sink's writer task.
#[derive(Clone)]
pub(crate) struct SinkQueue {
    inner: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    ready: Notify,
    /// The writer took an event.
    taken: Notify,
    memory_bytes: usize,
    /// Where it spills (created when first needed, removed once read to its end).
    path: PathBuf,
    /// Bytes waiting: in memory and in the spill file, not yet read.
    queued: Arc<AtomicU64>,
}

struct State {
    memory: VecDeque<(SinkEvent, usize)>,
    in_memory: usize,
    /// Once spilling, every new event goes to the file until it is read to its end, so the
    /// order stays that of the commits.
    spill: Option<Spill>,
    closed: bool,
    /// When the writer last took an event (or the queue was made).
    last_taken: Instant,
}

struct Spill {
    writer: BufWriter<File>,
    reader: BufReader<File>,
    /// Frames written and not yet read.
    frames: u64,
    /// The frame being encoded (its buffer kept).
    scratch: Vec<u8>,
}

impl SinkQueue {
    /// A queue that spills to `path` (an earlier spill file there is stale: a restart
    /// resends from its checkpoint), and reports the bytes it holds in `queued`.
    pub(crate) fn new(path: PathBuf, memory_bytes: usize, queued: Arc<AtomicU64>) -> Self {
        let _ = std::fs::remove_file(&path);
        Self {
            inner: Arc::new(Shared {
                state: Mutex::new(State {
                    memory: VecDeque::new(),
                    in_memory: 0,
                    spill: None,
                    closed: false,
                    last_taken: Instant::now(),
                }),
                ready: Notify::new(),
                taken: Notify::new(),
                memory_bytes,
                path,
                queued,
            }),
        }
    }

    /// Adds the next event; false once the reader is gone (or the spill file failed, which
    /// stops the sink: an event is never dropped silently).
    pub(crate) fn push(&self, event: SinkEvent) -> bool {
        let size = event.bytes();
        let mut state = self.inner.state.lock();
        if state.closed {
            return false;
        }
        if state.spill.is_none() && state.in_memory + size <= self.inner.memory_bytes {
            state.in_memory += size;
            state.memory.push_back((event, size));
        } else if let Err(e) = self.spill(&mut state, &event) {
            tracing::error!(path = %self.inner.path.display(), error = %e, "a sink cannot spill its queue; it stops");
            state.closed = true;
            return false;
        }
        self.inner.queued.fetch_add(size as u64, Ordering::Relaxed);
        drop(state);
        self.inner.ready.notify_one();
        true
    }

    fn spill(&self, state: &mut State, event: &SinkEvent) -> Result<()> {
        if state.spill.is_none() {
            let file = File::create(&self.inner.path)?;
            // Opened apart: a cloned handle would share the writer's offset.
            let reader = BufReader::new(File::open(&self.inner.path)?);
            state.spill = Some(Spill {
                writer: BufWriter::new(file),
                reader,
                frames: 0,
                scratch: Vec::new(),
            });
        }
        let spill = state.spill.as_mut().expect("invariant: opened above");
        event.write_frame(&mut spill.writer, &mut spill.scratch)?;
        spill.frames += 1;
        Ok(())
    }

    /// Whether events are still taken (the sink was not dropped, its writer did not stop).
    pub(crate) fn is_open(&self) -> bool {
        !self.inner.state.lock().closed
    }

    /// No more events: the reader gets those queued, then None.
    pub(crate) fn close(&self) {
        self.inner.state.lock().closed = true;
        self.inner.ready.notify_one();
        self.inner.taken.notify_waiters();
    }

    /// The next event in commit order; None once closed and drained.
    pub(crate) async fn pop(&self) -> Result<Option<SinkEvent>> {
        loop {
            let notified = self.inner.ready.notified();
            {
                let mut state = self.inner.state.lock();
                if let Some(event) = self.take(&mut state)? {
                    return Ok(Some(event));
                }
                if state.closed {
                    return Ok(None);
                }
            }
            notified.await;
        }
    }

    fn take(&self, state: &mut State) -> Result<Option<SinkEvent>> {
        let event = self.next(state)?;
        if event.is_some() {
            state.last_taken = Instant::now();
            self.inner.taken.notify_waiters();
        }
        Ok(event)
    }

    fn next(&self, state: &mut State) -> Result<Option<SinkEvent>> {
        if let Some((event, size)) = state.memory.pop_front() {
            state.in_memory -= size;
            self.inner.queued.fetch_sub(size as u64, Ordering::Relaxed);
            return Ok(Some(event));
        }
        let Some(spill) = state.spill.as_mut() else {
            return Ok(None);
        };
        if spill.frames == 0 {
            // Read to its end: back to memory, and the file goes.
            state.spill = None;
            let _ = std::fs::remove_file(&self.inner.path);
            return Ok(None);
        }
        spill.writer.flush()?;
        let Some((event, size)) = SinkEvent::read_frame(&mut spill.reader)? else {
            return Err(EngineError::Internal(
                "a sink's spill file ended before its last frame".into(),
            ));
        };
        spill.frames -= 1;
        self.inner.queued.fetch_sub(size, Ordering::Relaxed);
        Ok(Some(event))
    }
}

impl Shared {
    /// Whether the view should wait: the writer is behind by more than the pace and still
    /// taking commits.
    fn paces(&self, state: &State) -> bool {
        let bound = PACE_BYTES.min(self.memory_bytes / 2) as u64;
        !state.closed
            && self.queued.load(Ordering::Relaxed) > bound
            && state.last_taken.elapsed() < STALLED_AFTER
    }
}

impl Pace for SinkQueue {
    fn ready(&self) -> Option<BoxFuture<'static, ()>> {
        if !self.inner.paces(&self.inner.state.lock()) {
            return None;
        }
        let inner = Arc::clone(&self.inner);
        Some(Box::pin(async move {
            loop {
                let taken = inner.taken.notified();
                let stalls_at = {
                    let state = inner.state.lock();
                    if !inner.paces(&state) {
                        return;
                    }
                    state.last_taken + STALLED_AFTER
                };
                tokio::select! {
                    () = taken => {}
                    () = tokio::time::sleep_until(stalls_at.into()) => {}
                }
            }
        }))
    }
}

impl SinkEvent {
    /// What it holds in memory (the bound counts these).
    pub(super) fn bytes(&self) -> usize {
        match self {
            Self::Snapshot(rows, _) => rows.batch().get_array_memory_size(),
            Self::Commit(_, changes) => {
                changes
                    .as_ref()
                    .map_or(0, |c| c.batch().get_array_memory_size())
                    + size_of::<Barrier>()
            }
        }
    }

    /// Writes the event as one length-prefixed frame to `out`, through `scratch` (a buffer
    /// kept across events).
    pub(super) fn write_frame(&self, out: &mut impl Write, scratch: &mut Vec<u8>) -> Result<()> {
        scratch.clear();
        scratch.extend_from_slice(&0u64.to_le_bytes());
        self.frame_snapshot()?.append_to(scratch)?;
        let length = (scratch.len() - 8) as u64;
        scratch[..8].copy_from_slice(&length.to_le_bytes());
        out.write_all(scratch)?;
        Ok(())
    }

    /// The event as a `StateSnapshot`: its changes as a table, and the barrier (or the
    /// snapshot's time) as values.
    fn frame_snapshot(&self) -> Result<StateSnapshot> {
        let mut frame = StateSnapshot::default();
        let (kind, rows, barrier) = match self {
            Self::Snapshot(rows, ts_ms) => (0, Some(rows), Barrier::new(0, *ts_ms)),
            Self::Commit(barrier, changes) => (1, changes.as_ref(), *barrier),
        };
        frame.put_values(
            "event",
            &[
                ("kind", Some(kind)),
                ("epoch", Some(barrier.epoch as i64)),
                ("ts_ms", Some(barrier.ts_ms)),
                ("checkpoint", Some(barrier.checkpoint as i64)),
                // Counted as it was when queued (decoded, its buffers differ).
                ("bytes", Some(self.bytes() as i64)),
            ],
        )?;
        if let Some(rows) = rows {
            frame.put("changes", rows.batch().clone());
        }
        Ok(frame)
    }

    /// The next frame `write_frame` wrote to `input`: the event and the bytes it was
    /// counted as when queued; None at the end of the input (a frame cut short is corrupt).
    pub(super) fn read_frame(input: &mut impl Read) -> Result<Option<(Self, u64)>> {
        let mut len = [0u8; 8];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let mut frame = vec![0u8; u64::from_le_bytes(len) as usize];
        input
            .read_exact(&mut frame)
            .map_err(|e| EngineError::CorruptCheckpoint(format!("a sink frame: {e}")))?;
        Self::from_frame(&frame).map(Some)
    }

    /// The event and the bytes it was counted as when queued.
    fn from_frame(bytes: &[u8]) -> Result<(Self, u64)> {
        let frame = StateSnapshot::from_bytes(bytes)?;
        let value = |name: &str| -> Result<i64> {
            frame.value("event", name)?.ok_or_else(|| {
                EngineError::Internal(format!("a sink's spilled event has no {name}"))
            })
        };
        let changes = frame
            .table("changes")
            .map(|t| ChangeBatch::try_new(t.clone()))
            .transpose()?;
        let barrier = Barrier {
            epoch: value("epoch")? as u64,
            ts_ms: value("ts_ms")?,
            checkpoint: value("checkpoint")? as u64,
        };
        let event = match value("kind")? {
            0 => Self::Snapshot(
                changes.ok_or_else(|| {
                    EngineError::Internal("a spilled snapshot has no rows".into())
                })?,
                barrier.ts_ms,
            ),
            _ => Self::Commit(barrier, changes),
        };
        Ok((event, value("bytes")? as u64))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn changes(values: &[i64]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let data = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))])
            .unwrap();
        ChangeBatch::from_data(&data, 1).unwrap()
    }

    fn values(event: &SinkEvent) -> (u64, Vec<i64>) {
        let (epoch, rows) = match event {
            SinkEvent::Snapshot(rows, _) => (0, Some(rows)),
            SinkEvent::Commit(b, rows) => (b.epoch, rows.as_ref()),
        };
        let values = rows.map_or_else(Vec::new, |r| {
            let a = r
                .batch()
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            a.values().to_vec()
        });
        (epoch, values)
    }

    /// Past its memory bound the queue spills; the reader gets every event in commit
    /// order, memory and file alike, and the file goes once read.
    #[tokio::test]
    async fn events_past_the_bound_spill_and_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.spill");
        let queued = Arc::new(AtomicU64::new(0));
        let one = changes(&[0; 100]).batch().get_array_memory_size();
        let queue = SinkQueue::new(path.clone(), one * 3, Arc::clone(&queued));
        assert!(queue.push(SinkEvent::Snapshot(changes(&[-1]), 5)));
        for epoch in 1..=20 {
            let rows = changes(&vec![epoch as i64; 100]);
            assert!(queue.push(SinkEvent::Commit(Barrier::new(epoch, 0), Some(rows))));
        }
        assert!(path.exists(), "past the bound it spilled");
        assert!(queued.load(Ordering::Relaxed) > (one * 20) as u64);
        let first = queue.pop().await.unwrap().unwrap();
        assert_eq!(values(&first), (0, vec![-1]));
        for epoch in 1..=20u64 {
            let event = queue.pop().await.unwrap().unwrap();
            assert_eq!(values(&event), (epoch, vec![epoch as i64; 100]));
        }
        // Drained: the next push is in memory again, after the file is gone.
        let reader = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.pop().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!path.exists(), "the spill file is removed once read");
        assert!(queue.push(SinkEvent::Commit(Barrier::new(21, 0), None)));
        let last = reader.await.unwrap().unwrap().unwrap();
        assert_eq!(values(&last), (21, vec![]));
        queue.close();
        assert!(queue.pop().await.unwrap().is_none());
        assert_eq!(queued.load(Ordering::Relaxed), 0);
    }

    /// A writer behind by more than the pace holds its view back until it takes an event;
    /// one that took nothing for `STALLED_AFTER` holds nothing back.
    #[tokio::test]
    async fn a_writer_behind_paces_its_view_until_it_takes_or_stalls() {
        let dir = tempfile::tempdir().unwrap();
        let queued = Arc::new(AtomicU64::new(0));
        let commit = |epoch| SinkEvent::Commit(Barrier::new(epoch, 0), Some(changes(&[0; 100])));
        let one = commit(1).bytes();
        // Paces past two events (half the bound).
        let queue = SinkQueue::new(dir.path().join("s.spill"), one * 4, queued);
        assert!(queue.push(commit(1)) && queue.push(commit(2)));
        assert!(queue.ready().is_none(), "within the pace");
        assert!(queue.push(commit(3)));
        let wait = queue.ready().expect("behind by more than the pace");
        let reader = queue.clone();
        tokio::spawn(async move { reader.pop().await });
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("the writer took one: the view goes on");
        assert!(queue.push(commit(4)));
        assert!(queue.ready().is_some());
        tokio::time::sleep(STALLED_AFTER).await;
        assert!(queue.ready().is_none(), "a stalled writer paces nothing");
    }
}
