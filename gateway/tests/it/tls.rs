//! TLS termination (SNI, ALPN, versions, HTTPS redirect) and upstream TLS (verification, SNI,
//! client certificates), with certificates generated in the test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use gw_test_util::{TestCa, TestCert};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::support::*;

fn save(dir: &Path, name: &str, c: &TestCert) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, &c.cert_pem).unwrap();
    std::fs::write(&key, &c.key_pem).unwrap();
    (cert, key)
}

fn cert_entry(name: &str, files: &(PathBuf, PathBuf)) -> String {
    format!("  - name: {name}\n    cert_file: {}\n    key_file: {}\n", files.0.display(), files.1.display())
}

/// Records the server's certificate without verifying it.
#[derive(Debug)]
struct Capture(Mutex<Option<Vec<u8>>>);

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate the gateway presents for `sni`.
async fn presented_cert(addr: SocketAddr, sni: &str) -> Vec<u8> {
    let cap = Arc::new(Capture(Mutex::new(None)));
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(cap.clone())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let _tls = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp).await.unwrap();
    let got = cap.0.lock().unwrap().clone();
    got.expect("a certificate was presented")
}

fn https_client(ca: &TestCa) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
}

/// The certificate is chosen by SNI: exact names, a wildcard, and the default for unknown names.
#[tokio::test]
async fn sni_selects_the_certificate() {
    let ca = TestCa::new("sni-ca");
    let dir = tempfile::tempdir().unwrap();
    let (a, b, w) = (ca.server(&["a.test"]), ca.server(&["b.test"]), ca.server(&["*.w.test"]));
    let certs = cert_entry("a", &save(dir.path(), "a", &a))
        + &cert_entry("b", &save(dir.path(), "b", &b))
        + &cert_entry("w", &save(dir.path(), "w", &w));
    let yaml = format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ enabled: false }}\ncertificates:\n{certs}listeners:\n  - name: tls\n    address: 127.0.0.1:0\n    tls: {{ default_certificate: b }}\nservices:\n  - name: s\n    type: echo\nroutes:\n  - name: r\n    service: s\n"
    );
    let gw = TestGateway::start(&yaml, &[]).await;
    let addr = gw.addr("tls");
    assert_eq!(presented_cert(addr, "a.test").await, a.der);
    assert_eq!(presented_cert(addr, "b.test").await, b.der);
    assert_eq!(presented_cert(addr, "x.w.test").await, w.der);
    assert_eq!(presented_cert(addr, "unknown.test").await, b.der, "unknown SNI gets the default certificate");
    // A verifying client succeeds for each name.
    for host in ["a.test", "b.test", "x.w.test"] {
        let c = https_client(&ca).resolve(host, addr).build().unwrap();
        let r = c.get(format!("https://{host}:{}/", addr.port())).send().await.unwrap();
        assert_eq!(r.status(), 200, "{host}");
    }
}

fn tls_gateway_yaml(dir: &Path, ca: &TestCa, names: &[&str], tls_extra: &str, upstream: &str) -> String {
    let files = save(dir, "srv", &ca.server(names));
    format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ enabled: false }}\ncertificates:\n{}listeners:\n  - name: tls\n    address: 127.0.0.1:0\n    tls: {{ {tls_extra} }}\n  - name: plain\n    address: 127.0.0.1:0\n    redirect_https_port: 8443\nservices:\n  - name: s\n    url: http://{upstream}\nroutes:\n  - name: r\n    service: s\n",
        cert_entry("srv", &files)
    )
}

/// ALPN: h2 clients get HTTP/2, HTTP/1.1 clients HTTP/1.1; both reach an HTTP/1.1 upstream with
/// X-Forwarded-Proto https.
#[tokio::test]
async fn alpn_and_forwarded_proto() {
    let ca = TestCa::new("alpn-ca");
    let up = Upstream::start(Behavior::Echo("a")).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(&tls_gateway_yaml(dir.path(), &ca, &["gw.test"], "", &up.authority()), &[]).await;
    let addr = gw.addr("tls");
    let url = format!("https://gw.test:{}/x", addr.port());
    let h2 = https_client(&ca).resolve("gw.test", addr).build().unwrap();
    let r = h2.get(&url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["version"], "HTTP/1.1");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    let h1 = https_client(&ca).resolve("gw.test", addr).http1_only().build().unwrap();
    let r = h1.get(&url).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
}

/// min_version "1.3" refuses TLS 1.2 clients; the default accepts TLS 1.2.
#[tokio::test]
async fn tls_versions() {
    let ca = TestCa::new("ver-ca");
    let up = Upstream::start(Behavior::Echo("a")).await;
    let dir = tempfile::tempdir().unwrap();
    for (extra, tls12_ok) in [("", true), ("min_version: \"1.3\"", false)] {
        let gw = TestGateway::start(&tls_gateway_yaml(dir.path(), &ca, &["v.test"], extra, &up.authority()), &[]).await;
        let addr = gw.addr("tls");
        let url = format!("https://v.test:{}/", addr.port());
        let only12 =
            https_client(&ca).resolve("v.test", addr).max_tls_version(reqwest::tls::Version::TLS_1_2).build().unwrap();
        assert_eq!(only12.get(&url).send().await.is_ok(), tls12_ok, "TLS 1.2 with {extra:?}");
        let modern =
            https_client(&ca).resolve("v.test", addr).min_tls_version(reqwest::tls::Version::TLS_1_3).build().unwrap();
        assert_eq!(modern.get(&url).send().await.unwrap().status(), 200);
    }
}

/// A clear-text listener with redirect_https_port answers 308 to the HTTPS URL.
#[tokio::test]
async fn https_redirect() {
    let ca = TestCa::new("redir-ca");
    let up = Upstream::start(Behavior::Echo("a")).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(&tls_gateway_yaml(dir.path(), &ca, &["r.test"], "", &up.authority()), &[]).await;
    let r =
        client().get(format!("http://{}/a?b=1", gw.addr("plain"))).header("host", "shop.test").send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "https://shop.test:8443/a?b=1");
    assert_eq!(up.hits(), 0);
}

/// Upstream TLS: verified against a CA file with an SNI override; refused with 502 when the
/// certificate cannot be verified; accepted with verify: false.
#[tokio::test]
async fn upstream_tls_verification() {
    let ca = TestCa::new("up-ca");
    let up = Upstream::start(Behavior::Echo("behind-tls")).await;
    let dir = tempfile::tempdir().unwrap();
    // Gateway B terminates TLS for up.test in front of the echo upstream.
    let b = TestGateway::start(&tls_gateway_yaml(dir.path(), &ca, &["up.test"], "", &up.authority()), &[]).await;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let front = |tls: String| {
        base(&format!(
            "services:\n  - name: s\n    url: https://127.0.0.1:{}\n    tls: {{ {tls} }}\n    retries: {{ attempts: 0 }}\nroutes:\n  - name: r\n    service: s\n",
            b.addr("tls").port()
        ))
    };
    let ok = TestGateway::start(&front(format!("ca_file: {}, sni: up.test", ca_file.display())), &[]).await;
    let (s, h, _) = get_json(&ok.url("main")).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-upstream"], "behind-tls");

    let wrong_name = TestGateway::start(&front(format!("ca_file: {}", ca_file.display())), &[]).await;
    let (s, _, v) = get_json(&wrong_name.url("main")).await;
    assert_eq!(
        (s.as_u16(), v["error"].as_str()),
        (502, Some("upstream_tls_failed")),
        "127.0.0.1 is not in the certificate"
    );

    let system_roots = TestGateway::start(&front("sni: up.test".into()), &[]).await;
    let (s, _, v) = get_json(&system_roots.url("main")).await;
    assert_eq!((s.as_u16(), v["error"].as_str()), (502, Some("upstream_tls_failed")), "test CA is not a system root");

    let unverified = TestGateway::start(&front("verify: false".into()), &[]).await;
    let (s, _, _) = get_json(&unverified.url("main")).await;
    assert_eq!(s, 200);
}

/// An upstream that requires client certificates accepts the gateway only with its certificate.
#[tokio::test]
async fn upstream_client_certificate() {
    let ca = TestCa::new("mtls-ca");
    let up = Upstream::start(Behavior::Echo("mtls")).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let b = TestGateway::start(
        &tls_gateway_yaml(
            dir.path(),
            &ca,
            &["up.test"],
            &format!("client_ca_file: {}, client_cert_required: true", ca_file.display()),
            &up.authority(),
        ),
        &[],
    )
    .await;
    let client_files = save(dir.path(), "client", &ca.client("gateway-a"));
    let front = |extra: String| {
        base(&format!(
            "services:\n  - name: s\n    url: https://127.0.0.1:{}\n    tls: {{ ca_file: {}, sni: up.test{extra} }}\n    retries: {{ attempts: 0 }}\nroutes:\n  - name: r\n    service: s\n",
            b.addr("tls").port(),
            ca_file.display()
        ))
    };
    let without = TestGateway::start(&front(String::new()), &[]).await;
    let (s, _, _) = get_json(&without.url("main")).await;
    assert_eq!(s, 502, "no client certificate: refused");
    let with = TestGateway::start(
        &front(format!(
            ", client_cert_file: {}, client_key_file: {}",
            client_files.0.display(),
            client_files.1.display()
        )),
        &[],
    )
    .await;
    let (s, h, _) = get_json(&with.url("main")).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-upstream"], "mtls");
}

/// Calls to URLs outside the configuration (forward-auth here; JWKS the same way) go through the
/// gateway's own client with TLS verified against the system roots: an auth service whose
/// certificate does not verify (its CA is not a system root, and it names auth.test, not the
/// address called) fails the handshake, so forward-auth
/// fails closed (503) and never trusts what that service answers; failing open lets the request
/// through without the answer's headers. Plain http to the same service passes.
#[tokio::test]
async fn forward_auth_over_https_verifies_the_certificate() {
    let ca = TestCa::new("auth-ca");
    let auth_up = Upstream::start(Behavior::Echo("auth")).await;
    let dir = tempfile::tempdir().unwrap();
    // Gateway B terminates TLS for auth.test in front of an always-allowing auth service.
    let b = TestGateway::start(&tls_gateway_yaml(dir.path(), &ca, &["auth.test"], "", &auth_up.authority()), &[]).await;
    let up = Upstream::start(Behavior::Echo("app")).await;
    let front = |url: String, mode: &str| {
        base(&format!(
            "services:\n  - name: s\n    url: http://{}\nroutes:\n  - name: r\n    service: s\nplugins:\n  - plugin: forward-auth\n    config: {{ url: \"{url}\", upstream_headers: [x-upstream], failure_mode: {mode}, timeout: 2s }}\n",
            up.authority()
        ))
    };
    let https = format!("https://127.0.0.1:{}/check", b.addr("tls").port());
    let closed = TestGateway::start(&front(https.clone(), "closed"), &[]).await;
    let (s, _, v) = get_json(&closed.url("main")).await;
    assert_eq!((s.as_u16(), v["error"].as_str()), (503, Some("dependency_unavailable")), "{v}");
    assert_eq!(auth_up.hits(), 0, "nothing reached the auth service through an unverified handshake");
    assert_eq!(up.hits(), 0);

    let open = TestGateway::start(&front(https, "open"), &[]).await;
    let (s, _, v) = get_json(&open.url("main")).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["headers"].get("x-upstream").is_none(), "no header from an unverified service: {v}");

    let plain = TestGateway::start(&front(format!("http://{}/check", auth_up.authority()), "closed"), &[]).await;
    let (s, _, v) = get_json(&plain.url("main")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["headers"]["x-upstream"], "auth", "the auth service's header copied upstream: {v}");
}
