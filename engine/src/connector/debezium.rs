//! Debezium's JSON change events (`FORMAT DEBEZIUM ENCODE JSON`) decoded into a table's rows.
//! An event is `{"before": row, "after": row, "op": "c|u|d|r", ...}`, bare or inside Kafka
//! Connect's `{"schema": ..., "payload": {...}}`; its other fields (`source`, `ts_ms`) are
//! ignored. Rows follow the JSON decoder's conventions (`JsonDecoder`).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StructArray};
use arrow::compute::filter;
use arrow::compute::kernels::zip::zip;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};

use crate::{DecodeStats, JsonDecoder, Result};

/// What an event did to its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebeziumOp {
    /// `c`: inserted.
    Create,
    /// `u`: updated; `before` may be absent (the source's replica identity decides).
    Update,
    /// `d`: deleted; `before` holds at least the key.
    Delete,
    /// `r`: read by the connector's snapshot (an insert).
    Read,
}

impl DebeziumOp {
    fn parse(op: &str) -> Option<Self> {
        Some(match op {
            "c" => Self::Create,
            "u" => Self::Update,
            "d" => Self::Delete,
            "r" => Self::Read,
            _ => return None,
        })
    }
}

/// Decoded events: event `i` came from message `messages[i]` and did `ops[i]`; row `i` of
/// `before` and `after` is its row before and after, null where the event has none.
#[derive(Debug)]
pub struct DebeziumEvents {
    pub messages: Vec<usize>,
    pub ops: Vec<DebeziumOp>,
    pub before: StructArray,
    pub after: StructArray,
}

/// Decodes Debezium envelopes of a table with `schema`, counting malformed ones.
pub struct DebeziumDecoder {
    json: JsonDecoder,
}

impl DebeziumDecoder {
    pub fn new(schema: &SchemaRef) -> Self {
        // Every column is nullable in the envelope: `before` or `after` is often null whole.
        let row_fields: Fields = schema
            .fields()
            .iter()
            .map(|f| Arc::new(f.as_ref().clone().with_nullable(true)))
            .collect();
        let row = DataType::Struct(row_fields.clone());
        let change = || {
            vec![
                Field::new("before", row.clone(), true),
                Field::new("after", row.clone(), true),
                Field::new("op", DataType::Utf8, true),
            ]
        };
        let mut fields = change();
        fields.push(Field::new(
            "payload",
            DataType::Struct(change().into()),
            true,
        ));
        Self {
            json: JsonDecoder::new(Arc::new(Schema::new(fields))),
        }
    }

    pub fn stats(&self) -> &DecodeStats {
        self.json.stats()
    }

    /// Decodes one event per message; `label(i)` names message `i` in error texts. A message
    /// that is not an event (no known `op`, no `after` for c/r/u, no `before` for d) is
    /// counted as malformed and skipped.
    pub fn decode(
        &mut self,
        messages: &[&[u8]],
        label: impl Fn(usize) -> String,
    ) -> Result<DebeziumEvents> {
        let (batch, kept) = self.json.decode(messages, &label)?;
        let payload = batch.column(3).as_struct();
        let wrapped = BooleanArray::from_iter(
            (0..batch.num_rows()).map(|i| Some(batch.column(2).is_null(i) && payload.is_valid(i))),
        );
        let pick = |i: usize| -> Result<ArrayRef> {
            let bare = batch.column(i);
            if wrapped.true_count() == 0 {
                return Ok(Arc::clone(bare));
            }
            Ok(zip(&wrapped, payload.column(i), bare)?)
        };
        let (before, after, op) = (pick(0)?, pick(1)?, pick(2)?);
        let op = op.as_string::<i32>();
        let mut keep = Vec::with_capacity(kept.len());
        let (mut messages_out, mut ops) = (Vec::new(), Vec::new());
        for (row, &message) in kept.iter().enumerate() {
            let parsed = op
                .is_valid(row)
                .then(|| op.value(row))
                .map(|o| (o, DebeziumOp::parse(o)));
            let error = match parsed {
                None => Some("a Debezium event needs \"op\"".to_string()),
                Some((o, None)) => Some(format!("unknown Debezium op \"{o}\"")),
                Some((_, Some(DebeziumOp::Delete))) if before.is_null(row) => {
                    Some("a Debezium delete needs \"before\"".to_string())
                }
                Some((_, Some(o))) if o != DebeziumOp::Delete && after.is_null(row) => {
                    Some("a Debezium create, read or update needs \"after\"".to_string())
                }
                Some((_, Some(o))) => {
                    messages_out.push(message);
                    ops.push(o);
                    None
                }
            };
            if let Some(error) = &error {
                self.json.reject(|| label(message), error);
            }
            keep.push(error.is_none());
        }
        let keep = BooleanArray::from(keep);
        // The filter keeps each row's validity: a null `before` stays null.
        let rows =
            |a: &ArrayRef| -> Result<StructArray> { Ok(filter(a, &keep)?.as_struct().clone()) };
        Ok(DebeziumEvents {
            messages: messages_out,
            ops,
            before: rows(&before)?,
            after: rows(&after)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    #[test]
    fn events_bare_and_wrapped_with_malformed_ones_counted() {
        let mut d = DebeziumDecoder::new(&schema());
        let messages: Vec<&[u8]> = vec![
            br#"{"before":null,"after":{"id":1,"name":"a"},"op":"c","ts_ms":1,"source":{"x":1}}"#,
            br#"{"schema":{"type":"struct"},"payload":{"before":{"id":1,"name":"a"},"after":{"id":1,"name":"b"},"op":"u"}}"#,
            br#"{"before":{"id":1},"after":null,"op":"d"}"#,
            br#"{"after":{"id":2},"op":"x"}"#,
            br#"{"before":null,"after":null,"op":"c"}"#,
            br#"{"after":{"id":3,"name":"r"},"op":"r"}"#,
            b"not json",
        ];
        let events = d.decode(&messages, |i| format!("message {i}")).unwrap();
        assert_eq!(events.messages, vec![0, 1, 2, 5]);
        use DebeziumOp::*;
        assert_eq!(events.ops, vec![Create, Update, Delete, Read]);
        let ids = |s: &StructArray| {
            let ids = s.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            (0..s.len())
                .map(|i| s.is_valid(i).then(|| ids.value(i)))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&events.before), vec![None, Some(1), Some(1), None]);
        assert_eq!(ids(&events.after), vec![Some(1), Some(1), None, Some(3)]);
        let names = events
            .after
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(names.value(1), "b");
        assert_eq!(d.stats().errors, 3);
        assert_eq!(d.stats().rows, 4);
        assert!(
            d.stats()
                .first_error
                .as_deref()
                .unwrap()
                .starts_with("message 6")
        );
        assert!(
            d.stats()
                .last_error
                .as_deref()
                .unwrap()
                .starts_with("message 4")
        );
    }
}
