//! Lowers DataFusion's optimized logical plan to an engine `Graph`: scans become input
//! nodes, filters and projections `FilterProject`, GROUP BY `HashAggregate`, TUMBLE/HOP
//! `TimeWindow`, SESSION `SessionWindow`, equi-joins `HashJoin`, UNION ALL `Union`.
//! Anything else is refused with 0A000 naming it.

mod aggregate_filter;
mod join;
mod top_n;
mod unordered_pick;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};

use datafusion::arrow::datatypes::Schema;
use datafusion::common::DFSchema;
use datafusion::datasource::source_as_provider;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
// Deprecated in 55 in favour of LoweredAggregateBuilder; kept until the planner is reworked.
#[allow(deprecated)]
use datafusion::physical_planner::create_aggregate_expr_and_maybe_filter;
use weir_engine::operator::{
    FilterProject, HashAggregate, Limit, Operator, SessionWindow, TimeWindow, Union, WindowClose,
    column,
};
use weir_engine::runtime::{Graph, NodeId, Partitioning};

use crate::catalog::CatalogRelation;
use crate::error::{Result, SqlError};
use crate::provider::{CONSTANT_RELATION, ConstantRelation, TemporalTable, WindowTable, Windowing};

/// A relation the dataflow reads, and the node its streams enter.
pub(crate) struct Input {
    pub(crate) relation: String,
    pub(crate) provider: Arc<dyn CatalogRelation>,
    pub(crate) node: NodeId,
    /// The event time its readers may read up to (watermark alignment).
    pub(crate) read_limit: Arc<AtomicI64>,
}

/// A plan lowered to operators.
pub(crate) struct Lowering<'a> {
    pub(crate) graph: Graph,
    pub(crate) inputs: Vec<Input>,
    /// Late-row counters of the dataflow's windows and interval joins.
    pub(crate) late_rows: Vec<Arc<AtomicU64>>,
    /// Warnings for the client (NOTICE), such as a join whose state is unbounded.
    pub(crate) notices: Vec<String>,
    /// Whether the lowered plan's output only ever inserts (set by `lower_plan`).
    pub(crate) append_only: bool,
    props: &'a ExecutionProps,
    /// The catalog's relations by name: what a scan reads.
    relations: &'a dyn Fn(&str) -> Option<Arc<dyn CatalogRelation>>,
    emit_on_close: bool,
}

/// A lowered plan node: where its output comes from, and which of its columns are window
/// bounds (with the offset from that column at which the window closes).
struct Lowered {
    node: NodeId,
    windows: Vec<Option<i64>>,
    /// Only inserts ever come out (no retractions).
    append_only: bool,
}

fn unsupported(what: &str) -> SqlError {
    SqlError::unsupported(format!(
        "{what} in a materialized view is not supported yet"
    ))
}

impl<'a> Lowering<'a> {
    pub(crate) fn new(
        props: &'a ExecutionProps,
        relations: &'a dyn Fn(&str) -> Option<Arc<dyn CatalogRelation>>,
        emit_on_close: bool,
    ) -> Self {
        Self {
            graph: Graph::new(),
            inputs: Vec::new(),
            late_rows: Vec::new(),
            notices: Vec::new(),
            append_only: false,
            props,
            relations,
            emit_on_close,
        }
    }

    /// Lowers `plan`; returns the node whose output is the view's rows.
    pub(crate) fn lower_plan(&mut self, plan: &LogicalPlan) -> Result<NodeId> {
        let out = self.lower(plan)?;
        self.append_only = out.append_only;
        Ok(out.node)
    }

    fn add(&mut self, op: Box<dyn Operator>, inputs: &[NodeId]) -> Result<NodeId> {
        let id = self.graph.add(op);
        for &from in inputs {
            self.graph.connect(from, id, 0)?;
        }
        Ok(id)
    }

    /// A keyed operator: its input crosses an exchange that deals rows by `keys` (all to
    /// one instance when there are none), so each instance holds the state of its keys.
    fn add_keyed(
        &mut self,
        op: Box<dyn Operator>,
        input: NodeId,
        keys: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<NodeId> {
        let id = self.graph.add(op);
        self.graph.exchange(input, id, 0, partitioning(keys))?;
        Ok(id)
    }

    fn physical(&self, expr: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(create_physical_expr(
            expr,
            schema,
            self.props,
            &PhysicalPlanningContext::default(),
        )?)
    }

    fn input(&mut self, relation: &str, provider: Arc<dyn CatalogRelation>) -> Result<NodeId> {
        let node = self.add(Box::new(Union::new(relation)), &[])?;
        self.inputs.push(Input {
            relation: relation.to_string(),
            provider,
            node,
            read_limit: self.graph.read_limit(node),
        });
        Ok(node)
    }

    /// Replaces the nullable columns of `schema` a window scan does not read (`read`, and
    /// its time column) with NULLs, so that a window operator, which copies each row once
    /// per window it falls in, does not copy them (HOP: five copies of every bid's URL).
    fn null_unread(
        &mut self,
        input: NodeId,
        schema: &Schema,
        read: &[usize],
        time_column: usize,
    ) -> Result<NodeId> {
        let unread = |i: usize, f: &datafusion::arrow::datatypes::Field| {
            f.is_nullable() && i != time_column && !read.contains(&i)
        };
        if !schema
            .fields()
            .iter()
            .enumerate()
            .any(|(i, f)| unread(i, f))
        {
            return Ok(input);
        }
        let exprs = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| -> Result<Arc<dyn PhysicalExpr>> {
                Ok(if unread(i, f) {
                    let null = datafusion::common::ScalarValue::try_from(f.data_type())?;
                    Arc::new(datafusion::physical_expr::expressions::Literal::new(null))
                } else {
                    column(f.name(), i)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let op = FilterProject::new(None, exprs, Arc::new(schema.clone()));
        self.add(Box::new(op), &[input])
    }

    fn lower(&mut self, plan: &LogicalPlan) -> Result<Lowered> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                if scan.fetch.is_some() {
                    return Err(unsupported("LIMIT without ORDER BY"));
                }
                let provider = source_as_provider(&scan.source)?;
                let any: &dyn std::any::Any = provider.as_ref();
                let mut current = match any.downcast_ref::<WindowTable>() {
                    Some(w) => {
                        let mut input = self.input(&w.relation, Arc::clone(&w.input))?;
                        let schema = w.input.schema();
                        let mut windows = vec![None; schema.fields().len()];
                        // Sessions are per key: their rows cross an exchange by it.
                        let mut keys = None;
                        // Groups by window_end close when the watermark reaches it; by
                        // window_start, a window's size later (sessions: unknown).
                        let (op, late, append_only): (Box<dyn Operator>, _, _) = match &w.windowing
                        {
                            Windowing::Fixed(kind) => {
                                if let Some(read) = &scan.projection {
                                    input =
                                        self.null_unread(input, &schema, read, w.time_column)?;
                                }
                                let op = TimeWindow::try_new(&schema, w.time_column, *kind)?;
                                windows.push(Some(kind.size()));
                                let late = op.late_rows();
                                (Box::new(op), late, w.input.inserts_only())
                            }
                            Windowing::Session { gap, key } => {
                                let op = SessionWindow::try_new(
                                    &schema,
                                    key.clone(),
                                    w.time_column,
                                    *gap,
                                )?;
                                windows.push(None);
                                keys = Some(
                                    key.iter()
                                        .map(|&i| column(schema.field(i).name(), i))
                                        .collect(),
                                );
                                let late = op.late_rows();
                                (Box::new(op), late, false)
                            }
                        };
                        windows.push(Some(0));
                        self.late_rows.push(late);
                        let node = match keys {
                            Some(keys) => self.add_keyed(op, input, keys)?,
                            None => self.add(op, &[input])?,
                        };
                        Lowered {
                            node,
                            windows,
                            append_only,
                        }
                    }
                    None => {
                        // A temporal table is read like its table; the join looks it up.
                        let (relation, provider) = match any.downcast_ref::<TemporalTable>() {
                            Some(t) => (t.relation.as_str(), Arc::clone(&t.input)),
                            None => {
                                let name = scan.table_name.table();
                                let relation = (self.relations)(name).ok_or_else(|| {
                                    SqlError::unsupported(format!(
                                        "\"{name}\" cannot feed a materialized view"
                                    ))
                                })?;
                                (name, relation)
                            }
                        };
                        let node = self.input(relation, Arc::clone(&provider))?;
                        let n = provider.schema().fields().len();
                        Lowered {
                            node,
                            windows: vec![None; n],
                            append_only: provider.inserts_only(),
                        }
                    }
                };
                let full = provider.schema();
                let schema = scan.projected_schema.as_arrow().clone();
                if let Some(projection) = &scan.projection {
                    let columns = projection
                        .iter()
                        .map(|&i| column(full.field(i).name(), i))
                        .collect();
                    let op = FilterProject::new(None, columns, Arc::new(schema.clone()));
                    current = Lowered {
                        node: self.add(Box::new(op), &[current.node])?,
                        windows: projection.iter().map(|&i| current.windows[i]).collect(),
                        append_only: current.append_only,
                    };
                }
                if let Some(predicate) = scan.filters.iter().cloned().reduce(Expr::and) {
                    let pred = self.physical(&predicate, &scan.projected_schema)?;
                    current.node = self.filter(pred, &schema, current.node)?;
                }
                Ok(current)
            }
            LogicalPlan::Filter(f) => {
                if let Some(top) = self.row_number_filter(f)? {
                    return Ok(top);
                }
                let input = self.lower(&f.input)?;
                let pred = self.physical(&f.predicate, f.input.schema())?;
                let node = self.filter(pred, f.input.schema().as_arrow(), input.node)?;
                Ok(Lowered {
                    node,
                    windows: input.windows,
                    append_only: input.append_only,
                })
            }
            LogicalPlan::Projection(p) => {
                let input = self.lower(&p.input)?;
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| self.physical(e, p.input.schema()))
                    .collect::<Result<Vec<_>>>()?;
                let windows = p
                    .expr
                    .iter()
                    .map(|e| window_of(e, p.input.schema(), &input.windows))
                    .collect();
                let op = FilterProject::new(None, exprs, Arc::new(p.schema.as_arrow().clone()));
                Ok(Lowered {
                    node: self.add(Box::new(op), &[input.node])?,
                    windows,
                    append_only: input.append_only,
                })
            }
            LogicalPlan::Aggregate(a) => {
                let input = self.lower(&a.input)?;
                let schema = a.input.schema();
                let group_by = a
                    .group_expr
                    .iter()
                    .map(|e| self.physical(e, schema))
                    .collect::<Result<Vec<_>>>()?;
                let aggr_expr = unordered_pick::order_unordered_picks(&a.aggr_expr);
                let mut aggregates = Vec::with_capacity(aggr_expr.len());
                for e in &aggr_expr {
                    let e = &aggregate_filter::fold_filter(e)?;
                    #[allow(deprecated)]
                    let (agg, filter, _order) = create_aggregate_expr_and_maybe_filter(
                        e,
                        schema,
                        schema.as_arrow(),
                        self.props,
                    )?;
                    // An aggregate's ORDER BY is in `agg` (HashAggregate feeds it the
                    // ordering values); the FILTER was folded into its arguments above.
                    if filter.is_some() {
                        return Err(unsupported("FILTER inside an aggregate"));
                    }
                    aggregates.push(agg);
                }
                let windows: Vec<Option<i64>> = a
                    .group_expr
                    .iter()
                    .map(|e| window_of(e, schema, &input.windows))
                    .collect();
                let close = windows
                    .iter()
                    .enumerate()
                    .find_map(|(i, w)| w.map(|offset| (i, offset)));
                let mut op = HashAggregate::try_new(
                    group_by.clone(),
                    aggregates,
                    Arc::new(a.schema.as_arrow().clone()),
                )
                .map_err(|e| SqlError::unsupported(e.to_string()))?;
                if input.append_only {
                    op = op.with_append_only_input();
                }
                match close {
                    Some((column, offset_ns)) => {
                        op = op.with_window_close(WindowClose {
                            column,
                            offset_ns,
                            emit_on_close: self.emit_on_close,
                        });
                    }
                    None if self.emit_on_close => {
                        return Err(SqlError::unsupported(
                            "EMIT ON WINDOW CLOSE needs GROUP BY window_start or window_end of a TUMBLE or HOP",
                        ));
                    }
                    None => {}
                }
                let mut out_windows = windows;
                out_windows.resize(a.schema.fields().len(), None);
                Ok(Lowered {
                    node: self.add_keyed(Box::new(op), input.node, group_by)?,
                    windows: out_windows,
                    // Emitted on close, each window's rows come out once and stay.
                    append_only: self.emit_on_close && close.is_some(),
                })
            }
            LogicalPlan::Union(u) => {
                let mut nodes = Vec::with_capacity(u.inputs.len());
                let mut append_only = true;
                for i in &u.inputs {
                    let l = self.lower(i)?;
                    append_only &= l.append_only;
                    nodes.push(l.node);
                }
                let node = self.add(Box::new(Union::new("UNION ALL")), &nodes)?;
                Ok(Lowered {
                    node,
                    windows: vec![None; u.schema.fields().len()],
                    append_only,
                })
            }
            LogicalPlan::SubqueryAlias(s) => self.lower(&s.input),
            LogicalPlan::Join(j) => self.join(j),
            LogicalPlan::Sort(s) => match s.fetch {
                // A view has no order: ORDER BY without LIMIT changes nothing in it.
                None => self.lower(&s.input),
                Some(limit) => self.top_n(s, Limit { offset: 0, limit }),
            },
            LogicalPlan::Limit(l) => self.limit(l),
            LogicalPlan::Window(w) => self.over_window(w),
            // No table (SELECT 1), or none left (WHERE false): a constant relation feeds it,
            // so the view commits epochs and holds its row (or none).
            LogicalPlan::EmptyRelation(e) => {
                let provider = Arc::new(ConstantRelation::new(e.produce_one_row));
                Ok(Lowered {
                    node: self.input(CONSTANT_RELATION, provider)?,
                    windows: vec![None; e.schema.fields().len()],
                    append_only: true,
                })
            }
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

    /// A filter keeping every column.
    fn filter(
        &mut self,
        pred: Arc<dyn PhysicalExpr>,
        schema: &Schema,
        input: NodeId,
    ) -> Result<NodeId> {
        let columns = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| column(f.name(), i))
            .collect();
        let op = FilterProject::new(Some(pred), columns, Arc::new(schema.clone()));
        self.add(Box::new(op), &[input])
    }
}

/// How rows reach a keyed operator: by the hash of its keys, or all to one instance.
fn partitioning(keys: Vec<Arc<dyn PhysicalExpr>>) -> Partitioning {
    if keys.is_empty() {
        Partitioning::Single
    } else {
        Partitioning::Hash(keys)
    }
}

/// The window-close offset of `expr` when it is a bare window-bound column (or an alias of one).
fn window_of(expr: &Expr, schema: &DFSchema, windows: &[Option<i64>]) -> Option<i64> {
    match expr {
        Expr::Alias(a) => window_of(&a.expr, schema, windows),
        Expr::Column(c) => schema
            .index_of_column(c)
            .ok()
            .and_then(|i| windows.get(i).copied().flatten()),
        _ => None,
    }
}
