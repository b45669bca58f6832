//! The runtime snapshot: a validated [`Config`] compiled into what the request path uses (the
//! router, per-route plugin chains, upstream balancers and connection pools, TLS configs).
//!
//! A snapshot is immutable. A reload compiles a new one off the request path, carrying over
//! per-target state (health, ejections, EWMA, pooled connections) where a target is unchanged,
//! then swaps it in atomically; requests in flight finish on the snapshot they started with.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderName;
use ipnet::IpNet;
use rustls::{ClientConfig, ServerConfig};

use gw_config::RouteChange;
use gw_config::model::{self, Config, HashOn, Route, ServiceKind, StaticResponse, Timeouts, UpstreamProtocol};
use gw_core::RouteInfo;
use gw_observability::{Metrics, RetryCounter, RouteMetrics, TargetHealthLabels};
use gw_router::{Edit, RouteSpec, Router};
use gw_upstream::{
    ActiveHealthConfig, Balancer, BalancerConfig, CircuitBreaker, CircuitBreakerConfig, HealthConfig,
    PassiveHealthConfig, RetryBudget, RetryBudgetConfig, TargetConfig,
};

pub(crate) use crate::chain::PluginRef;
use crate::chain::{Chain, Plugins};
use crate::pool::{Endpoint, EndpointSpec};
use crate::tls;

/// One listener's settings, looked up by name for each new connection.
pub(crate) struct ListenerRt {
    pub(crate) http2: bool,
    pub(crate) tls: Option<Arc<ServerConfig>>,
    pub(crate) redirect_https_port: Option<u16>,
}

/// An upstream, compiled.
pub(crate) struct UpstreamRt {
    pub(crate) name: Arc<str>,
    pub(crate) balancer: Arc<Balancer>,
    pub(crate) breaker: Option<Arc<CircuitBreaker>>,
    /// One endpoint per target, same order as the balancer's targets.
    pub(crate) endpoints: Vec<Arc<Endpoint>>,
    pub(crate) hash_on: Option<HashOn>,
    /// Upstream statuses that count as a failed attempt for passive health.
    pub(crate) failure_statuses: Vec<u16>,
    pub(crate) config: model::Upstream,
}

/// A service, compiled.
pub(crate) struct ServiceRt {
    pub(crate) name: Arc<str>,
    pub(crate) kind: ServiceRtKind,
    pub(crate) timeouts: Timeouts,
    pub(crate) retries: model::Retries,
    pub(crate) budget: RetryBudget,
    /// Counts retries (`gatehouse_upstream_retries_total`); proxy services only.
    pub(crate) retried: Option<RetryCounter>,
}

/// What a compiled service does.
pub(crate) enum ServiceRtKind {
    Proxy {
        upstream: Arc<UpstreamRt>,
        protocol: UpstreamProtocol,
        /// Prepended to the upstream request path.
        path_prefix: String,
    },
    Echo,
    Static(StaticResponse),
    /// Backend calls fanned out and merged (`crate::aggregate`).
    Aggregate(Arc<gw_aggregate::Plan>),
}

/// A route, compiled.
pub(crate) struct RouteRt {
    pub(crate) info: Arc<RouteInfo>,
    pub(crate) route: Arc<Route>,
    pub(crate) service: Arc<ServiceRt>,
    /// Plugins for requests without consumer-specific instances.
    pub(crate) chain: Arc<Chain>,
    pub(crate) metrics: RouteMetrics,
}

/// Process-level settings the request path reads.
#[derive(Clone)]
pub(crate) struct GatewayRt {
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) request_id_header: HeaderName,
    pub(crate) limits: model::Limits,
    pub(crate) access_log: bool,
}

/// The whole compiled configuration.
pub(crate) struct Runtime {
    pub(crate) config: Arc<Config>,
    pub(crate) gateway: GatewayRt,
    pub(crate) router: Router<usize>,
    /// Same order as the configuration's routes (the router's values index this).
    pub(crate) routes: Vec<Arc<RouteRt>>,
    pub(crate) services: Vec<Arc<ServiceRt>>,
    pub(crate) upstreams: Vec<Arc<UpstreamRt>>,
    pub(crate) listeners: Arc<rustc_hash::FxHashMap<String, ListenerRt>>,
    /// Global plugins, run for requests that match no route (response and log phases).
    pub(crate) global_chain: Arc<Chain>,
    /// Every plugin instance, for merging consumer-scoped ones after authentication.
    pub(crate) plugins: Arc<Plugins>,
    /// OpenTelemetry tracing (`gateway.tracing`): set by the server, which keeps the running
    /// tracer across reloads that leave the settings as they are.
    pub(crate) tracing: Option<Arc<gw_otel::Tracing>>,
}

impl Runtime {
    /// Compile `config`. `previous` lends per-target state to carry over.
    // `config` is shared into the runtime (cloned Arcs); taking it by value keeps callers simple.
    #[allow(clippy::needless_pass_by_value)]
    pub(crate) fn compile(
        config: Arc<Config>,
        previous: Option<&Runtime>,
        metrics: &Arc<Metrics>,
        clock: &Arc<dyn gw_core::Clock>,
        extra: &[PluginRef],
        workers: usize,
        spans: &gw_core::BackgroundSpans,
    ) -> Result<Runtime, String> {
        let cfg = &*config;
        let mut listeners = rustc_hash::FxHashMap::default();
        for l in &cfg.listeners {
            let tls = match &l.tls {
                Some(t) => Some(
                    tls::server_config(t, &cfg.certificates, l.http2)
                        .map_err(|e| format!("listener {:?}: {e}", l.name))?,
                ),
                None => None,
            };
            listeners
                .insert(l.name.clone(), ListenerRt { http2: l.http2, tls, redirect_https_port: l.redirect_https_port });
        }

        // Upstream TLS client configs are shared by every target of a service: build them per
        // service, keyed by the upstream they use.
        let mut tls_by_upstream: HashMap<usize, UpstreamTls> = HashMap::new();
        for s in &cfg.services {
            if let ServiceKind::Proxy(p) = &s.kind {
                let client = match &p.tls {
                    Some(t) => Some(
                        tls::client_config(t, p.protocol.is_http2())
                            .map_err(|e| format!("service {:?}: {e}", s.name))?,
                    ),
                    None => None,
                };
                let sni = p.tls.as_ref().and_then(|t| t.sni.clone());
                if let Some((proto, _, _)) = tls_by_upstream.get(&p.upstream)
                    && *proto != p.protocol
                {
                    return Err(format!(
                        "service {:?}: upstream {:?} is already used with another protocol; use one protocol per upstream",
                        s.name, cfg.upstreams[p.upstream].name
                    ));
                }
                tls_by_upstream.insert(p.upstream, (p.protocol, client, sni));
            }
        }

        let prev_upstreams: HashMap<&str, &Arc<UpstreamRt>> =
            previous.map(|p| p.upstreams.iter().map(|u| (&*u.name, u)).collect()).unwrap_or_default();
        let mut upstreams = Vec::with_capacity(cfg.upstreams.len());
        for (i, u) in cfg.upstreams.iter().enumerate() {
            let (protocol, client, sni) =
                tls_by_upstream.get(&i).cloned().unwrap_or((UpstreamProtocol::Http1, None, None));
            let prev = prev_upstreams.get(u.name.as_str()).copied();
            upstreams.push(Arc::new(compile_upstream(u, protocol, client, sni.as_deref(), prev, workers, metrics)?));
        }
        // Health gauges: drop series of targets that disappeared; circuit series of upstreams
        // gone or without a breaker now.
        if let Some(p) = previous {
            for old in &p.upstreams {
                if old.breaker.is_some() && !upstreams.iter().any(|u| u.name == old.name && u.breaker.is_some()) {
                    metrics.forget_circuit(&old.name);
                }
            }
            for old in &p.upstreams {
                for t in old.balancer.targets() {
                    let still = upstreams
                        .iter()
                        .any(|u| u.name == old.name && u.balancer.targets().iter().any(|n| n.address() == t.address()));
                    if !still {
                        metrics.forget_target(&TargetHealthLabels {
                            upstream: old.name.to_string(),
                            target: t.address().to_string(),
                        });
                    }
                }
            }
        }

        let mut services = Vec::with_capacity(cfg.services.len());
        for s in &cfg.services {
            let kind = match &s.kind {
                ServiceKind::Proxy(p) => ServiceRtKind::Proxy {
                    upstream: upstreams[p.upstream].clone(),
                    protocol: p.protocol,
                    path_prefix: p.path_prefix.clone(),
                },
                ServiceKind::Echo => ServiceRtKind::Echo,
                ServiceKind::Static(r) => ServiceRtKind::Static(r.clone()),
                ServiceKind::Aggregate(plan) => ServiceRtKind::Aggregate(plan.clone()),
            };
            let budget = RetryBudget::new(RetryBudgetConfig {
                ratio: s.retries.budget_ratio,
                min_per_second: s.retries.budget_min_per_second,
                ttl: std::time::Duration::from_secs(10),
            });
            let retried = match &kind {
                ServiceRtKind::Proxy { upstream, .. } => Some(metrics.retries(&s.name, &upstream.name)),
                _ => None,
            };
            services.push(Arc::new(ServiceRt {
                name: s.name.as_str().into(),
                kind,
                timeouts: s.timeouts.clone(),
                retries: s.retries.clone(),
                budget,
                retried,
            }));
        }
        // Retry series of services gone (or now on another upstream).
        if let Some(p) = previous {
            for old in &p.services {
                if let ServiceRtKind::Proxy { upstream: old_up, .. } = &old.kind {
                    let kept = services.iter().any(|s| {
                        s.name == old.name
                            && matches!(&s.kind, ServiceRtKind::Proxy { upstream, .. } if upstream.name == old_up.name)
                    });
                    if !kept {
                        metrics.forget_retries(&old.name, &old_up.name);
                    }
                }
            }
        }

        let plugins = Plugins::build(cfg, metrics, clock, extra, spans)?;
        // Per-route metric handles of the previous runtime, reused by (route, service) name.
        let prev_metrics: HashMap<(&str, &str), &RouteMetrics> = previous
            .map(|p| p.routes.iter().map(|r| ((&*r.info.name, &*r.info.service), &r.metrics)).collect())
            .unwrap_or_default();
        let mut routes = Vec::with_capacity(cfg.routes.len());
        let mut specs = Vec::with_capacity(cfg.routes.len());
        for (i, r) in cfg.routes.iter().enumerate() {
            let service = services[r.service].clone();
            let m = match prev_metrics.get(&(r.name.as_str(), &*service.name)) {
                Some(m) => (*m).clone(),
                None => metrics.route(&r.name, &service.name),
            };
            routes.push(Arc::new(route_rt(cfg, &plugins, r, i, service, m)));
            specs.push(route_spec(r, i));
        }
        let router = Router::new(specs).map_err(|e| e.to_string())?;
        if router.fallback_count() > 0 {
            tracing::warn!(
                routes = router.fallback_count(),
                "some path templates conflict in the radix tree and are matched linearly"
            );
        }
        if let Some(p) = previous {
            // Drop the metric series of routes that are gone (a set: tables have 10,000s of routes).
            let kept: std::collections::HashSet<(&str, &str)> =
                routes.iter().map(|r| (&*r.info.name, &*r.info.service)).collect();
            for old in &p.routes {
                if !kept.contains(&(&*old.info.name, &*old.info.service)) {
                    metrics.forget_route(&old.info.name, &old.info.service);
                }
            }
        }
        let global_chain = plugins.global_chain(cfg);
        let g = &cfg.gateway;
        Ok(Runtime {
            gateway: GatewayRt {
                trusted_proxies: g.trusted_proxies.clone(),
                request_id_header: g.request_id_header.clone(),
                limits: g.limits.clone(),
                access_log: g.access_log.enabled,
            },
            config: config.clone(),
            router,
            routes,
            services,
            upstreams,
            listeners: Arc::new(listeners),
            global_chain,
            plugins: Arc::new(plugins),
            tracing: None,
        })
    }

    /// Compile `config`, which differs from `prev`'s configuration by the one route `change`
    /// names (see [`gw_config::edit_route`]). Everything else is shared with `prev`: the cost
    /// does not grow with the number of routes.
    // `config` is shared into the runtime, like `compile`'s.
    #[allow(clippy::needless_pass_by_value)]
    pub(crate) fn compile_route_change(
        config: Arc<Config>,
        prev: &Runtime,
        change: RouteChange,
        metrics: &Arc<Metrics>,
    ) -> Result<Runtime, String> {
        let cfg = &*config;
        let mut routes = prev.routes.clone();
        let mut plugins = prev.plugins.clone();
        let forget = |old: &RouteRt| metrics.forget_route(&old.info.name, &old.info.service);
        let router = match change {
            RouteChange::Replaced(i) | RouteChange::Added(i) => {
                let r = cfg.routes.get(i).ok_or("route change out of range")?;
                let service = prev.services.get(r.service).ok_or("route service out of range")?.clone();
                let old = prev.routes.get(i).filter(|_| matches!(change, RouteChange::Replaced(_)));
                let m = match old {
                    Some(o) if *o.info.name == *r.name && o.info.service == service.name => o.metrics.clone(),
                    Some(o) => {
                        forget(o);
                        metrics.route(&r.name, &service.name)
                    }
                    None => metrics.route(&r.name, &service.name),
                };
                let rt = Arc::new(route_rt(cfg, &plugins, r, i, service, m));
                if old.is_some() {
                    routes[i] = rt;
                    prev.router.edit(Edit::Replace(i, route_spec(r, i)))
                } else {
                    routes.push(rt);
                    prev.router.edit(Edit::Push(route_spec(r, i)))
                }
            }
            RouteChange::Removed(i) => {
                if i >= routes.len() {
                    return Err("route change out of range".into());
                }
                forget(&routes.remove(i));
                // Route-scoped plugin instances are indexed by route position.
                plugins = Arc::new(prev.plugins.reindexed(cfg));
                prev.router.edit(Edit::Remove(i)).map(|mut r| {
                    r.map_values(|v| {
                        if *v > i {
                            *v -= 1;
                        }
                    });
                    r
                })
            }
        }
        .map_err(|e| e.to_string())?;
        if routes.len() != cfg.routes.len() || router.len() != routes.len() {
            return Err("route change does not match the configuration".into());
        }
        Ok(Runtime {
            config: config.clone(),
            gateway: prev.gateway.clone(),
            router,
            routes,
            services: prev.services.clone(),
            upstreams: prev.upstreams.clone(),
            listeners: prev.listeners.clone(),
            global_chain: prev.global_chain.clone(),
            plugins,
            tracing: prev.tracing.clone(),
        })
    }
}

/// A route's compiled form.
fn route_rt(
    cfg: &Config,
    plugins: &Plugins,
    r: &Arc<Route>,
    i: usize,
    service: Arc<ServiceRt>,
    metrics: RouteMetrics,
) -> RouteRt {
    let info = Arc::new(RouteInfo { name: r.name.as_str().into(), service: service.name.clone() });
    let chain = plugins.route_chain(cfg, i, r.service);
    RouteRt { metrics, info, route: r.clone(), service, chain }
}

/// A route's entry in the router (its value is its index).
fn route_spec(r: &Route, i: usize) -> RouteSpec<usize> {
    RouteSpec {
        hosts: r.hosts.clone(),
        paths: r.paths.clone(),
        methods: r.methods.clone(),
        headers: r.headers.clone(),
        query: r.query.clone(),
        priority: r.priority,
        value: i,
    }
}

/// Protocol, TLS client configuration and SNI of the services using one upstream.
type UpstreamTls = (UpstreamProtocol, Option<Arc<ClientConfig>>, Option<String>);

// The client configuration is cloned into each target's endpoint.
#[allow(clippy::needless_pass_by_value)]
fn compile_upstream(
    u: &model::Upstream,
    protocol: UpstreamProtocol,
    client: Option<Arc<ClientConfig>>,
    sni: Option<&str>,
    prev: Option<&Arc<UpstreamRt>>,
    workers: usize,
    metrics: &Arc<Metrics>,
) -> Result<UpstreamRt, String> {
    let health = HealthConfig {
        active: u.active_health.as_ref().map(|a| ActiveHealthConfig {
            interval: a.interval,
            timeout: a.timeout,
            healthy_threshold: a.healthy_threshold,
            unhealthy_threshold: a.unhealthy_threshold,
        }),
        passive: u.passive_health.as_ref().map(|p| PassiveHealthConfig {
            consecutive_failures: p.consecutive_failures,
            ejection_time: p.ejection_time,
            max_ejection_time: p.max_ejection_time,
        }),
    };
    let bcfg = BalancerConfig {
        algorithm: match u.algorithm {
            model::Algorithm::RoundRobin => gw_upstream::Algorithm::RoundRobin,
            model::Algorithm::LeastConnections => gw_upstream::Algorithm::LeastConnections,
            model::Algorithm::ConsistentHash => gw_upstream::Algorithm::ConsistentHash,
            model::Algorithm::Ewma => gw_upstream::Algorithm::Ewma,
        },
        targets: u.targets.iter().map(|t| TargetConfig { address: t.authority(), weight: t.weight }).collect(),
        health,
        max_connections_per_target: u.max_connections_per_target,
    };
    let balancer = Arc::new(Balancer::new(bcfg, prev.map(|p| &*p.balancer)));
    let mut endpoints = Vec::with_capacity(u.targets.len());
    for t in &u.targets {
        let tls = match &client {
            Some(c) => Some((c.clone(), tls::server_name(sni, &t.host)?)),
            None => None,
        };
        let spec = EndpointSpec {
            host: t.host.clone(),
            port: t.port,
            protocol,
            tls,
            max_idle: u.max_idle_per_target,
            idle_timeout: u.idle_timeout,
            workers,
        };
        let reuse = prev.and_then(|p| p.endpoints.iter().find(|e| e.same_spec(&spec)).cloned());
        endpoints.push(reuse.unwrap_or_else(|| Endpoint::new(spec)));
    }
    let breaker = u.circuit_breaker.as_ref().map(|c| {
        let same = prev.is_some_and(|p| p.config.circuit_breaker.as_ref() == Some(c));
        match prev.and_then(|p| p.breaker.clone()) {
            Some(b) if same => b,
            _ => {
                // State changes are counted and shown per upstream (a new breaker starts closed).
                let (m, name) = (metrics.clone(), u.name.clone());
                m.set_circuit_state(&name, "closed");
                let observer: gw_upstream::CircuitObserver = Arc::new(move |state| {
                    m.circuit_transition(&name, circuit_label(state));
                });
                let cfg = CircuitBreakerConfig {
                    failure_ratio: c.failure_ratio,
                    min_requests: c.min_requests,
                    window: c.window,
                    open_duration: c.open_duration,
                    half_open_requests: c.half_open_requests,
                };
                Arc::new(CircuitBreaker::with_observer(cfg, observer))
            }
        }
    });
    Ok(UpstreamRt {
        name: u.name.as_str().into(),
        balancer,
        breaker,
        endpoints,
        hash_on: u.hash_on.clone(),
        failure_statuses: u.passive_health.as_ref().map(|p| p.failure_statuses.clone()).unwrap_or_default(),
        config: u.clone(),
    })
}

/// An upstream and service for calls to a URL outside the configuration (`send_url`: an auth
/// service, a key set): one target, the origin's, with the gateway's pools and TLS (verified
/// against the system roots); no health checks, no breaker; one retry, taken only where it is
/// safe (a pooled connection the origin had closed, an idempotent request that failed to connect).
pub(crate) fn url_service(
    protocol: UpstreamProtocol,
    host: &str,
    port: u16,
    timeout: std::time::Duration,
    workers: usize,
    metrics: &Arc<Metrics>,
) -> Result<(Arc<UpstreamRt>, ServiceRt), String> {
    let scheme = match protocol {
        UpstreamProtocol::Http1 => "http",
        UpstreamProtocol::Https => "https",
        UpstreamProtocol::H2c => "h2c",
        UpstreamProtocol::H2 => "h2",
    };
    let target = model::Target { host: host.to_owned(), port, weight: 1 };
    let name = format!("{scheme}://{}", target.authority());
    let u = model::Upstream {
        name: name.clone(),
        algorithm: model::Algorithm::RoundRobin,
        hash_on: None,
        targets: vec![target],
        active_health: None,
        passive_health: None,
        circuit_breaker: None,
        max_connections_per_target: None,
        max_idle_per_target: 16,
        idle_timeout: std::time::Duration::from_secs(60),
        implicit: true,
    };
    let client = if protocol.is_tls() {
        let t = model::UpstreamTls { verify: true, ca_pem: None, sni: None, client_cert: None };
        Some(tls::client_config(&t, protocol.is_http2())?)
    } else {
        None
    };
    let upstream = Arc::new(compile_upstream(&u, protocol, client, None, None, workers, metrics)?);
    let service = ServiceRt {
        name: name.into(),
        kind: ServiceRtKind::Proxy { upstream: upstream.clone(), protocol, path_prefix: String::new() },
        timeouts: Timeouts { connect: timeout, read: timeout, write: timeout, total: Some(timeout) },
        retries: model::Retries { attempts: 1, on_statuses: Vec::new(), budget_ratio: 1.0, budget_min_per_second: 10 },
        budget: RetryBudget::new(RetryBudgetConfig {
            ratio: 1.0,
            min_per_second: 10,
            ttl: std::time::Duration::from_secs(10),
        }),
        retried: None,
    };
    Ok((upstream, service))
}

/// The metric label of a circuit state.
pub(crate) fn circuit_label(state: gw_upstream::CircuitState) -> &'static str {
    match state {
        gw_upstream::CircuitState::Closed => "closed",
        gw_upstream::CircuitState::Open => "open",
        gw_upstream::CircuitState::HalfOpen => "half_open",
    }
}

/// Compile a configuration without serving it (for `gatehouse validate`).
pub fn check(config: Config) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    let clock: Arc<dyn gw_core::Clock> = Arc::new(gw_core::SystemClock);
    let spans = gw_core::BackgroundSpans::default();
    Runtime::compile(Arc::new(config), None, &metrics, &clock, &[], 1, &spans).map(|_| ())
}
