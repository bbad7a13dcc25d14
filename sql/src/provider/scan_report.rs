//! What one ad hoc query's source scans skipped, collected for the NOTICE sent with its result.
//! The server puts a fresh report in the session config; scans merge their decode stats into it.

use std::sync::Arc;

use datafusion::execution::TaskContext;
use parking_lot::Mutex;
use weir_engine::DecodeStats;

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
