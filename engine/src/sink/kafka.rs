//! `KafkaSink`: delivers a sink's messages to a topic through librdkafka, keeping at most
//! `MAX_IN_FLIGHT` unacknowledged; `prepare` (a checkpoint) returns once every message sent
//! is acknowledged, which makes the sink at-least-once.
//! A broker that is away is waited for (librdkafka retries; nothing times out), so a sink
//! never drops output: it falls behind, and prepares no checkpoint until it catches up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use rdkafka::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message as _};
use rdkafka::producer::{BaseRecord, Producer as _, ProducerContext, ThreadedProducer};
use tokio::sync::Notify;

use super::{SinkEncoder, SinkMessage, SinkWriter};
use crate::{Barrier, ChangeBatch, EngineError, Epoch, Result, StateSnapshot};

/// Messages sent but not yet acknowledged before `send` waits for the oldest.
pub const MAX_IN_FLIGHT: usize = 100_000;

/// librdkafka properties of a sink's producer, under the user's `properties.*`.
/// Idempotent: a retried batch is not written twice. No delivery timeout: a message waits
/// for its broker rather than being dropped.
pub const PRODUCER_DEFAULTS: [(&str, &str); 4] = [
    ("enable.idempotence", "true"),
    ("message.timeout.ms", "0"),
    ("linger.ms", "5"),
    ("compression.type", "lz4"),
];

/// How long to wait before resending a message the broker refused.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// What a sink has delivered, per partition, for `weir_catalog.sink_progress`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkProgress {
    /// Acknowledged messages and their bytes (key + value), per partition.
    pub partitions: BTreeMap<i32, (u64, u64)>,
    /// The last epoch all of whose messages are acknowledged.
    pub last_epoch: u64,
    /// Deliveries that failed and were sent again, and the last failure.
    pub errors: u64,
    pub last_error: Option<String>,
}

/// Where a Kafka sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSinkConfig {
    pub topic: String,
    /// Where an exactly-once sink records the checkpoint each transaction committed.
    pub progress_topic: String,
    /// librdkafka properties (`bootstrap.servers`, ...), the user's over weir's defaults.
    pub properties: BTreeMap<String, String>,
}

/// A producer for one sink.
pub struct KafkaSink {
    producer: ThreadedProducer<Deliveries>,
    encoder: SinkEncoder,
    topic: String,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .field("in_flight", &self.deliveries().in_flight())
            .finish()
    }
}

/// Counts what librdkafka acknowledges (on its polling thread): no future per message.
struct Deliveries {
    /// Messages sent and not yet acknowledged or failed.
    in_flight: AtomicU64,
    /// Messages the broker refused, to send again (a message no retry can fix fails the sink).
    failed: Mutex<Vec<(SinkMessage, KafkaError)>>,
    /// Something was acknowledged or failed.
    settled: Notify,
    progress: Arc<Mutex<SinkProgress>>,
}

impl Deliveries {
    fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    /// The message's bytes (key + value), for `sink_progress`.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, bytes: usize) {
        match result {
            Ok(m) => {
                let mut p = self.progress.lock();
                let entry = p.partitions.entry(m.partition()).or_default();
                entry.0 += 1;
                entry.1 += bytes as u64;
            }
            Err((e, m)) => {
                {
                    let mut p = self.progress.lock();
                    p.errors += 1;
                    p.last_error = Some(e.to_string());
                }
                let again = SinkMessage {
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                };
                self.failed.lock().push((again, e.clone()));
            }
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.settled.notify_waiters();
    }
}

impl KafkaSink {
    pub fn new(
        config: &KafkaSinkConfig,
        encoder: SinkEncoder,
        progress: Arc<Mutex<SinkProgress>>,
    ) -> Result<Self> {
        let mut cc = ClientConfig::new();
        for (k, v) in PRODUCER_DEFAULTS {
            cc.set(k, v);
        }
        for (k, v) in &config.properties {
            cc.set(k, v);
        }
        let deliveries = Deliveries {
            in_flight: AtomicU64::new(0),
            failed: Mutex::new(Vec::new()),
            settled: Notify::new(),
            progress,
        };
        Ok(Self {
            producer: cc.create_with_context(deliveries)?,
            encoder,
            topic: config.topic.clone(),
        })
    }

    fn deliveries(&self) -> &Deliveries {
        self.producer.context()
    }

    /// Queues `messages` for delivery; waits while librdkafka's queue is full or
    /// `MAX_IN_FLIGHT` are unacknowledged.
    pub async fn send<'m>(
        &self,
        messages: impl IntoIterator<Item = (Option<&'m [u8]>, Option<&'m [u8]>)> + Send,
    ) -> Result<()> {
        self.resend_failed().await?;
        for (key, value) in messages {
            loop {
                let settled = self.deliveries().settled.notified();
                if self.deliveries().in_flight() >= MAX_IN_FLIGHT as u64 {
                    settled.await;
                    continue;
                }
                let bytes = key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
                let mut record: BaseRecord<'_, [u8], [u8], usize> =
                    BaseRecord::with_opaque_to(&self.topic, bytes);
                if let Some(k) = key {
                    record = record.key(k);
                }
                if let Some(v) = value {
                    record = record.payload(v);
                }
                // Counted before it can be acknowledged.
                self.deliveries().in_flight.fetch_add(1, Ordering::AcqRel);
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((e, _)) => {
                        self.deliveries().in_flight.fetch_sub(1, Ordering::AcqRel);
                        if e.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
                            return Err(e.into());
                        }
                        // Wait for something to settle (or a moment, if nothing is out).
                        let _ = tokio::time::timeout(Duration::from_millis(10), settled).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Waits until every message sent so far is acknowledged, then records `epoch` as
    /// delivered.
    pub async fn flush(&self, epoch: u64) -> Result<()> {
        loop {
            let settled = self.deliveries().settled.notified();
            self.resend_failed().await?;
            if self.deliveries().in_flight() == 0 && self.deliveries().failed.lock().is_empty() {
                break;
            }
            settled.await;
        }
        self.deliveries().progress.lock().last_epoch = epoch;
        Ok(())
    }

    /// Sends again, after a pause, what the broker refused (a message the broker can never
    /// take fails the sink).
    async fn resend_failed(&self) -> Result<()> {
        let failed = std::mem::take(&mut *self.deliveries().failed.lock());
        if failed.is_empty() {
            return Ok(());
        }
        if let Some((_, e)) = failed.iter().find(|(_, e)| is_permanent(e)) {
            return Err(EngineError::External(format!(
                "sink topic {} refused a message: {e}",
                self.topic
            )));
        }
        tracing::warn!(topic = %self.topic, error = %failed[0].1, "sink delivery failed; retrying");
        tokio::time::sleep(RETRY_BACKOFF).await;
        let again: Vec<SinkMessage> = failed.into_iter().map(|(m, _)| m).collect();
        Box::pin(self.send(again.iter().map(SinkMessage::parts))).await
    }
}

#[async_trait]
impl SinkWriter for KafkaSink {
    async fn write(&mut self, changes: &ChangeBatch, ts_ms: i64, snapshot: bool) -> Result<()> {
        let messages = self.encoder.encode(changes, ts_ms, snapshot)?;
        self.send(messages.iter()).await
    }

    /// Waits for every acknowledgement: the checkpoint is never ahead of the topic.
    async fn prepare(&mut self, barrier: &Barrier) -> Result<StateSnapshot> {
        self.flush(barrier.epoch).await?;
        Ok(StateSnapshot::default())
    }

    /// Delivered already, at `prepare`.
    async fn commit(&mut self, _checkpoint: Epoch) -> Result<()> {
        Ok(())
    }
}

/// Errors no retry can fix.
fn is_permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::InvalidMessage
        )
    )
}
