//! `HashJoin`'s state as Arrow tables: each side's stored rows with their counts (and, with
//! a condition, how many matches each has), and the watermarks that free rows and make
//! them late. Keys and expiry times are recomputed from the rows on restore.

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::Schema;
use std::sync::Arc;

use super::{HashJoin, Stored, stored_bytes};
use crate::operator::time_window::CLOCK;
use crate::operator::timestamps_ns;
use crate::state::rescale::{deal_input_rows, lowest_values};
use crate::state::{StateRouter, StateSnapshot, counter, rows_table, table_rows};
use crate::{EngineError, Result};

const SIDES: [&str; 2] = ["left", "right"];
const WATERMARKS: [&str; 3] = ["both", "left", "right"];

impl HashJoin {
    pub(super) fn snapshot_state(&self) -> Result<StateSnapshot> {
        if self.held.as_ref().is_some_and(|h| !h.is_empty()) {
            return Err(EngineError::Internal(
                "a lookup join's state is taken only after its first barrier".into(),
            ));
        }
        let mut snapshot = StateSnapshot::default();
        for (side, name) in SIDES.iter().enumerate() {
            let (mut rows, mut counts, mut hits) = (Vec::new(), Vec::new(), Vec::new());
            let parser = self.rows[side].parser();
            for (row, stored) in self.state[side].values().flat_map(|k| &k.rows) {
                rows.push(parser.parse(row));
                counts.push(stored.count);
                hits.push(stored.hits);
            }
            if !rows.is_empty() {
                let counters = [("__count", counts), ("__hits", hits)];
                snapshot.put(*name, rows_table(&self.rows[side], rows, &counters)?);
            }
        }
        let clocks = [self.clock, self.side_clocks[0], self.side_clocks[1]];
        let values: Vec<(&str, Option<i64>)> = WATERMARKS
            .iter()
            .zip(clocks)
            .map(|(n, c)| (*n, c.watermark))
            .collect();
        snapshot.put_values(CLOCK, &values)?;
        Ok(snapshot)
    }

    /// Each side's rows are that input's rows: they go where its exchange sends them.
    pub(super) fn rescale_state(
        old: &[StateSnapshot],
        router: &StateRouter,
    ) -> Result<Vec<StateSnapshot>> {
        let mut parts = vec![StateSnapshot::default(); router.instances()];
        lowest_values(old, &mut parts, CLOCK)?;
        for (side, name) in SIDES.iter().enumerate() {
            deal_input_rows(old, &mut parts, name, side, 2, router)?;
        }
        Ok(parts)
    }

    pub(super) fn restore_state(&mut self, snapshot: &StateSnapshot) -> Result<()> {
        // A snapshot follows a barrier: a lookup join's stream side no longer waits.
        self.held = None;
        let [both, left, right] = WATERMARKS.map(|name| snapshot.value(CLOCK, name));
        self.clock.watermark = both?;
        self.side_clocks[0].watermark = left?;
        self.side_clocks[1].watermark = right?;
        for (side, name) in SIDES.iter().enumerate() {
            let Some(table) = snapshot.table(name) else {
                continue;
            };
            let width = self.widths[side];
            let (columns, rows) = table_rows(&self.rows[side], table, width)?;
            let schema = Schema::new(table.schema().fields()[..width].to_vec());
            let data = RecordBatch::try_new(Arc::new(schema), columns)?;
            let keys = self.key_columns(side, &data)?;
            let keys = self.key_rows.convert_columns(&keys)?;
            let (counts, hits) = (counter(table, "__count")?, counter(table, "__hits")?);
            let times = match self.expiry[side] {
                Some(e) => Some((e.offset_ns, timestamps_ns(data.column(e.column))?)),
                None => None,
            };
            for i in 0..table.num_rows() {
                let (row, key) = (rows.row(i), keys.row(i));
                let (row, key) = (row.as_ref(), key.as_ref());
                self.bytes += stored_bytes(row, key);
                if let Some((offset, times)) = &times
                    && times.is_valid(i)
                {
                    let expiring = self.expiring[side]
                        .entry(times.value(i).saturating_add(*offset))
                        .or_default();
                    expiring.push(key);
                    expiring.push(row);
                }
                let stored = self.state[side].entry_ref(key).or_default();
                stored.total += counts.value(i);
                let hits = if self.condition.is_some() {
                    hits.value(i)
                } else {
                    0
                };
                stored.rows.insert(
                    row.into(),
                    Stored {
                        count: counts.value(i),
                        hits,
                    },
                );
            }
        }
        Ok(())
    }
}
