//! TUMBLE(rel, col, size), HOP(rel, col, slide, size) and SESSION(rel, col, gap) as table
//! functions: the relation's rows with `window_start` and `window_end` added. Dataflows use
//! the engine's `TimeWindow`/`SessionWindow`; an ad hoc scan expands to a logical plan
//! (HOP: one projection per overlapping window, UNION ALL; SESSION: window functions).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Column, ScalarValue, plan_err};
use datafusion::datasource::{TableType, provider_as_source};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, cast, lit};
use datafusion::physical_plan::ExecutionPlan;
use weir_engine::operator::WindowKind;

use crate::catalog::CatalogRelation;

/// Finds a catalog relation's provider by name.
pub(crate) type Lookup = Arc<dyn Fn(&str) -> Option<Arc<dyn CatalogRelation>> + Send + Sync>;

/// How rows are assigned to windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Windowing {
    /// TUMBLE or HOP: windows fixed on the time axis.
    Fixed(WindowKind),
    /// Per-key sessions; the key (input columns) is the GROUP BY above the scan, bound by
    /// the `SessionKeys` optimizer rule (empty: one sequence of sessions over all rows).
    Session { gap: i64, key: Vec<usize> },
}

/// A windowed relation.
#[derive(Debug, Clone)]
pub(crate) struct WindowTable {
    pub(crate) relation: String,
    pub(crate) input: Arc<dyn CatalogRelation>,
    pub(crate) time_column: usize,
    pub(crate) windowing: Windowing,
    pub(crate) schema: SchemaRef,
}

impl WindowTable {
    /// The window bound at hop `k` back from the row's latest window, in ns.
    fn start_ns(&self, k: i64) -> Expr {
        let (slide, _) = self.slide_size();
        let t = self.time_ns();
        let rem = ((t.clone() % lit(slide)) + lit(slide)) % lit(slide);
        t - rem - lit(k * slide)
    }

    fn slide_size(&self) -> (i64, i64) {
        match self.windowing {
            Windowing::Fixed(WindowKind::Tumble { size }) => (size, size),
            Windowing::Fixed(WindowKind::Hop { slide, size }) => (slide, size),
            Windowing::Session { gap, .. } => (gap, gap),
        }
    }

    /// The time column as ns since the epoch.
    pub(super) fn time_ns(&self) -> Expr {
        let name = self.input.schema().field(self.time_column).name().clone();
        let col = Expr::Column(Column::new(Some(self.relation.clone()), name));
        cast(
            cast(col, DataType::Timestamp(TimeUnit::Nanosecond, None)),
            DataType::Int64,
        )
    }

    fn plan(&self) -> Result<LogicalPlan> {
        if let Windowing::Session { gap, key } = &self.windowing {
            return super::session_plan::plan(self, *gap, key);
        }
        let source = provider_as_source(Arc::clone(&self.input) as Arc<dyn TableProvider>);
        let scan = LogicalPlanBuilder::scan(self.relation.clone(), source, None)?.build()?;
        let time_type = self.schema.field(self.time_column).data_type().clone();
        let as_time = |ns: Expr| {
            cast(
                cast(ns, DataType::Timestamp(TimeUnit::Nanosecond, None)),
                time_type.clone(),
            )
        };
        let (slide, size) = self.slide_size();
        let hops = (size + slide - 1) / slide;
        let mut plan: Option<LogicalPlanBuilder> = None;
        for k in 0..hops {
            let mut exprs: Vec<Expr> = scan
                .schema()
                .columns()
                .into_iter()
                .map(Expr::Column)
                .collect();
            exprs.push(as_time(self.start_ns(k)).alias("window_start"));
            exprs.push(as_time(self.start_ns(k) + lit(size)).alias("window_end"));
            let mut b = LogicalPlanBuilder::from(scan.clone());
            if k > 0 {
                // Only windows that still contain the row: start > t - size.
                b = b.filter(self.start_ns(k).gt(self.time_ns() - lit(size)))?;
            }
            let b = b.project(exprs)?;
            plan = Some(match plan {
                None => b,
                Some(p) => p.union(b.build()?)?,
            });
        }
        plan.ok_or_else(|| DataFusionError::Plan("window without hops".into()))?
            .build()
    }
}

#[async_trait]
impl TableProvider for WindowTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| DataFusionError::Internal("window scan outside a session".into()))?;
        let mut plan = LogicalPlanBuilder::from(self.plan()?);
        if let Some(p) = projection {
            let cols: Vec<Expr> = p
                .iter()
                .map(|&i| Expr::Column(Column::from_name(self.schema.field(i).name())))
                .collect();
            plan = plan.project(cols)?;
        }
        state.create_physical_plan(&plan.build()?).await
    }
}

/// Which window table function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    Tumble,
    Hop,
    Session,
}

/// `TUMBLE`, `HOP` or `SESSION` as a DataFusion table function.
pub(crate) struct WindowFunction {
    function: Function,
    lookup: Lookup,
}

impl std::fmt::Debug for WindowFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl WindowFunction {
    pub(crate) fn tumble(lookup: Lookup) -> Self {
        Self {
            function: Function::Tumble,
            lookup,
        }
    }

    pub(crate) fn hop(lookup: Lookup) -> Self {
        Self {
            function: Function::Hop,
            lookup,
        }
    }

    pub(crate) fn session(lookup: Lookup) -> Self {
        Self {
            function: Function::Session,
            lookup,
        }
    }

    fn name(&self) -> &'static str {
        match self.function {
            Function::Tumble => "TUMBLE",
            Function::Hop => "HOP",
            Function::Session => "SESSION",
        }
    }

    fn usage(&self) -> &'static str {
        match self.function {
            Function::Tumble => "TUMBLE(relation, time_column, size)",
            Function::Hop => "HOP(relation, time_column, slide, size)",
            Function::Session => "SESSION(relation, time_column, gap)",
        }
    }
}

/// An identifier argument (a relation or a column name).
pub(super) fn ident(e: &Expr, what: &str, f: &str) -> Result<String> {
    match e {
        Expr::Column(c) => Ok(c.name.clone()),
        Expr::Literal(ScalarValue::Utf8(Some(s)), _) => Ok(s.clone()),
        other => plan_err!("{f}: the {what} argument must be a name, not {other}"),
    }
}

/// An INTERVAL argument in ns.
fn interval_ns(e: &Expr, f: &str) -> Result<i64> {
    let ns = match e {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            Some(v.days as i64 * 86_400_000_000_000 + v.nanoseconds)
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            Some(v.days as i64 * 86_400_000_000_000 + v.milliseconds as i64 * 1_000_000)
        }
        _ => None,
    };
    match ns {
        Some(ns) if ns > 0 => Ok(ns),
        _ => plan_err!("{f}: window sizes must be positive INTERVALs of days or less, not {e}"),
    }
}

impl TableFunctionImpl for WindowFunction {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> Result<Arc<dyn TableProvider>> {
        let f = self.name();
        let exprs = args.exprs();
        let expected = if self.function == Function::Hop { 4 } else { 3 };
        if exprs.len() != expected {
            return plan_err!("{f} takes {expected} arguments: {}", self.usage());
        }
        let relation = ident(&exprs[0], "relation", f)?;
        let input = (self.lookup)(&relation).ok_or_else(|| {
            DataFusionError::Plan(format!("relation \"{relation}\" does not exist"))
        })?;
        let column = ident(&exprs[1], "time column", f)?;
        let schema = input.schema();
        let (time_column, field) = schema.column_with_name(&column).ok_or_else(|| {
            DataFusionError::Plan(format!(
                "column \"{column}\" does not exist in \"{relation}\""
            ))
        })?;
        if !matches!(field.data_type(), DataType::Timestamp(..)) {
            return plan_err!("{f}: column \"{column}\" must be a TIMESTAMP");
        }
        let windowing = match self.function {
            Function::Tumble => Windowing::Fixed(WindowKind::Tumble {
                size: interval_ns(&exprs[2], f)?,
            }),
            Function::Hop => Windowing::Fixed(WindowKind::Hop {
                slide: interval_ns(&exprs[2], f)?,
                size: interval_ns(&exprs[3], f)?,
            }),
            Function::Session => Windowing::Session {
                gap: interval_ns(&exprs[2], f)?,
                key: Vec::new(),
            },
        };
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        for name in ["window_start", "window_end"] {
            fields.push(Field::new(name, field.data_type().clone(), true));
        }
        Ok(Arc::new(WindowTable {
            relation,
            input,
            time_column,
            windowing,
            schema: Arc::new(Schema::new(fields)),
        }))
    }
}
