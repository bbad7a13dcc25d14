//! `UpsertSplit`: one partition of a Kafka upsert topic read as a table's changelog. A value
//! for a key replaces the key's row (its old row is retracted), a tombstone deletes it; keys
//! live in one partition, so each split keeps the current rows of its own keys. The first
//! barrier follows the topic's contents at start (the table's backfill).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter};
use parking_lot::Mutex;
use rdkafka::message::Message;

use crate::connector::kafka::{KafkaConfig, KafkaSplit, PartitionRange};
use crate::runtime::{ReadResult, SplitProgress, SplitReader};
use crate::{ChangeBatch, Result, row_converter};

/// What one message does to its key.
enum Upsert {
    /// Value bytes to decode.
    Value(Vec<u8>, i64),
    Tombstone(i64),
}

impl Upsert {
    fn offset(&self) -> i64 {
        match self {
            Self::Value(_, o) | Self::Tombstone(o) => *o,
        }
    }
}

/// One partition of an upsert topic as a stream of changes.
pub struct UpsertSplit {
    kafka: KafkaSplit,
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
        progress: Arc<Mutex<SplitProgress>>,
    ) -> Result<Self> {
        Ok(Self {
            kafka: KafkaSplit::new(
                config,
                range,
                Arc::clone(&schema),
                Vec::new(),
                Arc::clone(&progress),
            ),
            rows: row_converter(schema.fields())?,
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
        let mut messages: Vec<(Vec<u8>, Upsert)> = Vec::new();
        let mut keyless = 0;
        let polled = self.kafka.poll(max_rows, |msg| match msg.key() {
            None => keyless += 1,
            Some(k) => messages.push((
                k.to_vec(),
                match msg.payload() {
                    Some(v) => Upsert::Value(v.to_vec(), msg.offset()),
                    None => Upsert::Tombstone(msg.offset()),
                },
            )),
        })?;
        if polled.is_none() {
            return Ok(ReadResult::Idle);
        }
        if keyless > 0 {
            let mut p = self.progress.lock();
            p.parse_errors += keyless;
            p.last_error = Some(format!("{keyless} messages without a key"));
        }
        let (values, offsets): (Vec<&[u8]>, Vec<i64>) = messages
            .iter()
            .filter_map(|(_, m)| match m {
                Upsert::Value(v, offset) => Some((v.as_slice(), *offset)),
                Upsert::Tombstone(_) => None,
            })
            .unzip();
        let (batch, kept) = self.kafka.decode(&values, &offsets)?;
        let decoded = self.rows.convert_columns(batch.columns())?;
        // Value i (in `values` order) decoded to row decoded_of[i], if it was well-formed.
        let mut decoded_of = vec![None; values.len()];
        for (row, &i) in kept.iter().enumerate() {
            decoded_of[i] = Some(row);
        }
        let mut changes: Vec<(OwnedRow, i64)> = Vec::new();
        let mut value_index = 0;
        for (key, message) in messages {
            let emit = message.offset() >= self.emit_from;
            let new = match message {
                Upsert::Tombstone(_) => None,
                Upsert::Value(..) => {
                    value_index += 1;
                    match decoded_of[value_index - 1] {
                        Some(row) => Some(decoded.row(row).owned()),
                        // Malformed (counted by the decoder): the key keeps its row.
                        None => continue,
                    }
                }
            };
            let old = match new {
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
