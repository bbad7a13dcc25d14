//! The `file` connector's shared parts: which files a path or glob names, in name order,
//! and NDJSON files decoded into batches with malformed lines skipped and counted.

use std::path::PathBuf;

use arrow::array::RecordBatch;
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
