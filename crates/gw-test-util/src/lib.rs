//! Test harness for Gatehouse integration tests (never used by the gateway itself).
//!
//! * [`TestGateway::start`]: a gateway in this process, from YAML, with every listener and the
//!   status listener on `127.0.0.1:0`.
//! * [`Upstream`]: a real HTTP/1.1 + HTTP/2 (h2c) server on `127.0.0.1:0` whose behaviour each
//!   test chooses ([`Behavior`]), counting the requests it receives.
//!
//! Only loopback addresses are ever used.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A gateway running in the test process.
pub struct TestGateway {
    /// The gateway.
    pub gw: gw_proxy::Gateway,
}

impl TestGateway {
    /// Start from YAML. `${VAR}` values come from `vars`.
    pub async fn start(yaml: &str, vars: &[(&str, String)]) -> TestGateway {
        let cfg = config(yaml, vars);
        let gw = gw_proxy::Gateway::start(cfg).await.unwrap_or_else(|e| panic!("gateway did not start: {e}"));
        TestGateway { gw }
    }

    /// Start from YAML with an adjustable clock for the plugins that count per period.
    pub async fn start_with_clock(yaml: &str, clock: Arc<dyn gw_core::Clock>) -> TestGateway {
        let cfg = config(yaml, &[]);
        let gw = gw_proxy::Gateway::start_with_clock(cfg, clock)
            .await
            .unwrap_or_else(|e| panic!("gateway did not start: {e}"));
        TestGateway { gw }
    }

    /// Start from YAML with plugins of the test's own (applied like global instances, see
    /// [`gw_proxy::Embedding`]).
    pub async fn start_with_plugins(yaml: &str, plugins: Vec<Arc<dyn gw_core::Plugin>>) -> TestGateway {
        let cfg = config(yaml, &[]);
        let embedding = gw_proxy::Embedding { clock: Arc::new(gw_core::SystemClock), plugins };
        let gw = gw_proxy::Gateway::start_embedded(cfg, embedding)
            .await
            .unwrap_or_else(|e| panic!("gateway did not start: {e}"));
        TestGateway { gw }
    }

    /// Address of listener `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.gw.listener_addr(name).unwrap_or_else(|| panic!("no listener {name}"))
    }

    /// `http://addr` of listener `name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}", self.addr(name))
    }

    /// `http://addr` of the status listener.
    pub fn status_url(&self) -> String {
        format!("http://{}", self.gw.status_addr().unwrap_or_else(|| panic!("no status listener")))
    }

    /// Reload from YAML: parse, validate and compile; any error (located) is returned and the
    /// previous configuration keeps serving.
    pub async fn reload(&self, yaml: &str, vars: &[(&str, String)]) -> Result<(), String> {
        self.gw.reload(try_config(yaml, vars)?).await
    }
}

/// Parse and validate YAML into a model config (panics with the located errors on failure).
pub fn config(yaml: &str, vars: &[(&str, String)]) -> gw_config::Config {
    try_config(yaml, vars).unwrap_or_else(|e| panic!("{e}"))
}

/// Parse and validate YAML into a model config, or the located errors.
pub fn try_config(yaml: &str, vars: &[(&str, String)]) -> Result<gw_config::Config, String> {
    let env: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let file = gw_config::parse_yaml(yaml, "test.yaml", env).map_err(|e| e.to_string())?;
    gw_config::validate_located(&file, "test.yaml", Some(yaml), &gw_config::ValidateOptions::default())
        .map_err(|e| e.to_string())
}

/// Body type of upstream responses.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A custom upstream handler.
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>
        + Send
        + Sync,
>;

/// How an [`Upstream`] answers.
#[derive(Clone)]
pub enum Behavior {
    /// 200 with a JSON echo of method, path, query, headers and body length; header
    /// `x-upstream: <name>`.
    Echo(&'static str),
    /// This status, empty body.
    Status(u16),
    /// Echo after this delay.
    Delay(Duration),
    /// Accept the request and never answer.
    Hang,
    /// Custom handler.
    Custom(Handler),
}

/// A real upstream server on loopback.
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Requests received.
    pub hits: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
}

impl Upstream {
    /// Start on an ephemeral port.
    pub async fn start(b: Behavior) -> Upstream {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
        Self::serve(l, b)
    }

    /// Start on a specific address (to bring a stopped upstream back on the same port).
    pub async fn start_on(addr: SocketAddr, b: Behavior) -> Upstream {
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(addr).await {
                Ok(l) => return Self::serve(l, b),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("bind {addr}: {last:?}")
    }

    fn serve(l: TcpListener, b: Behavior) -> Upstream {
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let hits = Arc::new(AtomicUsize::new(0));
        let (stop, mut stop_rx) = watch::channel(false);
        let h = hits.clone();
        tokio::spawn(async move {
            let mut conns = Vec::new();
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    r = l.accept() => {
                        let Ok((tcp, _)) = r else { continue };
                        let b = b.clone();
                        let h = h.clone();
                        conns.push(tokio::spawn(async move {
                            let svc = service_fn(move |req| {
                                h.fetch_add(1, Ordering::SeqCst);
                                let b = b.clone();
                                async move { Ok::<_, Infallible>(respond(b, req).await) }
                            });
                            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                                .await;
                        }));
                    }
                }
            }
            // Stopping closes the listener and every open connection.
            for c in conns {
                c.abort();
            }
        });
        Upstream { addr, hits, stop }
    }

    /// `host:port`.
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stop listening and close every connection.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A full body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

async fn respond(b: Behavior, req: Request<Incoming>) -> Response<Body> {
    match b {
        Behavior::Echo(name) => echo(name, req).await,
        Behavior::Status(s) => {
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            r
        }
        Behavior::Delay(d) => {
            tokio::time::sleep(d).await;
            echo("delayed", req).await
        }
        Behavior::Hang => {
            std::future::pending::<()>().await;
            Response::new(full(Bytes::new()))
        }
        Behavior::Custom(f) => f(req).await,
    }
}

/// The echo response of [`Behavior::Echo`].
pub async fn echo(name: &str, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let mut len: u64 = 0;
    let mut body = body;
    let mut kept = Vec::new();
    while let Some(f) = body.frame().await {
        match f {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    len += d.len() as u64;
                    if kept.len() < 65536 {
                        kept.extend_from_slice(&d[..d.len().min(65536 - kept.len())]);
                    }
                }
            }
            Err(_) => break,
        }
    }
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::String(prev)) => {
                let joined = format!("{prev}, {v}");
                *prev = joined;
            }
            _ => {
                headers.insert(k.to_string(), serde_json::Value::String(v));
            }
        }
    }
    let doc = serde_json::json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": len,
        "body": String::from_utf8_lossy(&kept),
    });
    let mut r = Response::new(full(doc.to_string()));
    r.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
    if let Ok(v) = http::HeaderValue::from_str(name) {
        r.headers_mut().insert("x-upstream", v);
    }
    r
}

/// A throw-away certificate authority for TLS tests (generated in memory, never checked in).
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate and its key, PEM encoded.
pub struct TestCert {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM.
    pub key_pem: String,
    /// Certificate DER.
    pub der: Vec<u8>,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        TestCa { issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap_or_else(|e| panic!("{e}")) }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(&self, names: &[&str], cn: &str, client: bool) -> TestCert {
        let mut params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap_or_else(|e| panic!("{e}"));
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = params.signed_by(&key, &self.issuer).unwrap_or_else(|e| panic!("{e}"));
        TestCert { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }

    /// A server certificate for these DNS names.
    pub fn server(&self, names: &[&str]) -> TestCert {
        self.issue(names, names.first().copied().unwrap_or("server"), false)
    }

    /// A client certificate with this common name (and the name as a DNS SAN).
    pub fn client(&self, cn: &str) -> TestCert {
        self.issue(&[cn], cn, true)
    }
}
