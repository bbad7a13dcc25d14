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
