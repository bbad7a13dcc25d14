//! The Nexmark queries (RisingWave's texts) and the relations they read, plus their
//! translation for the batch references (DuckDB, DataFusion), which have no TUMBLE or HOP.

/// A benchmark query: its name, weir's text, and the share of every 50 events its
/// sources hold (person 1, auction 3, bid 46).
#[derive(Clone, Copy)]
pub struct Query {
    pub name: &'static str,
    pub sql: &'static str,
    pub share: u64,
}

impl Query {
    /// The relations (and so the topics) the query reads.
    pub fn reads(&self) -> &'static [&'static str] {
        match self.share {
            4 => &["person", "auction"],
            49 => &["auction", "bid"],
            _ => &["bid"],
        }
    }
}

pub const QUERIES: &[Query] = &[
    Query {
        name: "q0",
        sql: "SELECT auction, bidder, price, date_time FROM bid",
        share: 46,
    },
    Query {
        name: "q1",
        sql: "SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid",
        share: 46,
    },
    Query {
        name: "q2",
        sql: "SELECT auction, price FROM bid WHERE auction = 1007 OR auction = 1020 OR auction = 2001 OR auction = 2019 OR auction = 2087",
        share: 46,
    },
    Query {
        name: "q3",
        sql: "SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN person AS P ON A.seller = P.id \
              WHERE A.category = 10 AND (P.state = 'or' OR P.state = 'id' OR P.state = 'ca')",
        share: 4,
    },
    Query {
        name: "q4",
        sql: "SELECT Q.category, AVG(Q.final) AS avg FROM (SELECT MAX(B.price) AS final, A.category \
              FROM auction A, bid B WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires \
              GROUP BY A.id, A.category) Q GROUP BY Q.category",
        share: 49,
    },
    Query {
        name: "q5",
        sql: "SELECT AuctionBids.auction, AuctionBids.num FROM (SELECT auction, count(*) AS num, window_start AS starttime \
              FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY window_start, auction) AS AuctionBids \
              JOIN (SELECT max(CountBids.num) AS maxn, CountBids.starttime_c FROM (SELECT count(*) AS num, window_start AS starttime_c \
              FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY auction, window_start) AS CountBids \
              GROUP BY CountBids.starttime_c) AS MaxBids \
              ON AuctionBids.starttime = MaxBids.starttime_c AND AuctionBids.num >= MaxBids.maxn",
        share: 46,
    },
    Query {
        name: "q7",
        sql: "SELECT B.auction, B.price, B.bidder, B.date_time FROM bid B JOIN (SELECT MAX(price) AS maxprice, \
              window_end AS date_time FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_end) B1 \
              ON B.price = B1.maxprice WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time",
        share: 46,
    },
    Query {
        name: "q8",
        sql: "SELECT P.id, P.name, P.starttime FROM (SELECT id, name, window_start AS starttime, window_end AS endtime \
              FROM TUMBLE(person, date_time, INTERVAL '10' SECOND) GROUP BY id, name, window_start, window_end) P \
              JOIN (SELECT seller, window_start AS starttime, window_end AS endtime FROM TUMBLE(auction, date_time, INTERVAL '10' SECOND) \
              GROUP BY seller, window_start, window_end) A \
              ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime",
        share: 4,
    },
];

pub(crate) use crate::harness::NEXMARK_RELATIONS as RELATIONS;

/// The queries beyond q8 (`NEXMARK_BEYOND_Q8`, which the tests check), measured over the
/// generator only (`--beyond-q8`): the batch references cannot read their windows.
pub fn beyond_q8() -> Vec<Query> {
    crate::harness::NEXMARK_BEYOND_Q8
        .iter()
        .map(|(name, reads, sql)| Query {
            name,
            sql,
            share: reads
                .iter()
                .map(|r| match *r {
                    "person" => 1,
                    "auction" => 3,
                    "bid" => 46,
                    _ => 0,
                })
                .sum(),
        })
        .collect()
}

/// The query named `name`, of q0–q8 or beyond.
pub fn find(name: &str) -> Option<Query> {
    QUERIES
        .iter()
        .copied()
        .chain(beyond_q8())
        .find(|q| q.name == name)
}

/// What a query needs besides the Nexmark sources: q13's side input table.
pub fn setup(query: &Query) -> Option<&'static str> {
    crate::harness::NEXMARK_BEYOND_Q8
        .iter()
        .find(|(name, reads, _)| *name == query.name && reads.contains(&"side_input"))
        .map(|_| crate::harness::NEXMARK_SIDE_INPUT)
}

/// `name TYPE, ...` for a relation's columns.
pub fn column_list(columns: &[(&str, &str)]) -> String {
    columns
        .iter()
        .map(|(n, t)| format!("{n} {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A batch engine's way to cut time into buckets.
#[derive(Clone, Copy)]
pub enum Dialect {
    DuckDb,
    DataFusion,
}

impl Dialect {
    /// The start of the `secs`-second bucket `column` falls in.
    fn bucket(self, secs: u32, column: &str) -> String {
        match self {
            Self::DuckDb => format!("time_bucket(INTERVAL '{secs} seconds', {column})"),
            Self::DataFusion => format!("date_bin(INTERVAL '{secs} seconds', {column})"),
        }
    }

    /// `sql` with its TUMBLE and HOP table functions spelled as derived tables: a tumble adds
    /// the bucket's bounds to each row, a hop repeats each row for the windows holding it.
    pub fn translate(self, sql: &str) -> String {
        let mut out = sql.to_string();
        for rel in ["person", "auction", "bid"] {
            let start = self.bucket(10, "date_time");
            out = out.replace(
                &format!("TUMBLE({rel}, date_time, INTERVAL '10' SECOND)"),
                &format!(
                    "(SELECT *, {start} AS window_start, {start} + INTERVAL '10 seconds' AS window_end FROM {rel})"
                ),
            );
        }
        let start = format!("{} - h.back", self.bucket(2, "date_time"));
        out.replace(
            "HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)",
            &format!(
                "(SELECT bid.*, {start} AS window_start, {start} + INTERVAL '10 seconds' AS window_end \
                 FROM bid CROSS JOIN (VALUES (INTERVAL '0 seconds'), (INTERVAL '2 seconds'), \
                 (INTERVAL '4 seconds'), (INTERVAL '6 seconds'), (INTERVAL '8 seconds')) AS h(back))"
            ),
        )
    }
}
