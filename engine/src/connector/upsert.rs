//! `UpsertSplit`: one partition of a Kafka changelog topic (upsert or Debezium) read as a
//! table's changes. A new row for a key replaces the key's row (its old row is retracted), a
//! delete removes it; keys live in one partition, so each split keeps the current rows of its
//! own keys. The first barrier follows the topic's contents at start (the table's backfill).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter};
use parking_lot::Mutex;
use rdkafka::message::Message;

use crate::connector::debezium::{DebeziumDecoder, DebeziumOp};
use crate::connector::kafka::{KafkaConfig, KafkaSplit, PartitionRange};
use crate::runtime::{ReadResult, SplitProgress, SplitReader};
use crate::{ChangeBatch, Result, row_converter};

/// How a topic's messages say what happened to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangelogFormat {
    /// `FORMAT UPSERT`: the message key is the key, the value its new row, a null value
    /// (tombstone) deletes it.
    Upsert,
    /// `FORMAT DEBEZIUM`: each value is an event (`DebeziumDecoder`); the key is the row's
    /// primary key columns, at these indexes. Tombstones (null values) are ignored: the
    /// delete event before them did the delete.
    Debezium { key_columns: Vec<usize> },
}

/// One partition of an upsert topic as a stream of changes.
pub struct UpsertSplit {
    kafka: KafkaSplit,
    debezium: Option<(DebeziumDecoder, RowConverter, Vec<usize>)>,
    partition: i32,
    schema: SchemaRef,
    rows: RowConverter,
    current: HashMap<Vec<u8>, OwnedRow>,
    progress: Arc<Mutex<SplitProgress>>,
    /// The partition's end when reading began: the first barrier waits for it.
    backfill_end: i64,
    /// Changes of messages before this offset only rebuild the keys' rows, unsent: a
    /// dataflow restored from a checkpoint has them (see `resume_at`).
    emit_from: i64,
}

impl UpsertSplit {
    pub fn new(
        config: KafkaConfig,
        range: PartitionRange,
        schema: SchemaRef,
        format: ChangelogFormat,
        progress: Arc<Mutex<SplitProgress>>,
    ) -> Result<Self> {
        let debezium = match format {
            ChangelogFormat::Upsert => None,
            ChangelogFormat::Debezium { key_columns } => {
                let key_fields: Vec<_> = key_columns
                    .iter()
                    .map(|&i| Arc::clone(&schema.fields()[i]))
                    .collect();
                Some((
                    DebeziumDecoder::new(&schema),
                    row_converter(&key_fields)?,
                    key_columns,
                ))
            }
        };
        Ok(Self {
            debezium,
            kafka: KafkaSplit::new(
                config,
                range,
                Arc::clone(&schema),
                Vec::new(),
                Arc::clone(&progress),
            ),
            rows: row_converter(schema.fields())?,
            partition: range.partition,
            schema,
            current: HashMap::new(),
            progress,
            backfill_end: range.end,
            emit_from: range.start,
        })
    }

    /// For a dataflow restored at `offset`: the split still reads from its start (each key's
    /// current row is the split's state) but sends only the changes from `offset` on. The
    /// first barrier follows `offset` too.
    pub fn resume_at(mut self, offset: i64) -> Self {
        self.emit_from = offset;
        self.backfill_end = self.backfill_end.max(offset);
        self
    }
}

/// An ad hoc read gives up when a partition yields nothing for this long before its end.
const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Messages an ad hoc read polls at a time.
const AD_HOC_BATCH_ROWS: usize = 8192;

impl UpsertSplit {
    /// Reads the partition to its end at start and returns the rows its keys hold then (an
    /// ad hoc query's scan): the same fold a dataflow's split does, so a query and a view
    /// agree on every topic, malformed messages included. Errors are in `progress`.
    pub fn current_rows(mut self) -> Result<RecordBatch> {
        self.emit_from = i64::MAX;
        let mut last = (self.kafka.next_offset(), std::time::Instant::now());
        while self.read_ready(AD_HOC_BATCH_ROWS)?.is_some() {
            let offset = self.kafka.next_offset();
            if offset > last.0 {
                last = (offset, std::time::Instant::now());
            } else if last.1.elapsed() > STALL_TIMEOUT {
                return Err(crate::EngineError::External(format!(
                    "partition {} stalled at offset {offset} (end {})",
                    self.partition, self.backfill_end
                )));
            }
        }
        let columns = self
            .rows
            .convert_rows(self.current.values().map(|r| r.row()))?;
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// A message as polled.
struct Polled {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    offset: i64,
}

/// A key's new row (None: deleted), from the message at `offset`.
struct Assignment {
    key: Vec<u8>,
    row: Option<OwnedRow>,
    offset: i64,
}

impl UpsertSplit {
    /// Upsert: the message key is the key; a malformed value leaves the key's row as it was.
    fn upsert_assignments(&mut self, messages: Vec<Polled>) -> Result<Vec<Assignment>> {
        let keyless = messages.iter().filter(|m| m.key.is_none()).count() as u64;
        if keyless > 0 {
            let mut p = self.progress.lock();
            p.parse_errors += keyless;
            p.last_error = Some(format!("{keyless} messages without a key"));
        }
        let (values, offsets): (Vec<&[u8]>, Vec<i64>) = messages
            .iter()
            .filter(|m| m.key.is_some())
            .filter_map(|m| m.value.as_deref().map(|v| (v, m.offset)))
            .unzip();
        let (batch, kept) = self.kafka.decode(&values, &offsets)?;
        let decoded = self.rows.convert_columns(batch.columns())?;
        // Value i (in `values` order) decoded to row decoded_of[i], if it was well-formed.
        let mut decoded_of = vec![None; values.len()];
        for (row, &i) in kept.iter().enumerate() {
            decoded_of[i] = Some(row);
        }
        let mut value_index = 0;
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            let Some(key) = m.key else { continue };
            let row = match m.value {
                None => None,
                Some(_) => {
                    value_index += 1;
                    match decoded_of[value_index - 1] {
                        Some(row) => Some(decoded.row(row).owned()),
                        // Malformed (counted by the decoder): the key keeps its row.
                        None => continue,
                    }
                }
            };
            out.push(Assignment {
                key,
                row,
                offset: m.offset,
            });
        }
        Ok(out)
    }

    /// Debezium: each event's primary key is the key; an update that changed the key also
    /// deletes the old one. Malformed events are counted and skipped.
    fn debezium_assignments(&mut self, messages: &[Polled]) -> Result<Vec<Assignment>> {
        let (decoder, keys, key_columns) = self
            .debezium
            .as_mut()
            .expect("invariant: called for Debezium splits");
        let (values, offsets): (Vec<&[u8]>, Vec<i64>) = messages
            .iter()
            .filter_map(|m| m.value.as_deref().map(|v| (v, m.offset)))
            .unzip();
        let errors_before = decoder.stats().errors;
        let partition = self.partition;
        let events = decoder.decode(&values, |i| {
            format!("partition {partition} offset {}", offsets[i])
        })?;
        let stats = decoder.stats();
        if stats.errors > errors_before {
            let mut p = self.progress.lock();
            p.parse_errors += stats.errors - errors_before;
            p.last_error.clone_from(&stats.last_error);
        }
        let key_of = |rows: &arrow::array::StructArray| {
            let columns: Vec<_> = key_columns
                .iter()
                .map(|&i| Arc::clone(rows.column(i)))
                .collect();
            keys.convert_columns(&columns)
        };
        let (before_keys, after_keys) = (key_of(&events.before)?, key_of(&events.after)?);
        let after = self.rows.convert_columns(events.after.columns())?;
        let mut out = Vec::with_capacity(events.ops.len());
        for (j, op) in events.ops.iter().enumerate() {
            let offset = offsets[events.messages[j]];
            let before_key = events.before.is_valid(j).then(|| before_keys.row(j));
            if *op == DebeziumOp::Delete {
                let key = before_key.expect("invariant: a decoded delete has before");
                out.push(Assignment {
                    key: key.as_ref().to_vec(),
                    row: None,
                    offset,
                });
                continue;
            }
            let key = after_keys.row(j);
            if let Some(old) = before_key
                && old != key
            {
                out.push(Assignment {
                    key: old.as_ref().to_vec(),
                    row: None,
                    offset,
                });
            }
            out.push(Assignment {
                key: key.as_ref().to_vec(),
                row: Some(after.row(j).owned()),
                offset,
            });
        }
        Ok(out)
    }
}

impl SplitReader for UpsertSplit {
    /// Until the topic's contents at start are read, everything is "ready": the first
    /// barrier follows the whole table, so the first epoch of a view has all of it.
    fn read_ready(&mut self, max_rows: usize) -> Result<Option<ReadResult>> {
        if self.kafka.next_offset() >= self.backfill_end {
            return Ok(None);
        }
        self.read(max_rows).map(Some)
    }

    fn read(&mut self, max_rows: usize) -> Result<ReadResult> {
        let mut messages: Vec<Polled> = Vec::new();
        let polled = self.kafka.poll(max_rows, |msg| {
            messages.push(Polled {
                key: msg.key().map(<[u8]>::to_vec),
                value: msg.payload().map(<[u8]>::to_vec),
                offset: msg.offset(),
            })
        })?;
        if polled.is_none() {
            return Ok(ReadResult::Idle);
        }
        let assignments = match self.debezium.is_some() {
            false => self.upsert_assignments(messages)?,
            true => self.debezium_assignments(&messages)?,
        };
        let mut changes: Vec<(OwnedRow, i64)> = Vec::new();
        for Assignment { key, row, offset } in assignments {
            let emit = offset >= self.emit_from;
            let old = match row {
                Some(new) => {
                    if emit {
                        changes.push((new.clone(), 1));
                    }
                    self.current.insert(key, new)
                }
                None => self.current.remove(&key),
            };
            if let Some(old) = old
                && emit
            {
                changes.push((old, -1));
            }
        }
        let columns = self
            .rows
            .convert_rows(changes.iter().map(|(r, _)| r.row()))?;
        let weights = changes.iter().map(|(_, w)| *w);
        Ok(ReadResult::Changes(ChangeBatch::from_columns(
            &self.schema,
            columns,
            weights,
        )?))
    }
}
