//! The logic of Gatehouse's fuzz targets, callable as plain functions: cargo-fuzz drives them
//! from `fuzz/` (nightly, libFuzzer), and `tests/replay.rs` replays the committed corpus and
//! crash reproducers through them on stable. Each target panics when its oracle does not hold.
//! See docs/fuzzing.md.
//!
//! The gateway's private parsers are reached through `gw_proxy::fuzzing` (the `fuzzing`
//! feature), thin wrappers without logic of their own.

pub mod chunked;
pub mod config;
pub mod connection;
pub mod mutate;
pub mod request_head;
pub mod response_head;
pub mod rfc;

/// A fuzz target: panics when its oracle does not hold for the input.
pub type Target = fn(&[u8]);

/// The targets by name, as in `fuzz/fuzz_targets/` and `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("request_head", request_head::request_head),
    ("response_head", response_head::response_head),
    ("chunked", chunked::chunked),
    ("request_connection", connection::request_connection),
    ("config", config::config),
];
