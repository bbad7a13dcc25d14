//! The time bounds that let a join forget rows: a window join (both sides' keys include the
//! same window bound) frees a window's rows when it closes; an interval join (conditions
//! like `b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' HOUR`) frees a row once no row still to
//! come on the other side can fall into its interval.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Join, Operator};
use weir_engine::operator::Expiry;

/// How each side's rows expire, and whether rows behind the watermark are dropped.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct JoinBounds {
    pub(super) expiry: [Option<Expiry>; 2],
    pub(super) drop_late: bool,
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
                drop_late: false,
            };
        }
    }
    let Some(filter) = &j.filter else {
        return JoinBounds::default();
    };
    // r.time - l.time within [lo, hi].
    let (mut lo, mut hi, mut columns) = (None::<i64>, None::<i64>, None);
    let mut bound = |a: &Expr, op: Operator, b: &Expr| {
        let (Some(a), Some(b)) = (term(a, schemas), term(b, schemas)) else {
            return;
        };
        // Written as right - left `op` value.
        let (op, value, cols) = match (a.0, b.0) {
            (1, 0) => (op, b.2 - a.2, (b.1, a.1)),
            (0, 1) => (op.swap().unwrap_or(op), a.2 - b.2, (a.1, b.1)),
            _ => return,
        };
        if *columns.get_or_insert(cols) != cols {
            return;
        }
        match op {
            Operator::GtEq | Operator::Gt => lo = Some(lo.map_or(value, |l| l.max(value))),
            Operator::LtEq | Operator::Lt => hi = Some(hi.map_or(value, |h| h.min(value))),
            _ => {}
        }
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
    let Some((left_time, right_time)) = columns else {
        return JoinBounds::default();
    };
    // A left row meets right rows up to left + hi; a right row meets left rows down to
    // right - lo. Rows still to come are at or after the watermark.
    JoinBounds {
        expiry: [
            hi.map(|hi| Expiry {
                column: left_time,
                offset_ns: hi,
            }),
            lo.map(|lo| Expiry {
                column: right_time,
                offset_ns: -lo,
            }),
        ],
        drop_late: lo.is_some() || hi.is_some(),
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
