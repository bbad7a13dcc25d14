//! `Materialize`: the arrangement behind a view. Consumes change batches and keeps the
//! integrated multiset (row -> count); emits nothing. A barrier publishes the state as of
//! that epoch, which is what `SELECT` over the view reads: never a half-applied epoch.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::SchemaRef;
use arrow::row::{OwnedRow, RowConverter, SortField};
use parking_lot::RwLock;

use crate::message::{Barrier, Epoch};
use crate::operator::{Emitter, Operator};
use crate::{ChangeBatch, EngineError, Result};

/// The committed contents of a view, shared with readers.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub epoch: Epoch,
    pub rows: RecordBatch,
}

/// Keeps a view's rows with multiplicities and publishes a snapshot at every barrier.
pub struct Materialize {
    schema: SchemaRef,
    converter: RowConverter,
    counts: BTreeMap<OwnedRow, i64>,
    dirty: bool,
    published: Arc<RwLock<Snapshot>>,
}

impl Materialize {
    pub fn new(schema: SchemaRef) -> Result<Self> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let published = Arc::new(RwLock::new(Snapshot {
            epoch: 0,
            rows: RecordBatch::new_empty(Arc::clone(&schema)),
        }));
        Ok(Self {
            converter: RowConverter::new(fields)?,
            schema,
            counts: BTreeMap::new(),
            dirty: false,
            published,
        })
    }

    /// The handle readers use; it always holds a whole epoch.
    pub fn reader(&self) -> Arc<RwLock<Snapshot>> {
        Arc::clone(&self.published)
    }

    /// Current rows, each repeated by its count, in row order.
    fn rows(&self) -> Result<RecordBatch> {
        let distinct: Vec<_> = self.counts.keys().map(OwnedRow::row).collect();
        let columns = self.converter.convert_rows(distinct)?;
        let unique = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        let repeat: Vec<u32> = self
            .counts
            .values()
            .enumerate()
            .flat_map(|(i, &n)| std::iter::repeat_n(i as u32, n.max(0) as usize))
            .collect();
        if repeat.len() == unique.num_rows() {
            return Ok(unique);
        }
        let idx = UInt32Array::from(repeat);
        let columns = unique
            .columns()
            .iter()
            .map(|c| take(c, &idx, None))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

impl Operator for Materialize {
    fn name(&self) -> &'static str {
        "Materialize"
    }

    fn on_batch(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Emitter) -> Result<()> {
        let data = batch.data();
        let rows = self.converter.convert_columns(data.columns())?;
        for (i, &w) in batch.weights().values().iter().enumerate() {
            match self.counts.entry(rows.row(i).owned()) {
                Entry::Occupied(mut e) => {
                    *e.get_mut() += w;
                    if *e.get() == 0 {
                        e.remove();
                    }
                }
                Entry::Vacant(e) => {
                    if w != 0 {
                        e.insert(w);
                    }
                }
            }
        }
        self.dirty = true;
        Ok(())
    }

    fn on_barrier(&mut self, barrier: Barrier, _out: &mut Emitter) -> Result<()> {
        if let Some((_, &n)) = self.counts.iter().find(|(_, n)| **n < 0) {
            return Err(EngineError::Config(format!(
                "view holds a row with negative count {n}: a retraction without its insert"
            )));
        }
        let rows = if self.dirty {
            self.rows()?
        } else {
            self.published.read().rows.clone()
        };
        *self.published.write() = Snapshot {
            epoch: barrier.epoch,
            rows,
        };
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn data(keys: &[&str], vals: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(Int64Array::from(vals.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn readers_see_whole_epochs_with_multiplicities() {
        let mut m = Materialize::new(data(&[], &[]).schema()).unwrap();
        let reader = m.reader();
        let mut out = Emitter::default();
        m.on_batch(
            0,
            ChangeBatch::from_data(&data(&["a", "b", "a"], &[1, 2, 1]), 1).unwrap(),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            reader.read().rows.num_rows(),
            0,
            "nothing visible before the barrier"
        );
        m.on_barrier(
            Barrier {
                epoch: 1,
                stop: false,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(reader.read().rows, data(&["a", "a", "b"], &[1, 1, 2]));
        // An update: retract one ("a", 1), insert ("a", 5).
        m.on_batch(
            0,
            ChangeBatch::from_data(&data(&["a"], &[1]), -1).unwrap(),
            &mut out,
        )
        .unwrap();
        m.on_batch(
            0,
            ChangeBatch::from_data(&data(&["a"], &[5]), 1).unwrap(),
            &mut out,
        )
        .unwrap();
        m.on_barrier(
            Barrier {
                epoch: 2,
                stop: false,
            },
            &mut out,
        )
        .unwrap();
        let snap = reader.read().clone();
        assert_eq!(
            (snap.epoch, snap.rows),
            (2, data(&["a", "a", "b"], &[1, 5, 2]))
        );
        assert!(out.drain().is_empty());
    }

    #[test]
    fn retraction_without_insert_is_an_error_at_commit() {
        let mut m = Materialize::new(data(&[], &[]).schema()).unwrap();
        let mut out = Emitter::default();
        m.on_batch(
            0,
            ChangeBatch::from_data(&data(&["x"], &[1]), -1).unwrap(),
            &mut out,
        )
        .unwrap();
        assert!(
            m.on_barrier(
                Barrier {
                    epoch: 1,
                    stop: false
                },
                &mut out
            )
            .is_err()
        );
    }
}
