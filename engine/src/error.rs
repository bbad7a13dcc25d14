//! The engine's error type.
//! Every fallible engine call returns [`EngineError`]; callers above map it to SQLSTATEs.

use arrow::error::ArrowError;

/// Errors raised by engine components.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("kafka: {0}")]
    Kafka(rdkafka::error::KafkaError),
    #[error("duplicate key value violates unique constraint \"{table}_pkey\"")]
    DuplicateKey { table: String, detail: String },
    #[error("null value in column \"{column}\" violates not-null constraint")]
    NullKey { column: String },
    /// A setting or option the user gave is invalid (a window size, a connector option).
    #[error("{0}")]
    InvalidParameter(String),
    /// What the engine cannot do (yet): an aggregate under retractions, a retraction
    /// reaching an append-only sink.
    #[error("{0}")]
    Unsupported(String),
    /// A system outside weir failed or stopped answering (a broker, a file).
    #[error("{0}")]
    External(String),
    /// A broken invariant: a bug in weir, never the user's input.
    #[error("internal error: {0}")]
    Internal(String),
    /// A checkpoint that cannot be used (torn, from another plan, unreadable).
    #[error("checkpoint is unusable: {0}")]
    CorruptCheckpoint(String),
    #[error("write-ahead log {path} is corrupt: {reason}")]
    CorruptLog { path: String, reason: String },
    /// From a DataFusion expression or accumulator an operator evaluates.
    #[error("{0}")]
    DataFusion(#[from] datafusion_common::DataFusionError),
}

impl From<rdkafka::error::KafkaError> for EngineError {
    /// A refused client property is reported by name only: librdkafka's error quotes its
    /// value, which may be a password.
    fn from(e: rdkafka::error::KafkaError) -> Self {
        match e {
            rdkafka::error::KafkaError::ClientConfig(_, description, key, _) => {
                EngineError::InvalidParameter(format!(
                    "kafka: client property {key}: {description}"
                ))
            }
            e => EngineError::Kafka(e),
        }
    }
}

/// Engine result alias.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
