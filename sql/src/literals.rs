//! Postgres literal spellings DataFusion does not read, rewritten before planning:
//! timestamps without seconds (`timestamp '2020-04-15 12:02'`) and hex bytea (`'\x01ff'`).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    DataType, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, Ident, ObjectName, Statement, Value, visit_expressions_mut,
};

/// Rewrites the statement's literals in place.
pub(crate) fn normalize_literals(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        rewrite(expr);
        ControlFlow::<()>::Continue(())
    });
}

fn rewrite(expr: &mut Expr) {
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
    let arg = |s: &str| {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(
            Value::SingleQuotedString(s.to_string()).into(),
        )))
    };
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new("decode")]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![arg(hex), arg("hex")],
            clauses: Vec::new(),
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
