//! A sqllogictest runner over our own pg wire: every `tests/slt/*.slt` file runs against a
//! fresh server through tokio-postgres. The subset of the format RisingWave's files use:
//! `statement ok`, `statement error <substring>`, `query <types> [rowsort]` with the
//! expected rows after `----` (values separated by spaces, NULL spelled out, an empty
//! string as `(empty)`), `sleep <n>ms|s`, and `#` comments.

use std::path::Path;
use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::TestServer;

/// One record of a .slt file, with the line it starts on.
#[derive(Debug)]
enum Record {
    Statement {
        sql: String,
        error: Option<String>,
    },
    Query {
        sql: String,
        sort: bool,
        expected: Vec<String>,
    },
    Sleep(Duration),
}

fn parse(text: &str) -> Vec<(usize, Record)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut records = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        let start = i + 1;
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        // The SQL runs to the first blank line (or `----` for queries).
        let mut sql = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() && lines[i].trim() != "----" {
            sql.push(lines[i]);
            i += 1;
        }
        let sql = sql.join("\n");
        match words.as_slice() {
            ["statement", "ok"] => records.push((start, Record::Statement { sql, error: None })),
            ["statement", "error", rest @ ..] => records.push((
                start,
                Record::Statement {
                    sql,
                    error: Some(rest.join(" ")),
                },
            )),
            ["query", _types, rest @ ..] => {
                let mut expected = Vec::new();
                if i < lines.len() && lines[i].trim() == "----" {
                    i += 1;
                    while i < lines.len() && !lines[i].trim().is_empty() {
                        expected.push(lines[i].split_whitespace().collect::<Vec<_>>().join(" "));
                        i += 1;
                    }
                }
                let sort = rest.contains(&"rowsort");
                records.push((
                    start,
                    Record::Query {
                        sql,
                        sort,
                        expected,
                    },
                ));
            }
            ["sleep", d] => {
                let ms = match d.strip_suffix("ms") {
                    Some(ms) => ms.parse().unwrap(),
                    None => d.trim_end_matches('s').parse::<u64>().unwrap() * 1000,
                };
                records.push((start, Record::Sleep(Duration::from_millis(ms))));
            }
            other => panic!("line {start}: unknown record {other:?}"),
        }
    }
    records
}

/// A query's rows as slt lines.
async fn rows(client: &Client, sql: &str) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(client
        .simple_query(sql)
        .await?
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| match r.get(i) {
                        None => "NULL".to_string(),
                        Some("") => "(empty)".to_string(),
                        Some(v) => v.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        })
        .collect())
}

async fn run_file(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let server = TestServer::start().await;
    let client = server.client().await;
    let name = path.file_name().unwrap().to_string_lossy();
    for (line, record) in parse(&text) {
        match record {
            Record::Statement { sql, error: None } => {
                if let Err(e) = client.batch_execute(&sql).await {
                    panic!("{name}:{line}: {sql}\nfailed: {e:?}");
                }
            }
            Record::Statement {
                sql,
                error: Some(want),
            } => match client.batch_execute(&sql).await {
                Ok(()) => panic!("{name}:{line}: {sql}\nsucceeded, expected an error"),
                Err(e) => {
                    let message = e
                        .as_db_error()
                        .map(|d| d.message().to_string())
                        .unwrap_or_default();
                    assert!(
                        message.contains(&want),
                        "{name}:{line}: error {message:?} lacks {want:?}"
                    );
                }
            },
            Record::Query {
                sql,
                sort,
                mut expected,
            } => {
                let mut got = rows(&client, &sql)
                    .await
                    .unwrap_or_else(|e| panic!("{name}:{line}: {sql}\nfailed: {e:?}"));
                if sort {
                    got.sort();
                    expected.sort();
                }
                assert_eq!(got, expected, "{name}:{line}: {sql}");
            }
            Record::Sleep(d) => tokio::time::sleep(d).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slt_files_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    for file in files {
        run_file(&file).await;
    }
}
