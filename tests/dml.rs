//! DML tables: INSERT / UPDATE / DELETE with primary keys, through both protocols,
//! checked against the rows a model of the table should hold.

use std::collections::BTreeMap;

use crate::harness::{TestServer, sqlstate};

async fn table_rows(client: &tokio_postgres::Client, sql: &str) -> BTreeMap<i64, (String, f64)> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0),
                (r.get::<_, String>(1), r.get::<_, f64>(2)),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn insert_update_delete_follow_a_model() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute("CREATE TABLE rates (id BIGINT PRIMARY KEY, currency VARCHAR, rate DOUBLE)")
        .await
        .unwrap();
    let mut model: BTreeMap<i64, (String, f64)> = BTreeMap::new();

    let r = client
        .execute(
            "INSERT INTO rates VALUES (1, 'EUR', 1.08), (2, 'GBP', 1.27), (3, 'JPY', 0.0067)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r, 3);
    model.insert(1, ("EUR".into(), 1.08));
    model.insert(2, ("GBP".into(), 1.27));
    model.insert(3, ("JPY".into(), 0.0067));

    // Server-side binds (extended protocol) with typed parameters.
    let insert = client
        .prepare("INSERT INTO rates (id, currency, rate) VALUES ($1, $2, $3)")
        .await
        .unwrap();
    for (id, cur, rate) in [(4i64, "CHF", 1.13f64), (5, "CAD", 0.73)] {
        assert_eq!(
            client.execute(&insert, &[&id, &cur, &rate]).await.unwrap(),
            1
        );
        model.insert(id, (cur.into(), rate));
    }

    // A duplicate key fails the whole statement and changes nothing.
    let err = client
        .execute(
            "INSERT INTO rates VALUES (6, 'AUD', 0.66), (2, 'XXX', 9.9)",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23505");
    assert_eq!(
        err.as_db_error().unwrap().detail(),
        Some("Key (id)=(2) already exists.")
    );
    let err = client
        .execute(
            "INSERT INTO rates (currency, rate) VALUES ('NUL', 1.0)",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23502");

    assert_eq!(
        client
            .execute(
                "UPDATE rates SET rate = rate * 2 WHERE currency IN ('EUR', 'CAD')",
                &[]
            )
            .await
            .unwrap(),
        2
    );
    for v in model.values_mut().filter(|(c, _)| c == "EUR" || c == "CAD") {
        v.1 *= 2.0;
    }
    // Moving a key onto an existing one is a duplicate.
    let err = client
        .execute("UPDATE rates SET id = 1 WHERE id = 3", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23505");
    assert_eq!(
        client
            .execute("UPDATE rates SET id = 30 WHERE id = 3", &[])
            .await
            .unwrap(),
        1
    );
    let moved = model.remove(&3).unwrap();
    model.insert(30, moved);

    let delete = client
        .prepare("DELETE FROM rates WHERE rate < $1")
        .await
        .unwrap();
    assert_eq!(client.execute(&delete, &[&1.0f64]).await.unwrap(), 1);
    model.retain(|_, (_, r)| *r >= 1.0);

    assert_eq!(
        table_rows(&client, "SELECT id, currency, rate FROM rates").await,
        model
    );
    assert_eq!(
        client.execute("DELETE FROM rates", &[]).await.unwrap(),
        model.len() as u64
    );
    assert!(
        table_rows(&client, "SELECT id, currency, rate FROM rates")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_join_generator_sources_ad_hoc() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE SOURCE bid WITH (connector = 'nexmark', nexmark.table.type = 'Bid', nexmark.event.num = '5000');
             CREATE TABLE channels (channel VARCHAR PRIMARY KEY, owner VARCHAR);
             INSERT INTO channels VALUES ('Google', 'g'), ('Apple', 'a');",
        )
        .await
        .unwrap();
    let joined: i64 = client
        .query_one(
            "SELECT count(*) FROM bid b JOIN channels c ON b.channel = c.channel",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let direct: i64 = client
        .query_one(
            "SELECT count(*) FROM bid WHERE channel IN ('Google', 'Apple')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(joined, direct);
    assert!(joined > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn append_only_table_rejects_update_and_delete() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.batch_execute("CREATE TABLE events (k INT, v TEXT) APPEND ONLY; INSERT INTO events VALUES (1, 'a'), (1, 'a')").await.unwrap();
    assert_eq!(
        sqlstate(&client.execute("DELETE FROM events", &[]).await.unwrap_err()),
        "0A000"
    );
    assert_eq!(
        sqlstate(
            &client
                .execute("UPDATE events SET v = 'b'", &[])
                .await
                .unwrap_err()
        ),
        "0A000"
    );
    let n: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "keyless tables keep duplicate rows");
}

#[tokio::test(flavor = "multi_thread")]
async fn insert_select_runs_once_on_the_optimized_plan() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE SOURCE b WITH (connector = 'nexmark', nexmark.table.type = 'Bid', nexmark.event.num = '20000');
             CREATE TABLE vip (bidder BIGINT PRIMARY KEY)",
        )
        .await
        .unwrap();
    // EXPLAIN plans the insert but must not run it.
    client
        .simple_query("EXPLAIN INSERT INTO vip SELECT DISTINCT bidder FROM b")
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM vip", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // DISTINCT over a multi-partition scan yields each key once, so no duplicate-key error.
    let inserted = client
        .execute("INSERT INTO vip SELECT DISTINCT bidder FROM b", &[])
        .await
        .unwrap();
    let distinct: i64 = client
        .query_one("SELECT count(DISTINCT bidder) FROM b", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(inserted as i64, distinct);
    let deleted = client
        .execute("DELETE FROM vip WHERE bidder % 2 = 0", &[])
        .await
        .unwrap();
    let even: i64 = client
        .query_one(
            "SELECT count(DISTINCT bidder) FROM b WHERE bidder % 2 = 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(deleted as i64, even);
}

/// A NOT NULL column refuses a NULL from INSERT (VALUES or SELECT) and UPDATE with 23502,
/// the rows stay as they were, and the catalog says so.
#[tokio::test(flavor = "multi_thread")]
async fn not_null_columns_refuse_nulls_and_are_described() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE people (id INT PRIMARY KEY, name VARCHAR NOT NULL, note TEXT); \
             INSERT INTO people VALUES (1, 'ada', NULL)",
        )
        .await
        .unwrap();
    for bad in [
        "INSERT INTO people VALUES (2, NULL, 'x')",
        "INSERT INTO people (id, note) VALUES (3, 'x')",
        "INSERT INTO people SELECT 4, NULL, 'y'",
        "UPDATE people SET name = NULL WHERE id = 1",
    ] {
        let err = client.batch_execute(bad).await.unwrap_err();
        assert_eq!(sqlstate(&err), "23502", "{bad}: {err:?}");
    }
    let rows = client
        .query("SELECT id, name, note FROM people", &[])
        .await
        .unwrap();
    let rows: Vec<(i32, String, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(rows, vec![(1, "ada".to_string(), None)]);
    let nullable = client
        .query(
            "SELECT column_name, is_nullable FROM information_schema.columns \
             WHERE table_name = 'people' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap();
    let nullable: Vec<(String, String)> = nullable.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(nullable[1], ("name".to_string(), "NO".to_string()));
    assert_eq!(nullable[2], ("note".to_string(), "YES".to_string()));
    // What psql's `\d` reads.
    let not_null = client
        .query(
            "SELECT a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c \
             ON a.attrelid = c.oid WHERE c.relname = 'people' AND a.attnotnull ORDER BY a.attnum",
            &[],
        )
        .await
        .unwrap();
    let not_null: Vec<String> = not_null.iter().map(|r| r.get(0)).collect();
    assert_eq!(not_null, ["id", "name"]);
}
