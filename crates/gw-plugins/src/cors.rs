//! `cors`: answers preflight requests at the gateway and adds CORS headers to every response of
//! an allowed origin (errors included, so browsers can read them). Every response of a route
//! with the plugin carries `Vary: Origin`, whatever the origin (allowed, refused or absent): the
//! response depends on it, and a shared cache must not serve one origin's answer to another.

use gw_config::plugins::Cors as Conf;
use gw_core::{Ctx, Flow, Plugin, Reply, RequestHead, ResponseHead, Result, Stage, priority};
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use regex::Regex;

pub(crate) struct Cors {
    any: bool,
    exact: Vec<String>,
    patterns: Vec<Regex>,
    methods: HeaderValue,
    headers: Option<HeaderValue>,
    exposed: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
    preflight_continue: bool,
}

/// The request's allowed origin, remembered for the response phase.
#[derive(Clone)]
struct AllowedOrigin(HeaderValue);

impl Cors {
    pub(crate) fn new(c: &Conf) -> Result<Self, String> {
        let mut exact = Vec::new();
        let mut patterns = Vec::new();
        let mut any = false;
        for o in &c.origins {
            if o == "*" {
                any = true;
            } else if let Some(re) = o.strip_prefix('~') {
                patterns.push(Regex::new(&format!("^(?:{re})$")).map_err(|e| e.to_string())?);
            } else {
                exact.push(o.trim_end_matches('/').to_string());
            }
        }
        let join = |v: &[String]| HeaderValue::from_str(&v.join(", ")).map_err(|e| e.to_string());
        Ok(Cors {
            any,
            exact,
            patterns,
            methods: join(&c.methods)?,
            headers: c.headers.as_deref().map(join).transpose()?,
            exposed: if c.exposed_headers.is_empty() { None } else { Some(join(&c.exposed_headers)?) },
            credentials: c.credentials,
            max_age: HeaderValue::from(c.max_age.as_ref().map(|d| d.get().as_secs()).unwrap_or(3600)),
            preflight_continue: c.preflight_continue,
        })
    }

    /// The value of `Access-Control-Allow-Origin` for this origin, if allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        let o = origin.to_str().ok()?;
        let listed = self.exact.iter().any(|e| e == o) || self.patterns.iter().any(|p| p.is_match(o));
        if listed || (self.any && self.credentials) {
            // With credentials the exact origin must be echoed; `*` is not allowed.
            Some(origin.clone())
        } else if self.any {
            Some(HeaderValue::from_static("*"))
        } else {
            None
        }
    }
}

fn add_vary_origin(h: &mut http::HeaderMap) {
    add_vary(h, "Origin");
}

/// Add `name` to `Vary` unless it (or `*`) is there.
fn add_vary(h: &mut http::HeaderMap, name: &'static str) {
    let has = h.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case(name)))
    });
    if !has {
        h.append(header::VARY, HeaderValue::from_static(name));
    }
}

#[gw_core::plugin]
impl Plugin for Cors {
    fn name(&self) -> &'static str {
        "cors"
    }

    fn priority(&self) -> i32 {
        priority::CORS
    }

    fn stage(&self) -> Stage {
        Stage::PreAuth
    }

    async fn access(&self, req: &mut RequestHead, cx: &mut Ctx) -> Result<Flow> {
        let Some(origin) = req.headers.get(header::ORIGIN).cloned() else { return Ok(Flow::Continue) };
        let allowed = self.allow_origin(&origin);
        let preflight =
            req.method == Method::OPTIONS && req.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight && !self.preflight_continue {
            let mut r = Reply::empty(StatusCode::NO_CONTENT);
            add_vary_origin(&mut r.headers);
            if let Some(allow) = allowed {
                r.headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
                r.headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
                let hdrs = self.headers.clone().or_else(|| {
                    // Echoing what the preflight asks makes the answer depend on it too.
                    add_vary(&mut r.headers, "Access-Control-Request-Headers");
                    req.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned()
                });
                if let Some(h) = hdrs {
                    r.headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, h);
                }
                if self.credentials {
                    r.headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
                }
                r.headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
            }
            return Ok(Flow::Respond(r));
        }
        if let Some(a) = allowed {
            cx.vars.insert(AllowedOrigin(a));
        }
        Ok(Flow::Continue)
    }

    async fn response(&self, resp: &mut ResponseHead, cx: &mut Ctx) -> Result<()> {
        // Whether this response has CORS headers depends on the request's Origin: always vary.
        add_vary_origin(&mut resp.headers);
        let Some(AllowedOrigin(origin)) = cx.vars.get::<AllowedOrigin>().cloned() else { return Ok(()) };
        resp.headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.credentials {
            resp.headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        if let Some(e) = &self.exposed {
            resp.headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
        Ok(())
    }
}
