//! `bot-detection`: refuse clients by `User-Agent` (allow list first, then the deny list and a
//! built-in list of well-known crawlers and scanners).
//!
//! Every `User-Agent` field is checked, as bytes (a value that is not UTF-8 is matched, not
//! skipped): a request is refused when any of its values is denied and not allowed. A value
//! that is empty or only white space counts as missing.

use gw_config::plugins::BotDetection as Conf;
use gw_core::{Ctx, Flow, Plugin, RequestHead, Result, Stage, priority};
use http::header::USER_AGENT;
use regex::bytes::RegexSet;

use crate::util::forbidden;

/// Common crawlers, scrapers and vulnerability scanners.
const KNOWN_BOTS: &[&str] = &[
    r"(?i)googlebot",
    r"(?i)bingbot",
    r"(?i)yandex(bot)?",
    r"(?i)baiduspider",
    r"(?i)duckduckbot",
    r"(?i)ahrefsbot",
    r"(?i)semrushbot",
    r"(?i)mj12bot",
    r"(?i)dotbot",
    r"(?i)petalbot",
    r"(?i)bytespider",
    r"(?i)gptbot",
    r"(?i)ccbot",
    r"(?i)sqlmap",
    r"(?i)nikto",
    r"(?i)nmap",
    r"(?i)masscan",
    r"(?i)zgrab",
    r"(?i)nuclei",
    r"(?i)dirbuster",
];

pub(crate) struct BotDetection {
    allow: RegexSet,
    deny: RegexSet,
    deny_missing: bool,
}

impl BotDetection {
    pub(crate) fn new(c: &Conf) -> Result<Self, String> {
        let mut deny: Vec<String> = c.deny.clone();
        if c.deny_known_bots {
            deny.extend(KNOWN_BOTS.iter().map(|s| s.to_string()));
        }
        Ok(BotDetection {
            allow: RegexSet::new(&c.allow).map_err(|e| e.to_string())?,
            deny: RegexSet::new(&deny).map_err(|e| e.to_string())?,
            deny_missing: c.deny_missing_user_agent,
        })
    }
}

#[gw_core::plugin]
impl Plugin for BotDetection {
    fn name(&self) -> &'static str {
        "bot-detection"
    }

    fn priority(&self) -> i32 {
        priority::BOT_DETECTION
    }

    fn stage(&self) -> Stage {
        Stage::PreAuth
    }

    async fn access(&self, req: &mut RequestHead, _cx: &mut Ctx) -> Result<Flow> {
        let mut present = false;
        let mut refused = false;
        for v in req.headers.get_all(USER_AGENT) {
            let ua = v.as_bytes().trim_ascii();
            if ua.is_empty() {
                continue;
            }
            present = true;
            if !self.allow.is_match(ua) && self.deny.is_match(ua) {
                refused = true;
                break;
            }
        }
        if refused || (!present && self.deny_missing) {
            Ok(Flow::Respond(forbidden("forbidden")))
        } else {
            Ok(Flow::Continue)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn plugin(deny_missing: bool) -> BotDetection {
        let c: Conf = serde_json::from_value(serde_json::json!({
            "deny": ["(?i)badcrawler"],
            "allow": ["^Friendly"],
            "deny_missing_user_agent": deny_missing,
        }))
        .unwrap();
        BotDetection::new(&c).unwrap()
    }

    async fn refused(p: &BotDetection, agents: &[&[u8]]) -> bool {
        let mut req = RequestHead {
            method: http::Method::GET,
            uri: http::Uri::from_static("/"),
            version: http::Version::HTTP_11,
            headers: http::HeaderMap::new(),
        };
        for a in agents {
            req.headers.append(USER_AGENT, HeaderValue::from_bytes(a).unwrap());
        }
        let mut cx = Ctx::new("127.0.0.1:1".parse().unwrap(), "l".into(), false, HeaderValue::from_static("r"));
        matches!(p.access(&mut req, &mut cx).await.unwrap(), Flow::Respond(_))
    }

    /// Every value, non-UTF-8 bytes, and empty values as missing.
    #[tokio::test]
    async fn checks_every_value_as_bytes() {
        let p = plugin(true);
        assert!(!refused(&p, &[b"Mozilla/5.0"]).await);
        assert!(refused(&p, &[b"BadCrawler/1.0 \xff"]).await, "non-UTF-8 bytes");
        assert!(refused(&p, &[b"sqlmap\xe9/1"]).await, "built-in list, non-UTF-8");
        assert!(refused(&p, &[b"Mozilla/5.0", b"badcrawler"]).await, "second value");
        assert!(!refused(&p, &[b"Friendly badcrawler"]).await, "allow wins");
        assert!(refused(&p, &[]).await, "missing");
        assert!(refused(&p, &[b""]).await, "empty");
        assert!(refused(&p, &[b"   "]).await, "blank");
        assert!(!refused(&plugin(false), &[b""]).await, "missing allowed by default");
    }
}
