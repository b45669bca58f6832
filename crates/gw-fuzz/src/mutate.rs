//! Line-wise YAML mutations for the `config` target (libFuzzer's custom mutator calls
//! [`yaml`] for half of its mutations; its own byte-level mutations do the rest). Each keeps
//! the document line-shaped: lines are dropped, repeated, moved, re-indented, and keys and
//! values are replaced by ones the configuration knows, so that mutants reach validation
//! rather than failing in the YAML parser.

/// Keys of the configuration file format and of plugin configurations.
pub const KEYS: &[&str] = &[
    "gateway",
    "listeners",
    "services",
    "routes",
    "upstreams",
    "plugins",
    "consumers",
    "certificates",
    "admin",
    "name",
    "address",
    "url",
    "type",
    "service",
    "upstream",
    "paths",
    "hosts",
    "methods",
    "headers",
    "query",
    "priority",
    "strip_path",
    "preserve_host",
    "rewrite",
    "path",
    "protocol",
    "protocols",
    "targets",
    "target",
    "weight",
    "algorithm",
    "hash_on",
    "timeouts",
    "connect",
    "read",
    "write",
    "retries",
    "attempts",
    "on_statuses",
    "health_checks",
    "active",
    "passive",
    "interval",
    "timeout",
    "healthy_threshold",
    "unhealthy_threshold",
    "circuit_breaker",
    "failure_ratio",
    "min_requests",
    "open_duration",
    "half_open_requests",
    "tls",
    "cert",
    "key",
    "cert_file",
    "key_file",
    "ca_file",
    "client_ca_file",
    "client_cert_file",
    "client_key_file",
    "client_cert_required",
    "sni",
    "snis",
    "verify",
    "min_version",
    "http2",
    "redirect_https_port",
    "limits",
    "max_header_bytes",
    "max_headers",
    "max_uri_bytes",
    "max_body_bytes",
    "max_connections",
    "max_concurrent_streams",
    "header_read_timeout",
    "idle_timeout",
    "shutdown_timeout",
    "worker_threads",
    "status_listener",
    "access_log",
    "request_id_header",
    "trusted_proxies",
    "redis",
    "cluster_urls",
    "node_id",
    "response",
    "status",
    "body",
    "message",
    "plugin",
    "route",
    "consumer",
    "config",
    "enabled",
    "tags",
    "username",
    "custom_id",
    "groups",
    "credentials",
    "tokens",
    "token_hash",
    "role",
    "window",
    "limit",
    "policy",
    "second",
    "minute",
    "hour",
    "day",
    "allow",
    "deny",
    "origins",
    "add",
    "remove",
    "replace",
    "rename",
    "json",
    "key_names",
    "hide_credentials",
    "anonymous",
    "secret",
    "algorithms",
    "jwks_url",
    "claims_to_verify",
];

/// Values worth trying: plugin and service types, durations, sizes, numbers at the edges,
/// addresses, paths, YAML specials, substitutions.
pub const VALUES: &[&str] = &[
    "static",
    "echo",
    "proxy",
    "request-termination",
    "rate-limiting",
    "key-auth",
    "jwt",
    "basic-auth",
    "hmac-auth",
    "acl",
    "cors",
    "ip-restriction",
    "bot-detection",
    "request-transformer",
    "response-transformer",
    "quota",
    "forward-auth",
    "mtls-auth",
    "round-robin",
    "least-connections",
    "consistent-hashing",
    "ewma",
    "http",
    "https",
    "h2",
    "grpc",
    "0",
    "1",
    "-1",
    "65535",
    "65536",
    "4294967296",
    "18446744073709551616",
    "1.5",
    "1e400",
    "0s",
    "1ms",
    "10s",
    "1h",
    "100y",
    "-5s",
    "8KiB",
    "1MiB",
    "0B",
    "true",
    "false",
    "null",
    "~",
    "\"\"",
    "[]",
    "{}",
    "[/a, /b]",
    "\"/x/*\"",
    "\"/{id}\"",
    "\"/a/{x}/{x}\"",
    "127.0.0.1:8080",
    "[::1]:0",
    "0.0.0.0:99999",
    "http://127.0.0.1:1",
    "http://[::1]:80/p",
    "https://h/",
    "redis://127.0.0.1:6379",
    "10.0.0.0/8",
    "::/0",
    "${PORT}",
    "${HOST}:${PORT}",
    "${UNSET}",
    "${UNSET:-x}",
    "\"${SECRET}\"",
    "$${PORT}",
    "*a",
    "&a x",
    "!!binary AA",
    "|\n  text",
    ">-\n  text",
    "\"\\u0000\"",
    "'\\x00'",
    "\"\\ud800\"",
    "\u{feff}",
    "é",
    "GET",
    "[GET, POST]",
];

/// A small deterministic generator seeded by libFuzzer's seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Mutate `text` line-wise. `None` when `text` is not UTF-8 (the byte mutator takes over).
pub fn yaml(data: &[u8], seed: u32, max_size: usize) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(data).ok()?;
    let mut rng = Rng(u64::from(seed) | 1 << 40);
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let n = lines.len();
    let i = rng.below(n);
    match rng.below(8) {
        0 if n > 1 => {
            lines.remove(i);
        }
        1 => {
            let l = lines[i].clone();
            lines.insert(i, l);
        }
        2 => {
            let j = rng.below(n);
            lines.swap(i, j);
        }
        3 => {
            let l = &mut lines[i];
            if rng.below(2) == 0 {
                l.insert_str(0, "  ");
            } else if l.starts_with("  ") {
                l.replace_range(..2, "");
            }
        }
        4 => {
            // Replace the value of `key: value` (or of `- value`).
            let l = &lines[i];
            let at = l.find(": ").map(|p| p + 2).or_else(|| l.trim_start().starts_with("- ").then(|| indent_of(l) + 2));
            let at = at.unwrap_or(l.len());
            let v = VALUES[rng.below(VALUES.len())];
            let pad = " ".repeat(indent_of(l) + 2);
            let v = v.replace('\n', &format!("\n{pad}"));
            lines[i] = format!("{}{}", &l[..at], v);
        }
        5 => {
            // A known key, at this line's indentation (or one level deeper), after it.
            let ind = indent_of(&lines[i]) + 2 * rng.below(2);
            let k = KEYS[rng.below(KEYS.len())];
            let v = if rng.below(3) == 0 { String::new() } else { format!(" {}", VALUES[rng.below(VALUES.len())]) };
            lines.insert(i + 1, format!("{}{k}:{v}", " ".repeat(ind)));
        }
        6 => {
            // Rename the key of `key: ...`.
            let l = &lines[i];
            if let Some(colon) = l.find(':') {
                let start = indent_of(l) + if l.trim_start().starts_with("- ") { 2 } else { 0 };
                if start <= colon {
                    let k = KEYS[rng.below(KEYS.len())];
                    lines[i] = format!("{}{k}{}", &l[..start], &l[colon..]);
                }
            }
        }
        _ => {
            // Copy a block of lines elsewhere (another route, another service...).
            let len = 1 + rng.below(8).min(n - i - 1);
            let block: Vec<String> = lines[i..i + len].to_vec();
            let to = rng.below(n + 1);
            for (k, l) in block.into_iter().enumerate() {
                lines.insert(to + k, l);
            }
        }
    }
    let out = lines.join("\n").into_bytes();
    (out.len() <= max_size).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mutants stay UTF-8 and within the size bound; the seed decides (deterministic).
    #[test]
    fn mutants_are_text_and_deterministic() {
        let seed = b"routes:\n  - name: a\n    service: s\n    paths: [/x]\n";
        let mut changed = 0;
        for s in 0..2000 {
            let m = yaml(seed, s, 4096).unwrap_or_else(|| seed.to_vec());
            assert!(std::str::from_utf8(&m).is_ok());
            assert!(m.len() <= 4096);
            assert_eq!(yaml(seed, s, 4096), yaml(seed, s, 4096));
            changed += usize::from(m != seed);
        }
        assert!(changed > 1500, "only {changed} of 2000 mutants differ");
        assert_eq!(yaml(b"\xff", 1, 100), None);
    }
}
