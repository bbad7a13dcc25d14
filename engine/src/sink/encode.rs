//! `SinkEncoder`: one commit's consolidated changes as messages (key, value), in PLAIN,
//! UPSERT or DEBEZIUM JSON. Rows are JSON objects as `arrow-json` writes them, the reverse
//! of the source decoder: timestamps ISO-8601, decimals numbers, nulls explicit.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, FieldRef, SchemaRef};
use arrow::error::ArrowError;
use arrow_json::writer::{
    Encoder, EncoderFactory, EncoderOptions, LineDelimited, NullableEncoder, WriterBuilder,
};

use crate::{ChangeBatch, EngineError, Result};

/// How changes become messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkFormat {
    /// One message per inserted row, no key. A retraction is an error, or is dropped when
    /// `force_append_only`.
    Plain { force_append_only: bool },
    /// Key = the primary key as JSON; value = the row, or null (a tombstone) for a delete.
    /// An update's -1 and +1 of one key become one message.
    Upsert,
    /// Key as UPSERT; value = Debezium's envelope (`before`, `after`, `op` c/u/d/r, `ts_ms`,
    /// `source`), followed by a tombstone after a delete, as Debezium does for compaction.
    Debezium,
}

/// A message for the sink's topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkMessage {
    pub key: Option<Vec<u8>>,
    /// None: a tombstone.
    pub value: Option<Vec<u8>>,
}

impl SinkMessage {
    /// Its key and value (None: a tombstone).
    pub fn parts(&self) -> (Option<&[u8]>, Option<&[u8]>) {
        (self.key.as_deref(), self.value.as_deref())
    }
}

/// One commit's messages: their bytes in one buffer (no allocation per message), each
/// message a key and a value span of it.
#[derive(Debug)]
pub struct SinkMessages {
    bytes: Vec<u8>,
    spans: Vec<Span>,
}

/// Where a message's key and value are in `SinkMessages::bytes` (None: no key; a tombstone).
type Span = (Option<Range<usize>>, Option<Range<usize>>);

impl SinkMessages {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Each message's key and value (None: a tombstone).
    pub fn iter(&self) -> impl Iterator<Item = (Option<&[u8]>, Option<&[u8]>)> + '_ {
        self.spans.iter().map(|(k, v)| {
            (
                k.clone().map(|r| &self.bytes[r]),
                v.clone().map(|r| &self.bytes[r]),
            )
        })
    }

    /// Each message on its own.
    pub fn to_vec(&self) -> Vec<SinkMessage> {
        self.iter()
            .map(|(k, v)| SinkMessage {
                key: k.map(<[u8]>::to_vec),
                value: v.map(<[u8]>::to_vec),
            })
            .collect()
    }
}

/// Encodes a view's commits for one sink.
#[derive(Debug)]
pub struct SinkEncoder {
    format: SinkFormat,
    schema: SchemaRef,
    /// Columns of the primary key (UPSERT and DEBEZIUM; none for a one-row view: key `{}`).
    key: Vec<usize>,
    /// The sink's name as a JSON string, for Debezium's `source`.
    name_json: String,
}

impl SinkEncoder {
    pub fn new(format: SinkFormat, schema: SchemaRef, key: Vec<usize>, name: &str) -> Result<Self> {
        if let Some(&bad) = key.iter().find(|&&k| k >= schema.fields().len()) {
            return Err(EngineError::Internal(format!(
                "key column {bad} out of range"
            )));
        }
        Ok(Self {
            format,
            schema,
            key,
            name_json: serde_json::to_string(name).unwrap_or_else(|_| "\"\"".into()),
        })
    }

    /// The messages for one commit at `ts_ms`. `snapshot` marks the rows a sink starts with
    /// (Debezium op `r`).
    pub fn encode(
        &self,
        changes: &ChangeBatch,
        ts_ms: i64,
        snapshot: bool,
    ) -> Result<SinkMessages> {
        let data = changes.data();
        let weights = changes.weights().values();
        if data.schema().fields() != self.schema.fields() {
            return Err(EngineError::Internal(
                "the view's columns changed under its sink".into(),
            ));
        }
        match self.format {
            SinkFormat::Plain { force_append_only } => {
                if !force_append_only && weights.iter().any(|&w| w < 0) {
                    return Err(EngineError::Unsupported(
                        "a PLAIN sink got a retraction (an update or delete upstream); use \
                         FORMAT UPSERT or DEBEZIUM, or force_append_only = 'true' to drop them"
                            .into(),
                    ));
                }
                let (bytes, rows) = json_lines(&data)?;
                let mut spans = Vec::with_capacity(rows.len());
                for (row, &w) in rows.into_iter().zip(weights) {
                    for _ in 0..w {
                        spans.push((None, Some(row.clone())));
                    }
                }
                Ok(SinkMessages { bytes, spans })
            }
            SinkFormat::Upsert | SinkFormat::Debezium => {
                self.keyed(&data, weights, ts_ms, snapshot)
            }
        }
    }

    /// Per key, in first-seen order: the row it had (a retraction) and the row it has (an
    /// insertion), then the message(s) they make.
    fn keyed(
        &self,
        data: &RecordBatch,
        weights: &[i64],
        ts_ms: i64,
        snapshot: bool,
    ) -> Result<SinkMessages> {
        let (key_text, keys) = json_lines(&data.project(&self.key)?)?;
        let (mut bytes, rows) = json_lines(data)?;
        // (first row of the key, the row it had, the row it has), in first-seen order.
        let mut changed: Vec<(usize, Option<usize>, Option<usize>)> = Vec::new();
        {
            let mut by_key: HashMap<&[u8], usize> = HashMap::new();
            for (i, key) in keys.iter().enumerate() {
                let slot = *by_key.entry(&key_text[key.clone()]).or_insert_with(|| {
                    changed.push((i, None, None));
                    changed.len() - 1
                });
                match weights[i].signum() {
                    -1 => changed[slot].1 = Some(i),
                    1 => changed[slot].2 = Some(i),
                    _ => {}
                }
            }
        }
        // The keys follow the rows in the buffer.
        let base = bytes.len();
        bytes.extend_from_slice(&key_text);
        let key_span = |i: usize| Some(keys[i].start + base..keys[i].end + base);
        let mut spans = Vec::with_capacity(changed.len());
        for (first, before, after) in changed {
            let key = key_span(first);
            if self.format == SinkFormat::Upsert {
                match (before, after) {
                    (_, Some(a)) => spans.push((key, Some(rows[a].clone()))),
                    (Some(_), None) => spans.push((key, None)),
                    (None, None) => {}
                }
                continue;
            }
            let op = match (before, after) {
                (Some(_), Some(_)) => "u",
                (None, Some(_)) if snapshot => "r",
                (None, Some(_)) => "c",
                (Some(_), None) => "d",
                (None, None) => continue,
            };
            let start = bytes.len();
            bytes.extend_from_slice(b"{\"before\":");
            match before {
                Some(b) => bytes.extend_from_within(rows[b].clone()),
                None => bytes.extend_from_slice(b"null"),
            }
            bytes.extend_from_slice(b",\"after\":");
            match after {
                Some(a) => bytes.extend_from_within(rows[a].clone()),
                None => bytes.extend_from_slice(b"null"),
            }
            bytes.extend_from_slice(
                format!(
                    ",\"op\":\"{op}\",\"ts_ms\":{ts_ms},\"source\":{{\"connector\":\"weir\",\"name\":{},\"ts_ms\":{ts_ms},\"snapshot\":\"{snapshot}\"}}}}",
                    self.name_json
                )
                .as_bytes(),
            );
            spans.push((key.clone(), Some(start..bytes.len())));
            if op == "d" {
                spans.push((key, None));
            }
        }
        Ok(SinkMessages { bytes, spans })
    }
}

/// `batch`'s rows as JSON objects, one per line (nulls written out, so every key is
/// present), and where each row's line is.
fn json_lines(batch: &RecordBatch) -> Result<(Vec<u8>, Vec<Range<usize>>)> {
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .with_encoder_factory(Arc::new(JsonbAsJson))
        .build::<_, LineDelimited>(Vec::with_capacity(batch.num_rows() * 64));
    writer.write(batch)?;
    writer.finish()?;
    let text = writer.into_inner();
    // JSON escapes newlines inside strings: each line is one row.
    let mut rows = Vec::with_capacity(batch.num_rows());
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', &text) {
        if end > start {
            rows.push(start..end);
        }
        start = end + 1;
    }
    if start < text.len() {
        rows.push(start..text.len());
    }
    if rows.len() != batch.num_rows() {
        return Err(EngineError::Internal(format!(
            "encoded {} rows as {} JSON lines",
            batch.num_rows(),
            rows.len()
        )));
    }
    Ok((text, rows))
}

/// Writes a jsonb column's values (`crate::jsonb`) as the JSON they are, not as strings,
/// so a weir source with a jsonb column reads them back unchanged.
#[derive(Debug)]
struct JsonbAsJson;

impl EncoderFactory for JsonbAsJson {
    fn make_default_encoder<'a>(
        &self,
        field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> std::result::Result<Option<NullableEncoder<'a>>, ArrowError> {
        if !crate::jsonb::is_jsonb(field) || array.data_type() != &DataType::Utf8 {
            return Ok(None);
        }
        let strings = array.as_string::<i32>();
        Ok(Some(NullableEncoder::new(
            Box::new(RawJson(strings)),
            strings.nulls().cloned(),
        )))
    }
}

/// The string at each row, written as it is.
struct RawJson<'a>(&'a StringArray);

impl Encoder for RawJson<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.value(idx).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn changes(rows: &[(i64, &str, i64)]) -> ChangeBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]);
        ChangeBatch::from_columns(
            &schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            ],
            rows.iter().map(|r| r.2),
        )
        .unwrap()
    }

    fn text(m: &SinkMessage) -> (Option<String>, Option<String>) {
        let s = |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8(b.clone()).unwrap());
        (s(&m.key), s(&m.value))
    }

    fn encoder(format: SinkFormat) -> SinkEncoder {
        let c = changes(&[(1, "a", 1)]);
        SinkEncoder::new(format, c.data().schema(), vec![0], "s").unwrap()
    }

    #[test]
    fn jsonb_values_are_written_as_json() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            crate::jsonb::jsonb_field("doc", true),
        ]);
        let batch = ChangeBatch::from_columns(
            &schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some(r#"{"a": [1, 2.50]}"#), None])),
            ],
            [1, 1],
        )
        .unwrap();
        let e = SinkEncoder::new(
            SinkFormat::Plain {
                force_append_only: false,
            },
            batch.data().schema(),
            vec![0],
            "s",
        )
        .unwrap();
        let out = e.encode(&batch, 0, false).unwrap().to_vec();
        let values: Vec<_> = out.iter().map(|m| text(m).1.unwrap()).collect();
        assert_eq!(
            values,
            [
                r#"{"id":1,"doc":{"a": [1, 2.50]}}"#,
                r#"{"id":2,"doc":null}"#
            ]
        );
    }

    #[test]
    fn plain_writes_inserts_per_unit_of_weight_and_refuses_retractions() {
        let e = encoder(SinkFormat::Plain {
            force_append_only: false,
        });
        let out = e
            .encode(&changes(&[(1, "a", 2), (2, "b\nc", 1)]), 0, false)
            .unwrap()
            .to_vec();
        let values: Vec<_> = out.iter().map(|m| text(m).1.unwrap()).collect();
        assert_eq!(
            values,
            [
                r#"{"id":1,"name":"a"}"#,
                r#"{"id":1,"name":"a"}"#,
                r#"{"id":2,"name":"b\nc"}"#
            ]
        );
        assert!(e.encode(&changes(&[(1, "a", -1)]), 0, false).is_err());
        let forced = encoder(SinkFormat::Plain {
            force_append_only: true,
        });
        assert_eq!(
            forced
                .encode(&changes(&[(1, "a", -1), (2, "b", 1)]), 0, false)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn upsert_turns_an_update_into_one_message_and_a_delete_into_a_tombstone() {
        let e = encoder(SinkFormat::Upsert);
        let out = e
            .encode(
                &changes(&[(1, "a", -1), (2, "b", -1), (1, "z", 1), (3, "c", 1)]),
                0,
                false,
            )
            .unwrap()
            .to_vec();
        let got: Vec<_> = out.iter().map(text).collect();
        assert_eq!(
            got,
            [
                (
                    Some(r#"{"id":1}"#.into()),
                    Some(r#"{"id":1,"name":"z"}"#.into())
                ),
                (Some(r#"{"id":2}"#.into()), None),
                (
                    Some(r#"{"id":3}"#.into()),
                    Some(r#"{"id":3,"name":"c"}"#.into())
                ),
            ]
        );
    }

    #[test]
    fn debezium_envelopes_say_what_happened_to_each_key() {
        let e = encoder(SinkFormat::Debezium);
        let out = e
            .encode(
                &changes(&[(1, "a", -1), (1, "z", 1), (2, "b", -1), (3, "c", 1)]),
                7,
                false,
            )
            .unwrap()
            .to_vec();
        let values: Vec<serde_json::Value> = out
            .iter()
            .filter_map(|m| m.value.as_ref())
            .map(|v| serde_json::from_slice(v).unwrap())
            .collect();
        let ops: Vec<_> = values.iter().map(|v| v["op"].as_str().unwrap()).collect();
        assert_eq!(ops, ["u", "d", "c"]);
        assert_eq!(values[0]["before"]["name"], "a");
        assert_eq!(values[0]["after"]["name"], "z");
        assert!(values[1]["after"].is_null());
        assert_eq!(values[2]["ts_ms"], 7);
        // The delete is followed by its tombstone.
        assert_eq!(out.len(), 4);
        assert_eq!(text(&out[2]), (Some(r#"{"id":2}"#.into()), None));
        let snap = e
            .encode(&changes(&[(4, "d", 1)]), 7, true)
            .unwrap()
            .to_vec();
        let v: serde_json::Value = serde_json::from_slice(snap[0].value.as_ref().unwrap()).unwrap();
        assert_eq!(v["op"], "r");
    }
}
