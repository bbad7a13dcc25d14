//! Hostile and careless clients: pathological and mutated SQL, garbage on the Postgres
//! port, statement timeouts, SIGTERM during a long statement. Every statement gets a
//! result or an error with a SQLSTATE, and the server (the real binary) stays up.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::{Lcg, TestServer, WeirProcess, connect, sqlstate};

/// How long one statement may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(60);

/// Runs `sql`; Ok(rows) or Err(SQLSTATE). Panics on a hang or a connection error.
async fn outcome(client: &Client, sql: &str) -> Result<usize, String> {
    outcome_with_message(client, sql)
        .await
        .map_err(|(code, _)| code)
}

/// As `outcome`, with the error's message.
async fn outcome_with_message(client: &Client, sql: &str) -> Result<usize, (String, String)> {
    let shown: String = sql.chars().take(120).collect();
    match tokio::time::timeout(HANG, client.simple_query(sql)).await {
        Err(_) => panic!("hung for {HANG:?}: {shown}"),
        Ok(Ok(messages)) => Ok(messages
            .iter()
            .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
            .count()),
        Ok(Err(e)) => match e.as_db_error() {
            Some(db) => Err((db.code().code().to_string(), db.message().to_string())),
            None => panic!("no ErrorResponse but {e} for: {shown}"),
        },
    }
}

async fn answers_select_1(client: &Client) {
    assert_eq!(outcome(client, "SELECT 1").await, Ok(1));
}

fn nest(open: &str, inner: &str, close: &str, depth: usize) -> String {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

/// The statements that crashed the server (stack overflow) or kept a thread busy for
/// minutes (sqlparser backtracking), and their neighbours.
#[tokio::test(flavor = "multi_thread")]
async fn pathological_statements_get_errors_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut weir = WeirProcess::start(dir.path());
    let (client, _) = connect(weir.addr()).await;
    let cases: Vec<(String, Result<usize, &str>)> = vec![
        // ARRAY[ fails at the nesting limit and was retried as an identifier per level.
        (
            format!("SELECT {}", nest("ARRAY[", "1", "]", 49)),
            Err("54001"),
        ),
        (
            format!("SELECT {}", nest("ARRAY[", "1", "]", 10_000)),
            Err("54001"),
        ),
        (
            format!("SELECT {}", nest("(", "1", ")", 10_000)),
            Err("54001"),
        ),
        (
            format!("SELECT {}", nest("(SELECT ", "1", ")", 10_000)),
            Err("54001"),
        ),
        (
            format!("SELECT * FROM {}", nest("(", "t", ")", 10_000)),
            Err("54001"),
        ),
        // Function arguments were parsed twice per level (2^depth).
        (format!("SELECT {}", nest("f(", "1", ")", 45)), Err("42883")),
        (format!("SELECT {}", nest("lower(", "'A'", ")", 40)), Ok(1)),
        (
            format!("SELECT {}", nest("pg_f(", "1", ")", 30)),
            Err("54001"),
        ),
        (format!("SELECT a{}", "[1]".repeat(10_000)), Err("42703")),
        // One level per term: deep enough to overflow any thread that clones or drops it.
        (format!("SELECT 1{}", "+1".repeat(100_000)), Err("54001")),
        (
            format!(
                "CREATE MATERIALIZED VIEW deep AS SELECT 1{}",
                "+1".repeat(100_000)
            ),
            Err("54001"),
        ),
        (
            format!("SELECT {}true", "NOT ".repeat(10_000)),
            Err("42601"),
        ),
        (format!("SELECT {}1", "- ".repeat(10_000)), Err("54001")),
        // Found by the 200k-statement fuzz: planned, then refused by Arrow's kernel (XX000).
        ("SELECT - now()::timestamp".to_string(), Err("42883")),
        (
            "CREATE MATERIALIZED VIEW neg AS SELECT - ts FROM (VALUES (now()::timestamp)) AS v(ts)"
                .to_string(),
            Err("42883"),
        ),
        ("SELECT - 'a'".to_string(), Err("42883")),
        (format!("SELECT length('{}')", "x".repeat(1 << 20)), Ok(1)),
        (format!("SELECT {}", "9".repeat(100_000)), Ok(1)),
        (format!("SELECT '{}'", "x".repeat(17 << 20)), Err("54000")),
        (
            format!(
                "CREATE SOURCE s (ts TIMESTAMP, WATERMARK FOR ts AS ts{}) WITH (connector = 'datagen')",
                " - INTERVAL '1' SECOND".repeat(5000)
            ),
            Err("42601"),
        ),
    ];
    for (sql, expected) in cases {
        let started = Instant::now();
        let got = outcome(&client, &sql).await;
        let shown: String = sql.chars().take(60).collect();
        match expected {
            Ok(rows) => assert_eq!(got, Ok(rows), "{shown}"),
            Err(code) => assert_eq!(got, Err(code.to_string()), "{shown}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{shown}: {:?}",
            started.elapsed()
        );
        answers_select_1(&client).await;
    }
    assert!(
        weir.child.0.try_wait().unwrap().is_none(),
        "weir is running"
    );
}

/// Valid statements of every kind the server takes, mutated below.
const CORPUS: &[&str] = &[
    "CREATE SOURCE fz_bid WITH (connector = 'nexmark', nexmark.table.type = 'Bid', nexmark.event.num = '3000')",
    "CREATE SOURCE fz_gen (id BIGINT, v DOUBLE, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'datagen', fields.id.kind = 'sequence', fields.id.start = '1', fields.id.end = '500') FORMAT PLAIN ENCODE JSON",
    "CREATE TABLE fz_t (id INT PRIMARY KEY, g VARCHAR, x BIGINT)",
    "CREATE TABLE IF NOT EXISTS fz_u (k VARCHAR, n INT) APPEND ONLY",
    "INSERT INTO fz_t VALUES (1, 'a', 10), (2, 'b', 20), (3, 'a', NULL)",
    "INSERT INTO fz_u VALUES ('x', 1), ('y', 2)",
    "UPDATE fz_t SET x = x + 1 WHERE g = 'a'",
    "DELETE FROM fz_t WHERE id > 2",
    "SELECT g, count(*), sum(x), avg(x) FROM fz_t GROUP BY g HAVING count(*) > 0 ORDER BY 1",
    "SELECT * FROM fz_t t JOIN fz_u u ON t.g = u.k WHERE t.x BETWEEN 1 AND 100 LIMIT 5",
    "SELECT window_start, count(*), max(price) FROM TUMBLE(fz_bid, date_time, INTERVAL '10' SECOND) GROUP BY window_start",
    "SELECT auction, window_start FROM HOP(fz_bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) LIMIT 3",
    "SELECT CASE WHEN x > 10 THEN 'hi' ELSE 'lo' END, coalesce(g, '?'), CAST(x AS DOUBLE) / 3 FROM fz_t",
    "SELECT 'a''b' || 'c', 1e10, -0.5, ARRAY[1, 2, 3][2], INTERVAL '1 day', DATE '2024-02-29', now()",
    "WITH c AS (SELECT g, x FROM fz_t) SELECT g, row_number() OVER (PARTITION BY g ORDER BY x) FROM c",
    "SELECT * FROM fz_t WHERE id IN (SELECT n FROM fz_u) OR EXISTS (SELECT 1 FROM fz_u WHERE k = g)",
    "CREATE MATERIALIZED VIEW fz_v AS SELECT g, count(*) AS n, sum(x) AS s FROM fz_t GROUP BY g",
    "CREATE MATERIALIZED VIEW fz_w AS SELECT window_start, count(*) AS n FROM TUMBLE(fz_gen, ts, INTERVAL '5' SECOND) GROUP BY window_start",
    "EXPLAIN CREATE MATERIALIZED VIEW fz_x AS SELECT t.g, u.n FROM fz_t t JOIN fz_u u ON t.g = u.k",
    "EXPLAIN SELECT * FROM fz_t WHERE x > 1",
    "DROP MATERIALIZED VIEW IF EXISTS fz_w",
    "DROP TABLE IF EXISTS fz_u CASCADE",
    "DROP SOURCE IF EXISTS fz_gen",
    "SHOW SOURCES",
    "SHOW TABLES",
    "SHOW MATERIALIZED VIEWS",
    "SHOW CREATE TABLE fz_t",
    "DESCRIBE fz_t",
    "SET streaming_parallelism = 2",
    "SET TIME ZONE 'UTC'",
    "SHOW search_path",
    "SHOW ALL",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "DECLARE fz_c CURSOR FOR SUBSCRIBE TO fz_v",
    "FETCH 10 fz_c WITH (timeout = '100ms')",
    "CLOSE fz_c",
    "FLUSH",
    "CREATE SINK fz_s FROM fz_v WITH (connector = 'kafka', topic = 't', properties.bootstrap.server = '127.0.0.1:1') FORMAT PLAIN ENCODE JSON",
    "SELECT * FROM weir_catalog.dataflows",
    "SELECT * FROM weir_catalog.source_progress",
    "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace",
    "DISCARD ALL",
    "CREATE USER fz_r WITH PASSWORD 'p''w' NOSUPERUSER",
    "ALTER ROLE fz_r WITH LOGIN PASSWORD NULL",
    "GRANT SELECT, INSERT ON TABLE fz_t, fz_v TO fz_r",
    "REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM fz_r",
    "SELECT rolname, has_table_privilege('fz_r', 'fz_t', 'SELECT') FROM pg_roles",
    "DROP USER IF EXISTS fz_r",
];

/// Words and symbols a mutation inserts.
const VOCABULARY: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    ",",
    ";",
    "'",
    "\"",
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "JOIN",
    "ON",
    "AS",
    "NULL",
    "ARRAY[",
    "CAST(",
    "::",
    "+",
    "-",
    "*",
    "/",
    "||",
    "=",
    "<>",
    "AND",
    "OR",
    "NOT",
    "IN",
    "EXISTS",
    "CASE",
    "WHEN",
    "END",
    "OVER",
    "TUMBLE(",
    "HOP(",
    "SESSION(",
    "INTERVAL",
    "TIMESTAMP",
    "$1",
    "?",
    "\\",
    "--",
    "/*",
    "*/",
    "e'\\x",
    "U&'",
    "$$",
    "@",
    "WITH (",
    "FORMAT",
    "ENCODE",
    "WATERMARK FOR",
    "PRIMARY KEY",
    "EMIT ON WINDOW CLOSE",
    "FOR SYSTEM_TIME AS OF PROCTIME()",
    "DISTINCT",
    "FILTER (WHERE",
    "ORDER BY",
    "LIMIT",
    "-1",
    "1e400",
    "9223372036854775808",
    "'NaN'",
    "1/0",
    "fz_t",
    "fz_v",
    "fz_bid",
    "pg_class",
];

/// One mutation of a corpus statement, chosen and parameterised by `rng`.
fn mutate(rng: &mut Lcg, base: &str) -> String {
    let chars: Vec<char> = base.chars().collect();
    let at = |rng: &mut Lcg| rng.next(chars.len() as u64 + 1) as usize;
    let words: Vec<String> = base.split(' ').map(str::to_string).collect();
    let word = |rng: &mut Lcg| rng.next(words.len() as u64) as usize;
    match rng.next(12) {
        // Truncation at a character.
        0 => chars[..at(rng)].iter().collect(),
        // Two words swapped.
        1 => {
            let mut w = words.clone();
            let (a, b) = (word(rng), word(rng));
            w.swap(a, b);
            w.join(" ")
        }
        // A word dropped, or doubled.
        2 => {
            let mut w = words.clone();
            let i = word(rng);
            if rng.next(2) == 0 {
                w.remove(i);
            } else {
                w.insert(i, words[i].clone());
            }
            w.join(" ")
        }
        // A word or symbol from the vocabulary inserted.
        3 | 4 => {
            let i = at(rng);
            let v = VOCABULARY[rng.next(VOCABULARY.len() as u64) as usize];
            let (head, tail): (String, String) =
                (chars[..i].iter().collect(), chars[i..].iter().collect());
            format!("{head} {v} {tail}")
        }
        // Random characters overwrite a span (any Unicode scalar but NUL).
        5 => {
            let mut c = chars.clone();
            let i = at(rng).min(c.len().saturating_sub(1));
            for k in 0..(1 + rng.next(8) as usize) {
                let code = 1 + rng.next(0x2FFFF) as u32;
                if let (Some(slot), Some(ch)) = (c.get_mut(i + k), char::from_u32(code)) {
                    *slot = ch;
                }
            }
            c.into_iter().collect()
        }
        // A huge literal in place of a word (the megabyte ones are in the test above).
        6 => {
            let mut w = words.clone();
            let i = word(rng);
            w[i] = match rng.next(3) {
                0 => "'x".to_string() + &"y".repeat(100_000) + "'",
                1 => "9".repeat(20_000),
                _ => "\"".to_string() + &"q".repeat(50_000) + "\"",
            };
            w.join(" ")
        }
        // Deep nesting around a word.
        7 => {
            let mut w = words.clone();
            let i = word(rng);
            let depth = [60, 1000, 10_000][rng.next(3) as usize];
            let (open, close) =
                [("(", ")"), ("ARRAY[", "]"), ("f(", ")"), ("-", "")][rng.next(4) as usize];
            w[i] = nest(open, &w[i], close, depth);
            w.join(" ")
        }
        // An unterminated quote or comment.
        8 => {
            let i = at(rng);
            let q = ["'", "\"", "/*", "$$", "E'\\"][rng.next(5) as usize];
            let (head, tail): (String, String) =
                (chars[..i].iter().collect(), chars[i..].iter().collect());
            format!("{head}{q}{tail}")
        }
        // Two statements in one query, the second mutated again.
        9 => format!("{base}; {}", mutate(rng, base)),
        // Case and whitespace scrambled.
        10 => chars
            .iter()
            .map(|c| match rng.next(4) {
                0 => c.to_ascii_lowercase(),
                1 => c.to_ascii_uppercase(),
                _ => *c,
            })
            .collect::<String>()
            .replace(' ', ["\n", "\t", "  ", " "][rng.next(4) as usize]),
        // A mutation of a mutation.
        _ => {
            let once = mutate(rng, base);
            mutate(rng, &once)
        }
    }
}

/// At least 10k mutated statements of every kind over one connection: each gets a result
/// or an ErrorResponse with a SQLSTATE, and `SELECT 1` answers after every batch.
#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_mutated_statements_over_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut weir = WeirProcess::start(dir.path());
    let (client, _) = connect(weir.addr()).await;
    // A statement that would wait (a FETCH without timeout, FLUSH behind a stalled view)
    // ends with 57014 instead.
    client
        .batch_execute("SET statement_timeout = '3s'")
        .await
        .unwrap();
    for sql in CORPUS {
        let _ = outcome(&client, sql).await;
    }
    let seed = std::env::var("WEIR_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_202);
    let count: usize = std::env::var("WEIR_FUZZ_STATEMENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let mut rng = Lcg(seed);
    let (mut ok, mut codes) = (0, std::collections::BTreeMap::<String, usize>::new());
    let mut internal = Vec::new();
    let started = Instant::now();
    for i in 0..count {
        let base = CORPUS[rng.next(CORPUS.len() as u64) as usize];
        let sql = mutate(&mut rng, base);
        let lower = sql.to_ascii_lowercase();
        if lower.contains("statement_timeout") || lower.contains("reset") {
            continue; // the timeout is what bounds this test
        }
        match outcome_with_message(&client, &sql).await {
            Ok(_) => ok += 1,
            Err((code, message)) => {
                if code == "25P02" {
                    let _ = outcome(&client, "ROLLBACK").await;
                }
                if code == "XX000" {
                    let shown: String = sql.chars().take(300).collect();
                    internal.push(format!("{message}\n    from: {shown}"));
                }
                *codes.entry(code).or_default() += 1;
            }
        }
        if i % 100 == 99 {
            // Out of any transaction block a mutation opened.
            let _ = outcome(&client, "ROLLBACK").await;
            answers_select_1(&client).await;
            // Views the mutations created keep dataflows running; keep a few.
            drop_extra_views(&client).await;
        }
    }
    answers_select_1(&client).await;
    assert!(
        weir.child.0.try_wait().unwrap().is_none(),
        "weir is running"
    );
    eprintln!(
        "{count} mutated statements (seed {seed}) in {:?}: {ok} ok, errors by SQLSTATE {codes:?}",
        started.elapsed()
    );
    assert!(ok > count / 50, "some mutations stay valid: {ok}");
    assert!(codes.get("42601").copied().unwrap_or(0) > count / 10);
    internal.truncate(20);
    assert!(
        internal.is_empty(),
        "internal errors (XX000):\n{}",
        internal.join("\n")
    );
}

async fn drop_extra_views(client: &Client) {
    let Ok(messages) = client.simple_query("SHOW MATERIALIZED VIEWS").await else {
        return;
    };
    for m in messages {
        if let SimpleQueryMessage::Row(r) = m
            && let Some(name) = r.get(0)
            && name != "fz_v"
        {
            let sql = format!("DROP MATERIALIZED VIEW IF EXISTS \"{name}\" CASCADE");
            let _ = client.simple_query(&sql).await;
        }
    }
}

/// Sends `bytes` on a fresh connection and reads until the server closes it (or 5 s).
fn raw_exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

/// A startup packet for user weir (protocol 3.0).
fn startup() -> Vec<u8> {
    let body = b"\x00\x03\x00\x00user\x00weir\x00database\x00weir\x00\x00";
    let mut p = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    p.extend_from_slice(body);
    p
}

/// Random bytes, truncated messages and oversized lengths on the Postgres port, at
/// startup and mid-session: the connection ends, the server lives.
#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_the_postgres_port_closes_only_that_connection() {
    let server = TestServer::start().await;
    let port = server.addr().port();
    let mut rng = Lcg(7);
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0xff; 8],
        // Oversized lengths: a startup packet and a query claiming a gigabyte.
        [0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0].to_vec(),
        [startup(), b"Q\x3f\xff\xff\xffSELECT".to_vec()].concat(),
        // Truncated: half a startup packet; a query cut mid-message.
        startup()[..10].to_vec(),
        [startup(), b"Q\x00\x00\x00\x20SELE".to_vec()].concat(),
        // An SSL request, then garbage in place of a handshake.
        [
            &[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f][..],
            &[0x16, 3, 1, 0, 5, 1, 2],
        ]
        .concat(),
        // Unknown message types, a negative length, a bind to nothing.
        [startup(), b"x\x00\x00\x00\x04".to_vec()].concat(),
        [startup(), b"Q\xff\xff\xff\xf0".to_vec()].concat(),
        [startup(), b"B\x00\x00\x00\x0cnope\x00\x00\x00".to_vec()].concat(),
    ];
    for _ in 0..40 {
        let n = rng.next(300) as usize;
        let random: Vec<u8> = (0..n).map(|_| rng.next(256) as u8).collect();
        cases.push(random.clone());
        cases.push([startup(), random].concat());
    }
    for bytes in &cases {
        raw_exchange(port, bytes);
        let client = server.client().await;
        answers_select_1(&client).await;
    }
}

/// A session's statement_timeout stops a long query (57014) and the session goes on;
/// SIGTERM during a long statement still exits 0 within 10 s.
#[tokio::test(flavor = "multi_thread")]
async fn timeouts_and_sigterm_stop_long_statements() {
    let dir = tempfile::tempdir().unwrap();
    let weir = WeirProcess::start(dir.path());
    let (client, _) = connect(weir.addr()).await;
    client
        .batch_execute(
            "CREATE SOURCE big WITH (connector = 'nexmark', nexmark.table.type = 'Bid', nexmark.event.num = '2000000000');
             SET statement_timeout = '500ms'",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let e = client
        .simple_query("SELECT count(*) FROM big")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014");
    let message = e.as_db_error().unwrap().message();
    assert!(message.contains("statement timeout"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));
    answers_select_1(&client).await;
    let rows = client.simple_query("SHOW statement_timeout").await.unwrap();
    assert!(
        matches!(&rows[1], SimpleQueryMessage::Row(r) if r.get(0) == Some("500ms")),
        "{rows:?}"
    );
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .unwrap();
    // A statement that runs for minutes, then SIGTERM.
    let long = tokio::spawn(async move { client.simple_query("SELECT count(*) FROM big").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, took) = weir.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(long.await.unwrap().is_err(), "the statement was cut off");
}

/// A group's expected (count, sum of x) in the view.
type Groups = std::collections::BTreeMap<String, (i64, i64)>;

/// 10k+ Kafka messages, about half of them mutated: each valid one is added to `groups`
/// (the oracle); returns the messages and how many are malformed.
fn mutated_messages(
    rng: &mut Lcg,
    n: usize,
    groups: &mut Groups,
) -> (Vec<crate::harness::KafkaMessage>, u64) {
    let mut out = Vec::with_capacity(n);
    let mut malformed = 0;
    for i in 0..n {
        let partition = (i % 4) as i32;
        let g = format!("g{}", rng.next(20));
        let x = rng.next(1000) as i64;
        let plain = format!(r#"{{"id": {i}, "g": "{g}", "x": {x}}}"#);
        let (payload, valid): (Vec<u8>, Option<(String, Option<i64>)>) = match rng.next(20) {
            0..=6 => (plain.into_bytes(), Some((g, Some(x)))),
            // Valid spellings: numeric strings, a duplicate key (its last value counts), a
            // missing column (NULL), unknown fields (a long string, shallow nesting), Unicode.
            7 => (
                format!(r#"{{"id": "{i}", "g": "{g}", "x": "{x}"}}"#).into_bytes(),
                Some((g, Some(x))),
            ),
            8 => (
                format!(r#"{{"id": {i}, "g": "nope", "x": -1, "g": "{g}", "x": {x}}}"#)
                    .into_bytes(),
                Some((g, Some(x))),
            ),
            9 => (
                format!(r#"{{"id": {i}, "g": "{g}"}}"#).into_bytes(),
                Some((g, None)),
            ),
            10 => {
                let unknown = if i % 200 == 10 {
                    format!("\"{}\"", "z".repeat(900_000))
                } else {
                    nest("{\"a\": [", "1", "]}", 60)
                };
                let payload = format!(r#"{{"id": {i}, "extra": {unknown}, "g": "{g}", "x": {x}}}"#);
                (payload.into_bytes(), Some((g, Some(x))))
            }
            11 => {
                let g = format!("{g}-é✓𝄞");
                let payload = format!(r#"{{"id": {i}, "g": "{g}", "x": {x}}}"#);
                (payload.into_bytes(), Some((g, Some(x))))
            }
            // Malformed: random bytes, invalid UTF-8, deep nesting, wrong types, integers
            // out of range, truncation, not one object.
            12 => {
                let len = 1 + rng.next(200) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| rng.next(256) as u8).collect();
                bytes[0] |= 0x80; // never the start of valid UTF-8 or JSON
                (bytes, None)
            }
            13 => {
                let mut bytes = format!(r#"{{"id": {i}, "g": "@@", "x": {x}}}"#).into_bytes();
                let at = bytes.iter().position(|&b| b == b'@').unwrap();
                bytes[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
                (bytes, None)
            }
            14 => (
                format!(
                    r#"{{"id": {i}, "g": "{g}", "x": {}}}"#,
                    nest("[", "1", "]", 10_000)
                )
                .into_bytes(),
                None,
            ),
            15 => (
                format!(
                    r#"{{"id": {i}, "u": {}, "g": "{g}"}}"#,
                    nest("{\"a\":", "1", "}", 200)
                )
                .into_bytes(),
                None,
            ),
            16 => {
                let wrong = [
                    r#""g": 5"#,
                    r#""x": "abc""#,
                    r#""x": {"a": 1}"#,
                    r#""x": 99999999999999999999"#,
                ][rng.next(4) as usize];
                (format!(r#"{{"id": {i}, {wrong}}}"#).into_bytes(), None)
            }
            17 => {
                let cut = 1 + rng.next(plain.len() as u64 - 2) as usize;
                (plain.as_bytes()[..cut].to_vec(), None)
            }
            18 => {
                let other = ["[1, 2]", "\"text\"", "null", "", "42", "  "][rng.next(6) as usize];
                (other.as_bytes().to_vec(), None)
            }
            _ => (format!("{plain}{plain}").into_bytes(), None),
        };
        match valid {
            Some((g, x)) => {
                let e = groups.entry(g).or_default();
                e.0 += 1;
                e.1 += x.unwrap_or(0);
            }
            None => malformed += 1,
        }
        out.push((partition, None, payload));
    }
    (out, malformed)
}

/// At least 10k mutated Kafka messages into a source feeding a view: the view equals its
/// oracle over the valid messages, `parse_errors` counts the rest, the server stays up.
#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_mutated_kafka_messages_into_a_view() {
    let broker = crate::harness::Broker::start();
    broker.create_topic("fuzz", 4);
    let mut groups = Groups::new();
    let (messages, malformed) = mutated_messages(&mut Lcg(99), 10_000, &mut groups);
    broker.produce("fuzz", &messages);
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE fuzz (id BIGINT, g VARCHAR, x BIGINT)
               WITH (connector = 'kafka', topic = 'fuzz', properties.bootstrap.server = '{}',
                     scan.startup.mode = 'earliest') FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW fuzz_groups AS
               SELECT g, count(*) AS n, sum(x) AS s FROM fuzz GROUP BY g",
            broker.bootstrap()
        ))
        .await
        .unwrap();
    let mut expected: Vec<String> = groups
        .iter()
        .map(|(g, (n, s))| format!("{g}|{n}|{s}"))
        .collect();
    expected.sort();
    let started = Instant::now();
    loop {
        client.batch_execute("FLUSH").await.unwrap();
        let progress = crate::harness::sorted_rows(
            &client,
            "SELECT sum(next_offset), sum(parse_errors) FROM weir_catalog.source_progress",
        )
        .await;
        let view =
            crate::harness::sorted_rows(&client, "SELECT g, n, coalesce(s, 0) FROM fuzz_groups")
                .await;
        if progress == vec![format!("{}|{malformed}", messages.len())] && view == expected {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "progress {progress:?} (want {} offsets, {malformed} errors); view {view:?}, want {expected:?}",
            messages.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(malformed > 3000 && (messages.len() as u64 - malformed) > 5000);
    answers_select_1(&client).await;
}

/// `--max-connections` refuses sessions past the limit with 53300 (until one closes);
/// the catalog, table logs and checkpoints are readable by the server's user only.
#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_limit_are_refused_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let weir = WeirProcess::start_with(dir.path(), &["--max-connections", "3"]);
    let conn_str = format!("host=127.0.0.1 port={} user=weir dbname=weir", weir.port);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect(weir.addr()).await.0);
    }
    let refused = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
        .await
        .err()
        .expect("a fourth session is refused");
    assert_eq!(sqlstate(&refused), "53300", "{refused}");
    let client = open.pop().unwrap();
    client
        .batch_execute(
            "CREATE TABLE t (id INT PRIMARY KEY, secret VARCHAR);
             INSERT INTO t VALUES (1, 'x');
             CREATE MATERIALIZED VIEW v AS SELECT count(*) AS n FROM t;
             CHECKPOINT",
        )
        .await
        .unwrap();
    drop(client);
    let started = Instant::now();
    let again = loop {
        match tokio_postgres::connect(&conn_str, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                break client;
            }
            Err(_) if started.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("a closed session frees its slot: {e}"),
        }
    };
    answers_select_1(&again).await;
    let mut files = vec![
        dir.path().join("catalog.json"),
        dir.path().join("tables/t.wal"),
    ];
    let mut dirs = vec![dir.path().join("checkpoints")];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 4, "{files:?}");
    for f in files {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
}
