//! Gatehouse Admin API and configuration stores.
//!
//! - [`api`]: the REST API (axum) on its own listener: CRUD over every entity of the
//!   configuration, import/export, history and rollback, status, OpenAPI document.
//! - [`store`]: where configuration versions live: [`store::EmbeddedStore`] (redb, one file,
//!   the default) or [`store::PgStore`] (PostgreSQL, for several nodes).
//! - [`sync`]: cluster follow-up: apply versions written by other nodes, heartbeat.
//! - [`usage_store`]: where usage analytics and local quota counters are kept (redb beside the
//!   configuration store, or the cluster's PostgreSQL).
//! - [`dashboard`]: the web dashboard on the same listener (`/dashboard/`), behind the same
//!   tokens.
//!
//! Without a store (DB-less mode) the configuration file is the source of truth and the API is
//! read-only.

pub mod api;
mod cache_api;
pub mod dashboard;
pub mod doc;
pub mod openapi;
pub mod store;
pub mod sync;
mod usage_api;
pub mod usage_store;

use std::net::SocketAddr;
use std::sync::Arc;

pub use api::{AdminState, Role, router};

/// Serve the Admin API on `addr` over TLS (mutual TLS when `tls.client_ca_file` is set).
pub async fn serve_tls(
    addr: SocketAddr,
    state: Arc<AdminState>,
    tls: &gw_config::model::AdminTls,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let cfg = tls_config(tls)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("{addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let app = router(state);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                // A failed handshake (no or untrusted client certificate) just closes.
                let Ok(Ok(tls)) = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok((bound, task))
}

fn tls_config(t: &gw_config::model::AdminTls) -> Result<rustls::ServerConfig, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert_file)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", t.cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(&t.key_file).map_err(|e| format!("{}: {e}", t.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &t.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
                roots.add(c.map_err(|e| format!("{}: {e}", ca.display()))?).map_err(|e| e.to_string())?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| e.to_string())?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key).map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

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
