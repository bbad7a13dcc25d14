//! The catalog's array columns as clients take them apart: `pg_index`'s vectors
//! (`indkey int2vector`, `indclass oidvector`, ...) through `unnest(indkey)` and
//! `generate_subscripts(indkey, 1)` (SQLAlchemy's inspector) or
//! `information_schema._pg_expandarray(indkey)` with its fields read as `(keys).x` (pgjdbc's
//! `getPrimaryKeys`), and `pg_constraint`'s `conkey`/`confkey` through subscripts
//! (`con.conkey[pos.n]`, pgjdbc's `getImportedKeys`).
//!
//! weir's catalog keeps these columns as text (a vector as Postgres prints it, `1 2`; an
//! array as `[1, 2]`), so each use becomes one over the text split into an array of the
//! element type. Set-returning calls in one select list unnest in step, as in Postgres.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    AccessExpr, ArrayElemTypeDef, BinaryOperator, CastKind, DataType, Expr, FunctionArg,
    FunctionArgExpr, FunctionArguments, Query, SelectItem, SetExpr, Statement, Subscript, Value,
    Visit, Visitor,
};

use super::{call, function_name};

/// How a column's text lists its elements.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Layout {
    /// `1 2`, subscripts from 0 (`int2vector`, `oidvector`).
    Vector,
    /// `[1, 2]`, subscripts from 1 (`int2[]`).
    Array,
}

/// A catalog array column: its name, the type of its elements, and its layout.
pub(super) type ArrayColumn = (&'static str, DataType, Layout);

/// The catalog's array columns.
const ARRAY_COLUMNS: &[ArrayColumn] = &[
    ("indkey", DataType::SmallInt(None), Layout::Vector),
    ("indoption", DataType::SmallInt(None), Layout::Vector),
    ("indclass", DataType::BigInt(None), Layout::Vector),
    ("indcollation", DataType::BigInt(None), Layout::Vector),
    ("conkey", DataType::SmallInt(None), Layout::Array),
    ("confkey", DataType::SmallInt(None), Layout::Array),
];

/// `unnest(v)`, `generate_subscripts(v, 1)` and `_pg_expandarray(v)` of a vector column
/// `v`, over its elements.
pub(super) fn rewrite_vector_call(expr: &mut Expr) {
    let Expr::Function(f) = expr else { return };
    let Some(name) = function_name(&f.name).map(str::to_ascii_lowercase) else {
        return;
    };
    let FunctionArguments::List(list) = &mut f.args else {
        return;
    };
    let arity = list.args.len();
    let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(column))) = list.args.first_mut() else {
        return;
    };
    let Some((elements, _)) = elements_of(column) else {
        return;
    };
    match (name.as_str(), arity) {
        ("unnest", 1) => *column = elements,
        ("generate_subscripts", 2) => *expr = subscripts(elements),
        // A row (x, n) per element: the element and its subscript.
        ("_pg_expandarray", 1) => {
            let text = |s: &str| Expr::Value(Value::SingleQuotedString(s.into()).into());
            let each = call("unnest", vec![elements.clone()], Vec::new());
            *expr = call(
                "named_struct",
                vec![text("x"), each, text("n"), subscripts(elements)],
                Vec::new(),
            );
        }
        _ => {}
    }
}

/// The subscripts of a one-dimensional array, from 1, one row each.
fn subscripts(elements: Expr) -> Expr {
    let count = call("cardinality", vec![elements], Vec::new());
    let one = Expr::Value(Value::Number("1".into(), false).into());
    let series = call("generate_series", vec![one, count], Vec::new());
    call("unnest", vec![series], Vec::new())
}

/// Postgres's field selection from a composite value, `(keys).x`, as DataFusion's
/// `get_field(keys, 'x')` (DataFusion reads only `keys['x']`).
pub(super) fn rewrite_field_selection(expr: &mut Expr) {
    let Expr::CompoundFieldAccess { root, access_chain } = expr else {
        return;
    };
    if !matches!(root.as_ref(), Expr::Nested(_)) {
        return;
    }
    let mut fields = Vec::with_capacity(access_chain.len());
    for access in access_chain.iter() {
        match access {
            AccessExpr::Dot(Expr::Identifier(field)) => fields.push(field.value.clone()),
            _ => return,
        }
    }
    let mut selected = root.as_ref().clone();
    for field in fields {
        let name = Expr::Value(Value::SingleQuotedString(field).into());
        selected = call("get_field", vec![selected, name], Vec::new());
    }
    *expr = selected;
}

/// The aliases a statement's select lists give array columns (pgjdbc's `getIndexInfo`
/// selects `i.indoption AS I_INDOPTION` and subscripts `tmp.I_INDOPTION[...]`), each with
/// the column it names.
pub(super) fn vector_aliases(statement: &Statement) -> Vec<(String, &'static ArrayColumn)> {
    let mut aliases = Vec::new();
    let _ = statement.visit(&mut AliasCollector(&mut aliases));
    aliases
}

struct AliasCollector<'a>(&'a mut Vec<(String, &'static ArrayColumn)>);

impl Visitor for AliasCollector<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let SetExpr::Select(select) = query.body.as_ref() {
            for item in &select.projection {
                if let SelectItem::ExprWithAlias { expr, alias } = item
                    && let Some(column) = array_column(expr)
                {
                    self.0.push((alias.value.to_ascii_lowercase(), column));
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// `c[i]` of an array column `c` (or of an alias of one in `aliases`): the element of its
/// elements at `i` (from 0 for a vector).
pub(super) fn rewrite_subscript(expr: &mut Expr, aliases: &[(String, &'static ArrayColumn)]) {
    let Expr::CompoundFieldAccess { root, access_chain } = expr else {
        return;
    };
    // `con.conkey[i]` parses as `con` with the chain `.conkey`, `[i]`.
    let Some((AccessExpr::Subscript(Subscript::Index { index }), dots)) = access_chain.split_last()
    else {
        return;
    };
    let mut parts = match root.as_ref() {
        Expr::Identifier(id) => vec![id.clone()],
        Expr::CompoundIdentifier(ids) => ids.clone(),
        _ => return,
    };
    for dot in dots {
        let AccessExpr::Dot(Expr::Identifier(id)) = dot else {
            return;
        };
        parts.push(id.clone());
    }
    let column = match parts.len() {
        1 => Expr::Identifier(parts.remove(0)),
        _ => Expr::CompoundIdentifier(parts),
    };
    let aliased = column_name(&column).and_then(|name| {
        aliases
            .iter()
            .find(|(alias, _)| name.eq_ignore_ascii_case(alias))
            .map(|(_, c)| *c)
    });
    let Some(array) = aliased.or_else(|| array_column(&column)) else {
        return;
    };
    let (elements, layout) = elements(&column, array);
    let index = match layout {
        Layout::Array => index.clone(),
        Layout::Vector => Expr::BinaryOp {
            left: Box::new(Expr::Nested(Box::new(index.clone()))),
            op: BinaryOperator::Plus,
            right: Box::new(Expr::Value(Value::Number("1".into(), false).into())),
        },
    };
    *expr = Expr::CompoundFieldAccess {
        root: Box::new(Expr::Nested(Box::new(elements))),
        access_chain: vec![AccessExpr::Subscript(Subscript::Index { index })],
    };
}

/// The name a column reference ends in.
fn column_name(column: &Expr) -> Option<&str> {
    match column {
        Expr::Identifier(id) => Some(&id.value),
        Expr::CompoundIdentifier(ids) => Some(&ids.last()?.value),
        _ => None,
    }
}

/// The entry of `ARRAY_COLUMNS` that `column` names.
fn array_column(column: &Expr) -> Option<&'static ArrayColumn> {
    let name = column_name(column)?;
    ARRAY_COLUMNS
        .iter()
        .find(|(c, ..)| name.eq_ignore_ascii_case(c))
}

/// `CAST(string_to_array(text, sep) AS type[])` if `column` names an array column, and
/// the column's layout.
fn elements_of(column: &Expr) -> Option<(Expr, Layout)> {
    Some(elements(column, array_column(column)?))
}

/// `column`'s text read as the elements of `array` (the column it is, or an alias of it).
fn elements(column: &Expr, array: &ArrayColumn) -> (Expr, Layout) {
    let (_, element, layout) = array;
    let text = |s: &str| Expr::Value(Value::SingleQuotedString(s.into()).into());
    let split = match layout {
        Layout::Vector => call(
            "string_to_array",
            vec![column.clone(), text(" ")],
            Vec::new(),
        ),
        Layout::Array => {
            let inside = call("btrim", vec![column.clone(), text("[]")], Vec::new());
            call("string_to_array", vec![inside, text(", ")], Vec::new())
        }
    };
    let elements = Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(split),
        data_type: DataType::Array(ArrayElemTypeDef::SquareBracket(
            Box::new(element.clone()),
            None,
        )),
        array: false,
        format: None,
    };
    (elements, *layout)
}

#[cfg(test)]
mod tests {
    use super::super::tests::normalized;

    #[test]
    fn unnest_and_subscripts_of_a_vector_column_read_its_elements() {
        assert_eq!(
            normalized(
                "SELECT unnest(i.indkey) AS attnum, generate_subscripts(i.indkey, 1) AS ord, unnest(a) FROM pg_index i"
            ),
            "SELECT unnest(CAST(string_to_array(i.indkey, ' ') AS SMALLINT[])) AS attnum, \
             unnest(generate_series(1, cardinality(CAST(string_to_array(i.indkey, ' ') AS SMALLINT[])))) AS ord, \
             unnest(a) FROM pg_index i"
        );
    }

    #[test]
    fn expandarray_is_a_row_per_element_and_its_fields_are_selected() {
        let elements = "CAST(string_to_array(i.indkey, ' ') AS SMALLINT[])";
        assert_eq!(
            normalized(
                "SELECT (information_schema._pg_expandarray(i.indkey)).n, (r.keys).x FROM pg_index i, r"
            ),
            format!(
                "SELECT get_field((named_struct('x', unnest({elements}), 'n', \
                 unnest(generate_series(1, cardinality({elements}))))), 'n'), \
                 get_field((r.keys), 'x') FROM pg_index i, r"
            )
        );
    }

    #[test]
    fn a_subscript_of_an_array_column_reads_its_elements() {
        assert_eq!(
            normalized(
                "SELECT con.conkey[pos.n], i.indkey[0] FROM pg_constraint con, pg_index i, pos"
            ),
            "SELECT (CAST(string_to_array(btrim(con.conkey, '[]'), ', ') AS SMALLINT[]))[pos.n], \
             (CAST(string_to_array(i.indkey, ' ') AS SMALLINT[]))[(0) + 1] \
             FROM pg_constraint con, pg_index i, pos"
        );
    }

    #[test]
    fn a_subscript_of_an_alias_of_a_vector_column_reads_its_elements() {
        assert_eq!(
            normalized(
                "SELECT tmp.I_INDOPTION[tmp.ORDINAL_POSITION - 1] & 1 \
                 FROM (SELECT i.indoption AS I_INDOPTION, 1 AS ORDINAL_POSITION FROM pg_index i) AS tmp"
            ),
            "SELECT (CAST(string_to_array(tmp.I_INDOPTION, ' ') AS SMALLINT[]))[(tmp.ORDINAL_POSITION - 1) + 1] & 1 \
             FROM (SELECT i.indoption AS I_INDOPTION, 1 AS ORDINAL_POSITION FROM pg_index i) AS tmp"
        );
    }
}
