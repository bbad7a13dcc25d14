//! weir's engine: Arrow kernels for reading sources and holding table state.
//! It knows nothing about SQL text or catalog names; `weir-sql` drives it.

mod change;
mod error;
mod json;
mod message;
mod table_store;
mod wal;

pub mod connector;
pub mod operator;
pub mod runtime;

pub use change::{ChangeBatch, row_converter, with_weight};
pub use error::{EngineError, Result};
pub use json::{DecodeStats, JsonDecoder};
pub use message::{Barrier, Epoch, Message, Watermark};
pub use table_store::{Subscriber, TableStore, WEIGHT_COLUMN};
