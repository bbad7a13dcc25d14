//! Parsing of SUBSCRIBE and its cursors: `COPY (SUBSCRIBE [TO] mv | (query) [WITH (...)])
//! TO STDOUT`, `DECLARE c CURSOR FOR SUBSCRIBE ...`, `FETCH n c WITH (timeout = ...)`, `CLOSE c`.

use std::time::Duration;

use crate::error::{Result, SqlError};
use crate::statement::Statement;

/// What a SUBSCRIBE reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeTarget {
    /// A materialized view by name.
    View(String),
    /// Any query, maintained for as long as the subscription lasts.
    Query(String),
}

/// `500ms`, `5s`, `2m`, or plain seconds.
pub(crate) fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim().to_ascii_lowercase();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" | "sec" | "second" | "seconds" => Some(Duration::from_secs(n)),
        "m" | "min" | "minute" | "minutes" => Some(Duration::from_secs(n * 60)),
        _ => None,
    }
}

fn syntax(msg: impl Into<String>) -> SqlError {
    SqlError::syntax(msg.into(), None)
}

/// A cursor over the text of one statement.
struct Scan<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scan<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// Consumes `word` (case-insensitive, whole word) if it comes next.
    fn eat(&mut self, word: &str) -> bool {
        self.skip_ws();
        let rest = self.rest();
        let n = word.len();
        // `get` and not `[..n]`: the text may have a multi-byte character there.
        let matches = rest
            .get(..n)
            .is_some_and(|head| head.eq_ignore_ascii_case(word))
            && !rest[n..].starts_with(|c: char| c.is_alphanumeric() || c == '_');
        if matches {
            self.pos += n;
        }
        matches
    }

    fn expect(&mut self, word: &str) -> Result<()> {
        if self.eat(word) {
            Ok(())
        } else {
            Err(syntax(format!(
                "expected {word}, found \"{}\"",
                self.rest()
                    .split_whitespace()
                    .next()
                    .unwrap_or("end of input")
            )))
        }
    }

    /// An identifier (quoted or not; unquoted ones fold to lower case).
    fn ident(&mut self) -> Result<String> {
        self.skip_ws();
        let rest = self.rest();
        if let Some(body) = rest.strip_prefix('"') {
            let end = body
                .find('"')
                .ok_or_else(|| syntax("unterminated quoted identifier"))?;
            self.pos += end + 2;
            return Ok(body[..end].to_string());
        }
        let n = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return Err(syntax("expected a name"));
        }
        self.pos += n;
        Ok(rest[..n].to_ascii_lowercase())
    }

    /// The text inside the parentheses that come next (quotes respected).
    fn parenthesized(&mut self) -> Result<&'a str> {
        self.skip_ws();
        if !self.rest().starts_with('(') {
            return Err(syntax("expected ("));
        }
        let start = self.pos + 1;
        let (mut depth, mut quote) = (0usize, None::<char>);
        for (i, c) in self.rest().char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '(') => depth += 1,
                (None, ')') => {
                    depth -= 1;
                    if depth == 0 {
                        let end = self.pos + i;
                        self.pos = end + 1;
                        return Ok(&self.text[start..end]);
                    }
                }
                _ => {}
            }
        }
        Err(syntax("unbalanced parentheses"))
    }

    /// `WITH (key = value, ...)` if it comes next; keys lower-cased, quotes removed.
    fn options(&mut self) -> Result<Vec<(String, String)>> {
        if !self.eat("WITH") {
            return Ok(Vec::new());
        }
        let body = self.parenthesized()?;
        body.split(',')
            .filter(|kv| !kv.trim().is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    syntax(format!("expected key = value, found \"{}\"", kv.trim()))
                })?;
                let v = v.trim().trim_matches('\'').to_string();
                Ok((k.trim().to_ascii_lowercase(), v))
            })
            .collect()
    }

    fn end(&mut self) -> Result<()> {
        self.skip_ws();
        let rest = self.rest().trim_end_matches(';').trim();
        if rest.is_empty() {
            Ok(())
        } else {
            Err(syntax(format!("unexpected \"{rest}\" at the end")))
        }
    }
}

/// `SUBSCRIBE [TO] name | (query) [WITH (snapshot = bool)]`.
fn subscribe_body(s: &mut Scan<'_>) -> Result<(SubscribeTarget, bool)> {
    s.expect("SUBSCRIBE")?;
    s.eat("TO");
    s.skip_ws();
    let target = if s.rest().starts_with('(') {
        SubscribeTarget::Query(s.parenthesized()?.trim().to_string())
    } else {
        SubscribeTarget::View(s.ident()?)
    };
    let mut snapshot = true;
    for (k, v) in s.options()? {
        match (k.as_str(), v.to_ascii_lowercase().as_str()) {
            ("snapshot", "true" | "on") => snapshot = true,
            ("snapshot", "false" | "off") => snapshot = false,
            _ => {
                return Err(SqlError::invalid_parameter(format!(
                    "unknown SUBSCRIBE option {k} = '{v}' (expected snapshot = true|false)"
                )));
            }
        }
    }
    Ok((target, snapshot))
}

/// Whether `text` is `COPY (SUBSCRIBE ...`: the one COPY weir runs itself.
pub(crate) fn is_copy_subscribe(text: &str) -> bool {
    let mut s = Scan { text, pos: 0 };
    s.eat("COPY") && {
        s.skip_ws();
        s.rest().starts_with('(') && {
            s.pos += 1;
            s.eat("SUBSCRIBE")
        }
    }
}

pub(crate) fn parse_copy_subscribe(text: &str) -> Result<Statement> {
    let mut s = Scan { text, pos: 0 };
    s.expect("COPY")?;
    let inner = s.parenthesized()?;
    let mut body = Scan {
        text: inner,
        pos: 0,
    };
    let (target, snapshot) = subscribe_body(&mut body)?;
    body.end()?;
    s.expect("TO")?;
    s.expect("STDOUT")?;
    for (k, v) in s.options()? {
        if !(k == "format" && v.eq_ignore_ascii_case("text")) {
            return Err(SqlError::unsupported(format!(
                "COPY option {k} '{v}' (SUBSCRIBE streams text)"
            )));
        }
    }
    s.end()?;
    Ok(Statement::Subscribe {
        target,
        snapshot,
        cursor: None,
    })
}

pub(crate) fn parse_declare(text: &str) -> Result<Statement> {
    let mut s = Scan { text, pos: 0 };
    s.expect("DECLARE")?;
    let name = s.ident()?;
    s.eat("NO");
    s.eat("SCROLL");
    s.expect("CURSOR")?;
    if s.eat("WITH") || s.eat("WITHOUT") {
        s.expect("HOLD")?;
    }
    s.expect("FOR")?;
    let (target, snapshot) = subscribe_body(&mut s)?;
    s.end()?;
    Ok(Statement::Subscribe {
        target,
        snapshot,
        cursor: Some(name),
    })
}

pub(crate) fn parse_fetch(text: &str) -> Result<Statement> {
    let mut s = Scan { text, pos: 0 };
    s.expect("FETCH")?;
    s.eat("FORWARD");
    s.skip_ws();
    let count = if s.eat("ALL") {
        None
    } else {
        let digits: String = s.rest().chars().take_while(char::is_ascii_digit).collect();
        s.pos += digits.len();
        Some(digits.parse().unwrap_or(1))
    };
    let _ = s.eat("FROM") || s.eat("IN");
    let cursor = s.ident()?;
    let mut timeout = None;
    for (k, v) in s.options()? {
        match k.as_str() {
            "timeout" => {
                timeout = Some(parse_duration(&v).ok_or_else(|| {
                    SqlError::invalid_parameter(format!("timeout '{v}' is not a duration"))
                })?);
            }
            _ => {
                return Err(SqlError::invalid_parameter(format!(
                    "unknown FETCH option {k}"
                )));
            }
        }
    }
    s.end()?;
    Ok(Statement::Fetch {
        cursor,
        count,
        timeout,
    })
}

pub(crate) fn parse_close(text: &str) -> Result<Statement> {
    let mut s = Scan { text, pos: 0 };
    s.expect("CLOSE")?;
    let cursor = if s.eat("ALL") { None } else { Some(s.ident()?) };
    s.end()?;
    Ok(Statement::Close(cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_declare_fetch_close() {
        let q = "COPY (SUBSCRIBE (SELECT a, 'x)' FROM t WHERE (b > 1)) WITH (snapshot = false)) TO STDOUT";
        assert!(is_copy_subscribe(q));
        assert!(!is_copy_subscribe("COPY (SELECT 1) TO STDOUT"));
        match parse_copy_subscribe(q).unwrap() {
            Statement::Subscribe {
                target: SubscribeTarget::Query(sql),
                snapshot: false,
                cursor: None,
            } => assert_eq!(sql, "SELECT a, 'x)' FROM t WHERE (b > 1)"),
            other => panic!("{other:?}"),
        }
        match parse_declare("DECLARE c CURSOR FOR SUBSCRIBE TO Mv").unwrap() {
            Statement::Subscribe {
                target: SubscribeTarget::View(v),
                snapshot: true,
                cursor: Some(c),
            } => assert_eq!((v.as_str(), c.as_str()), ("mv", "c")),
            other => panic!("{other:?}"),
        }
        match parse_fetch("FETCH 100 c WITH (timeout = '1s')").unwrap() {
            Statement::Fetch {
                cursor,
                count: Some(100),
                timeout: Some(t),
            } => assert_eq!((cursor.as_str(), t), ("c", Duration::from_secs(1))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_fetch("FETCH ALL FROM c").unwrap(),
            Statement::Fetch {
                count: None,
                timeout: None,
                ..
            }
        ));
        assert!(parse_copy_subscribe("COPY (SUBSCRIBE TO mv) TO STDOUT junk").is_err());
        assert!(matches!(
            parse_close("CLOSE ALL").unwrap(),
            Statement::Close(None)
        ));
    }
}
