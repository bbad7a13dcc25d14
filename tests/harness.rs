//! Test fixtures: servers on free loopback ports, clients that collect notices, a Tansu broker.
//! Everything binds 127.0.0.1 and cleans up on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use weir_server::{Config, Server, ServerHandle};

/// A small deterministic generator (no external crate, same sequence everywhere).
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    /// The next value in `0..n`.
    pub(crate) fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// A weir server running inside the test process, with its own data dir.
pub(crate) struct TestServer {
    pub(crate) handle: Option<ServerHandle>,
    pub(crate) dir: tempfile::TempDir,
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        Self::start_with_checkpoints(Duration::from_secs(10)).await
    }

    /// A server checkpointing every `interval` (zero: only at shutdown).
    pub(crate) async fn start_with_checkpoints(interval: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let handle = start_in(dir.path(), interval).await;
        Self {
            handle: Some(handle),
            dir,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.handle.as_ref().unwrap().pg_addr
    }

    /// The HTTP endpoint (metrics, console, JSON API).
    pub(crate) fn http_addr(&self) -> SocketAddr {
        self.handle.as_ref().unwrap().http_addr.unwrap()
    }

    pub(crate) async fn client(&self) -> Client {
        connect(self.addr()).await.0
    }

    /// Stops the server and starts a new one over the same data dir.
    pub(crate) async fn restart(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
        self.handle = Some(start_in(self.dir.path(), Duration::from_secs(10)).await);
    }
}

async fn start_in(dir: &Path, checkpoint_interval: Duration) -> ServerHandle {
    Server::start(Config {
        pg_listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: Some(dir.to_path_buf()),
        checkpoint_interval,
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    })
    .await
    .unwrap()
}

/// Connects with tokio-postgres; notices arrive on the returned channel.
pub(crate) async fn connect(
    addr: SocketAddr,
) -> (
    Client,
    mpsc::UnboundedReceiver<tokio_postgres::error::DbError>,
) {
    let conn_str = format!(
        "host={} port={} user=weir dbname=weir",
        addr.ip(),
        addr.port()
    );
    let (client, mut connection) = tokio_postgres::connect(&conn_str, NoTls).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(msg)) = messages.next().await {
            if let AsyncMessage::Notice(n) = msg {
                let _ = tx.send(n);
            }
        }
    });
    (client, rx)
}

/// An HTTP/1.1 request on a connection of its own: the status and the body (read up to
/// its content-length, or to the end). `headers` are whole lines without the CRLF.
pub(crate) fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = TcpStream::connect(addr).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    // Sent in pieces on purpose: the endpoint must read the whole request.
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        assert!(
            !lower.starts_with("transfer-encoding"),
            "a chunked answer to {path}"
        );
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        }
    }
    let mut answer = Vec::new();
    match length {
        Some(n) => {
            answer.resize(n, 0);
            reader.read_exact(&mut answer).unwrap();
        }
        None => {
            reader.read_to_end(&mut answer).unwrap();
        }
    }
    (status, String::from_utf8_lossy(&answer).into_owned())
}

/// GET `path`'s body, asserting 200.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> String {
    let (status, body) = http_request(addr, "GET", path, &[], "");
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// The SQLSTATE of a failed statement.
/// Creates each view (name, query) at one, two and three instances in turn: three exceeds
/// the cores CI has, so some instances get no split and every exchange deals unevenly.
pub(crate) async fn create_views_at_parallelism_1_to_3(client: &Client, views: &[(&str, &str)]) {
    for (i, (name, query)) in views.iter().enumerate() {
        client
            .batch_execute(&format!(
                "SET streaming_parallelism TO {}; CREATE MATERIALIZED VIEW {name} AS {query}",
                1 + i % 3
            ))
            .await
            .unwrap();
    }
}

/// After a FLUSH, each view (name, query) must hold exactly its query's rows; `context`
/// says which change came last, for the failure message.
pub(crate) async fn assert_views_equal_queries(
    client: &Client,
    views: &[(&str, &str)],
    context: &str,
) {
    client.batch_execute("FLUSH").await.unwrap();
    for (name, query) in views {
        assert_eq!(
            sorted_rows(client, &format!("SELECT * FROM {name}")).await,
            sorted_rows(client, query).await,
            "{name} {context}"
        );
    }
}

/// A query's rows as `a|b|c` strings (NULL spelled out), sorted: a multiset to compare.
pub(crate) async fn sorted_rows(client: &Client, sql: &str) -> Vec<String> {
    let mut out: Vec<String> = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// Polls until `view` holds exactly the rows of `oracle` (FLUSH between tries); panics
/// with both after `timeout`.
pub(crate) async fn await_view_equals(
    client: &Client,
    view: &str,
    oracle: &str,
    timeout: Duration,
) {
    let started = Instant::now();
    loop {
        client.batch_execute("FLUSH").await.unwrap();
        let got = sorted_rows(client, &format!("SELECT * FROM {view}")).await;
        let want = sorted_rows(client, oracle).await;
        if got == want {
            return;
        }
        if started.elapsed() > timeout {
            let diff: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(5).collect();
            let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
            panic!(
                "{view}: {} rows, oracle {}; extra {diff:?}, missing {missing:?}",
                got.len(),
                want.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `sql` until its sorted rows are `expected`; panics with the last rows on timeout.
pub(crate) async fn await_rows(client: &Client, sql: &str, expected: &[&str], timeout: Duration) {
    let started = Instant::now();
    loop {
        let got = sorted_rows(client, sql).await;
        if got == expected {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{sql}: got {got:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not open port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed on drop.
pub(crate) struct ChildGuard(pub(crate) Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `weir` binary as a separate process (for kill -9 and psql tests).
pub(crate) struct WeirProcess {
    pub(crate) child: ChildGuard,
    pub(crate) port: u16,
    pub(crate) http_port: u16,
}

impl WeirProcess {
    pub(crate) fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[])
    }

    /// `weir serve` with `args` added to the usual ones.
    pub(crate) fn start_with(data_dir: &Path, args: &[&str]) -> Self {
        Self::start_with_env(data_dir, args, &[])
    }

    /// As `start_with`, with environment variables set for the process.
    pub(crate) fn start_with_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_logged(data_dir, args, env, None)
    }

    /// As `start_with_env`, its log (stderr) appended to `log` when given.
    pub(crate) fn start_logged(
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Self {
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap(),
            ),
            None => Stdio::null(),
        };
        let (port, http_port) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .envs(env.iter().copied())
            .args(["serve", "--pg-listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        wait_for_port(port, "weir");
        wait_for_port(http_port, "weir http");
        Self {
            child: ChildGuard(child),
            port,
            http_port,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub(crate) fn http_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    /// SIGTERM, then the exit status and how long the process took to exit.
    pub(crate) fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let pid = self.child.0.id().to_string();
        let started = Instant::now();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.0.wait().unwrap();
        (status, started.elapsed())
    }

    /// SIGKILL: no shutdown code runs.
    pub(crate) fn kill9(mut self) {
        self.child.0.kill().unwrap();
        self.child.0.wait().unwrap();
    }
}

/// A message to produce: (partition, key, payload).
pub(crate) type KafkaMessage = (i32, Option<Vec<u8>>, Vec<u8>);

/// A message read back: (partition, key, value), value None for a tombstone.
pub(crate) type ConsumedMessage = (i32, Option<Vec<u8>>, Option<Vec<u8>>);

/// A Tansu broker with sqlite storage in its own directory.
pub(crate) struct Broker {
    child: Option<ChildGuard>,
    pub(crate) port: u16,
    dir: tempfile::TempDir,
    storage: String,
}

impl Broker {
    pub(crate) fn start() -> Self {
        Self::start_with_storage("sqlite://tansu.db")
    }

    /// A broker on `storage` (`sqlite://tansu.db`, or `memory://` for raw throughput only:
    /// it misreports high watermarks).
    pub(crate) fn start_with_storage(storage: &str) -> Self {
        let mut broker = Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            storage: storage.to_string(),
        };
        broker.resume();
        broker
    }

    /// Stops the broker (its data stays for `resume`).
    pub(crate) fn stop(&mut self) {
        self.child = None;
    }

    /// Starts the broker again on its port and data.
    pub(crate) fn resume(&mut self) {
        let (port, storage) = (self.port, self.storage.as_str());
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(tansu())
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", storage])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu must be installed (see .ci/run)");
        wait_for_port(port, "tansu");
        self.child = Some(ChildGuard(child));
    }

    pub(crate) fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(tansu())
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://127.0.0.1:{}", self.port),
            ])
            .args(["--partitions", &partitions.to_string(), name])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "tansu topic create {name} failed");
    }

    /// Produces `(partition, key, payload)` messages and waits until all are acknowledged.
    /// Sends a message with `key` and no value: it deletes the key from an upsert topic.
    pub(crate) fn produce_tombstone(&self, topic: &str, partition: i32, key: &str) {
        use rdkafka::config::ClientConfig;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .unwrap();
        producer
            .send(
                BaseRecord::<str, [u8]>::to(topic)
                    .partition(partition)
                    .key(key),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(30)).unwrap();
    }

    /// Every message `topic` holds now, per partition in offset order:
    /// (partition, key, value), value None for a tombstone.
    pub(crate) fn consume(&self, topic: &str) -> Vec<ConsumedMessage> {
        use rdkafka::config::ClientConfig;
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::{Message, Offset, TopicPartitionList};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", "weir-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let timeout = Duration::from_secs(10);
        let md = consumer.fetch_metadata(Some(topic), timeout).unwrap();
        let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
        let mut assignment = TopicPartitionList::new();
        let mut remaining = 0;
        let mut ends = std::collections::BTreeMap::new();
        for &p in &partitions {
            let (low, high) = consumer.fetch_watermarks(topic, p, timeout).unwrap();
            if high > low {
                assignment
                    .add_partition_offset(topic, p, Offset::Offset(low))
                    .unwrap();
                remaining += 1;
                ends.insert(p, high);
            }
        }
        let mut out = Vec::new();
        if remaining == 0 {
            return out;
        }
        consumer.assign(&assignment).unwrap();
        let started = Instant::now();
        while remaining > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "reading {topic} timed out"
            );
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.unwrap();
            let end = ends[&m.partition()];
            if m.offset() < end {
                out.push((
                    m.partition(),
                    m.key().map(<[u8]>::to_vec),
                    m.payload().map(<[u8]>::to_vec),
                ));
            }
            if m.offset() + 1 == end {
                remaining -= 1;
            }
        }
        out
    }

    pub(crate) fn produce(&self, topic: &str, messages: &[KafkaMessage]) {
        self.produce_all(topic, messages.iter().cloned());
    }

    /// Produces every message of `messages` and waits until all are acknowledged.
    pub(crate) fn produce_all(
        &self,
        topic: &str,
        messages: impl IntoIterator<Item = KafkaMessage>,
    ) {
        use rdkafka::config::ClientConfig;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .unwrap();
        for (partition, key, payload) in messages {
            let mut record = BaseRecord::<Vec<u8>, Vec<u8>>::to(topic)
                .partition(partition)
                .payload(&payload);
            if let Some(k) = &key {
                record = record.key(k);
            }
            let mut record = record;
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        r,
                    )) => {
                        producer.poll(Duration::from_millis(10));
                        record = r;
                    }
                    Err((e, _)) => panic!("produce failed: {e}"),
                }
            }
        }
        producer.flush(Duration::from_secs(600)).unwrap();
    }
}

fn tansu() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU") {
        return PathBuf::from(p);
    }
    let cargo_bin = std::env::var("HOME")
        .map(|h| PathBuf::from(h).join(".cargo/bin/tansu"))
        .ok();
    match cargo_bin {
        Some(p) if p.exists() => p,
        _ => PathBuf::from("tansu"),
    }
}

/// Each Nexmark relation and its columns (name, SQL type), as RisingWave declares them.
pub(crate) const NEXMARK_RELATIONS: [(&str, &[(&str, &str)]); 3] = [
    (
        "person",
        &[
            ("id", "BIGINT"),
            ("name", "VARCHAR"),
            ("email_address", "VARCHAR"),
            ("credit_card", "VARCHAR"),
            ("city", "VARCHAR"),
            ("state", "VARCHAR"),
            ("date_time", "TIMESTAMP"),
            ("extra", "VARCHAR"),
        ],
    ),
    (
        "auction",
        &[
            ("id", "BIGINT"),
            ("item_name", "VARCHAR"),
            ("description", "VARCHAR"),
            ("initial_bid", "BIGINT"),
            ("reserve", "BIGINT"),
            ("date_time", "TIMESTAMP"),
            ("expires", "TIMESTAMP"),
            ("seller", "BIGINT"),
            ("category", "BIGINT"),
            ("extra", "VARCHAR"),
        ],
    ),
    (
        "bid",
        &[
            ("auction", "BIGINT"),
            ("bidder", "BIGINT"),
            ("price", "BIGINT"),
            ("channel", "VARCHAR"),
            ("url", "VARCHAR"),
            ("date_time", "TIMESTAMP"),
            ("extra", "VARCHAR"),
        ],
    ),
];

/// Nexmark beyond q0–q8, as (name, relations read, query) in RisingWave's spelling: q6 (RisingWave's
/// group-top-1 form), q9, q10 (RisingWave's projection: weir's file sink is what Nexmark's
/// q10 writes to), q11 (sessions), q13 (the side input as a table, `NEXMARK_SIDE_INPUT`),
/// q14–q22 and q101–q106. q12 windows by processing time, so no batch query equals it.
pub(crate) const NEXMARK_BEYOND_Q8: &[(&str, &[&str], &str)] = &[
    // The average of each seller's last 10 closing prices (a window over a top-1).
    // RisingWave's text orders by price alone, and the window by date_time alone: with ties
    // its answer depends on the order rows arrive in, in any system. Here both orders are
    // completed with tie-breakers, so that one answer is right.
    (
        "q6",
        &["auction", "bid"],
        "SELECT Q.seller, AVG(Q.final) OVER (PARTITION BY Q.seller ORDER BY Q.date_time, \
         Q.final, Q.id ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg FROM (SELECT \
         ROW_NUMBER() OVER (PARTITION BY A.id, A.seller ORDER BY B.price, B.date_time, \
         B.bidder) AS rank, A.id, A.seller, B.price AS final, B.date_time FROM auction AS A, \
         bid AS B WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires) \
         AS Q WHERE Q.rank <= 1",
    ),
    // The highest bid of each auction while it runs (first by time among equal prices).
    (
        "q9",
        &["auction", "bid"],
        "SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller, \
         category, auction, bidder, price, bid_date_time FROM (SELECT A.*, B.auction, B.bidder, \
         B.price, B.date_time AS bid_date_time, ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY \
         B.price DESC, B.date_time ASC, B.bidder) AS rownum FROM auction A, bid B WHERE A.id = B.auction \
         AND B.date_time BETWEEN A.date_time AND A.expires) WHERE rownum <= 1",
    ),
    (
        "q10",
        &["bid"],
        "SELECT auction, bidder, price, date_time, TO_CHAR(date_time, 'YYYY-MM-DD') AS date, \
         TO_CHAR(date_time, 'HH:MI') AS time FROM bid",
    ),
    // Each bidder's sessions: bids at most 10 s apart.
    (
        "q11",
        &["bid"],
        "SELECT bidder, count(*) AS bid_count, window_start AS starttime, window_end AS endtime \
         FROM SESSION(bid, date_time, INTERVAL '10' SECOND) GROUP BY bidder, window_start, window_end",
    ),
    // Bids joined with a bounded side input.
    (
        "q13",
        &["bid", "side_input"],
        "SELECT B.auction, B.bidder, B.price, B.date_time, S.value FROM bid B \
         JOIN side_input FOR SYSTEM_TIME AS OF PROCTIME() S ON mod(B.auction, 10000) = S.key",
    ),
    (
        "q14",
        &["bid"],
        "SELECT auction, bidder, 0.908 * price AS price, CASE WHEN extract(hour FROM date_time) >= 8 \
         AND extract(hour FROM date_time) <= 18 THEN 'dayTime' WHEN extract(hour FROM date_time) <= 6 \
         OR extract(hour FROM date_time) >= 20 THEN 'nightTime' ELSE 'otherTime' END AS bidTimeType, \
         date_time, extra FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000",
    ),
    (
        "q15",
        &["bid"],
        "SELECT to_char(date_time, 'yyyy-mm-dd') AS day, count(*) AS total_bids, \
         count(*) FILTER (WHERE price < 10000) AS rank1_bids, \
         count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids, \
         count(*) FILTER (WHERE price >= 1000000) AS rank3_bids, \
         count(DISTINCT bidder) AS total_bidders, \
         count(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders, \
         count(DISTINCT bidder) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bidders, \
         count(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders, \
         count(DISTINCT auction) AS total_auctions, \
         count(DISTINCT auction) FILTER (WHERE price < 10000) AS rank1_auctions, \
         count(DISTINCT auction) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_auctions, \
         count(DISTINCT auction) FILTER (WHERE price >= 1000000) AS rank3_auctions \
         FROM bid GROUP BY to_char(date_time, 'yyyy-mm-dd')",
    ),
    (
        "q16",
        &["bid"],
        "SELECT channel, to_char(date_time, 'yyyy-mm-dd') AS day, max(to_char(date_time, 'HH:mm')) AS minute, \
         count(*) AS total_bids, count(*) FILTER (WHERE price < 10000) AS rank1_bids, \
         count(DISTINCT bidder) AS total_bidders, \
         count(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders, \
         count(DISTINCT auction) AS total_auctions \
         FROM bid GROUP BY to_char(date_time, 'yyyy-mm-dd'), channel",
    ),
    (
        "q17",
        &["bid"],
        "SELECT auction, to_char(date_time, 'YYYY-MM-DD') AS day, count(*) AS total_bids, \
         count(*) FILTER (WHERE price < 10000) AS rank1_bids, \
         count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids, \
         count(*) FILTER (WHERE price >= 1000000) AS rank3_bids, \
         min(price) AS min_price, max(price) AS max_price, avg(price) AS avg_price, \
         sum(price) AS sum_price FROM bid GROUP BY auction, to_char(date_time, 'YYYY-MM-DD')",
    ),
    // The latest bid of each bidder on each auction.
    (
        "q18",
        &["bid"],
        "SELECT auction, bidder, price, channel, url, date_time, extra FROM (SELECT *, \
         ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC, price DESC, url) \
         AS rank_number FROM bid) WHERE rank_number <= 1",
    ),
    (
        "q19",
        &["bid"],
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, \
         date_time, bidder) AS rank_number FROM bid) WHERE rank_number <= 10",
    ),
    (
        "q20",
        &["auction", "bid"],
        "SELECT auction, bidder, price, channel, url, B.date_time AS bid_date_time, B.extra AS bid_extra, \
         item_name, description, initial_bid, reserve, A.date_time AS auction_date_time, expires, seller, \
         category, A.extra AS auction_extra FROM bid AS B INNER JOIN auction AS A ON B.auction = A.id \
         WHERE A.category = 10",
    ),
    (
        "q21",
        &["bid"],
        "SELECT auction, bidder, price, channel, CASE WHEN lower(channel) = 'apple' THEN '0' \
         WHEN lower(channel) = 'google' THEN '1' WHEN lower(channel) = 'facebook' THEN '2' \
         WHEN lower(channel) = 'baidu' THEN '3' \
         ELSE (regexp_match(url, '(&|^)channel_id=([^&]*)'))[2] END AS channel_id FROM bid \
         WHERE (regexp_match(url, '(&|^)channel_id=([^&]*)'))[2] IS NOT NULL \
         OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')",
    ),
    (
        "q22",
        &["bid"],
        "SELECT auction, bidder, price, channel, split_part(url, '/', 4) AS dir1, \
         split_part(url, '/', 5) AS dir2, split_part(url, '/', 6) AS dir3 FROM bid",
    ),
    (
        "q101",
        &["auction", "bid"],
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name, b.max_price AS current_highest_bid \
         FROM auction a LEFT OUTER JOIN (SELECT b1.auction, max(b1.price) AS max_price FROM bid b1 \
         GROUP BY b1.auction) b ON a.id = b.auction",
    ),
    (
        "q102",
        &["auction", "bid"],
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name, count(b.auction) AS bid_count \
         FROM auction a JOIN bid b ON a.id = b.auction GROUP BY a.id, a.item_name \
         HAVING count(b.auction) >= (SELECT count(*) / count(DISTINCT auction) FROM bid)",
    ),
    (
        "q103",
        &["auction", "bid"],
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name FROM auction a \
         WHERE a.id IN (SELECT b.auction FROM bid b GROUP BY b.auction HAVING count(*) >= 20)",
    ),
    (
        "q104",
        &["auction", "bid"],
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name FROM auction a \
         WHERE a.id NOT IN (SELECT b.auction FROM bid b GROUP BY b.auction HAVING count(*) < 20)",
    ),
    (
        "q105",
        &["auction", "bid"],
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name, count(b.auction) AS bid_count \
         FROM auction a JOIN bid b ON a.id = b.auction GROUP BY a.id, a.item_name \
         ORDER BY bid_count DESC, auction_id LIMIT 1000",
    ),
    (
        "q106",
        &["auction", "bid"],
        "SELECT min(final) AS min_final FROM (SELECT a.id, max(b.price) AS final FROM auction a, bid b \
         WHERE a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires GROUP BY a.id) q",
    ),
];

/// q13's side input (the relation `side_input` of `NEXMARK_BEYOND_Q8`): a value for each
/// key 0..10000.
pub(crate) const NEXMARK_SIDE_INPUT: &str = "CREATE TABLE side_input (key BIGINT PRIMARY KEY, value VARCHAR); \
     INSERT INTO side_input SELECT v, 'value ' || v FROM generate_series(0, 9999) AS t(v)";

/// A real PostgreSQL server (Debian's `postgresql` package) in a temporary cluster, to
/// compare weir's output with. Runs as the `postgres` user when the tests run as root.
pub(crate) struct PostgresServer {
    bin: PathBuf,
    data: PathBuf,
    as_root: bool,
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

impl PostgresServer {
    pub(crate) fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                versions
                    .filter_map(|v| Some(v.ok()?.path().join("bin")))
                    .filter(|b| b.join("postgres").exists())
                    .max()
            })
            .expect("a PostgreSQL server in /usr/lib/postgresql (scripts/test.sh installs it)");
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let dir = tempfile::tempdir().unwrap();
        if as_root {
            let owned = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(owned.success(), "chown of the cluster dir to postgres");
        }
        let data = dir.path().join("data");
        let server = Self {
            bin,
            data,
            as_root,
            port: free_port(),
            _dir: dir,
        };
        let init = server
            .command("initdb")
            .arg("-D")
            .arg(&server.data)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .args(["--locale", "C"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(init.success(), "initdb failed");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            server.port,
            server.data.display()
        );
        let started = server
            .command("pg_ctl")
            .args(["-w", "-D"])
            .arg(&server.data)
            .args(["-o", &options, "-l"])
            .arg(server.data.join("log"))
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(started.success(), "pg_ctl start failed");
        server
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    pub(crate) async fn client(&self) -> Client {
        let conn_str = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        );
        let (client, connection) = tokio_postgres::connect(&conn_str, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .status();
    }
}
