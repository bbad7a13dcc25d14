//! Server configuration, start-up and graceful shutdown.
//! One tokio listener accepts Postgres connections, each on its own task; the HTTP
//! endpoint runs beside it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use weir_sql::{Database, Options};

use crate::pg::{HandlerFactory, SessionOptions};

/// What `weir serve` is configured with (each flag also an env var `WEIR_<NAME>`).
#[derive(Debug, Clone)]
pub struct Config {
    pub pg_listen: SocketAddr,
    /// None keeps everything in memory (tests of the wire protocol only).
    pub data_dir: Option<PathBuf>,
    pub checkpoint_interval: Duration,
    /// The key sealing credentials in the catalog, outside the data dir (None: in it).
    pub secret_key_file: Option<PathBuf>,
    /// Metrics, the web console and the JSON API (None: no HTTP endpoint).
    pub http_listen: Option<SocketAddr>,
    /// Sessions' `statement_timeout` until they set their own (None: off).
    pub statement_timeout: Option<Duration>,
    /// Sessions open at once; more are refused with 53300.
    pub max_connections: usize,
    /// How logins are checked.
    pub auth: AuthMode,
    /// Under `AuthMode::Password`: the password the superuser `weir` gets at start (None
    /// keeps the stored one).
    pub bootstrap_password: Option<String>,
    /// PEM certificate chain and private key: TLS is offered when set.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Refuse connections without TLS.
    pub tls_required: bool,
    /// Instances of each keyed operator of views that set none (None: one per core).
    pub parallelism: Option<usize>,
}

/// `--auth`: how a session proves who it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Any user name is accepted without a password (local use).
    #[default]
    Trust,
    /// SCRAM-SHA-256 against the stored roles; the only mechanism offered.
    Password,
}

/// `--max-connections` by default (as many as Postgres's default allows, plus margin).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

impl Default for Config {
    fn default() -> Self {
        Self {
            pg_listen: SocketAddr::from(([127, 0, 0, 1], 6875)),
            data_dir: Some(PathBuf::from("./weir-data")),
            checkpoint_interval: Duration::from_secs(10),
            secret_key_file: None,
            http_listen: None,
            statement_timeout: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            auth: AuthMode::Trust,
            bootstrap_password: None,
            tls: None,
            tls_required: false,
            parallelism: None,
        }
    }
}

/// A running server.
pub struct ServerHandle {
    pub pg_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
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
        let database = Database::open(Options {
            data_dir: config.data_dir.clone(),
            checkpoint_interval: Some(config.checkpoint_interval).filter(|i| !i.is_zero()),
            secret_key_file: config.secret_key_file.clone(),
            parallelism: config.parallelism,
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        if config.auth == AuthMode::Password {
            database
                .access()
                .require_passwords(config.bootstrap_password.as_deref())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        anyhow::ensure!(
            config.tls.is_some() || !config.tls_required,
            "--tls-required needs --tls-cert and --tls-key"
        );
        let tls = match &config.tls {
            Some((cert, key)) => Some(crate::tls::acceptor(cert, key)?),
            None => None,
        };
        let http_addr = match config.http_listen {
            Some(addr) => Some(
                crate::http::serve(addr, Arc::clone(&database), config.statement_timeout).await?,
            ),
            None => None,
        };
        // Bound last: once clients can connect, everything else is up.
        let listener = TcpListener::bind(config.pg_listen).await?;
        let pg_addr = listener.local_addr()?;
        let (shutdown, mut stop) = watch::channel(false);
        let factory = Arc::new(HandlerFactory::new(
            Arc::clone(&database),
            &SessionOptions {
                statement_timeout: config.statement_timeout,
                max_connections: config.max_connections,
                tls_required: config.tls_required,
            },
        ));
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((socket, _)) => {
                            let factory = Arc::clone(&factory);
                            let tls = tls.clone();
                            tokio::spawn(async move {
                                if let Err(e) = pgwire::tokio::process_socket(socket, tls, factory).await {
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
            http_addr,
            database,
            shutdown,
            task,
        })
    }
}
