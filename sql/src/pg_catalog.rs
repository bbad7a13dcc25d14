//! weir's `pg_catalog`: datafusion-pg-catalog's schema with what it cannot know put in.
//! Materialized views are relkind `m` in `pg_class` (psql's `\dm`), and primary keys are
//! indexes, constraints and NOT NULL columns (`pg_keys`).

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, RecordBatch, StringArray, new_null_array,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int32Type, Schema, SchemaRef};
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session, TableProvider};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{ExecutionPlan, collect};
use parking_lot::RwLock;

use crate::dataflow::ViewTable;
use crate::pg_keys::{ListedRelation, PrimaryKey, PrimaryKeys, listed_relations};

/// The pg_catalog schema, with `pg_class`, `pg_index`, `pg_constraint` and `pg_attribute`
/// completed, and the tables registered on it (weir's `pg_matviews`, `pg_settings`) in
/// place of datafusion-pg-catalog's.
#[derive(Debug)]
pub(crate) struct WeirPgCatalog {
    inner: Arc<dyn SchemaProvider>,
    /// Weak: the catalogs hold this schema.
    catalogs: Weak<dyn CatalogProviderList>,
    keys: Arc<PrimaryKeys>,
    replaced: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
}

impl WeirPgCatalog {
    pub(crate) fn new(
        inner: Arc<dyn SchemaProvider>,
        catalogs: &Arc<dyn CatalogProviderList>,
        keys: Arc<PrimaryKeys>,
    ) -> Self {
        Self {
            inner,
            catalogs: Arc::downgrade(catalogs),
            keys,
            replaced: RwLock::default(),
        }
    }
}

#[async_trait]
impl SchemaProvider for WeirPgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.replaced.read().get(name) {
            return Ok(Some(Arc::clone(table)));
        }
        let Some(inner) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let completion = match name {
            "pg_class" => Completion::Class,
            "pg_index" => Completion::Index,
            "pg_constraint" => Completion::Constraint,
            "pg_attribute" => Completion::Attribute,
            _ => return Ok(Some(inner)),
        };
        let Some(pg_class) = self.inner.table("pg_class").await? else {
            return Ok(Some(inner));
        };
        Ok(Some(Arc::new(Completed::new(
            inner,
            completion,
            pg_class,
            Weak::clone(&self.catalogs),
            Arc::clone(&self.keys),
        ))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.replaced.read().contains_key(name) || self.inner.table_exist(name)
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self.replaced.write().insert(name, table))
    }
}

/// What a completed table adds to datafusion-pg-catalog's rows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Completion {
    /// Materialized views as relkind `m`, a row per key index, `relhasindex` of keyed
    /// relations, and the `reloptions` column psql's `\d+` reads (NULL: weir relations
    /// have no storage options).
    Class,
    /// A row per key index.
    Index,
    /// A row per key constraint.
    Constraint,
    /// Key columns are NOT NULL; numeric columns have their precision and scale.
    Attribute,
}

/// A datafusion-pg-catalog table with weir's rows or values put in.
#[derive(Debug)]
struct Completed {
    inner: Arc<dyn TableProvider>,
    completion: Completion,
    /// datafusion-pg-catalog's pg_class: the relations whose keys are read.
    pg_class: Arc<dyn TableProvider>,
    catalogs: Weak<dyn CatalogProviderList>,
    keys: Arc<PrimaryKeys>,
    schema: SchemaRef,
}

impl Completed {
    fn new(
        inner: Arc<dyn TableProvider>,
        completion: Completion,
        pg_class: Arc<dyn TableProvider>,
        catalogs: Weak<dyn CatalogProviderList>,
        keys: Arc<PrimaryKeys>,
    ) -> Self {
        let mut fields = inner.schema().fields().to_vec();
        if completion == Completion::Class {
            fields.push(Arc::new(Field::new(
                "reloptions",
                DataType::new_list(DataType::Utf8, true),
                true,
            )));
        }
        Self {
            inner,
            completion,
            pg_class,
            catalogs,
            keys,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    async fn rows(&self, state: &dyn Session) -> Result<RecordBatch> {
        let scan = |table: &Arc<dyn TableProvider>| {
            let table = Arc::clone(table);
            async move {
                let plan = table.scan(state, None, &[], None).await?;
                collect(plan, state.task_ctx()).await
            }
        };
        let classes = scan(&self.pg_class).await?;
        let relations = listed_relations(&classes, &self.catalogs).await?;
        let keys = self.keys.read(&relations);
        let inner = match self.completion {
            Completion::Class => classes,
            _ => scan(&self.inner).await?,
        };
        let inner_schema = self.inner.schema();
        match self.completion {
            Completion::Class => {
                let matviews: HashSet<i32> = relations
                    .iter()
                    .filter(|r| (r.provider.as_ref() as &dyn Any).is::<ViewTable>())
                    .map(|r| r.oid)
                    .collect();
                let keyed: HashSet<i32> = keys.iter().map(|k| k.table_oid).collect();
                let batches: Vec<_> = inner
                    .into_iter()
                    .map(|b| self.relabel(b, &matviews, &keyed))
                    .collect::<Result<_>>()?;
                let all = concat_batches(&self.schema, &batches)?;
                let row_of: HashMap<i32, usize> = oids(&all)?
                    .iter()
                    .enumerate()
                    .filter_map(|(at, oid)| Some((oid?, at)))
                    .collect();
                let mut rows = vec![all.clone()];
                for key in &keys {
                    if let Some(&at) = row_of.get(&key.table_oid) {
                        rows.push(key.class_row(&all.slice(at, 1))?);
                    }
                }
                Ok(concat_batches(&self.schema, &rows)?)
            }
            Completion::Index | Completion::Constraint => {
                let rows: Vec<_> = keys
                    .iter()
                    .map(|k| match self.completion {
                        Completion::Index => k.index_row(&inner_schema),
                        _ => k.constraint_row(&inner_schema),
                    })
                    .collect::<Result<_>>()?;
                Ok(concat_batches(&self.schema, inner.iter().chain(&rows))?)
            }
            Completion::Attribute => {
                let batches: Vec<_> = inner
                    .into_iter()
                    .map(|b| described_columns(b, &keys, &relations))
                    .collect::<Result<_>>()?;
                Ok(concat_batches(&self.schema, &batches)?)
            }
        }
    }

    /// `pg_class` rows: `v` turned into `m` for weir's materialized views (`matviews`),
    /// `relhasindex` for keyed relations (`keyed`), and `reloptions`.
    fn relabel(
        &self,
        batch: RecordBatch,
        matviews: &HashSet<i32>,
        keyed: &HashSet<i32>,
    ) -> Result<RecordBatch> {
        let schema = batch.schema();
        let options = new_null_array(
            self.schema.field(schema.fields().len()).data_type(),
            batch.num_rows(),
        );
        let oids = oids(&batch)?;
        let mut columns = batch.columns().to_vec();
        if let Ok(kind_at) = schema.index_of("relkind") {
            let kinds = batch.column(kind_at).as_string::<i32>();
            let relabelled: StringArray = kinds
                .iter()
                .zip(oids.iter())
                .map(|(kind, oid)| match (kind, oid) {
                    (Some("v"), Some(oid)) if matviews.contains(&oid) => Some("m"),
                    _ => kind,
                })
                .collect();
            columns[kind_at] = Arc::new(relabelled);
        }
        if let Ok(index_at) = schema.index_of("relhasindex") {
            let has: BooleanArray = oids
                .iter()
                .map(|oid| Some(oid.is_some_and(|o| keyed.contains(&o))))
                .collect();
            columns[index_at] = Arc::new(has);
        }
        columns.push(options);
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// The `oid` column of `batch` (pg_class).
fn oids(batch: &RecordBatch) -> Result<Int32Array> {
    let oids = cast(
        batch.column(batch.schema().index_of("oid")?),
        &DataType::Int32,
    )?;
    Ok(oids.as_primitive::<Int32Type>().clone())
}

/// `pg_attribute` rows with `attnotnull` set for every key column, the `atttypmod` of
/// numeric columns (their precision and scale, for `format_type`), and jsonb's type OID for
/// jsonb columns (strings to Arrow, `crate::jsonb`).
fn described_columns(
    batch: RecordBatch,
    keys: &[Arc<PrimaryKey>],
    relations: &[ListedRelation],
) -> Result<RecordBatch> {
    let schema = batch.schema();
    let (Ok(rel_at), Ok(num_at), Ok(null_at), Ok(typmod_at), Ok(typid_at)) = (
        schema.index_of("attrelid"),
        schema.index_of("attnum"),
        schema.index_of("attnotnull"),
        schema.index_of("atttypmod"),
        schema.index_of("atttypid"),
    ) else {
        return Ok(batch);
    };
    let key_columns: HashSet<(i32, i32)> = keys
        .iter()
        .flat_map(|k| k.columns.iter().map(|(n, _)| (k.table_oid, i32::from(*n))))
        .collect();
    // Every listed column by (relation OID, attnum), with its field.
    let fields: Vec<((i32, i32), FieldRef)> = relations
        .iter()
        .flat_map(|r| {
            let fields = r.provider.schema().fields().clone();
            (1..)
                .zip(fields.iter().cloned())
                .map(|(n, f)| ((r.oid, n), f))
                .collect::<Vec<_>>()
        })
        .collect();
    let typmods: HashMap<(i32, i32), i32> = fields
        .iter()
        .filter_map(|(c, f)| Some((*c, typmod(f.data_type())?)))
        .collect();
    let jsonb_columns: HashSet<(i32, i32)> = fields
        .iter()
        .filter(|(_, f)| crate::jsonb::is_jsonb(f))
        .map(|(c, _)| *c)
        .collect();
    let rels = cast(batch.column(rel_at), &DataType::Int32)?;
    let nums = cast(batch.column(num_at), &DataType::Int32)?;
    let (rels, nums) = (
        rels.as_primitive::<Int32Type>(),
        nums.as_primitive::<Int32Type>(),
    );
    let column =
        |i: usize| (!rels.is_null(i) && !nums.is_null(i)).then(|| (rels.value(i), nums.value(i)));
    let current = batch.column(null_at).as_boolean();
    let not_null: BooleanArray = (0..batch.num_rows())
        .map(|i| match column(i) {
            Some(c) if key_columns.contains(&c) => Some(true),
            _ => (!current.is_null(i)).then(|| current.value(i)),
        })
        .collect();
    let current = cast(batch.column(typmod_at), &DataType::Int32)?;
    let current = current.as_primitive::<Int32Type>();
    let typmod: Int32Array = (0..batch.num_rows())
        .map(|i| match column(i).and_then(|c| typmods.get(&c)) {
            Some(&t) => Some(t),
            None => (!current.is_null(i)).then(|| current.value(i)),
        })
        .collect();
    let current = cast(batch.column(typid_at), &DataType::Int32)?;
    let current = current.as_primitive::<Int32Type>();
    let typid: Int32Array = (0..batch.num_rows())
        .map(|i| match column(i) {
            Some(c) if jsonb_columns.contains(&c) => Some(JSONB_OID),
            _ => (!current.is_null(i)).then(|| current.value(i)),
        })
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[null_at] = Arc::new(not_null);
    columns[typid_at] = cast(
        &(Arc::new(typid) as ArrayRef),
        schema.field(typid_at).data_type(),
    )?;
    columns[typmod_at] = cast(
        &(Arc::new(typmod) as ArrayRef),
        schema.field(typmod_at).data_type(),
    )?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// jsonb's type OID in Postgres's catalog.
const JSONB_OID: i32 = 3802;

/// A column type's `atttypmod` as Postgres stores it, where weir's type keeps one: a
/// numeric's precision and scale (none for an unconstrained `numeric`).
fn typmod(data_type: &DataType) -> Option<i32> {
    match data_type {
        ty if *ty == crate::types::UNCONSTRAINED_NUMERIC => None,
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) if *s >= 0 => {
            Some(((i32::from(*p) << 16) | i32::from(*s)) + 4)
        }
        _ => None,
    }
}

#[async_trait]
impl TableProvider for Completed {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let rows = self.rows(state).await?;
        let table = MemTable::try_new(self.schema(), vec![vec![rows]])
            .map_err(|e| DataFusionError::Context(format!("{:?}", self.completion), Box::new(e)))?;
        table.scan(state, projection, filters, limit).await
    }
}
