//! `TEMPORAL(t)`, what `t FOR SYSTEM_TIME AS OF PROCTIME()` is rewritten to: a table read
//! as of processing time. Ad hoc that is its current rows; a view joins each stream row with
//! the table's row at the moment it arrives (`HashJoin` in lookup mode).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::plan_err;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::window_table::{Lookup, ident};
use crate::catalog::CatalogRelation;

/// A relation looked up as of processing time.
#[derive(Debug)]
pub(crate) struct TemporalTable {
    pub(crate) relation: String,
    pub(crate) input: Arc<dyn CatalogRelation>,
}

#[async_trait]
impl TableProvider for TemporalTable {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.input.scan(state, projection, filters, limit).await
    }
}

/// `TEMPORAL(relation)` as a DataFusion table function.
pub(crate) struct TemporalFunction {
    pub(crate) lookup: Lookup,
}

impl std::fmt::Debug for TemporalFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TEMPORAL")
    }
}

impl TableFunctionImpl for TemporalFunction {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> Result<Arc<dyn TableProvider>> {
        let [relation] = args.exprs() else {
            return plan_err!("FOR SYSTEM_TIME AS OF PROCTIME() applies to one table");
        };
        let relation = ident(relation, "relation", "TEMPORAL")?;
        let input = (self.lookup)(&relation).ok_or_else(|| {
            DataFusionError::Plan(format!("relation \"{relation}\" does not exist"))
        })?;
        Ok(Arc::new(TemporalTable { relation, input }))
    }
}
