//! The built-in generators (`nexmark`, `datagen`) as DataFusion tables: each scan regenerates
//! the same rows, split across partitions. Unbounded generators refuse a scan without a LIMIT.

use crate::catalog::CatalogRelation;
use crate::dataflow::shared_readers::{MakeReader, SharedReaders};
use crate::dataflow::{InputContext, StreamInput};
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use weir_engine::connector::splits::{DatagenSplit, GeneratedSplit};
use weir_engine::runtime::{Paced, SplitReader};
use weir_engine::{Message, SplitPosition};

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use futures::StreamExt;
use weir_engine::connector::datagen::DatagenOptions;
use weir_engine::connector::nexmark::{NexmarkOptions, NexmarkReader};

use crate::error::SqlError;
use parking_lot::Mutex;

const BATCH_ROWS: usize = 8192;

/// What a generator source produces.
#[derive(Debug, Clone)]
pub(crate) enum Generator {
    Nexmark(NexmarkOptions),
    Datagen(DatagenOptions),
}

impl Generator {
    fn schema(&self) -> SchemaRef {
        match self {
            Self::Nexmark(o) => o.table.schema(),
            Self::Datagen(o) => Arc::clone(&o.schema),
        }
    }

    fn row_count(&self) -> Option<u64> {
        match self {
            Self::Nexmark(o) => o.row_count(),
            Self::Datagen(o) => o.row_count(),
        }
    }
}

/// A generator source.
#[derive(Debug)]
pub(crate) struct GeneratorSource {
    name: String,
    generator: Generator,
    schema: SchemaRef,
    /// Rows per second the source is read at (all splits together); None = as fast as
    /// possible.
    rate: Option<f64>,
    shared: SharedReaders,
    /// How many shards its readers make: `*.split.num`, fixed at CREATE SOURCE (for a
    /// source created before that was stored, by the first dataflow that reads it).
    shards: Mutex<Option<u64>>,
}

impl GeneratorSource {
    pub(crate) fn generator(&self) -> &Generator {
        &self.generator
    }

    pub(crate) fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Paces dataflows reading this source (ad hoc scans are never paced).
    pub(crate) fn with_rate(mut self, rows_per_second: Option<f64>) -> Self {
        self.rate = rows_per_second;
        self
    }

    pub(crate) fn new(name: &str, generator: Generator, shards: Option<u64>) -> Self {
        Self {
            name: name.to_string(),
            schema: generator.schema(),
            generator,
            rate: None,
            shared: SharedReaders::default(),
            shards: Mutex::new(shards),
        }
    }

    /// The shards' readers every view of the source shares.
    pub(crate) fn shared_readers(&self) -> &SharedReaders {
        &self.shared
    }

    /// How many shards the source is read as: its `*.split.num`, else `wanted` (the first
    /// reader's), then the same for every later reader, whose backfills must make the same
    /// rows.
    pub(crate) fn shard_count(&self, wanted: u64) -> u64 {
        *self.shards.lock().get_or_insert(wanted)
    }
}

#[async_trait]
impl TableProvider for GeneratorSource {
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
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let rows = match (self.generator.row_count(), limit) {
            (Some(n), Some(l)) => n.min(l as u64),
            (Some(n), None) => n,
            (None, Some(l)) => l as u64,
            (None, None) => {
                return Err(SqlError::new(
                    "0A000",
                    format!("source \"{}\" is an unbounded generator: an ad hoc query over it needs a LIMIT", self.name),
                )
                .into());
            }
        };
        let splits = if limit.is_some() {
            1
        } else {
            state.config().target_partitions().max(1) as u64
        };
        let partitions = (0..splits)
            .map(|split| {
                Arc::new(GeneratorSplit {
                    generator: self.generator.clone(),
                    rows,
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

/// One split of a generator's first `rows` rows.
#[derive(Debug)]
struct GeneratorSplit {
    generator: Generator,
    rows: u64,
    split: u64,
    splits: u64,
    schema: SchemaRef,
}

impl PartitionStream for GeneratorSplit {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let iter: Box<dyn Iterator<Item = Result<RecordBatch>> + Send> = match &self.generator {
            Generator::Nexmark(options) => {
                // Nexmark splits interleave: rows split, split + splits, ...
                let mut reader = NexmarkReader::new(options, self.split, self.splits);
                let mut left = self.rows.saturating_sub(self.split).div_ceil(self.splits);
                Box::new(std::iter::from_fn(move || {
                    let n = (left as usize).min(BATCH_ROWS);
                    if n == 0 {
                        return None;
                    }
                    let batch = reader.next_batch(n)?;
                    left -= batch.num_rows() as u64;
                    Some(Ok(batch))
                }))
            }
            Generator::Datagen(options) => {
                // Datagen splits are contiguous ranges of row indexes.
                let per = self.rows.div_ceil(self.splits);
                let (mut next, end) = (
                    (self.split * per).min(self.rows),
                    ((self.split + 1) * per).min(self.rows),
                );
                let options = options.clone();
                Box::new(std::iter::from_fn(move || {
                    if next >= end {
                        return None;
                    }
                    let n = ((end - next) as usize).min(BATCH_ROWS);
                    let batch = options.rows(next, n).map_err(|e| SqlError::from(e).into());
                    next += n as u64;
                    Some(batch)
                }))
            }
        };
        // A generator never waits, so its task would only yield when tokio's budget of
        // polls runs out (seconds of generating): a cancelled query's task, aborted at its
        // next yield, then ran on and held the query threads. Yield before every batch.
        let batches = futures::stream::unfold(futures::stream::iter(iter), |mut it| async move {
            tokio::task::yield_now().await;
            it.next().await.map(|batch| (batch, it))
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batches,
        ))
    }
}

impl StreamInput for GeneratorSource {
    /// Shards of the source, as many as the cores of the dataflow that starts them;
    /// offsets are rows made. A backfill is not paced.
    fn open(
        &self,
        cx: &InputContext<'_>,
    ) -> crate::error::Result<Vec<BoxStream<'static, Message>>> {
        let splits = self.shard_count(cx.parallelism.max(1) as u64);
        let reader: MakeReader<'_> = &|s, start, until, progress| {
            let (s, done) = (s as u64, start.max(0) as u64);
            let reader: Box<dyn SplitReader> = match self.generator() {
                Generator::Nexmark(o) => Box::new(NexmarkReader::resume(o, s, splits, done)),
                Generator::Datagen(o) => Box::new(DatagenSplit::resume(o.clone(), s, splits, done)),
            };
            {
                let mut p = progress.lock();
                p.next_offset = start;
                p.high_watermark = start;
            }
            let reader = GeneratedSplit::new(reader, progress);
            Ok(match (until, self.rate()) {
                (Some(end), _) => Box::new(reader.until(end)),
                (None, Some(r)) => Box::new(Paced::new(Box::new(reader), r / splits as f64)),
                (None, None) => Box::new(reader),
            })
        };
        let shards = || Ok((0..splits as i32).map(|s| (s, 0)).collect());
        self.shared_readers().open(cx, shards, reader)
    }

    /// A shard's rows are computed from their index: it resumes at any row, as long as the
    /// source is read as the shards the positions are of (a source created before its
    /// shard count was fixed takes the checkpoint's).
    fn can_resume(&self, positions: &BTreeMap<i32, SplitPosition>) -> bool {
        let shards = self.shard_count(positions.len().max(1) as u64);
        positions.is_empty()
            || (positions.len() as u64 == shards
                && positions.keys().all(|&p| p >= 0 && (p as u64) < shards))
    }
}

impl CatalogRelation for GeneratorSource {
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
