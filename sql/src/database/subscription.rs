//! SUBSCRIBE: a view's committed changes as rows `weir_ts, weir_diff, <columns>`, the
//! current rows first (as inserts), then each commit's changes in commit order.
//! A subscriber that falls too far behind is cut off instead of growing memory.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use tokio::sync::mpsc;
use weir_engine::ChangeBatch;
use weir_engine::operator::ViewEvent;

use super::Database;
use crate::dataflow::ViewTable;
use crate::error::{Result, SqlError};
use crate::statement::SubscribeTarget;

/// Commits a subscriber may have queued before it is cut off.
const MAX_QUEUED_COMMITS: usize = 4096;
/// Rows a subscriber may have queued before it is cut off.
const MAX_QUEUED_ROWS: usize = 1_000_000;
/// Bytes (of Arrow buffers) a subscriber may have queued before it is cut off: wide rows
/// reach this before the row bound.
const MAX_QUEUED_BYTES: usize = 256 << 20;

/// What a subscription has queued and not yet taken, and why it was cut off.
#[derive(Debug, Default)]
struct Queued {
    rows: AtomicUsize,
    bytes: AtomicUsize,
    /// Set once, when a commit would pass a bound: which one.
    overflow: OnceLock<String>,
}

impl Queued {
    /// Counts a commit's rows in, unless they would pass a bound (then records which).
    fn admit(&self, batch: &RecordBatch) -> bool {
        let (rows, bytes) = (batch.num_rows(), batch.get_array_memory_size());
        let queued_rows = self.rows.load(Ordering::Relaxed) + rows;
        let queued_bytes = self.bytes.load(Ordering::Relaxed) + bytes;
        let passed = if queued_rows > MAX_QUEUED_ROWS {
            Some(format!("{queued_rows} rows queued, over {MAX_QUEUED_ROWS}"))
        } else if queued_bytes > MAX_QUEUED_BYTES {
            Some(format!(
                "{} MiB queued, over {} MiB",
                queued_bytes >> 20,
                MAX_QUEUED_BYTES >> 20
            ))
        } else {
            None
        };
        match passed {
            Some(reason) => {
                let _ = self.overflow.set(reason);
                false
            }
            None => {
                self.add(batch, 1);
                true
            }
        }
    }

    fn add(&self, batch: &RecordBatch, sign: isize) {
        let (rows, bytes) = (batch.num_rows(), batch.get_array_memory_size());
        if sign > 0 {
            self.rows.fetch_add(rows, Ordering::Relaxed);
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
        } else {
            self.rows.fetch_sub(rows, Ordering::Relaxed);
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    fn overflowed(&self) -> Option<SqlError> {
        self.overflow.get().map(|reason| {
            SqlError::new(
                "53000",
                format!(
                    "subscriber fell too far behind the view and was disconnected ({reason}); SUBSCRIBE again"
                ),
            )
        })
    }
}

/// A running SUBSCRIBE. Dropping it unsubscribes (and stops a query's own dataflow).
pub struct Subscription {
    schema: SchemaRef,
    rx: mpsc::Receiver<RecordBatch>,
    queued: Arc<Queued>,
    _dataflow: Option<Arc<ViewTable>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("schema", &self.schema)
            .finish()
    }
}

impl Subscription {
    /// `weir_ts`, `weir_diff`, then the view's columns.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The next commit's rows; None once the view is gone.
    pub async fn next(&mut self) -> Result<Option<RecordBatch>> {
        match self.rx.recv().await {
            Some(batch) => {
                self.queued.add(&batch, -1);
                Ok(Some(batch))
            }
            None => self.queued.overflowed().map_or(Ok(None), Err),
        }
    }

    /// Like `next`, but None right away when nothing is queued.
    pub fn try_next(&mut self) -> Result<Option<RecordBatch>> {
        match self.rx.try_recv() {
            Ok(batch) => {
                self.queued.add(&batch, -1);
                Ok(Some(batch))
            }
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => {
                self.queued.overflowed().map_or(Ok(None), Err)
            }
        }
    }
}

/// One commit's changes as SUBSCRIBE rows: retractions first, each row repeated per unit of
/// weight with `weir_diff` ±1, all stamped with the commit's time.
fn change_rows(schema: &SchemaRef, changes: &ChangeBatch, ts_ms: i64) -> Result<RecordBatch> {
    let weights = changes.weights();
    let (mut idx, mut diff) = (Vec::new(), Vec::new());
    for sign in [-1i64, 1] {
        for (i, &w) in weights.values().iter().enumerate() {
            if w.signum() == sign {
                for _ in 0..w.unsigned_abs() {
                    idx.push(i as u32);
                    diff.push(sign);
                }
            }
        }
    }
    let idx = UInt32Array::from(idx);
    let data = changes.data();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![ts_ms; idx.len()])),
        Arc::new(Int64Array::from(diff)),
    ];
    for c in data.columns() {
        columns.push(take(c, &idx, None).map_err(|e| SqlError::new("XX000", e.to_string()))?);
    }
    RecordBatch::try_new(Arc::clone(schema), columns)
        .map_err(|e| SqlError::new("XX000", e.to_string()))
}

impl Database {
    /// Starts a SUBSCRIBE to a view, or to a query maintained just for it (with
    /// `parallelism` instances per keyed operator, 0 = one per core).
    pub async fn subscribe(
        &self,
        target: &SubscribeTarget,
        snapshot: bool,
        parallelism: usize,
    ) -> Result<Subscription> {
        let (table, own) = match target {
            SubscribeTarget::View(name) => {
                let relation = self
                    .relation(name)
                    .ok_or_else(|| SqlError::undefined_table(name))?;
                let table = relation.as_view().ok_or_else(|| {
                    SqlError::new(
                        "42809",
                        format!("\"{name}\" is not a materialized view; SUBSCRIBE to a query over it instead"),
                    )
                })?;
                (table.view(), None)
            }
            SubscribeTarget::Query(query) => {
                let plan = self.plan_view_query(query).await?;
                let (table, _) = self.start_dataflow(
                    "subscribe",
                    &plan,
                    false,
                    parallelism,
                    super::views::Reader::Subscription,
                    None,
                )?;
                self.next_epoch_of(&table).await;
                (table.view(), Some(table))
            }
        };
        let mut fields = vec![
            Field::new("weir_ts", DataType::Int64, false),
            Field::new("weir_diff", DataType::Int64, false),
        ];
        let mut view = table.lock();
        fields.extend(view.schema().fields().iter().map(|f| f.as_ref().clone()));
        let schema = Arc::new(Schema::new(fields));
        let (tx, rx) = mpsc::channel(MAX_QUEUED_COMMITS);
        let queued = Arc::new(Queued::default());
        let (out, counted) = (Arc::clone(&schema), Arc::clone(&queued));
        let snapshot_tx = tx.clone();
        let current = view.subscribe(Box::new(move |event| {
            let ViewEvent::Commit {
                barrier,
                changes: Some(changes),
            } = event
            else {
                return !tx.is_closed();
            };
            let Ok(rows) = change_rows(&out, changes, barrier.ts_ms) else {
                return false;
            };
            if !counted.admit(&rows) {
                return false;
            }
            match tx.try_send(rows) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(rows)) => {
                    counted.add(&rows, -1);
                    let _ = counted
                        .overflow
                        .set(format!("{MAX_QUEUED_COMMITS} commits queued"));
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        }))?;
        if snapshot && current.num_rows() > 0 {
            let ts = match view.last_commit_ms() {
                0 => self.barriers.current().ts_ms,
                t => t,
            };
            let rows = change_rows(&schema, &ChangeBatch::from_data(&current, 1)?, ts)?;
            queued.add(&rows, 1);
            // The channel is empty: this cannot fail for lack of room.
            let _ = snapshot_tx.try_send(rows);
        }
        drop(view);
        Ok(Subscription {
            schema,
            rx,
            queued,
            _dataflow: own,
        })
    }
}
