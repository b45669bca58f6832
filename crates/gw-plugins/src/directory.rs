//! The consumer directory: consumers and their credentials, indexed for the auth plugins. Built
//! once per configuration version and shared by every auth plugin instance.

use std::collections::HashMap;
use std::sync::Arc;

use gw_config::model::{Config, Credential};
use gw_config::value::Secret;
use gw_core::ConsumerInfo;
use jsonwebtoken::{Algorithm, DecodingKey};

/// A consumer's JWT verification key, pinned to one algorithm.
pub(crate) struct JwtKey {
    pub(crate) consumer: usize,
    pub(crate) algorithm: Algorithm,
    pub(crate) key: DecodingKey,
    pub(crate) id: Arc<str>,
}

/// Consumers and credentials, by lookup key.
pub struct Directory {
    consumers: Vec<Arc<ConsumerInfo>>,
    by_username: HashMap<String, usize>,
    by_custom_id: HashMap<String, usize>,
    /// SHA-256 of an API key -> (consumer, credential id).
    keys: HashMap<[u8; 32], (usize, Arc<str>)>,
    /// Basic user name -> (consumer, argon2 PHC string).
    basic: HashMap<String, (usize, String)>,
    /// Value of the JWT key claim -> key.
    jwt: HashMap<String, JwtKey>,
    /// HMAC key id -> (consumer, secret).
    hmac: HashMap<String, (usize, Secret)>,
    /// Certificate subject name -> consumer.
    mtls: HashMap<String, usize>,
}

pub(crate) fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

impl Directory {
    /// Index the consumers of `cfg`. Fails on a JWT key that cannot be parsed.
    pub fn new(cfg: &Config) -> Result<Directory, String> {
        let mut d = Directory {
            consumers: Vec::with_capacity(cfg.consumers.len()),
            by_username: HashMap::new(),
            by_custom_id: HashMap::new(),
            keys: HashMap::new(),
            basic: HashMap::new(),
            jwt: HashMap::new(),
            hmac: HashMap::new(),
            mtls: HashMap::new(),
        };
        for (i, c) in cfg.consumers.iter().enumerate() {
            d.consumers.push(Arc::new(ConsumerInfo::new(
                i,
                c.username.clone(),
                c.custom_id.clone(),
                c.groups.clone(),
                false,
            )));
            d.by_username.insert(c.username.clone(), i);
            if let Some(id) = &c.custom_id {
                d.by_custom_id.insert(id.clone(), i);
            }
            for cred in &c.credentials {
                match cred {
                    Credential::KeyAuth { id, key_sha256 } => {
                        d.keys.insert(*key_sha256, (i, Arc::from(id.as_str())));
                    }
                    Credential::BasicAuth { username, password_hash } => {
                        d.basic.insert(username.clone(), (i, password_hash.clone()));
                    }
                    Credential::Jwt { key, algorithm: alg, secret, public_key } => {
                        let a = algorithm(alg)
                            .ok_or_else(|| format!("consumer {:?}: unknown JWT algorithm {alg}", c.username))?;
                        let dk = decoding_key(a, secret.as_ref(), public_key.as_deref())
                            .map_err(|e| format!("consumer {:?}: jwt credential {key:?}: {e}", c.username))?;
                        d.jwt.insert(
                            key.clone(),
                            JwtKey { consumer: i, algorithm: a, key: dk, id: Arc::from(key.as_str()) },
                        );
                    }
                    Credential::HmacAuth { username, secret } => {
                        d.hmac.insert(username.clone(), (i, secret.clone()));
                    }
                    Credential::Mtls { subject_name } => {
                        d.mtls.insert(subject_name.clone(), i);
                    }
                }
            }
        }
        Ok(d)
    }

    /// A consumer by index.
    pub fn consumer(&self, i: usize) -> Option<&Arc<ConsumerInfo>> {
        self.consumers.get(i)
    }

    /// A consumer by user name.
    pub fn by_username(&self, name: &str) -> Option<&Arc<ConsumerInfo>> {
        self.by_username.get(name).and_then(|&i| self.consumers.get(i))
    }

    /// A consumer by user name, then by custom id.
    pub(crate) fn by_name_or_custom_id(&self, v: &str) -> Option<&Arc<ConsumerInfo>> {
        self.by_username(v).or_else(|| self.by_custom_id.get(v).and_then(|&i| self.consumers.get(i)))
    }

    /// The anonymous consumer named `name` (a copy flagged `anonymous`).
    pub(crate) fn anonymous(&self, name: Option<&str>) -> Option<Arc<ConsumerInfo>> {
        let c = self.by_username(name?)?;
        Some(Arc::new(ConsumerInfo::new(c.index, c.username.clone(), c.custom_id.clone(), c.groups.clone(), true)))
    }

    pub(crate) fn api_key(&self, sha256: &[u8; 32]) -> Option<(&Arc<ConsumerInfo>, &Arc<str>)> {
        let (i, id) = self.keys.get(sha256)?;
        Some((self.consumers.get(*i)?, id))
    }

    pub(crate) fn basic(&self, user: &str) -> Option<(usize, &str)> {
        self.basic.get(user).map(|(i, h)| (*i, h.as_str()))
    }

    pub(crate) fn jwt(&self, key: &str) -> Option<&JwtKey> {
        self.jwt.get(key)
    }

    pub(crate) fn hmac(&self, key_id: &str) -> Option<(usize, &Secret)> {
        self.hmac.get(key_id).map(|(i, s)| (*i, s))
    }

    pub(crate) fn mtls(&self, subject: &str) -> Option<usize> {
        self.mtls.get(subject).copied()
    }
}

fn decoding_key(a: Algorithm, secret: Option<&Secret>, public_key: Option<&str>) -> Result<DecodingKey, String> {
    use Algorithm::*;
    match a {
        HS256 | HS384 | HS512 => {
            secret.map(|s| DecodingKey::from_secret(s.expose().as_bytes())).ok_or_else(|| "needs `secret`".into())
        }
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => {
            DecodingKey::from_rsa_pem(public_key.ok_or("needs `public_key`")?.as_bytes())
                .map_err(|e| format!("public_key: {e}"))
        }
        ES256 | ES384 => DecodingKey::from_ec_pem(public_key.ok_or("needs `public_key`")?.as_bytes())
            .map_err(|e| format!("public_key: {e}")),
        EdDSA => DecodingKey::from_ed_pem(public_key.ok_or("needs `public_key`")?.as_bytes())
            .map_err(|e| format!("public_key: {e}")),
    }
}
