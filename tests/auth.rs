//! Logins and privileges through real clients against the `weir` binary: SCRAM-SHA-256
//! (tokio-postgres, psql, psycopg), refusals, roles and GRANT/REVOKE, TLS with verify-full.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;

use tokio_postgres::{Client, NoTls};

use crate::harness::{WeirProcess, http_get, sqlstate};

const PASSWORD: &str = "correct horse";

fn password_server(dir: &Path, extra: &[&str]) -> WeirProcess {
    let mut args = vec!["--auth", "password"];
    args.extend_from_slice(extra);
    WeirProcess::start_with_env(dir, &args, &[("WEIR_PASSWORD", PASSWORD)])
}

async fn login(
    addr: SocketAddr,
    user: &str,
    password: &str,
) -> Result<Client, tokio_postgres::Error> {
    let conn = format!(
        "host={} port={} user={user} password='{password}' dbname=weir",
        addr.ip(),
        addr.port()
    );
    let (client, connection) = tokio_postgres::connect(&conn, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn login_error(addr: SocketAddr, user: &str, password: &str) -> String {
    match login(addr, user, password).await {
        Ok(_) => panic!("{user} logged in with password {password:?}"),
        Err(e) => sqlstate(&e),
    }
}

/// The authentication request a raw startup packet gets: its code and, for SASL, the
/// mechanisms offered.
fn offered_mechanisms(addr: SocketAddr) -> (i32, Vec<String>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut body = Vec::new();
    body.extend_from_slice(&196_608i32.to_be_bytes()); // protocol 3.0
    for s in ["user", "weir", "database", "weir", ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    stream.write_all(&packet).unwrap();
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(head[0], b'R', "an authentication request comes first");
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut rest = vec![0u8; len - 4];
    stream.read_exact(&mut rest).unwrap();
    let code = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let mechanisms = rest[4..]
        .split(|b| *b == 0)
        .filter(|m| !m.is_empty())
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    (code, mechanisms)
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_logins_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let server = password_server(dir.path(), &[]);
    let addr = server.addr();

    // Only SASL (code 10) with SCRAM-SHA-256 is offered: no cleartext (3), no MD5 (5).
    assert_eq!(
        offered_mechanisms(addr),
        (10, vec!["SCRAM-SHA-256".to_string()])
    );

    let weir = login(addr, "weir", PASSWORD).await.unwrap();
    let one: i64 = weir.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    assert_eq!(login_error(addr, "weir", "wrong").await, "28P01");
    assert_eq!(login_error(addr, "nobody", PASSWORD).await, "28000");

    weir.batch_execute("CREATE USER dash WITH PASSWORD 'dash-pw-1'")
        .await
        .unwrap();
    let e = weir
        .batch_execute("CREATE USER dash WITH PASSWORD 'again'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42710");
    login(addr, "dash", "dash-pw-1").await.unwrap();
    weir.batch_execute("ALTER USER dash WITH PASSWORD 'dash-pw-2'")
        .await
        .unwrap();
    assert_eq!(login_error(addr, "dash", "dash-pw-1").await, "28P01");
    let dash = login(addr, "dash", "dash-pw-2").await.unwrap();
    // A role may change its own password, and no other.
    dash.batch_execute("ALTER USER dash PASSWORD 'dash-pw-3'")
        .await
        .unwrap();
    let e = dash
        .batch_execute("ALTER USER weir PASSWORD 'mine now'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    login(addr, "dash", "dash-pw-3").await.unwrap();

    // psql (libpq) and psycopg log in through the same exchange.
    let psql = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args([
            "-U",
            "dash",
            "-d",
            "weir",
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT 40 + 2",
        ])
        .env("PGPASSWORD", "dash-pw-3")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&psql.stdout).trim(),
        "42",
        "{psql:?}"
    );
    let refused = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-U", "dash", "-d", "weir", "-X", "-c", "SELECT 1"])
        .env("PGPASSWORD", "dash-pw-2")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("password authentication failed for user \"dash\""),
        "{refused:?}"
    );
    let script = r#"
import sys, psycopg
conn = psycopg.connect(host=sys.argv[1], port=int(sys.argv[2]), user="dash", password="dash-pw-3", dbname="weir")
print(conn.execute("SELECT 6 * 7").fetchone()[0])
try:
    psycopg.connect(host=sys.argv[1], port=int(sys.argv[2]), user="dash", password="nope", dbname="weir")
except psycopg.OperationalError as e:
    print("refused", "password authentication failed" in str(e))
"#;
    let out = Command::new("python3")
        .args(["-c", script, "127.0.0.1", &addr.port().to_string()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        vec!["42", "refused True"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Only verifiers are stored, in a file only the server's user may read.
    let roles = std::fs::read_to_string(dir.path().join("roles.json")).unwrap();
    assert!(roles.contains("SCRAM-SHA-256$4096:"), "{roles}");
    for secret in [PASSWORD, "dash-pw-1", "dash-pw-2", "dash-pw-3"] {
        assert!(!roles.contains(secret), "{secret} stored in roles.json");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("roles.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    weir.batch_execute("DROP USER dash").await.unwrap();
    assert_eq!(login_error(addr, "dash", "dash-pw-3").await, "28000");
    let e = weir.batch_execute("DROP USER dash").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42704");
    weir.batch_execute("DROP USER IF EXISTS dash")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn grants_decide_what_a_role_reads_and_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = password_server(dir.path(), &[]);
    let addr = server.addr();
    let weir = login(addr, "weir", PASSWORD).await.unwrap();
    weir.batch_execute(
        "CREATE TABLE t (id INT PRIMARY KEY, v INT);
         INSERT INTO t VALUES (1, 10), (2, 20);
         CREATE MATERIALIZED VIEW total AS SELECT count(*) AS n, sum(v) AS s FROM t;
         CREATE USER dash WITH PASSWORD 'dash-pw';
         FLUSH",
    )
    .await
    .unwrap();
    let dash = login(addr, "dash", "dash-pw").await.unwrap();
    let denied = |sql: &'static str| {
        let dash = &dash;
        async move {
            match dash.simple_query(sql).await {
                Ok(_) => panic!("dash may run {sql}"),
                Err(e) => assert_eq!(sqlstate(&e), "42501", "{sql}: {e:?}"),
            }
        }
    };
    let privilege = |sql: &'static str| {
        let dash = &dash;
        async move { dash.query_one(sql, &[]).await.unwrap().get::<_, bool>(0) }
    };

    let who = dash
        .query_one("SELECT current_user, session_user, user", &[])
        .await
        .unwrap();
    let who: (String, String, String) = (who.get(0), who.get(1), who.get(2));
    assert_eq!(who, ("dash".into(), "dash".into(), "dash".into()));
    // A new login holds no privileges; the catalogs stay readable.
    denied("SELECT * FROM total").await;
    denied("SELECT * FROM t").await;
    denied("INSERT INTO t VALUES (3, 30)").await;
    denied("COPY (SUBSCRIBE TO total) TO STDOUT").await;
    denied("CREATE TABLE mine (x INT)").await;
    denied("DROP TABLE t").await;
    denied("CREATE USER other").await;
    denied("GRANT SELECT ON t TO dash").await;
    let relations = dash
        .query(
            "SELECT relname FROM pg_catalog.pg_class WHERE relname = 'total'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(relations.len(), 1);
    assert!(!privilege("SELECT has_table_privilege('total', 'SELECT')").await);
    // information_schema lists only what the role holds a privilege on, as in Postgres.
    let listed = |sql: &'static str| {
        let dash = &dash;
        async move {
            let rows = dash.query(sql, &[]).await.unwrap();
            rows.iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    let public_tables =
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1";
    let public_columns = "SELECT DISTINCT table_name FROM information_schema.columns \
        WHERE table_schema = 'public' ORDER BY 1";
    assert!(listed(public_tables).await.is_empty());
    assert!(listed(public_columns).await.is_empty());
    assert!(
        !listed(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'pg_catalog'"
        )
        .await
        .is_empty(),
        "the system catalogs stay listed"
    );

    weir.batch_execute("GRANT SELECT ON total TO dash")
        .await
        .unwrap();
    let row = dash.query_one("SELECT n, s FROM total", &[]).await.unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (2, 30));
    assert!(privilege("SELECT has_table_privilege('total', 'SELECT')").await);
    assert!(privilege("SELECT has_table_privilege('public.total', 'select')").await);
    assert_eq!(listed(public_tables).await, ["total"]);
    assert_eq!(listed(public_columns).await, ["total"]);
    let all = weir
        .query(public_tables, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>();
    assert_eq!(all, ["t", "total"], "a superuser sees every relation");
    assert!(!privilege("SELECT has_table_privilege('total', 'INSERT')").await);
    assert!(!privilege("SELECT has_table_privilege('t', 'SELECT')").await);
    assert!(privilege("SELECT has_table_privilege('weir', 't', 'SELECT')").await);
    // Reading the view does not open what it reads, nor a subquery's relation.
    denied("SELECT * FROM total, t").await;
    denied("SELECT n FROM total WHERE n > (SELECT count(*) FROM t)").await;
    denied("COPY (SUBSCRIBE TO (SELECT * FROM t)) TO STDOUT").await;
    // A subscription to a granted view runs.
    dash.batch_execute("BEGIN; DECLARE c CURSOR FOR SUBSCRIBE TO total")
        .await
        .unwrap();
    let rows = dash
        .simple_query("FETCH ALL c WITH (timeout = '5s')")
        .await
        .unwrap();
    assert!(
        rows.iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
    );
    dash.batch_execute("COMMIT").await.unwrap();

    weir.batch_execute("GRANT INSERT ON TABLE t TO dash")
        .await
        .unwrap();
    dash.batch_execute("INSERT INTO t VALUES (3, 30)")
        .await
        .unwrap();
    denied("DELETE FROM t WHERE id = 3").await;
    weir.batch_execute("FLUSH").await.unwrap();
    let n: i64 = dash
        .query_one("SELECT n FROM total", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);

    // pg_roles answers from the roles.
    let roles: Vec<(String, bool, bool)> = weir
        .query(
            "SELECT rolname, rolsuper, rolcanlogin FROM pg_roles ORDER BY rolname",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("dash".to_string(), false, true),
            ("weir".to_string(), true, true)
        ]
    );

    // Grants survive a restart; REVOKE takes them back.
    drop((dash, weir));
    let (status, _) = server.terminate();
    assert!(status.success());
    let server = password_server(dir.path(), &[]);
    let addr = server.addr();
    let weir = login(addr, "weir", PASSWORD).await.unwrap();
    let dash = login(addr, "dash", "dash-pw").await.unwrap();
    let n: i64 = dash
        .query_one("SELECT n FROM total", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    weir.batch_execute("REVOKE SELECT ON total FROM dash")
        .await
        .unwrap();
    let e = dash.simple_query("SELECT n FROM total").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    // A superuser made by SQL may change the catalog.
    weir.batch_execute("CREATE USER ops WITH SUPERUSER PASSWORD 'ops-pw'")
        .await
        .unwrap();
    let ops = login(addr, "ops", "ops-pw").await.unwrap();
    ops.batch_execute("CREATE TABLE mine (x INT)")
        .await
        .unwrap();
}

/// A test CA and a server certificate it signed for 127.0.0.1 and localhost, by openssl.
fn make_certificates(dir: &Path, ca_name: &str) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ca_subject = format!("/CN={ca_name}");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        &ca_subject,
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_verify_full_and_tls_required() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path(), "weir test CA");
    let other_ca = tempfile::tempdir().unwrap();
    make_certificates(other_ca.path(), "someone else");
    let dir = tempfile::tempdir().unwrap();
    let cert = certs.path().join("server.pem");
    let key = certs.path().join("server.key");
    let server = password_server(
        dir.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-required",
        ],
    );
    let port = server.addr().port().to_string();
    let psql = |sslmode: &str, root: &Path, host: &str| {
        let conninfo = format!(
            "host={host} port={port} user=weir dbname=weir sslmode={sslmode} sslrootcert={}",
            root.join("ca.pem").display()
        );
        Command::new("psql")
            .args([
                conninfo.as_str(),
                "-X",
                "-A",
                "-t",
                "-c",
                "SELECT 40 + 2",
                "-c",
                "\\conninfo",
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .unwrap()
    };
    for host in ["localhost", "127.0.0.1"] {
        let out = psql("verify-full", certs.path(), host);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout.starts_with("42\n"), "{stdout}");
        assert!(
            stdout.contains("SSL connection (protocol: TLSv1.3"),
            "{stdout}"
        );
    }
    // A certificate from another CA is not trusted; plaintext is refused.
    let out = psql("verify-full", other_ca.path(), "localhost");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate verify failed"),
        "{out:?}"
    );
    let out = psql("disable", certs.path(), "localhost");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no encryption"),
        "{out:?}"
    );
    let script = r#"
import sys, psycopg
conn = psycopg.connect(host="localhost", port=int(sys.argv[2]), user="weir", password=sys.argv[3],
                       dbname="weir", sslmode="verify-full", sslrootcert=sys.argv[4])
print(conn.execute("SELECT 6 * 7").fetchone()[0], conn.pgconn.ssl_in_use)
"#;
    let out = Command::new("python3")
        .args(["-c", script, "localhost", &port, PASSWORD])
        .arg(certs.path().join("ca.pem"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42 True",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `dir`, as bytes.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

/// Rows of `sql` as text, for searching.
async fn text_of(client: &Client, sql: &str) -> String {
    let mut out = String::new();
    for m in client.simple_query(sql).await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            for i in 0..r.len() {
                out.push_str(r.get(i).unwrap_or("NULL"));
                out.push('|');
            }
            out.push('\n');
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_in_with_options_are_never_shown_or_stored_in_the_clear() {
    let broker = crate::harness::Broker::start();
    broker.create_topic("creds_in", 1);
    broker.produce(
        "creds_in",
        &[
            (0, None, br#"{"x": 1}"#.to_vec()),
            (0, None, br#"{"x": 2}"#.to_vec()),
        ],
    );
    let secrets = ["s3cret-pass-1", "s3cret-oauth-2", "s3cret-sink-3"];
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("weir.log");
    let env = [("RUST_LOG", "debug")];
    let weir = WeirProcess::start_logged(dir.path(), &[], &env, Some(&log));
    let client = crate::harness::connect(weir.addr()).await.0;
    // librdkafka quotes a property it refuses, value and all, in its error.
    let refused = client
        .batch_execute(&format!(
            "CREATE SOURCE refused (x BIGINT) WITH (connector = 'kafka', topic = 'creds_in',
                properties.bootstrap.server = '{}',
                'properties.sasl.oauthbearer.client.secret' = '{}') FORMAT PLAIN ENCODE JSON;
             SELECT count(*) FROM refused",
            broker.bootstrap(),
            secrets[1],
        ))
        .await
        .unwrap_err();
    client.batch_execute("DROP SOURCE refused").await.unwrap();
    let mut shown = format!("{:?}", refused.as_db_error().unwrap());
    assert!(
        shown.contains("client property sasl.oauthbearer.client.secret: "),
        "{shown}"
    );
    client
        .batch_execute(&format!(
            "CREATE SOURCE creds (x BIGINT) WITH (connector = 'kafka', topic = 'creds_in',
                properties.bootstrap.server = '{}', properties.sasl.password = '{}')
                FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW creds_total AS SELECT sum(x) AS s FROM creds;
             CREATE SINK creds_out FROM creds_total WITH (connector = 'kafka',
                topic = 'creds_out', properties.bootstrap.server = '{}',
                properties.sasl.password = '{}', force_append_only = 'true')
                FORMAT PLAIN ENCODE JSON",
            broker.bootstrap(),
            secrets[0],
            broker.bootstrap(),
            secrets[2]
        ))
        .await
        .unwrap();
    for statement in [
        "SHOW CREATE SOURCE creds",
        "SHOW CREATE SINK creds_out",
        "SELECT * FROM weir_catalog.dataflows",
        "SELECT * FROM weir_catalog.source_progress",
        "SELECT * FROM weir_catalog.sink_progress",
        "SELECT * FROM pg_catalog.pg_views",
    ] {
        shown.push_str(&text_of(&client, statement).await);
    }
    assert!(
        shown.contains("properties.sasl.password = '[REDACTED]'"),
        "{shown}"
    );
    assert!(shown.contains("topic = 'creds_in'"), "{shown}");
    let sum = || async {
        for _ in 0..100 {
            let s = text_of(&client, "SELECT s FROM creds_total").await;
            if s == "3|\n" {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the view never summed the topic");
    };
    sum().await;
    shown.push_str(&http_get(weir.http_addr(), "/metrics"));
    drop(client);
    let (status, _) = weir.terminate();
    assert!(status.success());

    // The catalog reopens with the credentials: the source and sink are re-created. The
    // key moves out of the data dir to --secret-key-file, so a copy of the dir opens nothing.
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("weir.key");
    let key_arg = key_file.to_str().unwrap();
    let weir = WeirProcess::start_logged(
        dir.path(),
        &["--secret-key-file", key_arg],
        &env,
        Some(&log),
    );
    let client = crate::harness::connect(weir.addr()).await.0;
    let sum = || async {
        for _ in 0..100 {
            if text_of(&client, "SELECT s FROM creds_total").await == "3|\n" {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the view did not come back");
    };
    sum().await;
    assert_eq!(
        text_of(&client, "SHOW SINKS").await,
        "creds_out|\n",
        "the sink was re-created"
    );
    shown.push_str(&text_of(&client, "SHOW CREATE SOURCE creds").await);
    drop(client);
    let (status, _) = weir.terminate();
    assert!(status.success());

    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("weir is listening"),
        "the log was captured"
    );
    let files = files_under(dir.path());
    assert!(files.iter().any(|(p, _)| p.ends_with("catalog.json")));
    for secret in secrets {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
        let logged: Vec<&str> = log_text.lines().filter(|l| l.contains(secret)).collect();
        assert!(logged.is_empty(), "{secret} logged: {logged:?}");
        for (path, bytes) in &files {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} stored in {}",
                path.display()
            );
        }
    }
    use std::os::unix::fs::PermissionsExt;
    assert!(
        !dir.path().join("secret.key").exists(),
        "the key left the data dir"
    );
    for path in [dir.path().join("catalog.json"), key_file] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_api_logs_in_like_postgres_and_keeps_privileges() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let weir = password_server(dir.path(), &[]);
    let admin = login(weir.addr(), "weir", PASSWORD).await.unwrap();
    admin
        .batch_execute(
            "CREATE TABLE secret (k INT PRIMARY KEY, v VARCHAR);
             INSERT INTO secret VALUES (1, 'x');
             CREATE MATERIALIZED VIEW secret_view AS SELECT count(*) AS n FROM secret;
             CREATE TABLE open (k INT PRIMARY KEY);
             CREATE USER reader PASSWORD 'r34d';
             GRANT SELECT ON open TO reader;",
        )
        .await
        .unwrap();
    let http = weir.http_addr();
    let basic = |user: &str, password: &str| {
        format!(
            "authorization: Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    let query = |auth: Option<String>, sql: &str| {
        let headers: Vec<String> = auth.into_iter().collect();
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let (status, body) =
            crate::harness::http_request(http, "POST", "/api/v1/query", &headers, sql);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        (
            status,
            v["error"]["sqlstate"].as_str().unwrap_or("").to_string(),
        )
    };
    // No credentials, a wrong password, an unknown user: 401, with the login's SQLSTATE.
    assert_eq!(query(None, "SELECT 1"), (401, "28000".into()));
    assert_eq!(
        query(Some(basic("weir", "wrong")), "SELECT 1"),
        (401, "28P01".into())
    );
    assert_eq!(
        query(Some(basic("nobody", "x")), "SELECT 1"),
        (401, "28000".into())
    );
    // The right one works, and the role's privileges hold.
    assert_eq!(
        query(Some(basic("weir", PASSWORD)), "SELECT * FROM secret"),
        (200, String::new())
    );
    let reader = || Some(basic("reader", "r34d"));
    assert_eq!(query(reader(), "SELECT * FROM open"), (200, String::new()));
    assert_eq!(
        query(reader(), "SELECT * FROM secret"),
        (403, "42501".into())
    );
    assert_eq!(query(reader(), "DROP TABLE open"), (403, "42501".into()));
    let get = |path: &str, auth: String| {
        crate::harness::http_request(http, "GET", path, &[auth.as_str()], "").0
    };
    assert_eq!(
        get("/api/v1/subscribe/secret_view", basic("reader", "r34d")),
        403
    );
    assert_eq!(
        get("/api/v1/dataflows/secret_view", basic("reader", "r34d")),
        403
    );
    assert_eq!(
        get("/api/v1/dataflows/secret_view", basic("weir", PASSWORD)),
        200
    );
    // Prometheus and health checks need no login.
    assert!(http_get(http, "/metrics").contains("weir_view_rows{view=\"secret_view\"}"));
}
