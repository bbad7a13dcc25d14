//! SESSION windows in plans: the ad hoc (batch) expansion as window functions over each
//! key's rows in time order, and `SessionKeys`, the rule that gives each SESSION scan the
//! GROUP BY key above it, so batch and dataflow both form sessions per key.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::Result;
use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::functions_window::expr_fn::lag;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{
    Expr, ExprFunctionExt, LogicalPlan, LogicalPlanBuilder, WindowFrame, WindowFunctionDefinition,
    cast, col, lit, when,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use super::window_table::{WindowTable, Windowing};

const T: &str = "__weir_t";
const SESSION_ID: &str = "__weir_session";

/// Rows of `table` with their session bounds: a session of one key is a maximal run of
/// its rows (in time order) less than `gap` apart, `[first, last + gap)`.
pub(super) fn plan(table: &WindowTable, gap: i64, key: &[usize]) -> Result<LogicalPlan> {
    let source =
        provider_as_source(Arc::clone(&table.input) as Arc<dyn datafusion::catalog::TableProvider>);
    let scan = LogicalPlanBuilder::scan(table.relation.clone(), source, None)?.build()?;
    let input_columns: Vec<Expr> = scan
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let keys: Vec<Expr> = key.iter().map(|&i| input_columns[i].clone()).collect();
    let by_time = vec![col(T).sort(true, false)];
    let window = |fun: WindowFunctionDefinition, arg: Expr| {
        Expr::WindowFunction(Box::new(WindowFunction::new(fun, vec![arg])))
    };
    let mut with_t = input_columns.clone();
    with_t.push(table.time_ns().alias(T));
    let prev = lag(col(T), Some(1), None)
        .partition_by(keys.clone())
        .order_by(by_time.clone())
        .build()?
        .alias("__weir_prev");
    let starts = when(
        col("__weir_prev")
            .is_null()
            .or((col(T) - col("__weir_prev")).gt_eq(lit(gap))),
        lit(1i64),
    )
    .otherwise(lit(0i64))?;
    // RANGE frame: rows with equal times are peers and get the same session number.
    let session_id = window(sum_udaf().into(), col("__weir_starts"))
        .partition_by(keys.clone())
        .order_by(by_time)
        .window_frame(WindowFrame::new(Some(true)))
        .build()?
        .alias(SESSION_ID);
    let mut per_session = keys.clone();
    per_session.push(col(SESSION_ID));
    let bound = |fun: WindowFunctionDefinition, name: &str| -> Result<Expr> {
        Ok(window(fun, col(T))
            .partition_by(per_session.clone())
            .build()?
            .alias(name))
    };
    let time_type = table.schema.field(table.time_column).data_type().clone();
    let as_time = |ns: Expr| {
        cast(
            cast(ns, DataType::Timestamp(TimeUnit::Nanosecond, None)),
            time_type.clone(),
        )
    };
    let mut starts_cols = input_columns.clone();
    starts_cols.push(col(T));
    starts_cols.push(starts.alias("__weir_starts"));
    let mut out = input_columns.clone();
    out.push(as_time(col("__weir_first")).alias("window_start"));
    out.push(as_time(col("__weir_last") + lit(gap)).alias("window_end"));
    LogicalPlanBuilder::from(scan)
        .project(with_t)?
        .filter(col(T).is_not_null())?
        .window(vec![prev])?
        .project(starts_cols)?
        .window(vec![session_id])?
        .window(vec![
            bound(min_udaf().into(), "__weir_first")?,
            bound(max_udaf().into(), "__weir_last")?,
        ])?
        .project(out)?
        .build()
}

/// Binds every SESSION scan to the GROUP BY key of the aggregate above it (the group
/// columns that are plain columns of the windowed relation).
#[derive(Debug, Default)]
pub(crate) struct SessionKeys;

impl OptimizerRule for SessionKeys {
    fn name(&self) -> &str {
        "weir_session_keys"
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        bind(plan, &[])
    }
}

/// Index of `expr` in `schema` when it is a (possibly aliased) column.
fn column_index(expr: &Expr, schema: &DFSchema) -> Option<usize> {
    match expr {
        Expr::Alias(a) => column_index(&a.expr, schema),
        Expr::Column(c) => schema.index_of_column(c).ok(),
        _ => None,
    }
}

/// Rewrites `plan`, whose output columns `wanted` are the grouping key from above.
fn bind(plan: LogicalPlan, wanted: &[usize]) -> Result<Transformed<LogicalPlan>> {
    match &plan {
        LogicalPlan::TableScan(scan) => {
            let Ok(provider) = source_as_provider(&scan.source) else {
                return Ok(Transformed::no(plan));
            };
            let any: &dyn std::any::Any = provider.as_ref();
            let Some(table) = any.downcast_ref::<WindowTable>() else {
                return Ok(Transformed::no(plan));
            };
            let Windowing::Session { gap, key } = &table.windowing else {
                return Ok(Transformed::no(plan));
            };
            let inputs = table.input.schema().fields().len();
            let mut new_key: Vec<usize> = wanted
                .iter()
                .map(|&i| scan.projection.as_ref().map_or(i, |p| p[i]))
                .filter(|&i| i < inputs)
                .collect();
            new_key.sort_unstable();
            new_key.dedup();
            if &new_key == key {
                return Ok(Transformed::no(plan));
            }
            let mut bound = table.clone();
            bound.windowing = Windowing::Session {
                gap: *gap,
                key: new_key,
            };
            let mut scan = scan.clone();
            scan.source = provider_as_source(Arc::new(bound));
            Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
        }
        LogicalPlan::Aggregate(a) => {
            let keys: Vec<usize> = a
                .group_expr
                .iter()
                .filter_map(|e| column_index(e, a.input.schema()))
                .collect();
            plan.map_children(|c| bind(c, &keys))
        }
        LogicalPlan::Projection(p) => {
            let keys: Vec<usize> = wanted
                .iter()
                .filter_map(|&i| column_index(&p.expr[i], p.input.schema()))
                .collect();
            plan.map_children(|c| bind(c, &keys))
        }
        LogicalPlan::Filter(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::Union(_) => {
            let wanted = wanted.to_vec();
            plan.map_children(|c| bind(c, &wanted))
        }
        _ => plan.map_children(|c| bind(c, &[])),
    }
}
