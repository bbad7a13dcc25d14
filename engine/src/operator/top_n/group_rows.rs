//! `GroupRows`: one top-N group's rows in sort order, with their counts. A group starts as a
//! sorted `Vec` and becomes a `BTreeMap` past `SMALL_GROUP` rows: a top-N over insert-only
//! input keeps only N rows per group, and millions of groups (Nexmark q18, q19) each paid
//! for a B-tree node of eleven slots.

use std::collections::BTreeMap;

use arrow::row::OwnedRow;

/// Rows a group holds in a sorted `Vec` before it moves to a `BTreeMap` (a `Vec` insert
/// moves the rows after it).
const SMALL_GROUP: usize = 32;

/// A row's place in its group: its sort key, then the row itself.
pub(super) type Entry = (OwnedRow, OwnedRow);

/// A group's rows by `Entry`, each with its count (never 0).
pub(super) enum GroupRows {
    Few(Vec<(Entry, i64)>),
    Many(BTreeMap<Entry, i64>),
}

impl Default for GroupRows {
    fn default() -> Self {
        Self::Few(Vec::new())
    }
}

/// What adding a weight did to an entry.
pub(super) enum Added {
    /// The entry is new.
    Inserted,
    /// Its count reached 0: it is gone.
    Removed,
    /// Its count changed.
    Changed,
}

impl GroupRows {
    /// Adds `weight` (not 0) to the count of `entry`.
    pub(super) fn add(&mut self, entry: Entry, weight: i64) -> Added {
        match self {
            Self::Few(rows) => match rows.binary_search_by(|(e, _)| e.cmp(&entry)) {
                Ok(at) => {
                    rows[at].1 += weight;
                    if rows[at].1 == 0 {
                        rows.remove(at);
                        Added::Removed
                    } else {
                        Added::Changed
                    }
                }
                Err(at) => {
                    if rows.capacity() == 0 {
                        rows.reserve_exact(1);
                    }
                    rows.insert(at, (entry, weight));
                    if rows.len() > SMALL_GROUP {
                        let many = std::mem::take(rows).into_iter().collect();
                        *self = Self::Many(many);
                    }
                    Added::Inserted
                }
            },
            Self::Many(rows) => {
                let count = rows.entry(entry.clone()).or_insert(0);
                let new = *count == 0;
                *count += weight;
                if *count == 0 {
                    rows.remove(&entry);
                    Added::Removed
                } else if new {
                    Added::Inserted
                } else {
                    Added::Changed
                }
            }
        }
    }

    /// The rows in sort order.
    pub(super) fn iter(&self) -> Box<dyn Iterator<Item = (&Entry, &i64)> + '_> {
        match self {
            Self::Few(rows) => Box::new(rows.iter().map(|(e, n)| (e, n))),
            Self::Many(rows) => Box::new(rows.iter()),
        }
    }

    /// Keeps the rows, in sort order, for which `keep` says so.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Entry, i64) -> bool) {
        match self {
            Self::Few(rows) => rows.retain(|(e, n)| keep(e, *n)),
            Self::Many(rows) => rows.retain(|e, n| keep(e, *n)),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        match self {
            Self::Few(rows) => rows.is_empty(),
            Self::Many(rows) => rows.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, Int64Array};
    use arrow::datatypes::DataType;
    use arrow::row::{RowConverter, SortField};
    use std::sync::Arc;

    use super::*;

    fn entries(values: &[i64]) -> Vec<Entry> {
        let converter = RowConverter::new(vec![SortField::new(DataType::Int64)]).unwrap();
        let column: ArrayRef = Arc::new(Int64Array::from(values.to_vec()));
        let rows = converter.convert_columns(&[column]).unwrap();
        (0..values.len())
            .map(|i| (rows.row(i).owned(), rows.row(i).owned()))
            .collect()
    }

    #[test]
    fn rows_stay_in_order_and_counted_as_the_group_grows_past_small() {
        // Values added in a scrambled order, some twice, some removed again.
        let values: Vec<i64> = (0..100).map(|i| (i * 37) % 100).collect();
        let all = entries(&values);
        let mut group = GroupRows::default();
        for e in &all {
            group.add(e.clone(), 1);
        }
        for e in &all[..10] {
            group.add(e.clone(), 1);
        }
        for e in &all[90..] {
            assert!(matches!(group.add(e.clone(), -1), Added::Removed));
        }
        assert!(matches!(group, GroupRows::Many(_)));
        let kept: Vec<(i64, i64)> = group
            .iter()
            .map(|(e, &n)| {
                let i = all.iter().position(|a| a == e).unwrap();
                (values[i], n)
            })
            .collect();
        let mut expected: Vec<(i64, i64)> = values[..90]
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, if i < 10 { 2 } else { 1 }))
            .collect();
        expected.sort();
        assert_eq!(kept, expected);
        group.retain(|_, n| n > 1);
        assert_eq!(group.iter().count(), 10);
    }
}
