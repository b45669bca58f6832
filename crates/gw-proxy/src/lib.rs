//! The Gatehouse data plane, built on tokio, rustls and hyper 1 (HTTP/2; HTTP/1.1 is its own,
//! see `h1server` and `h1`). This is the only crate that knows the HTTP engine; plugins see
//! `gw-core` types.
//!
//! How to use:
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = gw_config::load_file(std::path::Path::new("gatehouse.yaml"))?;
//! let gw = gw_proxy::Gateway::start(config).await?;
//! // ... on SIGHUP: gw.reload(new_config).await?;
//! gw.shutdown(std::time::Duration::from_secs(30)).await;
//! # Ok(()) }
//! ```
//!
//! Module map, in the order a request meets them: [`server`] (listeners, TLS, connections,
//! reload, shutdown) ─► `conn` (timeouts) ─► `h1server` (the gateway's own HTTP/1.1 server;
//! HTTP/2 clients are served by hyper) ─► `pipeline` (the phases) ─►
//! `chain` (which plugins) ─► `pool` (upstream connections) ─► `h1` (the gateway's own
//! HTTP/1.1 upstream client; HTTP/2 uses hyper's) ─► `body` (streaming both ways,
//! the log phase; gateway-owned bodies and body filters adapted to the engine's). Responses
//! travel as `head::Response`: a head whose fields have one owner, `head::Fields` (an
//! upstream's fields kept as the bytes received on the plain HTTP/1.1 path, moved into a map
//! the first time anything reads or edits them), and a body that carries no fields. `exchange`
//! gives plugins side calls (`gw_core::Upstreams`) through the same `pipeline::forward` as
//! proxied traffic. `runtime` compiles a configuration into what all of these read.
//!
//! Layers, each importing only from the ones below it (no import circle):
//!
//! | layer | modules | what belongs there |
//! | --- | --- | --- |
//! | pure, no IO | [`wire`] (`wire::request`, `wire::response`, `wire::framing`), `head`, `fault`, `forwarding`, `h2guard`, `chain` | parsing and encoding rules, the response head with its fields' one owner (`head::Fields`), body error types, forwarding fields, plugin chains: unit-tested and fuzzed on their own |
//! | IO helpers | `io`, `conn`, `tls` | sockets with stall limits, timers, reads, upgraded sockets, TLS |
//! | HTTP/1.1 engines | `h1` (client), `h1server` (server) | connections, generic over the body types (`h1::Outgoing`, `h1server::Outgoing`) |
//! | bodies | `body` | the data plane's request and response bodies over both engines |
//! | connections | `pool` | pooling per target, connecting, health probes' exchanges |
//! | compiled configuration | `runtime`, `state`, `health`, `services` | the snapshot requests read, active health checks, built-in services |
//! | the request | `aggregate`, `upgrade`, `pipeline`, `exchange` | fan-out, tunnels, the phases, side calls |
//! | the process | [`server`], `usage_sync`, `introspect` | listeners, reload, shutdown, background tasks |

mod aggregate;
mod body;
mod chain;
mod conn;
mod exchange;
mod fault;
mod forwarding;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod h1;
mod h1server;
mod h2guard;
mod head;
mod health;
mod introspect;
mod io;
mod pipeline;
mod pool;
mod runtime;
pub mod server;
mod services;
mod state;
mod tls;
mod upgrade;
mod usage_sync;
pub mod wire;

pub use introspect::{TargetStatus, UpstreamStatus};
pub use runtime::check;
pub use server::{Embedding, Gateway, StartError};
