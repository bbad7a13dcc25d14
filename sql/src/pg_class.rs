//! `pg_catalog.pg_class` with weir's materialized views as relkind `m`, so psql's `\dm`
//! and BI tools list them. datafusion-pg-catalog knows only tables (`r`) and views (`v`).

use std::any::Any;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{ExecutionPlan, collect};

use crate::dataflow::ViewTable;

/// The pg_catalog schema, with `pg_class` replaced.
#[derive(Debug)]
pub(crate) struct PgCatalogWithMatviews {
    inner: Arc<dyn SchemaProvider>,
    /// Weak: the catalogs hold this schema.
    catalogs: Weak<dyn CatalogProviderList>,
}

impl PgCatalogWithMatviews {
    pub(crate) fn new(
        inner: Arc<dyn SchemaProvider>,
        catalogs: &Arc<dyn CatalogProviderList>,
    ) -> Self {
        Self {
            inner,
            catalogs: Arc::downgrade(catalogs),
        }
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogWithMatviews {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let table = self.inner.table(name).await?;
        Ok(match (name, table) {
            ("pg_class", Some(inner)) => Some(Arc::new(PgClass {
                inner,
                catalogs: Weak::clone(&self.catalogs),
            })),
            (_, table) => table,
        })
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// pg_class, read from datafusion-pg-catalog's, with `v` turned into `m` for every
/// relation that is one of weir's materialized views.
#[derive(Debug)]
struct PgClass {
    inner: Arc<dyn TableProvider>,
    catalogs: Weak<dyn CatalogProviderList>,
}

impl PgClass {
    /// Whether `name` is a materialized view in any schema of any catalog.
    async fn is_materialized_view(&self, name: &str) -> Result<bool> {
        let Some(catalogs) = self.catalogs.upgrade() else {
            return Ok(false);
        };
        for catalog in catalogs.catalog_names() {
            let Some(catalog) = catalogs.catalog(&catalog) else {
                continue;
            };
            for schema in catalog.schema_names() {
                if let Some(schema) = catalog.schema(&schema)
                    && let Some(table) = schema.table(name).await?
                    && (table.as_ref() as &dyn Any).is::<ViewTable>()
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    async fn relabel(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let schema = batch.schema();
        let (Ok(kind_at), Ok(name_at)) = (schema.index_of("relkind"), schema.index_of("relname"))
        else {
            return Ok(batch);
        };
        let kinds = batch.column(kind_at).as_string::<i32>();
        let names = batch.column(name_at).as_string::<i32>();
        let mut relabelled = Vec::with_capacity(kinds.len());
        for row in 0..kinds.len() {
            let kind = (!kinds.is_null(row)).then(|| kinds.value(row));
            let matview = kind == Some("v") && self.is_materialized_view(names.value(row)).await?;
            relabelled.push(if matview { Some("m") } else { kind });
        }
        let mut columns = batch.columns().to_vec();
        columns[kind_at] = Arc::new(StringArray::from(relabelled));
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

#[async_trait]
impl TableProvider for PgClass {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let all = self.inner.scan(state, None, &[], None).await?;
        let mut batches = Vec::new();
        for batch in collect(all, state.task_ctx()).await? {
            batches.push(self.relabel(batch).await?);
        }
        let table = MemTable::try_new(self.schema(), vec![batches])
            .map_err(|e| DataFusionError::Context("pg_class".into(), Box::new(e)))?;
        table.scan(state, projection, filters, limit).await
    }
}
