//! A Kafka-backed changelog table: `FORMAT UPSERT ENCODE JSON` (the latest value per message
//! key, a null value deleting the key) or `FORMAT DEBEZIUM ENCODE JSON` (the latest event per
//! key applied: its `after`, none after a delete). Read ad hoc from the whole topic at query
//! start, folded by the same `UpsertSplit` a view's dataflow reads it with.

use crate::catalog::CatalogRelation;
use crate::dataflow::{InputContext, StreamInput};
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use weir_engine::connector::kafka::StartupMode;
use weir_engine::{Message, SplitPosition};

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Constraints;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::Mutex;
use weir_engine::DecodeStats;
use weir_engine::connector::kafka::KafkaConfig;
use weir_engine::connector::upsert::{ChangelogFormat, UpsertSplit};
use weir_engine::runtime::SplitProgress;

use crate::error::SqlError;
use crate::provider::ScanReport;

/// A table whose rows are the latest values of a topic's keys.
#[derive(Debug)]
pub(crate) struct UpsertTable {
    config: KafkaConfig,
    schema: SchemaRef,
    format: ChangelogFormat,
    constraints: Constraints,
}

impl UpsertTable {
    pub(crate) fn new(
        config: KafkaConfig,
        schema: SchemaRef,
        format: ChangelogFormat,
        constraints: Constraints,
    ) -> Self {
        Self {
            config,
            schema,
            format,
            constraints,
        }
    }

    pub(crate) fn format(&self) -> &ChangelogFormat {
        &self.format
    }

    pub(crate) fn config(&self) -> &KafkaConfig {
        &self.config
    }
}

#[async_trait]
impl TableProvider for UpsertTable {
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
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let config = self.config.clone();
        let schema = self.schema();
        let format = self.format.clone();
        let (batches, stats) = tokio::task::spawn_blocking(move || -> Result<_, SqlError> {
            let mut batches = Vec::new();
            let mut stats = DecodeStats::default();
            for range in config.partition_ranges()? {
                let progress = Arc::new(Mutex::new(SplitProgress::default()));
                let split = UpsertSplit::new(
                    config.clone(),
                    range,
                    Arc::clone(&schema),
                    format.clone(),
                    Arc::clone(&progress),
                )?;
                let batch = split.current_rows()?;
                let p = progress.lock();
                stats.merge(&DecodeStats {
                    rows: batch.num_rows() as u64,
                    bytes: p.bytes,
                    errors: p.parse_errors,
                    first_error: p.last_error.clone(),
                    last_error: p.last_error.clone(),
                });
                batches.push(batch);
            }
            Ok((batches, stats))
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))??;
        if let Some(report) = state.config().get_extension::<ScanReport>() {
            report.add(&stats);
        }
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

impl StreamInput for UpsertTable {
    fn open(
        &self,
        cx: &InputContext<'_>,
    ) -> crate::error::Result<Vec<BoxStream<'static, Message>>> {
        // A table is all of its topic: read from the start whatever the source said.
        let mut config = self.config().clone();
        config.startup = StartupMode::Earliest;
        let schema = self.schema();
        config
            .partition_ranges()?
            .into_iter()
            .map(|range| {
                let resume = cx.resume.and_then(|r| r.get(&range.partition));
                cx.spawn(range.partition, |progress| {
                    let split = UpsertSplit::new(
                        config.clone(),
                        range,
                        Arc::clone(&schema),
                        self.format().clone(),
                        progress,
                    )?;
                    Ok(Box::new(match resume {
                        Some(at) => split.resume_at(at.offset),
                        None => split,
                    }))
                })
            })
            .collect()
    }

    fn reports_progress(&self) -> bool {
        true
    }

    /// Each partition is read from its start again (the keys' rows), sending only the
    /// changes after the checkpointed offset.
    fn can_resume(&self, _positions: &BTreeMap<i32, SplitPosition>) -> bool {
        true
    }
}

impl CatalogRelation for UpsertTable {
    fn stream_input(&self) -> Option<&dyn StreamInput> {
        Some(self)
    }
}
