//! weir's engine: Arrow kernels for reading sources and holding table state.
//! It knows nothing about SQL text or catalog names; `weir-sql` drives it.

mod change;
mod error;
mod json;
mod message;
mod table_store;
mod wal;

pub mod checkpoint;
pub mod connector;
pub mod jsonb;
pub mod operator;
pub mod runtime;
pub mod sink;
pub mod state;

pub use change::{ChangeBatch, row_converter, with_weight};
pub use error::{EngineError, Result};
pub use json::{DecodeStats, JsonDecoder};
pub use message::{Barrier, Epoch, Message, SplitPosition, Watermark};
pub use state::StateSnapshot;
pub use table_store::{Subscriber, TableBase, TableStore, WEIGHT_COLUMN};

/// The hash map operators keep their state in: foldhash, seeded per process, instead of
/// SipHash, which was a tenth of the time of aggregations and joins.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
