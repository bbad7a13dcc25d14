//! Kafka sinks through a real broker (Tansu): what a consumer reads from a PLAIN, UPSERT or
//! DEBEZIUM sink equals the view it writes, after inserts, updates and deletes upstream,
//! and across kill -9 nothing is lost (at-least-once; the duplicates are counted).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_postgres::Client;

use crate::harness::{
    Broker, ConsumedMessage, TestServer, WeirProcess, await_rows, connect, http_get, sorted_rows,
    sqlstate,
};

/// A JSON row as `a|b|c` in `columns` order, as `sorted_rows` spells a row.
fn row_text(row: &Value, columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| match &row[*c] {
            Value::Null => "NULL".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("|")
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

/// The rows an UPSERT topic holds once compacted: last value per key, tombstones delete.
fn compact_upserts(messages: &[ConsumedMessage], columns: &[&str]) -> Vec<String> {
    let mut by_key = BTreeMap::new();
    for (_, key, value) in messages {
        let key = key.clone().expect("upsert messages have keys");
        match value {
            Some(v) => by_key.insert(key, row_text(&json(v), columns)),
            None => by_key.remove(&key),
        };
    }
    let mut rows: Vec<String> = by_key.into_values().collect();
    rows.sort();
    rows
}

/// The rows Debezium envelopes leave when replayed in order: c/r/u set a key's row, d
/// removes it (tombstones only compact).
fn replay_debezium(messages: &[ConsumedMessage], columns: &[&str]) -> Vec<String> {
    let mut by_key = BTreeMap::new();
    for (_, key, value) in messages {
        let Some(v) = value else { continue };
        let key = key.clone().expect("debezium messages have keys");
        let envelope = json(v);
        match envelope["op"].as_str().unwrap() {
            "c" | "r" | "u" => {
                by_key.insert(key, row_text(&envelope["after"], columns));
            }
            "d" => {
                assert!(envelope["after"].is_null() && !envelope["before"].is_null());
                by_key.remove(&key);
            }
            other => panic!("unknown op {other}"),
        }
    }
    let mut rows: Vec<String> = by_key.into_values().collect();
    rows.sort();
    rows
}

/// Polls until what `read` makes of the topic equals the view (FLUSH between tries).
async fn await_topic_equals_view(
    client: &Client,
    broker: &Broker,
    topic: &str,
    view: &str,
    read: impl Fn(&[ConsumedMessage]) -> Vec<String>,
) {
    let started = Instant::now();
    loop {
        client.batch_execute("FLUSH").await.unwrap();
        let want = sorted_rows(client, &format!("SELECT * FROM {view}")).await;
        let got = read(&broker.consume(topic));
        if got == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{topic}: {got:?}\nview {view}: {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

const ACCOUNTS: &str =
    "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR, balance BIGINT);
     CREATE MATERIALIZED VIEW by_owner AS
       SELECT owner, count(*) AS n, sum(balance) AS total FROM accounts GROUP BY owner;";

/// Inserts, updates (moving accounts between owners) and deletes (emptying one owner).
async fn churn_accounts(client: &Client) {
    for i in 0..40 {
        client
            .batch_execute(&format!(
                "INSERT INTO accounts VALUES ({i}, 'o{}', {})",
                i % 5,
                i * 10
            ))
            .await
            .unwrap();
    }
    client
        .batch_execute(
            "UPDATE accounts SET balance = balance + 1 WHERE id % 3 = 0;
             UPDATE accounts SET owner = 'o9' WHERE id % 7 = 0;
             DELETE FROM accounts WHERE owner = 'o4';
             DELETE FROM accounts WHERE id > 35;
             INSERT INTO accounts VALUES (100, 'o4', 5)",
        )
        .await
        .unwrap();
    // In an epoch of its own: an owner emptied (a delete downstream, not an update).
    client
        .batch_execute("FLUSH; DELETE FROM accounts WHERE owner = 'o3'")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_sink_writes_every_row_of_an_append_only_view() {
    let broker = Broker::start();
    broker.create_topic("orders", 2);
    broker.create_topic("big_orders", 3);
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE orders (id BIGINT, customer VARCHAR, amount BIGINT)
               WITH (connector = 'kafka', topic = 'orders', properties.bootstrap.server = '{b}')
               FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW big AS SELECT id, customer, amount FROM orders WHERE amount > 10;
             CREATE MATERIALIZED VIEW per_customer AS SELECT customer, count(*) AS n FROM orders GROUP BY customer;
             CREATE SINK big_out FROM big WITH (connector = 'kafka', topic = 'big_orders',
               properties.bootstrap.server = '{b}') FORMAT PLAIN ENCODE JSON",
            b = broker.bootstrap()
        ))
        .await
        .unwrap();
    // A view with updates cannot be written as PLAIN, unless its retractions are dropped.
    let refused = client
        .batch_execute(&format!(
            "CREATE SINK counts FROM per_customer WITH (connector = 'kafka', topic = 'x',
               properties.bootstrap.server = '{}') FORMAT PLAIN ENCODE JSON",
            broker.bootstrap()
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused), "0A000");
    let messages: Vec<_> = (0..300)
        .map(|i| {
            (
                i % 2,
                None,
                format!(
                    r#"{{"id": {i}, "customer": "c{}", "amount": {}}}"#,
                    i % 7,
                    i % 40
                )
                .into_bytes(),
            )
        })
        .collect();
    broker.produce("orders", &messages);
    // The whole topic first: the topic and the view can also be equal half way.
    let big = (0..300).filter(|i| i % 40 > 10).count().to_string();
    await_rows(
        &client,
        "SELECT count(*) FROM big",
        &[big.as_str()],
        Duration::from_secs(60),
    )
    .await;
    let columns = ["id", "customer", "amount"];
    await_topic_equals_view(&client, &broker, "big_orders", "big", |m| {
        let mut rows: Vec<String> = m
            .iter()
            .map(|(_, _, v)| row_text(&json(v.as_ref().unwrap()), &columns))
            .collect();
        rows.sort();
        rows
    })
    .await;
    // Listed, described, and in the progress tables.
    assert_eq!(sorted_rows(&client, "SHOW SINKS").await, vec!["big_out"]);
    // The producer's acknowledgements (which sink_progress counts) may come after a
    // consumer already reads the messages.
    let expected = vec![big];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let delivered = sorted_rows(
            &client,
            "SELECT sum(rows) FROM weir_catalog.sink_progress WHERE sink = 'big_out'",
        )
        .await;
        if delivered == expected || Instant::now() > deadline {
            assert_eq!(delivered, expected);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sorted_rows(
            &client,
            "SELECT name FROM weir_catalog.dataflows WHERE name = 'big_out'"
        )
        .await,
        vec!["big_out"]
    );
    // /metrics counts the same messages, per partition written.
    let metrics = http_get(server.http_addr(), "/metrics");
    let sent: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("weir_sink_messages_total{sink=\"big_out\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(sent.to_string(), expected[0], "{metrics}");
    assert!(
        metrics.contains("weir_sink_lag_epochs{sink=\"big_out\""),
        "{metrics}"
    );
    let show = sorted_rows(&client, "SHOW CREATE SINK big_out").await;
    assert!(show[0].contains("FORMAT PLAIN ENCODE JSON"), "{show:?}");
    // The view cannot go while its sink reads it; CASCADE takes both.
    let e = client
        .batch_execute("DROP MATERIALIZED VIEW big")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "2BP01");
    client
        .batch_execute("DROP MATERIALIZED VIEW big CASCADE")
        .await
        .unwrap();
    assert!(sorted_rows(&client, "SHOW SINKS").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upsert_sink_compacts_to_the_view_after_updates_and_deletes() {
    let broker = Broker::start();
    broker.create_topic("owners", 2);
    let server = TestServer::start().await;
    let client = server.client().await;
    client.batch_execute(ACCOUNTS).await.unwrap();
    // The key is the view's GROUP BY column, found from its plan.
    client
        .batch_execute(&format!(
            "CREATE SINK owners FROM by_owner WITH (connector = 'kafka', topic = 'owners',
               properties.bootstrap.server = '{}') FORMAT UPSERT ENCODE JSON",
            broker.bootstrap()
        ))
        .await
        .unwrap();
    churn_accounts(&client).await;
    let columns = ["owner", "n", "total"];
    await_topic_equals_view(&client, &broker, "owners", "by_owner", |m| {
        compact_upserts(m, &columns)
    })
    .await;
    // An emptied owner left a tombstone keyed by it.
    let tombstones = broker
        .consume("owners")
        .iter()
        .filter(|(_, _, v)| v.is_none())
        .count();
    assert!(tombstones > 0);
    // A query whose key is unknown needs primary_key.
    let e = client
        .batch_execute(&format!(
            "CREATE SINK raw AS SELECT owner, balance FROM accounts WITH (connector = 'kafka',
               topic = 'owners', properties.bootstrap.server = '{}') FORMAT UPSERT ENCODE JSON",
            broker.bootstrap()
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "22023");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_debezium_sink_replays_to_the_view() {
    let broker = Broker::start();
    broker.create_topic("owners_cdc", 1);
    broker.create_topic("accounts_cdc", 2);
    let server = TestServer::start().await;
    let client = server.client().await;
    client.batch_execute(ACCOUNTS).await.unwrap();
    // Rows that exist before the sink arrive as snapshot reads (op r).
    client
        .batch_execute("INSERT INTO accounts VALUES (1000, 'early', 1); FLUSH")
        .await
        .unwrap();
    client
        .batch_execute(&format!(
            "CREATE SINK owners_cdc FROM by_owner WITH (connector = 'kafka', topic = 'owners_cdc',
               properties.bootstrap.server = '{b}') FORMAT DEBEZIUM ENCODE JSON;
             CREATE SINK accounts_cdc AS SELECT id, owner, balance FROM accounts
               WITH (connector = 'kafka', topic = 'accounts_cdc', primary_key = 'id',
               properties.bootstrap.server = '{b}') FORMAT DEBEZIUM ENCODE JSON",
            b = broker.bootstrap()
        ))
        .await
        .unwrap();
    churn_accounts(&client).await;
    let columns = ["owner", "n", "total"];
    await_topic_equals_view(&client, &broker, "owners_cdc", "by_owner", |m| {
        replay_debezium(m, &columns)
    })
    .await;
    let account_columns = ["id", "owner", "balance"];
    await_topic_equals_view(
        &client,
        &broker,
        "accounts_cdc",
        "(SELECT id, owner, balance FROM accounts) a",
        |m| replay_debezium(m, &account_columns),
    )
    .await;
    let ops = |topic: &str| -> Vec<String> {
        broker
            .consume(topic)
            .iter()
            .filter_map(|(_, _, v)| v.as_ref())
            .map(|v| json(v)["op"].as_str().unwrap().to_string())
            .collect()
    };
    // The view's rows when its sink started are reads; the sink's own query starts empty.
    let (owners, accounts) = (ops("owners_cdc"), ops("accounts_cdc"));
    assert_eq!(owners.first().map(String::as_str), Some("r"), "{owners:?}");
    for op in ["c", "u", "d"] {
        assert!(owners.iter().any(|o| o == op), "no {op} in {owners:?}");
        assert!(accounts.iter().any(|o| o == op), "no {op} in {accounts:?}");
    }
}

/// Produces 2500 events `{"id", "v": id * 7}` to topic `events` (2 partitions) over about
/// 6 s, on a thread of its own.
fn produce_events_slowly(bootstrap: String) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use rdkafka::config::ClientConfig;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        for chunk in 0..50i64 {
            for i in 0..50 {
                let id = chunk * 50 + i;
                let payload = format!(r#"{{"id": {id}, "v": {}}}"#, id * 7);
                producer
                    .send(
                        BaseRecord::<(), str>::to("events")
                            .partition((id % 2) as i32)
                            .payload(&payload),
                    )
                    .map_err(|(e, _)| e)
                    .unwrap();
            }
            producer.flush(Duration::from_secs(30)).unwrap();
            std::thread::sleep(Duration::from_millis(120));
        }
    })
}

/// Once the process has delivered more output (or after 5 s), kills it at a seeded moment
/// up to `max_delay_ms` later, calls `check` (weir is down), and starts it again.
async fn kill_after_output(
    weir: WeirProcess,
    dir: &std::path::Path,
    args: &[&str],
    seed: &mut u64,
    max_delay_ms: u64,
    check: impl FnOnce(),
) -> WeirProcess {
    let (c, _) = connect(weir.addr()).await;
    let sent = "SELECT coalesce(sum(rows), 0) FROM weir_catalog.sink_progress";
    let before = sorted_rows(&c, sent).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) && sorted_rows(&c, sent).await == before {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(c);
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    tokio::time::sleep(Duration::from_millis((*seed >> 33) % max_delay_ms)).await;
    weir.kill9();
    check();
    WeirProcess::start_with(dir, args)
}

/// kill -9 while a source is being produced to: after every restart the sink resumes from
/// the last checkpoint, and in the end every row of the view is in the topic.
#[tokio::test(flavor = "multi_thread")]
async fn an_at_least_once_sink_loses_nothing_across_kill_9() {
    let broker = Broker::start();
    broker.create_topic("events", 2);
    broker.create_topic("events_out", 2);
    let dir = tempfile::tempdir().unwrap();
    let args = ["--checkpoint-interval", "1s"];
    let mut weir = WeirProcess::start_with(dir.path(), &args);
    let (client, _) = connect(weir.addr()).await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE events (id BIGINT, v BIGINT)
               WITH (connector = 'kafka', topic = 'events', properties.bootstrap.server = '{b}')
               FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW kept AS SELECT id, v FROM events WHERE v % 3 <> 0;
             CREATE SINK kept_out FROM kept WITH (connector = 'kafka', topic = 'events_out',
               properties.bootstrap.server = '{b}') FORMAT PLAIN ENCODE JSON",
            b = broker.bootstrap()
        ))
        .await
        .unwrap();
    drop(client);
    let producer = produce_events_slowly(broker.bootstrap());
    let mut seed = 0x5eed_u64;
    for _ in 0..4 {
        weir = kill_after_output(weir, dir.path(), &args, &mut seed, 1500, || {}).await;
    }
    producer.join().unwrap();
    let (client, _) = connect(weir.addr()).await;
    let expected = sorted_rows(&client, "SELECT id FROM kept").await.len();
    let started = Instant::now();
    loop {
        client.batch_execute("FLUSH").await.unwrap();
        let view = sorted_rows(&client, "SELECT id, v FROM kept").await;
        let out = broker.consume("events_out");
        let mut rows: Vec<String> = out
            .iter()
            .map(|(_, _, v)| row_text(&json(v.as_ref().unwrap()), &["id", "v"]))
            .collect();
        rows.sort();
        let mut distinct = rows.clone();
        distinct.dedup();
        if view.len() == (0..2500).filter(|i| i % 3 != 0).count() && distinct == view {
            let duplicates = rows.len() - distinct.len();
            eprintln!(
                "at-least-once across 4 kill -9: {} rows, {duplicates} duplicates",
                view.len()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "view {} rows (first read {expected}), topic {} distinct of {}",
            view.len(),
            distinct.len(),
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The round trip: a weir table `FORMAT DEBEZIUM` over a weir DEBEZIUM sink's topic holds
/// the sink's view, ad hoc and as a view's input, through updates and deletes, with
/// timestamps, decimals, booleans, doubles and nulls read back as they were written.
#[tokio::test(flavor = "multi_thread")]
async fn a_debezium_table_reads_a_debezium_sink_back() {
    let broker = Broker::start();
    broker.create_topic("items_cdc", 3);
    let server = TestServer::start().await;
    let client = server.client().await;
    let columns =
        "id BIGINT, at TIMESTAMP, price DECIMAL(10,2), tag VARCHAR, ok BOOLEAN, ratio DOUBLE";
    client
        .batch_execute(&format!(
            "CREATE TABLE items ({columns}, PRIMARY KEY (id));
             INSERT INTO items VALUES (1, '2026-01-02 03:04:05.678', 12.30, 'a', true, 0.5),
                                      (2, NULL, NULL, NULL, NULL, NULL);
             FLUSH;
             CREATE SINK items_cdc FROM items WITH (connector = 'kafka', topic = 'items_cdc',
               primary_key = 'id', properties.bootstrap.server = '{b}') FORMAT DEBEZIUM ENCODE JSON;
             CREATE TABLE items_back ({columns}, PRIMARY KEY (id))
               WITH (connector = 'kafka', topic = 'items_cdc', properties.bootstrap.server = '{b}')
               FORMAT DEBEZIUM ENCODE JSON;
             CREATE MATERIALIZED VIEW back_by_tag AS
               SELECT tag, count(*) AS n, sum(price) AS total FROM items_back GROUP BY tag;
             CREATE MATERIALIZED VIEW by_tag AS
               SELECT tag, count(*) AS n, sum(price) AS total FROM items GROUP BY tag;",
            b = broker.bootstrap()
        ))
        .await
        .unwrap();
    for i in 3..60 {
        client
            .batch_execute(&format!(
                "INSERT INTO items VALUES ({i}, TIMESTAMP '2026-03-01 00:00:00' + INTERVAL '{i} minutes',
                   {i}.25, 't{}', {}, {i}.125)",
                i % 4,
                i % 2 == 0
            ))
            .await
            .unwrap();
    }
    client
        .batch_execute(
            "UPDATE items SET price = price * 2, tag = 'moved' WHERE id % 5 = 0;
             DELETE FROM items WHERE id % 7 = 0;
             UPDATE items SET ok = NULL WHERE id = 1;
             FLUSH",
        )
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        client.batch_execute("FLUSH").await.unwrap();
        let want = sorted_rows(&client, "SELECT * FROM items").await;
        let got = sorted_rows(&client, "SELECT * FROM items_back").await;
        let (view, back) = (
            sorted_rows(&client, "SELECT * FROM by_tag").await,
            sorted_rows(&client, "SELECT * FROM back_by_tag").await,
        );
        if want == got && view == back {
            assert_eq!(want.len(), 59 - 8, "{want:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "items {want:?}\nitems_back {got:?}\nby_tag {view:?}\nback_by_tag {back:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Nothing in the topic was malformed for the table.
    let errors = sorted_rows(
        &client,
        "SELECT sum(parse_errors) FROM weir_catalog.source_progress WHERE source_name = 'items_back'",
    )
    .await;
    assert_eq!(errors, ["0"]);
}

/// `SELECT id, v FROM read_parquet('{dir}/*.parquet')` through DuckDB, as sorted `id|v`
/// rows (none while no file has its final name).
fn duckdb_rows(dir: &std::path::Path) -> Vec<String> {
    let script = format!(
        "import duckdb, glob\n\
         files = glob.glob('{d}/*.parquet')\n\
         rows = duckdb.sql(\"SELECT id, v FROM read_parquet('{d}/*.parquet')\").fetchall() if files else []\n\
         print('\\n'.join(f'{{a}}|{{b}}' for a, b in rows))",
        d = dir.display()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 with duckdb (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    rows.sort();
    rows
}

/// What an id's row is in the view `kept` (`v = id * 7`, kept unless a multiple of 3).
fn kept_row(id: i64) -> Option<String> {
    let v = id * 7;
    (v % 3 != 0).then(|| format!("{id}|{v}"))
}

/// A Parquet file sink across kill -9s during ingestion: at every moment DuckDB reads only
/// whole files, each row at most once and every row one of the view's; in the end exactly
/// the view's rows (exactly-once: 0 lost, 0 duplicated), in several rolled files.
#[tokio::test(flavor = "multi_thread")]
async fn a_parquet_sink_is_exactly_once_across_kill_9() {
    let broker = Broker::start();
    broker.create_topic("events", 2);
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let args = ["--checkpoint-interval", "1s"];
    let mut weir = WeirProcess::start_with(dir.path(), &args);
    let (client, _) = connect(weir.addr()).await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE events (id BIGINT, v BIGINT)
               WITH (connector = 'kafka', topic = 'events', properties.bootstrap.server = '{b}')
               FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW kept AS SELECT id, v FROM events WHERE v % 3 <> 0;
             CREATE SINK kept_files FROM kept WITH (connector = 'file', path = '{o}',
               format = 'parquet', file.max_bytes = '4096')",
            b = broker.bootstrap(),
            o = out.path().display()
        ))
        .await
        .unwrap();
    // A sink on a view with retractions is refused, as FORMAT PLAIN is.
    client
        .batch_execute("CREATE MATERIALIZED VIEW n AS SELECT count(*) AS n FROM events")
        .await
        .unwrap();
    let refused = client
        .batch_execute(&format!(
            "CREATE SINK n_files FROM n WITH (connector = 'file', path = '{}', format = 'parquet')",
            out.path().display()
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&refused), "0A000");
    drop(client);
    let valid: std::collections::BTreeSet<String> = (0..2500).filter_map(kept_row).collect();
    let whole_files_only = |rows: &[String]| {
        let mut distinct = rows.to_vec();
        distinct.dedup();
        assert_eq!(distinct.len(), rows.len(), "a row in two files");
        assert!(
            rows.iter().all(|r| valid.contains(r)),
            "a row the view never had"
        );
    };
    let producer = produce_events_slowly(broker.bootstrap());
    let mut seed = 0xf11e_u64;
    let mut seen_while_running = 0;
    for _ in 0..4 {
        let rows = duckdb_rows(out.path());
        whole_files_only(&rows);
        seen_while_running = seen_while_running.max(rows.len());
        weir = kill_after_output(weir, dir.path(), &args, &mut seed, 1500, || {
            whole_files_only(&duckdb_rows(out.path()))
        })
        .await;
    }
    producer.join().unwrap();
    let (client, _) = connect(weir.addr()).await;
    let started = Instant::now();
    loop {
        client.batch_execute("FLUSH").await.unwrap();
        let view = sorted_rows(&client, "SELECT id, v FROM kept").await;
        let files = duckdb_rows(out.path());
        whole_files_only(&files);
        if view.len() == valid.len() && files == view {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "view {} rows, files {} of {}",
            view.len(),
            files.len(),
            valid.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("kept_files-") && n.ends_with(".parquet")),
        "{names:?}"
    );
    assert!(names.len() > 2, "files did not roll: {names:?}");
    let progress = sorted_rows(
        &client,
        "SELECT topic, rows FROM weir_catalog.sink_progress WHERE sink = 'kept_files'",
    )
    .await;
    assert_eq!(progress.len(), 1, "{progress:?}");
    assert!(
        progress[0].starts_with(&format!("{}|", out.path().display())),
        "{progress:?}"
    );
    eprintln!(
        "parquet sink across 4 kill -9: {} rows in {} files, 0 duplicated, 0 lost; {} visible at most while running",
        valid.len(),
        names.len(),
        seen_while_running
    );
}

/// Every committed value in `topic` on `bootstrap`, as a `read_committed` consumer sees it
/// (read until nothing comes for 1.5 s).
fn read_committed(bootstrap: &str, topic: &str) -> Vec<Vec<u8>> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "weir-test-committed-reader")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        assignment
            .add_partition_offset(topic, p.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let (mut out, mut idle) = (Vec::new(), 0);
    while idle < 3 {
        match consumer.poll(Duration::from_millis(500)) {
            Some(m) => {
                idle = 0;
                out.extend(m.unwrap().payload().map(<[u8]>::to_vec));
            }
            None => idle += 1,
        }
    }
    out
}

/// Exactly-once Kafka output through transactions, on librdkafka's mock cluster (Tansu has
/// no transactions): a crash inside the commit path (checkpoint committed, its transaction
/// not begun: the restarted sink must send it from the checkpoint) and 3 seeded kill -9s
/// during ingestion; a consumer sees every row of the view exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn an_exactly_once_sink_commits_each_row_once_across_crashes() {
    let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
    mock.create_topic("events", 2, 1).unwrap();
    mock.create_topic("events_out", 2, 1).unwrap();
    mock.create_topic("__weir_sink_progress", 1, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let args = ["--checkpoint-interval", "1s"];
    let crash = [(weir_engine::sink::CRASH_BEFORE_COMMIT, "1")];
    let weir = WeirProcess::start_with_env(dir.path(), &args, &crash);
    let (client, _) = connect(weir.addr()).await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE events (id BIGINT, v BIGINT)
               WITH (connector = 'kafka', topic = 'events', properties.bootstrap.server = '{bootstrap}')
               FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW kept AS SELECT id, v FROM events WHERE v % 3 <> 0;
             CREATE SINK kept_out FROM kept WITH (connector = 'kafka', topic = 'events_out',
               properties.bootstrap.server = '{bootstrap}', sink.semantic = 'exactly_once')
               FORMAT PLAIN ENCODE JSON"
        ))
        .await
        .unwrap();
    drop(client);
    let producer = produce_events_slowly(bootstrap.clone());
    // The first commit aborts the process; wait for it, then start weir as usual.
    let mut weir = weir;
    let started = Instant::now();
    while weir.child.0.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no crash in the commit path"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    weir = WeirProcess::start_with(dir.path(), &args);
    let mut seed = 0xe05_u64;
    // Each kill lands just after a transaction committed (within 150 ms; checkpoints are
    // 1 s apart), while the view is ahead of its last checkpoint: the mock cluster shows a
    // read_committed consumer aborted and open transactions' records too (measured), so a
    // kill in the middle of a transaction's sends would show duplicates no real broker
    // would; this test keeps to the crash points the mock can judge.
    for _ in 0..3 {
        weir = kill_after_output(weir, dir.path(), &args, &mut seed, 150, || {}).await;
    }
    producer.join().unwrap();
    let (client, _) = connect(weir.addr()).await;
    let want: Vec<String> = (0..2500)
        .filter_map(kept_row)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let started = Instant::now();
    loop {
        let mut rows: Vec<String> = read_committed(&bootstrap, "events_out")
            .iter()
            .map(|v| row_text(&json(v), &["id", "v"]))
            .collect();
        rows.sort();
        let mut distinct = rows.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), rows.len(), "a row committed twice");
        if rows == want {
            assert_eq!(sorted_rows(&client, "SELECT id, v FROM kept").await, want);
            eprintln!(
                "exactly-once across a commit-path crash and 3 kill -9: {} rows, 0 duplicates, 0 lost",
                rows.len()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{} of {} rows committed",
            rows.len(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(mock);
}

/// A sink whose broker goes away: its view and the other views of its table carry on,
/// what the sink has yet to write past `sink.buffer.bytes` waits on disk (queued_bytes grows
/// past the bound), checkpoints still commit (the sink's log holds what the broker has not
/// taken), a kill -9 meanwhile loses nothing of it, and once the broker is back every row
/// arrives.
#[tokio::test(flavor = "multi_thread")]
async fn a_sink_whose_broker_is_away_queues_on_disk_and_loses_nothing() {
    let mut broker = Broker::start();
    broker.create_topic("clicks_out", 1);
    let dir = tempfile::tempdir().unwrap();
    let args = ["--checkpoint-interval", "1s"];
    let weir = WeirProcess::start_with(dir.path(), &args);
    let (client, _) = connect(weir.addr()).await;
    let buffer = 64 * 1024;
    client
        .batch_execute(&format!(
            "CREATE TABLE clicks (id BIGINT, page VARCHAR) APPEND ONLY;
             CREATE MATERIALIZED VIEW per_page AS SELECT page, count(*) AS n FROM clicks GROUP BY page;
             CREATE SINK clicks_out FROM clicks WITH (connector = 'kafka', topic = 'clicks_out',
               properties.bootstrap.server = '{}', sink.buffer.bytes = '{buffer}')
               FORMAT PLAIN ENCODE JSON",
            broker.bootstrap()
        ))
        .await
        .unwrap();
    let insert = |from: i64, to: i64| {
        let rows: Vec<String> = (from..to)
            .map(|i| format!("({i}, '/page/{}/{}')", i % 10, "x".repeat(100)))
            .collect();
        format!("INSERT INTO clicks VALUES {}", rows.join(", "))
    };
    client.batch_execute(&insert(0, 500)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker.consume("clicks_out").len() < 500 {
        assert!(
            Instant::now() < deadline,
            "the first rows were not delivered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    broker.stop();
    let total = 20_000;
    for from in (500..total).step_by(500) {
        client
            .batch_execute(&insert(from, from + 500))
            .await
            .unwrap();
    }
    client.batch_execute("FLUSH").await.unwrap();
    // The other view of the table is not held back by the sink.
    assert_eq!(
        sorted_rows(&client, "SELECT sum(n) FROM per_page").await,
        vec![total.to_string()]
    );
    // What waits for the broker is past the memory bound: the rest is on disk.
    let waiting = queued_bytes(&client, "clicks_out").await;
    assert!(waiting > buffer, "queued {waiting} bytes, bound {buffer}");
    let spill = dir.path().join("sinks/clicks_out.spill");
    let spilled = std::fs::metadata(&spill).map_or(0, |m| m.len());
    assert!(spilled > 0, "the queue past its bound is on disk");
    let metrics = http_get(weir.http_addr(), "/metrics");
    assert!(
        metrics.contains("weir_sink_queued_bytes{sink=\"clicks_out\"}"),
        "{metrics}"
    );
    // Checkpoints do not wait for the broker: this one holds every row in the view and
    // the sink's undelivered rows in its log.
    let checkpoint =
        tokio::time::timeout(Duration::from_secs(20), client.batch_execute("CHECKPOINT"))
            .await
            .expect("a checkpoint commits while the sink's broker is away");
    checkpoint.unwrap();
    drop(client);
    weir.kill9();
    let weir = WeirProcess::start_with(dir.path(), &args);
    let (client, _) = connect(weir.addr()).await;
    // (CHECKPOINT may have joined one in flight: the view then derives the table's last
    // rows again from its log.)
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sum = sorted_rows(&client, "SELECT sum(n) FROM per_page").await;
        if sum == vec![total.to_string()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart the view has {sum:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    broker.resume();
    let deadline = Instant::now() + Duration::from_secs(120);
    let ids = loop {
        let messages = broker.consume("clicks_out");
        let ids: std::collections::BTreeSet<i64> = messages
            .iter()
            .map(|(_, _, v)| json(v.as_ref().unwrap())["id"].as_i64().unwrap())
            .collect();
        if ids.len() == total as usize || Instant::now() > deadline {
            eprintln!(
                "{} messages for {} rows after the broker came back (at-least-once across a kill -9)",
                messages.len(),
                ids.len()
            );
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(ids, (0..total).collect(), "every row arrived");
    let deadline = Instant::now() + Duration::from_secs(30);
    while queued_bytes(&client, "clicks_out").await > 0 || spill.exists() {
        assert!(Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Bytes of commits waiting for `sink`'s writer.
async fn queued_bytes(client: &Client, sink: &str) -> i64 {
    let sql =
        format!("SELECT max(queued_bytes) FROM weir_catalog.sink_progress WHERE sink = '{sink}'");
    sorted_rows(client, &sql).await[0].parse().unwrap()
}
