//! Threads for statements, apart from the ones serving connections: a query runtime that
//! executes queries and dataflows, and a statement runtime that parses and plans. Work on
//! them cannot starve accepts, cancel requests or other sessions' parsing.
//!
//! DataFusion's operators run for long stretches between yields (a cancelled scan stops
//! at its next one, seconds later in a debug build), so a query can hold every query
//! thread; parsing, planning and catalog changes stay on their own threads and answer.

use std::future::Future;

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

use crate::error::{Result, SqlError};

/// The stack of every statement and query thread. Parsing recurses a few frames per
/// nesting level (bounded by the parser's limits), DataFusion's planner grows its stack on
/// the heap where it recurses deeper; tokio's default 2 MiB overflowed and aborted the
/// process. Address space only: a thread touches what it uses.
const STACK_BYTES: usize = 64 << 20;

/// Worker threads of the statement runtime (planning is short; blocking work such as a
/// broker's metadata fetch goes to its blocking pool).
const STATEMENT_THREADS: usize = 2;

/// The query and statement runtimes.
#[derive(Debug)]
pub(crate) struct CpuRuntime {
    queries: Option<Runtime>,
    statements: Option<Runtime>,
}

fn runtime(name: &str, threads: usize) -> Result<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .thread_stack_size(STACK_BYTES)
        .enable_all()
        .build()
        .map_err(|e| SqlError::new("XX000", format!("cannot start {name} threads: {e}")))
}

impl CpuRuntime {
    pub(crate) fn new() -> Result<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            queries: Some(runtime("weir-query", cores)?),
            statements: Some(runtime("weir-statement", STATEMENT_THREADS)?),
        })
    }

    fn queries(&self) -> Result<&Runtime> {
        self.queries
            .as_ref()
            .ok_or_else(|| SqlError::new("XX000", "query threads stopped"))
    }

    fn statements(&self) -> Result<&Runtime> {
        self.statements
            .as_ref()
            .ok_or_else(|| SqlError::new("XX000", "statement threads stopped"))
    }

    /// Runs `fut` on the query threads. Dropping the returned future (a cancelled or
    /// disconnected client) aborts the work.
    pub(crate) async fn run<F>(&self, fut: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        joined(AbortOnDrop(self.queries()?.spawn(fut))).await
    }

    /// Runs `fut` (planning) on the statement threads; dropping the future aborts it.
    pub(crate) async fn plan<F>(&self, fut: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        joined(AbortOnDrop(self.statements()?.spawn(fut))).await
    }

    /// Runs synchronous work of a statement (parsing, catalog changes, which may wait on a
    /// broker) on the statement runtime's blocking threads. It cannot be aborted: parsing
    /// checks its `Interrupt` instead.
    pub(crate) async fn run_sync<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        joined(AbortOnDrop(self.statements()?.spawn_blocking(f))).await?
    }

    /// Starts a long-running task (a dataflow) on the query threads.
    pub(crate) fn spawn<F>(&self, fut: F) -> Result<JoinHandle<()>>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Ok(self.queries()?.spawn(fut))
    }
}

/// The task's output; a panic in it becomes XX000, an abort 57014.
async fn joined<T>(mut task: AbortOnDrop<T>) -> Result<T> {
    (&mut task.0).await.map_err(|e| {
        if e.is_panic() {
            let message = panic_message(e.into_panic().as_ref());
            tracing::error!(%message, "a statement panicked");
            SqlError::new("XX000", format!("internal error: {message}"))
        } else {
            SqlError::new("57014", format!("query task ended: {e}"))
        }
    })
}

/// What a panic said, for the error its statement reports.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
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
        for runtime in [self.queries.take(), self.statements.take()]
            .into_iter()
            .flatten()
        {
            runtime.shutdown_background();
        }
    }
}
