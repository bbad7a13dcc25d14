//! The `datagen` connector: rows computed from their index, column by column (RisingWave's options).
//! `sequence` columns count from `start` to `end`; `random` ones hash (seed, row) so every split agrees.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampNanosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};

use crate::{EngineError, Result};

/// How one column is generated.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldGen {
    /// start, start+1, ... up to end (inclusive) when given.
    Sequence { start: i64, end: Option<i64> },
    /// Uniform in [min, max] for numbers; `length` characters for strings; within `max_past_ms`
    /// before the base time for timestamps.
    Random {
        min: f64,
        max: f64,
        length: usize,
        max_past_ms: i64,
        seed: u64,
    },
}

/// A datagen source's columns and generators.
#[derive(Debug, Clone, PartialEq)]
pub struct DatagenOptions {
    pub schema: SchemaRef,
    pub fields: Vec<FieldGen>,
    /// Event time "now" for random timestamps, ms since the epoch (fixed at CREATE).
    pub base_time_ms: i64,
}

impl DatagenOptions {
    /// Rows the source holds: bounded by its shortest sequence with an end.
    pub fn row_count(&self) -> Option<u64> {
        self.fields
            .iter()
            .filter_map(|f| match f {
                FieldGen::Sequence {
                    start,
                    end: Some(end),
                } => Some((end - start + 1).max(0) as u64),
                _ => None,
            })
            .min()
    }

    /// Rows `first..first + n` as a batch.
    pub fn rows(&self, first: u64, n: usize) -> Result<RecordBatch> {
        let columns = self
            .fields
            .iter()
            .zip(self.schema.fields())
            .map(|(g, f)| column(g, f.data_type(), first, n, self.base_time_ms))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

fn mix(seed: u64, i: u64) -> u64 {
    // splitmix64 of (seed, row): stateless, so any split can compute any row.
    let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_add(0x632B_E59B_D9B4_E019);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(seed: u64, i: u64) -> f64 {
    (mix(seed, i) >> 11) as f64 / (1u64 << 53) as f64
}

fn column(g: &FieldGen, ty: &DataType, first: u64, n: usize, base_ms: i64) -> Result<ArrayRef> {
    let rows = first..first + n as u64;
    let raw: ArrayRef = match (g, ty) {
        (FieldGen::Sequence { start, .. }, DataType::Timestamp(..)) => {
            Arc::new(TimestampNanosecondArray::from_iter_values(
                rows.map(|i| (start + i as i64) * 1_000_000_000),
            ))
        }
        (FieldGen::Sequence { start, .. }, _) => {
            Arc::new(Int64Array::from_iter_values(rows.map(|i| start + i as i64)))
        }
        (FieldGen::Random { length, seed, .. }, DataType::Utf8 | DataType::LargeUtf8) => Arc::new(
            StringArray::from_iter_values(rows.map(|i| random_string(*seed, i, *length))),
        ),
        (FieldGen::Random { seed, .. }, DataType::Boolean) => Arc::new(BooleanArray::from_iter(
            rows.map(|i| Some(mix(*seed, i) & 1 == 1)),
        )),
        (
            FieldGen::Random {
                max_past_ms, seed, ..
            },
            DataType::Timestamp(..),
        ) => Arc::new(TimestampNanosecondArray::from_iter_values(rows.map(|i| {
            let past = (unit(*seed, i) * *max_past_ms as f64) as i64;
            (base_ms - past) * 1_000_000
        }))),
        (
            FieldGen::Random { min, max, seed, .. },
            DataType::Float32 | DataType::Float64 | DataType::Decimal128(..),
        ) => Arc::new(Float64Array::from_iter_values(
            rows.map(|i| min + unit(*seed, i) * (max - min)),
        )),
        (FieldGen::Random { min, max, seed, .. }, _) => {
            let (lo, hi) = (*min as i64, *max as i64);
            let span = (hi - lo + 1).max(1) as u64;
            Arc::new(Int64Array::from_iter_values(
                rows.map(|i| lo + (mix(*seed, i) % span) as i64),
            ))
        }
    };
    let target = match ty {
        DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()),
        other => other.clone(),
    };
    cast(&raw, &target)
        .map_err(|e| EngineError::InvalidParameter(format!("datagen cannot produce {ty}: {e}")))
}

fn random_string(seed: u64, i: u64, length: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..length)
        .map(|k| ALPHABET[(mix(seed ^ k as u64, i) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use arrow::array::Array;
    use arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn sequences_bound_the_rows_and_random_is_reproducible() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, true),
            Field::new("v", DataType::Utf8, true),
            Field::new("x", DataType::Int64, true),
        ]));
        let o = DatagenOptions {
            schema,
            fields: vec![
                FieldGen::Sequence {
                    start: 5,
                    end: Some(14),
                },
                FieldGen::Random {
                    min: 0.0,
                    max: 0.0,
                    length: 4,
                    max_past_ms: 0,
                    seed: 7,
                },
                FieldGen::Random {
                    min: 10.0,
                    max: 12.0,
                    length: 0,
                    max_past_ms: 0,
                    seed: 1,
                },
            ],
            base_time_ms: 0,
        };
        assert_eq!(o.row_count(), Some(10));
        let whole = o.rows(0, 10).unwrap();
        let tail = o.rows(6, 4).unwrap();
        assert_eq!(whole.slice(6, 4), tail);
        let x = whole
            .column(2)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert!(x.values().iter().all(|v| (10..=12).contains(v)));
        assert_eq!(
            whole
                .column(1)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(0)
                .len(),
            4
        );
        assert_eq!(whole.column(0).data_type(), &DataType::Int32);
    }
}
