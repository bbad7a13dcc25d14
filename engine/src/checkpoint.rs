//! Where checkpoints live and how a task's snapshot is written: `CheckpointStore`, one
//! storage API (a local directory through `object_store`, object storage by configuration),
//! and the byte form of a `GraphSnapshot` (operator states as Arrow IPC, split positions).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::message::SplitPosition;
use crate::runtime::GraphSnapshot;
use crate::state::StateSnapshot;
use crate::{EngineError, Result};

/// Objects of checkpoints, by `/`-separated path. `put` replaces an object atomically (a
/// reader sees the old bytes or the new, never part) and durably once it returns.
#[async_trait]
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<()>;
    /// None when there is no such object.
    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>>;
    /// Every object under `prefix`, as paths.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;
    async fn delete(&self, path: &str) -> Result<()>;
}

fn store_error(e: object_store::Error) -> EngineError {
    EngineError::Io(std::io::Error::other(e.to_string()))
}

/// A directory on the local file system (`--data-dir/checkpoints`). `object_store` writes
/// each object to a temporary file and renames it into place; this also fsyncs the file and
/// its directory, so a committed manifest survives a power cut, not only a crash.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    inner: LocalFileSystem,
}

impl LocalStore {
    pub fn open(root: PathBuf) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&root)?;
        let inner = LocalFileSystem::new_with_prefix(&root).map_err(store_error)?;
        Ok(Arc::new(Self { root, inner }))
    }
}

#[async_trait]
impl CheckpointStore for LocalStore {
    async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let location = StorePath::from(path);
        self.inner
            .put(&location, PutPayload::from(bytes))
            .await
            .map_err(store_error)?;
        // Where object_store put it: it escapes characters such as `%` in file names, so a
        // part named `s%2Equery.d` (the dataflow of sink `s`'s own query) is not `root/path`.
        let file = self
            .inner
            .path_to_filesystem(&location)
            .map_err(store_error)?;
        // Checkpoints hold the views' and tables' rows: the server's user's only.
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        std::fs::File::open(&file)?.sync_all()?;
        if let Some(dir) = file.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.inner.get(&StorePath::from(path)).await {
            Ok(got) => Ok(Some(got.bytes().await.map_err(store_error)?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix = StorePath::from(prefix);
        let mut out: Vec<String> = self
            .inner
            .list(Some(&prefix))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(store_error)?;
        out.sort();
        Ok(out)
    }

    async fn delete(&self, path: &str) -> Result<()> {
        match self.inner.delete(&StorePath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_error(e)),
        }
        // Directories hold nothing but objects: remove the ones left empty.
        let mut dir = self
            .inner
            .path_to_filesystem(&StorePath::from(path))
            .map_err(store_error)?;
        while dir.pop() && dir != self.root && std::fs::remove_dir(&dir).is_ok() {}
        Ok(())
    }
}

/// The first bytes of a task snapshot (and its format's version).
const MAGIC: &[u8; 8] = b"WEIRSNP1";

impl GraphSnapshot {
    /// `MAGIC`, then u64 checkpoint, epoch and task; the positions (a u32 count, then per
    /// position u64 node, i32 partition, i64 offset, u8 has-watermark, i64 watermark);
    /// the nodes (a u32 count, then per node a u64 length and its `StateSnapshot` bytes).
    /// Little-endian throughout.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = MAGIC.to_vec();
        for v in [self.checkpoint, self.epoch, self.task as u64] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.positions.len() as u32).to_le_bytes());
        for (node, p) in &self.positions {
            out.extend_from_slice(&(*node as u64).to_le_bytes());
            out.extend_from_slice(&p.partition.to_le_bytes());
            out.extend_from_slice(&p.offset.to_le_bytes());
            out.push(u8::from(p.watermark.is_some()));
            out.extend_from_slice(&p.watermark.unwrap_or_default().to_le_bytes());
        }
        out.extend_from_slice(&(self.nodes.len() as u32).to_le_bytes());
        for node in &self.nodes {
            let bytes = node.to_bytes()?;
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader(bytes);
        if r.take(MAGIC.len())? != MAGIC {
            return Err(corrupt("not a task snapshot"));
        }
        let (checkpoint, epoch, task) = (r.u64()?, r.u64()?, r.u64()? as usize);
        let mut positions = Vec::new();
        for _ in 0..r.u32()? {
            let node = r.u64()? as usize;
            let partition = i32::from_le_bytes(r.array()?);
            let offset = r.i64()?;
            let has = r.take(1)?[0] == 1;
            let watermark = r.i64()?;
            positions.push((
                node,
                SplitPosition {
                    partition,
                    offset,
                    watermark: has.then_some(watermark),
                },
            ));
        }
        let mut nodes = Vec::new();
        for _ in 0..r.u32()? {
            let len = r.u64()? as usize;
            nodes.push(StateSnapshot::from_bytes(r.take(len)?)?);
        }
        if !r.0.is_empty() {
            return Err(corrupt("trailing bytes after a task snapshot"));
        }
        Ok(Self {
            checkpoint,
            epoch,
            task,
            nodes,
            positions,
        })
    }
}

fn corrupt(what: &str) -> EngineError {
    EngineError::CorruptCheckpoint(what.to_string())
}

/// Reads fixed-size fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(corrupt("task snapshot is truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("invariant: took N bytes"))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_snapshot_round_trips_and_a_torn_one_is_refused() {
        let mut state = StateSnapshot::default();
        state
            .put_values("clock", &[("watermark", Some(9))])
            .unwrap();
        let snapshot = GraphSnapshot {
            checkpoint: 40,
            epoch: 41,
            task: 3,
            nodes: vec![StateSnapshot::default(), state],
            positions: vec![
                (
                    0,
                    SplitPosition {
                        partition: 2,
                        offset: 1234,
                        watermark: Some(-5),
                    },
                ),
                (
                    4,
                    SplitPosition {
                        partition: 0,
                        offset: 7,
                        watermark: None,
                    },
                ),
            ],
        };
        let bytes = snapshot.to_bytes().unwrap();
        assert_eq!(GraphSnapshot::from_bytes(&bytes).unwrap(), snapshot);
        for cut in [0, 10, bytes.len() - 1] {
            assert!(GraphSnapshot::from_bytes(&bytes[..cut]).is_err());
        }
    }

    #[tokio::test]
    async fn the_local_store_puts_lists_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("checkpoints")).unwrap();
        store.put("7/v/0.snap", b"a".to_vec()).await.unwrap();
        store.put("7/v/1.snap", b"b".to_vec()).await.unwrap();
        store.put("manifests/7.json", b"{}".to_vec()).await.unwrap();
        assert_eq!(
            store.list("7").await.unwrap(),
            vec!["7/v/0.snap", "7/v/1.snap"]
        );
        assert_eq!(store.get("7/v/1.snap").await.unwrap(), Some(b"b".to_vec()));
        store.put("7/v/1.snap", b"c".to_vec()).await.unwrap();
        assert_eq!(store.get("7/v/1.snap").await.unwrap(), Some(b"c".to_vec()));
        store.delete("7/v/1.snap").await.unwrap();
        store.delete("7/v/1.snap").await.unwrap();
        assert_eq!(store.get("7/v/1.snap").await.unwrap(), None);
    }

    /// Names object_store escapes on disk (`%`) are found where it wrote them (the
    /// permissions and fsync after a put failed with ENOENT); the checkpoint's own part
    /// names avoid them (`s-2Equery.d`) so that listing gives them back as written.
    #[tokio::test]
    async fn the_local_store_puts_escaped_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("checkpoints")).unwrap();
        store.put("9/a%b/0.snap", b"y".to_vec()).await.unwrap();
        assert_eq!(
            store.get("9/a%b/0.snap").await.unwrap(),
            Some(b"y".to_vec())
        );
        store.delete("9/a%b/0.snap").await.unwrap();
        store
            .put("9/s-2Equery.d/0.snap", b"x".to_vec())
            .await
            .unwrap();
        assert_eq!(store.list("9").await.unwrap(), vec!["9/s-2Equery.d/0.snap"]);
        assert_eq!(
            store.get("9/s-2Equery.d/0.snap").await.unwrap(),
            Some(b"x".to_vec())
        );
        store.delete("9/s-2Equery.d/0.snap").await.unwrap();
        assert_eq!(store.list("9").await.unwrap(), Vec::<String>::new());
    }
}
