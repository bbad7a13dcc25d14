//! The Postgres wire protocol front end (the only module that imports pgwire).
//! Simple and extended queries, settings, transactions, notices, cancel requests.

mod encode;
mod error;
mod handler;
mod settings;
mod subscribe;
mod text;

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{
    ClientInfo, ConnectionGuard, ConnectionHandle, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::api::{ConnectionManager, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use weir_sql::Database;

pub(crate) use handler::SessionHandler;

/// Startup without authentication (any user and database name): registers the connection
/// for cancel requests and reports weir's server parameters (server_version 15.0).
pub(crate) struct Startup {
    connections: Arc<ConnectionManager>,
    pids: RandomPidSecretKeyGenerator,
    parameters: DefaultServerParameterProvider,
    /// The server's `statement_timeout`, each session's until it sets its own.
    statement_timeout: Option<Duration>,
    /// Sessions open now, and how many may be (`--max-connections`).
    active: Arc<AtomicUsize>,
    max_connections: usize,
}

/// Counts a session as open until its connection ends (kept in its session extensions).
struct OpenSession(Arc<AtomicUsize>);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Startup {
    fn new(
        connections: Arc<ConnectionManager>,
        statement_timeout: Option<Duration>,
        max_connections: usize,
    ) -> Self {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = weir_sql::SERVER_VERSION.to_string();
        parameters.time_zone = "UTC".to_string();
        Self {
            connections,
            pids: RandomPidSecretKeyGenerator::default(),
            parameters,
            statement_timeout,
            active: Arc::new(AtomicUsize::new(0)),
            max_connections,
        }
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let PgWireFrontendMessage::Startup(ref startup) = message else {
            return Ok(());
        };
        // Counted from here to the connection's end; over the limit, refused as Postgres does.
        let open = OpenSession(Arc::clone(&self.active));
        if self.active.fetch_add(1, Ordering::Relaxed) >= self.max_connections {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".to_string(),
                "53300".to_string(),
                format!(
                    "sorry, too many clients already (--max-connections is {})",
                    self.max_connections
                ),
            ))));
        }
        client
            .session_extensions()
            .insert::<Arc<OpenSession>>(Arc::new(open));
        protocol_negotiation(client, startup).await?;
        save_startup_parameters_to_metadata(client, startup);
        if let Some(t) = self.statement_timeout {
            let ms = t.as_millis().to_string();
            settings::set(client.metadata_mut(), "statement_timeout", Some(&ms))
                .map_err(|e| error::to_pgwire(&e))?;
        }
        let (pid, secret_key) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret_key.clone());
        let (handle, guard) = self.connections.register(pid, secret_key);
        client
            .session_extensions()
            .insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert::<ConnectionGuard>(guard);
        // Sends AuthenticationOk, the parameters, BackendKeyData and ReadyForQuery.
        finish_authentication(client, &self.parameters).await?;
        crate::metrics::PG_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Hands pgwire the handlers for every connection.
pub(crate) struct HandlerFactory {
    session: Arc<SessionHandler>,
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl HandlerFactory {
    pub(crate) fn new(
        database: Arc<Database>,
        statement_timeout: Option<Duration>,
        max_connections: usize,
    ) -> Self {
        let connections = Arc::new(ConnectionManager::new());
        Self {
            session: Arc::new(SessionHandler::new(database)),
            cancel: Arc::new(DefaultCancelHandler::new(Arc::clone(&connections))),
            startup: Arc::new(Startup::new(
                connections,
                statement_timeout,
                max_connections,
            )),
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
