//! Nexmark beyond q0–q8 (which the benchmark's main run and the Kafka test run): the
//! queries of `NEXMARK_BEYOND_Q8`, each kept as a view over the generator and compared with
//! the same query run as a batch over the same events.

use std::time::Duration;

use crate::harness::{
    NEXMARK_BEYOND_Q8 as QUERIES, NEXMARK_RELATIONS as RELATIONS, NEXMARK_SIDE_INPUT, TestServer,
    await_view_equals,
};

#[tokio::test(flavor = "multi_thread")]
async fn nexmark_q6_to_q106_views_equal_their_batch_queries() {
    let server = TestServer::start().await;
    let client = server.client().await;
    for (relation, columns) in RELATIONS {
        let typed: Vec<String> = columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
        client
            .batch_execute(&format!(
                "CREATE SOURCE {relation} ({}) WITH (connector = 'nexmark', \
                 nexmark.table.type = '{relation}', nexmark.event.num = '30000')",
                typed.join(", ")
            ))
            .await
            .unwrap();
    }
    client.batch_execute(NEXMARK_SIDE_INPUT).await.unwrap();
    let mut refused = Vec::new();
    for (name, _, query) in QUERIES {
        if let Err(e) = client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
        {
            refused.push(format!(
                "{name}: {}",
                e.as_db_error().map_or("?", |d| d.message())
            ));
        }
    }
    assert!(refused.is_empty(), "views refused: {refused:#?}");
    for (name, _, query) in QUERIES {
        await_view_equals(&client, name, query, Duration::from_secs(120)).await;
    }
}
