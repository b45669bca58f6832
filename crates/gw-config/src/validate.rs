//! `FileConfig` -> `model::Config`: defaults, reference resolution, pattern parsing, secret
//! hashing. Every problem is collected (not just the first) with the key path it concerns, so
//! the file loader can point at `file:line:column` and the Admin API at the failing field.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, StatusCode};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::file::*;
use crate::model::*;
use crate::plugins::PluginConfig;
use crate::template::PathTemplate;
use crate::value::{Dur, Secret};

// === paths ===

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

impl From<&str> for Seg {
    fn from(s: &str) -> Self {
        Seg::Key(s.to_string())
    }
}

impl From<String> for Seg {
    fn from(s: String) -> Self {
        Seg::Key(s)
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// A key path into the configuration document, e.g. `routes[2].paths[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// This path extended by `seg`.
    pub fn join(&self, seg: impl Into<Seg>) -> KeyPath {
        let mut v = self.0.clone();
        v.push(seg.into());
        KeyPath(v)
    }

    /// Parse a dotted path produced by [`fmt::Display`] (used for plugin schema errors).
    pub fn extend_dotted(&self, dotted: &str) -> KeyPath {
        let mut p = self.clone();
        for part in dotted.split('.').filter(|s| !s.is_empty()) {
            let (key, mut idx) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !key.is_empty() {
                p.0.push(Seg::Key(key.to_string()));
            }
            while let Some(rest) = idx.strip_prefix('[') {
                let Some(end) = rest.find(']') else { break };
                if let Ok(n) = rest[..end].parse() {
                    p.0.push(Seg::Index(n));
                }
                idx = &rest[end + 1..];
            }
        }
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.0 {
            match s {
                Seg::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

macro_rules! kp {
    ($($seg:expr),* $(,)?) => { KeyPath(vec![$(Seg::from($seg)),*]) };
}

/// A semantic problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Where.
    pub path: KeyPath,
    /// What.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Options of a validation run.
#[derive(Debug, Clone, Default)]
pub struct ValidateOptions {
    /// Directory that relative file paths (certificates, CA bundles) are resolved against.
    pub base_dir: Option<PathBuf>,
    /// The version hash to record (the Admin API passes its stored document's); when absent,
    /// [`config_hash`] of the document.
    pub hash: Option<String>,
}

// === validator ===

struct V {
    errors: Vec<ValidationError>,
    base_dir: Option<PathBuf>,
}

impl V {
    fn err(&mut self, path: KeyPath, message: impl Into<String>) {
        self.errors.push(ValidationError { path, message: message.into() });
    }

    /// A path from the configuration: a relative one is relative to the configuration file's
    /// directory (the working directory when there is no file, as for Admin API documents).
    fn resolve(&self, file: &str) -> PathBuf {
        match &self.base_dir {
            Some(b) if Path::new(file).is_relative() => b.join(file),
            _ => PathBuf::from(file),
        }
    }

    fn read_file(&mut self, path: KeyPath, file: &str) -> Option<Vec<u8>> {
        let p = self.resolve(file);
        match std::fs::read(&p) {
            Ok(b) => Some(b),
            Err(e) => {
                self.err(path, format!("cannot read {}: {e}", p.display()));
                None
            }
        }
    }

    fn name(&mut self, path: KeyPath, name: &str, seen: &mut HashSet<String>, what: &str) {
        let ok = !name.is_empty()
            && name.len() <= 128
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b));
        if !ok {
            self.err(
                path,
                format!("{what} name {name:?} must be 1-128 characters of letters, digits, '.', '_', '~', '-'"),
            );
        } else if !seen.insert(name.to_string()) {
            self.err(path, format!("duplicate {what} name {name:?}"));
        }
    }
}

fn dur(d: &Option<Dur>, default: Duration) -> Duration {
    d.as_ref().map(Dur::get).unwrap_or(default)
}

/// Validate a configuration document into the model.
pub fn validate(file: &FileConfig, opts: &ValidateOptions) -> Result<Config, Vec<ValidationError>> {
    let mut v = V { errors: Vec::new(), base_dir: opts.base_dir.clone() };
    let gateway = gateway(&mut v, file.gateway.as_ref());
    let certificates = certificates(&mut v, &file.certificates);
    let listeners = listeners(&mut v, &file.listeners, &file.certificates, &certificates);
    let (mut upstreams, upstream_index) = upstreams(&mut v, &file.upstreams);
    let services = services(&mut v, &file.services, &mut upstreams, &upstream_index);
    let service_index: HashMap<&str, usize> =
        file.services.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    let routes = routes(&mut v, &file.routes, &service_index, gateway.limits.max_body_bytes);
    let consumers = consumers(&mut v, &file.consumers);
    let plugins = plugins(&mut v, file);
    if v.errors.is_empty() {
        grpc_plugin_scopes(&mut v, file, &services, &routes);
    }
    if !v.errors.is_empty() {
        return Err(v.errors);
    }
    let hash = opts.hash.clone().unwrap_or_else(|| config_hash(file));
    Ok(Config { gateway, listeners, certificates, upstreams, services, routes, plugins, consumers, hash })
}

/// SHA-256 (hex) of the canonical JSON form of a document.
pub fn config_hash(file: &FileConfig) -> String {
    let json = serde_json::to_vec(file).unwrap_or_default();
    hex(&Sha256::digest(&json))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn parse_listen(v: &mut V, path: KeyPath, text: Option<&str>, default: &str) -> Option<SocketAddr> {
    let t = text.unwrap_or(default);
    if t == "off" {
        return None;
    }
    match t.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            v.err(path, format!("{t:?} is not an ip:port address (or \"off\")"));
            None
        }
    }
}

fn gateway(v: &mut V, g: Option<&FileGateway>) -> Gateway {
    let d = FileGateway::default();
    let g = g.unwrap_or(&d);
    let base = kp!["gateway"];
    let status_listener = parse_listen(v, base.join("status_listener"), g.status_listener.as_deref(), "127.0.0.1:9100");
    let admin_listener = parse_listen(
        v,
        base.join("admin").join("listen"),
        g.admin.as_ref().and_then(|a| a.listen.as_deref()),
        "127.0.0.1:9180",
    );
    for (i, t) in g.admin.iter().flat_map(|a| a.tokens.iter()).enumerate() {
        let tp = base.join("admin").join("tokens").join(i);
        let ok = t
            .token_hash
            .strip_prefix("sha256:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            v.err(tp.join("token_hash"), "expected sha256:<64 hex digits> (see `gatehouse hash-key`)");
        }
        if !matches!(t.role.as_deref(), None | Some("admin" | "read_only")) {
            v.err(tp.join("role"), "use admin or read_only");
        }
    }
    let mut trusted_proxies = Vec::new();
    for (i, t) in g.trusted_proxies.iter().flatten().enumerate() {
        match t.parse::<IpNet>().or_else(|_| t.parse::<IpAddr>().map(IpNet::from)) {
            Ok(n) => trusted_proxies.push(n.trunc()),
            Err(_) => v.err(base.join("trusted_proxies").join(i), format!("{t:?} is not an IP or CIDR")),
        }
    }
    let request_id_header = match HeaderName::from_bytes(
        g.request_id_header.as_deref().unwrap_or("x-request-id").to_ascii_lowercase().as_bytes(),
    ) {
        Ok(h) => h,
        Err(_) => {
            v.err(base.join("request_id_header"), "not a valid header name");
            HeaderName::from_static("x-request-id")
        }
    };
    let al = g.access_log.clone().unwrap_or_default();
    let target = match al.target.as_deref() {
        None | Some("stdout") => LogTarget::Stdout,
        Some("stderr") => LogTarget::Stderr,
        Some("") => {
            v.err(base.join("access_log").join("target"), "empty target");
            LogTarget::Stdout
        }
        Some(p) => LogTarget::File(v.resolve(p)),
    };
    let access_log = AccessLog { enabled: al.enabled.unwrap_or(true), target };
    let l = g.limits.clone().unwrap_or_default();
    let lp = base.join("limits");
    let max_header_bytes = l.max_header_bytes.as_ref().map(|b| b.get()).unwrap_or(32 * 1024);
    if !(8192..=1 << 20).contains(&max_header_bytes) {
        v.err(lp.join("max_header_bytes"), "must be between 8KiB and 1MiB");
    }
    let max_uri_bytes = l.max_uri_bytes.as_ref().map(|b| b.get()).unwrap_or(8 * 1024);
    if !(256..=max_header_bytes).contains(&max_uri_bytes) {
        v.err(lp.join("max_uri_bytes"), "must be between 256 bytes and max_header_bytes");
    }
    let max_headers = l.max_headers.unwrap_or(100);
    if !(1..=1000).contains(&max_headers) {
        v.err(lp.join("max_headers"), "must be between 1 and 1000");
    }
    let max_connections = l.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        v.err(lp.join("max_connections"), "must be at least 1");
    }
    let max_concurrent_streams = l.max_concurrent_streams.unwrap_or(128);
    if max_concurrent_streams == 0 {
        v.err(lp.join("max_concurrent_streams"), "must be at least 1");
    }
    let limits = Limits {
        max_header_bytes: max_header_bytes as usize,
        max_headers,
        max_uri_bytes: max_uri_bytes as usize,
        max_body_bytes: l.max_body_bytes.as_ref().map(|b| b.get()).unwrap_or(100 << 20),
        header_read_timeout: dur(&l.header_read_timeout, Duration::from_secs(10)),
        body_read_timeout: dur(&l.body_read_timeout, Duration::from_secs(60)),
        idle_timeout: dur(&l.idle_timeout, Duration::from_secs(60)),
        max_connections,
        max_concurrent_streams,
        http2_max_resets: l.http2_max_resets.unwrap_or(200),
        http2_reset_window: dur(&l.http2_reset_window, Duration::from_secs(10)),
        max_detached_reads: l.max_detached_reads.unwrap_or(64),
        detached_read_timeout: dur(&l.detached_read_timeout, Duration::from_secs(60)),
    };
    if limits.max_detached_reads > 100_000 {
        v.err(lp.join("max_detached_reads"), "must be at most 100000");
    }
    if !(Duration::from_millis(1)..=Duration::from_secs(3600)).contains(&limits.detached_read_timeout) {
        v.err(lp.join("detached_read_timeout"), "must be between 1ms and 1h");
    }
    if limits.http2_max_resets == 0 {
        v.err(lp.join("http2_max_resets"), "must be at least 1");
    }
    for (k, d) in [
        ("header_read_timeout", limits.header_read_timeout),
        ("body_read_timeout", limits.body_read_timeout),
        ("idle_timeout", limits.idle_timeout),
        ("http2_reset_window", limits.http2_reset_window),
    ] {
        if d.is_zero() {
            v.err(lp.join(k), "must be greater than zero");
        }
    }
    if let Some(0) = g.worker_threads {
        v.err(base.join("worker_threads"), "must be at least 1");
    }
    let redis = g.redis.as_ref().and_then(|r| {
        let rp = base.join("redis");
        let (urls, cluster) = match (&r.url, &r.cluster_urls) {
            (Some(u), None) => (vec![u.clone()], false),
            (None, Some(us)) if !us.is_empty() => (us.clone(), true),
            (Some(_), Some(_)) => {
                v.err(rp.clone(), "give either `url` or `cluster_urls`, not both");
                return None;
            }
            _ => {
                v.err(rp.clone(), "give `url` or `cluster_urls`");
                return None;
            }
        };
        for (i, u) in urls.iter().enumerate() {
            let s = u.expose();
            if !(s.starts_with("redis://") || s.starts_with("rediss://")) {
                let p = if cluster { rp.join("cluster_urls").join(i) } else { rp.join("url") };
                v.err(p, "must start with redis:// or rediss://");
            }
        }
        Some(Redis {
            urls,
            cluster,
            timeout: dur(&r.timeout, Duration::from_millis(100)),
            ca_file: r.ca_file.as_ref().map(|f| {
                // Read here so that a missing file is a configuration error with its key.
                let _ = v.read_file(rp.join("ca_file"), f);
                v.resolve(f)
            }),
        })
    });
    let admin_tls = g.admin.as_ref().and_then(|a| a.tls.as_ref()).map(|t| {
        let tp = base.join("admin").join("tls");
        let mut file = |key: &str, f: &str| {
            let _ = v.read_file(tp.join(key), f);
            v.resolve(f)
        };
        AdminTls {
            cert_file: file("cert_file", &t.cert_file),
            key_file: file("key_file", &t.key_file),
            client_ca_file: t.client_ca_file.as_deref().map(|f| file("client_ca_file", f)),
        }
    });
    let usage = {
        let u = g.usage.clone().unwrap_or_default();
        let up = base.join("usage");
        let d = UsageSettings::default();
        let s = UsageSettings {
            flush_interval: dur(&u.flush_interval, d.flush_interval),
            retention: dur(&u.retention, d.retention),
            minute_retention: dur(&u.minute_retention, d.minute_retention),
            path: u.path.as_deref().map(|p| v.resolve(p)),
            store: match u.store.as_deref() {
                None => UsageStore::Default,
                Some("redis") => UsageStore::Redis,
                Some(other) => {
                    v.err(up.join("store"), format!("unknown usage store {other:?} (expected `redis`)"));
                    UsageStore::Default
                }
            },
            key_prefix: u.key_prefix.clone().unwrap_or_else(|| DEFAULT_USAGE_PREFIX.to_string()),
        };
        if s.store == UsageStore::Redis {
            match &g.redis {
                None => v.err(up.join("store"), "`redis` needs `gateway.redis` to be configured"),
                // A batch is one MULTI/EXEC transaction, which a cluster pipeline cannot carry.
                Some(r) if r.cluster_urls.is_some() => {
                    v.err(up.join("store"), "`redis` needs a single Redis (`gateway.redis.url`), not a Redis Cluster");
                }
                Some(_) => {}
            }
            if u.path.is_some() {
                v.err(up.join("path"), "not used with `store: redis` (Redis keeps the counters)");
            }
        } else if u.key_prefix.is_some() {
            v.err(up.join("key_prefix"), "only used with `store: redis`");
        }
        if u.key_prefix.as_deref().is_some_and(|p| p.is_empty() || p.contains(['{', '}'])) {
            v.err(up.join("key_prefix"), "must not be empty or contain `{` or `}`");
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&s.flush_interval) {
            v.err(up.join("flush_interval"), "must be between 100ms and 60s");
        }
        if s.retention < Duration::from_secs(3600) {
            v.err(up.join("retention"), "must be at least 1h");
        }
        if s.minute_retention < Duration::from_secs(60) || s.minute_retention > s.retention {
            v.err(up.join("minute_retention"), "must be at least 1m and at most `retention`");
        }
        if u.path.as_deref() == Some("") {
            v.err(up.join("path"), "empty path");
        }
        s
    };
    let tracing = tracing_settings(v, g.tracing.as_ref(), &base);
    let node_id = g.node_id.clone().unwrap_or_else(default_node_id);
    Gateway {
        node_id,
        status_listener,
        admin_listener,
        admin_tls,
        trusted_proxies,
        request_id_header,
        access_log,
        limits,
        shutdown_timeout: dur(&g.shutdown_timeout, Duration::from_secs(30)),
        worker_threads: g.worker_threads,
        redis,
        usage,
        tracing,
    }
}

/// Fields of an export request that the exporter writes itself, or that would change how the
/// body is read or the connection kept (not `tracing.headers`).
const RESERVED_EXPORT_HEADERS: [&str; 12] = [
    "host",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "te",
    "connection",
    "keep-alive",
    "proxy-connection",
    "user-agent",
    "upgrade",
    "authority",
];

/// `gateway.tracing`: `None` when disabled (the other keys are checked either way).
fn tracing_settings(v: &mut V, t: Option<&FileTracing>, base: &KeyPath) -> Option<Tracing> {
    let t = t?;
    let tp = base.join("tracing");
    let protocol = match t.protocol.as_deref() {
        None | Some("grpc") => OtlpProtocol::Grpc,
        Some("http") => OtlpProtocol::Http,
        Some(o) => {
            v.err(tp.join("protocol"), format!("{o:?}: use grpc or http"));
            OtlpProtocol::Grpc
        }
    };
    let endpoint = match t.endpoint.as_deref() {
        None => match protocol {
            OtlpProtocol::Grpc => "http://127.0.0.1:4317".to_string(),
            OtlpProtocol::Http => "http://127.0.0.1:4318/v1/traces".to_string(),
        },
        Some(e) => {
            let ok = e
                .parse::<http::Uri>()
                .ok()
                .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some());
            // The scheme as parsed (lowercase: `HTTPS://` is `https://`, and takes TLS).
            let e = match (&ok, e.find("://")) {
                (Some(u), Some(at)) => format!("{}{}", u.scheme_str().unwrap_or_default(), &e[at..]),
                _ => e.to_string(),
            };
            match ok {
                None => {
                    v.err(tp.join("endpoint"), format!("{e:?} is not an http:// or https:// URL"));
                    e
                }
                Some(u) if protocol == OtlpProtocol::Http && matches!(u.path(), "" | "/") => {
                    format!("{}/v1/traces", e.trim_end_matches('/'))
                }
                Some(_) => e,
            }
        }
    };
    let sample_ratio = t.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        v.err(tp.join("sample_ratio"), "must be between 0.0 and 1.0");
    }
    let propagation = match t.propagation.as_deref() {
        None | Some("w3c") => Propagation::W3c,
        Some("b3") => Propagation::B3,
        Some("b3multi") => Propagation::B3Multi,
        Some(o) => {
            v.err(tp.join("propagation"), format!("{o:?}: use w3c, b3 or b3multi"));
            Propagation::W3c
        }
    };
    let gzip = match t.compression.as_deref() {
        None | Some("none") => false,
        Some("gzip") => true,
        Some(o) => {
            v.err(tp.join("compression"), format!("{o:?}: use none or gzip"));
            false
        }
    };
    let service_name = t.service_name.clone().unwrap_or_else(|| "gatehouse".to_string());
    if service_name.is_empty() {
        v.err(tp.join("service_name"), "empty service name");
    }
    let queue_size = t.queue_size.unwrap_or(2048);
    if !(1..=1_000_000).contains(&queue_size) {
        v.err(tp.join("queue_size"), "must be between 1 and 1000000");
    }
    let batch_size = t.batch_size.unwrap_or(512);
    if batch_size == 0 || batch_size > queue_size {
        v.err(tp.join("batch_size"), "must be at least 1 and at most queue_size");
    }
    let export_interval = dur(&t.export_interval, Duration::from_secs(1));
    if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&export_interval) {
        v.err(tp.join("export_interval"), "must be between 10ms and 60s");
    }
    let export_timeout = dur(&t.export_timeout, Duration::from_secs(10));
    if !(Duration::from_millis(100)..=Duration::from_secs(120)).contains(&export_timeout) {
        v.err(tp.join("export_timeout"), "must be between 100ms and 120s");
    }
    let tls = match (&t.tls, endpoint.starts_with("https://")) {
        (tls, true) => Some(upstream_tls(v, &tls.clone().unwrap_or_default(), &tp.join("tls"))),
        (Some(_), false) => {
            v.err(tp.join("tls"), "`tls` needs an https:// endpoint");
            None
        }
        (None, false) => None,
    };
    let mut headers: Vec<(HeaderName, Secret)> = Vec::new();
    for (name, value) in t.headers.iter().flatten() {
        let hp = tp.join("headers").join(name.as_str());
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) if RESERVED_EXPORT_HEADERS.contains(&n.as_str()) || n.as_str().starts_with("grpc-") => {
                v.err(hp, "is set by the exporter itself");
            }
            Ok(n) if n.as_str().ends_with("-bin") => {
                v.err(hp, "binary gRPC metadata (`-bin`) is not supported");
            }
            Ok(n) if headers.iter().any(|(h, _)| *h == n) => {
                v.err(hp, "is given twice (header names are case-insensitive)");
            }
            // The value is not shown: it may be a secret.
            Ok(_) if http::HeaderValue::from_str(value.expose()).is_err() => {
                v.err(hp, "the value is not a valid header value (visible ASCII and spaces)");
            }
            Ok(n) => headers.push((n, value.clone())),
            Err(_) => v.err(hp, "is not a valid header name"),
        }
    }
    t.enabled.unwrap_or(false).then_some(Tracing {
        tls,
        headers,
        gzip,
        endpoint,
        protocol,
        sample_ratio,
        propagation,
        service_name,
        queue_size,
        batch_size,
        export_interval,
        export_timeout,
    })
}

fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "gatehouse".to_string())
}

fn certificates(v: &mut V, certs: &[FileCertificate]) -> Vec<Certificate> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, c) in certs.iter().enumerate() {
        let p = kp!["certificates", i];
        v.name(p.join("name"), &c.name, &mut seen, "certificate");
        let cert_pem = match (&c.cert, &c.cert_file) {
            (Some(pem), None) => Some(pem.as_bytes().to_vec()),
            (None, Some(f)) => v.read_file(p.join("cert_file"), f),
            _ => {
                v.err(p.clone(), "give exactly one of `cert` and `cert_file`");
                None
            }
        };
        let key_pem = match (&c.key, &c.key_file) {
            (Some(pem), None) => Some(pem.expose().as_bytes().to_vec()),
            (None, Some(f)) => v.read_file(p.join("key_file"), f),
            _ => {
                v.err(p.clone(), "give exactly one of `key` and `key_file`");
                None
            }
        };
        let (Some(cert_pem), Some(key_pem)) = (cert_pem, key_pem) else {
            continue;
        };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&cert_pem).filter_map(Result::ok).collect();
        if chain.is_empty() {
            v.err(p.join(if c.cert.is_some() { "cert" } else { "cert_file" }), "no PEM certificate found");
            continue;
        }
        if PrivateKeyDer::from_pem_slice(&key_pem).is_err() {
            v.err(p.join(if c.key.is_some() { "key" } else { "key_file" }), "no PEM private key found");
            continue;
        }
        let snis = match &c.snis {
            Some(s) => {
                for (j, n) in s.iter().enumerate() {
                    if gw_router::HostPattern::parse(n).is_err() {
                        v.err(p.join("snis").join(j), format!("{n:?} is not a valid server name"));
                    }
                }
                s.iter().map(|n| n.to_ascii_lowercase()).collect()
            }
            None => {
                let names = dns_sans(&chain[0]);
                if names.is_empty() {
                    v.err(p.clone(), "the certificate has no DNS names; list its `snis`");
                }
                names
            }
        };
        let key_text = String::from_utf8_lossy(&key_pem).into_owned();
        out.push(Certificate { name: c.name.clone(), cert_pem, key_pem: Secret(key_text), snis });
    }
    out
}

/// DNS subject alternative names of a certificate, lowercased.
pub(crate) fn dns_sans(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::DNSName(n) => Some(n.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

fn listeners(v: &mut V, ls: &[FileListener], file_certs: &[FileCertificate], certs: &[Certificate]) -> Vec<Listener> {
    if ls.is_empty() {
        return vec![Listener {
            name: "default".into(),
            address: SocketAddr::from(([0, 0, 0, 0], 8080)),
            http2: true,
            tls: None,
            redirect_https_port: None,
        }];
    }
    let cert_index: HashMap<&str, usize> = file_certs.iter().enumerate().map(|(i, c)| (c.name.as_str(), i)).collect();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut addrs = HashSet::new();
    for (i, l) in ls.iter().enumerate() {
        let p = kp!["listeners", i];
        v.name(p.join("name"), &l.name, &mut seen, "listener");
        let address: SocketAddr = match l.address.parse() {
            Ok(a) => a,
            Err(_) => {
                v.err(p.join("address"), format!("{:?} is not an ip:port address", l.address));
                continue;
            }
        };
        // Port 0 asks the OS for a free port: never a conflict.
        if address.port() != 0 && !addrs.insert(address) {
            v.err(p.join("address"), format!("address {address} is used by another listener"));
        }
        let tls = l.tls.as_ref().and_then(|t| {
            let tp = p.join("tls");
            let names: Vec<usize> = match &t.certificates {
                Some(names) => names
                    .iter()
                    .enumerate()
                    .filter_map(|(j, n)| {
                        let r = cert_index.get(n.as_str()).copied();
                        if r.is_none() {
                            v.err(tp.join("certificates").join(j), format!("unknown certificate {n:?}"));
                        }
                        r
                    })
                    .collect(),
                None => (0..file_certs.len()).collect(),
            };
            if names.is_empty() {
                v.err(tp.clone(), "a TLS listener needs at least one certificate");
                return None;
            }
            let default_certificate = match &t.default_certificate {
                Some(n) => match cert_index.get(n.as_str()) {
                    Some(&i) => i,
                    None => {
                        v.err(tp.join("default_certificate"), format!("unknown certificate {n:?}"));
                        return None;
                    }
                },
                None => names[0],
            };
            let tls13_only = match t.min_version.as_deref() {
                None | Some("1.2") => false,
                Some("1.3") => true,
                Some(o) => {
                    v.err(tp.join("min_version"), format!("{o:?}: use \"1.2\" or \"1.3\""));
                    false
                }
            };
            let client_ca_pem = t.client_ca_file.as_ref().and_then(|f| v.read_file(tp.join("client_ca_file"), f));
            let client_cert_required = t.client_cert_required.unwrap_or(false);
            if client_cert_required && t.client_ca_file.is_none() {
                v.err(tp.join("client_cert_required"), "requires `client_ca_file`");
            }
            // Certificates that failed validation are missing from `certs`; their errors are
            // already reported.
            let _ = certs;
            Some(ListenerTls {
                certificates: names,
                default_certificate,
                tls13_only,
                client_ca_pem,
                client_cert_required,
            })
        });
        if l.redirect_https_port.is_some() && l.tls.is_some() {
            v.err(p.join("redirect_https_port"), "only clear-text listeners can redirect to HTTPS");
        }
        out.push(Listener {
            name: l.name.clone(),
            address,
            http2: l.http2.unwrap_or(true),
            tls,
            redirect_https_port: l.redirect_https_port,
        });
    }
    out
}

/// Parse `host:port` (`[v6]:port`).
fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(|| format!("{s:?}: unclosed '['"))?;
        let host = &rest[..end];
        let port = rest[end + 1..].strip_prefix(':').ok_or_else(|| format!("{s:?} needs a port, like [::1]:8080"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{s:?}: {host:?} is not an IPv6 address"));
        }
        (host.to_string(), port)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} needs a port, like host:8080"))?;
        if h.contains(':') {
            return Err(format!("{s:?}: write IPv6 addresses as [addr]:port"));
        }
        (h.to_string(), p)
    };
    let port: u16 = port.parse().map_err(|_| format!("{s:?}: invalid port {port:?}"))?;
    if port == 0 {
        return Err(format!("{s:?}: port 0 is not allowed"));
    }
    check_host(&host).map_err(|e| format!("{s:?}: {e}"))?;
    Ok((host, port))
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("empty host".into());
    }
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok { Ok(()) } else { Err(format!("{host:?} is not a valid host name or IP")) }
}

fn upstreams(v: &mut V, ups: &[FileUpstream]) -> (Vec<Upstream>, HashMap<String, usize>) {
    let mut out = Vec::new();
    let mut index = HashMap::new();
    let mut seen = HashSet::new();
    for (i, u) in ups.iter().enumerate() {
        let p = kp!["upstreams", i];
        v.name(p.join("name"), &u.name, &mut seen, "upstream");
        let algorithm = match u.algorithm.as_deref() {
            None | Some("round-robin") => Algorithm::RoundRobin,
            Some("least-connections") => Algorithm::LeastConnections,
            Some("consistent-hash") => Algorithm::ConsistentHash,
            Some("ewma") => Algorithm::Ewma,
            Some(o) => {
                v.err(
                    p.join("algorithm"),
                    format!("unknown algorithm {o:?}; use round-robin, least-connections, consistent-hash or ewma"),
                );
                Algorithm::RoundRobin
            }
        };
        let hash_on = match &u.hash_on {
            None => None,
            Some(FileHashOn::Header(h)) => match HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
                Ok(h) => Some(HashOn::Header(h)),
                Err(_) => {
                    v.err(p.join("hash_on").join("header"), format!("{h:?} is not a header name"));
                    None
                }
            },
            Some(FileHashOn::Cookie(c)) => Some(HashOn::Cookie(c.clone())),
            Some(FileHashOn::ClientIp) => Some(HashOn::ClientIp),
        };
        if algorithm == Algorithm::ConsistentHash && hash_on.is_none() && u.hash_on.is_none() {
            v.err(p.join("hash_on"), "consistent-hash needs `hash_on` (header, cookie or client_ip)");
        }
        if algorithm != Algorithm::ConsistentHash && u.hash_on.is_some() {
            v.err(p.join("hash_on"), "`hash_on` only applies to algorithm consistent-hash");
        }
        if u.targets.is_empty() {
            v.err(p.join("targets"), "an upstream needs at least one target");
        }
        let mut targets = Vec::new();
        let mut taddrs = HashSet::new();
        for (j, t) in u.targets.iter().enumerate() {
            let tp = p.join("targets").join(j);
            match parse_host_port(&t.address) {
                Ok((host, port)) => {
                    if !taddrs.insert((host.clone(), port)) {
                        v.err(tp.join("address"), format!("duplicate target {:?}", t.address));
                    }
                    let weight = t.weight.unwrap_or(100);
                    if weight > 10_000 {
                        v.err(tp.join("weight"), "weight must be at most 10000");
                    }
                    targets.push(Target { host, port, weight });
                }
                Err(e) => v.err(tp.join("address"), e),
            }
        }
        let hc = u.health_checks.clone().unwrap_or_default();
        let active_health = hc.active.as_ref().map(|a| {
            let ap = p.join("health_checks").join("active");
            let path = a.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') {
                v.err(ap.join("path"), "must start with '/'");
            }
            let h = ActiveHealth {
                path,
                host: a.host.clone(),
                interval: dur(&a.interval, Duration::from_secs(5)),
                timeout: dur(&a.timeout, Duration::from_secs(2)),
                healthy_threshold: a.healthy_threshold.unwrap_or(2),
                unhealthy_threshold: a.unhealthy_threshold.unwrap_or(3),
                healthy_statuses: a.healthy_statuses.clone().unwrap_or_default(),
            };
            if h.interval < Duration::from_millis(10) {
                v.err(ap.join("interval"), "must be at least 10ms");
            }
            if h.timeout.is_zero() {
                v.err(ap.join("timeout"), "must be greater than zero");
            }
            if h.healthy_threshold == 0 || h.unhealthy_threshold == 0 {
                v.err(ap.clone(), "thresholds must be at least 1");
            }
            check_statuses(v, &ap.join("healthy_statuses"), &h.healthy_statuses);
            h
        });
        let passive_health = hc.passive.as_ref().map(|a| {
            let pp = p.join("health_checks").join("passive");
            let h = PassiveHealth {
                consecutive_failures: a.consecutive_failures.unwrap_or(5),
                ejection_time: dur(&a.ejection_time, Duration::from_secs(10)),
                max_ejection_time: dur(&a.max_ejection_time, Duration::from_secs(300)),
                failure_statuses: a.failure_statuses.clone().unwrap_or_else(|| vec![502, 503, 504]),
            };
            if h.consecutive_failures == 0 {
                v.err(pp.join("consecutive_failures"), "must be at least 1");
            }
            if h.max_ejection_time < h.ejection_time {
                v.err(pp.join("max_ejection_time"), "must not be shorter than ejection_time");
            }
            check_statuses(v, &pp.join("failure_statuses"), &h.failure_statuses);
            h
        });
        let circuit_breaker = u.circuit_breaker.as_ref().map(|c| {
            let cp = p.join("circuit_breaker");
            let cb = CircuitBreaker {
                failure_ratio: c.failure_ratio.unwrap_or(0.5),
                min_requests: c.min_requests.unwrap_or(20),
                window: dur(&c.window, Duration::from_secs(10)),
                open_duration: dur(&c.open_duration, Duration::from_secs(30)),
                half_open_requests: c.half_open_requests.unwrap_or(3),
            };
            if !(cb.failure_ratio > 0.0 && cb.failure_ratio <= 1.0) {
                v.err(cp.join("failure_ratio"), "must be in (0, 1]");
            }
            if cb.min_requests == 0 || cb.half_open_requests == 0 {
                v.err(cp.clone(), "min_requests and half_open_requests must be at least 1");
            }
            if cb.window.is_zero() || cb.open_duration.is_zero() {
                v.err(cp.clone(), "window and open_duration must be greater than zero");
            }
            cb
        });
        if u.max_connections_per_target == Some(0) {
            v.err(p.join("max_connections_per_target"), "must be at least 1 (omit it for no cap)");
        }
        index.insert(u.name.clone(), out.len());
        out.push(Upstream {
            name: u.name.clone(),
            algorithm,
            hash_on,
            targets,
            active_health,
            passive_health,
            circuit_breaker,
            max_connections_per_target: u.max_connections_per_target,
            max_idle_per_target: u.max_idle_per_target.unwrap_or(128),
            idle_timeout: dur(&u.idle_timeout, Duration::from_secs(60)),
            implicit: false,
        });
    }
    (out, index)
}

fn check_statuses(v: &mut V, path: &KeyPath, statuses: &[u16]) {
    for (i, s) in statuses.iter().enumerate() {
        if !(100..=599).contains(s) {
            v.err(path.join(i), format!("{s} is not an HTTP status"));
        }
    }
}

fn parse_protocol(p: &str) -> Option<UpstreamProtocol> {
    Some(match p {
        "http" => UpstreamProtocol::Http1,
        "https" => UpstreamProtocol::Https,
        "h2c" | "grpc" => UpstreamProtocol::H2c,
        "h2" | "grpcs" => UpstreamProtocol::H2,
        _ => return None,
    })
}

fn services(
    v: &mut V,
    svcs: &[FileService],
    upstreams: &mut Vec<Upstream>,
    upstream_index: &HashMap<String, usize>,
) -> Vec<Service> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, s) in svcs.iter().enumerate() {
        let p = kp!["services", i];
        v.name(p.join("name"), &s.name, &mut seen, "service");
        let t = s.timeouts.clone().unwrap_or_default();
        let timeouts = Timeouts {
            connect: dur(&t.connect, Duration::from_secs(5)),
            read: dur(&t.read, Duration::from_secs(60)),
            write: dur(&t.write, Duration::from_secs(60)),
            total: t.total.as_ref().map(Dur::get),
        };
        for (k, d) in [("connect", timeouts.connect), ("read", timeouts.read), ("write", timeouts.write)] {
            if d.is_zero() {
                v.err(p.join("timeouts").join(k), "must be greater than zero");
            }
        }
        let r = s.retries.clone().unwrap_or_default();
        let retries = Retries {
            attempts: r.attempts.unwrap_or(1),
            on_statuses: r.on_statuses.clone().unwrap_or_else(|| vec![502, 503, 504]),
            budget_ratio: r.budget_ratio.unwrap_or(0.2),
            budget_min_per_second: r.budget_min_per_second.unwrap_or(10),
        };
        if retries.attempts > 10 {
            v.err(p.join("retries").join("attempts"), "at most 10 retries");
        }
        if !(0.0..=1.0).contains(&retries.budget_ratio) {
            v.err(p.join("retries").join("budget_ratio"), "must be between 0 and 1");
        }
        check_statuses(v, &p.join("retries").join("on_statuses"), &retries.on_statuses);
        if s.aggregate.is_some() && s.kind.as_deref() != Some("aggregate") {
            v.err(p.join("aggregate"), "`aggregate` is only for services of type aggregate");
        }
        let kind = match s.kind.as_deref() {
            Some("aggregate") => {
                for (key, set) in [
                    ("url", s.url.is_some()),
                    ("upstream", s.upstream.is_some()),
                    ("protocol", s.protocol.is_some()),
                    ("tls", s.tls.is_some()),
                    ("path", s.path.is_some()),
                    ("response", s.response.is_some()),
                ] {
                    if set {
                        v.err(p.join(key), format!("`{key}` does not apply to a service of type aggregate"));
                    }
                }
                match &s.aggregate {
                    Some(a) => aggregate_plan(v, &p.join("aggregate"), a, svcs)
                        .map(|plan| ServiceKind::Aggregate(std::sync::Arc::new(plan))),
                    None => {
                        v.err(p.join("aggregate"), "a service of type aggregate needs `aggregate.calls`");
                        None
                    }
                }
            }
            None | Some("proxy") => {
                if s.response.is_some() {
                    v.err(p.join("response"), "`response` is only for services of type static");
                }
                proxy_target(v, &p, s, upstreams, upstream_index).map(ServiceKind::Proxy)
            }
            Some(k @ ("echo" | "static")) => {
                for (key, set) in [
                    ("url", s.url.is_some()),
                    ("upstream", s.upstream.is_some()),
                    ("protocol", s.protocol.is_some()),
                    ("tls", s.tls.is_some()),
                ] {
                    if set {
                        v.err(p.join(key), format!("`{key}` does not apply to a service of type {k}"));
                    }
                }
                if k == "echo" {
                    if s.response.is_some() {
                        v.err(p.join("response"), "`response` is only for services of type static");
                    }
                    Some(ServiceKind::Echo)
                } else {
                    static_response(v, &p, s.response.as_ref()).map(ServiceKind::Static)
                }
            }
            Some(o) => {
                v.err(p.join("type"), format!("unknown service type {o:?}; use proxy, echo, static or aggregate"));
                None
            }
        };
        out.push(Service { name: s.name.clone(), kind: kind.unwrap_or(ServiceKind::Echo), timeouts, retries });
    }
    out
}

/// An aggregate plan error's key (`calls[1].mapping.a.b`) as a key path: the call, its field,
/// then the rest as one key (header names, query names and mapping sources may hold dots).
fn plan_key(base: &KeyPath, key: &str) -> KeyPath {
    let mut parts = key.splitn(3, '.');
    let mut p = base.clone();
    for part in parts.by_ref().take(2) {
        p = p.extend_dotted(part);
    }
    match parts.next() {
        Some(rest) => p.join(rest),
        None => p,
    }
}

/// Validate an aggregate into its plan: call targets resolved to proxy services (or URLs),
/// then the plan's own checks (templates, dependency graph, limits).
fn aggregate_plan(v: &mut V, p: &KeyPath, a: &FileAggregate, svcs: &[FileService]) -> Option<gw_aggregate::Plan> {
    use gw_aggregate::plan::{AggregateSpec, BodySpec, CallSpec, ShapeSpec, Target};
    let before = v.errors.len();
    let mut calls = Vec::new();
    for (j, c) in a.calls.iter().enumerate() {
        let cp = p.join("calls").join(j);
        let target = match (&c.service, &c.url) {
            (Some(name), None) => match svcs.iter().position(|s| &s.name == name) {
                Some(index) if matches!(svcs[index].kind.as_deref(), None | Some("proxy")) => {
                    Target::Service { name: name.clone(), index }
                }
                Some(_) => {
                    v.err(cp.join("service"), format!("service {name:?} is not a proxy service"));
                    Target::Service { name: name.clone(), index: usize::MAX }
                }
                None => {
                    v.err(cp.join("service"), format!("unknown service {name:?}"));
                    Target::Service { name: name.clone(), index: usize::MAX }
                }
            },
            (None, Some(url)) => Target::Url(url.clone()),
            _ => {
                v.err(cp.clone(), "set exactly one of `service` and `url`");
                Target::Service { name: String::new(), index: usize::MAX }
            }
        };
        let body = match (c.body.as_deref(), &c.json_body) {
            (None | Some("none"), None) => BodySpec::None,
            (Some("client"), None) => BodySpec::Client,
            (None, Some(j)) => BodySpec::Json(j.clone()),
            (Some(_), Some(_)) => {
                v.err(cp.join("json_body"), "set `body` or `json_body`, not both");
                BodySpec::None
            }
            (Some(o), None) => {
                v.err(cp.join("body"), format!("{o:?}: use client or none"));
                BodySpec::None
            }
        };
        calls.push(CallSpec {
            name: c.name.clone(),
            target,
            method: c.method.clone(),
            path: c.path.clone(),
            query: c.query.iter().map(|(k, t)| (k.clone(), t.clone())).collect(),
            headers: c.headers.iter().map(|(k, t)| (k.clone(), t.clone())).collect(),
            body,
            timeout: c.timeout.as_ref().map(Dur::get),
            required: c.required,
            max_body_bytes: c.max_body_bytes.as_ref().map(|b| b.get()),
            after: c.after.clone(),
            shape: ShapeSpec {
                target: c.target.clone(),
                allow: c.allow.clone(),
                deny: c.deny.clone(),
                mapping: c.mapping.iter().map(|(k, t)| (k.clone(), t.clone())).collect(),
                wrap: c.wrap.clone(),
                flatten: c.flatten.unwrap_or(false),
                group: c.group.clone(),
            },
        });
    }
    let spec = AggregateSpec {
        calls,
        max_concurrency: a.max_concurrency,
        timeout: a.timeout.as_ref().map(Dur::get),
        max_body_bytes: a.max_body_bytes.as_ref().map(|b| b.get()),
        incomplete_header: a.incomplete_header.clone(),
    };
    match gw_aggregate::Plan::build(&spec) {
        Ok(plan) if v.errors.len() == before => Some(plan),
        Ok(_) => None,
        Err(errs) => {
            for e in errs {
                v.err(plan_key(p, &e.key), e.message);
            }
            None
        }
    }
}

fn static_response(v: &mut V, p: &KeyPath, r: Option<&FileStaticResponse>) -> Option<StaticResponse> {
    let d = FileStaticResponse::default();
    let r = r.unwrap_or(&d);
    let rp = p.join("response");
    let status = match StatusCode::from_u16(r.status.unwrap_or(200)) {
        Ok(s) => s,
        Err(_) => {
            v.err(rp.join("status"), "not an HTTP status");
            return None;
        }
    };
    let mut headers = Vec::new();
    for (k, val) in &r.headers {
        match (HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()), HeaderValue::from_str(val)) {
            (Ok(n), Ok(hv)) => headers.push((n, hv)),
            _ => v.err(rp.join("headers").join(k.as_str()), "invalid header name or value"),
        }
    }
    Some(StaticResponse { status, body: r.body.clone().unwrap_or_default(), headers })
}

/// TLS towards an upstream (or the tracing collector): the CA bundle and client certificate
/// read, the SNI checked.
fn upstream_tls(v: &mut V, t: &FileUpstreamTls, tp: &KeyPath) -> UpstreamTls {
    let ca_pem = t.ca_file.as_ref().and_then(|f| v.read_file(tp.join("ca_file"), f));
    let client_cert = match (&t.client_cert_file, &t.client_key_file) {
        (Some(c), Some(k)) => {
            let c = v.read_file(tp.join("client_cert_file"), c);
            let k = v.read_file(tp.join("client_key_file"), k);
            c.zip(k).map(|(c, k)| (c, Secret(String::from_utf8_lossy(&k).into_owned())))
        }
        (None, None) => None,
        _ => {
            v.err(tp.clone(), "give both client_cert_file and client_key_file");
            None
        }
    };
    if let Some(sni) = &t.sni
        && let Err(e) = check_host(sni)
    {
        v.err(tp.join("sni"), e);
    }
    UpstreamTls { verify: t.verify.unwrap_or(true), ca_pem, sni: t.sni.clone(), client_cert }
}

fn proxy_target(
    v: &mut V,
    p: &KeyPath,
    s: &FileService,
    upstreams: &mut Vec<Upstream>,
    upstream_index: &HashMap<String, usize>,
) -> Option<ProxyTarget> {
    let mut path_prefix = String::new();
    let mut protocol = match s.protocol.as_deref() {
        None => None,
        Some(pr) => match parse_protocol(pr) {
            Some(x) => Some(x),
            None => {
                v.err(p.join("protocol"), format!("unknown protocol {pr:?}; use http, https, h2c, h2, grpc or grpcs"));
                return None;
            }
        },
    };
    let upstream = match (&s.url, &s.upstream) {
        (Some(url), None) => {
            let up = p.join("url");
            let Some((scheme, rest)) = url.split_once("://") else {
                v.err(up, format!("{url:?} is not a URL like http://host:port/path"));
                return None;
            };
            let Some(proto) = parse_protocol(scheme) else {
                v.err(up, format!("unknown scheme {scheme:?}; use http, https, h2c, h2, grpc or grpcs"));
                return None;
            };
            if protocol.is_some_and(|x| x != proto) {
                v.err(p.join("protocol"), "contradicts the scheme of `url`");
            }
            protocol = Some(proto);
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            if authority.contains('@') {
                v.err(up, "credentials in the URL are not supported; use a plugin to add auth headers");
                return None;
            }
            let default_port = if proto.is_tls() { 443 } else { 80 };
            let with_port = if authority.ends_with(']') || !authority.contains(':') {
                format!("{authority}:{default_port}")
            } else {
                authority.to_string()
            };
            let (host, port) = match parse_host_port(&with_port) {
                Ok(hp) => hp,
                Err(e) => {
                    v.err(up, e);
                    return None;
                }
            };
            if path.contains('?') || path.contains('#') {
                v.err(p.join("url"), "the service URL must not have a query or fragment");
            }
            path_prefix = path.trim_end_matches('/').to_string();
            let idx = upstreams.len();
            upstreams.push(Upstream {
                name: s.name.clone(),
                algorithm: Algorithm::RoundRobin,
                hash_on: None,
                targets: vec![Target { host, port, weight: 100 }],
                active_health: None,
                passive_health: None,
                circuit_breaker: None,
                max_connections_per_target: None,
                max_idle_per_target: 128,
                idle_timeout: Duration::from_secs(60),
                implicit: true,
            });
            idx
        }
        (None, Some(name)) => match upstream_index.get(name) {
            Some(&i) => i,
            None => {
                v.err(p.join("upstream"), format!("unknown upstream {name:?}"));
                return None;
            }
        },
        _ => {
            v.err(p.clone(), "a proxy service needs exactly one of `url` and `upstream`");
            return None;
        }
    };
    if let Some(sp) = &s.path {
        if !sp.starts_with('/') {
            v.err(p.join("path"), "must start with '/'");
        }
        if !path_prefix.is_empty() {
            v.err(p.join("path"), "the path is already given in `url`");
        }
        path_prefix = sp.trim_end_matches('/').to_string();
    }
    let protocol = protocol.unwrap_or(UpstreamProtocol::Http1);
    let tls = if protocol.is_tls() {
        Some(upstream_tls(v, &s.tls.clone().unwrap_or_default(), &p.join("tls")))
    } else {
        if s.tls.is_some() {
            v.err(p.join("tls"), "`tls` needs a TLS protocol (https, h2, grpcs)");
        }
        None
    };
    Some(ProxyTarget { upstream, protocol, tls, path_prefix })
}

fn str_match(v: &mut V, path: KeyPath, value: &str) -> Option<Option<StrMatch>> {
    if value == "*" {
        return Some(None);
    }
    match StrMatch::parse(value) {
        Ok(m) => Some(Some(m)),
        Err(e) => {
            v.err(path, e.to_string());
            None
        }
    }
}

fn routes(v: &mut V, rs: &[FileRoute], services: &HashMap<&str, usize>, default_body: u64) -> Vec<Arc<Route>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, r) in rs.iter().enumerate() {
        let p = kp!["routes", i];
        v.name(p.join("name"), &r.name, &mut seen, "route");
        out.push(Arc::new(route(v, &p, r, services, default_body)));
    }
    out
}

/// One route, without the name's uniqueness (the caller checks it against its neighbours).
fn route(v: &mut V, p: &KeyPath, r: &FileRoute, services: &HashMap<&str, usize>, default_body: u64) -> Route {
    {
        let service = match services.get(r.service.as_str()) {
            Some(&s) => s,
            None => {
                v.err(p.join("service"), format!("unknown service {:?}", r.service));
                0
            }
        };
        let mut hosts = Vec::new();
        for (j, h) in r.hosts.iter().enumerate() {
            match HostPattern::parse(h) {
                Ok(x) => hosts.push(x),
                Err(e) => v.err(p.join("hosts").join(j), e.to_string()),
            }
        }
        let mut paths = Vec::new();
        for (j, h) in r.paths.iter().enumerate() {
            match PathPattern::parse(h) {
                Ok(x) => paths.push(x),
                Err(e) => v.err(p.join("paths").join(j), e.to_string()),
            }
        }
        let mut methods = Vec::new();
        for (j, m) in r.methods.iter().enumerate() {
            let up = m.to_ascii_uppercase();
            match Method::from_bytes(up.as_bytes()) {
                Ok(x) if up == *m => methods.push(x),
                _ => v.err(p.join("methods").join(j), format!("{m:?} is not an upper-case HTTP method")),
            }
        }
        let mut headers = Vec::new();
        for (k, val) in &r.headers {
            let hp = p.join("headers").join(k.as_str());
            let Ok(name) = HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()) else {
                v.err(hp, format!("{k:?} is not a header name"));
                continue;
            };
            if let Some(value) = str_match(v, hp, val) {
                headers.push(HeaderMatch { name, value });
            }
        }
        let mut query = Vec::new();
        for (k, val) in &r.query {
            let qp = p.join("query").join(k.as_str());
            if let Some(value) = str_match(v, qp, val) {
                query.push(QueryMatch { name: k.clone(), value });
            }
        }
        let (mut http, mut https) = (true, true);
        if let Some(protos) = &r.protocols {
            http = false;
            https = false;
            for (j, pr) in protos.iter().enumerate() {
                match pr.as_str() {
                    "http" => http = true,
                    "https" => https = true,
                    o => v.err(p.join("protocols").join(j), format!("{o:?}: use http or https")),
                }
            }
            if protos.is_empty() {
                v.err(p.join("protocols"), "list at least one protocol");
            }
        }
        let rewrite = match &r.rewrite {
            None => None,
            Some(t) => match PathTemplate::parse(t) {
                Ok(tpl) => {
                    let known: HashSet<String> =
                        paths.iter().flat_map(|pp| pp.param_names()).map(str::to_string).collect();
                    for name in tpl.params() {
                        if !known.contains(name) {
                            v.err(
                                p.join("rewrite"),
                                format!("parameter {{{name}}} is not captured by any of the route's paths"),
                            );
                        }
                    }
                    Some(tpl)
                }
                Err(e) => {
                    v.err(p.join("rewrite"), e);
                    None
                }
            },
        };
        if rewrite.is_some() && r.strip_path == Some(true) {
            v.err(p.join("strip_path"), "`strip_path` and `rewrite` cannot be combined");
        }
        let auth_mode = match r.auth_mode.as_deref() {
            None | Some("any") => AuthMode::Any,
            Some("all") => AuthMode::All,
            Some(o) => {
                v.err(p.join("auth_mode"), format!("{o:?}: use any or all"));
                AuthMode::Any
            }
        };
        Route {
            name: r.name.clone(),
            service,
            hosts,
            paths,
            methods,
            headers,
            query,
            priority: r.priority.unwrap_or(0),
            http,
            https,
            strip_path: r.strip_path.unwrap_or(false),
            rewrite,
            preserve_host: r.preserve_host.unwrap_or(false),
            max_body_bytes: r.max_body_bytes.as_ref().map(|b| b.get()).unwrap_or(default_body),
            auth_mode,
            tracing: r.tracing.unwrap_or(true),
        }
    }
}

/// One route created, replaced or removed (see [`edit_route`]).
#[derive(Debug, Clone, Copy)]
pub enum RouteEdit<'a> {
    /// Create the route of this name (appended), or replace it in place.
    Upsert(&'a FileRoute),
    /// Remove the route of this name.
    Remove(&'a str),
}

/// Where an edited route is, in the route lists before and after the edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteChange {
    /// The route at this index was replaced.
    Replaced(usize),
    /// A route was appended at this index.
    Added(usize),
    /// The route at this index was removed; later routes moved up one place.
    Removed(usize),
}

/// Apply one route edit to a validated configuration, checking only the route concerned: the
/// result is the configuration [`validate`] gives for the edited document (same checks, same
/// messages, same key paths), at a cost that does not grow with the number of routes. `hash`
/// is the new configuration's version hash.
///
/// `Ok(None)` means "validate the whole document instead": a removal of a route that plugin
/// instances are scoped to (the full validation reports them). Plugin entries that are
/// disabled are not in the model, so a caller that keeps the document checks those itself.
pub fn edit_route(
    cfg: &Config,
    edit: RouteEdit<'_>,
    hash: String,
) -> Result<Option<(Config, RouteChange)>, Vec<ValidationError>> {
    let position = |name: &str| cfg.routes.iter().position(|r| r.name == name);
    let mut next = cfg.clone();
    next.hash = hash;
    let change = match edit {
        RouteEdit::Upsert(r) => {
            let at = position(&r.name);
            let i = at.unwrap_or(cfg.routes.len());
            let p = kp!["routes", i];
            let mut v = V { errors: Vec::new(), base_dir: None };
            v.name(p.join("name"), &r.name, &mut HashSet::new(), "route");
            let services: HashMap<&str, usize> =
                cfg.services.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
            let route = Arc::new(route(&mut v, &p, r, &services, cfg.gateway.limits.max_body_bytes));
            if !v.errors.is_empty() {
                return Err(v.errors);
            }
            match at {
                Some(i) => {
                    next.routes[i] = route;
                    RouteChange::Replaced(i)
                }
                None => {
                    next.routes.push(route);
                    RouteChange::Added(i)
                }
            }
        }
        RouteEdit::Remove(name) => {
            let Some(i) = position(name) else {
                return Err(vec![ValidationError { path: kp!["routes"], message: format!("no route {name:?}") }]);
            };
            if cfg.plugins.iter().any(|p| p.route == Some(i)) {
                return Ok(None);
            }
            next.routes.remove(i);
            for p in &mut next.plugins {
                if let Some(r) = p.route.as_mut()
                    && *r > i
                {
                    *r -= 1;
                }
            }
            RouteChange::Removed(i)
        }
    };
    Ok(Some((next, change)))
}

/// SHA-256 of an API key, as stored.
pub fn hash_api_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Hash a password with argon2id (PHC string), as stored for basic-auth.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

const JWT_ALGORITHMS: &[&str] =
    &["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

fn consumers(v: &mut V, cs: &[FileConsumer]) -> Vec<Consumer> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    let mut custom_ids = HashSet::new();
    let mut keys: HashSet<[u8; 32]> = HashSet::new();
    let mut basic = HashSet::new();
    let mut jwt = HashSet::new();
    let mut hmac = HashSet::new();
    let mut mtls = HashSet::new();
    for (i, c) in cs.iter().enumerate() {
        let p = kp!["consumers", i];
        v.name(p.join("username"), &c.username, &mut names, "consumer");
        if let Some(id) = &c.custom_id
            && !custom_ids.insert(id.clone())
        {
            v.err(p.join("custom_id"), format!("duplicate custom_id {id:?}"));
        }
        let mut credentials = Vec::new();
        for (j, cred) in c.credentials.iter().enumerate() {
            let cp = p.join("credentials").join(j);
            match cred {
                FileCredential::KeyAuth { id, key, key_hash } => {
                    let hash = match (key, key_hash) {
                        (Some(k), None) => {
                            if k.expose().len() < 8 {
                                v.err(cp.join("key"), "API keys must be at least 8 characters");
                            }
                            Some(hash_api_key(k.expose()))
                        }
                        (None, Some(h)) => parse_sha256(h).or_else(|| {
                            v.err(cp.join("key_hash"), "expected sha256:<64 hex digits>");
                            None
                        }),
                        _ => {
                            v.err(cp.clone(), "give exactly one of `key` and `key_hash`");
                            None
                        }
                    };
                    if let Some(h) = hash {
                        if !keys.insert(h) {
                            v.err(cp.clone(), "this API key is already used by another credential");
                        }
                        let id = id.clone().unwrap_or_else(|| format!("{}:key-auth:{j}", c.username));
                        credentials.push(Credential::KeyAuth { id, key_sha256: h });
                    }
                }
                FileCredential::BasicAuth { username, password, password_hash } => {
                    if username.is_empty() || username.contains(':') {
                        v.err(cp.join("username"), "must be non-empty and must not contain ':'");
                    }
                    if !basic.insert(username.clone()) {
                        v.err(cp.join("username"), format!("basic-auth user {username:?} is already defined"));
                    }
                    let hash = match (password, password_hash) {
                        (Some(pw), None) => match hash_password(pw.expose()) {
                            Ok(h) => Some(h),
                            Err(e) => {
                                v.err(cp.join("password"), format!("cannot hash: {e}"));
                                None
                            }
                        },
                        (None, Some(h)) => {
                            if argon2::PasswordHash::new(h).is_err() || !h.starts_with("$argon2") {
                                v.err(cp.join("password_hash"), "expected an argon2 PHC string ($argon2id$...)");
                                None
                            } else {
                                Some(h.clone())
                            }
                        }
                        _ => {
                            v.err(cp.clone(), "give exactly one of `password` and `password_hash`");
                            None
                        }
                    };
                    if let Some(password_hash) = hash {
                        credentials.push(Credential::BasicAuth { username: username.clone(), password_hash });
                    }
                }
                FileCredential::Jwt { key, algorithm, secret, public_key } => {
                    if !JWT_ALGORITHMS.contains(&algorithm.as_str()) {
                        v.err(cp.join("algorithm"), format!("{algorithm:?}: use one of {}", JWT_ALGORITHMS.join(", ")));
                    } else if algorithm.starts_with("HS") {
                        if secret.is_none() || public_key.is_some() {
                            v.err(cp.clone(), format!("{algorithm} needs `secret` (and no `public_key`)"));
                        } else if secret.as_ref().is_some_and(|s| s.expose().len() < 32) {
                            v.err(cp.join("secret"), "HMAC secrets must be at least 32 bytes");
                        }
                    } else if public_key.is_none() || secret.is_some() {
                        v.err(cp.clone(), format!("{algorithm} needs `public_key` (and no `secret`)"));
                    } else if public_key.as_ref().is_some_and(|k| !k.contains("-----BEGIN")) {
                        v.err(cp.join("public_key"), "expected a PEM public key");
                    }
                    if !jwt.insert(key.clone()) {
                        v.err(cp.join("key"), format!("jwt key {key:?} is already defined"));
                    }
                    credentials.push(Credential::Jwt {
                        key: key.clone(),
                        algorithm: algorithm.clone(),
                        secret: secret.clone(),
                        public_key: public_key.clone(),
                    });
                }
                FileCredential::HmacAuth { username, secret } => {
                    if !hmac.insert(username.clone()) {
                        v.err(cp.join("username"), format!("hmac-auth user {username:?} is already defined"));
                    }
                    if secret.expose().len() < 16 {
                        v.err(cp.join("secret"), "HMAC secrets must be at least 16 characters");
                    }
                    credentials.push(Credential::HmacAuth { username: username.clone(), secret: secret.clone() });
                }
                FileCredential::Mtls { subject_name } => {
                    if !mtls.insert(subject_name.clone()) {
                        v.err(cp.join("subject_name"), format!("mtls subject {subject_name:?} is already mapped"));
                    }
                    credentials.push(Credential::Mtls { subject_name: subject_name.clone() });
                }
            }
        }
        out.push(Consumer {
            username: c.username.clone(),
            custom_id: c.custom_id.clone(),
            groups: c.groups.clone(),
            tags: c.tags.clone(),
            credentials,
        });
    }
    out
}

fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    let h = s.strip_prefix("sha256:")?;
    if h.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in h.as_bytes().chunks(2).enumerate() {
        let hexv = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(hexv, 16).ok()?;
    }
    Some(out)
}

/// `grpc-web` and `grpc-transcode` call a gRPC upstream: a route or service they are scoped to
/// must proxy over HTTP/2 (`grpc://`, `grpcs://`, `h2c://`, `h2://`).
fn grpc_plugin_scopes(v: &mut V, file: &FileConfig, services: &[Service], routes: &[Arc<Route>]) {
    for (i, pl) in file.plugins.iter().enumerate() {
        if !matches!(pl.config, PluginConfig::GrpcWeb(_) | PluginConfig::GrpcTranscode(_)) {
            continue;
        }
        let scope = if let Some(r) = &pl.route {
            file.routes.iter().position(|x| &x.name == r).and_then(|i| routes.get(i)).map(|r| ("route", r.service))
        } else if let Some(s) = &pl.service {
            file.services.iter().position(|x| &x.name == s).map(|i| ("service", i))
        } else {
            None
        };
        let Some((key, service)) = scope else { continue };
        let http2 = match services.get(service).map(|s| &s.kind) {
            Some(ServiceKind::Proxy(t)) => t.protocol.is_http2(),
            _ => false,
        };
        if !http2 {
            let name = services.get(service).map_or("", |s| s.name.as_str());
            v.err(
                kp!["plugins", i, key],
                format!(
                    "{} needs a service that proxies over HTTP/2 to a gRPC upstream (url grpc://, grpcs://, h2c:// or h2://); service {name:?} does not",
                    pl.config.plugin_name()
                ),
            );
        }
    }
}

fn plugins(v: &mut V, file: &FileConfig) -> Vec<Plugin> {
    let idx = |names: Vec<&str>| -> HashMap<String, usize> {
        names.into_iter().enumerate().map(|(i, n)| (n.to_string(), i)).collect()
    };
    let routes = idx(file.routes.iter().map(|r| r.name.as_str()).collect());
    let services = idx(file.services.iter().map(|r| r.name.as_str()).collect());
    let consumers = idx(file.consumers.iter().map(|r| r.username.as_str()).collect());
    let mut out = Vec::new();
    let mut instances = HashSet::new();
    let mut scopes = HashSet::new();
    for (i, pl) in file.plugins.iter().enumerate() {
        let p = kp!["plugins", i];
        let instance = pl.instance_name();
        if !instances.insert(instance.clone()) {
            v.err(p.join("name"), format!("duplicate plugin instance name {instance:?}"));
        }
        let mut resolve = |key: &str, name: &Option<String>, map: &HashMap<String, usize>| {
            name.as_ref().and_then(|n| {
                let r = map.get(n).copied();
                if r.is_none() {
                    v.err(p.join(key), format!("unknown {key} {n:?}"));
                }
                r
            })
        };
        let route = resolve("route", &pl.route, &routes);
        let service = resolve("service", &pl.service, &services);
        let consumer = resolve("consumer", &pl.consumer, &consumers);
        if let Err(e) = pl.config.validate_with(&crate::plugins::SchemaContext { base_dir: v.base_dir.clone() }) {
            v.err(p.join("config").extend_dotted(&e.path), e.message);
        }
        if let Some(anon) = pl.config.anonymous_consumer()
            && !consumers.contains_key(anon)
        {
            v.err(p.join("config").join("anonymous"), format!("unknown consumer {anon:?}"));
        }
        if pl.consumer.is_some() && pl.config.is_auth() {
            v.err(p.join("consumer"), "an authentication plugin cannot be scoped to a consumer");
        }
        if !scopes.insert((pl.config.plugin_name(), pl.route.clone(), pl.service.clone(), pl.consumer.clone()))
            && pl.enabled != Some(false)
        {
            v.err(p.clone(), format!("plugin {} is already configured for this scope", pl.config.plugin_name()));
        }
        if pl.enabled == Some(false) {
            continue;
        }
        // The model's files are absolute: plugins read them when they are built.
        let mut config = pl.config.clone();
        for (_, f) in config.file_paths_mut() {
            *f = v.resolve(f).to_string_lossy().into_owned();
        }
        out.push(Plugin { instance, route, service, consumer, config });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dotted schema paths are appended to a key path, indices included.
    #[test]
    fn dotted_paths_extend() {
        let p = kp!["plugins", 3, "config"].extend_dotted("origins[2].x");
        assert_eq!(p.to_string(), "plugins[3].config.origins[2].x");
    }

    /// host:port parsing covers names, IPv4, bracketed IPv6 and errors.
    #[test]
    fn host_port_parsing() {
        assert_eq!(parse_host_port("a.example:80").unwrap(), ("a.example".into(), 80));
        assert_eq!(parse_host_port("[::1]:8080").unwrap(), ("::1".into(), 8080));
        assert!(parse_host_port("::1:80").is_err());
        assert!(parse_host_port("host").is_err());
        assert!(parse_host_port("host:0").is_err());
        assert!(parse_host_port("bad host:80").is_err());
    }

    /// `gateway.usage.store: redis` needs a single Redis; its prefix has no braces; the other
    /// stores take no prefix.
    #[test]
    fn usage_store_on_redis() {
        let check = |gateway: &str| {
            let file = crate::parse_yaml(&format!("gateway:\n{gateway}"), "gw.yaml", Default::default()).unwrap();
            validate(&file, &ValidateOptions::default())
                .map(|c| (c.gateway.usage.store, c.gateway.usage.key_prefix.clone()))
                .map_err(|errs| errs.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>())
        };
        let redis = "  redis: { url: \"redis://127.0.0.1:6379\" }\n";
        assert_eq!(
            check(&format!("{redis}  usage: {{ store: redis, key_prefix: \"t-1\" }}\n")),
            Ok((UsageStore::Redis, "t-1".to_string()))
        );
        assert_eq!(check(&format!("{redis}  usage: {{ store: redis }}\n")).unwrap().1, DEFAULT_USAGE_PREFIX);
        assert!(check("  usage: { store: redis }\n").unwrap_err()[0].starts_with("gateway.usage.store: `redis` needs"));
        let cluster = "  redis: { cluster_urls: [\"redis://127.0.0.1:7000\"] }\n  usage: { store: redis }\n";
        assert!(check(cluster).unwrap_err()[0].contains("not a Redis Cluster"));
        assert!(
            check(&format!("{redis}  usage: {{ store: mongo }}\n")).unwrap_err()[0].contains("unknown usage store")
        );
        assert!(check(&format!("{redis}  usage: {{ store: redis, key_prefix: \"a{{b}}\" }}\n")).is_err());
        assert!(check("  usage: { key_prefix: p }\n").unwrap_err()[0].contains("only used with `store: redis`"));
        assert!(check(&format!("{redis}  usage: {{ store: redis, path: u }}\n")).is_err());
    }

    /// Relative paths kept in the model (Redis CA, Admin API TLS, a file access log) are
    /// resolved against the configuration's directory like the files read at validation, and
    /// a missing one is an error naming its key.
    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let dir = std::env::temp_dir().join(format!("gw-config-paths-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tls")).unwrap();
        for f in ["tls/ca.pem", "tls/admin.crt", "tls/admin.key", "tls/clients.pem"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let yaml = "gateway:\n  access_log: { target: logs/access.log }\n  redis: { url: \"rediss://127.0.0.1:1\", ca_file: tls/ca.pem }\n  admin:\n    tls: { cert_file: tls/admin.crt, key_file: tls/admin.key, client_ca_file: tls/clients.pem }\n";
        let mut file = crate::parse_yaml(yaml, "gw.yaml", Default::default()).unwrap();
        let opts = ValidateOptions { base_dir: Some(dir.clone()), hash: None };
        let cfg = validate(&file, &opts).unwrap();
        let g = &cfg.gateway;
        assert_eq!(g.redis.as_ref().and_then(|r| r.ca_file.clone()), Some(dir.join("tls/ca.pem")));
        let t = g.admin_tls.as_ref().unwrap();
        assert_eq!((t.cert_file.clone(), t.key_file.clone()), (dir.join("tls/admin.crt"), dir.join("tls/admin.key")));
        assert_eq!(t.client_ca_file, Some(dir.join("tls/clients.pem")));
        assert_eq!(g.access_log.target, LogTarget::File(dir.join("logs/access.log")));
        // Without the directory (the working directory is elsewhere) the files are missing,
        // and each is reported with its key.
        let errs = validate(&file, &ValidateOptions::default()).unwrap_err();
        let keys: Vec<String> = errs.iter().map(|e| e.path.to_string()).collect();
        assert_eq!(
            keys,
            [
                "gateway.redis.ca_file",
                "gateway.admin.tls.cert_file",
                "gateway.admin.tls.key_file",
                "gateway.admin.tls.client_ca_file"
            ],
            "{errs:?}"
        );
        // An imported document gets absolute paths, valid from any working directory.
        file.resolve_paths(&dir);
        assert!(file.file_paths_mut().iter().all(|(_, p)| Path::new(p.as_str()).is_absolute()));
        let cfg = validate(&file, &ValidateOptions::default()).unwrap();
        assert_eq!(cfg.gateway.access_log.target, LogTarget::File(dir.join("logs/access.log")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every file-valued key is listed once, so imports resolve all of them.
    #[test]
    fn every_file_path_is_listed() {
        let yaml = "gateway:\n  access_log: { target: a }\n  usage: { path: u }\n  redis: { ca_file: b }\n  admin: { tls: { cert_file: c, key_file: d, client_ca_file: e } }\nlisteners:\n  - { name: l, address: \"127.0.0.1:1\", tls: { client_ca_file: f } }\ncertificates:\n  - { name: c, cert_file: g, key_file: h }\nservices:\n  - { name: s, url: \"https://x:1\", tls: { ca_file: i, client_cert_file: j, client_key_file: k } }\n";
        let mut file = crate::parse_yaml(yaml, "gw.yaml", Default::default()).unwrap();
        let listed: Vec<String> = file.file_paths_mut().into_iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(listed, ["c", "d", "e", "b", "a", "u", "f", "g", "h", "i", "j", "k"]);
        file.resolve_paths(Path::new("/etc/gw"));
        let json = serde_json::to_string(&file).unwrap();
        for k in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "u"] {
            assert!(json.contains(&format!("\"/etc/gw/{k}\"")), "{k}: {json}");
        }
    }

    /// Key hashes in sha256:<hex> form are parsed, others rejected.
    #[test]
    fn sha256_hashes() {
        let h = hash_api_key("secret-key-1");
        let text = format!("sha256:{}", hex(&h));
        assert_eq!(parse_sha256(&text), Some(h));
        assert_eq!(parse_sha256("sha256:zz"), None);
        assert_eq!(parse_sha256(&hex(&h)), None);
    }
}
