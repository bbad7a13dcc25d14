//! `HashAggregate`'s state as Arrow tables: one row per group (key, row count, the row the
//! view holds for it, each accumulator's `state()`), and per multiset aggregate its values.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int8Array, Int64Array, RecordBatch};
use arrow::datatypes::{Field, Schema};
use arrow::row::SortField;
use datafusion_common::ScalarValue;

use super::{Group, HashAggregate, State};
use crate::state::{StateSnapshot, counter, rows_table, table_rows};
use crate::{EngineError, Result};

const GROUPS: &str = "groups";

fn multiset(j: usize) -> String {
    format!("multiset{j}")
}

impl HashAggregate {
    /// Writes every group. An accumulator's `state()` may be taken only once, so each
    /// accumulator is rebuilt from the state it gave: the operator carries on from
    /// exactly what the snapshot holds.
    pub(super) fn snapshot_state(&mut self) -> Result<StateSnapshot> {
        let mut snapshot = StateSnapshot::default();
        if self.groups.is_empty() {
            return Ok(snapshot);
        }
        let keys: Vec<Box<[u8]>> = self.groups.keys().cloned().collect();
        let width = self.group_by.len();
        let fields = self.schema.fields().len();
        let mut columns: Vec<ArrayRef> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for c in 0..width {
            let values: Vec<ScalarValue> =
                keys.iter().map(|k| self.groups[k].key[c].clone()).collect();
            columns.push(self.column_of(c, values.iter())?);
            names.push(format!("k{c}"));
        }
        for c in width..fields {
            let null = ScalarValue::try_from(self.schema.field(c).data_type())?;
            let values: Vec<ScalarValue> = keys
                .iter()
                .map(|k| match &self.groups[k].emitted {
                    Some(row) => row[c].clone(),
                    None => null.clone(),
                })
                .collect();
            columns.push(self.column_of(c, values.iter())?);
            names.push(format!("e{c}"));
        }
        let emitted = keys
            .iter()
            .map(|k| i64::from(self.groups[k].emitted.is_some()));
        columns.push(Arc::new(Int64Array::from_iter_values(emitted)));
        names.push("__emitted".into());
        let rows = keys.iter().map(|k| self.groups[k].rows);
        columns.push(Arc::new(Int64Array::from_iter_values(rows)));
        names.push("__rows".into());
        for j in 0..self.aggregates.len() {
            let mut states: Vec<Vec<ScalarValue>> = Vec::new();
            for k in &keys {
                let g = self.groups.get_mut(k).expect("invariant: listed above");
                let State::Sliding(acc) = &mut g.states[j] else {
                    break;
                };
                let state = acc.state()?;
                let mut fresh = self.aggregates[j].fresh_accumulator()?;
                fresh.merge_batch(&one_row(&state)?)?;
                *acc = fresh;
                states.push(state);
            }
            if states.is_empty() {
                continue;
            }
            for s in 0..states[0].len() {
                columns.push(ScalarValue::iter_to_array(
                    states.iter().map(|v| v[s].clone()),
                )?);
                names.push(format!("s{j}_{s}"));
            }
        }
        let schema = Schema::new(
            names
                .iter()
                .zip(&columns)
                .map(|(n, c)| Field::new(n, c.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        snapshot.put(GROUPS, RecordBatch::try_new(Arc::new(schema), columns)?);
        for (j, a) in self.aggregates.iter().enumerate() {
            let Some(converter) = &a.args else {
                continue;
            };
            let (mut rows, mut group, mut count) = (Vec::new(), Vec::new(), Vec::new());
            for (i, k) in keys.iter().enumerate() {
                if let State::Multiset(values) = &self.groups[k].states[j] {
                    for (r, &n) in values {
                        rows.push(r.row());
                        group.push(i as i64);
                        count.push(n);
                    }
                }
            }
            let table = rows_table(converter, rows, &[("__group", group), ("__count", count)])?;
            snapshot.put(multiset(j), table);
        }
        Ok(snapshot)
    }

    pub(super) fn restore_state(&mut self, snapshot: &StateSnapshot) -> Result<()> {
        let Some(groups) = snapshot.table(GROUPS) else {
            return Ok(());
        };
        let width = self.group_by.len();
        let n = groups.num_rows();
        let key_columns: Vec<ArrayRef> = if width == 0 {
            vec![Arc::new(Int8Array::from(vec![0; n]))]
        } else {
            groups.columns()[..width].to_vec()
        };
        let encoded = self.keys.convert_columns(&key_columns)?;
        let (emitted, rows) = (counter(groups, "__emitted")?, counter(groups, "__rows")?);
        let mut keys: Vec<Box<[u8]>> = Vec::with_capacity(n);
        for i in 0..n {
            let k: Box<[u8]> = encoded.row(i).data().into();
            let key = (0..width)
                .map(|c| ScalarValue::try_from_array(groups.column(c), i))
                .collect::<Result<Vec<_>, _>>()?;
            self.new_group(&k, key)?;
            let row = if emitted.value(i) == 1 {
                let mut row = self.groups[&k].key.clone();
                for c in width..self.schema.fields().len() {
                    let column = groups
                        .column_by_name(&format!("e{c}"))
                        .ok_or_else(|| missing(&format!("e{c}")))?;
                    row.push(ScalarValue::try_from_array(column, i)?);
                }
                Some(row)
            } else {
                None
            };
            let g: &mut Group = self.groups.get_mut(&k).expect("invariant: added above");
            g.rows = rows.value(i);
            g.emitted = row;
            for (j, state) in g.states.iter_mut().enumerate() {
                let State::Sliding(acc) = state else {
                    continue;
                };
                let prefix = format!("s{j}_");
                let columns: Vec<ArrayRef> = groups
                    .schema()
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.name().starts_with(&prefix))
                    .map(|(c, _)| groups.column(c).slice(i, 1))
                    .collect();
                acc.merge_batch(&columns)?;
            }
            keys.push(k);
        }
        for j in 0..self.aggregates.len() {
            let Some(table) = snapshot.table(&multiset(j)) else {
                continue;
            };
            let width = table.num_columns() - 2;
            let a = &mut self.aggregates[j];
            if a.args.is_none() {
                let fields = table.columns()[..width]
                    .iter()
                    .map(|c| SortField::new(c.data_type().clone()))
                    .collect();
                a.args = Some(arrow::row::RowConverter::new(fields)?);
            }
            let converter = a.args.as_ref().expect("invariant: set above");
            let (_, values) = table_rows(converter, table, width)?;
            let (group, count) = (counter(table, "__group")?, counter(table, "__count")?);
            for r in 0..table.num_rows() {
                let k = &keys[group.value(r) as usize];
                let g = self.groups.get_mut(k).expect("invariant: restored above");
                if let State::Multiset(m) = &mut g.states[j] {
                    m.insert(values.row(r).owned(), count.value(r));
                }
            }
        }
        Ok(())
    }
}

/// A state's values as one-row arrays, what `merge_batch` takes.
fn one_row(state: &[ScalarValue]) -> Result<Vec<ArrayRef>> {
    state
        .iter()
        .map(|v| v.to_array().map_err(EngineError::from))
        .collect()
}

fn missing(column: &str) -> EngineError {
    EngineError::Config(format!("aggregate state has no column {column}"))
}
