//! Real clients as subprocesses: psql meta-commands (\dt, \d name, \l), psycopg 3 with
//! server-side binds and SUBSCRIBE cursors, SQLAlchemy with pandas, and node-postgres,
//! against an in-process server.

use std::process::Command;

use crate::harness::{TestServer, sorted_rows};

/// Runs a client program; asserts it succeeded and returns its stdout lines.
fn run_client(program: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs a Python script given the server's host and port as its two arguments.
fn run_python(script: &str, addr: std::net::SocketAddr) -> Vec<String> {
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    run_client("python3", &["-c", script, &host, &port])
}

/// psql connected to `server`, without a psqlrc.
pub(crate) fn psql_command(server: &TestServer) -> Command {
    let addr = server.addr();
    let mut cmd = Command::new("psql");
    cmd.args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-U", "weir", "-d", "weir", "-X"]);
    cmd
}

/// Runs `commands` in psql, stopping at the first error; returns stdout.
fn psql(server: &TestServer, commands: &[&str]) -> String {
    let mut cmd = psql_command(server);
    cmd.args(["-v", "ON_ERROR_STOP=1"]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd.output().expect("psql must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "psql failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_meta_commands_describe_the_catalog() {
    let server = TestServer::start().await;
    let out = psql(
        &server,
        &[
            "CREATE SOURCE bid WITH (connector = 'nexmark', nexmark.table.type = 'Bid', nexmark.event.num = '100')",
            "CREATE TABLE rates (currency VARCHAR PRIMARY KEY, rate DOUBLE)",
            "INSERT INTO rates VALUES ('EUR', 1.08)",
            "\\dt",
            "\\d bid",
            "\\l",
            "SELECT currency, rate FROM rates",
            "\\echo server_version=:SERVER_VERSION_NAME",
        ],
    );
    assert!(out.contains("INSERT 0 1"), "{out}");
    let dt = out.split("List of relations").nth(1).unwrap_or_default();
    assert!(dt.contains(" bid ") && dt.contains(" rates "), "{out}");
    let d = out
        .split("Table \"public.bid\"")
        .nth(1)
        .expect("\\d bid output");
    for (col, ty) in [
        ("auction", "bigint"),
        ("channel", "text"),
        ("date_time", "timestamp without time zone"),
    ] {
        assert!(
            d.lines().any(|l| l.contains(col) && l.contains(ty)),
            "{col} {ty} missing in {d}"
        );
    }
    assert!(out.contains(" weir "), "\\l lists the database: {out}");
    assert!(
        out.contains("server_version=15.0"),
        "ParameterStatus server_version: {out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("EUR") && l.trim_end().ends_with("| 1.08")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_reports_errors_and_continues() {
    let server = TestServer::start().await;
    let out = psql_command(&server)
        .args([
            "-c",
            "SELECT * FROM missing",
            "-c",
            "SELECT 40 + 2 AS answer",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stderr.contains("relation \"missing\" does not exist"),
        "{stderr}"
    );
    assert!(stdout.contains("42"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn psycopg3_server_side_binds() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let script = r#"
import sys, psycopg
conn = psycopg.connect(host=sys.argv[1], port=int(sys.argv[2]), user="weir", dbname="weir", autocommit=True)
cur = conn.cursor()
cur.execute("CREATE TABLE kv (k BIGINT PRIMARY KEY, v TEXT)")
for i in range(20):
    cur.execute("INSERT INTO kv VALUES (%s, %s)", (i, f"v{i}"), prepare=True)
cur.execute("SELECT count(*), sum(k) FROM kv WHERE k >= %s", (5,), prepare=True)
print(cur.fetchone())
with conn.cursor(binary=True) as b:
    b.execute("SELECT v FROM kv WHERE k = %s", (7,))
    print(b.fetchone()[0])
"#;
    let lines = run_python(script, addr);
    assert_eq!(lines, vec!["(15, 180)", "v7"]);
}

/// SUBSCRIBE through psycopg 3, whose queries all go through the extended protocol:
/// DECLARE and FETCH with a timeout inside a transaction, the snapshot first, then an
/// update's retraction and insertion in one commit.
#[tokio::test(flavor = "multi_thread")]
async fn psycopg3_fetches_from_a_subscribe_cursor() {
    let server = TestServer::start().await;
    let addr = server.addr();
    let script = r#"
import sys, psycopg
args = dict(host=sys.argv[1], port=int(sys.argv[2]), user="weir", dbname="weir", autocommit=True)
conn = psycopg.connect(**args)
cur = conn.cursor()
cur.execute("CREATE TABLE t (k BIGINT PRIMARY KEY, v BIGINT)")
cur.execute("INSERT INTO t VALUES (1, 10)")
cur.execute("CREATE MATERIALIZED VIEW s AS SELECT sum(v) AS total FROM t")
conn.autocommit = False
with conn.transaction():
    cur.execute("DECLARE c CURSOR FOR SUBSCRIBE TO s")
    cur.execute("FETCH 10 c WITH (timeout = '1s')")
    print([tuple(r[1:]) for r in cur.fetchall()])
    print([d.name for d in cur.description])
    other = psycopg.connect(**args)
    other.execute("INSERT INTO t VALUES (2, 5)")
    rows = []
    for _ in range(20):
        cur.execute("FETCH 10 c WITH (timeout = '1s')")
        rows += cur.fetchall()
        if len(rows) >= 2:
            break
    print(sorted(tuple(r[1:]) for r in rows))
    print(len({r[0] for r in rows}))
"#;
    let lines = run_python(script, addr);
    assert_eq!(
        lines,
        vec![
            "[(1, 10)]",
            "['weir_ts', 'weir_diff', 'total']",
            "[(-1, 10), (1, 15)]",
            "1"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlalchemy_and_pandas_read_sql() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.batch_execute("CREATE TABLE ty (id INT PRIMARY KEY, n NUMERIC(10,2), d DATE); INSERT INTO ty VALUES (1, 12.34, '2024-05-01'), (2, 0.5, '2024-05-02')").await.unwrap();
    let addr = server.addr();
    let script = r#"
import sys, sqlalchemy as sa, pandas as pd
e = sa.create_engine(f"postgresql+psycopg://weir@{sys.argv[1]}:{sys.argv[2]}/weir")
with e.connect() as c:
    df = pd.read_sql("SELECT id, n, d FROM ty ORDER BY id", c)
    print(list(df["id"]), [float(x) for x in df["n"]], [str(x) for x in df["d"]])
    print(c.execute(sa.text("SELECT count(*) FROM ty WHERE id > :v"), {"v": 1}).scalar())
    i = sa.inspect(c)
    print(i.get_table_names())
    c.execute(sa.text("CREATE MATERIALIZED VIEW per_id AS SELECT id, count(*) AS n FROM ty GROUP BY id"))
    # What Superset's SQLAlchemy inspector asks when it lists a database.
    print(i.get_schema_names(), i.get_materialized_view_names())
    print(" ".join(i.get_view_definition("per_id").split()))
    # ... and when it describes a table or view.
    for t in ["ty", "per_id"]:
        print([(c["name"], str(c["type"]), c["nullable"]) for c in i.get_columns(t)])
    print(i.get_pk_constraint("ty")["constrained_columns"], i.get_indexes("ty"),
          i.get_unique_constraints("ty"), i.get_foreign_keys("ty"))
"#;
    let lines = run_python(script, addr);
    assert_eq!(
        lines,
        vec![
            "[1, 2] [12.34, 0.5] ['2024-05-01', '2024-05-02']",
            "1",
            "['ty']",
            "['public', 'weir_catalog'] ['per_id']",
            "SELECT id, count(*) AS n FROM ty GROUP BY id",
            "[('id', 'INTEGER', False), ('n', 'NUMERIC(10, 2)', True), ('d', 'DATE', True)]",
            "[('id', 'INTEGER', True), ('n', 'BIGINT', False)]",
            // The primary key; it is no other index, unique constraint or foreign key.
            "['id'] [] [] []",
        ]
    );
}

/// pgjdbc's DatabaseMetaData, as Metabase and DBeaver call it when they sync a database:
/// schemas, tables, columns and primary keys (a Java program run by `java`, with Debian's
/// pgjdbc).
#[tokio::test(flavor = "multi_thread")]
async fn pgjdbc_lists_tables_and_columns() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE ty (id INT PRIMARY KEY, n NUMERIC(10,2), d DATE); \
             CREATE MATERIALIZED VIEW per_id AS SELECT id, count(*) AS n FROM ty GROUP BY id",
        )
        .await
        .unwrap();
    let program = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/java/Metadata.java");
    let port = server.addr().port().to_string();
    let lines = run_client(
        "java",
        &["-cp", "/usr/share/java/postgresql.jar", program, &port],
    );
    assert_eq!(
        lines,
        vec![
            "schemas: pg_catalog public weir_catalog",
            "tables: per_id/MATERIALIZED VIEW ty/TABLE",
            "columns of ty: id/int4/4/NO n/numeric/2/YES d/date/91/YES",
            "columns of per_id: id/int4/4/YES n/int8/-5/NO",
            "primary key of ty: id",
            "foreign keys of ty:",
            "indexes of ty: ty_pkey/id/f/1/A",
            "types: numeric/2 int4/4 text/12 timestamptz/93 jsonb/1111",
            "rows: 1/12.34",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn node_postgres_queries() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client.batch_execute("CREATE TABLE kv (k BIGINT PRIMARY KEY, v TEXT); INSERT INTO kv VALUES (7, 'a'), (8, 'b'), (9, 'c')").await.unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/smoke.js");
    let lines = run_client("node", &[script, &server.addr().port().to_string()]);
    assert_eq!(lines, vec![r#"[{"k":"8","v":"b"},{"k":"9","v":"c"}]"#, "3"]);
}

/// `\dm` lists materialized views (relkind `m` in pg_class), `\dv` does not, `\du`, `\df`
/// and `\dn` run.
#[tokio::test(flavor = "multi_thread")]
async fn psql_lists_materialized_views_with_dm() {
    let server = TestServer::start().await;
    let out = psql(
        &server,
        &[
            "CREATE TABLE t (k INT, v INT)",
            "CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) FROM t GROUP BY k",
            "CREATE MATERIALIZED VIEW total AS SELECT sum(v) FROM t",
            "\\echo DM",
            "\\dm",
            "\\echo DV",
            "\\dv",
            "\\echo DCATALOG",
            "\\dv weir_catalog.*",
            "\\echo DU",
            "\\du",
            "\\echo DF",
            "\\df",
            "\\echo DN",
            "\\dn",
        ],
    );
    // \df runs (weir has no functions of its own to list), \dn lists the schemas.
    let df = out.split("DF").nth(1).unwrap_or_default();
    assert!(df.contains("List of functions"), "{out}");
    let dn = out.split("DN").nth(1).unwrap_or_default();
    assert!(
        dn.contains("public") && dn.contains("weir_catalog"),
        "{out}"
    );
    // \du runs (its ARRAY(SELECT ...) subquery is rewritten); no roles exist yet.
    let du = out
        .split("DU")
        .nth(1)
        .and_then(|s| s.split("DF").next())
        .unwrap_or_default();
    // The bootstrap superuser is listed (no roles file: `--auth` is off), and owns the views.
    assert!(
        du.lines()
            .any(|l| l.trim_start().starts_with("weir ") && l.contains("Superuser")),
        "{out}"
    );
    let dm = out
        .split("DM")
        .nth(1)
        .and_then(|s| s.split("DV").next())
        .unwrap_or_default();
    for view in ["per_k", "total"] {
        assert!(
            dm.lines().any(|l| l.contains(view)
                && l.contains("materialized view")
                && l.trim_end().ends_with("| weir")),
            "\\dm lacks {view}: {out}"
        );
    }
    // \dv lists plain views on the search path: none (psql says so on stderr; weir_catalog
    // is not on it, and Postgres hides such a schema); by name it lists weir_catalog's.
    let dv = out
        .split("DV")
        .nth(1)
        .and_then(|s| s.split("DCATALOG").next())
        .unwrap_or_default();
    assert!(
        !dv.contains("source_progress") && !dv.contains("per_k"),
        "{out}"
    );
    let catalog = out
        .split("DCATALOG")
        .nth(1)
        .and_then(|s| s.split("DU").next())
        .unwrap_or_default();
    assert!(catalog.contains(" source_progress "), "{out}");
    assert!(
        !catalog.contains("per_k") && !catalog.contains("total"),
        "{out}"
    );
}

/// Grafana's Postgres data source lists the tables of the schemas on the search path and a
/// table's columns with these queries (their text as Grafana sends it):
/// `string_to_array(...) s` as a one-row table, `generate_series(...) AS i` naming its
/// column `i`, and `information_schema.columns.data_type` in Postgres's names.
#[tokio::test(flavor = "multi_thread")]
async fn grafana_lists_the_tables_on_the_search_path() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE metrics (ts TIMESTAMP, v DOUBLE);
             CREATE MATERIALIZED VIEW per_minute AS SELECT date_trunc('minute', ts) AS t, avg(v) AS v FROM metrics GROUP BY 1",
        )
        .await
        .unwrap();
    let on_search_path = r#"quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )"#;
    // Its column list, whose types tell it which column is the time.
    let columns = sorted_rows(
        &client,
        &format!(
            r#"select quote_ident(column_name) as "column", data_type as "type"
        from information_schema.columns
        where quote_ident(table_name) = 'metrics' and {on_search_path}"#
        ),
    )
    .await;
    assert_eq!(
        columns,
        vec!["ts|timestamp without time zone", "v|double precision"]
    );
    let sql = format!(
        r#"select quote_ident(table_name) as "table" from information_schema.tables
    where quote_ident(table_schema) not in ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
      and {on_search_path}"#
    );
    assert_eq!(
        sorted_rows(&client, &sql).await,
        vec!["metrics", "per_minute"]
    );
}

/// `\d+ name` describes a materialized view with its query and a table with its columns;
/// `\d+` lists sizes (a view's state, none for a table) of relations on the search path;
/// `\l`, `\l+`, `\dn+` and `\di` run; and `pg_get_viewdef` gives the query.
#[tokio::test(flavor = "multi_thread")]
async fn psql_describes_relations_with_d_plus() {
    let server = TestServer::start().await;
    let out = psql(
        &server,
        &[
            "CREATE TABLE t (k INT, v INT)",
            "INSERT INTO t VALUES (1, 10), (2, 20), (1, 30)",
            "CREATE MATERIALIZED VIEW per_k AS SELECT k, sum(v) AS total FROM t GROUP BY k",
            "\\echo DVIEW",
            "\\d+ per_k",
            "\\echo DTABLE",
            "\\d+ t",
            "\\echo DLIST",
            "\\d+",
            "\\echo L",
            "\\l",
            "\\echo LPLUS",
            "\\l+",
            "\\echo DNPLUS",
            "\\dn+",
            "\\echo DI",
            "\\di",
            "\\echo VIEWDEF",
            "SELECT pg_get_viewdef(oid, true) AS def FROM pg_class WHERE relname = 'per_k'",
        ],
    );
    let section = |from: &str, to: &str| {
        out.split(from)
            .nth(1)
            .and_then(|s| s.split(to).next())
            .unwrap_or_default()
            .to_string()
    };
    let view = section("DVIEW", "DTABLE");
    assert!(view.contains("Materialized view \"public.per_k\""), "{out}");
    assert!(view.contains("View definition:"), "{out}");
    assert!(view.contains("GROUP BY k"), "{out}");
    assert!(
        view.lines().any(|l| l.trim_start().starts_with("total")),
        "{out}"
    );
    let table = section("DTABLE", "DLIST");
    assert!(table.contains("Table \"public.t\""), "{out}");
    assert!(
        table.lines().any(|l| l.trim_start().starts_with("v ")),
        "{out}"
    );
    let list = section("DLIST", "L\n");
    let size_of = |name: &str| {
        let row = list
            .lines()
            .find(|l| l.split('|').nth(1).map(str::trim) == Some(name))
            .unwrap_or_else(|| panic!("\\d+ lacks {name}: {out}"));
        row.split('|').nth(6).unwrap_or_default().trim().to_string()
    };
    let view_size = size_of("per_k");
    assert!(
        view_size.ends_with(" bytes") || view_size.ends_with(" kB"),
        "the view's state size: {view_size:?} in {out}"
    );
    assert_eq!(size_of("t"), "", "a table has no state size: {out}");
    assert!(
        !list.contains("dataflows"),
        "weir_catalog is not on the search path: {out}"
    );
    assert!(
        section("L\n", "LPLUS").contains("List of databases"),
        "{out}"
    );
    // \l+ gives the database's size (its views' state), \dn+ the schemas' privileges.
    let databases = section("LPLUS", "DNPLUS");
    assert!(
        databases
            .lines()
            .any(|l| l.contains("weir") && (l.contains(" bytes") || l.contains(" kB"))),
        "{out}"
    );
    let schemas = section("DNPLUS", "DI");
    assert!(
        schemas.contains("Access privileges") && schemas.contains("weir_catalog"),
        "{out}"
    );
    let definition = section("VIEWDEF", "\n(1 row)");
    assert!(
        definition.contains("SELECT k, sum(v) AS total FROM t GROUP BY k"),
        "{out}"
    );
}

/// DBeaver's own navigator queries (its PostgreSQL plugin's, beside pgjdbc's metadata
/// calls): schemas with their descriptions, the relations of a schema, and a table's
/// columns with defaults, descriptions and dependencies.
#[tokio::test(flavor = "multi_thread")]
async fn dbeaver_navigates_schemas_tables_and_columns() {
    let server = TestServer::start().await;
    let client = server.client().await;
    client
        .batch_execute(
            "CREATE TABLE ty (id INT PRIMARY KEY, n NUMERIC(10,2), d DATE); \
             CREATE MATERIALIZED VIEW per_id AS SELECT id, count(*) AS n FROM ty GROUP BY id",
        )
        .await
        .unwrap();
    let schemas = client
        .query(
            "SELECT n.oid,n.*,d.description FROM pg_catalog.pg_namespace n \
             LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid=n.oid AND d.objsubid=0 \
             AND d.classoid='pg_namespace'::regclass ORDER BY nspname",
            &[],
        )
        .await
        .unwrap();
    let public = schemas
        .iter()
        .find(|r| r.get::<_, &str>("nspname") == "public")
        .expect("public is listed");
    let public: u32 = public.get("oid");
    let relations = sorted_rows(
        &client,
        &format!(
            "SELECT c.relname, c.relkind, d.description, \
             pg_catalog.pg_get_expr(c.relpartbound, c.oid) as partition_expr, \
             pg_catalog.pg_get_partkeydef(c.oid) as partition_key \
             FROM pg_catalog.pg_class c LEFT OUTER JOIN pg_catalog.pg_description d \
             ON d.objoid=c.oid AND d.objsubid=0 AND d.classoid='pg_class'::regclass \
             WHERE c.relnamespace={public} AND c.relkind not in ('i','I','c')"
        ),
    )
    .await;
    assert_eq!(
        relations,
        ["per_id|m|NULL|NULL|NULL", "ty|r|NULL|NULL|NULL"]
    );
    let columns = sorted_rows(
        &client,
        "SELECT a.attnum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, \
         pg_catalog.pg_get_expr(ad.adbin, ad.adrelid, true) as def_value, dsc.description, dep.objid \
         FROM pg_catalog.pg_attribute a INNER JOIN pg_catalog.pg_class c ON (a.attrelid=c.oid) \
         LEFT OUTER JOIN pg_catalog.pg_attrdef ad ON (a.attrelid=ad.adrelid AND a.attnum = ad.adnum) \
         LEFT OUTER JOIN pg_catalog.pg_description dsc ON (c.oid=dsc.objoid AND a.attnum = dsc.objsubid) \
         LEFT OUTER JOIN pg_depend dep on dep.refobjid = a.attrelid AND dep.deptype = 'i' \
         and dep.refobjsubid = a.attnum and dep.classid = dep.refclassid \
         WHERE NOT a.attisdropped AND c.relkind not in ('i','I','c') AND c.relname = 'ty' \
         ORDER BY a.attnum",
    )
    .await;
    assert_eq!(
        columns,
        [
            "1|id|integer|t|NULL|NULL|NULL",
            "2|n|numeric(10,2)|f|NULL|NULL|NULL",
            "3|d|date|f|NULL|NULL|NULL",
        ]
    );
}
