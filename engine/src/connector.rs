//! Source connectors: the built-in Nexmark generator and Kafka topics.
//! Each turns its input into Arrow batches of a declared schema.

pub mod datagen;
pub mod file;
pub mod kafka;
pub mod nexmark;
pub mod splits;
pub mod upsert;
