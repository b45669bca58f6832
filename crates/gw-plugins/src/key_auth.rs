//! `key-auth`: an API key in a header or query parameter, looked up by its SHA-256 (keys are
//! never stored in clear).

use std::sync::Arc;

use gw_config::plugins::KeyAuth as Conf;
use gw_core::{AuthOutcome, ConsumerInfo, Ctx, Plugin, RequestHead, Result, priority};
use http::HeaderName;
use sha2::{Digest, Sha256};

use crate::directory::Directory;
use crate::util::{
    header_name, invalid_credentials, missing_credentials, query_pairs, remove_query_params, set_consumer,
};

const CHALLENGE: &str = "Key realm=\"gatehouse\"";

pub(crate) struct KeyAuth {
    headers: Vec<HeaderName>,
    query_names: Vec<String>,
    hide: bool,
    dir: Arc<Directory>,
    anonymous: Option<Arc<ConsumerInfo>>,
}

enum Found {
    Header(HeaderName),
    Query,
}

impl KeyAuth {
    pub(crate) fn new(c: &Conf, dir: Arc<Directory>) -> Result<Self, String> {
        let headers = if c.key_in_header {
            c.key_names.iter().map(|n| header_name(n)).collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let query_names = if c.key_in_query { c.key_names.clone() } else { Vec::new() };
        let anonymous = dir.anonymous(c.anonymous.as_deref());
        Ok(KeyAuth { headers, query_names, hide: c.hide_credentials, dir, anonymous })
    }

    /// The SHA-256 of the key the request carries, and where it was.
    fn find(&self, req: &RequestHead) -> Option<([u8; 32], Found)> {
        for h in &self.headers {
            if let Some(v) = req.headers.get(h).and_then(|v| v.to_str().ok()) {
                return Some((Sha256::digest(v.trim().as_bytes()).into(), Found::Header(h.clone())));
            }
        }
        if !self.query_names.is_empty() {
            for (k, v) in query_pairs(req.query()) {
                if self.query_names.contains(&k) {
                    return Some((Sha256::digest(v.as_bytes()).into(), Found::Query));
                }
            }
        }
        None
    }
}

#[gw_core::plugin]
impl Plugin for KeyAuth {
    fn name(&self) -> &'static str {
        "key-auth"
    }

    fn priority(&self) -> i32 {
        priority::AUTH + 250
    }

    fn anonymous(&self) -> Option<Arc<ConsumerInfo>> {
        self.anonymous.clone()
    }

    async fn authenticate(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<AuthOutcome> {
        let Some((digest, found)) = self.find(req) else {
            return Ok(AuthOutcome::NoCredentials { challenge: missing_credentials(CHALLENGE) });
        };
        let Some((consumer, id)) = self.dir.api_key(&digest) else {
            return Ok(AuthOutcome::Rejected(invalid_credentials(CHALLENGE)));
        };
        set_consumer(cx, consumer.clone(), Some(id));
        if self.hide {
            match found {
                Found::Header(h) => {
                    req.headers.remove(h);
                }
                Found::Query => {
                    let names: Vec<&str> = self.query_names.iter().map(String::as_str).collect();
                    let q = req.query().and_then(|q| remove_query_params(q, &names));
                    let _ = req.set_query(q.as_deref());
                }
            }
        }
        Ok(AuthOutcome::Authenticated)
    }
}
