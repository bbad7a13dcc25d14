//! `HashAggregate`'s state as Arrow tables: one row per group (key, row count, the row the
//! view holds for it, each aggregate's state columns), and in tables of their own what an
//! aggregate keeps beyond one value per group (multisets).

use std::sync::Arc;

use arrow::array::{ArrayRef, Int8Array, Int64Array, RecordBatch, UInt32Array, new_null_array};
use arrow::compute::take;
use arrow::datatypes::{Field, Schema};

use super::HashAggregate;
use crate::state::rescale::{concat_table, deal, table_names, with_counter};
use crate::state::{StateRouter, StateSnapshot, counter};
use crate::{EngineError, Result};

const GROUPS: &str = "groups";

/// The name prefix of aggregate `j`'s state, in the groups table and its own tables.
fn prefix(j: usize) -> String {
    format!("a{j}_")
}

impl HashAggregate {
    pub(super) fn snapshot_state(&mut self) -> Result<StateSnapshot> {
        let mut snapshot = StateSnapshot::default();
        let slots = self.groups.slots();
        if slots.is_empty() {
            return Ok(snapshot);
        }
        let width = self.group_by.len();
        let mut columns = self.rows_of(&slots, Vec::new())?;
        let mut names: Vec<String> = (0..columns.len()).map(|c| format!("k{c}")).collect();
        // The rows the view holds, NULL for groups that hold none.
        let held: Vec<&[u8]> = slots
            .iter()
            .filter_map(|&s| self.groups.emitted(s))
            .collect();
        let parser = self.values.parser();
        let decoded = self
            .values
            .convert_rows(held.iter().map(|r| parser.parse(r)))?;
        let mut next = 0;
        let at = UInt32Array::from_iter(slots.iter().map(|&s| {
            self.groups.emitted(s).map(|_| {
                next += 1;
                next - 1
            })
        }));
        for (c, values) in decoded.iter().enumerate() {
            columns.push(if held.is_empty() {
                new_null_array(values.data_type(), slots.len())
            } else {
                take(values, &at, None)?
            });
            names.push(format!("e{}", width + c));
        }
        let emitted = slots
            .iter()
            .map(|&s| i64::from(self.groups.emitted(s).is_some()));
        columns.push(Arc::new(Int64Array::from_iter_values(emitted)));
        names.push("__emitted".into());
        let rows = slots.iter().map(|&s| self.groups.rows(s));
        columns.push(Arc::new(Int64Array::from_iter_values(rows)));
        names.push("__rows".into());
        for (j, a) in self.aggregates.iter_mut().enumerate() {
            let state = a.state.snapshot(&slots, &prefix(j), &mut snapshot)?;
            for (n, c) in state.into_iter().enumerate() {
                columns.push(c);
                names.push(format!("{}{n}", prefix(j)));
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
        Ok(snapshot)
    }

    /// Groups go where their keys hash (the exchange's expressions are the group keys);
    /// the multiset rows of a group follow it, renumbered to its row in its new table.
    pub(super) fn rescale_state(
        &self,
        old: &[StateSnapshot],
        router: &StateRouter,
    ) -> Result<Vec<StateSnapshot>> {
        let mut parts = vec![StateSnapshot::default(); router.instances()];
        let Some(groups) = concat_table(old, GROUPS)? else {
            return Ok(parts);
        };
        let width = self.group_by.len();
        let owners = if width == 0 {
            vec![0; groups.num_rows()]
        } else {
            router.owners_of_keys(&groups.columns()[..width])?
        };
        deal(&mut parts, GROUPS, &groups, &owners)?;
        // Each group's row in its new table, and where each old part's groups begin.
        let mut next = vec![0i64; parts.len()];
        let moved: Vec<i64> = owners
            .iter()
            .map(|&o| {
                next[o] += 1;
                next[o] - 1
            })
            .collect();
        let mut first = Vec::with_capacity(old.len());
        let mut offset = 0;
        for part in old {
            first.push(offset);
            offset += part.table(GROUPS).map_or(0, RecordBatch::num_rows);
        }
        for name in table_names(old, "a", "multiset") {
            let tables: Vec<(usize, &RecordBatch)> = old
                .iter()
                .enumerate()
                .filter_map(|(p, s)| Some((p, s.table(&name)?)))
                .collect();
            let (mut to, mut group) = (Vec::new(), Vec::new());
            for (p, table) in &tables {
                for &g in counter(table, "__group")?.values() {
                    let at = first[*p] + g as usize;
                    let owner = *owners.get(at).ok_or_else(|| missing("__group"))?;
                    to.push(owner);
                    group.push(moved[at]);
                }
            }
            let Some(all) = concat_table(old, &name)? else {
                continue;
            };
            deal(
                &mut parts,
                &name,
                &with_counter(&all, "__group", group)?,
                &to,
            )?;
        }
        Ok(parts)
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
        let close_times = self.close_times(&groups.columns()[..width])?;
        let value_columns = (width..self.schema.fields().len())
            .map(|c| {
                let name = format!("e{c}");
                groups
                    .column_by_name(&name)
                    .cloned()
                    .ok_or_else(|| missing(&name))
            })
            .collect::<Result<Vec<_>>>()?;
        let values = if value_columns.is_empty() {
            None
        } else {
            Some(self.values.convert_columns(&value_columns)?)
        };
        let (emitted, rows) = (counter(groups, "__emitted")?, counter(groups, "__rows")?);
        let mut slots = Vec::with_capacity(n);
        for i in 0..n {
            let close_at = close_times.as_ref().map(|t| t.value(i));
            let (slot, new) = self
                .groups
                .find_or_insert_new(encoded.row(i).data(), close_at);
            if new && let Some(t) = close_at {
                self.closing.entry(t).or_default().push(slot);
            }
            self.groups.set_rows(slot, rows.value(i));
            if emitted.value(i) == 1 {
                let row = values.as_ref().map_or(&[][..], |v| v.row(i).data());
                self.groups.set_emitted(slot, Some(row));
            }
            slots.push(slot);
        }
        for (j, a) in self.aggregates.iter_mut().enumerate() {
            let prefix = prefix(j);
            let state: Vec<ArrayRef> = groups
                .schema()
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name().starts_with(&prefix))
                .map(|(c, _)| Arc::clone(groups.column(c)))
                .collect();
            a.state.restore(&slots, &state, &prefix, snapshot)?;
        }
        Ok(())
    }
}

fn missing(column: &str) -> EngineError {
    EngineError::CorruptCheckpoint(format!("aggregate state has no column {column}"))
}
