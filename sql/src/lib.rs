//! weir's SQL layer: statement parsing, the persisted catalog, and DataFusion planning.
//! The server hands it query text; it hands back rows, command tags, or errors with SQLSTATEs.

pub mod access;
mod catalog;
mod checkpoint;
mod column_names;
mod cpu_runtime;
mod database;
mod dataflow;
mod error;
mod functions;
mod interrupt;
mod interval_arithmetic;
pub mod jsonb;
mod operand_types;
mod pg_catalog;
mod pg_keys;
mod provider;
mod relation;
pub mod roles;
pub mod scram;
pub mod secrets;
pub mod session;
mod sink;
mod spellings;
mod statement;
mod types;

pub use cpu_runtime::panic_message;
pub use database::{
    DATABASE_NAME, DEFAULT_CHECKPOINT_INTERVAL, Database, Executed, Options, Output, QueryResult,
    SERVER_VERSION, Subscription,
};
pub use dataflow::{DataflowGraph, OperatorReport, ViewStatus};
pub use error::{Result, SqlError, classify};
pub use interrupt::{CancelOnDrop, Interrupt};
pub use provider::ScanReport;
pub use session::{Session, TransactionState};
pub use sink::ProgressRow;
pub use statement::{
    CreateSink, GrantTarget, MAX_QUERY_BYTES, ObjectKind, ParsedStatement, RoleOptions,
    RoleStatement, SinkInput, Statement, SubscribeTarget, TransactionKind,
};
pub use types::{UNCONSTRAINED_NUMERIC, field_type_name, sql_type_name};
