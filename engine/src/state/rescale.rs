//! Restoring at another parallelism: a keyed operator's state, snapshotted by N instances,
//! is dealt to M by the hash its exchange deals rows by, so each key's state lands where
//! the key's rows will arrive. `StateRouter` says where; the helpers move the tables.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};

use super::{StateSnapshot, counter};
use crate::runtime::Partitioning;
use crate::runtime::exchange::{evaluate_keys, owners};
use crate::{EngineError, Result};

/// Where the state of an operator's keys goes when its stage runs as `instances` instances:
/// the partitioning of the exchange into each of its input ports decides, as it decides
/// for rows.
#[derive(Debug, Clone)]
pub struct StateRouter {
    instances: usize,
    /// By input port: the exchange feeding it (None for an edge within the stage).
    ports: Vec<Option<Partitioning>>,
}

impl StateRouter {
    pub fn new(instances: usize, ports: Vec<Option<Partitioning>>) -> Self {
        Self { instances, ports }
    }

    pub fn instances(&self) -> usize {
        self.instances
    }

    /// The instance each of `rows` belongs to: rows of input `port`, in the columns the
    /// operator received them in, go where the exchange into that port sends them.
    pub fn owners_of_rows(&self, port: usize, rows: &RecordBatch) -> Result<Vec<usize>> {
        match self.ports.get(port).and_then(Option::as_ref) {
            Some(Partitioning::Hash(keys)) => {
                let keys = evaluate_keys(keys, rows)?;
                self.owners_of_keys(&keys)
            }
            Some(Partitioning::Single) => Ok(vec![0; rows.num_rows()]),
            None => Err(EngineError::Internal(format!(
                "input {port} is not fed by an exchange: its state has no owner"
            ))),
        }
    }

    /// The instance each key belongs to, given the values the exchange hashes (a grouped
    /// aggregate's group keys are the values of its exchange's expressions).
    pub fn owners_of_keys(&self, keys: &[ArrayRef]) -> Result<Vec<usize>> {
        let mut hashes = Vec::new();
        Ok(owners(keys, self.instances, &mut hashes)?.collect())
    }
}

/// Table `name` of every snapshot of `parts` that has it, one after another.
pub(crate) fn concat_table(parts: &[StateSnapshot], name: &str) -> Result<Option<RecordBatch>> {
    let tables: Vec<&RecordBatch> = parts.iter().filter_map(|p| p.table(name)).collect();
    let Some(first) = tables.first() else {
        return Ok(None);
    };
    Ok(Some(concat_batches(
        &first.schema(),
        tables.iter().copied(),
    )?))
}

/// Puts row `i` of `table` into `into[owners[i]]` as table `name` (no table where none).
pub(crate) fn deal(
    into: &mut [StateSnapshot],
    name: &str,
    table: &RecordBatch,
    owners: &[usize],
) -> Result<()> {
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); into.len()];
    for (i, &to) in owners.iter().enumerate() {
        rows.get_mut(to)
            .ok_or_else(|| EngineError::Internal(format!("state owner {to} is out of range")))?
            .push(i as u32);
    }
    for (part, rows) in into.iter_mut().zip(rows) {
        if !rows.is_empty() {
            part.put(name, take_record_batch(table, &UInt32Array::from(rows))?);
        }
    }
    Ok(())
}

/// Deals table `name` of `old`, a `rows_table` of rows of input `port` followed by
/// `counters` counter columns, by where the exchange into `port` sends those rows.
pub(crate) fn deal_input_rows(
    old: &[StateSnapshot],
    into: &mut [StateSnapshot],
    name: &str,
    port: usize,
    counters: usize,
    router: &StateRouter,
) -> Result<()> {
    let Some(table) = concat_table(old, name)? else {
        return Ok(());
    };
    let width = table.num_columns() - counters;
    let rows = table.project(&(0..width).collect::<Vec<_>>())?;
    let owners = router.owners_of_rows(port, &rows)?;
    deal(into, name, &table, &owners)
}

/// Gives every one of `into` the one-row table `name` of watermarks, each column the
/// lowest over `old` (NULL, nothing seen yet, is the lowest): no instance treats a row as
/// late that one of the old instances would still have taken.
pub(crate) fn lowest_values(
    old: &[StateSnapshot],
    into: &mut [StateSnapshot],
    name: &str,
) -> Result<()> {
    let Some(first) = old.iter().find_map(|p| p.table(name)) else {
        return Ok(());
    };
    let schema = first.schema();
    let mut values: Vec<(&str, Option<i64>)> = Vec::new();
    for field in schema.fields() {
        let mut lowest = Some(i64::MAX);
        for table in old.iter().filter_map(|p| p.table(name)) {
            let column = counter(table, field.name())?;
            let value = (column.len() == 1 && column.is_valid(0)).then(|| column.value(0));
            lowest = lowest.zip(value).map(|(a, b)| a.min(b));
        }
        values.push((field.name(), lowest));
    }
    for part in into.iter_mut() {
        part.put_values(name, &values)?;
    }
    Ok(())
}

/// The names of the tables of `old` that start with `prefix` and end with `suffix`.
pub(crate) fn table_names(old: &[StateSnapshot], prefix: &str, suffix: &str) -> Vec<String> {
    let names: BTreeSet<String> = old
        .iter()
        .flat_map(|p| p.tables().map(|(n, _)| n.to_string()))
        .filter(|n| n.starts_with(prefix) && n.ends_with(suffix))
        .collect();
    names.into_iter().collect()
}

/// `table` with its Int64 column `name` replaced by `values`.
pub(crate) fn with_counter(
    table: &RecordBatch,
    name: &str,
    values: Vec<i64>,
) -> Result<RecordBatch> {
    let index = table.schema().index_of(name)?;
    let mut columns = table.columns().to_vec();
    columns[index] = Arc::new(Int64Array::from(values));
    Ok(RecordBatch::try_new(table.schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::operator::column;

    fn keyed(keys: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(keys.to_vec()))]).unwrap()
    }

    /// State dealt by input rows lands where the exchange sends those rows, and every row
    /// lands once.
    #[test]
    fn rows_are_dealt_as_the_exchange_deals_them() {
        let hash = Partitioning::Hash(vec![column("k", 0)]);
        let router = StateRouter::new(3, vec![Some(hash)]);
        let mut old = vec![StateSnapshot::default(), StateSnapshot::default()];
        old[0].put("rows", keyed(&[1, 2, 3, 4]));
        old[1].put("rows", keyed(&[5, 6, 7, 1]));
        let mut into = vec![StateSnapshot::default(); 3];
        deal_input_rows(&old, &mut into, "rows", 0, 0, &router).unwrap();
        let mut seen = Vec::new();
        for (i, part) in into.iter().enumerate() {
            let Some(table) = part.table("rows") else {
                continue;
            };
            let owners = router.owners_of_rows(0, table).unwrap();
            assert!(
                owners.iter().all(|&o| o == i),
                "part {i} holds only its keys"
            );
            seen.extend(counter(table, "k").unwrap().values().iter().copied());
        }
        seen.sort();
        assert_eq!(seen, vec![1, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(
            router.owners_of_rows(0, &keyed(&[1, 1])).unwrap(),
            router
                .owners_of_keys(&[Arc::new(Int64Array::from(vec![1, 1]))])
                .unwrap()
        );
    }

    #[test]
    fn watermarks_merge_to_the_lowest_and_null_wins() {
        let mut old = vec![StateSnapshot::default(); 3];
        old[0]
            .put_values("clock", &[("a", Some(5)), ("b", Some(9))])
            .unwrap();
        old[1]
            .put_values("clock", &[("a", Some(3)), ("b", None)])
            .unwrap();
        let mut into = vec![StateSnapshot::default(); 2];
        lowest_values(&old, &mut into, "clock").unwrap();
        for part in &into {
            assert_eq!(part.value("clock", "a").unwrap(), Some(3));
            assert_eq!(part.value("clock", "b").unwrap(), None);
        }
    }
}
