//! One query maintained by weir, in a child process of the benchmark (so that its peak RSS
//! is its own): over the generator, the NDJSON files or the Kafka topics, or at a fixed rate
//! with the latency of its changes measured through SUBSCRIBE.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::harness::{TestServer, await_view_equals, sorted_rows};
use crate::queries::{Query, RELATIONS, column_list};

/// Where a run reads its events.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Input {
    /// The built-in generator, in-process.
    Generator,
    /// The NDJSON files in this directory, through the `file` source.
    File(String),
    /// The topics on this Kafka bootstrap server.
    Kafka(String),
}

/// What the parent asks a child to do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub query: String,
    pub events: u64,
    pub base_time_ms: u64,
    pub input: Input,
    /// Events per second to pace the generator to, for a latency run.
    pub latency_rate: Option<f64>,
    /// Seconds a latency run listens.
    pub latency_secs: u64,
    /// Compare the view with the same query run as a batch by weir.
    pub check: bool,
    /// The view's `streaming_parallelism` (0: one instance per core).
    pub parallelism: usize,
    /// How often the server checkpoints, in ms (0: only at shutdown).
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_ms: u64,
}

fn default_checkpoint_ms() -> u64 {
    10_000
}

/// Latency percentiles in ms (p50, p99), the number of changes they are over, and why
/// listening stopped early (e.g. the server dropped a client that fell behind).
pub type Latency = (f64, f64, u64, Option<String>);

/// A child's answer.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Why the query did not run (e.g. refused by the planner).
    pub error: Option<String>,
    pub seconds: f64,
    pub peak_rss_mib: f64,
    pub view_rows: u64,
    /// Equal to weir's batch answer (only when asked to check).
    pub checked: bool,
    pub latency_ms: Option<Latency>,
    /// The newest checkpoint committed during the run: its epoch, duration (ms), bytes.
    #[serde(default)]
    pub checkpoints: Option<(u64, u64, u64)>,
}

/// Peak resident memory of this process in KiB since the last reset.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn reset_peak_rss() {
    // "5" resets VmHWM to the current RSS (Linux).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// CREATE SOURCE for each Nexmark relation, reading from `job.input`.
fn source_ddl(job: &Job) -> Vec<String> {
    let watermark = "WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND";
    RELATIONS
        .iter()
        .map(|(relation, columns)| {
            let columns = column_list(columns);
            let with = match &job.input {
                Input::Generator => {
                    let amount = match job.latency_rate {
                        Some(rate) => format!("nexmark.min.event.gap.in.ns = '{}'", (1e9 / rate) as u64),
                        None => format!("nexmark.event.num = '{}'", job.events),
                    };
                    format!(
                        "WITH (connector = 'nexmark', nexmark.table.type = '{relation}', {amount}, \
                         nexmark.base.time = '{}')",
                        job.base_time_ms
                    )
                }
                Input::File(dir) => format!(
                    "WITH (connector = 'file', path = '{dir}/{relation}-*.ndjson') FORMAT PLAIN ENCODE JSON"
                ),
                Input::Kafka(bootstrap) => format!(
                    "WITH (connector = 'kafka', topic = '{relation}', properties.bootstrap.server = '{bootstrap}') \
                     FORMAT PLAIN ENCODE JSON"
                ),
            };
            format!("CREATE SOURCE {relation} ({columns}, {watermark}) {with}")
        })
        .collect()
}

pub async fn run(query: &Query, job: &Job) -> Outcome {
    let every = Duration::from_millis(job.checkpoint_ms);
    let server = TestServer::start_with_checkpoints(every).await;
    let client = server.client().await;
    for ddl in source_ddl(job) {
        client.batch_execute(&ddl).await.unwrap();
    }
    if let Some(setup) = crate::queries::setup(query) {
        client.batch_execute(setup).await.unwrap();
    }
    client
        .batch_execute(&format!("SET streaming_parallelism TO {}", job.parallelism))
        .await
        .unwrap();
    reset_peak_rss();
    let start = Instant::now();
    if let Err(e) = client
        .batch_execute(&format!("CREATE MATERIALIZED VIEW v AS {}", query.sql))
        .await
    {
        let why = e
            .as_db_error()
            .map_or(e.to_string(), |d| d.message().to_string());
        return Outcome {
            error: Some(why),
            ..Outcome::default()
        };
    }
    if job.latency_rate.is_some() {
        let latency = latency(&client, job.latency_secs).await;
        return Outcome {
            latency_ms: latency,
            ..Outcome::default()
        };
    }
    let expected = job.events / 50 * query.share + (job.events % 50).min(query.share);
    let mut last_report = Instant::now();
    loop {
        let delivered: i64 = client
            .query_one(
                "SELECT CAST(coalesce(sum(rows), 0) AS BIGINT) FROM weir_catalog.source_progress",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if delivered as u64 >= expected {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "    {}: {delivered} / {expected} rows in ({:.0} rows/s)",
                query.name,
                delivered as f64 / start.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // `source_progress` shows one reader per partition, but a query that reads a relation
    // twice (q5, q7) has two: FLUSH until a FLUSH no longer changes the view (its last
    // commit time stays), and take the time of the last FLUSH that changed it.
    let count = || async {
        // The wall time of the last commit that changed the view.
        sorted_rows(
            &client,
            "SELECT CAST(last_commit AS VARCHAR) FROM weir_catalog.dataflows WHERE name = 'v'",
        )
        .await
        .join("")
    };
    client.batch_execute("FLUSH").await.unwrap();
    let mut seconds = start.elapsed().as_secs_f64();
    let mut last = count().await;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.batch_execute("FLUSH").await.unwrap();
        let now = count().await;
        if now == last {
            break;
        }
        seconds = start.elapsed().as_secs_f64();
        last = now;
    }
    let peak = peak_rss_kib();
    let view_rows = sorted_rows(&client, "SELECT count(*) FROM v")
        .await
        .join("");
    if job.check {
        await_view_equals(&client, "v", query.sql, Duration::from_secs(120)).await;
    }
    let last = sorted_rows(
        &client,
        "SELECT epoch, duration_ms, bytes FROM weir_catalog.checkpoints ORDER BY epoch DESC LIMIT 1",
    )
    .await;
    let checkpoints = last.first().map(|r| {
        let f: Vec<u64> = r.split('|').map(|v| v.parse().unwrap_or(0)).collect();
        (f[0], f[1], f[2])
    });
    Outcome {
        error: None,
        seconds,
        peak_rss_mib: peak as f64 / 1024.0,
        view_rows: view_rows.parse().unwrap_or(0),
        checked: job.check,
        latency_ms: None,
        checkpoints,
    }
}

/// Listens to the view's changes for `secs` seconds (after a second of warm-up) and returns
/// the p50 and p99 of (arrival at the client − the commit's `weir_ts`), and their count.
/// `weir_ts` is the wall time at which the epoch's barrier entered the sources, so this is
/// the time from an epoch's last input to its changes reaching a client. A client that
/// cannot keep up is disconnected by the server: then the samples up to that point.
async fn latency(client: &tokio_postgres::Client, secs: u64) -> Option<Latency> {
    let stream = client
        .copy_out("COPY (SUBSCRIBE TO v WITH (snapshot = false)) TO STDOUT")
        .await
        .unwrap();
    let mut stream = std::pin::pin!(stream);
    let start = Instant::now();
    let warm_up = Duration::from_secs(1);
    let until = warm_up + Duration::from_secs(secs);
    let mut samples = Vec::new();
    let mut pending = Vec::new();
    let mut stopped = None;
    while start.elapsed() < until {
        let chunk = match tokio::time::timeout(until - start.elapsed(), stream.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(e))) => {
                let why = e
                    .as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_string());
                stopped = Some(why);
                break;
            }
            _ => break,
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
            * 1000.0;
        pending.extend_from_slice(&chunk);
        let warm = start.elapsed() > warm_up;
        let mut line_start = 0;
        while let Some(len) = pending[line_start..].iter().position(|&b| b == b'\n') {
            let line = &pending[line_start..line_start + len];
            line_start += len + 1;
            let ts = line.split(|&b| b == b'\t').next().and_then(|t| {
                std::str::from_utf8(t)
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
            });
            if let Some(ts) = ts
                && warm
            {
                samples.push(now_ms - ts);
            }
        }
        pending.drain(..line_start);
    }
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    Some((at(0.5), at(0.99), samples.len() as u64, stopped))
}
