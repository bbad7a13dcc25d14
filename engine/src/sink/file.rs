//! `FileSink`: an append-only view's rows as rolling Parquet files in a directory, through
//! `object_store`. A file is written under a temporary name (`….parquet.tmp`, which a
//! reader's `*.parquet` glob skips) and takes its final name only once the checkpoint it
//! belongs to is committed, so readers see whole checkpoints and never a half-written file.
//!
//! Exactly-once across crashes: a prepared state lists the files prepared and not yet
//! renamed, and the next file number. On restart from the newest state prepared by the
//! checkpoint restored, `open` renames those (a file already renamed is left alone),
//! deletes every other temporary file of the sink (output after that state, which is sent
//! again) and numbers new files on from the state's, so no row is in two final files and
//! none is missing.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, StringArray, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::Mutex;
use parquet::arrow::ArrowWriter;

use super::{SinkProgress, SinkWriter};
use crate::{Barrier, ChangeBatch, EngineError, Epoch, Result, StateSnapshot};

/// A file is closed once its encoded size passes this (`file.max_bytes` overrides it); a
/// checkpoint closes it earlier.
pub const DEFAULT_MAX_FILE_BYTES: usize = 64 << 20;

const TEMP_SUFFIX: &str = ".tmp";

/// Where and how a file sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSinkConfig {
    /// The directory (created if missing).
    pub path: String,
    pub max_file_bytes: usize,
    /// Drop retractions instead of failing on one (`force_append_only`).
    pub force_append_only: bool,
}

/// The file being written.
struct OpenFile {
    writer: ArrowWriter<Vec<u8>>,
    rows: u64,
}

/// A sink writing Parquet files named `{sink}-{n:08}.parquet`.
pub struct FileSink {
    store: Arc<dyn ObjectStore>,
    name: String,
    schema: SchemaRef,
    config: FileSinkConfig,
    open: Option<OpenFile>,
    next_file: u64,
    /// Closed files under temporary names, with their rows and bytes, not yet part of a
    /// prepared checkpoint.
    closed: Vec<(String, u64, u64)>,
    /// Files of prepared checkpoints waiting for their commit, by checkpoint.
    prepared: BTreeMap<Epoch, Vec<(String, u64, u64)>>,
    progress: Arc<Mutex<SinkProgress>>,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("path", &self.config.path)
            .field("next_file", &self.next_file)
            .finish()
    }
}

fn store_error(e: object_store::Error) -> EngineError {
    EngineError::Io(std::io::Error::other(e.to_string()))
}

impl FileSink {
    /// Opens the sink's directory; `restored` is the newest state it prepared by the
    /// checkpoint the server restarted from (None for a new sink, or one that had prepared
    /// none).
    pub async fn open(
        name: &str,
        schema: SchemaRef,
        config: FileSinkConfig,
        restored: Option<&StateSnapshot>,
        progress: Arc<Mutex<SinkProgress>>,
    ) -> Result<Self> {
        std::fs::create_dir_all(&config.path)?;
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(&config.path).map_err(store_error)?);
        let mut sink = Self {
            store,
            name: name.to_string(),
            schema,
            config,
            open: None,
            next_file: 0,
            closed: Vec::new(),
            prepared: BTreeMap::new(),
            progress,
        };
        sink.recover(restored).await?;
        Ok(sink)
    }

    fn file_name(&self, n: u64) -> String {
        format!("{}-{n:08}.parquet", self.name)
    }

    /// The file number in a final or temporary name of this sink's, if it is one.
    fn file_number(&self, name: &str) -> Option<u64> {
        let rest = name.strip_prefix(&self.name)?.strip_prefix('-')?;
        let rest = rest.strip_suffix(TEMP_SUFFIX).unwrap_or(rest);
        let digits = rest.strip_suffix(".parquet")?;
        (digits.len() == 8).then(|| digits.parse().ok()).flatten()
    }

    /// See the module doc.
    async fn recover(&mut self, restored: Option<&StateSnapshot>) -> Result<()> {
        let listed: Vec<String> = self
            .store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .map_err(store_error)?;
        let mine: Vec<&String> = listed
            .iter()
            .filter(|n| self.file_number(n).is_some())
            .collect();
        let pending: Vec<String> = match restored.and_then(|s| s.table("pending")) {
            Some(t) => {
                let names = t
                    .column(0)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| EngineError::CorruptCheckpoint("file sink state".into()))?;
                names.iter().flatten().map(str::to_string).collect()
            }
            None => Vec::new(),
        };
        for file in &pending {
            let temp = format!("{file}{TEMP_SUFFIX}");
            if mine.iter().any(|n| **n == temp) {
                Self::rename(Arc::clone(&self.store), &temp, file).await?;
            }
        }
        for name in &mine {
            if name.ends_with(TEMP_SUFFIX)
                && !pending
                    .iter()
                    .any(|p| format!("{p}{TEMP_SUFFIX}") == **name)
            {
                let store = Arc::clone(&self.store);
                store
                    .delete(&StorePath::from(name.as_str()))
                    .await
                    .map_err(store_error)?;
            }
        }
        self.next_file = match restored.map(|s| s.value("counters", "next_file")) {
            Some(n) => n?.unwrap_or(0) as u64,
            // A new sink numbers on after any files a sink of its name left.
            None => mine
                .iter()
                .filter(|n| !n.ends_with(TEMP_SUFFIX))
                .filter_map(|n| self.file_number(n))
                .max()
                .map_or(0, |n| n + 1),
        };
        Ok(())
    }

    /// (Not a method: the open file's writer is not `Sync`, so `&self` may not be held
    /// across an await.)
    async fn rename(store: Arc<dyn ObjectStore>, from: &str, to: &str) -> Result<()> {
        store
            .rename(&StorePath::from(from), &StorePath::from(to))
            .await
            .map_err(store_error)
    }

    /// Closes the open file and writes it under its temporary name.
    async fn close_file(&mut self) -> Result<()> {
        let Some(file) = self.open.take() else {
            return Ok(());
        };
        let bytes = file.writer.into_inner()?;
        let name = self.file_name(self.next_file);
        self.next_file += 1;
        let size = bytes.len() as u64;
        let store = Arc::clone(&self.store);
        store
            .put(
                &StorePath::from(format!("{name}{TEMP_SUFFIX}")),
                PutPayload::from(bytes),
            )
            .await
            .map_err(store_error)?;
        self.closed.push((name, file.rows, size));
        Ok(())
    }

    /// The rows to append: each row `weight` times; a retraction fails the sink unless
    /// `force_append_only` drops it.
    fn appended(&self, changes: &ChangeBatch) -> Result<RecordBatch> {
        let weights = changes.weights().values();
        if !self.config.force_append_only && weights.iter().any(|&w| w < 0) {
            return Err(EngineError::Unsupported(
                "a file sink got a retraction (an update or delete upstream); files can only \
                 be appended to (force_append_only = 'true' drops retractions)"
                    .into(),
            ));
        }
        let data = changes.data();
        if weights.iter().all(|&w| w == 1) {
            return Ok(data);
        }
        let indices = UInt32Array::from_iter_values(
            weights
                .iter()
                .enumerate()
                .flat_map(|(i, &w)| std::iter::repeat_n(i as u32, w.max(0) as usize)),
        );
        let columns = data
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(data.schema(), columns)?)
    }
}

#[async_trait]
impl SinkWriter for FileSink {
    async fn write(&mut self, changes: &ChangeBatch, _ts_ms: i64, _snapshot: bool) -> Result<()> {
        let rows = self.appended(changes)?;
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let file = match &mut self.open {
            Some(f) => f,
            None => self.open.insert(OpenFile {
                writer: ArrowWriter::try_new(Vec::new(), Arc::clone(&self.schema), None)?,
                rows: 0,
            }),
        };
        file.writer.write(&rows)?;
        file.rows += rows.num_rows() as u64;
        if file.writer.bytes_written() + file.writer.in_progress_size()
            >= self.config.max_file_bytes
        {
            self.close_file().await?;
        }
        Ok(())
    }

    async fn prepare(&mut self, barrier: &Barrier) -> Result<StateSnapshot> {
        self.close_file().await?;
        let files = std::mem::take(&mut self.closed);
        self.prepared
            .entry(barrier.checkpoint)
            .or_default()
            .extend(files);
        let pending: Vec<&str> = self
            .prepared
            .values()
            .flatten()
            .map(|(n, _, _)| n.as_str())
            .collect();
        let mut state = StateSnapshot::default();
        state.put(
            "pending",
            RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("file", DataType::Utf8, false)])),
                vec![Arc::new(StringArray::from(pending))],
            )?,
        );
        state.put_values("counters", &[("next_file", Some(self.next_file as i64))])?;
        self.progress.lock().last_epoch = barrier.epoch;
        Ok(state)
    }

    async fn commit(&mut self, checkpoint: Epoch) -> Result<()> {
        let later = self.prepared.split_off(&(checkpoint + 1));
        let done = std::mem::replace(&mut self.prepared, later);
        for (name, rows, bytes) in done.into_values().flatten() {
            Self::rename(
                Arc::clone(&self.store),
                &format!("{name}{TEMP_SUFFIX}"),
                &name,
            )
            .await?;
            let mut p = self.progress.lock();
            let total = p.partitions.entry(0).or_default();
            total.0 += rows;
            total.1 += bytes;
        }
        Ok(())
    }
}

/// The files a file sink's state lists as pending, for tests.
#[cfg(test)]
fn pending_of(state: &StateSnapshot) -> Vec<String> {
    let t = state.table("pending").unwrap();
    let names = t.column(0).as_any().downcast_ref::<StringArray>().unwrap();
    names.iter().flatten().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]))
    }

    fn rows(values: std::ops::Range<i64>) -> ChangeBatch {
        let batch = RecordBatch::try_new(
            schema(),
            vec![Arc::new(Int64Array::from_iter_values(values))],
        )
        .unwrap();
        ChangeBatch::from_data(&batch, 1).unwrap()
    }

    fn barrier(epoch: Epoch, checkpoint: Epoch) -> Barrier {
        Barrier {
            checkpoint,
            ..Barrier::new(epoch, 0)
        }
    }

    fn listing(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn values_in(dir: &std::path::Path) -> Vec<i64> {
        let mut out = Vec::new();
        for name in listing(dir).iter().filter(|n| n.ends_with(".parquet")) {
            let file = std::fs::File::open(dir.join(name)).unwrap();
            for batch in ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
            {
                let batch = batch.unwrap();
                let v = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                out.extend(v.values().iter().copied());
            }
        }
        out.sort();
        out
    }

    async fn sink(dir: &std::path::Path, restored: Option<&StateSnapshot>, max: usize) -> FileSink {
        let config = FileSinkConfig {
            path: dir.to_string_lossy().into_owned(),
            max_file_bytes: max,
            force_append_only: false,
        };
        FileSink::open("s", schema(), config, restored, Default::default())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn files_take_their_names_when_their_checkpoint_commits() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sink(dir.path(), None, 1).await;
        s.write(&rows(0..10), 0, false).await.unwrap();
        s.write(&rows(10..20), 0, false).await.unwrap();
        // Rolled by size: two temporary files, no final one.
        assert_eq!(
            listing(dir.path()),
            ["s-00000000.parquet.tmp", "s-00000001.parquet.tmp"]
        );
        let state = s.prepare(&barrier(3, 3)).await.unwrap();
        assert_eq!(
            pending_of(&state),
            ["s-00000000.parquet", "s-00000001.parquet"]
        );
        s.commit(3).await.unwrap();
        assert_eq!(
            listing(dir.path()),
            ["s-00000000.parquet", "s-00000001.parquet"]
        );
        assert_eq!(values_in(dir.path()), (0..20).collect::<Vec<_>>());
        assert_eq!(s.progress.lock().partitions[&0].0, 20);
    }

    #[tokio::test]
    async fn a_restart_keeps_the_checkpoints_files_once_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sink(dir.path(), None, usize::MAX).await;
        s.write(&rows(0..5), 0, false).await.unwrap();
        // Checkpoint 2 is committed, but the crash comes before its files are renamed.
        let state = s.prepare(&barrier(2, 2)).await.unwrap();
        s.write(&rows(5..9), 0, false).await.unwrap();
        let _uncommitted = s.prepare(&barrier(4, 4)).await.unwrap();
        s.write(&rows(9..12), 0, false).await.unwrap();
        drop(s);
        let mut again = sink(dir.path(), Some(&state), usize::MAX).await;
        assert_eq!(listing(dir.path()), ["s-00000000.parquet"]);
        // Recovering twice changes nothing.
        drop(again);
        again = sink(dir.path(), Some(&state), usize::MAX).await;
        // The view sends what followed the checkpoint again.
        again.write(&rows(5..12), 0, false).await.unwrap();
        again.prepare(&barrier(6, 6)).await.unwrap();
        again.commit(6).await.unwrap();
        assert_eq!(values_in(dir.path()), (0..12).collect::<Vec<_>>());
        assert_eq!(
            listing(dir.path()),
            ["s-00000000.parquet", "s-00000001.parquet"]
        );
    }

    #[tokio::test]
    async fn retractions_fail_unless_dropped_and_weights_repeat_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sink(dir.path(), None, usize::MAX).await;
        let batch = RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))])
            .unwrap();
        let weights = Int64Array::from(vec![2, -1, 1]);
        let changes = ChangeBatch::from_columns(
            &schema(),
            batch.columns().to_vec(),
            weights.values().iter().copied(),
        )
        .unwrap();
        assert!(s.write(&changes, 0, false).await.is_err());
        s.config.force_append_only = true;
        s.write(&changes, 0, false).await.unwrap();
        s.prepare(&barrier(1, 1)).await.unwrap();
        s.commit(1).await.unwrap();
        assert_eq!(values_in(dir.path()), [1, 1, 3]);
    }
}
