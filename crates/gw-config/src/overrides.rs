//! Per-node address overrides. The nodes of a cluster share one configuration document, which
//! names the addresses of the listeners, the Admin API and the status listener; a node moves
//! them for itself (two nodes on one host, a node behind a different interface) without
//! changing the shared document: `gatehouse run --listen NAME=ADDR --admin-listen ADDR
//! --status-listen ADDR`, or the environment variables `GATEHOUSE_LISTEN_<NAME>`,
//! `GATEHOUSE_ADMIN_LISTEN`, `GATEHOUSE_STATUS_LISTEN`. Pure: the binary gathers the flags and
//! the environment, and applies the result to every configuration it validates.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::Config;

/// The environment variable prefix of listener overrides (`GATEHOUSE_LISTEN_MAIN`).
pub const LISTEN_ENV_PREFIX: &str = "GATEHOUSE_LISTEN_";

/// Addresses this node uses instead of those in the configuration document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddressOverrides {
    /// `--listen NAME=ADDR`, by listener name.
    listeners: BTreeMap<String, SocketAddr>,
    /// `GATEHOUSE_LISTEN_<NAME>=ADDR`, by `<NAME>` (the listener name in upper case, every
    /// character other than a letter or digit as `_`), with the variable's name.
    env_listeners: BTreeMap<String, (String, SocketAddr)>,
    /// The Admin API address (`None` inside: off).
    admin: Option<Option<SocketAddr>>,
    /// The status listener address (`None` inside: off).
    status: Option<Option<SocketAddr>>,
}

/// The environment variable suffix that names listener `name`: upper case, every character
/// other than an ASCII letter or digit replaced by `_` (`public-api` -> `PUBLIC_API`).
pub fn listen_env_key(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

fn addr(what: &str, v: &str) -> Result<SocketAddr, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{what}: {v:?} is not an address (ip:port, e.g. 127.0.0.1:8080 or [::1]:8080)"))
}

fn addr_or_off(what: &str, v: &str) -> Result<Option<SocketAddr>, String> {
    if v.trim() == "off" { Ok(None) } else { addr(what, v).map(Some) }
}

impl AddressOverrides {
    /// From the command line (`listen`: `NAME=ADDR` each; `admin`, `status`: an address or
    /// `off`) and the environment (`GATEHOUSE_LISTEN_<NAME>` variables among `env`). A flag wins
    /// over a variable naming the same listener.
    pub fn new(
        listen: &[String],
        admin: Option<&str>,
        status: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<AddressOverrides, String> {
        let mut o = AddressOverrides::default();
        for l in listen {
            let Some((name, a)) = l.split_once('=') else {
                return Err(format!("--listen {l:?}: write NAME=ADDR (a listener name and an address)"));
            };
            if name.is_empty() {
                return Err(format!("--listen {l:?}: the listener name is empty"));
            }
            o.listeners.insert(name.to_string(), addr(&format!("--listen {name}"), a)?);
        }
        for (k, v) in env {
            if let Some(key) = k.strip_prefix(LISTEN_ENV_PREFIX) {
                let a = addr(&k, &v)?;
                o.env_listeners.insert(key.to_string(), (k.clone(), a));
            }
        }
        o.admin = admin.map(|a| addr_or_off("--admin-listen", a)).transpose()?;
        o.status = status.map(|a| addr_or_off("--status-listen", a)).transpose()?;
        Ok(o)
    }

    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty() && self.env_listeners.is_empty() && self.admin.is_none() && self.status.is_none()
    }

    /// The override of listener `name`, if any.
    fn listener(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.get(name).copied().or_else(|| self.env_listeners.get(&listen_env_key(name)).map(|x| x.1))
    }

    /// Put the overrides into `config` (a validated configuration). A listener override that
    /// names no listener of `config` is ignored here (see [`AddressOverrides::check`]).
    pub fn apply(&self, config: &mut Config) {
        for l in &mut config.listeners {
            if let Some(a) = self.listener(&l.name) {
                l.address = a;
            }
        }
        if let Some(a) = self.admin {
            config.gateway.admin_listener = a;
        }
        if let Some(a) = self.status {
            config.gateway.status_listener = a;
        }
    }

    /// At start: every listener override must name a listener of `config` (a typo would
    /// otherwise leave the document's address in use unnoticed).
    pub fn check(&self, config: &Config) -> Result<(), String> {
        let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
        for n in self.listeners.keys() {
            if !names.contains(&n.as_str()) {
                return Err(format!(
                    "--listen {n}=...: the configuration has no listener named {n:?} (it has {names:?})"
                ));
            }
        }
        for (key, (var, _)) in &self.env_listeners {
            if !names.iter().any(|n| listen_env_key(n) == *key) {
                return Err(format!("{var}: the configuration has no listener named {key:?} (it has {names:?})"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let yaml = "gateway:\n  status_listener: 127.0.0.1:9100\n  admin: { listen: 127.0.0.1:9180 }\nlisteners:\n  - { name: main, address: 127.0.0.1:8080 }\n  - { name: public-api, address: 0.0.0.0:8443 }\n";
        let file = crate::parse_yaml(yaml, "t", Default::default()).unwrap();
        crate::validate(&file, &crate::ValidateOptions::default()).unwrap()
    }

    #[test]
    fn flags_and_environment_move_addresses() {
        let env = [
            ("GATEHOUSE_LISTEN_PUBLIC_API".to_string(), "127.0.0.1:0".to_string()),
            ("GATEHOUSE_LISTEN_MAIN".to_string(), "127.0.0.1:1".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let o = AddressOverrides::new(&["main=127.0.0.1:2".into()], Some("off"), Some("[::1]:0"), env).unwrap();
        let mut c = config();
        o.check(&c).unwrap();
        o.apply(&mut c);
        assert_eq!(c.listeners[0].address.to_string(), "127.0.0.1:2", "a flag wins over the environment");
        assert_eq!(c.listeners[1].address.to_string(), "127.0.0.1:0");
        assert_eq!(c.gateway.admin_listener, None);
        assert_eq!(c.gateway.status_listener.map(|a| a.to_string()).as_deref(), Some("[::1]:0"));
        let none = AddressOverrides::new(&[], None, None, []).unwrap();
        assert!(none.is_empty());
        let mut c2 = config();
        none.apply(&mut c2);
        assert_eq!(c2.listeners[0].address.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn bad_overrides_are_refused_with_their_source() {
        let e = AddressOverrides::new(&["main".into()], None, None, []).unwrap_err();
        assert!(e.contains("NAME=ADDR"), "{e}");
        let e = AddressOverrides::new(&["main=nope".into()], None, None, []).unwrap_err();
        assert!(e.contains("--listen main") && e.contains("nope"), "{e}");
        let e = AddressOverrides::new(&[], Some("x"), None, []).unwrap_err();
        assert!(e.contains("--admin-listen"), "{e}");
        let e = AddressOverrides::new(&[], None, None, [("GATEHOUSE_LISTEN_X".into(), "1".into())]).unwrap_err();
        assert!(e.contains("GATEHOUSE_LISTEN_X"), "{e}");
        let o = AddressOverrides::new(&["mian=127.0.0.1:0".into()], None, None, []).unwrap();
        assert!(o.check(&config()).unwrap_err().contains("mian"));
        let o =
            AddressOverrides::new(&[], None, None, [("GATEHOUSE_LISTEN_NOPE".into(), "127.0.0.1:0".into())]).unwrap();
        assert!(o.check(&config()).unwrap_err().contains("GATEHOUSE_LISTEN_NOPE"));
    }
}
