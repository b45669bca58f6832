//! Shared helpers.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) use gw_test_util::{Behavior, TestGateway, Upstream};

/// A reqwest client that never uses a proxy and never pools across tests.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A minimal config: one listener `main` on an ephemeral port, status listener on another.
pub(crate) fn base(body: &str) -> String {
    format!(
        "gateway:\n  status_listener: 127.0.0.1:0\n  access_log: {{ enabled: false }}\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n{body}"
    )
}

/// Start a gateway from `base(body)`.
pub(crate) async fn gateway(body: &str) -> TestGateway {
    TestGateway::start(&base(body), &[]).await
}

/// GET and parse the JSON body.
pub(crate) async fn get_json(url: &str) -> (reqwest::StatusCode, reqwest::header::HeaderMap, serde_json::Value) {
    let r = client().get(url).send().await.expect("request");
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, headers, body)
}

/// Send raw bytes over TCP and read the whole response (until close or `wait`).
pub(crate) async fn raw(addr: std::net::SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A client connection of any kind (TCP, TLS).
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Reads responses off one client connection, keeping bytes that belong to the next one.
pub(crate) struct Responses {
    s: Box<dyn Io>,
    pub(crate) buf: Vec<u8>,
}

/// A response: lowercased head, decoded body, trailer lines (lowercased).
pub(crate) struct Resp {
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: String,
}

impl Resp {
    pub(crate) fn status(&self) -> u16 {
        self.head[9..12].parse().unwrap()
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Responses {
    pub(crate) async fn connect(addr: std::net::SocketAddr) -> Responses {
        Responses::over(TcpStream::connect(addr).await.unwrap())
    }

    /// Over any connection (a TLS stream, say).
    pub(crate) fn over(io: impl Io + 'static) -> Responses {
        Responses { s: Box::new(io), buf: Vec::new() }
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// Read more; false at end of stream.
    pub(crate) async fn fill(&mut self) -> bool {
        let mut b = [0u8; 8192];
        match tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&b[..n]);
                true
            }
            Err(_) => panic!("no response within 5 s; have {:?}", String::from_utf8_lossy(&self.buf)),
        }
    }

    pub(crate) async fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..p].to_vec();
                self.buf.drain(..p + 2);
                return line;
            }
            assert!(self.fill().await, "closed inside a line");
        }
    }

    pub(crate) async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "closed inside the body");
        }
        self.buf.drain(..n).collect()
    }

    /// The next response (`head_request`: it answers a HEAD, so it has no body).
    pub(crate) async fn next(&mut self, head_request: bool) -> Resp {
        let mut head = String::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            head.push_str(&String::from_utf8_lossy(&line).to_ascii_lowercase());
            head.push('\n');
        }
        let status: u16 = head[9..12].parse().unwrap();
        let field = |name: &str| head.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()));
        let (mut body, mut trailers) = (Vec::new(), String::new());
        if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        } else if let Some(cl) = field("content-length:") {
            body = self.take(cl.parse().unwrap()).await;
        } else if field("transfer-encoding:").as_deref() == Some("chunked") {
            loop {
                let size = self.line().await;
                let size = usize::from_str_radix(std::str::from_utf8(&size).unwrap(), 16).unwrap();
                if size == 0 {
                    loop {
                        let t = self.line().await;
                        if t.is_empty() {
                            break;
                        }
                        trailers.push_str(&String::from_utf8_lossy(&t).to_ascii_lowercase());
                        trailers.push('\n');
                    }
                    break;
                }
                body.extend(self.take(size).await);
                assert_eq!(self.line().await, b"", "chunk data ends with CRLF");
            }
        } else {
            while self.fill().await {}
            body = std::mem::take(&mut self.buf);
        }
        Resp { head, body, trailers }
    }

    /// Whether the gateway closes the connection (within 3 s) without sending anything more.
    pub(crate) async fn closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        matches!(tokio::time::timeout(Duration::from_secs(3), self.s.read(&mut b)).await, Ok(Ok(0)) | Ok(Err(_)))
    }
}

/// A Python script talking over its standard input and output (with `tests/python/
/// requirements.txt` installed): the child and its output lines.
pub(crate) fn piped(
    args: &[&str],
) -> (tokio::process::Child, tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new("python3")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 (tests/python/requirements.txt)");
    let out = tokio::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    (child, out)
}

/// A certificate for `localhost` from a new test CA, as files in a new temporary directory
/// (kept while the first value lives): the certificate, its key and the CA's PEM.
pub(crate) fn localhost_tls_files(
    ca: &str,
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    tls_files(ca, "localhost")
}

/// The same for the DNS name `name`.
pub(crate) fn tls_files(
    ca: &str,
    name: &str,
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca = gw_test_util::TestCa::new(ca);
    let srv = ca.server(&[name]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (cert, key, ca_file) = (dir.path().join("s.crt"), dir.path().join("s.key"), dir.path().join("ca.pem"));
    std::fs::write(&cert, &srv.cert_pem).expect("write the certificate");
    std::fs::write(&key, &srv.key_pem).expect("write the key");
    std::fs::write(&ca_file, ca.pem()).expect("write the CA");
    (dir, cert, key, ca_file)
}
