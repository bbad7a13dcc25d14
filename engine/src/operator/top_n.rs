//! `TopN`: `ORDER BY .. LIMIT n [OFFSET m]`, and per group
//! `row_number() OVER (PARTITION BY .. ORDER BY ..) <= n` (with the rank as a column).
//! Each group keeps its rows in sort order; a change emits the difference between the
//! group's old and new top rows. Over insert-only input rows that fall out of the top
//! can never come back, so only the top is kept.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int8Array, RecordBatch, UInt64Array};
use arrow::compute::{SortOptions, cast};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion_physical_expr::PhysicalExpr;

use crate::operator::{Emitter, Operator};
use crate::state::rescale::deal_input_rows;
use crate::state::{StateRouter, StateSnapshot, counted_rows_table, read_counted_rows};
use crate::{ChangeBatch, EngineError, HashMap, Result, row_converter};

mod group_rows;

use group_rows::{Added, GroupRows};

/// One sort key: an expression and its direction.
pub struct SortKey {
    pub expr: Arc<dyn PhysicalExpr>,
    pub options: SortOptions,
}

/// Which rows of each group are kept: `offset` rows skipped, then `limit`.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub offset: usize,
    pub limit: usize,
}

/// A group's rows by (sort key, row), and the rows it emitted with their ranks.
#[derive(Default)]
struct Group {
    rows: GroupRows,
    emitted: Vec<(OwnedRow, u64)>,
}

/// Incremental top-N per group.
pub struct TopN {
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    order_by: Vec<SortKey>,
    limit: Limit,
    /// Output data schema: the input's columns, plus the rank when `rank` is set.
    schema: SchemaRef,
    rank: bool,
    keys: RowConverter,
    sort: RowConverter,
    rows: RowConverter,
    groups: HashMap<OwnedRow, Group>,
    append_only: bool,
    bytes: usize,
}

impl TopN {
    /// `input` is the input's data schema; `schema` the output's (input plus the rank
    /// column when `rank`).
    pub fn try_new(
        partition_by: Vec<Arc<dyn PhysicalExpr>>,
        order_by: Vec<SortKey>,
        limit: Limit,
        input: &SchemaRef,
        schema: SchemaRef,
        rank: bool,
    ) -> Result<Self> {
        let types = |exprs: &mut dyn Iterator<Item = &Arc<dyn PhysicalExpr>>| {
            exprs
                .map(|e| e.data_type(input).map_err(EngineError::from))
                .collect::<Result<Vec<DataType>>>()
        };
        let key_types = types(&mut partition_by.iter())?;
        let keys = if key_types.is_empty() {
            RowConverter::new(vec![SortField::new(DataType::Int8)])?
        } else {
            RowConverter::new(key_types.into_iter().map(SortField::new).collect())?
        };
        let sort_types = types(&mut order_by.iter().map(|k| &k.expr))?;
        let sort = RowConverter::new(
            sort_types
                .into_iter()
                .zip(&order_by)
                .map(|(t, k)| SortField::new_with_options(t, k.options))
                .collect(),
        )?;
        let rows = row_converter(input.fields())?;
        Ok(Self {
            partition_by,
            order_by,
            limit,
            schema,
            rank,
            keys,
            sort,
            rows,
            groups: HashMap::default(),
            append_only: false,
            bytes: 0,
        })
    }

    /// The input never retracts: rows below a group's top are dropped for good.
    pub fn with_append_only_input(mut self) -> Self {
        self.append_only = true;
        self
    }

    fn evaluate(
        &self,
        exprs: &mut dyn Iterator<Item = &Arc<dyn PhysicalExpr>>,
        data: &RecordBatch,
    ) -> Result<Vec<ArrayRef>> {
        exprs
            .map(|e| crate::operator::eval::evaluate(e.as_ref(), data))
            .collect()
    }

    /// The group key and sort key of each row of `data`.
    fn keys_and_sorts(&self, data: &RecordBatch) -> Result<(Rows, Rows)> {
        let key_columns = if self.partition_by.is_empty() {
            vec![Arc::new(Int8Array::from(vec![0; data.num_rows()])) as ArrayRef]
        } else {
            self.evaluate(&mut self.partition_by.iter(), data)?
        };
        let keys = self.keys.convert_columns(&key_columns)?;
        let sort_columns = self.evaluate(&mut self.order_by.iter().map(|k| &k.expr), data)?;
        Ok((keys, self.sort.convert_columns(&sort_columns)?))
    }

    /// The group's top rows now, with their ranks (1-based over the whole group).
    fn top(&self, group: &Group) -> Vec<(OwnedRow, u64)> {
        let end = self.limit.offset + self.limit.limit;
        // Kept until the group changes again: no spare capacity (most tops are small).
        let mut out = Vec::with_capacity(self.limit.limit.min(TOP_CAPACITY));
        let mut rank = 0u64;
        'rows: for ((_, row), &n) in group.rows.iter() {
            for _ in 0..n.max(0) {
                rank += 1;
                if rank as usize > end {
                    break 'rows;
                }
                if rank as usize > self.limit.offset {
                    out.push((row.clone(), rank));
                }
            }
        }
        out
    }

    fn output(&self, changes: &[(OwnedRow, u64, i64)]) -> Result<ChangeBatch> {
        let mut columns = self.rows.convert_rows(changes.iter().map(|c| c.0.row()))?;
        if self.rank {
            let ranks: ArrayRef =
                Arc::new(UInt64Array::from_iter_values(changes.iter().map(|c| c.1)));
            let ty = self
                .schema
                .field(self.schema.fields().len() - 1)
                .data_type();
            columns.push(cast(&ranks, ty)?);
        }
        ChangeBatch::from_columns(&self.schema, columns, changes.iter().map(|c| c.2))
    }
}

impl Operator for TopN {
    fn name(&self) -> &'static str {
        "TopN"
    }

    fn describe(&self) -> String {
        format!(
            "TopN(limit {} offset {}, {} partition key(s), {} sort key(s){})",
            self.limit.limit,
            self.limit.offset,
            self.partition_by.len(),
            self.order_by.len(),
            if self.rank { ", with rank" } else { "" }
        )
    }

    fn on_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Emitter) -> Result<()> {
        let data = batch.data();
        let weights = batch.weights();
        let (keys, sorts) = self.keys_and_sorts(&data)?;
        let rows = self.rows.convert_columns(data.columns())?;
        for i in 0..data.num_rows() {
            let group = self.groups.entry(keys.row(i).owned()).or_default();
            let entry = (sorts.row(i).owned(), rows.row(i).owned());
            let size = entry.0.as_ref().len() + entry.1.as_ref().len() + 48;
            if weights.value(i) == 0 {
                continue;
            }
            match group.rows.add(entry, weights.value(i)) {
                Added::Removed => self.bytes = self.bytes.saturating_sub(size),
                Added::Inserted => self.bytes += size,
                Added::Changed => {}
            }
        }
        // Every group a row of this batch went to.
        let mut seen = std::collections::HashSet::new();
        let touched: Vec<OwnedRow> = (0..data.num_rows())
            .map(|i| keys.row(i))
            .filter(|k| seen.insert(*k))
            .map(|k| k.owned())
            .collect();
        let mut changes: Vec<(OwnedRow, u64, i64)> = Vec::new();
        for key in touched {
            let Some(group) = self.groups.get(&key) else {
                continue;
            };
            let new = self.top(group);
            let group = self
                .groups
                .get_mut(&key)
                .expect("invariant: looked up above");
            let old = std::mem::take(&mut group.emitted);
            // Rows without the rank stay put when only ranks below them moved.
            let same =
                |a: &(OwnedRow, u64), b: &(OwnedRow, u64)| a.0 == b.0 && (!self.rank || a.1 == b.1);
            let mut unmatched_new: Vec<bool> = vec![true; new.len()];
            for o in &old {
                match new
                    .iter()
                    .enumerate()
                    .position(|(j, n)| unmatched_new[j] && same(o, n))
                {
                    Some(j) => unmatched_new[j] = false,
                    None => changes.push((o.0.clone(), o.1, -1)),
                }
            }
            for (j, n) in new.iter().enumerate() {
                if unmatched_new[j] {
                    changes.push((n.0.clone(), n.1, 1));
                }
            }
            if self.append_only {
                // Rows past the top can never return: keep only the top.
                let keep = self.limit.offset + self.limit.limit;
                let mut kept = 0i64;
                let mut freed = 0;
                group.rows.retain(|(s, r), n| {
                    let stay = (kept as usize) < keep;
                    kept += n;
                    if !stay {
                        freed += s.as_ref().len() + r.as_ref().len() + 48;
                    }
                    stay
                });
                self.bytes = self.bytes.saturating_sub(freed);
            }
            if group.rows.is_empty() {
                self.groups.remove(&key);
            } else {
                group.emitted = new;
            }
        }
        if !changes.is_empty() {
            out.emit(self.output(&changes)?);
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    fn snapshot(&mut self) -> Result<StateSnapshot> {
        let mut snapshot = StateSnapshot::default();
        let stored = self.groups.values().flat_map(|g| g.rows.iter());
        if let Some(table) = counted_rows_table(&self.rows, stored.map(|((_, r), &n)| (r, n)))? {
            snapshot.put(ROWS, table);
        }
        Ok(snapshot)
    }

    /// Its rows are its input's rows: they go where the exchange sends them.
    fn rescale(&self, old: Vec<StateSnapshot>, router: &StateRouter) -> Result<Vec<StateSnapshot>> {
        let mut parts = vec![StateSnapshot::default(); router.instances()];
        deal_input_rows(&old, &mut parts, ROWS, 0, 1, router)?;
        Ok(parts)
    }

    /// Groups and sort keys are recomputed from the rows; what a group emitted is its top.
    fn restore(&mut self, snapshot: &StateSnapshot) -> Result<()> {
        let Some(table) = snapshot.table(ROWS) else {
            return Ok(());
        };
        let (columns, rows, counts) = read_counted_rows(&self.rows, table)?;
        let fields = table.schema().fields()[..columns.len()].to_vec();
        let data = RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)?;
        let (keys, sorts) = self.keys_and_sorts(&data)?;
        for i in 0..data.num_rows() {
            let entry = (sorts.row(i).owned(), rows.row(i).owned());
            self.bytes += entry.0.as_ref().len() + entry.1.as_ref().len() + 48;
            let group = self.groups.entry(keys.row(i).owned()).or_default();
            if counts.value(i) != 0 {
                group.rows.add(entry, counts.value(i));
            }
        }
        let tops: Vec<(OwnedRow, Vec<(OwnedRow, u64)>)> = self
            .groups
            .iter()
            .map(|(k, g)| (k.clone(), self.top(g)))
            .collect();
        for (k, top) in tops {
            self.groups
                .get_mut(&k)
                .expect("invariant: listed above")
                .emitted = top;
        }
        Ok(())
    }
}

/// The most rows a group's top is allocated for up front.
const TOP_CAPACITY: usize = 16;

/// The state table of a TopN's rows.
const ROWS: &str = "rows";

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::BTreeMap;

    use arrow::array::Array;
    use arrow::datatypes::{Field, Schema};
    use datafusion_physical_expr::expressions::Column;
    use proptest::prelude::*;

    use super::*;
    use crate::operator::proptests::restored;
    use arrow::array::Int64Array;

    use crate::with_weight;

    /// (group, value, payload)
    type Row = (i64, i64, i64);

    fn input() -> SchemaRef {
        Arc::new(Schema::new(
            ["g", "v", "p"]
                .map(|n| Field::new(n, DataType::Int64, true))
                .to_vec(),
        ))
    }

    fn batch(rows: &[(Row, i64)]) -> ChangeBatch {
        let col = |f: fn(&Row) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| f(&r.0))))
        };
        let cols = vec![
            col(|r| r.0),
            col(|r| r.1),
            col(|r| r.2),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))) as ArrayRef,
        ];
        ChangeBatch::try_new(RecordBatch::try_new(with_weight(&input()), cols).unwrap()).unwrap()
    }

    fn top_n(limit: Limit, rank: bool, append_only: bool) -> TopN {
        let mut fields: Vec<Field> = input()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if rank {
            fields.push(Field::new("rn", DataType::UInt64, false));
        }
        let column = |n: &str, i: usize| Arc::new(Column::new(n, i)) as Arc<dyn PhysicalExpr>;
        let order = vec![SortKey {
            expr: column("v", 1),
            options: SortOptions {
                descending: true,
                nulls_first: false,
            },
        }];
        let op = TopN::try_new(
            vec![column("g", 0)],
            order,
            limit,
            &input(),
            Arc::new(Schema::new(fields)),
            rank,
        )
        .unwrap();
        if append_only {
            op.with_append_only_input()
        } else {
            op
        }
    }

    /// The expected view: per group, rows by value descending (ties by row), windowed.
    fn model(rows: &HashMap<Row, i64>, limit: Limit, rank: bool) -> HashMap<(Row, u64), i64> {
        let mut by_group: BTreeMap<i64, Vec<Row>> = BTreeMap::new();
        for (r, &n) in rows {
            for _ in 0..n.max(0) {
                by_group.entry(r.0).or_default().push(*r);
            }
        }
        let mut out = HashMap::default();
        for (_, mut group) in by_group {
            group.sort_by_key(|r| (Reverse(r.1), *r));
            for (i, r) in group
                .into_iter()
                .enumerate()
                .skip(limit.offset)
                .take(limit.limit)
            {
                let rank = if rank { i as u64 + 1 } else { 0 };
                *out.entry((r, rank)).or_insert(0) += 1;
            }
        }
        out
    }

    fn collect(into: &mut HashMap<(Row, u64), i64>, batches: Vec<ChangeBatch>, rank: bool) {
        for b in batches {
            let d = b.batch();
            let col = |c: usize| {
                d.column(c)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .clone()
            };
            let (g, v, p) = (col(0), col(1), col(2));
            for i in 0..d.num_rows() {
                let r = if rank {
                    d.column(3)
                        .as_any()
                        .downcast_ref::<UInt64Array>()
                        .unwrap()
                        .value(i)
                } else {
                    0
                };
                *into
                    .entry(((g.value(i), v.value(i), p.value(i)), r))
                    .or_insert(0) += b.weights().value(i);
            }
        }
        into.retain(|_, w| *w != 0);
    }

    fn steps(min_weight: i64) -> impl Strategy<Value = Vec<Vec<(Row, i64)>>> {
        let row = ((0i64..3, 0i64..6, 0i64..2), min_weight..=2);
        proptest::collection::vec(proptest::collection::vec(row, 0..6), 1..25)
    }

    /// Whether the operator is restored from a snapshot before each step.
    fn restores() -> impl Strategy<Value = Vec<bool>> {
        proptest::collection::vec(prop::bool::weighted(0.2), 40)
    }

    fn run(
        limit: Limit,
        rank: bool,
        append_only: bool,
        steps: Vec<Vec<(Row, i64)>>,
        restores: Vec<bool>,
    ) -> std::result::Result<(), TestCaseError> {
        let mut op = top_n(limit, rank, append_only);
        let mut rows: HashMap<Row, i64> = HashMap::default();
        let mut output = HashMap::default();
        let mut out = Emitter::default();
        for (step, restore) in steps.into_iter().zip(restores) {
            if restore {
                op = restored(&mut op, top_n(limit, rank, append_only));
            }
            op.on_batch(0, batch(&step), &mut out).unwrap();
            for (r, w) in step {
                *rows.entry(r).or_insert(0) += w;
            }
            collect(&mut output, out.drain(), rank);
            prop_assert_eq!(&output, &model(&rows, limit, rank));
        }
        Ok(())
    }

    proptest! {
        /// After every batch the emitted rows equal each group's top rows recomputed from
        /// scratch (weights -1..=2, ties, ranks shifting as rows enter and leave).
        #[test]
        fn equals_recomputation(offset in 0usize..2, limit in 1usize..4, rank: bool, steps in steps(-1), restores in restores()) {
            run(Limit { offset, limit }, rank, false, steps, restores)?;
        }

        /// Over insert-only input only the top is kept, and the result is the same.
        #[test]
        fn insert_only_keeps_only_the_top(limit in 1usize..4, rank: bool, steps in steps(1), restores in restores()) {
            run(Limit { offset: 0, limit }, rank, true, steps, restores)?;
        }
    }
}
