//! The `file` connector's shared parts: which files a path or glob names, in name order,
//! and files decoded into batches of the declared schema: NDJSON with malformed lines
//! skipped and counted, CSV and Parquet (a file that cannot be read is skipped and counted).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;

use crate::{DecodeStats, EngineError, JsonDecoder, Result};

/// Files matching `pattern` (a path or a glob), sorted by name.
pub fn list_files(pattern: &str) -> Result<Vec<PathBuf>> {
    let entries = glob::glob(pattern).map_err(|e| {
        EngineError::InvalidParameter(format!("invalid path pattern '{pattern}': {e}"))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// How a file source's files are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Json,
    Csv { header: bool, delimiter: u8 },
    Parquet,
}

/// Batches read from one file as they are needed (a file is never held in memory whole):
/// NDJSON a chunk of lines at a time with malformed lines skipped and counted, CSV and
/// Parquet through arrow's readers (a file that fails to read counts as one error, and the
/// rows before the failure are kept).
pub struct FileCursor {
    name: String,
    schema: SchemaRef,
    source: CursorSource,
    done: bool,
}

type Batches =
    Box<dyn Iterator<Item = std::result::Result<RecordBatch, arrow::error::ArrowError>> + Send>;

/// Where a cursor's batches come from, each with its counts (the JSON decoder keeps its own).
enum CursorSource {
    Json {
        reader: BufReader<File>,
        decoder: JsonDecoder,
        line_no: usize,
        max_batch: usize,
    },
    Batches {
        batches: Batches,
        stats: DecodeStats,
    },
}

impl FileCursor {
    pub fn open(
        path: &Path,
        format: FileFormat,
        schema: SchemaRef,
        max_batch: usize,
    ) -> Result<Self> {
        let max_batch = max_batch.max(1);
        let file = File::open(path)?;
        let bytes = file.metadata().map_or(0, |m| m.len());
        let source = match format {
            FileFormat::Json => CursorSource::Json {
                reader: BufReader::with_capacity(1 << 20, file),
                decoder: JsonDecoder::new(Arc::clone(&schema)),
                line_no: 0,
                max_batch,
            },
            FileFormat::Csv { header, delimiter } => CursorSource::Batches {
                batches: Box::new(
                    arrow::csv::ReaderBuilder::new(Arc::clone(&schema))
                        .with_header(header)
                        .with_delimiter(delimiter)
                        .with_batch_size(max_batch)
                        .build(file)?,
                ),
                stats: DecodeStats {
                    bytes,
                    ..DecodeStats::default()
                },
            },
            FileFormat::Parquet => CursorSource::Batches {
                batches: Box::new(
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .map_err(|e| EngineError::External(format!("{}: {e}", path.display())))?
                        .with_batch_size(max_batch)
                        .build()
                        .map_err(|e| EngineError::External(format!("{}: {e}", path.display())))?,
                ),
                stats: DecodeStats {
                    bytes,
                    ..DecodeStats::default()
                },
            },
        };
        Ok(Self {
            name: path.display().to_string(),
            schema,
            source,
            done: false,
        })
    }

    /// What was read and skipped so far.
    pub fn stats(&self) -> DecodeStats {
        match &self.source {
            CursorSource::Json { decoder, .. } => decoder.stats().clone(),
            CursorSource::Batches { stats, .. } => stats.clone(),
        }
    }

    /// The next batch; None at the end of the file (or after a read error).
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.done {
            return Ok(None);
        }
        match &mut self.source {
            CursorSource::Json {
                reader,
                decoder,
                line_no,
                max_batch,
            } => loop {
                // Up to max_batch non-blank lines, in one buffer.
                let (mut buf, mut ends, mut numbers) = (Vec::new(), Vec::new(), Vec::new());
                while ends.len() < *max_batch {
                    let start = buf.len();
                    if reader.read_until(b'\n', &mut buf)? == 0 {
                        break;
                    }
                    *line_no += 1;
                    if buf[start..].iter().all(u8::is_ascii_whitespace) {
                        buf.truncate(start);
                        continue;
                    }
                    ends.push((start, buf.len()));
                    numbers.push(*line_no);
                }
                if ends.is_empty() {
                    self.done = true;
                    return Ok(None);
                }
                let lines: Vec<&[u8]> = ends.iter().map(|&(a, b)| &buf[a..b]).collect();
                let name = &self.name;
                let (batch, _) = decoder.decode(&lines, |i| format!("{name}:{}", numbers[i]))?;
                if batch.num_rows() > 0 {
                    return Ok(Some(batch));
                }
            },
            CursorSource::Batches { batches, stats } => match batches.next() {
                None => {
                    self.done = true;
                    Ok(None)
                }
                Some(batch) => match batch.and_then(|b| conform(&b, &self.schema)) {
                    Ok(b) => {
                        stats.rows += b.num_rows() as u64;
                        Ok(Some(b))
                    }
                    Err(e) => {
                        self.done = true;
                        stats.errors += 1;
                        let error = format!("{}: {e}", self.name);
                        stats.first_error.get_or_insert_with(|| error.clone());
                        stats.last_error = Some(error);
                        Ok(None)
                    }
                },
            },
        }
    }
}

/// `batch`'s columns by name, cast to `schema`'s types (missing ones NULL).
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> arrow::error::Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(Arc::clone(c)),
            Some(c) => cast(c, f.data_type()),
            None => Ok(new_null_array(f.data_type(), batch.num_rows()) as ArrayRef),
        })
        .collect::<arrow::error::Result<Vec<_>>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

/// Reads one NDJSON file; `emit` gets each batch and returns false to stop early.
pub fn read_ndjson(
    path: &Path,
    schema: SchemaRef,
    max_batch: usize,
    mut emit: impl FnMut(RecordBatch) -> bool,
) -> Result<DecodeStats> {
    let mut cursor = FileCursor::open(path, FileFormat::Json, schema, max_batch)?;
    while let Some(batch) = cursor.next_batch()? {
        if !emit(batch) {
            break;
        }
    }
    Ok(cursor.stats())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn files_in_name_order_and_bad_lines_counted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.ndjson"), "{\"x\": 3}\n").unwrap();
        std::fs::write(
            dir.path().join("a.ndjson"),
            "{\"x\": 1}\n\nnot json\n{\"x\": \"2\"}\n",
        )
        .unwrap();
        let files = list_files(&format!("{}/*.ndjson", dir.path().display())).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, vec!["a.ndjson", "b.ndjson"]);
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let mut rows = 0;
        let stats = read_ndjson(&files[0], schema, 10, |b| {
            rows += b.num_rows();
            true
        })
        .unwrap();
        assert_eq!(rows, 2);
        assert_eq!(stats.errors, 1);
        assert!(stats.first_error.unwrap().contains("a.ndjson:3"));
    }
}
