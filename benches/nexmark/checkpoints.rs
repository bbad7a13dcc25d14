//! What checkpoints cost (`--checkpoints`): q5 and q7 over the generator with a checkpoint
//! every 10 s and every 1 s against none, and the recovery of a view with a large state
//! after kill -9 (the `weir` binary) against deriving it again from its Kafka topic.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use weir_engine::connector::nexmark::{NexmarkOptions, NexmarkReader, NexmarkTable};

use crate::harness::{Broker, WeirProcess, connect, sorted_rows};
use crate::run::{Input, Job, Outcome};

/// The checkpoint intervals compared (0: none but the one at shutdown).
const INTERVALS_MS: [u64; 3] = [0, 10_000, 1_000];

/// One query at one interval.
pub struct CostRow {
    pub query: String,
    pub interval_ms: u64,
    pub outcome: Outcome,
}

/// Runs q5 and q7 at each interval, each in a child process.
pub fn throughput(
    events: u64,
    base_time_ms: u64,
    in_child: impl Fn(&Job) -> Outcome,
) -> Vec<CostRow> {
    let mut rows = Vec::new();
    for query in ["q5", "q7"] {
        for interval_ms in INTERVALS_MS {
            eprintln!(
                "weir {query} over the generator, checkpoints every {interval_ms} ms: {events} events"
            );
            let job = Job {
                query: query.to_string(),
                events,
                base_time_ms,
                input: Input::Generator,
                latency_rate: None,
                latency_secs: 0,
                check: false,
                parallelism: 0,
                checkpoint_ms: interval_ms,
            };
            let outcome = in_child(&job);
            eprintln!(
                "  {:.0} events/s; last checkpoint {:?}",
                events as f64 / outcome.seconds,
                outcome.checkpoints
            );
            rows.push(CostRow {
                query: query.to_string(),
                interval_ms,
                outcome,
            });
        }
    }
    rows
}

/// The recovery experiment's measurements.
pub struct Recovery {
    pub bids: u64,
    pub view_rows: i64,
    pub state_bytes: i64,
    /// From CREATE MATERIALIZED VIEW until it holds every message (the topic read once).
    pub derive_s: f64,
    pub checkpoint_ms: i64,
    pub checkpoint_bytes: i64,
    /// From starting the killed server again until its port answers with the view whole.
    pub readable_s: f64,
    /// ... and until a FLUSH returns after that.
    pub caught_up_s: f64,
}

/// Bids produced to a topic on Tansu (sqlite, which resumes reads at any offset), a view
/// grouping them by (bidder, auction), kill -9 after a checkpoint, and the restart.
pub async fn recovery(events: u64, base_time_ms: u64) -> Recovery {
    let broker = Broker::start();
    broker.create_topic("bid", 2);
    let options = NexmarkOptions {
        table: NexmarkTable::Bid,
        event_num: Some(events),
        base_time_ms,
    };
    let started = Instant::now();
    let mut bids = 0;
    for part in 0..2u64 {
        let mut reader = NexmarkReader::new(&options, part, 2);
        let mut messages = Vec::new();
        while let Some(batch) = reader.next_batch(8192) {
            let mut json = arrow_json::LineDelimitedWriter::new(Vec::new());
            json.write(&batch).unwrap();
            json.finish().unwrap();
            for line in json
                .into_inner()
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
            {
                messages.push((part as i32, None, line.to_vec()));
            }
        }
        bids += messages.len() as u64;
        broker.produce("bid", &messages);
    }
    eprintln!(
        "recovery: produced {bids} bids ({:.0} msg/s)",
        bids as f64 / started.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().unwrap();
    let args = ["--checkpoint-interval", "10s"];
    let weir = WeirProcess::start_with(dir.path(), &args);
    let (client, _) = connect(weir.addr()).await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
                 date_time TIMESTAMP, extra VARCHAR)
               WITH (connector = 'kafka', topic = 'bid', properties.bootstrap.server = '{}')
               FORMAT PLAIN ENCODE JSON",
            broker.bootstrap()
        ))
        .await
        .unwrap();
    let started = Instant::now();
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW pairs AS SELECT bidder, auction, count(*) AS n, sum(price) AS s,
                 max(date_time) AS last, min(url) AS url FROM bid GROUP BY bidder, auction",
        )
        .await
        .unwrap();
    let read =
        "SELECT sum(next_offset) FROM weir_catalog.source_progress WHERE source_name = 'bid'";
    wait_until(&client, read, bids as i64, "the first derivation").await;
    client.batch_execute("FLUSH").await.unwrap();
    let derive_s = started.elapsed().as_secs_f64();
    let number = |rows: Vec<String>| {
        rows.first()
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let view_rows = number(sorted_rows(&client, "SELECT count(*) FROM pairs").await);
    let state_bytes = number(
        sorted_rows(
            &client,
            "SELECT state_bytes FROM weir_catalog.dataflows WHERE name = 'pairs'",
        )
        .await,
    );
    client.batch_execute("CHECKPOINT").await.unwrap();
    let last = sorted_rows(
        &client,
        "SELECT duration_ms, bytes FROM weir_catalog.checkpoints ORDER BY epoch DESC LIMIT 1",
    )
    .await;
    let (checkpoint_ms, checkpoint_bytes) = last
        .first()
        .and_then(|r| r.split_once('|'))
        .map(|(d, b)| (d.parse().unwrap_or(0), b.parse().unwrap_or(0)))
        .unwrap_or_default();
    eprintln!(
        "recovery: {view_rows} groups, {} MiB of state, derived in {derive_s:.1} s; checkpoint {checkpoint_ms} ms, {} MiB",
        state_bytes >> 20,
        checkpoint_bytes >> 20
    );
    weir.kill9();
    let restarted = Instant::now();
    let weir = WeirProcess::start_with(dir.path(), &args);
    let (client, _) = connect(weir.addr()).await;
    let rows = number(sorted_rows(&client, "SELECT count(*) FROM pairs").await);
    let readable_s = restarted.elapsed().as_secs_f64();
    assert_eq!(
        rows, view_rows,
        "the restored view holds every group at once"
    );
    client.batch_execute("FLUSH").await.unwrap();
    wait_until(&client, read, bids as i64, "the recovery").await;
    let caught_up_s = restarted.elapsed().as_secs_f64();
    eprintln!("recovery: readable after {readable_s:.2} s, caught up after {caught_up_s:.2} s");
    Recovery {
        bids,
        view_rows,
        state_bytes,
        derive_s,
        checkpoint_ms,
        checkpoint_bytes,
        readable_s,
        caught_up_s,
    }
}

async fn wait_until(client: &tokio_postgres::Client, sql: &str, value: i64, what: &str) {
    let started = Instant::now();
    let mut reported = Instant::now();
    loop {
        let now = sorted_rows(client, sql)
            .await
            .first()
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0);
        if now >= value {
            return;
        }
        if reported.elapsed() > Duration::from_secs(5) {
            eprintln!("  {what}: {now} / {value}");
            reported = Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "{what} stalled at {now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The report section.
pub fn markdown(events: u64, cost: &[CostRow], recovery: &Recovery) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Checkpoints\n");
    // The throughput table, unless only the recovery was measured.
    if !cost.is_empty() {
        let _ = writeln!(
            out,
            "Throughput over the generator ({events} events) with a checkpoint every 10 s and every 1 s, \
             against none (only the final one at shutdown); the last checkpoint's duration and size.\n"
        );
        let _ = writeln!(
            out,
            "| query | checkpoints | events/s | vs none | last checkpoint |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for row in cost {
            let rate = events as f64 / row.outcome.seconds;
            let base = cost
                .iter()
                .find(|r| r.query == row.query && r.interval_ms == 0)
                .map(|r| events as f64 / r.outcome.seconds);
            let every = match row.interval_ms {
                0 => "none".to_string(),
                ms => format!("every {} s", ms / 1000),
            };
            let cost = match (row.interval_ms, base) {
                (0, _) | (_, None) => "".to_string(),
                (_, Some(b)) => format!("{:+.1}%", (rate - b) / b * 100.0),
            };
            let last = row
                .outcome
                .checkpoints
                .map_or("-".to_string(), |(_, ms, bytes)| {
                    format!("{ms} ms, {:.1} MiB", bytes as f64 / 1048576.0)
                });
            let _ = writeln!(
                out,
                "| {} | {every} | {:.2}M | {cost} | {last} |",
                row.query,
                rate / 1e6
            );
        }
    }
    let r = recovery;
    let _ = writeln!(
        out,
        "\nRecovery after kill -9 of a view grouping {} bids by (bidder, auction) from a Kafka topic \
         (Tansu sqlite, 2 partitions): {} groups, {:.0} MiB of state, a {:.0} MiB checkpoint taken in {} ms.\n",
        r.bids,
        r.view_rows,
        r.state_bytes as f64 / 1048576.0,
        r.checkpoint_bytes as f64 / 1048576.0,
        r.checkpoint_ms
    );
    let _ = writeln!(out, "| | seconds |");
    let _ = writeln!(out, "|---|---|");
    let _ = writeln!(
        out,
        "| derive the view from the topic | {:.2} |",
        r.derive_s
    );
    let _ = writeln!(
        out,
        "| restart → view readable (whole) | {:.2} |",
        r.readable_s
    );
    let _ = writeln!(
        out,
        "| restart → caught up (FLUSH) | {:.2} |",
        r.caught_up_s
    );
    out
}
