//! The validated configuration model: every default filled in, every reference resolved to an
//! index, every pattern parsed, every secret hashed. Built only by [`crate::validate()`]; the
//! proxy compiles it into its runtime snapshot and never sees the file format.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;

use crate::plugins::PluginConfig;
use crate::template::PathTemplate;
use crate::value::Secret;

pub use gw_router::{HeaderMatch, HostPattern, PathPattern, QueryMatch, StrMatch};

/// A complete, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Process-wide settings.
    pub gateway: Gateway,
    /// Listeners.
    pub listeners: Vec<Listener>,
    /// Certificates.
    pub certificates: Vec<Certificate>,
    /// Upstreams, including one implicit upstream per service declared with `url`.
    pub upstreams: Vec<Upstream>,
    /// Services.
    pub services: Vec<Service>,
    /// Routes, in declaration order (shared: an edited configuration copies pointers).
    pub routes: Vec<Arc<Route>>,
    /// Plugin instances.
    pub plugins: Vec<Plugin>,
    /// Consumers.
    pub consumers: Vec<Consumer>,
    /// SHA-256 (hex) of the canonical JSON form of `source`: the configuration version hash.
    pub hash: String,
}

/// Process-wide settings.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// Node id.
    pub node_id: String,
    /// `/metrics` and `/health`.
    pub status_listener: Option<SocketAddr>,
    /// Admin API.
    pub admin_listener: Option<SocketAddr>,
    /// TLS (and mutual TLS) of the Admin API.
    pub admin_tls: Option<AdminTls>,
    /// Proxies trusted for `X-Forwarded-For` / `Forwarded`.
    pub trusted_proxies: Vec<IpNet>,
    /// Request id header.
    pub request_id_header: HeaderName,
    /// Access log.
    pub access_log: AccessLog,
    /// Downstream limits.
    pub limits: Limits,
    /// Graceful shutdown time.
    pub shutdown_timeout: Duration,
    /// Worker threads, if fixed.
    pub worker_threads: Option<usize>,
    /// Redis for cluster-wide plugin state.
    pub redis: Option<Redis>,
    /// Usage analytics and local quota persistence.
    pub usage: UsageSettings,
    /// OpenTelemetry tracing (`None`: off).
    pub tracing: Option<Tracing>,
}

/// OpenTelemetry tracing settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// OTLP endpoint (for `http`, the full URL spans are posted to).
    pub endpoint: String,
    /// Export protocol.
    pub protocol: OtlpProtocol,
    /// Share of new traces sampled (parent-based otherwise).
    pub sample_ratio: f64,
    /// Trace context header format.
    pub propagation: Propagation,
    /// `service.name`.
    pub service_name: String,
    /// Export queue bound (spans).
    pub queue_size: usize,
    /// Most spans per export.
    pub batch_size: usize,
    /// Longest wait before a partial batch goes out.
    pub export_interval: Duration,
    /// Time allowed for one export, its retries included.
    pub export_timeout: Duration,
    /// TLS towards the collector (an `https://` endpoint).
    pub tls: Option<UpstreamTls>,
    /// Headers sent with every export.
    pub headers: Vec<(HeaderName, Secret)>,
    /// Export requests gzip-compressed.
    pub gzip: bool,
}

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    Http,
}

/// Trace context header format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// W3C Trace Context (`traceparent`, `tracestate`).
    W3c,
    /// Zipkin B3, single `b3` header.
    B3,
    /// Zipkin B3, `X-B3-TraceId` / `X-B3-SpanId` / `X-B3-Sampled` headers.
    B3Multi,
}

/// Usage analytics settings.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageSettings {
    /// Period of the batched writes to the store.
    pub flush_interval: Duration,
    /// How long hourly figures are kept.
    pub retention: Duration,
    /// How long per-minute figures are kept.
    pub minute_retention: Duration,
    /// File mode: directory of `usage.redb` (`None`: in memory only).
    pub path: Option<PathBuf>,
    /// Where usage and local quota counters are kept when not in the configuration store's
    /// default place.
    pub store: UsageStore,
    /// Prefix of the usage keys in Redis (`store: redis`).
    pub key_prefix: String,
}

/// The usage store chosen in `gateway.usage.store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UsageStore {
    /// The configuration store's (embedded or PostgreSQL with `--store`), else
    /// `gateway.usage.path`, else memory.
    #[default]
    Default,
    /// The Redis of `gateway.redis` (shared by every node).
    Redis,
}

/// Default prefix of usage keys in Redis.
pub const DEFAULT_USAGE_PREFIX: &str = "gh:usage";

impl Default for UsageSettings {
    fn default() -> Self {
        UsageSettings {
            flush_interval: Duration::from_secs(2),
            retention: Duration::from_secs(400 * 86_400),
            minute_retention: Duration::from_secs(2 * 86_400),
            path: None,
            store: UsageStore::Default,
            key_prefix: DEFAULT_USAGE_PREFIX.to_string(),
        }
    }
}

/// TLS of the Admin API listener.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminTls {
    /// Certificate chain PEM file.
    pub cert_file: std::path::PathBuf,
    /// Private key PEM file.
    pub key_file: std::path::PathBuf,
    /// Client CA PEM file (mutual TLS).
    pub client_ca_file: Option<std::path::PathBuf>,
}

/// Redis connection settings.
#[derive(Debug, Clone)]
pub struct Redis {
    /// Single-node URL, or the cluster seed URLs.
    pub urls: Vec<Secret>,
    /// Whether `urls` are Redis Cluster seeds.
    pub cluster: bool,
    /// Per-command timeout.
    pub timeout: Duration,
    /// CA certificates (PEM) that sign the server certificate of a `rediss://` Redis, instead of
    /// the system roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Access log settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLog {
    /// Whether requests are logged.
    pub enabled: bool,
    /// Where lines go.
    pub target: LogTarget,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq)]
pub enum LogTarget {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Appended to a file.
    File(PathBuf),
}

/// Downstream limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Longest URI in bytes.
    pub max_uri_bytes: usize,
    /// Default largest body; 0 = unlimited.
    pub max_body_bytes: u64,
    /// Time to receive a request head.
    pub header_read_timeout: Duration,
    /// Longest pause between two reads of a request body.
    pub body_read_timeout: Duration,
    /// Idle keep-alive time.
    pub idle_timeout: Duration,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Most HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 client stream resets tolerated beyond completed streams per window.
    pub http2_max_resets: u32,
    /// Window of `http2_max_resets`.
    pub http2_reset_window: Duration,
    /// Most response bodies read in the background after their client left (cache fills).
    pub max_detached_reads: usize,
    /// Longest such a background read lasts.
    pub detached_read_timeout: Duration,
}

/// A listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Name.
    pub name: String,
    /// Bind address.
    pub address: SocketAddr,
    /// Accept HTTP/2.
    pub http2: bool,
    /// TLS termination.
    pub tls: Option<ListenerTls>,
    /// Redirect everything to HTTPS on this port.
    pub redirect_https_port: Option<u16>,
}

/// TLS termination settings of a listener.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// Indices into [`Config::certificates`].
    pub certificates: Vec<usize>,
    /// Index of the certificate used without (or with an unknown) SNI.
    pub default_certificate: usize,
    /// Only TLS 1.3.
    pub tls13_only: bool,
    /// PEM CA bundle for client certificates.
    pub client_ca_pem: Option<Vec<u8>>,
    /// Client certificate mandatory.
    pub client_cert_required: bool,
}

/// A certificate and its key, PEM encoded.
#[derive(Debug, Clone)]
pub struct Certificate {
    /// Name.
    pub name: String,
    /// PEM chain.
    pub cert_pem: Vec<u8>,
    /// PEM key.
    pub key_pem: Secret,
    /// Server names (lowercase; `*.` wildcards allowed).
    pub snis: Vec<String>,
}

/// Load-balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Fewest in-flight requests per weight.
    LeastConnections,
    /// Consistent hashing on [`HashOn`].
    ConsistentHash,
    /// Power of two choices by EWMA latency.
    Ewma,
}

/// Consistent-hash key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// A request header.
    Header(HeaderName),
    /// A cookie.
    Cookie(String),
    /// The client IP.
    ClientIp,
}

/// An upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Name (the service name for implicit upstreams).
    pub name: String,
    /// Balancing algorithm.
    pub algorithm: Algorithm,
    /// Hash key for consistent hashing.
    pub hash_on: Option<HashOn>,
    /// Targets.
    pub targets: Vec<Target>,
    /// Active checks.
    pub active_health: Option<ActiveHealth>,
    /// Passive checks.
    pub passive_health: Option<PassiveHealth>,
    /// Circuit breaker.
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Connection cap per target.
    pub max_connections_per_target: Option<u32>,
    /// Idle connections kept per target.
    pub max_idle_per_target: usize,
    /// Idle connection lifetime.
    pub idle_timeout: Duration,
    /// Generated from a service's `url`.
    pub implicit: bool,
}

/// A target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Weight.
    pub weight: u32,
}

impl Target {
    /// `host:port` with IPv6 hosts bracketed.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Active health check.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveHealth {
    /// Probe path.
    pub path: String,
    /// Probe Host header.
    pub host: Option<String>,
    /// Probe interval.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
    /// Successes to become healthy.
    pub healthy_threshold: u32,
    /// Failures to become unhealthy.
    pub unhealthy_threshold: u32,
    /// Healthy statuses (empty = 200..=399).
    pub healthy_statuses: Vec<u16>,
}

/// Passive health check.
#[derive(Debug, Clone, PartialEq)]
pub struct PassiveHealth {
    /// Consecutive failures to eject.
    pub consecutive_failures: u32,
    /// First ejection time.
    pub ejection_time: Duration,
    /// Ejection cap.
    pub max_ejection_time: Duration,
    /// Upstream statuses counted as failures.
    pub failure_statuses: Vec<u16>,
}

/// Circuit breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreaker {
    /// Failure ratio that opens it.
    pub failure_ratio: f64,
    /// Minimum requests in the window.
    pub min_requests: u32,
    /// Rolling window.
    pub window: Duration,
    /// Open time.
    pub open_duration: Duration,
    /// Half-open trial requests.
    pub half_open_requests: u32,
}

/// A service.
#[derive(Debug, Clone)]
pub struct Service {
    /// Name.
    pub name: String,
    /// What it does.
    pub kind: ServiceKind,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Retries.
    pub retries: Retries,
}

/// What a service does.
#[derive(Debug, Clone)]
pub enum ServiceKind {
    /// Proxy to an upstream.
    Proxy(ProxyTarget),
    /// Answer with a JSON description of the request.
    Echo,
    /// Answer with a fixed response.
    Static(StaticResponse),
    /// Fan the request out to several backend calls and merge their JSON answers.
    Aggregate(std::sync::Arc<gw_aggregate::Plan>),
}

/// Where a proxy service sends requests.
#[derive(Debug, Clone)]
pub struct ProxyTarget {
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Wire protocol.
    pub protocol: UpstreamProtocol,
    /// TLS settings (for TLS protocols).
    pub tls: Option<UpstreamTls>,
    /// Path prefix prepended upstream (`""` or `/x` without trailing slash).
    pub path_prefix: String,
}

/// Wire protocol towards an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 in clear text.
    Http1,
    /// HTTP/2 with prior knowledge in clear text (also `grpc`).
    H2c,
    /// HTTP/1.1 over TLS.
    Https,
    /// HTTP/2 over TLS (also `grpcs`).
    H2,
}

impl UpstreamProtocol {
    /// Whether TLS is used.
    pub fn is_tls(self) -> bool {
        matches!(self, UpstreamProtocol::Https | UpstreamProtocol::H2)
    }

    /// Whether HTTP/2 is used.
    pub fn is_http2(self) -> bool {
        matches!(self, UpstreamProtocol::H2c | UpstreamProtocol::H2)
    }
}

/// Upstream TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    /// Verify the certificate.
    pub verify: bool,
    /// CA bundle (PEM); `None` = system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// SNI / verified name override.
    pub sni: Option<String>,
    /// Client certificate chain and key (PEM).
    pub client_cert: Option<(Vec<u8>, Secret)>,
}

/// A fixed response.
#[derive(Debug, Clone)]
pub struct StaticResponse {
    /// Status.
    pub status: http::StatusCode,
    /// Body.
    pub body: String,
    /// Headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Upstream timeouts.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    /// Connect (TCP + TLS).
    pub connect: Duration,
    /// Response head wait and body stall.
    pub read: Duration,
    /// Request body stall.
    pub write: Duration,
    /// Budget to the response head across retries.
    pub total: Option<Duration>,
}

/// Retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Retries {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Statuses retried for idempotent requests.
    pub on_statuses: Vec<u16>,
    /// Budget ratio.
    pub budget_ratio: f64,
    /// Budget floor per second.
    pub budget_min_per_second: u32,
}

/// How several auth plugins on one route combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// The first plugin that authenticates wins.
    Any,
    /// Every auth plugin must succeed.
    All,
}

/// A route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Name.
    pub name: String,
    /// Index into [`Config::services`].
    pub service: usize,
    /// Host patterns.
    pub hosts: Vec<HostPattern>,
    /// Path patterns.
    pub paths: Vec<PathPattern>,
    /// Methods.
    pub methods: Vec<Method>,
    /// Header conditions.
    pub headers: Vec<HeaderMatch>,
    /// Query conditions.
    pub query: Vec<QueryMatch>,
    /// Priority.
    pub priority: i32,
    /// Matches clear-text listeners.
    pub http: bool,
    /// Matches TLS listeners.
    pub https: bool,
    /// Strip the matched prefix.
    pub strip_path: bool,
    /// Path rewrite.
    pub rewrite: Option<PathTemplate>,
    /// Keep the client's Host.
    pub preserve_host: bool,
    /// Body limit; 0 = unlimited.
    pub max_body_bytes: u64,
    /// Auth combination.
    pub auth_mode: AuthMode,
    /// Requests of this route are traced (when `gateway.tracing` is on).
    pub tracing: bool,
}

/// A plugin instance.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// Unique instance name.
    pub instance: String,
    /// Scope: route index.
    pub route: Option<usize>,
    /// Scope: service index.
    pub service: Option<usize>,
    /// Scope: consumer index.
    pub consumer: Option<usize>,
    /// Config.
    pub config: PluginConfig,
}

/// A consumer.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// User name.
    pub username: String,
    /// External id.
    pub custom_id: Option<String>,
    /// ACL groups.
    pub groups: Vec<String>,
    /// Labels.
    pub tags: Vec<String>,
    /// Credentials.
    pub credentials: Vec<Credential>,
}

/// A validated credential. Keys and passwords are held only as hashes.
#[derive(Debug, Clone)]
pub enum Credential {
    /// API key.
    KeyAuth {
        /// Identifier sent upstream.
        id: String,
        /// SHA-256 of the key.
        key_sha256: [u8; 32],
    },
    /// Basic auth.
    BasicAuth {
        /// User name.
        username: String,
        /// argon2 PHC string.
        password_hash: String,
    },
    /// JWT issuer key.
    Jwt {
        /// Selector claim value.
        key: String,
        /// Algorithm name.
        algorithm: String,
        /// HMAC secret.
        secret: Option<Secret>,
        /// PEM public key.
        public_key: Option<String>,
    },
    /// HMAC key.
    HmacAuth {
        /// Key id.
        username: String,
        /// Secret.
        secret: Secret,
    },
    /// mTLS identity.
    Mtls {
        /// Subject CN or SAN.
        subject_name: String,
    },
}
