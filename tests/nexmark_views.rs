//! Nexmark beyond q0–q8 (which the benchmark and the Kafka test run): RisingWave's texts of
//! q9 and q14–q22 and q101–q106, each kept as a view over the generator and compared with
//! the same query run as a batch over the same events.

use std::time::Duration;

use crate::harness::{NEXMARK_RELATIONS as RELATIONS, TestServer, await_view_equals};

/// (name, query), in RisingWave's spelling.
const QUERIES: &[(&str, &str)] = &[
    // The highest bid of each auction while it runs (first by time among equal prices).
    (
        "q9",
        "SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller, \
         category, auction, bidder, price, bid_date_time FROM (SELECT A.*, B.auction, B.bidder, \
         B.price, B.date_time AS bid_date_time, ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY \
         B.price DESC, B.date_time ASC, B.bidder) AS rownum FROM auction A, bid B WHERE A.id = B.auction \
         AND B.date_time BETWEEN A.date_time AND A.expires) WHERE rownum <= 1",
    ),
    (
        "q14",
        "SELECT auction, bidder, 0.908 * price AS price, CASE WHEN extract(hour FROM date_time) >= 8 \
         AND extract(hour FROM date_time) <= 18 THEN 'dayTime' WHEN extract(hour FROM date_time) <= 6 \
         OR extract(hour FROM date_time) >= 20 THEN 'nightTime' ELSE 'otherTime' END AS bidTimeType, \
         date_time, extra FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000",
    ),
    (
        "q15",
        "SELECT to_char(date_time, 'yyyy-mm-dd') AS day, count(*) AS total_bids, \
         count(*) FILTER (WHERE price < 10000) AS rank1_bids, \
         count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids, \
         count(*) FILTER (WHERE price >= 1000000) AS rank3_bids, \
         count(DISTINCT bidder) AS total_bidders, \
         count(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders, \
         count(DISTINCT bidder) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bidders, \
         count(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders, \
         count(DISTINCT auction) AS total_auctions, \
         count(DISTINCT auction) FILTER (WHERE price < 10000) AS rank1_auctions, \
         count(DISTINCT auction) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_auctions, \
         count(DISTINCT auction) FILTER (WHERE price >= 1000000) AS rank3_auctions \
         FROM bid GROUP BY to_char(date_time, 'yyyy-mm-dd')",
    ),
    (
        "q16",
        "SELECT channel, to_char(date_time, 'yyyy-mm-dd') AS day, max(to_char(date_time, 'HH:mm')) AS minute, \
         count(*) AS total_bids, count(*) FILTER (WHERE price < 10000) AS rank1_bids, \
         count(DISTINCT bidder) AS total_bidders, \
         count(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders, \
         count(DISTINCT auction) AS total_auctions \
         FROM bid GROUP BY to_char(date_time, 'yyyy-mm-dd'), channel",
    ),
    (
        "q17",
        "SELECT auction, to_char(date_time, 'YYYY-MM-DD') AS day, count(*) AS total_bids, \
         count(*) FILTER (WHERE price < 10000) AS rank1_bids, \
         count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids, \
         count(*) FILTER (WHERE price >= 1000000) AS rank3_bids, \
         min(price) AS min_price, max(price) AS max_price, avg(price) AS avg_price, \
         sum(price) AS sum_price FROM bid GROUP BY auction, to_char(date_time, 'YYYY-MM-DD')",
    ),
    // The latest bid of each bidder on each auction.
    (
        "q18",
        "SELECT auction, bidder, price, channel, url, date_time, extra FROM (SELECT *, \
         ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC, price DESC, url) \
         AS rank_number FROM bid) WHERE rank_number <= 1",
    ),
    (
        "q19",
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC, \
         date_time, bidder) AS rank_number FROM bid) WHERE rank_number <= 10",
    ),
    (
        "q20",
        "SELECT auction, bidder, price, channel, url, B.date_time AS bid_date_time, B.extra AS bid_extra, \
         item_name, description, initial_bid, reserve, A.date_time AS auction_date_time, expires, seller, \
         category, A.extra AS auction_extra FROM bid AS B INNER JOIN auction AS A ON B.auction = A.id \
         WHERE A.category = 10",
    ),
    (
        "q21",
        "SELECT auction, bidder, price, channel, CASE WHEN lower(channel) = 'apple' THEN '0' \
         WHEN lower(channel) = 'google' THEN '1' WHEN lower(channel) = 'facebook' THEN '2' \
         WHEN lower(channel) = 'baidu' THEN '3' \
         ELSE (regexp_match(url, '(&|^)channel_id=([^&]*)'))[2] END AS channel_id FROM bid \
         WHERE (regexp_match(url, '(&|^)channel_id=([^&]*)'))[2] IS NOT NULL \
         OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')",
    ),
    (
        "q22",
        "SELECT auction, bidder, price, channel, split_part(url, '/', 4) AS dir1, \
         split_part(url, '/', 5) AS dir2, split_part(url, '/', 6) AS dir3 FROM bid",
    ),
    (
        "q101",
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name, b.max_price AS current_highest_bid \
         FROM auction a LEFT OUTER JOIN (SELECT b1.auction, max(b1.price) AS max_price FROM bid b1 \
         GROUP BY b1.auction) b ON a.id = b.auction",
    ),
    (
        "q102",
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name, count(b.auction) AS bid_count \
         FROM auction a JOIN bid b ON a.id = b.auction GROUP BY a.id, a.item_name \
         HAVING count(b.auction) >= (SELECT count(*) / count(DISTINCT auction) FROM bid)",
    ),
    (
        "q103",
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name FROM auction a \
         WHERE a.id IN (SELECT b.auction FROM bid b GROUP BY b.auction HAVING count(*) >= 20)",
    ),
    (
        "q104",
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name FROM auction a \
         WHERE a.id NOT IN (SELECT b.auction FROM bid b GROUP BY b.auction HAVING count(*) < 20)",
    ),
    (
        "q105",
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name, count(b.auction) AS bid_count \
         FROM auction a JOIN bid b ON a.id = b.auction GROUP BY a.id, a.item_name \
         ORDER BY bid_count DESC, auction_id LIMIT 1000",
    ),
    (
        "q106",
        "SELECT min(final) AS min_final FROM (SELECT a.id, max(b.price) AS final FROM auction a, bid b \
         WHERE a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires GROUP BY a.id) q",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn nexmark_q9_to_q106_views_equal_their_batch_queries() {
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
    let mut refused = Vec::new();
    for (name, query) in QUERIES {
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
    for (name, query) in QUERIES {
        await_view_equals(&client, name, query, Duration::from_secs(120)).await;
    }
}
