//! Parsing of CREATE SOURCE / CREATE TABLE: columns, WATERMARK FOR, PRIMARY KEY, APPEND ONLY,
//! INCLUDE, WITH options (dotted keys) and FORMAT ... ENCODE, on sqlparser's Parser.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::statement::{
    ColumnDef, CreateRelation, ObjectKind, eat_word, expect_end, expect_word, ident, object_name,
    parser,
};

pub(crate) fn parse_create(text: &str) -> Result<CreateRelation, ParserError> {
    let mut p = parser(text)?;
    expect_word(&mut p, "CREATE")?;
    let kind = if eat_word(&mut p, "SOURCE") {
        ObjectKind::Source
    } else {
        expect_word(&mut p, "TABLE")?;
        ObjectKind::Table
    };
    let if_not_exists = eat_word(&mut p, "IF") && {
        expect_word(&mut p, "NOT")?;
        expect_word(&mut p, "EXISTS")?;
        true
    };
    let mut c = CreateRelation {
        kind,
        name: object_name(&mut p)?,
        if_not_exists,
        columns: vec![],
        primary_key: vec![],
        watermark: None,
        append_only: false,
        includes: vec![],
        options: BTreeMap::new(),
        format: None,
    };
    if p.consume_token(&Token::LParen) && !p.consume_token(&Token::RParen) {
        loop {
            parse_column_or_constraint(&mut p, &mut c)?;
            if p.consume_token(&Token::RParen) {
                break;
            }
            p.expect_token(&Token::Comma)?;
        }
    }
    loop {
        if eat_word(&mut p, "APPEND") {
            expect_word(&mut p, "ONLY")?;
            c.append_only = true;
        } else if eat_word(&mut p, "INCLUDE") {
            let what = ident(&mut p)?;
            let alias = if eat_word(&mut p, "AS") {
                ident(&mut p)?
            } else {
                format!("_rw_kafka_{what}")
            };
            c.includes.push((what, alias));
        } else if eat_word(&mut p, "WITH") {
            c.options = parse_options(&mut p)?;
        } else if eat_word(&mut p, "FORMAT") {
            let format = ident(&mut p)?.to_ascii_uppercase();
            expect_word(&mut p, "ENCODE")?;
            let encode = ident(&mut p)?.to_ascii_uppercase();
            if p.peek_token().token == Token::LParen {
                for (k, v) in parse_options(&mut p)? {
                    c.options.insert(format!("format.{k}"), v);
                }
            }
            c.format = Some((format, encode));
        } else if eat_word(&mut p, "AS") {
            return p.expected(
                "column definitions (CREATE ... AS SELECT is not supported yet)",
                p.peek_token(),
            );
        } else {
            break;
        }
    }
    expect_end(&mut p)?;
    Ok(c)
}

fn parse_column_or_constraint(
    p: &mut Parser<'_>,
    c: &mut CreateRelation,
) -> Result<(), ParserError> {
    if eat_word(p, "WATERMARK") {
        expect_word(p, "FOR")?;
        let column = ident(p)?;
        expect_word(p, "AS")?;
        let mut expr = p.parse_expr()?;
        super::guarded::limit_depth(&mut expr).map_err(|e| ParserError::ParserError(e.message))?;
        c.watermark = Some((column, expr.to_string()));
        return Ok(());
    }
    if eat_word(p, "PRIMARY") {
        expect_word(p, "KEY")?;
        p.expect_token(&Token::LParen)?;
        c.primary_key = p.parse_comma_separated(ident)?;
        p.expect_token(&Token::RParen)?;
        return Ok(());
    }
    let name = ident(p)?;
    let data_type = p.parse_data_type()?;
    let mut not_null = false;
    loop {
        if eat_word(p, "PRIMARY") {
            expect_word(p, "KEY")?;
            c.primary_key = vec![name.clone()];
        } else if eat_word(p, "NOT") {
            expect_word(p, "NULL")?;
            not_null = true;
        } else if !eat_word(p, "NULL") {
            break;
        }
    }
    c.columns.push(ColumnDef {
        name,
        data_type,
        not_null,
    });
    Ok(())
}

/// `(key = value, ...)` where keys may be dotted (`properties.bootstrap.server`).
pub(super) fn parse_options(p: &mut Parser<'_>) -> Result<BTreeMap<String, String>, ParserError> {
    p.expect_token(&Token::LParen)?;
    let mut out = BTreeMap::new();
    if p.consume_token(&Token::RParen) {
        return Ok(out);
    }
    loop {
        let mut key = option_key_part(p)?;
        while p.consume_token(&Token::Period) {
            key.push('.');
            key.push_str(&option_key_part(p)?);
        }
        p.expect_token(&Token::Eq)?;
        let t = p.next_token();
        let value = match t.token {
            Token::SingleQuotedString(s) => s,
            Token::Number(n, _) => n,
            Token::Word(w) => w.value,
            _ => return p.expected("an option value", t),
        };
        out.insert(key.to_ascii_lowercase(), value);
        if p.consume_token(&Token::RParen) {
            return Ok(out);
        }
        p.expect_token(&Token::Comma)?;
    }
}

fn option_key_part(p: &mut Parser<'_>) -> Result<String, ParserError> {
    let t = p.next_token();
    match t.token {
        Token::Word(w) => Ok(w.value),
        Token::SingleQuotedString(s) => Ok(s),
        _ => p.expected("an option name", t),
    }
}
