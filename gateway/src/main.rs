//! `gatehouse`: parse the command line, load and validate the configuration, run the gateway
//! until SIGTERM, reloading on SIGHUP and on file change.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// mimalloc: fewer cycles per allocation than glibc malloc on the request path, and less
/// fragmentation with many connections.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod reload;

#[derive(Parser)]
#[command(name = "gatehouse", version, about = "Gatehouse API gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Configuration file (YAML). Without `--store` it is the source of truth (DB-less
        /// mode, read-only Admin API); with `--store` it seeds an empty store.
        #[arg(short, long, env = "GATEHOUSE_CONFIG")]
        config: Option<PathBuf>,
        /// Configuration store: `embedded:<data dir>` (one redb file) or a `postgres://` URL
        /// (a cluster of nodes). The Admin API then accepts writes.
        #[arg(long, env = "GATEHOUSE_STORE")]
        store: Option<String>,
        /// Log format on stderr: text or json.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        /// Do not reload when the file changes (SIGHUP still reloads).
        #[arg(long)]
        no_watch: bool,
        /// Bind listener NAME on ADDR instead of the address the configuration gives it
        /// (repeatable). Also `GATEHOUSE_LISTEN_<NAME>=ADDR` (NAME in upper case, other
        /// characters as `_`); the flag wins.
        #[arg(long = "listen", value_name = "NAME=ADDR")]
        listen: Vec<String>,
        /// Admin API address instead of `gateway.admin.listen` (or `off`).
        #[arg(long, value_name = "ADDR", env = "GATEHOUSE_ADMIN_LISTEN")]
        admin_listen: Option<String>,
        /// Status listener address instead of `gateway.status_listener` (or `off`).
        #[arg(long, value_name = "ADDR", env = "GATEHOUSE_STATUS_LISTEN")]
        status_listen: Option<String>,
    },
    /// Check a configuration file and exit 0 if it is valid.
    Validate {
        /// Configuration file (YAML).
        file: PathBuf,
    },
    /// Read a password on stdin and print its argon2id hash for `password_hash`.
    HashPassword,
    /// Read an API key on stdin and print its hash for `key_hash`.
    HashKey,
    /// Export or import the configuration of a store.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
pub(crate) enum ConfigAction {
    /// Print the store's current configuration as YAML (the file format).
    Export {
        /// `embedded:<data dir>` or a `postgres://` URL.
        #[arg(long, env = "GATEHOUSE_STORE")]
        store: String,
    },
    /// Validate a YAML file and make it the store's current configuration (a new version).
    Import {
        /// Configuration file (YAML).
        file: PathBuf,
        /// `embedded:<data dir>` or a `postgres://` URL.
        #[arg(long, env = "GATEHOUSE_STORE")]
        store: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, store, log_format, no_watch, listen, admin_listen, status_listen } => {
            gw_observability::init_tracing_with(log_format == "json", Some(gw_admin::dashboard::recent::layer()));
            match gw_config::AddressOverrides::new(
                &listen,
                admin_listen.as_deref(),
                status_listen.as_deref(),
                std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
            ) {
                Ok(o) => {
                    let _ = OVERRIDES.set(o);
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
            match (store, config) {
                (Some(store), seed) => admin::run_with_store(&store, seed.as_deref()),
                (None, Some(config)) => run(&config, !no_watch),
                (None, None) => {
                    eprintln!("error: give --config FILE, --store SPEC, or both");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config { action } => admin::config_command(action),
        Command::Validate { file } => validate(&file),
        Command::HashPassword => match read_stdin_secret().and_then(|p| gw_config::hash_password(&p)) {
            Ok(h) => {
                println!("{h}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::HashKey => match read_stdin_secret() {
            Ok(k) => {
                let h = gw_config::hash_api_key(&k);
                let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
                println!("sha256:{hex}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// This node's address overrides (`--listen`, `--admin-listen`, `--status-listen` and their
/// environment variables), set once from the command line.
static OVERRIDES: std::sync::OnceLock<gw_config::AddressOverrides> = std::sync::OnceLock::new();

/// The address overrides, applied to every configuration this process serves.
pub(crate) fn overrides() -> &'static gw_config::AddressOverrides {
    static NONE: std::sync::OnceLock<gw_config::AddressOverrides> = std::sync::OnceLock::new();
    OVERRIDES.get().unwrap_or_else(|| NONE.get_or_init(Default::default))
}

fn read_stdin_secret() -> Result<String, String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).map_err(|e| e.to_string())?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        return Err("nothing on stdin".into());
    }
    Ok(s)
}

fn validate(file: &Path) -> ExitCode {
    let loaded = match gw_config::load_file_full(file, gw_config::process_env()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let routes = loaded.config.routes.len();
    let hash = loaded.config.hash.clone();
    // What only compiling finds (certificates that do not load, plugin set-up) is located at
    // the entity it names.
    if let Err(e) = gw_proxy::check(loaded.config.clone()) {
        eprintln!("{}", loaded.locate(&e));
        return ExitCode::FAILURE;
    }
    println!("{}: valid ({routes} routes, hash {})", file.display(), &hash[..12]);
    ExitCode::SUCCESS
}

fn run(path: &Path, watch: bool) -> ExitCode {
    // Before the file is read: a SIGHUP or a file change from now on is queued and applied
    // once the gateway serves, however long reading and compiling a large file takes.
    let triggers = reload::Triggers::install(path, watch);
    let mut loaded = match gw_config::load_file_full(path, gw_config::process_env()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = overrides().check(&loaded.config) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    overrides().apply(&mut loaded.config);
    let config = loaded.config.clone();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.gateway.worker_threads {
        rt.worker_threads(n);
    }
    let rt = match rt.enable_all().thread_name("gatehouse-worker").build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let shutdown_timeout = config.gateway.shutdown_timeout;
        let node_id = std::env::var("GATEHOUSE_NODE_ID").unwrap_or_else(|_| config.gateway.node_id.clone());
        let redis_usage = match gw_admin::usage_store::redis_usage(&config, &node_id) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let usage_store: Option<std::sync::Arc<dyn gw_observability::UsageBackend>> = match &config.gateway.usage.path {
            _ if redis_usage.is_some() => redis_usage,
            Some(dir) => match gw_admin::usage_store::EmbeddedUsage::open(dir) {
                Ok(s) => Some(std::sync::Arc::new(s)),
                Err(e) => {
                    eprintln!("error: gateway.usage.path: {e}");
                    return ExitCode::FAILURE;
                }
            },
            None => {
                tracing::info!(
                    "usage and local quota counters are kept in memory only: set gateway.usage.path to keep them across restarts"
                );
                None
            }
        };
        let gw = match gw_proxy::Gateway::start_with_usage(config, usage_store).await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("cannot start: {}", loaded.locate(&e.to_string()));
                return ExitCode::FAILURE;
            }
        };
        drop(loaded);
        // The Admin API is read-only in DB-less mode; it starts when tokens are configured.
        let admin = admin::start_read_only(&gw, path).await;
        let reloader = reload::spawn(gw.clone(), path.to_path_buf(), triggers, admin.as_ref().map(|a| a.0.clone()));
        let terminated = termination();
        tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %path.display(), "gatehouse started");
        terminated.await;
        tracing::info!(timeout = ?shutdown_timeout, "draining");
        reloader.abort();
        if let Some((_, task)) = admin {
            task.abort();
        }
        gw.shutdown(shutdown_timeout).await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGTERM or Ctrl-C. The SIGTERM handler is installed before this returns.
pub(crate) fn termination() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    async move {
        let mut term = match term {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
}

/// Debounce between a file change and the reload it triggers.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(200);
