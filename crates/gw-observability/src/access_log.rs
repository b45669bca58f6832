//! The structured access log: one JSON object per line, written by a dedicated thread so the
//! request path never blocks on stdout or disk.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Where lines go.
#[derive(Debug, Clone, PartialEq)]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Appended to a file (created if missing).
    File(PathBuf),
}

/// One access log line. Field names are stable (documented in `docs/configuration.md`).
#[derive(Debug, Serialize)]
pub struct AccessLogLine<'a> {
    /// RFC 3339 UTC time the request started.
    pub time: Rfc3339,
    /// Request id.
    pub request_id: &'a str,
    /// Real client IP.
    pub client_ip: IpAddr,
    /// Method.
    pub method: &'a str,
    /// Host.
    pub host: &'a str,
    /// Path (without query: queries often carry secrets).
    pub path: &'a str,
    /// HTTP version.
    pub protocol: &'a str,
    /// Route name.
    pub route: Option<&'a str>,
    /// Service name.
    pub service: Option<&'a str>,
    /// Consumer user name.
    pub consumer: Option<&'a str>,
    /// Upstream target of the last attempt.
    pub upstream: Option<&'a str>,
    /// Status sent.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes_sent: u64,
    /// Request body bytes received.
    pub bytes_received: u64,
    /// Total latency, milliseconds.
    pub latency_ms: f64,
    /// Upstream latency, milliseconds.
    pub upstream_latency_ms: Option<f64>,
    /// Gateway error code, if any.
    pub error: Option<&'static str>,
    /// The backend calls of an aggregate: `name:status-or-error-code:ms`, comma-separated
    /// (absent for other services).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<&'a str>,
    /// What the response cache did (`HIT`, `MISS`, `EXPIRED`, `STALE`, `REVALIDATED`,
    /// `BYPASS`), on routes with `proxy-cache`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'a str>,
    /// Trace id (32 hex digits) when tracing is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    /// The request's server span id (16 hex digits) when tracing is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_id: Option<&'a str>,
}

impl AccessLogLine<'_> {
    /// Write the line as one JSON object: the same document `serde_json` would produce (the
    /// test compares them), written directly because this runs once per request.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let mut ts = [0u8; 24];
        out.extend_from_slice(b"{\"time\":\"");
        out.extend_from_slice(format_rfc3339(self.time.0, &mut ts).as_bytes());
        out.extend_from_slice(b"\",\"request_id\":");
        json_str(out, self.request_id);
        out.extend_from_slice(b",\"client_ip\":\"");
        let _ = write!(out, "{}", self.client_ip);
        out.extend_from_slice(b"\",\"method\":");
        json_str(out, self.method);
        out.extend_from_slice(b",\"host\":");
        json_str(out, self.host);
        out.extend_from_slice(b",\"path\":");
        json_str(out, self.path);
        out.extend_from_slice(b",\"protocol\":");
        json_str(out, self.protocol);
        for (k, v) in [
            (&b",\"route\":"[..], self.route),
            (b",\"service\":", self.service),
            (b",\"consumer\":", self.consumer),
            (b",\"upstream\":", self.upstream),
        ] {
            out.extend_from_slice(k);
            match v {
                Some(v) => json_str(out, v),
                None => out.extend_from_slice(b"null"),
            }
        }
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(n.format(self.status).as_bytes());
        out.extend_from_slice(b",\"bytes_sent\":");
        out.extend_from_slice(n.format(self.bytes_sent).as_bytes());
        out.extend_from_slice(b",\"bytes_received\":");
        out.extend_from_slice(n.format(self.bytes_received).as_bytes());
        out.extend_from_slice(b",\"latency_ms\":");
        json_f64(out, self.latency_ms);
        out.extend_from_slice(b",\"upstream_latency_ms\":");
        match self.upstream_latency_ms {
            Some(v) => json_f64(out, v),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"error\":");
        match self.error {
            Some(v) => json_str(out, v),
            None => out.extend_from_slice(b"null"),
        }
        if let Some(c) = self.calls {
            out.extend_from_slice(b",\"calls\":");
            json_str(out, c);
        }
        if let Some(c) = self.cache {
            out.extend_from_slice(b",\"cache\":");
            json_str(out, c);
        }
        if let Some(t) = self.trace_id {
            out.extend_from_slice(b",\"trace_id\":");
            json_str(out, t);
        }
        if let Some(s) = self.span_id {
            out.extend_from_slice(b",\"span_id\":");
            json_str(out, s);
        }
        out.push(b'}');
    }
}

/// A JSON string with the escapes JSON requires.
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0xf)]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

/// A finite float as JSON (shortest round-trip form); non-finite values become null.
fn json_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let mut b = ryu::Buffer::new();
        out.extend_from_slice(b.format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// The access log writer handle. Cloning shares the writer thread.
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<Vec<u8>>,
    /// Lines queued, and lines written out (and flushed) by the writer thread.
    progress: Arc<Progress>,
}

#[derive(Default)]
struct Progress {
    queued: AtomicU64,
    written: AtomicU64,
}

/// Lines buffered between the request path and the writer; beyond this, lines are dropped and
/// counted rather than slowing requests down.
const QUEUE: usize = 16 * 1024;

impl AccessLog {
    /// Start the writer thread. `on_drop` is called for each line dropped under overload.
    pub fn start(target: &AccessLogTarget) -> std::io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = match target {
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::Stderr => Box::new(std::io::stderr()),
            AccessLogTarget::File(p) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
        };
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        let progress = Arc::new(Progress::default());
        let p = progress.clone();
        std::thread::Builder::new().name("access-log".into()).spawn(move || writer(&rx, out, &p))?;
        Ok(AccessLog { tx, progress })
    }

    /// Wait (blocking, up to `within`) until every line queued so far is written out. Whether
    /// it was (a shutdown calls this before the process exits).
    pub fn flush(&self, within: Duration) -> bool {
        let target = self.progress.queued.load(Ordering::Acquire);
        let deadline = std::time::Instant::now() + within;
        while self.progress.written.load(Ordering::Acquire) < target {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Queue a line. Returns `false` if it was dropped (queue full or writer gone).
    pub fn log(&self, line: &AccessLogLine<'_>) -> bool {
        let mut buf = Vec::with_capacity(400);
        line.write_json(&mut buf);
        buf.push(b'\n');
        match self.tx.try_send(buf) {
            Ok(()) => {
                self.progress.queued.fetch_add(1, Ordering::Release);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// How often the writer drains the queue. Polling (instead of blocking on each line) means a
/// busy gateway never pays a thread wake-up per request: senders only push to the queue.
const DRAIN_EVERY: Duration = Duration::from_millis(10);

fn writer(rx: &Receiver<Vec<u8>>, out: Box<dyn Write + Send>, progress: &Progress) {
    use std::sync::mpsc::TryRecvError;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    loop {
        let mut wrote = 0;
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    let _ = out.write_all(&line);
                    wrote += 1;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    progress.written.fetch_add(wrote, Ordering::Release);
                    return;
                }
            }
        }
        if wrote > 0 {
            let _ = out.flush();
            progress.written.fetch_add(wrote, Ordering::Release);
        }
        std::thread::sleep(DRAIN_EVERY);
    }
}

/// RFC 3339 UTC timestamp with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let mut buf = [0u8; 24];
    format_rfc3339(t, &mut buf).to_string()
}

/// A wall-clock time serialized as RFC 3339 with milliseconds, without allocating.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(pub SystemTime);

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 24];
        s.serialize_str(format_rfc3339(self.0, &mut buf))
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` into `buf`.
fn format_rfc3339(t: SystemTime, buf: &mut [u8; 24]) -> &str {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (h, m, sec) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let (year, month, day) = gw_core::calendar::civil_from_days(days);
    let (year, month, day) = (year, i64::from(month), i64::from(day));
    let ms = i64::from(d.subsec_millis());
    let mut put = |at: usize, v: i64, width: usize| {
        let mut v = v.rem_euclid(10_i64.pow(width as u32));
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, h, 2);
    put(14, m, 2);
    put(17, sec, 2);
    put(20, ms, 3);
    for (i, c) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.'), (23, b'Z')] {
        buf[i] = c;
    }
    std::str::from_utf8(&buf[..]).unwrap_or("1970-01-01T00:00:00.000Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timestamps are RFC 3339 in UTC.
    /// The hand-written JSON equals serde_json's for ordinary and awkward values.
    #[test]
    fn json_matches_serde() {
        for (path, consumer, up, calls, trace) in [
            ("/p", None, Some(1.25), None, None),
            (
                "/q\"\\\n\u{1}é",
                Some("al\tice"),
                None,
                Some("user:200:12,news:upstream_timeout:800"),
                Some(("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")),
            ),
        ] {
            let line = AccessLogLine {
                time: Rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
                request_id: "abc",
                client_ip: "::1".parse().unwrap(),
                method: "GET",
                host: "h",
                path,
                protocol: "HTTP/1.1",
                route: Some("r"),
                service: None,
                consumer,
                upstream: Some("127.0.0.1:1"),
                status: 200,
                bytes_sent: 5,
                bytes_received: 0,
                latency_ms: 1.5,
                upstream_latency_ms: up,
                error: None,
                calls,
                cache: calls.map(|_| "HIT"),
                trace_id: trace.map(|t| t.0),
                span_id: trace.map(|t| t.1),
            };
            let mut mine = Vec::new();
            line.write_json(&mut mine);
            let ours: serde_json::Value = serde_json::from_slice(&mine).unwrap();
            let theirs = serde_json::to_value(&line).unwrap();
            assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(&mine));
        }
    }

    #[test]
    fn rfc3339_formats() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    /// Lines are written as JSON objects to a file.
    #[test]
    fn writes_json_lines_to_file() {
        let dir = std::env::temp_dir().join(format!("gw-al-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let log = AccessLog::start(&AccessLogTarget::File(path.clone())).unwrap();
        let line = AccessLogLine {
            time: Rfc3339(SystemTime::now()),
            request_id: "abc",
            client_ip: "127.0.0.1".parse().unwrap(),
            method: "GET",
            host: "h",
            path: "/p",
            protocol: "HTTP/1.1",
            route: Some("r"),
            service: Some("s"),
            consumer: None,
            upstream: Some("127.0.0.1:1"),
            status: 200,
            bytes_sent: 5,
            bytes_received: 0,
            latency_ms: 1.5,
            upstream_latency_ms: Some(1.0),
            error: None,
            calls: None,
            cache: None,
            trace_id: None,
            span_id: None,
        };
        assert!(log.log(&line));
        assert!(log.flush(Duration::from_secs(5)), "written within 5 s");
        assert!(std::fs::read_to_string(&path).unwrap_or_default().ends_with('\n'), "flushed to the file");
        let mut text = String::new();
        for _ in 0..100 {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.ends_with('\n') {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["request_id"], "abc");
        assert_eq!(v["status"], 200);
        assert_eq!(v["route"], "r");
    }
}
