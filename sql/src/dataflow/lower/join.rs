//! Lowering of joins: equi-joins become a `HashJoin`, temporal ones in lookup mode, with
//! the time bounds of window and interval joins and a NOTICE when state is unbounded;
//! NOT IN (a null-aware anti join) is built from an anti join and the subquery's counts, a
//! join with a one-row side (a scalar subquery) from an equi-join on a constant.

use std::sync::Arc;

use datafusion::common::NullEquality;
use datafusion::datasource::source_as_provider;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{
    Expr, Join, JoinType, LogicalPlan, LogicalPlanBuilder, col, lit, when,
};
use weir_engine::operator::{HashJoin, JoinKind};

use super::{Lowered, Lowering, unsupported};
use crate::dataflow::join_bounds::{JoinBounds, join_bounds};
use crate::error::Result;
use crate::provider::TemporalTable;

impl Lowering<'_> {
    /// An equi-join as a `HashJoin` (plus a filter for an inner join's other conditions).
    pub(super) fn join(&mut self, j: &Join) -> Result<Lowered> {
        let kind = match j.join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            JoinType::Right => JoinKind::Right,
            JoinType::Full => JoinKind::Full,
            JoinType::LeftSemi => JoinKind::Semi(0),
            JoinType::RightSemi => JoinKind::Semi(1),
            JoinType::LeftAnti if !j.null_aware => JoinKind::Anti(0),
            JoinType::RightAnti => JoinKind::Anti(1),
            JoinType::LeftAnti => return self.null_aware_anti_join(j),
            other => return Err(unsupported(&format!("a {other} join"))),
        };
        if j.on.is_empty() {
            if at_most_one_row(&j.left) || at_most_one_row(&j.right) {
                return self.join_one_row(j);
            }
            return Err(unsupported("a JOIN without an equality condition"));
        }
        if is_temporal(&j.left) {
            return Err(unsupported(
                "FOR SYSTEM_TIME AS OF PROCTIME() on a join's left side (put the table on the right)",
            ));
        }
        let lookup = is_temporal(&j.right);
        if lookup && !matches!(kind, JoinKind::Inner | JoinKind::Left) {
            return Err(unsupported("a temporal join other than INNER or LEFT"));
        }
        // An inner join's other conditions filter its pairs afterwards; the other kinds
        // decide padding, keeping or dropping rows by matches that meet them.
        let condition = j.filter.as_ref().filter(|_| kind != JoinKind::Inner);
        if lookup && condition.is_some() {
            return Err(unsupported(
                "a LEFT temporal join with conditions other than equalities",
            ));
        }
        let left = self.lower(&j.left)?;
        if lookup && !left.append_only {
            return Err(unsupported(
                "a temporal join whose stream side has updates or deletes (it must be a source or an APPEND ONLY table)",
            ));
        }
        let right = self.lower(&j.right)?;
        let keys = |side: &LogicalPlan, pick: fn(&(Expr, Expr)) -> &Expr| {
            j.on.iter()
                .map(|pair| self.physical(pick(pair), side.schema()))
                .collect::<Result<Vec<_>>>()
        };
        let left_keys = keys(&j.left, |p| &p.0)?;
        let right_keys = keys(&j.right, |p| &p.1)?;
        let exchange = [
            super::partitioning(left_keys.clone()),
            super::partitioning(right_keys.clone()),
        ];
        let schema = Arc::new(j.schema.as_arrow().clone());
        let op = HashJoin::try_new(
            kind,
            left_keys,
            right_keys,
            [
                Arc::new(j.left.schema().as_arrow().clone()),
                Arc::new(j.right.schema().as_arrow().clone()),
            ],
            Arc::clone(&schema),
            j.null_equality == NullEquality::NullEqualsNull,
        )?;
        let bounds = join_bounds(j, [&left.windows, &right.windows]);
        if !lookup && left.append_only && right.append_only && !bounds.bounded() {
            self.notices.push(
                "this join keeps every row of both inputs, which only ever insert, and has no \
                 time bound: its state grows without limit (see weir_catalog.dataflows.state_bytes). \
                 Bound it with a window join (join on window_start of the same TUMBLE or HOP), \
                 an interval join (b.ts BETWEEN a.ts AND a.ts + INTERVAL ...) or a temporal join \
                 (FOR SYSTEM_TIME AS OF PROCTIME())"
                    .to_string(),
            );
        }
        let op = match condition {
            Some(c) => {
                let pairs = j.left.schema().join(j.right.schema())?;
                let pred = self.physical(c, &pairs)?;
                op.with_condition(pred, Arc::new(pairs.as_arrow().clone()))
            }
            None => op,
        };
        let op = if lookup { op.with_lookup() } else { op };
        let op = if bounds == JoinBounds::default() {
            op
        } else {
            self.graph.align_watermarks();
            let op = op.with_expiry(bounds.expiry, bounds.late);
            if bounds.late.iter().any(Option::is_some) {
                self.late_rows.push(op.late_rows());
            }
            op
        };
        // Each side crosses an exchange by its keys: equal keys meet in one instance.
        let id = self.graph.add(Box::new(op));
        let [l, r] = exchange;
        self.graph.exchange(left.node, id, 0, l)?;
        self.graph.exchange(right.node, id, 1, r)?;
        let mut node = id;
        if let Some(filter) = j.filter.as_ref().filter(|_| kind == JoinKind::Inner) {
            let pred = self.physical(filter, &j.schema)?;
            node = self.filter(pred, &schema, node)?;
        }
        let windows = match kind {
            JoinKind::Semi(0) | JoinKind::Anti(0) => left.windows,
            JoinKind::Semi(_) | JoinKind::Anti(_) => right.windows,
            _ => [left.windows, right.windows].concat(),
        };
        Ok(Lowered {
            node,
            windows,
            // A lookup never retracts what it emitted.
            append_only: (kind == JoinKind::Inner && left.append_only && right.append_only)
                || lookup,
        })
    }

    /// `l WHERE k NOT IN (SELECT k2 FROM r)`, a null-aware anti join, from joins the
    /// engine has. Postgres's NOT IN keeps a row when no `k2` equals its `k`, unless the
    /// subquery has a NULL (then no row is kept) or the row's `k` is NULL and the subquery
    /// has rows. So: the plain anti join, crossed (on a constant) with the subquery's one
    /// row of counts, filtered by `nulls = 0 AND (k IS NOT NULL OR n = 0)`. The constant
    /// key puts every row in one instance: correct, not parallel.
    fn null_aware_anti_join(&mut self, j: &Join) -> Result<Lowered> {
        let [(left_key, right_key)] = j.on.as_slice() else {
            return Err(unsupported(
                "NOT IN over a subquery of more than one column",
            ));
        };
        if j.filter.is_some() {
            return Err(unsupported("a correlated NOT IN with other conditions"));
        }
        let left_columns: Vec<Expr> = j
            .left
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        let anti = LogicalPlanBuilder::from(j.left.as_ref().clone())
            .join_with_expr_keys(
                j.right.as_ref().clone(),
                JoinType::LeftAnti,
                (vec![left_key.clone()], vec![right_key.clone()]),
                None,
            )?
            .project(
                left_columns
                    .iter()
                    .cloned()
                    .chain([lit(1i64).alias(ONE_LEFT)]),
            )?
            .build()?;
        let counts = LogicalPlanBuilder::from(j.right.as_ref().clone())
            .aggregate(
                Vec::<Expr>::new(),
                vec![
                    count(lit(1i64)).alias(ROWS),
                    count(when(right_key.clone().is_null(), lit(1i64)).end()?).alias(NULLS),
                ],
            )?
            .project(vec![col(ROWS), col(NULLS), lit(1i64).alias(ONE_RIGHT)])?
            .build()?;
        let keep = col(NULLS)
            .eq(lit(0i64))
            .and(left_key.clone().is_not_null().or(col(ROWS).eq(lit(0i64))));
        let plan = LogicalPlanBuilder::from(anti)
            .join_with_expr_keys(
                counts,
                JoinType::Inner,
                (vec![col(ONE_LEFT)], vec![col(ONE_RIGHT)]),
                None,
            )?
            .filter(keep)?
            .project(left_columns)?
            .build()?;
        self.lower(&plan)
    }
}

impl Lowering<'_> {
    /// A join without equalities whose one side has at most one row: what DataFusion makes
    /// of a scalar subquery (`WHERE v > (SELECT max(v) FROM t)`, a subquery in the select
    /// list). It becomes an equi-join on a constant, so a change of the one row re-joins
    /// the other side's rows (kept in the join's state), as a dynamic filter does. The
    /// constant key puts every row in one instance.
    fn join_one_row(&mut self, j: &Join) -> Result<Lowered> {
        let keyed = |side: &LogicalPlan, key: &str| -> Result<LogicalPlan> {
            let columns = side.schema().columns().into_iter().map(Expr::Column);
            Ok(
                LogicalPlanBuilder::from(without_one_row_limits(side.clone())?)
                    .project(columns.chain([lit(1i64).alias(key)]))?
                    .build()?,
            )
        };
        let output: Vec<Expr> = j.schema.columns().into_iter().map(Expr::Column).collect();
        let plan = LogicalPlanBuilder::from(keyed(&j.left, ONE_LEFT)?)
            .join_with_expr_keys(
                keyed(&j.right, ONE_RIGHT)?,
                j.join_type,
                (vec![col(ONE_LEFT)], vec![col(ONE_RIGHT)]),
                j.filter.clone(),
            )?
            .project(output)?
            .build()?;
        self.lower(&plan)
    }
}

/// Whether `plan` yields at most one row: an aggregate without GROUP BY, through
/// projections, filters, aliases and limits (a scalar subquery's plan has `LIMIT 1`).
fn at_most_one_row(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Aggregate(a) => a.group_expr.is_empty(),
        LogicalPlan::Projection(_)
        | LogicalPlan::Filter(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Limit(_) => plan.inputs().into_iter().all(at_most_one_row),
        _ => false,
    }
}

/// `plan` without the `LIMIT n` (n >= 1, no OFFSET) over parts that have one row at most:
/// they change nothing, and a view keeps no LIMIT without ORDER BY.
fn without_one_row_limits(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::{FetchType, SkipType};
    Ok(plan
        .transform_up(|p| {
            if let LogicalPlan::Limit(l) = &p
                && matches!(l.get_skip_type()?, SkipType::Literal(0))
                && matches!(l.get_fetch_type()?, FetchType::Literal(Some(n)) if n >= 1)
                && at_most_one_row(&l.input)
            {
                return Ok(Transformed::yes(l.input.as_ref().clone()));
            }
            Ok(Transformed::no(p))
        })?
        .data)
}

/// Columns of the NOT IN rewrite and of a join with a one-row side: the constant join key
/// of each side; and the NOT IN subquery's row count and its count of NULL values.
const ONE_LEFT: &str = "__weir_not_in_one_l";
const ONE_RIGHT: &str = "__weir_not_in_one_r";
const ROWS: &str = "__weir_not_in_rows";
const NULLS: &str = "__weir_not_in_nulls";

/// Whether `plan` reads a table `FOR SYSTEM_TIME AS OF PROCTIME()` (through projections,
/// filters and aliases).
fn is_temporal(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(scan) => source_as_provider(&scan.source).is_ok_and(|p| {
            let any: &dyn std::any::Any = p.as_ref();
            any.is::<TemporalTable>()
        }),
        LogicalPlan::Projection(_) | LogicalPlan::Filter(_) | LogicalPlan::SubqueryAlias(_) => {
            plan.inputs().into_iter().any(is_temporal)
        }
        _ => false,
    }
}
