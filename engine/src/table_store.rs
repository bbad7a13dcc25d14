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

/// Receives a table's changes with their log position; returns false when it no longer
/// wants them.
pub type Subscriber = Box<dyn FnMut(u64, ChangeBatch) -> bool + Send>;

/// A table's rows at a log position: what a checkpoint holds of it. The table is these
/// rows plus its log's changes after `lsn`.
#[derive(Debug, Clone)]
pub struct TableBase {
    pub lsn: u64,
    pub rows: RecordBatch,
}

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
    /// The log position: changes committed since the table was created.
    lsn: u64,
    /// The changes replayed from the log at open, for views that resume after one of them.
    replayed: Vec<(u64, ChangeBatch)>,
}

impl TableStore {
    /// Opens the table, replaying its log at `wal_path` if given (None keeps it in memory only).
    pub fn open(
        name: &str,
        schema: SchemaRef,
        key_columns: Vec<usize>,
        wal_path: Option<&Path>,
    ) -> Result<Self> {
        Self::open_from(name, schema, key_columns, wal_path, None)
    }

    /// As `open`, starting from `base` (a checkpoint's rows) and the log's changes after it.
    pub fn open_from(
        name: &str,
        schema: SchemaRef,
        key_columns: Vec<usize>,
        wal_path: Option<&Path>,
        base: Option<TableBase>,
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
            lsn: 0,
            replayed: Vec::new(),
        };
        if let Some(base) = base {
            store.apply_unchecked(&with_weights(&base.rows, 1)?)?;
            store.lsn = base.lsn;
        }
        if let Some(path) = wal_path {
            let (wal, frames) = Wal::open(path)?;
            for (lsn, batch) in frames {
                if lsn <= store.lsn {
                    continue; // in the base already
                }
                if lsn != store.lsn + 1 {
                    return Err(EngineError::CorruptLog {
                        path: path.display().to_string(),
                        reason: format!(
                            "it goes on at change {lsn} after change {}: the checkpoint holding the changes between is gone",
                            store.lsn
                        ),
                    });
                }
                store.apply_unchecked(&batch)?;
                store.lsn = lsn;
                store.replayed.push((lsn, ChangeBatch::try_new(batch)?));
            }
            store.wal = Some(wal);
        }
        Ok(store)
    }

    /// The log position (changes committed since the table was created).
    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    /// The rows and position a checkpoint keeps.
    pub fn checkpoint(&self) -> Result<TableBase> {
        Ok(TableBase {
            lsn: self.lsn,
            rows: self.snapshot()?,
        })
    }

    /// Drops the log's changes numbered `upto` and below (a checkpoint holds the rows).
    pub fn truncate_log(&mut self, upto: u64) -> Result<()> {
        self.replayed.retain(|(lsn, _)| *lsn > upto);
        match self.wal.as_mut() {
            Some(wal) => wal.truncate_through(upto),
            None => Ok(()),
        }
    }

    /// Frees the changes kept from the log for resuming views (once all have resumed).
    pub fn forget_replayed(&mut self) {
        self.replayed = Vec::new();
    }

    /// Whether a reader that has every change up to `after` can resume (`subscribe_from`).
    pub fn can_resume_from(&self, after: u64) -> bool {
        after == self.lsn
            || (after < self.lsn
                && self
                    .replayed
                    .first()
                    .is_some_and(|(first, _)| *first <= after + 1))
    }

    /// The changes after position `after`, and from then on every change through `deliver`:
    /// for a view restored at `after`.
    pub fn subscribe_from(
        &mut self,
        after: u64,
        deliver: Subscriber,
    ) -> Result<Vec<(u64, ChangeBatch)>> {
        if !self.can_resume_from(after) {
            return Err(EngineError::CorruptCheckpoint(format!(
                "table {} cannot resume after change {after} (it is at {})",
                self.name, self.lsn
            )));
        }
        self.subscribers.push(deliver);
        Ok(self
            .replayed
            .iter()
            .filter(|(lsn, _)| *lsn > after)
            .cloned()
            .collect())
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
        let lsn = self.lsn + 1;
        if let Some(wal) = self.wal.as_mut() {
            wal.append(lsn, &change)?;
        }
        self.apply_unchecked(&change)?;
        self.lsn = lsn;
        if !self.subscribers.is_empty() {
            let batch = ChangeBatch::try_new(change)?;
            self.subscribers
                .retain_mut(|deliver| deliver(lsn, batch.clone()));
        }
        Ok(())
    }

    /// The table's rows now with their position, and from then on every change through
    /// `deliver` (which returns false once its reader is gone). Taken under the caller's
    /// lock on the store, so the snapshot plus the changes is exactly the table: nothing
    /// missed, nothing twice.
    pub fn subscribe(&mut self, deliver: Subscriber) -> Result<(u64, RecordBatch)> {
        self.subscribers.push(deliver);
        Ok((self.lsn, self.snapshot()?))
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
                EngineError::Internal("change batch without Int64 weight column".into())
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
                EngineError::Internal("delete of a row that is not in the table".into())
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
        let (_, snapshot) = t
            .subscribe(Box::new(move |_, c| {
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
    fn a_checkpointed_table_truncates_its_log_and_views_resume_after_any_kept_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.wal");
        let base = {
            let mut t = TableStore::open("t", schema(), vec![0], Some(&path)).unwrap();
            t.insert(&rows(&[1, 2], &["a", "b"])).unwrap();
            let base = t.checkpoint().unwrap();
            t.insert(&rows(&[3], &["c"])).unwrap();
            t.replace(&rows(&[1], &["a"]), None).unwrap();
            t.truncate_log(base.lsn).unwrap();
            assert_eq!(t.lsn(), 3);
            base
        };
        let mut t =
            TableStore::open_from("t", schema(), vec![0], Some(&path), Some(base.clone())).unwrap();
        assert_eq!(t.snapshot().unwrap(), rows(&[2, 3], &["b", "c"]));
        assert_eq!(t.lsn(), 3);
        // A view at change 2 gets change 3 only; one before the base cannot resume.
        let missed = t.subscribe_from(2, Box::new(|_, _| true)).unwrap();
        assert_eq!(missed.iter().map(|(l, _)| *l).collect::<Vec<_>>(), vec![3]);
        assert!(!t.can_resume_from(0));
        // Without the checkpoint, the truncated log cannot rebuild the table.
        assert!(TableStore::open("t", schema(), vec![0], Some(&path)).is_err());
        // A base newer than the log's start skips what it holds.
        let newer = t.checkpoint().unwrap();
        let again =
            TableStore::open_from("t", schema(), vec![0], Some(&path), Some(newer)).unwrap();
        assert_eq!(again.snapshot().unwrap(), rows(&[2, 3], &["b", "c"]));
    }

    #[test]
    fn keyless_table_keeps_duplicates_and_deletes_one() {
        let mut t = TableStore::open("t", schema(), vec![], None).unwrap();
        t.insert(&rows(&[1, 1], &["a", "a"])).unwrap();
        t.replace(&rows(&[1], &["a"]), None).unwrap();
        assert_eq!(t.len(), 1);
    }
}
