//! A Kafka topic as a DataFusion table: each ad hoc scan reads every partition from its start
//! offset to the high watermark seen when the query began, partitions in parallel.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use weir_engine::connector::kafka::{KafkaConfig, KafkaMeta, PartitionRange, output_schema};

use crate::dataflow::shared_readers::SharedReaders;
use crate::error::SqlError;
use crate::provider::blocking_scan;

const BATCH_ROWS: usize = 8192;

/// A `kafka` source with FORMAT PLAIN ENCODE JSON.
#[derive(Debug)]
pub(crate) struct KafkaSource {
    config: KafkaConfig,
    value_schema: SchemaRef,
    includes: Vec<(KafkaMeta, String)>,
    schema: SchemaRef,
    shared: SharedReaders,
}

impl KafkaSource {
    pub(crate) fn new(
        config: KafkaConfig,
        value_schema: SchemaRef,
        includes: Vec<(KafkaMeta, String)>,
    ) -> Self {
        let schema = output_schema(&value_schema, &includes);
        Self {
            config,
            value_schema,
            includes,
            schema,
            shared: SharedReaders::default(),
        }
    }
}

impl KafkaSource {
    /// The topic, the value columns, and the metadata columns appended to them.
    pub(crate) fn parts(&self) -> (&KafkaConfig, &SchemaRef, &[(KafkaMeta, String)]) {
        (&self.config, &self.value_schema, &self.includes)
    }

    /// The partitions' readers every view of the source shares.
    pub(crate) fn shared_readers(&self) -> &SharedReaders {
        &self.shared
    }
}

#[async_trait]
impl TableProvider for KafkaSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let config = self.config.clone();
        let ranges = tokio::task::spawn_blocking(move || config.partition_ranges())
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(|e| DataFusionError::from(SqlError::from(e)))?;
        let partitions = ranges
            .into_iter()
            .map(|range| {
                Arc::new(PartitionScan {
                    config: self.config.clone(),
                    range,
                    value_schema: Arc::clone(&self.value_schema),
                    includes: self.includes.clone(),
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

/// One partition's bounded read, run on a blocking thread.
#[derive(Debug)]
struct PartitionScan {
    config: KafkaConfig,
    range: PartitionRange,
    value_schema: SchemaRef,
    includes: Vec<(KafkaMeta, String)>,
    schema: SchemaRef,
}

impl PartitionStream for PartitionScan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (config, range, value_schema, includes) = (
            self.config.clone(),
            self.range,
            Arc::clone(&self.value_schema),
            self.includes.clone(),
        );
        blocking_scan(Arc::clone(&self.schema), &ctx, move |emit| {
            config.scan_partition(range, value_schema, &includes, BATCH_ROWS, emit)
        })
    }
}
