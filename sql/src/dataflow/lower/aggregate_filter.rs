//! `agg(x) FILTER (WHERE p)` as `agg(CASE WHEN p THEN x END)`: for an aggregate that skips
//! NULLs the two are equal, and the incremental HashAggregate needs no filter of its own.

use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams, Alias};
use datafusion::logical_expr::{Expr, when};

use crate::error::{Result, SqlError};

/// Aggregates whose result ignores NULL inputs (`count(x)`, not `count(*)`: DataFusion
/// plans `count(*)` as `count(1)`, which the rewrite turns into `count(CASE WHEN p THEN 1
/// END)`, the rows where `p` holds).
const NULL_SKIPPING: &[&str] = &[
    "count",
    "sum",
    "avg",
    "mean",
    "min",
    "max",
    "string_agg",
    "bool_and",
    "bool_or",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "var",
    "var_pop",
    "var_samp",
    "variance",
    "median",
    "bit_and",
    "bit_or",
    "bit_xor",
    "approx_distinct",
];

/// `expr` with its FILTER folded into its arguments; an error naming the aggregate when it
/// does not skip NULLs (such as `array_agg`, which keeps them).
pub(super) fn fold_filter(expr: &Expr) -> Result<Expr> {
    match expr {
        Expr::Alias(Alias {
            expr: inner,
            relation,
            name,
            metadata,
        }) => Ok(Expr::Alias(Alias {
            expr: Box::new(fold_filter(inner)?),
            relation: relation.clone(),
            name: name.clone(),
            metadata: metadata.clone(),
        })),
        Expr::AggregateFunction(AggregateFunction {
            func,
            params:
                AggregateFunctionParams {
                    args,
                    distinct,
                    filter: Some(filter),
                    order_by,
                    null_treatment,
                },
        }) => {
            let name = func.name().to_ascii_lowercase();
            if !NULL_SKIPPING.contains(&name.as_str()) {
                return Err(SqlError::unsupported(format!(
                    "FILTER on {name}() (which does not skip NULLs) in a materialized view is not supported yet"
                )));
            }
            let args = args
                .iter()
                .map(|a| Ok(when(filter.as_ref().clone(), a.clone()).end()?))
                .collect::<Result<Vec<_>>>()?;
            Ok(Expr::AggregateFunction(AggregateFunction {
                func: std::sync::Arc::clone(func),
                params: AggregateFunctionParams {
                    args,
                    distinct: *distinct,
                    filter: None,
                    order_by: order_by.clone(),
                    null_treatment: *null_treatment,
                },
            }))
        }
        other => Ok(other.clone()),
    }
}
