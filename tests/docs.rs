//! The examples in docs/sql.md run as written: every `sql` block, statement by statement,
//! in order, against one fresh server.

use tokio_postgres::SimpleQueryMessage;

use crate::harness::TestServer;

/// The statements of the page's `sql` blocks (comment lines dropped), in order.
fn statements(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_sql = false;
    let mut current = String::new();
    for line in page.lines() {
        match line.trim() {
            "```sql" => in_sql = true,
            "```" => in_sql = false,
            l if in_sql && !l.starts_with("--") && !l.is_empty() => {
                current.push_str(line);
                current.push('\n');
                if l.ends_with(';') {
                    out.push(std::mem::take(&mut current));
                }
            }
            _ => {}
        }
    }
    assert!(current.is_empty(), "a statement without ';': {current}");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_reference_examples_run() {
    let server = TestServer::start().await;
    let client = server.client().await;
    // The page's file sink writes under /tmp; here it writes into this test's directory.
    let sink_dir = tempfile::tempdir().unwrap();
    let page = include_str!("../docs/sql.md").replace(
        "/tmp/weir-docs-sink",
        &sink_dir.path().display().to_string(),
    );
    let statements = statements(&page);
    assert!(
        statements.len() >= 40,
        "only {} statements",
        statements.len()
    );
    let mut rows = 0;
    for sql in &statements {
        let messages = client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("docs/sql.md: {sql}failed: {e:?}"));
        rows += messages
            .iter()
            .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
            .count();
    }
    // The page's queries read real data: the generator's bids reached the views.
    assert!(rows > 20, "the examples returned only {rows} rows");
    let busy = client
        .simple_query("SELECT count(*) FROM busy_auctions")
        .await
        .unwrap();
    assert!(
        busy.iter()
            .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) != Some("0"))),
        "busy_auctions is empty"
    );
}
