//! Ad hoc SQL over Kafka topics on a real broker (Tansu): exact aggregates over every
//! partition, malformed messages skipped and reported, metadata columns.

use std::collections::{BTreeMap, BTreeSet};

use crate::harness::{Broker, KafkaMessage, TestServer, connect, sorted_rows};

/// Deterministic bids: (partition, payload) plus the values a correct scan must see.
struct Bids {
    messages: Vec<KafkaMessage>,
    count: i64,
    sum_price: i64,
    bidders: BTreeSet<i64>,
    per_partition: BTreeMap<i32, i64>,
}

fn bids(n: usize, malformed: usize, partitions: i32) -> Bids {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut out = Bids {
        messages: vec![],
        count: 0,
        sum_price: 0,
        bidders: BTreeSet::new(),
        per_partition: BTreeMap::new(),
    };
    for i in 0..n {
        let (auction, bidder, price) = (1000 + next() % 500, next() % 7919, next() % 100_000);
        let partition = (i % partitions as usize) as i32;
        // Vary the accepted spellings: a numeric string, ISO timestamps, an extra field, a missing one.
        let payload = match i % 4 {
            0 => format!(
                r#"{{"auction": {auction}, "bidder": {bidder}, "price": {price}, "channel": "Google", "date_time": "2024-01-01 00:00:01.234"}}"#
            ),
            1 => format!(
                r#"{{"auction": "{auction}", "bidder": {bidder}, "price": "{price}", "date_time": "2024-01-01T00:00:02.5Z", "unknown": [1, 2]}}"#
            ),
            2 => format!(
                r#"{{"bidder": {bidder}, "price": {price}, "auction": {auction}, "channel": null, "date_time": "2024-01-01T01:00:00+01:00"}}"#
            ),
            _ => format!(r#"{{"auction": {auction}, "bidder": {bidder}, "price": {price}}}"#),
        };
        out.count += 1;
        out.sum_price += price as i64;
        out.bidders.insert(bidder as i64);
        *out.per_partition.entry(partition).or_default() += 1;
        out.messages.push((
            partition,
            Some(format!("k{i}").into_bytes()),
            payload.into_bytes(),
        ));
    }
    for j in 0..malformed {
        let payload = match j % 4 {
            0 => r#"{"auction": 1, "bidder": 2, "price": "#.to_string(),
            1 => r#"{"auction": 1, "bidder": "not-a-number", "price": 5}"#.to_string(),
            2 => "this is not json".to_string(),
            _ => r#"{"auction": 1, "price": 3, "date_time": "yesterday"}"#.to_string(),
        };
        // Spread the bad ones over the partitions, between good messages.
        let at = (j * 499) % out.messages.len();
        out.messages.insert(
            at,
            ((j % partitions as usize) as i32, None, payload.into_bytes()),
        );
    }
    out
}

fn source_ddl(name: &str, topic: &str, broker: &Broker, extra: &str) -> String {
    format!(
        "CREATE SOURCE {name} (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, date_time TIMESTAMP,
           WATERMARK FOR date_time AS date_time - INTERVAL '5' SECOND) {extra}
         WITH (connector = 'kafka', topic = '{topic}', properties.bootstrap.server = '{}',
               scan.startup.mode = 'earliest') FORMAT PLAIN ENCODE JSON",
        broker.bootstrap()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn adhoc_aggregate_over_topic_is_exact_and_reports_malformed() {
    let broker = Broker::start();
    broker.create_topic("bid", 4);
    let data = bids(50_000, 100, 4);
    broker.produce("bid", &data.messages);

    let server = TestServer::start().await;
    let (client, mut notices) = connect(server.addr()).await;
    client
        .batch_execute(&source_ddl("bid", "bid", &broker, ""))
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT count(*), sum(price), count(DISTINCT bidder) FROM bid",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), data.count);
    assert_eq!(row.get::<_, i64>(1), data.sum_price);
    assert_eq!(row.get::<_, i64>(2), data.bidders.len() as i64);
    let notice = notices
        .recv()
        .await
        .expect("a NOTICE about skipped messages");
    assert!(
        notice
            .message()
            .starts_with("skipped 100 malformed messages; first error: partition "),
        "{}",
        notice.message()
    );

    // Field mapping: missing → NULL, timestamps in both spellings, numeric strings.
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE channel IS NULL), count(*) FILTER (WHERE date_time = TIMESTAMP '2024-01-01 00:00:00'),
                    count(*) FILTER (WHERE date_time = TIMESTAMP '2024-01-01 00:00:02.5')
             FROM bid",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, i64>(0),
        data.count / 4 * 3,
        "channel is missing or null in 3 of 4 shapes"
    );
    assert_eq!(
        row.get::<_, i64>(1),
        data.count / 4,
        "+01:00 offsets are converted to UTC"
    );
    assert_eq!(row.get::<_, i64>(2), data.count / 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn include_columns_expose_kafka_metadata() {
    let broker = Broker::start();
    broker.create_topic("meta", 3);
    let data = bids(3_000, 0, 3);
    broker.produce("meta", &data.messages);

    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(&source_ddl(
            "meta",
            "meta",
            &broker,
            "INCLUDE partition AS p INCLUDE offset AS o INCLUDE key AS k",
        ))
        .await
        .unwrap();
    let rows = client
        .query(
            "SELECT p, count(*), min(o), max(o) FROM meta GROUP BY p ORDER BY p",
            &[],
        )
        .await
        .unwrap();
    let got: BTreeMap<i32, i64> = rows
        .iter()
        .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1)))
        .collect();
    assert_eq!(got, data.per_partition);
    for r in &rows {
        assert_eq!(r.get::<_, i64>(2), 0);
        assert_eq!(
            r.get::<_, i64>(3),
            r.get::<_, i64>(1) - 1,
            "offsets are dense from 0"
        );
    }
    let key: Vec<u8> = client
        .query_one("SELECT k FROM meta WHERE p = 0 AND o = 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(key, b"k0");

    // A source joined with a table, ad hoc.
    client.batch_execute("CREATE TABLE vip (bidder BIGINT PRIMARY KEY); INSERT INTO vip SELECT DISTINCT bidder FROM meta WHERE bidder < 100").await.unwrap();
    let joined: i64 = client
        .query_one(
            "SELECT count(*) FROM meta m JOIN vip v ON m.bidder = v.bidder",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let direct: i64 = client
        .query_one("SELECT count(*) FROM meta WHERE bidder < 100", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(joined, direct);
}

#[tokio::test(flavor = "multi_thread")]
async fn upsert_table_keeps_latest_value_per_key() {
    let broker = Broker::start();
    broker.create_topic("rates", 2);
    broker.create_topic("purchases", 2);
    let msg = |p: i32, key: &str, value: &str| -> KafkaMessage {
        (p, Some(key.as_bytes().to_vec()), value.as_bytes().to_vec())
    };
    broker.produce(
        "rates",
        &[
            msg(0, "EUR", r#"{"currency": "EUR", "rate": 1.08}"#),
            msg(1, "GBP", r#"{"currency": "GBP", "rate": 1.27}"#),
            msg(0, "EUR", r#"{"currency": "EUR", "rate": 1.10}"#),
            msg(1, "JPY", r#"{"currency": "JPY", "rate": 0.0067}"#),
        ],
    );
    broker.produce_tombstone("rates", 1, "GBP");
    broker.produce(
        "purchases",
        &[
            (
                0,
                None,
                br#"{"id": 1, "amount": 100, "currency": "EUR"}"#.to_vec(),
            ),
            (
                1,
                None,
                br#"{"id": 2, "amount": 1000, "currency": "JPY"}"#.to_vec(),
            ),
            (
                0,
                None,
                br#"{"id": 3, "amount": 50, "currency": "GBP"}"#.to_vec(),
            ),
        ],
    );

    let server = TestServer::start().await;
    let client = server.client().await;
    let b = broker.bootstrap();
    client
        .batch_execute(&format!(
            "CREATE TABLE rates (currency VARCHAR PRIMARY KEY, rate DOUBLE)
               WITH (connector = 'kafka', topic = 'rates', properties.bootstrap.server = '{b}') FORMAT UPSERT ENCODE JSON;
             CREATE SOURCE purchases (id BIGINT, amount BIGINT, currency VARCHAR)
               WITH (connector = 'kafka', topic = 'purchases', properties.bootstrap.server = '{b}') FORMAT PLAIN ENCODE JSON;"
        ))
        .await
        .unwrap();
    let rates: Vec<(String, f64)> = client
        .query("SELECT currency, rate FROM rates ORDER BY currency", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rates,
        vec![("EUR".to_string(), 1.10), ("JPY".to_string(), 0.0067)]
    );
    let converted: Vec<(i64, f64)> = client
        .query("SELECT p.id, p.amount * r.rate FROM purchases p JOIN rates r ON p.currency = r.currency ORDER BY p.id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(converted.len(), 2, "GBP was deleted by its tombstone");
    assert_eq!(converted[0].0, 1);
    assert!((converted[0].1 - 110.0).abs() < 1e-9);
    assert!((converted[1].1 - 6.7).abs() < 1e-9);
    let err = client
        .simple_query("INSERT INTO rates VALUES ('CHF', 1.1)")
        .await
        .unwrap_err();
    assert_eq!(crate::harness::sqlstate(&err), "0A000");
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_broker_gives_a_clear_error_and_latest_reads_nothing() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let port = crate::harness::free_port();
    client
        .batch_execute(&format!(
            "CREATE SOURCE gone (a BIGINT) WITH (connector = 'kafka', topic = 't',
               properties.bootstrap.server = '127.0.0.1:{port}') FORMAT PLAIN ENCODE JSON"
        ))
        .await
        .unwrap();
    let err = client
        .simple_query("SELECT count(*) FROM gone")
        .await
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "58000", "{db:?}");
    assert!(db.message().starts_with("kafka: "), "{}", db.message());
    client.simple_query("SELECT 1").await.unwrap();

    let broker = Broker::start();
    broker.create_topic("late", 1);
    broker.produce("late", &bids(10, 0, 1).messages);
    client
        .batch_execute(&format!(
            "CREATE SOURCE late (auction BIGINT) WITH (connector = 'kafka', topic = 'late',
               properties.bootstrap.server = '{}', scan.startup.mode = 'latest') FORMAT PLAIN ENCODE JSON",
            broker.bootstrap()
        ))
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM late", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "latest starts at the high watermark");
}

/// Kafka Connect's Debezium events as a Postgres connector writes them (schemas enabled, a
/// tombstone after each delete, an update that moves a row's key), plus one malformed
/// event: the table holds the source table's rows, ad hoc and in a view; the bad one is
/// counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_debezium_table_applies_kafka_connect_change_events() {
    let broker = Broker::start();
    broker.create_topic("pg.public.users", 1);
    let event = |op: &str, before: &str, after: &str| -> Vec<u8> {
        format!(
            r#"{{"schema":{{"type":"struct","optional":false,"name":"pg.public.users.Envelope"}},
                "payload":{{"before":{before},"after":{after},"op":"{op}","ts_ms":1700000000000,
                "source":{{"connector":"postgresql","db":"app","table":"users","lsn":42}}}}}}"#
        )
        .into_bytes()
    };
    let key = |id: i64| Some(format!(r#"{{"id":{id}}}"#).into_bytes());
    let user = |id: i64, name: &str| format!(r#"{{"id":{id},"name":"{name}","visits":{id}}}"#);
    let mut messages: Vec<KafkaMessage> = vec![
        (0, key(1), event("r", "null", &user(1, "ann"))),
        (0, key(2), event("r", "null", &user(2, "bob"))),
        (0, key(3), event("c", "null", &user(3, "cy"))),
        (0, key(2), event("u", &user(2, "bob"), &user(2, "bobby"))),
        (0, key(1), event("d", &user(1, "ann"), "null")),
        // Bare envelope (schemas disabled) moving key 3 to 30.
        (
            0,
            key(30),
            format!(
                r#"{{"before":{},"after":{},"op":"u"}}"#,
                user(3, "cy"),
                user(30, "cy")
            )
            .into_bytes(),
        ),
        (0, key(4), event("x", "null", &user(4, "bad op"))),
    ];
    messages.push((0, key(5), event("c", "null", &user(5, "eve"))));
    broker.produce("pg.public.users", &messages);
    broker.produce_tombstone("pg.public.users", 0, r#"{"id":1}"#);

    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE users (id BIGINT, name VARCHAR, visits BIGINT, PRIMARY KEY (id))
               WITH (connector = 'kafka', topic = 'pg.public.users',
                     properties.bootstrap.server = '{}') FORMAT DEBEZIUM ENCODE JSON;
             CREATE MATERIALIZED VIEW user_names AS SELECT id, name FROM users",
            broker.bootstrap()
        ))
        .await
        .unwrap();
    let want = ["2|bobby", "30|cy", "5|eve"];
    assert_eq!(
        sorted_rows(&client, "SELECT id, name FROM users").await,
        want
    );
    client.batch_execute("FLUSH").await.unwrap();
    assert_eq!(sorted_rows(&client, "SELECT * FROM user_names").await, want);
    // Later events reach the view.
    broker.produce(
        "pg.public.users",
        &[(0, key(5), event("d", &user(5, "eve"), "null"))],
    );
    let started = std::time::Instant::now();
    while sorted_rows(&client, "SELECT * FROM user_names").await != ["2|bobby", "30|cy"] {
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let progress = sorted_rows(
        &client,
        "SELECT parse_errors, last_error FROM weir_catalog.source_progress WHERE source_name = 'users'",
    )
    .await;
    assert_eq!(progress.len(), 1, "{progress:?}");
    assert!(
        progress[0].starts_with("1|") && progress[0].contains("unknown Debezium op \"x\""),
        "{progress:?}"
    );
}
