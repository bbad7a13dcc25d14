//! The Postgres endpoint through tokio-postgres: types and OIDs in text and binary formats,
//! SQLSTATEs of bad statements, settings, transactions and cancel requests.

use chrono::{NaiveDate, NaiveDateTime};
use tokio_postgres::types::Type;

use crate::harness::{TestServer, sqlstate};

#[tokio::test(flavor = "multi_thread")]
async fn binary_results_carry_the_right_types() {
    let server = TestServer::start().await;
    let client = server.client().await;
    // tokio-postgres' query() uses the extended protocol with binary results.
    let row = client
        .query_one(
            "SELECT $1::BIGINT + 1 AS b, CAST(7 AS INT) AS i, CAST(3 AS SMALLINT) AS s, 'héllo'::TEXT AS t,
                    CAST(1.5 AS DOUBLE) AS d, CAST(2.5 AS REAL) AS r, true AS flag,
                    DATE '2024-02-29' AS day, TIMESTAMP '2024-01-01 00:00:01.234' AS ts",
            &[&41i64],
        )
        .await
        .unwrap();
    let types: Vec<Type> = row.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(
        types,
        vec![
            Type::INT8,
            Type::INT4,
            Type::INT2,
            Type::TEXT,
            Type::FLOAT8,
            Type::FLOAT4,
            Type::BOOL,
            Type::DATE,
            Type::TIMESTAMP
        ]
    );
    assert_eq!(row.get::<_, i64>(0), 42);
    assert_eq!(row.get::<_, i32>(1), 7);
    assert_eq!(row.get::<_, i16>(2), 3);
    assert_eq!(row.get::<_, String>(3), "héllo");
    assert_eq!(row.get::<_, f64>(4), 1.5);
    assert_eq!(row.get::<_, f32>(5), 2.5);
    assert!(row.get::<_, bool>(6));
    assert_eq!(
        row.get::<_, NaiveDate>(7),
        NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()
    );
    let ts =
        NaiveDateTime::parse_from_str("2024-01-01 00:00:01.234", "%Y-%m-%d %H:%M:%S%.3f").unwrap();
    assert_eq!(row.get::<_, NaiveDateTime>(8), ts);
}

/// A value's bytes as the server sent them.
struct Raw(Vec<u8>);

impl<'a> tokio_postgres::types::FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jsonb_is_typed_jsonb_in_tables_views_and_both_formats() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE docs (id INT, doc JSONB); \
             INSERT INTO docs VALUES (1, '{\"b\": [1, 2.50], \"a\": {\"x\": null}}'); \
             CREATE MATERIALIZED VIEW parts AS SELECT id, doc -> 'a' AS a, doc ->> 'b' AS b FROM docs",
        )
        .await
        .unwrap();
    let bad = client
        .batch_execute("INSERT INTO docs VALUES (2, '{\"unclosed\": 1')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&bad), "22P02", "{bad:?}");
    // Binary: jsonb's version byte, then the text as Postgres prints it.
    let row = client.query_one("SELECT doc FROM docs", &[]).await.unwrap();
    assert_eq!(row.columns()[0].type_(), &Type::JSONB);
    assert_eq!(
        row.get::<_, Raw>(0).0,
        b"\x01{\"a\": {\"x\": null}, \"b\": [1, 2.50]}".to_vec()
    );
    let row = client
        .query_one("SELECT a, b FROM parts", &[])
        .await
        .unwrap();
    let types: Vec<Type> = row.columns().iter().map(|c| c.type_().clone()).collect();
    assert_eq!(types, vec![Type::JSONB, Type::TEXT]);
    assert_eq!(row.get::<_, Raw>(0).0, b"\x01{\"x\": null}".to_vec());
    assert_eq!(row.get::<_, String>(1), "[1, 2.50]");
    // Text, and the catalog's type for the columns.
    let rows = client.simple_query("SELECT doc FROM docs").await.unwrap();
    let text = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(
        text.as_deref(),
        Some("{\"a\": {\"x\": null}, \"b\": [1, 2.50]}")
    );
    let described = client
        .query(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) \
             FROM pg_attribute a JOIN pg_class c ON a.attrelid = c.oid \
             WHERE c.relname IN ('docs', 'parts') AND a.attnum > 0 ORDER BY 1, a.attnum",
            &[],
        )
        .await
        .unwrap();
    let described: Vec<(String, String, String)> = described
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected = [
        ("docs", "id", "integer"),
        ("docs", "doc", "jsonb"),
        ("parts", "id", "integer"),
        ("parts", "a", "jsonb"),
        ("parts", "b", "text"),
    ];
    assert_eq!(
        described,
        expected
            .iter()
            .map(|(t, c, ty)| (t.to_string(), c.to_string(), ty.to_string()))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn text_results_through_simple_protocol() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let msgs = client
        .simple_query("SELECT 1 + 1 AS two, 'a' || 'b' AS ab, NULL::TEXT AS n; SELECT 3")
        .await
        .unwrap();
    let rows: Vec<&tokio_postgres::SimpleQueryRow> = msgs
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get("two"), Some("2"));
    assert_eq!(rows[0].get("ab"), Some("ab"));
    assert_eq!(rows[0].get("n"), None);
    assert_eq!(rows[1].get(0), Some("3"));
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_carry_sqlstate_and_the_session_survives() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    let cases = [
        ("SELEC 1", "42601"),
        ("SELECT * FROM no_such_table", "42P01"),
        ("SELECT no_such_column FROM t", "42703"),
        ("CREATE TABLE t (id BIGINT)", "42P07"),
        ("SELECT 1 / 0", "22012"),
        ("SELECT CAST('abc' AS INT)", "22P02"),
        (
            "CREATE MATERIALIZED VIEW mv AS SELECT a.id FROM t a JOIN t b ON a.id < b.id",
            "0A000",
        ),
        ("SET no_such_parameter = 1", "42704"),
        ("CREATE TABLE bad (__weight BIGINT)", "42939"),
        ("DROP SOURCE t", "42809"),
    ];
    for (sql, code) in cases {
        let err = client.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&err), code, "{sql}: {err:?}");
    }
    let err = client
        .simple_query("SELECT 1; SELECT * FROM nope")
        .await
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.message(), "relation \"nope\" does not exist");
    let syntax = client
        .simple_query("SELECT 1 FROM t WHERE id = = 2")
        .await
        .unwrap_err();
    assert!(
        matches!(syntax.as_db_error().unwrap().position(), Some(tokio_postgres::error::ErrorPosition::Original(p)) if *p > 20)
    );
    // Still usable, both protocols.
    assert_eq!(
        client
            .query_one("SELECT 5::BIGINT", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        5
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_and_transactions() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute("SET TimeZone TO 'Europe/Paris'; SET application_name = 'e2e'")
        .await
        .unwrap();
    let show = |name: &'static str| {
        let client = &client;
        async move {
            let m = client.simple_query(&format!("SHOW {name}")).await.unwrap();
            m.iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                    _ => None,
                })
                .unwrap()
        }
    };
    assert_eq!(show("timezone").await, "Europe/Paris");
    assert_eq!(show("application_name").await, "e2e");
    assert_eq!(show("standard_conforming_strings").await, "on");
    assert_eq!(show("transaction isolation level").await, "read committed");
    client
        .batch_execute("SET RW_IMPLICIT_FLUSH TO true")
        .await
        .unwrap();
    assert_eq!(show("implicit_flush").await, "on");
    client.batch_execute("RESET TimeZone").await.unwrap();
    assert_eq!(show("TimeZone").await, "UTC");

    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        client
            .query_one("SELECT 1::INT", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    client.batch_execute("COMMIT").await.unwrap();
    // An error inside a transaction block aborts it until ROLLBACK, as in Postgres.
    client.batch_execute("BEGIN").await.unwrap();
    assert!(client.batch_execute("SELECT * FROM nope").await.is_err());
    let aborted = client.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&aborted), "25P02");
    client.batch_execute("ROLLBACK").await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    // Savepoints, as drivers (psycopg, SQLAlchemy) issue them, are accepted.
    client
        .batch_execute("BEGIN; SAVEPOINT s1; SELECT 1; ROLLBACK TO SAVEPOINT s1")
        .await
        .unwrap();
    client
        .batch_execute("RELEASE SAVEPOINT s1; COMMIT")
        .await
        .unwrap();
    let v = client
        .query_one("SELECT version()", &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    assert!(v.starts_with("PostgreSQL 15.0 (weir"), "{v}");
    let db = client
        .query_one("SELECT current_database(), current_schema()", &[])
        .await
        .unwrap();
    assert_eq!(
        (db.get::<_, String>(0), db.get::<_, String>(1)),
        ("weir".to_string(), "public".to_string())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_request_stops_a_long_query() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute("CREATE SOURCE big WITH (connector = 'nexmark', nexmark.table.type = 'Bid', nexmark.event.num = '2000000000')")
        .await
        .unwrap();
    let token = client.cancel_token();
    // Cancel repeatedly: a cancel that arrives before the query starts is ignored, as in Postgres.
    let canceller = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        }
    });
    let started = std::time::Instant::now();
    let err = client
        .simple_query("SELECT count(*) FROM big")
        .await
        .unwrap_err();
    canceller.abort();
    assert_eq!(sqlstate(&err), "57014", "{err:?}");
    // Queries run on their own threads, so the cancel is handled while the scan runs.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    client.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn generator_source_needs_limit_and_gives_reference_proportions() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE SOURCE bid WITH (connector = 'nexmark', nexmark.table.type = 'Bid');
             CREATE SOURCE bid_small WITH (connector = 'nexmark', nexmark.table.type = 'Bid', nexmark.event.num = '1000');
             CREATE SOURCE auction_small WITH (connector = 'nexmark', nexmark.table.type = 'Auction', nexmark.event.num = '1000')",
        )
        .await
        .unwrap();
    let err = client
        .simple_query("SELECT count(*) FROM bid")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "0A000");
    assert!(err.as_db_error().unwrap().message().contains("LIMIT"));
    let rows = client
        .query("SELECT auction, price FROM bid LIMIT 25", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 25);
    let n = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    // 1000 events: 46 of every 50 are bids, 3 auctions.
    assert_eq!(n("SELECT count(*) FROM bid_small").await, 920);
    assert_eq!(n("SELECT count(*) FROM auction_small").await, 60);
    // Every bid of the first events refers to an auction id the generator has produced or will.
    assert!(n("SELECT min(auction) FROM bid_small").await >= 1000);
    // Deterministic: two scans agree.
    assert_eq!(
        n("SELECT sum(price) FROM bid_small").await,
        n("SELECT sum(price) FROM bid_small").await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn datagen_sequences_and_random_fields() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE SOURCE s (id INT, v VARCHAR, x BIGINT, ts TIMESTAMP) WITH (connector = 'datagen',
               fields.id.kind = 'sequence', fields.id.start = '1', fields.id.end = '1000',
               fields.v.length = '6', fields.x.min = '10', fields.x.max = '20', fields.ts.max_past = '1h')
             FORMAT PLAIN ENCODE JSON;
             CREATE SOURCE endless (k BIGINT) WITH (connector = 'datagen', fields.k.kind = 'sequence')",
        )
        .await
        .unwrap();
    let r = client
        .query_one(
            "SELECT count(*), sum(id), min(length(v)), max(length(v)), min(x), max(x), count(DISTINCT id),
                    CAST(max(ts) - min(ts) <= INTERVAL '1' HOUR AS BOOLEAN) FROM s",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((r.get::<_, i64>(0), r.get::<_, i64>(1)), (1000, 500_500));
    assert_eq!((r.get::<_, i32>(2), r.get::<_, i32>(3)), (6, 6));
    assert!(r.get::<_, i64>(4) >= 10 && r.get::<_, i64>(5) <= 20);
    assert_eq!(r.get::<_, i64>(6), 1000);
    assert!(r.get::<_, bool>(7));
    // Random columns are a function of the row: two reads agree.
    let a: String = client
        .query_one("SELECT string_agg(v, ',' ORDER BY id) FROM s", &[])
        .await
        .unwrap()
        .get(0);
    let b: String = client
        .query_one("SELECT string_agg(v, ',' ORDER BY id) FROM s", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(a, b);
    assert_eq!(
        sqlstate(
            &client
                .simple_query("SELECT count(*) FROM endless")
                .await
                .unwrap_err()
        ),
        "0A000"
    );
    let last: i64 = client
        .query_one("SELECT max(k) FROM (SELECT k FROM endless LIMIT 50)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(last, 49);
    let bad = client
        .simple_query(
            "CREATE SOURCE bad (a INT) WITH (connector = 'datagen', fields.b.kind = 'sequence')",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&bad), "42703");
}
