//! A tokio runtime for query execution, apart from the one serving connections.
//! DataFusion's operators can run for long stretches without yielding; on their own threads
//! they cannot starve accepts, cancel requests or other sessions.

use std::future::Future;

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

use crate::error::{Result, SqlError};

/// Worker threads for CPU-bound query work.
#[derive(Debug)]
pub(crate) struct CpuRuntime {
    runtime: Option<Runtime>,
}

impl CpuRuntime {
    pub(crate) fn new() -> Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("weir-query")
            .enable_all()
            .build()
            .map_err(|e| SqlError::new("XX000", format!("cannot start query threads: {e}")))?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Runs `fut` on the query threads. Dropping the returned future (a cancelled or
    /// disconnected client) aborts the work.
    pub(crate) async fn run<F>(&self, fut: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| SqlError::new("XX000", "query threads stopped"))?;
        let mut task = AbortOnDrop(runtime.spawn(fut));
        (&mut task.0)
            .await
            .map_err(|e| SqlError::new("57014", format!("query task ended: {e}")))
    }
}

impl CpuRuntime {
    /// Starts a long-running task (a dataflow) on the query threads.
    pub(crate) fn spawn<F>(&self, fut: F) -> Result<JoinHandle<()>>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| SqlError::new("XX000", "query threads stopped"))?;
        Ok(runtime.spawn(fut))
    }
}

/// Aborts the task when dropped before it finished.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for CpuRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside async code panics; let its threads wind down instead.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
