#!/usr/bin/env bash
# Interim measurement until benches/nexmark.rs (issue 5): events/s and peak RSS of one
# Nexmark view at a time over the built-in generator, each in a fresh `weir serve`.
#   usage: benches/scripts/views.sh path/to/release/weir EVENTS QUERY...
#   queries: q0 q1 q3 q4 q5 q7 q8 interval temporal interval_count q8_count temporal_count
# Time runs from CREATE MATERIALIZED VIEW until every split delivered its rows and FLUSH
# returned; EVENTS counts all Nexmark events (a source holds its table's share).
# With PROFILE=dir, `perf record` samples the server while the view runs, and the top
# entries by own time go to dir/QUERY.txt (perf.data stays in dir/QUERY.data for
# `perf report -i`). Build the binary with `cargo build --release --bin weir`.
BIN=$1; N=$2; shift 2; PORT=16992
declare -A Q
Q[q0]="SELECT auction, bidder, price, date_time FROM bid"
Q[q1]="SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid"
Q[q5]="SELECT auction, window_start, count(*) AS num FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY auction, window_start"
Q[q7]="SELECT window_start, max(price) AS maxprice FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_start"
Q[q3]="SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN person AS P ON A.seller = P.id WHERE A.category = 10 AND (P.state = 'or' OR P.state = 'id' OR P.state = 'ca')"
Q[q4]="SELECT Q.category, AVG(Q.final) AS avg FROM (SELECT MAX(B.price) AS final, A.category FROM auction A, bid B WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires GROUP BY A.id, A.category) Q GROUP BY Q.category"
Q[q8]="SELECT P.id, P.name, P.starttime FROM (SELECT id, name, window_start AS starttime, window_end AS endtime FROM TUMBLE(person, date_time, INTERVAL '10' SECOND) GROUP BY id, name, window_start, window_end) P JOIN (SELECT seller, window_start AS starttime, window_end AS endtime FROM TUMBLE(auction, date_time, INTERVAL '10' SECOND) GROUP BY seller, window_start, window_end) A ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime"
Q[interval]="SELECT B.auction, B.price, A.seller FROM bid B JOIN auction A ON B.auction = A.id AND B.date_time BETWEEN A.date_time AND A.date_time + INTERVAL '2' SECOND"
Q[temporal]="SELECT B.auction, B.price, C.label FROM bid B JOIN channels FOR SYSTEM_TIME AS OF PROCTIME() C ON B.channel = C.channel"
Q[interval_count]="SELECT count(*) AS n, sum(B.price) AS s FROM bid B JOIN auction A ON B.auction = A.id AND B.date_time BETWEEN A.date_time AND A.date_time + INTERVAL '2' SECOND"
Q[q8_count]="SELECT count(*) AS n FROM (${Q[q8]}) x"
Q[temporal_count]="SELECT C.label, count(*) AS n FROM bid B JOIN channels FOR SYSTEM_TIME AS OF PROCTIME() C ON B.channel = C.channel GROUP BY C.label"
declare -A PARTS=([q0]=46 [q1]=46 [q5]=46 [q7]=46 [q3]=4 [q4]=49 [q8]=4 [interval]=49 [temporal]=46 [interval_count]=49 [q8_count]=4 [temporal_count]=46)
for q in "$@"; do
  expect=$(( N / 50 * ${PARTS[$q]} ))
  DIR=$(mktemp -d); $BIN serve --data-dir $DIR --pg-listen 127.0.0.1:$PORT --metrics-listen 127.0.0.1:16993 > $DIR/log 2>&1 &
  SP=$!; sleep 1.5
  P="psql -At -h 127.0.0.1 -p $PORT -U weir weir"
  W="WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND"
  G="connector='nexmark', nexmark.event.num='$N'"
  $P -c "CREATE SOURCE person (id BIGINT, name VARCHAR, email_address VARCHAR, credit_card VARCHAR, city VARCHAR, state VARCHAR, date_time TIMESTAMP, extra VARCHAR, $W) WITH ($G, nexmark.table.type='person')" >/dev/null
  $P -c "CREATE SOURCE auction (id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT, reserve BIGINT, date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT, extra VARCHAR, $W) WITH ($G, nexmark.table.type='auction')" >/dev/null
  $P -c "CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, date_time TIMESTAMP, extra VARCHAR, $W) WITH ($G, nexmark.table.type='bid')" >/dev/null
  $P -c "CREATE TABLE channels (channel VARCHAR PRIMARY KEY, label VARCHAR); INSERT INTO channels VALUES ('Google', 'search'), ('Facebook', 'social'), ('Baidu', 'search'), ('Apple', 'store')" >/dev/null
  if [ -n "$PROFILE" ]; then
    mkdir -p "$PROFILE"
    perf record -F 999 -g -p $SP -o "$PROFILE/$q.data" 2>/dev/null & PERF=$!
    sleep 0.5
  fi
  start=$(date +%s.%N)
  $P -c "CREATE MATERIALIZED VIEW v AS ${Q[$q]}" >/dev/null
  # Every source's generated rows delivered (person + auction + bid = all events).
  while [ "$($P -c "SELECT coalesce(sum(rows),0) FROM weir_catalog.source_progress")" -lt "$expect" ]; do sleep 0.05; done
  $P -c "FLUSH" >/dev/null
  end=$(date +%s.%N)
  if [ -n "$PROFILE" ]; then
    kill -INT $PERF; wait $PERF
    perf report -i "$PROFILE/$q.data" --no-children --sort symbol -g none --stdio --percent-limit 0.7 2>/dev/null \
      | grep -v '^#' | grep -v '^$' | cut -c1-160 > "$PROFILE/$q.txt"
  fi
  rss=$(grep VmHWM /proc/$SP/status | awk '{print $2}')
  rows=$($P -c "SELECT rows, state_bytes, late_rows FROM weir_catalog.dataflows WHERE name = 'v'")
  echo "$q events=$N secs=$(echo "$end - $start" | bc) events_per_s=$(echo "$N / ($end - $start)" | bc) peak_rss_kb=$rss rows|state_bytes|late_rows=$rows"
  kill $SP; wait $SP 2>/dev/null; rm -rf $DIR
done
