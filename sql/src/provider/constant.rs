//! `ConstantRelation`: what a view's plan reads where it reads no table: a query without
//! FROM (one row of no columns) or one the planner proved empty (no rows). Its one split
//! sends that row, if any, then only barriers, so the view commits epochs like any other.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatchOptions;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use weir_engine::runtime::{ReadResult, SplitProgress, SplitReader};
use weir_engine::{Message, SplitPosition};

use crate::catalog::CatalogRelation;
use crate::dataflow::{InputContext, StreamInput};

/// The name a view's inputs list it under (no catalog object has it: names are identifiers).
pub(crate) const CONSTANT_RELATION: &str = "(constant)";

/// No columns, and one row or none.
#[derive(Debug)]
pub(crate) struct ConstantRelation {
    one_row: bool,
    schema: SchemaRef,
}

impl ConstantRelation {
    pub(crate) fn new(one_row: bool) -> Self {
        Self {
            one_row,
            schema: Arc::new(Schema::empty()),
        }
    }
}

#[async_trait]
impl TableProvider for ConstantRelation {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    /// Never read ad hoc (DataFusion plans such queries itself); empty if it were.
    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(EmptyExec::new(Arc::clone(&self.schema))))
    }
}

/// Its row (once: its offset is the rows it sent), then the end.
struct ConstantSplit {
    rows: usize,
    progress: Arc<Mutex<SplitProgress>>,
}

impl SplitReader for ConstantSplit {
    fn read(&mut self, _max_rows: usize) -> weir_engine::Result<ReadResult> {
        if self.rows == 0 {
            return Ok(ReadResult::End);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        let row = RecordBatch::try_new_with_options(Arc::new(Schema::empty()), vec![], &options)?;
        self.progress.lock().next_offset += self.rows as i64;
        self.rows = 0;
        Ok(ReadResult::Rows(row))
    }
}

impl StreamInput for ConstantRelation {
    fn open(
        &self,
        cx: &InputContext<'_>,
    ) -> crate::error::Result<Vec<BoxStream<'static, Message>>> {
        let sent = cx.resume.and_then(|r| r.get(&0)).map_or(0, |p| p.offset);
        let rows = usize::from(self.one_row && sent == 0);
        let stream = cx.spawn(0, |progress| {
            {
                let mut p = progress.lock();
                p.next_offset = sent;
                p.high_watermark = i64::from(self.one_row);
            }
            Ok(Box::new(ConstantSplit { rows, progress }))
        })?;
        Ok(vec![stream])
    }

    /// A restored view holds its row already; the offset says it was sent.
    fn can_resume(&self, _positions: &BTreeMap<i32, SplitPosition>) -> bool {
        true
    }
}

impl CatalogRelation for ConstantRelation {
    fn stream_input(&self) -> Option<&dyn StreamInput> {
        Some(self)
    }

    fn inserts_only(&self) -> bool {
        true
    }
}
