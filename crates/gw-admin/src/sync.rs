//! Cluster follow-up: apply configuration versions written by other nodes (announced by the
//! store, with a periodic check as a safety net), record this node's version, and keep the
//! store's health and the cluster's node list for `/status` (which never waits for the store).

use std::sync::Arc;
use std::time::Duration;

use crate::AdminState;

/// Follow the store until aborted. `every` is the heartbeat / safety-net period.
pub fn spawn(state: Arc<AdminState>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(store) = state.store.clone() else { return };
        let mut announced = store.announcements();
        // Purges of caches without a Redis tier reach the other nodes through the store's
        // notification channel (PostgreSQL NOTIFY), when it has one.
        let mut purges = store.purge_notices();
        if purges.is_some() {
            let st = store.clone();
            gw_plugins::set_purge_peers(Some(Arc::new(move |cache: &str, msg: &str| {
                let (st, cache, msg) = (st.clone(), cache.to_string(), msg.to_string());
                // Sent by a task of its own: it goes on when the caller stops waiting.
                let sending = tokio::spawn(async move {
                    let r = st.notify_purge(&cache, &msg).await;
                    if let Err(e) = &r {
                        tracing::warn!(cache = %cache, error = %e, "cache purge not sent to the other nodes");
                    }
                    r.map(|_| ()).map_err(|e| e.to_string())
                });
                let done: gw_cache::RelaySend =
                    Box::pin(async move { sending.await.unwrap_or_else(|e| Err(format!("purge relay task: {e}"))) });
                done
            })));
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                notice = async {
                    match purges.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    match notice {
                        Ok(crate::store::PurgeNotice::Purge { cache, msg }) => {
                            gw_plugins::apply_peer_purge(&cache, &msg);
                        }
                        // Missed some (the connection was lost, or this node fell behind):
                        // drop what may have been purged.
                        Ok(crate::store::PurgeNotice::Missed)
                        | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            gw_plugins::apply_peer_purge("*", "all");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => purges = None,
                    }
                    continue;
                }
                _ = tick.tick() => {}
            }
            // The latest version's number first; its document only when it is new here.
            let checked = match store.latest_meta().await {
                Ok(Some(m)) if m.version != state.version().await => match store.get(m.version).await {
                    Ok(Some(v)) => {
                        // The store answered: say so before applying (which may take a while).
                        state.store_checked(Ok(()));
                        if let Err(e) = state.apply_from_store(&v).await {
                            tracing::error!(
                                version = v.version,
                                error = %e,
                                "stored configuration rejected; still serving the previous one"
                            );
                        } else {
                            tracing::info!(version = v.version, "applied configuration version from the store");
                        }
                        Ok(())
                    }
                    // Pruned meanwhile: the next round reads the newer one.
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                },
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            let checked = match checked {
                Ok(()) => store.heartbeat(&state.node_id, state.version().await).await,
                Err(e) => Err(e),
            };
            let checked = match checked {
                Ok(()) => match store.nodes().await {
                    Ok(nodes) => {
                        if let Ok(mut h) = state.health.lock() {
                            h.nodes = nodes;
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            state.store_checked(checked.as_ref().map(|_| ()));
        }
    })
}
