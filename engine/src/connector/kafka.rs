//! Bounded reads of Kafka topic partitions into Arrow batches (ad hoc scans).
//! Each partition is read from its start offset to the high watermark seen when the scan began.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Array, Int64Array, RecordBatch, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use parking_lot::Mutex;

use crate::runtime::{ReadResult, SplitProgress, SplitReader};
use crate::{DecodeStats, EngineError, JsonDecoder, Result};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a partition may stay silent below its end offset before the scan fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a source starts reading when it has no stored offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupMode {
    Earliest,
    Latest,
}

/// Kafka message metadata a source may expose as columns (`INCLUDE ... AS name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaMeta {
    Key,
    Partition,
    Offset,
    Timestamp,
}

impl KafkaMeta {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "key" => Some(Self::Key),
            "partition" => Some(Self::Partition),
            "offset" => Some(Self::Offset),
            "timestamp" => Some(Self::Timestamp),
            _ => None,
        }
    }

    pub fn data_type(self) -> DataType {
        match self {
            Self::Key => DataType::Binary,
            Self::Partition => DataType::Int32,
            Self::Offset => DataType::Int64,
            Self::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
        }
    }
}

/// How to reach a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    pub topic: String,
    /// librdkafka properties (`bootstrap.servers`, ...).
    pub properties: BTreeMap<String, String>,
    pub startup: StartupMode,
}

/// One partition's offsets to read: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

impl KafkaConfig {
    fn consumer(&self) -> Result<BaseConsumer> {
        let mut cc = ClientConfig::new();
        for (k, v) in &self.properties {
            cc.set(k, v);
        }
        cc.set("group.id", format!("weir-scan-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest");
        Ok(cc.create()?)
    }

    /// The offsets each partition holds now.
    pub fn partition_ranges(&self) -> Result<Vec<PartitionRange>> {
        let consumer = self.consumer()?;
        let md = consumer.fetch_metadata(Some(&self.topic), METADATA_TIMEOUT)?;
        let topic = md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .ok_or_else(|| {
                EngineError::InvalidParameter(format!("topic \"{}\" not found", self.topic))
            })?;
        if let Some(err) = topic.error() {
            return Err(EngineError::InvalidParameter(format!(
                "topic \"{}\": {:?}",
                self.topic, err
            )));
        }
        let mut out = Vec::new();
        for p in topic.partitions() {
            let (low, high) = consumer.fetch_watermarks(&self.topic, p.id(), METADATA_TIMEOUT)?;
            let start = match self.startup {
                StartupMode::Earliest => low,
                StartupMode::Latest => high,
            };
            out.push(PartitionRange {
                partition: p.id(),
                start,
                end: high,
            });
        }
        out.sort_by_key(|r| r.partition);
        Ok(out)
    }

    /// Reads `range`, decoding values as JSON into `value_schema` and appending
    /// `includes` columns. `emit` gets each batch and returns false to stop early.
    pub fn scan_partition(
        &self,
        range: PartitionRange,
        value_schema: SchemaRef,
        includes: &[(KafkaMeta, String)],
        max_batch: usize,
        mut emit: impl FnMut(RecordBatch) -> bool,
    ) -> Result<DecodeStats> {
        let mut decoder = JsonDecoder::new(Arc::clone(&value_schema));
        let out_schema = output_schema(&value_schema, includes);
        let mut pending = Pending::default();
        let with_key = includes.iter().any(|(m, _)| *m == KafkaMeta::Key);
        let mut failed = None;
        self.poll_range(range, |msg| {
            pending.push(msg, with_key);
            if pending.len() < max_batch {
                return true;
            }
            match pending.decode(&mut decoder, range.partition, &out_schema, includes) {
                Ok(batch) => emit(batch),
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        if pending.len() > 0 {
            let batch = pending.decode(&mut decoder, range.partition, &out_schema, includes)?;
            emit(batch);
        }
        Ok(decoder.stats().clone())
    }

    /// Calls `on_message` for each message of `range` in offset order, until it returns false.
    fn poll_range(
        &self,
        range: PartitionRange,
        mut on_message: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> bool,
    ) -> Result<()> {
        if range.start >= range.end {
            return Ok(());
        }
        let consumer = self.consumer()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, range.partition, Offset::Offset(range.start))?;
        consumer.assign(&tpl)?;
        let mut next = range.start;
        let mut last_progress = Instant::now();
        while next < range.end {
            match consumer.poll(Duration::from_millis(200)) {
                None => {
                    if last_progress.elapsed() > STALL_TIMEOUT {
                        return Err(EngineError::External(format!(
                            "topic \"{}\" partition {} stalled at offset {next} (end {})",
                            self.topic, range.partition, range.end
                        )));
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(topic = %self.topic, partition = range.partition, error = %e, "kafka poll error, retrying");
                }
                Some(Ok(msg)) => {
                    last_progress = Instant::now();
                    next = msg.offset() + 1;
                    if msg.offset() >= range.end || !on_message(&msg) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One partition read continuously from its start offset: the streaming split of a source.
pub struct KafkaSplit {
    config: KafkaConfig,
    partition: i32,
    consumer: Option<BaseConsumer>,
    next: i64,
    decoder: JsonDecoder,
    includes: Vec<(KafkaMeta, String)>,
    out_schema: SchemaRef,
    progress: Arc<Mutex<SplitProgress>>,
    high_checked: Option<Instant>,
    /// The offset the split ends before (a backfill's), if any.
    until: Option<i64>,
}

impl KafkaSplit {
    pub fn new(
        config: KafkaConfig,
        range: PartitionRange,
        value_schema: SchemaRef,
        includes: Vec<(KafkaMeta, String)>,
        progress: Arc<Mutex<SplitProgress>>,
    ) -> Self {
        progress.lock().next_offset = range.start;
        progress.lock().high_watermark = range.end;
        Self {
            config,
            partition: range.partition,
            consumer: None,
            next: range.start,
            out_schema: output_schema(&value_schema, &includes),
            decoder: JsonDecoder::new(value_schema),
            includes,
            progress,
            high_checked: None,
            until: None,
        }
    }

    /// Ends the split before offset `end` (a late subscriber's backfill of a shared split).
    pub fn until(mut self, end: i64) -> Self {
        self.until = Some(end);
        self
    }

    fn connect(&mut self) -> Result<()> {
        if self.consumer.is_none() {
            let consumer = self.config.consumer()?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(
                &self.config.topic,
                self.partition,
                Offset::Offset(self.next),
            )?;
            consumer.assign(&tpl)?;
            self.consumer = Some(consumer);
        }
        Ok(())
    }
}

impl KafkaSplit {
    /// The offset read next.
    pub(crate) fn next_offset(&self) -> i64 {
        self.next
    }

    /// Polls up to `max_rows` messages, waiting up to 100 ms for the first, and passes each
    /// to `on_message`; returns the offset after the last one (None: nothing arrived).
    pub(crate) fn poll(
        &mut self,
        max_rows: usize,
        mut on_message: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
    ) -> Result<Option<i64>> {
        self.connect()?;
        let consumer = self.consumer.as_ref().expect("invariant: connected above");
        let (mut count, mut bytes, mut last) = (0, 0, None);
        let mut wait = Duration::from_millis(100);
        while count < max_rows {
            match consumer.poll(wait) {
                None => break,
                // Keep what was consumed; the error surfaces on the next read.
                Some(Err(_)) if count > 0 => break,
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(msg)) if self.until.is_some_and(|end| msg.offset() >= end) => break,
                Some(Ok(msg)) => {
                    count += 1;
                    bytes += msg.payload_len() as u64;
                    last = Some(msg.offset());
                    on_message(&msg);
                    wait = Duration::ZERO;
                }
            }
        }
        if self
            .high_checked
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            let (topic, partition) = (&self.config.topic, self.partition);
            if let Ok((_, high)) = consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT) {
                self.progress.lock().high_watermark = high;
            }
            self.high_checked = Some(Instant::now());
        }
        if let Some(last) = last {
            self.next = last + 1;
            let mut p = self.progress.lock();
            p.next_offset = self.next;
            p.high_watermark = p.high_watermark.max(self.next);
            p.bytes += bytes;
        }
        Ok(last.map(|l| l + 1))
    }

    /// Decodes JSON values with this split's decoder, counting bad ones in its progress.
    pub(crate) fn decode(
        &mut self,
        messages: &[&[u8]],
        offsets: &[i64],
    ) -> Result<(RecordBatch, Vec<usize>)> {
        let partition = self.partition;
        let before = self.decoder.stats().errors;
        let out = self.decoder.decode(messages, |i| {
            format!("partition {partition} offset {}", offsets[i])
        })?;
        self.count_errors(before);
        Ok(out)
    }

    /// Adds the decoder's errors since it had `before` of them to the split's progress.
    fn count_errors(&mut self, before: u64) {
        let stats = self.decoder.stats();
        if stats.errors > before {
            let mut p = self.progress.lock();
            p.parse_errors += stats.errors - before;
            p.last_error.clone_from(&stats.last_error);
        }
    }
}

impl SplitReader for KafkaSplit {
    fn read(&mut self, max_rows: usize) -> Result<ReadResult> {
        if self.until.is_some_and(|end| self.next >= end) {
            return Ok(ReadResult::End);
        }
        let with_key = self.includes.iter().any(|(m, _)| *m == KafkaMeta::Key);
        let mut pending = Pending::default();
        if self
            .poll(max_rows, |msg| pending.push(msg, with_key))?
            .is_none()
        {
            return Ok(ReadResult::Idle);
        }
        let before = self.decoder.stats().errors;
        let batch = pending.decode(
            &mut self.decoder,
            self.partition,
            &self.out_schema,
            &self.includes,
        )?;
        self.count_errors(before);
        Ok(ReadResult::Rows(batch))
    }
}

/// The schema of scanned rows: value columns then included metadata columns.
pub fn output_schema(value_schema: &Schema, includes: &[(KafkaMeta, String)]) -> SchemaRef {
    let mut fields: Vec<Field> = value_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.extend(
        includes
            .iter()
            .map(|(m, name)| Field::new(name, m.data_type(), true)),
    );
    Arc::new(Schema::new(fields))
}

/// Messages buffered for one decode call, payloads packed in one buffer.
#[derive(Default)]
struct Pending {
    payload: Vec<u8>,
    ends: Vec<usize>,
    offsets: Vec<i64>,
    keys: Vec<Option<Vec<u8>>>,
    timestamps: Vec<Option<i64>>,
}

impl Pending {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Buffers a message; keys are copied only when a column includes them.
    fn push(&mut self, msg: &rdkafka::message::BorrowedMessage<'_>, with_key: bool) {
        self.payload
            .extend_from_slice(msg.payload().unwrap_or_default());
        self.ends.push(self.payload.len());
        self.offsets.push(msg.offset());
        if with_key {
            self.keys.push(msg.key().map(<[u8]>::to_vec));
        }
        self.timestamps.push(msg.timestamp().to_millis());
    }

    fn decode(
        &mut self,
        decoder: &mut JsonDecoder,
        partition: i32,
        out_schema: &SchemaRef,
        includes: &[(KafkaMeta, String)],
    ) -> Result<RecordBatch> {
        let mut start = 0;
        let messages: Vec<&[u8]> = self
            .ends
            .iter()
            .map(|&end| {
                let m = &self.payload[start..end];
                start = end;
                m
            })
            .collect();
        let offsets = &self.offsets;
        let (values, kept) = decoder.decode(&messages, |i| {
            format!("partition {partition} offset {}", offsets[i])
        })?;
        let mut columns: Vec<ArrayRef> = values.columns().to_vec();
        for (meta, _) in includes {
            columns.push(match meta {
                KafkaMeta::Key => {
                    let mut b = BinaryBuilder::new();
                    for &i in &kept {
                        b.append_option(self.keys[i].as_deref());
                    }
                    Arc::new(b.finish())
                }
                KafkaMeta::Partition => Arc::new(Int32Array::from(vec![partition; kept.len()])),
                KafkaMeta::Offset => Arc::new(Int64Array::from_iter_values(
                    kept.iter().map(|&i| self.offsets[i]),
                )),
                KafkaMeta::Timestamp => Arc::new(
                    TimestampMillisecondArray::from_iter(kept.iter().map(|&i| self.timestamps[i]))
                        .with_timezone("+00:00"),
                ),
            });
        }
        *self = Pending::default();
        Ok(RecordBatch::try_new(Arc::clone(out_schema), columns)?)
    }
}
