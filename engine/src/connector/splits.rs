//! Streaming split readers of the built-in connectors: Nexmark and datagen shards, NDJSON
//! files (new files picked up as they appear) and a table's changelog.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use arrow::array::RecordBatch;
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

/// Which of a file source's `splits` splits reads `file`: by a hash of its name, so a file
/// keeps its split across restarts and whatever other files appear.
fn file_owner(file: &Path, splits: usize) -> usize {
    let name = file.file_name().map(|n| n.to_string_lossy());
    crc32fast::hash(name.unwrap_or_default().as_bytes()) as usize % splits.max(1)
}

/// One split of a file source: the files matching a pattern that hash to it, in name order,
/// each read a batch at a time; files that appear later are read when seen (each file
/// once). Its offset is the rows it has emitted: a split resumed at an offset reads its
/// files again from the first and skips that many rows, so a file added since must sort
/// after those it had read (as names stamped with a time do).
pub struct FileSplit {
    pattern: String,
    format: FileFormat,
    schema: SchemaRef,
    split: usize,
    splits: usize,
    done: BTreeSet<PathBuf>,
    current: Option<(PathBuf, FileCursor)>,
    /// Rows still to skip (emitted before the checkpoint it resumes from).
    skip: u64,
    progress: Arc<Mutex<SplitProgress>>,
}

impl FileSplit {
    /// Split `split` of `splits`, after the first `skip` rows it emits (0 unless resumed;
    /// `progress` starts at that offset).
    pub fn new(
        pattern: String,
        format: FileFormat,
        schema: SchemaRef,
        (split, splits): (usize, usize),
        skip: u64,
        progress: Arc<Mutex<SplitProgress>>,
    ) -> Self {
        Self {
            pattern,
            format,
            schema,
            split,
            splits,
            done: BTreeSet::new(),
            current: None,
            skip,
            progress,
        }
    }

    /// The rows of `batch` past those still to skip, if any.
    fn past_skip(&mut self, batch: RecordBatch) -> Option<RecordBatch> {
        let rows = batch.num_rows() as u64;
        if rows <= self.skip {
            self.skip -= rows;
            return None;
        }
        let from = std::mem::take(&mut self.skip) as usize;
        Some(batch.slice(from, batch.num_rows() - from))
    }
}

impl SplitReader for FileSplit {
    fn read(&mut self, max_rows: usize) -> Result<ReadResult> {
        loop {
            if let Some((path, cursor)) = &mut self.current {
                if let Some(batch) = cursor.next_batch()? {
                    let Some(batch) = self.past_skip(batch) else {
                        continue;
                    };
                    let mut p = self.progress.lock();
                    p.next_offset += batch.num_rows() as i64;
                    p.high_watermark = p.next_offset;
                    drop(p);
                    return Ok(ReadResult::Rows(batch));
                }
                let stats = cursor.stats();
                let mut p = self.progress.lock();
                p.bytes += stats.bytes;
                p.parse_errors += stats.errors;
                if stats.last_error.is_some() {
                    p.last_error = stats.last_error;
                }
                drop(p);
                self.done.insert(path.clone());
                self.current = None;
            }
            let next = list_files(&self.pattern)?
                .into_iter()
                .find(|f| !self.done.contains(f) && file_owner(f, self.splits) == self.split);
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
    fn file_splits_read_every_file_once_even_as_files_appear_and_resume_at_their_offset() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, xs: std::ops::Range<i64>| {
            let lines: String = xs.map(|x| format!("{{\"x\": {x}}}\n")).collect();
            std::fs::write(dir.path().join(name), lines).unwrap();
        };
        for (i, name) in ["b", "c", "d", "e", "f", "g"].iter().enumerate() {
            let from = i as i64 * 10;
            write(&format!("{name}.ndjson"), from..from + 3 + i as i64);
        }
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let pattern = format!("{}/*.ndjson", dir.path().display());
        let split = |s: usize, skip: u64| {
            let progress = Arc::new(Mutex::new(SplitProgress {
                next_offset: skip as i64,
                ..SplitProgress::default()
            }));
            let schema = Arc::clone(&schema);
            FileSplit::new(
                pattern.clone(),
                FileFormat::Json,
                schema,
                (s, 2),
                skip,
                progress,
            )
        };
        let mut splits: Vec<FileSplit> = (0..2).map(|s| split(s, 0)).collect();
        let mut seen: Vec<Vec<i64>> = splits.iter_mut().map(drain).collect();
        assert!(
            seen.iter().all(|xs| !xs.is_empty()),
            "both splits read: {seen:?}"
        );
        // A file that sorts first appears later: read once, by one split.
        write("a.ndjson", 100..102);
        for (s, split) in splits.iter_mut().enumerate() {
            seen[s].extend(drain(split));
        }
        let mut all: Vec<i64> = seen.concat();
        all.sort_unstable();
        let mut expected: Vec<i64> = (0..6).flat_map(|i| i * 10..i * 10 + 3 + i).collect();
        expected.extend([100, 101]);
        expected.sort_unstable();
        assert_eq!(all, expected);
        // Offsets count the rows emitted.
        let emitted: i64 = splits.iter().map(|s| s.progress.lock().next_offset).sum();
        assert_eq!(emitted, expected.len() as i64);
        // A split resumed at an offset emits the rest of its rows, in the same order.
        for (s, rows) in seen.iter().enumerate() {
            let mut ordered = split(s, 0);
            let once = drain(&mut ordered);
            assert_eq!(once.len(), rows.len());
            for at in [0, 1, once.len() / 2, once.len()] {
                let mut resumed = split(s, at as u64);
                assert_eq!(drain(&mut resumed), once[at..], "split {s} resumed at {at}");
                assert_eq!(resumed.progress.lock().next_offset, once.len() as i64);
            }
        }
    }
}
