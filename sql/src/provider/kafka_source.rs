//! A Kafka topic as a DataFusion table: each ad hoc scan reads every partition from its start
//! offset to the high watermark seen when the query began, partitions in parallel.

use crate::catalog::CatalogRelation;
use crate::dataflow::shared_readers::{MakeReader, SharedReaders};
use crate::dataflow::{InputContext, StreamInput};
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use weir_engine::connector::kafka::KafkaSplit;
use weir_engine::{Message, SplitPosition};

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

impl StreamInput for KafkaSource {
    fn open(
        &self,
        cx: &InputContext<'_>,
    ) -> crate::error::Result<Vec<BoxStream<'static, Message>>> {
        let (config, value_schema, includes) = self.parts();
        let reader: MakeReader<'_> = &|partition, start, until, progress| {
            let range = PartitionRange {
                partition,
                start,
                end: until.unwrap_or(start),
            };
            let split = KafkaSplit::new(
                config.clone(),
                range,
                Arc::clone(value_schema),
                includes.to_vec(),
                progress,
            );
            Ok(Box::new(match until {
                Some(end) => split.until(end),
                None => split,
            }))
        };
        let partitions = || match config.partition_ranges() {
            Ok(ranges) => Ok(ranges.iter().map(|r| (r.partition, r.start)).collect()),
            // The broker is down: a restored dataflow knows its partitions and offsets, so
            // it is served from its checkpoint and reads on once the broker is back (its
            // readers retry). Views created later backfill from these offsets.
            Err(e) => match cx.resume.filter(|r| !r.is_empty()) {
                Some(resume) => {
                    tracing::warn!(source = %cx.relation, error = %e, "broker unreachable; resuming at the checkpointed offsets");
                    Ok(resume.iter().map(|(p, at)| (*p, at.offset)).collect())
                }
                None => Err(e.into()),
            },
        };
        self.shared_readers().open(cx, partitions, reader)
    }

    /// A partition resumes at its stored offset (a partition the checkpoint does not
    /// name, added since, starts where the source starts).
    fn can_resume(&self, _positions: &BTreeMap<i32, SplitPosition>) -> bool {
        true
    }
}

impl CatalogRelation for KafkaSource {
    fn stream_input(&self) -> Option<&dyn StreamInput> {
        Some(self)
    }

    fn inserts_only(&self) -> bool {
        true
    }

    fn shared_readers(&self) -> Option<&SharedReaders> {
        Some(&self.shared)
    }
}
