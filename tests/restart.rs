//! Durability: the catalog and table rows survive a clean restart and a kill -9 of the binary.

use crate::harness::{TestServer, WeirProcess, connect, http_get};

const DDL: &str = "
CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR, city VARCHAR);
CREATE SOURCE bid WITH (connector = 'nexmark', nexmark.table.type = 'Bid', nexmark.event.num = '1000');
CREATE SOURCE clicks (user_id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
  WITH (connector = 'kafka', topic = 'clicks', properties.bootstrap.server = '127.0.0.1:1')
  FORMAT PLAIN ENCODE JSON;
";

async fn names(client: &tokio_postgres::Client, what: &str) -> Vec<String> {
    client
        .query(&format!("SHOW {what}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_and_rows_survive_clean_restart() {
    let mut server = TestServer::start().await;
    let client = server.client().await;
    client.batch_execute(DDL).await.unwrap();
    client.batch_execute("INSERT INTO users VALUES (1, 'ann', 'oslo'), (2, 'bob', 'rome'); UPDATE users SET city = 'lima' WHERE id = 2").await.unwrap();
    let sum_before: i64 = client
        .query_one("SELECT sum(price) FROM bid", &[])
        .await
        .unwrap()
        .get(0);
    client.batch_execute("DROP TABLE users; CREATE TABLE users (id BIGINT PRIMARY KEY, name VARCHAR, city VARCHAR); INSERT INTO users VALUES (3, 'cy', 'nice')").await.unwrap();
    drop(client);
    server.restart().await;
    let client = server.client().await;
    assert_eq!(names(&client, "SOURCES").await, vec!["bid", "clicks"]);
    assert_eq!(names(&client, "TABLES").await, vec!["users"]);
    let rows: Vec<(i64, String)> = client
        .query("SELECT id, city FROM users ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        vec![(3, "nice".to_string())],
        "a dropped table's rows must not come back"
    );
    // The generator's base time is fixed at CREATE, so the source yields the same rows after restart.
    let sum_after: i64 = client
        .query_one("SELECT sum(price) FROM bid", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sum_before, sum_after);
    let ddl: String = client
        .query_one("SHOW CREATE SOURCE clicks", &[])
        .await
        .unwrap()
        .get(1);
    assert!(ddl.contains("WATERMARK FOR ts"), "{ddl}");
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_dml_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let weir = WeirProcess::start(dir.path());
    let (client, _) = connect(weir.addr()).await;
    client.batch_execute(DDL).await.unwrap();
    let insert = client
        .prepare("INSERT INTO users VALUES ($1, $2, $3)")
        .await
        .unwrap();
    for i in 0..200i64 {
        client
            .execute(&insert, &[&i, &format!("user{i}"), &"x"])
            .await
            .unwrap();
    }
    client
        .execute("DELETE FROM users WHERE id % 10 = 0", &[])
        .await
        .unwrap();
    client
        .execute("UPDATE users SET city = 'y' WHERE id < 50", &[])
        .await
        .unwrap();
    weir.kill9();

    let weir = WeirProcess::start(dir.path());
    let (client, _) = connect(weir.addr()).await;
    assert_eq!(names(&client, "SOURCES").await, vec!["bid", "clicks"]);
    let row = client
        .query_one(
            "SELECT count(*), sum(id), count(*) FILTER (WHERE city = 'y') FROM users",
            &[],
        )
        .await
        .unwrap();
    let expected: Vec<i64> = (0..200).filter(|i| i % 10 != 0).collect();
    assert_eq!(row.get::<_, i64>(0), expected.len() as i64);
    assert_eq!(row.get::<_, i64>(1), expected.iter().sum::<i64>());
    assert_eq!(
        row.get::<_, i64>(2),
        expected.iter().filter(|i| **i < 50).count() as i64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_cleanly_and_health_endpoint_answers() {
    let dir = tempfile::tempdir().unwrap();
    let weir = WeirProcess::start(dir.path());
    let (client, _) = connect(weir.addr()).await;
    client.batch_execute("SELECT 1").await.unwrap();
    assert_eq!(http_get(weir.http_addr(), "/healthz"), "ok\n");
    let metrics = http_get(weir.http_addr(), "/metrics");
    assert!(metrics.contains("weir_pg_connections_total 1"), "{metrics}");
    assert!(
        metrics.contains(r#"weir_statements_total{kind="select"} 1"#),
        "{metrics}"
    );
    let (status, took) = weir.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn catalog_entry_that_cannot_be_recreated_is_kept() {
    let mut server = TestServer::start().await;
    let catalog = server.dir.path().join("catalog.json");
    std::fs::write(
        &catalog,
        r#"[{"kind":"Source","name":"broken","sql":"CREATE SOURCE broken WITH (connector = 'nope')"},
            {"kind":"Table","name":"fine","sql":"CREATE TABLE fine (a INT)"}]"#,
    )
    .unwrap();
    server.restart().await;
    let client = server.client().await;
    assert_eq!(names(&client, "TABLES").await, vec!["fine"]);
    let err = client
        .simple_query("CREATE TABLE broken (a INT)")
        .await
        .unwrap_err();
    assert_eq!(
        crate::harness::sqlstate(&err),
        "42P07",
        "the name stays taken"
    );
    client
        .batch_execute("CREATE TABLE other (a INT)")
        .await
        .unwrap();
    let text = std::fs::read_to_string(&catalog).unwrap();
    assert!(text.contains("broken") && text.contains("other"), "{text}");
}
