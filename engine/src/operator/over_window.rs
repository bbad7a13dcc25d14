//! `OverWindow`: window functions over partitions (`lag`, `lead`, `rank`, `dense_rank`,
//! `row_number`, running aggregates with ORDER BY frames). Each partition keeps its rows in
//! window order; at a barrier every partition that changed is evaluated again with
//! DataFusion's `WindowExpr`, and the difference from what it emitted before goes out.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int8Array, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::window::WindowExpr;

use crate::message::Barrier;
use crate::operator::{Emitter, Operator};
use crate::state::rescale::deal_input_rows;
use crate::state::{StateRouter, StateSnapshot, counted_rows_table, read_counted_rows};
use crate::{ChangeBatch, EngineError, HashMap, Result, row_converter};

/// A partition's rows by (window order, row) with their counts, and the output rows it
/// emitted (each with its count).
#[derive(Default)]
struct Partition {
    rows: BTreeMap<(OwnedRow, OwnedRow), i64>,
    emitted: HashMap<OwnedRow, i64>,
}

/// Window functions that share one PARTITION BY and ORDER BY, kept incrementally.
pub struct OverWindow {
    functions: Vec<Arc<dyn WindowExpr>>,
    /// The input's data schema, and the output's: the input's columns, then one per
    /// function.
    input: SchemaRef,
    schema: SchemaRef,
    keys: RowConverter,
    sort: RowConverter,
    rows: RowConverter,
    output: RowConverter,
    partitions: HashMap<OwnedRow, Partition>,
    /// Partitions changed since the last barrier.
    dirty: HashSet<OwnedRow>,
    bytes: usize,
}

impl OverWindow {
    /// `functions` must share their PARTITION BY and ORDER BY.
    pub fn try_new(
        functions: Vec<Arc<dyn WindowExpr>>,
        input: SchemaRef,
        schema: SchemaRef,
    ) -> Result<Self> {
        let first = functions
            .first()
            .ok_or_else(|| EngineError::Internal("a window with no function".into()))?;
        let same = |w: &Arc<dyn WindowExpr>| {
            format!("{:?}", w.partition_by()) == format!("{:?}", first.partition_by())
                && format!("{:?}", w.order_by()) == format!("{:?}", first.order_by())
        };
        if !functions.iter().all(same) {
            return Err(EngineError::Unsupported(
                "window functions over different PARTITION BY or ORDER BY in one SELECT".into(),
            ));
        }
        let types = |exprs: &mut dyn Iterator<Item = &Arc<dyn PhysicalExpr>>| {
            exprs
                .map(|e| e.data_type(&input).map_err(EngineError::from))
                .collect::<Result<Vec<DataType>>>()
        };
        let key_types = types(&mut first.partition_by().iter())?;
        let keys = if key_types.is_empty() {
            RowConverter::new(vec![SortField::new(DataType::Int8)])?
        } else {
            RowConverter::new(key_types.into_iter().map(SortField::new).collect())?
        };
        let sort_types = types(&mut first.order_by().iter().map(|s| &s.expr))?;
        let sort = RowConverter::new(
            sort_types
                .into_iter()
                .zip(first.order_by())
                .map(|(t, s)| SortField::new_with_options(t, s.options))
                .collect(),
        )?;
        Ok(Self {
            rows: row_converter(input.fields())?,
            output: row_converter(schema.fields())?,
            functions,
            input,
            schema,
            keys,
            sort,
            partitions: HashMap::default(),
            dirty: HashSet::new(),
            bytes: 0,
        })
    }

    fn evaluate(
        exprs: &mut dyn Iterator<Item = &Arc<dyn PhysicalExpr>>,
        data: &RecordBatch,
    ) -> Result<Vec<ArrayRef>> {
        exprs
            .map(|e| crate::operator::eval::evaluate(e.as_ref(), data))
            .collect()
    }

    /// The partition key and window order of each row of `data`.
    fn keys_and_sorts(&self, data: &RecordBatch) -> Result<(Rows, Rows)> {
        let first = &self.functions[0];
        let key_columns = if first.partition_by().is_empty() {
            vec![Arc::new(Int8Array::from(vec![0; data.num_rows()])) as ArrayRef]
        } else {
            Self::evaluate(&mut first.partition_by().iter(), data)?
        };
        let keys = self.keys.convert_columns(&key_columns)?;
        let sort_columns = Self::evaluate(&mut first.order_by().iter().map(|s| &s.expr), data)?;
        let sorts = if sort_columns.is_empty() {
            // No ORDER BY: every row sorts alike (the row itself breaks ties).
            let none = RowConverter::new(vec![SortField::new(DataType::Int8)])?;
            none.convert_columns(&[Arc::new(Int8Array::from(vec![0; data.num_rows()]))])?
        } else {
            self.sort.convert_columns(&sort_columns)?
        };
        Ok((keys, sorts))
    }

    /// The partition's output rows now: its rows in window order (each as many times as
    /// its count), with every function's value.
    fn outputs(&self, partition: &Partition) -> Result<HashMap<OwnedRow, i64>> {
        let ordered = partition
            .rows
            .iter()
            .flat_map(|((_, row), &n)| std::iter::repeat_n(row.row(), n.max(0) as usize));
        let columns = self.rows.convert_rows(ordered)?;
        let data = RecordBatch::try_new(Arc::clone(&self.input), columns)?;
        let mut columns = data.columns().to_vec();
        for f in &self.functions {
            let values = f.evaluate(&data)?;
            let ty = self.schema.field(columns.len()).data_type();
            columns.push(if values.data_type() == ty {
                values
            } else {
                arrow::compute::cast(&values, ty)?
            });
        }
        let rows = self.output.convert_columns(&columns)?;
        let mut out: HashMap<OwnedRow, i64> = HashMap::default();
        for row in rows.iter() {
            *out.entry(row.owned()).or_insert(0) += 1;
        }
        Ok(out)
    }

    /// Adds `n` of `row` (sorting as `sort`) to partition `key`.
    fn add(&mut self, key: OwnedRow, sort: OwnedRow, row: OwnedRow, n: i64) {
        let size = key.as_ref().len() + sort.as_ref().len() + row.as_ref().len() + 64;
        let partition = self.partitions.entry(key).or_default();
        let entry = (sort, row);
        let count = partition.rows.entry(entry.clone()).or_insert(0);
        let was = *count;
        *count += n;
        if *count == 0 {
            partition.rows.remove(&entry);
            self.bytes = self.bytes.saturating_sub(size);
        } else if was == 0 {
            self.bytes += size;
        }
    }
}

impl Operator for OverWindow {
    fn name(&self) -> &'static str {
        "OverWindow"
    }

    fn describe(&self) -> String {
        let names: Vec<&str> = self.functions.iter().map(|f| f.name()).collect();
        format!(
            "OverWindow({}; {} partition key(s), {} order key(s))",
            names.join(", "),
            self.functions[0].partition_by().len(),
            self.functions[0].order_by().len()
        )
    }

    fn on_batch(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Emitter) -> Result<()> {
        let data = batch.data();
        let (keys, sorts) = self.keys_and_sorts(&data)?;
        let rows = self.rows.convert_columns(data.columns())?;
        for i in 0..data.num_rows() {
            let key = keys.row(i).owned();
            self.dirty.insert(key.clone());
            let (sort, row) = (sorts.row(i).owned(), rows.row(i).owned());
            self.add(key, sort, row, batch.weights().value(i));
        }
        Ok(())
    }

    /// The outputs it emits change at barriers: a watermark passed on before them could
    /// make them late downstream.
    fn holds_watermarks(&self) -> bool {
        true
    }

    fn on_barrier(&mut self, _barrier: Barrier, out: &mut Emitter) -> Result<()> {
        let mut changes: Vec<(OwnedRow, i64)> = Vec::new();
        for key in std::mem::take(&mut self.dirty) {
            let Some(partition) = self.partitions.get(&key) else {
                continue;
            };
            let new = self.outputs(partition)?;
            let partition = self.partitions.get_mut(&key).expect("invariant: looked up");
            for (row, &n) in &partition.emitted {
                let diff = new.get(row).copied().unwrap_or(0) - n;
                if diff != 0 {
                    changes.push((row.clone(), diff));
                }
            }
            for (row, &n) in &new {
                if !partition.emitted.contains_key(row) {
                    changes.push((row.clone(), n));
                }
            }
            if partition.rows.is_empty() {
                self.partitions.remove(&key);
            } else {
                partition.emitted = new;
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        let columns = self
            .output
            .convert_rows(changes.iter().map(|c| c.0.row()))?;
        out.emit(ChangeBatch::from_columns(
            &self.schema,
            columns,
            changes.iter().map(|c| c.1),
        )?);
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    /// Its input rows with their counts (after a barrier nothing is pending); the
    /// outputs are evaluated again on restore.
    fn snapshot(&mut self) -> Result<StateSnapshot> {
        let mut snapshot = StateSnapshot::default();
        let stored = self.partitions.values().flat_map(|p| &p.rows);
        if let Some(table) = counted_rows_table(&self.rows, stored.map(|((_, r), &n)| (r, n)))? {
            snapshot.put(ROWS, table);
        }
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: &StateSnapshot) -> Result<()> {
        let Some(table) = snapshot.table(ROWS) else {
            return Ok(());
        };
        let (columns, rows, counts) = read_counted_rows(&self.rows, table)?;
        let data = RecordBatch::try_new(Arc::clone(&self.input), columns)?;
        let (keys, sorts) = self.keys_and_sorts(&data)?;
        let mut restored = HashSet::new();
        for i in 0..data.num_rows() {
            let key = keys.row(i).owned();
            restored.insert(key.clone());
            let (sort, row) = (sorts.row(i).owned(), rows.row(i).owned());
            self.add(key, sort, row, counts.value(i));
        }
        for key in restored {
            let outputs = self.outputs(&self.partitions[&key])?;
            if let Some(p) = self.partitions.get_mut(&key) {
                p.emitted = outputs;
            }
        }
        Ok(())
    }

    /// Its rows are its input's rows: they go where the exchange sends them.
    fn rescale(&self, old: Vec<StateSnapshot>, router: &StateRouter) -> Result<Vec<StateSnapshot>> {
        let mut parts = vec![StateSnapshot::default(); router.instances()];
        deal_input_rows(&old, &mut parts, ROWS, 0, 1, router)?;
        Ok(parts)
    }
}

/// The state table of an OverWindow's rows.
const ROWS: &str = "rows";
