//! A Kafka-backed upsert table (`FORMAT UPSERT ENCODE JSON`): the latest value per message key,
//! a null value (tombstone) deleting the key. Read ad hoc from the whole topic at query start.

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
use weir_engine::connector::kafka::KafkaConfig;
use weir_engine::{DecodeStats, JsonDecoder};

use crate::error::SqlError;
use crate::provider::ScanReport;

/// A table whose rows are the latest values of a topic's keys.
#[derive(Debug)]
pub(crate) struct UpsertTable {
    config: KafkaConfig,
    schema: SchemaRef,
    constraints: Constraints,
}

impl UpsertTable {
    pub(crate) fn new(config: KafkaConfig, schema: SchemaRef, constraints: Constraints) -> Self {
        Self {
            config,
            schema,
            constraints,
        }
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
        let (batch, stats) = tokio::task::spawn_blocking(move || -> Result<_, SqlError> {
            let mut decoder = JsonDecoder::new(schema);
            let mut latest = std::collections::BTreeMap::new();
            let mut keyless = 0;
            for range in config.partition_ranges()? {
                let (values, skipped) = config.latest_per_key(range)?;
                keyless += skipped;
                latest.extend(values);
            }
            let (keys, values): (Vec<&[u8]>, Vec<&[u8]>) = latest
                .iter()
                .filter_map(|(k, v)| v.as_deref().map(|v| (k.as_slice(), v)))
                .unzip();
            let (batch, _) = decoder.decode(&values, |i| {
                format!("key {}", String::from_utf8_lossy(keys[i]))
            })?;
            let mut stats = decoder.stats().clone();
            if keyless > 0 {
                stats.merge(&DecodeStats {
                    errors: keyless,
                    first_error: Some(format!("{keyless} messages without a key")),
                    ..DecodeStats::default()
                });
            }
            Ok((batch, stats))
        })
        .await
        .map_err(|e| DataFusionError::External(Box::new(e)))??;
        if let Some(report) = state.config().get_extension::<ScanReport>() {
            report.add(&stats);
        }
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}
