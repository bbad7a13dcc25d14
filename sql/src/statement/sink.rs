//! Parsing of CREATE SINK: `FROM relation` or `AS query`, then `WITH (...)` and an optional
//! `FORMAT x ENCODE y (...)`, in RisingWave's spelling.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use super::create::parse_options;
use super::guarded::WeirDialect;
use super::{eat_word, expect_end, expect_word, ident, object_name, parser};

/// What a sink writes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkInput {
    /// `FROM name`: a materialized view's changes (or a source's or table's).
    Relation(String),
    /// `AS query`: a query maintained for the sink alone (its text).
    Query(String),
}

/// CREATE SINK, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSink {
    pub name: String,
    pub if_not_exists: bool,
    pub input: SinkInput,
    /// WITH options, keys lower-cased; `FORMAT ... ENCODE ... (k = v)` options are here as
    /// `format.k`.
    pub options: BTreeMap<String, String>,
    /// `FORMAT x ENCODE y`, upper-cased.
    pub format: Option<(String, String)>,
}

pub(crate) fn parse_create_sink(text: &str) -> Result<CreateSink, ParserError> {
    let mut p = parser(text)?;
    expect_word(&mut p, "CREATE")?;
    expect_word(&mut p, "SINK")?;
    let if_not_exists = eat_word(&mut p, "IF") && {
        expect_word(&mut p, "NOT")?;
        expect_word(&mut p, "EXISTS")?;
        true
    };
    let name = object_name(&mut p)?;
    let (input, tail) = if eat_word(&mut p, "FROM") {
        let from = object_name(&mut p)?;
        let rest = char_offset(text, p.peek_token().span.start);
        (SinkInput::Relation(from), &text[rest..])
    } else {
        expect_word(&mut p, "AS")?;
        let start = char_offset(text, p.peek_token().span.start);
        let with = trailing_with(text, start)?.ok_or_else(|| {
            ParserError::ParserError("Expected: WITH (...) after the sink's query".into())
        })?;
        let query = text[start..with].trim().to_string();
        if query.is_empty() {
            return p.expected("a query", p.peek_token());
        }
        (SinkInput::Query(query), &text[with..])
    };
    let mut sink = CreateSink {
        name,
        if_not_exists,
        input,
        options: BTreeMap::new(),
        format: None,
    };
    let mut p = parser(tail)?;
    loop {
        if eat_word(&mut p, "WITH") {
            sink.options.extend(parse_options(&mut p)?);
        } else if eat_word(&mut p, "FORMAT") {
            let format = ident(&mut p)?.to_ascii_uppercase();
            expect_word(&mut p, "ENCODE")?;
            let encode = ident(&mut p)?.to_ascii_uppercase();
            if p.peek_token().token == Token::LParen {
                for (k, v) in parse_options(&mut p)? {
                    sink.options.insert(format!("format.{k}"), v);
                }
            }
            sink.format = Some((format, encode));
        } else {
            break;
        }
    }
    expect_end(&mut p)?;
    Ok(sink)
}

/// The byte offset of a token's location (1-based line and column, in characters).
fn char_offset(text: &str, at: datafusion::sql::sqlparser::tokenizer::Location) -> usize {
    if at.line == 0 {
        return text.len();
    }
    let mut line = 1;
    let mut column = 1;
    for (i, c) in text.char_indices() {
        if line == at.line && column == at.column {
            return i;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    text.len()
}

/// Where the last `WITH (` outside parentheses starts, at or after `from`: the sink's
/// options follow its query (a CTE's WITH is followed by a name, not a parenthesis).
fn trailing_with(text: &str, from: usize) -> Result<Option<usize>, ParserError> {
    let tokens = Tokenizer::new(&WeirDialect, &text[from..])
        .tokenize_with_location()
        .map_err(|e| ParserError::TokenizerError(e.to_string()))?;
    let significant: Vec<_> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let mut depth = 0i32;
    let mut found = None;
    for (i, t) in significant.iter().enumerate() {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Word(w)
                if depth == 0
                    && w.quote_style.is_none()
                    && w.value.eq_ignore_ascii_case("WITH")
                    && significant.get(i + 1).map(|n| &n.token) == Some(&Token::LParen) =>
            {
                found = Some(from + char_offset(&text[from..], t.span.start));
            }
            _ => {}
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_a_view_with_options_and_format() {
        let s = parse_create_sink(
            "CREATE SINK IF NOT EXISTS s FROM v WITH (connector = 'kafka', topic = 'out', \
             properties.bootstrap.server = 'b:9092') FORMAT UPSERT ENCODE JSON (force_append_only = 'true')",
        )
        .unwrap();
        assert_eq!(s.name, "s");
        assert!(s.if_not_exists);
        assert_eq!(s.input, SinkInput::Relation("v".into()));
        assert_eq!(s.options["topic"], "out");
        assert_eq!(s.options["properties.bootstrap.server"], "b:9092");
        assert_eq!(s.options["format.force_append_only"], "true");
        assert_eq!(s.format, Some(("UPSERT".into(), "JSON".into())));
    }

    #[test]
    fn as_a_query_keeps_its_own_with_and_parentheses() {
        let s = parse_create_sink(
            "CREATE SINK s AS WITH t AS (SELECT a FROM x) SELECT a, (SELECT 1) FROM t \
             WITH (connector = 'file', path = 'out/')",
        )
        .unwrap();
        assert_eq!(
            s.input,
            SinkInput::Query("WITH t AS (SELECT a FROM x) SELECT a, (SELECT 1) FROM t".into())
        );
        assert_eq!(s.options["path"], "out/");
        assert_eq!(s.format, None);
    }

    #[test]
    fn malformed_sinks_are_syntax_errors() {
        for bad in [
            "CREATE SINK s AS SELECT 1",
            "CREATE SINK s FROM v WITH (topic)",
            "CREATE SINK s FROM v WITH (a = 'b') extra",
            "CREATE SINK s AS WITH (a = 'b')",
            "CREATE SINK",
        ] {
            assert!(parse_create_sink(bad).is_err(), "{bad}");
        }
    }
}
