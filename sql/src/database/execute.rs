//! One entry for every statement of a session: `Database::execute` checks it against the
//! session's role, runs it, and moves the session's transaction block along.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast;

use super::{Database, Output, Subscription};
use crate::error::{Result, SqlError};
use crate::interrupt::Interrupt;
use crate::session::{Session, TransactionState};
use crate::statement::{ParsedStatement, Statement, TransactionKind};

/// Text that makes a statement go through `Session::resolve_functions` (the functions
/// whose answer depends on the session).
const SESSION_FUNCTIONS: [&[u8]; 3] = [b"current_setting", b"has_table_privilege", b"user"];

/// What a statement did, for the front end to answer with.
#[derive(Debug)]
pub enum Executed {
    /// Rows or a command tag; the notices go first.
    Output {
        output: Output,
        notices: Vec<String>,
    },
    /// SET or RESET; the parameter to report to the client, when it is one clients track.
    Set { reported: Option<(String, String)> },
    /// BEGIN.
    TransactionStart,
    /// COMMIT or ROLLBACK (the tag: ROLLBACK when the block had failed).
    TransactionEnd { tag: &'static str },
    /// `COPY (SUBSCRIBE ...) TO STDOUT`: the changes to stream until the client goes.
    Copy(Subscription),
}

impl Executed {
    fn command(tag: &str) -> Self {
        Executed::Output {
            output: Output::Command {
                tag: tag.to_string(),
                rows: None,
            },
            notices: vec![],
        }
    }

    fn rows(output: Output) -> Self {
        Executed::Output {
            output,
            notices: vec![],
        }
    }
}

impl Database {
    /// Plans a statement DataFusion understands for `session`, within its
    /// `statement_timeout` (on the statement threads).
    pub async fn plan_for(
        &self,
        session: &Session,
        parsed: &ParsedStatement,
        query: &ast::Statement,
    ) -> Result<LogicalPlan> {
        // Only statements that name such a function are walked (and cloned).
        let names_one = SESSION_FUNCTIONS.iter().any(|name| {
            parsed
                .text
                .as_bytes()
                .windows(name.len())
                .any(|w| w.eq_ignore_ascii_case(name))
        });
        let resolved = if names_one {
            session.resolve_functions(query)?
        } else {
            None
        };
        let plan = self.plan(resolved.as_ref().unwrap_or(query));
        let plan = match session.statement_timeout() {
            Some(t) => tokio::time::timeout(t, plan)
                .await
                .unwrap_or_else(|_| Err(Interrupt::timed_out())),
            None => plan.await,
        };
        plan.map_err(|e| e.offset_position(parsed.offset))
    }

    /// Runs one statement of `session` (`plan`: a query planned already, for the extended
    /// protocol). Refuses what the session's role may not do (42501) and, inside a failed
    /// block, everything but its end (25P02). Errors never quote the credentials of the
    /// statement's WITH options.
    pub async fn execute(
        self: &Arc<Self>,
        session: &mut Session,
        parsed: &ParsedStatement,
        plan: Option<LogicalPlan>,
    ) -> Result<Executed> {
        let ends_block = matches!(
            parsed.statement,
            Statement::Transaction(
                TransactionKind::Commit
                    | TransactionKind::Rollback
                    | TransactionKind::RollbackToSavepoint
            )
        );
        if session.transaction() == TransactionState::Failed && !ends_block {
            return Err(SqlError::new(
                "25P02",
                "current transaction is aborted, commands ignored until end of transaction block",
            ));
        }
        let result = self.run(session, parsed, plan).await;
        if result.is_err() {
            session.statement_failed();
        }
        result.map_err(|mut e| {
            e.message = crate::secrets::scrub(&e.message, &parsed.text);
            e
        })
    }

    async fn run(
        self: &Arc<Self>,
        session: &mut Session,
        parsed: &ParsedStatement,
        plan: Option<LogicalPlan>,
    ) -> Result<Executed> {
        let user = session.user().to_string();
        // Every statement passes this one check; a query once it is planned (what it reads
        // and writes is in the plan).
        if !matches!(parsed.statement, Statement::Query(_)) {
            self.authorize(&user, parsed, None).await?;
        }
        let parallelism = session.streaming_parallelism();
        Ok(match &parsed.statement {
            Statement::Query(q) => {
                let plan = match plan {
                    Some(p) => p,
                    None => self.plan_for(session, parsed, q).await?,
                };
                self.authorize(&user, parsed, Some(&plan)).await?;
                let plan = self.access.hide_unprivileged(&user, plan)?;
                let result = self.execute_plan(plan).await?;
                if session.implicit_flush() && matches!(result.output, Output::Command { .. }) {
                    self.flush().await?;
                }
                let stats = result.report.stats();
                let notices = if stats.errors > 0 {
                    vec![format!(
                        "skipped {} malformed message{}; first error: {}",
                        stats.errors,
                        if stats.errors == 1 { "" } else { "s" },
                        stats.first_error.unwrap_or_default()
                    )]
                } else {
                    vec![]
                };
                Executed::Output {
                    output: result.output,
                    notices,
                }
            }
            Statement::SetVariable { name, value } => Executed::Set {
                reported: session.set(name, value.as_deref())?,
            },
            Statement::ShowVariable(name) => Executed::rows(show_variable(session, name)?),
            Statement::Transaction(kind) => match kind {
                TransactionKind::Begin => {
                    session.set_transaction(TransactionState::Block);
                    Executed::TransactionStart
                }
                TransactionKind::Commit | TransactionKind::Rollback => {
                    // Cursors end with their transaction.
                    let _ = session.cursors.close(None);
                    let failed = session.transaction() == TransactionState::Failed;
                    session.set_transaction(TransactionState::Idle);
                    Executed::TransactionEnd {
                        tag: if failed || *kind == TransactionKind::Rollback {
                            "ROLLBACK"
                        } else {
                            "COMMIT"
                        },
                    }
                }
                TransactionKind::Savepoint => Executed::command("SAVEPOINT"),
                TransactionKind::ReleaseSavepoint => Executed::command("RELEASE"),
                // Accepted, but a failed block stays failed until ROLLBACK: savepoints keep
                // nothing to go back to.
                TransactionKind::RollbackToSavepoint => Executed::command("ROLLBACK"),
            },
            Statement::Discard => Executed::command("DISCARD ALL"),
            Statement::Subscribe {
                target,
                snapshot,
                cursor: None,
            } => Executed::Copy(self.subscribe(target, *snapshot, parallelism).await?),
            Statement::Subscribe {
                target,
                snapshot,
                cursor: Some(name),
            } => {
                if session.transaction() != TransactionState::Block {
                    return Err(SqlError::new(
                        "25P01",
                        "DECLARE CURSOR can only be used in transaction blocks",
                    ));
                }
                let sub = self.subscribe(target, *snapshot, parallelism).await?;
                session.cursors.open(name, sub)?;
                Executed::command("DECLARE CURSOR")
            }
            Statement::Fetch {
                cursor,
                count,
                timeout,
            } => {
                let batch = session.cursors.fetch(cursor, *count, *timeout).await?;
                Executed::rows(Output::Rows {
                    schema: batch.schema(),
                    batches: vec![batch],
                })
            }
            Statement::Close(cursor) => {
                session.cursors.close(cursor.as_deref())?;
                Executed::command("CLOSE CURSOR")
            }
            Statement::Flush => {
                self.flush().await?;
                Executed::command("FLUSH")
            }
            Statement::Checkpoint => {
                self.checkpoint().await?;
                Executed::command("CHECKPOINT")
            }
            Statement::CreateSink(_) => Executed::rows(
                self.execute_create_sink(parsed, parallelism)
                    .await
                    .map_err(|e| e.offset_position(parsed.offset))?,
            ),
            Statement::CreateView { .. } => {
                let (output, notices) = self
                    .execute_create_view(parsed, parallelism)
                    .await
                    .map_err(|e| e.offset_position(parsed.offset))?;
                Executed::Output { output, notices }
            }
            _ => {
                // Catalog changes may wait on a broker (a Kafka source's partitions).
                let db = Arc::clone(self);
                let statement = parsed.clone();
                Executed::rows(
                    self.on_query_threads(move || db.execute_catalog(&statement))
                        .await
                        .map_err(|e| e.offset_position(parsed.offset))?,
                )
            }
        })
    }

    /// The columns of `SHOW name`: the parameter's canonical name, or (name, setting) for
    /// ALL.
    pub fn show_schema(name: &str) -> SchemaRef {
        let column = |n: &str| Field::new(n, DataType::Utf8, false);
        if name == "all" {
            Arc::new(Schema::new(vec![column("name"), column("setting")]))
        } else {
            Arc::new(Schema::new(vec![column(
                Session::canonical(name).unwrap_or(name),
            )]))
        }
    }
}

fn show_variable(session: &Session, name: &str) -> Result<Output> {
    let (names, values): (Vec<String>, Vec<String>) = if name == "all" {
        session.all().into_iter().unzip()
    } else {
        let (n, v) = session.get(name)?;
        (vec![n.to_string()], vec![v])
    };
    let schema = Database::show_schema(name);
    let mut columns: Vec<ArrayRef> = vec![Arc::new(StringArray::from(values))];
    if name == "all" {
        columns.insert(0, Arc::new(StringArray::from(names)));
    }
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)
        .map_err(|e| SqlError::new("XX000", e.to_string()))?;
    Ok(Output::Rows {
        schema,
        batches: vec![batch],
    })
}
