//! The web console in headless Chromium (Debian's `chromium`), driven over the DevTools
//! protocol: it lists the views, draws one's dataflow, and its live table follows INSERTs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{ChildGuard, TestServer, http_get};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium and the DevTools connection to its one page.
struct Browser {
    _child: ChildGuard,
    _profile: tempfile::TempDir,
    page: Socket,
    next_id: u64,
}

impl Browser {
    async fn launch() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium must be installed (scripts/test.sh installs it)");
        let child = ChildGuard(child);
        // Chromium writes the port it picked into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port: u16 = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next()?.parse().ok())
            {
                break p;
            }
            assert!(Instant::now() < deadline, "chromium did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let devtools = SocketAddr::from(([127, 0, 0, 1], port));
        let targets: Vec<Value> = loop {
            let list: Vec<Value> =
                serde_json::from_str(&http_get(devtools, "/json/list")).unwrap_or_default();
            if list.iter().any(|t| t["type"] == "page") {
                break list;
            }
            assert!(Instant::now() < deadline, "chromium has no page");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let url = targets
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap()
            .to_string();
        let (page, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self {
            _child: child,
            _profile: profile,
            page,
            next_id: 0,
        }
    }

    /// Sends a DevTools command and waits for its answer (events in between are dropped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params});
        self.page
            .send(Message::Text(request.to_string().into()))
            .await
            .unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.page.next())
                .await
                .expect("DevTools answered")
                .unwrap()
                .unwrap();
            let Message::Text(text) = msg else { continue };
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] == id {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// Evaluates `expression` in the page; its value as JSON.
    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expression}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `expression` is true in the page; how long that took.
    async fn wait_for(&mut self, expression: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.eval(expression).await == json!(true) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "still false after {timeout:?}: {expression}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Where the screenshot is kept: the cargo target's tmp dir (and `WEIR_SCREENSHOT` when set).
fn screenshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console.png")
}

#[tokio::test(flavor = "multi_thread")]
async fn console_lists_views_draws_dataflow_and_follows_inserts() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE trades (id INT PRIMARY KEY, symbol VARCHAR, at TIMESTAMP, qty BIGINT);
             INSERT INTO trades VALUES (1, 'ACME', '2026-12-03 10:00:00', 5),
               (2, 'ACME', '2026-12-03 10:00:01', 7), (3, 'INIT', '2026-12-03 10:00:01', 2),
               (4, 'ACME', '2026-12-03 10:00:03', 1);
             SET streaming_parallelism TO 2;
             CREATE MATERIALIZED VIEW volume_per_second AS
               SELECT date_trunc('second', at) AS second, sum(qty) AS qty FROM trades GROUP BY 1;
             CREATE MATERIALIZED VIEW by_symbol AS
               SELECT symbol, count(*) AS trades, sum(qty) AS qty FROM trades GROUP BY symbol;
             FLUSH",
        )
        .await
        .unwrap();
    let http = server.http_addr();
    let mut browser = Browser::launch().await;
    browser.call("Page.enable", json!({})).await;
    browser
        .call("Page.navigate", json!({"url": format!("http://{http}/")}))
        .await;

    // Every view is listed.
    let views: Vec<String> = client
        .query("SHOW MATERIALIZED VIEWS", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(views.len(), 2);
    let listed = "[...document.querySelectorAll('#views .relation')].map(e => e.dataset.name).sort().join(',')";
    browser
        .wait_for(
            &format!("{listed} === {}", json!(views.join(","))),
            Duration::from_secs(20),
        )
        .await;

    // Open one: its graph has every operator of its dataflow.
    browser
        .eval("document.querySelector('#views .relation[data-name=\"by_symbol\"]').click(); true")
        .await;
    let graph: Value =
        serde_json::from_str(&http_get(http, "/api/v1/dataflows/by_symbol")).unwrap();
    let operators = graph["operators"].as_array().unwrap().len();
    assert!(operators >= 3, "{graph}");
    browser
        .wait_for(
            &format!("document.querySelectorAll('#graph g.operator').length === {operators}"),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        browser
            .eval("[...document.querySelectorAll('#graph g.operator')].some(g => g.dataset.operator === 'Materialize')")
            .await,
        json!(true)
    );
    assert_eq!(
        browser
            .eval("document.querySelector('#create-sql').textContent.includes('GROUP BY symbol')")
            .await,
        json!(true)
    );

    // The live table holds the view's rows, and follows an INSERT.
    let cells = "[...document.querySelectorAll('#live tr')].slice(1).map(r => [...r.cells].map(c => c.textContent).join('|')).join(';')";
    browser
        .wait_for(
            &format!("{cells} === 'ACME|3|13;INIT|1|2'"),
            Duration::from_secs(20),
        )
        .await;
    client
        .batch_execute("INSERT INTO trades VALUES (5, 'ZED', '2026-12-03 10:00:04', 9)")
        .await
        .unwrap();
    let took = browser
        .wait_for(
            &format!("{cells} === 'ACME|3|13;INIT|1|2;ZED|1|9'"),
            Duration::from_secs(2),
        )
        .await;
    eprintln!("the live table changed {took:?} after the INSERT returned");

    // The time-series view gets a chart.
    browser
        .eval("document.querySelector('#views .relation[data-name=\"volume_per_second\"]').click(); true")
        .await;
    browser
        .wait_for(
            "!document.querySelector('#chart-box').hidden && document.querySelectorAll('#chart polyline').length === 1",
            Duration::from_secs(20),
        )
        .await;
    browser
        .eval("document.querySelector('#views .relation[data-name=\"by_symbol\"]').click(); true")
        .await;
    browser
        .wait_for(
            &format!("{cells} === 'ACME|3|13;INIT|1|2;ZED|1|9' && document.querySelector('#chart-box').hidden"),
            Duration::from_secs(20),
        )
        .await;
    let shot = browser
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = screenshot_path();
    std::fs::write(&path, &png).unwrap();
    if let Ok(copy) = std::env::var("WEIR_SCREENSHOT") {
        std::fs::write(copy, &png).unwrap();
    }
    eprintln!("screenshot: {}", path.display());
}
