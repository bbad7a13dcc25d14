//! A session: the role it logged in as, its parameters, its transaction block and its
//! SUBSCRIBE cursors. `Database::execute` runs each of its statements and keeps it current.

mod cursors;
mod parameters;

use std::collections::HashMap;
use std::time::Duration;

use datafusion::sql::sqlparser::ast;

pub use self::cursors::Cursors;
use self::parameters::Values;
pub(crate) use self::parameters::defaults as default_parameters;
use crate::error::Result;

/// Where a session stands with respect to BEGIN ... COMMIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransactionState {
    /// Every statement is its own transaction.
    #[default]
    Idle,
    /// Inside BEGIN ... COMMIT.
    Block,
    /// A statement of the block failed: only COMMIT or ROLLBACK run until it ends.
    Failed,
}

/// One client's session.
#[derive(Debug, Default)]
pub struct Session {
    user: String,
    values: Values,
    transaction: TransactionState,
    pub(crate) cursors: Cursors,
}

impl Session {
    /// A session of `user`, with the parameters its client sent at startup (those weir does
    /// not know, or whose values it refuses, are left at their defaults).
    pub fn new(user: &str, startup: &HashMap<String, String>) -> Self {
        let mut session = Self {
            user: user.to_string(),
            ..Self::default()
        };
        for (name, value) in startup {
            if parameters::canonical(name).is_some() {
                let _ = parameters::set(&mut session.values, name, Some(value));
            }
        }
        session
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn transaction(&self) -> TransactionState {
        self.transaction
    }

    pub(crate) fn set_transaction(&mut self, state: TransactionState) {
        self.transaction = state;
    }

    /// A statement failed (in `Database::execute`, or before it: parsing, a timeout): the
    /// block it was in fails with it.
    pub fn statement_failed(&mut self) {
        if self.transaction == TransactionState::Block {
            self.transaction = TransactionState::Failed;
        }
    }

    /// A parameter's canonical name and value (42704 when there is no such parameter).
    pub fn get(&self, name: &str) -> Result<(&'static str, String)> {
        parameters::get(&self.values, name)
    }

    /// SET (None: RESET); returns the (name, value) to report to the client, if it is one
    /// clients track.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> Result<Option<(String, String)>> {
        parameters::set(&mut self.values, name, value)
    }

    /// Every parameter with its value (SHOW ALL), by canonical name.
    pub fn all(&self) -> Vec<(String, String)> {
        parameters::all(&self.values)
    }

    /// The canonical spelling of a parameter's name (`timezone` -> `TimeZone`).
    pub fn canonical(name: &str) -> Option<&'static str> {
        parameters::canonical(name)
    }

    /// The session's `statement_timeout` (None: off).
    pub fn statement_timeout(&self) -> Option<Duration> {
        parameters::statement_timeout(&self.values)
    }

    /// Instances per keyed operator of the views this session creates (0: one per core).
    pub fn streaming_parallelism(&self) -> usize {
        parameters::streaming_parallelism(&self.values)
    }

    /// `implicit_flush`: a DML statement returns once every view has seen its change.
    pub fn implicit_flush(&self) -> bool {
        self.get("implicit_flush").is_ok_and(|(_, v)| v == "on")
    }

    /// The statement with what only this session knows filled in (its user, its
    /// parameters: the planner is shared by every session); None when nothing changed.
    pub(crate) fn resolve_functions(
        &self,
        statement: &ast::Statement,
    ) -> Result<Option<ast::Statement>> {
        parameters::resolve_session_functions(&self.values, &self.user, statement)
    }

    /// The columns a FETCH from cursor `name` returns (None: no such cursor).
    pub fn cursor_schema(&self, name: &str) -> Option<datafusion::arrow::datatypes::SchemaRef> {
        self.cursors.schema(name)
    }
}
