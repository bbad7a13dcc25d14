//! The time bounds that let a join forget rows: a window join (both sides' keys include the
//! same window bound) frees a window's rows when it closes; an interval join (conditions
//! like `b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' HOUR`, or `AND a.expires`) frees a row
//! once no row still to come on the other side can fall into its interval.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Join, Operator};
use weir_engine::operator::Expiry;

/// How each side's rows expire, and by which column each side's late rows are dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct JoinBounds {
    pub(super) expiry: [Option<Expiry>; 2],
    /// Per side, the time column by which its rows behind its watermark are dropped.
    pub(super) late: [Option<usize>; 2],
}

impl JoinBounds {
    /// Whether both sides' state is bounded.
    pub(super) fn bounded(&self) -> bool {
        self.expiry.iter().all(Option::is_some)
    }
}

/// The bounds of `j`, given the window-close offsets of each side's columns.
pub(super) fn join_bounds(j: &Join, windows: [&[Option<i64>]; 2]) -> JoinBounds {
    let schemas = [j.left.schema().as_ref(), j.right.schema().as_ref()];
    for (l, r) in &j.on {
        let (Some(li), Some(ri)) = (index(l, schemas[0]), index(r, schemas[1])) else {
            continue;
        };
        if let (Some(Some(a)), Some(Some(b))) = (windows[0].get(li), windows[1].get(ri))
            && a == b
        {
            // The window closes when the watermark reaches column + offset.
            let at = |column| {
                Some(Expiry {
                    column,
                    offset_ns: a - 1,
                })
            };
            return JoinBounds {
                expiry: [at(li), at(ri)],
                late: [None, None],
            };
        }
    }
    let Some(filter) = &j.filter else {
        return JoinBounds::default();
    };
    // Each bound as (left column, right column, op, value): right - left `op` value.
    let mut bounds: Vec<(usize, usize, Operator, i64)> = Vec::new();
    let mut bound = |a: &Expr, op: Operator, b: &Expr| {
        let (Some(a), Some(b)) = (term(a, schemas), term(b, schemas)) else {
            return;
        };
        let normal = match (a.0, b.0) {
            (1, 0) => (b.1, a.1, op, b.2 - a.2),
            (0, 1) => (a.1, b.1, op.swap().unwrap_or(op), a.2 - b.2),
            _ => return,
        };
        bounds.push(normal);
    };
    for conjunct in split_conjunction(filter) {
        match conjunct {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => bound(left, *op, right),
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                bound(expr, Operator::GtEq, low);
                bound(expr, Operator::LtEq, high);
            }
            _ => {}
        }
    }
    // The tightest bound of one direction, on the columns of the first one found.
    let tightest = |upper: bool| {
        let ops: &[Operator] = if upper {
            &[Operator::LtEq, Operator::Lt]
        } else {
            &[Operator::GtEq, Operator::Gt]
        };
        let mut found = bounds.iter().filter(|b| ops.contains(&b.2));
        let first = *found.next()?;
        let same = found.filter(|b| (b.0, b.1) == (first.0, first.1));
        Some(same.fold((first.0, first.1, first.3), |(l, r, v), b| {
            (l, r, if upper { v.min(b.3) } else { v.max(b.3) })
        }))
    };
    // A left row meets right rows whose time is at most its column + hi; a right row meets
    // left rows whose time is at least its column - lo. Rows still to come are at or after
    // their input's watermark, or late and dropped: each side's expiry relies on the
    // other side dropping rows behind its watermark by the column the bound compares.
    let (hi, lo) = (tightest(true), tightest(false));
    JoinBounds {
        expiry: [
            hi.map(|(left, _, hi)| Expiry {
                column: left,
                offset_ns: hi,
            }),
            lo.map(|(_, right, lo)| Expiry {
                column: right,
                offset_ns: -lo,
            }),
        ],
        late: [lo.map(|(left, _, _)| left), hi.map(|(_, right, _)| right)],
    }
}

/// Index of a (possibly cast or aliased) column in `schema`.
fn index(e: &Expr, schema: &DFSchema) -> Option<usize> {
    match e {
        Expr::Column(c) => schema.index_of_column(c).ok(),
        Expr::Cast(c) => index(&c.expr, schema),
        Expr::Alias(a) => index(&a.expr, schema),
        _ => None,
    }
}

/// `column [+|- INTERVAL]` as (side, column index, offset in ns).
fn term(e: &Expr, schemas: [&DFSchema; 2]) -> Option<(usize, usize, i64)> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (side, column, base) = term(left, schemas)?;
            let ns = interval_ns(right)?;
            match op {
                Operator::Plus => Some((side, column, base.checked_add(ns)?)),
                Operator::Minus => Some((side, column, base.checked_sub(ns)?)),
                _ => None,
            }
        }
        Expr::Cast(c) => term(&c.expr, schemas),
        _ => (0..2).find_map(|side| {
            let i = index(e, schemas[side])?;
            matches!(schemas[side].field(i).data_type(), DataType::Timestamp(..))
                .then_some((side, i, 0))
        }),
    }
}

/// An interval literal of days or less, in ns.
fn interval_ns(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            Some(v.days as i64 * 86_400_000_000_000 + v.nanoseconds)
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            Some(v.days as i64 * 86_400_000_000_000 + v.milliseconds as i64 * 1_000_000)
        }
        Expr::Cast(c) => interval_ns(&c.expr),
        _ => None,
    }
}
