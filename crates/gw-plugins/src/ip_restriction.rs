//! `ip-restriction`: allow and deny lists on the real client IP (after trusted proxies), looked
//! up in prefix tries (longest matching prefix of either list decides).

use std::net::IpAddr;

use gw_config::plugins::{IpRestriction as Conf, parse_net};
use gw_core::{Ctx, Flow, Plugin, Reply, RequestHead, Result, Stage, priority};
use http::StatusCode;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;

pub(crate) struct IpRestriction {
    v4: PrefixMap<Ipv4Net, bool>,
    v6: PrefixMap<Ipv6Net, bool>,
    has_allow: bool,
    status: StatusCode,
    message: String,
}

impl IpRestriction {
    pub(crate) fn new(c: &Conf) -> Result<Self, String> {
        let mut v4 = PrefixMap::new();
        let mut v6 = PrefixMap::new();
        // Deny entries go in last: an address listed in both lists with the same prefix is denied.
        for (list, allow) in [(&c.allow, true), (&c.deny, false)] {
            for s in list {
                match parse_net(s)? {
                    IpNet::V4(n) => {
                        v4.insert(n, allow);
                    }
                    IpNet::V6(n) => {
                        v6.insert(n, allow);
                    }
                }
            }
        }
        let status = StatusCode::from_u16(c.status).map_err(|e| e.to_string())?;
        let message = c.message.clone().unwrap_or_else(|| "your IP address is not allowed".into());
        Ok(IpRestriction { v4, v6, has_allow: !c.allow.is_empty(), status, message })
    }

    /// Whether `ip` may pass.
    pub(crate) fn allowed(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let hit = match ip {
            IpAddr::V4(a) => Ipv4Net::new(a, 32).ok().and_then(|n| self.v4.get_lpm(&n).map(|(_, v)| *v)),
            IpAddr::V6(a) => Ipv6Net::new(a, 128).ok().and_then(|n| self.v6.get_lpm(&n).map(|(_, v)| *v)),
        };
        hit.unwrap_or(!self.has_allow)
    }
}

#[gw_core::plugin]
impl Plugin for IpRestriction {
    fn name(&self) -> &'static str {
        "ip-restriction"
    }

    fn priority(&self) -> i32 {
        priority::IP_RESTRICTION
    }

    fn stage(&self) -> Stage {
        Stage::PreAuth
    }

    async fn access(&self, _req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        if self.allowed(cx.client_ip) {
            Ok(Flow::Continue)
        } else {
            Ok(Flow::Respond(Reply::error(self.status, "forbidden", &self.message)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(allow: &[&str], deny: &[&str]) -> IpRestriction {
        IpRestriction::new(&Conf {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            status: 403,
            message: None,
        })
        .unwrap()
    }

    /// The longest matching prefix decides; without a match, an allow list denies.
    #[test]
    fn longest_prefix_decides() {
        let p = plugin(&["10.0.0.0/8", "2001:db8::/32"], &["10.1.0.0/16", "2001:db8:bad::/48"]);
        let ok = |s: &str| p.allowed(s.parse().unwrap());
        assert!(ok("10.2.3.4"));
        assert!(!ok("10.1.3.4"));
        assert!(!ok("192.168.1.1"));
        assert!(ok("2001:db8:1::1"));
        assert!(!ok("2001:db8:bad::1"));
        assert!(ok("::ffff:10.2.3.4"), "IPv4-mapped IPv6 is matched as IPv4");
        let deny_only = plugin(&[], &["192.0.2.0/24"]);
        assert!(deny_only.allowed("198.51.100.1".parse().unwrap()));
        assert!(!deny_only.allowed("192.0.2.9".parse().unwrap()));
        let both = plugin(&["192.0.2.7"], &["192.0.2.0/24"]);
        assert!(both.allowed("192.0.2.7".parse().unwrap()), "a /32 allow beats a /24 deny");
    }
}
