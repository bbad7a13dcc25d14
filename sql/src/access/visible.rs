//! information_schema shows a role only the relations it holds a privilege on, as in
//! Postgres: BI tools then list what a dashboard login may read, and nothing else.

use std::sync::Arc;

use datafusion::common::Column;
use datafusion::common::tree_node::Transformed;
use datafusion::logical_expr::{Filter, LogicalPlan};
use datafusion::prelude::{Expr, lit};

use super::{Access, SYSTEM_SCHEMAS, Standing};
use crate::error::Result;

/// The information_schema tables that list relations, with their relation-name column.
const LISTINGS: [(&str, &str); 3] = [
    ("tables", "table_name"),
    ("columns", "table_name"),
    ("views", "table_name"),
];

impl Access {
    /// `plan` with each scan of an information_schema listing filtered to the system
    /// schemas and the relations `user` holds any privilege on (unchanged for superusers).
    pub(crate) fn hide_unprivileged(&self, user: &str, plan: LogicalPlan) -> Result<LogicalPlan> {
        let Standing::Role(role) = self.standing(user)? else {
            return Ok(plan);
        };
        let granted: Vec<Expr> = role
            .grants
            .iter()
            .filter(|(_, privileges)| !privileges.is_empty())
            .map(|(name, _)| lit(name.clone()))
            .collect();
        let hidden = plan.transform_up_with_subqueries(|node| {
            let LogicalPlan::TableScan(scan) = &node else {
                return Ok(Transformed::no(node));
            };
            let listing = (scan.table_name.schema() == Some("information_schema"))
                .then(|| LISTINGS.iter().find(|(t, _)| *t == scan.table_name.table()))
                .flatten();
            let Some((_, name_column)) = listing else {
                return Ok(Transformed::no(node));
            };
            let column = |name: &str| {
                Expr::Column(Column::new(Some(scan.table_name.clone()), name.to_string()))
            };
            let system: Vec<Expr> = SYSTEM_SCHEMAS.iter().map(|s| lit(*s)).collect();
            let mut visible = column("table_schema").in_list(system, false);
            if !granted.is_empty() {
                visible = visible.or(column(name_column).in_list(granted.clone(), false));
            }
            let filter = Filter::try_new(visible, Arc::new(node))?;
            Ok(Transformed::yes(LogicalPlan::Filter(filter)))
        })?;
        Ok(hidden.data)
    }
}
