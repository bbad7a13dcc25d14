//! A checkpoint's manifest: the views it holds and, per task snapshot, its object and
//! checksum. Committing the manifest commits the checkpoint; a torn one is never read.

use serde::{Deserialize, Serialize};
use weir_engine::Epoch;
use weir_engine::checkpoint::CheckpointStore;
use weir_engine::runtime::GraphSnapshot;
use weir_engine::{StateSnapshot, TableBase};

use crate::error::{Result, SqlError};

/// Where manifests are kept in the checkpoint store.
pub(crate) const MANIFESTS: &str = "manifests";

/// One committed checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Manifest {
    pub(crate) epoch: Epoch,
    pub(crate) started_at_ms: i64,
    pub(crate) duration_ms: u64,
    pub(crate) bytes: u64,
    pub(crate) views: Vec<ViewPart>,
    /// DML tables' rows at their log positions (their logs hold only later changes).
    #[serde(default)]
    pub(crate) tables: Vec<TablePart>,
}

/// A DML table's rows in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct TablePart {
    pub(crate) name: String,
    pub(crate) lsn: u64,
    pub(crate) path: String,
    pub(crate) bytes: u64,
    pub(crate) crc32: u32,
}

/// A table's rows as a checkpoint object: a `StateSnapshot` of the rows and the position.
pub(crate) fn table_to_bytes(base: &TableBase) -> Result<Vec<u8>> {
    let mut s = StateSnapshot::default();
    s.put("rows", base.rows.clone());
    s.put_values("log", &[("lsn", Some(base.lsn as i64))])?;
    Ok(s.to_bytes()?)
}

fn table_from_bytes(bytes: &[u8]) -> Result<TableBase> {
    let s = StateSnapshot::from_bytes(bytes)?;
    let rows = s
        .table("rows")
        .cloned()
        .ok_or_else(|| SqlError::new("XX001", "a checkpointed table has no rows"))?;
    let lsn = s.value("log", "lsn")?.unwrap_or(0) as u64;
    Ok(TableBase { lsn, rows })
}

/// What a checkpoint holds of one view.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct ViewPart {
    pub(crate) name: String,
    #[serde(flatten)]
    pub(crate) meta: ViewMeta,
    pub(crate) tasks: Vec<TaskPart>,
}

/// What a view's dataflow must match for its checkpoint to be restored into it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ViewMeta {
    /// A hash of the dataflow's plan (its EXPLAIN lines) and parallelism.
    pub(crate) fingerprint: String,
    pub(crate) parallelism: usize,
    /// (entry node, relation) of each input, so positions can be given back by name.
    pub(crate) inputs: Vec<(usize, String)>,
}

/// One task's snapshot object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct TaskPart {
    pub(crate) task: usize,
    pub(crate) path: String,
    pub(crate) bytes: u64,
    pub(crate) crc32: u32,
}

/// The object a manifest is stored at (epochs zero-padded, so names sort by epoch).
pub(crate) fn manifest_path(epoch: Epoch) -> String {
    format!("{MANIFESTS}/{epoch:020}.json")
}

/// The directory of a checkpoint's task snapshots.
pub(crate) fn parts_dir(epoch: Epoch) -> String {
    format!("{epoch:020}")
}

impl Manifest {
    /// The manifest's JSON, then a line with its CRC-32 (hex).
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>> {
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| SqlError::new("XX000", format!("cannot write a manifest: {e}")))?;
        Ok(format!("{json}\n{:08x}\n", crc32fast::hash(json.as_bytes())).into_bytes())
    }

    /// None for a torn or corrupt manifest.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
        let (json, crc) = text.rsplit_once('\n')?;
        let crc = u32::from_str_radix(crc, 16).ok()?;
        if crc32fast::hash(json.as_bytes()) != crc {
            return None;
        }
        serde_json::from_str(json).ok()
    }
}

/// A committed checkpoint read back: its manifest and every task snapshot, verified.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) manifest: Manifest,
    /// Per view (as in the manifest), its task snapshots.
    pub(crate) snapshots: Vec<Vec<GraphSnapshot>>,
    /// Per DML table (as in the manifest), its rows.
    pub(crate) tables: Vec<TableBase>,
}

/// The newest checkpoint whose manifest and parts all verify; older ones are tried when a
/// newer one is torn (a crash while it was written). None when there is none.
pub(crate) async fn load_latest(store: &dyn CheckpointStore) -> Result<Option<Loaded>> {
    let mut manifests = store.list(MANIFESTS).await?;
    manifests.sort();
    for path in manifests.iter().rev() {
        match load(store, path).await {
            Ok(Some(loaded)) => return Ok(Some(loaded)),
            Ok(None) => tracing::warn!(%path, "checkpoint is torn or corrupt; trying an older one"),
            Err(e) => {
                tracing::warn!(%path, error = %e, "cannot read checkpoint; trying an older one")
            }
        }
    }
    Ok(None)
}

async fn load(store: &dyn CheckpointStore, path: &str) -> Result<Option<Loaded>> {
    let Some(bytes) = store.get(path).await? else {
        return Ok(None);
    };
    let Some(manifest) = Manifest::from_bytes(&bytes) else {
        return Ok(None);
    };
    let mut snapshots = Vec::with_capacity(manifest.views.len());
    for view in &manifest.views {
        let mut tasks = Vec::with_capacity(view.tasks.len());
        for part in &view.tasks {
            let Some(bytes) = store.get(&part.path).await? else {
                return Ok(None);
            };
            if bytes.len() as u64 != part.bytes || crc32fast::hash(&bytes) != part.crc32 {
                return Ok(None);
            }
            let snapshot = GraphSnapshot::from_bytes(&bytes)?;
            if snapshot.checkpoint != manifest.epoch || snapshot.task != part.task {
                return Ok(None);
            }
            tasks.push(snapshot);
        }
        snapshots.push(tasks);
    }
    let mut tables = Vec::with_capacity(manifest.tables.len());
    for part in &manifest.tables {
        let Some(bytes) = store.get(&part.path).await? else {
            return Ok(None);
        };
        if bytes.len() as u64 != part.bytes || crc32fast::hash(&bytes) != part.crc32 {
            return Ok(None);
        }
        tables.push(table_from_bytes(&bytes)?);
    }
    Ok(Some(Loaded {
        manifest,
        snapshots,
        tables,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_with_a_changed_byte_is_refused() {
        let m = Manifest {
            epoch: 12,
            started_at_ms: 1,
            duration_ms: 2,
            bytes: 3,
            views: vec![ViewPart {
                name: "v".into(),
                meta: ViewMeta {
                    fingerprint: "ab".into(),
                    parallelism: 2,
                    inputs: vec![(0, "bid".into())],
                },
                tasks: vec![TaskPart {
                    task: 0,
                    path: "p".into(),
                    bytes: 3,
                    crc32: 4,
                }],
            }],
            tables: vec![],
        };
        let bytes = m.to_bytes().unwrap();
        assert_eq!(Manifest::from_bytes(&bytes), Some(m));
        let mut changed = bytes.clone();
        changed[10] ^= 1;
        assert_eq!(Manifest::from_bytes(&changed), None);
        assert_eq!(Manifest::from_bytes(&bytes[..bytes.len() - 3]), None);
    }
}
