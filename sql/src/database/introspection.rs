//! `weir_catalog.source_progress`, `dataflows`, `checkpoints`, `sink_progress` and
//! `pg_catalog.pg_matviews` and `pg_settings`: tables computed from the catalog, the
//! running dataflows and the parameters each time they are read.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
    TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::{DATABASE_NAME, Database};
use crate::dataflow::{DataflowGraph, ViewStatus};
use crate::error::{Result, SqlError};
use crate::interrupt::Interrupt;
use crate::statement::{ObjectKind, Statement};
use weir_engine::runtime::SplitProgress;

type Rows = Box<dyn Fn(&Database) -> DfResult<Vec<ArrayRef>> + Send + Sync>;

/// A table whose rows are computed from the database when scanned.
struct StatusTable {
    schema: SchemaRef,
    db: Weak<Database>,
    rows: Rows,
}

impl std::fmt::Debug for StatusTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusTable")
            .field("schema", &self.schema)
            .finish()
    }
}

#[async_trait]
impl TableProvider for StatusTable {
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
        let db = self
            .db
            .upgrade()
            .ok_or_else(|| DataFusionError::Internal("database closed".into()))?;
        let batch = RecordBatch::try_new(self.schema(), (self.rows)(&db)?)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

fn source_progress() -> (SchemaRef, Rows) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("source_name", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("next_offset", DataType::Int64, false),
        Field::new("high_watermark", DataType::Int64, false),
        Field::new("lag", DataType::Int64, false),
        Field::new(
            "watermark",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        ),
        Field::new("rows", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("parse_errors", DataType::Int64, false),
        Field::new("late_rows", DataType::Int64, false),
        Field::new("last_error", DataType::Utf8, true),
    ]));
    let rows: Rows = Box::new(|db| {
        let splits = db.source_progress();
        let int = |f: &dyn Fn(&SplitProgress) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                splits.iter().map(|(_, _, p)| f(p)),
            ))
        };
        Ok(vec![
            Arc::new(StringArray::from_iter_values(
                splits.iter().map(|s| s.0.clone()),
            )),
            Arc::new(Int32Array::from_iter_values(splits.iter().map(|s| s.1))),
            int(&|p| p.next_offset),
            int(&|p| p.high_watermark),
            int(&|p| (p.high_watermark - p.next_offset).max(0)),
            Arc::new(TimestampNanosecondArray::from_iter(
                splits.iter().map(|(_, _, p)| p.watermark),
            )),
            int(&|p| p.rows as i64),
            int(&|p| p.bytes as i64),
            int(&|p| p.parse_errors as i64),
            int(&|p| p.late_rows as i64),
            Arc::new(StringArray::from_iter(
                splits.iter().map(|(_, _, p)| p.last_error.clone()),
            )),
        ])
    });
    (schema, rows)
}

fn dataflows() -> (SchemaRef, Rows) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("state_bytes", DataType::Int64, false),
        Field::new(
            "last_commit",
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            true,
        ),
        Field::new("late_rows", DataType::Int64, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("parallelism", DataType::Int64, false),
        Field::new("last_checkpoint", DataType::Int64, true),
    ]));
    let rows: Rows = Box::new(|db| {
        let retained = db.checkpoints();
        let views = db.dataflow_statuses();
        Ok(vec![
            Arc::new(StringArray::from_iter_values(
                views.iter().map(|v| v.0.clone()),
            )),
            Arc::new(Int64Array::from_iter_values(views.iter().map(|v| v.1.rows))),
            Arc::new(Int64Array::from_iter_values(
                views.iter().map(|v| v.1.state_bytes as i64),
            )),
            Arc::new(
                TimestampMillisecondArray::from_iter(
                    views
                        .iter()
                        .map(|v| (v.1.last_commit_ms > 0).then_some(v.1.last_commit_ms)),
                )
                .with_timezone("+00:00"),
            ),
            Arc::new(Int64Array::from_iter_values(
                views.iter().map(|v| v.1.late_rows as i64),
            )),
            Arc::new(StringArray::from_iter(
                views
                    .iter()
                    .map(|v| v.1.error.clone().or_else(|| v.1.restore_note.clone())),
            )),
            Arc::new(Int64Array::from_iter_values(
                views.iter().map(|v| v.1.parallelism as i64),
            )),
            Arc::new(Int64Array::from_iter(views.iter().map(|v| {
                retained
                    .iter()
                    .rev()
                    .find(|c| c.views.contains(&v.0))
                    .map(|c| c.epoch as i64)
            }))),
        ])
    });
    (schema, rows)
}

/// One row per sink and partition it wrote to (one row without a partition before any).
fn sink_progress() -> (SchemaRef, Rows) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("sink", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, true),
        Field::new("rows", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("last_epoch", DataType::Int64, false),
        Field::new("errors", DataType::Int64, false),
        Field::new("last_error", DataType::Utf8, true),
        Field::new("queued_bytes", DataType::Int64, false),
    ]));
    let rows: Rows = Box::new(|db| {
        let sinks = db.sink_progress();
        let int = |f: fn(&crate::sink::ProgressRow) -> u64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(
                sinks.iter().map(|r| f(r) as i64),
            ))
        };
        Ok(vec![
            Arc::new(StringArray::from_iter_values(
                sinks.iter().map(|r| r.sink.clone()),
            )),
            Arc::new(StringArray::from_iter_values(
                sinks.iter().map(|r| r.destination.clone()),
            )),
            Arc::new(Int32Array::from_iter(sinks.iter().map(|r| r.partition))),
            int(|r| r.rows),
            int(|r| r.bytes),
            int(|r| r.last_epoch),
            int(|r| r.errors),
            Arc::new(StringArray::from_iter(
                sinks.iter().map(|r| r.last_error.clone()),
            )),
            int(|r| r.queued_bytes),
        ])
    });
    (schema, rows)
}

/// One row per retained checkpoint (the last two committed), oldest first.
fn checkpoints() -> (SchemaRef, Rows) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("epoch", DataType::Int64, false),
        Field::new(
            "started_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            false,
        ),
        Field::new("duration_ms", DataType::Int64, false),
        Field::new("bytes", DataType::Int64, false),
        Field::new("views", DataType::Utf8, false),
    ]));
    let rows: Rows = Box::new(|db| {
        let retained = db.checkpoints();
        let int = |f: &dyn Fn(&crate::checkpoint::CheckpointInfo) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(retained.iter().map(f)))
        };
        Ok(vec![
            int(&|c| c.epoch as i64),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(
                    retained.iter().map(|c| c.started_at_ms),
                )
                .with_timezone("+00:00"),
            ),
            int(&|c| c.duration_ms as i64),
            int(&|c| c.bytes as i64),
            Arc::new(StringArray::from_iter_values(
                retained.iter().map(|c| c.views.join(", ")),
            )),
        ])
    });
    (schema, rows)
}

/// `pg_catalog.pg_matviews`: one row per materialized view, with its query as
/// `definition` (what `pg_get_viewdef` and psql's `\d+` show).
fn pg_matviews() -> (SchemaRef, Rows) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("schemaname", DataType::Utf8, true),
        Field::new("matviewname", DataType::Utf8, true),
        Field::new("matviewowner", DataType::Utf8, true),
        Field::new("tablespace", DataType::Utf8, true),
        Field::new("hasindexes", DataType::Boolean, true),
        Field::new("ispopulated", DataType::Boolean, true),
        Field::new("definition", DataType::Utf8, true),
    ]));
    let rows: Rows = Box::new(|db| {
        let views: Vec<(String, String)> = {
            let cat = db.catalog.lock();
            cat.names(ObjectKind::MaterializedView)
                .into_iter()
                .filter_map(|name| Some((name.clone(), cat.get(&name)?.stored.sql.clone())))
                .collect()
        };
        let definitions: Vec<Option<String>> = views
            .iter()
            .map(|(_, sql)| match db.parse(sql, &Interrupt::default()) {
                Ok(parsed) => match parsed.first().map(|p| &p.statement) {
                    Some(Statement::CreateView { query, .. }) => Some(query.clone()),
                    _ => None,
                },
                Err(_) => None,
            })
            .collect();
        let n = views.len();
        Ok(vec![
            Arc::new(StringArray::from_iter_values((0..n).map(|_| "public"))),
            Arc::new(StringArray::from_iter_values(
                views.iter().map(|(name, _)| name.clone()),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|_| crate::roles::BOOTSTRAP_ROLE),
            )),
            Arc::new(StringArray::from(vec![None::<&str>; n])),
            Arc::new(BooleanArray::from(vec![false; n])),
            Arc::new(BooleanArray::from(vec![true; n])),
            Arc::new(StringArray::from(definitions)),
        ])
    });
    (schema, rows)
}

/// `pg_catalog.pg_settings`: every parameter weir knows, with its default (a session's
/// own `SET` shows in `SHOW` and `current_setting`, not here).
fn pg_settings() -> (SchemaRef, Rows) {
    let text = |name| Field::new(name, DataType::Utf8, true);
    let schema = Arc::new(Schema::new(vec![
        text("name"),
        text("setting"),
        text("unit"),
        text("category"),
        text("short_desc"),
        text("extra_desc"),
        text("context"),
        text("vartype"),
        text("source"),
        text("min_val"),
        text("max_val"),
        text("enumvals"),
        text("boot_val"),
        text("reset_val"),
        text("sourcefile"),
        Field::new("sourceline", DataType::Int32, true),
        Field::new("pending_restart", DataType::Boolean, true),
    ]));
    let rows: Rows = Box::new(|_| {
        let settings = crate::session::default_parameters();
        let n = settings.len();
        let column = |f: &dyn Fn(&(String, String)) -> Option<String>| -> ArrayRef {
            Arc::new(StringArray::from(
                settings.iter().map(f).collect::<Vec<_>>(),
            ))
        };
        let none = |_: &(String, String)| None;
        Ok(vec![
            column(&|(name, _)| Some(name.clone())),
            column(&|(_, value)| Some(value.clone())),
            column(&none),
            column(&none),
            column(&none),
            column(&none),
            column(&|_| Some("user".into())),
            column(&|_| Some("string".into())),
            column(&|_| Some("default".into())),
            column(&none),
            column(&none),
            column(&none),
            column(&|(_, value)| Some(value.clone())),
            column(&|(_, value)| Some(value.clone())),
            column(&none),
            Arc::new(Int32Array::from(vec![None; n])),
            Arc::new(BooleanArray::from(vec![false; n])),
        ])
    });
    (schema, rows)
}

impl Database {
    /// Every view's and sink's status, by name.
    pub fn dataflow_statuses(&self) -> Vec<(String, ViewStatus)> {
        let cat = self.catalog.lock();
        let mut all: Vec<_> = cat
            .providers(ObjectKind::MaterializedView)
            .into_iter()
            .chain(cat.providers(ObjectKind::Sink))
            .filter_map(|(name, p)| {
                let status = match p.as_sink() {
                    Some(sink) => sink.status(),
                    None => p.as_view()?.status(),
                };
                Some((name, status))
            })
            .collect();
        drop(cat);
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// A running view's operators and what each has done: 42P01 when there is no such
    /// view, 42809 when the relation is not one.
    pub fn dataflow_graph(&self, name: &str) -> Result<DataflowGraph> {
        let relation = self
            .relation(name)
            .ok_or_else(|| SqlError::undefined_table(name))?;
        relation
            .as_view()
            .ok_or_else(|| {
                SqlError::new("42809", format!("\"{name}\" is not a materialized view"))
            })?
            .graph()
            .ok_or_else(|| SqlError::new("55000", format!("the dataflow of \"{name}\" stopped")))
    }

    /// Every source split's progress: (source, partition, progress).
    pub fn source_progress(&self) -> Vec<(String, i32, SplitProgress)> {
        self.progress.snapshot()
    }
}

/// Registers the `weir_catalog` schema, and weir's `pg_catalog.pg_matviews` and
/// `pg_settings`.
pub(super) fn register(db: &Arc<Database>) -> Result<()> {
    let table = |(schema, rows)| {
        Arc::new(StatusTable {
            schema,
            db: Arc::downgrade(db),
            rows,
        })
    };
    let schema = Arc::new(MemorySchemaProvider::new());
    for (name, status) in [
        ("source_progress", source_progress()),
        ("dataflows", dataflows()),
        ("checkpoints", checkpoints()),
        ("sink_progress", sink_progress()),
    ] {
        schema.register_table(name.to_string(), table(status))?;
    }
    let catalog = db
        .ctx
        .catalog(DATABASE_NAME)
        .ok_or_else(|| SqlError::new("XX000", "default catalog missing"))?;
    catalog.register_schema("weir_catalog", schema)?;
    if let Some(pg_catalog) = catalog.schema("pg_catalog") {
        pg_catalog.register_table("pg_matviews".into(), table(pg_matviews()))?;
        pg_catalog.register_table("pg_settings".into(), table(pg_settings()))?;
    }
    Ok(())
}
