//! SUBSCRIBE: `COPY (SUBSCRIBE ...) TO STDOUT` through tokio-postgres' copy-out and through
//! psql printing live, and SUBSCRIBE cursors with FETCH ... WITH (timeout).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;

use crate::clients::psql_command;
use crate::harness::{TestServer, sorted_rows, sqlstate};

/// COPY text lines as (weir_ts, weir_diff, rest of the columns).
fn parse(lines: &str) -> Vec<(i64, i64, String)> {
    lines
        .lines()
        .map(|l| {
            let mut parts = l.splitn(3, '\t');
            let ts = parts.next().unwrap().parse().unwrap();
            let diff = parts.next().unwrap().parse().unwrap();
            (ts, diff, parts.next().unwrap_or("").to_string())
        })
        .collect()
}

/// Reads copy-out chunks until `text` holds `n` lines.
async fn read_rows<S, E>(stream: &mut S, n: usize, text: &mut String)
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Debug,
{
    while text.lines().count() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a commit within 10 s")
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_subscribe_streams_snapshot_then_each_commit() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE acct (id INT PRIMARY KEY, owner VARCHAR, balance BIGINT);
             INSERT INTO acct VALUES (1, 'ann', 10), (2, 'bob', 20);
             CREATE MATERIALIZED VIEW rich AS SELECT owner, balance FROM acct WHERE balance >= 10;",
        )
        .await
        .unwrap();
    let watcher = server.client().await;
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        watcher.copy_out("COPY (SUBSCRIBE TO rich) TO STDOUT"),
    )
    .await
    .expect("COPY starts")
    .unwrap();
    let mut stream = Box::pin(stream);
    let mut text = String::new();
    read_rows(&mut stream, 2, &mut text).await;
    let mut snapshot: Vec<_> = parse(&text).into_iter().map(|(_, d, r)| (d, r)).collect();
    snapshot.sort();
    assert_eq!(snapshot, vec![(1, "ann\t10".into()), (1, "bob\t20".into())]);
    // An UPDATE arrives as one commit: the retraction and the insert share weir_ts.
    client
        .batch_execute("UPDATE acct SET balance = 30 WHERE id = 1")
        .await
        .unwrap();
    read_rows(&mut stream, 4, &mut text).await;
    let update = parse(&text).split_off(2);
    assert_eq!(update[0].0, update[1].0, "one commit, one weir_ts");
    assert_eq!(
        update
            .iter()
            .map(|(_, d, r)| (*d, r.clone()))
            .collect::<Vec<_>>(),
        vec![(-1, "ann\t10".into()), (1, "ann\t30".into())]
    );
    // A row leaving the filter is a lone retraction; NULLs come as \N.
    client
        .batch_execute(
            "UPDATE acct SET balance = 5 WHERE id = 2; INSERT INTO acct VALUES (3, NULL, 99)",
        )
        .await
        .unwrap();
    read_rows(&mut stream, 6, &mut text).await;
    let mut last: Vec<_> = parse(&text)
        .split_off(4)
        .into_iter()
        .map(|(_, d, r)| (d, r))
        .collect();
    last.sort();
    assert_eq!(last, vec![(-1, "bob\t20".into()), (1, "\\N\t99".into())]);
    // A subscription to a query runs its own dataflow (with the session's parallelism) and
    // skips the snapshot on request.
    let other = server.client().await;
    other
        .batch_execute("SET streaming_parallelism TO 3")
        .await
        .unwrap();
    let q = other
        .copy_out(
            "COPY (SUBSCRIBE (SELECT count(*) AS n FROM acct) WITH (snapshot = false)) TO STDOUT",
        )
        .await
        .unwrap();
    let mut q = Box::pin(q);
    client
        .batch_execute("DELETE FROM acct WHERE id = 3")
        .await
        .unwrap();
    let chunk = tokio::time::timeout(Duration::from_secs(10), q.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let rows: Vec<_> = parse(std::str::from_utf8(&chunk).unwrap())
        .into_iter()
        .map(|(_, d, r)| (d, r))
        .collect();
    assert_eq!(rows.first(), Some(&(-1, "3".to_string())), "{rows:?}");
    // SUBSCRIBE to something that is not a view says so (on a connection not busy copying).
    let err = client
        .simple_query("COPY (SUBSCRIBE TO acct) TO STDOUT")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42809");
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_prints_subscribed_changes_as_they_happen() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE events (id INT PRIMARY KEY, kind VARCHAR);
             CREATE MATERIALIZED VIEW kinds AS SELECT kind, count(*) AS n FROM events GROUP BY kind;",
        )
        .await
        .unwrap();
    // psql writes COPY data through stdio, block-buffered into a pipe: line-buffer it.
    let base = psql_command(&server);
    let mut psql = std::process::Command::new("stdbuf")
        .arg("-oL")
        .arg(base.get_program())
        .args(base.get_args())
        .args(["-c", "COPY (SUBSCRIBE TO kinds) TO STDOUT"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql must be installed");
    let stdout = psql.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // Wait until psql is subscribed (the view is listed among subscribers' sources).
    tokio::time::sleep(Duration::from_millis(500)).await;
    client
        .batch_execute("INSERT INTO events VALUES (1, 'click')")
        .await
        .unwrap();
    let line = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("psql printed the insert")
        .unwrap();
    assert_eq!(
        parse(&line),
        vec![(parse(&line)[0].0, 1, "click\t1".into())]
    );
    client
        .batch_execute("INSERT INTO events VALUES (2, 'click')")
        .await
        .unwrap();
    let mut lines = Vec::new();
    for _ in 0..2 {
        lines.push(
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let changes: Vec<_> = parse(&lines.join("\n"))
        .into_iter()
        .map(|(_, d, r)| (d, r))
        .collect();
    assert_eq!(
        changes,
        vec![(-1, "click\t1".into()), (1, "click\t2".into())]
    );
    psql.kill().unwrap();
    psql.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_cursor_fetches_with_timeout() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE t (k INT PRIMARY KEY, v INT);
             INSERT INTO t VALUES (1, 1), (2, 2), (3, 3);
             CREATE MATERIALIZED VIEW mv AS SELECT k, v FROM t;",
        )
        .await
        .unwrap();
    let err = client
        .simple_query("DECLARE c CURSOR FOR SUBSCRIBE TO mv")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "25P01", "outside a transaction");
    client
        .batch_execute("BEGIN; DECLARE c CURSOR FOR SUBSCRIBE TO mv")
        .await
        .unwrap();
    // Two of the three snapshot rows, then the third.
    assert_eq!(
        sorted_rows(&client, "FETCH 2 c WITH (timeout = '1s')")
            .await
            .len(),
        2
    );
    let rest = sorted_rows(&client, "FETCH 10 c WITH (timeout = '1s')").await;
    assert_eq!(rest.len(), 1);
    // Nothing new: the timeout ends the FETCH with no rows.
    let started = std::time::Instant::now();
    assert!(
        sorted_rows(&client, "FETCH 10 c WITH (timeout = '200ms')")
            .await
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    let writer = server.client().await;
    writer
        .batch_execute("DELETE FROM t WHERE k = 2")
        .await
        .unwrap();
    let rows = sorted_rows(&client, "FETCH ALL c WITH (timeout = '10s')").await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].ends_with("|-1|2|2"), "{rows:?}");
    client.batch_execute("COMMIT").await.unwrap();
    let err = client.simple_query("FETCH 1 c").await.unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "34000",
        "cursors close with their transaction"
    );
}

/// A subscriber that stops reading is cut off once its queue passes a bound (here the
/// bytes one: few, wide rows), with an error that names it; the server and the view go on.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_subscriber_is_cut_off_at_the_byte_bound() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE t (id BIGINT PRIMARY KEY, s TEXT);
             CREATE MATERIALIZED VIEW wide AS SELECT id, s FROM t;
             BEGIN; DECLARE c CURSOR FOR SUBSCRIBE TO wide",
        )
        .await
        .unwrap();
    // 40 commits of 8 rows of 1 MB: 320 MiB queued, over the 256 MiB bound, far under the
    // bounds in rows and commits.
    let writer = server.client().await;
    for commit in 0..40 {
        writer
            .batch_execute(&format!(
                "INSERT INTO t SELECT value, repeat('x', 1000000) FROM generate_series({}, {}); FLUSH",
                commit * 8,
                commit * 8 + 7
            ))
            .await
            .unwrap();
    }
    let e = client.simple_query("FETCH ALL c").await.unwrap_err();
    assert_eq!(sqlstate(&e), "53000", "{e:?}");
    let message = e.as_db_error().unwrap().message().to_string();
    assert!(message.contains("MiB queued, over 256 MiB"), "{message}");
    client.batch_execute("ROLLBACK").await.unwrap();
    let n: i64 = writer
        .query_one("SELECT count(*) FROM wide", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 320);
}
