//! The `weir` command line: `weir serve` and `weir demo`.
//! Flags double as `WEIR_<NAME>` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::server::{AuthMode, Config, Server, ServerHandle};

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "A streaming SQL database over Kafka, spoken to through Postgres"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Run the server with built-in Nexmark sources, and print how to connect.
    Demo(ServeArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Postgres wire endpoint.
    #[arg(long, env = "WEIR_PG_LISTEN", default_value = "127.0.0.1:6875")]
    pg_listen: SocketAddr,
    /// Catalog, table logs and checkpoints (created if missing).
    #[arg(long, env = "WEIR_DATA_DIR", default_value = "./weir-data")]
    data_dir: PathBuf,
    /// The key that seals credentials of WITH options in the catalog, kept outside the
    /// data dir so that copies of it (backups) do not open them. Created if missing; a key
    /// already in the data dir moves there.
    #[arg(long, env = "WEIR_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
    /// How often state is checkpointed, e.g. 10s.
    #[arg(long, env = "WEIR_CHECKPOINT_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    checkpoint_interval: Duration,
    /// HTTP endpoint: the web console at /, Prometheus /metrics, /healthz and the JSON API
    /// (`--metrics-listen` is the old name).
    #[arg(
        long,
        alias = "metrics-listen",
        env = "WEIR_HTTP_LISTEN",
        default_value = "127.0.0.1:9464"
    )]
    http_listen: SocketAddr,
    /// Sessions open at once; more are refused (53300).
    #[arg(long, env = "WEIR_MAX_CONNECTIONS", default_value_t = crate::server::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Every session's `statement_timeout` until it sets its own (e.g. 30s; 0 = none).
    #[arg(long, env = "WEIR_STATEMENT_TIMEOUT", default_value = "0", value_parser = parse_duration)]
    statement_timeout: Duration,
    /// How sessions log in: `trust` (any user, no password) or `password` (SCRAM-SHA-256).
    #[arg(long, env = "WEIR_AUTH", value_enum, default_value = "trust")]
    auth: AuthMode,
    /// A file holding the password of the superuser `weir` (or set WEIR_PASSWORD).
    #[arg(long, env = "WEIR_PASSWORD_FILE")]
    password_file: Option<PathBuf>,
    /// PEM certificate chain offered to TLS clients (with --tls-key).
    #[arg(long, env = "WEIR_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "WEIR_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Refuse connections that do not use TLS.
    #[arg(long, env = "WEIR_TLS_REQUIRED")]
    tls_required: bool,
    /// Instances of each keyed operator (join, grouped aggregate, TopN) of views whose
    /// session set no `streaming_parallelism`; 0 = one per core. Views checkpointed at
    /// another parallelism are restored at this one.
    #[arg(long, env = "WEIR_STREAMING_PARALLELISM", default_value_t = 0)]
    streaming_parallelism: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("invalid duration '{s}'"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" | "min" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("invalid duration unit in '{s}' (use ms, s or m)")),
    }
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        // The password comes from a file or the environment, never the command line (where
        // `ps` would show it).
        let bootstrap_password = match (&self.password_file, std::env::var("WEIR_PASSWORD")) {
            (Some(path), _) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--password-file {}: {e}", path.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            (None, Ok(p)) if !p.is_empty() => Some(p),
            _ => None,
        };
        Ok(Config {
            pg_listen: self.pg_listen,
            data_dir: Some(self.data_dir.clone()),
            checkpoint_interval: self.checkpoint_interval,
            secret_key_file: self.secret_key_file.clone(),
            http_listen: Some(self.http_listen),
            statement_timeout: (!self.statement_timeout.is_zero())
                .then_some(self.statement_timeout),
            max_connections: self.max_connections,
            auth: self.auth,
            bootstrap_password,
            tls: self.tls_cert.clone().zip(self.tls_key.clone()),
            tls_required: self.tls_required,
            parallelism: (self.streaming_parallelism > 0).then_some(self.streaming_parallelism),
        })
    }
}

/// The demo's sources: the three Nexmark relations (10M events), and a live bid stream at
/// 10,000 events/s (event time keeps pace with the clock) with a windowed view over it.
const DEMO_SQL: &str = "
CREATE SOURCE IF NOT EXISTS person WITH (connector = 'nexmark', nexmark.table.type = 'Person', nexmark.event.num = '10000000');
CREATE SOURCE IF NOT EXISTS auction WITH (connector = 'nexmark', nexmark.table.type = 'Auction', nexmark.event.num = '10000000');
CREATE SOURCE IF NOT EXISTS bid WITH (connector = 'nexmark', nexmark.table.type = 'Bid', nexmark.event.num = '10000000');
CREATE SOURCE IF NOT EXISTS live_bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR,
    url VARCHAR, date_time TIMESTAMP, extra VARCHAR,
    WATERMARK FOR date_time AS date_time - INTERVAL '2' SECOND)
  WITH (connector = 'nexmark', nexmark.table.type = 'Bid', nexmark.min.event.gap.in.ns = '100000');
CREATE MATERIALIZED VIEW IF NOT EXISTS bids_per_10s AS
  SELECT window_start, window_end, count(*) AS bids, max(price) AS max_price
  FROM TUMBLE(live_bid, date_time, INTERVAL '10' SECOND) GROUP BY window_start, window_end;
";

/// `RUST_LOG` (default `info`), except that sqlparser never logs below info: its debug
/// records quote whole statements, and with them the credentials of WITH options.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    match "sqlparser=info".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Entry point of the `weir` binary.
pub fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(CONNECTION_STACK_BYTES)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let handle = Server::start(args.config()?).await?;
                wait_for_signal(handle).await
            }
            Command::Demo(args) => {
                let handle = Server::start(args.config()?).await?;
                demo_setup(&handle).await?;
                wait_for_signal(handle).await
            }
        }
    });
    // Connection tasks still running (a client mid-statement) are dropped, not awaited.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Connection threads do no deep recursion (statements are parsed and planned on the
/// query threads), but a margin over tokio's 2 MiB costs only address space.
const CONNECTION_STACK_BYTES: usize = 16 << 20;

/// How long SIGTERM may take: the process exits by then whatever is still running.
const SHUTDOWN_DEADLINE: Duration = Duration::from_millis(9500);

async fn demo_setup(handle: &ServerHandle) -> anyhow::Result<()> {
    let mut session = weir_sql::Session::new(weir_sql::roles::BOOTSTRAP_ROLE, &Default::default());
    for stmt in handle
        .database
        .parse(DEMO_SQL, &weir_sql::Interrupt::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        handle
            .database
            .execute(&mut session, &stmt, None)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let addr = handle.pg_addr;
    let banner = format!(
        "\nweir demo is running with Nexmark sources person, auction, bid, a live bid stream\n\
         live_bid (10,000 events/s) and the windowed view bids_per_10s over it.\n\
         Connect with:\n\n    psql -h {} -p {} -U weir weir\n\n\
         or open the web console at http://{}/ (live views, dataflow graphs, SQL).\n\n\
         Then try (more in examples/quickstart.sql):\n\n    \
         SELECT channel, count(*), avg(price) FROM bid GROUP BY channel ORDER BY 2 DESC;\n    \
         SELECT * FROM bids_per_10s ORDER BY window_start DESC LIMIT 3;\n    \
         COPY (SUBSCRIBE TO bids_per_10s) TO STDOUT;   -- watch it change; Ctrl-C ends it\n\n\
         Ctrl-C stops the server.\n",
        addr.ip(),
        addr.port(),
        handle
            .http_addr
            .map_or_else(|| "(no --http-listen)".to_string(), |a| a.to_string())
    );
    eprintln!("{banner}");
    Ok(())
}

async fn wait_for_signal(handle: ServerHandle) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    // Whatever hangs below (a session's statement, a checkpoint), the process still ends
    // in time: SIGTERM exits 0 within 10 s.
    std::thread::Builder::new()
        .name("weir-shutdown-deadline".into())
        .spawn(|| {
            std::thread::sleep(SHUTDOWN_DEADLINE);
            tracing::warn!("shutdown did not finish in time; exiting");
            std::process::exit(0);
        })?;
    handle.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
