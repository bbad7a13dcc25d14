//! Roles: who may log in (a SCRAM verifier each, never a password) and what each may read or
//! change. Kept in `roles.json` in the data dir, mode 0600, written atomically like the catalog.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SqlError};
use crate::scram::ScramVerifier;

/// The first superuser, created at start from `WEIR_PASSWORD` or `--password-file`.
pub const BOOTSTRAP_ROLE: &str = "weir";

/// What GRANT gives on a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Privilege {
    Select,
    Insert,
    Update,
    Delete,
}

impl Privilege {
    pub const ALL: [Privilege; 4] = [
        Privilege::Select,
        Privilege::Insert,
        Privilege::Update,
        Privilege::Delete,
    ];

    /// `SELECT`, `insert`, ... (None for a privilege weir does not have).
    pub fn parse(word: &str) -> Option<Self> {
        match word.trim().to_ascii_uppercase().as_str() {
            "SELECT" => Some(Self::Select),
            "INSERT" => Some(Self::Insert),
            "UPDATE" => Some(Self::Update),
            "DELETE" => Some(Self::Delete),
            _ => None,
        }
    }

    pub fn keyword(self) -> &'static str {
        match self {
            Self::Select => "SELECT",
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }
}

/// One role.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub superuser: bool,
    pub login: bool,
    /// `SCRAM-SHA-256$...`; None: the role cannot log in with a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier: Option<String>,
    /// Privileges by relation name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grants: BTreeMap<String, BTreeSet<Privilege>>,
}

impl Role {
    pub fn may(&self, privilege: Privilege, relation: &str) -> bool {
        self.superuser
            || self
                .grants
                .get(relation)
                .is_some_and(|g| g.contains(&privilege))
    }

    pub fn verifier(&self) -> Option<ScramVerifier> {
        self.verifier.as_deref().and_then(ScramVerifier::parse)
    }
}

/// Every role by name, written through to `roles.json`.
#[derive(Debug, Default)]
pub struct Roles {
    path: Option<PathBuf>,
    roles: BTreeMap<String, Role>,
}

impl Roles {
    /// The roles stored in `dir` (none when new or in memory).
    pub fn load(dir: Option<&Path>) -> Result<Self> {
        let path = dir.map(|d| d.join("roles.json"));
        let roles: Vec<Role> = match &path {
            Some(p) if p.exists() => {
                let text = fs::read_to_string(p).map_err(io_error)?;
                serde_json::from_str(&text).map_err(|e| {
                    SqlError::new(
                        "XX001",
                        format!("roles file {} is corrupt: {e}", p.display()),
                    )
                })?
            }
            _ => vec![],
        };
        Ok(Self {
            path,
            roles: roles.into_iter().map(|r| (r.name.clone(), r)).collect(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    pub fn names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    /// Replaces (or adds) a role and writes the file.
    pub fn put(&mut self, role: Role) -> Result<()> {
        self.roles.insert(role.name.clone(), role);
        self.persist()
    }

    pub fn remove(&mut self, name: &str) -> Result<Option<Role>> {
        let removed = self.roles.remove(name);
        self.persist()?;
        Ok(removed)
    }

    /// Drops every grant on `relation` (it was dropped; a new one of that name starts bare).
    pub fn forget_relation(&mut self, relation: &str) -> Result<()> {
        let mut changed = false;
        for role in self.roles.values_mut() {
            changed |= role.grants.remove(relation).is_some();
        }
        if changed { self.persist() } else { Ok(()) }
    }

    /// Writes the file atomically, readable by its owner only: it holds verifiers.
    fn persist(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let roles: Vec<&Role> = self.roles.values().collect();
        let text = serde_json::to_string_pretty(&roles)
            .map_err(|e| SqlError::new("XX000", e.to_string()))?;
        crate::catalog::write_private(path, text.as_bytes())
    }
}

fn io_error(e: std::io::Error) -> SqlError {
    SqlError::new("58030", format!("roles file: {e}"))
}
