//! `pg_catalog.pg_class` with weir's materialized views as relkind `m`, so psql's `\dm`
//! and BI tools list them. datafusion-pg-catalog knows only tables (`r`) and views (`v`).

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray, new_null_array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{ExecutionPlan, collect};
use parking_lot::RwLock;

use crate::dataflow::ViewTable;

/// The pg_catalog schema, with `pg_class` replaced, and the tables registered on it
/// (weir's `pg_matviews`) in place of datafusion-pg-catalog's.
#[derive(Debug)]
pub(crate) struct PgCatalogWithMatviews {
    inner: Arc<dyn SchemaProvider>,
    /// Weak: the catalogs hold this schema.
    catalogs: Weak<dyn CatalogProviderList>,
    replaced: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
}

impl PgCatalogWithMatviews {
    pub(crate) fn new(
        inner: Arc<dyn SchemaProvider>,
        catalogs: &Arc<dyn CatalogProviderList>,
    ) -> Self {
        Self {
            inner,
            catalogs: Arc::downgrade(catalogs),
            replaced: RwLock::default(),
        }
    }
}

#[async_trait]
impl SchemaProvider for PgCatalogWithMatviews {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.replaced.read().get(name) {
            return Ok(Some(Arc::clone(table)));
        }
        let table = self.inner.table(name).await?;
        Ok(match (name, table) {
            ("pg_class", Some(inner)) => Some(Arc::new(PgClass::new(inner, &self.catalogs))),
            (_, table) => table,
        })
    }

    fn table_exist(&self, name: &str) -> bool {
        self.replaced.read().contains_key(name) || self.inner.table_exist(name)
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self.replaced.write().insert(name, table))
    }
}

/// pg_class, read from datafusion-pg-catalog's, with `v` turned into `m` for every
/// relation that is one of weir's materialized views, and the `reloptions` column psql's
/// `\d+` reads (NULL: weir relations have no storage options).
#[derive(Debug)]
struct PgClass {
    inner: Arc<dyn TableProvider>,
    catalogs: Weak<dyn CatalogProviderList>,
    schema: SchemaRef,
}

impl PgClass {
    fn new(inner: Arc<dyn TableProvider>, catalogs: &Weak<dyn CatalogProviderList>) -> Self {
        let mut fields = inner.schema().fields().to_vec();
        fields.push(Arc::new(Field::new(
            "reloptions",
            DataType::new_list(DataType::Utf8, true),
            true,
        )));
        Self {
            inner,
            catalogs: Weak::clone(catalogs),
            schema: Arc::new(Schema::new(fields)),
        }
    }

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
        let options = new_null_array(
            self.schema.field(schema.fields().len()).data_type(),
            batch.num_rows(),
        );
        let (Ok(kind_at), Ok(name_at)) = (schema.index_of("relkind"), schema.index_of("relname"))
        else {
            let mut columns = batch.columns().to_vec();
            columns.push(options);
            return Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?);
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
        columns.push(options);
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

#[async_trait]
impl TableProvider for PgClass {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
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
