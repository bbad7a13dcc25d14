//! Ad hoc scan rate over a Kafka topic: `cargo bench --bench adhoc_scan -- [messages] [partitions]`.
//!
//! Starts a Tansu broker (sqlite storage) and an in-process weir server, produces
//! `messages` JSON bids (default 50,000) over `partitions` partitions (default 4), then times
//! the ingestion ceiling (raw rdkafka consume, no decoding) and weir's
//! `SELECT count(*), sum(price), count(DISTINCT bidder)` over the same topic, checking the
//! answer against the produced data. Prints progress, then one `RESULT {json}` line.

#![allow(clippy::unwrap_used, clippy::print_stdout, dead_code, unreachable_pub)]

#[path = "../tests/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use harness::{Broker, KafkaMessage, TestServer};
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn bids(n: usize, partitions: i32) -> (Vec<KafkaMessage>, i64, i64, usize) {
    let mut state: u64 = 42;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    let (mut sum, mut bidders, mut out) = (0i64, BTreeSet::new(), Vec::with_capacity(n));
    for i in 0..n {
        let (auction, bidder, price) =
            (1000 + next() % 5000, next() % 100_000, next() % 10_000_000);
        sum += price as i64;
        bidders.insert(bidder);
        let payload = format!(
            r#"{{"auction":{auction},"bidder":{bidder},"price":{price},"channel":"channel-{}","url":"https://www.nexmark.com/item.htm?query=1","date_time":"2024-01-01 00:00:{:02}.{:03}","extra":""}}"#,
            auction % 100,
            (i / 1000) % 60,
            i % 1000
        );
        out.push(((i % partitions as usize) as i32, None, payload.into_bytes()));
    }
    (out, n as i64, sum, bidders.len())
}

/// Reads every partition from offset 0 with assign (no group join), touching only payload sizes.
fn raw_consume(bootstrap: &str, topic: &str, partitions: i32, expected: usize) -> Duration {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "raw-consume-bench")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let start = Instant::now();
    let (mut seen, mut bytes) = (0usize, 0usize);
    while seen < expected {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            seen += 1;
            bytes += m.payload().map_or(0, <[u8]>::len);
        }
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "raw consume stalled at {seen}"
        );
    }
    let _ = bytes;
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let partitions: i32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4);

    let broker = Broker::start();
    broker.create_topic("bid", partitions as u32);
    let (messages, count, sum, distinct) = bids(n, partitions);
    let t = Instant::now();
    for (i, chunk) in messages.chunks(250_000).enumerate() {
        broker.produce("bid", chunk);
        eprintln!(
            "produced {} / {n} messages ({:.0} msg/s)",
            (i * 250_000 + chunk.len()),
            (i * 250_000 + chunk.len()) as f64 / t.elapsed().as_secs_f64()
        );
    }
    let produce_s = t.elapsed().as_secs_f64();

    let raw = raw_consume(&broker.bootstrap(), "bid", partitions, n).as_secs_f64();
    eprintln!("raw rdkafka consume: {:.0} msg/s", n as f64 / raw);

    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, date_time TIMESTAMP, extra VARCHAR)
             WITH (connector = 'kafka', topic = 'bid', properties.bootstrap.server = '{}') FORMAT PLAIN ENCODE JSON",
            broker.bootstrap()
        ))
        .await
        .unwrap();
    let mut times = Vec::new();
    for run in 0..3 {
        let t = Instant::now();
        let row = client
            .query_one(
                "SELECT count(*), sum(price), count(DISTINCT bidder) FROM bid",
                &[],
            )
            .await
            .unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(
            (
                row.get::<_, i64>(0),
                row.get::<_, i64>(1),
                row.get::<_, i64>(2)
            ),
            (count, sum, distinct as i64)
        );
        eprintln!("run {run}: {:.2} s, {:.0} rows/s", secs, n as f64 / secs);
        times.push(secs);
    }
    times.sort_by(f64::total_cmp);
    let median = times[1];
    println!(
        "RESULT {{\"bench\":\"adhoc_scan\",\"messages\":{n},\"partitions\":{partitions},\"produce_msgs_per_s\":{:.0},\"raw_consume_msgs_per_s\":{:.0},\"weir_scan_rows_per_s\":{:.0},\"weir_vs_raw\":{:.3}}}",
        n as f64 / produce_s,
        n as f64 / raw,
        n as f64 / median,
        raw / median
    );
}
