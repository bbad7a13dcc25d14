//! `Database`: the catalog plus a DataFusion context that sees every relation in it.
//! It runs weir's own statements and plans and executes everything DataFusion handles.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast;
use parking_lot::Mutex;
use tokio::sync::watch;
use weir_engine::checkpoint::{CheckpointStore, LocalStore};
use weir_engine::runtime::{Barriers, GraphSnapshot};
use weir_engine::{SplitPosition, TableBase};

use crate::access::{Access, HasTablePrivilege, RolesCatalog};
use crate::catalog::CatalogRelation;
use crate::catalog::{Catalog, Entry, StoredEntry, io_error};
use crate::checkpoint::Checkpointer;
use crate::checkpoint::manifest::{Loaded, ViewMeta};
use crate::column_names::{finish_names, name_select_list};
use crate::cpu_runtime::CpuRuntime;
use crate::dataflow::{ProgressRegistry, ViewTable};
use crate::error::{Result, SqlError};
use crate::interrupt::Interrupt;
use crate::operand_types::check_operand_types;
use crate::pg_catalog::WeirPgCatalog;
use crate::pg_keys::PrimaryKeys;
use crate::provider::ScanReport;
use crate::provider::{Lookup, SessionKeys, TemporalFunction, WindowFunction};
use crate::relation::{build, resolve_defaults};
use crate::spellings::normalize_spellings;
use crate::statement::{CreateRelation, ObjectKind, ParsedStatement, Statement, StatementParser};
use crate::types::field_type_name;

mod execute;
mod introspection;
mod sinks;
mod subscription;
mod views;

pub use execute::Executed;
pub use subscription::Subscription;

/// The database name clients see (`current_database()`), and DataFusion's catalog name.
pub const DATABASE_NAME: &str = "weir";
/// What `version()` and the `server_version` parameter report.
pub const SERVER_VERSION: &str = "15.0";

/// What a statement returns.
#[derive(Debug)]
pub enum Output {
    /// A completed command: its tag (`CREATE SOURCE`) and, for DML, the rows affected.
    Command { tag: String, rows: Option<usize> },
    /// A result set.
    Rows {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
}

/// A query's rows plus what its source scans skipped.
#[derive(Debug)]
pub struct QueryResult {
    pub output: Output,
    pub report: Arc<ScanReport>,
}

/// The catalog and the engine behind one server.
pub struct Database {
    ctx: SessionContext,
    parser: Arc<StatementParser>,
    catalog: Mutex<Catalog>,
    data_dir: Option<PathBuf>,
    cpu: CpuRuntime,
    barriers: Arc<Barriers>,
    progress: Arc<ProgressRegistry>,
    /// Splits per generator source in a dataflow.
    parallelism: usize,
    /// The checkpoint coordinator (None without a data dir).
    checkpointer: Option<Arc<Checkpointer>>,
    /// What the last committed checkpoint holds of each view, taken as views are restored.
    restoring: Mutex<BTreeMap<String, RestoredView>>,
    /// And of each DML table: its rows at a log position.
    restoring_tables: Mutex<BTreeMap<String, TableBase>>,
    /// Dataflows start once it opens: after the catalog is replayed.
    gate: watch::Sender<bool>,
    /// Roles, logins and privileges.
    access: Arc<Access>,
}

/// A view's part of a checkpoint: what its dataflow must match, and its task snapshots.
#[derive(Debug)]
pub(crate) struct RestoredView {
    pub(crate) meta: ViewMeta,
    pub(crate) snapshots: Vec<GraphSnapshot>,
}

/// How often a checkpoint is taken by default (`--checkpoint-interval`).
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);
/// How long a final checkpoint (SIGTERM) may take before the server stops without it.
const FINAL_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(6);

/// How often an epoch ends by default: the bound on a view's staleness under load.
pub(crate) const DEFAULT_BARRIER_INTERVAL: Duration = Duration::from_millis(100);

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

/// How a database is opened: where it keeps what it stores, how often it checkpoints, and
/// how many instances its views run keyed operators on by default.
#[derive(Debug, Clone)]
pub struct Options {
    /// Catalog, table logs and checkpoints (created if missing); None keeps everything
    /// in memory.
    pub data_dir: Option<PathBuf>,
    /// How often views are checkpointed (None: only at shutdown).
    pub checkpoint_interval: Option<Duration>,
    /// The key sealing credentials in the catalog, kept outside the data dir (None: the
    /// data dir's `secret.key`).
    pub secret_key_file: Option<PathBuf>,
    /// Instances of each keyed operator of a view whose session set no
    /// `streaming_parallelism` (None: one per core). A view checkpointed at another
    /// parallelism is restored at this one.
    pub parallelism: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            data_dir: None,
            checkpoint_interval: Some(DEFAULT_CHECKPOINT_INTERVAL),
            secret_key_file: None,
            parallelism: None,
        }
    }
}

impl Database {
    /// Opens the database `storage` describes, re-creating every stored object and
    /// restoring views from the last committed checkpoint in the data dir.
    pub fn open(options: Options) -> Result<Arc<Self>> {
        let Options {
            data_dir,
            checkpoint_interval,
            secret_key_file,
            parallelism,
        } = options;
        if let Some(dir) = &data_dir {
            std::fs::create_dir_all(dir.join("tables")).map_err(io_error)?;
        }
        let store: Option<Arc<dyn CheckpointStore>> = match &data_dir {
            Some(dir) => Some(LocalStore::open(dir.join("checkpoints"))?),
            None => None,
        };
        let loaded = match &store {
            Some(store) => load_checkpoint(Arc::clone(store))?,
            None => None,
        };
        // Epochs go on after every epoch the checkpoint holds state of.
        let last_epoch = loaded.as_ref().map_or(0, |l| {
            l.snapshots
                .iter()
                .flatten()
                .map(|s| s.epoch)
                .chain([l.manifest.epoch])
                .max()
                .unwrap_or(0)
        });
        let barriers = Barriers::start_after(DEFAULT_BARRIER_INTERVAL, last_epoch);
        let (source_positions, restoring, restoring_tables, retained) = match loaded {
            Some(l) => {
                if let Some(dir) = &data_dir {
                    tracing::info!(epoch = l.manifest.epoch, dir = %dir.display(), "restoring views from checkpoint");
                }
                let retained = vec![crate::checkpoint::info(&l.manifest)];
                let positions = source_positions(&l);
                let tables = l
                    .manifest
                    .tables
                    .iter()
                    .map(|t| t.name.clone())
                    .zip(l.tables)
                    .collect();
                let views = l
                    .manifest
                    .views
                    .into_iter()
                    .zip(l.snapshots)
                    .map(|(v, snapshots)| {
                        (
                            v.name,
                            RestoredView {
                                meta: v.meta,
                                snapshots,
                            },
                        )
                    })
                    .collect();
                (positions, views, tables, retained)
            }
            None => Default::default(),
        };
        let checkpointer = match store {
            Some(store) => Some(Arc::new(Checkpointer::start(
                store,
                Arc::clone(&barriers),
                checkpoint_interval,
                retained,
            )?)),
            None => None,
        };
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(DATABASE_NAME, "public")
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(true);
        // timestamptz values (now(), casts, literals) are instants in UTC, as stored
        // columns are (docs/sql.md); the session's TimeZone applies when they are printed.
        config.options_mut().execution.time_zone = Some("+00:00".to_string());
        let mut ctx = SessionContext::new_with_config(config);
        let access = Arc::new(Access::new(crate::roles::Roles::load(data_dir.as_deref())?));
        datafusion_pg_catalog::setup_pg_catalog(
            &ctx,
            DATABASE_NAME,
            RolesCatalog(Arc::clone(&access)),
        )
        .map_err(|e| SqlError::from(*e))?;
        ctx.register_udf(HasTablePrivilege::udf(Arc::clone(&access)));
        if let Some(catalog) = ctx.catalog(DATABASE_NAME)
            && let Some(pg_catalog) = catalog.schema("pg_catalog")
        {
            let catalogs = Arc::clone(ctx.state().catalog_list());
            let keys = Arc::new(PrimaryKeys::default());
            catalog.register_schema(
                "pg_catalog",
                Arc::new(WeirPgCatalog::new(pg_catalog, &catalogs, Arc::clone(&keys))),
            )?;
            ctx.register_udf(crate::pg_keys::index_definition_udf(Arc::clone(&keys)));
            ctx.register_udf(crate::pg_keys::constraint_definition_udf(keys));
        }
        ctx.register_udf(crate::functions::version_udf());
        ctx.register_udf(crate::functions::size_pretty_udf());
        ctx.register_udf(crate::functions::like_pattern_udf());
        ctx.register_udf(crate::functions::pg_data_type_udf());
        ctx.register_udf(crate::functions::json_build_object_udf());
        for udf in crate::jsonb::udfs() {
            ctx.register_udf(udf);
        }
        datafusion::execution::FunctionRegistry::register_expr_planner(
            &mut ctx,
            Arc::new(crate::interval_arithmetic::IntervalArithmetic),
        )?;
        ctx.register_udf(crate::functions::to_regtype_udf());
        ctx.register_udf(crate::functions::current_setting_udf());
        ctx.register_udf(crate::functions::session_user_udf());
        ctx.register_udf(crate::functions::user_by_id_udf());
        for name in [
            "pg_function_is_visible",
            "pg_type_is_visible",
            "pg_collation_is_visible",
        ] {
            ctx.register_udf(crate::functions::is_visible_udf(name));
        }
        for udf in crate::functions::nothing_to_describe_udfs() {
            ctx.register_udf(udf);
        }
        // Postgres spells DataFusion's signum `sign`.
        if let Ok(signum) = datafusion::execution::FunctionRegistry::udf(&ctx, "signum") {
            ctx.register_udf(signum.as_ref().clone().with_aliases(["sign"]));
        }
        let (catalog, stored) = Catalog::load(data_dir.as_deref(), secret_key_file.as_deref())?;
        let cpu = CpuRuntime::new()?;
        let parallelism = parallelism
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let db = Arc::new_cyclic(|weak: &Weak<Self>| {
            let weak = Weak::clone(weak);
            let lookup: Lookup = Arc::new(move |name: &str| {
                let db = weak.upgrade()?;
                let cat = db.catalog.lock();
                cat.get(name).map(|e| Arc::clone(&e.provider))
            });
            // DataFusion looks table functions up by the name as written.
            for name in ["tumble", "TUMBLE", "Tumble"] {
                ctx.register_udtf(name, Arc::new(WindowFunction::tumble(Arc::clone(&lookup))));
            }
            for name in ["hop", "HOP", "Hop"] {
                ctx.register_udtf(name, Arc::new(WindowFunction::hop(Arc::clone(&lookup))));
            }
            for name in ["session", "SESSION", "Session"] {
                ctx.register_udtf(name, Arc::new(WindowFunction::session(Arc::clone(&lookup))));
            }
            for name in ["temporal", "TEMPORAL"] {
                let lookup = Arc::clone(&lookup);
                ctx.register_udtf(name, Arc::new(TemporalFunction { lookup }));
            }
            ctx.add_optimizer_rule(Arc::new(SessionKeys));
            Self {
                ctx,
                parser: Arc::new(StatementParser::default()),
                catalog: Mutex::new(catalog),
                data_dir,
                cpu,
                barriers,
                progress: Arc::new(ProgressRegistry::default()),
                parallelism,
                checkpointer,
                restoring: Mutex::new(restoring),
                restoring_tables: Mutex::new(restoring_tables),
                gate: watch::channel(false).0,
                access,
            }
        });
        introspection::register(&db)?;
        let mut fresh = Vec::new();
        for entry in stored {
            match db.replay(&entry, &source_positions) {
                Ok(Some(view)) if !view.restored() => fresh.push(view),
                Ok(_) => {}
                Err(e) => {
                    let error = crate::secrets::scrub(&e.to_string(), &entry.sql);
                    tracing::error!(name = %entry.name, %error, "could not re-create catalog object");
                    db.catalog.lock().keep_unrestored(entry);
                }
            }
        }
        let unused: Vec<String> = std::mem::take(&mut *db.restoring.lock())
            .into_keys()
            .collect();
        if !unused.is_empty() {
            tracing::warn!(views = ?unused, "checkpointed views no longer in the catalog");
        }
        db.gate.send_replace(true);
        // Restored views have subscribed: tables need not keep their replayed changes.
        for (_, provider) in db.catalog.lock().providers(ObjectKind::Table) {
            if let Some(table) = provider.as_table() {
                table.store().lock().forget_replayed();
            }
        }
        // As after CREATE: a view derived again is served once it committed its first epoch.
        for view in fresh {
            futures::executor::block_on(db.next_epoch_of(&view));
        }
        if let Some(c) = &db.checkpointer {
            c.resume();
        }
        Ok(db)
    }

    /// Stops the database for a server shutdown: takes a final checkpoint (so a restart
    /// resumes from now), then stops checkpoints and every dataflow.
    pub async fn shutdown(&self) {
        if let Some(c) = &self.checkpointer {
            match c.checkpoint_now(FINAL_CHECKPOINT_TIMEOUT).await {
                Ok(epoch) => tracing::info!(epoch, "final checkpoint committed"),
                Err(e) => {
                    tracing::warn!(error = %e, "no final checkpoint; a restart resumes from the last one")
                }
            }
            c.stop();
        }
        for (_, provider) in self.catalog.lock().providers(ObjectKind::MaterializedView) {
            if let Some(view) = provider.as_view() {
                view.drop_view();
            }
        }
    }

    /// The retained checkpoints, oldest first.
    /// The catalog's relation `name`.
    pub(crate) fn relation(&self, name: &str) -> Option<Arc<dyn CatalogRelation>> {
        self.catalog
            .lock()
            .get(name)
            .map(|e| Arc::clone(&e.provider))
    }

    /// The epoch the sources are in now.
    pub fn current_epoch(&self) -> u64 {
        self.barriers.current().epoch
    }

    /// The newest committed checkpoint: (epoch, duration ms, bytes written).
    pub fn last_checkpoint(&self) -> Option<(u64, u64, u64)> {
        self.checkpoints()
            .last()
            .map(|c| (c.epoch, c.duration_ms, c.bytes))
    }

    pub(crate) fn checkpoints(&self) -> Vec<crate::checkpoint::CheckpointInfo> {
        self.checkpointer
            .as_ref()
            .map(|c| c.retained())
            .unwrap_or_default()
    }

    /// Takes a checkpoint now and returns its epoch once it is committed.
    pub async fn checkpoint(&self) -> Result<u64> {
        match &self.checkpointer {
            Some(c) => c.checkpoint_now(Duration::from_secs(60)).await,
            None => Err(SqlError::new("0A000", "checkpoints need a data directory")),
        }
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Roles, logins and privileges.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The check before a statement of a session of `user` runs (42501 when it may not);
    /// `plan` is a planned query's. A subscription's query is planned here to see what it
    /// reads, only for roles whose privileges are checked.
    pub async fn authorize(
        &self,
        user: &str,
        statement: &ParsedStatement,
        plan: Option<&LogicalPlan>,
    ) -> Result<()> {
        let mut plans: Vec<LogicalPlan> = plan.into_iter().cloned().collect();
        if let Statement::Subscribe { target, .. } = &statement.statement
            && self.access.checks(user)
        {
            let query = match target {
                crate::statement::SubscribeTarget::View(name) => {
                    format!("SELECT * FROM {}", quote_ident(name))
                }
                crate::statement::SubscribeTarget::Query(q) => q.clone(),
            };
            let ast = self.parser.parse_view_query(&query)?;
            plans.push(self.plan(&ast).await?);
        }
        let plans: Vec<&LogicalPlan> = plans.iter().collect();
        let is_relation = |name: &str| self.catalog.lock().contains(name);
        self.access
            .authorize(user, &statement.statement, &plans, &is_relation)
    }

    /// Splits and parses query text; stops (57014) when `interrupt` fires.
    pub fn parse(&self, sql: &str, interrupt: &Interrupt) -> Result<Vec<ParsedStatement>> {
        self.parser.parse(sql, interrupt)
    }

    /// `parse` on the statement threads.
    pub async fn parse_on_query_threads(
        &self,
        sql: String,
        interrupt: Interrupt,
    ) -> Result<Vec<ParsedStatement>> {
        let parser = Arc::clone(&self.parser);
        self.cpu
            .run_sync(move || parser.parse(&sql, &interrupt))
            .await
    }

    fn tables_dir(&self) -> Option<PathBuf> {
        self.data_dir.as_ref().map(|d| d.join("tables"))
    }

    /// Where a sink keeps what its destination has not committed (`sink::SinkLog`).
    fn sink_log_dir(&self, sink: &str) -> Option<PathBuf> {
        self.data_dir.as_ref().map(|d| {
            d.join("sinks")
                .join(crate::relation::table_file_name(sink, "log"))
        })
    }

    /// Re-creates a stored object; a view is returned (restored from the checkpoint, or
    /// started afresh). A source's shared readers resume at `source_positions`.
    fn replay(
        &self,
        stored: &StoredEntry,
        source_positions: &SourcePositions,
    ) -> Result<Option<Arc<ViewTable>>> {
        let parsed = self.parser.parse(&stored.sql, &Interrupt::default())?;
        if let Some(Statement::CreateView {
            query,
            emit_on_close,
            ..
        }) = parsed.first().map(|p| &p.statement)
        {
            // Planning only resolves in-memory catalog entries, so no runtime is needed here.
            let plan = futures::executor::block_on(self.plan_view_query(query))?;
            let view = self.create_view(
                &stored.name,
                &plan,
                stored.sql.clone(),
                false,
                *emit_on_close,
                stored
                    .resolved
                    .get(views::PARALLELISM_KEY)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )?;
            return Ok(Some(view));
        }
        if let Some(Statement::CreateSink(sink)) = parsed.first().map(|p| &p.statement) {
            let parallelism = stored
                .resolved
                .get(views::PARALLELISM_KEY)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            futures::executor::block_on(self.create_sink(
                sink,
                stored.sql.clone(),
                parallelism,
                false,
            ))?;
            return Ok(None);
        }
        let Some(Statement::Create(create)) = parsed.into_iter().next().map(|p| p.statement) else {
            return Err(SqlError::new(
                "XX001",
                format!("catalog entry {} is not a CREATE", stored.name),
            ));
        };
        let mut create = *create;
        create.options.extend(stored.resolved.clone());
        let name = create.name.clone();
        self.create(create, stored.sql.clone(), stored.resolved.clone(), false)?;
        if let Some(positions) = source_positions.get(&name)
            && let Some(entry) = self.catalog.lock().get(&name)
            && let Some(readers) = entry.provider.shared_readers()
        {
            readers.resume_at(positions.clone());
        }
        Ok(None)
    }

    fn create(
        &self,
        create: CreateRelation,
        sql: String,
        resolved: BTreeMap<String, String>,
        fresh: bool,
    ) -> Result<()> {
        let base = self.restoring_tables.lock().remove(&create.name);
        let built = build(&create, self.tables_dir().as_deref(), fresh, base)?;
        if let Some(c) = &self.checkpointer
            && let Some(table) = built.provider.as_table()
        {
            c.register_table(&create.name, table.store());
        }
        self.ctx.register_table(
            create.name.as_str(),
            Arc::clone(&built.provider) as Arc<dyn datafusion::catalog::TableProvider>,
        )?;
        let stored = StoredEntry {
            kind: create.kind,
            name: create.name.clone(),
            sql,
            resolved,
            depends_on: vec![],
        };
        let entry = Entry {
            stored,
            create,
            schema: built.schema,
            provider: built.provider,
        };
        let name = entry.stored.name.clone();
        let persisted = self.catalog.lock().insert(entry, fresh);
        if persisted.is_err() {
            let _ = self.ctx.deregister_table(name.as_str());
        }
        persisted
    }

    /// Runs synchronous work of a statement (parsing, catalog changes) on the statement
    /// threads, whose stacks are large, apart from the connections and from queries that
    /// hold the query threads; a panic in it becomes XX000.
    pub async fn on_query_threads<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.cpu.run_sync(f).await
    }

    /// Plans a statement DataFusion understands (on the statement threads).
    pub async fn plan(&self, statement: &ast::Statement) -> Result<LogicalPlan> {
        let state = self.ctx.state();
        let mut statement = statement.clone();
        // On the statement threads: naming walks the statement as deep as planning does.
        let plan = self
            .cpu
            .plan(async move {
                let names = name_select_list(&mut statement);
                normalize_spellings(&mut statement);
                let plan = state
                    .statement_to_plan(DFStatement::Statement(Box::new(statement)))
                    .await?;
                check_operand_types(&plan)?;
                finish_names(plan, &names, false)
            })
            .await??;
        match &plan {
            LogicalPlan::Ddl(ddl) => Err(SqlError::unsupported(format!(
                "{} is not supported",
                ddl.name()
            ))),
            LogicalPlan::Copy(_) => Err(SqlError::unsupported("COPY is not supported")),
            _ => Ok(plan),
        }
    }

    /// Runs a planned query or DML statement to completion.
    pub async fn execute_plan(&self, plan: LogicalPlan) -> Result<QueryResult> {
        let report = Arc::new(ScanReport::default());
        let state = self.ctx.state();
        let config = state.config().clone().with_extension(Arc::clone(&report));
        let state = SessionStateBuilder::new_from_existing(state)
            .with_config(config)
            .build();
        let dml = match &plan {
            LogicalPlan::Dml(d) => Some(d.op.to_string()),
            _ => None,
        };
        let df = DataFrame::new(state, plan);
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = self.cpu.run(df.collect()).await??;
        let output = match dml {
            Some(op) => {
                let rows = batches
                    .first()
                    .and_then(|b| {
                        b.column(0)
                            .as_any()
                            .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                            .map(|a| a.value(0))
                    })
                    .unwrap_or(0) as usize;
                let tag = match op.as_str() {
                    "Insert Into" | "Insert Append" => "INSERT 0".to_string(),
                    "Update" => "UPDATE".to_string(),
                    "Delete" => "DELETE".to_string(),
                    other => other.to_ascii_uppercase(),
                };
                Output::Command {
                    tag,
                    rows: Some(rows),
                }
            }
            None => Output::Rows { schema, batches },
        };
        Ok(QueryResult { output, report })
    }

    /// The columns a catalog statement returns (empty for commands).
    pub fn output_schema(statement: &Statement) -> Option<SchemaRef> {
        let utf8 = |names: &[&str]| {
            Arc::new(Schema::new(
                names
                    .iter()
                    .map(|n| Field::new(*n, DataType::Utf8, true))
                    .collect::<Vec<_>>(),
            ))
        };
        match statement {
            Statement::ShowObjects(_) => Some(utf8(&["name"])),
            Statement::ShowCreate { .. } => Some(utf8(&["name", "create_sql"])),
            Statement::Describe(_) => Some(Arc::new(Schema::new(vec![
                Field::new("name", DataType::Utf8, false),
                Field::new("type", DataType::Utf8, false),
                Field::new("primary_key", DataType::Boolean, false),
            ]))),
            _ => None,
        }
    }

    /// Runs one of weir's catalog statements.
    pub fn execute_catalog(&self, statement: &ParsedStatement) -> Result<Output> {
        match &statement.statement {
            Statement::Create(c) => self.execute_create(c, &statement.text),
            Statement::Drop {
                kind,
                names,
                if_exists,
                cascade,
            } => {
                for name in names {
                    self.drop(*kind, name, *if_exists, *cascade)?;
                }
                Ok(command(format!("DROP {}", kind.sql_name())))
            }
            Statement::Role(r) => {
                let relations: Vec<String> = [
                    ObjectKind::Source,
                    ObjectKind::Table,
                    ObjectKind::MaterializedView,
                ]
                .into_iter()
                .flat_map(|k| self.catalog.lock().names(k))
                .collect();
                self.access.execute(r, &relations)?;
                Ok(command(r.to_string()))
            }
            Statement::ShowObjects(kind) => {
                let names = self.catalog.lock().names(*kind);
                rows(statement, vec![Arc::new(StringArray::from(names))])
            }
            Statement::ShowCreate { kind, name } => {
                let cat = self.catalog.lock();
                let e = cat
                    .get(name)
                    .filter(|e| e.stored.kind == *kind)
                    .ok_or_else(|| SqlError::undefined_table(name))?;
                rows(
                    statement,
                    vec![
                        Arc::new(StringArray::from(vec![name.clone()])),
                        Arc::new(StringArray::from(vec![crate::secrets::redact(
                            &e.stored.sql,
                        )])),
                    ],
                )
            }
            Statement::Describe(name) => {
                let cat = self.catalog.lock();
                let e = cat
                    .get(name)
                    .ok_or_else(|| SqlError::undefined_table(name))?;
                let fields = e.schema.fields();
                let pk: Vec<bool> = fields
                    .iter()
                    .map(|f| e.create.primary_key.contains(f.name()))
                    .collect();
                rows(
                    statement,
                    vec![
                        Arc::new(StringArray::from_iter_values(
                            fields.iter().map(|f| f.name().clone()),
                        )),
                        Arc::new(StringArray::from_iter_values(
                            fields.iter().map(|f| field_type_name(f)),
                        )),
                        Arc::new(BooleanArray::from(pk)),
                    ],
                )
            }
            other => Err(SqlError::new(
                "XX000",
                format!("not a catalog statement: {other:?}"),
            )),
        }
    }

    fn execute_create(&self, c: &CreateRelation, sql: &str) -> Result<Output> {
        let tag = format!("CREATE {}", c.kind.sql_name());
        if self.catalog.lock().contains(&c.name) {
            if c.if_not_exists {
                return Ok(command(tag));
            }
            return Err(SqlError::duplicate_table(&c.name));
        }
        if self.ctx.table_exist(c.name.as_str())? {
            return Err(SqlError::duplicate_table(&c.name));
        }
        let resolved = resolve_defaults(c);
        let mut create = c.clone();
        create.options.extend(resolved.clone());
        self.create(create, sql.to_string(), resolved, true)?;
        Ok(command(tag))
    }

    fn drop(&self, kind: ObjectKind, name: &str, if_exists: bool, cascade: bool) -> Result<()> {
        let dependents = self.catalog.lock().dependents(name);
        if !dependents.is_empty() {
            if !cascade {
                return Err(SqlError::new(
                    "2BP01",
                    format!("cannot drop {name} because other objects depend on it"),
                )
                .with_detail(format!(
                    "{} depends on it; use CASCADE to drop them too",
                    dependents.join(", ")
                )));
            }
            for d in dependents {
                let kind = self.catalog.lock().get(&d).map(|e| e.stored.kind);
                if let Some(kind) = kind {
                    self.drop(kind, &d, true, true)?;
                }
            }
        }
        let mut cat = self.catalog.lock();
        match cat.get(name) {
            None if if_exists => return Ok(()),
            None => return Err(SqlError::undefined_table(name)),
            Some(e) if e.stored.kind != kind => {
                return Err(SqlError::new(
                    "42809",
                    format!("\"{name}\" is not a {}", kind.sql_name().to_lowercase()),
                )
                .with_detail(format!(
                    "Use DROP {} to remove it.",
                    e.stored.kind.sql_name()
                )));
            }
            Some(_) => {}
        }
        if let Some(entry) = cat.remove(name)? {
            if let Some(view) = entry.provider.as_view() {
                view.drop_view();
                if let Some(c) = &self.checkpointer {
                    c.unregister(name);
                }
            }
            if entry.stored.kind == ObjectKind::Sink
                && let Some(c) = &self.checkpointer
            {
                c.unregister(name);
                c.unregister(&sinks::own_dataflow(name));
            }
            if let Some(sink) = entry.provider.as_sink() {
                sink.stop_log();
            }
            if entry.stored.kind == ObjectKind::Sink
                && let Some(dir) = self.sink_log_dir(name)
                && dir.exists()
                && let Err(e) = std::fs::remove_dir_all(&dir)
            {
                // Its log's thread may still be finishing a write: what is left there is
                // removed by the next sink of this name.
                tracing::warn!(dir = %dir.display(), error = %e, "a dropped sink's log is left");
            }
        }
        drop(cat);
        if let (ObjectKind::Table, Some(c)) = (kind, &self.checkpointer) {
            c.unregister_table(name);
        }
        self.access.forget_relation(name)?;
        self.ctx.deregister_table(name)?;
        if let (ObjectKind::Table, Some(dir)) = (kind, self.tables_dir()) {
            let wal = dir.join(crate::relation::table_file_name(name, "wal"));
            if wal.exists() {
                std::fs::remove_file(wal).map_err(io_error)?;
            }
        }
        Ok(())
    }
}

/// Per source, per partition: the furthest position a checkpointed view reads it at.
type SourcePositions = BTreeMap<String, BTreeMap<i32, SplitPosition>>;

fn source_positions(loaded: &Loaded) -> SourcePositions {
    let mut out = SourcePositions::new();
    for (view, snapshots) in loaded.manifest.views.iter().zip(&loaded.snapshots) {
        let relation: BTreeMap<usize, &String> =
            view.meta.inputs.iter().map(|(n, r)| (*n, r)).collect();
        for (node, p) in snapshots.iter().flat_map(|s| &s.positions) {
            let Some(name) = relation.get(node) else {
                continue;
            };
            let slot = out.entry((*name).clone()).or_default();
            if slot.get(&p.partition).is_none_or(|q| q.offset < p.offset) {
                slot.insert(p.partition, *p);
            }
        }
    }
    out
}

/// The last committed checkpoint in `store`, read on a thread of its own (the store is
/// async and this runs inside the server's start-up).
fn load_checkpoint(store: Arc<dyn CheckpointStore>) -> Result<Option<Loaded>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SqlError::new("XX000", format!("cannot read checkpoints: {e}")))?;
        runtime.block_on(crate::checkpoint::manifest::load_latest(store.as_ref()))
    })
    .join()
    .map_err(|_| SqlError::new("XX000", "reading the checkpoint panicked"))?
}

/// `name` as an identifier Postgres reads back as the same name.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn command(tag: String) -> Output {
    Output::Command { tag, rows: None }
}

fn rows(statement: &ParsedStatement, columns: Vec<ArrayRef>) -> Result<Output> {
    let schema = Database::output_schema(&statement.statement)
        .ok_or_else(|| SqlError::new("XX000", "no output schema"))?;
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)
        .map_err(|e| SqlError::new("XX000", e.to_string()))?;
    Ok(Output::Rows {
        schema,
        batches: vec![batch],
    })
}
