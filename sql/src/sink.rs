//! Sinks in the catalog: what CREATE SINK's options mean, the key of what a sink writes, and
//! the writer task that takes a view's commits, in order, to a Kafka topic.
//!
//! Delivery is at-least-once and tied to checkpoints: at the first commit of a checkpoint
//! the writer waits until the broker acknowledged everything up to it, and only then
//! reports its part, so a committed checkpoint never lies ahead of the sink's output. After
//! a crash the view restarts from that checkpoint and the sink from the same epoch; what it
//! had sent after it is sent again (the duplicates at-least-once allows).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_engine::runtime::GraphSnapshot;
use weir_engine::sink::{KafkaSink, KafkaSinkConfig, SinkEncoder, SinkFormat, SinkProgress};
use weir_engine::{Barrier, ChangeBatch, Epoch, SplitPosition};

use crate::dataflow::{ViewStatus, ViewTable};
use crate::error::{Result, SqlError};
use crate::statement::CreateSink;

/// What a sink's WITH and FORMAT clauses ask for.
#[derive(Debug, Clone)]
pub(crate) struct SinkSpec {
    pub(crate) format: SinkFormat,
    pub(crate) kafka: KafkaSinkConfig,
    /// `primary_key = 'a,b'`: the key of UPSERT and DEBEZIUM messages, when the query's own
    /// unique key is not known (or is to be overridden).
    pub(crate) primary_key: Option<Vec<String>>,
}

/// Reads a CREATE SINK's options (RisingWave's names: `connector`, `topic`,
/// `properties.*`, `primary_key`, `type`, `force_append_only`).
pub(crate) fn sink_spec(c: &CreateSink) -> Result<SinkSpec> {
    let option = |k: &str| c.options.get(k).map(String::as_str);
    match option("connector") {
        Some(k) if k.eq_ignore_ascii_case("kafka") => {}
        Some(k) if k.eq_ignore_ascii_case("file") => {
            return Err(SqlError::unsupported(
                "file sinks (connector = 'file') are not supported yet",
            ));
        }
        Some(other) => {
            return Err(SqlError::invalid_parameter(format!(
                "unknown sink connector '{other}' (supported: kafka)"
            )));
        }
        None => {
            return Err(SqlError::invalid_parameter(
                "a sink needs connector = 'kafka'",
            ));
        }
    }
    let topic = option("topic")
        .ok_or_else(|| SqlError::invalid_parameter("the kafka sink needs topic = '...'"))?
        .to_string();
    let properties = crate::relation::kafka_properties(&c.options)?;
    let force = option("force_append_only")
        .or(option("format.force_append_only"))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    // FORMAT ... ENCODE JSON, or the older `type = 'append-only' | 'upsert' | 'debezium'`.
    let format = match (&c.format, option("type")) {
        (Some((format, encode)), _) => {
            if encode != "JSON" {
                return Err(SqlError::unsupported(format!(
                    "ENCODE {encode} for sinks (supported: JSON)"
                )));
            }
            match format.as_str() {
                "PLAIN" => SinkFormat::Plain {
                    force_append_only: force,
                },
                "UPSERT" => SinkFormat::Upsert,
                "DEBEZIUM" => SinkFormat::Debezium,
                other => {
                    return Err(SqlError::unsupported(format!(
                        "FORMAT {other} for sinks (supported: PLAIN, UPSERT, DEBEZIUM)"
                    )));
                }
            }
        }
        (None, Some(t)) => match t.to_ascii_lowercase().as_str() {
            "append-only" => SinkFormat::Plain {
                force_append_only: force,
            },
            "upsert" => SinkFormat::Upsert,
            "debezium" => SinkFormat::Debezium,
            other => {
                return Err(SqlError::invalid_parameter(format!(
                    "sink type must be append-only, upsert or debezium, got '{other}'"
                )));
            }
        },
        (None, None) => {
            return Err(SqlError::invalid_parameter(
                "a sink needs FORMAT PLAIN | UPSERT | DEBEZIUM ENCODE JSON",
            ));
        }
    };
    let primary_key = option("primary_key").map(|k| {
        k.split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect()
    });
    Ok(SinkSpec {
        format,
        kafka: KafkaSinkConfig { topic, properties },
        primary_key,
    })
}

/// The output columns that identify a row of `plan`'s result, when the plan shows them: a
/// GROUP BY's columns (none for a one-row aggregate), carried through projections and
/// filters. None when unknown.
pub(crate) fn unique_key(plan: &LogicalPlan) -> Option<Vec<String>> {
    match plan {
        LogicalPlan::Aggregate(a) => Some(
            a.schema
                .fields()
                .iter()
                .take(a.group_expr.len())
                .map(|f| f.name().clone())
                .collect(),
        ),
        LogicalPlan::Projection(p) => {
            let inner = unique_key(&p.input)?;
            let mut out = Vec::with_capacity(inner.len());
            for key in inner {
                let (i, _) = p.expr.iter().enumerate().find(
                    |(_, e)| matches!((*e).clone().unalias(), Expr::Column(c) if c.name == key),
                )?;
                out.push(p.schema.field(i).name().clone());
            }
            Some(out)
        }
        LogicalPlan::Filter(f) => unique_key(&f.input),
        LogicalPlan::Sort(s) => unique_key(&s.input),
        LogicalPlan::SubqueryAlias(s) => unique_key(&s.input),
        _ => None,
    }
}

/// What a sink's writer is told by the view it reads, in commit order.
pub(crate) enum SinkEvent {
    /// The view's rows when the sink starts (not after a restore at the sink's epoch).
    Snapshot(ChangeBatch, i64),
    Commit(Barrier, Option<ChangeBatch>),
}

/// The writer of one sink: encodes each commit, sends it, and at each checkpoint's first
/// barrier waits for the acknowledgements before it reports (see the module doc).
pub(crate) async fn write(
    mut events: mpsc::UnboundedReceiver<SinkEvent>,
    encoder: SinkEncoder,
    mut kafka: KafkaSink,
    report: Option<mpsc::UnboundedSender<GraphSnapshot>>,
    mut last_checkpoint: Epoch,
) -> weir_engine::Result<()> {
    while let Some(event) = events.recv().await {
        match event {
            SinkEvent::Snapshot(rows, ts_ms) => {
                kafka.send(&encoder.encode(&rows, ts_ms, true)?).await?;
            }
            SinkEvent::Commit(barrier, changes) => {
                if let Some(changes) = &changes {
                    kafka
                        .send(&encoder.encode(changes, barrier.ts_ms, false)?)
                        .await?;
                }
                if barrier.checkpoint > last_checkpoint {
                    last_checkpoint = barrier.checkpoint;
                    kafka.flush(barrier.epoch).await?;
                    if let Some(report) = &report {
                        let _ = report.send(writer_part(&barrier));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A writer's part of a checkpoint: the epoch everything up to which is delivered.
fn writer_part(barrier: &Barrier) -> GraphSnapshot {
    GraphSnapshot {
        checkpoint: barrier.checkpoint,
        epoch: barrier.epoch,
        task: 0,
        nodes: Vec::new(),
        positions: vec![(
            0,
            SplitPosition {
                partition: 0,
                offset: barrier.epoch as i64,
                watermark: None,
            },
        )],
    }
}

/// A sink in the catalog: its columns, its progress, and its running writer (and the
/// dataflow of its own query, for `CREATE SINK ... AS`). Dropping it stops them.
pub(crate) struct SinkRelation {
    pub(crate) schema: SchemaRef,
    pub(crate) progress: Arc<Mutex<SinkProgress>>,
    /// Why the writer stopped, if it failed.
    pub(crate) error: Arc<Mutex<Option<String>>>,
    pub(crate) task: JoinHandle<()>,
    /// The view the sink reads (kept alive while the sink is).
    pub(crate) _reads: Arc<dyn TableProvider>,
    /// The dataflow of its own query.
    pub(crate) own: Option<Arc<ViewTable>>,
    /// The topic it writes, for `weir_catalog.sink_progress`.
    pub(crate) topic: String,
}

impl std::fmt::Debug for SinkRelation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkRelation")
            .field("topic", &self.topic)
            .finish()
    }
}

impl Drop for SinkRelation {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(own) = &self.own {
            own.drop_view();
        }
    }
}

#[async_trait]
impl TableProvider for SinkRelation {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(DataFusionError::Plan(
            "a sink cannot be read; read the view it writes from".into(),
        ))
    }
}

/// Sinks' progress rows: (sink, topic, partition, messages, bytes, last epoch, errors,
/// last error), one per partition written (one row with no partition before any).
pub(crate) type ProgressRow = (
    String,
    String,
    Option<i32>,
    u64,
    u64,
    u64,
    u64,
    Option<String>,
);

impl SinkRelation {
    /// Its row in `weir_catalog.dataflows`: messages delivered, and its own query's state.
    pub(crate) fn status(&self) -> ViewStatus {
        let delivered = self
            .progress
            .lock()
            .partitions
            .values()
            .map(|p| p.0)
            .sum::<u64>();
        let own = self.own.as_ref().map(|v| v.status());
        ViewStatus {
            rows: delivered as i64,
            state_bytes: own.as_ref().map_or(0, |s| s.state_bytes),
            last_commit_ms: own.as_ref().map_or(0, |s| s.last_commit_ms),
            late_rows: own.as_ref().map_or(0, |s| s.late_rows),
            error: self
                .error
                .lock()
                .clone()
                .or_else(|| own.as_ref().and_then(|s| s.error.clone())),
            parallelism: own.as_ref().map_or(1, |s| s.parallelism),
            restore_note: own.and_then(|s| s.restore_note),
        }
    }

    pub(crate) fn progress_rows(&self, name: &str) -> Vec<ProgressRow> {
        let p = self.progress.lock().clone();
        let error = self.error.lock().clone().or(p.last_error.clone());
        let row = |partition, (rows, bytes): (u64, u64)| {
            (
                name.to_string(),
                self.topic.clone(),
                partition,
                rows,
                bytes,
                p.last_epoch,
                p.errors,
                error.clone(),
            )
        };
        if p.partitions.is_empty() {
            return vec![row(None, (0, 0))];
        }
        p.partitions
            .iter()
            .map(|(&part, &counts)| row(Some(part), counts))
            .collect()
    }
}
