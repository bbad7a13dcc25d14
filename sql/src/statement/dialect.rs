//! Spellings the Postgres grammar lacks, rewritten to ours on tokens before parsing (strings
//! and comments are left alone): Flink's window functions `TABLE(TUMBLE(TABLE t,
//! DESCRIPTOR(c), ...))` become `TUMBLE(t, c, ...)`, and the temporal join's
//! `t FOR SYSTEM_TIME AS OF PROCTIME()` becomes the table function `TEMPORAL(t)`.

use std::borrow::Cow;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

const FUNCTIONS: &[&str] = &["TUMBLE", "HOP", "SESSION"];

/// `sql` in our spelling (unchanged if it has nothing to rewrite).
pub(crate) fn rewrite(sql: &str) -> Cow<'_, str> {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return Cow::Borrowed(sql);
    };
    let mut tokens = tokens;
    let mut changed = false;
    let mut i = 0;
    while i < tokens.len() {
        if let Some(rewritten) = window_at(&tokens, i).or_else(|| temporal_at(&tokens, i)) {
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

/// `name FOR SYSTEM_TIME AS OF PROCTIME()` (or `NOW()`) starting at `i`: `TEMPORAL(name)`.
fn temporal_at(tokens: &[Token], i: usize) -> Option<(Vec<Token>, usize)> {
    let Token::Word(name) = &tokens[i] else {
        return None;
    };
    if name.quote_style.is_none() && name.keyword != Keyword::NoKeyword {
        return None;
    }
    let word =
        |j: usize, w: &str| matches!(&tokens[j], Token::Word(x) if x.value.eq_ignore_ascii_case(w));
    let mut j = i;
    for w in ["FOR", "SYSTEM_TIME", "AS", "OF"] {
        j = next(tokens, j).filter(|&k| word(k, w))?;
    }
    j = next(tokens, j).filter(|&k| word(k, "PROCTIME") || word(k, "NOW"))?;
    j = next(tokens, j).filter(|&k| tokens[k] == Token::LParen)?;
    j = next(tokens, j).filter(|&k| tokens[k] == Token::RParen)?;
    let out = vec![
        Token::make_word("TEMPORAL", None),
        Token::LParen,
        tokens[i].clone(),
        Token::RParen,
    ];
    Some((out, j + 1))
}

/// Replacement tokens for a Flink window call starting at `i`, and the end of what they
/// replace.
fn window_at(tokens: &[Token], i: usize) -> Option<(Vec<Token>, usize)> {
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

    #[test]
    fn temporal_join_becomes_a_table_function() {
        assert_eq!(
            rewrite(
                "SELECT * FROM bid b JOIN rates FOR SYSTEM_TIME AS OF PROCTIME() r ON b.c = r.c"
            ),
            "SELECT * FROM bid b JOIN TEMPORAL(rates) r ON b.c = r.c"
        );
        assert_eq!(
            rewrite("select 1 from s left join \"Rates\" for system_time as of now() as r on true"),
            "select 1 from s left join TEMPORAL(\"Rates\") as r on true"
        );
    }
}
