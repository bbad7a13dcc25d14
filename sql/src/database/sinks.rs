//! CREATE SINK: the view (or the sink's own query) it writes from, its key and format
//! checked, its writer started and subscribed to the view's commits, and its entry in the
//! catalog (restored on start at the epoch its last checkpoint delivered).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use datafusion::catalog::TableProvider;
use datafusion::logical_expr::LogicalPlan;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use weir_engine::ChangeBatch;
use weir_engine::operator::ViewEvent;
use weir_engine::sink::{
    FileSink, KafkaSink, SinkEncoder, SinkFormat, SinkProgress, SinkWriter, TransactionalKafkaSink,
};

use super::{Database, Output, command};
use crate::catalog::CatalogRelation;
use crate::catalog::{Entry, StoredEntry};
use crate::checkpoint::manifest::ViewMeta;
use crate::cpu_runtime::panic_message;
use crate::dataflow::ViewTable;
use crate::error::{Result, SqlError};
use crate::sink::{
    SinkEvent, SinkLog, SinkQueue, SinkRelation, SinkTarget, WriterRecord, read_segment, sink_spec,
    unique_key, write,
};
use crate::statement::{
    CreateRelation, CreateSink, ObjectKind, ParsedStatement, SinkInput, Statement,
};

impl Database {
    /// CREATE SINK: returns once the writer is subscribed (its first messages may still be
    /// on their way).
    pub async fn execute_create_sink(
        &self,
        statement: &ParsedStatement,
        parallelism: usize,
    ) -> Result<Output> {
        let Statement::CreateSink(c) = &statement.statement else {
            return Err(SqlError::new("XX000", "not a CREATE SINK"));
        };
        if self.catalog.lock().contains(&c.name) {
            return if c.if_not_exists {
                Ok(command("CREATE SINK".into()))
            } else {
                Err(SqlError::duplicate_table(&c.name))
            };
        }
        self.create_sink(c, statement.text.clone(), parallelism, true)
            .await?;
        Ok(command("CREATE SINK".into()))
    }

    /// Starts a sink and enters it in the catalog (`persist`: also in its file).
    pub(super) async fn create_sink(
        &self,
        c: &CreateSink,
        sql: String,
        parallelism: usize,
        persist: bool,
    ) -> Result<()> {
        let spec = sink_spec(c)?;
        let query = match &c.input {
            SinkInput::Relation(name) => {
                let cat = self.catalog.lock();
                let entry = cat
                    .get(name)
                    .ok_or_else(|| SqlError::undefined_table(name))?;
                match entry.stored.kind {
                    ObjectKind::MaterializedView => None,
                    ObjectKind::Sink => {
                        return Err(SqlError::new(
                            "42809",
                            format!("\"{name}\" is a sink; a sink reads a view, source or table"),
                        ));
                    }
                    // A source's or table's changes: the sink's own dataflow reads them.
                    _ => Some(format!("SELECT * FROM \"{}\"", name.replace('"', "\"\""))),
                }
            }
            SinkInput::Query(q) => Some(q.clone()),
        };
        // What it reads: a view in the catalog, or a dataflow of its own.
        let (reads, own, plan, depends_on) = match query {
            None => {
                let SinkInput::Relation(name) = &c.input else {
                    return Err(SqlError::new("XX000", "a sink without input"));
                };
                let (provider, view_sql) = {
                    let cat = self.catalog.lock();
                    let e = cat
                        .get(name)
                        .ok_or_else(|| SqlError::undefined_table(name))?;
                    (Arc::clone(&e.provider), e.stored.sql.clone())
                };
                let plan = self.plan_of_view(&view_sql).await?;
                (provider, None, plan, vec![name.clone()])
            }
            Some(q) => {
                let plan = self.plan_view_query(&q).await?;
                let dataflow = own_dataflow(&c.name);
                // Restored only with the sink's own part: its view keeps no rows, so the
                // sink could not start from them.
                let restore = {
                    let mut restoring = self.restoring.lock();
                    let own = restoring.remove(&dataflow);
                    own.filter(|_| restoring.contains_key(&c.name))
                };
                let (table, depends_on) = self.start_dataflow(
                    &dataflow,
                    &plan,
                    false,
                    parallelism,
                    super::views::Reader::Sink,
                    restore,
                )?;
                let provider: Arc<dyn CatalogRelation> = Arc::clone(&table) as _;
                (provider, Some(table), plan, depends_on)
            }
        };
        let started = self
            .start_writer(
                c,
                sql,
                parallelism,
                persist,
                &spec,
                reads,
                own,
                &plan,
                depends_on,
            )
            .await;
        if started.is_err()
            && matches!(c.input, SinkInput::Query(_))
            && let Some(cp) = &self.checkpointer
        {
            cp.unregister(&own_dataflow(&c.name));
        }
        started
    }

    /// Checks the key and format against what the sink reads, subscribes its writer and
    /// enters it in the catalog.
    #[allow(clippy::too_many_arguments)]
    async fn start_writer(
        &self,
        c: &CreateSink,
        sql: String,
        parallelism: usize,
        persist: bool,
        spec: &crate::sink::SinkSpec,
        reads: Arc<dyn CatalogRelation>,
        own: Option<Arc<ViewTable>>,
        plan: &LogicalPlan,
        depends_on: Vec<String>,
    ) -> Result<()> {
        let view = reads
            .as_view()
            .ok_or_else(|| SqlError::new("XX000", "a sink's input is not a view"))?;
        let schema = view.schema();
        if let SinkFormat::Plain {
            force_append_only: false,
        } = spec.format
            && !view.append_only()
        {
            return Err(SqlError::new(
                "0A000",
                format!(
                    "sink \"{}\" would get updates and deletes, which FORMAT PLAIN cannot write",
                    c.name
                ),
            )
            .with_detail(
                "Use FORMAT UPSERT or FORMAT DEBEZIUM, or force_append_only = 'true' to write only the inserts.",
            ));
        }
        let key_names = match (&spec.format, &spec.primary_key) {
            (SinkFormat::Plain { .. }, _) => Vec::new(),
            (_, Some(k)) => k.clone(),
            (_, None) => unique_key(plan).ok_or_else(|| {
                SqlError::invalid_parameter(format!(
                    "sink \"{}\" needs primary_key = 'col, ...': the key of its rows is not known from its query",
                    c.name
                ))
            })?,
        };
        let key = key_names
            .iter()
            .map(|k| {
                schema.index_of(k).map_err(|_| {
                    SqlError::new(
                        "42703",
                        format!("primary_key column \"{k}\" is not a column of the sink's rows"),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let progress = Arc::new(Mutex::new(SinkProgress::default()));
        // Resume: the checkpoint restored (the sink's part says its log is on disk up to it),
        // and from the log the destination's newest state prepared by then.
        let restored = self
            .restoring
            .lock()
            .remove(&c.name)
            .and_then(|r| r.snapshots.into_iter().next());
        let resume_at = restored.as_ref().map(|s| s.epoch);
        let first_checkpoint = self.barriers.current().checkpoint;
        let (report, reports) = mpsc::unbounded_channel();
        let log_dir = self
            .checkpointer
            .as_ref()
            .and_then(|_| self.sink_log_dir(&c.name));
        let (log, recovered) = match (&log_dir, restored) {
            (None, _) => (None, None),
            (Some(dir), None) => (
                Some(SinkLog::create(
                    dir.clone(),
                    first_checkpoint,
                    spec.buffer_bytes,
                    report,
                )?),
                None,
            ),
            (Some(dir), Some(part)) => {
                let legacy = part.nodes.into_iter().next();
                let (log, recovered) = SinkLog::recover(
                    dir.clone(),
                    part.checkpoint,
                    legacy,
                    spec.buffer_bytes,
                    report,
                )?;
                (Some(log), Some(recovered))
            }
        };
        let prepared = recovered.as_ref().and_then(|r| r.prepared.as_ref());
        let writer: Box<dyn SinkWriter> = match &spec.target {
            SinkTarget::Kafka {
                config,
                exactly_once,
            } => {
                let encoder = SinkEncoder::new(spec.format, Arc::clone(&schema), key, &c.name)?;
                let producer_error = |e: weir_engine::EngineError| {
                    SqlError::invalid_parameter(format!("cannot create the sink's producer: {e}"))
                };
                match exactly_once {
                    None => Box::new(
                        KafkaSink::new(config, encoder, Arc::clone(&progress))
                            .map_err(producer_error)?,
                    ),
                    Some(id) => Box::new(
                        TransactionalKafkaSink::open(
                            config,
                            id,
                            encoder,
                            prepared.map(|(p, state)| (*p, state)),
                            Arc::clone(&progress),
                        )
                        .await
                        .map_err(producer_error)?,
                    ),
                }
            }
            SinkTarget::File(file) => Box::new(
                FileSink::open(
                    &c.name,
                    Arc::clone(&schema),
                    file.clone(),
                    prepared.map(|(_, state)| state),
                    Arc::clone(&progress),
                )
                .await
                .map_err(|e| {
                    SqlError::invalid_parameter(format!(
                        "cannot write files under '{}': {e}",
                        file.path
                    ))
                })?,
            ),
        };
        // Commits wait for the writer here: in memory up to the bound, then on disk.
        let queued = Arc::new(AtomicU64::new(0));
        let spill_dir = match &self.data_dir {
            Some(dir) => dir.join("sinks"),
            None => std::env::temp_dir().join(format!("weir-sinks-{}", std::process::id())),
        };
        std::fs::create_dir_all(&spill_dir).map_err(weir_engine::EngineError::from)?;
        let spill = spill_dir.join(crate::relation::table_file_name(&c.name, "spill"));
        let queue = SinkQueue::new(spill, spec.buffer_bytes, Arc::clone(&queued));
        // What the restored checkpoint holds and the destination may not have, first.
        let mut last_checkpoint = first_checkpoint;
        if let Some(r) = &recovered {
            last_checkpoint = r.last_checkpoint;
            for segment in &r.replay {
                for event in read_segment(segment)? {
                    queue.push(event);
                }
            }
        }
        let log_stop = log.as_ref().map(SinkLog::stopper);
        let log = Arc::new(Mutex::new(log));
        // Why the sink stopped, if it failed (its log, or its writer).
        let error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let log_failed = Arc::clone(&error);
        let shared = view.view();
        let mut state = shared.lock();
        let epoch = state.epoch();
        let events = queue.clone();
        let appending = Arc::clone(&log);
        let current = state.subscribe(Box::new(move |event| match event {
            ViewEvent::Commit { barrier, changes } => {
                let event = SinkEvent::Commit(*barrier, changes.cloned());
                events.is_open()
                    && append(&appending, &event, &events, &log_failed)
                    && events.push(event)
            }
            ViewEvent::Watermark(_) => events.is_open(),
        }))?;
        if own.is_some() {
            // Its own dataflow has no other reader: it goes at the writer's pace.
            state.set_pace(Arc::new(queue.clone()));
        }
        let restored = resume_at.is_some_and(|e| e == epoch && epoch > 0);
        if !restored && current.num_rows() > 0 {
            let ts = match state.last_commit_ms() {
                0 => self.barriers.current().ts_ms,
                t => t,
            };
            let event = SinkEvent::Snapshot(ChangeBatch::from_data(&current, 1)?, ts);
            if append(&log, &event, &queue, &error) {
                queue.push(event);
            }
        }
        drop(state);
        // Its checkpoints: the log reports each once it is on disk up to it.
        let checkpointer = self.checkpointer.as_ref().map(Arc::clone);
        if let Some(cp) = &checkpointer {
            cp.register(
                &c.name,
                reports,
                1,
                ViewMeta {
                    fingerprint: "sink".into(),
                    parallelism: 1,
                    inputs: Vec::new(),
                },
            );
        }
        let failed = Arc::clone(&error);
        let name = c.name.clone();
        let reader = queue.clone();
        let record = log_dir
            .zip(log.lock().as_ref().map(SinkLog::prepared))
            .map(|(d, progress)| WriterRecord::new(d, prepared.map(|(p, _)| *p), progress));
        let mut gate = self.gate.subscribe();
        let task = self.cpu.spawn(async move {
            let _ = gate.wait_for(|open| *open).await;
            let run = std::panic::AssertUnwindSafe(write(
                reader,
                writer,
                record,
                checkpointer.as_ref().map(|c| c.committed()),
                last_checkpoint,
            ))
            .catch_unwind();
            let result = run.await.unwrap_or_else(|panic| {
                Err(weir_engine::EngineError::Internal(panic_message(
                    panic.as_ref(),
                )))
            });
            // Its queue closed by a failed log ends the writer as a DROP does.
            let stopped = match result {
                Err(e) => Some(e.to_string()),
                Ok(()) => failed.lock().clone(),
            };
            if let Some(e) = stopped {
                tracing::error!(sink = %name, error = %e, "sink failed");
                if let Some(cp) = checkpointer {
                    cp.unregister(&name);
                }
                *failed.lock() = Some(e);
            }
        })?;
        let relation = Arc::new(SinkRelation {
            schema: Arc::clone(&schema),
            progress,
            queue,
            queued,
            error,
            task,
            _reads: reads,
            own,
            topic: spec.target.destination().to_string(),
            log_stop,
        });
        let entry = Entry {
            stored: StoredEntry {
                kind: ObjectKind::Sink,
                name: c.name.clone(),
                sql,
                resolved: (parallelism != 0)
                    .then(|| {
                        (
                            super::views::PARALLELISM_KEY.to_string(),
                            parallelism.to_string(),
                        )
                    })
                    .into_iter()
                    .collect(),
                depends_on,
            },
            create: CreateRelation {
                kind: ObjectKind::Sink,
                name: c.name.clone(),
                if_not_exists: false,
                columns: vec![],
                primary_key: key_names,
                watermark: None,
                append_only: false,
                includes: vec![],
                options: Default::default(),
                format: c.format.clone(),
            },
            schema,
            provider: relation as Arc<dyn CatalogRelation>,
        };
        let inserted = self.catalog.lock().insert(entry, persist);
        if inserted.is_err()
            && let Some(cp) = &self.checkpointer
        {
            cp.unregister(&c.name);
        }
        inserted
    }

    /// The plan of a view's query, from its CREATE statement.
    async fn plan_of_view(&self, sql: &str) -> Result<LogicalPlan> {
        let parsed = self.parser.parse(sql, &crate::Interrupt::default())?;
        match parsed.first().map(|p| &p.statement) {
            Some(Statement::CreateView { query, .. }) => self.plan_view_query(query).await,
            _ => Err(SqlError::new(
                "XX000",
                "a view's entry is not a CREATE MATERIALIZED VIEW",
            )),
        }
    }

    /// The sinks' progress, one row per sink and partition written.
    pub fn sink_progress(&self) -> Vec<crate::sink::ProgressRow> {
        self.catalog
            .lock()
            .providers(ObjectKind::Sink)
            .into_iter()
            .flat_map(|(name, p)| {
                p.as_sink()
                    .map(|s| s.progress_rows(&name))
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// Appends a commit to the sink's log (with checkpoints); a log that cannot be written
/// closes the queue, which stops the sink rather than lose what a checkpoint would count as
/// kept.
fn append(
    log: &Mutex<Option<SinkLog>>,
    event: &SinkEvent,
    queue: &SinkQueue,
    failed: &Mutex<Option<String>>,
) -> bool {
    let mut log = log.lock();
    let Some(l) = log.as_mut() else {
        return true;
    };
    match l.append(event) {
        Ok(()) => true,
        Err(e) => {
            *failed.lock() = Some(format!("the sink's log cannot be written: {e}"));
            *log = None;
            queue.close();
            false
        }
    }
}

/// The name a sink's own query's dataflow is checkpointed under.
pub(super) fn own_dataflow(sink: &str) -> String {
    format!("{sink}.query")
}
