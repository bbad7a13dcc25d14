//! The reference points measured in the same run on the same events: DataFusion and DuckDB
//! batch over the NDJSON and Parquet files, and the raw rdkafka consume rate of the topics.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::prelude::{JsonReadOptions, ParquetReadOptions, SessionConfig, SessionContext};

use crate::data::PartitionCount;
use crate::queries::{Dialect, QUERIES, RELATIONS};

/// A reference's time for one query over one format, and its result's row count.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub seconds: f64,
    pub rows: u64,
}

/// (query, format) -> measurement, format being "ndjson" or "parquet".
pub type Measurements = HashMap<(String, String), Measured>;

fn arrow_schema(columns: &[(&str, &str)]) -> Schema {
    Schema::new(
        columns
            .iter()
            .map(|(n, t)| {
                let ty = match *t {
                    "BIGINT" => DataType::Int64,
                    "TIMESTAMP" => DataType::Timestamp(TimeUnit::Nanosecond, None),
                    _ => DataType::Utf8,
                };
                Field::new(*n, ty, true)
            })
            .collect::<Vec<_>>(),
    )
}

/// DataFusion batch: per format and query, a fresh context over the files, the query
/// collected in memory.
pub async fn datafusion(dir: &Path, queries: &[&str], cores: usize) -> Measurements {
    let mut out = HashMap::new();
    for format in ["ndjson", "parquet"] {
        for q in QUERIES.iter().filter(|q| queries.contains(&q.name)) {
            let ctx =
                SessionContext::new_with_config(SessionConfig::new().with_target_partitions(cores));
            for (relation, columns) in RELATIONS {
                let schema = arrow_schema(columns);
                let path = format!("{}/{relation}-*.{format}", dir.display());
                let registered = if format == "ndjson" {
                    let options = JsonReadOptions::default()
                        .schema(&schema)
                        .file_extension(".ndjson");
                    ctx.register_json(relation, &path, options).await
                } else {
                    let options = ParquetReadOptions::default().file_extension(".parquet");
                    ctx.register_parquet(relation, &path, options).await
                };
                registered.unwrap();
            }
            let sql = Dialect::DataFusion.translate(q.sql);
            let start = Instant::now();
            let result = match ctx.sql(&sql).await {
                Ok(df) => df.collect().await,
                Err(e) => Err(e),
            };
            match result {
                Ok(batches) => {
                    let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
                    let seconds = start.elapsed().as_secs_f64();
                    eprintln!(
                        "  datafusion {format} {}: {seconds:.2} s, {rows} rows",
                        q.name
                    );
                    out.insert(
                        (q.name.to_string(), format.to_string()),
                        Measured { seconds, rows },
                    );
                }
                Err(e) => eprintln!("  datafusion {format} {}: failed: {e}", q.name),
            }
        }
    }
    out
}

/// DuckDB batch (from PyPI, run by `benches/scripts/duckdb_reference.py`); empty with a
/// message when Python or the duckdb package is missing.
pub fn duckdb(dir: &Path, queries: &[&str], cores: usize) -> Measurements {
    let mut out = HashMap::new();
    let relations: serde_json::Map<String, serde_json::Value> = RELATIONS
        .iter()
        .map(|(r, cols)| (r.to_string(), serde_json::json!(cols)))
        .collect();
    let sql: serde_json::Map<String, serde_json::Value> = QUERIES
        .iter()
        .filter(|q| queries.contains(&q.name))
        .map(|q| (q.name.to_string(), Dialect::DuckDb.translate(q.sql).into()))
        .collect();
    let spec =
        serde_json::json!({"dir": dir, "threads": cores, "relations": relations, "queries": sql});
    let spec_path = dir.join("duckdb.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/scripts/duckdb_reference.py");
    let run = std::process::Command::new("python3")
        .arg(script)
        .arg(&spec_path)
        .stderr(std::process::Stdio::inherit())
        .output();
    match run {
        Ok(o) if o.status.success() => {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let m = Measured {
                    seconds: v["seconds"].as_f64().unwrap(),
                    rows: v["rows"].as_u64().unwrap(),
                };
                eprintln!(
                    "  duckdb {} {}: {:.2} s, {} rows",
                    v["format"], v["query"], m.seconds, m.rows
                );
                out.insert(
                    (
                        v["query"].as_str().unwrap().into(),
                        v["format"].as_str().unwrap().into(),
                    ),
                    m,
                );
            }
        }
        _ => eprintln!("  duckdb: not run (python3 -m pip install duckdb)"),
    }
    out
}

/// Seconds rdkafka takes to read each topic partition when all are read at once with one
/// consumer per partition (as weir's Kafka source reads), from the start and without
/// decoding: the ingestion ceiling the broker sets. Returns (topic, seconds) per partition.
pub fn raw_consume(bootstrap: &str, partitions: &[PartitionCount]) -> Vec<(&'static str, f64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let start = Instant::now();
    let threads: Vec<_> = partitions
        .iter()
        .map(|&(topic, partition, expected)| {
            let bootstrap = bootstrap.to_string();
            std::thread::spawn(move || {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .set(
                        "group.id",
                        format!("raw-{}-{topic}-{partition}", std::process::id()),
                    )
                    .set("enable.auto.commit", "false")
                    .create()
                    .unwrap();
                let mut assignment = TopicPartitionList::new();
                assignment
                    .add_partition_offset(topic, partition, Offset::Beginning)
                    .unwrap();
                consumer.assign(&assignment).unwrap();
                let mut seen = 0u64;
                while seen < expected {
                    match consumer.poll(Duration::from_secs(10)) {
                        Some(Ok(_)) => seen += 1,
                        Some(Err(e)) => panic!("raw consume: {e}"),
                        None => panic!("raw consume: nothing for 10 s after {seen} of {expected}"),
                    }
                }
                (topic, start.elapsed().as_secs_f64())
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}
