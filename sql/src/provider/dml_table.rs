//! A DML table (`CREATE TABLE ... PRIMARY KEY`) as a DataFusion table.
//! INSERT, UPDATE and DELETE are planned by DataFusion and applied here, atomically, to the WAL-backed store.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt64Array};
use datafusion::arrow::compute::{and, cast, concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Constraints, DFSchema};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_plan::{ExecutionPlan, collect};
use parking_lot::Mutex;
use weir_engine::TableStore;

use crate::error::SqlError;

/// A table whose rows are changed by DML statements.
#[derive(Debug)]
pub(crate) struct DmlTable {
    schema: SchemaRef,
    constraints: Constraints,
    append_only: bool,
    store: Arc<Mutex<TableStore>>,
}

impl DmlTable {
    pub(crate) fn new(store: TableStore, constraints: Constraints, append_only: bool) -> Self {
        Self {
            schema: store.schema(),
            constraints,
            append_only,
            store: Arc::new(Mutex::new(store)),
        }
    }

    fn reject_if_append_only(&self, what: &str) -> Result<()> {
        if self.append_only {
            return Err(SqlError::new(
                "0A000",
                format!("{what} is not allowed on an APPEND ONLY table"),
            )
            .into());
        }
        Ok(())
    }

    /// The rows a WHERE clause selects, from a snapshot taken under the lock.
    fn matching(
        &self,
        state: &dyn Session,
        snapshot: &RecordBatch,
        filters: &[Expr],
    ) -> Result<RecordBatch> {
        let df_schema = DFSchema::try_from(Arc::clone(&self.schema))?;
        let mut mask: Option<BooleanArray> = None;
        for f in filters {
            let expr = state.create_physical_expr(f.clone(), &df_schema)?;
            let value = expr.evaluate(snapshot)?.into_array(snapshot.num_rows())?;
            let b = value
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| DataFusionError::Plan("WHERE clause must be boolean".into()))?
                .clone();
            mask = Some(match mask {
                Some(m) => and(&m, &b)?,
                None => b,
            });
        }
        match mask {
            // NULL counts as false (three-valued logic): filter_record_batch keeps only true.
            Some(m) => Ok(filter_record_batch(snapshot, &m)?),
            None => Ok(snapshot.clone()),
        }
    }
}

#[async_trait]
impl TableProvider for DmlTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn constraints(&self) -> Option<&Constraints> {
        Some(&self.constraints)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = self.store.lock().snapshot().map_err(SqlError::from)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![snapshot]],
            self.schema(),
            projection.cloned(),
        )?)
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(
                SqlError::unsupported(format!("INSERT {insert_op} is not supported")).into(),
            );
        }
        let batches = collect(input, state.task_ctx()).await?;
        let rows = conform(&self.schema, &batches)?;
        let n = self.store.lock().insert(&rows).map_err(SqlError::from)?;
        count_plan(n)
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.reject_if_append_only("DELETE")?;
        let mut store = self.store.lock();
        let snapshot = store.snapshot().map_err(SqlError::from)?;
        let old = self.matching(state, &snapshot, &filters)?;
        let n = store.replace(&old, None).map_err(SqlError::from)?;
        count_plan(n)
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.reject_if_append_only("UPDATE")?;
        let df_schema = DFSchema::try_from(Arc::clone(&self.schema))?;
        let exprs = assignments
            .iter()
            .map(|(name, e)| {
                let idx = self.schema.index_of(name).map_err(|_| {
                    SqlError::new("42703", format!("column \"{name}\" does not exist"))
                })?;
                Ok((idx, state.create_physical_expr(e.clone(), &df_schema)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut store = self.store.lock();
        let snapshot = store.snapshot().map_err(SqlError::from)?;
        let old = self.matching(state, &snapshot, &filters)?;
        let mut columns: Vec<ArrayRef> = old.columns().to_vec();
        for (idx, expr) in &exprs {
            let v = expr.evaluate(&old)?.into_array(old.num_rows())?;
            columns[*idx] = cast(&v, self.schema.field(*idx).data_type())?;
        }
        let new = RecordBatch::try_new(self.schema(), columns)?;
        let n = store.replace(&old, Some(&new)).map_err(SqlError::from)?;
        count_plan(n)
    }
}

/// Concatenates inserted batches, casting each column to the table's type.
fn conform(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch> {
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let cols = b
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(Arc::clone(c))
                } else {
                    cast(c, f.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(RecordBatch::try_new(Arc::clone(schema), cols)?);
    }
    Ok(concat_batches(schema, &out)?)
}

/// A plan yielding one row `count`, as DataFusion's DML plans do.
fn count_plan(n: usize) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(UInt64Array::from(vec![n as u64]))],
    )?;
    Ok(MemorySourceConfig::try_new_exec(
        &[vec![batch]],
        schema,
        None,
    )?)
}
