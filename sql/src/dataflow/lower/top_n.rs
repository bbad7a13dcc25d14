//! Lowering of TopN: `ORDER BY .. LIMIT n [OFFSET m]`, and the per-group form
//! `WHERE rn <= n` over `row_number() OVER (PARTITION BY .. ORDER BY ..) AS rn`; other
//! window functions over partitions become an `OverWindow`.

use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::logical_plan::{FetchType, SkipType};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    BinaryExpr, Expr, Filter, LogicalPlan, Operator as Op, Sort, SortExpr, WindowFunctionDefinition,
};
use datafusion::physical_planner::create_window_expr;
use weir_engine::operator::{Limit, OverWindow, SortKey, TopN};

use super::{Lowered, Lowering, unsupported};
use crate::error::{Result, SqlError};

impl Lowering<'_> {
    /// `LIMIT` (with OFFSET) over an `ORDER BY`.
    pub(super) fn limit(&mut self, l: &datafusion::logical_expr::Limit) -> Result<Lowered> {
        let (SkipType::Literal(offset), FetchType::Literal(fetch)) =
            (l.get_skip_type()?, l.get_fetch_type()?)
        else {
            return Err(unsupported("LIMIT or OFFSET other than a constant"));
        };
        let LogicalPlan::Sort(sort) = l.input.as_ref() else {
            return Err(unsupported("LIMIT without ORDER BY"));
        };
        let limit = fetch.unwrap_or(usize::MAX - offset);
        self.top_n(sort, Limit { offset, limit })
    }

    /// The rows of `sort`'s input that `limit` keeps in its order.
    pub(super) fn top_n(&mut self, sort: &Sort, limit: Limit) -> Result<Lowered> {
        let input = self.lower(&sort.input)?;
        let order_by = self.sort_keys(&sort.expr, sort.input.schema())?;
        let schema = Arc::new(sort.input.schema().as_arrow().clone());
        let mut op = TopN::try_new(
            Vec::new(),
            order_by,
            limit,
            &schema,
            Arc::clone(&schema),
            false,
        )?;
        if input.append_only {
            op = op.with_append_only_input();
        }
        Ok(Lowered {
            node: self.add_keyed(Box::new(op), input.node, Vec::new())?,
            windows: input.windows,
            append_only: false,
        })
    }

    /// `rn <= n` over a `row_number()` window: a TopN per partition, with the rank.
    pub(super) fn row_number_filter(&mut self, f: &Filter) -> Result<Option<Lowered>> {
        let LogicalPlan::Window(w) = f.input.as_ref() else {
            return Ok(None);
        };
        let [expr] = w.window_expr.as_slice() else {
            return Ok(None);
        };
        let Some(WindowFunction { fun, params }) = window_function(expr) else {
            return Ok(None);
        };
        let is_row_number =
            matches!(fun, WindowFunctionDefinition::WindowUDF(u) if u.name() == "row_number");
        let rank_column = w.schema.fields().len() - 1;
        let Some(n) = rank_bound(&f.predicate, &w.schema, rank_column) else {
            return Ok(None);
        };
        if !is_row_number {
            return Ok(None);
        }
        let input = self.lower(&w.input)?;
        let partition_by = params
            .partition_by
            .iter()
            .map(|e| self.physical(e, w.input.schema()))
            .collect::<Result<Vec<_>>>()?;
        let order_by = self.sort_keys(&params.order_by, w.input.schema())?;
        let in_schema = Arc::new(w.input.schema().as_arrow().clone());
        let out_schema = Arc::new(w.schema.as_arrow().clone());
        let limit = Limit {
            offset: 0,
            limit: n,
        };
        let mut op = TopN::try_new(
            partition_by.clone(),
            order_by,
            limit,
            &in_schema,
            out_schema,
            true,
        )?;
        if input.append_only {
            op = op.with_append_only_input();
        }
        let mut windows = input.windows;
        windows.push(None);
        Ok(Some(Lowered {
            node: self.add_keyed(Box::new(op), input.node, partition_by)?,
            windows,
            append_only: false,
        }))
    }

    /// Window functions over partitions (`lag`, `rank`, a running `sum`, ...): an
    /// `OverWindow` per instance, owning the partitions that hash to it.
    pub(super) fn over_window(&mut self, w: &datafusion::logical_expr::Window) -> Result<Lowered> {
        let input = self.lower(&w.input)?;
        let functions = w
            .window_expr
            .iter()
            .map(|e| {
                Ok(create_window_expr(
                    e,
                    w.input.schema(),
                    self.props,
                    &PhysicalPlanningContext::default(),
                )?)
            })
            .collect::<Result<Vec<_>>>()?;
        let partition_by = functions
            .first()
            .map(|f| f.partition_by().to_vec())
            .unwrap_or_default();
        let op = OverWindow::try_new(
            functions,
            Arc::new(w.input.schema().as_arrow().clone()),
            Arc::new(w.schema.as_arrow().clone()),
        )
        .map_err(|e| SqlError::unsupported(e.to_string()))?;
        let mut windows = input.windows;
        windows.resize(w.schema.fields().len(), None);
        Ok(Lowered {
            node: self.add_keyed(Box::new(op), input.node, partition_by)?,
            windows,
            append_only: false,
        })
    }

    fn sort_keys(&self, exprs: &[SortExpr], schema: &DFSchema) -> Result<Vec<SortKey>> {
        exprs
            .iter()
            .map(|s| {
                Ok(SortKey {
                    expr: self.physical(&s.expr, schema)?,
                    options: SortOptions {
                        descending: !s.asc,
                        nulls_first: s.nulls_first,
                    },
                })
            })
            .collect()
    }
}

/// The window function of a (possibly aliased) window expression.
fn window_function(e: &Expr) -> Option<&WindowFunction> {
    match e {
        Expr::Alias(a) => window_function(&a.expr),
        Expr::WindowFunction(w) => Some(w),
        _ => None,
    }
}

/// n when `predicate` is `rank <= n`, `rank < n + 1` or the same written the other way round.
fn rank_bound(predicate: &Expr, schema: &DFSchema, rank: usize) -> Option<usize> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = predicate else {
        return None;
    };
    let is_rank =
        |e: &Expr| matches!(e, Expr::Column(c) if schema.index_of_column(c).ok() == Some(rank));
    let (op, value) = if is_rank(left) {
        (*op, right.as_ref())
    } else if is_rank(right) {
        (op.swap()?, left.as_ref())
    } else {
        return None;
    };
    let n = match value {
        Expr::Literal(v, _) => match v {
            ScalarValue::UInt64(Some(n)) => *n as i128,
            ScalarValue::Int64(Some(n)) => *n as i128,
            ScalarValue::Int32(Some(n)) => *n as i128,
            _ => return None,
        },
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Literal(ScalarValue::Int64(Some(n)), _) => *n as i128,
            _ => return None,
        },
        _ => return None,
    };
    let n = match op {
        Op::LtEq => n,
        Op::Lt => n - 1,
        _ => return None,
    };
    usize::try_from(n.max(0)).ok()
}
