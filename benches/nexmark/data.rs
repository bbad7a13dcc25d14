//! The benchmark's events outside weir: the generator's rows written as NDJSON and Parquet
//! files (the `file` source and the batch references read them) and produced to Kafka.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::Instant;

use weir_engine::connector::nexmark::{NexmarkOptions, NexmarkReader, NexmarkTable};

use crate::harness::Broker;
use crate::queries::RELATIONS;

/// Files (and Kafka partitions) per relation: bids in two, so that both cores decode.
pub fn parts(relation: &str) -> u64 {
    if relation == "bid" { 2 } else { 1 }
}

/// The NDJSON file of one part of a relation.
pub fn ndjson(dir: &Path, relation: &str, part: u64) -> PathBuf {
    dir.join(format!("{relation}-{part}.ndjson"))
}

fn parquet(dir: &Path, relation: &str, part: u64) -> PathBuf {
    dir.join(format!("{relation}-{part}.parquet"))
}

/// Writes the first `events` Nexmark events (event time from `base_time_ms`) into `dir`:
/// per relation and part, `{relation}-{part}.ndjson` and `.parquet`. Part k of n holds the
/// relation's rows k, k + n, ... (as generator split k of n does).
pub fn write_files(dir: &Path, events: u64, base_time_ms: u64) {
    let start = Instant::now();
    for (relation, _) in RELATIONS {
        let table = NexmarkTable::parse(relation).unwrap();
        let options = NexmarkOptions {
            table,
            event_num: Some(events),
            base_time_ms,
        };
        let n = parts(relation);
        for part in 0..n {
            let mut reader = NexmarkReader::new(&options, part, n);
            let mut json = arrow_json::LineDelimitedWriter::new(BufWriter::new(
                File::create(ndjson(dir, relation, part)).unwrap(),
            ));
            let mut pq = parquet::arrow::ArrowWriter::try_new(
                File::create(parquet(dir, relation, part)).unwrap(),
                reader.schema(),
                None,
            )
            .unwrap();
            let mut rows = 0;
            while let Some(batch) = reader.next_batch(8192) {
                json.write(&batch).unwrap();
                pq.write(&batch).unwrap();
                rows += batch.num_rows();
            }
            json.finish().unwrap();
            pq.close().unwrap();
            eprintln!(
                "  wrote {relation}-{part}: {rows} rows ({:.0} s)",
                start.elapsed().as_secs_f64()
            );
        }
    }
}

/// A topic partition and the messages it holds.
pub type PartitionCount = (&'static str, i32, u64);

/// Produces each NDJSON line of the relations' files as one message to the topic of its
/// relation (one partition per part); returns each partition's message count.
pub fn produce_topics(broker: &Broker, dir: &Path) -> Vec<PartitionCount> {
    let start = Instant::now();
    let mut produced = Vec::new();
    for (relation, _) in RELATIONS {
        let n = parts(relation);
        broker.create_topic(relation, n as u32);
        let mut count = 0u64;
        for part in 0..n {
            let before = count;
            let lines = BufReader::new(File::open(ndjson(dir, relation, part)).unwrap()).lines();
            broker.produce_all(
                relation,
                lines
                    .map(|l| (part as i32, None, l.unwrap().into_bytes()))
                    .inspect(|_| count += 1),
            );
            produced.push((relation, part as i32, count - before));
        }
        eprintln!(
            "  produced {count} {relation} messages ({:.0} msg/s)",
            count as f64 / start.elapsed().as_secs_f64()
        );
    }
    produced
}
