//! Cluster follow-up: apply configuration versions written by other nodes (announced by the
//! store, with a periodic full check as a safety net), and record this node's version.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::AdminState;

/// Follow the store until aborted. `every` is the heartbeat / safety-net period.
pub fn spawn(state: Arc<AdminState>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(store) = state.store.clone() else { return };
        let mut announced = store.announcements();
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                changed = async {
                    match announced.as_mut() {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    if !changed { announced = None; continue; }
                }
                _ = tick.tick() => {}
            }
            match store.latest().await {
                Ok(Some(v)) => {
                    state.store_ok.store(true, Ordering::Relaxed);
                    if v.version > state.version().await {
                        match state.apply_from_store(&v).await {
                            Ok(()) => {
                                tracing::info!(version = v.version, "applied configuration version from the store");
                            }
                            Err(e) => {
                                tracing::error!(version = v.version, error = %e, "stored configuration rejected; still serving the previous one");
                            }
                        }
                    }
                }
                Ok(None) => state.store_ok.store(true, Ordering::Relaxed),
                Err(e) => {
                    state.gw.metrics().plugin_event("config_store_unreachable");
                    if state.store_ok.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "config store unreachable; serving the last good configuration");
                    }
                }
            }
            let v = state.version().await;
            if store.heartbeat(&state.node_id, v).await.is_err() {
                state.store_ok.store(false, Ordering::Relaxed);
            }
        }
    })
}
