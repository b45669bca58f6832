//! The on-disk (and Admin API) configuration format: plain serde types, unknown keys rejected.
//!
//! These types describe what an operator writes. They hold no defaults: an absent key stays
//! `None`, so exporting a configuration writes back what was written. [`crate::validate`] turns a
//! [`FileConfig`] into the validated [`crate::model::Config`], filling in defaults and resolving
//! references by name. See `docs/configuration.md` for every key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plugins::FilePlugin;
use crate::value::{ByteSize, Dur, Secret};

/// A whole configuration document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Process-wide settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<FileGateway>,
    /// Where clients connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<FileListener>,
    /// TLS certificates, chosen by SNI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<FileCertificate>,
    /// Pools of targets with a balancing policy and health checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<FileUpstream>,
    /// Backends that routes send traffic to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<FileService>,
    /// Match rules that select a service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<FileRoute>,
    /// Plugin instances, global or scoped to a route, service or consumer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<FilePlugin>,
    /// API consumers and their credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<FileConsumer>,
}

impl FileConfig {
    /// Every file path of the document, as `(key path, path)`: the certificates and keys of
    /// `certificates[]`, listener, service and Admin API TLS, the Redis CA and a file access log.
    /// Relative paths are relative to the configuration file's directory.
    pub fn file_paths_mut(&mut self) -> Vec<(String, &mut String)> {
        let mut out: Vec<(String, &mut String)> = Vec::new();
        if let Some(g) = &mut self.gateway {
            if let Some(t) = g.admin.as_mut().and_then(|a| a.tls.as_mut()) {
                out.push(("gateway.admin.tls.cert_file".into(), &mut t.cert_file));
                out.push(("gateway.admin.tls.key_file".into(), &mut t.key_file));
                if let Some(f) = &mut t.client_ca_file {
                    out.push(("gateway.admin.tls.client_ca_file".into(), f));
                }
            }
            if let Some(f) = g.redis.as_mut().and_then(|r| r.ca_file.as_mut()) {
                out.push(("gateway.redis.ca_file".into(), f));
            }
            if let Some(f) = g.access_log.as_mut().and_then(|a| a.target.as_mut())
                && !matches!(f.as_str(), "stdout" | "stderr" | "")
            {
                out.push(("gateway.access_log.target".into(), f));
            }
            if let Some(f) = g.usage.as_mut().and_then(|u| u.path.as_mut()) {
                out.push(("gateway.usage.path".into(), f));
            }
        }
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if let Some(f) = l.tls.as_mut().and_then(|t| t.client_ca_file.as_mut()) {
                out.push((format!("listeners[{i}].tls.client_ca_file"), f));
            }
        }
        for (i, c) in self.certificates.iter_mut().enumerate() {
            if let Some(f) = &mut c.cert_file {
                out.push((format!("certificates[{i}].cert_file"), f));
            }
            if let Some(f) = &mut c.key_file {
                out.push((format!("certificates[{i}].key_file"), f));
            }
        }
        for (i, s) in self.services.iter_mut().enumerate() {
            if let Some(t) = &mut s.tls {
                for (k, f) in [
                    ("ca_file", &mut t.ca_file),
                    ("client_cert_file", &mut t.client_cert_file),
                    ("client_key_file", &mut t.client_key_file),
                ] {
                    if let Some(f) = f {
                        out.push((format!("services[{i}].tls.{k}"), f));
                    }
                }
            }
        }
        for (i, p) in self.plugins.iter_mut().enumerate() {
            for (k, f) in p.config.file_paths_mut() {
                out.push((format!("plugins[{i}].config.{k}"), f));
            }
        }
        out
    }

    /// Make every relative file path absolute against `base` (the configuration file's
    /// directory): a document imported into a store must not depend on the working directory of
    /// the nodes that read it.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        for (_, f) in self.file_paths_mut() {
            if std::path::Path::new(f.as_str()).is_relative() {
                *f = base.join(f.as_str()).to_string_lossy().into_owned();
            }
        }
    }
}

// === gateway ===

/// Process-wide settings (`gateway:`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileGateway {
    /// This node's id in logs, metrics and cluster status. Default: the host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Address of the status listener serving `/metrics` and `/health`. Default `127.0.0.1:9100`;
    /// `"off"` disables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_listener: Option<String>,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` headers are trusted for the client IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<String>>,
    /// Header carrying the request id. Default `x-request-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id_header: Option<String>,
    /// Access log settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<FileAccessLog>,
    /// Request limits and timeouts on the downstream side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<FileLimits>,
    /// How long SIGTERM waits for in-flight requests. Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_timeout: Option<Dur>,
    /// Number of worker threads. Default: the CPUs this process may run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<usize>,
    /// Admin API settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<FileAdmin>,
    /// Cluster-wide stores (e.g. Redis for rate limiting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<FileRedis>,
    /// Usage analytics and local quota counters: how often they are written to the durable
    /// store, and how long they are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<FileUsage>,
    /// OpenTelemetry tracing: spans per request and per upstream attempt, exported with OTLP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<FileTracing>,
}

/// OpenTelemetry tracing settings (`gateway.tracing`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileTracing {
    /// Default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// OTLP collector: `http://host:4317` for `grpc`; for `http`, the URL spans are posted to
    /// (`/v1/traces` is added to a URL without a path). Default `http://127.0.0.1:4317`
    /// (`grpc`) or `http://127.0.0.1:4318/v1/traces` (`http`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// `grpc` (default) or `http` (HTTP/protobuf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Share of new traces recorded, 0.0 to 1.0 (default 1.0). A request carrying a trace
    /// context follows its parent's decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_ratio: Option<f64>,
    /// Trace context headers read from clients and sent upstream: `w3c` (default,
    /// `traceparent`/`tracestate`), `b3` (single `b3` header) or `b3multi` (`X-B3-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<String>,
    /// `service.name` of the spans. Default `gatehouse`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Spans kept waiting for export; beyond this they are dropped (and counted). Default 2048.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<usize>,
    /// Most spans per export. Default 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Longest wait before a partial batch is exported. Default `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_interval: Option<Dur>,
    /// Time allowed for one export, its retries included. Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_timeout: Option<Dur>,
    /// TLS towards an `https://` endpoint, as a service's `tls` (`ca_file`, `verify`, `sni`,
    /// `client_cert_file` and `client_key_file` for mutual TLS). Default for `https://`: the
    /// system's roots, verified. Only with an `https://` endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<FileUpstreamTls>,
    /// Headers sent with every export (gRPC metadata, or HTTP headers), such as a collector's
    /// API key; write the value as `${ENV_VAR}` to keep it out of the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, Secret>>,
    /// Compression of export requests: `none` (default) or `gzip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
}

/// Usage analytics settings (`gateway.usage`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileUsage {
    /// How often the counters are written to the store (in one batch). Default `2s`; between
    /// `100ms` and `60s`. A crash loses at most this much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush_interval: Option<Dur>,
    /// How long hourly figures (hour, day and month reports) are kept. Default `400d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Dur>,
    /// How long per-minute figures are kept. Default `2d`; at most `retention`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minute_retention: Option<Dur>,
    /// Without `--store` (file mode): a directory for `usage.redb`, where usage and local quota
    /// counters are kept across restarts. Unset: they are kept in memory only. Ignored with
    /// `--store` (the store keeps them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `redis`: keep usage and local quota counters in the Redis of `gateway.redis`, shared by
    /// every node (in file mode and with `--store`). Unset: the configuration store's (with
    /// `--store`), else `path`, else memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// With `store: redis`: the prefix of the usage keys (default `gh:usage`; the keys are
    /// `{<prefix>}:...`, one Redis Cluster slot). Nodes that report one figure share it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

/// Admin API listener settings (`gateway.admin`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    /// Address of the Admin API. Default `127.0.0.1:9180`; `"off"` disables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Admin API tokens (`Authorization: Bearer <token>`), stored hashed. Without any, every
    /// Admin API request is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<FileAdminToken>,
    /// Serve the Admin API over TLS; with `client_ca_file`, clients must also present a
    /// certificate signed by that CA (mutual TLS) before any token is looked at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<FileAdminTls>,
}

/// TLS of the Admin API listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileAdminTls {
    /// Server certificate chain (PEM file).
    pub cert_file: String,
    /// Server private key (PEM file).
    pub key_file: String,
    /// CA certificates (PEM file) that client certificates must chain to (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
}

/// An Admin API token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileAdminToken {
    /// Label (logs, listing).
    pub name: String,
    /// `sha256:<64 hex digits>` of the token (`gatehouse hash-key` prints it).
    pub token_hash: String,
    /// `admin` (default) or `read_only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// Redis connection shared by plugins that keep cluster-wide state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileRedis {
    /// `redis://[:password@]host:port/db`, `rediss://` for TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
    /// Seed nodes of a Redis Cluster (`redis://host:port` each). Mutually exclusive with `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_urls: Option<Vec<Secret>>,
    /// Timeout of one Redis command. Default `100ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// CA certificates (PEM file) for `rediss://`, instead of the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

/// Access log settings (`gateway.access_log`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileAccessLog {
    /// Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `stdout` (default), `stderr`, or a file path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Downstream limits (`gateway.limits`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// Largest request head (request line plus headers). Default `32KiB`; at least 8KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<ByteSize>,
    /// Most request header fields. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_headers: Option<usize>,
    /// Longest request URI. Default `8KiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uri_bytes: Option<ByteSize>,
    /// Largest request body unless a route sets its own. Default `100MiB`; 0 = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<ByteSize>,
    /// Time allowed to receive a request head (slowloris). Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_read_timeout: Option<Dur>,
    /// Longest pause between two reads of a request body (the client sends nothing); the
    /// request gets `408` and the connection closes. Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_read_timeout: Option<Dur>,
    /// Idle keep-alive time before a connection is closed. Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Dur>,
    /// Most simultaneous downstream connections per process. Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Most concurrent HTTP/2 streams per connection. Default 128.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
    /// HTTP/2 stream resets by the client beyond the streams completed, per connection and
    /// `http2_reset_window`, before GOAWAY ENHANCE_YOUR_CALM (rapid reset). Default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_resets: Option<u32>,
    /// Window of `http2_max_resets`. Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_reset_window: Option<Dur>,
    /// Most upstream response bodies read to their end in the background after their client
    /// left (so that a `proxy-cache` fill completes), per process; past it an abandoned body
    /// is dropped. Default 64; 0 = never read in the background; at most 100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_detached_reads: Option<usize>,
    /// Longest one such background read lasts in all, then the body is dropped. Default `60s`;
    /// 1ms to 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detached_read_timeout: Option<Dur>,
}

// === listeners ===

/// A listening socket (`listeners[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    /// Stable name.
    pub name: String,
    /// `ip:port` to bind, e.g. `0.0.0.0:8080` or `[::]:8443`.
    pub address: String,
    /// Accept HTTP/2 (h2c prior knowledge in clear text, ALPN `h2` over TLS). Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2: Option<bool>,
    /// Terminate TLS on this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<FileListenerTls>,
    /// Answer every request with a redirect to HTTPS on this port (clear-text listeners only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_https_port: Option<u16>,
}

/// TLS settings of a listener (`listeners[].tls`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileListenerTls {
    /// Names of the certificates offered; default all of them (selected by SNI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Vec<String>>,
    /// Certificate used when the client sends no SNI or an unknown one. Default: the first one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_certificate: Option<String>,
    /// `"1.2"` (default) or `"1.3"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    /// Request client certificates signed by these CAs (PEM file), for `mtls-auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
    /// Reject handshakes without a valid client certificate. Default `false` (the `mtls-auth`
    /// plugin decides per route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_required: Option<bool>,
}

// === certificates ===

/// A certificate with its key (`certificates[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileCertificate {
    /// Stable name.
    pub name: String,
    /// PEM certificate chain, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// PEM private key, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    /// Path of the PEM certificate chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// Path of the PEM private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Server names this certificate answers (`example.com`, `*.example.com`). Default: the
    /// certificate's DNS subject alternative names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snis: Option<Vec<String>>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

// === upstreams ===

/// A pool of targets (`upstreams[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    /// Stable name.
    pub name: String,
    /// `round-robin` (default, weighted), `least-connections`, `consistent-hash`, `ewma`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// Key for `consistent-hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<FileHashOn>,
    /// The targets.
    pub targets: Vec<FileTarget>,
    /// Active and passive health checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_checks: Option<FileHealthChecks>,
    /// Circuit breaker for the whole upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<FileCircuitBreaker>,
    /// Most open connections to one target. Default: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_target: Option<u32>,
    /// Most idle keep-alive connections kept per target. Default 128.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_idle_per_target: Option<usize>,
    /// How long an idle upstream connection is kept. Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Dur>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// What `consistent-hash` hashes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum FileHashOn {
    /// The value of this request header.
    Header(String),
    /// The value of this cookie.
    Cookie(String),
    /// The real client IP.
    ClientIp,
}

/// One target (`upstreams[].targets[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileTarget {
    /// `host:port`.
    pub address: String,
    /// Relative weight, default 100; 0 takes the target out of rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// Health checks (`upstreams[].health_checks`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileHealthChecks {
    /// Periodic HTTP probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<FileActiveHealth>,
    /// Ejection on consecutive failures of real traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<FilePassiveHealth>,
}

/// Active HTTP probe (`health_checks.active`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileActiveHealth {
    /// Path probed with GET. Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Host header of the probe. Default: the target address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Default `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Dur>,
    /// Default `2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Consecutive successes that make a target healthy. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    /// Consecutive failures that make a target unhealthy. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
    /// Statuses counted as healthy. Default 200-399.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_statuses: Option<Vec<u16>>,
}

/// Passive health (`health_checks.passive`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FilePassiveHealth {
    /// Consecutive failures that eject a target. Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// First ejection time; doubles on each re-ejection. Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ejection_time: Option<Dur>,
    /// Cap of the doubling. Default `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_time: Option<Dur>,
    /// Upstream statuses that count as failures. Default 502, 503, 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_statuses: Option<Vec<u16>>,
}

/// Circuit breaker (`upstreams[].circuit_breaker`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileCircuitBreaker {
    /// Failure ratio that opens the circuit. Default 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_ratio: Option<f64>,
    /// Requests needed in the window before the ratio counts. Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
    /// Rolling window. Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Dur>,
    /// How long the circuit stays open. Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_duration: Option<Dur>,
    /// Trial requests when half-open. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_requests: Option<u32>,
}

// === services ===

/// A backend (`services[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileService {
    /// Stable name.
    pub name: String,
    /// `proxy` (default), `echo` (answers with a JSON description of the request) or `static`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Shorthand for one target: `http://host:port/base-path` (`https://`, `h2c://`, `h2://`,
    /// `grpc://`, `grpcs://` also accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Name of an upstream (instead of `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// `http` (default), `https`, `h2c`, `h2`, `grpc` (= h2c), `grpcs` (= h2). Taken from `url`
    /// when given there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Path prefix prepended to the upstream request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Timeouts towards the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<FileTimeouts>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<FileRetries>,
    /// Upstream TLS settings for `https`, `h2` and `grpcs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<FileUpstreamTls>,
    /// Response of a `static` service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<FileStaticResponse>,
    /// Backend calls of an `aggregate` service (see `docs/aggregation.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<FileAggregate>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// An aggregate (`services[].aggregate`): one client request fanned out to several backend
/// calls whose JSON responses are merged. See `docs/aggregation.md`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileAggregate {
    /// The backend calls; `resp0` is the first.
    pub calls: Vec<FileAggregateCall>,
    /// Most calls in flight at once for one request. Default 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<usize>,
    /// Overall deadline of the aggregate. Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Largest backend response body (each). Default `1MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<ByteSize>,
    /// Header naming the failed optional calls. Default `X-Aggregate-Incomplete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete_header: Option<String>,
}

/// One backend call of an aggregate (`services[].aggregate.calls[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileAggregateCall {
    /// Name: metrics label, access log, `X-Aggregate-Incomplete`, `{resp.<name>...}`.
    pub name: String,
    /// A proxy service of this configuration (instead of `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A base URL `http://host:port/prefix` (instead of `service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Method. Default `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path template, optionally with a query: `/orders?user={resp0.account_id}`.
    pub path: String,
    /// More query parameters: name -> value template.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// Request header fields: name -> value template.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// `client` forwards the client's request body. Default: no body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// A JSON request body whose strings are templates (instead of `body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_body: Option<serde_json::Value>,
    /// Time limit of this call. Default: the aggregate's deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Whether the aggregate fails when this call fails. Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Largest response body. Default: the aggregate's `max_body_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<ByteSize>,
    /// Calls that must answer before this one starts (besides those its templates read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Extract this nested value of the response first (dotted path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Keep only these dotted paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Remove these dotted paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Renames: dotted path in the response -> dotted path in the result.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mapping: BTreeMap<String, String>,
    /// Put a JSON array response under this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrap: Option<String>,
    /// Flatten an array of arrays by one level. Default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flatten: Option<bool>,
    /// Put the result under this key instead of merging it at the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Upstream timeouts (`services[].timeouts`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    /// TCP (and TLS) connect. Default `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Dur>,
    /// Waiting for the response head, and the longest pause between response body chunks.
    /// Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Dur>,
    /// Longest stall while sending the request body. Default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<Dur>,
    /// Whole budget from the first attempt to the response head, across retries. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Dur>,
}

/// Retries (`services[].retries`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileRetries {
    /// Retries after the first attempt. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Upstream statuses that trigger a retry of idempotent requests. Default 502, 503, 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_statuses: Option<Vec<u16>>,
    /// Fraction of requests that may be retries. Default 0.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_ratio: Option<f64>,
    /// Retries always allowed per second regardless of the ratio. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_min_per_second: Option<u32>,
}

/// Upstream TLS (`services[].tls`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileUpstreamTls {
    /// Verify the upstream certificate. Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<bool>,
    /// CA bundle (PEM file) for verification; default: the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// SNI and verified name; default: the target host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Client certificate (PEM file) presented to the upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<String>,
    /// Client key (PEM file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<String>,
}

/// Response of a `static` service (`services[].response`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileStaticResponse {
    /// Default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Body text. Default empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Response headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

// === routes ===

/// A route (`routes[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    /// Stable name.
    pub name: String,
    /// Service that receives matched requests.
    pub service: String,
    /// Host patterns: `api.example.com`, `*.example.com`. Empty = any host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Path patterns: `/exact`, `/prefix/*`, `/users/{id}`, `/files/{*rest}`, `~regex`.
    /// Empty = every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Methods. Empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Header conditions: name -> value (`~regex` for a regex, `"*"` for present).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Query parameter conditions: name -> value (`~regex`, `"*"` for present).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// Tie-break between routes with the same path pattern; higher first. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Only match these listener protocols: `http`, `https`. Default both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<String>>,
    /// Remove the matched path prefix before proxying. Default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_path: Option<bool>,
    /// Replace the upstream path with this template (`/v2/users/{id}`; `{*rest}` too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
    /// Send the client's Host header upstream instead of the target's. Default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preserve_host: Option<bool>,
    /// Largest request body on this route; 0 = unlimited. Default: `gateway.limits.max_body_bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<ByteSize>,
    /// How several auth plugins combine: `any` (default: the first that succeeds) or `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_mode: Option<String>,
    /// Trace this route's requests when `gateway.tracing` is enabled. Default `true`; `false`
    /// sends no spans for them (trace headers from the client still pass through unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<bool>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

// === consumers ===

/// An API consumer (`consumers[]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FileConsumer {
    /// Unique user name.
    pub username: String,
    /// Unique id from an external system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    /// ACL groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Credentials of this consumer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<FileCredential>,
}

/// A credential (`consumers[].credentials[]`), tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FileCredential {
    /// An API key. Give `key` (hashed with SHA-256 at load) or `key_hash` (`sha256:<hex>`).
    KeyAuth {
        /// Identifier reported upstream as `X-Credential-Identifier`. Default: a hash prefix.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The key in clear (hashed on load, never stored).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<Secret>,
        /// `sha256:<64 hex digits>`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_hash: Option<String>,
    },
    /// HTTP Basic. Give `password` (hashed with argon2id at load) or `password_hash` (PHC string).
    BasicAuth {
        /// The Basic user name.
        username: String,
        /// The password in clear (hashed on load, never stored).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<Secret>,
        /// An argon2 PHC string (`$argon2id$...`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_hash: Option<String>,
    },
    /// A JWT issuer key.
    Jwt {
        /// Value of the token claim that selects this credential (see the `jwt` plugin's
        /// `key_claim`, default `iss`).
        key: String,
        /// `HS256`, `HS384`, `HS512`, `RS256`, ... `ES256`, `ES384`, `EdDSA`, `PS256`...
        algorithm: String,
        /// HMAC secret (HS*).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<Secret>,
        /// Public key in PEM (RS*, PS*, ES*, EdDSA).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        public_key: Option<String>,
    },
    /// An HMAC signing key (the secret must be kept in clear to verify signatures).
    HmacAuth {
        /// The key id clients send (`keyId`).
        username: String,
        /// The shared secret.
        secret: Secret,
    },
    /// A client certificate identity.
    Mtls {
        /// Match the certificate subject common name or a DNS/URI/email SAN.
        subject_name: String,
    },
}
