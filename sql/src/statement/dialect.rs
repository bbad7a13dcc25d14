//! Flink's window table-valued function spelling, `TABLE(TUMBLE(TABLE t, DESCRIPTOR(c),
//! ...))`, rewritten to ours, `TUMBLE(t, c, ...)`, before parsing (the Postgres grammar has
//! no `TABLE t` argument). Works on tokens, so strings and comments are left alone.

use std::borrow::Cow;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

const FUNCTIONS: &[&str] = &["TUMBLE", "HOP", "SESSION"];

/// `sql` with every Flink-style window call in our spelling (unchanged if there is none).
pub(crate) fn rewrite(sql: &str) -> Cow<'_, str> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return Cow::Borrowed(sql);
    };
    let mut tokens = tokens;
    let mut changed = false;
    let mut i = 0;
    while i < tokens.len() {
        if let Some(rewritten) = rewrite_at(&tokens, i) {
            tokens.splice(i..rewritten.1, rewritten.0);
            changed = true;
        }
        i += 1;
    }
    if !changed {
        return Cow::Borrowed(sql);
    }
    Cow::Owned(tokens.iter().map(ToString::to_string).collect())
}

/// Index of the next token after `i` that is not whitespace.
fn next(tokens: &[Token], i: usize) -> Option<usize> {
    (i + 1..tokens.len()).find(|&j| !matches!(tokens[j], Token::Whitespace(_)))
}

fn is_keyword(t: &Token, k: Keyword) -> bool {
    matches!(t, Token::Word(w) if w.keyword == k)
}

/// Replacement tokens for a Flink call starting at `i`, and the end of what they replace.
fn rewrite_at(tokens: &[Token], i: usize) -> Option<(Vec<Token>, usize)> {
    if !is_keyword(&tokens[i], Keyword::TABLE) {
        return None;
    }
    let open = next(tokens, i).filter(|&j| tokens[j] == Token::LParen)?;
    let function = next(tokens, open)?;
    let Token::Word(w) = &tokens[function] else {
        return None;
    };
    if !FUNCTIONS.iter().any(|f| w.value.eq_ignore_ascii_case(f)) {
        return None;
    }
    let args_open = next(tokens, function).filter(|&j| tokens[j] == Token::LParen)?;
    let table_kw = next(tokens, args_open).filter(|&j| is_keyword(&tokens[j], Keyword::TABLE))?;
    let relation = next(tokens, table_kw)?;
    let comma = next(tokens, relation).filter(|&j| tokens[j] == Token::Comma)?;
    let descriptor = next(tokens, comma).filter(
        |&j| matches!(&tokens[j], Token::Word(w) if w.value.eq_ignore_ascii_case("DESCRIPTOR")),
    )?;
    let d_open = next(tokens, descriptor).filter(|&j| tokens[j] == Token::LParen)?;
    let column = next(tokens, d_open)?;
    let d_close = next(tokens, column).filter(|&j| tokens[j] == Token::RParen)?;
    // The parenthesis closing `TABLE(`.
    let mut depth = 0;
    let close = (open..tokens.len()).find(|&j| {
        match tokens[j] {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        depth == 0
    })?;
    let mut out = vec![tokens[function].clone(), Token::LParen];
    out.push(tokens[relation].clone());
    out.push(Token::Comma);
    out.push(Token::Whitespace(
        datafusion::sql::sqlparser::tokenizer::Whitespace::Space,
    ));
    out.push(tokens[column].clone());
    out.extend_from_slice(&tokens[d_close + 1..close]);
    Some((out, close + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flink_spelling_becomes_ours() {
        assert_eq!(
            rewrite(
                "SELECT window_start, count(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECONDS)) GROUP BY 1"
            ),
            "SELECT window_start, count(*) FROM TUMBLE(bid, date_time, INTERVAL '10' SECONDS) GROUP BY 1"
        );
        assert_eq!(
            rewrite(
                "select * from table( hop(table t, descriptor(ts), interval '1' second, interval '4' second)) x"
            ),
            "select * from hop(t, ts, interval '1' second, interval '4' second) x"
        );
        let untouched = "SELECT 'TABLE(TUMBLE(TABLE t, DESCRIPTOR(c), 1))' FROM t";
        assert!(matches!(rewrite(untouched), Cow::Borrowed(_)));
    }
}
