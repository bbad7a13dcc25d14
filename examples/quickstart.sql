-- weir quickstart: run `cargo run --release -- demo`, then `psql -h 127.0.0.1 -p 6875 -U weir weir`
-- and paste these. The demo creates Nexmark sources person, auction and bid (10M events).

SHOW SOURCES;
\d bid

-- Ad hoc analytics over the generator, executed by DataFusion.
SELECT channel, count(*) AS bids, avg(price)::BIGINT AS avg_price
FROM bid GROUP BY channel ORDER BY bids DESC LIMIT 5;

SELECT a.category, count(*) AS bids
FROM (SELECT * FROM bid LIMIT 100000) b JOIN auction a ON b.auction = a.id
GROUP BY a.category ORDER BY bids DESC;

-- Tables with primary keys take INSERT / UPDATE / DELETE; rows are durable on return.
CREATE TABLE IF NOT EXISTS hot_channels (channel VARCHAR PRIMARY KEY, label VARCHAR);
INSERT INTO hot_channels VALUES ('Google', 'search'), ('Apple', 'devices');
UPDATE hot_channels SET label = 'phones' WHERE channel = 'Apple';
SELECT h.label, count(*) FROM (SELECT * FROM bid LIMIT 200000) b
JOIN hot_channels h ON b.channel = h.channel GROUP BY h.label;

-- Materialized views over tables stay equal to their query as rows change.
CREATE MATERIALIZED VIEW IF NOT EXISTS labels AS
  SELECT label, count(*) AS channels FROM hot_channels GROUP BY label;
INSERT INTO hot_channels VALUES ('Baidu', 'search');
SELECT * FROM labels;

-- A Kafka topic of JSON bids, read ad hoc up to its high watermark:
-- CREATE SOURCE kbid (auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP,
--   WATERMARK FOR date_time AS date_time - INTERVAL '5' SECOND)
-- WITH (connector = 'kafka', topic = 'bid', properties.bootstrap.server = '127.0.0.1:9092')
-- FORMAT PLAIN ENCODE JSON;
-- SELECT count(*), sum(price), count(DISTINCT bidder) FROM kbid;

-- Views over the live bid stream (live_bid, paced to the clock; watermark 2 s).
-- The demo's own: bids per 10-second window. Watch it change (Ctrl-C ends):
SELECT * FROM bids_per_10s ORDER BY window_start DESC LIMIT 3;
-- COPY (SUBSCRIBE TO bids_per_10s) TO STDOUT;

-- Bidder sessions (a session ends after 2 s without a bid), closed ones only.
CREATE MATERIALIZED VIEW IF NOT EXISTS bidder_sessions AS
  SELECT bidder, window_start, window_end, count(*) AS bids, max(price) AS top
  FROM SESSION(live_bid, date_time, INTERVAL '2' SECOND)
  GROUP BY bidder, window_start, window_end EMIT ON WINDOW CLOSE;

-- The three highest bids so far, and the best bid of each channel.
CREATE MATERIALIZED VIEW IF NOT EXISTS top_bids AS
  SELECT price, auction, bidder FROM live_bid ORDER BY price DESC, auction, bidder LIMIT 3;
CREATE MATERIALIZED VIEW IF NOT EXISTS best_per_channel AS
  SELECT * FROM (SELECT channel, price, auction,
    row_number() OVER (PARTITION BY channel ORDER BY price DESC, auction) AS rn FROM live_bid)
  WHERE rn <= 1;

-- A stream enriched by a table at processing time: later label changes do not
-- rewrite past rows (a regular JOIN would re-label them all).
CREATE MATERIALIZED VIEW IF NOT EXISTS labelled_bids AS
  SELECT h.label, count(*) AS bids FROM live_bid b
  JOIN hot_channels FOR SYSTEM_TIME AS OF PROCTIME() h ON b.channel = h.channel
  GROUP BY h.label;
SELECT * FROM labelled_bids;
