//! Gatehouse Admin API and configuration stores.
//!
//! - [`api`]: the REST API (axum) on its own listener: CRUD over every entity of the
//!   configuration, import/export, history and rollback, status, OpenAPI document.
//! - [`store`]: where configuration versions live: [`store::EmbeddedStore`] (redb, one file,
//!   the default) or [`store::PgStore`] (PostgreSQL, for several nodes).
//! - [`sync`]: cluster follow-up: apply versions written by other nodes, heartbeat.
//!
//! Without a store (DB-less mode) the configuration file is the source of truth and the API is
//! read-only.

pub mod api;
pub mod doc;
pub mod openapi;
pub mod store;
pub mod sync;

use std::net::SocketAddr;
use std::sync::Arc;

pub use api::{AdminState, Role, router};

/// Serve the Admin API on `addr` until the task is aborted. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<AdminState>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    Ok((bound, task))
}
