#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing (Tansu, PostgreSQL,
# Chromium, pgjdbc, psycopg, DuckDB), then runs format and lint checks, unit tests and the end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s (%ss)\n' "$*" "$SECONDS"; }

if ! command -v tansu >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
  step "installing tansu 0.6.0 (about 20 minutes on 2 cores, once per machine)"
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql
fi
if ! command -v psql >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  step "installing PostgreSQL (psql, and a server to compare output with)"
  apt-get update -qq && apt-get install -y -qq postgresql postgresql-client >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1; then
  step "installing Chromium (headless, for the web console's test)"
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
if ! command -v java >/dev/null 2>&1 || [ ! -f /usr/share/java/postgresql.jar ]; then
  step "installing a Java runtime and pgjdbc (Metabase's and DBeaver's driver)"
  apt-get update -qq && apt-get install -y -qq default-jre-headless libpostgresql-jdbc-java >/dev/null
fi
if ! python3 -c "import psycopg, sqlalchemy, pandas, duckdb" >/dev/null 2>&1; then
  step "installing psycopg 3, SQLAlchemy, pandas, DuckDB"
  python3 -m pip install -q "psycopg[binary]" sqlalchemy pandas duckdb
fi
if [ ! -d tests/node/node_modules/pg ]; then
  step "installing node-postgres"
  npm install --prefix tests/node --silent --no-audit --no-fund
fi

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo test"
cargo test --workspace --all-targets
step "done"
