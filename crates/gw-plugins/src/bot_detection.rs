//! `bot-detection`: refuse clients by `User-Agent` (allow list first, then the deny list and a
//! built-in list of well-known crawlers and scanners).

use async_trait::async_trait;
use gw_config::plugins::BotDetection as Conf;
use gw_core::{Ctx, Flow, Hooks, Plugin, RequestHead, Result, priority};
use http::header::USER_AGENT;
use regex::RegexSet;

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

#[async_trait]
impl Plugin for BotDetection {
    fn name(&self) -> &'static str {
        "bot-detection"
    }

    fn priority(&self) -> i32 {
        priority::BOT_DETECTION
    }

    fn hooks(&self) -> Hooks {
        Hooks::ACCESS
    }

    async fn access(&self, req: &mut RequestHead, _cx: &mut Ctx) -> Result<Flow> {
        let ua = req.headers.get(USER_AGENT).and_then(|v| v.to_str().ok());
        let refused = match ua {
            None => self.deny_missing,
            Some(ua) => !self.allow.is_match(ua) && self.deny.is_match(ua),
        };
        if refused { Ok(Flow::Respond(forbidden("forbidden"))) } else { Ok(Flow::Continue) }
    }
}
