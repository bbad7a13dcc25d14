//! Whether the data directory stays bounded (`--data-dir-minutes N`): the `weir` binary
//! checkpoints every second for N minutes while a producer feeds a Kafka topic and a client
//! updates a table; the data dir's size is sampled every 10 s. Table logs are truncated at
//! each checkpoint and two checkpoints are kept, so it should level off.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{Broker, WeirProcess, connect, sorted_rows};

/// Messages produced per second, and table updates per second.
const MESSAGES_PER_S: u64 = 2_000;
const UPDATES_PER_S: u64 = 100;
/// Keys of the table (and groups of the topic): the views' state is bounded by them.
const KEYS: u64 = 20_000;
/// Samples in the first minutes (checkpoints filling up) are shown, not judged.
const WARM_UP: Duration = Duration::from_secs(120);

/// The run's samples: seconds since start, data dir bytes.
pub struct Bound {
    pub minutes: u64,
    pub samples: Vec<(f64, u64)>,
    pub produced: u64,
    pub updates: u64,
    pub checkpoints: i64,
}

/// Bytes of every file under `dir`.
fn size_of(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => size_of(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub async fn data_dir_bound(minutes: u64) -> Bound {
    let broker = Broker::start();
    broker.create_topic("ev", 2);
    let dir = tempfile::tempdir().unwrap();
    let weir = WeirProcess::start_with(dir.path(), &["--checkpoint-interval", "1s"]);
    let (client, _) = connect(weir.addr()).await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE ev (g BIGINT, x BIGINT, ts TIMESTAMP,
                 WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
               WITH (connector = 'kafka', topic = 'ev', properties.bootstrap.server = '{}')
               FORMAT PLAIN ENCODE JSON;
             CREATE TABLE labels (g BIGINT PRIMARY KEY, label VARCHAR);
             INSERT INTO labels VALUES {};
             CREATE MATERIALIZED VIEW per_group AS SELECT g, count(*) AS n, sum(x) AS s FROM ev GROUP BY g;
             CREATE MATERIALIZED VIEW per_label AS
               SELECT l.label, count(*) AS n FROM ev e JOIN labels l ON e.g = l.g GROUP BY l.label;
             CREATE MATERIALIZED VIEW per_minute AS
               SELECT window_start, count(*) AS n FROM TUMBLE(ev, ts, INTERVAL '1' MINUTE) GROUP BY window_start;",
            broker.bootstrap(),
            (0..KEYS)
                .map(|g| format!("({g}, 'L0')"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let updated = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    // The producer and the updater run on threads of their own while this one samples.
    let samples = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let (stop_p, produced_p) = (Arc::clone(&stop), Arc::clone(&produced));
            let broker = &broker;
            scope.spawn(move || {
                // Paced: a tenth of a second's messages, then a pause, until told to stop.
                let messages = (0u64..)
                    .take_while(|_| !stop_p.load(Ordering::Relaxed))
                    .inspect(|i| {
                        produced_p.store(*i, Ordering::Relaxed);
                        if i % (MESSAGES_PER_S / 10) == 0 {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    })
                    .map(|i| {
                        let ts = chrono::Utc::now().naive_utc();
                        let payload = format!(
                            r#"{{"g": {}, "x": {}, "ts": "{}"}}"#,
                            i % KEYS,
                            i % 100,
                            ts.format("%Y-%m-%dT%H:%M:%S%.3f")
                        );
                        ((i % 2) as i32, None, payload.into_bytes())
                    });
                broker.produce_all("ev", messages);
            });
            let runtime = tokio::runtime::Handle::current();
            let (stop_u, updated_u, addr) = (Arc::clone(&stop), Arc::clone(&updated), weir.addr());
            scope.spawn(move || {
                runtime.block_on(async {
                    let (client, _) = connect(addr).await;
                    let mut i = 0u64;
                    while !stop_u.load(Ordering::Relaxed) {
                        let sql = format!(
                            "UPDATE labels SET label = 'L{}' WHERE g = {}",
                            i % 7,
                            (i * 7919) % KEYS
                        );
                        client.batch_execute(&sql).await.unwrap();
                        i += 1;
                        updated_u.store(i, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(1000 / UPDATES_PER_S)).await;
                    }
                });
            });
            let mut samples = Vec::new();
            while started.elapsed() < Duration::from_secs(minutes * 60) {
                std::thread::sleep(Duration::from_secs(10));
                let bytes = size_of(dir.path());
                let at = started.elapsed().as_secs_f64();
                eprintln!(
                    "data dir: {:.0} s, {:.1} MiB, {} messages, {} updates",
                    at,
                    bytes as f64 / 1048576.0,
                    produced.load(Ordering::Relaxed),
                    updated.load(Ordering::Relaxed)
                );
                samples.push((at, bytes));
            }
            stop.store(true, Ordering::Relaxed);
            samples
        })
    });
    let checkpoints = sorted_rows(&client, "SELECT max(epoch) FROM weir_catalog.checkpoints")
        .await
        .first()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    Bound {
        minutes,
        samples,
        produced: produced.load(Ordering::Relaxed),
        updates: updated.load(Ordering::Relaxed),
        checkpoints,
    }
}

/// The report section: the size every few minutes, and its range after the warm-up.
pub fn markdown(b: &Bound) -> String {
    let mut out = String::new();
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    let settled: Vec<u64> = b
        .samples
        .iter()
        .filter(|(at, _)| *at >= WARM_UP.as_secs_f64())
        .map(|s| s.1)
        .collect();
    let (lo, hi) = (
        settled.iter().copied().min().unwrap_or(0),
        settled.iter().copied().max().unwrap_or(0),
    );
    let mean = settled.iter().sum::<u64>() as f64 / settled.len().max(1) as f64;
    let mut sorted = settled.clone();
    sorted.sort_unstable();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    // Two checkpoints are kept; a sample taken while a third is written sees three.
    let above = settled
        .iter()
        .filter(|&&b| b as f64 > median as f64 * 1.2)
        .count();
    let seconds = b.samples.last().map_or(1.0, |s| s.0);
    let _ = writeln!(
        out,
        "Data directory over {} minutes of Kafka ingestion ({:.0} messages/s into three views) \
         and table updates ({:.0}/s, each its own statement, over {KEYS} keys), with a checkpoint \
         every second (the last one's epoch: {}): {} messages, {} updates. After the first {} s it \
         stayed between {:.1} and {:.1} MiB, {:+.0}% / {:+.0}% of its mean ({:.1} MiB); its median \
         was {:.1} MiB, and {above} of {} samples were more than 20% above it (taken while a \
         third checkpoint was being written, before the oldest of the two kept is deleted).\n",
        b.minutes,
        b.produced as f64 / seconds,
        b.updates as f64 / seconds,
        b.checkpoints,
        b.produced,
        b.updates,
        WARM_UP.as_secs(),
        mib(lo),
        mib(hi),
        (lo as f64 - mean) / mean * 100.0,
        (hi as f64 - mean) / mean * 100.0,
        mean / 1048576.0,
        mib(median),
        settled.len()
    );
    let _ = writeln!(out, "| minute | data dir MiB |");
    let _ = writeln!(out, "|---:|---:|");
    let step = (b.samples.len() / 15).max(1);
    for (at, bytes) in b.samples.iter().step_by(step) {
        let _ = writeln!(out, "| {:.1} | {:.1} |", at / 60.0, mib(*bytes));
    }
    out
}
