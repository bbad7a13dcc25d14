//! Materialized views as dataflows, checked against their query run as a batch over the same
//! input (DataFusion's ad hoc engine is the oracle): every aggregate kind under random
//! inserts, updates and deletes; views on views; TUMBLE/HOP/SESSION over the Nexmark generator and
//! over a Kafka topic with shuffled and late events.

use std::time::{Duration, Instant};

use crate::harness::{
    Broker, Lcg, TestServer, assert_views_equal_queries, await_view_equals,
    create_views_at_parallelism_1_to_3, sorted_rows, sqlstate,
};

/// (view name, query) pairs maintained over the table `ev`.
const TABLE_VIEWS: &[(&str, &str)] = &[
    (
        "per_group",
        "SELECT g, count(*) AS n, sum(x) AS s, avg(x) AS a, min(x) AS lo, max(x) AS hi, \
         count(DISTINCT x) AS d, bool_and(flag) AS every, bool_or(flag) AS some \
         FROM ev GROUP BY g",
    ),
    (
        "overall",
        "SELECT count(*) AS n, sum(x) AS s, min(x) AS lo, max(x) AS hi, count(DISTINCT g) AS groups FROM ev",
    ),
    (
        "big_groups",
        "SELECT g, count(*) AS c FROM ev GROUP BY g HAVING count(*) > 3",
    ),
    (
        "both",
        "SELECT id, x FROM ev WHERE x > 60 UNION ALL SELECT id, x FROM ev WHERE g = 'a'",
    ),
    ("kinds", "SELECT DISTINCT g, flag FROM ev"),
    // TopN, overall and per group (ties broken by id, so the oracle picks the same rows).
    ("top3", "SELECT id, x FROM ev ORDER BY x DESC, id LIMIT 3"),
    (
        "top_per_group",
        "SELECT * FROM (SELECT g, id, x, row_number() OVER (PARTITION BY g ORDER BY x, id) AS rn \
         FROM ev) WHERE rn <= 2",
    ),
    // Sessions per group: updates and deletes move, merge and split them.
    (
        "sessions",
        "SELECT g, window_start, window_end, count(*) AS n, sum(x) AS s \
         FROM SESSION(ev, at, INTERVAL '3' SECOND) GROUP BY g, window_start, window_end",
    ),
    // A view on a view.
    (
        "on_view",
        "SELECT count(*) AS groups, max(c) AS largest, sum(c) AS total FROM big_groups",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn table_views_equal_their_queries_under_random_changes() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE ev (id BIGINT PRIMARY KEY, g VARCHAR, x BIGINT, flag BOOLEAN, at TIMESTAMP);
             INSERT INTO ev VALUES (0, 'a', 5, true, '2024-01-01 00:00:00');",
        )
        .await
        .unwrap();
    create_views_at_parallelism_1_to_3(&client, TABLE_VIEWS).await;
    let mut rng = Lcg(7);
    let mut live: Vec<u64> = vec![0];
    let mut next_id = 1;
    for step in 0..120 {
        let sql = match rng.next(10) {
            0..=4 => {
                let rows: Vec<String> = (0..1 + rng.next(4))
                    .map(|_| {
                        next_id += 1;
                        live.push(next_id);
                        let x = if rng.next(8) == 0 {
                            "NULL".to_string()
                        } else {
                            rng.next(100).to_string()
                        };
                        format!(
                            "({next_id}, '{}', {x}, {}, '2024-01-01 00:00:{:02}')",
                            ["a", "b", "c", "d"][rng.next(4) as usize],
                            rng.next(3) > 0,
                            rng.next(60)
                        )
                    })
                    .collect();
                format!("INSERT INTO ev VALUES {}", rows.join(", "))
            }
            5..=7 if !live.is_empty() => {
                let id = live[rng.next(live.len() as u64) as usize];
                format!(
                    "UPDATE ev SET x = {}, g = '{}', at = '2024-01-01 00:00:{:02}' WHERE id = {id}",
                    rng.next(100),
                    ["a", "b", "e"][rng.next(3) as usize],
                    rng.next(60)
                )
            }
            _ if !live.is_empty() => {
                let id = live.swap_remove(rng.next(live.len() as u64) as usize);
                format!("DELETE FROM ev WHERE id = {id}")
            }
            _ => "FLUSH".to_string(),
        };
        client.batch_execute(&sql).await.unwrap();
        if step % 15 == 14 {
            let context = format!("after step {step} ({sql})");
            assert_views_equal_queries(&client, TABLE_VIEWS, &context).await;
        }
    }
    // Deleting everything leaves a global aggregate's one row, with NULLs.
    client.batch_execute("DELETE FROM ev; FLUSH").await.unwrap();
    assert_eq!(
        sorted_rows(&client, "SELECT * FROM overall").await,
        vec!["0|NULL|NULL|NULL|0"]
    );
    assert_eq!(
        sorted_rows(&client, "SELECT * FROM on_view").await,
        vec!["0|NULL|NULL"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_change_reaches_a_view_without_flush() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE t (k INT PRIMARY KEY, v INT);
             CREATE MATERIALIZED VIEW total AS SELECT sum(v) AS s FROM t;
             INSERT INTO t VALUES (1, 41);",
        )
        .await
        .unwrap();
    let started = Instant::now();
    while sorted_rows(&client, "SELECT * FROM total").await != vec!["41"] {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the insert never reached the view"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dataflows = sorted_rows(
        &client,
        "SELECT name, rows, state_bytes > 0, last_commit IS NOT NULL FROM weir_catalog.dataflows",
    )
    .await;
    assert_eq!(dataflows, vec!["total|1|t|t"]);
}

/// Nexmark queries (RisingWave's texts, windows as table functions) over a bounded generator.
pub(crate) const NEXMARK_VIEWS: &[(&str, &str)] = &[
    ("q0", "SELECT auction, bidder, price, date_time FROM bid"),
    (
        "q1",
        "SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid",
    ),
    (
        "q2",
        "SELECT auction, price FROM bid WHERE auction = 1007 OR auction = 1020 OR auction = 2001 OR auction = 2019 OR auction = 2087",
    ),
    (
        "q5_counts",
        "SELECT auction, window_start, window_end, count(*) AS num \
         FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) \
         GROUP BY auction, window_start, window_end",
    ),
    // RisingWave's q5: the auctions with the most bids per HOP window (the optimizer makes
    // its join a semi join with `num >= maxn` beside the window key).
    (
        "q5",
        "SELECT AuctionBids.auction, AuctionBids.num FROM (SELECT auction, count(*) AS num, window_start AS starttime \
         FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY window_start, auction) AS AuctionBids \
         JOIN (SELECT max(CountBids.num) AS maxn, CountBids.starttime_c FROM (SELECT count(*) AS num, window_start AS starttime_c \
         FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY auction, window_start) AS CountBids \
         GROUP BY CountBids.starttime_c) AS MaxBids \
         ON AuctionBids.starttime = MaxBids.starttime_c AND AuctionBids.num >= MaxBids.maxn",
    ),
    // In Flink's spelling of the window function.
    (
        "q7_max",
        "SELECT window_start, window_end, max(price) AS maxprice, count(*) AS bids \
         FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECONDS)) \
         GROUP BY window_start, window_end",
    ),
    // TopN over insert-only input: only the top rows are kept.
    (
        "top_bids",
        "SELECT price, auction, bidder FROM bid ORDER BY price DESC, auction, bidder LIMIT 5",
    ),
    (
        "best_bid_per_auction",
        "SELECT * FROM (SELECT auction, price, bidder, \
         row_number() OVER (PARTITION BY auction ORDER BY price DESC, bidder) AS rn FROM bid) \
         WHERE rn <= 1",
    ),
    (
        "bidder_sessions",
        "SELECT bidder, window_start, window_end, count(*) AS bids, max(price) AS top \
         FROM SESSION(bid, date_time, INTERVAL '200' MILLISECOND) \
         GROUP BY bidder, window_start, window_end",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn nexmark_windows_over_the_generator_equal_the_batch_result() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, \
               url VARCHAR, date_time TIMESTAMP, extra VARCHAR, \
               WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
             WITH (connector = 'nexmark', nexmark.table.type = 'bid', nexmark.event.num = '60000')",
        )
        .await
        .unwrap();
    for (name, query) in NEXMARK_VIEWS {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .unwrap();
    }
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW q7_closed AS SELECT window_start, max(price) AS maxprice \
             FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_start \
             EMIT ON WINDOW CLOSE;
             CREATE MATERIALIZED VIEW sessions_closed AS SELECT bidder, window_start, window_end, \
               count(*) AS bids FROM SESSION(bid, date_time, INTERVAL '200' MILLISECOND) \
               GROUP BY bidder, window_start, window_end EMIT ON WINDOW CLOSE",
        )
        .await
        .unwrap();
    for (name, query) in NEXMARK_VIEWS {
        await_view_equals(&client, name, query, Duration::from_secs(120)).await;
    }
    // The generator ended, so its watermark passed every window: all were emitted once.
    await_view_equals(
        &client,
        "q7_closed",
        "SELECT window_start, max(price) FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_start",
        Duration::from_secs(30),
    )
    .await;
    await_view_equals(
        &client,
        "sessions_closed",
        "SELECT bidder, window_start, window_end, count(*) FROM SESSION(bid, date_time, INTERVAL '200' MILLISECOND) \
         GROUP BY bidder, window_start, window_end",
        Duration::from_secs(30),
    )
    .await;
    let plan = sorted_rows(
        &client,
        "EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT window_start, count(*) FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_start EMIT ON WINDOW CLOSE",
    )
    .await
    .join("\n");
    assert!(
        plan.contains("TimeWindow") && plan.contains("emit on window close"),
        "{plan}"
    );
    // Windows are counted by the instance that owns their window_start; one gathers them.
    assert!(
        plan.contains("(exchange: hash(window_start@") && plan.contains("(exchange: single)"),
        "{plan}"
    );
    assert!(
        sorted_rows(&client, "SHOW MATERIALIZED VIEWS").await.len() == NEXMARK_VIEWS.len() + 2,
        "EXPLAIN creates nothing"
    );
    // Two generator splits, each reporting its watermark and, as offsets, its rows.
    let progress = sorted_rows(
        &client,
        "SELECT source_name, partition, watermark IS NOT NULL, next_offset = rows AND rows > 0, lag \
         FROM weir_catalog.source_progress",
    )
    .await;
    assert_eq!(progress, vec!["bid|0|t|t|0", "bid|1|t|t|0"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_tumble_with_shuffled_and_late_events_equals_the_batch_result() {
    let broker = Broker::start();
    broker.create_topic("clicks", 1);
    // Events 200 ms apart, shuffled within 2 s (the watermark delay is 3 s), with every
    // 50th event sent 10 s behind: those are late and dropped (user = 'late').
    let base_ms: i64 = 1_700_000_000_000;
    let mut rng = Lcg(3);
    let mut events: Vec<(i64, String)> = (0..1500)
        .map(|i| (base_ms + i * 200, format!("u{}", rng.next(7))))
        .collect();
    for chunk in events.chunks_mut(10) {
        chunk.reverse();
    }
    let mut messages = Vec::new();
    for (i, (ts, user)) in events.iter().enumerate() {
        let (ts, user) = if i % 50 == 49 {
            (ts - 10_000, "late".to_string())
        } else {
            (*ts, user.clone())
        };
        let time = chrono::DateTime::from_timestamp_millis(ts)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.3f");
        let payload = format!(r#"{{"user_id": "{user}", "ts": "{time}", "n": {}}}"#, i % 9);
        messages.push((0, None, payload.into_bytes()));
    }
    messages.push((0, None, b"not json".to_vec()));
    broker.produce("clicks", &messages);

    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE clicks (user_id VARCHAR, ts TIMESTAMP, n BIGINT, \
               WATERMARK FOR ts AS ts - INTERVAL '3' SECOND) \
             WITH (connector = 'kafka', topic = 'clicks', properties.bootstrap.server = '{}') \
             FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW per_user AS SELECT user_id, window_start, count(*) AS c, sum(n) AS s \
               FROM TUMBLE(clicks, ts, INTERVAL '5' SECOND) GROUP BY user_id, window_start;
             CREATE MATERIALIZED VIEW visits AS SELECT user_id, window_start, window_end, count(*) AS c \
               FROM SESSION(clicks, ts, INTERVAL '1' SECOND) GROUP BY user_id, window_start, window_end;
             CREATE MATERIALIZED VIEW follow_ups AS SELECT a.user_id, count(*) AS pairs, sum(b.n) AS s \
               FROM clicks a JOIN clicks b ON a.user_id = b.user_id \
               AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' SECOND GROUP BY a.user_id;
             CREATE MATERIALIZED VIEW until_pairs AS SELECT a.user_id, count(*) AS pairs, sum(b.n) AS s \
               FROM (SELECT user_id, ts, ts + INTERVAL '1500' MILLISECOND AS until FROM clicks) a \
               JOIN clicks b ON a.user_id = b.user_id AND b.ts BETWEEN a.ts AND a.until GROUP BY a.user_id;
             CREATE MATERIALIZED VIEW share AS SELECT u.user_id, u.window_start, u.c, w.c AS all_clicks                FROM (SELECT user_id, window_start, count(*) AS c FROM TUMBLE(clicks, ts, INTERVAL '5' SECOND)                      GROUP BY user_id, window_start) u                JOIN (SELECT window_start, count(*) AS c FROM TUMBLE(clicks, ts, INTERVAL '5' SECOND)                      GROUP BY window_start) w ON u.window_start = w.window_start;",
            broker.bootstrap()
        ))
        .await
        .unwrap();
    await_view_equals(
        &client,
        "per_user",
        "SELECT user_id, window_start, count(*), sum(n) FROM TUMBLE(clicks, ts, INTERVAL '5' SECOND) \
         WHERE user_id <> 'late' GROUP BY user_id, window_start",
        Duration::from_secs(60),
    )
    .await;
    // Sessions: a user's clicks ~1.4 s apart on average, so shuffled arrival keeps merging
    // and splitting them.
    await_view_equals(
        &client,
        "visits",
        "SELECT user_id, window_start, window_end, count(*) FROM SESSION(clicks, ts, INTERVAL '1' SECOND) \
         WHERE user_id <> 'late' GROUP BY user_id, window_start, window_end",
        Duration::from_secs(60),
    )
    .await;
    // An interval self-join: each click with the same user's clicks in the next second;
    // a late click is dropped on each side by that side's own watermark.
    await_view_equals(
        &client,
        "follow_ups",
        "SELECT a.user_id, count(*), sum(b.n) FROM clicks a JOIN clicks b ON a.user_id = b.user_id \
         AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' SECOND WHERE a.user_id <> 'late' GROUP BY a.user_id",
        Duration::from_secs(60),
    )
    .await;
    // The same with the interval's end in another column (as Nexmark q4's `A.expires`):
    // a's rows are freed once the watermark passes `until`.
    await_view_equals(
        &client,
        "until_pairs",
        "SELECT a.user_id, count(*), sum(b.n) FROM clicks a JOIN clicks b ON a.user_id = b.user_id \
         AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1500' MILLISECOND WHERE a.user_id <> 'late' GROUP BY a.user_id",
        Duration::from_secs(60),
    )
    .await;
    let plan = sorted_rows(
        &client,
        "EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT * FROM \
         (SELECT user_id, ts, ts + INTERVAL '1500' MILLISECOND AS until FROM clicks) a \
         JOIN clicks b ON a.user_id = b.user_id AND b.ts BETWEEN a.ts AND a.until",
    )
    .await
    .join("\n");
    assert!(plan.contains("expiry [Some(Expiry { column: 2, offset_ns: 0 }), Some(Expiry { column: 1, offset_ns: 0 })]"), "{plan}");
    // A window join of two aggregates over the same windows, whose changes go out at
    // barriers (and at a window's close, before the watermark that closes it).
    await_view_equals(
        &client,
        "share",
        "SELECT u.user_id, u.window_start, u.c, w.c FROM          (SELECT user_id, window_start, count(*) AS c FROM TUMBLE(clicks, ts, INTERVAL '5' SECOND)           WHERE user_id <> 'late' GROUP BY user_id, window_start) u          JOIN (SELECT window_start, count(*) AS c FROM TUMBLE(clicks, ts, INTERVAL '5' SECOND)           WHERE user_id <> 'late' GROUP BY window_start) w ON u.window_start = w.window_start",
        Duration::from_secs(60),
    )
    .await;
    // The joins read the topic twice: each late click is dropped on both sides.
    assert_eq!(
        sorted_rows(
            &client,
            "SELECT name, late_rows FROM weir_catalog.dataflows"
        )
        .await,
        vec![
            "follow_ups|60",
            "per_user|30",
            "share|60",
            "until_pairs|60",
            "visits|30"
        ]
    );
    assert_eq!(
        sorted_rows(
            &client,
            "SELECT partition, next_offset, lag, rows, parse_errors, last_error LIKE '%offset 1500%' \
             FROM weir_catalog.source_progress"
        )
        .await,
        vec!["0|1501|0|1500|1|t"]
    );
    // Views on a source are refused with a clear error for shapes not maintained yet.
    let err = client
        .simple_query(
            "CREATE MATERIALIZED VIEW pairs AS SELECT a.n FROM clicks a JOIN clicks b ON a.n < b.n",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "0A000");
}

/// Reader threads of source `name` running in this process (thread names are cut to 15
/// bytes: `weir-split-` and a short source name fit).
fn split_threads(name: &str) -> usize {
    let prefix = format!("weir-split-{name}-");
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with(&prefix))
        .count()
}

/// A source is read once however many views use it, and its progress counts
/// each message once. Views created while the source's readers are mid-way read what the
/// readers read before on their own (a backfill), then along with the others.
#[tokio::test(flavor = "multi_thread")]
async fn views_of_a_source_share_its_readers() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "SET streaming_parallelism TO 2;
             CREATE SOURCE tk (id BIGINT, k BIGINT) WITH (connector = 'datagen',
               fields.id.kind = 'sequence', fields.id.start = '1', fields.id.end = '60000',
               fields.k.min = '0', fields.k.max = '9', datagen.rows.per.second = '20000')
             FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW first_counts AS SELECT k, count(*) AS n, sum(id) AS s FROM tk GROUP BY k",
        )
        .await
        .unwrap();
    let read = "SELECT sum(rows) FROM weir_catalog.source_progress WHERE source_name = 'tk'";
    let started = Instant::now();
    let rows = loop {
        let r = client.query_one(read, &[]).await.unwrap();
        let rows: Option<i64> = r.get(0);
        if rows.is_some_and(|n| n >= 10_000) {
            break rows.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the readers make no progress"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        rows < 60_000,
        "the paced readers are still mid-way ({rows} rows)"
    );
    client
        .batch_execute(
            "CREATE MATERIALIZED VIEW later AS SELECT k, max(id) AS hi, count(*) AS n FROM tk GROUP BY k;
             CREATE MATERIALIZED VIEW later_total AS SELECT count(*) AS n, sum(id) AS s FROM tk",
        )
        .await
        .unwrap();
    let views = [
        (
            "first_counts",
            "SELECT k, count(*), sum(id) FROM tk GROUP BY k",
        ),
        ("later", "SELECT k, max(id), count(*) FROM tk GROUP BY k"),
        ("later_total", "SELECT count(*), sum(id) FROM tk"),
    ];
    for (view, oracle) in views {
        await_view_equals(&client, view, oracle, Duration::from_secs(60)).await;
    }
    assert_eq!(
        sorted_rows(&client, "SELECT * FROM later_total").await,
        vec!["60000|1800030000"]
    );
    // The backfills are done: the three views read the source's two shards together.
    assert_eq!(split_threads("tk"), 2);
    let progress = sorted_rows(
        &client,
        "SELECT count(*), sum(rows), bool_and(next_offset = rows) \
         FROM weir_catalog.source_progress WHERE source_name = 'tk'",
    )
    .await;
    assert_eq!(
        progress,
        vec!["2|60000|t"],
        "one row per shard, each message once"
    );
    // Dropping every view stops the readers.
    client
        .batch_execute("DROP MATERIALIZED VIEW first_counts; DROP MATERIALIZED VIEW later; DROP MATERIALIZED VIEW later_total")
        .await
        .unwrap();
    let started = Instant::now();
    while split_threads("tk") > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "readers outlive their views"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
