//! End-to-end tests of the gateway over real sockets: real upstream servers on ephemeral
//! loopback ports, real clients (reqwest, hyper, raw TCP, curl, Python where a third-party
//! client proves more). One test binary with a module per area keeps link time down.

mod support;

mod admin;
mod aggregate;
mod binary;
mod body_filters;
mod caching;
mod caching_rfc9111;
mod config;
mod dashboard;
mod downstream_h1;
mod errors;
mod framing;
mod h2_resets;
mod hardening;
mod lb;
mod metrics_refusals;
mod observability;
mod otel_tracing;
mod phases;
mod plugin_attacks;
mod protocols;
mod proxy;
mod ratelimit;
mod redis_cluster;
mod security;
mod side_calls;
mod streaming;
mod tls;
mod translation;
mod translation_plugins;
mod upstream_h1;
mod usage;
