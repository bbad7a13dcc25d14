//! Operators that DataFusion plans but Arrow cannot run, refused at planning.
//! Postgres answers "operator does not exist" (42883) before running anything; so do we.

use datafusion::common::DFSchema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{ExprSchemable, LogicalPlan};
use datafusion::prelude::Expr;

use crate::error::{Result, SqlError};
use crate::types::sql_type_name;
use datafusion::arrow::datatypes::DataType;

/// Checks every expression of `plan` (and of its subqueries) for operands the
/// operator cannot take: today, unary minus on a timestamp (DataFusion's planner
/// refuses strings itself but lets timestamps through to a kernel that fails).
pub(crate) fn check_operand_types(plan: &LogicalPlan) -> Result<()> {
    let mut refused: Option<SqlError> = None;
    plan.apply_with_subqueries(|node| {
        let mut schema = DFSchema::empty();
        for input in node.inputs() {
            schema.merge(input.schema());
        }
        node.apply_expressions(|e| {
            e.apply(|sub| {
                // A type that cannot be resolved here is left to execution.
                if let Expr::Negative(operand) = sub
                    && let Ok(ty) = operand.get_type(&schema)
                    && !negatable(&ty)
                {
                    refused = Some(SqlError::new(
                        "42883",
                        format!("operator does not exist: - {}", sql_type_name(&ty)),
                    ));
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    refused.map_or(Ok(()), Err)
}

/// The types Arrow's `neg` takes (and NULL).
fn negatable(ty: &DataType) -> bool {
    ty.is_signed_integer()
        || ty.is_floating()
        || matches!(
            ty,
            DataType::Null
                | DataType::Decimal32(..)
                | DataType::Decimal64(..)
                | DataType::Decimal128(..)
                | DataType::Decimal256(..)
                | DataType::Interval(_)
                | DataType::Duration(_)
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn check(sql: &str) -> Result<()> {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (n BIGINT, ts TIMESTAMP, s VARCHAR)")
            .await
            .unwrap();
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        check_operand_types(&plan)
    }

    #[tokio::test]
    async fn unary_minus_is_refused_on_non_numerics_only() {
        assert!(
            check("SELECT -n, -(n * 2), -interval '1 day' FROM t")
                .await
                .is_ok()
        );
        for sql in [
            "SELECT -ts FROM t",
            "SELECT n FROM t WHERE n IN (SELECT n FROM t WHERE -ts > now())",
        ] {
            let e = check(sql).await.unwrap_err();
            assert_eq!(e.code, "42883", "{sql}: {e:?}");
            assert!(
                e.message.starts_with("operator does not exist: - "),
                "{e:?}"
            );
        }
    }
}
