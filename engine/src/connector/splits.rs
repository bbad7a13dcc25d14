//! Streaming split readers of the built-in connectors: Nexmark and datagen shards, NDJSON
//! files (new files picked up as they appear) and a table's changelog.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use parking_lot::Mutex;

use crate::connector::datagen::DatagenOptions;
use crate::connector::file::{FileCursor, FileFormat, list_files};
use crate::connector::nexmark::NexmarkReader;
use crate::runtime::{ReadResult, SplitProgress, SplitReader};
use crate::{ChangeBatch, Result};

/// How long an idle reader waits before reporting `Idle`.
const IDLE_WAIT: Duration = Duration::from_millis(50);

impl SplitReader for NexmarkReader {
    fn read(&mut self, max_rows: usize) -> Result<ReadResult> {
        Ok(match self.next_batch(max_rows) {
            Some(b) => ReadResult::Rows(b),
            None => ReadResult::End,
        })
    }
}

/// Shard `split` of `splits` of a datagen source: chunks `split, split + splits, ...` of
/// `CHUNK` row indexes, so shards together produce every row exactly once (and a shard's
/// rows do not depend on how many each read asks for).
pub struct DatagenSplit {
    options: DatagenOptions,
    split: u64,
    splits: u64,
    chunk: u64,
    /// Rows of the current chunk already made.
    within: u64,
    total: Option<u64>,
}

/// Rows per chunk of a datagen shard.
const CHUNK: u64 = 8192;

impl DatagenSplit {
    pub fn new(options: DatagenOptions, split: u64, splits: u64) -> Self {
        Self::resume(options, split, splits, 0)
    }

    /// Shard `split` of `splits` after its first `done` rows (a checkpoint's position).
    pub fn resume(options: DatagenOptions, split: u64, splits: u64, done: u64) -> Self {
        let total = options.row_count();
        Self {
            options,
            split,
            splits: splits.max(1),
            chunk: done / CHUNK,
            within: done % CHUNK,
            total,
        }
    }
}

impl SplitReader for DatagenSplit {
    fn read(&mut self, max_rows: usize) -> Result<ReadResult> {
        let first = (self.chunk * self.splits + self.split) * CHUNK + self.within;
        let n = (CHUNK - self.within).min(max_rows as u64);
        let n = match self.total {
            Some(t) if first >= t => return Ok(ReadResult::End),
            Some(t) => (t - first).min(n),
            None => n,
        };
        self.within += n;
        if self.within == CHUNK {
            self.chunk += 1;
            self.within = 0;
        }
        Ok(ReadResult::Rows(self.options.rows(first, n as usize)?))
    }
}

/// Which of a file source's splits reads each file: files are dealt round-robin in the
/// order they are first seen, and a file keeps its split (one that later sorts before known
/// files does not move, so no file is read twice or skipped).
#[derive(Default)]
pub struct FileAssignment {
    owners: crate::HashMap<PathBuf, usize>,
    next: usize,
}

impl FileAssignment {
    fn owner(&mut self, file: &Path, splits: usize) -> usize {
        if let Some(&owner) = self.owners.get(file) {
            return owner;
        }
        let owner = self.next % splits.max(1);
        self.next += 1;
        self.owners.insert(file.to_path_buf(), owner);
        owner
    }
}

/// One split of a file source: the files matching a pattern that are dealt to it, in name
/// order, each read a batch at a time; files that appear later are read when seen (each
/// file once).
pub struct FileSplit {
    pattern: String,
    format: FileFormat,
    schema: SchemaRef,
    split: usize,
    splits: usize,
    assignment: Arc<Mutex<FileAssignment>>,
    done: BTreeSet<PathBuf>,
    current: Option<(PathBuf, FileCursor)>,
    progress: Arc<Mutex<SplitProgress>>,
}

impl FileSplit {
    /// Split `split` of `splits`, sharing `assignment` with the others.
    pub fn new(
        pattern: String,
        format: FileFormat,
        schema: SchemaRef,
        (split, splits): (usize, usize),
        assignment: Arc<Mutex<FileAssignment>>,
        progress: Arc<Mutex<SplitProgress>>,
    ) -> Self {
        Self {
            pattern,
            format,
            schema,
            split,
            splits,
            assignment,
            done: BTreeSet::new(),
            current: None,
            progress,
        }
    }
}

impl SplitReader for FileSplit {
    fn read(&mut self, max_rows: usize) -> Result<ReadResult> {
        loop {
            if let Some((path, cursor)) = &mut self.current {
                if let Some(batch) = cursor.next_batch()? {
                    return Ok(ReadResult::Rows(batch));
                }
                let stats = cursor.stats();
                let mut p = self.progress.lock();
                p.next_offset += 1;
                p.high_watermark = p.next_offset;
                p.bytes += stats.bytes;
                p.parse_errors += stats.errors;
                if stats.last_error.is_some() {
                    p.last_error = stats.last_error;
                }
                drop(p);
                self.done.insert(path.clone());
                self.current = None;
            }
            let files = list_files(&self.pattern)?;
            let next = {
                let mut assignment = self.assignment.lock();
                files.into_iter().find(|f| {
                    !self.done.contains(f) && assignment.owner(f, self.splits) == self.split
                })
            };
            let Some(file) = next else {
                std::thread::sleep(IDLE_WAIT * 4);
                return Ok(ReadResult::Idle);
            };
            let cursor = FileCursor::open(&file, self.format, Arc::clone(&self.schema), max_rows)?;
            self.current = Some((file, cursor));
        }
    }
}

/// A generator split with offsets: the rows it produced so far (a generator is never
/// behind, so its high watermark is the same).
pub struct GeneratedSplit {
    inner: Box<dyn SplitReader>,
    progress: Arc<Mutex<SplitProgress>>,
    /// The row the split ends before (a backfill's), if any.
    until: Option<i64>,
}

impl GeneratedSplit {
    /// `inner` after its first `progress.next_offset` rows (0 unless resumed).
    pub fn new(inner: Box<dyn SplitReader>, progress: Arc<Mutex<SplitProgress>>) -> Self {
        Self {
            inner,
            progress,
            until: None,
        }
    }

    /// Ends the split before row `end` (a late subscriber's backfill of a shared split).
    pub fn until(mut self, end: i64) -> Self {
        self.until = Some(end);
        self
    }
}

impl SplitReader for GeneratedSplit {
    fn read(&mut self, max_rows: usize) -> Result<ReadResult> {
        let max_rows = match self.until {
            Some(end) => {
                let left = end - self.progress.lock().next_offset;
                if left <= 0 {
                    return Ok(ReadResult::End);
                }
                max_rows.min(left as usize)
            }
            None => max_rows,
        };
        let result = self.inner.read(max_rows)?;
        if let ReadResult::Rows(rows) = &result {
            let mut p = self.progress.lock();
            p.next_offset += rows.num_rows() as i64;
            p.high_watermark = p.next_offset;
        }
        Ok(result)
    }
}

/// A table's committed changes, in commit order, each with the table's log position after
/// it (fed by `TableStore::subscribe`); the split's offset is the last position delivered.
pub struct ChangelogSplit {
    changes: Receiver<(u64, ChangeBatch)>,
    progress: Arc<Mutex<SplitProgress>>,
}

impl ChangelogSplit {
    pub fn new(changes: Receiver<(u64, ChangeBatch)>, progress: Arc<Mutex<SplitProgress>>) -> Self {
        Self { changes, progress }
    }

    fn got(&self, (lsn, c): (u64, ChangeBatch)) -> ReadResult {
        let mut p = self.progress.lock();
        p.next_offset = lsn as i64;
        p.high_watermark = p.next_offset;
        ReadResult::Changes(c)
    }
}

impl SplitReader for ChangelogSplit {
    fn read(&mut self, _max_rows: usize) -> Result<ReadResult> {
        match self.changes.recv_timeout(IDLE_WAIT) {
            Ok(c) => Ok(self.got(c)),
            Err(RecvTimeoutError::Timeout) => Ok(ReadResult::Idle),
            // The table was dropped: nothing more will come.
            Err(RecvTimeoutError::Disconnected) => Ok(ReadResult::End),
        }
    }

    fn read_ready(&mut self, _max_rows: usize) -> Result<Option<ReadResult>> {
        match self.changes.try_recv() {
            Ok(c) => Ok(Some(self.got(c))),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// Rows (`x` values) split `s` of `n` reads until it has nothing left.
    fn drain(split: &mut FileSplit) -> Vec<i64> {
        let mut xs = Vec::new();
        while let ReadResult::Rows(b) = split.read(2).unwrap() {
            let col = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            xs.extend((0..col.len()).map(|i| col.value(i)));
        }
        xs
    }

    #[test]
    fn file_splits_read_every_file_once_even_as_files_appear() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, xs: &[i64]| {
            let lines: String = xs.iter().map(|x| format!("{{\"x\": {x}}}\n")).collect();
            std::fs::write(dir.path().join(name), lines).unwrap();
        };
        write("b.ndjson", &[1, 2, 3]);
        write("c.ndjson", &[4, 5]);
        write("d.ndjson", &[6]);
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let assignment = Arc::new(Mutex::new(FileAssignment::default()));
        let pattern = format!("{}/*.ndjson", dir.path().display());
        let mut splits: Vec<FileSplit> = (0..2)
            .map(|s| {
                FileSplit::new(
                    pattern.clone(),
                    FileFormat::Json,
                    Arc::clone(&schema),
                    (s, 2),
                    Arc::clone(&assignment),
                    Arc::new(Mutex::new(SplitProgress::default())),
                )
            })
            .collect();
        let mut seen: Vec<Vec<i64>> = splits.iter_mut().map(drain).collect();
        assert!(
            seen.iter().all(|xs| !xs.is_empty()),
            "both splits read: {seen:?}"
        );
        // A file that sorts first appears later: read once, by one split.
        write("a.ndjson", &[7, 8]);
        for (s, split) in splits.iter_mut().enumerate() {
            seen[s].extend(drain(split));
        }
        let mut all: Vec<i64> = seen.concat();
        all.sort_unstable();
        assert_eq!(all, (1..=8).collect::<Vec<_>>());
        let files: i64 = splits.iter().map(|s| s.progress.lock().next_offset).sum();
        assert_eq!(files, 4);
    }
}
