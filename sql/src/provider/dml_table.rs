//! A DML table (`CREATE TABLE ... PRIMARY KEY`) as a DataFusion table.
//! INSERT, UPDATE and DELETE are planned by DataFusion and applied here, atomically, to the WAL-backed store.

use crate::catalog::CatalogRelation;
use crate::dataflow::{InputContext, StreamInput};
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use weir_engine::connector::splits::ChangelogSplit;
use weir_engine::{ChangeBatch, Message, SplitPosition};

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::{and, cast, concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{Field, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Constraints, DFSchema};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use futures::TryStreamExt;
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

    /// Whether only INSERT is allowed (views over it see no retractions).
    pub(crate) fn append_only(&self) -> bool {
        self.append_only
    }

    /// The rows and changelog behind the table (views subscribe to it).
    pub(crate) fn store(&self) -> Arc<Mutex<TableStore>> {
        Arc::clone(&self.store)
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

    fn physical(&self, state: &dyn Session, exprs: &[Expr]) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
        let df_schema = DFSchema::try_from(Arc::clone(&self.schema))?;
        exprs
            .iter()
            .map(|e| state.create_physical_expr(e.clone(), &df_schema))
            .collect()
    }

    /// A plan that applies `op` when executed (never at planning, so EXPLAIN changes nothing).
    fn sink_plan(&self, input: Arc<dyn ExecutionPlan>, op: DmlOp) -> Arc<dyn ExecutionPlan> {
        let sink = DmlSink {
            schema: self.schema(),
            store: Arc::clone(&self.store),
            op,
        };
        Arc::new(DataSinkExec::new(input, Arc::new(sink), None))
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
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(
                SqlError::unsupported(format!("INSERT {insert_op} is not supported")).into(),
            );
        }
        Ok(self.sink_plan(input, DmlOp::Insert))
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.reject_if_append_only("DELETE")?;
        let filters = self.physical(state, &filters)?;
        Ok(self.sink_plan(
            Arc::new(EmptyExec::new(self.schema())),
            DmlOp::Delete { filters },
        ))
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.reject_if_append_only("UPDATE")?;
        let mut columns = Vec::with_capacity(assignments.len());
        for (name, _) in &assignments {
            columns.push(self.schema.index_of(name).map_err(|_| {
                SqlError::new("42703", format!("column \"{name}\" does not exist"))
            })?);
        }
        let exprs: Vec<Expr> = assignments.into_iter().map(|(_, e)| e).collect();
        let assignments = columns
            .into_iter()
            .zip(self.physical(state, &exprs)?)
            .collect();
        let filters = self.physical(state, &filters)?;
        Ok(self.sink_plan(
            Arc::new(EmptyExec::new(self.schema())),
            DmlOp::Update {
                filters,
                assignments,
            },
        ))
    }
}

/// What a DML plan does to the table when it runs.
#[derive(Debug)]
enum DmlOp {
    /// Insert the input rows.
    Insert,
    /// Delete the rows matching every filter.
    Delete { filters: Vec<Arc<dyn PhysicalExpr>> },
    /// Set columns of the rows matching every filter.
    Update {
        filters: Vec<Arc<dyn PhysicalExpr>>,
        assignments: Vec<(usize, Arc<dyn PhysicalExpr>)>,
    },
}

/// Applies one DML statement to the store, atomically, when DataFusion executes it.
#[derive(Debug)]
struct DmlSink {
    schema: SchemaRef,
    store: Arc<Mutex<TableStore>>,
    op: DmlOp,
}

impl DisplayAs for DmlSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.op {
            DmlOp::Insert => write!(f, "TableInsert"),
            DmlOp::Delete { filters } => write!(f, "TableDelete: filters={}", filters.len()),
            DmlOp::Update { assignments, .. } => {
                write!(f, "TableUpdate: columns={}", assignments.len())
            }
        }
    }
}

#[async_trait]
impl DataSink for DmlSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let batches: Vec<RecordBatch> = data.try_collect().await?;
        let mut store = self.store.lock();
        let n = match &self.op {
            DmlOp::Insert => store.insert(&conform(&self.schema, &batches)?),
            DmlOp::Delete { filters } => {
                let snapshot = store.snapshot().map_err(SqlError::from)?;
                let old = matching(&snapshot, filters)?;
                store.replace(&old, None)
            }
            DmlOp::Update {
                filters,
                assignments,
            } => {
                let snapshot = store.snapshot().map_err(SqlError::from)?;
                let old = matching(&snapshot, filters)?;
                let mut columns: Vec<ArrayRef> = old.columns().to_vec();
                for (idx, expr) in assignments {
                    let v = expr.evaluate(&old)?.into_array(old.num_rows())?;
                    columns[*idx] = conform_column(&v, self.schema.field(*idx))?;
                }
                let new = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
                store.replace(&old, Some(&new))
            }
        };
        Ok(n.map_err(SqlError::from)? as u64)
    }
}

/// The rows of `snapshot` every filter selects (NULL counts as false).
fn matching(snapshot: &RecordBatch, filters: &[Arc<dyn PhysicalExpr>]) -> Result<RecordBatch> {
    let mut mask: Option<BooleanArray> = None;
    for f in filters {
        let value = f.evaluate(snapshot)?.into_array(snapshot.num_rows())?;
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
        Some(m) => Ok(filter_record_batch(snapshot, &m)?),
        None => Ok(snapshot.clone()),
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
            .map(|(c, f)| conform_column(c, f))
            .collect::<Result<Vec<_>>>()?;
        out.push(RecordBatch::try_new(Arc::clone(schema), cols)?);
    }
    Ok(concat_batches(schema, &out)?)
}

/// `column` as the table stores values of `field`: cast to its type, no NULL in a NOT NULL
/// column (23502), and a jsonb's text in jsonb's form (malformed JSON is refused, 22P02).
fn conform_column(column: &ArrayRef, field: &Field) -> Result<ArrayRef> {
    if !field.is_nullable() && column.null_count() > 0 {
        return Err(SqlError::new(
            "23502",
            format!(
                "null value in column \"{}\" violates not-null constraint",
                field.name()
            ),
        )
        .into());
    }
    let column = if column.data_type() == field.data_type() {
        Arc::clone(column)
    } else {
        cast(column, field.data_type())?
    };
    if !crate::jsonb::is_jsonb(field) {
        return Ok(column);
    }
    let text = column.as_string::<i32>();
    let normalized = (0..text.len())
        .map(|i| {
            (!text.is_null(i))
                .then(|| {
                    crate::jsonb::normalize(text.value(i))
                        .map_err(|e| crate::jsonb::invalid(text.value(i), &e))
                })
                .transpose()
        })
        .collect::<Result<StringArray>>()?;
    Ok(Arc::new(normalized))
}

impl StreamInput for DmlTable {
    /// The table's rows, then its changes; the position is the table's log position. A
    /// dataflow restored at a position gets the changes after it instead of the rows.
    fn open(
        &self,
        cx: &InputContext<'_>,
    ) -> crate::error::Result<Vec<BoxStream<'static, Message>>> {
        let (tx, rx) = std::sync::mpsc::channel::<(u64, ChangeBatch)>();
        let first = tx.clone();
        let deliver = Box::new(move |lsn, c| tx.send((lsn, c)).is_ok());
        {
            // What goes first is taken under the store's lock: nothing missed or doubled.
            let store = self.store();
            let mut store = store.lock();
            match cx.resume.and_then(|r| r.get(&0)) {
                Some(p) => {
                    for change in store.subscribe_from(p.offset.max(0) as u64, deliver)? {
                        let _ = first.send(change);
                    }
                }
                None => {
                    let (lsn, snapshot) = store.subscribe(deliver)?;
                    let _ = first.send((lsn, ChangeBatch::from_data(&snapshot, 1)?));
                }
            }
        }
        let stream = cx.spawn(0, |progress| {
            Ok(Box::new(ChangelogSplit::new(rx, progress)))
        })?;
        Ok(vec![stream])
    }

    fn can_resume(&self, positions: &BTreeMap<i32, SplitPosition>) -> bool {
        positions
            .get(&0)
            .is_some_and(|p| self.store().lock().can_resume_from(p.offset.max(0) as u64))
    }
}

impl CatalogRelation for DmlTable {
    fn stream_input(&self) -> Option<&dyn StreamInput> {
        Some(self)
    }

    fn inserts_only(&self) -> bool {
        self.append_only()
    }

    fn as_table(&self) -> Option<&DmlTable> {
        Some(self)
    }
}
