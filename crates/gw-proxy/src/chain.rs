//! Resolving which plugin instances apply to a route, and sorting them into per-phase lists.
//!
//! For each plugin name, the most specific instance wins (Kong's precedence):
//! consumer+route+service > consumer+route > consumer+service > consumer >
//! route+service > route > service > global.
//!
//! Route chains (no consumer) are compiled once per configuration, looking only at the instances
//! scoped to that route, its service, or global (an index keeps this linear in routes +
//! plugins). Consumer-scoped instances are merged in at request time, after authentication, and
//! only for consumers that have such instances: precompiling them would cost routes x consumers.

use std::collections::HashMap;
use std::sync::Arc;

use gw_config::model::{Config, Plugin as PluginConf};
use gw_core::{Hooks, Stage};
use gw_observability::Metrics;

/// A plugin trait object, for chain building.
pub(crate) type PluginRef = Arc<dyn gw_core::Plugin>;

/// An applicable plugin with the specificity it was selected at.
#[derive(Clone)]
struct Selected {
    name: &'static str,
    rank: u8,
    plugin: PluginRef,
}

/// The plugins of one route, per phase, each list sorted by priority (highest first).
#[derive(Default)]
pub(crate) struct Chain {
    selected: Vec<Selected>,
    /// Pre-routing plugins (only the global chain's run: no route is known yet).
    pub(crate) pre_route: Vec<PluginRef>,
    /// Access plugins that run before authentication ([`Stage::PreAuth`]).
    pub(crate) pre_auth: Vec<PluginRef>,
    /// Authentication plugins.
    pub(crate) auth: Vec<PluginRef>,
    /// Access plugins after authentication (ACL, rate limiting, ...).
    pub(crate) post_auth: Vec<PluginRef>,
    pub(crate) request_body: Vec<PluginRef>,
    pub(crate) request_filter: Vec<PluginRef>,
    pub(crate) upstream_request: Vec<PluginRef>,
    pub(crate) upstream_response: Vec<PluginRef>,
    pub(crate) upstream_failed: Vec<PluginRef>,
    pub(crate) response_body: Vec<PluginRef>,
    pub(crate) response_filter: Vec<PluginRef>,
    pub(crate) response: Vec<PluginRef>,
    pub(crate) log: Vec<PluginRef>,
}

impl Chain {
    /// Whether no plugin applies.
    pub(crate) fn is_empty(&self) -> bool {
        self.selected.is_empty()
    }

    /// Whether the access phase has anything to run.
    pub(crate) fn has_access(&self) -> bool {
        !(self.pre_auth.is_empty() && self.auth.is_empty() && self.post_auth.is_empty())
    }

    /// Whether the upstream-response phase (head or body plugins) has anything to run.
    pub(crate) fn has_upstream_response(&self) -> bool {
        !(self.upstream_response.is_empty() && self.response_body.is_empty() && self.response_filter.is_empty())
    }

    fn from_selected(mut selected: Vec<Selected>) -> Chain {
        selected.sort_by_key(|s| std::cmp::Reverse(s.plugin.priority()));
        let mut c = Chain::default();
        for s in &selected {
            let p = &s.plugin;
            let h = p.hooks();
            if h.contains(Hooks::AUTHENTICATE) {
                c.auth.push(p.clone());
            }
            if h.contains(Hooks::ACCESS) {
                match p.stage() {
                    Stage::PreAuth => c.pre_auth.push(p.clone()),
                    Stage::PostAuth => c.post_auth.push(p.clone()),
                }
            }
            for (hook, list) in [
                (Hooks::PRE_ROUTE, &mut c.pre_route),
                (Hooks::REQUEST_BODY, &mut c.request_body),
                (Hooks::REQUEST_FILTER, &mut c.request_filter),
                (Hooks::UPSTREAM_REQUEST, &mut c.upstream_request),
                (Hooks::UPSTREAM_RESPONSE, &mut c.upstream_response),
                (Hooks::UPSTREAM_FAILED, &mut c.upstream_failed),
                (Hooks::RESPONSE_BODY, &mut c.response_body),
                (Hooks::RESPONSE_FILTER, &mut c.response_filter),
                (Hooks::RESPONSE, &mut c.response),
                (Hooks::LOG, &mut c.log),
            ] {
                if h.contains(hook) {
                    list.push(p.clone());
                }
            }
        }
        c.selected = selected;
        c
    }

    /// This chain with a consumer's own instances replacing less specific ones of the same name.
    fn with_overrides(&self, overrides: Vec<Selected>) -> Chain {
        let mut merged: Vec<Selected> =
            self.selected.iter().filter(|s| !overrides.iter().any(|o| o.name == s.name)).cloned().collect();
        merged.extend(overrides);
        Chain::from_selected(merged)
    }
}

/// Specificity rank of an instance that applies (higher wins), or `None` if it does not apply.
fn rank(p: &PluginConf, route: Option<usize>, service: Option<usize>, consumer: Option<usize>) -> Option<u8> {
    fn scope(set: Option<usize>, want: Option<usize>) -> Option<bool> {
        match set {
            None => Some(false),
            Some(x) if Some(x) == want => Some(true),
            Some(_) => None,
        }
    }
    let (r, s, c) = (scope(p.route, route)?, scope(p.service, service)?, scope(p.consumer, consumer)?);
    Some(u8::from(c) * 4 + u8::from(r) * 2 + u8::from(s))
}

/// The union of the identity fields every instance says it sets (whatever its scope: an upstream
/// that trusts a field set on one route must not receive a forged one through another), minus
/// the reserved ones (matched by name already) and the fields clients legitimately send.
fn identity_headers(built: &[PluginRef]) -> Arc<[http::HeaderName]> {
    let mut names: Vec<http::HeaderName> = Vec::new();
    for p in built {
        for n in p.identity_headers() {
            if !gw_core::identity::is_reserved(n.as_str()) && gw_core::identity::may_scrub(&n) && !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names.into()
}

/// Every plugin instance of a configuration, built, and indexed by scope.
pub(crate) struct Plugins {
    built: Vec<PluginRef>,
    /// The embedding program's plugins (applied like global instances).
    extra: Arc<[PluginRef]>,
    /// The identity fields the instances set (beyond the reserved ones), removed from every
    /// client request on every route.
    identity: Arc<[http::HeaderName]>,
    by_route: HashMap<usize, Vec<usize>>,
    by_service: HashMap<usize, Vec<usize>>,
    global: Vec<usize>,
    by_consumer: HashMap<usize, Vec<usize>>,
}

impl Plugins {
    /// Build every enabled instance (off the request path; a failure fails the reload).
    pub(crate) fn build(
        cfg: &Config,
        metrics: &Arc<Metrics>,
        clock: &Arc<dyn gw_core::Clock>,
        extra: &[PluginRef],
        spans: &gw_core::BackgroundSpans,
    ) -> Result<Plugins, String> {
        let directory = Arc::new(gw_plugins::Directory::new(cfg)?);
        let env = gw_plugins::BuildEnv { config: cfg, metrics, directory, clock: clock.clone(), spans: spans.clone() };
        let built = cfg
            .plugins
            .iter()
            .map(|p| {
                gw_plugins::build(&p.config, &env, &p.instance).map_err(|e| format!("plugin {:?}: {e}", p.instance))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plugins::indexed(built, extra.into(), cfg))
    }

    fn indexed(built: Vec<PluginRef>, extra: Arc<[PluginRef]>, cfg: &Config) -> Plugins {
        let all: Vec<PluginRef> = built.iter().chain(extra.iter()).cloned().collect();
        let identity = identity_headers(&all);
        Plugins::indexed_with(built, extra, identity, cfg)
    }

    fn indexed_with(
        built: Vec<PluginRef>,
        extra: Arc<[PluginRef]>,
        identity: Arc<[http::HeaderName]>,
        cfg: &Config,
    ) -> Plugins {
        let mut ix = Plugins {
            built,
            extra,
            identity,
            by_route: HashMap::new(),
            by_service: HashMap::new(),
            global: Vec::new(),
            by_consumer: HashMap::new(),
        };
        for (i, p) in cfg.plugins.iter().enumerate() {
            match (p.consumer, p.route, p.service) {
                (Some(c), _, _) => ix.by_consumer.entry(c).or_default().push(i),
                (None, Some(r), _) => ix.by_route.entry(r).or_default().push(i),
                (None, None, Some(s)) => ix.by_service.entry(s).or_default().push(i),
                (None, None, None) => ix.global.push(i),
            }
        }
        ix
    }

    /// The same built instances, indexed for `cfg`, whose plugin list is this one's with route
    /// positions renumbered (a route was removed).
    pub(crate) fn reindexed(&self, cfg: &Config) -> Plugins {
        Plugins::indexed_with(self.built.clone(), self.extra.clone(), self.identity.clone(), cfg)
    }

    /// The identity fields the configuration's plugins set, beyond the reserved ones (see
    /// `forwarding::scrub_request`).
    pub(crate) fn identity_headers(&self) -> &[http::HeaderName] {
        &self.identity
    }

    /// [`Plugins::identity_headers`], shared (request bodies keep it to filter their trailers).
    pub(crate) fn identity_arc(&self) -> Arc<[http::HeaderName]> {
        self.identity.clone()
    }

    fn select(
        &self,
        cfg: &Config,
        candidates: impl Iterator<Item = usize>,
        route: Option<usize>,
        service: Option<usize>,
        consumer: Option<usize>,
    ) -> Vec<Selected> {
        let mut best: HashMap<&'static str, (u8, usize)> = HashMap::new();
        for i in candidates {
            let p = &cfg.plugins[i];
            if let Some(rk) = rank(p, route, service, consumer) {
                let name = p.config.plugin_name();
                if best.get(name).is_none_or(|&(have, _)| rk > have) {
                    best.insert(name, (rk, i));
                }
            }
        }
        let mut v: Vec<(&'static str, u8, usize)> = best.into_iter().map(|(n, (r, i))| (n, r, i)).collect();
        v.sort_unstable_by_key(|x| x.2);
        let mut out: Vec<Selected> =
            v.into_iter().map(|(name, rank, i)| Selected { name, rank, plugin: self.built[i].clone() }).collect();
        if consumer.is_none() {
            for p in self.extra.iter() {
                if !out.iter().any(|s| s.name == p.name()) {
                    out.push(Selected { name: p.name(), rank: 0, plugin: p.clone() });
                }
            }
        }
        out
    }

    /// The chain of a route for requests without consumer-specific instances.
    pub(crate) fn route_chain(&self, cfg: &Config, route: usize, service: usize) -> Arc<Chain> {
        let cands = self
            .by_route
            .get(&route)
            .into_iter()
            .flatten()
            .chain(self.by_service.get(&service).into_iter().flatten())
            .chain(&self.global)
            .copied();
        Arc::new(Chain::from_selected(self.select(cfg, cands, Some(route), Some(service), None)))
    }

    /// The global chain, for requests that match no route.
    pub(crate) fn global_chain(&self, cfg: &Config) -> Arc<Chain> {
        Arc::new(Chain::from_selected(self.select(cfg, self.global.iter().copied(), None, None, None)))
    }

    /// Whether some instance is scoped to this consumer.
    pub(crate) fn has_consumer_plugins(&self, consumer: usize) -> bool {
        self.by_consumer.contains_key(&consumer)
    }

    /// `base` with the consumer's own applicable instances merged in; `None` when it has none
    /// for this route.
    pub(crate) fn consumer_chain(
        &self,
        cfg: &Config,
        base: &Chain,
        route: usize,
        service: usize,
        consumer: usize,
    ) -> Option<Arc<Chain>> {
        let cands = self.by_consumer.get(&consumer)?;
        let own = self.select(cfg, cands.iter().copied(), Some(route), Some(service), Some(consumer));
        if own.is_empty() {
            return None;
        }
        debug_assert!(own.iter().all(|s| s.rank >= 4));
        Some(Arc::new(base.with_overrides(own)))
    }
}
