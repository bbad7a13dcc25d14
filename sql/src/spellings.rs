//! Postgres spellings DataFusion does not read, rewritten before planning: timestamps
//! without seconds (`timestamp '2020-04-15 12:02'`), hex bytea (`'\x01ff'`), interval input
//! forms (`'21 days 23:59:59'`), `ARRAY(query)`,
//! `to_char`'s template patterns (`'YYYY-MM-DD HH24:MI'`), the relation's own name for an
//! unaliased `HOP(bid, ...)` or temporal join, and the catalog calls of Postgres clients.

use std::ops::ControlFlow;

mod catalog_lookup;
mod catalog_vectors;
mod interval;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, DataType, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentClause,
    FunctionArgumentList, FunctionArguments, GroupByExpr, Ident, LambdaFunction,
    LambdaFunctionParameter, LambdaSyntax, ObjectName, OneOrManyWithParens, OrderBy, OrderByExpr,
    OrderByKind, Query, Select, SelectItem, SetExpr, Statement, TableAlias, TableAliasColumnDef,
    TableFactor, Value, VisitMut, VisitorMut, visit_expressions, visit_expressions_mut,
};

/// The column name an `ARRAY(query)` rewrite gives the query's one column.
const ARRAY_ELEMENT: &str = "__weir_element";

/// Table functions over a relation that take its name when they have no alias.
const RELATION_FUNCTIONS: &[&str] = &["tumble", "hop", "session", "temporal"];

/// Rewrites the statement in place.
pub(crate) fn normalize_spellings(statement: &mut Statement) {
    // Table factors first: the `ARRAY(query)` rewrite reads a normalized `unnest`.
    let _ = statement.visit(&mut RelationAliases);
    let _ = statement.visit(&mut PostgresColumns);
    let vector_aliases = catalog_vectors::vector_aliases(statement);
    let _ = visit_expressions_mut(statement, |expr| {
        rewrite_literal(expr);
        rewrite_regproc_lookup(expr);
        rewrite_array_subquery(expr);
        rewrite_to_char(expr);
        rewrite_mod(expr);
        rewrite_jsonb(expr);
        interval::rewrite_interval_literal(expr);
        rewrite_relation_function(expr);
        rewrite_like_escape(expr);
        rewrite_acl_to_string(expr);
        catalog_lookup::rewrite_catalog_lookup(expr);
        catalog_vectors::rewrite_vector_call(expr);
        catalog_vectors::rewrite_field_selection(expr);
        catalog_vectors::rewrite_subscript(expr, &vector_aliases);
        ControlFlow::<()>::Continue(())
    });
}

/// `information_schema.columns` as Postgres fills it: `data_type` in Postgres's names
/// (`bigint`, not `Int64`: Grafana finds time columns by it) and `ordinal_position` from 1.
/// After the visit of the factor, so the query it becomes, which reads DataFusion's table,
/// is not rewritten again.
struct PostgresColumns;

impl VisitorMut for PostgresColumns {
    type Break = ();

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let is_columns = match name.0.as_slice() {
            [schema, table] => [schema, table]
                .iter()
                .zip(["information_schema", "columns"])
                .all(|(part, want)| {
                    part.as_ident()
                        .is_some_and(|i| i.value.eq_ignore_ascii_case(want))
                }),
            _ => false,
        };
        if !is_columns {
            return ControlFlow::Continue(());
        }
        let Some(subquery) = parse_template(&format!(
            "SELECT table_catalog, table_schema, table_name, column_name, \
             ordinal_position + 1 AS ordinal_position, column_default, is_nullable, \
             {}(data_type) AS data_type, character_maximum_length, character_octet_length, \
             numeric_precision, numeric_precision_radix, numeric_scale, datetime_precision, \
             interval_type FROM information_schema.columns",
            crate::functions::PG_DATA_TYPE
        )) else {
            return ControlFlow::Continue(());
        };
        let alias = alias
            .take()
            .map_or_else(|| Ident::new("columns"), |a| a.name);
        *factor = derived_table(subquery, alias);
        ControlFlow::Continue(())
    }
}

/// `FROM HOP(bid, ...)` as `FROM HOP(bid, ...) AS bid`, and a temporal join's
/// `JOIN rates FOR SYSTEM_TIME AS OF PROCTIME()` (`TEMPORAL(rates)`) as `... AS rates`, so
/// `bid.auction` and `rates.currency` resolve, as RisingWave's Nexmark texts write them.
struct RelationAliases;

impl VisitorMut for RelationAliases {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        unqualify_unnest(factor);
        name_series_after_alias(factor);
        scalar_function_as_table(factor);
        if let TableFactor::Table {
            name,
            alias: alias @ None,
            args: Some(args),
            ..
        } = factor
            && function_name(name)
                .is_some_and(|f| RELATION_FUNCTIONS.contains(&f.to_ascii_lowercase().as_str()))
            && let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(relation))) = args.args.first()
        {
            let relation = match relation {
                Expr::Identifier(id) => Some(id.clone()),
                Expr::CompoundIdentifier(ids) => ids.last().cloned(),
                _ => None,
            };
            *alias = relation.map(|name| TableAlias {
                explicit: true,
                name,
                columns: Vec::new(),
                at: None,
            });
        }
        ControlFlow::Continue(())
    }
}

/// Scalar functions Postgres clients call in FROM, where Postgres reads a scalar function
/// as a one-row table whose column is named after the alias (Grafana's table list reads
/// `string_to_array(current_setting('search_path'), ',') s`).
const SCALAR_FUNCTIONS_IN_FROM: &[&str] = &["string_to_array"];

/// `FROM generate_series(a, b) AS i` as `... AS i(i)`: Postgres names a one-column
/// function's column after the alias, DataFusion names it `value`.
fn name_series_after_alias(factor: &mut TableFactor) {
    if let TableFactor::Table {
        name,
        alias: Some(alias),
        args: Some(_),
        ..
    } = factor
        && function_name(name).is_some_and(|f| f.eq_ignore_ascii_case("generate_series"))
        && alias.columns.is_empty()
    {
        alias.columns = vec![TableAliasColumnDef {
            name: alias.name.clone(),
            data_type: None,
        }];
    }
}

/// `FROM string_to_array(x, ',') s` as `FROM (SELECT string_to_array(x, ',') AS s) AS s`
/// (see `SCALAR_FUNCTIONS_IN_FROM`).
fn scalar_function_as_table(factor: &mut TableFactor) {
    let TableFactor::Table {
        name,
        alias: Some(alias),
        args: Some(args),
        ..
    } = factor
    else {
        return;
    };
    let Some(function) = function_name(name) else {
        return;
    };
    if !SCALAR_FUNCTIONS_IN_FROM
        .iter()
        .any(|f| function.eq_ignore_ascii_case(f))
    {
        return;
    }
    let column = alias
        .columns
        .first()
        .map_or_else(|| alias.name.clone(), |c| c.name.clone());
    let args: Vec<String> = args.args.iter().map(ToString::to_string).collect();
    let Some(subquery) = parse_template(&format!(
        "SELECT {function}({}) AS {column}",
        args.join(", ")
    )) else {
        return;
    };
    let alias = alias.name.clone();
    *factor = derived_table(subquery, alias);
}

/// `(subquery) AS alias`.
fn derived_table(subquery: Box<Query>, alias: Ident) -> TableFactor {
    TableFactor::Derived {
        lateral: false,
        subquery,
        alias: Some(TableAlias {
            explicit: true,
            name: alias,
            columns: Vec::new(),
            at: None,
        }),
        sample: None,
    }
}

/// `FROM pg_catalog.unnest(a) x` as `FROM unnest(a) AS x(x)`: DataFusion reads only the
/// `UNNEST` table factor (the compatibility parser drops `pg_catalog.` and leaves a table
/// function call), and names its column after the call unless told,
/// where Postgres names a one-column function's column after the alias.
fn unqualify_unnest(factor: &mut TableFactor) {
    if let TableFactor::Table {
        name,
        alias,
        args: Some(args),
        ..
    } = factor
        && function_name(name).is_some_and(|f| f.eq_ignore_ascii_case("unnest"))
        && match name.0.as_slice() {
            [_] => true,
            [schema, _] => schema
                .as_ident()
                .is_some_and(|s| s.value.eq_ignore_ascii_case("pg_catalog")),
            _ => false,
        }
    {
        let array_exprs = args
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect();
        *factor = TableFactor::UNNEST {
            alias: alias.take(),
            array_exprs,
            with_offset: false,
            with_offset_alias: None,
            with_ordinality: false,
        };
    }
    if let TableFactor::UNNEST {
        alias: Some(alias),
        array_exprs,
        ..
    } = factor
        && array_exprs.len() == 1
        && alias.columns.is_empty()
    {
        alias.columns = vec![TableAliasColumnDef {
            name: alias.name.clone(),
            data_type: None,
        }];
    }
}

/// `ARRAY(SELECT x FROM ... ORDER BY y)` (psql's `\du` and `\d+` send it) as the scalar
/// subquery `(SELECT array_agg(x ORDER BY y) FROM ...)`, which DataFusion decorrelates.
/// A query with its own grouping or limit is wrapped instead, `(SELECT array_agg(e) FROM
/// (query) AS a(e))`, which can neither refer to the outer query nor keep the query's
/// order. One difference in both: over no rows the array is NULL where Postgres gives `{}`.
fn rewrite_array_subquery(expr: &mut Expr) {
    let Expr::Function(f) = expr else { return };
    let FunctionArguments::Subquery(query) = &f.args else {
        return;
    };
    if !f.name.to_string().eq_ignore_ascii_case("array") {
        return;
    }
    if let Some(mapped) = array_of_unnest(query) {
        *expr = mapped;
        return;
    }
    let mut query = query.clone();
    if let Some(element) = single_column(&query) {
        let order_by = match query.order_by.take() {
            Some(OrderBy {
                kind: OrderByKind::Expressions(e),
                ..
            }) => e,
            _ => Vec::new(),
        };
        if let SetExpr::Select(select) = query.body.as_mut() {
            select.projection = vec![SelectItem::UnnamedExpr(call(
                "array_agg",
                vec![element],
                order_by,
            ))];
        }
        *expr = Expr::Subquery(query);
        return;
    }
    // A fixed template, its subquery then swapped for the real one.
    let template = format!(
        "SELECT array_agg({ARRAY_ELEMENT}) FROM (SELECT 1) AS __weir_array({ARRAY_ELEMENT})"
    );
    let Some(mut outer) = parse_template(&template) else {
        return;
    };
    if let SetExpr::Select(select) = outer.body.as_mut()
        && let Some(from) = select.from.first_mut()
        && let TableFactor::Derived { subquery, .. } = &mut from.relation
    {
        *subquery = query;
        *expr = Expr::Subquery(outer);
    }
}

/// `ARRAY(SELECT e(x) FROM unnest(a) x)` (psql's `\d+` sends one over a column of the
/// outer row, which a subquery cannot unnest) as `array_transform(a, x -> e(x))`, and
/// `ARRAY(SELECT x FROM unnest(a) x)` as `a`. None for any other query.
fn array_of_unnest(query: &Query) -> Option<Expr> {
    let select = plain_select(query)?;
    if query.order_by.is_some() || select.selection.is_some() {
        return None;
    }
    let [from] = select.from.as_slice() else {
        return None;
    };
    let (array, alias) = match &from.relation {
        TableFactor::UNNEST {
            alias: Some(alias),
            array_exprs,
            with_offset: false,
            with_ordinality: false,
            ..
        } if array_exprs.len() == 1 => (&array_exprs[0], alias),
        _ => return None,
    };
    if !from.joins.is_empty() || alias.columns.len() > 1 {
        return None;
    }
    let element = alias.columns.first().map_or(&alias.name, |c| &c.name);
    let body = selected_expr(select)?;
    if matches!(body, Expr::Identifier(id) if id.value == element.value) {
        return Some(array.clone());
    }
    let lambda = Expr::Lambda(LambdaFunction {
        params: OneOrManyWithParens::One(LambdaFunctionParameter {
            name: element.clone(),
            data_type: None,
        }),
        body: Box::new(body.clone()),
        syntax: LambdaSyntax::Arrow,
    });
    Some(call(
        "array_transform",
        vec![array.clone(), lambda],
        Vec::new(),
    ))
}

/// The one expression a plain `SELECT x FROM ... [WHERE ...] [ORDER BY ...]` selects, if
/// the query is that simple and `x` aggregates nothing.
fn single_column(query: &Query) -> Option<Expr> {
    let e = selected_expr(plain_select(query)?)?;
    (!contains_aggregate(e)).then(|| e.clone())
}

/// The query's SELECT, if it has no grouping, DISTINCT, limit, CTE or set operation.
fn plain_select(query: &Query) -> Option<&Select> {
    if query.limit_clause.is_some() || query.fetch.is_some() || query.with.is_some() {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let grouped = match &select.group_by {
        GroupByExpr::Expressions(e, _) => !e.is_empty(),
        GroupByExpr::All(_) => true,
    };
    (!grouped && select.having.is_none() && select.distinct.is_none()).then_some(select.as_ref())
}

/// The expression of a one-item select list.
fn selected_expr(select: &Select) -> Option<&Expr> {
    match select.projection.as_slice() {
        [SelectItem::UnnamedExpr(e)] | [SelectItem::ExprWithAlias { expr: e, .. }] => Some(e),
        _ => None,
    }
}

/// The last part of a function's name (`unnest` of `pg_catalog.unnest`).
fn function_name(name: &ObjectName) -> Option<&str> {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.as_str())
}

/// A template query, parsed: the rewrites put the statement's own expressions into it
/// rather than parsing their text again, which could cost what the statement's budget
/// already bounded once.
fn parse_template(template: &str) -> Option<Box<Query>> {
    match Parser::parse_sql(&PostgreSqlDialect {}, template)
        .ok()?
        .pop()?
    {
        Statement::Query(query) => Some(query),
        _ => None,
    }
}

/// Whether an expression calls one of the aggregates in `AGGREGATES` (not as a window
/// function): such a select item cannot take `array_agg` around it.
fn contains_aggregate(expr: &Expr) -> bool {
    let mut found = false;
    let _ = visit_expressions(expr, |e| {
        if let Expr::Function(f) = e {
            let name = f.name.to_string().to_ascii_lowercase();
            found |= f.over.is_none() && AGGREGATES.contains(&name.as_str());
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// Aggregate names a select item of `ARRAY(query)` might use.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "stddev",
    "variance",
    "first_value",
    "last_value",
];

/// Literals of types DataFusion reads differently: timestamps without seconds, hex bytea.
fn rewrite_literal(expr: &mut Expr) {
    let (data_type, value) = match expr {
        Expr::TypedString(t) => match &mut t.value.value {
            Value::SingleQuotedString(s) => (&t.data_type, s),
            _ => return,
        },
        Expr::Cast {
            data_type, expr: e, ..
        } => match e.as_mut() {
            Expr::Value(v) => match &mut v.value {
                Value::SingleQuotedString(s) => (&*data_type, s),
                _ => return,
            },
            _ => return,
        },
        _ => return,
    };
    match data_type {
        DataType::Timestamp(..) | DataType::Datetime(_) => {
            if let Some(with_seconds) = add_seconds(value) {
                *value = with_seconds;
            }
        }
        DataType::Bytea => {
            if let Some(hex) = value.strip_prefix("\\x") {
                *expr = decode_hex(hex);
            }
        }
        _ => {}
    }
}

/// A function named as a `regproc` (pgjdbc's `typinput = 'pg_catalog.array_in'::regproc`),
/// which the compatibility parser turns into `(SELECT oid FROM pg_catalog.pg_proc WHERE
/// proname = 'pg_catalog.array_in')`, as the function's unqualified name: weir's catalog
/// keeps a `regproc` column (`pg_type.typinput`) as the name.
fn rewrite_regproc_lookup(expr: &mut Expr) {
    let Expr::Subquery(query) = expr else { return };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return;
    };
    let Some(Expr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    }) = &select.selection
    else {
        return;
    };
    let (Expr::Identifier(column), Expr::Value(v)) = (left.as_ref(), right.as_ref()) else {
        return;
    };
    let Value::SingleQuotedString(name) = &v.value else {
        return;
    };
    let from = select
        .from
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>();
    if !column.value.eq_ignore_ascii_case("proname")
        || from != ["pg_catalog.pg_proc"]
        || select.projection.len() != 1
        || !select.projection[0].to_string().eq_ignore_ascii_case("oid")
    {
        return;
    }
    let unqualified = name.rsplit('.').next().unwrap_or_default().to_string();
    *expr = Expr::Value(Value::SingleQuotedString(unqualified).into());
}

/// jsonb's spellings as weir's functions (`sql/src/jsonb.rs`): `x::jsonb` as `jsonb(x)`,
/// `j -> k` as `jsonb_get(j, k)` and `j ->> k` as `jsonb_get_text(j, k)`.
fn rewrite_jsonb(expr: &mut Expr) {
    let (name, args) = match expr {
        Expr::Cast {
            data_type: DataType::JSONB,
            expr: inner,
            ..
        } => ("jsonb", vec![inner.as_ref().clone()]),
        Expr::TypedString(t) if t.data_type == DataType::JSONB => {
            ("jsonb", vec![Expr::Value(t.value.clone())])
        }
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::Arrow => (
                "jsonb_get",
                vec![left.as_ref().clone(), right.as_ref().clone()],
            ),
            BinaryOperator::LongArrow => (
                "jsonb_get_text",
                vec![left.as_ref().clone(), right.as_ref().clone()],
            ),
            _ => return,
        },
        _ => return,
    };
    *expr = call(name, args, vec![]);
}

/// `mod(a, b)` as `a % b` (DataFusion has the operator only; Nexmark q13 calls it).
fn rewrite_mod(expr: &mut Expr) {
    let Expr::Function(f) = expr else { return };
    if !function_name(&f.name).is_some_and(|n| n.eq_ignore_ascii_case("mod")) {
        return;
    }
    let FunctionArguments::List(list) = &f.args else {
        return;
    };
    let [
        FunctionArg::Unnamed(FunctionArgExpr::Expr(a)),
        FunctionArg::Unnamed(FunctionArgExpr::Expr(b)),
    ] = list.args.as_slice()
    else {
        return;
    };
    *expr = Expr::Nested(Box::new(Expr::BinaryOp {
        left: Box::new(Expr::Nested(Box::new(a.clone()))),
        op: BinaryOperator::Modulo,
        right: Box::new(Expr::Nested(Box::new(b.clone()))),
    }));
}

/// `to_char(x, '<template>')` with Postgres's template patterns (YYYY, MM, DD, HH24, MI,
/// ...) written as the strftime patterns DataFusion's `to_char` reads. A template with a
/// `%` already is taken as strftime (what `to_char` read before), and left alone.
fn rewrite_to_char(expr: &mut Expr) {
    let Expr::Function(f) = expr else { return };
    if !f.name.to_string().eq_ignore_ascii_case("to_char") {
        return;
    }
    let FunctionArguments::List(list) = &mut f.args else {
        return;
    };
    if let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) = list.args.get_mut(1)
        && let Value::SingleQuotedString(template) = &mut v.value
        && !template.contains('%')
    {
        *template = strftime_of(template);
    }
}

/// `x LIKE p ESCAPE 'c'` with another escape than backslash (SQLAlchemy's inspector sends
/// `ESCAPE '/'`), which DataFusion refuses: the pattern is rewritten to backslash escapes,
/// by `like_pattern(p, 'c')` (`crate::functions::like_pattern_udf`), or at once when the
/// pattern is a literal.
fn rewrite_like_escape(expr: &mut Expr) {
    let (Expr::Like {
        pattern,
        escape_char,
        ..
    }
    | Expr::ILike {
        pattern,
        escape_char,
        ..
    }) = expr
    else {
        return;
    };
    let Some(Value::SingleQuotedString(escape)) = escape_char.as_ref().map(|v| &v.value) else {
        return;
    };
    let mut chars = escape.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else {
        return;
    };
    if c == '\\' {
        return;
    }
    if let Expr::Value(v) = pattern.as_mut()
        && let Value::SingleQuotedString(p) = &mut v.value
    {
        *p = crate::functions::like_pattern(p, c);
    } else {
        let text = Expr::Value(Value::SingleQuotedString(c.to_string()).into());
        **pattern = call("like_pattern", vec![(**pattern).clone(), text], Vec::new());
    }
    *escape_char = None;
}

/// Catalog functions of a relation's OID that weir answers from its own tables, each as a
/// scalar subquery whose `__weir_c.oid = 0` the argument replaces (aliases no outer query
/// uses, so that an argument like psql's `c.oid` still refers to the outer row): `pg_get_viewdef(oid [,
/// pretty])` from `pg_matviews` (a materialized view's query), and `pg_table_size(oid)`,
/// `pg_relation_size` and `pg_total_relation_size` from `weir_catalog.dataflows` (a view's
/// state bytes; NULL for other relations, whose rows live in Kafka or a table log),
/// `pg_table_is_visible(oid)` from the relation's schema, and `pg_database_size(name)` (a
/// template without WHERE ignores its argument).
const RELATION_FUNCTIONS_BY_OID: &[(&str, &str)] = &[
    (
        "pg_get_viewdef",
        "SELECT max(__weir_m.definition) FROM pg_catalog.pg_matviews __weir_m \
         JOIN pg_catalog.pg_namespace __weir_n ON __weir_n.nspname = __weir_m.schemaname \
         JOIN pg_catalog.pg_class __weir_c ON __weir_c.relname = __weir_m.matviewname AND __weir_c.relnamespace = __weir_n.oid \
         WHERE __weir_c.oid = 0",
    ),
    ("pg_table_size", STATE_BYTES),
    ("pg_relation_size", STATE_BYTES),
    ("pg_total_relation_size", STATE_BYTES),
    // Visible: in a schema of the search path (public) or pg_catalog, which Postgres
    // searches first; weir_catalog and information_schema are not (psql's `\d` lists
    // visible relations only).
    (
        "pg_table_is_visible",
        "SELECT bool_or(__weir_n.nspname IN ('public', 'pg_catalog')) FROM pg_catalog.pg_class __weir_c \
         JOIN pg_catalog.pg_namespace __weir_n ON __weir_c.relnamespace = __weir_n.oid \
         WHERE __weir_c.oid = 0",
    ),
    // The one database's size: its views' state (psql's `\l+`).
    (
        "pg_database_size",
        "SELECT sum(__weir_d.state_bytes) FROM weir_catalog.dataflows __weir_d",
    ),
];

const STATE_BYTES: &str = "SELECT max(__weir_d.state_bytes) FROM weir_catalog.dataflows __weir_d \
     JOIN pg_catalog.pg_class __weir_c ON __weir_c.relname = __weir_d.name \
     JOIN pg_catalog.pg_namespace __weir_n ON __weir_c.relnamespace = __weir_n.oid AND __weir_n.nspname = 'public' \
     WHERE __weir_c.oid = 0";

/// `array_to_string(nspacl, sep)` (psql's `\dn+`, `\l+`) as the column itself: weir's
/// catalog ACL columns (`nspacl`, `datacl`, `relacl`, ...) are text, NULL as no privilege is
/// granted through them, where Postgres has `aclitem[]`.
fn rewrite_acl_to_string(expr: &mut Expr) {
    let Expr::Function(f) = expr else { return };
    if !function_name(&f.name).is_some_and(|n| n.eq_ignore_ascii_case("array_to_string")) {
        return;
    }
    let FunctionArguments::List(list) = &f.args else {
        return;
    };
    let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(column))) = list.args.first() else {
        return;
    };
    let name = match column {
        Expr::Identifier(id) => &id.value,
        Expr::CompoundIdentifier(ids) => match ids.last() {
            Some(id) => &id.value,
            None => return,
        },
        _ => return,
    };
    if name.to_ascii_lowercase().ends_with("acl") {
        *expr = Expr::Cast {
            kind: datafusion::sql::sqlparser::ast::CastKind::Cast,
            array: false,
            expr: Box::new(column.clone()),
            data_type: DataType::Text,
            format: None,
        };
    }
}

/// A call of one of `RELATION_FUNCTIONS_BY_OID` as its subquery.
fn rewrite_relation_function(expr: &mut Expr) {
    let Expr::Function(f) = expr else { return };
    let Some(name) = function_name(&f.name) else {
        return;
    };
    let Some((_, template)) = RELATION_FUNCTIONS_BY_OID
        .iter()
        .find(|(n, _)| name.eq_ignore_ascii_case(n))
    else {
        return;
    };
    let FunctionArguments::List(list) = &f.args else {
        return;
    };
    let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(oid))) = list.args.first() else {
        return;
    };
    if list.args.len() > 2 {
        return;
    }
    let Some(mut query) = parse_template(template) else {
        return;
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    match select.selection.as_mut() {
        Some(Expr::BinaryOp { right, .. }) => **right = oid.clone(),
        // A template without WHERE does not depend on its argument.
        None => {}
        Some(_) => return,
    }
    *expr = Expr::Subquery(query);
}

/// Postgres's to_char template patterns, longest first, as strftime patterns (the case of
/// a pattern does not change what it means here; Postgres's fill mode and ordinal suffixes
/// are not read).
const TEMPLATE_PATTERNS: &[(&str, &str)] = &[
    ("HH24", "%H"),
    ("HH12", "%I"),
    ("YYYY", "%Y"),
    ("MONTH", "%B"),
    ("DDD", "%j"),
    ("MON", "%b"),
    ("DAY", "%A"),
    ("HH", "%I"),
    ("MI", "%M"),
    ("SS", "%S"),
    ("MS", "%3f"),
    ("US", "%6f"),
    ("YY", "%y"),
    ("MM", "%m"),
    ("DD", "%d"),
    ("DY", "%a"),
    ("AM", "%p"),
    ("PM", "%p"),
    ("TZ", "%Z"),
];

/// A Postgres to_char template as a strftime format: patterns replaced, double-quoted text
/// copied as is, every other character copied (`%` doubled).
fn strftime_of(template: &str) -> String {
    let mut out = String::with_capacity(template.len() + 8);
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            let quoted = &rest[1..];
            let (text, after) = match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            };
            out.push_str(&text.replace('%', "%%"));
            rest = after;
            continue;
        }
        let head: String = rest
            .chars()
            .take(5)
            .collect::<String>()
            .to_ascii_uppercase();
        if let Some((pattern, strftime)) =
            TEMPLATE_PATTERNS.iter().find(|(p, _)| head.starts_with(p))
        {
            out.push_str(strftime);
            rest = &rest[pattern.len()..];
            continue;
        }
        if c == '%' {
            out.push('%');
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `YYYY-MM-DD HH:MM` (then nothing, or a zone) with `:00` seconds inserted; None if the
/// value is not of that form.
fn add_seconds(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let time_at = 11;
    if bytes.len() < time_at + 4 || !matches!(bytes[10], b' ' | b'T') {
        return None;
    }
    let time = &value[time_at..];
    let hour_len = time.find(':')?;
    let rest = &time[hour_len + 1..];
    let minute_len = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let digits = |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(&time[..hour_len]) || !digits(&rest[..minute_len]) {
        return None;
    }
    let tail = &rest[minute_len..];
    if !(tail.is_empty() || tail.starts_with(['+', '-', 'Z', ' '])) {
        return None;
    }
    let cut = value.len() - tail.len();
    Some(format!("{}:00{}", &value[..cut], tail))
}

/// `decode('<hex>', 'hex')`, the bytea a `'\x..'` literal stands for.
fn decode_hex(hex: &str) -> Expr {
    let text = |s: &str| Expr::Value(Value::SingleQuotedString(s.to_string()).into());
    call("decode", vec![text(hex), text("hex")], Vec::new())
}

/// A call of `name(args ORDER BY order_by)`.
fn call(name: &str, args: Vec<Expr>, order_by: Vec<OrderByExpr>) -> Expr {
    let clauses = if order_by.is_empty() {
        Vec::new()
    } else {
        vec![FunctionArgumentClause::OrderBy(order_by)]
    };
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                .collect(),
            clauses,
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_char_templates_become_strftime() {
        for (template, strftime) in [
            ("YYYY-MM-DD", "%Y-%m-%d"),
            ("yyyy-mm-dd", "%Y-%m-%d"),
            ("HH24:MI:SS.MS", "%H:%M:%S.%3f"),
            ("HH:mm", "%I:%m"),
            ("Day, DD Mon YYYY", "%A, %d %b %Y"),
            ("\"at\" HH12 AM 100%", "at %I %p 100%%"),
        ] {
            assert_eq!(strftime_of(template), strftime, "{template}");
        }
    }

    /// `sql` as it is planned: parsed, its spellings normalized, printed.
    pub(super) fn normalized(sql: &str) -> String {
        let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        normalize_spellings(&mut statements[0]);
        statements[0].to_string()
    }

    #[test]
    fn a_regproc_lookup_is_the_function_name() {
        assert_eq!(
            normalized(
                "SELECT typname FROM pg_catalog.pg_type WHERE typinput = \
                 (SELECT oid FROM pg_catalog.pg_proc WHERE proname = 'pg_catalog.array_in')"
            ),
            "SELECT typname FROM pg_catalog.pg_type WHERE typinput = 'array_in'"
        );
    }

    #[test]
    fn mod_is_the_remainder_operator() {
        assert_eq!(
            normalized("SELECT mod(auction, 10000) FROM bid"),
            "SELECT ((auction) % (10000)) FROM bid"
        );
    }

    #[test]
    fn arrays_of_unnest_become_array_transform() {
        assert_eq!(
            normalized("SELECT array(SELECT 'toast.' || x FROM pg_catalog.unnest(o) x) FROM t"),
            "SELECT array_transform(o, x -> 'toast.' || x) FROM t"
        );
        assert_eq!(
            normalized("SELECT ARRAY(SELECT x FROM unnest(o) AS x) FROM t"),
            "SELECT o FROM t"
        );
        assert_eq!(
            normalized("SELECT * FROM pg_catalog.unnest(a) x"),
            "SELECT * FROM UNNEST(a) x (x)"
        );
    }

    #[test]
    fn like_escapes_become_backslashes() {
        assert_eq!(
            normalized("SELECT 1 WHERE n NOT LIKE 'pg/_%' ESCAPE '/'"),
            "SELECT 1 WHERE n NOT LIKE 'pg\\_%'"
        );
        assert_eq!(
            normalized("SELECT 1 WHERE n LIKE $1 || '%' ESCAPE '/'"),
            "SELECT 1 WHERE n LIKE like_pattern($1 || '%', '/')"
        );
    }

    #[test]
    fn timestamps_without_seconds_get_them() {
        assert_eq!(
            add_seconds("2020-04-15 12:02").as_deref(),
            Some("2020-04-15 12:02:00")
        );
        assert_eq!(
            add_seconds("2020-04-15T1:02+02").as_deref(),
            Some("2020-04-15T1:02:00+02")
        );
        assert_eq!(add_seconds("2020-04-15 12:02:03"), None);
        assert_eq!(add_seconds("2020-04-15"), None);
    }
}
