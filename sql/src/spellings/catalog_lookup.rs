//! Scalar subqueries that look one row up in `pg_catalog`, as BI tools' inspectors write
//! them (`(SELECT typcollation FROM pg_type WHERE oid = a.atttypid)`), made plannable.
//!
//! DataFusion plans a correlated scalar subquery only when it aggregates (it cannot know
//! that a catalog lookup by key finds at most one row), and cannot decorrelate one whose
//! filter reads only the outer row (SQLAlchemy's `WHERE pg_attribute.atthasdef AND ...`).
//! So a lookup selects `first_value` of its one item: the row a key finds, NULL when none.
//! A lookup into a catalog table weir never fills (`EMPTY_CATALOG_TABLES`) is NULL outright.
//! Subqueries that read anything outside `pg_catalog` are left as they are.

use datafusion::sql::sqlparser::ast::{
    Expr, JoinOperator, ObjectName, Query, SelectItem, SetExpr, TableFactor, Value,
};

use super::{call, contains_aggregate, plain_select, selected_expr};

/// Catalog tables that have no rows in weir: no column has a default expression
/// (`pg_attrdef`) and there are no sequences (`pg_sequence`). A test checks that they are
/// empty.
pub(super) const EMPTY_CATALOG_TABLES: &[&str] = &["pg_attrdef", "pg_sequence"];

/// Rewrites `expr` if it is a scalar subquery that looks a row up in `pg_catalog`.
pub(super) fn rewrite_catalog_lookup(expr: &mut Expr) {
    let Expr::Subquery(query) = expr else { return };
    let Some(tables) = inner_catalog_tables(query) else {
        return;
    };
    if tables
        .iter()
        .any(|t| EMPTY_CATALOG_TABLES.contains(&t.as_str()))
    {
        *expr = Expr::Value(Value::Null.into());
        return;
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    if let [SelectItem::UnnamedExpr(item) | SelectItem::ExprWithAlias { expr: item, .. }] =
        select.projection.as_mut_slice()
    {
        *item = call("first_value", vec![item.clone()], Vec::new());
    }
}

/// The catalog tables every result row of a lookup needs one of (its FROM list and their
/// inner and cross joins), if `query` is a plain one-item, unaggregated SELECT that reads
/// only `pg_catalog` tables; None for any other query.
fn inner_catalog_tables(query: &Query) -> Option<Vec<String>> {
    let select = plain_select(query)?;
    if contains_aggregate(selected_expr(select)?) || select.from.is_empty() {
        return None;
    }
    let mut inner = Vec::new();
    for from in &select.from {
        inner.push(catalog_table(&from.relation)?);
        for join in &from.joins {
            let table = catalog_table(&join.relation)?;
            if matches!(
                join.join_operator,
                JoinOperator::Join(_) | JoinOperator::Inner(_) | JoinOperator::CrossJoin(_)
            ) {
                inner.push(table);
            }
        }
    }
    Some(inner)
}

/// The table's name if the factor is a `pg_catalog` table: `pg_catalog.pg_x`, or an
/// unqualified `pg_x` (pg_catalog comes first on every search path).
fn catalog_table(factor: &TableFactor) -> Option<String> {
    let TableFactor::Table {
        name, args: None, ..
    } = factor
    else {
        return None;
    };
    let parts = name_parts(name)?;
    match parts.as_slice() {
        [schema, table] if schema.eq_ignore_ascii_case("pg_catalog") => {
            Some(table.to_ascii_lowercase())
        }
        [table] if table.to_ascii_lowercase().starts_with("pg_") => {
            Some(table.to_ascii_lowercase())
        }
        _ => None,
    }
}

fn name_parts(name: &ObjectName) -> Option<Vec<&str>> {
    name.0
        .iter()
        .map(|p| p.as_ident().map(|i| i.value.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::normalized;

    #[test]
    fn a_catalog_lookup_selects_the_first_value_it_finds() {
        assert_eq!(
            normalized(
                "SELECT (SELECT t.typcollation FROM pg_catalog.pg_type t WHERE t.oid = a.atttypid) FROM pg_attribute a"
            ),
            "SELECT (SELECT first_value(t.typcollation) FROM pg_catalog.pg_type t WHERE t.oid = a.atttypid) FROM pg_attribute a"
        );
    }

    #[test]
    fn a_lookup_into_a_table_weir_never_fills_is_null() {
        assert_eq!(
            normalized(
                "SELECT CASE WHEN a.atthasdef THEN (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d WHERE a.atthasdef AND d.adrelid = a.attrelid) END FROM pg_attribute a"
            ),
            "SELECT CASE WHEN a.atthasdef THEN NULL END FROM pg_attribute a"
        );
    }

    #[tokio::test]
    async fn the_tables_weir_never_fills_are_empty() {
        let db = crate::Database::open(crate::Options::default()).unwrap();
        for table in super::EMPTY_CATALOG_TABLES {
            let sql = format!("SELECT * FROM pg_catalog.{table}");
            let rows = db.context().sql(&sql).await.unwrap().count().await.unwrap();
            assert_eq!(rows, 0, "{table}");
        }
    }

    #[test]
    fn subqueries_over_user_tables_or_aggregating_are_left_alone() {
        for sql in [
            "SELECT (SELECT v FROM t WHERE t.k = u.k) FROM u",
            "SELECT (SELECT max(t.oid) FROM pg_type t WHERE t.oid = u.k) FROM u",
            "SELECT (SELECT c.relname FROM pg_class c JOIN t ON t.k = c.oid) FROM u",
        ] {
            let once = normalized(sql);
            assert!(
                !once.contains("first_value") && !once.contains("NULL"),
                "{once}"
            );
        }
    }
}
