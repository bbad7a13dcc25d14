//! The `tests/slt/*.slt` files, run by the `sqllogictest` crate (the runner DataFusion and
//! RisingWave use), each against a fresh server through tokio-postgres. Values are compared
//! as psql prints them (NULL as `NULL`, an empty string as `(empty)`), as RisingWave's e2e
//! files expect, so files of its suite run unchanged. `WEIR_SLT_COMPLETE=1` rewrites each
//! file's expected results from what weir answers (review the diff before keeping it).
//! `WEIR_SLT_DIR=dir` runs the `.slt` files under another directory instead (another
//! system's suite, say), and reports every file that fails rather than stopping at the first.

use std::path::Path;
use std::time::Duration;

use sqllogictest::{DBOutput, DefaultColumnType, Runner};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::{TestServer, connect};

/// One session of weir, as the runner sees a database.
struct Weir {
    client: Client,
}

/// A statement's error as the runner matches it: the server's message (tokio-postgres
/// prints only "db error"), and its SQLSTATE.
#[derive(Debug)]
struct WeirError(tokio_postgres::Error);

impl std::fmt::Display for WeirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(f, "{}", db.message()),
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for WeirError {}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Weir {
    type Error = WeirError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Self::Error> {
        let mut columns = None;
        let mut rows = Vec::new();
        let mut count = 0;
        for message in self.client.simple_query(sql).await.map_err(WeirError)? {
            match message {
                SimpleQueryMessage::RowDescription(d) => columns = Some(d.len()),
                SimpleQueryMessage::Row(r) => rows.push(
                    (0..r.len())
                        .map(|i| match r.get(i) {
                            None => "NULL".to_string(),
                            Some("") => "(empty)".to_string(),
                            Some(v) => v.to_string(),
                        })
                        .collect(),
                ),
                SimpleQueryMessage::CommandComplete(n) => count = n,
                _ => {}
            }
        }
        Ok(match columns {
            Some(n) => DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            },
            None => DBOutput::StatementComplete(count),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "weir"
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await;
    }

    fn error_sql_state(e: &Self::Error) -> Option<String> {
        e.0.code().map(|c| c.code().to_string())
    }
}

/// Runs (or, with `WEIR_SLT_COMPLETE`, completes) one file against a fresh server.
async fn run_file(path: &Path) -> Result<(), String> {
    let server = TestServer::start().await;
    let addr = server.addr();
    let mut runner = Runner::new(move || async move {
        let (client, _) = connect(addr).await;
        Ok::<_, WeirError>(Weir { client })
    });
    if std::env::var_os("WEIR_SLT_COMPLETE").is_some() {
        runner
            .update_test_file(
                path,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            )
            .await
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    runner
        .run_file_async(path)
        .await
        .map_err(|e| e.display(false).to_string())
}

/// The `.slt` files under `dir` and its subdirectories, sorted.
fn slt_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(slt_files(&path));
        } else if path.extension().is_some_and(|e| e == "slt") {
            files.push(path);
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn slt_files_pass() {
    let dir = match std::env::var_os("WEIR_SLT_DIR") {
        Some(dir) => dir.into(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt"),
    };
    let files = slt_files(&dir);
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    let mut failed = Vec::new();
    for file in &files {
        if let Err(e) = run_file(file).await {
            eprintln!("FAILED {}\n{e}\n", file.display());
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} files failed: {failed:?}",
        failed.len(),
        files.len()
    );
}
