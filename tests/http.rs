//! The HTTP endpoint: Prometheus metrics scraped during Kafka ingestion, the JSON query
//! API, and SUBSCRIBE over Server-Sent Events compared with psql's COPY (SUBSCRIBE).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clients::psql_command;
use crate::harness::{Broker, KafkaMessage, TestServer, http_get, http_request};

/// The samples of one metric: labels (as `k="v",...`) -> value.
fn samples(metrics: &str, name: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => {
                    let (labels, value) = r.split_once("} ")?;
                    (labels.to_string(), value)
                }
                None => (String::new(), rest.strip_prefix(' ')?),
            };
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

fn total(metrics: &str, name: &str) -> f64 {
    samples(metrics, name).values().sum()
}

/// Bids on 2 partitions with event times `start_s` seconds from now on, one a millisecond.
fn bids(n: usize, start_s: i64, from_id: usize) -> Vec<KafkaMessage> {
    let start = chrono::Utc::now().naive_utc() + chrono::Duration::seconds(start_s);
    (0..n)
        .map(|i| {
            let at = start + chrono::Duration::milliseconds(i as i64);
            let payload = format!(
                r#"{{"id": {}, "price": {}, "at": "{}"}}"#,
                from_id + i,
                i % 100,
                at.format("%Y-%m-%dT%H:%M:%S%.3f")
            );
            ((i % 2) as i32, None, payload.into_bytes())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_kafka_ingestion() {
    let broker = Broker::start();
    broker.create_topic("bids", 2);
    let first = 20_000;
    // Two hours ago: the watermark delay starts near 7200 s.
    broker.produce("bids", &bids(first, -7200, 0));
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE bids (id BIGINT, price BIGINT, at TIMESTAMP,
               WATERMARK FOR at AS at - INTERVAL '1' SECOND)
             WITH (connector = 'kafka', topic = 'bids', properties.bootstrap.server = '{}',
                   scan.startup.mode = 'earliest') FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW per_price AS SELECT price, count(*) AS n FROM bids GROUP BY price;",
            broker.bootstrap()
        ))
        .await
        .unwrap();
    let http = server.http_addr();
    // Everything was produced before the source existed: lag only falls, to 0.
    let caught_up = |want: usize| {
        let mut lags = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = http_get(http, "/metrics");
            let lag = total(&m, "weir_source_lag_messages");
            lags.push(lag);
            if lag == 0.0 && total(&m, "weir_source_rows_total") == want as f64 {
                return (m, lags);
            }
            assert!(Instant::now() < deadline, "not caught up: {lags:?}\n{m}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (m, lags) = tokio::task::block_in_place(|| caught_up(first));
    assert!(lags.windows(2).all(|w| w[1] <= w[0]), "lag rose: {lags:?}");
    let delay_before = total(&m, "weir_source_watermark_delay_seconds");
    assert_eq!(samples(&m, "weir_source_watermark_delay_seconds").len(), 2);
    assert!((7000.0..7400.0).contains(&(delay_before / 2.0)), "{m}");

    // An hour later in event time: the watermark delay falls by about 3600 s.
    let second = 10_000;
    broker.produce("bids", &bids(second, -3600, first));
    let (mut m, _) = tokio::task::block_in_place(|| caught_up(first + second));
    // A partition's watermark moves at the barrier after its rows: wait for both.
    let deadline = Instant::now() + Duration::from_secs(20);
    let delay_after = loop {
        let delay = total(&m, "weir_source_watermark_delay_seconds") / 2.0;
        if (3400.0..3800.0).contains(&delay) || Instant::now() > deadline {
            break delay;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        m = tokio::task::block_in_place(|| http_get(http, "/metrics"));
    };
    assert!(
        (3400.0..3800.0).contains(&delay_after),
        "delay went from {delay_before} to {delay_after}"
    );

    // Rows and lag per partition are source_progress's.
    let rows = samples(&m, "weir_source_rows_total");
    for r in client
        .query(
            "SELECT partition, rows, lag FROM weir_catalog.source_progress WHERE source_name = 'bids'",
            &[],
        )
        .await
        .unwrap()
    {
        let labels = format!(r#"source="bids",partition="{}""#, r.get::<_, i32>(0));
        assert_eq!(rows[&labels], r.get::<_, i64>(1) as f64, "{labels}");
        assert_eq!(r.get::<_, i64>(2), 0);
    }
    client.batch_execute("FLUSH").await.unwrap();
    let m = http_get(http, "/metrics");
    let view = r#"view="per_price""#;
    assert_eq!(
        samples(&m, "weir_view_input_rows_total")[view],
        (first + second) as f64
    );
    assert_eq!(samples(&m, "weir_view_rows")[view], 100.0);
    assert_eq!(samples(&m, "weir_view_backfill_remaining_rows")[view], 0.0);
    assert!(samples(&m, "weir_view_state_bytes")[view] > 0.0);
    let commits = samples(&m, "weir_view_commit_latency_seconds_count")[view];
    let le_inf = format!(r#"le="+Inf",{view}"#);
    assert_eq!(
        samples(&m, "weir_view_commit_latency_seconds_bucket")[&le_inf],
        commits
    );
    assert!(commits > 0.0);
    assert!(
        m.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
}

/// What a Server-Sent Events stream sent: (event, data) in order.
struct SseClient {
    events: Arc<Mutex<Vec<(String, String)>>>,
}

impl SseClient {
    fn open(addr: SocketAddr, path: &str) -> Self {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.0\r\nhost: x\r\naccept: text/event-stream\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let out = Arc::clone(&events);
        std::thread::spawn(move || {
            let mut lines = BufReader::new(s).lines();
            // The response head ends at the first blank line.
            for line in lines.by_ref() {
                if line.unwrap().is_empty() {
                    break;
                }
            }
            let (mut event, mut data) = (String::new(), String::new());
            for line in lines {
                let Ok(line) = line else { break };
                if let Some(e) = line.strip_prefix("event: ") {
                    event = e.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                } else if line.is_empty() && !event.is_empty() {
                    out.lock()
                        .unwrap()
                        .push((std::mem::take(&mut event), std::mem::take(&mut data)));
                }
            }
        });
        Self { events }
    }

    /// Every change row so far as psql's COPY text prints it (tab-separated, \N for NULL).
    fn rows(&self) -> Vec<String> {
        let events = self.events.lock().unwrap();
        let Some((_, columns)) = events.iter().find(|(e, _)| e == "columns") else {
            return Vec::new();
        };
        let names: Vec<String> = serde_json::from_str::<Vec<Value>>(columns)
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        let mut out = Vec::new();
        for (_, data) in events.iter().filter(|(e, _)| e == "changes") {
            for row in serde_json::from_str::<Vec<Value>>(data).unwrap() {
                let fields: Vec<String> = names
                    .iter()
                    .map(|n| match &row[n] {
                        Value::Null => "\\N".to_string(),
                        Value::String(s) => s.clone(),
                        v => v.to_string(),
                    })
                    .collect();
                out.push(fields.join("\t"));
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_changes_equal_psql_subscribe() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR, amount BIGINT);
             INSERT INTO orders VALUES (1, 'ann', 10), (2, 'bob', 20), (3, 'ann', 5);
             CREATE MATERIALIZED VIEW spend AS
               SELECT customer, sum(amount) AS total, count(*) AS orders FROM orders GROUP BY customer;
             FLUSH",
        )
        .await
        .unwrap();
    let sse = SseClient::open(server.http_addr(), "/api/v1/subscribe/spend");
    let base = psql_command(&server);
    let mut psql = std::process::Command::new("stdbuf")
        .arg("-oL")
        .arg(base.get_program())
        .args(base.get_args())
        .args(["-c", "COPY (SUBSCRIBE TO spend) TO STDOUT"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql must be installed");
    let stdout = psql.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let into = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    });
    // Both start from the same snapshot: wait for it on both before changing anything.
    let both_have = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (a, b) = (sse.rows().len(), lines.lock().unwrap().len());
            if a >= n && b >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sse {a} rows, psql {b}, want {n}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    tokio::task::block_in_place(|| both_have(2));
    for statement in [
        "INSERT INTO orders VALUES (4, 'cy', 7)",
        "UPDATE orders SET amount = amount + 1 WHERE customer = 'ann'",
        "DELETE FROM orders WHERE id = 2",
        "INSERT INTO orders VALUES (5, NULL, 1), (6, 'bob', 3)",
    ] {
        client.batch_execute(statement).await.unwrap();
        client.batch_execute("FLUSH").await.unwrap();
    }
    // 2 snapshot rows, +1 (cy), -1 +1 (ann), -1 (bob), +1 (NULL) +1 (bob).
    tokio::task::block_in_place(|| both_have(8));
    std::thread::sleep(Duration::from_millis(300));
    let from_psql = lines.lock().unwrap().clone();
    let from_sse = sse.rows();
    psql.kill().unwrap();
    psql.wait().unwrap();
    assert_eq!(from_sse, from_psql);
    assert!(
        from_sse.iter().any(|l| l.ends_with("\t-1\tbob\t20\t1")),
        "{from_sse:?}"
    );
    assert!(
        from_sse.iter().any(|l| l.contains("\t1\t\\N\t1\t1")),
        "{from_sse:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn query_api_answers_json_and_errors_with_sqlstate() {
    let server = TestServer::start().await;
    let http = server.http_addr();
    let json = ["content-type: application/json"];
    let (status, body) = http_request(
        http,
        "POST",
        "/api/v1/query",
        &json,
        r#"{"sql": "CREATE TABLE t (k INT PRIMARY KEY, v VARCHAR); INSERT INTO t VALUES (1, 'a'), (2, NULL); SELECT k, v, k AS k FROM t ORDER BY k"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let results: Value = serde_json::from_str(&body).unwrap();
    let results = results["results"].as_array().unwrap();
    assert_eq!(results[1]["rows_affected"], 2);
    let select = &results[2];
    let names: Vec<&str> = select["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["k", "v", "k"]);
    assert_eq!(select["columns"][0]["type"], "integer");
    assert_eq!(
        select["rows"],
        serde_json::json!([[1, "a", 1], [2, null, 2]])
    );
    // Plain text works too; errors carry their SQLSTATE and a status to match.
    let (status, body) = http_request(http, "POST", "/api/v1/query", &[], "SELECT * FROM missing");
    assert_eq!(status, 404, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["sqlstate"], "42P01");
    let (status, body) = http_request(http, "POST", "/api/v1/query", &[], "SELEC 1");
    assert_eq!(status, 400, "{body}");
    // The server is still there.
    let (status, _) = http_request(http, "POST", "/api/v1/query", &[], "SELECT 1");
    assert_eq!(status, 200);
}
