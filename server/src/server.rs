//! Server configuration, start-up and graceful shutdown.
//! One tokio listener accepts Postgres connections; each gets its own task.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use weir_sql::Database;

use crate::pg::HandlerFactory;

/// What `weir serve` is configured with (each flag also an env var `WEIR_<NAME>`).
#[derive(Debug, Clone)]
pub struct Config {
    pub pg_listen: SocketAddr,
    /// None keeps everything in memory (tests of the wire protocol only).
    pub data_dir: Option<PathBuf>,
    pub checkpoint_interval: Duration,
    pub metrics_listen: Option<SocketAddr>,
    /// Sessions' `statement_timeout` until they set their own (None: off).
    pub statement_timeout: Option<Duration>,
    /// Sessions open at once; more are refused with 53300.
    pub max_connections: usize,
}

/// `--max-connections` by default (as many as Postgres's default allows, plus margin).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

impl Default for Config {
    fn default() -> Self {
        Self {
            pg_listen: SocketAddr::from(([127, 0, 0, 1], 6875)),
            data_dir: Some(PathBuf::from("./weir-data")),
            checkpoint_interval: Duration::from_secs(10),
            metrics_listen: None,
            statement_timeout: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A running server.
pub struct ServerHandle {
    pub pg_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub database: Arc<Database>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// Stops accepting connections, takes a final checkpoint, and stops every dataflow.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        self.database.shutdown().await;
    }
}

/// Starts weir servers.
pub struct Server;

impl Server {
    pub async fn start(config: Config) -> anyhow::Result<ServerHandle> {
        let database = Database::open_with(
            config.data_dir.clone(),
            Some(config.checkpoint_interval).filter(|i| !i.is_zero()),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let metrics_addr = match config.metrics_listen {
            Some(addr) => Some(crate::metrics::serve(addr).await?),
            None => None,
        };
        // Bound last: once clients can connect, everything else is up.
        let listener = TcpListener::bind(config.pg_listen).await?;
        let pg_addr = listener.local_addr()?;
        let (shutdown, mut stop) = watch::channel(false);
        let factory = Arc::new(HandlerFactory::new(
            Arc::clone(&database),
            config.statement_timeout,
            config.max_connections,
        ));
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => {
                            let factory = Arc::clone(&factory);
                            tokio::spawn(async move {
                                if let Err(e) = pgwire::tokio::process_socket(socket, None, factory).await {
                                    tracing::debug!(error = %e, "connection ended with an error");
                                }
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "accept failed"),
                    }
                }
            }
        });
        tracing::info!(%pg_addr, "weir is listening");
        Ok(ServerHandle {
            pg_addr,
            metrics_addr,
            database,
            shutdown,
            task,
        })
    }
}
