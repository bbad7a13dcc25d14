//! Materialized views over DML tables: the optimized DataFusion plan lowered to a chain of
//! engine operators (FilterProject, HashAggregate) feeding a `Materialize`, kept current by
//! the table's changelog and read through `ViewTable`.
//! The chain runs inside the table's commit, so a DML statement's effect is in every
//! dependent view when the statement returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::DFSchema;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use datafusion::physical_plan::ExecutionPlan;
// Deprecated in 55 in favour of LoweredAggregateBuilder; kept until the planner is reworked.
#[allow(deprecated)]
use datafusion::physical_planner::create_aggregate_expr_and_maybe_filter;
use parking_lot::RwLock;
use weir_engine::operator::{
    Emitter, FilterProject, HashAggregate, Materialize, Operator, Snapshot, column,
};
use weir_engine::{Barrier, ChangeBatch};

use crate::error::{Result, SqlError};

/// A view's operators between its source table and its arrangement.
pub(crate) struct Dataflow {
    /// The table the view reads.
    pub(crate) source: String,
    operators: Vec<Box<dyn Operator>>,
    materialize: Materialize,
    epoch: u64,
}

impl Dataflow {
    /// Lowers an optimized plan; constructs that cannot be maintained yet fail with 0A000.
    pub(crate) fn plan(plan: &LogicalPlan, props: &ExecutionProps) -> Result<Self> {
        let mut operators = Vec::new();
        let source = lower(plan, props, &mut operators)?;
        let materialize = Materialize::new(Arc::new(plan.schema().as_arrow().clone()))?;
        Ok(Self {
            source,
            operators,
            materialize,
            epoch: 0,
        })
    }

    pub(crate) fn reader(&self) -> Arc<RwLock<Snapshot>> {
        self.materialize.reader()
    }

    /// Runs one committed change of the source through the chain and publishes the result.
    pub(crate) fn apply(&mut self, change: ChangeBatch) -> weir_engine::Result<()> {
        let mut batches = vec![change];
        for op in &mut self.operators {
            let mut out = Emitter::default();
            for b in batches {
                op.on_batch(0, b, &mut out)?;
            }
            batches = out.drain();
        }
        let mut out = Emitter::default();
        for b in batches {
            self.materialize.on_batch(0, b, &mut out)?;
        }
        self.epoch += 1;
        self.materialize.on_barrier(
            Barrier {
                epoch: self.epoch,
                stop: false,
            },
            &mut out,
        )
    }
}

/// Every column of `schema`, unchanged (a filter's projection).
fn identity(schema: &Schema) -> Vec<Arc<dyn PhysicalExpr>> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| column(f.name(), i))
        .collect()
}

fn unsupported(what: &str) -> SqlError {
    SqlError::unsupported(format!(
        "{what} in a materialized view is not supported yet"
    ))
}

fn physical(
    expr: &Expr,
    schema: &DFSchema,
    props: &ExecutionProps,
) -> Result<Arc<dyn PhysicalExpr>> {
    Ok(create_physical_expr(
        expr,
        schema,
        props,
        &PhysicalPlanningContext::default(),
    )?)
}

/// Appends the operators for `plan` (inputs first) and returns the source table's name.
fn lower(
    plan: &LogicalPlan,
    props: &ExecutionProps,
    ops: &mut Vec<Box<dyn Operator>>,
) -> Result<String> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            if scan.fetch.is_some() {
                return Err(unsupported("LIMIT"));
            }
            let schema = scan.projected_schema.as_arrow().clone();
            if let Some(projection) = &scan.projection {
                let full = scan.source.schema();
                let columns = projection
                    .iter()
                    .map(|&i| column(full.field(i).name(), i))
                    .collect();
                ops.push(Box::new(FilterProject::new(
                    None,
                    columns,
                    Arc::new(schema.clone()),
                )));
            }
            if let Some(predicate) = scan.filters.iter().cloned().reduce(Expr::and) {
                let pred = physical(&predicate, &scan.projected_schema, props)?;
                ops.push(Box::new(FilterProject::new(
                    Some(pred),
                    identity(&schema),
                    Arc::new(schema),
                )));
            }
            Ok(scan.table_name.table().to_string())
        }
        LogicalPlan::Filter(f) => {
            let source = lower(&f.input, props, ops)?;
            let schema = f.input.schema();
            let pred = physical(&f.predicate, schema, props)?;
            let arrow = schema.as_arrow();
            ops.push(Box::new(FilterProject::new(
                Some(pred),
                identity(arrow),
                Arc::new(arrow.clone()),
            )));
            Ok(source)
        }
        LogicalPlan::Projection(p) => {
            let source = lower(&p.input, props, ops)?;
            let exprs = p
                .expr
                .iter()
                .map(|e| physical(e, p.input.schema(), props))
                .collect::<Result<Vec<_>>>()?;
            ops.push(Box::new(FilterProject::new(
                None,
                exprs,
                Arc::new(p.schema.as_arrow().clone()),
            )));
            Ok(source)
        }
        LogicalPlan::Aggregate(a) => {
            if a.group_expr.is_empty() {
                return Err(unsupported("an aggregate without GROUP BY"));
            }
            let source = lower(&a.input, props, ops)?;
            let input = a.input.schema();
            let group_by = a
                .group_expr
                .iter()
                .map(|e| physical(e, input, props))
                .collect::<Result<Vec<_>>>()?;
            let mut aggregates = Vec::with_capacity(a.aggr_expr.len());
            for e in &a.aggr_expr {
                #[allow(deprecated)]
                let (agg, filter, order) =
                    create_aggregate_expr_and_maybe_filter(e, input, input.as_arrow(), props)?;
                if filter.is_some() || !order.is_empty() {
                    return Err(unsupported("FILTER or ORDER BY inside an aggregate"));
                }
                aggregates.push(agg);
            }
            let op =
                HashAggregate::try_new(group_by, aggregates, Arc::new(a.schema.as_arrow().clone()))
                    .map_err(|e| SqlError::unsupported(e.to_string()))?;
            ops.push(Box::new(op));
            Ok(source)
        }
        LogicalPlan::SubqueryAlias(s) => lower(&s.input, props, ops),
        other => Err(unsupported(
            other
                .display()
                .to_string()
                .split(':')
                .next()
                .unwrap_or("this construct"),
        )),
    }
}

/// A materialized view as a DataFusion table: the last published epoch of its rows.
#[derive(Debug)]
pub(crate) struct ViewTable {
    schema: SchemaRef,
    snapshot: Arc<RwLock<Snapshot>>,
    /// Set by DROP: the changelog subscription ends at the next change.
    pub(crate) dropped: Arc<AtomicBool>,
}

impl ViewTable {
    pub(crate) fn new(schema: SchemaRef, snapshot: Arc<RwLock<Snapshot>>) -> Self {
        Self {
            schema,
            snapshot,
            dropped: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn drop_view(&self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[async_trait]
impl TableProvider for ViewTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let rows = self.snapshot.read().rows.clone();
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![rows]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}
