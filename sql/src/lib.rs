//! weir's SQL layer: statement parsing, the persisted catalog, and DataFusion planning.
//! The server hands it query text; it hands back rows, command tags, or errors with SQLSTATEs.

mod catalog;
mod checkpoint;
mod column_names;
mod cpu_runtime;
mod database;
mod dataflow;
mod error;
mod functions;
mod interrupt;
mod pg_class;
mod provider;
mod relation;
mod sink;
mod spellings;
mod statement;
mod types;

pub use cpu_runtime::panic_message;
pub use database::{
    DATABASE_NAME, DEFAULT_CHECKPOINT_INTERVAL, Database, Output, QueryResult, SERVER_VERSION,
    Subscription,
};
pub use error::{Result, SqlError, classify};
pub use interrupt::{CancelOnDrop, Interrupt};
pub use provider::ScanReport;
pub use statement::{
    CreateSink, MAX_QUERY_BYTES, ObjectKind, ParsedStatement, SinkInput, Statement,
    SubscribeTarget, TransactionKind,
};
pub use types::sql_type_name;
