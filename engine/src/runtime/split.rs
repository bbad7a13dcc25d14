//! A source split (a Kafka partition, a generator shard, a file list, a table changelog)
//! read on its own thread into a bounded channel, with barriers and watermarks interleaved.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, RecordBatch, TimestampNanosecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use datafusion_common::ScalarValue;
use datafusion_expr::Operator;
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::expressions::{BinaryExpr, Column, Literal};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use super::shared::{self, SplitShare, Subscriber};
use crate::message::{Barrier, Message, SplitPosition, Watermark};
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
    /// Rows delivered to the dataflow (malformed messages excluded).
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
    /// The event-time column the watermark is declared on.
    pub column: usize,
    pub expr: Arc<dyn PhysicalExpr>,
    pub idle_timeout: Duration,
}

fn as_ns(values: &ArrayRef) -> Result<TimestampNanosecondArray> {
    let ns = cast(values, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
    ns.as_any()
        .downcast_ref::<TimestampNanosecondArray>()
        .cloned()
        .ok_or_else(|| EngineError::InvalidParameter("watermark must be a timestamp".into()))
}

/// The offset in ns when `expr` is `column - INTERVAL '..'` without months: the common
/// watermark, which then costs one subtraction per row instead of a calendar computation.
fn constant_delay_ns(expr: &Arc<dyn PhysicalExpr>, column: usize) -> Option<i64> {
    let binary = expr.downcast_ref::<BinaryExpr>()?;
    let col = binary.left().downcast_ref::<Column>()?;
    let lit = binary.right().downcast_ref::<Literal>()?;
    if *binary.op() != Operator::Minus || col.index() != column {
        return None;
    }
    match lit.value() {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i64::from(i.days) * 86_400_000_000_000 + i.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Some((i64::from(i.days) * 86_400_000 + i64::from(i.milliseconds)) * 1_000_000)
        }
        _ => None,
    }
}

impl WatermarkSpec {
    /// Per row: the watermark expression's value and the event time, in ns.
    fn evaluate(
        &self,
        rows: &RecordBatch,
    ) -> Result<(TimestampNanosecondArray, TimestampNanosecondArray)> {
        let time = as_ns(rows.column(self.column))?;
        if let Some(delay) = constant_delay_ns(&self.expr, self.column) {
            let wm = arrow::compute::kernels::arity::unary(&time, |t: i64| t.saturating_sub(delay));
            return Ok((wm, time));
        }
        let values = self
            .expr
            .evaluate(rows)
            .and_then(|v| v.into_array(rows.num_rows()))
            .map_err(|e| EngineError::InvalidParameter(e.to_string()))?;
        Ok((as_ns(&values)?, time))
    }
}

/// Where a batch must be cut so that rows behave as if they arrived one by one: before a
/// row whose event time is behind the watermark of the rows ahead of it, that watermark
/// goes first, unless it went already (`current`, the split's watermark before the batch,
/// or the last cut's): a run of late rows is one piece, not a piece per row (a file read
/// after another of the same times was cut into one-row batches, at 1/10 of the rate).
/// Returns (end of piece, watermark to send after it) and the late-row count.
fn cut_points(
    wm: &TimestampNanosecondArray,
    time: &TimestampNanosecondArray,
    mut current: Option<i64>,
) -> (Vec<(usize, Option<i64>)>, u64) {
    let (mut cuts, mut late) = (Vec::new(), 0);
    let mut sent = current;
    for i in 0..wm.len() {
        if let Some(w) = current
            && time.is_valid(i)
            && time.value(i) < w
        {
            late += 1;
            if sent != current {
                cuts.push((i, current));
                sent = current;
            }
        }
        if wm.is_valid(i) {
            current = Some(current.map_or(wm.value(i), |c| c.max(wm.value(i))));
        }
    }
    cuts.push((wm.len(), current));
    (cuts, late)
}

/// Rows per read.
const BATCH_ROWS: usize = 8192;

/// Where a split's messages go.
pub enum SplitOutput {
    /// One dataflow input; `read_limit` is the event time the split may read up to
    /// (watermark alignment; i64::MAX: no limit).
    Channel {
        tx: mpsc::Sender<Message>,
        read_limit: Arc<AtomicI64>,
    },
    /// A late subscriber's backfill of a shared split: as `Channel`, but the reader's
    /// end is only where the subscriber joined, so the channel just closes there.
    Backfill {
        tx: mpsc::Sender<Message>,
        read_limit: Arc<AtomicI64>,
    },
    /// Every subscriber of a shared split.
    Shared(Arc<SplitShare>),
}

/// `SplitOutput` as the thread holds it: a shared split's subscribers as of the last read.
enum Out {
    Channel {
        tx: mpsc::Sender<Message>,
        read_limit: Arc<AtomicI64>,
        backfill: bool,
    },
    Shared {
        share: Arc<SplitShare>,
        current: Vec<Subscriber>,
    },
}

/// Which split a reader thread reads, and the watermark it resumes with (a checkpoint's).
#[derive(Debug, Clone, Copy, Default)]
pub struct SplitStart {
    pub partition: i32,
    pub watermark: Option<i64>,
}

/// The state of one split's reading thread.
struct SplitLoop {
    name: String,
    partition: i32,
    watermark: Option<WatermarkSpec>,
    out: Out,
    progress: Arc<Mutex<SplitProgress>>,
    max_wm: Option<i64>,
    last_rows: Instant,
    idle_sent: bool,
}

/// Whether the thread goes on (false: the dataflow is gone).
type Go = bool;

impl SplitLoop {
    fn send(&mut self, m: Message) -> Go {
        match &mut self.out {
            Out::Channel { tx, .. } => tx.blocking_send(m).is_ok(),
            Out::Shared { share, current } => {
                if let Message::Watermark(w) = &m {
                    share.sent_watermark(*w);
                }
                current.retain(|s| s.tx.blocking_send(m.clone()).is_ok());
                !current.is_empty() || !share.close_if_unused()
            }
        }
    }

    /// The split's position, then the barrier: what a checkpoint taken at it resumes from.
    fn send_barrier(&mut self, b: Barrier) -> Go {
        let position = SplitPosition {
            partition: self.partition,
            offset: self.progress.lock().next_offset,
            watermark: self.max_wm,
        };
        self.send(Message::Position(position)) && self.send(Message::Barrier(b))
    }

    /// Between reads: who a shared split's next messages go to.
    fn sync(&mut self) {
        if let Out::Shared { share, current } = &mut self.out {
            *current = share.sync(self.progress.lock().next_offset);
        }
    }

    /// Whether anyone still reads the split.
    fn is_open(&self) -> Go {
        match &self.out {
            Out::Channel { tx, .. } => !tx.is_closed(),
            Out::Shared { share, .. } => !share.close_if_unused(),
        }
    }

    /// The event time the split may read up to.
    fn read_limit(&self) -> i64 {
        match &self.out {
            Out::Channel { read_limit, .. } => read_limit.load(Ordering::Relaxed),
            Out::Shared { current, .. } => shared::read_limit(current),
        }
    }

    fn handle(&mut self, read: ReadResult, barriers: &mut watch::Receiver<Barrier>) -> Go {
        self.sync();
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
                return self.is_open();
            }
            ReadResult::End if matches!(self.out, Out::Channel { backfill: true, .. }) => {
                return false;
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
                    self.sync();
                    if !self.send_barrier(b) {
                        return false;
                    }
                }
                return false;
            }
        };
        self.last_rows = Instant::now();
        let evaluated = self.watermark.as_ref().map(|spec| spec.evaluate(&rows));
        let (cuts, late) = match evaluated {
            Some(Ok((wm, time))) => cut_points(&wm, &time, self.max_wm),
            Some(Err(e)) => {
                self.progress.lock().last_error = Some(e.to_string());
                (vec![(rows.num_rows(), self.max_wm)], 0)
            }
            None => (vec![(rows.num_rows(), None)], 0),
        };
        {
            let mut p = self.progress.lock();
            p.rows += rows.num_rows() as u64;
            p.late_rows += late;
        }
        let mut start = 0;
        for (end, wm) in cuts {
            if end > start {
                let piece = change.batch().slice(start, end - start);
                match ChangeBatch::try_new(piece) {
                    Ok(c) => {
                        if !self.send(Message::Data(c)) {
                            return false;
                        }
                    }
                    Err(e) => self.progress.lock().last_error = Some(e.to_string()),
                }
            }
            start = end;
            if let Some(w) = wm
                && (self.max_wm.is_none_or(|m| w > m) || self.idle_sent)
            {
                self.max_wm = Some(w);
                self.idle_sent = false;
                self.progress.lock().watermark = Some(w);
                if !self.send(Message::Watermark(Watermark::EventTime(w))) {
                    return false;
                }
            }
        }
        true
    }
}

/// Reads `reader` on a new thread until no dataflow reads `output` any more.
pub fn spawn_split(
    name: String,
    start: SplitStart,
    mut reader: Box<dyn SplitReader>,
    watermark: Option<WatermarkSpec>,
    mut barriers: watch::Receiver<Barrier>,
    output: SplitOutput,
    progress: Arc<Mutex<SplitProgress>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let out = match output {
        SplitOutput::Channel { tx, read_limit } => Out::Channel {
            tx,
            read_limit,
            backfill: false,
        },
        SplitOutput::Backfill { tx, read_limit } => Out::Channel {
            tx,
            read_limit,
            backfill: true,
        },
        SplitOutput::Shared(share) => Out::Shared {
            share,
            current: Vec::new(),
        },
    };
    std::thread::Builder::new()
        .name(format!("weir-split-{name}"))
        .spawn(move || {
            barriers.mark_unchanged();
            let mut split = SplitLoop {
                name,
                partition: start.partition,
                watermark,
                out,
                progress,
                max_wm: start.watermark,
                last_rows: Instant::now(),
                idle_sent: false,
            };
            split.sync();
            if split.watermark.is_none() && !split.send(Message::Watermark(Watermark::Idle)) {
                return;
            }
            // A resumed split goes on from its checkpointed watermark.
            if let Some(w) = split.max_wm
                && split.watermark.is_some()
                && !split.send(Message::Watermark(Watermark::EventTime(w)))
            {
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
                    split.sync();
                    if !split.send_barrier(b) {
                        return;
                    }
                }
                if split.max_wm.is_some_and(|w| w > split.read_limit()) {
                    // Ahead of another relation of the dataflow: wait, barriers still flow.
                    std::thread::sleep(Duration::from_millis(2));
                    split.last_rows = Instant::now();
                    continue;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_behind_the_watermark_of_earlier_rows_gets_that_watermark_first() {
        let s = 1_000_000_000;
        // Times 10, 12, 5 (late: the watermark after 12 is 12 - 3 = 9), 13; delay 3.
        let time = TimestampNanosecondArray::from(vec![10 * s, 12 * s, 5 * s, 13 * s]);
        let wm = TimestampNanosecondArray::from(vec![7 * s, 9 * s, 2 * s, 10 * s]);
        let (cuts, late) = cut_points(&wm, &time, None);
        assert_eq!(cuts, vec![(2, Some(9 * s)), (4, Some(10 * s))]);
        assert_eq!(late, 1);
        // In order: one piece, no late rows.
        let (cuts, late) = cut_points(&wm.slice(0, 2), &time.slice(0, 2), Some(s));
        assert_eq!((cuts, late), (vec![(2, Some(9 * s))], 0));
        // Rows all behind the watermark already sent: one piece, each row late.
        let (cuts, late) = cut_points(&wm, &time, Some(20 * s));
        assert_eq!((cuts, late), (vec![(4, Some(20 * s))], 4));
        // Behind a watermark the batch raised: cut once, where the first late row comes.
        let time = TimestampNanosecondArray::from(vec![30 * s, 5 * s, 6 * s, 31 * s, 7 * s]);
        let wm = TimestampNanosecondArray::from(vec![27 * s, 2 * s, 3 * s, 28 * s, 4 * s]);
        let (cuts, late) = cut_points(&wm, &time, Some(20 * s));
        let want = vec![(1, Some(27 * s)), (4, Some(28 * s)), (5, Some(28 * s))];
        assert_eq!((cuts, late), (want, 3));
    }

    #[test]
    fn a_constant_delay_is_subtracted_as_the_interval_arithmetic_would() {
        use arrow::datatypes::{Field, IntervalMonthDayNano, Schema};
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let schema = Arc::new(Schema::new(vec![Field::new("t", ts, true)]));
        let rows = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(TimestampNanosecondArray::from(vec![
                Some(1_700_000_000_123_456_789),
                None,
                Some(5),
            ]))],
        )
        .unwrap();
        let delay = IntervalMonthDayNano::new(0, 1, 4_000_000_000);
        let expr: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("t", 0)),
            Operator::Minus,
            Arc::new(Literal::new(ScalarValue::IntervalMonthDayNano(Some(delay)))),
        ));
        assert_eq!(constant_delay_ns(&expr, 0), Some(86_404_000_000_000));
        let spec = WatermarkSpec {
            column: 0,
            expr: Arc::clone(&expr),
            idle_timeout: Duration::from_secs(1),
        };
        let (fast, _) = spec.evaluate(&rows).unwrap();
        let general = as_ns(&expr.evaluate(&rows).unwrap().into_array(3).unwrap()).unwrap();
        assert_eq!(fast, general);
        // With months, the calendar decides: no shortcut.
        let month = IntervalMonthDayNano::new(1, 0, 0);
        let calendar: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("t", 0)),
            Operator::Minus,
            Arc::new(Literal::new(ScalarValue::IntervalMonthDayNano(Some(month)))),
        ));
        assert_eq!(constant_delay_ns(&calendar, 0), None);
    }
}
