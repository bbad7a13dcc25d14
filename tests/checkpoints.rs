//! Crash safety through the real binary: views over a Kafka topic, a generator and a DML
//! table, kill -9 at seeded moments (some during a checkpoint's write), a checkpoint
//! whose manifest never landed, SIGTERM, restarts at another parallelism; at the end every
//! view equals its batch query.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::harness::{Broker, Lcg, WeirProcess, connect, sorted_rows};

/// Kafka messages produced in all; the producer spreads them over the kills.
const MESSAGES: usize = 24_000;
const PARTITIONS: i32 = 4;

/// Each view and its batch query (the oracle).
const VIEWS: &[(&str, &str, &str)] = &[
    (
        "per_group",
        "SELECT g, count(*) AS n, sum(x) AS s FROM ev GROUP BY g",
        "SELECT g, count(*), sum(x) FROM ev GROUP BY g",
    ),
    (
        "per_second",
        "SELECT window_start, count(*) AS n FROM TUMBLE(ev, ts, INTERVAL '1' SECOND) GROUP BY window_start",
        "SELECT window_start, count(*) FROM TUMBLE(ev, ts, INTERVAL '1' SECOND) GROUP BY window_start",
    ),
    (
        "sessions",
        "SELECT g, window_start, window_end, count(*) AS n FROM SESSION(ev, ts, INTERVAL '300' MILLISECOND) GROUP BY g, window_start, window_end",
        "SELECT g, window_start, window_end, count(*) FROM SESSION(ev, ts, INTERVAL '300' MILLISECOND) GROUP BY g, window_start, window_end",
    ),
    (
        "labelled",
        "SELECT l.label, count(*) AS n, sum(e.x) AS s FROM ev e JOIN labels l ON e.g = l.g GROUP BY l.label",
        "SELECT l.label, count(*), sum(e.x) FROM ev e JOIN labels l ON e.g = l.g GROUP BY l.label",
    ),
    (
        "groups_total",
        "SELECT count(*) AS groups, sum(n) AS n FROM per_group",
        "SELECT count(*), sum(n) FROM (SELECT g, count(*) AS n FROM ev GROUP BY g) t",
    ),
    (
        "bids",
        "SELECT auction % 7 AS a, count(*) AS n, sum(price) AS s FROM bid GROUP BY auction % 7",
        "SELECT auction % 7, count(*), sum(price) FROM bid GROUP BY auction % 7",
    ),
];

fn message(i: usize) -> crate::harness::KafkaMessage {
    // Event time rises by 3 ms a message: in order on every partition.
    let ms = 1_704_067_200_000i64 + 3 * i as i64;
    let ts = chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .naive_utc();
    let payload = format!(
        r#"{{"g": "g{}", "x": {}, "ts": "{}"}}"#,
        i % 13,
        i % 100,
        ts.format("%Y-%m-%dT%H:%M:%S%.3f")
    );
    ((i as i32) % PARTITIONS, None, payload.into_bytes())
}

/// Produces every message, a chunk every 50 ms, until done.
fn produce(bootstrap: String, done: Arc<AtomicBool>) {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(400) {
        for &i in chunk {
            let (partition, _, payload) = message(i);
            let mut record = BaseRecord::<(), Vec<u8>>::to("ev")
                .partition(partition)
                .payload(&payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        producer.poll(Duration::from_millis(10));
                        record = r;
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, Ordering::Relaxed);
}

/// Changes the labels table over and over, reconnecting to whichever weir runs.
async fn update_labels(port: Arc<AtomicU16>, stop: Arc<AtomicBool>) {
    let mut rng = Lcg(5);
    while !stop.load(Ordering::Relaxed) {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port.load(Ordering::Relaxed)));
        let Ok(Ok((client, connection))) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_postgres::connect(
                &format!("host=127.0.0.1 port={} user=weir dbname=weir", addr.port()),
                tokio_postgres::NoTls,
            ),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(connection);
        while !stop.load(Ordering::Relaxed) {
            let g = rng.next(13);
            let sql = match rng.next(4) {
                0 => format!("DELETE FROM labels WHERE g = 'g{g}'"),
                1 => format!("INSERT INTO labels VALUES ('g{g}', 'L{}')", rng.next(3)),
                _ => format!(
                    "UPDATE labels SET label = 'L{}' WHERE g = 'g{g}'",
                    rng.next(3)
                ),
            };
            match client.simple_query(&sql).await {
                Ok(_) => {}
                // A duplicate key is fine; a lost connection means weir was killed.
                Err(e) if e.code().is_some() => {}
                Err(_) => break,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn scalar(client: &Client, sql: &str) -> i64 {
    let rows = sorted_rows(client, sql).await;
    rows.first()
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("{sql}: {rows:?}"))
}

/// Waits until the views read every message, then until each equals its oracle.
async fn converge(client: &Client) {
    let started = Instant::now();
    loop {
        client.batch_execute("FLUSH").await.unwrap();
        let read = scalar(
            client,
            "SELECT coalesce(sum(next_offset), 0) FROM weir_catalog.source_progress WHERE source_name = 'ev'",
        )
        .await;
        let mut differing = Vec::new();
        for (name, _, oracle) in VIEWS {
            let (view, expected) = (
                sorted_rows(client, &format!("SELECT * FROM {name}")).await,
                sorted_rows(client, oracle).await,
            );
            if view != expected {
                differing.push((name, view.len(), expected.len()));
            }
        }
        if read == MESSAGES as i64 && differing.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "read {read} of {MESSAGES}; views differing from their queries (rows, expected): {differing:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The crash test: five views over Kafka, a DML table and a view, and one over
/// a generator, through kills at random moments, a torn checkpoint, and a SIGTERM. Each
/// restart runs the views' keyed operators on another number of instances (as on a
/// machine with more or fewer cores): their state is dealt to the new instances.
#[tokio::test(flavor = "multi_thread")]
async fn views_survive_kill_9_exactly() {
    let broker = Broker::start();
    broker.create_topic("ev", PARTITIONS as u32);
    let dir = tempfile::tempdir().unwrap();
    let parallelism = [2, 3, 1, 2, 4, 3, 1, 2];
    let start = |round: usize| {
        let width = parallelism[round].to_string();
        let args = [
            "--checkpoint-interval",
            "1s",
            "--streaming-parallelism",
            &width,
        ];
        WeirProcess::start_with(dir.path(), &args)
    };
    let mut weir = start(0);
    let (mut client, _) = connect(weir.addr()).await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE ev (g VARCHAR, x BIGINT, ts TIMESTAMP,
                 WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
               WITH (connector = 'kafka', topic = 'ev', properties.bootstrap.server = '{}',
                     scan.startup.mode = 'earliest') FORMAT PLAIN ENCODE JSON;
             CREATE SOURCE bid WITH (connector = 'nexmark', nexmark.table.type = 'Bid',
                 nexmark.event.num = '400000', nexmark.min.event.gap.in.ns = '50000');
             CREATE TABLE labels (g VARCHAR PRIMARY KEY, label VARCHAR);
             INSERT INTO labels VALUES ('g1', 'L0'), ('g2', 'L1'), ('g3', 'L2');",
            broker.bootstrap()
        ))
        .await
        .unwrap();
    for (name, query, _) in VIEWS {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .unwrap();
    }
    let produced = Arc::new(AtomicBool::new(false));
    let producer = {
        let (bootstrap, done) = (broker.bootstrap(), Arc::clone(&produced));
        std::thread::spawn(move || produce(bootstrap, done))
    };
    let port = Arc::new(AtomicU16::new(weir.port));
    let stop = Arc::new(AtomicBool::new(false));
    let updater = tokio::spawn(update_labels(Arc::clone(&port), Arc::clone(&stop)));
    let mut rng = Lcg(20_261_202);
    for round in 0..7 {
        // Up to 3 s: with checkpoints every second, some kills land mid-write.
        tokio::time::sleep(Duration::from_millis(700 + rng.next(2300))).await;
        let checkpoints = scalar(&client, "SELECT count(*) FROM weir_catalog.checkpoints").await;
        eprintln!("round {round}: {checkpoints} checkpoints before the kill");
        if round == 4 {
            let (status, took) = weir.terminate();
            assert!(
                status.success() && took < Duration::from_secs(10),
                "SIGTERM: {status:?} after {took:?}"
            );
        } else {
            weir.kill9();
        }
        if round == 2 {
            // As if killed after writing a checkpoint's parts but before its manifest: the
            // restart must take the one before.
            let manifests = dir.path().join("checkpoints/manifests");
            let mut names: Vec<_> = std::fs::read_dir(&manifests)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            assert!(names.len() >= 2, "two checkpoints retained: {names:?}");
            std::fs::remove_file(names.last().unwrap()).unwrap();
        }
        weir = start(round + 1);
        port.store(weir.port, Ordering::Relaxed);
        let (again, _) = connect(weir.addr()).await;
        // Every view was restored from the checkpoint, not derived again.
        let notes = sorted_rows(
            &again,
            "SELECT name, error FROM weir_catalog.dataflows WHERE error IS NOT NULL",
        )
        .await;
        assert!(notes.is_empty(), "round {round}: {notes:?}");
        if checkpoints > 0 {
            // The readers resumed at stored offsets: what they read since the restart is
            // less than where they are.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (rows, offsets) = (
                scalar(&again, "SELECT sum(rows) FROM weir_catalog.source_progress").await,
                scalar(
                    &again,
                    "SELECT sum(next_offset) FROM weir_catalog.source_progress",
                )
                .await,
            );
            eprintln!(
                "round {round}: read {rows} rows since the restart to reach offsets {offsets}"
            );
            assert!(
                rows < offsets,
                "round {round}: read {rows} rows to reach offsets {offsets}"
            );
        }
        client = again;
    }
    stop.store(true, Ordering::Relaxed);
    updater.await.unwrap();
    producer.join().unwrap();
    assert!(produced.load(Ordering::Relaxed));
    converge(&client).await;
    let labelled = sorted_rows(&client, "SELECT * FROM labelled").await;
    assert!(!labelled.is_empty(), "the join has rows");
}

/// A restart while the broker is down: the view is restored from its checkpoint and
/// readable, and reads on by itself once the broker is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_view_is_served_while_the_broker_is_down() {
    let mut broker = Broker::start();
    broker.create_topic("ev", 2);
    let batch = |from: usize| -> Vec<_> {
        (from..from + 1000)
            .map(|i| ((i % 2) as i32, None, message(i).2))
            .collect()
    };
    broker.produce("ev", &batch(0));
    let dir = tempfile::tempdir().unwrap();
    let weir = WeirProcess::start_with(dir.path(), &["--checkpoint-interval", "1s"]);
    let (client, _) = connect(weir.addr()).await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE ev (g VARCHAR, x BIGINT, ts TIMESTAMP)
               WITH (connector = 'kafka', topic = 'ev', properties.bootstrap.server = '{}')
               FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW per_group AS SELECT g, count(*) AS n FROM ev GROUP BY g",
            broker.bootstrap()
        ))
        .await
        .unwrap();
    let oracle = "SELECT g, count(*) FROM ev GROUP BY g";
    crate::harness::await_view_equals(&client, "per_group", oracle, Duration::from_secs(60)).await;
    client.batch_execute("CHECKPOINT").await.unwrap();
    let before = sorted_rows(&client, "SELECT * FROM per_group").await;
    weir.kill9();
    broker.stop();
    let weir = WeirProcess::start_with(dir.path(), &["--checkpoint-interval", "1s"]);
    let (client, _) = connect(weir.addr()).await;
    assert_eq!(
        sorted_rows(&client, "SELECT * FROM per_group").await,
        before
    );
    broker.resume();
    broker.produce("ev", &batch(1000));
    crate::harness::await_view_equals(&client, "per_group", oracle, Duration::from_secs(90)).await;
    assert_eq!(scalar(&client, "SELECT sum(n) FROM per_group").await, 2000);
}

/// A view over a Kafka upsert table is restored too: its partitions are read from the
/// start again for the keys' rows, and only the changes after the checkpoint are sent.
#[tokio::test(flavor = "multi_thread")]
async fn a_view_over_an_upsert_table_resumes_exactly() {
    let broker = Broker::start();
    broker.create_topic("rates", 2);
    let rate = |partition: i32, currency: &str, rate: f64| {
        (
            partition,
            Some(currency.as_bytes().to_vec()),
            format!(r#"{{"currency": "{currency}", "rate": {rate}}}"#).into_bytes(),
        )
    };
    broker.produce(
        "rates",
        // Binary fractions: a float sum with retractions is exact only when every term is.
        &[
            rate(0, "EUR", 1.5),
            rate(1, "GBP", 1.25),
            rate(0, "JPY", 0.5),
            rate(0, "EUR", 1.75),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let weir = WeirProcess::start_with(dir.path(), &["--checkpoint-interval", "1s"]);
    let (client, _) = connect(weir.addr()).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE rates (currency VARCHAR PRIMARY KEY, rate DOUBLE)
               WITH (connector = 'kafka', topic = 'rates', properties.bootstrap.server = '{}')
               FORMAT UPSERT ENCODE JSON;
             CREATE MATERIALIZED VIEW strong AS SELECT count(*) AS n, sum(rate) AS s FROM rates WHERE rate > 1;
             CHECKPOINT",
            broker.bootstrap()
        ))
        .await
        .unwrap();
    let oracle = "SELECT count(*), sum(rate) FROM rates WHERE rate > 1";
    crate::harness::await_view_equals(&client, "strong", oracle, Duration::from_secs(30)).await;
    weir.kill9();
    // While weir is down: an update, a new key, a delete.
    broker.produce("rates", &[rate(1, "GBP", 0.75), rate(1, "CHF", 1.125)]);
    broker.produce_tombstone("rates", 0, "EUR");
    let weir = WeirProcess::start_with(dir.path(), &["--checkpoint-interval", "1s"]);
    let (client, _) = connect(weir.addr()).await;
    let notes = sorted_rows(
        &client,
        "SELECT error FROM weir_catalog.dataflows WHERE error IS NOT NULL",
    )
    .await;
    assert!(notes.is_empty(), "restored, not derived again: {notes:?}");
    crate::harness::await_view_equals(&client, "strong", oracle, Duration::from_secs(30)).await;
    assert_eq!(
        sorted_rows(&client, "SELECT n FROM strong").await,
        vec!["1"]
    );
}
