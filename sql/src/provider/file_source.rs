//! The `file` connector as a DataFusion table: the files a path or glob names, read ad hoc.
//! NDJSON goes through weir's decoder (bad lines skipped and counted); CSV and Parquet through DataFusion.

use crate::catalog::CatalogRelation;
use crate::dataflow::{InputContext, StreamInput};
use futures::stream::BoxStream;
use std::collections::BTreeMap;
use weir_engine::connector::file::FileFormat;
use weir_engine::connector::splits::FileSplit;
use weir_engine::{Message, SplitPosition};

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use weir_engine::connector::file::{list_files, read_ndjson};

use crate::error::SqlError;
use crate::provider::blocking_scan;

const BATCH_ROWS: usize = 8192;

/// How a file source's files are encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileEncoding {
    Json,
    Csv { header: bool, delimiter: u8 },
    Parquet,
}

/// A `file` source.
#[derive(Debug)]
pub(crate) struct FileSource {
    pattern: String,
    encoding: FileEncoding,
    schema: SchemaRef,
    /// How many splits a dataflow reads it as: `file.split.num`, fixed at CREATE SOURCE
    /// (None for a source created before it was: one per core of the reader).
    splits: Option<u64>,
}

impl FileSource {
    /// The path or glob, the encoding, and the columns.
    pub(crate) fn parts(&self) -> (&str, &FileEncoding, &SchemaRef) {
        (&self.pattern, &self.encoding, &self.schema)
    }

    pub(crate) fn new(
        pattern: String,
        encoding: FileEncoding,
        schema: SchemaRef,
        splits: Option<u64>,
    ) -> Self {
        Self {
            pattern,
            encoding,
            schema,
            splits,
        }
    }

    pub(crate) fn splits(&self) -> Option<u64> {
        self.splits
    }
}

#[async_trait]
impl TableProvider for FileSource {
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
        let files = list_files(&self.pattern).map_err(SqlError::from)?;
        if files.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema(),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let format: Arc<dyn datafusion::datasource::file_format::FileFormat> = match &self.encoding
        {
            FileEncoding::Json => {
                let partitions = files
                    .into_iter()
                    .map(|path| {
                        Arc::new(NdjsonFile {
                            path,
                            schema: self.schema(),
                        }) as Arc<dyn PartitionStream>
                    })
                    .collect();
                return Ok(Arc::new(StreamingTableExec::try_new(
                    self.schema(),
                    partitions,
                    projection,
                    Vec::new(),
                    false,
                    limit,
                )?));
            }
            FileEncoding::Csv { header, delimiter } => Arc::new(
                CsvFormat::default()
                    .with_has_header(*header)
                    .with_delimiter(*delimiter),
            ),
            FileEncoding::Parquet => Arc::new(ParquetFormat::default()),
        };
        let urls = files
            .iter()
            .map(|p| {
                let abs =
                    std::path::absolute(p).map_err(|e| SqlError::new("58030", e.to_string()))?;
                ListingTableUrl::parse(abs.to_string_lossy())
            })
            .collect::<Result<Vec<_>>>()?;
        let options = ListingOptions::new(format).with_file_extension("");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(self.schema());
        ListingTable::try_new(config)?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// One NDJSON file read on a blocking thread.
#[derive(Debug)]
struct NdjsonFile {
    path: std::path::PathBuf,
    schema: SchemaRef,
}

impl PartitionStream for NdjsonFile {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (path, schema) = (self.path.clone(), Arc::clone(&self.schema));
        blocking_scan(Arc::clone(&self.schema), &ctx, move |emit| {
            read_ndjson(&path, schema, BATCH_ROWS, emit)
        })
    }
}

impl StreamInput for FileSource {
    fn open(
        &self,
        cx: &InputContext<'_>,
    ) -> crate::error::Result<Vec<BoxStream<'static, Message>>> {
        let (pattern, encoding, schema) = self.parts();
        let format = match *encoding {
            FileEncoding::Json => FileFormat::Json,
            FileEncoding::Csv { header, delimiter } => FileFormat::Csv { header, delimiter },
            FileEncoding::Parquet => FileFormat::Parquet,
        };
        // Files are dealt to readers (one per core where the source was created): each
        // decodes its own.
        let splits = self.splits().unwrap_or(cx.parallelism.max(1) as u64) as usize;
        (0..splits)
            .map(|s| {
                let skip = cx
                    .resume
                    .and_then(|r| r.get(&(s as i32)))
                    .map_or(0, |p| p.offset.max(0));
                cx.spawn(s as i32, |progress| {
                    {
                        let mut p = progress.lock();
                        p.next_offset = skip;
                        p.high_watermark = skip;
                    }
                    Ok(Box::new(FileSplit::new(
                        pattern.to_string(),
                        format,
                        Arc::clone(schema),
                        (s, splits),
                        skip as u64,
                        progress,
                    )))
                })
            })
            .collect()
    }

    /// A split skips the rows it had emitted, when the source's splits are fixed (a source
    /// created before they were is derived again).
    fn can_resume(&self, positions: &BTreeMap<i32, SplitPosition>) -> bool {
        self.splits()
            .is_some_and(|splits| positions.keys().all(|&p| p >= 0 && (p as u64) < splits))
    }
}

impl CatalogRelation for FileSource {
    fn stream_input(&self) -> Option<&dyn StreamInput> {
        Some(self)
    }

    fn inserts_only(&self) -> bool {
        true
    }
}
