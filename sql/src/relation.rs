//! Turns a CREATE SOURCE / CREATE TABLE into its schema and table provider.
//! Connector options are validated here, so a bad WITH clause fails at CREATE, not at first read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::{Constraint, Constraints};
use datafusion::sql::sqlparser::ast;
use weir_engine::connector::datagen::{DatagenOptions, FieldGen};
use weir_engine::connector::kafka::{KafkaConfig, KafkaMeta, StartupMode};
use weir_engine::connector::nexmark::{NexmarkOptions, NexmarkTable};
use weir_engine::connector::upsert::ChangelogFormat;
use weir_engine::{TableBase, TableStore};

use crate::catalog::CatalogRelation;
use crate::error::{Result, SqlError};
use crate::provider::{
    DmlTable, FileEncoding, FileSource, Generator, GeneratorSource, KafkaSource, UpsertTable,
};
use crate::statement::{CreateRelation, ObjectKind};
use crate::types::arrow_type;

/// Columns no user table may declare: the dataflow uses them.
const RESERVED_COLUMNS: [&str; 2] = ["__weight", "__time"];

/// A built relation.
pub(crate) struct Built {
    pub schema: SchemaRef,
    pub provider: Arc<dyn CatalogRelation>,
}

/// Fills in defaults that must not change after creation; returns them to be stored.
pub(crate) fn resolve_defaults(c: &CreateRelation) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let (prefix, generator) = match c.options.get("connector").map(String::as_str) {
        Some("nexmark") => ("nexmark", true),
        Some("datagen") => ("datagen", true),
        Some("file") => ("file", false),
        _ => return out,
    };
    let base_time = format!("{prefix}.base.time");
    if generator && !c.options.contains_key(&base_time) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        out.insert(base_time, now.to_string());
    }
    // A generator's rows are dealt to its shards by index, a file source's files to its
    // splits by a hash: checkpointed positions mean the same rows only as long as the
    // shards stay the same, whatever the cores later.
    let split_num = format!("{prefix}.split.num");
    if !c.options.contains_key(&split_num) {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        out.insert(split_num, cores.to_string());
    }
    out
}

/// `{prefix}.split.num`: how many shards a generator (or splits a file source) is read as
/// (None: decided by its first reader, for sources created before it was fixed at
/// creation).
fn split_num(c: &CreateRelation, prefix: &str) -> Result<Option<u64>> {
    let key = format!("{prefix}.split.num");
    c.options
        .get(&key)
        .map(|v| match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(SqlError::invalid_parameter(format!(
                "{key} must be a positive integer, got '{v}'"
            ))),
        })
        .transpose()
}

/// Builds the provider. `tables_dir` holds DML tables' logs; `fresh` clears an old log first.
/// Builds the provider of a CREATE SOURCE / TABLE. A DML table starts from `base` (its
/// rows in the last checkpoint) when given, else from its log alone.
pub(crate) fn build(
    c: &CreateRelation,
    tables_dir: Option<&Path>,
    fresh: bool,
    base: Option<TableBase>,
) -> Result<Built> {
    let connector = c.options.get("connector").map(|s| s.to_ascii_lowercase());
    match (c.kind, connector.as_deref()) {
        (ObjectKind::Source, Some("nexmark")) => build_nexmark(c),
        (ObjectKind::Source, Some("kafka")) => build_kafka(c),
        (ObjectKind::Source, Some("file")) => build_file(c),
        (ObjectKind::Source, Some("datagen")) => build_datagen(c),
        (ObjectKind::Table, Some("kafka")) => build_upsert_table(c),
        (ObjectKind::Table, Some(other)) => Err(SqlError::unsupported(format!(
            "connector '{other}' is not supported yet for {}",
            c.kind.sql_name()
        ))),
        (ObjectKind::Source, Some(other)) => Err(SqlError::invalid_parameter(format!(
            "unknown connector '{other}' (expected kafka, nexmark, datagen or file)"
        ))),
        (ObjectKind::Source, None) => Err(SqlError::invalid_parameter(
            "a source needs WITH (connector = '...')",
        )),
        (ObjectKind::Table, None) => build_dml_table(c, tables_dir, fresh, base),
        (kind, _) => Err(SqlError::unsupported(format!(
            "CREATE {} is not supported yet",
            kind.sql_name()
        ))),
    }
}

fn declared_schema(c: &CreateRelation) -> Result<SchemaRef> {
    let mut seen = BTreeSet::new();
    let mut fields = Vec::with_capacity(c.columns.len());
    for col in &c.columns {
        if RESERVED_COLUMNS.contains(&col.name.as_str()) {
            return Err(SqlError::new(
                "42939",
                format!("column name \"{}\" is reserved", col.name),
            ));
        }
        if !seen.insert(col.name.clone()) {
            return Err(SqlError::new(
                "42701",
                format!("column \"{}\" specified more than once", col.name),
            ));
        }
        // A NOT NULL column's field is not nullable: INSERT and UPDATE refuse a NULL in it
        // (23502), a source's message without it is malformed, and the catalog says so.
        let nullable = !col.not_null;
        fields.push(match col.data_type {
            ast::DataType::JSONB => crate::jsonb::jsonb_field(&col.name, nullable),
            ref ty => Field::new(&col.name, arrow_type(ty)?, nullable),
        });
    }
    if let Some((wm_col, _)) = &c.watermark
        && !seen.contains(wm_col)
    {
        return Err(SqlError::new(
            "42703",
            format!("watermark column \"{wm_col}\" does not exist"),
        ));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// A generator's pace from option `key` (a positive number), as rows per second.
fn rate(c: &CreateRelation, key: &str, to_rate: impl Fn(f64) -> f64) -> Result<Option<f64>> {
    match c.options.get(key) {
        None => Ok(None),
        Some(v) => match v.parse::<f64>() {
            Ok(x) if x > 0.0 => Ok(Some(to_rate(x))),
            _ => Err(SqlError::invalid_parameter(format!(
                "{key} must be a positive number, got '{v}'"
            ))),
        },
    }
}

fn build_nexmark(c: &CreateRelation) -> Result<Built> {
    let table = NexmarkTable::parse(
        c.options
            .get("nexmark.table.type")
            .map_or("bid", String::as_str),
    )?;
    let event_num = match c.options.get("nexmark.event.num") {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n < 0 => None,
            Ok(n) => Some(n as u64),
            Err(_) => {
                return Err(SqlError::invalid_parameter(format!(
                    "nexmark.event.num must be an integer, got '{v}'"
                )));
            }
        },
    };
    let base_time_ms = match c.options.get("nexmark.base.time") {
        Some(v) => v.parse().map_err(|_| {
            SqlError::invalid_parameter(format!(
                "nexmark.base.time must be ms since the epoch, got '{v}'"
            ))
        })?,
        None => 0,
    };
    let options = NexmarkOptions {
        table,
        event_num,
        base_time_ms,
    };
    let schema = table.schema();
    if !c.columns.is_empty() {
        let declared = declared_schema(c)?;
        let same = declared.fields().len() == schema.fields().len()
            && declared
                .fields()
                .iter()
                .zip(schema.fields())
                .all(|(a, b)| a.name() == b.name());
        if !same {
            return Err(SqlError::invalid_parameter(format!(
                "nexmark {table:?} columns are ({}); declare them so or leave them out",
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(Built {
        provider: Arc::new(
            GeneratorSource::new(
                &c.name,
                Generator::Nexmark(options),
                split_num(c, "nexmark")?,
            )
            .with_rate(rate(
                c,
                "nexmark.min.event.gap.in.ns",
                // Events of every kind are spaced by the gap; this relation has its share.
                |gap| 1e9 / gap * table.proportion().1 as f64 / 50.0,
            )?),
        ),
        schema,
    })
}

fn build_datagen(c: &CreateRelation) -> Result<Built> {
    if c.columns.is_empty() {
        return Err(SqlError::invalid_parameter(
            "a datagen source needs its columns declared",
        ));
    }
    let schema = declared_schema(c)?;
    for key in c.options.keys().filter_map(|k| k.strip_prefix("fields.")) {
        let column = key.split('.').next().unwrap_or_default();
        if schema.field_with_name(column).is_err() {
            return Err(SqlError::new(
                "42703",
                format!("datagen option fields.{key} names no column"),
            ));
        }
    }
    let opt = |col: &str, name: &str| c.options.get(&format!("fields.{col}.{name}"));
    let num = |col: &str, name: &str, default: f64| -> Result<f64> {
        opt(col, name).map_or(Ok(default), |v| {
            v.parse::<f64>().map_err(|_| {
                SqlError::invalid_parameter(format!(
                    "fields.{col}.{name} must be a number, got '{v}'"
                ))
            })
        })
    };
    let mut fields = Vec::with_capacity(schema.fields().len());
    for (i, f) in schema.fields().iter().enumerate() {
        let col = f.name().as_str();
        let g = match opt(col, "kind").map(|k| k.to_ascii_lowercase()).as_deref() {
            Some("sequence") => FieldGen::Sequence {
                start: num(col, "start", 0.0)? as i64,
                end: opt(col, "end")
                    .map(|_| num(col, "end", 0.0).map(|e| e as i64))
                    .transpose()?,
            },
            None | Some("random") => FieldGen::Random {
                min: num(col, "min", 0.0)?,
                max: num(col, "max", 1_000_000.0)?,
                length: num(col, "length", 10.0)? as usize,
                max_past_ms: opt(col, "max_past")
                    .map_or(Ok(86_400_000), |v| parse_interval_ms(v))?,
                seed: num(col, "seed", (i + 1) as f64)? as u64,
            },
            Some(other) => {
                return Err(SqlError::invalid_parameter(format!(
                    "fields.{col}.kind must be sequence or random, got '{other}'"
                )));
            }
        };
        fields.push(g);
    }
    let base_time_ms = c
        .options
        .get("datagen.base.time")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let options = DatagenOptions {
        schema: Arc::clone(&schema),
        fields,
        base_time_ms,
    };
    Ok(Built {
        provider: Arc::new(
            GeneratorSource::new(
                &c.name,
                Generator::Datagen(options),
                split_num(c, "datagen")?,
            )
            .with_rate(rate(c, "datagen.rows.per.second", |r| r)?),
        ),
        schema,
    })
}

/// `'2h'`, `'10m'`, `'30s'`, `'500ms'`, `'1d'` (or plain seconds) in milliseconds.
fn parse_interval_ms(v: &str) -> Result<i64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| SqlError::invalid_parameter(format!("invalid duration '{v}'")))?;
    let ms = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(SqlError::invalid_parameter(format!(
                "invalid duration unit in '{v}'"
            )));
        }
    };
    Ok(n * ms)
}

/// The librdkafka properties in a kafka connector's WITH options (`properties.*`, with
/// RisingWave's `bootstrap.server` spelling); a broker address is required.
pub(crate) fn kafka_properties(
    options: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let mut properties = BTreeMap::new();
    for (k, v) in options {
        if let Some(p) = k.strip_prefix("properties.") {
            let key = if p == "bootstrap.server" {
                "bootstrap.servers"
            } else {
                p
            };
            properties.insert(key.to_string(), v.clone());
        }
    }
    if !properties.contains_key("bootstrap.servers") {
        return Err(SqlError::invalid_parameter(
            "the kafka connector needs properties.bootstrap.server = 'host:port'",
        ));
    }
    Ok(properties)
}

/// The topic, librdkafka properties and startup mode of a kafka connector's WITH options.
fn kafka_config(c: &CreateRelation) -> Result<KafkaConfig> {
    let topic =
        c.options.get("topic").cloned().ok_or_else(|| {
            SqlError::invalid_parameter("the kafka connector needs topic = '...'")
        })?;
    let properties = kafka_properties(&c.options)?;
    let startup = match c
        .options
        .get("scan.startup.mode")
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("earliest") => StartupMode::Earliest,
        Some("latest") => StartupMode::Latest,
        Some(other) => {
            return Err(SqlError::invalid_parameter(format!(
                "scan.startup.mode must be earliest or latest, got '{other}'"
            )));
        }
    };
    Ok(KafkaConfig {
        topic,
        properties,
        startup,
    })
}

fn build_kafka(c: &CreateRelation) -> Result<Built> {
    if c.columns.is_empty() {
        return Err(SqlError::invalid_parameter(
            "a kafka source needs its columns declared",
        ));
    }
    match &c.format {
        None => {}
        Some((f, e)) if f == "PLAIN" && e == "JSON" => {}
        Some((f, e)) => {
            return Err(SqlError::unsupported(format!(
                "FORMAT {f} ENCODE {e} is not supported for a source yet"
            )));
        }
    }
    let config = kafka_config(c)?;
    let value_schema = declared_schema(c)?;
    let mut includes = Vec::new();
    for (what, alias) in &c.includes {
        let meta = KafkaMeta::parse(what).ok_or_else(|| {
            SqlError::invalid_parameter(format!(
                "INCLUDE {what}: expected key, partition, offset or timestamp"
            ))
        })?;
        if value_schema.field_with_name(alias).is_ok() {
            return Err(SqlError::new(
                "42701",
                format!("column \"{alias}\" specified more than once"),
            ));
        }
        includes.push((meta, alias.clone()));
    }
    let source = KafkaSource::new(config, value_schema, includes);
    Ok(Built {
        schema: source.schema(),
        provider: Arc::new(source),
    })
}

fn build_upsert_table(c: &CreateRelation) -> Result<Built> {
    let debezium = match &c.format {
        Some((f, e)) if f == "UPSERT" && e == "JSON" => false,
        Some((f, e)) if f == "DEBEZIUM" && e == "JSON" => true,
        _ => {
            return Err(SqlError::unsupported(
                "a kafka table needs FORMAT UPSERT ENCODE JSON or FORMAT DEBEZIUM ENCODE JSON (use CREATE SOURCE for append-only topics)",
            ));
        }
    };
    if c.primary_key.is_empty() {
        return Err(SqlError::invalid_parameter(if debezium {
            "a Debezium table needs a PRIMARY KEY (the source table's key)"
        } else {
            "an upsert table needs a PRIMARY KEY (the message key)"
        }));
    }
    let schema = declared_schema(c)?;
    let key_columns = key_indexes(c, &schema)?;
    let format = if debezium {
        ChangelogFormat::Debezium {
            key_columns: key_columns.clone(),
        }
    } else {
        ChangelogFormat::Upsert
    };
    let constraints = Constraints::new_unverified(vec![Constraint::PrimaryKey(key_columns)]);
    let table = UpsertTable::new(kafka_config(c)?, Arc::clone(&schema), format, constraints);
    Ok(Built {
        schema,
        provider: Arc::new(table),
    })
}

fn key_indexes(c: &CreateRelation, schema: &Schema) -> Result<Vec<usize>> {
    c.primary_key
        .iter()
        .map(|k| {
            schema.index_of(k).map_err(|_| {
                SqlError::new(
                    "42703",
                    format!("column \"{k}\" named in key does not exist"),
                )
            })
        })
        .collect()
}

fn build_file(c: &CreateRelation) -> Result<Built> {
    if c.columns.is_empty() {
        return Err(SqlError::invalid_parameter(
            "a file source needs its columns declared",
        ));
    }
    let path = c
        .options
        .get("path")
        .cloned()
        .ok_or_else(|| SqlError::invalid_parameter("file source needs path = '...'"))?;
    let encoding = match c.format.as_ref().map(|(f, e)| (f.as_str(), e.as_str())) {
        None | Some(("PLAIN", "JSON")) => FileEncoding::Json,
        Some(("PLAIN", "CSV")) => {
            let header = c
                .options
                .get("format.without_header")
                .is_none_or(|v| v != "true");
            let delimiter = c
                .options
                .get("format.delimiter")
                .and_then(|d| d.bytes().next())
                .unwrap_or(b',');
            FileEncoding::Csv { header, delimiter }
        }
        Some(("PLAIN", "PARQUET")) => FileEncoding::Parquet,
        Some((f, e)) => {
            return Err(SqlError::unsupported(format!(
                "FORMAT {f} ENCODE {e} is not supported for a file source"
            )));
        }
    };
    if !c.includes.is_empty() {
        return Err(SqlError::invalid_parameter(
            "INCLUDE is only for kafka sources",
        ));
    }
    let schema = declared_schema(c)?;
    Ok(Built {
        provider: Arc::new(FileSource::new(
            path,
            encoding,
            Arc::clone(&schema),
            split_num(c, "file")?,
        )),
        schema,
    })
}

fn build_dml_table(
    c: &CreateRelation,
    tables_dir: Option<&Path>,
    fresh: bool,
    base: Option<TableBase>,
) -> Result<Built> {
    if c.columns.is_empty() {
        return Err(SqlError::syntax("a table needs at least one column", None));
    }
    if c.format.is_some() {
        return Err(SqlError::invalid_parameter("FORMAT needs a connector"));
    }
    let schema = declared_schema(c)?;
    let key_columns = key_indexes(c, &schema)?;
    let wal = tables_dir.map(|d| d.join(table_file_name(&c.name, "wal")));
    if let (Some(path), true) = (&wal, fresh)
        && path.exists()
    {
        std::fs::remove_file(path).map_err(crate::catalog::io_error)?;
    }
    let store = TableStore::open_from(
        &c.name,
        Arc::clone(&schema),
        key_columns.clone(),
        wal.as_deref(),
        base.filter(|_| !fresh),
    )?;
    let constraints = if key_columns.is_empty() {
        Constraints::default()
    } else {
        Constraints::new_unverified(vec![Constraint::PrimaryKey(key_columns)])
    };
    Ok(Built {
        schema,
        provider: Arc::new(DmlTable::new(store, constraints, c.append_only)),
    })
}

/// A file name for a table's data: the name itself when it is plain (letters, digits,
/// `_`), else with every other byte as `%XX`, so a quoted name (`"../x"`) cannot leave the
/// data directory or collide with a plain one.
pub(crate) fn table_file_name(name: &str, extension: &str) -> String {
    let mut out = String::with_capacity(name.len() + extension.len() + 1);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push('.');
    out.push_str(extension);
    out
}

#[cfg(test)]
mod file_name_tests {
    use super::table_file_name;

    #[test]
    fn table_files_stay_in_their_directory() {
        assert_eq!(table_file_name("orders_2", "wal"), "orders_2.wal");
        assert_eq!(table_file_name("../x", "wal"), "%2E%2E%2Fx.wal");
        assert_eq!(table_file_name("a b", "wal"), "a%20b.wal");
        assert_ne!(
            table_file_name("a%20b", "wal"),
            table_file_name("a b", "wal")
        );
    }
}
