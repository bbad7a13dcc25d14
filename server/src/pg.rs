//! The Postgres wire protocol front end (the only module that imports pgwire).
//! Simple and extended queries, settings, transactions, notices, cancel requests.

mod encode;
mod error;
mod handler;
mod settings;

use std::sync::Arc;

use pgwire::api::auth::StartupHandler;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ConnectionManager, PgWireServerHandlers};
use weir_sql::Database;

pub(crate) use handler::SessionHandler;

/// Startup without authentication (any user and database name), registered for cancel requests.
pub(crate) struct Startup {
    connections: Arc<ConnectionManager>,
}

impl NoopStartupHandler for Startup {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        crate::metrics::PG_CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(Arc::clone(&self.connections))
    }
}

/// Hands pgwire the handlers for every connection.
pub(crate) struct HandlerFactory {
    session: Arc<SessionHandler>,
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl HandlerFactory {
    pub(crate) fn new(database: Arc<Database>) -> Self {
        let connections = Arc::new(ConnectionManager::new());
        Self {
            session: Arc::new(SessionHandler::new(database)),
            cancel: Arc::new(DefaultCancelHandler::new(Arc::clone(&connections))),
            startup: Arc::new(Startup { connections }),
        }
    }
}

impl PgWireServerHandlers for HandlerFactory {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.session)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.session)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancel)
    }
}
