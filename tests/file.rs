//! The `file` connector: NDJSON (bad lines skipped and reported), CSV and Parquet, files
//! taken in name order and new files seen by the next query, and views over each format.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::harness::{TestServer, connect};

fn write_parquet(path: &std::path::Path, ids: Vec<i64>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
    ]));
    let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(names)),
        ],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn file_sources_in_json_csv_and_parquet() {
    let server = TestServer::start().await;
    let (client, mut notices) = connect(server.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("a.ndjson"),
        "{\"id\": 1, \"name\": \"a\", \"ts\": \"2024-01-01 00:00:00\"}\n{\"id\": 2}\n{\"id\": oops}\n{\"id\": \"3\", \"extra\": 1}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.ndjson"),
        "{\"id\": 10, \"name\": \"b\"}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("x.csv"), "id,name\n5,e\n6,f\n").unwrap();
    write_parquet(&dir.path().join("p1.parquet"), vec![100, 200]);

    client
        .batch_execute(&format!(
            "CREATE SOURCE ev (id BIGINT, name VARCHAR, ts TIMESTAMP) WITH (connector = 'file', path = '{d}/*.ndjson') FORMAT PLAIN ENCODE JSON;
             CREATE SOURCE cv (id BIGINT, name VARCHAR) WITH (connector = 'file', path = '{d}/*.csv') FORMAT PLAIN ENCODE CSV;
             CREATE SOURCE pq (id BIGINT, name VARCHAR) WITH (connector = 'file', path = '{d}/*.parquet') FORMAT PLAIN ENCODE PARQUET;"
        ))
        .await
        .unwrap();
    let sum = |sql: String| {
        let client = &client;
        async move {
            let r = client.query_one(&sql, &[]).await.unwrap();
            (r.get::<_, i64>(0), r.get::<_, i64>(1))
        }
    };
    assert_eq!(
        sum("SELECT count(*), sum(id) FROM ev".into()).await,
        (4, 16)
    );
    let n = notices.recv().await.unwrap();
    assert!(
        n.message()
            .starts_with("skipped 1 malformed message; first error: ")
            && n.message().contains("a.ndjson:3"),
        "{}",
        n.message()
    );
    assert_eq!(
        sum("SELECT count(*), sum(id) FROM cv".into()).await,
        (2, 11)
    );
    assert_eq!(
        sum("SELECT count(*), sum(id) FROM pq".into()).await,
        (2, 300)
    );
    // A new file is part of the next read.
    write_parquet(&dir.path().join("p2.parquet"), vec![1000]);
    assert_eq!(
        sum("SELECT count(*), sum(id) FROM pq".into()).await,
        (3, 1300)
    );
    // The sources join each other like any tables.
    assert_eq!(
        sum("SELECT count(*), sum(e.id) FROM ev e JOIN cv c ON e.id + 4 = c.id".into()).await,
        (2, 3)
    );
    // Views over each format follow new files; DataFusion's own CSV and Parquet readers
    // (the ad hoc path) are the oracle for weir's split readers.
    let views = [
        (
            "by_name_json",
            "SELECT name, count(*) AS n, sum(id) AS s FROM ev GROUP BY name",
        ),
        (
            "by_name_csv",
            "SELECT name, count(*) AS n, sum(id) AS s FROM cv GROUP BY name",
        ),
        (
            "by_name_parquet",
            "SELECT name, count(*) AS n, sum(id) AS s FROM pq GROUP BY name",
        ),
    ];
    for (name, query) in views {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .unwrap();
    }
    std::fs::write(dir.path().join("y.csv"), "id,name\n7,e\n8,g\n").unwrap();
    write_parquet(&dir.path().join("p3.parquet"), vec![5, 6, 7]);
    std::fs::write(
        dir.path().join("c.ndjson"),
        "{\"id\": 20, \"name\": \"b\"}\n",
    )
    .unwrap();
    for (name, query) in views {
        crate::harness::await_view_equals(&client, name, query, std::time::Duration::from_secs(30))
            .await;
    }
    assert_eq!(
        sum("SELECT sum(n), sum(s) FROM by_name_csv".into()).await,
        (4, 26),
        "both CSV files are in the view"
    );
}

/// Views over file sources are restored after kill -9: each split skips the rows it had
/// emitted by the checkpoint (nothing counted twice), files added while weir was down are
/// read, and the views were not derived again.
#[tokio::test(flavor = "multi_thread")]
async fn views_over_files_resume_after_kill_9() {
    use crate::harness::{WeirProcess, await_view_equals, sorted_rows};
    use std::time::Duration;
    let files = tempfile::tempdir().unwrap();
    let ndjson = |name: &str, ids: std::ops::Range<i64>| {
        let lines: String = ids
            .map(|i| format!("{{\"id\": {i}, \"name\": \"n{}\"}}\n", i % 5))
            .collect();
        std::fs::write(files.path().join(name), lines).unwrap();
    };
    let csv = |name: &str, ids: std::ops::Range<i64>| {
        let lines: String = ids.map(|i| format!("{i},n{}\n", i % 3)).collect();
        std::fs::write(files.path().join(name), format!("id,name\n{lines}")).unwrap();
    };
    for f in 0..6 {
        ndjson(&format!("a{f}.ndjson"), f * 1000..f * 1000 + 700);
        csv(&format!("a{f}.csv"), f * 1000..f * 1000 + 300);
    }
    write_parquet(&files.path().join("a0.parquet"), (0..500).collect());
    write_parquet(&files.path().join("a1.parquet"), (500..900).collect());
    let data = tempfile::tempdir().unwrap();
    let args = ["--checkpoint-interval", "1s"];
    let weir = WeirProcess::start_with(data.path(), &args);
    let (client, _) = connect(weir.addr()).await;
    let d = files.path().display();
    client
        .batch_execute(&format!(
            "CREATE SOURCE ev (id BIGINT, name VARCHAR) WITH (connector = 'file', path = '{d}/*.ndjson') FORMAT PLAIN ENCODE JSON;
             CREATE SOURCE cv (id BIGINT, name VARCHAR) WITH (connector = 'file', path = '{d}/*.csv') FORMAT PLAIN ENCODE CSV;
             CREATE SOURCE pq (id BIGINT, name VARCHAR) WITH (connector = 'file', path = '{d}/*.parquet') FORMAT PLAIN ENCODE PARQUET;"
        ))
        .await
        .unwrap();
    let views = [
        (
            "json_names",
            "SELECT name, count(*) AS n, sum(id) AS s FROM ev GROUP BY name",
        ),
        (
            "csv_names",
            "SELECT name, count(*) AS n, sum(id) AS s FROM cv GROUP BY name",
        ),
        (
            "parquet_total",
            "SELECT count(*) AS n, sum(id) AS s FROM pq",
        ),
    ];
    for (name, query) in views {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .unwrap();
    }
    for (name, query) in views {
        await_view_equals(&client, name, query, Duration::from_secs(60)).await;
    }
    client.batch_execute("CHECKPOINT").await.unwrap();
    weir.kill9();
    // While weir is down, new files (named after the others).
    ndjson("b0.ndjson", 9000..9400);
    csv("b0.csv", 9000..9100);
    write_parquet(&files.path().join("b0.parquet"), (9000..9050).collect());
    let weir = WeirProcess::start_with(data.path(), &args);
    let (client, _) = connect(weir.addr()).await;
    let notes = sorted_rows(
        &client,
        "SELECT name, error FROM weir_catalog.dataflows WHERE error IS NOT NULL",
    )
    .await;
    assert!(notes.is_empty(), "restored, not derived again: {notes:?}");
    for (name, query) in views {
        await_view_equals(&client, name, query, Duration::from_secs(60)).await;
    }
    // Since the restart the readers emitted only the new files' rows.
    let read = sorted_rows(
        &client,
        "SELECT source_name, sum(rows) FROM weir_catalog.source_progress GROUP BY source_name",
    )
    .await;
    assert_eq!(read, vec!["cv|100", "ev|400", "pq|50"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jsonb_column_of_a_source_takes_any_json_value() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("docs.ndjson"),
        "{\"id\": 1, \"doc\": {\"tags\": [\"x\", \"y\"], \"n\": 1.50}}\n\
         {\"id\": 2, \"doc\": \"plain\"}\n\
         {\"id\": 3, \"doc\": null}\n\
         {\"id\": 4, \"doc\": [1e2]}\n",
    )
    .unwrap();
    client
        .batch_execute(&format!(
            "CREATE SOURCE docs (id BIGINT, doc JSONB) WITH (connector = 'file', path = '{}/*.ndjson') \
             FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW tags AS SELECT id, doc -> 'tags' ->> -1 AS last_tag, doc -> 'n' AS n FROM docs",
            dir.path().display()
        ))
        .await
        .unwrap();
    let rows = client
        .query("SELECT id, doc::text FROM docs ORDER BY id", &[])
        .await
        .unwrap();
    let docs: Vec<(i64, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        docs,
        vec![
            (1, Some(r#"{"n": 1.50, "tags": ["x", "y"]}"#.to_string())),
            (2, Some(r#""plain""#.to_string())),
            (3, None),
            (4, Some("[100]".to_string())),
        ]
    );
    client.batch_execute("FLUSH").await.unwrap();
    let row = client
        .query_one("SELECT last_tag, n::text FROM tags WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "y");
    assert_eq!(row.get::<_, String>(1), "1.50");
}
