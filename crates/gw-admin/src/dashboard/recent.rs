//! The last error log records of the process, for the dashboard: a `tracing` layer that keeps
//! every `WARN` and `ERROR` event (requests that failed upstream, reloads refused, stores
//! unreachable) in a bounded ring buffer. Events of other levels cost one level comparison.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

/// Records kept.
pub const CAPACITY: usize = 200;
/// Longest field value kept, in bytes (longer ones are cut at a character boundary).
const MAX_VALUE: usize = 512;

/// One error log record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ErrorRecord {
    /// Increases by one per record, from 1.
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    /// `WARN` or `ERROR`.
    pub level: &'static str,
    /// The event's message.
    pub message: String,
    /// The event's other fields.
    pub fields: Map<String, Value>,
}

/// The ring buffer.
pub struct RecentErrors {
    records: Mutex<VecDeque<ErrorRecord>>,
    seq: AtomicU64,
}

impl RecentErrors {
    fn new() -> RecentErrors {
        RecentErrors { records: Mutex::new(VecDeque::with_capacity(CAPACITY)), seq: AtomicU64::new(0) }
    }

    /// Keep `r` (its `seq` is assigned here), dropping the oldest record when full.
    pub fn push(&self, mut r: ErrorRecord) {
        let Ok(mut q) = self.records.lock() else { return };
        r.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if q.len() == CAPACITY {
            q.pop_front();
        }
        q.push_back(r);
    }

    /// The newest `n` records, newest first.
    pub fn latest(&self, n: usize) -> Vec<ErrorRecord> {
        match self.records.lock() {
            Ok(q) => q.iter().rev().take(n).cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Records so far (including those dropped from the buffer).
    pub fn total(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }
}

/// The process's buffer (filled once [`layer`] is installed in the subscriber).
pub fn recent_errors() -> &'static RecentErrors {
    static R: OnceLock<RecentErrors> = OnceLock::new();
    R.get_or_init(RecentErrors::new)
}

/// The layer that fills [`recent_errors`]; install it with
/// `gw_observability::init_tracing_with`.
pub fn layer() -> Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync> {
    Box::new(Collect)
}

struct Collect;

impl<S: Subscriber> tracing_subscriber::Layer<S> for Collect {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        // `Level` orders by verbosity: ERROR < WARN < INFO.
        if level > Level::WARN {
            return;
        }
        let mut v = Fields { message: String::new(), fields: Map::new() };
        event.record(&mut v);
        recent_errors().push(ErrorRecord {
            seq: 0,
            time: gw_observability::rfc3339(std::time::SystemTime::now()),
            level: if level == Level::ERROR { "ERROR" } else { "WARN" },
            message: v.message,
            fields: v.fields,
        });
    }
}

struct Fields {
    message: String,
    fields: Map<String, Value>,
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_VALUE {
        let mut end = MAX_VALUE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        // A string's (or header value's) `Debug` form is quoted: show the text.
        let text = match s.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
            Some(inner) if !inner.contains('"') => inner.to_string(),
            _ => s,
        };
        self.record_str(field, &text);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = cut(value.to_string());
        } else {
            self.fields.insert(field.name().to_string(), Value::String(cut(value.to_string())));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().to_string(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().to_string(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().to_string(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().to_string(), Value::from(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_records_in_a_bounded_buffer() {
        let r = RecentErrors::new();
        for i in 0..(CAPACITY + 5) {
            r.push(ErrorRecord {
                seq: 0,
                time: String::new(),
                level: "WARN",
                message: format!("m{i}"),
                fields: Map::new(),
            });
        }
        let l = r.latest(3);
        assert_eq!(
            l.iter().map(|x| x.message.as_str()).collect::<Vec<_>>(),
            [format!("m{}", CAPACITY + 4), format!("m{}", CAPACITY + 3), format!("m{}", CAPACITY + 2)]
        );
        assert_eq!(r.latest(usize::MAX).len(), CAPACITY);
        assert_eq!(r.total(), (CAPACITY + 5) as u64);
        assert_eq!(l[0].seq, (CAPACITY + 5) as u64);
    }

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        let s = cut("é".repeat(400));
        assert!(s.len() <= MAX_VALUE + '…'.len_utf8());
        assert!(s.ends_with('…'));
    }
}
