//! The catalog: every source and table by name, persisted as the SQL that created it.
//! On start the SQL is re-planned, so the file never holds plans, only text and resolved defaults.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use serde::{Deserialize, Serialize};

use crate::dataflow::shared_readers::SharedReaders;
use crate::dataflow::{StreamInput, ViewTable};
use crate::error::{Result, SqlError};
use crate::provider::DmlTable;
use crate::secrets::Sealer;
use crate::sink::SinkRelation;
use crate::statement::{CreateRelation, ObjectKind};

/// What the catalog file keeps per object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredEntry {
    pub(crate) kind: ObjectKind,
    pub(crate) name: String,
    /// The CREATE statement as the user wrote it.
    pub(crate) sql: String,
    /// Defaults fixed at creation (e.g. a generator's base time), merged into the options on replay.
    #[serde(default)]
    pub(crate) resolved: BTreeMap<String, String>,
    /// Objects this one reads (a view's tables), which cannot be dropped while it exists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) depends_on: Vec<String>,
}

/// What a catalog object is and can do, asked of the object (each kind implements it
/// beside its provider) instead of found by downcasting its `TableProvider`.
pub(crate) trait CatalogRelation: TableProvider {
    /// How a dataflow reads it; None for what no view reads (a sink).
    fn stream_input(&self) -> Option<&dyn StreamInput> {
        None
    }

    /// Whether it only ever inserts: sources, APPEND ONLY tables, append-only views.
    fn inserts_only(&self) -> bool {
        false
    }

    /// The split readers the views of a source share (Kafka and generator sources).
    fn shared_readers(&self) -> Option<&SharedReaders> {
        None
    }

    fn as_view(&self) -> Option<&ViewTable> {
        None
    }

    fn as_table(&self) -> Option<&DmlTable> {
        None
    }

    fn as_sink(&self) -> Option<&SinkRelation> {
        None
    }
}

/// A live catalog object.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) stored: StoredEntry,
    pub(crate) create: CreateRelation,
    pub(crate) schema: SchemaRef,
    pub(crate) provider: Arc<dyn CatalogRelation>,
}

/// Objects by name, written through to `catalog.json` in the data dir.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    path: Option<PathBuf>,
    /// Seals WITH options' credentials in the file (None in memory).
    sealer: Option<Sealer>,
    entries: BTreeMap<String, Entry>,
    /// Creation order, so replay re-creates dependencies first.
    order: Vec<String>,
    /// Stored objects that could not be re-created on start: kept in the file, never dropped
    /// silently, and their names stay taken.
    unrestored: Vec<StoredEntry>,
}

impl Catalog {
    /// The stored entries of the catalog at `dir`, in creation order (empty when new).
    /// `key_file` is the sealing key's file when it is not in the data dir.
    pub(crate) fn load(
        dir: Option<&Path>,
        key_file: Option<&Path>,
    ) -> Result<(Self, Vec<StoredEntry>)> {
        let path = dir.map(|d| d.join("catalog.json"));
        let sealer = dir.map(|d| Sealer::open(d, key_file)).transpose()?;
        let mut stored: Vec<StoredEntry> = match &path {
            Some(p) if p.exists() => {
                let text = fs::read_to_string(p).map_err(io_error)?;
                serde_json::from_str(&text).map_err(|e| {
                    SqlError::new(
                        "XX001",
                        format!("catalog file {} is corrupt: {e}", p.display()),
                    )
                })?
            }
            _ => vec![],
        };
        if let Some(sealer) = &sealer {
            for entry in &mut stored {
                entry.sql = sealer.unseal(&entry.sql)?;
            }
        }
        Ok((
            Self {
                path,
                sealer,
                entries: BTreeMap::new(),
                order: vec![],
                unrestored: vec![],
            },
            stored,
        ))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// Names of objects of `kind`, sorted.
    pub(crate) fn names(&self, kind: ObjectKind) -> Vec<String> {
        self.entries
            .values()
            .filter(|e| e.stored.kind == kind)
            .map(|e| e.stored.name.clone())
            .collect()
    }

    /// Live objects of `kind` with their providers, sorted by name.
    pub(crate) fn providers(&self, kind: ObjectKind) -> Vec<(String, Arc<dyn CatalogRelation>)> {
        self.entries
            .values()
            .filter(|e| e.stored.kind == kind)
            .map(|e| (e.stored.name.clone(), Arc::clone(&e.provider)))
            .collect()
    }

    /// Keeps an entry that failed to re-create, so the file still holds it.
    pub(crate) fn keep_unrestored(&mut self, stored: StoredEntry) {
        self.unrestored.push(stored);
    }

    /// Objects that read `name`.
    pub(crate) fn dependents(&self, name: &str) -> Vec<String> {
        self.entries
            .values()
            .filter(|e| e.stored.depends_on.iter().any(|d| d == name))
            .map(|e| e.stored.name.clone())
            .collect()
    }

    /// Whether `name` is taken, by a live or an unrestored object.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name) || self.unrestored.iter().any(|s| s.name == name)
    }

    pub(crate) fn insert(&mut self, entry: Entry, persist: bool) -> Result<()> {
        let name = entry.stored.name.clone();
        self.order.retain(|n| n != &name);
        self.order.push(name.clone());
        self.entries.insert(name, entry);
        if persist { self.persist() } else { Ok(()) }
    }

    pub(crate) fn remove(&mut self, name: &str) -> Result<Option<Entry>> {
        let e = self.entries.remove(name);
        self.order.retain(|n| n != name);
        self.persist()?;
        Ok(e)
    }

    /// Writes the catalog atomically: a temp file, fsync, rename.
    fn persist(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut stored: Vec<StoredEntry> = self
            .order
            .iter()
            .filter_map(|n| self.entries.get(n))
            .map(|e| &e.stored)
            .chain(&self.unrestored)
            .cloned()
            .collect();
        if let Some(sealer) = &self.sealer {
            for entry in &mut stored {
                entry.sql = sealer.seal(&entry.sql)?;
            }
        }
        let text = serde_json::to_string_pretty(&stored)
            .map_err(|e| SqlError::new("XX000", e.to_string()))?;
        // Only the server's user reads it: WITH options may hold credentials.
        write_private(path, text.as_bytes())
    }
}

/// Replaces `path` atomically (a temp file, fsync, rename, fsync of the directory) with a
/// file only the server's user may read.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = private_file(&tmp).map_err(io_error)?;
    f.write_all(bytes).map_err(io_error)?;
    f.sync_all().map_err(io_error)?;
    fs::rename(&tmp, path).map_err(io_error)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error)?;
    }
    Ok(())
}

pub(crate) fn io_error(e: std::io::Error) -> SqlError {
    SqlError::new("58030", format!("I/O error: {e}"))
}

/// A new file only its owner may read and write (0600).
pub(crate) fn private_file(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}
