//! One handler for the simple and the extended protocol: both end in `SessionHandler::run`.
//! Statements DataFusion plans carry their plan from Parse to Execute; the rest run directly.

use std::fmt::Debug;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, into_pg_type};
use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::LogicalPlan;
use futures::{FutureExt, Sink, SinkExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, METADATA_USER, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::startup::ParameterStatus;
use weir_sql::{
    CancelOnDrop, Database, Interrupt, Output, ParsedStatement, SqlError, Statement,
    TransactionKind,
};

use super::encode::{output_response, rows_response};
use super::error::{error_info, notice, to_pgwire};
use super::settings;
use super::subscribe;
use super::text::Zone;

/// A statement between Parse and Execute.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    parsed: ParsedStatement,
    plan: Option<LogicalPlan>,
    /// The columns of a FETCH, known from the session's cursor when it was parsed.
    fetch_schema: Option<SchemaRef>,
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
        crate::metrics::STATEMENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let streams = matches!(parsed.statement, Statement::Subscribe { cursor: None, .. });
        let timeout = settings::statement_timeout(client.metadata()).filter(|_| !streams);
        let body =
            AssertUnwindSafe(self.run_statement(client, parsed, plan, format)).catch_unwind();
        let outcome = match timeout {
            Some(t) => match tokio::time::timeout(t, body).await {
                Ok(outcome) => outcome,
                // Dropping the statement's future aborts the work it started.
                Err(_) => return Ok(Err(Interrupt::timed_out())),
            },
            None => body.await,
        };
        outcome.unwrap_or_else(|panic| {
            let message = weir_sql::panic_message(panic.as_ref());
            tracing::error!(%message, statement = %weir_sql::secrets::redact(&parsed.text), "a statement panicked");
            Ok(Err(SqlError::new(
                "XX000",
                format!("internal error: {message}"),
            )))
        })
    }

    async fn run_statement<C>(
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
        let options = Arc::new(settings::format_options(client.metadata()));
        let aborted = client.transaction_status() == TransactionStatus::Error;
        if aborted
            && !matches!(
                parsed.statement,
                Statement::Transaction(
                    TransactionKind::Commit
                        | TransactionKind::Rollback
                        | TransactionKind::RollbackToSavepoint
                )
            )
        {
            return Ok(Err(SqlError::new(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            )));
        }
        // Every statement passes this one check; a query once it is planned (what it reads
        // and writes is in the plan).
        let user = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        if !matches!(parsed.statement, Statement::Query(_))
            && let Err(e) = self.db.authorize(&user, parsed, None).await
        {
            return Ok(Err(e));
        }
        let result = match &parsed.statement {
            Statement::Query(q) => {
                let plan = match plan {
                    Some(p) => Ok(p),
                    None => plan_query(&self.db, client, parsed, q).await,
                };
                let result = match plan {
                    Ok(plan) => match self.db.authorize(&user, parsed, Some(&plan)).await {
                        Ok(()) => self.db.execute_plan(plan).await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                let implicit_flush = settings::get(client.metadata(), "implicit_flush")
                    .is_ok_and(|(_, v)| v == "on");
                let result = match result {
                    Ok(r) if implicit_flush && matches!(r.output, Output::Command { .. }) => {
                        self.db.flush().await.map(|()| r)
                    }
                    other => other,
                };
                match result {
                    Ok(r) => {
                        let stats = r.report.stats();
                        if stats.errors > 0 {
                            let msg = format!(
                                "skipped {} malformed message{}; first error: {}",
                                stats.errors,
                                if stats.errors == 1 { "" } else { "s" },
                                stats.first_error.unwrap_or_default()
                            );
                            client
                                .send(PgWireBackendMessage::NoticeResponse(notice(msg).into()))
                                .await?;
                        }
                        Ok(output_response(r.output, format, options)?)
                    }
                    Err(e) => Err(e),
                }
            }
            Statement::SetVariable { name, value } => {
                match settings::set(client.metadata_mut(), name, value.as_deref()) {
                    Ok(report) => {
                        if let Some((name, value)) = report {
                            client
                                .send(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                                    name, value,
                                )))
                                .await?;
                        }
                        Ok(Response::Execution(Tag::new("SET")))
                    }
                    Err(e) => Err(e),
                }
            }
            Statement::ShowVariable(name) => match show_variable(client, name) {
                Ok((schema, batch)) => Ok(rows_response(&schema, vec![batch], format, options)?),
                Err(e) => Err(e),
            },
            Statement::Transaction(TransactionKind::Begin) => {
                Ok(Response::TransactionStart(Tag::new("BEGIN")))
            }
            Statement::Transaction(TransactionKind::Commit) => {
                // Cursors end with their transaction.
                let _ = subscribe::cursors(client).close(None).await;
                let tag = if aborted { "ROLLBACK" } else { "COMMIT" };
                Ok(Response::TransactionEnd(Tag::new(tag)))
            }
            Statement::Transaction(TransactionKind::Rollback) => {
                let _ = subscribe::cursors(client).close(None).await;
                Ok(Response::TransactionEnd(Tag::new("ROLLBACK")))
            }
            Statement::Transaction(TransactionKind::Savepoint) => {
                Ok(Response::Execution(Tag::new("SAVEPOINT")))
            }
            Statement::Transaction(TransactionKind::ReleaseSavepoint) => {
                Ok(Response::Execution(Tag::new("RELEASE")))
            }
            // Accepted, but pgwire 0.41 has no way back from the error state short of
            // ROLLBACK, so a failed statement inside a savepoint still aborts the block.
            Statement::Transaction(TransactionKind::RollbackToSavepoint) => {
                Ok(Response::Execution(Tag::new("ROLLBACK")))
            }
            Statement::Discard => Ok(Response::Execution(Tag::new("DISCARD ALL"))),
            Statement::Subscribe {
                target,
                snapshot,
                cursor: None,
            } => match self
                .db
                .subscribe(
                    target,
                    *snapshot,
                    settings::streaming_parallelism(client.metadata()),
                )
                .await
            {
                Ok(sub) => {
                    let zone = Zone::parse(&options.time_zone);
                    return subscribe::copy_out(client, sub, zone).await;
                }
                Err(e) => Err(e),
            },
            Statement::Subscribe {
                target,
                snapshot,
                cursor: Some(name),
            } => {
                if client.transaction_status() != TransactionStatus::Transaction {
                    Err(SqlError::new(
                        "25P01",
                        "DECLARE CURSOR can only be used in transaction blocks",
                    ))
                } else {
                    match self
                        .db
                        .subscribe(
                            target,
                            *snapshot,
                            settings::streaming_parallelism(client.metadata()),
                        )
                        .await
                    {
                        Ok(sub) => subscribe::cursors(client)
                            .open(name, sub)
                            .await
                            .map(|()| Response::Execution(Tag::new("DECLARE CURSOR"))),
                        Err(e) => Err(e),
                    }
                }
            }
            Statement::Fetch {
                cursor,
                count,
                timeout,
            } => match subscribe::cursors(client)
                .fetch(cursor, *count, *timeout)
                .await
            {
                Ok(batch) => Ok(rows_response(
                    &batch.schema(),
                    vec![batch],
                    format,
                    options,
                )?),
                Err(e) => Err(e),
            },
            Statement::Close(cursor) => {
                match subscribe::cursors(client).close(cursor.as_deref()).await {
                    Ok(()) => Ok(Response::Execution(Tag::new("CLOSE CURSOR"))),
                    Err(e) => Err(e),
                }
            }
            Statement::Flush => match self.db.flush().await {
                Ok(()) => Ok(Response::Execution(Tag::new("FLUSH"))),
                Err(e) => Err(e),
            },
            Statement::Checkpoint => match self.db.checkpoint().await {
                Ok(_) => Ok(Response::Execution(Tag::new("CHECKPOINT"))),
                Err(e) => Err(e),
            },
            Statement::CreateSink(_) => match self
                .db
                .execute_create_sink(parsed, settings::streaming_parallelism(client.metadata()))
                .await
            {
                Ok(out) => Ok(output_response(out, format, options)?),
                Err(e) => Err(e.offset_position(parsed.offset)),
            },
            Statement::CreateView { .. } => match self
                .db
                .execute_create_view(parsed, settings::streaming_parallelism(client.metadata()))
                .await
            {
                Ok((out, notices)) => {
                    for msg in notices {
                        client
                            .send(PgWireBackendMessage::NoticeResponse(notice(msg).into()))
                            .await?;
                    }
                    Ok(output_response(out, format, options)?)
                }
                Err(e) => Err(e.offset_position(parsed.offset)),
            },
            _ => {
                // Catalog changes may wait on a broker (a Kafka source's partitions).
                let db = Arc::clone(&self.db);
                let statement = parsed.clone();
                let done = self
                    .db
                    .on_query_threads(move || db.execute_catalog(&statement))
                    .await;
                match done {
                    Ok(out) => Ok(output_response(out, format, options)?),
                    Err(e) => Err(e.offset_position(parsed.offset)),
                }
            }
        };
        // Connectors quote their configuration in errors; what the statement marked secret
        // is not sent back.
        Ok(result.map_err(|mut e| {
            e.message = weir_sql::secrets::scrub(&e.message, &parsed.text);
            e
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
    let interrupt = Interrupt::new(settings::statement_timeout(client.metadata()));
    let _cancel = CancelOnDrop(interrupt.clone());
    db.parse_on_query_threads(sql.to_string(), interrupt).await
}

/// Plans a query on the statement threads, within the session's `statement_timeout`.
/// The function whose calls `plan_query` completes with the session's parameter values.
/// Functions whose text makes a statement go through `resolve_session_functions`.
const SESSION_FUNCTIONS: [&[u8]; 3] = [b"current_setting", b"has_table_privilege", b"user"];

async fn plan_query<C: ClientInfo>(
    db: &Database,
    client: &C,
    parsed: &ParsedStatement,
    query: &datafusion::sql::sqlparser::ast::Statement,
) -> Result<LogicalPlan, SqlError> {
    // Only statements that name it are walked (and cloned) here, on the connection's thread.
    let names_it = SESSION_FUNCTIONS.iter().any(|name| {
        parsed
            .text
            .as_bytes()
            .windows(name.len())
            .any(|w| w.eq_ignore_ascii_case(name))
    });
    let resolved = if names_it {
        settings::resolve_session_functions(client.metadata(), query)?
    } else {
        None
    };
    let plan = db.plan(resolved.as_ref().unwrap_or(query));
    let plan = match settings::statement_timeout(client.metadata()) {
        Some(t) => tokio::time::timeout(t, plan)
            .await
            .unwrap_or_else(|_| Err(Interrupt::timed_out())),
        None => plan.await,
    };
    plan.map_err(|e| e.offset_position(parsed.offset))
}

/// The columns of `SHOW name`: the parameter's canonical name, or (name, setting) for ALL.
fn show_schema(name: &str) -> Arc<Schema> {
    let column = |n: &str| Field::new(n, DataType::Utf8, false);
    if name == "all" {
        Arc::new(Schema::new(vec![column("name"), column("setting")]))
    } else {
        Arc::new(Schema::new(vec![column(
            settings::canonical(name).unwrap_or(name),
        )]))
    }
}

fn show_variable<C: ClientInfo>(
    client: &C,
    name: &str,
) -> Result<(Arc<Schema>, RecordBatch), SqlError> {
    let (names, values): (Vec<String>, Vec<String>) = if name == "all" {
        settings::all(client.metadata()).into_iter().unzip()
    } else {
        let (n, v) = settings::get(client.metadata(), name)?;
        (vec![n.to_string()], vec![v])
    };
    let schema = show_schema(name);
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(values))];
    if name == "all" {
        columns.insert(0, Arc::new(StringArray::from(names)));
    }
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)
        .map_err(|e| SqlError::new("XX000", e.to_string()))?;
    Ok((schema, batch))
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
            Err(e) => return Ok(vec![Response::Error(Box::new(error_info(&e)))]),
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
/// DataFusion leaves untyped takes the type of a cast around it (`$1::BIGINT`).
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
    let mut ids: Vec<(usize, Option<DataType>)> = types
        .into_iter()
        .map(|(id, t)| {
            (
                id.trim_start_matches('$')
                    .parse::<usize>()
                    .unwrap_or(usize::MAX),
                t,
            )
        })
        .collect();
    ids.sort_by_key(|(i, _)| *i);
    Ok(ids.into_iter().map(|(_, t)| t).collect())
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
        let plan = match &parsed.statement {
            Statement::Query(q) => Some(
                plan_query(&self.db, client, &parsed, q)
                    .await
                    .map_err(|e| to_pgwire(&e))?,
            ),
            _ => None,
        };
        let fetch_schema = match &parsed.statement {
            Statement::Fetch { cursor, .. } => subscribe::cursors(client).schema(cursor).await,
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
            (None, Statement::ShowVariable(name)) => show_schema(name),
            (None, Statement::Fetch { .. }) => match &stmt.fetch_schema {
                Some(s) => Arc::clone(s),
                None => return Ok(vec![]),
            },
            (None, other) => match Database::output_schema(other) {
                Some(s) => s,
                None => return Ok(vec![]),
            },
        };
        arrow_schema_to_pg_fields(&schema, format, None)
    }
}
