//! Operator state as Arrow tables: what `Operator::snapshot` writes after a barrier and
//! `Operator::restore` rebuilds an operator from, in the form checkpoints store (Arrow IPC).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::row::{OwnedRow, Row, RowConverter, Rows};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;

use crate::{EngineError, Result};

pub(crate) mod rescale;

pub use rescale::StateRouter;

/// The version of the operators' snapshot layouts, bumped whenever one changes: a
/// checkpoint is restored only into the version that wrote it (2: HashAggregate's
/// columnar group state).
pub const STATE_FORMAT: u32 = 2;

/// One operator's state at an epoch boundary: named Arrow tables. Stateless operators
/// have none. Each stateful operator writes its keyed rows with their counts, so the
/// same few shapes (rows + Int64 counters, one-row tables of scalars) cover them all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateSnapshot {
    tables: BTreeMap<String, RecordBatch>,
}

impl StateSnapshot {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Adds (or replaces) table `name`.
    pub fn put(&mut self, name: impl Into<String>, table: RecordBatch) {
        self.tables.insert(name.into(), table);
    }

    pub fn table(&self, name: &str) -> Option<&RecordBatch> {
        self.tables.get(name)
    }

    /// Table names and rows, for logs and tests.
    pub fn tables(&self) -> impl Iterator<Item = (&str, &RecordBatch)> {
        self.tables.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// A one-row table of nullable Int64 values (watermarks, counters).
    pub fn put_values(&mut self, name: &str, values: &[(&str, Option<i64>)]) -> Result<()> {
        let columns = values
            .iter()
            .map(|(_, v)| Arc::new(Int64Array::from(vec![*v])) as ArrayRef)
            .collect();
        let fields: Vec<Field> = values
            .iter()
            .map(|(n, _)| Field::new(*n, DataType::Int64, true))
            .collect();
        self.put(
            name,
            RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?,
        );
        Ok(())
    }

    /// Value `column` of the one-row table `name` (None when absent or NULL).
    pub fn value(&self, name: &str, column: &str) -> Result<Option<i64>> {
        let Some(table) = self.table(name) else {
            return Ok(None);
        };
        let values = counter(table, column)?;
        Ok((values.len() == 1 && values.is_valid(0)).then(|| values.value(0)))
    }

    /// Arrow IPC: per table, its name's length (u32 LE), the name, the stream's length
    /// (u64 LE) and an IPC stream holding the table.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.append_to(&mut out)?;
        Ok(out)
    }

    /// Appends the encoding to `out`: each table's IPC stream is written in place, and a
    /// buffer reused across calls is not allocated (nor its pages faulted in) again.
    pub fn append_to(&self, out: &mut Vec<u8>) -> Result<()> {
        for (name, table) in &self.tables {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            let length_at = out.len();
            out.extend_from_slice(&0u64.to_le_bytes());
            {
                let mut writer = StreamWriter::try_new(&mut *out, &table.schema())?;
                writer.write(table)?;
                writer.finish()?;
            }
            let length = (out.len() - length_at - 8) as u64;
            out[length_at..length_at + 8].copy_from_slice(&length.to_le_bytes());
        }
        Ok(())
    }

    pub fn from_bytes(mut bytes: &[u8]) -> Result<Self> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
            if bytes.len() < n {
                return Err(EngineError::CorruptCheckpoint(
                    "state snapshot is truncated".into(),
                ));
            }
            let (head, rest) = bytes.split_at(n);
            *bytes = rest;
            Ok(head)
        }
        let mut snapshot = Self::default();
        while !bytes.is_empty() {
            let len = u32::from_le_bytes(take(&mut bytes, 4)?.try_into().expect("4 bytes"));
            let name = String::from_utf8(take(&mut bytes, len as usize)?.to_vec())
                .map_err(|e| EngineError::CorruptCheckpoint(format!("state table name: {e}")))?;
            let len = u64::from_le_bytes(take(&mut bytes, 8)?.try_into().expect("8 bytes"));
            let stream = take(&mut bytes, len as usize)?;
            let reader = StreamReader::try_new(Cursor::new(stream), None)?;
            let schema = reader.schema();
            let batches = reader.collect::<Result<Vec<_>, _>>()?;
            let table = arrow::compute::concat_batches(&schema, &batches)?;
            snapshot.put(name, table);
        }
        Ok(snapshot)
    }
}

/// Rows in `converter`'s encoding as a table: their columns (`c0`, `c1`, ...), then one
/// Int64 column per counter (`counters[j].1[i]` belongs to row i).
pub(crate) fn rows_table<'a>(
    converter: &RowConverter,
    rows: impl IntoIterator<Item = Row<'a>>,
    counters: &[(&str, Vec<i64>)],
) -> Result<RecordBatch> {
    let mut columns = converter.convert_rows(rows)?;
    let mut fields: Vec<Field> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
        .collect();
    for (name, values) in counters {
        fields.push(Field::new(*name, DataType::Int64, true));
        columns.push(Arc::new(Int64Array::from(values.clone())));
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The first `width` columns of a `rows_table`, and the rows they encode to.
pub(crate) fn table_rows(
    converter: &RowConverter,
    table: &RecordBatch,
    width: usize,
) -> Result<(Vec<ArrayRef>, Rows)> {
    let columns = table.columns()[..width].to_vec();
    let rows = converter.convert_columns(&columns)?;
    Ok((columns, rows))
}

/// The counter of a `counted_rows_table`.
const COUNT_COLUMN: &str = "__count";

/// Stored input rows with their counts, as TopN, OverWindow and SessionWindow keep their
/// input: a `rows_table` with one counter; None when there are no rows.
pub(crate) fn counted_rows_table<'a>(
    converter: &RowConverter,
    stored: impl IntoIterator<Item = (&'a OwnedRow, i64)>,
) -> Result<Option<RecordBatch>> {
    let (rows, counts): (Vec<_>, Vec<i64>) = stored.into_iter().map(|(r, n)| (r.row(), n)).unzip();
    if rows.is_empty() {
        return Ok(None);
    }
    rows_table(converter, rows, &[(COUNT_COLUMN, counts)]).map(Some)
}

/// A `counted_rows_table` read back: the rows' columns, the rows, and their counts.
pub(crate) fn read_counted_rows<'a>(
    converter: &RowConverter,
    table: &'a RecordBatch,
) -> Result<(Vec<ArrayRef>, Rows, &'a Int64Array)> {
    let (columns, rows) = table_rows(converter, table, table.num_columns() - 1)?;
    Ok((columns, rows, counter(table, COUNT_COLUMN)?))
}

/// Int64 column `name` of a state table.
pub(crate) fn counter<'a>(table: &'a RecordBatch, name: &str) -> Result<&'a Int64Array> {
    table
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .ok_or_else(|| {
            EngineError::CorruptCheckpoint(format!("state table has no Int64 column {name}"))
        })
}

#[cfg(test)]
mod tests {
    use arrow::array::StringArray;
    use arrow::row::SortField;

    use super::*;

    #[test]
    fn tables_round_trip_through_ipc_bytes() {
        let converter = RowConverter::new(vec![
            SortField::new(DataType::Utf8),
            SortField::new(DataType::Int64),
        ])
        .unwrap();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![Some("a"), None])),
            Arc::new(Int64Array::from(vec![1, 2])),
        ];
        let rows = converter.convert_columns(&columns).unwrap();
        let mut snapshot = StateSnapshot::default();
        snapshot.put(
            "rows",
            rows_table(&converter, rows.iter(), &[("__count", vec![3, -1])]).unwrap(),
        );
        snapshot
            .put_values("clock", &[("watermark", Some(7)), ("other", None)])
            .unwrap();
        let back = StateSnapshot::from_bytes(&snapshot.to_bytes().unwrap()).unwrap();
        assert_eq!(back, snapshot);
        assert_eq!(back.value("clock", "watermark").unwrap(), Some(7));
        assert_eq!(back.value("clock", "other").unwrap(), None);
        let table = back.table("rows").unwrap();
        let (_, decoded) = table_rows(&converter, table, 2).unwrap();
        assert_eq!(decoded.row(1), rows.row(1));
        assert_eq!(counter(table, "__count").unwrap().values(), &[3, -1]);
        assert!(StateSnapshot::from_bytes(&snapshot.to_bytes().unwrap()[..9]).is_err());
    }
}
