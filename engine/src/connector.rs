//! Source connectors: the built-in Nexmark generator, Kafka topics (plain, upsert, Debezium) and files.
//! Each turns its input into Arrow batches of a declared schema.

pub mod datagen;
pub mod debezium;
pub mod file;
pub mod kafka;
pub mod nexmark;
pub mod splits;
pub mod upsert;
