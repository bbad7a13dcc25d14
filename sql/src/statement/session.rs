//! Parsing of session statements: SET / RESET / SHOW of a parameter, whose names may be
//! several words (`TIME ZONE`, `transaction isolation level`).

use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::statement::{Statement, eat_word, expect_end, expect_word, parser};

/// A variable name: words joined by spaces or dots (`TIME ZONE`, `transaction isolation level`).
fn variable_name(p: &mut Parser<'_>, stop: &[&str]) -> Result<String, ParserError> {
    let mut parts = vec![];
    loop {
        match p.peek_token().token {
            Token::Word(w) if !stop.contains(&w.value.to_ascii_uppercase().as_str()) => {
                p.next_token();
                parts.push(w.value.to_lowercase());
                if !p.consume_token(&Token::Period)
                    && !matches!(p.peek_token().token, Token::Word(_))
                {
                    break;
                }
            }
            _ => break,
        }
    }
    if parts.is_empty() {
        return p.expected("a parameter name", p.peek_token());
    }
    Ok(match parts.join(" ").as_str() {
        "time zone" => "timezone".to_string(),
        "session characteristics as transaction isolation level"
        | "transaction isolation level" => "transaction_isolation".to_string(),
        other => other.replace(' ', "_"),
    })
}

pub(crate) fn parse_set(text: &str) -> Result<Statement, ParserError> {
    let mut p = parser(text)?;
    expect_word(&mut p, "SET")?;
    if !eat_word(&mut p, "SESSION") {
        eat_word(&mut p, "LOCAL");
    }
    let name = variable_name(&mut p, &["TO"])?;
    if !eat_word(&mut p, "TO") {
        let _ = p.consume_token(&Token::Eq);
    }
    let mut values = vec![];
    loop {
        let t = p.next_token();
        match t.token {
            Token::EOF | Token::SemiColon => break,
            Token::Comma => continue,
            Token::SingleQuotedString(s) => values.push(s),
            Token::Number(n, _) => values.push(n),
            Token::Minus => values.push("-".into()),
            Token::Word(w) => values.push(w.value),
            _ => return p.expected("a parameter value", t),
        }
    }
    let value = values.join(", ").replace("-, ", "-");
    let value = if value.eq_ignore_ascii_case("default") || value.is_empty() {
        None
    } else {
        Some(value)
    };
    Ok(Statement::SetVariable { name, value })
}

pub(crate) fn parse_reset(text: &str) -> Result<Statement, ParserError> {
    let mut p = parser(text)?;
    expect_word(&mut p, "RESET")?;
    let name = variable_name(&mut p, &[])?;
    expect_end(&mut p)?;
    Ok(Statement::SetVariable { name, value: None })
}

pub(crate) fn parse_show_variable(text: &str) -> Result<Statement, ParserError> {
    let mut p = parser(text)?;
    expect_word(&mut p, "SHOW")?;
    let name = variable_name(&mut p, &[])?;
    expect_end(&mut p)?;
    Ok(Statement::ShowVariable(name))
}
