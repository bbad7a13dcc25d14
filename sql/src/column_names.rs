//! Output column names as Postgres derives them (its FigureColname): a column's own name, a
//! function's name, a cast's type, `case`, and `?column?` for anything else.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::{Column, TableReference};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection};
use datafusion::sql::sqlparser::ast::{
    self, AccessExpr, DataType, ObjectName, Query, SelectItem, SetExpr, TimezoneInfo,
    TrimWhereField,
};

use crate::error::{Result, SqlError};

/// Postgres's name for a column it cannot name.
const UNNAMED_COLUMN: &str = "?column?";

/// The alias a select item gets while planning when its Postgres name repeats another
/// item's (DataFusion wants distinct names); [`finish_names`] puts the real name back.
const PLACEHOLDER_PREFIX: &str = "__weir_column_";

/// How sure a derived name is; a cast keeps its operand's name only if that is strong.
#[derive(Clone, Copy, PartialEq)]
enum Strength {
    Weak,
    Strong,
}

/// Names given to the select list before planning, for [`finish_names`].
#[derive(Debug, Default)]
pub(crate) struct SelectNames {
    /// (placeholder alias, Postgres's name) of items whose name repeats.
    placeholders: Vec<(String, String)>,
}

/// Gives every unaliased expression in the statement's (first) select list the name
/// Postgres derives for it, as an alias, so planning names the column and ORDER BY can
/// refer to it (`ORDER BY count`). Plain column references already carry their names.
pub(crate) fn name_select_list(statement: &mut ast::Statement) -> SelectNames {
    let mut names = SelectNames::default();
    let ast::Statement::Query(query) = statement else {
        return names;
    };
    let Some(items) = first_select_items(query) else {
        return names;
    };
    let derived: Vec<Option<String>> = items
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) => Some(expr_name(e)),
            SelectItem::ExprWithAlias { alias, .. } => Some(ident(alias)),
            _ => None,
        })
        .collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for n in derived.iter().flatten() {
        *counts.entry(n.as_str()).or_default() += 1;
    }
    let mut aliases = Vec::with_capacity(items.len());
    for (i, (item, name)) in items.iter().zip(&derived).enumerate() {
        let alias = match (item, name) {
            (SelectItem::UnnamedExpr(ast::Expr::Identifier(_)), Some(n))
            | (SelectItem::UnnamedExpr(ast::Expr::CompoundIdentifier(_)), Some(n))
                if counts[n.as_str()] == 1 =>
            {
                None
            }
            (SelectItem::UnnamedExpr(_), Some(n)) if counts[n.as_str()] == 1 => Some(n.clone()),
            (SelectItem::UnnamedExpr(_), Some(n)) => {
                let placeholder = format!("{PLACEHOLDER_PREFIX}{i}");
                names.placeholders.push((placeholder.clone(), n.clone()));
                Some(placeholder)
            }
            _ => None,
        };
        aliases.push(alias);
    }
    for (item, alias) in items.iter_mut().zip(aliases) {
        if let (Some(alias), SelectItem::UnnamedExpr(e)) = (alias, &*item) {
            *item = SelectItem::ExprWithAlias {
                expr: e.clone(),
                alias: ast::Ident::with_quote('"', alias),
            };
        }
    }
    names
}

/// Renames placeholder columns of a plan planned after [`name_select_list`] to their
/// Postgres names (repeated names get distinct qualifiers, which DataFusion accepts). In a
/// materialized view a derived name may not repeat another column's, as in Postgres (42701).
pub(crate) fn finish_names(
    plan: LogicalPlan,
    names: &SelectNames,
    distinct_required: bool,
) -> Result<LogicalPlan> {
    let schema = Arc::clone(plan.schema());
    let final_names: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            names
                .placeholders
                .iter()
                .find(|(p, _)| p == f.name())
                .map_or_else(|| f.name().clone(), |(_, n)| n.clone())
        })
        .collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for n in &final_names {
        *counts.entry(n.as_str()).or_default() += 1;
    }
    // Only derived names are checked: a view over `SELECT *` of a join has long been
    // allowed to repeat its inputs' column names.
    let repeated = names
        .placeholders
        .iter()
        .map(|(_, n)| n)
        .find(|n| counts.get(n.as_str()).is_some_and(|c| *c > 1));
    if distinct_required && let Some(n) = repeated {
        return Err(SqlError::new(
            "42701",
            format!("column \"{n}\" specified more than once"),
        ));
    }
    if names.placeholders.is_empty() {
        return Ok(plan);
    }
    let exprs = final_names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (qualifier, field) = schema.qualified_field(i);
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            if counts[name.as_str()] > 1 {
                column.alias_qualified(Some(TableReference::bare(format!("#{i}"))), name)
            } else if name != field.name() {
                column.alias(name)
            } else {
                column
            }
        })
        .collect();
    Ok(LogicalPlan::Projection(Projection::try_new(
        exprs,
        Arc::new(plan),
    )?))
}

/// The query's first SELECT list (set operations take their names from the left).
fn first_select_items(query: &mut Query) -> Option<&mut Vec<SelectItem>> {
    let mut body = query.body.as_mut();
    loop {
        match body {
            SetExpr::Select(s) => return Some(&mut s.projection),
            SetExpr::Query(q) => body = q.body.as_mut(),
            SetExpr::SetOperation { left, .. } => body = left.as_mut(),
            _ => return None,
        }
    }
}

/// The name of a subquery's first column, as a scalar subquery's column is named.
fn first_column_name(query: &Query) -> Option<String> {
    let mut body = query.body.as_ref();
    let select = loop {
        match body {
            SetExpr::Select(s) => break s,
            SetExpr::Query(q) => body = q.body.as_ref(),
            SetExpr::SetOperation { left, .. } => body = left.as_ref(),
            _ => return None,
        }
    };
    match select.projection.first()? {
        SelectItem::UnnamedExpr(e) => Some(expr_name(e)),
        SelectItem::ExprWithAlias { alias, .. } => Some(ident(alias)),
        _ => None,
    }
}

/// The name Postgres gives a select-list expression without an alias.
fn expr_name(expr: &ast::Expr) -> String {
    figure(expr).map_or_else(|| UNNAMED_COLUMN.to_string(), |(n, _)| n)
}

fn figure(expr: &ast::Expr) -> Option<(String, Strength)> {
    use ast::Expr as E;
    let strong = |s: &str| Some((s.to_string(), Strength::Strong));
    match expr {
        E::Identifier(id) => Some((ident(id), Strength::Strong)),
        E::CompoundIdentifier(ids) => ids.last().map(|id| (ident(id), Strength::Strong)),
        E::Function(f) => object_last(&f.name).map(|n| (n, Strength::Strong)),
        E::Cast {
            expr, data_type, ..
        } => match figure(expr) {
            Some(named) if named.1 == Strength::Strong => Some(named),
            _ => Some((type_name(data_type), Strength::Weak)),
        },
        E::TypedString(t) => Some((type_name(&t.data_type), Strength::Weak)),
        E::Interval(_) => Some(("interval".into(), Strength::Weak)),
        E::Case { .. } => Some(("case".into(), Strength::Weak)),
        E::Nested(e) | E::Collate { expr: e, .. } => figure(e),
        E::CompoundFieldAccess { root, access_chain } => {
            // The last field selected (`(r).f`), else the base's name (`arr[1]`).
            let field = access_chain.iter().rev().find_map(|a| match a {
                AccessExpr::Dot(E::Identifier(id)) => Some(ident(id)),
                _ => None,
            });
            match field {
                Some(f) => Some((f, Strength::Strong)),
                None => figure(root),
            }
        }
        E::Subquery(q) => first_column_name(q).map(|n| (n, Strength::Strong)),
        E::Exists { .. } => strong("exists"),
        E::Array(_) => strong("array"),
        E::Tuple(_) => strong("row"),
        E::Extract { .. } => strong("extract"),
        E::Ceil { .. } => strong("ceil"),
        E::Floor { .. } => strong("floor"),
        E::Position { .. } => strong("position"),
        E::Substring { .. } => strong("substring"),
        E::Overlay { .. } => strong("overlay"),
        E::AtTimeZone { .. } => strong("timezone"),
        E::Trim { trim_where, .. } => strong(match trim_where {
            Some(TrimWhereField::Leading) => "ltrim",
            Some(TrimWhereField::Trailing) => "rtrim",
            _ => "btrim",
        }),
        _ => None,
    }
}

/// An identifier as the planner resolves it: unquoted ones fold to lower case.
fn ident(id: &ast::Ident) -> String {
    match id.quote_style {
        Some(_) => id.value.clone(),
        None => id.value.to_ascii_lowercase(),
    }
}

fn object_last(name: &ObjectName) -> Option<String> {
    name.0.last().and_then(|p| p.as_ident()).map(ident)
}

/// Postgres's internal name of a type (`double precision` -> `float8`), as a cast names
/// its column.
fn type_name(ty: &DataType) -> String {
    use DataType as D;
    match ty {
        D::Boolean | D::Bool => "bool",
        D::SmallInt(_) | D::Int2(_) => "int2",
        D::Int(_) | D::Integer(_) | D::Int4(_) => "int4",
        D::BigInt(_) | D::Int8(_) => "int8",
        D::Real | D::Float4 => "float4",
        D::Float(ast::ExactNumberInfo::Precision(p)) if *p <= 24 => "float4",
        D::Double(_) | D::DoublePrecision | D::Float8 | D::Float(_) => "float8",
        D::Decimal(_) | D::Numeric(_) | D::Dec(_) => "numeric",
        D::Text | D::String(_) => "text",
        D::Varchar(_) | D::CharVarying(_) | D::CharacterVarying(_) => "varchar",
        D::Char(_) | D::Character(_) => "bpchar",
        D::Date => "date",
        D::Time(_, TimezoneInfo::Tz | TimezoneInfo::WithTimeZone) => "timetz",
        D::Time(_, _) => "time",
        D::Timestamp(_, TimezoneInfo::Tz | TimezoneInfo::WithTimeZone) => "timestamptz",
        D::Timestamp(_, _) => "timestamp",
        D::Interval { .. } => "interval",
        D::JSON => "json",
        D::JSONB => "jsonb",
        D::Bytea => "bytea",
        D::Uuid => "uuid",
        D::Regclass => "regclass",
        D::Array(ast::ArrayElemTypeDef::SquareBracket(inner, _))
        | D::Array(ast::ArrayElemTypeDef::AngleBracket(inner))
        | D::Array(ast::ArrayElemTypeDef::Parenthesis(inner)) => return type_name(inner),
        D::Custom(name, _) => return object_last(name).unwrap_or_else(|| ty.to_string()),
        other => return other.to_string().to_ascii_lowercase(),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn names(sql: &str) -> Vec<String> {
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, &format!("SELECT {sql}"))
            .unwrap()
            .remove(0);
        let placeholders = name_select_list(&mut statement).placeholders;
        let ast::Statement::Query(mut q) = statement else {
            panic!("not a query")
        };
        first_select_items(&mut q)
            .unwrap()
            .iter()
            .map(|i| match i {
                SelectItem::ExprWithAlias { alias, .. } => placeholders
                    .iter()
                    .find(|(p, _)| *p == alias.value)
                    .map_or_else(|| alias.value.clone(), |(_, n)| format!("{n} (repeated)")),
                SelectItem::UnnamedExpr(e) => format!("{e} (as planned)"),
                _ => "*".into(),
            })
            .collect()
    }

    #[test]
    fn names_follow_postgres() {
        assert_eq!(
            names(
                "count(*), avg(t.price), 'NaN'::float8, price::float8, 1 + 1, \
                 CASE WHEN true THEN 1 END, (a), timestamp '2020-01-01', \"MixedCase\", \
                 Upper(x), trim(' a '), x AS y, *, (SELECT max(v) FROM t), -1, \
                 CAST(1 AS double precision), interval '1 day', arr[1], price"
            ),
            [
                "count",
                "avg",
                "float8 (repeated)",
                "price (repeated)",
                "?column? (repeated)",
                "case",
                "a",
                "timestamp",
                "\"MixedCase\" (as planned)",
                "upper",
                "btrim",
                "y",
                "*",
                "max",
                "?column? (repeated)",
                "float8 (repeated)",
                "interval",
                "arr",
                "price (repeated)"
            ]
        );
    }
}
