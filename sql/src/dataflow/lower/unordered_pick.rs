//! `first_value(x)` and `last_value(x)` without ORDER BY (what DataFusion plans `SELECT
//! DISTINCT ON (k) a, b` as), given one shared order.
//!
//! Without an order their answer is whichever row arrived first, which a retraction can
//! take away and a batch query need not reproduce. Postgres leaves the row unspecified, so
//! weir picks it by value: every unordered pick of a group is ordered by the arguments of
//! all of them, ascending, and so `first_value(a)` and `first_value(b)` come from the same
//! row (the least by `(a, b)`), as a DISTINCT ON row must.

use datafusion::logical_expr::Expr;
use datafusion::logical_expr::expr::{AggregateFunction, Alias, Sort};

/// The aggregates that pick one row's value, and are ordered only when asked to.
const PICKS: &[&str] = &["first_value", "last_value"];

/// `aggregates` with every unordered pick ordered by the arguments of all of them.
pub(super) fn order_unordered_picks(aggregates: &[Expr]) -> Vec<Expr> {
    let mut order = Vec::new();
    for e in aggregates {
        if let Some(f) = unordered_pick(e) {
            for arg in &f.params.args {
                let key = Sort::new(arg.clone(), true, true);
                if !order.contains(&key) {
                    order.push(key);
                }
            }
        }
    }
    aggregates.iter().map(|e| with_order(e, &order)).collect()
}

/// The aggregate call under `e`'s alias, when it is a pick without ORDER BY.
fn unordered_pick(e: &Expr) -> Option<&AggregateFunction> {
    match e {
        Expr::Alias(Alias { expr, .. }) => unordered_pick(expr),
        Expr::AggregateFunction(f)
            if f.params.order_by.is_empty()
                && PICKS.contains(&f.func.name().to_ascii_lowercase().as_str()) =>
        {
            Some(f)
        }
        _ => None,
    }
}

fn with_order(e: &Expr, order: &[Sort]) -> Expr {
    match e {
        Expr::Alias(alias) => Expr::Alias(Alias {
            expr: Box::new(with_order(&alias.expr, order)),
            ..alias.clone()
        }),
        Expr::AggregateFunction(f) if unordered_pick(e).is_some() => {
            let mut f = f.clone();
            f.params.order_by = order.to_vec();
            Expr::AggregateFunction(f)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::functions_aggregate::expr_fn::{first_value, sum};
    use datafusion::logical_expr::col;

    use super::*;

    #[test]
    fn picks_share_one_order_and_other_aggregates_are_untouched() {
        let aggregates = vec![
            first_value(col("a"), vec![]).alias("a"),
            first_value(col("b"), vec![]),
            sum(col("c")),
        ];
        let ordered = order_unordered_picks(&aggregates);
        let order = vec![
            Sort::new(col("a"), true, true),
            Sort::new(col("b"), true, true),
        ];
        assert_eq!(ordered[0], first_value(col("a"), order.clone()).alias("a"));
        assert_eq!(ordered[1], first_value(col("b"), order));
        assert_eq!(ordered[2], aggregates[2]);
    }
}
