//! weir's server: the Postgres wire endpoint, the HTTP endpoint (metrics, console, JSON API),
//! and process lifecycle. `Server::start` binds the listeners; the CLI (`weir serve`, `weir demo`) wraps it.

mod cli;
mod http;
mod pg;
mod server;
mod tls;

pub use cli::main;
pub use server::{AuthMode, Config, DEFAULT_MAX_CONNECTIONS, Server, ServerHandle};
