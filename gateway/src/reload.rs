//! Configuration reload on SIGHUP and on file change.
//!
//! The directory is watched rather than the file: editors and Kubernetes ConfigMaps replace
//! files by rename or symlink swap, which a watch on the old inode would miss. Events are
//! debounced; the new file is parsed and validated off the async runtime, and an invalid file is
//! rejected with its `file:line:column` errors while the old configuration keeps serving.

use std::path::{Path, PathBuf};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::DEBOUNCE;

pub(crate) fn spawn(
    gw: gw_proxy::Gateway,
    path: PathBuf,
    watch: bool,
    admin: Option<std::sync::Arc<gw_admin::AdminState>>,
) -> JoinHandle<()> {
    // The watcher and the SIGHUP handler are installed before this returns (and before the
    // "started" log line), so no change or signal right after start-up is missed.
    let (tx, mut rx) = mpsc::channel::<&'static str>(16);
    let watcher = if watch { start_watcher(&path, tx.clone()) } else { None };
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
        let sig_tx = tx.clone();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = sig_tx.send("SIGHUP").await;
            }
        });
    }
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
    let loaded = tokio::task::spawn_blocking(move || gw_config::load_file(&p)).await;
    let config = match loaded {
        Ok(Ok(mut c)) => {
            crate::overrides().apply(&mut c);
            c
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
    if config.hash == gw.config().hash {
        tracing::debug!(cause, "configuration unchanged");
        return;
    }
    match gw.reload(config).await {
        Ok(()) => tracing::info!(cause, "reload complete"),
        Err(e) => {
            tracing::error!(cause, error = %e, "configuration rejected; still serving the previous one");
        }
    }
}
