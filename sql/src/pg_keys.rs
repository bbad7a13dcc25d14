//! weir's primary keys in `pg_catalog`, as Postgres keeps them, so that psql's `\d`,
//! SQLAlchemy's inspector and pgjdbc's `getPrimaryKeys` find them.
//!
//! A relation with a PRIMARY KEY has an index `<relation>_pkey` (a `pg_class` row of relkind
//! `i` and a `pg_index` row), a constraint of the same name (`pg_constraint`, contype `p`),
//! and NOT NULL key columns (`pg_attribute.attnotnull`); `pg_get_indexdef` and
//! `pg_get_constraintdef` describe them. The keys are read from the relations' providers
//! (`TableProvider::constraints`) each time one of these tables is scanned, and remembered
//! in `PrimaryKeys` for the two functions.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type, SchemaRef};
use datafusion::catalog::{CatalogProviderList, TableProvider};
use datafusion::common::{Constraint, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use parking_lot::RwLock;

use crate::database::DATABASE_NAME;

/// An index's OID is its relation's plus this, a constraint's plus twice this.
/// datafusion-pg-catalog hands out relation OIDs from 16384 one at a time, far below.
const OID_OFFSET: i32 = 1 << 29;

/// btree's OID in `pg_am`: every weir key index reads as a btree.
const BTREE_AM: i32 = 403;

/// One relation's primary key.
#[derive(Debug)]
pub(crate) struct PrimaryKey {
    pub(crate) table_oid: i32,
    pub(crate) namespace_oid: i32,
    schema: String,
    table: String,
    /// The key's columns in key order: attnum (from 1) and name.
    pub(crate) columns: Vec<(i16, String)>,
}

impl PrimaryKey {
    pub(crate) fn index_oid(&self) -> i32 {
        self.table_oid + OID_OFFSET
    }

    pub(crate) fn constraint_oid(&self) -> i32 {
        self.table_oid + 2 * OID_OFFSET
    }

    /// The index's and the constraint's name, as Postgres names them.
    pub(crate) fn name(&self) -> String {
        format!("{}_pkey", self.table)
    }

    fn column_list(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(_, n)| n.as_str()).collect();
        names.join(", ")
    }

    /// What `pg_get_indexdef(oid)` says.
    fn index_definition(&self) -> String {
        format!(
            "CREATE UNIQUE INDEX {} ON {}.{} USING btree ({})",
            self.name(),
            self.schema,
            self.table,
            self.column_list()
        )
    }

    /// What `pg_get_constraintdef(oid)` says.
    fn constraint_definition(&self) -> String {
        format!("PRIMARY KEY ({})", self.column_list())
    }

    /// Its `pg_index` row.
    pub(crate) fn index_row(&self, schema: &SchemaRef) -> Result<RecordBatch> {
        let n = self.columns.len();
        let zeros = vec!["0"; n].join(" ");
        let keys: Vec<String> = self.columns.iter().map(|(a, _)| a.to_string()).collect();
        let yes = |v| ScalarValue::Boolean(Some(v));
        row(
            schema,
            &[
                ("indexrelid", ScalarValue::Int32(Some(self.index_oid()))),
                ("indrelid", ScalarValue::Int32(Some(self.table_oid))),
                ("indnatts", ScalarValue::Int16(Some(n as i16))),
                ("indnkeyatts", ScalarValue::Int16(Some(n as i16))),
                ("indisunique", yes(true)),
                ("indnullsnotdistinct", yes(false)),
                ("indisprimary", yes(true)),
                ("indisexclusion", yes(false)),
                ("indimmediate", yes(true)),
                ("indisclustered", yes(false)),
                ("indisvalid", yes(true)),
                ("indcheckxmin", yes(false)),
                ("indisready", yes(true)),
                ("indislive", yes(true)),
                ("indisreplident", yes(false)),
                ("indkey", ScalarValue::from(keys.join(" "))),
                ("indcollation", ScalarValue::from(zeros.clone())),
                ("indclass", ScalarValue::from(zeros.clone())),
                ("indoption", ScalarValue::from(zeros)),
            ],
        )
    }

    /// Its `pg_constraint` row (`conkey` as datafusion-pg-catalog writes arrays).
    pub(crate) fn constraint_row(&self, schema: &SchemaRef) -> Result<RecordBatch> {
        let keys: Vec<String> = self.columns.iter().map(|(a, _)| a.to_string()).collect();
        let yes = |v| ScalarValue::Boolean(Some(v));
        let int = |v| ScalarValue::Int32(Some(v));
        row(
            schema,
            &[
                ("oid", int(self.constraint_oid())),
                ("conname", ScalarValue::from(self.name())),
                ("connamespace", int(self.namespace_oid)),
                ("contype", ScalarValue::from("p")),
                ("condeferrable", yes(false)),
                ("condeferred", yes(false)),
                ("convalidated", yes(true)),
                ("conrelid", int(self.table_oid)),
                ("contypid", int(0)),
                ("conindid", int(self.index_oid())),
                ("conparentid", int(0)),
                ("confrelid", int(0)),
                ("conislocal", yes(true)),
                ("coninhcount", ScalarValue::Int16(Some(0))),
                ("connoinherit", yes(true)),
                (
                    "conkey",
                    ScalarValue::from(format!("[{}]", keys.join(", "))),
                ),
            ],
        )
    }

    /// Its index's `pg_class` row, made from its relation's `table_row`.
    pub(crate) fn class_row(&self, table_row: &RecordBatch) -> Result<RecordBatch> {
        replace(
            table_row,
            &[
                ("oid", ScalarValue::Int32(Some(self.index_oid()))),
                ("relname", ScalarValue::from(self.name())),
                ("relkind", ScalarValue::from("i")),
                ("relam", ScalarValue::Int32(Some(BTREE_AM))),
                ("reltype", ScalarValue::Int32(Some(0))),
                (
                    "relnatts",
                    ScalarValue::Int16(Some(self.columns.len() as i16)),
                ),
                ("relhasindex", ScalarValue::Boolean(Some(false))),
            ],
        )
    }
}

/// The primary keys as of the last scan of a catalog table that lists them, by index and
/// by constraint OID.
#[derive(Debug, Default)]
pub(crate) struct PrimaryKeys {
    by_oid: RwLock<HashMap<i32, Arc<PrimaryKey>>>,
}

impl PrimaryKeys {
    /// The keys of `relations`, remembered for the describing functions.
    pub(crate) fn read(&self, relations: &[ListedRelation]) -> Vec<Arc<PrimaryKey>> {
        let keys: Vec<Arc<PrimaryKey>> = relations
            .iter()
            .filter_map(|r| {
                Some(Arc::new(PrimaryKey {
                    table_oid: r.oid,
                    namespace_oid: r.namespace_oid,
                    schema: r.schema.clone(),
                    table: r.name.clone(),
                    columns: key_columns(r.provider.as_ref())?,
                }))
            })
            .collect();
        let mut by_oid = HashMap::new();
        for key in &keys {
            by_oid.insert(key.index_oid(), Arc::clone(key));
            by_oid.insert(key.constraint_oid(), Arc::clone(key));
        }
        *self.by_oid.write() = by_oid;
        keys
    }

    fn get(&self, oid: i32) -> Option<Arc<PrimaryKey>> {
        self.by_oid.read().get(&oid).cloned()
    }
}

/// One of weir's relations as datafusion-pg-catalog's `pg_class` lists it.
pub(crate) struct ListedRelation {
    pub(crate) oid: i32,
    namespace_oid: i32,
    schema: String,
    name: String,
    pub(crate) provider: Arc<dyn TableProvider>,
}

/// The tables, views and materialized views `pg_class` (datafusion-pg-catalog's rows)
/// lists, with their providers in the database's catalog.
pub(crate) async fn listed_relations(
    pg_class: &[RecordBatch],
    catalogs: &Weak<dyn CatalogProviderList>,
) -> Result<Vec<ListedRelation>> {
    let mut relations = Vec::new();
    let Some(catalog) = catalogs.upgrade().and_then(|c| c.catalog(DATABASE_NAME)) else {
        return Ok(relations);
    };
    let schemas: Vec<String> = catalog
        .schema_names()
        .into_iter()
        .filter(|s| !matches!(s.as_str(), "pg_catalog" | "information_schema"))
        .collect();
    for batch in pg_class {
        let column = |name: &str, to: &DataType| -> Result<ArrayRef> {
            Ok(cast(batch.column(batch.schema().index_of(name)?), to)?)
        };
        let (oids, spaces) = (
            column("oid", &DataType::Int32)?,
            column("relnamespace", &DataType::Int32)?,
        );
        let (names, kinds) = (
            column("relname", &DataType::Utf8)?,
            column("relkind", &DataType::Utf8)?,
        );
        let (oids, spaces) = (
            oids.as_primitive::<Int32Type>(),
            spaces.as_primitive::<Int32Type>(),
        );
        let (names, kinds) = (names.as_string::<i32>(), kinds.as_string::<i32>());
        for i in 0..batch.num_rows() {
            if kinds.is_null(i) || !matches!(kinds.value(i), "r" | "v" | "m") {
                continue;
            }
            // The first schema that has the name (weir's relations are all in public).
            for schema in &schemas {
                let Some(provider) = catalog.schema(schema) else {
                    continue;
                };
                if let Some(table) = provider.table(names.value(i)).await? {
                    relations.push(ListedRelation {
                        oid: oids.value(i),
                        namespace_oid: spaces.value(i),
                        schema: schema.clone(),
                        name: names.value(i).to_string(),
                        provider: table,
                    });
                    break;
                }
            }
        }
    }
    Ok(relations)
}

/// The primary key's columns of a relation: attnum (from 1) and name.
fn key_columns(table: &dyn TableProvider) -> Option<Vec<(i16, String)>> {
    let schema = table.schema();
    table.constraints()?.iter().find_map(|c| match c {
        Constraint::PrimaryKey(indices) => Some(
            indices
                .iter()
                .map(|&i| (i as i16 + 1, schema.field(i).name().clone()))
                .collect(),
        ),
        Constraint::Unique(_) => None,
    })
}

/// A one-row batch of `schema` with `values` in the columns they name, elsewhere NULL (or
/// the type's default, zero or empty, in a column that takes no NULL).
fn row(schema: &SchemaRef, values: &[(&str, ScalarValue)]) -> Result<RecordBatch> {
    let blanks = schema
        .fields()
        .iter()
        .map(|f| {
            let blank = if f.is_nullable() {
                ScalarValue::try_from(f.data_type())?
            } else {
                ScalarValue::new_default(f.data_type())?
            };
            blank.to_array_of_size(1)
        })
        .collect::<Result<Vec<_>>>()?;
    replace(&RecordBatch::try_new(Arc::clone(schema), blanks)?, values)
}

/// `batch` (one row) with `values` in the columns they name, cast to their types; names
/// the schema lacks are skipped.
fn replace(batch: &RecordBatch, values: &[(&str, ScalarValue)]) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut columns = batch.columns().to_vec();
    for (name, value) in values {
        if let Ok(at) = schema.index_of(name) {
            columns[at] = cast(&value.to_array_of_size(1)?, schema.field(at).data_type())?;
        }
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `pg_get_indexdef(oid [, column, pretty])`: a key index's CREATE INDEX, or with a column
/// number above 0 that column's name; NULL for other OIDs.
pub(crate) fn index_definition_udf(keys: Arc<PrimaryKeys>) -> ScalarUDF {
    ScalarUDF::new_from_impl(Describe {
        name: "pg_get_indexdef",
        signature: Signature::new(
            TypeSignature::OneOf(vec![
                TypeSignature::Exact(vec![DataType::Int64]),
                TypeSignature::Exact(vec![DataType::Int64, DataType::Int64, DataType::Boolean]),
            ]),
            Volatility::Stable,
        ),
        keys,
    })
}

/// `pg_get_constraintdef(oid [, pretty])`: a key constraint's `PRIMARY KEY (...)`; NULL
/// for other OIDs.
pub(crate) fn constraint_definition_udf(keys: Arc<PrimaryKeys>) -> ScalarUDF {
    ScalarUDF::new_from_impl(Describe {
        name: "pg_get_constraintdef",
        signature: Signature::new(
            TypeSignature::OneOf(vec![
                TypeSignature::Exact(vec![DataType::Int64]),
                TypeSignature::Exact(vec![DataType::Int64, DataType::Boolean]),
            ]),
            Volatility::Stable,
        ),
        keys,
    })
}

/// The two describing functions: by name, what they say of a key's OID.
#[derive(Debug)]
struct Describe {
    name: &'static str,
    signature: Signature,
    keys: Arc<PrimaryKeys>,
}

impl PartialEq for Describe {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.keys, &other.keys)
    }
}

impl Eq for Describe {}

impl std::hash::Hash for Describe {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for Describe {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let oids = cast(&arrays[0], &DataType::Int64)?;
        let oids = oids.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let columns = match arrays.get(1) {
            Some(c) if self.name == "pg_get_indexdef" => Some(cast(c, &DataType::Int64)?),
            _ => None,
        };
        let columns = columns
            .as_ref()
            .map(|c| c.as_primitive::<datafusion::arrow::datatypes::Int64Type>());
        let described: StringArray = (0..oids.len())
            .map(|i| {
                if oids.is_null(i) {
                    return None;
                }
                let key = self.keys.get(i32::try_from(oids.value(i)).ok()?)?;
                if self.name == "pg_get_constraintdef" {
                    return Some(key.constraint_definition());
                }
                match columns.map(|c| (!c.is_null(i)).then(|| c.value(i))) {
                    Some(Some(n)) if n > 0 => {
                        let at = usize::try_from(n - 1).ok()?;
                        key.columns.get(at).map(|(_, name)| name.clone())
                    }
                    _ => Some(key.index_definition()),
                }
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(described)))
    }
}
