//! Concurrent clients during ingestion: `cargo bench --bench load -- [clients] [seconds]
//! [stall_seconds] [events_per_second]` (defaults 64, 30, 120, 200000).
//!
//! Runs the `weir` binary with a live Nexmark bid stream and two views over it. Phase 1:
//! `clients` tokio-postgres sessions query the views in a loop for `seconds`; reports
//! queries/s, p50/p99/max latency and errors. Phase 2: one raw connection starts a
//! `COPY (SUBSCRIBE ...)` to a view whose commits change up to a thousand groups each, then
//! never reads; samples the server's RSS each second for `stall_seconds`. Prints progress,
//! a markdown section for BENCHMARKS.md, and one `RESULT {json}` line. Run by `cargo test`
//! (no `--bench` flag), it is a smoke run: 4 clients, 3 s, 5 s, 20000 events/s.

#![allow(clippy::unwrap_used, clippy::print_stdout, dead_code, unreachable_pub)]

#[path = "../tests/harness.rs"]
mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::WeirProcess;
use tokio_postgres::NoTls;

/// What the clients run, in turn: a full view, an aggregate over a view, a point lookup.
const QUERIES: [&str; 3] = [
    "SELECT * FROM channel_totals",
    "SELECT max(bids), sum(bids) FROM bids_per_second",
    "SELECT bids FROM channel_totals WHERE channel = 'channel-3'",
];

/// `cargo bench` passes --bench; `cargo test` (CI) does not.
fn benching() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn arg(i: usize, bench_default: u64, smoke_default: u64) -> u64 {
    let default = if benching() {
        bench_default
    } else {
        smoke_default
    };
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// The server's resident set, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Logs in over a raw socket (trust), sends `sql` as a simple query and returns the socket
/// without reading another byte: a client that stalled.
fn stalled_subscriber(port: u16, sql: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut body = 196_608i32.to_be_bytes().to_vec();
    for part in ["user", "weir", "database", "weir", ""] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    s.write_all(&packet).unwrap();
    // Read up to ReadyForQuery ('Z').
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).unwrap();
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut rest = vec![0u8; len - 4];
        s.read_exact(&mut rest).unwrap();
        if head[0] == b'Z' {
            break;
        }
    }
    let mut query = vec![b'Q'];
    query.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
    query.extend_from_slice(sql.as_bytes());
    query.push(0);
    s.write_all(&query).unwrap();
    s
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let clients = arg(0, 64, 4) as usize;
    let seconds = arg(1, 30, 3);
    let stall_seconds = arg(2, 120, 5);
    let rate = arg(3, 200_000, 20_000);
    let dir = tempfile::tempdir().unwrap();
    let weir = WeirProcess::start(dir.path());
    let pid = weir.child.0.id();
    let (admin, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={} user=weir dbname=weir", weir.port),
        NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let gap_ns = 1_000_000_000 / rate.max(1);
    admin
        .batch_execute(&format!(
            "CREATE SOURCE live_bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR,
                url VARCHAR, date_time TIMESTAMP, extra VARCHAR,
                WATERMARK FOR date_time AS date_time - INTERVAL '2' SECOND)
              WITH (connector = 'nexmark', nexmark.table.type = 'Bid',
                    nexmark.min.event.gap.in.ns = '{gap_ns}');
             CREATE MATERIALIZED VIEW channel_totals AS
               SELECT channel, count(*) AS bids, max(price) AS top FROM live_bid GROUP BY channel;
             CREATE MATERIALIZED VIEW bids_per_second AS
               SELECT window_start, count(*) AS bids FROM TUMBLE(live_bid, date_time, INTERVAL '1' SECOND)
               GROUP BY window_start;
             CREATE MATERIALIZED VIEW hot_groups AS
               SELECT auction % 1000 AS k, count(*) AS bids, max(price) AS top FROM live_bid GROUP BY 1"
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss = rss_mib(pid);
    eprintln!(
        "phase 1: {clients} clients for {seconds}s, {rate} events/s ingested; RSS {idle_rss:.0} MiB"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let port = weir.port;
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(
                &format!("host=127.0.0.1 port={port} user=weir dbname=weir"),
                NoTls,
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match client.simple_query(QUERIES[i % QUERIES.len()]).await {
                    Ok(_) => latencies.push(started.elapsed()),
                    Err(e) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("client {c}: {e}");
                        }
                    }
                }
                i += 1;
            }
            (latencies, errors)
        }));
    }
    let started = Instant::now();
    let mut peak_rss = idle_rss;
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        peak_rss = peak_rss.max(rss_mib(pid));
        eprintln!(
            "  {:>3.0}s RSS {:.0} MiB",
            started.elapsed().as_secs_f64(),
            rss_mib(pid)
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let qps = latencies.len() as f64 / elapsed;
    let (p50, p99, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    let ingested: i64 = admin
        .query_one("SELECT sum(bids)::bigint FROM channel_totals", &[])
        .await
        .unwrap()
        .get(0);
    eprintln!(
        "  {} queries, {qps:.0}/s, p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms, {errors} errors; {ingested} bids in",
        latencies.len()
    );

    eprintln!("phase 2: one stalled COPY (SUBSCRIBE TO hot_groups) for {stall_seconds}s");
    let base_rss = rss_mib(pid);
    let socket = stalled_subscriber(weir.port, "COPY (SUBSCRIBE TO hot_groups) TO STDOUT");
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(stall_seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = rss_mib(pid);
        samples.push((started.elapsed().as_secs(), rss));
        if samples.len() % 10 == 0 {
            eprintln!("  {:>3}s RSS {rss:.0} MiB", started.elapsed().as_secs());
        }
    }
    let stall_peak = samples.iter().map(|s| s.1).fold(base_rss, f64::max);
    let stall_end = samples.last().map_or(base_rss, |s| s.1);
    // The server still answers.
    let answered = admin.simple_query("SELECT 1").await.is_ok();
    drop(socket);

    let markdown = format!(
        "## Concurrent clients\n\n\
         `cargo bench --bench load -- {clients} {seconds} {stall_seconds} {rate}`: the release \
         `weir` binary ingesting a live Nexmark bid stream at {rate} events/s into three views, \
         while {clients} tokio-postgres sessions (simple protocol) run `{}` in turn for {seconds} s.\n\n\
         | clients | queries/s | p50 ms | p99 ms | max ms | errors | RSS idle MiB | RSS peak MiB |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {clients} | {qps:.0} | {p50:.1} | {p99:.1} | {max:.1} | {errors} | {idle_rss:.0} | {peak_rss:.0} |\n\n\
         Then one client starts `COPY (SUBSCRIBE TO hot_groups) TO STDOUT` (up to a thousand groups \
         change per commit) and never reads. Server RSS before it: {base_rss:.0} MiB; peak over \
         {stall_seconds} s: {stall_peak:.0} MiB; at the end: {stall_end:.0} MiB. The server kept \
         answering: {answered}.\n",
        QUERIES.join("`, `")
    );
    println!("{markdown}");
    println!(
        "RESULT {}",
        serde_json::json!({
            "clients": clients, "seconds": seconds, "queries": latencies.len(), "qps": qps,
            "p50_ms": p50, "p99_ms": p99, "max_ms": max, "errors": errors,
            "rss_idle_mib": idle_rss, "rss_peak_mib": peak_rss, "stall_base_mib": base_rss,
            "stall_peak_mib": stall_peak, "stall_end_mib": stall_end, "rss_samples": samples,
        })
    );
    assert_eq!(errors, 0, "queries failed under load");
    assert!(answered);
}
