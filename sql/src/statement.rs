//! Splits query text into statements and recognises weir's own (CREATE SOURCE, SHOW SOURCES, SET, ...).
//! Everything else is parsed by the Postgres-compatibility parser and planned by DataFusion.

mod create;
mod dialect;
mod guarded;
mod role;
mod session;
mod sink;
mod subscribe;

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::{Dialect, PostgreSqlDialect};
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use crate::error::{Result, SqlError};
use crate::interrupt::Interrupt;

use self::create::parse_create;
use self::guarded::{BudgetedPostgres, MAX_NESTING, WeirDialect, limit_depth, with_budget};
pub use self::role::{GrantTarget, RoleOptions, RoleStatement};
use self::session::{parse_reset, parse_set, parse_show_variable};
pub use self::sink::{CreateSink, SinkInput};
pub use self::subscribe::SubscribeTarget;
pub(crate) use self::subscribe::parse_duration;
use self::subscribe::{
    is_copy_subscribe, parse_close, parse_copy_subscribe, parse_declare, parse_fetch,
};

/// Kinds of catalog objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ObjectKind {
    Source,
    Table,
    MaterializedView,
    Sink,
}

impl ObjectKind {
    pub fn sql_name(self) -> &'static str {
        match self {
            Self::Source => "SOURCE",
            Self::Table => "TABLE",
            Self::MaterializedView => "MATERIALIZED VIEW",
            Self::Sink => "SINK",
        }
    }
}

/// A column of a CREATE SOURCE / CREATE TABLE.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: ast::DataType,
    pub not_null: bool,
}

/// CREATE SOURCE or CREATE TABLE, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRelation {
    pub kind: ObjectKind,
    pub name: String,
    pub if_not_exists: bool,
    pub columns: Vec<ColumnDef>,
    pub primary_key: Vec<String>,
    /// `WATERMARK FOR column AS expr`: the column and the expression's text.
    pub watermark: Option<(String, String)>,
    pub append_only: bool,
    /// `INCLUDE key AS k`: (what, column name).
    pub includes: Vec<(String, String)>,
    /// WITH options, keys lower-cased.
    pub options: BTreeMap<String, String>,
    /// `FORMAT x ENCODE y`, upper-cased.
    pub format: Option<(String, String)>,
}

/// Transaction control statements (accepted; weir has no multi-statement transactions yet,
/// each statement commits on its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionKind {
    Begin,
    Commit,
    Rollback,
    Savepoint,
    ReleaseSavepoint,
    RollbackToSavepoint,
}

/// One statement of a query string.
#[derive(Debug, Clone)]
pub enum Statement {
    Create(Box<CreateRelation>),
    /// CREATE MATERIALIZED VIEW name AS query (the query's text).
    CreateView {
        name: String,
        if_not_exists: bool,
        query: String,
        /// `... EMIT ON WINDOW CLOSE`: each window's rows once, when the watermark passes it.
        emit_on_close: bool,
        /// `EXPLAIN CREATE MATERIALIZED VIEW`: show the dataflow, create nothing.
        explain: bool,
    },
    /// CREATE SINK: a view's or query's changes written to a connector.
    CreateSink(Box<CreateSink>),
    Drop {
        kind: ObjectKind,
        names: Vec<String>,
        if_exists: bool,
        cascade: bool,
    },
    ShowObjects(ObjectKind),
    ShowCreate {
        kind: ObjectKind,
        name: String,
    },
    Describe(String),
    SetVariable {
        name: String,
        value: Option<String>,
    },
    ShowVariable(String),
    Transaction(TransactionKind),
    Flush,
    /// `CHECKPOINT`: take a checkpoint now; returns once it is committed.
    Checkpoint,
    Discard,
    /// `COPY (SUBSCRIBE ...) TO STDOUT` (no cursor) or `DECLARE c CURSOR FOR SUBSCRIBE ...`.
    Subscribe {
        target: SubscribeTarget,
        /// Start with the current rows as inserts.
        snapshot: bool,
        cursor: Option<String>,
    },
    /// `FETCH n c WITH (timeout = ...)`; `count` None = ALL; `timeout` None = wait for rows.
    Fetch {
        cursor: String,
        count: Option<u64>,
        timeout: Option<std::time::Duration>,
    },
    /// `CLOSE c` (None = ALL).
    Close(Option<String>),
    /// CREATE / ALTER / DROP USER or ROLE, GRANT, REVOKE.
    Role(Box<RoleStatement>),
    /// A statement DataFusion plans (SELECT, INSERT, UPDATE, DELETE, EXPLAIN, ...).
    Query(Box<ast::Statement>),
}

/// A statement with the text it came from and where that text starts.
#[derive(Debug, Clone)]
pub struct ParsedStatement {
    pub text: String,
    /// Characters before this statement in the whole query.
    pub offset: usize,
    pub statement: Statement,
}

/// Parses query strings into statements.
pub(crate) struct StatementParser {
    compat: PostgresCompatibilityParser,
}

impl Default for StatementParser {
    fn default() -> Self {
        Self {
            compat: PostgresCompatibilityParser::new(),
        }
    }
}

impl std::fmt::Debug for StatementParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatementParser")
    }
}

/// The longest query text accepted (Postgres takes up to 1 GB; a statement this long is
/// a bulk load, which belongs in a source).
pub const MAX_QUERY_BYTES: usize = 16 << 20;

impl StatementParser {
    /// Parses every statement of `sql`; errors carry positions within `sql`. Each statement
    /// is parsed within a work budget, and stops when `interrupt` fires.
    pub(crate) fn parse(&self, sql: &str, interrupt: &Interrupt) -> Result<Vec<ParsedStatement>> {
        if sql.len() > MAX_QUERY_BYTES {
            return Err(SqlError::new(
                "54000",
                format!(
                    "query text of {} bytes is longer than the limit of {MAX_QUERY_BYTES}",
                    sql.len()
                ),
            ));
        }
        let mut out = Vec::new();
        for (offset, text, tokens) in split_statements(sql)? {
            let text = dialect::rewrite(&text).into_owned();
            let statement = with_budget(tokens, interrupt, || self.parse_one(&text))
                .map_err(|e| e.offset_position(offset))?;
            out.push(ParsedStatement {
                text,
                offset,
                statement,
            });
        }
        Ok(out)
    }

    fn parse_one(&self, text: &str) -> Result<Statement> {
        let words = leading_words(text, 4);
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["CREATE", "SOURCE", ..] | ["CREATE", "TABLE", ..] => parse_create(text)
                .map(|c| Statement::Create(Box::new(c)))
                .map_err(|e| parser_error(e, text)),
            ["CREATE", "MATERIALIZED", ..] => {
                parse_create_view(text).map_err(|e| parser_error(e, text))
            }
            ["EXPLAIN", "CREATE", "MATERIALIZED", ..] => {
                let body = text.trim_start()["EXPLAIN".len()..].trim_start();
                match parse_create_view(body).map_err(|e| parser_error(e, body))? {
                    Statement::CreateView {
                        name,
                        if_not_exists,
                        query,
                        emit_on_close,
                        ..
                    } => Ok(Statement::CreateView {
                        name,
                        if_not_exists,
                        query,
                        emit_on_close,
                        explain: true,
                    }),
                    other => Ok(other),
                }
            }
            ["CREATE", "SINK", ..] => sink::parse_create_sink(text)
                .map(|s| Statement::CreateSink(Box::new(s)))
                .map_err(|e| parser_error(e, text)),
            ["CREATE" | "ALTER" | "DROP", "USER" | "ROLE", ..] | ["GRANT" | "REVOKE", ..] => {
                role::parse_role_statement(text).map_err(|e| parser_error(e, text))
            }
            ["DROP", ..]
                if matches!(
                    w.get(1),
                    Some(&("SOURCE" | "TABLE" | "MATERIALIZED" | "SINK"))
                ) =>
            {
                parse_drop(text).map_err(|e| parser_error(e, text))
            }
            ["SHOW", "SOURCES"] => Ok(Statement::ShowObjects(ObjectKind::Source)),
            ["SHOW", "TABLES"] => Ok(Statement::ShowObjects(ObjectKind::Table)),
            ["SHOW", "MATERIALIZED", "VIEWS"] => {
                Ok(Statement::ShowObjects(ObjectKind::MaterializedView))
            }
            ["SHOW", "SINKS"] => Ok(Statement::ShowObjects(ObjectKind::Sink)),
            ["SHOW", "CREATE", ..] => parse_show_create(text).map_err(|e| parser_error(e, text)),
            ["SHOW", ..] => parse_show_variable(text).map_err(|e| parser_error(e, text)),
            ["DESCRIBE", ..] | ["DESC", ..] => {
                parse_describe(text).map_err(|e| parser_error(e, text))
            }
            ["SET", ..] => parse_set(text).map_err(|e| parser_error(e, text)),
            ["RESET", ..] => parse_reset(text).map_err(|e| parser_error(e, text)),
            ["BEGIN", ..] | ["START", "TRANSACTION", ..] => {
                Ok(Statement::Transaction(TransactionKind::Begin))
            }
            ["COMMIT", ..] | ["END", ..] => Ok(Statement::Transaction(TransactionKind::Commit)),
            ["ROLLBACK", "TO", ..] => {
                Ok(Statement::Transaction(TransactionKind::RollbackToSavepoint))
            }
            ["ROLLBACK", ..] | ["ABORT", ..] => {
                Ok(Statement::Transaction(TransactionKind::Rollback))
            }
            ["SAVEPOINT", ..] => Ok(Statement::Transaction(TransactionKind::Savepoint)),
            ["RELEASE", ..] => Ok(Statement::Transaction(TransactionKind::ReleaseSavepoint)),
            ["FLUSH"] => Ok(Statement::Flush),
            ["CHECKPOINT"] => Ok(Statement::Checkpoint),
            ["COPY", ..] if is_copy_subscribe(text) => parse_copy_subscribe(text),
            ["DECLARE", ..] => parse_declare(text),
            ["FETCH", ..] => parse_fetch(text),
            ["CLOSE", ..] => parse_close(text),
            ["DISCARD", ..] => Ok(Statement::Discard),
            _ => {
                let mut stmts = self.parse_query(text)?;
                match stmts.len() {
                    1 => Ok(Statement::Query(Box::new(stmts.remove(0)))),
                    n => Err(SqlError::syntax(
                        format!("expected one statement, found {n}"),
                        None,
                    )),
                }
            }
        }
    }
}

impl StatementParser {
    /// A materialized view's query (the text after `AS`), for DataFusion to plan.
    pub(crate) fn parse_view_query(&self, query: &str) -> Result<ast::Statement> {
        let tokens = tokenize(query)?.len();
        let mut statements =
            with_budget(tokens, &Interrupt::default(), || self.parse_query(query))?;
        match statements.len() {
            1 => Ok(statements.remove(0)),
            n => Err(SqlError::syntax(
                format!("a view's query must be one statement, found {n}"),
                None,
            )),
        }
    }

    /// A statement DataFusion plans. Catalog queries of psql, pgcli and Grafana (they name
    /// `pg_*` relations) go through the compatibility parser, which replaces some whole
    /// queries; it parses as PostgreSQL's dialect does, so the budgeted copy of that
    /// dialect parses first and stops what would backtrack too long. Everything else is
    /// parsed once with weir's dialect and gets the compatibility parser's rewrites.
    fn parse_query(&self, text: &str) -> Result<Vec<ast::Statement>> {
        let catalog_query = tokenize(text)?.iter().any(|t| {
            matches!(&t.token, Token::Word(w)
                if w.value.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("pg_")))
        });
        let mut statements = if !catalog_query {
            parser_for(&WeirDialect, text)
                .and_then(|mut p| p.parse_statements())
                .map_err(|e| parser_error(e, text))?
        } else {
            let located =
                parser_for(&BudgetedPostgres, text).and_then(|mut p| p.parse_statements());
            match located {
                Err(e @ ParserError::RecursionLimitExceeded) => Err(parser_error(e, text)),
                // The compatibility parser drops locations; the budgeted parse has them.
                located => self
                    .compat
                    .parse(text)
                    .map_err(|e| parser_error(located.err().unwrap_or(e), text)),
            }?
        };
        for statement in &mut statements {
            limit_depth(statement)?;
        }
        Ok(if catalog_query {
            statements
        } else {
            statements
                .into_iter()
                .map(|s| self.compat.rewrite(s))
                .collect()
        })
    }
}

/// Converts a sqlparser error into 42601 with the character position it names (54001 for
/// input nested deeper than the parser follows).
fn parser_error(e: ParserError, text: &str) -> SqlError {
    if matches!(e, ParserError::RecursionLimitExceeded) {
        return SqlError::new(
            "54001",
            format!("statement is nested too deeply (more than {MAX_NESTING} levels)"),
        );
    }
    let msg = e.to_string();
    let position = msg.rfind(" at Line: ").and_then(|i| {
        let rest = &msg[i + " at Line: ".len()..];
        let (line, col) = rest.split_once(", Column: ")?;
        let line: usize = line.trim().parse().ok()?;
        let col: usize = col.trim().parse().ok()?;
        let before: usize = text
            .split('\n')
            .take(line.saturating_sub(1))
            .map(|l| l.chars().count() + 1)
            .sum();
        Some(before + col)
    });
    let clean = msg
        .split(" at Line: ")
        .next()
        .unwrap_or(&msg)
        .trim_start_matches("sql parser error: ")
        .to_string();
    SqlError::syntax(clean, position)
}

fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>> {
    Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::syntax(e.message.clone(), None))
}

/// Splits `sql` at top-level semicolons: (characters before, statement text, tokens).
fn split_statements(sql: &str) -> Result<Vec<(usize, String, usize)>> {
    let tokens = tokenize(sql)?;
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(sql.split('\n').scan(0, |acc, l| {
            *acc += l.chars().count() + 1;
            Some(*acc)
        }))
        .collect();
    let chars: Vec<char> = sql.chars().collect();
    let pos = |t: &TokenWithSpan, end: bool| {
        let l = if end { t.span.end } else { t.span.start };
        line_starts
            .get((l.line as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0)
            + (l.column as usize).saturating_sub(1)
    };
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut last_end = 0;
    let mut count = 0;
    for t in &tokens {
        match &t.token {
            Token::Whitespace(_) => {}
            Token::SemiColon => {
                if let Some(s) = start.take() {
                    out.push((s, chars[s..last_end].iter().collect(), count));
                    count = 0;
                }
            }
            _ => {
                if start.is_none() {
                    start = Some(pos(t, false));
                }
                last_end = pos(t, true).min(chars.len());
                count += 1;
            }
        }
    }
    if let Some(s) = start {
        out.push((
            s,
            chars[s..chars.len()]
                .iter()
                .collect::<String>()
                .trim_end()
                .to_string(),
            count,
        ));
    }
    Ok(out)
}

/// The first `n` words of a statement, upper-cased (stops at the first non-word token).
fn leading_words(text: &str, n: usize) -> Vec<String> {
    let Ok(tokens) = tokenize(text) else {
        return vec![];
    };
    tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .take(n)
        .map_while(|t| match &t.token {
            Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        })
        .collect()
}

fn parse_create_view(text: &str) -> Result<Statement, ParserError> {
    let mut p = parser(text)?;
    for w in ["CREATE", "MATERIALIZED", "VIEW"] {
        expect_word(&mut p, w)?;
    }
    let if_not_exists = eat_word(&mut p, "IF") && {
        expect_word(&mut p, "NOT")?;
        expect_word(&mut p, "EXISTS")?;
        true
    };
    let name = object_name(&mut p)?;
    expect_word(&mut p, "AS")?;
    let start = p.peek_token().span.start;
    let before: usize = text
        .split('\n')
        .take((start.line as usize).saturating_sub(1))
        .map(|l| l.chars().count() + 1)
        .sum();
    let mut query: String = text
        .chars()
        .skip(before + (start.column as usize).saturating_sub(1))
        .collect();
    if query.trim().is_empty() {
        return p.expected("a query", p.peek_token());
    }
    let emit_on_close = strip_emit_on_window_close(&mut query);
    Ok(Statement::CreateView {
        name,
        if_not_exists,
        query,
        emit_on_close,
        explain: false,
    })
}

/// Removes a trailing `EMIT ON WINDOW CLOSE` (RisingWave's spelling) from a view's query.
fn strip_emit_on_window_close(query: &mut String) -> bool {
    let trimmed = query.trim_end().trim_end_matches(';').trim_end();
    let words: Vec<&str> = trimmed.split_whitespace().collect();
    let tail = ["EMIT", "ON", "WINDOW", "CLOSE"];
    let n = words.len();
    if n < 5
        || !words[n - 4..]
            .iter()
            .zip(tail)
            .all(|(w, t)| w.eq_ignore_ascii_case(t))
    {
        return false;
    }
    let cut = trimmed
        .to_ascii_uppercase()
        .rfind("EMIT")
        .unwrap_or(trimmed.len());
    *query = trimmed[..cut].trim_end().to_string();
    true
}

/// A parser of weir's statements (the dialect's budget applies to it).
fn parser(text: &str) -> Result<Parser<'static>, ParserError> {
    parser_for(&WeirDialect, text)
}

fn parser_for<'a>(dialect: &'a dyn Dialect, text: &str) -> Result<Parser<'a>, ParserError> {
    Parser::new(dialect)
        .with_recursion_limit(MAX_NESTING)
        .try_with_sql(text)
}

fn peek_word(p: &Parser<'_>) -> Option<String> {
    match p.peek_token().token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

fn eat_word(p: &mut Parser<'_>, word: &str) -> bool {
    if peek_word(p).as_deref() == Some(word) {
        p.next_token();
        true
    } else {
        false
    }
}

fn expect_word(p: &mut Parser<'_>, word: &str) -> Result<(), ParserError> {
    if eat_word(p, word) {
        Ok(())
    } else {
        p.expected(word, p.peek_token())
    }
}

fn expect_end(p: &mut Parser<'_>) -> Result<(), ParserError> {
    while p.consume_token(&Token::SemiColon) {}
    match p.peek_token().token {
        Token::EOF => Ok(()),
        _ => p.expected("end of statement", p.peek_token()),
    }
}

/// An object name as stored in the catalog: unquoted parts lower-cased, schema `public` dropped.
fn object_name(p: &mut Parser<'_>) -> Result<String, ParserError> {
    let name = p.parse_object_name(false)?;
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|part| part.as_ident())
        .map(|i| {
            if i.quote_style.is_some() {
                i.value.clone()
            } else {
                i.value.to_lowercase()
            }
        })
        .collect();
    if let Some(long) = parts.iter().find(|p| p.len() > MAX_IDENTIFIER_BYTES) {
        let shown: String = long.chars().take(20).collect();
        return Err(ParserError::ParserError(format!(
            "identifier \"{shown}...\" is {} bytes long (at most {MAX_IDENTIFIER_BYTES})",
            long.len()
        )));
    }
    Ok(match parts.as_slice() {
        [schema, table] if schema == "public" => table.clone(),
        _ => parts.join("."),
    })
}

/// Postgres's NAMEDATALEN - 1: longer names of catalog objects are refused.
const MAX_IDENTIFIER_BYTES: usize = 63;

fn ident(p: &mut Parser<'_>) -> Result<String, ParserError> {
    let i = p.parse_identifier()?;
    Ok(if i.quote_style.is_some() {
        i.value
    } else {
        i.value.to_lowercase()
    })
}

fn parse_object_kind(p: &mut Parser<'_>) -> Result<ObjectKind, ParserError> {
    if eat_word(p, "SOURCE") {
        Ok(ObjectKind::Source)
    } else if eat_word(p, "TABLE") {
        Ok(ObjectKind::Table)
    } else if eat_word(p, "SINK") {
        Ok(ObjectKind::Sink)
    } else if eat_word(p, "MATERIALIZED") {
        expect_word(p, "VIEW")?;
        Ok(ObjectKind::MaterializedView)
    } else {
        p.expected("SOURCE, TABLE, MATERIALIZED VIEW or SINK", p.peek_token())
    }
}

fn parse_drop(text: &str) -> Result<Statement, ParserError> {
    let mut p = parser(text)?;
    expect_word(&mut p, "DROP")?;
    let kind = parse_object_kind(&mut p)?;
    let if_exists = eat_word(&mut p, "IF") && {
        expect_word(&mut p, "EXISTS")?;
        true
    };
    let names = p.parse_comma_separated(object_name)?;
    let cascade = eat_word(&mut p, "CASCADE");
    if !cascade {
        eat_word(&mut p, "RESTRICT");
    }
    expect_end(&mut p)?;
    Ok(Statement::Drop {
        kind,
        names,
        if_exists,
        cascade,
    })
}

fn parse_show_create(text: &str) -> Result<Statement, ParserError> {
    let mut p = parser(text)?;
    expect_word(&mut p, "SHOW")?;
    expect_word(&mut p, "CREATE")?;
    let kind = parse_object_kind(&mut p)?;
    let name = object_name(&mut p)?;
    expect_end(&mut p)?;
    Ok(Statement::ShowCreate { kind, name })
}

fn parse_describe(text: &str) -> Result<Statement, ParserError> {
    let mut p = parser(text)?;
    if !eat_word(&mut p, "DESCRIBE") {
        expect_word(&mut p, "DESC")?;
    }
    let name = object_name(&mut p)?;
    expect_end(&mut p)?;
    Ok(Statement::Describe(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Vec<ParsedStatement> {
        StatementParser::default()
            .parse(sql, &Interrupt::default())
            .unwrap()
    }

    #[test]
    fn create_source_with_watermark_options_and_format() {
        let s = parse(
            "CREATE SOURCE bid (auction BIGINT, price BIGINT, date_time TIMESTAMP,
               WATERMARK FOR date_time AS date_time - INTERVAL '5' SECOND)
             INCLUDE partition AS p
             WITH (connector = 'kafka', topic = 'bid', properties.bootstrap.server = '127.0.0.1:9092')
             FORMAT PLAIN ENCODE JSON",
        );
        let Statement::Create(c) = &s[0].statement else {
            panic!()
        };
        assert_eq!(c.kind, ObjectKind::Source);
        assert_eq!(c.columns.len(), 3);
        assert_eq!(c.watermark.as_ref().unwrap().0, "date_time");
        assert_eq!(c.options["properties.bootstrap.server"], "127.0.0.1:9092");
        assert_eq!(c.includes, vec![("partition".to_string(), "p".to_string())]);
        assert_eq!(c.format, Some(("PLAIN".into(), "JSON".into())));
    }

    #[test]
    fn statements_split_with_offsets_and_strings_kept_whole() {
        let s = parse("SELECT 'a;b'; CREATE TABLE t (id INT PRIMARY KEY, v TEXT) ;SHOW TABLES");
        assert_eq!(s.len(), 3);
        assert_eq!(s[1].offset, 14);
        assert_eq!(s[1].text, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)");
        let Statement::Create(c) = &s[1].statement else {
            panic!()
        };
        assert_eq!(c.primary_key, vec!["id".to_string()]);
        assert!(matches!(
            s[2].statement,
            Statement::ShowObjects(ObjectKind::Table)
        ));
    }

    #[test]
    fn syntax_error_has_position_in_whole_query() {
        let e = StatementParser::default()
            .parse("SELECT 1; SELEC 2", &Interrupt::default())
            .unwrap_err();
        assert_eq!(e.code, "42601", "{e:?}");
        assert_eq!(e.position, Some(11));
    }

    #[test]
    fn set_forms() {
        let s = parse(
            "SET TIME ZONE 'UTC'; SET search_path TO public, pg_catalog; SET extra_float_digits = 3",
        );
        assert!(
            matches!(&s[0].statement, Statement::SetVariable { name, value } if name == "timezone" && value.as_deref() == Some("UTC"))
        );
        assert!(
            matches!(&s[1].statement, Statement::SetVariable { value, .. } if value.as_deref() == Some("public, pg_catalog"))
        );
        assert!(
            matches!(&s[2].statement, Statement::SetVariable { value, .. } if value.as_deref() == Some("3"))
        );
    }
}
