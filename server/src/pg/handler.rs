//! One handler for the simple and the extended protocol: both end in `SessionHandler::run`,
//! which hands the statement to `Database::execute` with the connection's `Session` and
//! answers with what it did. Queries carry their plan from Parse to Execute.

use std::collections::HashMap;
use std::fmt::Debug;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::into_pg_type;
use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::LogicalPlan;
use futures::{FutureExt, Sink, SinkExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::startup::ParameterStatus;
use pgwire::types::format::FormatOptions;
use tokio::sync::Mutex;
use weir_sql::{
    CancelOnDrop, Database, Executed, Interrupt, ParsedStatement, Session, SqlError, Statement,
};

use super::copy;
use super::encode::output_response;
use super::error::{error_info, notice, to_pgwire};
use super::text::Zone;

/// A statement between Parse and Execute.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    parsed: ParsedStatement,
    plan: Option<LogicalPlan>,
    /// The columns of a FETCH, known from the session's cursor when it was parsed.
    fetch_schema: Option<datafusion::arrow::datatypes::SchemaRef>,
}

/// Parses and plans statements for the extended protocol.
pub(crate) struct PreparedParser {
    db: Arc<Database>,
}

/// Runs statements for every connection of a server.
pub(crate) struct SessionHandler {
    db: Arc<Database>,
    parser: Arc<PreparedParser>,
}

/// The connection's session (made at login; a default one if a client got here without).
pub(crate) fn session_of<C: ClientInfo>(client: &C) -> Arc<Mutex<Session>> {
    client
        .session_extensions()
        .get_or_insert_with(|| Mutex::new(Session::default()))
}

/// How this session's values are printed: its DateStyle, IntervalStyle, bytea_output,
/// extra_float_digits and TimeZone.
fn format_options(session: &Session) -> FormatOptions {
    let values: HashMap<String, String> = session
        .all()
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect();
    let mut options = FormatOptions::from_client_metadata(&values);
    if let Some(zone) = values.get("timezone") {
        options.time_zone.clone_from(zone);
    }
    options
}

impl SessionHandler {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self {
            parser: Arc::new(PreparedParser {
                db: Arc::clone(&db),
            }),
            db,
        }
    }

    /// Runs one statement within the session's `statement_timeout` (a streaming COPY
    /// (SUBSCRIBE) only while it starts); a panic becomes the statement's XX000. The outer
    /// error is the connection's; the inner one the statement's.
    async fn run<C>(
        &self,
        client: &mut C,
        parsed: &ParsedStatement,
        plan: Option<LogicalPlan>,
        format: &Format,
    ) -> PgWireResult<Result<Response, SqlError>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        crate::http::metrics::PROCESS.statement(&parsed.text);
        let session = session_of(client);
        let mut session = session.lock().await;
        let streams = matches!(parsed.statement, Statement::Subscribe { cursor: None, .. });
        let timeout = session.statement_timeout().filter(|_| !streams);
        let body = AssertUnwindSafe(self.db.execute(&mut session, parsed, plan)).catch_unwind();
        let outcome = match timeout {
            Some(t) => match tokio::time::timeout(t, body).await {
                Ok(outcome) => outcome,
                // Dropping the statement's future aborts the work it started.
                Err(_) => Ok(Err(Interrupt::timed_out())),
            },
            None => body.await,
        };
        let executed = match outcome {
            Ok(result) => result,
            Err(panic) => {
                let message = weir_sql::panic_message(panic.as_ref());
                let statement = weir_sql::secrets::redact(&parsed.text);
                tracing::error!(%message, %statement, "a statement panicked");
                Err(SqlError::new("XX000", format!("internal error: {message}")))
            }
        };
        let executed = match executed {
            Ok(executed) => executed,
            Err(e) => {
                session.statement_failed();
                crate::http::metrics::PROCESS.error(e.code);
                return Ok(Err(e));
            }
        };
        let options = Arc::new(format_options(&session));
        Ok(Ok(match executed {
            Executed::Output { output, notices } => {
                for message in notices {
                    client
                        .send(PgWireBackendMessage::NoticeResponse(notice(message).into()))
                        .await?;
                }
                output_response(output, format, options)?
            }
            Executed::Set { reported } => {
                if let Some((name, value)) = reported {
                    client
                        .send(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                            name, value,
                        )))
                        .await?;
                }
                Response::Execution(Tag::new("SET"))
            }
            Executed::TransactionStart => Response::TransactionStart(Tag::new("BEGIN")),
            Executed::TransactionEnd { tag } => Response::TransactionEnd(Tag::new(tag)),
            Executed::Copy(sub) => {
                // The session is not needed while its changes stream.
                drop(session);
                let zone = Zone::parse(&options.time_zone);
                return copy::copy_out(client, sub, zone).await;
            }
        }))
    }
}

/// Parses query text on the statement threads, within the session's `statement_timeout`; a
/// cancel request (which drops this future) stops the parse too.
async fn parse_text<C: ClientInfo>(
    db: &Database,
    client: &C,
    sql: &str,
) -> Result<Vec<ParsedStatement>, SqlError> {
    let timeout = session_of(client).lock().await.statement_timeout();
    let interrupt = Interrupt::new(timeout);
    let _cancel = CancelOnDrop(interrupt.clone());
    db.parse_on_query_threads(sql.to_string(), interrupt).await
}

#[async_trait]
impl SimpleQueryHandler for SessionHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = match parse_text(&self.db, client, query).await {
            Ok(s) => s,
            Err(e) => {
                session_of(client).lock().await.statement_failed();
                return Ok(vec![Response::Error(Box::new(error_info(&e)))]);
            }
        };
        let copies =
            |p: &ParsedStatement| matches!(p.statement, Statement::Subscribe { cursor: None, .. });
        if statements.len() > 1 && statements.iter().any(copies) {
            // It streams while it runs, ahead of the responses queued for earlier statements.
            let e = SqlError::new(
                "0A000",
                "COPY (SUBSCRIBE ...) must be the only statement of its query",
            );
            return Ok(vec![Response::Error(Box::new(error_info(&e)))]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for parsed in &statements {
            match self.run(client, parsed, None, &Format::UnifiedText).await? {
                Ok(r) => {
                    // Later statements of this query see the block BEGIN opened or COMMIT closed.
                    match &r {
                        Response::TransactionStart(_) => {
                            client.set_transaction_status(TransactionStatus::Transaction)
                        }
                        Response::TransactionEnd(_) => {
                            client.set_transaction_status(TransactionStatus::Idle)
                        }
                        _ => {}
                    }
                    responses.push(r)
                }
                Err(e) => {
                    responses.push(Response::Error(Box::new(error_info(&e))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for SessionHandler {
    type Statement = Prepared;
    type QueryParser = PreparedParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let plan = match &prepared.plan {
            Some(plan) => {
                let types = parameter_data_types(plan).map_err(|e| to_pgwire(&e))?;
                let refs: Vec<Option<&DataType>> = types.iter().map(Option::as_ref).collect();
                let params = deserialize_parameters(portal, &refs)?;
                Some(
                    plan.clone()
                        .replace_params_with_values(&params)
                        .map_err(|e| to_pgwire(&SqlError::from(e)))?,
                )
            }
            None => None,
        };
        match self
            .run(client, &prepared.parsed, plan, &portal.result_column_format)
            .await?
        {
            Ok(r) => Ok(r),
            Err(e) => Err(to_pgwire(&e)),
        }
    }
}

/// The plan's parameters ($1, $2, ...) in order, with their inferred types; a parameter
/// DataFusion leaves untyped takes the type of a cast around it (`$1::BIGINT`), and one
/// the plan does not read has none.
fn parameter_data_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>, SqlError> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Expr;
    let mut types = plan.get_parameter_types()?;
    if types.values().any(Option::is_none) {
        plan.apply(|node| {
            for expr in node.expressions() {
                expr.apply(|e| {
                    if let Expr::Cast(c) = e
                        && let Expr::Placeholder(p) = c.expr.as_ref()
                        && let Some(slot @ None) = types.get_mut(&p.id)
                    {
                        *slot = Some(c.field.data_type().clone());
                    }
                    Ok(TreeNodeRecursion::Continue)
                })?;
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
    }
    // A parameter the plan no longer reads (a rewrite dropped the subquery that held it)
    // still has its place: the client sends a value for every $n.
    let mut by_position: Vec<Option<DataType>> = Vec::new();
    for (id, t) in types {
        let Some(n) = id
            .trim_start_matches('$')
            .parse::<usize>()
            .ok()
            .filter(|&n| n >= 1)
        else {
            continue;
        };
        if by_position.len() < n {
            by_position.resize(n, None);
        }
        by_position[n - 1] = t;
    }
    Ok(by_position)
}

#[async_trait]
impl QueryParser for PreparedParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = parse_text(&self.db, client, sql)
            .await
            .map_err(|e| to_pgwire(&e))?;
        let parsed = match statements.len() {
            0 => return Ok(None),
            1 => statements.remove(0),
            _ => {
                return Err(to_pgwire(&SqlError::syntax(
                    "cannot insert multiple commands into a prepared statement",
                    None,
                )));
            }
        };
        let session = session_of(client);
        let session = session.lock().await;
        let plan = match &parsed.statement {
            Statement::Query(q) => Some(
                self.db
                    .plan_for(&session, &parsed, q)
                    .await
                    .map_err(|e| to_pgwire(&e))?,
            ),
            _ => None,
        };
        let fetch_schema = match &parsed.statement {
            Statement::Fetch { cursor, .. } => session.cursor_schema(cursor),
            _ => None,
        };
        Ok(Some(Prepared {
            parsed,
            plan,
            fetch_schema,
        }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        let Some(plan) = &stmt.plan else {
            return Ok(vec![]);
        };
        parameter_data_types(plan)
            .map_err(|e| to_pgwire(&e))?
            .iter()
            .map(|t| t.as_ref().map_or(Ok(Type::UNKNOWN), into_pg_type))
            .collect()
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = format.unwrap_or(&Format::UnifiedText);
        let schema = match (&stmt.plan, &stmt.parsed.statement) {
            (Some(LogicalPlan::Dml(_)), _) => return Ok(vec![]),
            (Some(plan), _) => Arc::new(plan.schema().as_arrow().clone()),
            (None, Statement::ShowVariable(name)) => Database::show_schema(name),
            (None, Statement::Fetch { .. }) => match &stmt.fetch_schema {
                Some(s) => Arc::clone(s),
                None => return Ok(vec![]),
            },
            (None, other) => match Database::output_schema(other) {
                Some(s) => s,
                None => return Ok(vec![]),
            },
        };
        super::encode::pg_fields(&schema, format, None)
    }
}
