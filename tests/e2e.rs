//! End-to-end tests: a real weir server (in-process or the `weir` binary), real Postgres
//! clients (tokio-postgres, psql, psycopg) and a real Kafka-protocol broker (Tansu).
//!
//! One test binary with modules keeps link time down: every binary links DataFusion.

#![allow(clippy::unwrap_used)] // tests and their fixtures fail loudly by design

mod harness;

mod auth;
mod checkpoints;
mod clients;
mod console;
mod dml;
mod docs;
mod file;
mod http;
mod joins;
mod kafka;
mod nexmark_kafka;
mod nexmark_views;
mod pg_wire;
mod postgres_compat;
mod restart;
mod robustness;
mod sinks;
mod slt;
mod sql_shapes;
mod streaming;
mod subscribe;
mod views;
