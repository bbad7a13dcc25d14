//! A source split (a Kafka partition, a generator shard, a file list, a table changelog)
//! read on its own thread into a bounded channel, with barriers and watermarks interleaved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray};
use arrow::compute::{cast, max};
use arrow::datatypes::{DataType, TimeUnit};
use datafusion_physical_expr::PhysicalExpr;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::message::{Barrier, Message, Watermark};
use crate::{ChangeBatch, EngineError, Result};

/// What one read gave.
#[derive(Debug)]
pub enum ReadResult {
    /// Rows to insert.
    Rows(RecordBatch),
    /// Changes (inserts and retractions), e.g. from a table's changelog.
    Changes(ChangeBatch),
    /// Nothing right now; the reader already waited a little.
    Idle,
    /// A bounded split is exhausted.
    End,
}

/// Reads one split. Blocking calls are fine: each split has its own thread.
pub trait SplitReader: Send + 'static {
    fn read(&mut self, max_rows: usize) -> Result<ReadResult>;

    /// What is already accepted and buffered, without waiting; called before a barrier is
    /// forwarded so that it follows everything accepted before it was started.
    fn read_ready(&mut self, _max_rows: usize) -> Result<Option<ReadResult>> {
        Ok(None)
    }
}

/// A split's progress, shown in `weir_catalog.source_progress`.
#[derive(Debug, Default, Clone)]
pub struct SplitProgress {
    pub next_offset: i64,
    pub high_watermark: i64,
    /// Event time in ns; None until the first watermark.
    pub watermark: Option<i64>,
    pub rows: u64,
    pub bytes: u64,
    pub parse_errors: u64,
    pub late_rows: u64,
    pub last_error: Option<String>,
}

/// How a split derives its watermark: the maximum of `expr` over rows seen (e.g.
/// `date_time - INTERVAL '5' SECOND`), and when a silent split stops holding others back.
#[derive(Debug, Clone)]
pub struct WatermarkSpec {
    pub expr: Arc<dyn PhysicalExpr>,
    pub idle_timeout: Duration,
}

impl WatermarkSpec {
    /// The largest watermark expression value in `rows`, in ns.
    pub fn max_of(&self, rows: &RecordBatch) -> Result<Option<i64>> {
        let values = self
            .expr
            .evaluate(rows)
            .and_then(|v| v.into_array(rows.num_rows()))
            .map_err(|e| EngineError::Config(e.to_string()))?;
        let ns = cast(&values, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
        let ns = ns
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .ok_or_else(|| EngineError::Config("watermark must be a timestamp".into()))?;
        Ok(if ns.null_count() == ns.len() {
            None
        } else {
            max(ns)
        })
    }
}

/// Rows per read.
const BATCH_ROWS: usize = 8192;

/// The state of one split's reading thread.
struct SplitLoop {
    name: String,
    watermark: Option<WatermarkSpec>,
    tx: mpsc::Sender<Message>,
    progress: Arc<Mutex<SplitProgress>>,
    max_wm: Option<i64>,
    last_rows: Instant,
    idle_sent: bool,
}

/// Whether the thread goes on (false: the dataflow is gone).
type Go = bool;

impl SplitLoop {
    fn send(&self, m: Message) -> Go {
        self.tx.blocking_send(m).is_ok()
    }

    fn handle(&mut self, read: ReadResult, barriers: &mut watch::Receiver<Barrier>) -> Go {
        let (change, rows) = match read {
            ReadResult::Rows(rows) => match ChangeBatch::from_data(&rows, 1) {
                Ok(c) => (c, rows),
                Err(e) => {
                    self.progress.lock().last_error = Some(e.to_string());
                    return true;
                }
            },
            ReadResult::Changes(c) => {
                let rows = c.data();
                (c, rows)
            }
            ReadResult::Idle => {
                if let Some(spec) = &self.watermark
                    && !self.idle_sent
                    && self.last_rows.elapsed() >= spec.idle_timeout
                {
                    self.idle_sent = true;
                    return self.send(Message::Watermark(Watermark::Idle));
                }
                return !self.tx.is_closed();
            }
            ReadResult::End => {
                // A finished split holds no one back; then it only forwards barriers.
                let end = if self.watermark.is_some() {
                    Watermark::EventTime(i64::MAX)
                } else {
                    Watermark::Idle
                };
                if !self.send(Message::Watermark(end)) {
                    return false;
                }
                while futures::executor::block_on(barriers.changed()).is_ok() {
                    let b = *barriers.borrow_and_update();
                    if !self.send(Message::Barrier(b)) {
                        return false;
                    }
                }
                return false;
            }
        };
        self.last_rows = Instant::now();
        let new_wm = match self.watermark.as_ref().map(|spec| spec.max_of(&rows)) {
            Some(Ok(Some(w))) if self.max_wm.is_none_or(|m| w > m) || self.idle_sent => {
                let w = self.max_wm.map_or(w, |m| m.max(w));
                self.max_wm = Some(w);
                self.idle_sent = false;
                Some(w)
            }
            Some(Err(e)) => {
                self.progress.lock().last_error = Some(e.to_string());
                None
            }
            _ => None,
        };
        if !self.send(Message::Data(change)) {
            return false;
        }
        match new_wm {
            Some(w) => {
                self.progress.lock().watermark = Some(w);
                self.send(Message::Watermark(Watermark::EventTime(w)))
            }
            None => true,
        }
    }
}

/// Reads `reader` on a new thread until the dataflow drops its end of `tx`.
pub fn spawn_split(
    name: String,
    mut reader: Box<dyn SplitReader>,
    watermark: Option<WatermarkSpec>,
    mut barriers: watch::Receiver<Barrier>,
    tx: mpsc::Sender<Message>,
    progress: Arc<Mutex<SplitProgress>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("weir-split-{name}"))
        .spawn(move || {
            barriers.mark_unchanged();
            let mut split = SplitLoop {
                name,
                watermark,
                tx,
                progress,
                max_wm: None,
                last_rows: Instant::now(),
                idle_sent: false,
            };
            if split.watermark.is_none() && !split.send(Message::Watermark(Watermark::Idle)) {
                return;
            }
            let mut backoff = Duration::from_millis(100);
            loop {
                if barriers.has_changed().unwrap_or(false) {
                    // Everything accepted before the barrier goes ahead of it (FLUSH relies on it).
                    loop {
                        match reader.read_ready(BATCH_ROWS) {
                            Ok(Some(r)) => {
                                if !split.handle(r, &mut barriers) {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                split.progress.lock().last_error = Some(e.to_string());
                                break;
                            }
                        }
                    }
                    let b = *barriers.borrow_and_update();
                    if !split.send(Message::Barrier(b)) {
                        return;
                    }
                }
                match reader.read(BATCH_ROWS) {
                    Ok(r) => {
                        backoff = Duration::from_millis(100);
                        if !split.handle(r, &mut barriers) {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(split = %split.name, error = %e, "read failed; retrying");
                        split.progress.lock().last_error = Some(e.to_string());
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        })
}
