//! Nexmark over Kafka: the generator's events written to topics as JSON (bids over two
//! partitions), read back by Kafka sources, and every Nexmark view of the generator tests
//! (q0–q8, TopN, SESSION, an interval join, and q9–q22 and q101–q106 of
//! `NEXMARK_BEYOND_Q8`) checked against its query run as a batch over the same topics.

use std::time::Duration;

use tokio_postgres::SimpleQueryMessage;

use crate::harness::{
    Broker, KafkaMessage, NEXMARK_BEYOND_Q8, NEXMARK_RELATIONS as RELATIONS, NEXMARK_SIDE_INPUT,
    TestServer, await_view_equals,
};

/// A text value from the server as a JSON value of the column's type.
fn json(value: Option<&str>, ty: &str) -> serde_json::Value {
    match (value, ty) {
        (None, _) => serde_json::Value::Null,
        (Some(v), "BIGINT") => serde_json::Value::from(v.parse::<i64>().unwrap()),
        (Some(v), "TIMESTAMP") => serde_json::Value::from(v.replacen(' ', "T", 1)),
        (Some(v), _) => serde_json::Value::from(v),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nexmark_views_over_kafka_equal_the_batch_result() {
    let broker = Broker::start();
    let server = TestServer::start().await;
    let client = server.client().await;
    let bootstrap = broker.bootstrap();
    for (relation, columns) in RELATIONS {
        let partitions = if relation == "bid" { 2 } else { 1 };
        broker.create_topic(relation, partitions);
        let typed: Vec<String> = columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
        client
            .batch_execute(&format!(
                "CREATE SOURCE gen_{relation} ({}) WITH (connector = 'nexmark', \
                 nexmark.table.type = '{relation}', nexmark.event.num = '20000')",
                typed.join(", ")
            ))
            .await
            .unwrap();
        let rows = client
            .simple_query(&format!("SELECT * FROM gen_{relation}"))
            .await
            .unwrap();
        let messages: Vec<KafkaMessage> = rows
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .enumerate()
            .map(|(i, row)| {
                let object: serde_json::Map<String, serde_json::Value> = columns
                    .iter()
                    .enumerate()
                    .map(|(c, (name, ty))| (name.to_string(), json(row.get(c), ty)))
                    .collect();
                let payload = serde_json::Value::Object(object).to_string().into_bytes();
                ((i % partitions as usize) as i32, None, payload)
            })
            .collect();
        assert!(!messages.is_empty());
        broker.produce(relation, &messages);
        client
            .batch_execute(&format!(
                "CREATE SOURCE {relation} ({}, WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
                 WITH (connector = 'kafka', topic = '{relation}', properties.bootstrap.server = '{bootstrap}') \
                 FORMAT PLAIN ENCODE JSON",
                typed.join(", ")
            ))
            .await
            .unwrap();
    }
    // q0-q8, and the queries beyond q8 (q13 reads a side-input table).
    client.batch_execute(NEXMARK_SIDE_INPUT).await.unwrap();
    let views: Vec<(&str, &str)> = crate::streaming::NEXMARK_VIEWS
        .iter()
        .copied()
        .chain(crate::joins::NEXMARK_JOINS.iter().map(|(n, q, _)| (*n, *q)))
        .chain(NEXMARK_BEYOND_Q8.iter().map(|(n, _, q)| (*n, *q)))
        .collect();
    for (name, query) in &views {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .unwrap();
    }
    for (name, query) in &views {
        await_view_equals(&client, name, query, Duration::from_secs(120)).await;
    }
}
