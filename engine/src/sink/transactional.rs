//! `TransactionalKafkaSink`: exactly-once Kafka output (`sink.semantic = 'exactly_once'`).
//!
//! The window to close is a crash between "checkpoint C committed" and "C's Kafka
//! transaction committed": restored at C, the view sends only what follows C, so C's output
//! would be lost if its transaction was aborted, and sent twice if it was committed and sent
//! again. Closed by two rules:
//! - The output of a checkpoint interval is kept, not sent, until its checkpoint commits:
//!   `prepare` returns the messages as its state (saved durably by the caller before it
//!   calls `commit`), and `commit` sends them in one transaction that also writes a
//!   progress record (transactional id -> checkpoint) to the progress topic. Nothing is in a
//!   transaction that a prepared state does not hold.
//! - On restart the producer is fenced and its open transaction aborted
//!   (`init_transactions`), and the progress topic is read with `read_committed`: if the
//!   restored state's transaction committed, its messages are dropped; if not, they are
//!   sent again in a new transaction from the state's copy. Either way each message is
//!   committed once.
//!
//! The cost is latency (output appears when its checkpoint commits, as with Flink's
//! exactly-once sinks) and one interval's output kept in memory and in the prepared state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, BinaryArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use async_trait::async_trait;
use parking_lot::Mutex;
use rdkafka::Offset;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::{KafkaSinkConfig, SinkEncoder, SinkMessage, SinkProgress, SinkWriter};
use crate::{Barrier, ChangeBatch, EngineError, Epoch, Result, StateSnapshot};

/// How long a transaction call (init, commit, abort) may take before it fails and is tried
/// again.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Set in the environment, the process aborts inside the commit path: the checkpoint is
/// committed and its transaction not yet begun, so only the checkpoint's copy of the
/// output can bring it out. Tests only (the crash test's one timed crash; librdkafka's mock
/// cluster, where it runs, shows open and aborted transactions' records to read_committed
/// consumers, so a crash after the sends could not be judged there).
pub const CRASH_BEFORE_COMMIT: &str = "WEIR_TEST_CRASH_BEFORE_SINK_COMMIT";

/// Empty polls (of 500 ms) after which the progress topic counts as read.
const PROGRESS_IDLE_POLLS: u32 = 3;

/// The pause before a failed transaction is tried again.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// An exactly-once producer for one sink (see the module doc).
pub struct TransactionalKafkaSink {
    producer: FutureProducer,
    encoder: SinkEncoder,
    config: KafkaSinkConfig,
    transactional_id: String,
    /// Messages since the last committed transaction, by the checkpoint they were prepared
    /// for; `current` has those not prepared yet.
    pending: BTreeMap<Epoch, Vec<SinkMessage>>,
    current: Vec<SinkMessage>,
    progress: Arc<Mutex<SinkProgress>>,
}

impl std::fmt::Debug for TransactionalKafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalKafkaSink")
            .field("transactional_id", &self.transactional_id)
            .finish()
    }
}

fn blocking_error(e: tokio::task::JoinError) -> EngineError {
    EngineError::External(format!("a Kafka transaction call stopped: {e}"))
}

impl TransactionalKafkaSink {
    /// Fences any earlier producer of the sink, then recovers `restored` (the newest state it
    /// prepared by the checkpoint the server restarted from, if any); see the module doc.
    pub async fn open(
        config: &KafkaSinkConfig,
        transactional_id: &str,
        encoder: SinkEncoder,
        restored: Option<(Epoch, &StateSnapshot)>,
        progress: Arc<Mutex<SinkProgress>>,
    ) -> Result<Self> {
        let mut cc = ClientConfig::new();
        cc.set("transactional.id", transactional_id)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5");
        for (k, v) in &config.properties {
            cc.set(k, v);
        }
        let producer: FutureProducer = cc.create()?;
        let p = producer.clone();
        tokio::task::spawn_blocking(move || p.init_transactions(TRANSACTION_TIMEOUT))
            .await
            .map_err(blocking_error)??;
        let mut sink = Self {
            producer,
            encoder,
            config: config.clone(),
            transactional_id: transactional_id.to_string(),
            pending: BTreeMap::new(),
            current: Vec::new(),
            progress,
        };
        if let Some((checkpoint, state)) = restored {
            let committed = sink.committed_checkpoint().await?;
            if committed.is_none_or(|c| c < checkpoint) {
                sink.pending.insert(checkpoint, messages_of(state)?);
                sink.commit(checkpoint).await?;
            }
        }
        Ok(sink)
    }

    /// The newest checkpoint whose transaction committed, from the progress topic.
    async fn committed_checkpoint(&self) -> Result<Option<Epoch>> {
        let mut cc = ClientConfig::new();
        for (k, v) in &self.config.properties {
            if !k.starts_with("transaction") {
                cc.set(k, v);
            }
        }
        cc.set("isolation.level", "read_committed")
            .set("group.id", format!("{}-progress", self.transactional_id))
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer = cc.create()?;
        let topic = self.config.progress_topic.clone();
        let id = self.transactional_id.clone();
        tokio::task::spawn_blocking(move || read_progress(&consumer, &topic, &id))
            .await
            .map_err(blocking_error)?
    }

    /// One attempt at sending the checkpoints' messages up to `checkpoint` and the progress
    /// record in one transaction.
    async fn try_commit(&self, checkpoint: Epoch) -> Result<()> {
        if std::env::var_os(CRASH_BEFORE_COMMIT).is_some() {
            tracing::error!("{CRASH_BEFORE_COMMIT} is set: aborting inside the commit path");
            std::process::abort();
        }
        self.producer.begin_transaction()?;
        let mut deliveries = Vec::new();
        let progress_value = format!(r#"{{"checkpoint":{checkpoint}}}"#);
        let messages = self.pending.range(..=checkpoint).flat_map(|(_, m)| m);
        for m in messages {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.config.topic);
            if let Some(k) = &m.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &m.value {
                record = record.payload(v.as_slice());
            }
            deliveries.push(self.send(record).await?);
        }
        let record = FutureRecord::to(&self.config.progress_topic)
            .key(self.transactional_id.as_bytes())
            .payload(progress_value.as_bytes());
        deliveries.push(self.send(record).await?);
        let mut delivered = BTreeMap::<i32, (u64, u64)>::new();
        for (d, bytes, is_output) in deliveries {
            match d.await {
                Ok(Ok(d)) if is_output => {
                    let e = delivered.entry(d.partition).or_default();
                    e.0 += 1;
                    e.1 += bytes as u64;
                }
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(EngineError::External("the sink's producer stopped".into())),
            }
        }
        let p = self.producer.clone();
        tokio::task::spawn_blocking(move || p.commit_transaction(TRANSACTION_TIMEOUT))
            .await
            .map_err(blocking_error)??;
        let mut progress = self.progress.lock();
        for (partition, (rows, bytes)) in delivered {
            let e = progress.partitions.entry(partition).or_default();
            e.0 += rows;
            e.1 += bytes;
        }
        Ok(())
    }

    /// Queues one record, waiting while librdkafka's queue is full.
    async fn send(
        &self,
        record: FutureRecord<'_, [u8], [u8]>,
    ) -> Result<(rdkafka::producer::DeliveryFuture, usize, bool)> {
        let bytes = record.key.map_or(0, <[u8]>::len) + record.payload.map_or(0, <[u8]>::len);
        let is_output = record.topic == self.config.topic;
        let mut record = record;
        loop {
            match self.producer.send_result(record) {
                Ok(d) => return Ok((d, bytes, is_output)),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
}

#[async_trait]
impl SinkWriter for TransactionalKafkaSink {
    async fn write(&mut self, changes: &ChangeBatch, ts_ms: i64, snapshot: bool) -> Result<()> {
        let messages = self.encoder.encode(changes, ts_ms, snapshot)?;
        self.current.extend(messages.to_vec());
        Ok(())
    }

    /// Moves what was written since the last checkpoint under this one, and hands the
    /// checkpoint every message not yet committed.
    async fn prepare(&mut self, barrier: &Barrier) -> Result<StateSnapshot> {
        let current = std::mem::take(&mut self.current);
        if !current.is_empty() {
            self.pending
                .entry(barrier.checkpoint)
                .or_default()
                .extend(current);
        }
        let all: Vec<&SinkMessage> = self.pending.values().flatten().collect();
        let column = |f: fn(&SinkMessage) -> Option<&[u8]>| {
            Arc::new(BinaryArray::from_iter(all.iter().map(|m| f(m)))) as _
        };
        let mut state = StateSnapshot::default();
        state.put(
            "messages",
            RecordBatch::try_new(
                Arc::new(Schema::new(vec![
                    Field::new("key", DataType::Binary, true),
                    Field::new("value", DataType::Binary, true),
                ])),
                vec![column(|m| m.key.as_deref()), column(|m| m.value.as_deref())],
            )?,
        );
        self.progress.lock().last_epoch = barrier.epoch;
        Ok(state)
    }

    /// Sends and commits in one transaction; a failed attempt is aborted and tried again,
    /// and a fenced producer (another weir took the sink over) fails the sink.
    async fn commit(&mut self, checkpoint: Epoch) -> Result<()> {
        if self.pending.range(..=checkpoint).next().is_none() {
            return Ok(());
        }
        loop {
            match self.try_commit(checkpoint).await {
                Ok(()) => break,
                Err(e) => {
                    {
                        let mut p = self.progress.lock();
                        p.errors += 1;
                        p.last_error = Some(e.to_string());
                    }
                    if let EngineError::Kafka(k) = &e
                        && k.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Fenced)
                    {
                        return Err(e);
                    }
                    tracing::warn!(topic = %self.config.topic, error = %e, "sink transaction failed; retrying");
                    let p = self.producer.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        p.abort_transaction(TRANSACTION_TIMEOUT)
                    })
                    .await;
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
            }
        }
        let later = self.pending.split_off(&(checkpoint + 1));
        self.pending = later;
        Ok(())
    }
}

/// The messages a checkpoint's part holds.
fn messages_of(state: &StateSnapshot) -> Result<Vec<SinkMessage>> {
    let corrupt = || EngineError::CorruptCheckpoint("exactly-once sink state".into());
    let t = state.table("messages").ok_or_else(corrupt)?;
    let binary = |i: usize| {
        t.column(i)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(corrupt)
    };
    let (keys, values) = (binary(0)?, binary(1)?);
    Ok((0..t.num_rows())
        .map(|i| SinkMessage {
            key: keys.is_valid(i).then(|| keys.value(i).to_vec()),
            value: values.is_valid(i).then(|| values.value(i).to_vec()),
        })
        .collect())
}

/// Reads the whole progress topic (committed records only) for `id`'s newest checkpoint.
fn read_progress(consumer: &BaseConsumer, topic: &str, id: &str) -> Result<Option<Epoch>> {
    let metadata = consumer.fetch_metadata(Some(topic), TRANSACTION_TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, TRANSACTION_TIMEOUT)?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    if ends.is_empty() {
        return Ok(None);
    }
    consumer.assign(&tpl)?;
    let mut newest = None;
    // A read_committed read ends at the last stable offset, and a transaction's marker
    // takes the offset after its records: a partition may never show its high watermark,
    // so the read also ends once nothing came for `PROGRESS_IDLE_POLLS` polls.
    let mut idle = 0;
    while !ends.is_empty() && idle < PROGRESS_IDLE_POLLS {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                idle = 0;
                if m.key() == Some(id.as_bytes())
                    && let Some(v) = m.payload()
                    && let Ok(value) = serde_json::from_slice::<serde_json::Value>(v)
                    && let Some(c) = value["checkpoint"].as_u64()
                {
                    newest = newest.max(Some(c));
                }
                if ends
                    .get(&m.partition())
                    .is_some_and(|&end| m.offset() + 1 >= end)
                {
                    ends.remove(&m.partition());
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => idle += 1,
        }
    }
    Ok(newest)
}
