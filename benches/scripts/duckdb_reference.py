"""DuckDB batch reference for the Nexmark benchmark (benches/nexmark): runs each query
over the events as NDJSON and as Parquet, materializing the result, and prints one JSON
line per (query, format): {"query", "format", "seconds", "rows"}.

usage: python3 duckdb_reference.py SPEC.json  (dir, threads, relations, queries)"""
import json
import sys
import time

import duckdb

spec = json.load(open(sys.argv[1]))
con = duckdb.connect()
con.execute(f"SET threads = {spec['threads']}")
for fmt in ["ndjson", "parquet"]:
    for rel, columns in spec["relations"].items():
        path = f"{spec['dir']}/{rel}-*.{fmt}"
        if fmt == "ndjson":
            cols = "{" + ", ".join(f"'{n}': '{t}'" for n, t in columns) + "}"
            src = f"read_json('{path}', format = 'newline_delimited', columns = {cols})"
        else:
            src = f"read_parquet('{path}')"
        # A view: every query reads (and parses) the files again, as a batch job would.
        con.execute(f"CREATE OR REPLACE VIEW {rel} AS SELECT * FROM {src}")
    for name, sql in spec["queries"].items():
        start = time.perf_counter()
        con.execute(f"CREATE OR REPLACE TEMP TABLE result AS {sql}")
        seconds = time.perf_counter() - start
        rows = con.execute("SELECT count(*) FROM result").fetchone()[0]
        print(json.dumps({"query": name, "format": fmt, "seconds": seconds, "rows": rows}), flush=True)
