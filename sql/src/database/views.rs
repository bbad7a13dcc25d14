//! CREATE / EXPLAIN CREATE MATERIALIZED VIEW and FLUSH: a view's plan lowered to a dataflow,
//! its relations attached as inputs, the dataflow started on the query runtime.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::DFSchema;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::physical_expr::create_physical_expr;
use datafusion::sql::parser::Statement as DFStatement;
use futures::FutureExt;
use std::collections::BTreeMap;

use tokio::sync::{mpsc, watch};
use weir_engine::SplitPosition;
use weir_engine::operator::{Materialize, Retention, SharedView};
use weir_engine::runtime::{Dataflow, DataflowStats, Partitioning, WatermarkSpec};

use super::{Database, Output, RestoredView, command};
use crate::catalog::CatalogRelation;
use crate::catalog::{Entry, StoredEntry};
use crate::checkpoint::manifest::ViewMeta;
use crate::column_names::{finish_names, name_select_list};
use crate::cpu_runtime::panic_message;
use crate::dataflow::{InputContext, Lowering, RunningDataflow, ViewTable};
use crate::error::{Result, SqlError};
use crate::operand_types::check_operand_types;
use crate::provider::CONSTANT_RELATION;
use crate::spellings::normalize_spellings;
use crate::statement::{CreateRelation, ObjectKind, ParsedStatement, Statement, parse_duration};

/// How long a partition may stay silent before it stops holding its source's watermark back.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

impl Database {
    /// CREATE MATERIALIZED VIEW: plans the query as a dataflow, starts it, and returns once
    /// it committed its first epoch (tables' current rows are in the view by then).
    /// Runs CREATE MATERIALIZED VIEW (or its EXPLAIN); returns the result and the notices
    /// for the client (such as a join whose state has no bound).
    /// `parallelism` is the session's `streaming_parallelism`: instances of each keyed
    /// operator (0 = one per core).
    pub async fn execute_create_view(
        &self,
        statement: &ParsedStatement,
        parallelism: usize,
    ) -> Result<(Output, Vec<String>)> {
        let Statement::CreateView {
            name,
            if_not_exists,
            query,
            emit_on_close,
            explain,
        } = &statement.statement
        else {
            return Err(SqlError::new("XX000", "not a CREATE MATERIALIZED VIEW"));
        };
        let plan = self.plan_view_query(query).await?;
        if *explain {
            return self.explain_view(&plan, *emit_on_close);
        }
        let tag = command("CREATE MATERIALIZED VIEW".into());
        if self.catalog.lock().contains(name) {
            return if *if_not_exists {
                Ok((tag, Vec::new()))
            } else {
                Err(SqlError::duplicate_table(name))
            };
        }
        let table = self.create_view(
            name,
            &plan,
            statement.text.clone(),
            true,
            *emit_on_close,
            parallelism,
        )?;
        self.next_epoch_of(&table).await;
        Ok((tag, table.notices()))
    }

    pub(super) async fn plan_view_query(&self, query: &str) -> Result<LogicalPlan> {
        // On the statement threads, whose stacks hold the deepest statement parsed.
        let parser = Arc::clone(&self.parser);
        let query = query.to_string();
        let mut state = self.ctx.state();
        // A scalar subquery becomes a join a dataflow can keep (DataFusion's own plan runs
        // an uncorrelated one once, apart: right for a batch, not for a view).
        state
            .config_mut()
            .options_mut()
            .optimizer
            .enable_physical_uncorrelated_scalar_subquery = false;
        self.cpu
            .plan(async move {
                let mut statement = parser.parse_view_query(&query)?;
                let names = name_select_list(&mut statement);
                normalize_spellings(&mut statement);
                let plan = state
                    .statement_to_plan(DFStatement::Statement(Box::new(statement)))
                    .await?;
                check_operand_types(&plan)?;
                let plan = finish_names(plan, &names, true)?;
                Ok(state.optimize(&plan)?)
            })
            .await?
    }

    /// EXPLAIN CREATE MATERIALIZED VIEW: the dataflow's operators, one per line.
    fn explain_view(
        &self,
        plan: &LogicalPlan,
        emit_on_close: bool,
    ) -> Result<(Output, Vec<String>)> {
        let props = ExecutionProps::new();
        let relations = |name: &str| self.relation(name);
        let (lowering, _) = lower_view(plan, &props, &relations, emit_on_close, Retention::Rows)?;
        let mut lines = lowering.graph.describe();
        for input in &lowering.inputs {
            lines.push(format!("input {}: {}", input.node, input.relation));
        }
        let schema = Arc::new(Schema::new(vec![Field::new(
            "QUERY PLAN",
            DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(StringArray::from(lines))],
        )
        .map_err(|e| SqlError::new("XX000", e.to_string()))?;
        let output = Output::Rows {
            schema,
            batches: vec![batch],
        };
        Ok((output, lowering.notices))
    }

    /// The watermark a relation declares (`WATERMARK FOR col AS expr`), as the expression
    /// its splits evaluate over rows.
    fn watermark_spec(&self, entry: &Entry) -> Result<Option<WatermarkSpec>> {
        let Some((column, expr)) = &entry.create.watermark else {
            return Ok(None);
        };
        let column = entry.schema.index_of(column).map_err(|_| {
            SqlError::new(
                "42703",
                format!("watermark column \"{column}\" does not exist"),
            )
        })?;
        let schema = DFSchema::try_from(entry.schema.as_ref().clone())?;
        let logical = self.ctx.parse_sql_expr(expr, &schema)?;
        let physical = create_physical_expr(
            &logical,
            &schema,
            &ExecutionProps::new(),
            &PhysicalPlanningContext::default(),
        )?;
        let idle_timeout = match entry.create.options.get("source.idle.timeout") {
            Some(v) => parse_duration(v).ok_or_else(|| {
                SqlError::invalid_parameter(format!(
                    "source.idle.timeout '{v}' is not a duration (e.g. '5s', '500ms')"
                ))
            })?,
            None => DEFAULT_IDLE_TIMEOUT,
        };
        Ok(Some(WatermarkSpec {
            column,
            expr: physical,
            idle_timeout,
        }))
    }

    /// Lowers, starts and registers a view.
    pub(super) fn create_view(
        &self,
        name: &str,
        plan: &LogicalPlan,
        sql: String,
        persist: bool,
        emit_on_close: bool,
        parallelism: usize,
    ) -> Result<Arc<ViewTable>> {
        // After a restart, the view's part of the last checkpoint (taken once).
        let restore = self.restoring.lock().remove(name);
        let (table, depends_on) = self.start_dataflow(
            name,
            plan,
            emit_on_close,
            parallelism,
            Reader::Everyone,
            restore,
        )?;
        self.ctx
            .register_table(name, Arc::clone(&table) as Arc<dyn TableProvider>)?;
        let create = CreateRelation {
            kind: ObjectKind::MaterializedView,
            name: name.to_string(),
            if_not_exists: false,
            columns: vec![],
            primary_key: vec![],
            watermark: None,
            append_only: false,
            includes: vec![],
            options: Default::default(),
            format: None,
        };
        let stored = StoredEntry {
            kind: ObjectKind::MaterializedView,
            name: name.to_string(),
            sql,
            // The session's parallelism stays the view's after a restart.
            resolved: (parallelism != 0)
                .then(|| (PARALLELISM_KEY.to_string(), parallelism.to_string()))
                .into_iter()
                .collect(),
            depends_on,
        };
        let entry = Entry {
            stored,
            create,
            schema: table.schema(),
            provider: Arc::clone(&table) as Arc<dyn CatalogRelation>,
        };
        let persisted = self.catalog.lock().insert(entry, persist);
        if let Err(e) = persisted {
            table.drop_view();
            let _ = self.ctx.deregister_table(name);
            return Err(e);
        }
        Ok(table)
    }

    /// Lowers `plan` and starts its dataflow; returns the view and the relations it reads.
    /// `name` labels the dataflow in logs. A `checkpointed` dataflow takes part in
    /// checkpoints, and starts from `restore` (its part of the last one) when its plan
    /// still matches it and every input can resume there; otherwise it starts afresh.
    pub(super) fn start_dataflow(
        &self,
        name: &str,
        plan: &LogicalPlan,
        emit_on_close: bool,
        parallelism: usize,
        reader: Reader,
        restore: Option<RestoredView>,
    ) -> Result<(Arc<ViewTable>, Vec<String>)> {
        let (checkpointed, retention) = match reader {
            Reader::Everyone => (true, Retention::Rows),
            Reader::Sink => (true, Retention::UntilSubscribed),
            Reader::Subscription => (false, Retention::UntilSubscribed),
        };
        let parallelism = match parallelism {
            0 => self.parallelism.max(1),
            n => n,
        };
        let props = ExecutionProps::new();
        let relations = |name: &str| self.relation(name);
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        // The plan once per core: each copy's keyed operators own the keys that hash to it.
        let (mut lowering, view) = lower_view(plan, &props, &relations, emit_on_close, retention)?;
        let meta = ViewMeta {
            fingerprint: fingerprint(&lowering.graph.describe()),
            parallelism,
            inputs: lowering
                .inputs
                .iter()
                .map(|i| (i.node, i.relation.clone()))
                .collect(),
        };
        let mut graphs = Vec::with_capacity(parallelism);
        let mut late_rows = std::mem::take(&mut lowering.late_rows);
        for _ in 1..parallelism {
            let (mut copy, _) = lower_view(plan, &props, &relations, emit_on_close, retention)?;
            late_rows.append(&mut copy.late_rows);
            graphs.push(copy.graph);
        }
        let inputs = std::mem::take(&mut lowering.inputs);
        let append_only = lowering.append_only;
        let notices = std::mem::take(&mut lowering.notices);
        graphs.insert(0, lowering.graph);
        let mut dataflow = Dataflow::new(graphs)?;
        // Per input node, the positions its splits resume at.
        let mut restore_note = None;
        let positions = match restore {
            Some(r) => match self.restorable(&meta, &r, &inputs) {
                Ok(positions) => {
                    if r.meta.parallelism != parallelism {
                        tracing::info!(view = %name, from = r.meta.parallelism, to = parallelism, "restoring at another parallelism: keyed state is dealt to the new instances");
                    }
                    dataflow.restore(r.snapshots, r.meta.parallelism)?;
                    Some(positions)
                }
                Err(why) => {
                    tracing::warn!(view = %name, reason = %why, "checkpoint not used; the view is derived again from its inputs");
                    restore_note = Some(format!(
                        "checkpoint not used ({why}); derived again from its inputs"
                    ));
                    None
                }
            },
            None => None,
        };
        let restored = positions.is_some();
        let no_positions = BTreeMap::new();
        let mut depends_on: Vec<String> = Vec::new();
        for input in &inputs {
            // A constant relation (a query reading no table) is no catalog object.
            let constant = input.relation == CONSTANT_RELATION;
            let (watermark, is_source) = if constant {
                (None, false)
            } else {
                let cat = self.catalog.lock();
                let entry = cat
                    .get(&input.relation)
                    .ok_or_else(|| SqlError::undefined_table(&input.relation))?;
                (
                    self.watermark_spec(entry)?,
                    entry.stored.kind == ObjectKind::Source,
                )
            };
            let source = input.provider.stream_input().ok_or_else(|| {
                SqlError::unsupported(format!(
                    "\"{}\" cannot feed a materialized view",
                    input.relation
                ))
            })?;
            let cx = InputContext {
                relation: &input.relation,
                barriers: &self.barriers,
                watermark,
                parallelism,
                progress: (is_source || source.reports_progress())
                    .then_some(self.progress.as_ref()),
                read_limit: &input.read_limit,
                resume: positions
                    .as_ref()
                    .map(|p| p.get(&input.node).unwrap_or(&no_positions)),
            };
            dataflow.input(input.node, source.open(&cx)?);
            if !constant && !depends_on.contains(&input.relation) {
                depends_on.push(input.relation.clone());
            }
        }
        let checkpointer = self.checkpointer.as_ref().filter(|_| checkpointed);
        let (snapshots_tx, snapshots) = mpsc::unbounded_channel();
        if checkpointer.is_some() {
            dataflow.checkpoint_to(snapshots_tx);
        }
        let (stats_tx, stats) = watch::channel(DataflowStats::default());
        let stats_tx = Arc::new(stats_tx);
        let started = dataflow.start(Arc::clone(&stats_tx))?;
        if let Some(c) = checkpointer {
            c.register(name, snapshots, started.checkpointing, meta);
        }
        let mut tasks = Vec::with_capacity(started.tasks.len());
        for run in started.tasks {
            let stats_tx = Arc::clone(&stats_tx);
            let view_name = name.to_string();
            let checkpointer = checkpointer.map(Arc::clone);
            // Dataflows wait while the catalog is replayed: a view restored at an epoch must
            // see no commit of a view it reads before it subscribed.
            let mut gate = self.gate.subscribe();
            tasks.push(self.cpu.spawn(async move {
                let _ = gate.wait_for(|open| *open).await;
                let run = std::panic::AssertUnwindSafe(run).catch_unwind();
                let result = run.await.unwrap_or_else(|panic| {
                    Err(weir_engine::EngineError::Internal(panic_message(
                        panic.as_ref(),
                    )))
                });
                if let Err(e) = result {
                    // Any stage failing fails the view: reading it then reports the error.
                    tracing::error!(view = %view_name, error = %e, "dataflow failed");
                    if let Some(c) = checkpointer {
                        c.unregister(&view_name);
                    }
                    stats_tx.send_modify(|s| {
                        s.error = Some(e.to_string());
                        s.epoch = u64::MAX;
                    });
                }
            })?);
        }
        let running = RunningDataflow {
            tasks,
            stats,
            late_rows,
            notices,
            parallelism,
            restored,
            restore_note,
            topology: started.topology,
            operators: started.operators,
            inputs: inputs
                .iter()
                .map(|i| (i.node, i.relation.clone()))
                .collect(),
        };
        let table = Arc::new(ViewTable::new(schema, view, running, append_only));
        Ok((table, depends_on))
    }

    /// The positions (per input node, per split) a view's dataflow resumes at from its part
    /// of a checkpoint, or why it cannot.
    fn restorable(
        &self,
        meta: &ViewMeta,
        restore: &RestoredView,
        inputs: &[crate::dataflow::Input],
    ) -> std::result::Result<BTreeMap<usize, BTreeMap<i32, SplitPosition>>, String> {
        if restore.meta.fingerprint != meta.fingerprint {
            return Err(format!(
                "its plan changed since (checkpointed {}, now {})",
                restore.meta.fingerprint, meta.fingerprint
            ));
        }
        let mut positions: BTreeMap<usize, BTreeMap<i32, SplitPosition>> = BTreeMap::new();
        for s in &restore.snapshots {
            for (node, p) in &s.positions {
                positions.entry(*node).or_default().insert(p.partition, *p);
            }
        }
        for input in inputs {
            let at = positions.entry(input.node).or_default();
            let resumes = input
                .provider
                .stream_input()
                .is_some_and(|s| s.can_resume(at));
            if !resumes {
                return Err(format!("{} cannot resume from it", input.relation));
            }
        }
        Ok(positions)
    }

    /// Starts an epoch and waits until `table`'s dataflow committed it: a new view is served
    /// once its tables' current rows are in it.
    pub(super) async fn next_epoch_of(&self, table: &ViewTable) {
        if let Some(stats) = table.stats() {
            wait_for_epoch(stats, self.barriers.inject().epoch).await;
        }
    }

    /// FLUSH: returns once every view reflects everything accepted before it was called.
    pub async fn flush(&self) -> Result<()> {
        let epoch = self.barriers.inject().epoch;
        let views: Vec<_> = self
            .catalog
            .lock()
            .providers(ObjectKind::MaterializedView)
            .into_iter()
            .filter_map(|(_, p)| p.as_view()?.stats())
            .collect();
        for stats in views {
            wait_for_epoch(stats, epoch).await;
        }
        Ok(())
    }
}

/// Waits until a dataflow committed `epoch` (or failed, or stopped).
async fn wait_for_epoch(mut stats: watch::Receiver<DataflowStats>, epoch: u64) {
    let _ = stats
        .wait_for(|s| s.epoch >= epoch || s.error.is_some())
        .await;
}

/// Who reads a dataflow's view, which decides whether it is checkpointed and keeps its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reader {
    /// A materialized view: queried, subscribed to, read by other views and sinks.
    Everyone,
    /// A sink's own query (`CREATE SINK ... AS`, or a sink from a source or table):
    /// checkpointed, and its rows go once the sink's writer subscribed.
    Sink,
    /// A SUBSCRIBE to a query: neither checkpointed nor kept.
    Subscription,
}

/// Where a view's `streaming_parallelism` is kept in its catalog entry.
pub(super) const PARALLELISM_KEY: &str = "streaming_parallelism";

/// Lowers a view's plan and adds its `Materialize`, which gathers the rows into one
/// instance; returns the lowering and the view's shared state.
fn lower_view<'a>(
    plan: &LogicalPlan,
    props: &'a ExecutionProps,
    relations: &'a dyn Fn(&str) -> Option<Arc<dyn CatalogRelation>>,
    emit_on_close: bool,
    retention: Retention,
) -> Result<(Lowering<'a>, SharedView)> {
    let mut lowering = Lowering::new(props, relations, emit_on_close);
    let out = lowering.lower_plan(plan)?;
    let materialize =
        Materialize::with_retention(Arc::new(plan.schema().as_arrow().clone()), retention)?;
    let view = materialize.view();
    let sink = lowering.graph.add(Box::new(materialize));
    lowering
        .graph
        .exchange(out, sink, 0, Partitioning::Single)?;
    Ok((lowering, view))
}

/// A hash of a dataflow's plan (its EXPLAIN lines) and the operators' state format: a
/// checkpoint is restored only into the plan it was taken of (at any parallelism: keyed
/// state is dealt to the instances there are now).
fn fingerprint(describe: &[String]) -> String {
    let text = format!(
        "{}\nstate format {}",
        describe.join("\n"),
        weir_engine::state::STATE_FORMAT
    );
    format!("{:08x}", crc32fast::hash(text.as_bytes()))
}
