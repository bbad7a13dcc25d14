//! The `file` connector's shared parts: which files a path or glob names, in name order,
//! and files decoded into batches of the declared schema: NDJSON with malformed lines
//! skipped and counted, CSV and Parquet (a file that cannot be read is skipped and counted).

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;

use crate::{DecodeStats, EngineError, JsonDecoder, Result};

/// Files matching `pattern` (a path or a glob), sorted by name.
pub fn list_files(pattern: &str) -> Result<Vec<PathBuf>> {
    let entries = glob::glob(pattern)
        .map_err(|e| EngineError::Config(format!("invalid path pattern '{pattern}': {e}")))?;
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

/// Reads one file of `format` into batches of `schema`; `emit` gets each batch and returns
/// false to stop early. A CSV or Parquet file that fails to read is counted as one error
/// (the rows before the failure are kept).
pub fn read_file(
    path: &std::path::Path,
    format: FileFormat,
    schema: SchemaRef,
    max_batch: usize,
    mut emit: impl FnMut(RecordBatch) -> bool,
) -> Result<DecodeStats> {
    let batches: Box<
        dyn Iterator<Item = std::result::Result<RecordBatch, arrow::error::ArrowError>>,
    > = match format {
        FileFormat::Json => return read_ndjson(path, schema, max_batch, emit),
        FileFormat::Csv { header, delimiter } => Box::new(
            arrow::csv::ReaderBuilder::new(Arc::clone(&schema))
                .with_header(header)
                .with_delimiter(delimiter)
                .with_batch_size(max_batch.max(1))
                .build(std::fs::File::open(path)?)?,
        ),
        FileFormat::Parquet => Box::new(
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(path)?,
            )
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?
            .with_batch_size(max_batch.max(1))
            .build()
            .map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))?,
        ),
    };
    let mut stats = DecodeStats {
        bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
        ..DecodeStats::default()
    };
    for batch in batches {
        let batch = batch.and_then(|b| conform(&b, &schema));
        match batch {
            Ok(b) => {
                stats.rows += b.num_rows() as u64;
                if !emit(b) {
                    break;
                }
            }
            Err(e) => {
                stats.errors += 1;
                let error = format!("{}: {e}", path.display());
                stats.first_error.get_or_insert_with(|| error.clone());
                stats.last_error = Some(error);
                break;
            }
        }
    }
    Ok(stats)
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
    path: &std::path::Path,
    schema: SchemaRef,
    max_batch: usize,
    mut emit: impl FnMut(RecordBatch) -> bool,
) -> Result<DecodeStats> {
    let data = std::fs::read(path)?;
    let mut decoder = JsonDecoder::new(schema);
    let name = path.display().to_string();
    let lines: Vec<(usize, &[u8])> = data
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| l.iter().any(|b| !b.is_ascii_whitespace()))
        .map(|(i, l)| (i + 1, l))
        .collect();
    for chunk in lines.chunks(max_batch.max(1)) {
        let lines: Vec<&[u8]> = chunk.iter().map(|(_, l)| *l).collect();
        let (batch, _) = decoder.decode(&lines, |i| format!("{name}:{}", chunk[i].0))?;
        if !emit(batch) {
            break;
        }
    }
    Ok(decoder.stats().clone())
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
