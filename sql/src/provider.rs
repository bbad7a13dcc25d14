//! DataFusion table providers over weir's relations: generator and Kafka sources, DML tables.
//! Ad hoc SELECTs read them through DataFusion; DML goes through `insert_into`, `update`, `delete_from`.

mod constant;
mod dml_table;
mod file_source;
mod generator_source;
mod kafka_source;
mod scan_report;
mod session_plan;
mod temporal_table;
mod upsert_table;
mod window_table;

pub(crate) use constant::{CONSTANT_RELATION, ConstantRelation};
pub(crate) use dml_table::DmlTable;
pub(crate) use file_source::{FileEncoding, FileSource};
pub(crate) use generator_source::{Generator, GeneratorSource};
pub(crate) use kafka_source::KafkaSource;
pub use scan_report::ScanReport;
pub(crate) use scan_report::blocking_scan;
pub(crate) use session_plan::SessionKeys;
pub(crate) use temporal_table::{TemporalFunction, TemporalTable};
pub(crate) use upsert_table::UpsertTable;
pub(crate) use window_table::{Lookup, WindowFunction, WindowTable, Windowing};
