//! `SinkEncoder`: one commit's consolidated changes as messages (key, value), in PLAIN,
//! UPSERT or DEBEZIUM JSON. Rows are JSON objects as `arrow-json` writes them, the reverse
//! of the source decoder: timestamps ISO-8601, decimals numbers, nulls explicit.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_json::writer::{LineDelimited, WriterBuilder};

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
    ) -> Result<Vec<SinkMessage>> {
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
                let rows = json_rows(&data)?;
                let mut out = Vec::with_capacity(rows.len());
                for (row, &w) in rows.into_iter().zip(weights) {
                    for _ in 0..w.max(0) {
                        out.push(SinkMessage {
                            key: None,
                            value: Some(row.clone()),
                        });
                    }
                }
                Ok(out)
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
    ) -> Result<Vec<SinkMessage>> {
        let keys = json_rows(&data.project(&self.key)?)?;
        let rows = json_rows(data)?;
        let mut order: Vec<&[u8]> = Vec::new();
        let mut by_key: HashMap<&[u8], (Option<usize>, Option<usize>)> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            let slot = by_key.entry(key.as_slice()).or_insert_with(|| {
                order.push(key);
                (None, None)
            });
            match weights[i].signum() {
                -1 => slot.0 = Some(i),
                1 => slot.1 = Some(i),
                _ => {}
            }
        }
        let mut out = Vec::with_capacity(order.len());
        for key in order {
            let (before, after) = by_key[key];
            let key_bytes = Some(key.to_vec());
            if self.format == SinkFormat::Upsert {
                match (before, after) {
                    (_, Some(a)) => out.push(SinkMessage {
                        key: key_bytes,
                        value: Some(rows[a].clone()),
                    }),
                    (Some(_), None) => out.push(SinkMessage {
                        key: key_bytes,
                        value: None,
                    }),
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
            let side = |i: Option<usize>| i.map_or(&b"null"[..], |i| rows[i].as_slice());
            let mut value = Vec::with_capacity(64 + rows[0].len() * 2);
            value.extend_from_slice(b"{\"before\":");
            value.extend_from_slice(side(before));
            value.extend_from_slice(b",\"after\":");
            value.extend_from_slice(side(after));
            value.extend_from_slice(
                format!(
                    ",\"op\":\"{op}\",\"ts_ms\":{ts_ms},\"source\":{{\"connector\":\"weir\",\"name\":{},\"ts_ms\":{ts_ms},\"snapshot\":\"{snapshot}\"}}}}",
                    self.name_json
                )
                .as_bytes(),
            );
            out.push(SinkMessage {
                key: key_bytes.clone(),
                value: Some(value),
            });
            if op == "d" {
                out.push(SinkMessage {
                    key: key_bytes,
                    value: None,
                });
            }
        }
        Ok(out)
    }
}

/// Each row of `batch` as a JSON object (nulls written out, so every key is present).
fn json_rows(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, LineDelimited>(Vec::with_capacity(batch.num_rows() * 64));
    writer.write(batch)?;
    writer.finish()?;
    let text = writer.into_inner();
    // JSON escapes newlines inside strings: each line is one row.
    let rows: Vec<Vec<u8>> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if rows.len() != batch.num_rows() {
        return Err(EngineError::Internal(format!(
            "encoded {} rows as {} JSON lines",
            batch.num_rows(),
            rows.len()
        )));
    }
    Ok(rows)
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
    fn plain_writes_inserts_per_unit_of_weight_and_refuses_retractions() {
        let e = encoder(SinkFormat::Plain {
            force_append_only: false,
        });
        let out = e
            .encode(&changes(&[(1, "a", 2), (2, "b\nc", 1)]), 0, false)
            .unwrap();
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
            .unwrap();
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
            .unwrap();
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
        let snap = e.encode(&changes(&[(4, "d", 1)]), 7, true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(snap[0].value.as_ref().unwrap()).unwrap();
        assert_eq!(v["op"], "r");
    }
}
