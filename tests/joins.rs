//! Incremental joins checked against the same query run as a batch (DataFusion ad hoc) after
//! random inserts, updates and deletes on every side: inner, left, right and full joins with
//! NULL and duplicate keys, EXISTS / NOT EXISTS / IN, outer, semi and anti joins with
//! conditions beyond the key, a join feeding an aggregate, a three-way
//! join, and a join of views; Nexmark q3, q4 and q8 over the generator.

use crate::harness::{
    Lcg, TestServer, assert_views_equal_queries, create_views_at_parallelism_1_to_3, sorted_rows,
};

/// (view name, query) pairs over the tables `orders`, `customers` and `regions`.
const JOIN_VIEWS: &[(&str, &str)] = &[
    (
        "inner_j",
        "SELECT o.id, o.amount, c.name FROM orders o JOIN customers c ON o.cust = c.id",
    ),
    (
        "left_j",
        "SELECT o.id, o.amount, c.name, c.region FROM orders o LEFT JOIN customers c ON o.cust = c.id",
    ),
    (
        "right_j",
        "SELECT o.id, c.id AS cid, c.name FROM orders o RIGHT JOIN customers c ON o.cust = c.id",
    ),
    (
        "full_j",
        "SELECT o.id, o.cust, c.id AS cid, c.name FROM orders o FULL JOIN customers c ON o.cust = c.id",
    ),
    // A non-equality condition beside the key, and duplicate keys on both sides.
    (
        "by_name",
        "SELECT o.id, c.id AS cid FROM orders o JOIN customers c ON o.note = c.name AND o.amount > 6 * c.id",
    ),
    (
        "revenue",
        "SELECT c.region, count(*) AS n, sum(o.amount) AS total, max(o.amount) AS top \
         FROM orders o JOIN customers c ON o.cust = c.id GROUP BY c.region",
    ),
    (
        "three_way",
        "SELECT o.id, c.name, r.label FROM orders o JOIN customers c ON o.cust = c.id \
         LEFT JOIN regions r ON c.region = r.code",
    ),
    // Semi and anti joins.
    (
        "with_orders",
        "SELECT c.id, c.name FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.cust = c.id)",
    ),
    (
        "without_orders",
        "SELECT c.id FROM customers c WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.cust = c.id)",
    ),
    (
        "northern",
        "SELECT o.id, o.amount FROM orders o WHERE o.cust IN (SELECT id FROM customers WHERE region = 'n')",
    ),
    // Outer, semi and anti joins with a condition beyond the key: a row is padded, kept
    // or dropped by whether it has a match that meets it.
    (
        "left_cond",
        "SELECT o.id, c.id AS cid FROM orders o LEFT JOIN customers c ON o.cust = c.id AND o.amount > 6 * c.id",
    ),
    (
        "full_cond",
        "SELECT o.id, o.amount, c.id AS cid FROM orders o FULL JOIN customers c ON o.cust = c.id AND o.amount > 6 * c.id",
    ),
    (
        "exists_cond",
        "SELECT c.id, c.name FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.cust = c.id AND o.amount > 6 * c.id)",
    ),
    (
        "not_exists_cond",
        "SELECT c.id FROM customers c WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.cust = c.id AND o.amount > 6 * c.id)",
    ),
    // Joins over views.
    (
        "per_customer",
        "SELECT cust, count(*) AS n FROM orders GROUP BY cust",
    ),
    (
        "on_views",
        "SELECT l.name, p.n FROM left_j l JOIN per_customer p ON l.id = p.n",
    ),
];

fn maybe_null(rng: &mut Lcg, n: u64) -> String {
    if rng.next(6) == 0 {
        "NULL".into()
    } else {
        rng.next(n).to_string()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn joins_equal_their_queries_under_random_changes() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE orders (id BIGINT PRIMARY KEY, cust BIGINT, amount BIGINT, note VARCHAR);
             CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR, region VARCHAR);
             CREATE TABLE regions (code VARCHAR PRIMARY KEY, label VARCHAR);
             INSERT INTO regions VALUES ('n', 'North'), ('s', 'South');",
        )
        .await
        .unwrap();
    create_views_at_parallelism_1_to_3(&client, JOIN_VIEWS).await;
    let names = ["ann", "bob", "cy"];
    let regions = ["'n'", "'s'", "'w'", "NULL"];
    let mut rng = Lcg(11);
    let (mut orders, mut customers): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    let mut next_order = 0;
    for step in 0..150 {
        let sql = match rng.next(12) {
            0..=3 => {
                next_order += 1;
                orders.push(next_order);
                format!(
                    "INSERT INTO orders VALUES ({next_order}, {}, {}, '{}')",
                    maybe_null(&mut rng, 8),
                    rng.next(50),
                    names[rng.next(3) as usize]
                )
            }
            4 | 5 => {
                let id = rng.next(8);
                if customers.contains(&id) {
                    format!(
                        "UPDATE customers SET name = '{}', region = {} WHERE id = {id}",
                        names[rng.next(3) as usize],
                        regions[rng.next(4) as usize]
                    )
                } else {
                    customers.push(id);
                    format!(
                        "INSERT INTO customers VALUES ({id}, '{}', {})",
                        names[rng.next(3) as usize],
                        regions[rng.next(4) as usize]
                    )
                }
            }
            6 if !customers.is_empty() => {
                let id = customers.swap_remove(rng.next(customers.len() as u64) as usize);
                format!("DELETE FROM customers WHERE id = {id}")
            }
            7 | 8 if !orders.is_empty() => {
                let id = orders[rng.next(orders.len() as u64) as usize];
                format!(
                    "UPDATE orders SET cust = {}, amount = {} WHERE id = {id}",
                    maybe_null(&mut rng, 8),
                    rng.next(50)
                )
            }
            9 if !orders.is_empty() => {
                let id = orders.swap_remove(rng.next(orders.len() as u64) as usize);
                format!("DELETE FROM orders WHERE id = {id}")
            }
            10 => format!(
                "UPDATE regions SET label = '{}' WHERE code = 'n'",
                ["North", "Nord"][rng.next(2) as usize]
            ),
            _ => "FLUSH".into(),
        };
        client.batch_execute(&sql).await.unwrap();
        if step % 25 == 24 {
            let context = format!("after step {step} ({sql})");
            assert_views_equal_queries(&client, JOIN_VIEWS, &context).await;
        }
    }
    let full = sorted_rows(
        &client,
        "SELECT count(*) FROM full_j WHERE id IS NULL OR cid IS NULL",
    )
    .await;
    assert_ne!(
        full,
        vec!["0"],
        "the random changes left some rows unmatched"
    );
}

/// Nexmark's join queries (RisingWave's texts) over the bounded generator.
/// The flag says whether the join's state has no time bound (two streams: a NOTICE).
pub(crate) const NEXMARK_JOINS: &[(&str, &str, bool)] = &[
    (
        "q3",
        "SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN person AS P \
         ON A.seller = P.id WHERE A.category = 10 AND (P.state = 'or' OR P.state = 'id' OR P.state = 'ca')",
        true,
    ),
    (
        "q4",
        "SELECT Q.category, AVG(Q.final) AS avg FROM (SELECT MAX(B.price) AS final, A.category \
         FROM auction A, bid B WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires \
         GROUP BY A.id, A.category) Q GROUP BY Q.category",
        false,
    ),
    // An interval join: each bid with its auction if placed within 2 s of its creation.
    (
        "early_bids",
        "SELECT B.auction, B.bidder, B.price, A.seller FROM bid B JOIN auction A \
         ON B.auction = A.id AND B.date_time BETWEEN A.date_time AND A.date_time + INTERVAL '2' SECOND",
        false,
    ),
    (
        "q8",
        "SELECT P.id, P.name, P.starttime FROM (SELECT id, name, window_start AS starttime, \
         window_end AS endtime FROM TUMBLE(person, date_time, INTERVAL '10' SECOND) \
         GROUP BY id, name, window_start, window_end) P \
         JOIN (SELECT seller, window_start AS starttime, window_end AS endtime \
         FROM TUMBLE(auction, date_time, INTERVAL '10' SECOND) GROUP BY seller, window_start, window_end) A \
         ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime",
        false,
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn nexmark_joins_over_the_generator_equal_the_batch_result() {
    let server = TestServer::start().await;
    let (client, mut notices) = crate::harness::connect(server.addr()).await;
    let with = |table: &str| {
        format!(
            "WITH (connector = 'nexmark', nexmark.table.type = '{table}', nexmark.event.num = '100000')"
        )
    };
    client
        .batch_execute(&format!(
            "CREATE SOURCE person (id BIGINT, name VARCHAR, email_address VARCHAR, credit_card VARCHAR, \
               city VARCHAR, state VARCHAR, date_time TIMESTAMP, extra VARCHAR, \
               WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) {};
             CREATE SOURCE auction (id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT, \
               reserve BIGINT, date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT, \
               extra VARCHAR, WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) {};
             CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, \
               url VARCHAR, date_time TIMESTAMP, extra VARCHAR, \
               WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) {};",
            with("person"),
            with("auction"),
            with("bid")
        ))
        .await
        .unwrap();
    for (name, query, unbounded) in NEXMARK_JOINS {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .unwrap();
        // Notices precede the command's completion, so they are in by now.
        let notice = notices.try_recv().ok();
        assert_eq!(notice.is_some(), *unbounded, "{name}: {notice:?}");
        if let Some(n) = notice {
            assert!(n.message().contains("grows without limit"), "{n:?}");
        }
    }
    let plan = sorted_rows(
        &client,
        "EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT * FROM bid B JOIN auction A \
         ON B.auction = A.id AND B.date_time BETWEEN A.date_time AND A.date_time + INTERVAL '2' SECOND",
    )
    .await
    .join("\n");
    assert!(plan.contains("expiry"), "{plan}");
    for (name, query, _) in NEXMARK_JOINS {
        crate::harness::await_view_equals(
            &client,
            name,
            query,
            std::time::Duration::from_secs(120),
        )
        .await;
        let rows = sorted_rows(&client, &format!("SELECT count(*) FROM {name}")).await;
        assert_ne!(
            rows,
            vec!["0"],
            "{name} is empty: the check would prove nothing"
        );
    }
    let late = sorted_rows(&client, "SELECT sum(late_rows) FROM weir_catalog.dataflows").await;
    assert_eq!(late, vec!["0"], "in-order generator events are never late");
}

/// The exchange-rate scenario: purchases (a Kafka stream) priced in USD with rates from a
/// compacted topic read as an upsert table. The temporal join prices each purchase at the
/// rate of the moment it arrived; the regular join re-prices every purchase when a rate
/// changes or is deleted.
#[tokio::test(flavor = "multi_thread")]
async fn exchange_rates_temporal_join_keeps_past_prices_and_regular_join_reprices() {
    let broker = crate::harness::Broker::start();
    broker.create_topic("rates", 2);
    broker.create_topic("purchases", 1);
    let rate = |p: i32, currency: &str, rate: f64| -> crate::harness::KafkaMessage {
        let value = format!(r#"{{"currency": "{currency}", "rate": {rate}}}"#);
        (p, Some(currency.as_bytes().to_vec()), value.into_bytes())
    };
    let purchase = |id: i64, amount: i64, currency: &str| -> crate::harness::KafkaMessage {
        let value = format!(r#"{{"id": {id}, "amount": {amount}, "currency": "{currency}"}}"#);
        (0, None, value.into_bytes())
    };
    broker.produce(
        "rates",
        &[
            rate(0, "EUR", 1.08),
            rate(0, "EUR", 1.10),
            rate(1, "GBP", 1.25),
        ],
    );
    broker.produce(
        "purchases",
        &[purchase(1, 100, "EUR"), purchase(2, 1000, "JPY")],
    );
    let server = TestServer::start().await;
    let client = server.client().await;
    let b = broker.bootstrap();
    client
        .batch_execute(&format!(
            "CREATE TABLE rates (currency VARCHAR PRIMARY KEY, rate DOUBLE)
               WITH (connector = 'kafka', topic = 'rates', properties.bootstrap.server = '{b}') FORMAT UPSERT ENCODE JSON;
             CREATE SOURCE purchases (id BIGINT, amount BIGINT, currency VARCHAR)
               WITH (connector = 'kafka', topic = 'purchases', properties.bootstrap.server = '{b}') FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW priced_then AS SELECT p.id, CAST(round(p.amount * r.rate * 100) AS BIGINT) AS cents
               FROM purchases p LEFT JOIN rates FOR SYSTEM_TIME AS OF PROCTIME() r ON p.currency = r.currency;
             CREATE MATERIALIZED VIEW priced_now AS SELECT p.id, CAST(round(p.amount * r.rate * 100) AS BIGINT) AS cents
               FROM purchases p JOIN rates r ON p.currency = r.currency;"
        ))
        .await
        .unwrap();
    let wait = std::time::Duration::from_secs(30);
    let then = "SELECT * FROM priced_then";
    let now = "SELECT * FROM priced_now";
    use crate::harness::await_rows;
    await_rows(&client, then, &["1|11000", "2|NULL"], wait).await;
    await_rows(&client, now, &["1|11000"], wait).await;
    // New rates: the regular join re-prices purchase 1 and now prices 2.
    broker.produce("rates", &[rate(0, "EUR", 1.20), rate(1, "JPY", 0.0067)]);
    await_rows(&client, now, &["1|12000", "2|670"], wait).await;
    // Give the temporal view's own reader of the rates (it polls every 100 ms) ample time
    // to see them too: nothing else orders two readers of different topics.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    broker.produce("purchases", &[purchase(3, 10, "EUR")]);
    await_rows(&client, then, &["1|11000", "2|NULL", "3|1200"], wait).await;
    await_rows(&client, now, &["1|12000", "2|670", "3|1200"], wait).await;
    // Deleting EUR (a tombstone) removes its purchases from the regular join only.
    broker.produce_tombstone("rates", 0, "EUR");
    await_rows(&client, now, &["2|670"], wait).await;
    assert_eq!(
        sorted_rows(&client, then).await,
        vec!["1|11000", "2|NULL", "3|1200"]
    );
    let plan = sorted_rows(
        &client,
        "EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT * FROM purchases p \
         JOIN rates FOR SYSTEM_TIME AS OF PROCTIME() r ON p.currency = r.currency",
    )
    .await
    .join("\n");
    assert!(plan.contains("lookup"), "{plan}");
}
