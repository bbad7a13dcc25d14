//! `ChangeBatch`: a batch of rows, each with a signed weight (+n inserts, -n retracts) in a
//! trailing `__weight` Int64 column: the Z-set delta every dataflow edge carries (DBSP).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};

use crate::{EngineError, HashMap, Result, WEIGHT_COLUMN};

/// Rows with multiplicities. An update is a (-1 old, +1 new) pair.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeBatch(RecordBatch);

impl ChangeBatch {
    /// Wraps a batch whose last column is a non-null Int64 `__weight`.
    pub fn try_new(batch: RecordBatch) -> Result<Self> {
        let schema = batch.schema();
        let last = schema
            .fields()
            .last()
            .ok_or_else(|| invalid("a change batch needs columns"))?;
        if last.name() != WEIGHT_COLUMN || last.data_type() != &DataType::Int64 {
            return Err(invalid(
                "the last column of a change batch must be __weight BIGINT",
            ));
        }
        if batch.column(batch.num_columns() - 1).null_count() > 0 {
            return Err(invalid("weights must not be NULL"));
        }
        Ok(Self(batch))
    }

    /// Rows of `schema` (data columns only) from `columns`, with `weights`, one per row.
    pub fn from_columns(
        schema: &Schema,
        mut columns: Vec<ArrayRef>,
        weights: impl IntoIterator<Item = i64>,
    ) -> Result<Self> {
        columns.push(Arc::new(Int64Array::from_iter_values(weights)));
        Self::try_new(RecordBatch::try_new(with_weight(schema), columns)?)
    }

    /// Every row of `data` with the same weight (+1 for inserts, -1 for retractions).
    pub fn from_data(data: &RecordBatch, weight: i64) -> Result<Self> {
        let mut columns = data.columns().to_vec();
        columns.push(Arc::new(Int64Array::from(vec![weight; data.num_rows()])));
        Ok(Self(RecordBatch::try_new(
            with_weight(&data.schema()),
            columns,
        )?))
    }

    pub fn num_rows(&self) -> usize {
        self.0.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.0.num_rows() == 0
    }

    /// The whole batch, weight column included.
    pub fn batch(&self) -> &RecordBatch {
        &self.0
    }

    /// The data columns, without the weights.
    pub fn data(&self) -> RecordBatch {
        self.0
            .project(&(0..self.0.num_columns() - 1).collect::<Vec<_>>())
            .expect("invariant: projection of own columns")
    }

    pub fn weights(&self) -> &Int64Array {
        self.0
            .column(self.0.num_columns() - 1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("invariant: checked in try_new")
    }

    /// Adds up the weights of equal rows and drops rows whose weight sums to zero; the
    /// surviving rows keep their first-seen order. Batch boundaries and the order of
    /// inserts and retractions stop mattering: equal Z-sets consolidate to equal batches
    /// (up to row order).
    pub fn consolidate(&self) -> Result<Self> {
        let data = self.data();
        let rows = row_converter(data.schema().fields())?.convert_columns(data.columns())?;
        let weights = self.weights();
        let mut sums: HashMap<&[u8], (u32, i64)> =
            HashMap::with_capacity_and_hasher(rows.num_rows(), Default::default());
        let mut order = Vec::new();
        for i in 0..rows.num_rows() {
            let entry = sums.entry(rows.row(i).data()).or_insert_with(|| {
                order.push(i as u32);
                (i as u32, 0)
            });
            entry.1 += weights.value(i);
        }
        let (keep, new_weights): (Vec<u32>, Vec<i64>) = order
            .into_iter()
            .filter_map(|first| {
                let (_, w) = sums[rows.row(first as usize).data()];
                (w != 0).then_some((first, w))
            })
            .unzip();
        let indices = UInt32Array::from(keep);
        let mut columns: Vec<ArrayRef> = data
            .columns()
            .iter()
            .map(|c| take(c, &indices, None))
            .collect::<Result<_, _>>()?;
        columns.push(Arc::new(Int64Array::from(new_weights)));
        Ok(Self(RecordBatch::try_new(self.0.schema(), columns)?))
    }
}

/// A row converter for `fields` (ascending order): how operators key and store rows.
pub fn row_converter<'a>(
    fields: impl IntoIterator<Item = &'a arrow::datatypes::FieldRef>,
) -> Result<RowConverter> {
    Ok(RowConverter::new(
        fields
            .into_iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect(),
    )?)
}

/// `schema` plus the trailing `__weight` column.
pub fn with_weight(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(WEIGHT_COLUMN, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

fn invalid(msg: &str) -> EngineError {
    EngineError::Internal(msg.to_string())
}

#[cfg(test)]
mod tests {
    use arrow::array::StringArray;

    use super::*;

    fn batch(keys: &[&str], weights: &[i64]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new(WEIGHT_COLUMN, DataType::Int64, false),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(keys.to_vec())),
            Arc::new(Int64Array::from(weights.to_vec())),
        ];
        ChangeBatch::try_new(RecordBatch::try_new(schema, cols).unwrap()).unwrap()
    }

    #[test]
    fn consolidate_sums_weights_and_drops_zeros() {
        let b = batch(&["a", "b", "a", "c", "b", "b"], &[1, 1, -1, 2, 1, -3]);
        assert_eq!(b.consolidate().unwrap(), batch(&["b", "c"], &[-1, 2]));
    }

    #[test]
    fn update_pair_of_equal_rows_cancels() {
        let b = batch(&["x", "x"], &[-1, 1]);
        assert!(b.consolidate().unwrap().is_empty());
    }

    #[test]
    fn weight_column_is_checked() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)]));
        let plain = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(StringArray::from(vec!["a"]))],
        )
        .unwrap();
        assert!(ChangeBatch::try_new(plain.clone()).is_err());
        let c = ChangeBatch::from_data(&plain, -1).unwrap();
        assert_eq!(c.weights().values(), &[-1]);
        assert_eq!(c.data(), plain);
    }
}
