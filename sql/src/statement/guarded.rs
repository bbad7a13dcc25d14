//! The SQL dialect weir parses with: PostgreSQL's, in bounded time. A work budget per
//! statement, checked at every expression, stops pathological input, timeouts and cancels.
//!
//! sqlparser backtracks: PostgreSQL's dialect parses every function argument as an
//! expression first (for `expr => value` names), so `f(f(f(...)))` costs 2^depth, and an
//! alternative tried after a failure (a keyword, then the same word as an identifier) can
//! double the work per nesting level again. Postgres names arguments by identifier only,
//! which `WeirDialect` does; the budget bounds what is left. It spends one step per
//! expression prefix and, once spent or interrupted, fails every further prefix with
//! `RecursionLimitExceeded`, the one error sqlparser's backtracking passes up instead of
//! trying the next alternative, so the parse unwinds at once.

use std::any::TypeId;
use std::cell::RefCell;

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Value, VisitMut, VisitorMut};
use datafusion::sql::sqlparser::dialect::{Dialect, PostgreSqlDialect, Precedence};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};

use crate::error::{Result, SqlError};
use crate::interrupt::Interrupt;

/// Expression prefixes a statement may parse, beyond `STEPS_PER_TOKEN` per token: linear
/// parsing takes at most about one per token, so only exponential backtracking comes near.
const BASE_STEPS: u64 = 10_000;
const STEPS_PER_TOKEN: u64 = 8;
/// How often (in steps) the interrupt's clock is read.
const CHECK_EVERY: u64 = 1024;
/// sqlparser's nesting limit (its default): deeper input fails with 54001.
pub(crate) const MAX_NESTING: usize = 50;

/// Why a budgeted parse stopped.
#[derive(Debug)]
enum Stop {
    Spent,
    Interrupted(SqlError),
}

struct Budget {
    left: u64,
    spent: u64,
    interrupt: Interrupt,
    stop: Option<Stop>,
}

thread_local! {
    /// The budget of the parse running on this thread (parsing is synchronous).
    static BUDGET: RefCell<Option<Budget>> = const { RefCell::new(None) };
}

/// Spends one step; false once the parse must stop.
fn spend() -> bool {
    BUDGET.with_borrow_mut(|b| {
        let Some(b) = b else { return true };
        if b.stop.is_some() {
            return false;
        }
        b.spent += 1;
        if b.spent > b.left {
            b.stop = Some(Stop::Spent);
            return false;
        }
        if b.spent.is_multiple_of(CHECK_EVERY)
            && let Err(e) = b.interrupt.check()
        {
            b.stop = Some(Stop::Interrupted(e));
            return false;
        }
        true
    })
}

/// Runs `parse` (all parsing of one statement text of `tokens` tokens) within a budget;
/// an exhausted budget or an interrupt becomes its error.
pub(crate) fn with_budget<T>(
    tokens: usize,
    interrupt: &Interrupt,
    parse: impl FnOnce() -> Result<T>,
) -> Result<T> {
    interrupt.check()?;
    let previous = BUDGET.replace(Some(Budget {
        left: BASE_STEPS + STEPS_PER_TOKEN * tokens as u64,
        spent: 0,
        interrupt: interrupt.clone(),
        stop: None,
    }));
    let result = parse();
    let budget = BUDGET.replace(previous);
    match budget.and_then(|b| b.stop) {
        None => result,
        Some(Stop::Interrupted(e)) => Err(e),
        Some(Stop::Spent) => Err(SqlError::new(
            "54001",
            "statement is too complex to parse (it backtracks too much)",
        )),
    }
}

/// `a IS [NOT] DISTINCT FROM b`, with `b` bound as Postgres binds it: up to an operator of
/// lower precedence than IS (AND, OR, NOT). sqlparser takes a whole expression after FROM,
/// so `x IS NOT DISTINCT FROM y AND z` was `x IS NOT DISTINCT FROM (y AND z)`.
fn is_distinct_from(parser: &mut Parser<'_>, expr: &Expr) -> Option<Result<Expr, ParserError>> {
    let negated = if parser.parse_keywords(&[Keyword::IS, Keyword::DISTINCT, Keyword::FROM]) {
        false
    } else if parser.parse_keywords(&[Keyword::IS, Keyword::NOT, Keyword::DISTINCT, Keyword::FROM])
    {
        true
    } else {
        return None;
    };
    let right = match parser.parse_subexpr(PG.prec_value(Precedence::Is)) {
        Ok(right) => Box::new(right),
        Err(e) => return Some(Err(e)),
    };
    let left = Box::new(expr.clone());
    Some(Ok(if negated {
        Expr::IsNotDistinctFrom(left, right)
    } else {
        Expr::IsDistinctFrom(left, right)
    }))
}

/// PostgreSQL's dialect with named function arguments by identifier (as Postgres has them)
/// and the budget check; it reports itself as PostgreSQL to the parser's dialect tests.
#[derive(Debug, Default)]
pub(crate) struct WeirDialect;

/// PostgreSQL's own dialect, with the budget check: for catalog queries that go through
/// the compatibility parser, whose cost it predicts.
#[derive(Debug, Default)]
pub(crate) struct BudgetedPostgres;

const PG: PostgreSqlDialect = PostgreSqlDialect {};

macro_rules! postgres_with_budget {
    ($name:ty, $named_args_by_expr:expr) => {
        impl Dialect for $name {
            fn dialect(&self) -> TypeId {
                TypeId::of::<PostgreSqlDialect>()
            }
            fn parse_prefix(&self, parser: &mut Parser<'_>) -> Option<Result<Expr, ParserError>> {
                if !spend() {
                    return Some(Err(ParserError::RecursionLimitExceeded));
                }
                PG.parse_prefix(parser)
            }
            fn parse_infix(
                &self,
                parser: &mut Parser<'_>,
                expr: &Expr,
                _precedence: u8,
            ) -> Option<Result<Expr, ParserError>> {
                is_distinct_from(parser, expr)
            }
            fn supports_named_fn_args_with_expr_name(&self) -> bool {
                $named_args_by_expr
            }
            fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
                PG.identifier_quote_style(identifier)
            }
            fn is_delimited_identifier_start(&self, ch: char) -> bool {
                PG.is_delimited_identifier_start(ch)
            }
            fn is_identifier_start(&self, ch: char) -> bool {
                PG.is_identifier_start(ch)
            }
            fn is_identifier_part(&self, ch: char) -> bool {
                PG.is_identifier_part(ch)
            }
            fn supports_unicode_string_literal(&self) -> bool {
                PG.supports_unicode_string_literal()
            }
            fn is_reserved_for_identifier(&self, kw: Keyword) -> bool {
                PG.is_reserved_for_identifier(kw)
            }
            fn is_custom_operator_part(&self, ch: char) -> bool {
                PG.is_custom_operator_part(ch)
            }
            fn get_next_precedence(&self, parser: &Parser<'_>) -> Option<Result<u8, ParserError>> {
                PG.get_next_precedence(parser)
            }
            fn supports_filter_during_aggregation(&self) -> bool {
                PG.supports_filter_during_aggregation()
            }
            fn supports_group_by_expr(&self) -> bool {
                PG.supports_group_by_expr()
            }
            fn prec_value(&self, prec: Precedence) -> u8 {
                PG.prec_value(prec)
            }
            fn allow_extract_custom(&self) -> bool {
                PG.allow_extract_custom()
            }
            fn allow_extract_single_quotes(&self) -> bool {
                PG.allow_extract_single_quotes()
            }
            fn supports_create_index_with_clause(&self) -> bool {
                PG.supports_create_index_with_clause()
            }
            fn supports_explain_with_utility_options(&self) -> bool {
                PG.supports_explain_with_utility_options()
            }
            fn supports_listen_notify(&self) -> bool {
                PG.supports_listen_notify()
            }
            fn supports_factorial_operator(&self) -> bool {
                PG.supports_factorial_operator()
            }
            fn supports_bitwise_shift_operators(&self) -> bool {
                PG.supports_bitwise_shift_operators()
            }
            fn supports_comment_on(&self) -> bool {
                PG.supports_comment_on()
            }
            fn supports_load_extension(&self) -> bool {
                PG.supports_load_extension()
            }
            fn supports_named_fn_args_with_colon_operator(&self) -> bool {
                PG.supports_named_fn_args_with_colon_operator()
            }
            fn supports_empty_projections(&self) -> bool {
                PG.supports_empty_projections()
            }
            fn supports_nested_comments(&self) -> bool {
                PG.supports_nested_comments()
            }
            fn supports_string_escape_constant(&self) -> bool {
                PG.supports_string_escape_constant()
            }
            fn supports_numeric_literal_underscores(&self) -> bool {
                PG.supports_numeric_literal_underscores()
            }
            fn supports_array_typedef_with_brackets(&self) -> bool {
                PG.supports_array_typedef_with_brackets()
            }
            fn supports_geometric_types(&self) -> bool {
                PG.supports_geometric_types()
            }
            fn supports_set_names(&self) -> bool {
                PG.supports_set_names()
            }
            fn supports_alter_column_type_using(&self) -> bool {
                PG.supports_alter_column_type_using()
            }
            fn supports_notnull_operator(&self) -> bool {
                PG.supports_notnull_operator()
            }
            fn supports_interval_options(&self) -> bool {
                PG.supports_interval_options()
            }
            fn supports_insert_table_alias(&self) -> bool {
                PG.supports_insert_table_alias()
            }
            fn supports_create_table_like_parenthesized(&self) -> bool {
                PG.supports_create_table_like_parenthesized()
            }
            fn supports_select_wildcard_with_alias(&self) -> bool {
                PG.supports_select_wildcard_with_alias()
            }
            fn supports_comma_separated_trim(&self) -> bool {
                PG.supports_comma_separated_trim()
            }
            fn supports_xml_expressions(&self) -> bool {
                PG.supports_xml_expressions()
            }
            fn supports_comment_optimizer_hint(&self) -> bool {
                PG.supports_comment_optimizer_hint()
            }
        }
    };
}

postgres_with_budget!(WeirDialect, false);
postgres_with_budget!(BudgetedPostgres, true);

/// The deepest expression nesting a statement may have. A long chain of binary operators
/// (`1+1+...`) parses without recursion but nests once per term, and cloning, printing,
/// planning or dropping it recurses as deep: on a connection thread, 100k terms overflowed
/// the stack and aborted the process. Postgres refuses such chains too (54001, "stack depth
/// limit exceeded", near ten thousand terms). DataFusion's planning takes time quadratic in
/// the depth (a second for a thousand terms in a debug build), which sets this limit.
pub(crate) const MAX_EXPR_DEPTH: usize = 1000;

/// Cuts the expressions nested deeper than `MAX_EXPR_DEPTH` out of `node` (they are
/// dropped piece by piece, so not even dropping recurses deeper) and fails with 54001 if
/// there were any.
pub(crate) fn limit_depth<N: VisitMut>(node: &mut N) -> Result<()> {
    /// Replaces each expression at depth `MAX_EXPR_DEPTH + 1` by NULL and keeps it.
    struct Cut {
        depth: usize,
        cut: Vec<Expr>,
    }
    impl VisitorMut for Cut {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            self.depth += 1;
            if self.depth > MAX_EXPR_DEPTH {
                self.cut
                    .push(std::mem::replace(expr, Expr::Value(Value::Null.into())));
            }
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, _expr: &mut Expr) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
    }
    let mut cut = Cut {
        depth: 0,
        cut: Vec::new(),
    };
    let _ = node.visit(&mut cut);
    if cut.cut.is_empty() {
        return Ok(());
    }
    while let Some(mut piece) = cut.cut.pop() {
        let mut deeper = Cut {
            depth: 0,
            cut: Vec::new(),
        };
        let _ = piece.visit(&mut deeper);
        cut.cut.append(&mut deeper.cut);
    }
    Err(SqlError::new(
        "54001",
        format!("expression is nested too deeply (more than {MAX_EXPR_DEPTH} levels)"),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn parse(dialect: &dyn Dialect, sql: &str, interrupt: &Interrupt) -> Result<()> {
        with_budget(sql.len(), interrupt, || {
            Parser::new(dialect)
                .with_recursion_limit(MAX_NESTING)
                .try_with_sql(sql)
                .and_then(|mut p| p.parse_statements())
                .map(|_| ())
                .map_err(|e| SqlError::syntax(e.to_string(), None))
        })
    }

    #[test]
    fn is_distinct_from_binds_tighter_than_and() {
        for dialect in [&WeirDialect as &dyn Dialect, &BudgetedPostgres] {
            let expr = Parser::new(dialect)
                .try_with_sql("a IS NOT DISTINCT FROM b AND c = d OR e IS DISTINCT FROM f = g")
                .unwrap()
                .parse_expr()
                .unwrap();
            assert_eq!(
                expr.to_string(),
                "a IS NOT DISTINCT FROM b AND c = d OR e IS DISTINCT FROM f = g"
            );
            let Expr::BinaryOp { left, .. } = &expr else {
                panic!("{expr:?}")
            };
            let Expr::BinaryOp { left, right, .. } = left.as_ref() else {
                panic!("{left:?}")
            };
            assert!(
                matches!(left.as_ref(), Expr::IsNotDistinctFrom(..)),
                "{left:?}"
            );
            assert!(matches!(right.as_ref(), Expr::BinaryOp { .. }), "{right:?}");
        }
    }

    #[test]
    fn nested_function_calls_parse_in_linear_time() {
        let sql = format!("SELECT {}1{}", "f(".repeat(45), ")".repeat(45));
        let start = Instant::now();
        parse(&WeirDialect, &sql, &Interrupt::default()).unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));
        // PostgreSQL's own dialect backtracks 2^45 times: the budget stops it.
        let e = parse(&BudgetedPostgres, &sql, &Interrupt::default()).unwrap_err();
        assert_eq!(e.code, "54001", "{e:?}");
        // Named arguments still parse.
        parse(
            &WeirDialect,
            "SELECT f(a => 1, b => 2)",
            &Interrupt::default(),
        )
        .unwrap();
    }

    #[test]
    fn a_keyword_retried_as_an_identifier_stays_bounded() {
        // ARRAY[ fails at the nesting limit, then is retried as a column `array` with a
        // subscript at every level: 2^depth without the budget.
        let sql = format!("SELECT {}1{}", "ARRAY[".repeat(49), "]".repeat(49));
        let start = Instant::now();
        let e = parse(&WeirDialect, &sql, &Interrupt::default()).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5), "{e:?}");
    }

    #[test]
    fn a_chain_deeper_than_the_limit_is_refused_and_dropped_without_recursion() {
        let sql = format!("SELECT 1{}", "+1".repeat(300_000));
        let mut statements = Parser::new(&WeirDialect)
            .try_with_sql(&sql)
            .and_then(|mut p| p.parse_statements())
            .unwrap();
        // This thread's stack (2 MiB for tests) would not drop 300k levels recursively.
        let e = limit_depth(&mut statements[0]).unwrap_err();
        assert_eq!(e.code, "54001");
        drop(statements);
        let mut fine = Parser::new(&WeirDialect)
            .try_with_sql(&format!("SELECT 1{}", "+1".repeat(MAX_EXPR_DEPTH - 2)))
            .and_then(|mut p| p.parse_statements())
            .unwrap();
        limit_depth(&mut fine[0]).unwrap();
    }

    #[test]
    fn a_cancelled_parse_stops_with_its_reason() {
        let interrupt = Interrupt::default();
        interrupt.cancel();
        let e = parse(&WeirDialect, "SELECT 1", &interrupt).unwrap_err();
        assert_eq!(e.code, "57014");
    }
}
