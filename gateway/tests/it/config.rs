//! Configuration loading through the real binary: `${VAR}` substitution in every scalar style
//! (and none in Admin API documents), `validate` errors with file, line and key, relative paths
//! from another working directory, reload triggers installed before a large file is read, and
//! every YAML example of docs/ validated as written.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::binary::write;
use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// A `gatehouse` process and its stderr lines (JSON logs).
struct Gw {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Gw {
    /// `gatehouse <args>` with extra environment variables, in `cwd` when given; stdout is
    /// dropped, stderr is collected line by line.
    fn spawn(args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> Gw {
        let mut cmd = Command::new(BIN);
        cmd.args(args).envs(env.iter().copied()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        if let Some(d) = cwd {
            cmd.current_dir(d);
        }
        let mut child = cmd.spawn().expect("spawn gatehouse");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = r.next_line().await {
                let _ = tx.send(l);
            }
        });
        Gw { child, lines, seen: Vec::new() }
    }

    /// `gatehouse run --log-format json <args>`, returned once started with the address of the
    /// proxy listener `main`.
    async fn run(args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> (Gw, std::net::SocketAddr) {
        let mut all = vec!["run", "--log-format", "json"];
        all.extend_from_slice(args);
        let mut g = Gw::spawn(&all, env, cwd);
        let addr = g.main_addr(Duration::from_secs(60)).await;
        g.wait_for("gatehouse started", Duration::from_secs(60)).await;
        (g, addr)
    }

    async fn main_addr(&mut self, within: Duration) -> std::net::SocketAddr {
        let line = self.wait_for("\"listener\":\"main\"", within).await;
        let v: Value = serde_json::from_str(&line).expect("json log line");
        v["addr"].as_str().expect("addr field").parse().expect("socket address")
    }

    /// The first line (seen or coming) containing `needle`.
    async fn wait_for(&mut self, needle: &str, within: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(l)) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                _ => panic!("no log line with {needle:?} within {within:?}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Lines that arrived so far, without waiting.
    fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }
}

/// `gatehouse validate FILE` with `env` only: (success, stdout + stderr).
async fn validate(file: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(BIN).arg("validate").arg(file).env_clear().envs(env.iter().copied()).output().await.unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Status of `GET url` sent by curl with `headers`.
async fn curl_status(url: &str, headers: &[&str], extra: &[&str]) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"]).args(extra);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().await.expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

const QUIET: &str =
    "gateway:\n  status_listener: \"off\"\n  access_log: { enabled: false }\n  admin: { listen: \"off\" }\n";

/// Issue 17, item 4: a consumer key written quoted as `"${ALICE_KEY}"` (as docs/plugins.md
/// shows) is the variable's value: the real secret authenticates and the literal text
/// `${ALICE_KEY}` gets 401. Single-quoted and block scalars too; with the variable unset,
/// `validate` fails naming the file, line, column and key.
#[tokio::test]
async fn quoted_env_references_are_substituted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.yaml");
    write(
        &cfg,
        &format!(
            "{QUIET}listeners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: echo\n    type: echo\nroutes:\n  - name: r\n    service: echo\n    paths: [\"/r\"]\nplugins:\n  - plugin: key-auth\n    route: r\nconsumers:\n  - username: alice\n    credentials:\n      - type: key-auth\n        key: \"${{ALICE_KEY}}\"\n  - username: bob\n    credentials:\n      - type: key-auth\n        key: 'bob-${{BOB_KEY}}'\n  - username: carol\n    credentials:\n      - type: key-auth\n        key: >-\n          ${{CAROL_KEY}}\n"
        ),
    );
    let env =
        [("ALICE_KEY", "alice-real-secret-1"), ("BOB_KEY", "real-secret-2"), ("CAROL_KEY", "carol-real-secret-3")];
    let (_g, addr) = Gw::run(&["--config", cfg.to_str().unwrap()], &env, None).await;
    let url = format!("http://{addr}/r");
    for (key, want) in [
        ("alice-real-secret-1", 200),
        ("bob-real-secret-2", 200),
        ("carol-real-secret-3", 200),
        ("${ALICE_KEY}", 401),
        ("bob-${BOB_KEY}", 401),
        ("${CAROL_KEY}", 401),
    ] {
        assert_eq!(curl_status(&url, &[&format!("apikey: {key}")], &[]).await, want, "key {key:?}");
    }

    let (ok, out) = validate(&cfg, &env[1..]).await;
    assert!(!ok, "validate passed with ALICE_KEY unset: {out}");
    assert!(
        out.contains(&format!(
            "{}:22:14: consumers[0].credentials[0].key: environment variable ALICE_KEY is not set",
            cfg.display()
        )),
        "{out}"
    );
    let (ok, out) = validate(&cfg, &env).await;
    assert!(ok, "{out}");
}

/// Issue 16: `validate` names file, line, column and key for a duplicate key, an unset
/// variable, a plugin config of the wrong type and an error found only by compiling; an empty
/// file (or one with only comments) is an error.
#[tokio::test]
async fn validate_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, String, &str)] = &[
        ("dup.yaml", format!("{QUIET}routes: []\nroutes: []\n"), ":6:1: routes: duplicate key `routes`"),
        (
            "dup-nested.yaml",
            format!("{QUIET}services:\n  - name: a\n    type: echo\n    name: b\n"),
            ":8:5: services[0].name: duplicate key `name`",
        ),
        ("empty.yaml", String::new(), ":1:1: empty configuration"),
        ("comments.yaml", "# gateway config\n\n# nothing yet\n".into(), ":1:1: empty configuration"),
        (
            "unset.yaml",
            format!("{QUIET}services:\n  - name: a\n    url: http://127.0.0.1:${{NOT_SET_X}}\n"),
            ":7:10: services[0].url: environment variable NOT_SET_X is not set",
        ),
        (
            "plugin.yaml",
            format!("{QUIET}plugins:\n  - plugin: rate-limiting\n    config:\n      minute: lots\n"),
            ":8:7: plugins[0].config.minute: invalid type: string \"lots\"",
        ),
        (
            "plugin-config-first.yaml",
            format!("{QUIET}plugins:\n  - config:\n      minute: lots\n    plugin: rate-limiting\n"),
            ":7:7: plugins[0].config.minute: invalid type: string \"lots\"",
        ),
        (
            "detached-max.yaml",
            format!("{QUIET}  limits:\n    max_detached_reads: 200000\n"),
            ":6:5: gateway.limits.max_detached_reads: must be at most 100000",
        ),
        (
            "detached-timeout.yaml",
            format!("{QUIET}  limits:\n    detached_read_timeout: 0s\n"),
            ":6:5: gateway.limits.detached_read_timeout: must be between 1ms and 1h",
        ),
        (
            "detached-type.yaml",
            format!("{QUIET}  limits:\n    max_detached_reads: lots\n"),
            ":6:5: gateway.limits.max_detached_reads: invalid type: string \"lots\"",
        ),
        (
            "tracing-tls.yaml",
            format!(
                "{QUIET}  tracing:\n    enabled: true\n    endpoint: http://127.0.0.1:4317\n    tls: {{ verify: false }}\n"
            ),
            ":8:5: gateway.tracing.tls: `tls` needs an https:// endpoint",
        ),
        (
            "tracing-header.yaml",
            format!("{QUIET}  tracing:\n    enabled: true\n    headers:\n      content-type: text/plain\n"),
            ":8:7: gateway.tracing.headers.content-type: is set by the exporter itself",
        ),
        (
            "tracing-header-value.yaml",
            format!("{QUIET}  tracing:\n    enabled: true\n    headers:\n      x-api-key: \"sec\\x01ret\"\n"),
            ":8:7: gateway.tracing.headers.x-api-key: the value is not a valid header value",
        ),
        (
            "tracing-header-twice.yaml",
            format!("{QUIET}  tracing:\n    enabled: true\n    headers:\n      X-Key: a\n      x-key: b\n"),
            ":9:7: gateway.tracing.headers.x-key: is given twice (header names are case-insensitive)",
        ),
        (
            "tracing-header-bin.yaml",
            format!("{QUIET}  tracing:\n    enabled: true\n    headers:\n      x-token-bin: YWJj\n"),
            ":8:7: gateway.tracing.headers.x-token-bin: binary gRPC metadata (`-bin`) is not supported",
        ),
        (
            "tracing-compression.yaml",
            format!("{QUIET}  tracing:\n    enabled: true\n    compression: zstd\n"),
            ":7:5: gateway.tracing.compression: \"zstd\": use none or gzip",
        ),
        // Found only when compiling: located at the plugin it names.
        (
            "compile.yaml",
            format!(
                "{QUIET}plugins:\n  - plugin: quota\n    name: api-plans\n    config: {{ limit: 10, policy: redis }}\n"
            ),
            ":6:5: plugins[0]: policy `redis` needs `gateway.redis`",
        ),
    ];
    for (name, text, want) in cases {
        let f = dir.path().join(name);
        write(&f, text);
        let (ok, out) = validate(&f, &[]).await;
        assert!(!ok, "{name} passed: {out}");
        assert!(out.contains(&format!("{}{want}", f.display())), "{name}: want {want:?} in:\n{out}");
    }
}

/// Relative file paths are relative to the configuration file's directory, not to the working
/// directory, for every key that names a file: certificates, listener client CA, upstream CA,
/// Admin API TLS, the Redis CA (issue 17, item 5) and a file access log. The gateway runs from
/// another directory.
#[tokio::test]
async fn relative_paths_follow_the_config_file() {
    let ca = gw_test_util::TestCa::new("paths-ca");
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(conf.join("tls")).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let srv = ca.server(&["localhost", "gw.test"]);
    for (f, text) in
        [("tls/ca.pem", ca.pem()), ("tls/srv.crt", srv.cert_pem.clone()), ("tls/srv.key", srv.key_pem.clone())]
    {
        std::fs::write(conf.join(f), text).unwrap();
    }
    // Our own redis-server over TLS (its files are given absolute: it is not under test).
    let redis_port = free_port();
    let child = std::process::Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "no", "--tls-auth-clients", "no"])
        .arg("--tls-cert-file")
        .arg(conf.join("tls/srv.crt"))
        .arg("--tls-key-file")
        .arg(conf.join("tls/srv.key"))
        .arg("--tls-ca-cert-file")
        .arg(conf.join("tls/ca.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    let _redis = KillOnDrop(child);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (tls_port, admin_port) = (free_port(), free_port());
    let up = Upstream::start(Behavior::Echo("behind-tls")).await;
    let yaml = format!(
        "gateway:\n  status_listener: \"off\"\n  access_log: {{ target: logs-access.log }}\n  redis: {{ url: \"rediss://localhost:{redis_port}/\", ca_file: tls/ca.pem, timeout: 2s }}\n  admin:\n    listen: 127.0.0.1:{admin_port}\n    tokens: [{{ name: ops, token_hash: \"{}\" }}]\n    tls: {{ cert_file: tls/srv.crt, key_file: ./tls/srv.key }}\ncertificates:\n  - name: srv\n    cert_file: tls/srv.crt\n    key_file: tls/srv.key\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\n  - name: tls\n    address: 127.0.0.1:{tls_port}\n    tls: {{ client_ca_file: tls/ca.pem }}\nservices:\n  - name: up\n    url: http://{}\n  - name: via-tls\n    url: https://127.0.0.1:{tls_port}/direct\n    tls: {{ ca_file: tls/ca.pem, sni: gw.test }}\nroutes:\n  - name: limited\n    service: up\n    paths: [\"/limited\"]\n  - name: direct\n    service: up\n    paths: [\"/direct/*\"]\n  - name: hop\n    service: via-tls\n    paths: [\"/hop\"]\nplugins:\n  - plugin: rate-limiting\n    route: limited\n    config: {{ minute: 3, policy: redis, failure_mode: closed }}\n",
        sha256_token("ops-token-0123456789"),
        up.authority(),
    );
    write(&conf.join("gw.yaml"), &yaml);
    // Validation from another directory finds every file.
    let out =
        Command::new(BIN).arg("validate").arg(conf.join("gw.yaml")).current_dir(&elsewhere).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let cfg = conf.join("gw.yaml");
    let (_g, addr) = Gw::run(&["--config", cfg.to_str().unwrap()], &[], Some(&elsewhere)).await;
    // Upstream TLS verified with the relative CA, through the TLS listener's relative certificate.
    let hop = client().get(format!("http://{addr}/hop")).send().await.unwrap();
    assert_eq!(hop.status(), 200);
    assert_eq!(hop.headers()["x-upstream"], "behind-tls");
    // Redis over TLS with the relative CA: exact limit (fail-closed would give 503s).
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(curl_status(&format!("http://{addr}/limited"), &[], &[]).await);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429], "redis ca_file from the config directory");
    // The Admin API over TLS with the relative certificate and key.
    let ca_path = conf.join("tls/ca.pem");
    let admin = curl_status(
        &format!("https://localhost:{admin_port}/status"),
        &["authorization: Bearer ops-token-0123456789"],
        &["--cacert", ca_path.to_str().unwrap()],
    )
    .await;
    assert_eq!(admin, 200, "admin API over TLS");
    // The access log is written beside the configuration.
    assert_eq!(curl_status(&format!("http://{addr}/direct"), &[], &[]).await, 200);
    let log = conf.join("logs-access.log");
    let found = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/direct"))
    })
    .await;
    assert!(found, "access log not at {}", log.display());
    assert!(!elsewhere.join("logs-access.log").exists(), "access log written in the working directory");
}

/// Issue 16, item 8: SIGHUP sent again and again from the moment the process opens its
/// configuration, while it reads and compiles 10,000 routes, never ends it; it comes up and
/// serves. (Before `main` runs no handler can exist; the process installs its handler first
/// thing, before reading.)
#[tokio::test]
async fn sighup_during_startup_is_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.yaml");
    write(&cfg, &many_routes("one"));
    let g = spawn_and_wait_for_open(&["run", "--log-format", "json", "--config", cfg.to_str().unwrap()], &cfg).await;
    let (_g, addr) = hup_until_started(g).await;
    assert_eq!(route_of(addr, "/marker").await.as_deref(), Some("one"));
    assert_eq!(route_of(addr, "/r/9999").await.as_deref(), Some("r9999"));
}

/// The same in store mode (embedded store seeded from a file of 10,000 routes).
#[tokio::test]
async fn sighup_during_startup_is_not_fatal_in_store_mode() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("seed.yaml");
    write(&cfg, &many_routes("one"));
    let store = format!("embedded:{}", dir.path().join("data").display());
    let g = spawn_and_wait_for_open(
        &["run", "--log-format", "json", "--store", &store, "--config", cfg.to_str().unwrap()],
        &cfg,
    )
    .await;
    let (_g, addr) = hup_until_started(g).await;
    assert_eq!(route_of(addr, "/r/9999").await.as_deref(), Some("r9999"));
}

/// Issue 16, item 8: a change of the file made right after the process read it (while it is
/// still compiling 10,000 routes, before it serves) is applied.
#[tokio::test]
async fn file_change_during_startup_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.yaml");
    write(&cfg, &many_routes("one"));
    let mut g =
        spawn_and_wait_for_open(&["run", "--log-format", "json", "--config", cfg.to_str().unwrap()], &cfg).await;
    write(&cfg, &many_routes("two"));
    g.drain();
    assert!(g.child.try_wait().unwrap().is_none(), "exited: {}", g.seen.join("\n"));
    let addr = g.main_addr(Duration::from_secs(60)).await;
    g.wait_for("gatehouse started", Duration::from_secs(60)).await;
    let applied =
        eventually(Duration::from_secs(60), || async { route_of(addr, "/marker").await.as_deref() == Some("two") })
            .await;
    g.drain();
    assert!(applied, "the change made during start-up was not applied; log:\n{}", g.seen.join("\n"));
}

/// Issue 17, item 4 and issue 16: the Admin API (store mode, the real binary) takes nothing
/// from the gateway's environment and names the leaf key of a plugin config error.
#[tokio::test]
async fn admin_api_documents_are_not_substituted() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    let admin_port = free_port();
    write(
        &seed,
        &format!(
            "gateway:\n  status_listener: \"off\"\n  access_log: {{ enabled: false }}\n  admin:\n    listen: 127.0.0.1:{admin_port}\n    tokens: [{{ name: ops, token_hash: \"{}\" }}]\nlisteners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: echo\n    type: echo\n  - name: lit\n    type: static\n    response: {{ body: \"$${{NOT_A_REF}} from ${{SEED_VALUE}}\" }}\nroutes:\n  - name: r\n    service: echo\n    paths: [\"/r\"]\n  - name: lit\n    service: lit\n    paths: [\"/lit\"]\n",
            sha256_token("ops-token-0123456789")
        ),
    );
    let store = format!("embedded:{}", dir.path().join("data").display());
    let (_g, addr) =
        Gw::run(&["--store", &store, "--config", seed.to_str().unwrap()], &[("SEED_VALUE", "the seed")], None).await;
    // The seed file is substituted; its escaped text stays literal.
    let body = client().get(format!("http://{addr}/lit")).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "${NOT_A_REF} from the seed");
    let admin = format!("http://127.0.0.1:{admin_port}");
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut b = client().request(method, format!("{admin}{path}")).bearer_auth("ops-token-0123456789");
        if let Some(body) = body {
            b = b.json(&body);
        }
        async move {
            let r = b.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // The stored document keeps the escape, so it reads back to the same value.
    let (s, v) = call(reqwest::Method::GET, "/services/lit", None).await;
    assert_eq!((s, v["response"]["body"].as_str()), (200, Some("$${NOT_A_REF} from the seed")));

    // A reference in a written entity is refused with its key (not hashed as text, not read
    // from the gateway's environment).
    let (s, v) = call(
        reqwest::Method::POST,
        "/consumers",
        Some(json!({"username": "alice", "credentials": [{"type": "key-auth", "key": "${HOME}"}]})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(field(&v).ends_with("credentials[0].key"), "{v}");
    assert!(v["errors"][0]["message"].as_str().unwrap_or("").contains("not in Admin API"), "{v}");
    let (s, v) = call(
        reqwest::Method::POST,
        "/services",
        Some(json!({"name": "leak", "type": "static", "response": {"body": "${HOME}"}})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(field(&v).ends_with("response.body"), "{v}");
    // `$${` is a literal `${`.
    let (s, v) =
        call(reqwest::Method::PUT, "/services/lit2", Some(json!({"type": "static", "response": {"body": "$${HOME}"}})))
            .await;
    assert_eq!(s, 201, "{v}");
    let (s, _) = call(reqwest::Method::PUT, "/routes/lit2", Some(json!({"service": "lit2", "paths": ["/lit2"]}))).await;
    assert_eq!(s, 201);
    let body = client().get(format!("http://{addr}/lit2")).send().await.unwrap().text().await.unwrap();
    assert_eq!(body, "${HOME}");

    // A plugin config of the wrong type names the leaf key.
    let (s, v) = call(
        reqwest::Method::POST,
        "/plugins",
        Some(json!({"plugin": "rate-limiting", "route": "r", "config": {"minute": "lots"}})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(field(&v).ends_with("config.minute"), "{v}");
    assert!(v["errors"][0]["message"].as_str().unwrap_or("").starts_with("invalid type: string \"lots\""), "{v}");

    // An import in YAML takes nothing from the environment either.
    let r = client()
        .put(format!("{admin}/config"))
        .bearer_auth("ops-token-0123456789")
        .header("content-type", "application/yaml")
        .body("services:\n  - name: s\n    type: static\n    response: { body: \"${HOME}\" }\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"][0]["field"], "services[0].response.body", "{v}");
}

/// The key path of the first error of an Admin API error body.
fn field(v: &Value) -> &str {
    v["errors"][0]["field"].as_str().unwrap_or("")
}

/// Every fenced ```yaml block of docs/*.md and every examples/*.yaml validates as written, with
/// `gatehouse validate`. The variables an example names are set (`*_HASH` to a token hash,
/// `*_PUBLIC_KEY_PEM` to an RSA public key, others to a 40-byte text) and the files it names
/// with a relative path are created beside it (certificates, keys and CAs of one test CA). A
/// block whose first line is `# fragment` is part of a document and is not checked.
#[tokio::test]
async fn docs_yaml_examples_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs")).unwrap().map(|e| e.unwrap().path()).collect();
    docs.sort();
    let mut fragments = Vec::new();
    for doc in docs.iter().filter(|p| p.extension().is_some_and(|e| e == "md")) {
        let text = std::fs::read_to_string(doc).unwrap();
        let name = doc.file_name().unwrap().to_string_lossy().to_string();
        for (line, block) in yaml_blocks(&text) {
            if block.lines().next().is_some_and(|l| l.trim_start().starts_with("# fragment")) {
                fragments.push(format!("docs/{name}:{line}"));
                continue;
            }
            let sub = dir.path().join(format!("{name}-{line}"));
            std::fs::create_dir_all(&sub).unwrap();
            let f = sub.join("gatehouse.yaml");
            std::fs::write(&f, &block).unwrap();
            files.push((format!("docs/{name}:{line}"), f));
        }
    }
    let mut examples: Vec<PathBuf> =
        std::fs::read_dir(root.join("examples")).unwrap().map(|e| e.unwrap().path()).collect();
    examples.sort();
    for e in examples.iter().filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml")) {
        files.push((format!("examples/{}", e.file_name().unwrap().to_string_lossy()), e.clone()));
    }
    assert!(files.len() >= 15, "found only {} examples", files.len());
    assert!(fragments.len() <= 2, "fragments are for the rare partial example: {fragments:?}");
    let ca = gw_test_util::TestCa::new("docs-ca");
    let srv = ca.server(&["localhost"]);
    let mut failures = Vec::new();
    for (what, f) in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (key, path) in file_refs(&text) {
            let p = f.parent().unwrap().join(&path);
            if Path::new(&path).is_absolute() || p.exists() {
                continue;
            }
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let pem = if key.ends_with("ca_file") {
                ca.pem()
            } else if key.ends_with("key_file") {
                srv.key_pem.clone()
            } else {
                srv.cert_pem.clone()
            };
            std::fs::write(&p, pem).unwrap();
        }
        let vars: Vec<(String, String)> = env_refs(&text)
            .into_iter()
            .map(|v| {
                let value = if v.ends_with("_HASH") {
                    sha256_token(&v)
                } else if v.ends_with("_PUBLIC_KEY_PEM") {
                    RSA_PUBLIC_KEY.to_string()
                } else {
                    format!("example-{}-0123456789abcdef0123456789", v.to_ascii_lowercase())
                };
                (v, value)
            })
            .collect();
        let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (ok, out) = validate(f, &env).await;
        if !ok {
            failures.push(format!("{what}:\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} examples fail:\n{}", failures.len(), files.len(), failures.join("\n"));
    eprintln!("{} YAML examples validated; fragments: {fragments:?}", files.len());
}

/// A public key for examples that name one (`*_PUBLIC_KEY_PEM`).
const RSA_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwaBZorV/Y6nP76eqz0M3
RMdkXnQC3yjECXUUxPGxbz6HHZxceSKvhnozOWKckNFo6CFDoUXfVAgtotue+uZL
TgK4x0mjcgHTZpFixRzs2sHwmyu/Ad3471+mbLBSXcC4aRR//T+HNxm7QtPWQ1II
cGVRD4zvHzuLPi533X1Xy0arDaCgXNiT+T41lUxu58ZP+e/u5ZGuIf+BfnlWj1t8
RigJvz4lpzoJdm7zQBlBYGUFmDfTh6wkZ+ICXjkwWgPvD+SXpqd6whKS1EkTWBzM
AjqDuZi9/enJIBfFlKLOsdrswhUc3+dn5RN2aBJU54eEqemSfnvfMtLtT0HcVBle
DQIDAQAB
-----END PUBLIC KEY-----
";

/// `(key, path)` of every `*_file: path` in a YAML text.
fn file_refs(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("_file:") {
        let key_start = text[..i].rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |k| k + 1);
        let key = format!("{}_file", &text[key_start..i]);
        let rest = text[i + "_file:".len()..].trim_start();
        let path: String = rest.chars().take_while(|c| !c.is_whitespace() && !matches!(c, ',' | '}' | '"')).collect();
        if !path.is_empty() {
            out.push((key, path));
        }
    }
    out
}

/// The ```yaml blocks of a Markdown text, with the line of their first line.
fn yaml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, l) in text.lines().enumerate() {
        match &mut cur {
            None if l.trim_start().starts_with("```yaml") || l.trim_start().starts_with("```yml") => {
                cur = Some((i + 2, String::new()));
            }
            Some(_) if l.trim_start().starts_with("```") => out.extend(cur.take()),
            Some((_, b)) => {
                b.push_str(l);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

/// Names of the `${VAR}` references in `text` (escaped `$${` ones excluded).
fn env_refs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'$' && b[i + 1] == b'$' {
            i += 2;
            continue;
        }
        if b[i] == b'$' && b[i + 1] == b'{' {
            let name: String = text[i + 2..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && !out.contains(&name) {
                out.push(name);
            }
        }
        i += 1;
    }
    out
}

/// Spawn `gatehouse <args>` and return once it has opened `file` (seen by inotify): from then
/// on it is reading its configuration.
async fn spawn_and_wait_for_open(args: &[&str], file: &Path) -> Gw {
    use notify::Watcher;
    let (tx, rx) = std::sync::mpsc::channel();
    let name = file.to_path_buf();
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && matches!(ev.kind, notify::EventKind::Access(notify::event::AccessKind::Open(_)))
            && ev.paths.contains(&name)
        {
            let _ = tx.send(());
        }
    })
    .unwrap();
    w.watch(file.parent().unwrap(), notify::RecursiveMode::NonRecursive).unwrap();
    let g = Gw::spawn(args, &[], None);
    tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)).expect("the gateway opens its file"))
        .await
        .unwrap();
    g
}

/// A configuration of 10,000 routes plus `/marker` served by a route named `marker`.
fn many_routes(marker: &str) -> String {
    let mut s = format!(
        "{QUIET}listeners:\n  - name: main\n    address: 127.0.0.1:0\nservices:\n  - name: echo\n    type: echo\nroutes:\n  - name: {marker}\n    service: echo\n    paths: [\"/marker\"]\n"
    );
    for i in 0..10_000 {
        s.push_str(&format!("  - name: r{i}\n    service: echo\n    paths: [\"/r/{i}\"]\n"));
    }
    s
}

/// Send SIGHUP every few milliseconds from now until well after the process said it started
/// (bounded); it must never exit. Returns the process and its proxy address.
async fn hup_until_started(mut g: Gw) -> (Gw, std::net::SocketAddr) {
    let pid = g.child.id().expect("pid").to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut before, mut after) = (0u32, 0u32);
    let mut started = false;
    while Instant::now() < deadline && after < 50 {
        let _ = std::process::Command::new("kill").args(["-HUP", &pid]).status();
        if started {
            after += 1;
        } else {
            before += 1;
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
        if let Some(status) = g.child.try_wait().unwrap() {
            g.drain();
            panic!("gatehouse exited ({status}) after {before} SIGHUPs during start-up:\n{}", g.seen.join("\n"));
        }
        g.drain();
        started = started || g.seen.iter().any(|l| l.contains("gatehouse started"));
    }
    assert!(started, "not started within 90 s:\n{}", g.seen.join("\n"));
    assert!(before >= 10, "only {before} signals before the start: the window was not exercised");
    let addr = g.main_addr(Duration::from_secs(5)).await;
    // Let the queued reloads finish; the process is alive and serving.
    let serving = eventually(Duration::from_secs(60), || async { route_of(addr, "/r/1").await.is_some() }).await;
    assert!(serving, "not serving:\n{}", g.seen.join("\n"));
    assert!(g.child.try_wait().unwrap().is_none());
    eprintln!("{before} SIGHUPs during start-up, {after} after");
    (g, addr)
}

async fn route_of(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let r = client().get(format!("http://{addr}{path}")).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    let v: Value = r.json().await.ok()?;
    v["route"].as_str().map(str::to_string)
}

async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn sha256_token(s: &str) -> String {
    use sha2::Digest;
    format!("sha256:{}", sha2::Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A child process killed (and reaped) when the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
