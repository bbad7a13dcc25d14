//! The Postgres wire protocol front end (the only module that imports pgwire).
//! Simple and extended queries, settings, transactions, notices, cancel requests.

mod auth;
mod copy;
mod encode;
mod error;
mod handler;
mod text;

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use parking_lot::Mutex;
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{
    ClientInfo, ConnectionGuard, ConnectionHandle, METADATA_USER, PgWireConnectionState,
    PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
};
use pgwire::api::{ConnectionManager, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use weir_sql::{Database, Session, SqlError};

pub(crate) use handler::SessionHandler;

/// Startup: refuses plaintext under `--tls-required`, checks a SCRAM-SHA-256 password under
/// `--auth password` (any user name is accepted under trust), registers the connection for
/// cancel requests and reports weir's server parameters (server_version 15.0).
pub(crate) struct Startup {
    database: Arc<Database>,
    tls_required: bool,
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
        database: Arc<Database>,
        connections: Arc<ConnectionManager>,
        options: &SessionOptions,
    ) -> Self {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = weir_sql::SERVER_VERSION.to_string();
        parameters.time_zone = "UTC".to_string();
        Self {
            database,
            tls_required: options.tls_required,
            connections,
            pids: RandomPidSecretKeyGenerator::default(),
            parameters,
            statement_timeout: options.statement_timeout,
            active: Arc::new(AtomicUsize::new(0)),
            max_connections: options.max_connections,
        }
    }

    /// After the login: session defaults, cancel registration, AuthenticationOk and the
    /// parameters, ReadyForQuery.
    async fn finish<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let user = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        let mut session = Session::new(&user, client.metadata());
        if let Some(t) = self.statement_timeout {
            let ms = t.as_millis().to_string();
            session
                .set("statement_timeout", Some(&ms))
                .map_err(|e| error::to_pgwire(&e))?;
        }
        client
            .session_extensions()
            .insert(tokio::sync::Mutex::new(session));
        let (pid, secret_key) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, secret_key.clone());
        let (handle, guard) = self.connections.register(pid, secret_key);
        client
            .session_extensions()
            .insert::<Arc<ConnectionHandle>>(handle);
        client.session_extensions().insert::<ConnectionGuard>(guard);
        finish_authentication(client, &self.parameters).await?;
        crate::http::metrics::PROCESS.connection();
        Ok(())
    }
}

/// What every session of a server starts with.
#[derive(Debug, Clone)]
pub(crate) struct SessionOptions {
    /// The server's `statement_timeout`, each session's until it sets its own.
    pub(crate) statement_timeout: Option<Duration>,
    pub(crate) max_connections: usize,
    /// `--tls-required`: plaintext connections are refused (28000).
    pub(crate) tls_required: bool,
}

/// A FATAL ErrorResponse: the connection ends after it.
fn fatal(e: &SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        e.code.to_string(),
        e.message.clone(),
    )))
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
        let startup = match message {
            PgWireFrontendMessage::Startup(ref startup) => startup,
            PgWireFrontendMessage::PasswordMessageFamily(answer) => {
                let exchange = client
                    .session_extensions()
                    .get::<Mutex<auth::Exchange>>()
                    .ok_or_else(|| fatal(&SqlError::new("08P01", "no password was asked for")))?;
                let step = exchange.lock().step(answer).map_err(|e| fatal(&e))?;
                return match step {
                    auth::Step::Continue(reply) => {
                        client
                            .send(PgWireBackendMessage::Authentication(reply))
                            .await?;
                        Ok(())
                    }
                    auth::Step::Done(last) => {
                        client
                            .send(PgWireBackendMessage::Authentication(last))
                            .await?;
                        self.finish(client).await
                    }
                };
            }
            _ => return Ok(()),
        };
        // Counted from here to the connection's end; over the limit, refused as Postgres does.
        let open = OpenSession(Arc::clone(&self.active));
        if self.active.fetch_add(1, Ordering::Relaxed) >= self.max_connections {
            return Err(fatal(&SqlError::new(
                "53300",
                format!(
                    "sorry, too many clients already (--max-connections is {})",
                    self.max_connections
                ),
            )));
        }
        client
            .session_extensions()
            .insert::<Arc<OpenSession>>(Arc::new(open));
        protocol_negotiation(client, startup).await?;
        save_startup_parameters_to_metadata(client, startup);
        let user = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        if self.tls_required && !client.is_secure() {
            return Err(fatal(&SqlError::new(
                "28000",
                format!(
                    "no encryption: user \"{user}\" must connect with TLS (sslmode=require; the server runs with --tls-required)"
                ),
            )));
        }
        if self.database.access().passwords_required() {
            let verifier = self
                .database
                .access()
                .login_verifier(&user)
                .map_err(|e| fatal(&e))?;
            client
                .session_extensions()
                .insert(Mutex::new(auth::Exchange::Offered { user, verifier }));
            client.set_state(PgWireConnectionState::AuthenticationInProgress);
            client
                .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                    vec![auth::SCRAM_SHA_256.to_string()],
                )))
                .await?;
            return Ok(());
        }
        self.finish(client).await
    }
}

/// Hands pgwire the handlers for every connection.
pub(crate) struct HandlerFactory {
    session: Arc<SessionHandler>,
    startup: Arc<Startup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl HandlerFactory {
    pub(crate) fn new(database: Arc<Database>, options: &SessionOptions) -> Self {
        let connections = Arc::new(ConnectionManager::new());
        Self {
            session: Arc::new(SessionHandler::new(Arc::clone(&database))),
            cancel: Arc::new(DefaultCancelHandler::new(Arc::clone(&connections))),
            startup: Arc::new(Startup::new(database, connections, options)),
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
