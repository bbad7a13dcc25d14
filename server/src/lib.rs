//! weir's server: the Postgres wire endpoint, sessions, and process lifecycle.
//! `Server::start` binds the listeners and returns a handle; the CLI (`weir serve`, `weir demo`) wraps it.

mod cli;
mod metrics;
mod pg;
mod server;
mod tls;

pub use cli::main;
pub use server::{AuthMode, Config, DEFAULT_MAX_CONNECTIONS, Server, ServerHandle};
