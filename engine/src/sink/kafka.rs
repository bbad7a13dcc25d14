//! `KafkaSink`: delivers a sink's messages to a topic through librdkafka, keeping at most
//! `MAX_IN_FLIGHT` unacknowledged; `prepare` (a checkpoint) returns once every message sent
//! is acknowledged, which makes the sink at-least-once.
//! A broker that is away is waited for (librdkafka retries; nothing times out), so a sink
//! never drops output: it falls behind, and its checkpoints wait.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use async_trait::async_trait;

use super::{SinkEncoder, SinkMessage, SinkWriter};
use crate::{Barrier, ChangeBatch, EngineError, Epoch, Result, StateSnapshot};

/// Messages sent but not yet acknowledged before `send` waits for the oldest.
pub const MAX_IN_FLIGHT: usize = 100_000;

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
    producer: FutureProducer,
    encoder: SinkEncoder,
    topic: String,
    in_flight: VecDeque<(DeliveryFuture, usize)>,
    progress: Arc<Mutex<SinkProgress>>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .field("in_flight", &self.in_flight.len())
            .finish()
    }
}

impl KafkaSink {
    pub fn new(
        config: &KafkaSinkConfig,
        encoder: SinkEncoder,
        progress: Arc<Mutex<SinkProgress>>,
    ) -> Result<Self> {
        let mut cc = ClientConfig::new();
        // Idempotent: a retried batch is not written twice. No delivery timeout: a message
        // waits for its broker rather than being dropped.
        cc.set("enable.idempotence", "true")
            .set("message.timeout.ms", "0")
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        for (k, v) in &config.properties {
            cc.set(k, v);
        }
        Ok(Self {
            producer: cc.create()?,
            encoder,
            topic: config.topic.clone(),
            in_flight: VecDeque::new(),
            progress,
        })
    }

    /// Queues `messages` for delivery; waits while librdkafka's queue is full or
    /// `MAX_IN_FLIGHT` are unacknowledged.
    pub async fn send(&mut self, messages: &[SinkMessage]) -> Result<()> {
        for m in messages {
            if self.in_flight.len() >= MAX_IN_FLIGHT {
                self.settle_oldest().await?;
            }
            loop {
                let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic);
                if let Some(k) = &m.key {
                    record = record.key(k.as_slice());
                }
                if let Some(v) = &m.value {
                    record = record.payload(v.as_slice());
                }
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        let bytes = m.key.as_ref().map_or(0, Vec::len)
                            + m.value.as_ref().map_or(0, Vec::len);
                        self.in_flight.push_back((delivery, bytes));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        if self.in_flight.is_empty() {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        } else {
                            self.settle_oldest().await?;
                        }
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    /// Waits until every message sent so far is acknowledged, then records `epoch` as
    /// delivered.
    pub async fn flush(&mut self, epoch: u64) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        self.progress.lock().last_epoch = epoch;
        Ok(())
    }

    /// Waits for the oldest delivery; a refused message is sent again after a pause (a
    /// message the broker can never take fails the sink).
    async fn settle_oldest(&mut self) -> Result<()> {
        let Some((delivery, bytes)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match delivery.await {
            Ok(Ok(d)) => {
                let mut p = self.progress.lock();
                let entry = p.partitions.entry(d.partition).or_default();
                entry.0 += 1;
                entry.1 += bytes as u64;
                Ok(())
            }
            Ok(Err((e, message))) => {
                {
                    let mut p = self.progress.lock();
                    p.errors += 1;
                    p.last_error = Some(e.to_string());
                }
                if is_permanent(&e) {
                    return Err(EngineError::External(format!(
                        "sink topic {} refused a message: {e}",
                        self.topic
                    )));
                }
                tracing::warn!(topic = %self.topic, error = %e, "sink delivery failed; retrying");
                tokio::time::sleep(RETRY_BACKOFF).await;
                let again = SinkMessage {
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                };
                // Ahead of the rest, so a key's messages stay in order.
                let mut rest = std::mem::take(&mut self.in_flight);
                Box::pin(self.send(std::slice::from_ref(&again))).await?;
                self.in_flight.append(&mut rest);
                Ok(())
            }
            Err(_) => Err(EngineError::External("the sink's producer stopped".into())),
        }
    }
}

#[async_trait]
impl SinkWriter for KafkaSink {
    async fn write(&mut self, changes: &ChangeBatch, ts_ms: i64, snapshot: bool) -> Result<()> {
        let messages = self.encoder.encode(changes, ts_ms, snapshot)?;
        self.send(&messages).await
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
