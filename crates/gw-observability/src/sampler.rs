//! Sampling of warning lines about expected refusals (an open circuit, a rate-limit store
//! failing closed, no healthy upstream): under load each would otherwise write one line per
//! request. The requests are still counted one by one in `gatehouse_http_errors_total`; the log
//! gets at most one line per kind per interval, with the number of lines left out since the
//! previous one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What to do with one warning line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampled {
    /// Not a sampled kind: write it.
    Always,
    /// Write it, saying how many lines of this kind were left out since the last one.
    Write {
        /// Lines left out since the last one written.
        suppressed: u64,
    },
    /// Leave it out (counted for the next line written).
    Skip,
}

struct Slot {
    code: &'static str,
    /// Milliseconds since the sampler's epoch of the last line written, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

/// At most one line per kind (an error code) per interval.
pub struct LogSampler {
    epoch: Instant,
    every_ms: u64,
    slots: Vec<Slot>,
}

impl LogSampler {
    /// Sample the lines of `codes`, one per `every`.
    pub fn new(codes: &[&'static str], every: Duration) -> LogSampler {
        LogSampler {
            epoch: Instant::now(),
            every_ms: every.as_millis() as u64,
            slots: codes
                .iter()
                .map(|&code| Slot { code, last: AtomicU64::new(0), suppressed: AtomicU64::new(0) })
                .collect(),
        }
    }

    /// Decide for a line of kind `code` now.
    pub fn sample(&self, code: &str) -> Sampled {
        self.sample_at(code, Instant::now())
    }

    /// Decide for a line of kind `code` at `now`.
    pub fn sample_at(&self, code: &str, now: Instant) -> Sampled {
        let Some(slot) = self.slots.iter().find(|s| s.code == code) else { return Sampled::Always };
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64 + 1;
        let last = slot.last.load(Ordering::Acquire);
        if (last == 0 || now_ms >= last + self.every_ms)
            && slot.last.compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            return Sampled::Write { suppressed: slot.suppressed.swap(0, Ordering::AcqRel) };
        }
        slot.suppressed.fetch_add(1, Ordering::AcqRel);
        Sampled::Skip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One line per kind per interval, each kind on its own; other kinds always; the count of
    /// lines left out comes with the next line.
    #[test]
    fn one_line_per_kind_per_interval() {
        let s = LogSampler::new(&["circuit_open", "no_healthy_upstream"], Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(s.sample_at("circuit_open", t0), Sampled::Write { suppressed: 0 });
        for i in 0..999 {
            assert_eq!(s.sample_at("circuit_open", t0 + Duration::from_micros(i * 900)), Sampled::Skip);
        }
        assert_eq!(s.sample_at("no_healthy_upstream", t0), Sampled::Write { suppressed: 0 });
        assert_eq!(s.sample_at("upstream_timeout", t0), Sampled::Always);
        assert_eq!(s.sample_at("circuit_open", t0 + Duration::from_millis(1000)), Sampled::Write { suppressed: 999 });
        assert_eq!(s.sample_at("circuit_open", t0 + Duration::from_millis(1500)), Sampled::Skip);
    }

    /// Concurrent callers: exactly one line per interval.
    #[test]
    fn concurrent_callers_write_once() {
        let s = std::sync::Arc::new(LogSampler::new(&["circuit_open"], Duration::from_secs(3600)));
        let written: usize = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let s = s.clone();
                    sc.spawn(move || (0..1000).filter(|_| s.sample("circuit_open") != Sampled::Skip).count())
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        assert_eq!(written, 1);
    }
}
