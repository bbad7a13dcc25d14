//! SQL shapes that streaming users write, each kept by a view that must equal its query run
//! as a batch after random inserts, updates and deletes (NULLs included): FILTER and
//! ordered aggregates, DISTINCT ON, NOT IN, scalar subqueries, IS NOT DISTINCT FROM joins,
//! correlated EXISTS, window functions over partitions.

use crate::harness::{
    Lcg, TestServer, assert_views_equal_queries, create_views_at_parallelism_1_to_3, sorted_rows,
};

/// (view name, query): each shape at one, two and three instances in turn.
const SHAPE_VIEWS: &[(&str, &str)] = &[
    (
        "filtered_counts",
        "SELECT grp, count(*) FILTER (WHERE v > 20) AS big, count(v) FILTER (WHERE s = 'a') AS a_vals, \
         count(*) AS n FROM items GROUP BY grp",
    ),
    (
        "filtered_sums",
        "SELECT grp, sum(v) FILTER (WHERE s <> 'b') AS not_b, max(v) FILTER (WHERE v < 30) AS low_max, \
         avg(v) FILTER (WHERE s IS NULL) AS null_avg FROM items GROUP BY grp",
    ),
    (
        "ordered_aggs",
        "SELECT grp, string_agg(s, ',' ORDER BY s, id) AS ss, array_agg(v ORDER BY id DESC) AS vs, \
         first_value(v ORDER BY id) AS first_v, last_value(s ORDER BY v, id) AS top_s FROM items GROUP BY grp",
    ),
    (
        "latest_per_group",
        "SELECT DISTINCT ON (grp) grp, id, v, s FROM items ORDER BY grp, id DESC",
    ),
    (
        "not_in",
        "SELECT id, grp FROM items WHERE grp NOT IN (SELECT v FROM items WHERE s = 'a')",
    ),
    (
        "not_in_values",
        "SELECT id, grp FROM items WHERE grp NOT IN (SELECT v FROM items WHERE s = 'a' AND v IS NOT NULL)",
    ),
    (
        "above_average",
        "SELECT id, v FROM items WHERE v > (SELECT avg(v) FROM items)",
    ),
    (
        "from_the_min",
        "SELECT id, grp, v - (SELECT min(v) FROM items WHERE s = 'a') AS above_min FROM items",
    ),
    (
        "share_of_total",
        "SELECT grp, sum(v) AS s, (SELECT count(*) FROM items) AS total FROM items GROUP BY grp",
    ),
    (
        "same_s_or_both_null",
        "SELECT a.id, b.id AS other FROM items a JOIN items b \
         ON a.s IS NOT DISTINCT FROM b.s AND a.grp = b.grp WHERE a.id < b.id",
    ),
    (
        "has_a_bigger_peer",
        "SELECT id FROM items a WHERE EXISTS (SELECT 1 FROM items b WHERE b.grp = a.grp AND b.v > a.v)",
    ),
    (
        "biggest_of_its_group",
        "SELECT id FROM items a WHERE NOT EXISTS (SELECT 1 FROM items b WHERE b.grp = a.grp AND b.v > a.v)",
    ),
    (
        "lagged",
        "SELECT id, grp, v, lag(v) OVER (PARTITION BY grp ORDER BY id) AS prev, \
         lead(v, 2) OVER (PARTITION BY grp ORDER BY id) AS after_next FROM items",
    ),
    (
        "ranked",
        "SELECT id, grp, rank() OVER (PARTITION BY grp ORDER BY v) AS r, \
         dense_rank() OVER (PARTITION BY grp ORDER BY v) AS dr FROM items",
    ),
    (
        "running",
        "SELECT id, grp, sum(v) OVER (PARTITION BY grp ORDER BY id) AS running, \
         count(*) OVER (PARTITION BY grp) AS in_group, row_number() OVER (ORDER BY id) AS n FROM items",
    ),
    (
        "bits",
        "SELECT grp, bit_and(v) AS band, bit_or(v) AS bor, bit_xor(v) AS bxor, \
         bool_and(v > 10) AS all_big, bool_or(s = 'a') AS any_a FROM items GROUP BY grp",
    ),
    (
        "filtered_global",
        "SELECT count(DISTINCT s) FILTER (WHERE v % 2 = 0) AS even_s, min(v) FILTER (WHERE grp = 1) AS g1_min \
         FROM items",
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn sql_shapes_in_views_equal_their_queries_under_random_changes() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE items (id BIGINT PRIMARY KEY, grp BIGINT, v BIGINT, s VARCHAR)",
        )
        .await
        .unwrap();
    create_views_at_parallelism_1_to_3(&client, SHAPE_VIEWS).await;
    let strings = ["'a'", "'b'", "'c'", "NULL"];
    let mut rng = Lcg(7);
    let mut ids: Vec<u64> = Vec::new();
    let mut next_id = 0;
    for step in 0..150 {
        let value = |rng: &mut Lcg| match rng.next(8) {
            0 => "NULL".to_string(),
            _ => rng.next(40).to_string(),
        };
        let sql = match rng.next(10) {
            0..=4 => {
                next_id += 1;
                ids.push(next_id);
                format!(
                    "INSERT INTO items VALUES ({next_id}, {}, {}, {})",
                    rng.next(4),
                    value(&mut rng),
                    strings[rng.next(4) as usize]
                )
            }
            5..=7 if !ids.is_empty() => {
                let id = ids[rng.next(ids.len() as u64) as usize];
                format!(
                    "UPDATE items SET v = {}, s = {} WHERE id = {id}",
                    value(&mut rng),
                    strings[rng.next(4) as usize]
                )
            }
            8 if !ids.is_empty() => {
                let id = ids.swap_remove(rng.next(ids.len() as u64) as usize);
                format!("DELETE FROM items WHERE id = {id}")
            }
            _ => "FLUSH".into(),
        };
        client.batch_execute(&sql).await.unwrap();
        if step % 25 == 24 {
            let context = format!("after step {step} ({sql})");
            assert_views_equal_queries(&client, SHAPE_VIEWS, &context).await;
        }
    }
    let big = sorted_rows(
        &client,
        "SELECT sum(big) > 0 AND sum(big) < sum(n) FROM filtered_counts",
    )
    .await;
    assert_eq!(big, ["t"], "the filter kept every row or none");
    let kept = sorted_rows(&client, "SELECT count(*) > 0 FROM not_in_values").await;
    assert_eq!(kept, ["t"], "NOT IN kept no row");
}
