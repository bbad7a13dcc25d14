//! Sinks: a view's committed changes leave weir as messages. `SinkEncoder` turns each
//! commit into messages in the sink's format; `KafkaSink` delivers them to a topic.

mod encode;
mod kafka;

pub use encode::{SinkEncoder, SinkFormat, SinkMessage};
pub use kafka::{KafkaSink, KafkaSinkConfig, MAX_IN_FLIGHT, SinkProgress};
