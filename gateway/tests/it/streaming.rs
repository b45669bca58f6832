//! Bodies stream both ways with bounded memory; `Expect: 100-continue` is honoured.

use std::time::Duration;

use crate::binary::{Proc, write};
use crate::support::*;

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

fn config(upstream: &str) -> String {
    format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ enabled: false }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: s\n    url: http://{upstream}\nroutes:\n  - name: big\n    service: s\n    paths: [\"/*\"]\n    max_body_bytes: 0\n  - name: small\n    service: s\n    paths: [\"/small/*\"]\n    max_body_bytes: 1KiB\n"
    )
}

/// A 1 GiB upload and a 256 MiB download pass through the gateway process without buffering:
/// its peak memory stays far below the body sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_with_bounded_memory() {
    const DOWN: usize = 256 << 20;
    let up = Upstream::start(Behavior::Custom(std::sync::Arc::new(|req| {
        Box::pin(async move {
            if req.uri().path() == "/download" {
                let chunk = bytes::Bytes::from(vec![b'z'; 64 * 1024]);
                let stream = futures_util::stream::iter(
                    (0..DOWN / chunk.len())
                        .map(move |_| Ok::<_, hyper::Error>(hyper::body::Frame::data(chunk.clone()))),
                );
                let body = http_body_util::StreamBody::new(stream);
                return http::Response::new(http_body_util::BodyExt::boxed(body));
            }
            gw_test_util::echo("sink", req).await
        })
    })))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.yaml");
    write(&cfg, &config(&up.authority()));
    let (p, addr) = Proc::start(&cfg).await;
    let pid = p.child.id().unwrap();
    let base_rss = peak_rss_kib(pid);

    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!("head -c 1073741824 /dev/zero | curl -s --fail -T - http://{addr}/upload"))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["body_bytes"], 1u64 << 30, "the upstream received every byte");

    let out = tokio::process::Command::new("curl")
        .args(["-s", "--fail", "-o", "/dev/null", "-w", "%{size_download}"])
        .arg(format!("http://{addr}/download"))
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), DOWN.to_string());

    let peak = peak_rss_kib(pid);
    eprintln!("gateway peak RSS: {base_rss} KiB at start, {peak} KiB after 1 GiB up + 256 MiB down");
    assert!(peak < 96 * 1024, "peak RSS {peak} KiB: bodies were buffered");
}

/// curl's `Expect: 100-continue` gets `100 Continue` when the request is accepted, and a 413
/// without `100 Continue` (so the body is never sent) when Content-Length exceeds the route limit.
#[tokio::test]
async fn expect_continue() {
    let up = Upstream::start(Behavior::Echo("a")).await;
    let gw = TestGateway::start(&config(&up.authority()), &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, vec![b'q'; 100_000]).unwrap();
    let run = |path: &'static str| {
        let url = format!("{}{path}", gw.url("main"));
        let file = file.clone();
        async move {
            let out = tokio::process::Command::new("curl")
                .args(["-sv", "-H", "Expect: 100-continue", "--expect100-timeout", "10", "--data-binary"])
                .arg(format!("@{}", file.display()))
                .arg(url)
                .output()
                .await
                .unwrap();
            (String::from_utf8_lossy(&out.stderr).into_owned(), String::from_utf8_lossy(&out.stdout).into_owned())
        }
    };
    let t = std::time::Instant::now();
    let (verbose, body) = run("/ok").await;
    assert!(verbose.contains("HTTP/1.1 100 Continue"), "{verbose}");
    assert!(verbose.contains("HTTP/1.1 200 OK"), "{verbose}");
    assert!(body.contains("\"body_bytes\":100000"), "{body}");
    assert!(!body.contains("expect"), "Expect is answered by the gateway, not forwarded: {body}");
    assert!(t.elapsed() < Duration::from_secs(5), "curl waited for 100-continue");

    let (verbose, _) = run("/small/x").await;
    assert!(verbose.contains("HTTP/1.1 413"), "{verbose}");
    assert!(!verbose.contains("100 Continue"), "{verbose}");
}
