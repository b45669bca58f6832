//! Target selection.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::target::{HealthConfig, Target, TargetHealth};

/// How a balancer picks a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Smooth weighted round robin (nginx's), lock-free.
    RoundRobin,
    /// Fewest requests in flight per unit of weight.
    LeastConnections,
    /// Consistent hashing on a request key (ring with virtual nodes).
    ConsistentHash,
    /// Power of two random choices, the lower of EWMA latency x (in flight + 1) / weight.
    Ewma,
}

/// A target in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    /// `host:port`.
    pub address: String,
    /// Relative weight; 0 = never selected.
    pub weight: u32,
}

/// A balancer's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BalancerConfig {
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Targets.
    pub targets: Vec<TargetConfig>,
    /// Health checks.
    pub health: HealthConfig,
    /// Requests in flight allowed per target.
    pub max_connections_per_target: Option<u32>,
}

/// A chosen target.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Index in [`Balancer::targets`].
    pub index: usize,
    /// The target.
    pub target: Arc<Target>,
}

/// Why no target could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectError {
    /// Every target is unhealthy, ejected or has weight 0.
    NoHealthyTarget,
    /// Healthy targets exist but all are at their connection cap.
    AllAtCapacity,
}

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SelectError::NoHealthyTarget => "no healthy target",
            SelectError::AllAtCapacity => "all targets at their connection cap",
        })
    }
}

impl std::error::Error for SelectError {}

/// Longest precomputed round-robin sequence; larger weight sums are scaled down.
const MAX_SEQUENCE: u64 = 4096;
/// Virtual nodes per 100 units of weight on the hash ring.
const VNODES_PER_100: u64 = 160;

/// Picks targets of one upstream. Cheap to share; `select` takes no lock.
#[derive(Debug)]
pub struct Balancer {
    algorithm: Algorithm,
    targets: Vec<Arc<Target>>,
    /// Smooth WRR order, as target indices, walked by `cursor`.
    sequence: Vec<usize>,
    cursor: AtomicUsize,
    /// Hash ring: (point, target index), sorted by point.
    ring: Vec<(u64, usize)>,
    settings: SettingsKey,
}

impl Balancer {
    /// Build from config, keeping the dynamic state (health, ejection, latency, in-flight
    /// counts) of targets of `previous` with the same address.
    // Taking the config by value keeps call sites simple; it is only read.
    #[allow(clippy::needless_pass_by_value)]
    pub fn new(cfg: BalancerConfig, previous: Option<&Balancer>) -> Balancer {
        let old: HashMap<&str, &Arc<Target>> =
            previous.map(|p| p.targets.iter().map(|t| (t.address(), t)).collect()).unwrap_or_default();
        let targets: Vec<Arc<Target>> = cfg
            .targets
            .iter()
            .map(|t| {
                let fresh = Target::new(t.address.clone(), t.weight, cfg.max_connections_per_target, &cfg.health);
                match old.get(t.address.as_str()) {
                    // In-flight counts live in the old Arc, which running requests still hold;
                    // reuse it when nothing about the target changed.
                    Some(o) if o.weight() == t.weight && previous.is_some_and(|p| p.same_settings(&cfg)) => {
                        (*o).clone()
                    }
                    Some(o) => Arc::new(fresh.inherit(o)),
                    None => Arc::new(fresh),
                }
            })
            .collect();
        let sequence = smooth_wrr(&targets);
        let ring = if cfg.algorithm == Algorithm::ConsistentHash { hash_ring(&targets) } else { Vec::new() };
        Balancer {
            algorithm: cfg.algorithm,
            targets,
            sequence,
            cursor: AtomicUsize::new(previous.map_or(0, |p| p.cursor.load(Ordering::Relaxed))),
            ring,
            settings: SettingsKey::of(&cfg),
        }
    }

    fn same_settings(&self, cfg: &BalancerConfig) -> bool {
        self.settings == SettingsKey::of(cfg)
    }

    /// The targets, in configuration order.
    pub fn targets(&self) -> &[Arc<Target>] {
        &self.targets
    }

    /// Health of every target.
    pub fn health_snapshot(&self, now: Instant) -> Vec<TargetHealth> {
        self.targets.iter().map(|t| t.snapshot(now)).collect()
    }

    /// Pick a target. `hash_key` drives consistent hashing (without it, round robin is used).
    /// Targets in `tried` are avoided when another one is available.
    pub fn select(&self, hash_key: Option<&[u8]>, tried: &[usize], now: Instant) -> Result<Selection, SelectError> {
        if let Some(i) = self
            .pick(hash_key, tried, now)
            .or_else(|| if tried.is_empty() { None } else { self.pick(hash_key, &[], now) })
        {
            return Ok(Selection { index: i, target: self.targets[i].clone() });
        }
        if self.targets.iter().any(|t| t.is_healthy(now)) {
            Err(SelectError::AllAtCapacity)
        } else {
            Err(SelectError::NoHealthyTarget)
        }
    }

    fn eligible(&self, i: usize, tried: &[usize], now: Instant) -> bool {
        !tried.contains(&i) && self.targets[i].is_available(now)
    }

    fn pick(&self, hash_key: Option<&[u8]>, tried: &[usize], now: Instant) -> Option<usize> {
        match (self.algorithm, hash_key) {
            (Algorithm::ConsistentHash, Some(k)) if !self.ring.is_empty() => self.pick_hash(k, tried, now),
            (Algorithm::LeastConnections, _) => self.pick_least(tried, now),
            (Algorithm::Ewma, _) => self.pick_p2c(tried, now),
            _ => self.pick_rr(tried, now),
        }
    }

    fn pick_rr(&self, tried: &[usize], now: Instant) -> Option<usize> {
        let n = self.sequence.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n).map(|k| self.sequence[(start + k) % n]).find(|&i| self.eligible(i, tried, now))
    }

    fn pick_least(&self, tried: &[usize], now: Instant) -> Option<usize> {
        let n = self.targets.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, u64, u64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !self.eligible(i, tried, now) {
                continue;
            }
            let t = &self.targets[i];
            let (load, w) = (u64::from(t.in_flight()), u64::from(t.weight()));
            // load/w < best_load/best_w, compared without division.
            if best.is_none_or(|(_, bl, bw)| load * bw < bl * w) {
                best = Some((i, load, w));
            }
        }
        best.map(|b| b.0)
    }

    fn pick_p2c(&self, tried: &[usize], now: Instant) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.targets.len()).filter(|&i| self.eligible(i, tried, now)).collect();
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0]),
            n => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let cost = |i: usize| {
                    let t = &self.targets[i];
                    t.ewma_ns() * f64::from(t.in_flight() + 1) / f64::from(t.weight().max(1))
                };
                let (ia, ib) = (candidates[a], candidates[b]);
                Some(if cost(ib) < cost(ia) { ib } else { ia })
            }
        }
    }

    fn pick_hash(&self, key: &[u8], tried: &[usize], now: Instant) -> Option<usize> {
        let h = hash64(key);
        let start = self.ring.partition_point(|&(p, _)| p < h);
        let n = self.ring.len();
        let mut seen: Vec<usize> = Vec::new();
        for k in 0..n {
            let i = self.ring[(start + k) % n].1;
            if seen.contains(&i) {
                continue;
            }
            if self.eligible(i, tried, now) {
                return Some(i);
            }
            seen.push(i);
            if seen.len() == self.targets.len() {
                break;
            }
        }
        None
    }
}

/// What must be equal for a target's `Arc` (and its in-flight count) to be reused as is.
#[derive(Debug, PartialEq)]
struct SettingsKey {
    health: HealthConfig,
    cap: Option<u32>,
}

impl SettingsKey {
    fn of(cfg: &BalancerConfig) -> Self {
        SettingsKey { health: cfg.health.clone(), cap: cfg.max_connections_per_target }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// nginx's smooth weighted round robin, unrolled into a sequence once per configuration.
fn smooth_wrr(targets: &[Arc<Target>]) -> Vec<usize> {
    let mut weights: Vec<u64> = targets.iter().map(|t| u64::from(t.weight())).collect();
    let g = weights.iter().copied().filter(|&w| w > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    for w in &mut weights {
        *w /= g;
    }
    let mut total: u64 = weights.iter().sum();
    if total > MAX_SEQUENCE {
        // Scale down, keeping every positive weight at least 1.
        for w in &mut weights {
            if *w > 0 {
                *w = (*w * MAX_SEQUENCE / total).max(1);
            }
        }
        total = weights.iter().sum();
    }
    let mut current = vec![0i64; weights.len()];
    let mut seq = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        seq.push(best);
    }
    seq
}

/// 64-bit FNV-1a followed by the murmur3 finaliser (stable across processes and versions).
pub(crate) fn hash64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn hash_ring(targets: &[Arc<Target>]) -> Vec<(u64, usize)> {
    let mut ring = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        if t.weight() == 0 {
            continue;
        }
        let vnodes = (VNODES_PER_100 * u64::from(t.weight()) / 100).max(1);
        for v in 0..vnodes {
            ring.push((hash64(format!("{}#{v}", t.address()).as_bytes()), i));
        }
    }
    ring.sort_unstable();
    ring
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::target::{Outcome, PassiveHealthConfig};

    fn cfg(algorithm: Algorithm, weights: &[u32]) -> BalancerConfig {
        BalancerConfig {
            algorithm,
            targets: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| TargetConfig { address: format!("10.0.0.{i}:80"), weight: w })
                .collect(),
            health: HealthConfig::default(),
            max_connections_per_target: None,
        }
    }

    fn picks(b: &Balancer, n: usize) -> Vec<usize> {
        let now = Instant::now();
        (0..n).map(|_| b.select(None, &[], now).unwrap().index).collect()
    }

    /// Weights 5,1,1 give nginx's smooth sequence a a b a c a a.
    #[test]
    fn smooth_weighted_round_robin() {
        let b = Balancer::new(cfg(Algorithm::RoundRobin, &[5, 1, 1]), None);
        assert_eq!(picks(&b, 7), [0, 0, 1, 0, 2, 0, 0]);
        let b = Balancer::new(cfg(Algorithm::RoundRobin, &[100, 100, 0]), None);
        assert_eq!(picks(&b, 4), [0, 1, 0, 1]);
    }

    /// Huge, coprime weights are scaled to a bounded sequence with the right proportions.
    #[test]
    fn large_weights_are_scaled() {
        let b = Balancer::new(cfg(Algorithm::RoundRobin, &[10_000, 9_999, 1]), None);
        assert!(b.sequence.len() as u64 <= MAX_SEQUENCE + 3);
        let p = picks(&b, b.sequence.len());
        assert!(p.contains(&2), "a tiny weight still gets traffic");
        let zero = p.iter().filter(|&&i| i == 0).count() as f64;
        let one = p.iter().filter(|&&i| i == 1).count() as f64;
        assert!((zero / one - 1.0).abs() < 0.01);
    }

    /// Unavailable targets are skipped; when none is left the error says why.
    #[test]
    fn skips_unavailable_and_reports() {
        let mut c = cfg(Algorithm::RoundRobin, &[1, 1]);
        c.health.passive = Some(PassiveHealthConfig {
            consecutive_failures: 1,
            ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(10),
        });
        let b = Balancer::new(c, None);
        let now = Instant::now();
        b.targets()[0].begin().finish(Outcome::Failure, Duration::from_millis(1), now);
        assert!(picks(&b, 6).iter().all(|&i| i == 1));
        b.targets()[1].begin().finish(Outcome::Failure, Duration::from_millis(1), now);
        assert_eq!(b.select(None, &[], now).unwrap_err(), SelectError::NoHealthyTarget);
    }

    /// Retries avoid tried targets when possible and fall back to them otherwise.
    #[test]
    fn tried_targets_are_avoided() {
        let b = Balancer::new(cfg(Algorithm::RoundRobin, &[1, 1, 1]), None);
        let now = Instant::now();
        for _ in 0..10 {
            let s = b.select(None, &[0, 1], now).unwrap();
            assert_eq!(s.index, 2);
        }
        let one = Balancer::new(cfg(Algorithm::RoundRobin, &[1]), None);
        assert_eq!(one.select(None, &[0], now).unwrap().index, 0);
    }

    /// The connection cap turns into AllAtCapacity.
    #[test]
    fn capacity() {
        let mut c = cfg(Algorithm::LeastConnections, &[1]);
        c.max_connections_per_target = Some(1);
        let b = Balancer::new(c, None);
        let now = Instant::now();
        let g = b.select(None, &[], now).unwrap().target.begin();
        assert_eq!(b.select(None, &[], now).unwrap_err(), SelectError::AllAtCapacity);
        drop(g);
        assert!(b.select(None, &[], now).is_ok());
    }

    /// Least connections picks the idle target, weighing by weight.
    #[test]
    fn least_connections() {
        let b = Balancer::new(cfg(Algorithm::LeastConnections, &[1, 1, 2]), None);
        let now = Instant::now();
        let _g0 = b.targets()[0].begin();
        let _g2 = b.targets()[2].begin();
        assert_eq!(b.select(None, &[], now).unwrap().index, 1);
        let _g1 = b.targets()[1].begin();
        // 1/1, 1/1, 1/2: the heavier target has the lowest load per weight.
        assert_eq!(b.select(None, &[], now).unwrap().index, 2);
    }

    /// The same key goes to the same target; adding a target moves about 1/N of the keys.
    #[test]
    fn consistent_hash_stability() {
        let b4 = Balancer::new(cfg(Algorithm::ConsistentHash, &[100; 4]), None);
        let b5 = Balancer::new(cfg(Algorithm::ConsistentHash, &[100; 5]), None);
        let now = Instant::now();
        let mut moved = 0;
        let n = 10_000;
        let mut counts = [0usize; 4];
        for k in 0..n {
            let key = format!("user-{k}");
            let a = b4.select(Some(key.as_bytes()), &[], now).unwrap().index;
            assert_eq!(a, b4.select(Some(key.as_bytes()), &[], now).unwrap().index);
            counts[a] += 1;
            if b5.select(Some(key.as_bytes()), &[], now).unwrap().index != a {
                moved += 1;
            }
        }
        let frac = moved as f64 / n as f64;
        assert!((0.12..0.28).contains(&frac), "moved {frac}");
        for c in counts {
            assert!((1_800..3_200).contains(&c), "unbalanced ring: {counts:?}");
        }
    }

    /// A consistent-hash key whose target is down goes to the next target on the ring.
    #[test]
    fn consistent_hash_skips_down_targets() {
        let mut c = cfg(Algorithm::ConsistentHash, &[100; 3]);
        c.health.passive = Some(PassiveHealthConfig {
            consecutive_failures: 1,
            ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(10),
        });
        let b = Balancer::new(c, None);
        let now = Instant::now();
        let first = b.select(Some(b"k"), &[], now).unwrap().index;
        b.targets()[first].begin().finish(Outcome::Failure, Duration::from_millis(1), now);
        let second = b.select(Some(b"k"), &[], now).unwrap().index;
        assert_ne!(first, second);
    }

    /// EWMA P2C sends most traffic to the fast target.
    #[test]
    fn ewma_prefers_fast_targets() {
        let b = Balancer::new(cfg(Algorithm::Ewma, &[100, 100, 100]), None);
        let now = Instant::now();
        for (i, ms) in [(0, 50u64), (1, 2), (2, 50)] {
            b.targets()[i].begin().finish(Outcome::Success, Duration::from_millis(ms), now);
        }
        let fast = (0..1000).filter(|_| b.select(None, &[], now).unwrap().index == 1).count();
        // Target 1 wins every pair it is in: 2/3 of pairs.
        assert!(fast > 600, "{fast}");
    }

    /// Rebuilding keeps health and in-flight state for unchanged targets.
    #[test]
    fn state_survives_rebuild() {
        let mut c = cfg(Algorithm::RoundRobin, &[1, 1]);
        c.health.passive = Some(PassiveHealthConfig {
            consecutive_failures: 1,
            ejection_time: Duration::from_secs(60),
            max_ejection_time: Duration::from_secs(60),
        });
        let b1 = Balancer::new(c.clone(), None);
        let now = Instant::now();
        b1.targets()[0].begin().finish(Outcome::Failure, Duration::from_millis(1), now);
        let g = b1.targets()[1].begin();
        let b2 = Balancer::new(c.clone(), Some(&b1));
        assert!(!b2.targets()[0].is_available(now));
        assert_eq!(b2.targets()[1].in_flight(), 1);
        drop(g);
        assert_eq!(b2.targets()[1].in_flight(), 0);
        c.targets[1].weight = 5;
        let b3 = Balancer::new(c, Some(&b2));
        assert!(!b3.targets()[0].is_available(now), "ejection kept across a weight change");
    }

    /// Concurrent select/begin/finish from 4 threads leaves no request counted in flight.
    #[test]
    fn concurrent_use_balances_counts() {
        let b = Arc::new(Balancer::new(cfg(Algorithm::LeastConnections, &[1, 2, 3]), None));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let now = Instant::now();
                        let s = b.select(None, &[], now).unwrap();
                        let g = s.target.begin();
                        g.finish(Outcome::Success, Duration::from_micros(10), now);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(b.targets().iter().all(|t| t.in_flight() == 0));
    }
}
