//! Materialized views over tables: backfilled, kept equal to their query re-run from scratch
//! after every INSERT/UPDATE/DELETE, restored after restart, dropped with dependency checks.

use crate::harness::{TestServer, sorted_rows as rows, sqlstate};

const VIEW_QUERY: &str = "SELECT city, count(*) AS n, sum(age) AS total, avg(age) AS mean FROM people WHERE age >= 18 GROUP BY city";

#[tokio::test(flavor = "multi_thread")]
async fn view_equals_its_query_after_every_change() {
    let mut server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "SET implicit_flush = on;
             CREATE TABLE people (id BIGINT PRIMARY KEY, city VARCHAR, age BIGINT);
             INSERT INTO people VALUES (1, 'oslo', 30), (2, 'oslo', 12), (3, 'rome', 40);
             SET streaming_parallelism TO 3;
             CREATE MATERIALIZED VIEW adults AS {VIEW_QUERY};
             RESET streaming_parallelism;
             CREATE MATERIALIZED VIEW names AS SELECT id, upper(city) AS c FROM people WHERE age > 20;"
        ))
        .await
        .unwrap();
    let steps = [
        "INSERT INTO people VALUES (4, 'rome', 50), (5, 'lima', 19)",
        "UPDATE people SET age = 20 WHERE id = 2",
        "UPDATE people SET city = 'lima' WHERE id = 3",
        "DELETE FROM people WHERE id = 5",
        "DELETE FROM people WHERE city = 'oslo'",
        "INSERT INTO people VALUES (6, 'oslo', 70)",
    ];
    for step in steps {
        assert_eq!(
            rows(&client, "SELECT * FROM adults").await,
            rows(&client, VIEW_QUERY).await,
            "before {step}"
        );
        assert_eq!(
            rows(&client, "SELECT * FROM names").await,
            rows(
                &client,
                "SELECT id, upper(city) AS c FROM people WHERE age > 20"
            )
            .await
        );
        client.batch_execute(step).await.unwrap();
    }
    assert_eq!(
        rows(&client, "SELECT * FROM adults").await,
        rows(&client, VIEW_QUERY).await
    );
    assert_eq!(
        rows(&client, "SHOW MATERIALIZED VIEWS").await,
        vec!["adults", "names"]
    );

    // Views survive a restart: re-created and backfilled from the table, each with the
    // parallelism it was created with (one instance per core by default).
    let cores = std::thread::available_parallelism().unwrap().get();
    let parallelism = vec!["adults|3".to_string(), format!("names|{cores}")];
    let query = "SELECT name, parallelism FROM weir_catalog.dataflows";
    assert_eq!(rows(&client, query).await, parallelism);
    drop(client);
    server.restart().await;
    let client = server.client().await;
    assert_eq!(rows(&client, query).await, parallelism);
    assert_eq!(
        rows(&client, "SELECT * FROM adults").await,
        rows(&client, VIEW_QUERY).await
    );
    client
        .batch_execute("INSERT INTO people VALUES (7, 'oslo', 21); FLUSH")
        .await
        .unwrap();
    assert_eq!(
        rows(&client, "SELECT * FROM adults").await,
        rows(&client, VIEW_QUERY).await
    );

    // Dependencies: the table cannot go while views read it, unless CASCADE.
    assert_eq!(
        sqlstate(&client.simple_query("DROP TABLE people").await.unwrap_err()),
        "2BP01"
    );
    client
        .batch_execute("DROP MATERIALIZED VIEW names")
        .await
        .unwrap();
    client
        .batch_execute("DROP TABLE people CASCADE")
        .await
        .unwrap();
    assert!(rows(&client, "SHOW MATERIALIZED VIEWS").await.is_empty());
    assert_eq!(
        sqlstate(
            &client
                .simple_query("SELECT * FROM adults")
                .await
                .unwrap_err()
        ),
        "42P01"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unsupported_view_shapes_say_what_is_missing() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute("CREATE TABLE t (k INT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    for (sql, word) in [
        (
            "CREATE MATERIALIZED VIEW a AS SELECT * FROM t a JOIN t b ON a.k < b.v",
            "JOIN without an equality",
        ),
        (
            "CREATE MATERIALIZED VIEW d AS SELECT k, count(*) FROM t GROUP BY k EMIT ON WINDOW CLOSE",
            "EMIT ON WINDOW CLOSE",
        ),
        (
            "CREATE MATERIALIZED VIEW c AS SELECT * FROM t LIMIT 3",
            "LIMIT without ORDER BY",
        ),
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        let db = err.as_db_error().unwrap();
        assert_eq!(db.code().code(), "0A000", "{sql}: {db:?}");
        assert!(db.message().contains(word), "{sql}: {}", db.message());
    }
    assert!(rows(&client, "SHOW MATERIALIZED VIEWS").await.is_empty());
}

/// A view whose query reads no table (`SELECT 1`) holds its one row, one the planner proved
/// empty (`WHERE false`) holds none whatever its table gets, and both commit epochs (FLUSH
/// returns), feed views of their own and keep their rows, once, across a restart.
#[tokio::test(flavor = "multi_thread")]
async fn views_over_no_table_or_no_rows() {
    let mut server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE t (k INT PRIMARY KEY, v INT);
             CREATE MATERIALIZED VIEW none AS SELECT * FROM t WHERE false;
             CREATE MATERIALIZED VIEW counted AS SELECT count(*) AS n FROM t WHERE 1 = 0;
             CREATE MATERIALIZED VIEW one AS SELECT 1 AS x, 'a' AS y;
             CREATE MATERIALIZED VIEW on_one AS SELECT x + 1 AS z FROM one;
             INSERT INTO t VALUES (1, 10), (2, 20);
             FLUSH;",
        )
        .await
        .unwrap();
    constant_views_hold_their_rows(&client).await;
    let explain = rows(
        &client,
        "EXPLAIN CREATE MATERIALIZED VIEW w AS SELECT 1 AS x",
    )
    .await;
    assert!(
        explain.iter().any(|l| l.contains("(constant)")),
        "{explain:?}"
    );
    server.restart().await;
    let client = server.client().await;
    client
        .batch_execute("INSERT INTO t VALUES (3, 30); FLUSH")
        .await
        .unwrap();
    constant_views_hold_their_rows(&client).await;
}

async fn constant_views_hold_their_rows(client: &tokio_postgres::Client) {
    assert!(rows(client, "SELECT * FROM none").await.is_empty());
    assert_eq!(rows(client, "SELECT n FROM counted").await, vec!["0"]);
    assert_eq!(rows(client, "SELECT x, y FROM one").await, vec!["1|a"]);
    assert_eq!(rows(client, "SELECT z FROM on_one").await, vec!["2"]);
}

/// A view of window functions is restored from its checkpoint (its partitions' rows; what
/// each emitted is evaluated again) and carries on equal to its query.
#[tokio::test(flavor = "multi_thread")]
async fn window_functions_resume_after_a_restart() {
    use std::time::Duration;
    let mut server = TestServer::start().await;
    let client = server.client().await;
    let query = "SELECT id, g, v, lag(v) OVER (PARTITION BY g ORDER BY id) AS prev, \
                 sum(v) OVER (PARTITION BY g ORDER BY id) AS running FROM w";
    client
        .batch_execute(&format!(
            "CREATE TABLE w (id BIGINT PRIMARY KEY, g BIGINT, v BIGINT);
             SET streaming_parallelism = 2;
             CREATE MATERIALIZED VIEW lagged AS {query};
             INSERT INTO w VALUES (1, 1, 10), (2, 1, 20), (3, 2, 5), (4, 1, 30);"
        ))
        .await
        .unwrap();
    crate::harness::await_view_equals(&client, "lagged", query, Duration::from_secs(30)).await;
    server.restart().await;
    let client = server.client().await;
    let notes = rows(
        &client,
        "SELECT error FROM weir_catalog.dataflows WHERE name = 'lagged' AND error IS NOT NULL",
    )
    .await;
    assert!(notes.is_empty(), "restored, not derived again: {notes:?}");
    client
        .batch_execute("UPDATE w SET v = 25 WHERE id = 2; DELETE FROM w WHERE id = 1; INSERT INTO w VALUES (5, 2, 7)")
        .await
        .unwrap();
    crate::harness::await_view_equals(&client, "lagged", query, Duration::from_secs(30)).await;
    assert_eq!(
        rows(&client, "SELECT prev, running FROM lagged WHERE id = 4").await,
        vec!["25|55"]
    );
}
