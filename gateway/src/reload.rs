//! Configuration reload on SIGHUP and on file change.
//!
//! The directory is watched rather than the file: editors and Kubernetes ConfigMaps replace
//! files by rename or symlink swap, which a watch on the old inode would miss. Events are
//! debounced; the new file is parsed and validated off the async runtime, and an invalid file is
//! rejected with its `file:line:column` errors while the old configuration keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::DEBOUNCE;

/// The reload triggers, installed before the configuration is first read: from then on a
/// SIGHUP or a change of the file is queued and applied once the gateway serves. (A SIGHUP with
/// no handler would end the process, and a change made while a large file is being read and
/// compiled would otherwise be missed.)
pub(crate) struct Triggers {
    tx: mpsc::Sender<&'static str>,
    rx: mpsc::Receiver<&'static str>,
    watcher: Option<notify::RecommendedWatcher>,
    early_hup: Arc<AtomicBool>,
    early_id: Option<signal_hook::SigId>,
}

impl Triggers {
    /// Install the file watcher (when `watch`) and a SIGHUP handler that only records the
    /// signal; no async runtime is needed yet.
    pub(crate) fn install(path: &Path, watch: bool) -> Triggers {
        let (tx, rx) = mpsc::channel::<&'static str>(16);
        let (early_hup, early_id) = hold_sighup();
        let watcher = if watch { start_watcher(path, tx.clone()) } else { None };
        Triggers { tx, rx, watcher, early_hup, early_id }
    }
}

/// A SIGHUP handler that sets a flag, so that the signal no longer ends the process; installed
/// first thing by both run modes (store mode has nothing to reload on SIGHUP: nodes follow the
/// store).
pub(crate) fn hold_sighup() -> (Arc<AtomicBool>, Option<signal_hook::SigId>) {
    let flag = Arc::new(AtomicBool::new(false));
    let id = match signal_hook::flag::register(signal_hook::consts::SIGHUP, flag.clone()) {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGHUP handler");
            None
        }
    };
    (flag, id)
}

/// Serve the triggers: each SIGHUP or (debounced) file change reloads the file. A SIGHUP or a
/// change that arrived since [`Triggers::install`] is applied now.
pub(crate) fn spawn(
    gw: gw_proxy::Gateway,
    path: PathBuf,
    triggers: Triggers,
    admin: Option<std::sync::Arc<gw_admin::AdminState>>,
) -> JoinHandle<()> {
    let Triggers { tx, mut rx, watcher, early_hup, early_id } = triggers;
    let hup = {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP");
                None
            }
        }
    };
    if let Some(mut hup) = hup {
        // Hand over from the start-up handler: a signal between the two is seen by at least
        // one of them (twice at worst: the second reload finds the configuration unchanged).
        if let Some(id) = early_id {
            signal_hook::low_level::unregister(id);
        }
        let sig_tx = tx.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = sig_tx.send("SIGHUP").await;
            }
        });
    }
    if early_hup.swap(false, Ordering::SeqCst) {
        tracing::info!("SIGHUP received during start-up: reloading");
        let _ = tx.try_send("SIGHUP");
    }
    drop(tx);
    tokio::spawn(async move {
        let _watcher = watcher;
        while let Some(cause) = rx.recv().await {
            if cause == "file change" {
                tokio::time::sleep(DEBOUNCE).await;
            }
            while rx.try_recv().is_ok() {}
            reload(&gw, &path, cause).await;
            if let Some(a) = &admin {
                crate::admin::refresh_read_only(a, &path).await;
            }
        }
    })
}

fn start_watcher(path: &Path, tx: mpsc::Sender<&'static str>) -> Option<notify::RecommendedWatcher> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let name = path.file_name()?.to_os_string();
    let mut w = match notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if ev.kind.is_access() {
            return;
        }
        // Match on the file name, and on any change to a `..data` symlink (ConfigMaps).
        let relevant = ev.paths.iter().any(|p| p.file_name() == Some(&name) || p.ends_with("..data"));
        if relevant {
            let _ = tx.try_send("file change");
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the configuration file; SIGHUP still reloads");
            return None;
        }
    };
    if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the configuration directory");
        return None;
    }
    Some(w)
}

async fn reload(gw: &gw_proxy::Gateway, path: &Path, cause: &str) {
    let p = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || gw_config::load_file_full(&p, gw_config::process_env())).await;
    let loaded = match loaded {
        Ok(Ok(mut l)) => {
            crate::overrides().apply(&mut l.config);
            l
        }
        Ok(Err(e)) => {
            gw.metrics().reload(false);
            for line in e.to_string().lines() {
                tracing::error!(cause, error = %line, "configuration rejected; still serving the previous one");
            }
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "reload task failed");
            return;
        }
    };
    if loaded.config.hash == gw.config().hash {
        tracing::debug!(cause, "configuration unchanged");
        return;
    }
    match gw.reload(loaded.config.clone()).await {
        Ok(()) => tracing::info!(cause, "reload complete"),
        Err(e) => {
            let error = loaded.locate(&e);
            tracing::error!(cause, error = %error, "configuration rejected; still serving the previous one");
        }
    }
}
