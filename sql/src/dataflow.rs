//! Materialized views as running dataflows: the optimized DataFusion plan lowered to an
//! engine `Graph` once per instance (`lower`), fed by its relations (`inputs`), run as a
//! task per stage instance on the query runtime, and read through `ViewTable` from the
//! last committed epoch.

mod inputs;
mod join_bounds;
mod lower;
pub(crate) mod shared_readers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_engine::operator::SharedView;
use weir_engine::runtime::{
    CommitLatency, DataflowStats, NodeId, OperatorInfo, OperatorStats, Topology,
};

pub(crate) use inputs::{InputContext, ProgressRegistry, StreamInput};
pub(crate) use lower::{Input, Lowering};

/// A dataflow's tasks (one per stage instance) and what it reports; dropping it stops
/// the dataflow.
pub(crate) struct RunningDataflow {
    pub(crate) tasks: Vec<JoinHandle<()>>,
    pub(crate) stats: watch::Receiver<DataflowStats>,
    pub(crate) late_rows: Vec<Arc<AtomicU64>>,
    /// Warnings from planning it, for the client that creates it.
    pub(crate) notices: Vec<String>,
    /// Instances of each keyed operator.
    pub(crate) parallelism: usize,
    /// Started from a checkpoint (else derived from its inputs).
    pub(crate) restored: bool,
    /// Why a checkpoint of it was not used, if one was not.
    pub(crate) restore_note: Option<String>,
    /// Its operators, and what each has done.
    pub(crate) topology: Topology,
    pub(crate) operators: Arc<OperatorStats>,
    /// The operator each input relation enters at.
    pub(crate) inputs: Vec<(NodeId, String)>,
}

impl Drop for RunningDataflow {
    fn drop(&mut self) {
        // Its input streams drop with the tasks; reader threads end on their next send.
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A materialized view as a DataFusion table: the last committed epoch of its rows.
pub(crate) struct ViewTable {
    schema: SchemaRef,
    view: SharedView,
    running: Mutex<Option<RunningDataflow>>,
    /// Its changes are only ever inserts (a PLAIN sink may write it).
    append_only: bool,
}

impl std::fmt::Debug for ViewTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewTable")
            .field("schema", &self.schema)
            .finish()
    }
}

/// What `weir_catalog.dataflows` and the metrics show for one view or sink.
#[derive(Debug, Clone, Default)]
pub struct ViewStatus {
    /// Rows of a view; messages delivered by a sink.
    pub rows: i64,
    pub state_bytes: usize,
    pub last_commit_ms: i64,
    pub late_rows: u64,
    /// Change rows its dataflow has read from its input relations.
    pub input_rows: u64,
    /// The relations it reads.
    pub inputs: Vec<String>,
    pub commit_latency: CommitLatency,
    pub error: Option<String>,
    /// Instances of each keyed operator (0 once stopped).
    pub parallelism: usize,
    /// Why the dataflow's checkpoint was not used at the last start, if it was not.
    pub restore_note: Option<String>,
}

/// A running dataflow's plan with what each operator has done: the console's graph.
#[derive(Debug, Clone)]
pub struct DataflowGraph {
    pub parallelism: usize,
    pub operators: Vec<OperatorReport>,
    /// (operator, relation) per input relation.
    pub inputs: Vec<(NodeId, String)>,
}

/// One operator of a `DataflowGraph`.
#[derive(Debug, Clone)]
pub struct OperatorReport {
    pub info: OperatorInfo,
    /// Change rows delivered to it.
    pub rows: u64,
    /// State it holds over all its instances.
    pub state_bytes: usize,
}

impl ViewTable {
    pub(crate) fn new(
        schema: SchemaRef,
        view: SharedView,
        running: RunningDataflow,
        append_only: bool,
    ) -> Self {
        Self {
            schema,
            view,
            running: Mutex::new(Some(running)),
            append_only,
        }
    }

    /// Whether its changes are only ever inserts.
    pub(crate) fn append_only(&self) -> bool {
        self.append_only
    }

    pub(crate) fn view(&self) -> SharedView {
        Arc::clone(&self.view)
    }

    /// Stops the dataflow (DROP).
    pub(crate) fn drop_view(&self) {
        self.running.lock().take();
    }

    /// What planning the dataflow warned about.
    pub(crate) fn notices(&self) -> Vec<String> {
        self.running
            .lock()
            .as_ref()
            .map(|r| r.notices.clone())
            .unwrap_or_default()
    }

    /// Commits of the dataflow, for FLUSH to wait on.
    pub(crate) fn stats(&self) -> Option<watch::Receiver<DataflowStats>> {
        self.running.lock().as_ref().map(|r| r.stats.clone())
    }

    pub(crate) fn status(&self) -> ViewStatus {
        let (rows, view_bytes, last_commit_ms) = {
            let v = self.view.lock();
            (v.len(), v.state_bytes(), v.last_commit_ms())
        };
        let running = self.running.lock();
        let stats = running.as_ref().map(|r| r.stats.borrow().clone());
        ViewStatus {
            rows,
            state_bytes: stats
                .as_ref()
                .map_or(view_bytes, |s| s.state_bytes.max(view_bytes)),
            last_commit_ms,
            late_rows: running.as_ref().map_or(0, |r| {
                r.late_rows.iter().map(|l| l.load(Ordering::Relaxed)).sum()
            }),
            input_rows: running.as_ref().map_or(0, |r| {
                r.inputs
                    .iter()
                    .map(|(node, _)| r.operators.rows(*node))
                    .sum()
            }),
            inputs: running.as_ref().map_or_else(Vec::new, |r| {
                let mut names: Vec<String> = r.inputs.iter().map(|i| i.1.clone()).collect();
                names.dedup();
                names
            }),
            commit_latency: stats
                .as_ref()
                .map(|s| s.commit_latency.clone())
                .unwrap_or_default(),
            error: stats.and_then(|s| s.error),
            parallelism: running.as_ref().map_or(0, |r| r.parallelism),
            restore_note: running.as_ref().and_then(|r| r.restore_note.clone()),
        }
    }

    /// Its operators and what each has done (None once stopped).
    pub(crate) fn graph(&self) -> Option<DataflowGraph> {
        let running = self.running.lock();
        let r = running.as_ref()?;
        Some(DataflowGraph {
            parallelism: r.parallelism,
            operators: r
                .topology
                .iter()
                .map(|info| OperatorReport {
                    info: info.clone(),
                    rows: r.operators.rows(info.id),
                    state_bytes: r.operators.state_bytes(info.id),
                })
                .collect(),
            inputs: r.inputs.clone(),
        })
    }

    /// Whether the dataflow started from a checkpoint (its rows are served at once).
    pub(crate) fn restored(&self) -> bool {
        self.running.lock().as_ref().is_some_and(|r| r.restored)
    }
}

#[async_trait]
impl TableProvider for ViewTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if let Some(error) = self.status().error {
            // Serving the rows of a stopped dataflow would look current and be stale.
            return Err(DataFusionError::Execution(format!(
                "the materialized view's dataflow failed ({error}); DROP and re-create it"
            )));
        }
        let rows = self
            .view
            .lock()
            .rows()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![rows]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}
