//! What sinks cost (`--sinks`): the generator's bids written by a PLAIN Kafka sink, beside
//! two references with the sink's producer settings: one rdkafka producer sending the same
//! JSON messages from memory (what the broker and client can take), and one program doing
//! the sink's whole job by hand (the same generator, arrow-json, rdkafka); and by the
//! Parquet file sink, beside DuckDB's `COPY ... TO 'x.parquet'` of the same rows.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use weir_engine::connector::nexmark::{NexmarkOptions, NexmarkReader, NexmarkTable};

use crate::harness::{Broker, WeirProcess, connect, sorted_rows};

/// The measurements, in rows per second.
pub struct SinkRates {
    pub rows: u64,
    pub raw_producer: f64,
    pub raw_pipeline: f64,
    pub kafka_sink: f64,
    pub parquet_sink: f64,
    pub duckdb_copy: f64,
}

/// Calls `f` with each bid of `events` Nexmark events as an NDJSON line (one generator
/// shard, encoded by arrow-json a batch at a time).
fn each_bid_line(events: u64, base_time_ms: u64, mut f: impl FnMut(&[u8])) {
    let options = NexmarkOptions {
        table: NexmarkTable::Bid,
        event_num: Some(events),
        base_time_ms,
    };
    let mut reader = NexmarkReader::new(&options, 0, 1);
    let mut json = Vec::new();
    while let Some(batch) = reader.next_batch(8192) {
        json.clear();
        let mut writer = arrow_json::LineDelimitedWriter::new(&mut json);
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        json.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .for_each(&mut f);
    }
}

/// The bids of `events` Nexmark events as NDJSON lines.
fn bid_lines(events: u64, base_time_ms: u64) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    each_bid_line(events, base_time_ms, |l| lines.push(l.to_vec()));
    lines
}

/// A producer configured as `KafkaSink`'s is.
fn producer(bootstrap: &str) -> rdkafka::producer::BaseProducer {
    let mut config = rdkafka::config::ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (k, v) in weir_engine::sink::PRODUCER_DEFAULTS {
        config.set(k, v);
    }
    config.create().unwrap()
}

/// Sends `line` to `topic`, polling while librdkafka's queue is full.
fn produce_line(producer: &rdkafka::producer::BaseProducer, topic: &str, line: &[u8]) {
    use rdkafka::producer::BaseRecord;
    let mut record = BaseRecord::<(), [u8]>::to(topic).payload(line);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, r)) => {
                record = r;
                producer.poll(Duration::from_millis(5));
            }
        }
    }
}

/// One producer sending `lines` to `topic`: seconds until every message is acknowledged.
fn raw_produce(bootstrap: &str, topic: &str, lines: &[Vec<u8>]) -> f64 {
    use rdkafka::producer::Producer;
    let producer = producer(bootstrap);
    let started = Instant::now();
    for line in lines {
        produce_line(&producer, topic, line);
    }
    producer.flush(Duration::from_secs(600)).unwrap();
    started.elapsed().as_secs_f64()
}

/// The sink's job done by hand in one thread: the bids of `events` events generated,
/// encoded by arrow-json and sent to `topic`: seconds until every message is acknowledged.
fn raw_pipeline(bootstrap: &str, topic: &str, events: u64, base_time_ms: u64) -> f64 {
    use rdkafka::producer::Producer;
    let producer = producer(bootstrap);
    let started = Instant::now();
    each_bid_line(events, base_time_ms, |line| {
        produce_line(&producer, topic, line);
    });
    producer.flush(Duration::from_secs(600)).unwrap();
    started.elapsed().as_secs_f64()
}

/// Seconds until `sink`'s progress shows `rows` rows, from `started`.
async fn until_written(
    client: &tokio_postgres::Client,
    sink: &str,
    rows: u64,
    started: Instant,
) -> f64 {
    let query = format!(
        "SELECT coalesce(sum(rows), 0) FROM weir_catalog.sink_progress WHERE sink = '{sink}'"
    );
    let mut last = 0;
    loop {
        let done: u64 = sorted_rows(client, &query).await[0].parse().unwrap();
        if done >= rows {
            return started.elapsed().as_secs_f64();
        }
        if done / 1_000_000 > last {
            last = done / 1_000_000;
            eprintln!("  {sink}: {done} of {rows} rows");
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "{sink} stalled at {done} of {rows}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// DuckDB writing the same rows (loaded into a table first, not timed) as one Parquet
/// file: seconds.
fn duckdb_copy(ndjson: &std::path::Path, out: &std::path::Path) -> f64 {
    let script = format!(
        "import duckdb, time\n\
         c = duckdb.connect()\n\
         c.execute(\"SET enable_progress_bar = false\")\n\
         c.execute(\"CREATE TABLE bid AS SELECT * FROM read_json('{}', format = 'newline_delimited')\")\n\
         t = time.time()\n\
         c.execute(\"COPY bid TO '{}' (FORMAT parquet)\")\n\
         print(time.time() - t)",
        ndjson.display(),
        out.display()
    );
    let output = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The elapsed time is the last line (a progress bar may come before it).
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
    last.and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("duckdb printed no time: {stdout}"))
}

/// Runs the three measurements over the bids of `events` events.
pub async fn measure(events: u64, base_time_ms: u64, kafka_storage: &str) -> SinkRates {
    let broker = Broker::start_with_storage(kafka_storage);
    for topic in ["raw_out", "pipeline_out", "kafka_out"] {
        broker.create_topic(topic, 2);
    }
    let lines = bid_lines(events, base_time_ms);
    let rows = lines.len() as u64;
    eprintln!("sinks: raw producer, {rows} bid messages");
    let raw_s = raw_produce(&broker.bootstrap(), "raw_out", &lines);
    eprintln!("  {:.0} msg/s", rows as f64 / raw_s);
    eprintln!("sinks: generator, arrow-json and producer in one program, {rows} bids");
    let pipeline_s = raw_pipeline(&broker.bootstrap(), "pipeline_out", events, base_time_ms);
    eprintln!("  {:.0} msg/s", rows as f64 / pipeline_s);

    let dir = tempfile::tempdir().unwrap();
    let weir = WeirProcess::start_with(dir.path(), &["--checkpoint-interval", "1s"]);
    let (client, _) = connect(weir.addr()).await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE bid WITH (connector = 'nexmark', nexmark.table.type = 'Bid',
               nexmark.event.num = '{events}')"
        ))
        .await
        .unwrap();
    let count: u64 = sorted_rows(&client, "SELECT count(*) FROM bid").await[0]
        .parse()
        .unwrap();
    eprintln!("sinks: weir PLAIN Kafka sink, {count} bids");
    let started = Instant::now();
    client
        .batch_execute(&format!(
            "CREATE SINK kafka_out AS SELECT * FROM bid WITH (connector = 'kafka',
               topic = 'kafka_out', properties.bootstrap.server = '{}') FORMAT PLAIN ENCODE JSON",
            broker.bootstrap()
        ))
        .await
        .unwrap();
    let kafka_s = until_written(&client, "kafka_out", count, started).await;
    eprintln!("  {:.0} rows/s", count as f64 / kafka_s);
    client.batch_execute("DROP SINK kafka_out").await.unwrap();

    let out = tempfile::tempdir().unwrap();
    eprintln!("sinks: weir Parquet file sink, {count} bids");
    let started = Instant::now();
    client
        .batch_execute(&format!(
            "CREATE SINK parquet_out AS SELECT * FROM bid WITH (connector = 'file',
               path = '{}', format = 'parquet')",
            out.path().display()
        ))
        .await
        .unwrap();
    let parquet_s = until_written(&client, "parquet_out", count, started).await;
    eprintln!("  {:.0} rows/s", count as f64 / parquet_s);
    drop(client);
    drop(weir);

    let ndjson = out.path().join("bids.ndjson");
    std::fs::write(&ndjson, lines.join(&b'\n')).unwrap();
    eprintln!("sinks: DuckDB COPY TO parquet, {rows} rows");
    let duckdb_s = duckdb_copy(&ndjson, &out.path().join("duckdb.parquet"));
    eprintln!("  {:.0} rows/s", rows as f64 / duckdb_s);
    SinkRates {
        rows: count,
        raw_producer: rows as f64 / raw_s,
        raw_pipeline: rows as f64 / pipeline_s,
        kafka_sink: count as f64 / kafka_s,
        parquet_sink: count as f64 / parquet_s,
        duckdb_copy: rows as f64 / duckdb_s,
    }
}

/// The BENCHMARKS.md section.
pub fn markdown(events: u64, r: &SinkRates) -> String {
    let mut md = String::new();
    writeln!(md, "## Sinks\n").unwrap();
    writeln!(
        md,
        "The bids of {events} Nexmark events ({} rows) written by each sink (`CREATE SINK ... AS \
         SELECT * FROM bid` over the generator; from CREATE until `weir_catalog.sink_progress` \
         counts every row: acknowledged for Kafka, in committed files for Parquet, so the \
         Parquet figure includes up to one 1 s checkpoint interval), beside the same work done \
         without weir. Both Kafka references use the sink's producer settings (idempotent, \
         LZ4, linger 5 ms); the first has its messages encoded before the clock starts, the \
         second generates and encodes them as the sink does, on one thread.\n",
        r.rows
    )
    .unwrap();
    writeln!(
        md,
        "| sink | rows/s | reference | rows/s | ratio | target |"
    )
    .unwrap();
    writeln!(md, "|---|---:|---|---:|---:|---|").unwrap();
    let ratio = |a: f64, b: f64| a / b;
    let verdict = |r: f64| if r >= 0.8 { "met" } else { "**missed**" };
    for (reference, rate) in [
        (
            "rdkafka producer, the same messages from memory",
            r.raw_producer,
        ),
        (
            "the same generator, arrow-json and rdkafka in one program",
            r.raw_pipeline,
        ),
    ] {
        let kafka = ratio(r.kafka_sink, rate);
        writeln!(
            md,
            "| Kafka PLAIN JSON | {:.0} | {reference} | {rate:.0} | {kafka:.2} | ≥ 0.80 {} |",
            r.kafka_sink,
            verdict(kafka)
        )
        .unwrap();
    }
    writeln!(
        md,
        "| Parquet files | {:.0} | DuckDB `COPY bid TO 'x.parquet'` (table in memory) | {:.0} | {:.2} | — |",
        r.parquet_sink,
        r.duckdb_copy,
        ratio(r.parquet_sink, r.duckdb_copy)
    )
    .unwrap();
    md
}
