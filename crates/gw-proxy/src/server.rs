//! Listeners, connections, the status listener, reload and graceful shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, StatusCode};

use crate::head::Response;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use gw_config::model::{Config, LogTarget};
use gw_observability::{AccessLog, AccessLogTarget, Format, LogSampler, Metrics, TargetHealthLabels};

use crate::body::{ClientBody, ResponseBody};
use crate::conn::{ConnState, TrackedIo, Verdict, watchdog};
use crate::forwarding::ConnForwarding;
use crate::h1server;
use crate::h2guard::H2Guard;
use crate::health::HealthChecks;
use crate::pipeline::{self, ConnInfo};
use crate::runtime::Runtime;
use crate::state::DataPlane;

/// Error codes of expected refusals whose warning lines are sampled: the upstream's circuit is
/// open, a dependency (a rate-limit store failing closed, an auth service) is unavailable, no
/// healthy target, a target or the gateway at capacity.
const REFUSALS_SAMPLED: &[&str] =
    &["circuit_open", "dependency_unavailable", "no_healthy_upstream", "upstream_overloaded", "overloaded"];

/// Process-wide state shared by every connection.
pub(crate) struct Shared {
    /// What the request path reads (`pipeline` is given this, not the server's state).
    pub(crate) dp: Arc<DataPlane>,
    /// Global plugins the embedding program added (they outlive reloads).
    pub(crate) extra_plugins: Arc<[Arc<dyn gw_core::Plugin>]>,
    /// The tracer of background work (plugins' spans outside requests), following
    /// `gateway.tracing` across reloads.
    pub(crate) spans: gw_core::BackgroundSpans,
    /// Where usage and local quota counters are written.
    pub(crate) usage_sync: crate::usage_sync::UsageSync,
    shutdown: watch::Sender<bool>,
    draining: AtomicBool,
    connections: AtomicUsize,
    listeners: Mutex<HashMap<String, ListenerHandle>>,
    reload_lock: tokio::sync::Mutex<()>,
    health: Mutex<HealthChecks>,
    started: Instant,
    status_addr: Mutex<Option<SocketAddr>>,
    /// Data-plane worker threads, one current-thread runtime each.
    workers: Mutex<Vec<tokio::sync::mpsc::UnboundedSender<WorkerCmd>>>,
    /// Their threads (joined on shutdown).
    worker_threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    pub(crate) worker_count: usize,
}

impl std::ops::Deref for Shared {
    type Target = DataPlane;

    fn deref(&self) -> &DataPlane {
        &self.dp
    }
}

/// Work handed to a data-plane thread.
enum WorkerCmd {
    /// Accept on this socket (one `SO_REUSEPORT` socket per worker) until `stop` fires.
    Listen { listener: std::net::TcpListener, name: Arc<str>, stop: watch::Receiver<bool> },
}

/// Start `n` data-plane threads. Each runs a current-thread tokio runtime: a connection, its
/// requests and the upstream connections they open stay on one thread, with no work-stealing
/// scheduler in between (measured: about a quarter more requests per CPU than a multi-thread
/// runtime on the plain proxy path).
/// A worker runs until every sender of its channel is gone; it then drops its runtime, and with
/// it every task still running there (connections, tunnels, HTTP/2 streams), which runs their
/// log phases.
type Workers = (Vec<tokio::sync::mpsc::UnboundedSender<WorkerCmd>>, Vec<std::thread::JoinHandle<()>>);

fn spawn_workers(n: usize, shared: &Arc<Shared>) -> Result<Workers, String> {
    let mut senders = Vec::with_capacity(n);
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<WorkerCmd>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("worker runtime: {e}"))?;
        let shared = Arc::downgrade(shared);
        let thread = std::thread::Builder::new()
            .name(format!("gatehouse-w{i}"))
            .spawn(move || {
                crate::pool::set_worker_index(i);
                rt.block_on(async move {
                    while let Some(cmd) = rx.recv().await {
                        let Some(shared) = shared.upgrade() else { break };
                        match cmd {
                            WorkerCmd::Listen { listener, name, stop } => match TcpListener::from_std(listener) {
                                Ok(l) => {
                                    tokio::spawn(accept_loop(l, name, shared, stop));
                                }
                                Err(e) => tracing::error!(error = %e, "worker cannot register listener"),
                            },
                        }
                    }
                });
            })
            .map_err(|e| format!("worker thread: {e}"))?;
        senders.push(tx);
        threads.push(thread);
    }
    Ok((senders, threads))
}

struct ListenerHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

/// A running gateway: the data plane plus its status listener.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) shared: Arc<Shared>,
}

/// Why the gateway could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

fn bind_std(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv6() { socket2::Domain::IPV6 } else { socket2::Domain::IPV4 };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        let _ = s.set_only_v6(true);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::from_std(bind_std(addr, false)?)
}

/// One socket per worker on the same address (`SO_REUSEPORT`: the kernel spreads connections).
/// With port 0, the first socket picks the port and the others join it.
fn bind_group(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = bind_std(addr, true)?;
    let actual = first.local_addr()?;
    let mut v = vec![first];
    for _ in 1..n {
        v.push(bind_std(actual, true)?);
    }
    Ok(v)
}

/// What a program embedding the gateway brings to it.
pub struct Embedding {
    /// The wall clock plugins count periods by.
    pub clock: Arc<dyn gw_core::Clock>,
    /// Plugins of the embedding program, applied like global instances of the configuration
    /// (every route, and requests that match none) for as long as the gateway runs, reloads
    /// included. A configured instance of the same name takes the place of one of these.
    pub plugins: Vec<Arc<dyn gw_core::Plugin>>,
}

impl Gateway {
    /// Compile `config`, bind every listener and start serving.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        Self::start_with_clock(config, Arc::new(gw_core::SystemClock)).await
    }

    /// [`Gateway::start`] with the wall clock plugins count periods by (tests move it).
    pub async fn start_with_clock(config: Config, clock: Arc<dyn gw_core::Clock>) -> Result<Gateway, StartError> {
        Self::start_inner(config, Embedding { clock, plugins: Vec::new() }, None).await
    }

    /// [`Gateway::start`] writing usage and local quota counters to `usage_store`.
    pub async fn start_with_usage(
        config: Config,
        usage_store: Option<Arc<dyn gw_observability::UsageBackend>>,
    ) -> Result<Gateway, StartError> {
        Self::start_with(config, Arc::new(gw_core::SystemClock), usage_store).await
    }

    /// [`Gateway::start`] with a clock and the store usage and local quota counters are written
    /// to (`None`: memory only). Quota counters of current periods are read back from it before
    /// the listeners open.
    pub async fn start_with(
        config: Config,
        clock: Arc<dyn gw_core::Clock>,
        usage_store: Option<Arc<dyn gw_observability::UsageBackend>>,
    ) -> Result<Gateway, StartError> {
        Self::start_inner(config, Embedding { clock, plugins: Vec::new() }, usage_store).await
    }

    /// [`Gateway::start`] for a program that embeds the gateway: its clock, and plugins of its
    /// own (see [`Embedding`]).
    pub async fn start_embedded(config: Config, embedding: Embedding) -> Result<Gateway, StartError> {
        Self::start_inner(config, embedding, None).await
    }

    async fn start_inner(
        config: Config,
        embedding: Embedding,
        usage_store: Option<Arc<dyn gw_observability::UsageBackend>>,
    ) -> Result<Gateway, StartError> {
        let Embedding { clock, plugins } = embedding;
        let extra_plugins: Arc<[Arc<dyn gw_core::Plugin>]> = plugins.into();
        // Libraries that build their own rustls configuration (the Redis client) use the
        // process default provider: make it aws-lc-rs, like every TLS config of ours.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let metrics = Arc::new(Metrics::new());
        let config = Arc::new(config);
        let worker_count = config
            .gateway
            .worker_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
            .max(1);
        let spans = gw_core::BackgroundSpans::default();
        let mut rt = Runtime::compile(config.clone(), None, &metrics, &clock, &extra_plugins, worker_count, &spans)
            .map_err(StartError)?;
        let access_log = if config.gateway.access_log.enabled {
            let target = match &config.gateway.access_log.target {
                LogTarget::Stdout => AccessLogTarget::Stdout,
                LogTarget::Stderr => AccessLogTarget::Stderr,
                LogTarget::File(p) => AccessLogTarget::File(p.clone()),
            };
            Some(AccessLog::start(&target).map_err(|e| StartError(format!("access log: {e}")))?)
        } else {
            None
        };
        rt.tracing = tracer(config.gateway.tracing.as_ref(), None, &metrics).map_err(StartError)?;
        spans.set(rt.tracing.as_ref().map(|t| t.background()));
        let (shutdown, _) = watch::channel(false);
        let tasks = TaskTracker::new();
        let dp = Arc::new_cyclic(|weak| DataPlane {
            upstreams: gw_core::Upstreams::new(Arc::new(crate::exchange::GatewayExchange::new(
                weak.clone(),
                worker_count,
                metrics.clone(),
            ))),
            runtime: ArcSwap::from_pointee(rt),
            metrics: metrics.clone(),
            usage: gw_observability::Usage::new(&metrics),
            clock,
            access_log,
            refusal_log: LogSampler::new(REFUSALS_SAMPLED, Duration::from_secs(1)),
            tasks: tasks.clone(),
            drains: crate::body::Drains::new(
                config.gateway.limits.max_detached_reads,
                config.gateway.limits.detached_read_timeout,
                tasks,
            ),
            aborting: AtomicBool::new(false),
        });
        let shared = Arc::new(Shared {
            dp,
            usage_sync: crate::usage_sync::UsageSync::new(usage_store.unwrap_or_else(crate::usage_sync::memory)),
            extra_plugins,
            spans,
            shutdown,
            draining: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            listeners: Mutex::new(HashMap::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            health: Mutex::new(HealthChecks::default()),
            started: Instant::now(),
            status_addr: Mutex::new(None),
            workers: Mutex::new(Vec::new()),
            worker_threads: Mutex::new(Vec::new()),
            worker_count,
        });
        let (senders, threads) = spawn_workers(worker_count, &shared).map_err(StartError)?;
        if let Ok(mut w) = shared.workers.lock() {
            *w = senders;
        }
        if let Ok(mut t) = shared.worker_threads.lock() {
            *t = threads;
        }
        let gw = Gateway { shared };
        gw.shared.usage_sync.restore_quotas(gw.shared.clock.now_ms()).await;
        tokio::spawn(usage_flusher(Arc::downgrade(&gw.shared)));
        gw.sync_listeners(&config).await.map_err(StartError)?;
        if let Some(addr) = config.gateway.status_listener {
            let l = bind(addr).map_err(|e| StartError(format!("status listener {addr}: {e}")))?;
            let local = l.local_addr().map_err(|e| StartError(e.to_string()))?;
            if let Ok(mut s) = gw.shared.status_addr.lock() {
                *s = Some(local);
            }
            tokio::spawn(status_loop(l, gw.shared.clone()));
        }
        gw.restart_health();
        metrics.reload(true);
        tracing::info!(hash = %config.hash, routes = config.routes.len(), "configuration loaded");
        Ok(gw)
    }

    /// The bound address of a listener (useful with port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.shared.listeners.lock().ok()?.get(name).map(|l| l.addr)
    }

    /// The bound address of the status listener.
    pub fn status_addr(&self) -> Option<SocketAddr> {
        *self.shared.status_addr.lock().ok()?
    }

    /// The configuration being served.
    pub fn config(&self) -> Arc<Config> {
        self.shared.runtime.load().config.clone()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Time since start.
    pub fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// Write the usage and local quota counters counted so far to the usage store now (the
    /// background task does so every `gateway.usage.flush_interval`).
    pub async fn flush_usage(&self) -> Result<(), String> {
        let s = &self.shared;
        s.usage_sync.flush(&s.usage, s.clock.now_ms(), &s.metrics).await
    }

    /// Usage from `from_ms` (inclusive) to `to_ms` (exclusive) in buckets of `granularity`,
    /// with this node's counts written first (other nodes' within their flush interval).
    pub async fn usage_report(
        &self,
        granularity: gw_observability::Granularity,
        from_ms: u64,
        to_ms: u64,
        filter: &gw_observability::UsageFilter,
    ) -> Result<Vec<gw_observability::UsageRecord>, String> {
        let s = &self.shared;
        s.usage_sync.report(&s.usage, s.clock.now_ms(), &s.metrics, granularity, from_ms, to_ms, filter).await
    }

    /// Kind of the usage store: `memory`, `embedded` or `postgres`.
    pub fn usage_store_kind(&self) -> &'static str {
        self.shared.usage_sync.backend.kind()
    }

    /// The gateway's wall clock (ms since the Unix epoch; tests move it).
    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// Open downstream connections.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Replace the configuration: compile off the request path, bind new listeners, swap
    /// atomically. On any error nothing changes and the old configuration keeps serving.
    pub async fn reload(&self, config: Config) -> Result<(), String> {
        let _g = self.shared.reload_lock.lock().await;
        let old = self.shared.runtime.load_full();
        let metrics = self.shared.metrics.clone();
        let config = Arc::new(config);
        let cfg = config.clone();
        let workers = self.shared.worker_count;
        let clock = self.shared.clock.clone();
        let extra = self.shared.extra_plugins.clone();
        let spans = self.shared.spans.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            Runtime::compile(cfg, Some(&old), &metrics, &clock, &extra, workers, &spans)
        })
        .await
        .map_err(|e| format!("compile task failed: {e}"))
        .and_then(|r| r);
        let mut rt = match compiled {
            Ok(rt) => rt,
            Err(e) => {
                self.shared.metrics.reload(false);
                return Err(e);
            }
        };
        // Tracing settings follow reloads: the running tracer is kept when they are unchanged.
        let old = self.shared.runtime.load();
        match tracer(config.gateway.tracing.as_ref(), old.tracing.as_ref(), &self.shared.metrics) {
            Ok(t) => rt.tracing = t,
            Err(e) => {
                self.shared.metrics.reload(false);
                return Err(e);
            }
        }
        if let Err(e) = self.sync_listeners(&config).await {
            self.shared.metrics.reload(false);
            return Err(e);
        }
        self.shared.runtime.store(Arc::new(rt));
        let l = &config.gateway.limits;
        self.shared.drains.set_limits(l.max_detached_reads, l.detached_read_timeout);
        self.shared.spans.set(self.shared.runtime.load().tracing.as_ref().map(|t| t.background()));
        self.restart_health();
        self.shared.metrics.reload(true);
        tracing::info!(hash = %config.hash, routes = config.routes.len(), "configuration reloaded");
        Ok(())
    }

    /// Serve `config`, which differs from the running configuration by the one route `change`
    /// names (built by [`gw_config::edit_route`] from [`Gateway::config`]). Only that route's
    /// plugin chain and router entries are compiled; everything else (listeners, upstreams and
    /// their connection pools, plugin instances) is shared, so the cost does not grow with the
    /// number of routes. Requests in flight finish on the configuration they started with.
    pub async fn apply_route_change(&self, config: Config, change: gw_config::RouteChange) -> Result<(), String> {
        let _g = self.shared.reload_lock.lock().await;
        let old = self.shared.runtime.load_full();
        let config = Arc::new(config);
        let rt = match Runtime::compile_route_change(config.clone(), &old, change, &self.shared.metrics) {
            Ok(rt) => rt,
            Err(e) => {
                self.shared.metrics.reload(false);
                return Err(e);
            }
        };
        self.shared.runtime.store(Arc::new(rt));
        self.shared.metrics.reload(true);
        tracing::info!(hash = %config.hash, routes = config.routes.len(), ?change, "route changed");
        Ok(())
    }

    /// Bind listeners that are new (by name and address), stop those that are gone.
    async fn sync_listeners(&self, config: &Config) -> Result<(), String> {
        let mut new_ones = Vec::new();
        {
            let current = self.shared.listeners.lock().map_err(|_| "listener table poisoned")?;
            for l in &config.listeners {
                match current.get(&l.name) {
                    Some(h) if h.addr == l.address || (l.address.port() == 0 && h.addr.ip() == l.address.ip()) => {}
                    _ => new_ones.push(l.clone()),
                }
            }
        }
        let n = self.shared.worker_count;
        let mut bound = Vec::new();
        for l in &new_ones {
            let group = bind_group(l.address, n).map_err(|e| format!("listener {:?} on {}: {e}", l.name, l.address))?;
            bound.push((l.name.clone(), group));
        }
        let workers = self.shared.workers.lock().map_err(|_| "worker table poisoned")?.clone();
        let mut current = self.shared.listeners.lock().map_err(|_| "listener table poisoned")?;
        for (name, group) in bound {
            let addr = group[0].local_addr().map_err(|e| e.to_string())?;
            let (stop, stop_rx) = watch::channel(false);
            if let Some(old) = current.insert(name.clone(), ListenerHandle { addr, stop }) {
                let _ = old.stop.send(true);
            }
            tracing::info!(listener = %name, %addr, workers = n, "listening");
            let name: Arc<str> = name.into();
            for (w, listener) in workers.iter().zip(group) {
                let _ = w.send(WorkerCmd::Listen { listener, name: name.clone(), stop: stop_rx.clone() });
            }
        }
        let keep: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
        current.retain(|name, h| {
            let k = keep.contains(&name.as_str());
            if !k {
                tracing::info!(listener = %name, "listener removed");
                let _ = h.stop.send(true);
            }
            k
        });
        Ok(())
    }

    fn restart_health(&self) {
        let rt = self.shared.runtime.load_full();
        if let Ok(mut h) = self.shared.health.lock() {
            h.restart(&rt, &self.shared.metrics);
        }
    }

    /// Stop accepting, let in-flight requests and tunnels finish for up to `timeout`, then cut
    /// what is still running (each cut request is logged, `error: shutdown_timeout`), write out
    /// the access log, and return.
    pub async fn shutdown(&self, timeout: Duration) {
        // Set before the signal: connections woken by the signal read the flag.
        self.shared.draining.store(true, Ordering::Release);
        let _ = self.shared.shutdown.send(true);
        if let Ok(mut l) = self.shared.listeners.lock() {
            for h in l.values() {
                let _ = h.stop.send(true);
            }
            l.clear();
        }
        if let Ok(mut h) = self.shared.health.lock() {
            h.stop();
        }
        self.shared.tasks.close();
        if tokio::time::timeout(timeout, self.shared.tasks.wait()).await.is_err() {
            tracing::warn!(remaining = self.shared.tasks.len(), "shutdown timeout: closing remaining connections");
            self.shared.aborting.store(true, Ordering::Release);
        }
        // Stop the workers: each drops its runtime, and with it whatever still runs there (its
        // log phases run as they are dropped).
        if let Ok(mut w) = self.shared.workers.lock() {
            w.clear();
        }
        let threads = self.shared.worker_threads.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        if tokio::time::timeout(Duration::from_secs(5), joined).await.is_err() {
            tracing::warn!("data-plane workers did not stop within 5 s");
        }
        if let Some(al) = &self.shared.access_log {
            let al = al.clone();
            let flushed = tokio::task::spawn_blocking(move || al.flush(Duration::from_secs(5))).await;
            if !matches!(flushed, Ok(true)) {
                tracing::warn!("the access log was not fully written");
            }
        }
        // Every request has been logged: export the spans still queued.
        if let Some(t) = &self.shared.runtime.load().tracing {
            if !t.flush(Duration::from_secs(5)).await {
                tracing::warn!("the last trace spans were not exported");
            }
            t.shutdown();
        }
        // Every request has been logged: write the last usage batch.
        match self.flush_usage().await {
            Ok(()) => tracing::info!(store = self.usage_store_kind(), "usage written"),
            Err(e) => tracing::warn!(error = %e, "the last usage batch was not written"),
        }
    }
}

/// The tracer for `settings`: `current` when it was built with the same ones, else a new one
/// (the one it replaces exports what it holds once the requests using it have ended).
fn tracer(
    settings: Option<&gw_otel::Settings>,
    current: Option<&Arc<gw_otel::Tracing>>,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<gw_otel::Tracing>>, String> {
    match (settings, current) {
        (None, _) => Ok(None),
        (Some(s), Some(t)) if t.settings() == s => Ok(Some(t.clone())),
        (Some(s), _) => {
            let tls = match &s.tls {
                Some(t) => Some(crate::tls::client_config(t, false).map_err(|e| format!("gateway.tracing.tls: {e}"))?),
                None => None,
            };
            gw_otel::Tracing::start(s, metrics.clone(), tls.as_deref()).map(Some)
        }
    }
}

async fn accept_loop(listener: TcpListener, name: Arc<str>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => {
                let (tcp, peer) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(listener = %name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let max = shared.runtime.load().gateway.limits.max_connections;
                if shared.connections.load(Ordering::Relaxed) >= max {
                    shared.metrics.connection_rejected();
                    drop(tcp);
                    continue;
                }
                shared.connections.fetch_add(1, Ordering::Relaxed);
                shared.metrics.connection_opened();
                let s = shared.clone();
                let n = name.clone();
                // Each poll of the connection reads the clock at most once (`gw_core::tick`).
                shared.tasks.spawn(gw_core::tick::Fresh::new(async move {
                    serve_conn(tcp, peer, n, s.clone()).await;
                    s.connections.fetch_sub(1, Ordering::Relaxed);
                    s.metrics.connection_closed();
                }));
            }
        }
    }
}

/// Spawns hyper's HTTP/2 stream tasks on tokio, each poll a `gw_core::tick` scope like the
/// connection tasks (a stream's request is served in its own task).
#[derive(Clone, Copy)]
struct FreshExecutor;

impl<F> hyper::rt::Executor<F> for FreshExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(gw_core::tick::Fresh::new(fut));
    }
}

async fn serve_conn(tcp: TcpStream, peer: SocketAddr, listener: Arc<str>, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let local = match tcp.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let rt = shared.runtime.load_full();
    let Some(lrt) = rt.listeners.get(&*listener) else { return };
    let limits = rt.gateway.limits.clone();
    let http2 = lrt.http2;
    let tls = lrt.tls.clone();
    drop(rt);
    let state = ConnState::new();
    match tls {
        None => {
            let h2 = if http2 {
                // Prior-knowledge HTTP/2 starts with "PRI * HTTP/2.0"; nothing else starts with
                // "PRI ". One peek per connection instead of hyper-util's rewinding reader. A
                // drain closes a connection still waiting for its first bytes.
                let mut shutdown = shared.shutdown.subscribe();
                if shared.draining.load(Ordering::Acquire) {
                    return;
                }
                tokio::select! {
                    r = tokio::time::timeout(limits.idle_timeout, peek_preface(&tcp)) => match r {
                        Ok(Ok(h2)) => h2,
                        _ => return,
                    },
                    _ = shutdown.changed() => return,
                }
            } else {
                false
            };
            let info = ConnInfo {
                peer,
                listener,
                tls: false,
                sni: None,
                client_certs: None,
                state: state.clone(),
                forwarding: ConnForwarding::new(peer.ip(), false, local.port()),
            };
            serve_http(TrackedIo::new(tcp, state), info, h2, &limits, shared).await;
        }
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            let stream = match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let (_, sc) = stream.get_ref();
            let sni = sc.server_name().map(Arc::from);
            let h2 = sc.alpn_protocol() == Some(b"h2");
            let client_certs = sc
                .peer_certificates()
                .filter(|c| !c.is_empty())
                .map(|c| Arc::new(c.iter().map(|d| d.as_ref().to_vec()).collect::<Vec<_>>()));
            let info = ConnInfo {
                peer,
                listener,
                tls: true,
                sni,
                client_certs,
                state: state.clone(),
                forwarding: ConnForwarding::new(peer.ip(), true, local.port()),
            };
            serve_http(TrackedIo::new(stream, state), info, h2, &limits, shared).await;
        }
    }
}

/// Whether the client opens with the HTTP/2 connection preface. Waits for the first bytes.
async fn peek_preface(tcp: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; 4];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if n == buf.len() || !b"PRI ".starts_with(&buf[..n]) {
            return Ok(&buf[..n] == b"PRI ");
        }
        // A partial "PRI" prefix: wait for more bytes.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Run a hyper connection to its end, closing it on a watchdog verdict or gateway shutdown.
/// A macro rather than a function: the HTTP/1 and HTTP/2 connection types share
/// `graceful_shutdown` only as inherent methods.
///
/// The connection is polled first on every wake-up. The shutdown signal is polled once, to
/// register this task for the wake-up a shutdown sends; after that, a flag is checked instead
/// (a poll of the signal takes the signal's lock; a `select!` would poll it on every wake-up of
/// the connection, that is for every request).
macro_rules! drive {
    ($conn:expr, $state:expr, $limits:expr, $shared:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        let dog = watchdog($state, $limits.header_read_timeout, $limits.idle_timeout);
        tokio::pin!(dog);
        let mut shutdown = $shared.shutdown.subscribe();
        let draining = &$shared.draining;
        let changed = shutdown.changed();
        tokio::pin!(changed);
        let mut registered = false;
        let mut closing = false;
        std::future::poll_fn(|cx| {
            loop {
                if !closing {
                    if !registered {
                        registered = true;
                        // Ready only if the sender is gone (the gateway is being dropped).
                        let _ = changed.as_mut().poll(cx);
                    }
                    if draining.load(Ordering::Acquire) {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
                if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return Poll::Ready(());
                }
                if closing {
                    return Poll::Pending;
                }
                match dog.as_mut().poll(cx) {
                    Poll::Ready(Verdict::SlowHead) => return Poll::Ready(()),
                    Poll::Ready(Verdict::Idle) => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        // Poll the connection again: it acts on the shutdown when polled.
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
    }};
}

async fn serve_http<I>(
    io: TrackedIo<I>,
    info: ConnInfo,
    h2: bool,
    limits: &gw_config::model::Limits,
    shared: Arc<Shared>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state = info.state.clone();
    let info = Arc::new(info);
    let svc_dp = shared.dp.clone();
    if h2 {
        let svc = service_fn(move |req: Request<Incoming>| {
            let f = pipeline::serve(req.map(ClientBody::Hyper), None, info.clone(), svc_dp.clone());
            async move { Ok::<_, std::convert::Infallible>(f.await.into_http()) }
        });
        // Client stream resets are limited per connection (rapid reset): see `h2guard`.
        let io = H2Guard::new(io, limits.http2_max_resets, limits.http2_reset_window, shared.metrics.clone());
        let conn = hyper::server::conn::http2::Builder::new(FreshExecutor)
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_concurrent_streams)
            .max_header_list_size(limits.max_header_bytes as u32)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10))
            .adaptive_window(true)
            // RFC 8441: WebSocket (and other upgrades) over HTTP/2 by extended CONNECT.
            .enable_connect_protocol()
            .serve_connection(TokioIo::new(io), svc);
        drive!(conn, state, limits, shared);
    } else {
        let settings =
            crate::wire::request::Settings { max_head: limits.max_header_bytes, max_fields: limits.max_headers };
        let svc = move |req, facts| pipeline::serve(req, Some(facts), info.clone(), svc_dp.clone());
        let conn = h1server::Connection::new(io, state.clone(), settings, svc);
        drive!(conn, state, limits, shared);
    }
}

/// The flusher: every `gateway.usage.flush_interval`, until the gateway is gone.
async fn usage_flusher(shared: std::sync::Weak<Shared>) {
    loop {
        let interval = match shared.upgrade() {
            Some(s) => s.runtime.load().config.gateway.usage.flush_interval,
            None => return,
        };
        tokio::time::sleep(interval).await;
        let Some(s) = shared.upgrade() else { return };
        let now = s.clock.now_ms();
        let _ = s.usage_sync.flush(&s.usage, now, &s.metrics).await;
        let settings = s.runtime.load().config.gateway.usage.clone();
        s.usage_sync.prune_if_due(now, &settings).await;
    }
}

// === status listener ===

async fn status_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut stop = shared.shutdown.subscribe();
    loop {
        let (tcp, _) = tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let s = shared.clone();
        tokio::spawn(async move {
            // The gateway's own HTTP/1.1 server, with the data plane's head limits, slow-head
            // and idle timeouts (the watchdog) and framing rules.
            let limits = s.runtime.load().gateway.limits.clone();
            let state = ConnState::new();
            let settings =
                crate::wire::request::Settings { max_head: limits.max_header_bytes, max_fields: limits.max_headers };
            let svc_shared = s.clone();
            let svc_state = state.clone();
            let svc = move |req: Request<ClientBody>, _facts| {
                let (s, state) = (svc_shared.clone(), svc_state.clone());
                async move {
                    state.request_started();
                    let resp = if req.uri().path() == "/status/usage" {
                        let (status, ctype, body) = usage_report(req.uri().query(), &s).await;
                        plain_response(status, ctype, body)
                    } else {
                        status_response(&req, &s)
                    };
                    state.request_finished_at(tokio::time::Instant::now());
                    resp
                }
            };
            let conn = h1server::Connection::new(TrackedIo::new(tcp, state.clone()), state.clone(), settings, svc);
            drive!(conn, state, limits, s);
        });
    }
}

/// `/status/usage?consumer=NAME&from=YYYY-MM-DD&to=YYYY-MM-DD` (days inclusive, UTC; default:
/// every consumer, the retained days): one row per day, consumer and route, with the served
/// requests (`requests`), the refused ones by kind, and bytes. Read from the usage store.
async fn usage_report(query: Option<&str>, s: &Shared) -> (StatusCode, &'static str, String) {
    use gw_observability::{Granularity, Outcome, UsageFilter};
    let mut consumer = None;
    let (mut from, mut to) = (0u32, u32::MAX / 2);
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "consumer" => consumer = Some(v.into_owned()),
            "from" | "to" => match parse_day(&v) {
                Some(d) if k == "from" => from = d,
                Some(d) => to = d,
                None => {
                    let msg =
                        serde_json::json!({ "error": "bad_request", "message": format!("{k}: expected YYYY-MM-DD") });
                    return (StatusCode::BAD_REQUEST, "application/json", msg.to_string());
                }
            },
            _ => {}
        }
    }
    let filter = UsageFilter { consumer, ..Default::default() };
    let (from_ms, to_ms) = (u64::from(from) * 86_400_000, (u64::from(to) + 1) * 86_400_000);
    let records = match s
        .usage_sync
        .report(&s.usage, s.clock.now_ms(), &s.metrics, Granularity::Day, from_ms, to_ms, &filter)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let msg = serde_json::json!({ "error": "store_unavailable", "message": e });
            return (StatusCode::SERVICE_UNAVAILABLE, "application/json", msg.to_string());
        }
    };
    // One row per (day, consumer, route), outcomes as columns; `requests` are the served ones.
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let mut last: Option<(u64, String, String)> = None;
    for r in records {
        let key = (r.start_ms, r.consumer.clone(), r.route.clone());
        if last.as_ref() != Some(&key) {
            rows.push(serde_json::json!({
                "day": r.period, "consumer": r.consumer, "route": r.route,
                "requests": 0, "refused": 0, "auth_failed": 0, "upstream_error": 0, "bytes_in": 0, "bytes_out": 0,
            }));
            last = Some(key);
        }
        let Some(row) = rows.last_mut() else { continue };
        let col = if r.outcome == Outcome::Served { "requests" } else { r.outcome.name() };
        row[col] = (row[col].as_u64().unwrap_or(0) + r.requests).into();
        row["bytes_in"] = (row["bytes_in"].as_u64().unwrap_or(0) + r.bytes_in).into();
        row["bytes_out"] = (row["bytes_out"].as_u64().unwrap_or(0) + r.bytes_out).into();
    }
    (StatusCode::OK, "application/json", serde_json::json!({ "usage": rows }).to_string())
}

fn plain_response(status: StatusCode, ctype: &'static str, body: String) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// `YYYY-MM-DD` -> days since 1970-01-01.
fn parse_day(v: &str) -> Option<u32> {
    let mut it = v.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    u32::try_from(gw_core::calendar::days_from_civil(y, m, d)).ok()
}

fn status_response<B>(req: &Request<B>, s: &Shared) -> Response<ResponseBody> {
    let rt = s.runtime.load();
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => {
            let now = Instant::now();
            for u in &rt.upstreams {
                for t in u.balancer.health_snapshot(now) {
                    let labels = TargetHealthLabels { upstream: u.name.to_string(), target: t.address.to_string() };
                    s.metrics.set_target_health(&labels, t.healthy);
                }
                // An open circuit turns half-open by time alone: show the state at this moment.
                if let Some(b) = &u.breaker {
                    s.metrics.set_circuit_state(&u.name, crate::runtime::circuit_label(b.state(now)));
                }
            }
            // OpenMetrics only for clients that ask for it; Prometheus text 0.0.4 otherwise.
            let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
            let (body, ctype) = s.metrics.encode_as(Format::negotiate(accept));
            (StatusCode::OK, ctype, body)
        }
        "/health" | "/live" => (
            StatusCode::OK,
            "application/json",
            serde_json::json!({ "status": "ok", "config_hash": rt.config.hash }).to_string(),
        ),
        "/ready" => {
            if s.draining.load(Ordering::Relaxed) {
                (StatusCode::SERVICE_UNAVAILABLE, "application/json", r#"{"status":"draining"}"#.to_string())
            } else {
                (StatusCode::OK, "application/json", r#"{"status":"ready"}"#.to_string())
            }
        }
        "/status/upstreams" => {
            let now = Instant::now();
            let ups: Vec<_> = rt
                .upstreams
                .iter()
                .map(|u| {
                    let targets: Vec<_> = u
                        .balancer
                        .health_snapshot(now)
                        .into_iter()
                        .map(|t| serde_json::json!({ "target": t.address, "healthy": t.healthy, "in_flight": t.in_flight }))
                        .collect();
                    let circuit = u.breaker.as_ref().map(|b| format!("{:?}", b.state(now)).to_lowercase());
                    serde_json::json!({ "name": &*u.name, "targets": targets, "circuit": circuit })
                })
                .collect();
            (StatusCode::OK, "application/json", serde_json::json!({ "upstreams": ups }).to_string())
        }
        _ => (StatusCode::NOT_FOUND, "application/json", r#"{"error":"not_found"}"#.to_string()),
    };
    plain_response(status, ctype, body)
}
