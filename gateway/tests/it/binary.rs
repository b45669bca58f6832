//! The `gatehouse` binary: validation errors, hot reload (file change and SIGHUP), rejected
//! reloads, graceful shutdown on SIGTERM.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// A running gatehouse process and its stderr lines.
pub(crate) struct Proc {
    pub(crate) child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Proc {
    pub(crate) async fn start(config: &std::path::Path) -> (Proc, std::net::SocketAddr) {
        let c = config.to_string_lossy().to_string();
        Self::start_args(&["--config", &c], &[]).await
    }

    /// `gatehouse run --log-format json <args>` with extra environment variables; returns once
    /// started, with the first proxy listener's address.
    pub(crate) async fn start_args(args: &[&str], env: &[(&str, &str)]) -> (Proc, std::net::SocketAddr) {
        let mut p = Self::spawn(args, env);
        let line = p.wait_for("listening", Duration::from_secs(20)).await;
        let v: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        let addr = v["addr"].as_str().expect("addr field").parse().expect("socket address");
        // Logged once the file watcher and signal handlers are installed.
        p.wait_for("gatehouse started", Duration::from_secs(20)).await;
        (p, addr)
    }

    /// `gatehouse run --log-format json <args>` without waiting for anything.
    pub(crate) fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(BIN)
            .args(["run", "--log-format", "json"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn gatehouse");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = r.next_line().await {
                let _ = tx.send(l);
            }
        });
        Proc { child, lines, seen: Vec::new() }
    }

    /// A line already seen (or the next one) containing `needle`, parsed as JSON.
    pub(crate) async fn json_line(&mut self, needle: &str) -> serde_json::Value {
        let line = match self.seen.iter().find(|l| l.contains(needle)) {
            Some(l) => l.clone(),
            None => self.wait_for(needle, Duration::from_secs(20)).await,
        };
        serde_json::from_str(&line).expect("json log line")
    }

    /// Every stderr line so far (including those not waited for yet).
    pub(crate) fn lines_so_far(&mut self) -> &[String] {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        &self.seen
    }

    /// Wait for a stderr line containing `needle`.
    pub(crate) async fn wait_for(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(l)) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                _ => panic!("no log line with {needle:?} within {within:?}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    pub(crate) fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("pid").to_string();
        let ok = std::process::Command::new("kill").args([sig, &pid]).status().expect("kill").success();
        assert!(ok, "kill {sig} {pid}");
    }
}

fn config_with_route(path: &str, route: &str) -> String {
    format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ enabled: false }}\n  shutdown_timeout: 10s\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: echo\n    type: echo\nroutes:\n  - name: {route}\n    service: echo\n    paths: [\"{path}\"]\n"
    )
}

pub(crate) fn write(path: &std::path::Path, text: &str) {
    // Write-then-rename, as editors and config management do.
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).expect("create");
    f.write_all(text.as_bytes()).expect("write");
    f.sync_all().expect("sync");
    std::fs::rename(&tmp, path).expect("rename");
}

async fn route_of(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let r = client().get(format!("http://{addr}{path}")).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    let v: serde_json::Value = r.json().await.ok()?;
    v["route"].as_str().map(str::to_string)
}

async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `gatehouse validate` accepts a good file and names file, line, column and key of a bad one.
#[tokio::test]
async fn validate_command() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    write(&good, &config_with_route("/a", "a"));
    let out = Command::new(BIN).arg("validate").arg(&good).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));

    let bad = dir.path().join("bad.yaml");
    write(&bad, "services:\n  - name: s\n    type: echo\nroutes:\n  - name: r\n    service: nope\n    paths: [/x]\n");
    let out = Command::new(BIN).arg("validate").arg(&bad).output().await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:6:5: routes[0].service: unknown service \"nope\"", bad.display())), "{err}");

    let unknown = dir.path().join("unknown.yaml");
    write(&unknown, "services:\n  - name: s\n    type: echo\n    colour: red\n");
    let out = Command::new(BIN).arg("validate").arg(&unknown).output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(":4:") && err.contains("colour"), "{err}");

    let out = Command::new(BIN).arg("--version").output().await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("gatehouse "));
}

/// Editing the file reloads it; an invalid edit is rejected with its location while the old
/// configuration keeps serving; SIGHUP reloads too.
#[tokio::test]
async fn reload_on_file_change_and_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.yaml");
    write(&cfg, &config_with_route("/one", "one"));
    let (mut p, addr) = Proc::start(&cfg).await;
    assert_eq!(route_of(addr, "/one").await.as_deref(), Some("one"));

    write(&cfg, &config_with_route("/two", "two"));
    assert!(
        eventually(Duration::from_secs(5), || async { route_of(addr, "/two").await.as_deref() == Some("two") }).await,
        "file change was not applied"
    );
    assert_eq!(route_of(addr, "/one").await, None, "old route is gone");

    write(&cfg, "routes:\n  - name: broken\n    service: missing\n");
    p.wait_for("configuration rejected", Duration::from_secs(5)).await;
    let line = p.seen.last().cloned().unwrap_or_default();
    assert!(line.contains("gw.yaml:3:5: routes[0].service: unknown service"), "{line}");
    assert_eq!(route_of(addr, "/two").await.as_deref(), Some("two"), "old config still serves");

    // Put a valid file in place without the watcher (rename over a path the watcher ignores,
    // then SIGHUP) to prove the signal path.
    let hidden = dir.path().join("other.yaml");
    write(&hidden, &config_with_route("/three", "three"));
    drop(p.child.stdin.take());
    std::fs::copy(&hidden, &cfg).unwrap();
    p.signal("-HUP");
    assert!(
        eventually(Duration::from_secs(5), || async { route_of(addr, "/three").await.as_deref() == Some("three") })
            .await,
        "SIGHUP reload was not applied"
    );
}

/// SIGTERM stops accepting, lets an in-flight request finish, and exits 0.
#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let up = Upstream::start(Behavior::Delay(Duration::from_millis(1500))).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.yaml");
    write(
        &cfg,
        &format!(
            "gateway:\n  status_listener: \"off\"\n  shutdown_timeout: 10s\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: slow\n    url: http://{}\n  - name: e\n    type: echo\nroutes:\n  - name: r\n    service: slow\n  - name: e\n    service: e\n    paths: [/echo]\n",
            up.authority()
        ),
    );
    let (mut p, addr) = Proc::start(&cfg).await;
    let inflight =
        tokio::spawn(async move { client().get(format!("http://{addr}/slow")).send().await.map(|r| r.status()) });
    // A kept-alive connection with no request in flight is closed at once by the drain.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut idle, b"GET /echo HTTP/1.1\r\nhost: a\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let mut b = [0u8; 4096];
        let n = tokio::io::AsyncReadExt::read(&mut idle, &mut b).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&b[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    // So is one that has not sent a byte yet.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.signal("-TERM");
    p.wait_for("draining", Duration::from_secs(5)).await;
    for (what, conn) in [("kept-alive", &mut idle), ("silent", &mut silent)] {
        let mut b = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(2), tokio::io::AsyncReadExt::read(conn, &mut b)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "a {what} connection is closed by the drain: {n:?}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "new connections are refused while draining");
    let status = inflight.await.unwrap().expect("in-flight request completes");
    assert_eq!(status, 200);
    let exit = tokio::time::timeout(Duration::from_secs(10), p.child.wait()).await.expect("exits").unwrap();
    assert!(exit.success(), "{exit:?}");
}

/// Reloading repeatedly under concurrent load fails no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_fails_nothing() {
    let a = Upstream::start(Behavior::Echo("a")).await;
    let b = Upstream::start(Behavior::Echo("b")).await;
    let yaml = |up: &Upstream, extra: usize| {
        base(&format!(
            "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\n{}",
            up.authority(),
            (0..extra)
                .map(|i| format!("  - name: extra{i}\n    service: s\n    paths: [\"/extra/{i}\"]\n"))
                .collect::<String>()
        ))
    };
    let gw = std::sync::Arc::new(TestGateway::start(&yaml(&a, 0), &[]).await);
    let url = gw.url("main");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (url, stop) = (url.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            let (mut ok, mut bad) = (0u32, Vec::new());
            // Bounded: at most 2,000 requests per worker.
            for _ in 0..2_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match c.get(format!("{url}/x")).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => bad.push(r.status().to_string()),
                    Err(e) => bad.push(e.to_string()),
                }
            }
            (ok, bad)
        }));
    }
    for i in 0..30 {
        let up = if i % 2 == 0 { &b } else { &a };
        gw.reload(&yaml(up, i), &[]).await.expect("reload accepted");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut total, mut failures) = (0u32, Vec::new());
    for w in workers {
        let (ok, bad) = w.await.unwrap();
        total += ok;
        failures.extend(bad);
    }
    assert!(failures.is_empty(), "{} failed requests: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    assert!(total > 500, "too few requests made: {total}");
    assert!(a.hits() > 0 && b.hits() > 0, "both configurations served traffic");
}
