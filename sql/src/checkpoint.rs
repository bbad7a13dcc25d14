//! The checkpoint coordinator: every interval it starts a checkpoint in the epoch stream of
//! all dataflows at once, gathers each task's snapshot, and commits them with a manifest.
//!
//! It runs on its own thread: operator tasks only hand over their snapshots (Arrow
//! tables); encoding and storage happen here. One checkpoint is in flight at a time. It is
//! committed when every task of every view registered when it started has reported (views
//! dropped meanwhile are left out): task snapshots are written first, then the manifest
//! that names them with their checksums. The last two committed checkpoints are kept.

pub(crate) mod manifest;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::SelectAll;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use weir_engine::checkpoint::CheckpointStore;
use weir_engine::runtime::{Barriers, GraphSnapshot};
use weir_engine::{Epoch, TableBase, TableStore};

use self::manifest::{
    MANIFESTS, Manifest, TablePart, TaskPart, ViewMeta, ViewPart, manifest_path, parts_dir,
    table_to_bytes,
};
use crate::error::{Result, SqlError};
use crate::relation::table_file_name;

/// A checkpoint not complete this long after it started is abandoned (a stalled view).
const CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(60);
/// Committed checkpoints kept; older ones are deleted.
const RETAINED: usize = 2;

/// What `weir_catalog.checkpoints` shows of one retained checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointInfo {
    pub(crate) epoch: Epoch,
    pub(crate) started_at_ms: i64,
    pub(crate) duration_ms: u64,
    pub(crate) bytes: u64,
    pub(crate) views: Vec<String>,
    /// The log position each DML table's rows are at.
    pub(crate) tables: BTreeMap<String, u64>,
}

enum Command {
    Register {
        view: Arc<str>,
        snapshots: mpsc::UnboundedReceiver<GraphSnapshot>,
        tasks: usize,
        meta: ViewMeta,
    },
    Unregister(Arc<str>),
    /// A DML table whose rows each checkpoint keeps (and whose log it then truncates).
    RegisterTable(Arc<str>, Arc<Mutex<TableStore>>),
    UnregisterTable(Arc<str>),
    /// Take a checkpoint now (or join the one in flight); the reply comes at its commit.
    Now(oneshot::Sender<Result<Epoch>>),
    /// Start taking checkpoints on the interval (after the catalog was replayed).
    Resume,
    /// Take no more checkpoints (the server is stopping).
    Stop,
}

/// The handle the database keeps; dropping it stops the coordinator thread.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    commands: mpsc::UnboundedSender<Command>,
    retained: Arc<Mutex<Vec<CheckpointInfo>>>,
    committed: watch::Receiver<Epoch>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl Checkpointer {
    /// Starts the coordinator: a checkpoint every `interval` (None: only when asked).
    pub(crate) fn start(
        store: Arc<dyn CheckpointStore>,
        barriers: Arc<Barriers>,
        interval: Option<Duration>,
        retained: Vec<CheckpointInfo>,
    ) -> Result<Self> {
        let (commands, rx) = mpsc::unbounded_channel();
        let newest = retained.last().map_or(0, |c| c.epoch);
        let (committed_tx, committed) = watch::channel(newest);
        let retained = Arc::new(Mutex::new(retained));
        let mut coordinator = Coordinator {
            store,
            barriers,
            views: BTreeMap::new(),
            tables: BTreeMap::new(),
            pending: None,
            retained: Arc::clone(&retained),
            committed: committed_tx,
        };
        std::thread::Builder::new()
            .name("weir-checkpoint".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(rt) => rt.block_on(coordinator.run(rx, interval)),
                    Err(e) => tracing::error!(error = %e, "checkpoints stopped: no runtime"),
                }
            })
            .map_err(|e| SqlError::new("53000", format!("cannot start checkpoints: {e}")))?;
        Ok(Self {
            commands,
            retained,
            committed,
        })
    }

    /// The newest committed checkpoint, changing as checkpoints commit (sinks that make
    /// output visible only at a commit wait on it).
    pub(crate) fn committed(&self) -> watch::Receiver<Epoch> {
        self.committed.clone()
    }

    /// Adds a view's dataflow to the checkpoints started from now on; `tasks` of its tasks
    /// report a snapshot on `snapshots` for each.
    pub(crate) fn register(
        &self,
        view: &str,
        snapshots: mpsc::UnboundedReceiver<GraphSnapshot>,
        tasks: usize,
        meta: ViewMeta,
    ) {
        let _ = self.commands.send(Command::Register {
            view: Arc::from(view),
            snapshots,
            tasks,
            meta,
        });
    }

    /// Keeps a DML table's rows in every checkpoint from now on.
    pub(crate) fn register_table(&self, name: &str, store: Arc<Mutex<TableStore>>) {
        let _ = self
            .commands
            .send(Command::RegisterTable(Arc::from(name), store));
    }

    pub(crate) fn unregister_table(&self, name: &str) {
        let _ = self
            .commands
            .send(Command::UnregisterTable(Arc::from(name)));
    }

    /// Starts the checkpoints on the interval (they wait until the catalog is replayed).
    pub(crate) fn resume(&self) {
        let _ = self.commands.send(Command::Resume);
    }

    /// Takes no more checkpoints.
    pub(crate) fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }

    /// Leaves a view out of checkpoints (dropped, or failed).
    pub(crate) fn unregister(&self, view: &str) {
        let _ = self.commands.send(Command::Unregister(Arc::from(view)));
    }

    /// Takes a checkpoint and waits until it is committed (or fails, or `timeout`).
    pub(crate) async fn checkpoint_now(&self, timeout: Duration) -> Result<Epoch> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Now(tx))
            .map_err(|_| SqlError::new("57P01", "checkpoints have stopped"))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(SqlError::new("57P01", "checkpoints have stopped")),
            Err(_) => Err(SqlError::new(
                "57014",
                "the checkpoint did not finish in time",
            )),
        }
    }

    /// The retained checkpoints, oldest first.
    pub(crate) fn retained(&self) -> Vec<CheckpointInfo> {
        self.retained.lock().clone()
    }
}

struct Registered {
    tasks: usize,
    meta: ViewMeta,
}

/// A checkpoint in flight.
struct Pending {
    epoch: Epoch,
    started: Instant,
    started_at_ms: i64,
    /// Views it waits for, with their snapshots so far.
    views: BTreeMap<Arc<str>, (usize, ViewMeta, Vec<GraphSnapshot>)>,
    /// DML tables' rows, taken before its barrier started (so no view's position in a
    /// table is before the table's).
    tables: Vec<(Arc<str>, TableBase)>,
    waiters: Vec<oneshot::Sender<Result<Epoch>>>,
}

impl Pending {
    fn complete(&self) -> bool {
        self.views
            .values()
            .all(|(tasks, _, got)| got.len() >= *tasks)
    }
}

type Reports = SelectAll<futures::stream::BoxStream<'static, (Arc<str>, GraphSnapshot)>>;

struct Coordinator {
    store: Arc<dyn CheckpointStore>,
    barriers: Arc<Barriers>,
    views: BTreeMap<Arc<str>, Registered>,
    tables: BTreeMap<Arc<str>, Arc<Mutex<TableStore>>>,
    pending: Option<Pending>,
    retained: Arc<Mutex<Vec<CheckpointInfo>>>,
    committed: watch::Sender<Epoch>,
}

impl Coordinator {
    async fn run(
        &mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        every: Option<Duration>,
    ) {
        let mut ticker = tokio::time::interval(every.unwrap_or(Duration::from_secs(3600)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut watchdog = tokio::time::interval(Duration::from_secs(1));
        let mut reports: Reports = SelectAll::new();
        let mut running = false;
        loop {
            tokio::select! {
                _ = ticker.tick(), if every.is_some() && running => self.begin(None),
                _ = watchdog.tick() => self.expire(),
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Register { view, snapshots, tasks, meta }) => {
                        let tag = Arc::clone(&view);
                        let stream = tokio_stream(snapshots)
                            .map(move |s| (Arc::clone(&tag), s))
                            .boxed();
                        reports.push(stream);
                        self.views.insert(view, Registered { tasks, meta });
                    }
                    Some(Command::Unregister(view)) => {
                        self.views.remove(&view);
                        if let Some(p) = &mut self.pending {
                            p.views.remove(&view);
                        }
                    }
                    Some(Command::RegisterTable(name, store)) => {
                        self.tables.insert(name, store);
                    }
                    Some(Command::UnregisterTable(name)) => {
                        self.tables.remove(&name);
                    }
                    Some(Command::Now(reply)) => self.begin(Some(reply)),
                    Some(Command::Resume) => running = true,
                    Some(Command::Stop) => return,
                },
                Some((view, snapshot)) = reports.next(), if !reports.is_empty() => {
                    if let Some(p) = &mut self.pending
                        && p.epoch == snapshot.checkpoint
                        && let Some((_, _, got)) = p.views.get_mut(&view)
                    {
                        got.push(snapshot);
                    }
                }
            }
            if self.pending.as_ref().is_some_and(Pending::complete)
                && let Some(p) = self.pending.take()
            {
                let result = self
                    .commit(p.epoch, p.started, p.started_at_ms, p.views, p.tables)
                    .await;
                match &result {
                    Ok(epoch) => {
                        self.committed.send_replace(*epoch);
                    }
                    Err(e) => {
                        tracing::error!(epoch = p.epoch, error = %e, "checkpoint not committed")
                    }
                }
                for w in p.waiters {
                    let _ = w.send(result.clone());
                }
            }
        }
    }

    /// Starts a checkpoint unless one is in flight (a waiter then waits for that one).
    fn begin(&mut self, waiter: Option<oneshot::Sender<Result<Epoch>>>) {
        if let Some(p) = &mut self.pending {
            p.waiters.extend(waiter);
            return;
        }
        let mut tables = Vec::with_capacity(self.tables.len());
        for (name, store) in &self.tables {
            match store.lock().checkpoint() {
                Ok(base) => tables.push((Arc::clone(name), base)),
                Err(e) => {
                    tracing::error!(table = %name, error = %e, "cannot checkpoint a table");
                    return;
                }
            }
        }
        let barrier = self.barriers.inject_checkpoint();
        self.pending = Some(Pending {
            tables,
            epoch: barrier.epoch,
            started: Instant::now(),
            started_at_ms: barrier.ts_ms,
            views: self
                .views
                .iter()
                .map(|(v, r)| (Arc::clone(v), (r.tasks, r.meta.clone(), Vec::new())))
                .collect(),
            waiters: waiter.into_iter().collect(),
        });
    }

    /// Abandons a checkpoint that did not complete in time.
    fn expire(&mut self) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.started.elapsed() > CHECKPOINT_TIMEOUT)
            && let Some(p) = self.pending.take()
        {
            let missing: Vec<&str> = p
                .views
                .iter()
                .filter(|(_, (tasks, _, got))| got.len() < *tasks)
                .map(|(v, _)| v.as_ref())
                .collect();
            tracing::warn!(
                epoch = p.epoch,
                ?missing,
                "checkpoint abandoned: views did not report"
            );
            for w in p.waiters {
                let _ = w.send(Err(SqlError::new(
                    "57014",
                    format!(
                        "checkpoint {} abandoned: {} did not report",
                        p.epoch,
                        missing.join(", ")
                    ),
                )));
            }
        }
    }

    /// Writes the task snapshots, then the manifest naming them; then drops old checkpoints.
    async fn commit(
        &mut self,
        epoch: Epoch,
        started: Instant,
        started_at_ms: i64,
        views: BTreeMap<Arc<str>, (usize, ViewMeta, Vec<GraphSnapshot>)>,
        tables: Vec<(Arc<str>, TableBase)>,
    ) -> Result<Epoch> {
        let mut parts = Vec::with_capacity(views.len());
        let mut total = 0;
        let mut table_parts = Vec::with_capacity(tables.len());
        for (name, base) in &tables {
            let bytes = table_to_bytes(base)?;
            let path = format!("{}/tables/{}", parts_dir(epoch), part_name(name, "rows"));
            total += bytes.len() as u64;
            table_parts.push(TablePart {
                name: name.to_string(),
                lsn: base.lsn,
                path: path.clone(),
                bytes: bytes.len() as u64,
                crc32: crc32fast::hash(&bytes),
            });
            self.store.put(&path, bytes).await?;
        }
        for (view, (_, meta, mut snapshots)) in views {
            snapshots.sort_by_key(|s| s.task);
            let mut tasks = Vec::with_capacity(snapshots.len());
            for s in snapshots {
                let bytes = s.to_bytes()?;
                let path = format!(
                    "{}/{}/{}.snap",
                    parts_dir(epoch),
                    part_name(&view, "d"),
                    s.task
                );
                let part = TaskPart {
                    task: s.task,
                    path: path.clone(),
                    bytes: bytes.len() as u64,
                    crc32: crc32fast::hash(&bytes),
                };
                total += part.bytes;
                self.store.put(&path, bytes).await?;
                tasks.push(part);
            }
            parts.push(ViewPart {
                name: view.to_string(),
                meta,
                tasks,
            });
        }
        let manifest = Manifest {
            epoch,
            started_at_ms,
            duration_ms: started.elapsed().as_millis() as u64,
            bytes: total,
            views: parts,
            tables: table_parts,
        };
        self.store
            .put(&manifest_path(epoch), manifest.to_bytes()?)
            .await?;
        tracing::debug!(
            epoch,
            bytes = total,
            ms = manifest.duration_ms,
            "checkpoint committed"
        );
        let info = info(&manifest);
        let (keep, truncate) = {
            let mut retained = self.retained.lock();
            retained.push(info);
            let drop = retained.len().saturating_sub(RETAINED);
            retained.drain(..drop);
            // A table's log keeps what follows the oldest retained checkpoint's rows, so
            // that either checkpoint can be restored (the newer may be unreadable).
            let truncate: Vec<(Arc<str>, u64)> = self
                .tables
                .keys()
                .filter_map(|t| {
                    let lsns: Option<Vec<u64>> = retained
                        .iter()
                        .map(|c| c.tables.get(t.as_ref()).copied())
                        .collect();
                    Some((Arc::clone(t), lsns?.into_iter().min()?))
                })
                .collect();
            (
                retained.iter().map(|c| c.epoch).collect::<Vec<_>>(),
                truncate,
            )
        };
        for (name, upto) in truncate {
            if let Some(store) = self.tables.get(&name)
                && let Err(e) = store.lock().truncate_log(upto)
            {
                tracing::warn!(table = %name, error = %e, "cannot truncate a table's log");
            }
        }
        self.delete_all_but(&keep).await?;
        Ok(epoch)
    }

    /// Deletes every manifest and task snapshot not of a checkpoint in `keep` (older
    /// committed ones, and parts of ones that were never committed).
    async fn delete_all_but(&self, keep: &[Epoch]) -> Result<()> {
        let newest = keep.iter().max().copied().unwrap_or(0);
        for path in self.store.list("").await? {
            let first = path.split('/').next().unwrap_or("");
            let epoch = if first == MANIFESTS {
                path.rsplit('/')
                    .next()
                    .and_then(|f| f.strip_suffix(".json"))
                    .and_then(|e| e.parse::<Epoch>().ok())
            } else {
                first.parse::<Epoch>().ok()
            };
            // A checkpoint newer than the newest commit may be in progress: left alone.
            if let Some(e) = epoch
                && !keep.contains(&e)
                && e < newest
            {
                self.store.delete(&path).await?;
            }
        }
        Ok(())
    }
}

/// A relation's name as a part's file name: `table_file_name` with `-` for its `%`, which
/// `object_store` would escape again on disk (every checkpoint after `CREATE SINK s AS ...`,
/// whose dataflow is `s.query`, failed). Still one name per relation: `table_file_name`
/// writes `-` itself as `%2D`.
fn part_name(name: &str, extension: &str) -> String {
    table_file_name(name, extension).replace('%', "-")
}

/// The introspection row of a committed checkpoint.
pub(crate) fn info(m: &Manifest) -> CheckpointInfo {
    CheckpointInfo {
        epoch: m.epoch,
        started_at_ms: m.started_at_ms,
        duration_ms: m.duration_ms,
        bytes: m.bytes,
        views: m.views.iter().map(|v| v.name.clone()).collect(),
        tables: m.tables.iter().map(|t| (t.name.clone(), t.lsn)).collect(),
    }
}

fn tokio_stream(
    mut rx: mpsc::UnboundedReceiver<GraphSnapshot>,
) -> impl futures::Stream<Item = GraphSnapshot> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
