//! Streaming split readers of the built-in connectors: Nexmark and datagen shards, NDJSON
//! files (new files picked up as they appear) and a table's changelog.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use parking_lot::Mutex;

use crate::connector::datagen::DatagenOptions;
use crate::connector::file::{FileFormat, list_files, read_file};
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
/// row indexes, so shards together produce every row exactly once.
pub struct DatagenSplit {
    options: DatagenOptions,
    split: u64,
    splits: u64,
    chunk: u64,
    total: Option<u64>,
}

impl DatagenSplit {
    pub fn new(options: DatagenOptions, split: u64, splits: u64) -> Self {
        let total = options.row_count();
        Self {
            options,
            split,
            splits: splits.max(1),
            chunk: 0,
            total,
        }
    }
}

impl SplitReader for DatagenSplit {
    fn read(&mut self, max_rows: usize) -> Result<ReadResult> {
        let first = (self.chunk * self.splits + self.split) * max_rows as u64;
        let n = match self.total {
            Some(t) if first >= t => return Ok(ReadResult::End),
            Some(t) => ((t - first) as usize).min(max_rows),
            None => max_rows,
        };
        self.chunk += 1;
        Ok(ReadResult::Rows(self.options.rows(first, n)?))
    }
}

/// NDJSON files matching a pattern, in name order; files that appear later are read when
/// they are seen (each file once).
pub struct FileSplit {
    pattern: String,
    format: FileFormat,
    schema: SchemaRef,
    done: BTreeSet<PathBuf>,
    queue: Vec<arrow::array::RecordBatch>,
    progress: Arc<Mutex<SplitProgress>>,
}

impl FileSplit {
    pub fn new(
        pattern: String,
        format: FileFormat,
        schema: SchemaRef,
        progress: Arc<Mutex<SplitProgress>>,
    ) -> Self {
        Self {
            pattern,
            format,
            schema,
            done: BTreeSet::new(),
            queue: Vec::new(),
            progress,
        }
    }
}

impl SplitReader for FileSplit {
    fn read(&mut self, max_rows: usize) -> Result<ReadResult> {
        if self.queue.is_empty() {
            let next = list_files(&self.pattern)?
                .into_iter()
                .find(|f| !self.done.contains(f));
            let Some(file) = next else {
                std::thread::sleep(IDLE_WAIT * 4);
                return Ok(ReadResult::Idle);
            };
            let mut batches = Vec::new();
            let stats = read_file(
                &file,
                self.format,
                Arc::clone(&self.schema),
                max_rows,
                |b| {
                    batches.push(b);
                    true
                },
            )?;
            let mut p = self.progress.lock();
            p.next_offset += 1;
            p.high_watermark = p.next_offset;
            p.bytes += stats.bytes;
            p.parse_errors += stats.errors;
            if stats.last_error.is_some() {
                p.last_error = stats.last_error;
            }
            drop(p);
            self.done.insert(file);
            batches.reverse();
            self.queue = batches;
        }
        Ok(self.queue.pop().map_or(ReadResult::Idle, ReadResult::Rows))
    }
}

/// A generator split with offsets: the rows it produced so far (a generator is never
/// behind, so its high watermark is the same).
pub struct GeneratedSplit {
    inner: Box<dyn SplitReader>,
    progress: Arc<Mutex<SplitProgress>>,
}

impl GeneratedSplit {
    pub fn new(inner: Box<dyn SplitReader>, progress: Arc<Mutex<SplitProgress>>) -> Self {
        Self { inner, progress }
    }
}

impl SplitReader for GeneratedSplit {
    fn read(&mut self, max_rows: usize) -> Result<ReadResult> {
        let result = self.inner.read(max_rows)?;
        if let ReadResult::Rows(rows) = &result {
            let mut p = self.progress.lock();
            p.next_offset += rows.num_rows() as i64;
            p.high_watermark = p.next_offset;
        }
        Ok(result)
    }
}

/// A table's committed changes, in commit order (fed by `TableStore::subscribe`).
pub struct ChangelogSplit {
    changes: Receiver<ChangeBatch>,
    progress: Arc<Mutex<SplitProgress>>,
}

impl ChangelogSplit {
    pub fn new(changes: Receiver<ChangeBatch>, progress: Arc<Mutex<SplitProgress>>) -> Self {
        Self { changes, progress }
    }

    fn got(&self, c: ChangeBatch) -> ReadResult {
        let mut p = self.progress.lock();
        p.next_offset += 1;
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
