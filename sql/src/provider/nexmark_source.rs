//! The `nexmark` connector as a DataFusion table: each scan regenerates the same rows.
//! Unbounded generators refuse a scan without a LIMIT rather than run forever.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use weir_engine::connector::nexmark::{NexmarkOptions, NexmarkReader};

use crate::error::SqlError;

const BATCH_ROWS: usize = 8192;

/// A Nexmark relation (Person, Auction or Bid) read from the built-in generator.
#[derive(Debug)]
pub(crate) struct NexmarkSource {
    name: String,
    options: NexmarkOptions,
    schema: SchemaRef,
}

impl NexmarkSource {
    pub(crate) fn new(name: &str, options: NexmarkOptions) -> Self {
        Self {
            name: name.to_string(),
            schema: options.table.schema(),
            options,
        }
    }
}

#[async_trait]
impl TableProvider for NexmarkSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.options.event_num.is_none() && limit.is_none() {
            return Err(SqlError::new(
                "0A000",
                format!("source \"{}\" is an unbounded generator: an ad hoc query over it needs a LIMIT", self.name),
            )
            .into());
        }
        let _ = filters; // applied above the scan by DataFusion
        let splits = if limit.is_some() {
            1
        } else {
            state.config().target_partitions().max(1) as u64
        };
        let partitions = (0..splits)
            .map(|split| {
                Arc::new(GeneratorSplit {
                    options: self.options.clone(),
                    rows: limit.map(|l| l as u64),
                    split,
                    splits,
                    schema: Arc::clone(&self.schema),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        Ok(Arc::new(StreamingTableExec::try_new(
            Arc::clone(&self.schema),
            partitions,
            projection,
            Vec::new(),
            false,
            limit,
        )?))
    }
}

/// One split of the generator, stopping after `rows` rows when set.
#[derive(Debug)]
struct GeneratorSplit {
    options: NexmarkOptions,
    rows: Option<u64>,
    split: u64,
    splits: u64,
    schema: SchemaRef,
}

impl PartitionStream for GeneratorSplit {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut reader = NexmarkReader::new(&self.options, self.split, self.splits);
        let mut left = self.rows;
        let iter = std::iter::from_fn(move || {
            let n = left.map_or(BATCH_ROWS, |l| (l as usize).min(BATCH_ROWS));
            if n == 0 {
                return None;
            }
            let batch = reader.next_batch(n)?;
            if let Some(l) = left.as_mut() {
                *l -= batch.num_rows() as u64;
            }
            Some(Ok(batch))
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter(iter),
        ))
    }
}
