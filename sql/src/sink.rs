//! Sinks in the catalog: what CREATE SINK's options mean, the key of what a sink writes, and
//! the writer task that takes a view's commits, in order, to a `SinkWriter` (a Kafka topic
//! or Parquet files).
//!
//! Delivery is tied to checkpoints without holding them back. Each commit of the view goes
//! into the sink's `SinkLog` on disk, and the log is the sink's part of a checkpoint: it
//! holds everything up to the checkpoint that the destination may not have. The writer takes
//! the commits at its own pace; at a checkpoint's first barrier it has the destination
//! `prepare` (Kafka: wait until the broker acknowledged everything; exactly-once Kafka: set
//! the interval's messages aside; files: close the open file under its temporary name) and
//! saves the returned state beside the log; once that checkpoint is committed, the
//! destination `commit`s (a transaction, files taking their final names) and the log up to
//! it is dropped. After a crash the view restarts from the checkpoint, and the sink from the
//! newest state it prepared by then plus the log's commits up to the checkpoint: a Kafka
//! sink sends again what it had sent unprepared (the duplicates at-least-once allows); an
//! exactly-once one and a file sink commit each row once.
//!
//! Between the view and the writer is a `SinkQueue`: commits wait there, in memory up to
//! `sink.buffer.bytes` and on disk past it, so a destination that is slow or away costs
//! disk, not memory, and the view and its sources carry on; a sink's own query instead waits
//! for a writer that is slow but still taking commits (see the queue's doc).

mod log;
mod queue;

pub(crate) use log::{SinkLog, WriterRecord, read_segment};
pub(crate) use queue::{DEFAULT_MEMORY_BYTES, SinkQueue};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weir_engine::sink::{
    DEFAULT_MAX_FILE_BYTES, FileSinkConfig, KafkaSinkConfig, SinkFormat, SinkProgress, SinkWriter,
};
use weir_engine::{Barrier, ChangeBatch, Epoch};

use crate::dataflow::{ViewStatus, ViewTable};
use crate::error::{Result, SqlError};
use crate::statement::CreateSink;

/// What a sink's WITH and FORMAT clauses ask for.
#[derive(Debug, Clone)]
pub(crate) struct SinkSpec {
    /// For a file sink, PLAIN (its rows are appended).
    pub(crate) format: SinkFormat,
    pub(crate) target: SinkTarget,
    /// `primary_key = 'a,b'`: the key of UPSERT and DEBEZIUM messages, when the query's own
    /// unique key is not known (or is to be overridden).
    pub(crate) primary_key: Option<Vec<String>>,
    /// `sink.buffer.bytes`: the commits it keeps in memory before spilling to disk.
    pub(crate) buffer_bytes: usize,
}

/// `sink.buffer.bytes`, or its default.
fn buffer_bytes(c: &CreateSink) -> Result<usize> {
    match c.options.get("sink.buffer.bytes") {
        None => Ok(DEFAULT_MEMORY_BYTES),
        Some(v) => v.parse().ok().filter(|&n: &usize| n > 0).ok_or_else(|| {
            SqlError::invalid_parameter(format!(
                "sink.buffer.bytes must be a positive integer, got '{v}'"
            ))
        }),
    }
}

/// Where exactly-once sinks record which checkpoint each transaction committed, unless
/// `sink.progress.topic` says otherwise.
const DEFAULT_PROGRESS_TOPIC: &str = "__weir_sink_progress";

/// Where a sink writes.
#[derive(Debug, Clone)]
pub(crate) enum SinkTarget {
    /// With `exactly_once`: a transactional producer of this `transactional.id`.
    Kafka {
        config: KafkaSinkConfig,
        exactly_once: Option<String>,
    },
    File(FileSinkConfig),
}

impl SinkTarget {
    /// The topic or directory, for `weir_catalog.sink_progress`.
    pub(crate) fn destination(&self) -> &str {
        match self {
            Self::Kafka { config, .. } => &config.topic,
            Self::File(f) => &f.path,
        }
    }
}

/// Reads a CREATE SINK's options (RisingWave's names: `connector`, `topic`,
/// `properties.*`, `primary_key`, `type`, `force_append_only`; `sink.semantic =
/// 'exactly_once'` and `sink.progress.topic` for transactions; for files `path`,
/// `format = 'parquet'` and `file.max_bytes`; for every sink `sink.buffer.bytes`).
pub(crate) fn sink_spec(c: &CreateSink) -> Result<SinkSpec> {
    let option = |k: &str| c.options.get(k).map(String::as_str);
    let force = option("force_append_only")
        .or(option("format.force_append_only"))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    match option("connector") {
        Some(k) if k.eq_ignore_ascii_case("kafka") => {}
        Some(k) if k.eq_ignore_ascii_case("file") => return file_sink_spec(c, force),
        Some(other) => {
            return Err(SqlError::invalid_parameter(format!(
                "unknown sink connector '{other}' (supported: kafka, file)"
            )));
        }
        None => {
            return Err(SqlError::invalid_parameter(
                "a sink needs connector = 'kafka' or 'file'",
            ));
        }
    }
    let topic = option("topic")
        .ok_or_else(|| SqlError::invalid_parameter("the kafka sink needs topic = '...'"))?
        .to_string();
    let mut properties = crate::relation::kafka_properties(&c.options)?;
    let exactly_once = match option("sink.semantic")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("at_least_once" | "at-least-once") => None,
        Some("exactly_once" | "exactly-once") => Some(
            properties
                .remove("transactional.id")
                .unwrap_or_else(|| format!("weir-sink-{}", c.name)),
        ),
        Some(other) => {
            return Err(SqlError::invalid_parameter(format!(
                "sink.semantic must be at_least_once or exactly_once, got '{other}'"
            )));
        }
    };
    let progress_topic = option("sink.progress.topic")
        .unwrap_or(DEFAULT_PROGRESS_TOPIC)
        .to_string();
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
        target: SinkTarget::Kafka {
            config: KafkaSinkConfig {
                topic,
                progress_topic,
                properties,
            },
            exactly_once,
        },
        primary_key,
        buffer_bytes: buffer_bytes(c)?,
    })
}

/// `connector = 'file', path = 'dir/', format = 'parquet'` (or `FORMAT PLAIN ENCODE
/// PARQUET`): append-only rows as rolling Parquet files.
fn file_sink_spec(c: &CreateSink, force_append_only: bool) -> Result<SinkSpec> {
    let option = |k: &str| c.options.get(k).map(String::as_str);
    let path = option("path")
        .ok_or_else(|| SqlError::invalid_parameter("the file sink needs path = 'dir/'"))?;
    let parquet = match (&c.format, option("format")) {
        (Some((f, e)), None) => f == "PLAIN" && e == "PARQUET",
        (None, Some(f)) => f.eq_ignore_ascii_case("parquet"),
        (None, None) => true,
        (Some(_), Some(_)) => false,
    };
    if !parquet {
        return Err(SqlError::unsupported(
            "a file sink writes Parquet: format = 'parquet' or FORMAT PLAIN ENCODE PARQUET",
        ));
    }
    let max_file_bytes = match option("file.max_bytes") {
        None => DEFAULT_MAX_FILE_BYTES,
        Some(v) => v.parse().ok().filter(|&n: &usize| n > 0).ok_or_else(|| {
            SqlError::invalid_parameter(format!(
                "file.max_bytes must be a positive integer, got '{v}'"
            ))
        })?,
    };
    Ok(SinkSpec {
        format: SinkFormat::Plain { force_append_only },
        target: SinkTarget::File(FileSinkConfig {
            path: path.to_string(),
            max_file_bytes,
            force_append_only,
        }),
        primary_key: None,
        buffer_bytes: buffer_bytes(c)?,
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
#[derive(Clone)]
pub(crate) enum SinkEvent {
    /// The view's rows when the sink starts (not after a restore at the sink's epoch).
    Snapshot(ChangeBatch, i64),
    Commit(Barrier, Option<ChangeBatch>),
}

/// Without checkpoints (no data directory), how often a sink prepares and commits at once.
const UNCHECKPOINTED_COMMIT_MS: i64 = 10_000;

/// The writer of one sink: writes each commit, prepares at each checkpoint's first barrier
/// (saving the state in its `record`), and commits as checkpoints commit (see the module
/// doc). Without checkpoints (`record` and `committed` None) it prepares and commits every
/// `UNCHECKPOINTED_COMMIT_MS`.
pub(crate) async fn write(
    events: SinkQueue,
    mut sink: Box<dyn SinkWriter>,
    mut record: Option<WriterRecord>,
    mut committed: Option<watch::Receiver<Epoch>>,
    mut last_checkpoint: Epoch,
) -> weir_engine::Result<()> {
    let mut last_commit_ms = 0;
    loop {
        let commit = async {
            match &mut committed {
                Some(c) => c.changed().await.map(|()| *c.borrow_and_update()),
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            // Cancel-safe: an event is taken off the queue only when pop returns it.
            event = events.pop() => event?,
            Ok(checkpoint) = commit => {
                commit_through(sink.as_mut(), record.as_mut(), checkpoint).await?;
                continue;
            }
        };
        match event {
            None => return Ok(()),
            Some(SinkEvent::Snapshot(rows, ts_ms)) => sink.write(&rows, ts_ms, true).await?,
            Some(SinkEvent::Commit(barrier, changes)) => {
                if let Some(changes) = &changes {
                    sink.write(changes, barrier.ts_ms, false).await?;
                }
                match &mut record {
                    Some(r) if barrier.checkpoint > last_checkpoint => {
                        last_checkpoint = barrier.checkpoint;
                        let state = sink.prepare(&barrier).await?;
                        r.prepared(barrier.checkpoint, &state)?;
                        // Committed before the writer got here (it lagged, or replays its
                        // log after a restart): nothing else would tell it.
                        let newest = committed.as_ref().map_or(0, |c| *c.borrow());
                        if newest >= barrier.checkpoint {
                            commit_through(sink.as_mut(), Some(r), newest).await?;
                        }
                    }
                    None if barrier.ts_ms - last_commit_ms >= UNCHECKPOINTED_COMMIT_MS => {
                        last_commit_ms = barrier.ts_ms;
                        sink.prepare(&barrier).await?;
                        sink.commit(barrier.checkpoint).await?;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Checkpoint `checkpoint` is committed: the destination commits what it prepared up to it,
/// and the log it no longer needs goes.
async fn commit_through(
    sink: &mut dyn SinkWriter,
    record: Option<&mut WriterRecord>,
    checkpoint: Epoch,
) -> weir_engine::Result<()> {
    sink.commit(checkpoint).await?;
    match record {
        Some(r) => r.committed(checkpoint),
        None => Ok(()),
    }
}

/// A sink in the catalog: its columns, its progress, and its running writer (and the
/// dataflow of its own query, for `CREATE SINK ... AS`). Dropping it stops them.
pub(crate) struct SinkRelation {
    pub(crate) schema: SchemaRef,
    pub(crate) progress: Arc<Mutex<SinkProgress>>,
    /// The commits its writer has yet to take, and their bytes (in memory or spilled).
    pub(crate) queue: SinkQueue,
    pub(crate) queued: Arc<AtomicU64>,
    /// Why the writer stopped, if it failed.
    pub(crate) error: Arc<Mutex<Option<String>>>,
    pub(crate) task: JoinHandle<()>,
    /// The view the sink reads (kept alive while the sink is).
    pub(crate) _reads: Arc<dyn TableProvider>,
    /// The dataflow of its own query.
    pub(crate) own: Option<Arc<ViewTable>>,
    /// The topic or directory it writes, for `weir_catalog.sink_progress`.
    pub(crate) topic: String,
    /// Stops its log (with checkpoints) when the sink is dropped.
    pub(crate) log_stop: Option<Arc<AtomicBool>>,
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
        self.stop_log();
        self.queue.close();
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

/// A sink's progress at one partition it writes (`partition` None before it wrote any).
#[derive(Debug, Clone)]
pub struct ProgressRow {
    pub sink: String,
    /// The topic or directory.
    pub destination: String,
    pub partition: Option<i32>,
    /// Messages (rows) and bytes delivered there.
    pub rows: u64,
    pub bytes: u64,
    /// The newest epoch the sink delivered whole.
    pub last_epoch: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Bytes of commits waiting for the writer (in memory or spilled to disk).
    pub queued_bytes: u64,
}

impl SinkRelation {
    /// Its log writes nothing more (the sink is being dropped).
    pub(crate) fn stop_log(&self) {
        if let Some(stop) = &self.log_stop {
            stop.store(true, Ordering::Relaxed);
        }
    }

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
            input_rows: own.as_ref().map_or(0, |s| s.input_rows),
            inputs: own.as_ref().map_or_else(Vec::new, |s| s.inputs.clone()),
            commit_latency: own
                .as_ref()
                .map(|s| s.commit_latency.clone())
                .unwrap_or_default(),
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
        let queued_bytes = self.queued.load(Ordering::Relaxed);
        let row = |partition, (rows, bytes): (u64, u64)| ProgressRow {
            sink: name.to_string(),
            destination: self.topic.clone(),
            partition,
            rows,
            bytes,
            last_epoch: p.last_epoch,
            errors: p.errors,
            last_error: error.clone(),
            queued_bytes,
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

impl crate::catalog::CatalogRelation for SinkRelation {
    fn as_sink(&self) -> Option<&SinkRelation> {
        Some(self)
    }
}
