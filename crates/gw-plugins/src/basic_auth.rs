//! `basic-auth`: RFC 7617. Passwords are stored as argon2id hashes; verifying one costs tens of
//! milliseconds of CPU by design, so it runs on the blocking pool behind a small semaphore (a
//! flood of guesses cannot stall the data-plane threads), and successful checks are remembered
//! for a few minutes under a SHA-256 of the user name and password (never the password).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use gw_config::plugins::BasicAuth as Conf;
use gw_core::{AuthOutcome, ConsumerInfo, Ctx, Error, ErrorKind, Plugin, RequestHead, Result, priority};
use http::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::directory::Directory;
use crate::util::{invalid_credentials, missing_credentials, set_consumer};

/// Concurrent argon2 verifications (each uses ~19 MiB and tens of ms).
const VERIFY_SLOTS: usize = 4;

pub(crate) struct BasicAuth {
    challenge: String,
    hide: bool,
    dir: Arc<Directory>,
    anonymous: Option<Arc<ConsumerInfo>>,
    /// Verified (user, password) digests; bounded and expiring.
    verified: moka::sync::Cache<[u8; 32], ()>,
    slots: Arc<Semaphore>,
    /// Verified against when the user does not exist, so the answer takes as long either way
    /// (no user enumeration by timing).
    dummy_phc: Arc<str>,
}

impl BasicAuth {
    pub(crate) fn new(c: &Conf, dir: Arc<Directory>) -> Result<Self, String> {
        let dummy_phc = gw_config::hash_password("gatehouse-dummy-password")?.into();
        Ok(BasicAuth {
            challenge: format!("Basic realm=\"{}\", charset=\"UTF-8\"", c.realm),
            hide: c.hide_credentials,
            anonymous: dir.anonymous(c.anonymous.as_deref()),
            dir,
            verified: moka::sync::Cache::builder().max_capacity(10_000).time_to_live(Duration::from_secs(300)).build(),
            slots: Arc::new(Semaphore::new(VERIFY_SLOTS)),
            dummy_phc,
        })
    }

    async fn verify(&self, phc: &str, password: String) -> Result<bool> {
        let _permit =
            self.slots.acquire().await.map_err(|e| Error::new(ErrorKind::Internal, "verifier").with_cause(e))?;
        let phc = phc.to_string();
        tokio::task::spawn_blocking(move || {
            use argon2::password_hash::{PasswordHash, PasswordVerifier};
            PasswordHash::new(&phc)
                .is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, "password verification").with_cause(e))
    }
}

/// `Basic <base64(user:password)>` -> (user, password).
fn parse(req: &RequestHead) -> Option<(String, String)> {
    let v = req.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

#[gw_core::plugin]
impl Plugin for BasicAuth {
    fn name(&self) -> &'static str {
        "basic-auth"
    }

    fn priority(&self) -> i32 {
        priority::AUTH + 200
    }

    fn anonymous(&self) -> Option<Arc<ConsumerInfo>> {
        self.anonymous.clone()
    }

    async fn authenticate(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<AuthOutcome> {
        let is_basic = req
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.len() > 6 && v[..6].eq_ignore_ascii_case("basic "));
        if !is_basic {
            return Ok(AuthOutcome::NoCredentials { challenge: missing_credentials(&self.challenge) });
        }
        let Some((user, password)) = parse(req) else {
            return Ok(AuthOutcome::Rejected(invalid_credentials(&self.challenge)));
        };
        let mut h = Sha256::new();
        h.update(user.as_bytes());
        h.update([0u8]);
        h.update(password.as_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let Some((consumer, phc)) = self.dir.basic(&user) else {
            let _ = self.verify(&self.dummy_phc, password).await?;
            return Ok(AuthOutcome::Rejected(invalid_credentials(&self.challenge)));
        };
        if !self.verified.contains_key(&digest) {
            if !self.verify(phc, password).await? {
                return Ok(AuthOutcome::Rejected(invalid_credentials(&self.challenge)));
            }
            self.verified.insert(digest, ());
        }
        let Some(c) = self.dir.consumer(consumer) else {
            return Ok(AuthOutcome::Rejected(invalid_credentials(&self.challenge)));
        };
        set_consumer(cx, c.clone(), Some(&user));
        if self.hide {
            req.headers.remove(AUTHORIZATION);
        }
        Ok(AuthOutcome::Authenticated)
    }
}
