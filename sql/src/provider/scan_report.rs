//! What one ad hoc query's source scans skipped, collected for the NOTICE sent with its result.
//! The server puts a fresh report in the session config; scans merge their decode stats into it.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use parking_lot::Mutex;
use weir_engine::DecodeStats;

use crate::error::SqlError;

/// Decode statistics of every source scanned by one query.
#[derive(Debug, Default)]
pub struct ScanReport {
    stats: Mutex<DecodeStats>,
}

impl ScanReport {
    pub fn add(&self, stats: &DecodeStats) {
        self.stats.lock().merge(stats);
    }

    pub fn stats(&self) -> DecodeStats {
        self.stats.lock().clone()
    }

    /// The report attached to the running query, if any.
    pub(crate) fn of(ctx: &TaskContext) -> Option<Arc<ScanReport>> {
        ctx.session_config().get_extension::<ScanReport>()
    }
}

/// Runs a blocking reader on its own thread as a batch stream. `read` gets an emit callback
/// (false = the query stopped listening) and returns its decode stats, which go into the
/// query's report.
pub(crate) fn blocking_scan<F>(
    schema: SchemaRef,
    ctx: &TaskContext,
    read: F,
) -> SendableRecordBatchStream
where
    F: FnOnce(&mut dyn FnMut(RecordBatch) -> bool) -> weir_engine::Result<DecodeStats>
        + Send
        + 'static,
{
    let mut builder = RecordBatchReceiverStreamBuilder::new(schema, 4);
    let tx = builder.tx();
    let report = ScanReport::of(ctx);
    builder.spawn_blocking(move || {
        let stats =
            read(&mut |batch| tx.blocking_send(Ok(batch)).is_ok()).map_err(SqlError::from)?;
        if let Some(report) = report {
            report.add(&stats);
        }
        Ok(())
    });
    builder.build()
}
