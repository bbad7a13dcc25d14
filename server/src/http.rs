//! The HTTP endpoint (`--http-listen`): Prometheus `/metrics`, `/healthz`, the web console
//! at `/`, and the JSON API under `/api/v1` (queries, SSE subscriptions, dataflow graphs).

mod api;
mod auth;
mod console;
pub(crate) mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use weir_sql::Database;

/// What every request handler shares.
#[derive(Clone)]
pub(crate) struct HttpState {
    db: Arc<Database>,
    metrics: Arc<metrics::Metrics>,
    /// The server's `statement_timeout`, for the sessions of API requests.
    statement_timeout: Option<Duration>,
}

/// Binds `addr` and serves until the process ends; returns the bound address.
pub(crate) async fn serve(
    addr: SocketAddr,
    db: Arc<Database>,
    statement_timeout: Option<Duration>,
) -> std::io::Result<SocketAddr> {
    let state = HttpState {
        metrics: Arc::new(metrics::Metrics::new(Arc::downgrade(&db))),
        db,
        statement_timeout,
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics::scrape))
        .route("/api/v1/query", post(api::query))
        .route("/api/v1/subscribe/{view}", get(api::subscribe))
        .route("/api/v1/dataflows/{view}", get(api::dataflow_graph))
        .merge(console::routes())
        .with_state(state);
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the HTTP endpoint stopped");
        }
    });
    Ok(local)
}
