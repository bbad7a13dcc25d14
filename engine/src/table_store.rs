//! Rows of a table keyed by primary key, made durable by a write-ahead log.
//! Every change is a batch of rows with a `__weight` column (+1 insert, -1 delete), logged before it is applied.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow::compute::take;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, SortField};

use crate::change::{ChangeBatch, with_weight};
use crate::wal::Wal;
use crate::{EngineError, Result};

/// Name of the weight column carried by change batches.
pub const WEIGHT_COLUMN: &str = "__weight";

/// Receives a table's changes; returns false when it no longer wants them.
pub type Subscriber = Box<dyn FnMut(ChangeBatch) -> bool + Send>;

/// A table's current rows, keyed by primary key (or by a hidden row id when it has none).
pub struct TableStore {
    name: String,
    schema: SchemaRef,
    key_columns: Vec<usize>,
    key_converter: RowConverter,
    row_converter: RowConverter,
    rows: BTreeMap<OwnedRow, OwnedRow>,
    next_row_id: i64,
    wal: Option<Wal>,
    subscribers: Vec<Subscriber>,
}

impl TableStore {
    /// Opens the table, replaying its log at `wal_path` if given (None keeps it in memory only).
    pub fn open(
        name: &str,
        schema: SchemaRef,
        key_columns: Vec<usize>,
        wal_path: Option<&Path>,
    ) -> Result<Self> {
        let key_fields = if key_columns.is_empty() {
            vec![SortField::new(DataType::Int64)]
        } else {
            key_columns
                .iter()
                .map(|&i| SortField::new(schema.field(i).data_type().clone()))
                .collect()
        };
        let row_fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let mut store = Self {
            name: name.to_string(),
            schema,
            key_columns,
            key_converter: RowConverter::new(key_fields)?,
            row_converter: RowConverter::new(row_fields)?,
            rows: BTreeMap::new(),
            next_row_id: 0,
            wal: None,
            subscribers: Vec::new(),
        };
        if let Some(path) = wal_path {
            let (wal, batches) = Wal::open(path)?;
            for batch in batches {
                store.apply_unchecked(&batch)?;
            }
            store.wal = Some(wal);
        }
        Ok(store)
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The schema of change batches: the table's columns plus `__weight`.
    pub fn change_schema(&self) -> SchemaRef {
        with_weight(&self.schema)
    }

    /// All current rows as one batch, in key order.
    pub fn snapshot(&self) -> Result<RecordBatch> {
        let columns = self
            .row_converter
            .convert_rows(self.rows.values().map(|r| r.row()))?;
        Ok(RecordBatch::try_new(self.schema(), columns)?)
    }

    /// Inserts `rows`; fails without changing anything if a key is NULL or already present.
    pub fn insert(&mut self, rows: &RecordBatch) -> Result<usize> {
        self.check_keys_not_null(rows)?;
        let keys = self.keys_for_insert(rows)?;
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..rows.num_rows() {
            let k = keys.row(i);
            if self.rows.contains_key(&k.owned()) || !seen.insert(k.owned()) {
                return Err(EngineError::DuplicateKey {
                    table: self.name.clone(),
                    detail: self.describe_key(rows, i),
                });
            }
        }
        let change = with_weights(rows, 1)?;
        self.commit(change)?;
        Ok(rows.num_rows())
    }

    /// Replaces `old` rows (taken from a snapshot) by `new` rows, atomically:
    /// deletes when `new` is None, updates (possibly changing keys) otherwise.
    pub fn replace(&mut self, old: &RecordBatch, new: Option<&RecordBatch>) -> Result<usize> {
        if old.num_rows() == 0 {
            return Ok(0);
        }
        let mut change = with_weights(old, -1)?;
        if let Some(new) = new {
            self.check_keys_not_null(new)?;
            if !self.key_columns.is_empty() {
                let old_keys = self.key_converter.convert_columns(&self.key_arrays(old))?;
                let new_keys = self.key_converter.convert_columns(&self.key_arrays(new))?;
                let removed: std::collections::BTreeSet<_> = (0..old.num_rows())
                    .map(|i| old_keys.row(i).owned())
                    .collect();
                let mut seen = std::collections::BTreeSet::new();
                for i in 0..new.num_rows() {
                    let k = new_keys.row(i).owned();
                    if (self.rows.contains_key(&k) && !removed.contains(&k)) || !seen.insert(k) {
                        return Err(EngineError::DuplicateKey {
                            table: self.name.clone(),
                            detail: self.describe_key(new, i),
                        });
                    }
                }
            }
            let ins = with_weights(new, 1)?;
            change = arrow::compute::concat_batches(&change.schema(), [&change, &ins])?;
        }
        self.commit(change)?;
        Ok(old.num_rows())
    }

    /// Logs, applies and publishes one statement's change.
    fn commit(&mut self, change: RecordBatch) -> Result<()> {
        self.log(&change)?;
        self.apply_unchecked(&change)?;
        if !self.subscribers.is_empty() {
            let batch = ChangeBatch::try_new(change)?;
            self.subscribers
                .retain_mut(|deliver| deliver(batch.clone()));
        }
        Ok(())
    }

    /// The table's rows now, and from then on every change through `deliver` (which returns
    /// false once its reader is gone). Taken under the caller's lock on the store, so the
    /// snapshot plus the changes is exactly the table: nothing missed, nothing twice.
    pub fn subscribe(&mut self, deliver: Subscriber) -> Result<RecordBatch> {
        self.subscribers.push(deliver);
        self.snapshot()
    }

    fn log(&mut self, change: &RecordBatch) -> Result<()> {
        match self.wal.as_mut() {
            Some(wal) => wal.append(change),
            None => Ok(()),
        }
    }

    /// Applies a change batch whose validity was checked when it was logged.
    fn apply_unchecked(&mut self, change: &RecordBatch) -> Result<()> {
        let n = change.num_columns() - 1;
        let data: Vec<ArrayRef> = change.columns()[..n].to_vec();
        let weights = change
            .column(n)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| {
                EngineError::Config("change batch without Int64 weight column".into())
            })?;
        let rows = self.row_converter.convert_columns(&data)?;
        let keys = if self.key_columns.is_empty() {
            None
        } else {
            Some(
                self.key_converter.convert_columns(
                    &self
                        .key_columns
                        .iter()
                        .map(|&i| Arc::clone(&data[i]))
                        .collect::<Vec<_>>(),
                )?,
            )
        };
        for i in 0..change.num_rows() {
            let row = rows.row(i).owned();
            let key = match &keys {
                Some(k) => k.row(i).owned(),
                None => self.row_id_key(weights.value(i), &row)?,
            };
            if weights.value(i) > 0 {
                self.rows.insert(key, row);
            } else {
                self.rows.remove(&key);
            }
        }
        Ok(())
    }

    /// Keyless tables: a fresh id for inserts, the first row equal to `row` for deletes.
    fn row_id_key(&mut self, weight: i64, row: &OwnedRow) -> Result<OwnedRow> {
        if weight > 0 {
            let id = self.next_row_id;
            self.next_row_id += 1;
            let ids: ArrayRef = Arc::new(Int64Array::from(vec![id]));
            Ok(self.key_converter.convert_columns(&[ids])?.row(0).owned())
        } else {
            let found = self
                .rows
                .iter()
                .find(|(_, r)| *r == row)
                .map(|(k, _)| k.clone());
            found.ok_or_else(|| {
                EngineError::Config("delete of a row that is not in the table".into())
            })
        }
    }

    fn keys_for_insert(&self, rows: &RecordBatch) -> Result<arrow::row::Rows> {
        if self.key_columns.is_empty() {
            // Keyless rows never collide: give them distinct placeholder keys.
            let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(
                (0..rows.num_rows() as i64).map(|i| i64::MIN + i),
            ));
            return Ok(self.key_converter.convert_columns(&[ids])?);
        }
        Ok(self.key_converter.convert_columns(&self.key_arrays(rows))?)
    }

    fn key_arrays(&self, rows: &RecordBatch) -> Vec<ArrayRef> {
        self.key_columns
            .iter()
            .map(|&i| Arc::clone(rows.column(i)))
            .collect()
    }

    fn check_keys_not_null(&self, rows: &RecordBatch) -> Result<()> {
        for &i in &self.key_columns {
            if rows.column(i).null_count() > 0 {
                return Err(EngineError::NullKey {
                    column: self.schema.field(i).name().clone(),
                });
            }
        }
        Ok(())
    }

    fn describe_key(&self, rows: &RecordBatch, i: usize) -> String {
        let names: Vec<&str> = self
            .key_columns
            .iter()
            .map(|&c| self.schema.field(c).name().as_str())
            .collect();
        let values: Vec<String> = self
            .key_columns
            .iter()
            .map(|&c| {
                let one = take(
                    rows.column(c),
                    &arrow::array::UInt32Array::from(vec![i as u32]),
                    None,
                );
                one.ok()
                    .and_then(|a| arrow::util::display::array_value_to_string(&a, 0).ok())
                    .unwrap_or_default()
            })
            .collect();
        format!(
            "Key ({})=({}) already exists.",
            names.join(", "),
            values.join(", ")
        )
    }
}

impl std::fmt::Debug for TableStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableStore")
            .field("name", &self.name)
            .field("rows", &self.rows.len())
            .finish()
    }
}

fn with_weights(rows: &RecordBatch, weight: i64) -> Result<RecordBatch> {
    Ok(ChangeBatch::from_data(rows, weight)?.batch().clone())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use arrow::array::StringArray;
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn rows(ids: &[i64], names: &[&str]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn duplicate_key_is_rejected_and_changes_nothing() {
        let mut t = TableStore::open("t", schema(), vec![0], None).unwrap();
        t.insert(&rows(&[1, 2], &["a", "b"])).unwrap();
        let err = t.insert(&rows(&[3, 2], &["c", "d"])).unwrap_err();
        assert!(
            matches!(err, EngineError::DuplicateKey { ref detail, .. } if detail == "Key (id)=(2) already exists.")
        );
        assert_eq!(t.len(), 2);
        assert!(t.insert(&rows(&[4, 4], &["x", "y"])).is_err());
    }

    #[test]
    fn log_replays_inserts_updates_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wal");
        {
            let mut t = TableStore::open("t", schema(), vec![0], Some(&path)).unwrap();
            t.insert(&rows(&[1, 2, 3], &["a", "b", "c"])).unwrap();
            t.replace(&rows(&[2], &["b"]), Some(&rows(&[2], &["B"])))
                .unwrap();
            t.replace(&rows(&[3], &["c"]), None).unwrap();
        }
        // A torn frame at the tail (a crash mid-append) is dropped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[9, 0, 0, 0, 1])
            .unwrap();
        let t = TableStore::open("t", schema(), vec![0], Some(&path)).unwrap();
        let snap = t.snapshot().unwrap();
        assert_eq!(snap, rows(&[1, 2], &["a", "B"]));
    }

    #[test]
    fn snapshot_plus_published_changes_equals_the_table() {
        use std::sync::{Arc as StdArc, Mutex};
        let mut t = TableStore::open("t", schema(), vec![0], None).unwrap();
        t.insert(&rows(&[1, 2], &["a", "b"])).unwrap();
        let seen = StdArc::new(Mutex::new(Vec::new()));
        let sink = StdArc::clone(&seen);
        let snapshot = t
            .subscribe(Box::new(move |c| {
                sink.lock().unwrap().push(c);
                true
            }))
            .unwrap();
        t.replace(&rows(&[2], &["b"]), Some(&rows(&[2], &["B"])))
            .unwrap();
        t.insert(&rows(&[3], &["c"])).unwrap();
        t.replace(&rows(&[1], &["a"]), None).unwrap();
        let mut all = vec![
            ChangeBatch::from_data(&snapshot, 1)
                .unwrap()
                .batch()
                .clone(),
        ];
        all.extend(seen.lock().unwrap().iter().map(|c| c.batch().clone()));
        let merged = arrow::compute::concat_batches(&all[0].schema(), &all).unwrap();
        let integrated = ChangeBatch::try_new(merged).unwrap().consolidate().unwrap();
        let expected = ChangeBatch::from_data(&t.snapshot().unwrap(), 1).unwrap();
        // Same rows and weights, in any order.
        let sorted_lines = |c: &ChangeBatch| {
            let text = arrow::util::pretty::pretty_format_batches(&[c.batch().clone()])
                .unwrap()
                .to_string();
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            lines.sort();
            lines
        };
        assert_eq!(sorted_lines(&integrated), sorted_lines(&expected));
    }

    #[test]
    fn keyless_table_keeps_duplicates_and_deletes_one() {
        let mut t = TableStore::open("t", schema(), vec![], None).unwrap();
        t.insert(&rows(&[1, 1], &["a", "a"])).unwrap();
        t.replace(&rows(&[1], &["a"]), None).unwrap();
        assert_eq!(t.len(), 1);
    }
}
