//! Interval literals in Postgres's input forms that DataFusion's parser does not read: a
//! time of day as a field (`'21 days 23:59:59'`, `'-00:00:01'`), explicit `+` signs
//! (`'-1 day +2 hours'`), `@` and `ago` (`'@ 1 day ago'`). Each is rewritten into the
//! `number unit` pairs DataFusion reads, with Postgres's meaning: a time's sign applies
//! to its hours, minutes and seconds, and `ago` negates every field.

use datafusion::sql::sqlparser::ast::{DataType, Expr, Value};

/// Rewrites the text of an interval literal (`INTERVAL '...'`, `'...'::interval`).
pub(super) fn rewrite_interval_literal(expr: &mut Expr) {
    let value = match expr {
        Expr::Interval(interval) => match interval.value.as_mut() {
            Expr::Value(v) => &mut v.value,
            _ => return,
        },
        Expr::Cast {
            data_type: DataType::Interval { .. },
            expr: e,
            ..
        } => match e.as_mut() {
            Expr::Value(v) => &mut v.value,
            _ => return,
        },
        Expr::TypedString(t) if matches!(t.data_type, DataType::Interval { .. }) => {
            &mut t.value.value
        }
        _ => return,
    };
    if let Value::SingleQuotedString(text) = value
        && let Some(read) = readable(text)
    {
        *text = read;
    }
}

/// `text` as `number unit` pairs, if it uses a form DataFusion does not read.
fn readable(text: &str) -> Option<String> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let ago = tokens.last().is_some_and(|t| t.eq_ignore_ascii_case("ago"));
    let needs = ago
        || tokens
            .iter()
            .any(|t| *t == "@" || t.starts_with('+') || time_field(t).is_some());
    if !needs {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for token in &tokens[..tokens.len() - usize::from(ago)] {
        if *token == "@" {
            continue;
        }
        if let Some((negative, parts)) = time_field(token) {
            for (number, unit) in parts.iter().zip(["hours", "minutes", "seconds"]) {
                out.push(format!("{}{number}", if negative { "-" } else { "" }));
                out.push(unit.to_string());
            }
            continue;
        }
        out.push(token.strip_prefix('+').unwrap_or(token).to_string());
    }
    if ago {
        for token in &mut out {
            if token.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
                token.insert(0, '-');
            } else if let Some(positive) = token.strip_prefix('-') {
                *token = positive.to_string();
            }
        }
    }
    Some(out.join(" "))
}

/// A `[+-]HH:MM[:SS[.fraction]]` field: its sign (true: negative) and its parts.
fn time_field(token: &str) -> Option<(bool, Vec<&str>)> {
    let (negative, unsigned) = match token.as_bytes().first()? {
        b'-' => (true, &token[1..]),
        b'+' => (false, &token[1..]),
        _ => (false, token),
    };
    let parts: Vec<&str> = unsigned.split(':').collect();
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let valid = match parts.as_slice() {
        [h, m] => digits(h) && digits(m),
        [h, m, s] => {
            let (whole, fraction) = s.split_once('.').unwrap_or((s, "0"));
            digits(h) && digits(m) && digits(whole) && digits(fraction)
        }
        _ => false,
    };
    valid.then_some((negative, parts))
}

#[cfg(test)]
mod tests {
    use super::readable;

    #[test]
    fn postgres_interval_forms_become_number_unit_pairs() {
        for (text, read) in [
            ("21 days 23:59:59", "21 days 23 hours 59 minutes 59 seconds"),
            ("-00:00:01", "-00 hours -00 minutes -01 seconds"),
            ("00:00:01.5", "00 hours 00 minutes 01.5 seconds"),
            ("-1 day +2 hours", "-1 day 2 hours"),
            ("@ 1 day 02:00 ago", "-1 day -02 hours -00 minutes"),
            (
                "1 year 2 months 3 days 04:05:06",
                "1 year 2 months 3 days 04 hours 05 minutes 06 seconds",
            ),
        ] {
            assert_eq!(readable(text).as_deref(), Some(read), "{text}");
        }
        for text in ["1 day 2 hours", "-1 day", "1.5 hours", "P1D"] {
            assert_eq!(readable(text), None, "{text}");
        }
    }
}
