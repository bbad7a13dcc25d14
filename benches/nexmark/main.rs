//! Nexmark views over the built-in generator (issue 5's first part):
//! `cargo bench --bench nexmark -- [--events N] [--queries q0,q5,...] [--out BENCHMARKS.md]`.
//!
//! For each query (RisingWave's texts): a child process with a fresh in-process server, generator sources of
//! N events (default 10M; 20k when run by `cargo test`, as a smoke test), CREATE
//! MATERIALIZED VIEW, then time until every split delivered its rows and a FLUSH returned.
//! Reports events/s (all Nexmark events; each source holds its table's share) and peak
//! RSS (each query runs in a child process of the benchmark). Up to 200k events the
//! view is also checked against the same query run as a batch by DataFusion. Prints
//! progress and a Markdown table; `--out` writes the table to a file.
//! Not yet: the file and Kafka paths, latency at a fixed rate, references, plot.

#![allow(clippy::unwrap_used, clippy::print_stdout, dead_code, unreachable_pub)]

#[path = "../tests/harness.rs"]
mod harness;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use harness::{TestServer, await_view_equals, sorted_rows};

/// (name, query, the share of every 50 events its sources hold).
const QUERIES: &[(&str, &str, u64)] = &[
    (
        "q0",
        "SELECT auction, bidder, price, date_time FROM bid",
        46,
    ),
    (
        "q1",
        "SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid",
        46,
    ),
    (
        "q2",
        "SELECT auction, price FROM bid WHERE auction = 1007 OR auction = 1020 OR auction = 2001 OR auction = 2019 OR auction = 2087",
        46,
    ),
    (
        "q3",
        "SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN person AS P ON A.seller = P.id \
         WHERE A.category = 10 AND (P.state = 'or' OR P.state = 'id' OR P.state = 'ca')",
        4,
    ),
    (
        "q4",
        "SELECT Q.category, AVG(Q.final) AS avg FROM (SELECT MAX(B.price) AS final, A.category \
         FROM auction A, bid B WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires \
         GROUP BY A.id, A.category) Q GROUP BY Q.category",
        49,
    ),
    (
        "q5",
        "SELECT AuctionBids.auction, AuctionBids.num FROM (SELECT auction, count(*) AS num, window_start AS starttime \
         FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY window_start, auction) AS AuctionBids \
         JOIN (SELECT max(CountBids.num) AS maxn, CountBids.starttime_c FROM (SELECT count(*) AS num, window_start AS starttime_c \
         FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY auction, window_start) AS CountBids \
         GROUP BY CountBids.starttime_c) AS MaxBids \
         ON AuctionBids.starttime = MaxBids.starttime_c AND AuctionBids.num >= MaxBids.maxn",
        46,
    ),
    (
        "q7",
        "SELECT B.auction, B.price, B.bidder, B.date_time FROM bid B JOIN (SELECT MAX(price) AS maxprice, \
         window_end AS date_time FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_end) B1 \
         ON B.price = B1.maxprice WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time",
        46,
    ),
    (
        "q8",
        "SELECT P.id, P.name, P.starttime FROM (SELECT id, name, window_start AS starttime, window_end AS endtime \
         FROM TUMBLE(person, date_time, INTERVAL '10' SECOND) GROUP BY id, name, window_start, window_end) P \
         JOIN (SELECT seller, window_start AS starttime, window_end AS endtime FROM TUMBLE(auction, date_time, INTERVAL '10' SECOND) \
         GROUP BY seller, window_start, window_end) A \
         ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime",
        4,
    ),
];

const SOURCES: [(&str, &str); 3] = [
    (
        "person",
        "id BIGINT, name VARCHAR, email_address VARCHAR, credit_card VARCHAR, city VARCHAR, \
         state VARCHAR, date_time TIMESTAMP, extra VARCHAR",
    ),
    (
        "auction",
        "id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT, reserve BIGINT, \
         date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT, extra VARCHAR",
    ),
    (
        "bid",
        "auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, \
         date_time TIMESTAMP, extra VARCHAR",
    ),
];

/// Largest event count at which the view is compared with the batch query.
const CHECKED_UP_TO: u64 = 200_000;

struct Options {
    events: u64,
    queries: Vec<String>,
    out: Option<String>,
    /// Run one query in this process and print its table row (the parent runs each
    /// query in a child, so that peak RSS is the query's own).
    child: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test` (CI) does not: then a small smoke run.
    let bench = args.iter().any(|a| a == "--bench");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    Options {
        events: value("--events")
            .map(|v| v.replace('_', "").parse().expect("--events takes a number"))
            .unwrap_or(if bench { 10_000_000 } else { 20_000 }),
        queries: value("--queries").map_or_else(
            || QUERIES.iter().map(|q| q.0.to_string()).collect(),
            |v| v.split(',').map(str::to_string).collect(),
        ),
        out: value("--out"),
        child: args.iter().any(|a| a == "--child"),
    }
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

struct Row {
    query: String,
    seconds: f64,
    events_per_s: f64,
    peak_rss_mib: f64,
    view_rows: String,
    checked: &'static str,
}

async fn run(name: &str, query: &str, share: u64, events: u64) -> Row {
    let server = TestServer::start().await;
    let client = server.client().await;
    for (table, columns) in SOURCES {
        client
            .batch_execute(&format!(
                "CREATE SOURCE {table} ({columns}, WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
                 WITH (connector = 'nexmark', nexmark.table.type = '{table}', nexmark.event.num = '{events}')"
            ))
            .await
            .unwrap();
    }
    let expected = events / 50 * share + (events % 50).min(share);
    reset_peak_rss();
    let start = Instant::now();
    if let Err(e) = client
        .batch_execute(&format!("CREATE MATERIALIZED VIEW v AS {query}"))
        .await
    {
        let why = e
            .as_db_error()
            .map_or(e.to_string(), |d| d.message().to_string());
        eprintln!("  {name}: not supported: {why}");
        return Row {
            query: name.to_string(),
            seconds: f64::NAN,
            events_per_s: f64::NAN,
            peak_rss_mib: f64::NAN,
            view_rows: "-".into(),
            checked: "not supported",
        };
    }
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
                "  {name}: {delivered} / {expected} rows in ({:.0} rows/s)",
                delivered as f64 / start.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.batch_execute("FLUSH").await.unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let peak = peak_rss_kib();
    let view_rows = sorted_rows(&client, "SELECT count(*) FROM v")
        .await
        .join("");
    let checked = if events <= CHECKED_UP_TO {
        await_view_equals(&client, "v", query, Duration::from_secs(120)).await;
        "= batch"
    } else {
        "-"
    };
    Row {
        query: name.to_string(),
        seconds,
        events_per_s: events as f64 / seconds,
        peak_rss_mib: peak as f64 / 1024.0,
        view_rows,
        checked,
    }
}

/// Runs `query` in a child process of this benchmark; returns its table row.
fn run_in_child(query: &str, events: u64) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--child",
            "--events",
            &events.to_string(),
            "--queries",
            query,
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{query} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(&format!("| {query} |")))
        .unwrap_or_else(|| panic!("{query}: no result row"))
        .to_string()
}

fn row_line(r: &Row) -> String {
    format!(
        "| {} | {:.2} | {:.0} | {:.0} | {} | {} |",
        r.query, r.seconds, r.events_per_s, r.peak_rss_mib, r.view_rows, r.checked
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let o = options();
    if o.child {
        for (name, query, share) in QUERIES
            .iter()
            .filter(|q| o.queries.iter().any(|n| n == q.0))
        {
            println!("{}", row_line(&run(name, query, *share, o.events).await));
        }
        return;
    }
    let mut table = format!(
        "Nexmark views over the built-in generator, {} events, {} cores.\n\n\
         | query | seconds | events/s | peak RSS (MiB) | view rows | check |\n\
         |---|---:|---:|---:|---:|---|\n",
        o.events,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for (name, _, _) in QUERIES
        .iter()
        .filter(|q| o.queries.iter().any(|n| n == q.0))
    {
        eprintln!("{name}: {} events", o.events);
        let line = run_in_child(name, o.events);
        eprintln!("{line}");
        let _ = writeln!(table, "{line}");
    }
    println!("{table}");
    if let Some(path) = o.out {
        std::fs::write(&path, &table).unwrap();
        eprintln!("wrote {path}");
    }
}
