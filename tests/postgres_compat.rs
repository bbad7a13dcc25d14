//! weir beside a real PostgreSQL server: the same expressions must print the same text
//! under the same column names, except the differences docs/postgres-compatibility.md lists.

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::{PostgresServer, TestServer, sqlstate};

/// The column names and text values of a one-row query, or the error it raised.
type Answer = Result<Vec<(String, Option<String>)>, String>;

async fn answer(client: &Client, sql: &str) -> Answer {
    let messages = client.simple_query(sql).await.map_err(|e| {
        let message = e
            .as_db_error()
            .map_or(e.to_string(), |d| d.message().into());
        format!("{}: {message}", sqlstate(&e))
    })?;
    let row = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .ok_or_else(|| format!("{sql}: no row"))?;
    Ok(row
        .columns()
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name().to_string(), row.get(i).map(str::to_string)))
        .collect())
}

/// The expressions docs/postgres-compatibility.md lists as known differences: each item
/// of its last section starts with the expression in backticks.
fn known_differences() -> Vec<String> {
    let page = include_str!("../docs/postgres-compatibility.md");
    let (_, section) = page
        .split_once("## Known differences")
        .expect("the page has a Known differences section");
    section
        .lines()
        .filter_map(|l| l.strip_prefix("- `"))
        .filter_map(|l| l.split_once('`').map(|(e, _)| e.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_output_and_column_names_match_a_real_postgres() {
    let postgres = PostgresServer::start();
    let weir = TestServer::start().await;
    let (pg, w) = (postgres.client().await, weir.client().await);
    let known = known_differences();
    let (mut compared, mut unexpected, mut fixed, mut listed) = (0, Vec::new(), Vec::new(), 0);
    for line in include_str!("postgres/expressions.sql").lines() {
        let expr = line.trim();
        if expr.is_empty() || expr.starts_with("--") {
            continue;
        }
        if expr.starts_with("SET ") {
            pg.batch_execute(expr).await.unwrap();
            w.batch_execute(expr).await.unwrap();
            continue;
        }
        let sql = format!("SELECT {expr}");
        let expected = answer(&pg, &sql).await;
        assert!(expected.is_ok(), "Postgres refused {sql}: {expected:?}");
        let got = answer(&w, &sql).await;
        compared += 1;
        let is_known = known.iter().any(|k| k == expr);
        listed += usize::from(is_known);
        match (got == expected, is_known) {
            (false, false) => unexpected.push(format!(
                "{sql}\n  weir:     {got:?}\n  postgres: {expected:?}"
            )),
            (true, true) => fixed.push(expr.to_string()),
            _ => {}
        }
    }
    eprintln!("{compared} expressions compared, {listed} listed as known differences");
    assert!(compared >= 200, "only {compared} expressions compared");
    assert!(
        unexpected.is_empty(),
        "{} expressions differ from Postgres and are not in docs/postgres-compatibility.md:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    assert!(
        fixed.is_empty(),
        "these now match Postgres: remove them from docs/postgres-compatibility.md: {fixed:?}"
    );
}

/// A materialized view's columns get the same names as the query's, and must be distinct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_columns_are_named_as_postgres_names_them() {
    let weir = TestServer::start().await;
    let c = weir.client().await;
    c.batch_execute(
        "CREATE TABLE bids (auction BIGINT, price BIGINT);
         INSERT INTO bids VALUES (1, 10), (1, 30), (2, 5);
         CREATE MATERIALIZED VIEW per_auction AS
           SELECT auction, count(*), max(price), price_sum::float8 * 2, 'x'::text
           FROM (SELECT auction, sum(price) AS price_sum, count(*) AS n, max(price) AS price
                 FROM bids GROUP BY auction) GROUP BY auction, price_sum",
    )
    .await
    .unwrap();
    let rows = c
        .query("SELECT * FROM per_auction ORDER BY auction", &[])
        .await
        .unwrap();
    let names: Vec<&str> = rows[0].columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["auction", "count", "max", "?column?", "text"]);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, f64>("?column?"), 80.0);
    // ORDER BY may name a derived column, as in Postgres.
    let ordered = c
        .query(
            "SELECT auction, count(*) FROM bids GROUP BY auction ORDER BY count DESC",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(ordered[0].get::<_, i64>("count"), 2);
    // An ad hoc query may repeat a name; a view may not (42701, as in Postgres).
    let repeated = answer(&c, "SELECT count(*), count(*) FROM bids")
        .await
        .unwrap();
    assert_eq!(
        repeated,
        [
            ("count".to_string(), Some("3".to_string())),
            ("count".to_string(), Some("3".to_string()))
        ]
    );
    let err = c
        .batch_execute("CREATE MATERIALIZED VIEW twice AS SELECT count(*), count(*) FROM bids")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42701");
    // current_setting reads the session's parameters; an unknown one is 42704.
    let err = c
        .batch_execute("SELECT current_setting('no_such_parameter')")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42704");
}

/// psql's `\d` of tables with primary keys prints what it prints for Postgres: columns,
/// `not null` key columns, and the key's index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_describes_keyed_tables_as_postgres_does() {
    let postgres = PostgresServer::start();
    let weir = TestServer::start().await;
    let tables = [
        "CREATE TABLE ty (id INT PRIMARY KEY, n NUMERIC(10,2), d DATE, ts TIMESTAMP, name TEXT)",
        "CREATE TABLE two (a INT, b TEXT, c BIGINT, PRIMARY KEY (c, a))",
    ];
    postgres
        .client()
        .await
        .batch_execute(&tables.join("; "))
        .await
        .unwrap();
    weir.client()
        .await
        .batch_execute(&tables.join("; "))
        .await
        .unwrap();
    let describe = |mut psql: std::process::Command| {
        let out = psql
            .args(["-v", "ON_ERROR_STOP=1", "-c", "\\d ty", "-c", "\\d two"])
            .output()
            .expect("psql must be installed");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let mut on_postgres = std::process::Command::new("psql");
    on_postgres.args(["-h", "127.0.0.1", "-p", &postgres.port.to_string()]);
    on_postgres.args(["-U", "postgres", "-d", "postgres", "-X"]);
    let expected = describe(on_postgres);
    assert!(expected.contains("PRIMARY KEY, btree (c, a)"), "{expected}");
    assert_eq!(describe(crate::clients::psql_command(&weir)), expected);
}
