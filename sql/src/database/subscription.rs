//! SUBSCRIBE: a view's committed changes as rows `weir_ts, weir_diff, <columns>`, the
//! current rows first (as inserts), then each commit's changes in commit order.
//! A subscriber that falls too far behind is cut off instead of growing memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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

/// A running SUBSCRIBE. Dropping it unsubscribes (and stops a query's own dataflow).
pub struct Subscription {
    schema: SchemaRef,
    rx: mpsc::Receiver<RecordBatch>,
    queued_rows: Arc<AtomicUsize>,
    overflow: Arc<AtomicBool>,
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
                self.queued_rows
                    .fetch_sub(batch.num_rows(), Ordering::Relaxed);
                Ok(Some(batch))
            }
            None if self.overflow.load(Ordering::Relaxed) => Err(fell_behind()),
            None => Ok(None),
        }
    }

    /// Like `next`, but None right away when nothing is queued.
    pub fn try_next(&mut self) -> Result<Option<RecordBatch>> {
        match self.rx.try_recv() {
            Ok(batch) => {
                self.queued_rows
                    .fetch_sub(batch.num_rows(), Ordering::Relaxed);
                Ok(Some(batch))
            }
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => {
                if self.overflow.load(Ordering::Relaxed) {
                    Err(fell_behind())
                } else {
                    Ok(None)
                }
            }
        }
    }
}

fn fell_behind() -> SqlError {
    SqlError::new(
        "53000",
        "subscriber fell too far behind the view and was disconnected; SUBSCRIBE again",
    )
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
                let provider = self
                    .catalog
                    .lock()
                    .get(name)
                    .map(|e| Arc::clone(&e.provider))
                    .ok_or_else(|| SqlError::undefined_table(name))?;
                let any: &dyn std::any::Any = provider.as_ref();
                let table = any.downcast_ref::<ViewTable>().ok_or_else(|| {
                    SqlError::new(
                        "42809",
                        format!("\"{name}\" is not a materialized view; SUBSCRIBE to a query over it instead"),
                    )
                })?;
                (table.view(), None)
            }
            SubscribeTarget::Query(query) => {
                let plan = self.plan_view_query(query).await?;
                let (table, _) =
                    self.start_dataflow("subscribe", &plan, false, parallelism, false, None)?;
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
        let queued_rows = Arc::new(AtomicUsize::new(0));
        let overflow = Arc::new(AtomicBool::new(false));
        let (out, queued, cut) = (
            Arc::clone(&schema),
            Arc::clone(&queued_rows),
            Arc::clone(&overflow),
        );
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
            let n = rows.num_rows();
            if queued.load(Ordering::Relaxed) + n > MAX_QUEUED_ROWS {
                cut.store(true, Ordering::Relaxed);
                return false;
            }
            match tx.try_send(rows) {
                Ok(()) => {
                    queued.fetch_add(n, Ordering::Relaxed);
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    cut.store(true, Ordering::Relaxed);
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
            queued_rows.fetch_add(rows.num_rows(), Ordering::Relaxed);
            // The channel is empty: this cannot fail for lack of room.
            let _ = snapshot_tx.try_send(rows);
        }
        drop(view);
        Ok(Subscription {
            schema,
            rx,
            queued_rows,
            overflow,
            _dataflow: own,
        })
    }
}
