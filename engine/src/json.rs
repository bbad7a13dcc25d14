//! JSON payloads to Arrow batches, skipping and counting malformed messages.
//! The fast path decodes a whole batch of messages at once; only a batch with a bad message pays for per-message checks.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_json::ReaderBuilder;

use crate::Result;
use crate::jsonb::{self, Json};

/// Counts of what a decoder saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Messages decoded into rows.
    pub rows: u64,
    /// Payload bytes seen (good and bad).
    pub bytes: u64,
    /// Messages skipped because they did not decode into the schema.
    pub errors: u64,
    /// The first error seen, with the message's position when known.
    pub first_error: Option<String>,
    /// The latest error seen (what `source_progress.last_error` shows).
    pub last_error: Option<String>,
}

impl DecodeStats {
    /// Adds another decoder's counts to these (first error wins).
    pub fn merge(&mut self, other: &DecodeStats) {
        self.rows += other.rows;
        self.bytes += other.bytes;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        if other.last_error.is_some() {
            self.last_error.clone_from(&other.last_error);
        }
    }
}

/// JSON nested deeper than this is malformed. arrow-json recurses once per level of a value
/// it converts: a message holding a 10k-deep array in a BIGINT field overflowed a reader
/// thread's stack and aborted the process. serde_json stops at the same depth.
pub(crate) const MAX_JSON_DEPTH: usize = 128;

/// Whether `json` opens more than `limit` arrays or objects inside each other (strings
/// skipped). Linear; a message with fewer brackets than `limit` is not even scanned.
fn nests_deeper_than(json: &[u8], limit: usize) -> bool {
    if json.iter().filter(|&&b| b == b'[' || b == b'{').count() <= limit {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Decodes JSON objects (one per message) into batches of `schema`.
///
/// Fields map by name; missing fields are NULL, unknown fields are ignored, a key given
/// twice takes its last value (as in Postgres's jsonb), and a string holding a valid
/// literal of the column's type is accepted. A jsonb column (`crate::jsonb`) takes its
/// field's value, of any kind, in jsonb's text form; a JSON null is SQL NULL. Invalid
/// UTF-8, values of another type (a number for a VARCHAR, an object for a BIGINT),
/// integers out of range and nesting deeper than `MAX_JSON_DEPTH` make a message malformed.
pub struct JsonDecoder {
    schema: SchemaRef,
    /// Names of the jsonb columns, whose values reach arrow-json as strings.
    jsonb: Vec<String>,
    stats: DecodeStats,
}

impl JsonDecoder {
    pub fn new(schema: SchemaRef) -> Self {
        let jsonb = schema
            .fields()
            .iter()
            .filter(|f| jsonb::is_jsonb(f))
            .map(|f| f.name().clone())
            .collect();
        Self {
            schema,
            jsonb,
            stats: DecodeStats::default(),
        }
    }

    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }

    /// Decodes `messages`; `label(i)` names message `i` in error texts (such as
    /// `partition 0 offset 17`) and is only called for bad ones. Returns the batch of good
    /// rows and, for each of them, its index in `messages`.
    pub fn decode(
        &mut self,
        messages: &[&[u8]],
        label: impl Fn(usize) -> String,
    ) -> Result<(RecordBatch, Vec<usize>)> {
        self.stats.bytes += messages.iter().map(|m| m.len() as u64).sum::<u64>();
        if !self.jsonb.is_empty() {
            let embedded: Vec<Vec<u8>> = messages
                .iter()
                .map(|m| embed_jsonb(m, &self.jsonb).unwrap_or_else(|| m.to_vec()))
                .collect();
            let refs: Vec<&[u8]> = embedded.iter().map(Vec::as_slice).collect();
            return self.decode_embedded(&refs, label);
        }
        self.decode_embedded(messages, label)
    }

    /// `decode`, once jsonb values are strings.
    fn decode_embedded(
        &mut self,
        messages: &[&[u8]],
        label: impl Fn(usize) -> String,
    ) -> Result<(RecordBatch, Vec<usize>)> {
        let too_deep = messages
            .iter()
            .any(|m| nests_deeper_than(m, MAX_JSON_DEPTH));
        if !too_deep
            && let Ok(batch) = self.decode_all(messages.len(), messages.iter().copied())
            && batch.num_rows() == messages.len()
        {
            self.stats.rows += batch.num_rows() as u64;
            return Ok((batch, (0..messages.len()).collect()));
        }
        // Slow path: find the bad messages one by one, then decode the rest.
        let mut good = Vec::with_capacity(messages.len());
        for (i, msg) in messages.iter().enumerate() {
            if too_deep && nests_deeper_than(msg, MAX_JSON_DEPTH) {
                let error = format!("JSON nested deeper than {MAX_JSON_DEPTH} levels");
                self.record_error(|| label(i), &error);
                continue;
            }
            match self.decode_all(1, std::iter::once(*msg)) {
                Ok(b) if b.num_rows() == 1 => good.push(i),
                Ok(b) => self.record_error(
                    || label(i),
                    &format!("expected one JSON object, found {} rows", b.num_rows()),
                ),
                Err(e) => self.record_error(|| label(i), &e.to_string()),
            }
        }
        let batch = self.decode_all(good.len(), good.iter().map(|&i| messages[i]))?;
        self.stats.rows += batch.num_rows() as u64;
        Ok((batch, good))
    }

    /// Counts a message that decoded but that its reader found malformed (a Debezium
    /// envelope without `op`, say): it moves from the rows to the errors.
    pub fn reject(&mut self, label: impl FnOnce() -> String, error: &str) {
        self.stats.rows = self.stats.rows.saturating_sub(1);
        self.record_error(label, error);
    }

    fn record_error(&mut self, label: impl FnOnce() -> String, error: &str) {
        self.stats.errors += 1;
        let error = format!("{}: {error}", label());
        if self.stats.first_error.is_none() {
            self.stats.first_error = Some(error.clone());
        }
        self.stats.last_error = Some(error);
    }

    fn decode_all<'a>(
        &self,
        count: usize,
        messages: impl Iterator<Item = &'a [u8]>,
    ) -> Result<RecordBatch> {
        let mut decoder = ReaderBuilder::new(Arc::clone(&self.schema))
            .with_batch_size(count + 1)
            .with_strict_mode(false)
            .build_decoder()?;
        for msg in messages {
            // A payload that is not exactly one JSON value must not bleed into the next.
            let before = decoder.len();
            let mut rest = msg;
            while !rest.is_empty() {
                let n = decoder.decode(rest)?;
                if n == 0 {
                    break;
                }
                rest = &rest[n..];
            }
            decoder.decode(b"\n")?;
            if decoder.len() != before + 1 {
                return Err(arrow::error::ArrowError::JsonError(format!(
                    "expected one JSON object per message, found {}",
                    decoder.len() - before
                ))
                .into());
            }
        }
        Ok(decoder
            .flush()?
            .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&self.schema))))
    }
}

/// `message` with the members named in `jsonb` replaced by strings of their values in
/// jsonb's form (a null stays null); None when it is not a JSON object, for arrow-json to
/// report.
fn embed_jsonb(message: &[u8], jsonb: &[String]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(message).ok()?;
    if nests_deeper_than(message, MAX_JSON_DEPTH) {
        return None;
    }
    let Ok(Json::Object(mut members)) = jsonb::parse(text) else {
        return None;
    };
    for (key, value) in &mut members {
        if jsonb.contains(key) && *value != Json::Null {
            let mut form = String::new();
            value.write(&mut form);
            *value = Json::String(form);
        }
    }
    let mut out = String::with_capacity(message.len() + 16);
    Json::Object(members).write(&mut out);
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    #[test]
    fn malformed_messages_are_skipped_and_counted() {
        let mut d = JsonDecoder::new(schema());
        let msgs: Vec<&[u8]> = vec![
            br#"{"id": 1, "name": "a"}"#,
            br#"{"id": 2, "name": "#,
            br#"{"id": "3", "extra": true}"#,
            br#"{"id": "x"}"#,
            br#"{"id": 5}{"id": 6}"#,
        ];
        let (batch, idx) = d.decode(&msgs, |i| i.to_string()).unwrap();
        assert_eq!(idx, vec![0, 2]);
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.values(), &[1, 3]);
        let names = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert!(names.is_null(1));
        assert_eq!(d.stats().errors, 3);
        assert_eq!(d.stats().rows, 2);
        assert!(d.stats().first_error.as_deref().unwrap().starts_with("1: "));
    }

    #[test]
    fn deep_nesting_is_malformed_not_a_stack_overflow() {
        let mut d = JsonDecoder::new(schema());
        let deep = |open: &str, close: &str, n: usize| {
            format!("{{\"id\": {}1{}}}", open.repeat(n), close.repeat(n)).into_bytes()
        };
        let in_string = format!("{{\"id\": 3, \"name\": \"{}\"}}", "[".repeat(10_000));
        let msgs: Vec<Vec<u8>> = vec![
            deep("[", "]", 10_000),
            deep("{\"a\":", "}", 10_000),
            br#"{"id": 1, "name": "a", "name": "b"}"#.to_vec(),
            in_string.into_bytes(),
            deep("[", "]", MAX_JSON_DEPTH + 1),
        ];
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let (batch, idx) = d.decode(&refs, |i| i.to_string()).unwrap();
        assert_eq!(idx, vec![2, 3], "brackets inside a string do not nest");
        let names = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(names.value(0), "b", "the last of a duplicate key");
        assert_eq!(d.stats().errors, 3);
        assert!(nests_deeper_than(b"[[[1]]]", 2));
        assert!(!nests_deeper_than(br#"[["\"[[[["]]"#, 2));
    }

    #[test]
    fn jsonb_columns_take_their_field_value_in_jsonb_form() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            jsonb::jsonb_field("doc", true),
        ]));
        let mut d = JsonDecoder::new(schema);
        let msgs: Vec<&[u8]> = vec![
            br#"{"id": 1, "doc": {"b": [1, 2.50], "a": null}}"#,
            br#"{"id": 2, "doc": "text"}"#,
            br#"{"id": 3, "doc": null}"#,
            br#"{"id": 4}"#,
            br#"{"id": 5, "doc": 1e2, "doc": 7}"#,
            br#"{"id": 6, "doc": {"#,
        ];
        let (batch, idx) = d.decode(&msgs, |i| i.to_string()).unwrap();
        assert_eq!(idx, vec![0, 1, 2, 3, 4]);
        let docs = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(docs.value(0), r#"{"a": null, "b": [1, 2.50]}"#);
        assert_eq!(docs.value(1), r#""text""#);
        assert!(docs.is_null(2) && docs.is_null(3));
        assert_eq!(docs.value(4), "7");
        assert_eq!(d.stats().errors, 1);
    }

    #[test]
    fn clean_batch_takes_fast_path() {
        let mut d = JsonDecoder::new(schema());
        let msgs: Vec<&[u8]> = (0..100)
            .map(|_| &br#"{"id": 7, "name": "n"}"#[..])
            .collect();
        let (batch, idx) = d.decode(&msgs, |i| i.to_string()).unwrap();
        assert_eq!(batch.num_rows(), 100);
        assert_eq!(idx.len(), 100);
        assert_eq!(d.stats().errors, 0);
    }
}
