//! Router behaviour: every priority rule, parameters, conditions and scale.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::*;

fn spec(hosts: &[&str], paths: &[&str], value: &'static str) -> RouteSpec<&'static str> {
    RouteSpec {
        hosts: hosts.iter().map(|h| HostPattern::parse(h).unwrap()).collect(),
        paths: paths.iter().map(|p| PathPattern::parse(p).unwrap()).collect(),
        methods: vec![],
        headers: vec![],
        query: vec![],
        priority: 0,
        value,
    }
}

struct Req {
    host: &'static str,
    path: &'static str,
    method: Method,
    headers: HeaderMap,
    query: Option<&'static str>,
}

fn req(host: &'static str, path: &'static str) -> Req {
    Req { host, path, method: Method::GET, headers: HeaderMap::new(), query: None }
}

impl Req {
    fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            host: self.host,
            path: self.path,
            method: &self.method,
            headers: &self.headers,
            query: self.query,
        }
    }
}

fn find(r: &Router<&'static str>, q: &Req) -> Option<&'static str> {
    r.find(&q.parts()).map(|m| *m.value)
}

/// Exact paths beat templates, templates beat regexes, regexes beat prefixes.
#[test]
fn path_kind_order() {
    let r = Router::new(vec![
        spec(&[], &["/*"], "root"),
        spec(&[], &["/users/*"], "prefix"),
        spec(&[], &["~/users/[0-9]+"], "regex"),
        spec(&[], &["/users/{id}"], "template"),
        spec(&[], &["/users/me"], "exact"),
    ])
    .unwrap();
    assert_eq!(find(&r, &req("h", "/users/me")), Some("exact"));
    assert_eq!(find(&r, &req("h", "/users/42")), Some("template"));
    assert_eq!(find(&r, &req("h", "/users/42/x")), Some("prefix"));
    assert_eq!(find(&r, &req("h", "/other")), Some("root"));
}

/// Regex routes are chosen over prefixes when the template does not apply.
#[test]
fn regex_before_prefix() {
    let r =
        Router::new(vec![spec(&[], &["/v1/*"], "prefix"), spec(&[], &["~/v1/items/[0-9]+/detail"], "regex")]).unwrap();
    assert_eq!(find(&r, &req("h", "/v1/items/7/detail")), Some("regex"));
    assert_eq!(find(&r, &req("h", "/v1/items/x/detail")), Some("prefix"));
}

/// The longest prefix wins, on segment boundaries only.
#[test]
fn longest_prefix_on_boundaries() {
    let r = Router::new(vec![spec(&[], &["/api/*"], "api"), spec(&[], &["/api/v2/*"], "v2")]).unwrap();
    assert_eq!(find(&r, &req("h", "/api/v2/x")), Some("v2"));
    assert_eq!(find(&r, &req("h", "/api/v2")), Some("v2"));
    assert_eq!(find(&r, &req("h", "/api/v2/")), Some("v2"));
    assert_eq!(find(&r, &req("h", "/api/v20")), Some("api"));
    assert_eq!(find(&r, &req("h", "/api")), Some("api"));
    assert_eq!(find(&r, &req("h", "/apix")), None);
}

/// Exact hosts beat wildcard hosts beat host-less routes; wildcards need an extra label.
#[test]
fn host_tiers() {
    let r = Router::new(vec![
        spec(&[], &["/*"], "any"),
        spec(&["*.example.com"], &["/*"], "wild"),
        spec(&["*.eu.example.com"], &["/*"], "wild-eu"),
        spec(&["api.example.com"], &["/*"], "exact"),
    ])
    .unwrap();
    assert_eq!(find(&r, &req("api.example.com", "/")), Some("exact"));
    assert_eq!(find(&r, &req("API.Example.com:8443", "/")), Some("exact"));
    assert_eq!(find(&r, &req("web.example.com", "/")), Some("wild"));
    assert_eq!(find(&r, &req("a.b.example.com", "/")), Some("wild"));
    assert_eq!(find(&r, &req("x.eu.example.com", "/")), Some("wild-eu"));
    assert_eq!(find(&r, &req("example.com", "/")), Some("any"));
    assert_eq!(find(&r, &req("other.org", "/")), Some("any"));
}

/// A host-specific route that fails its conditions falls through to less specific tiers.
#[test]
fn tiers_fall_through_on_conditions() {
    let mut post_only = spec(&["api.example.com"], &["/x"], "exact-host-post");
    post_only.methods = vec![Method::POST];
    let r = Router::new(vec![post_only, spec(&[], &["/x"], "any-host")]).unwrap();
    assert_eq!(find(&r, &req("api.example.com", "/x")), Some("any-host"));
    let mut q = req("api.example.com", "/x");
    q.method = Method::POST;
    assert_eq!(find(&r, &q), Some("exact-host-post"));
}

/// Within a pattern: priority first, then number of conditions, then declaration order.
#[test]
fn bucket_ordering() {
    let mut with_method = spec(&[], &["/p"], "method");
    with_method.methods = vec![Method::GET];
    let mut with_header = spec(&[], &["/p"], "method+header");
    with_header.methods = vec![Method::GET];
    with_header.headers =
        vec![HeaderMatch { name: HeaderName::from_static("x-v"), value: Some(StrMatch::parse("2").unwrap()) }];
    let plain_first = spec(&[], &["/p"], "plain-1");
    let plain_second = spec(&[], &["/p"], "plain-2");
    let r = Router::new(vec![plain_first, plain_second, with_method, with_header]).unwrap();
    let mut q = req("h", "/p");
    q.headers.insert("x-v", HeaderValue::from_static("2"));
    assert_eq!(find(&r, &q), Some("method+header"));
    assert_eq!(find(&r, &req("h", "/p")), Some("method"));
    let mut del = req("h", "/p");
    del.method = Method::DELETE;
    assert_eq!(find(&r, &del), Some("plain-1"));

    let mut low = spec(&[], &["/q"], "low");
    low.methods = vec![Method::GET];
    let mut high = spec(&[], &["/q"], "high");
    high.priority = 10;
    let r = Router::new(vec![low, high]).unwrap();
    assert_eq!(find(&r, &req("h", "/q")), Some("high"));
}

/// Template parameters keep each route's own names even when patterns share a radix entry.
#[test]
fn template_params() {
    let mut by_name = spec(&[], &["/users/{name}"], "by-name");
    by_name.methods = vec![Method::POST];
    let r = Router::new(vec![
        spec(&[], &["/users/{id}/posts/{post}"], "posts"),
        spec(&[], &["/users/{id}"], "by-id"),
        by_name,
    ])
    .unwrap();
    let q = req("h", "/users/42/posts/7");
    let m = r.find(&q.parts()).unwrap();
    assert_eq!(*m.value, "posts");
    assert_eq!(m.params.get("id"), Some("42"));
    assert_eq!(m.params.get("post"), Some("7"));
    assert_eq!(m.matched_len, q.path.len());
    let q = req("h", "/users/alice");
    assert_eq!(r.find(&q.parts()).unwrap().params.get("id"), Some("alice"));
    let mut q = req("h", "/users/alice");
    q.method = Method::POST;
    let m = r.find(&q.parts()).unwrap();
    assert_eq!((*m.value, m.params.get("name")), ("by-name", Some("alice")));
}

/// Catch-alls capture the remainder; an empty remainder does not match.
#[test]
fn catch_all() {
    let r = Router::new(vec![spec(&[], &["/files/{*path}"], "files")]).unwrap();
    let q = req("h", "/files/a/b/c.txt");
    assert_eq!(r.find(&q.parts()).unwrap().params.get("path"), Some("a/b/c.txt"));
    assert!(r.find(&req("h", "/files/").parts()).is_none());
}

/// Regex named groups become parameters.
#[test]
fn regex_params() {
    let r = Router::new(vec![spec(&[], &["~/v(?P<ver>[0-9]+)/items/(?P<id>[a-z]+)"], "items")]).unwrap();
    let q = req("h", "/v3/items/abc");
    let m = r.find(&q.parts()).unwrap();
    assert_eq!(m.params.get("ver"), Some("3"));
    assert_eq!(m.params.get("id"), Some("abc"));
    assert!(r.find(&req("h", "/v3/items/abc/x").parts()).is_none(), "regex paths are anchored");
}

/// Header and query conditions: exact, regex, presence; raw query comparison.
#[test]
fn header_and_query_conditions() {
    let mut h = spec(&[], &["/c"], "header");
    h.headers = vec![HeaderMatch {
        name: HeaderName::from_static("x-tenant"),
        value: Some(StrMatch::parse("~t[0-9]+").unwrap()),
    }];
    let mut q = spec(&[], &["/c"], "query");
    q.query = vec![QueryMatch { name: "beta".into(), value: None }];
    let mut qv = spec(&[], &["/c"], "query-value");
    qv.query = vec![QueryMatch { name: "v".into(), value: Some(StrMatch::parse("2").unwrap()) }];
    let r = Router::new(vec![h, q, qv]).unwrap();
    let mut a = req("h", "/c");
    a.headers.insert("x-tenant", HeaderValue::from_static("t42"));
    assert_eq!(find(&r, &a), Some("header"));
    let mut b = req("h", "/c");
    b.headers.insert("x-tenant", HeaderValue::from_static("other"));
    b.query = Some("x=1&beta");
    assert_eq!(find(&r, &b), Some("query"));
    let mut c = req("h", "/c");
    c.query = Some("v=2");
    assert_eq!(find(&r, &c), Some("query-value"));
    let mut d = req("h", "/c");
    d.query = Some("v=3");
    assert_eq!(find(&r, &d), None);
}

/// matched_len per pattern kind (for strip_path).
#[test]
fn matched_len() {
    let r = Router::new(vec![spec(&[], &["/api/*"], "p"), spec(&[], &["/exact"], "e"), spec(&[], &["/*"], "root")])
        .unwrap();
    assert_eq!(r.find(&req("h", "/api/x/y").parts()).unwrap().matched_len, 4);
    assert_eq!(r.find(&req("h", "/api").parts()).unwrap().matched_len, 4);
    assert_eq!(r.find(&req("h", "/exact").parts()).unwrap().matched_len, 6);
    assert_eq!(r.find(&req("h", "/zzz").parts()).unwrap().matched_len, 0);
}

/// Routes without paths match every path (as the root prefix).
#[test]
fn pathless_routes_match_everything() {
    let r = Router::new(vec![spec(&["a.test"], &[], "host-only")]).unwrap();
    assert_eq!(find(&r, &req("a.test", "/anything/at/all")), Some("host-only"));
    assert_eq!(find(&r, &req("b.test", "/")), None);
}

/// Templates that the radix tree refuses still route, through the fallback list.
#[test]
fn conflicting_templates_fall_back() {
    let r = Router::new(vec![spec(&[], &["/a/{x}"], "param"), spec(&[], &["/a/{*rest}"], "catch")]).unwrap();
    assert_eq!(find(&r, &req("h", "/a/1")), Some("param"));
    assert_eq!(find(&r, &req("h", "/a/1/2")), Some("catch"));
}

/// 10,000 generated routes over 100 hosts all resolve to the right route.
#[test]
fn ten_thousand_routes() {
    let mut specs = Vec::new();
    let mut expect = Vec::new();
    for i in 0..10_000usize {
        let host = format!("h{}.test", i % 100);
        let (path, probe) = match i % 3 {
            0 => (format!("/svc{i}/items"), format!("/svc{i}/items")),
            1 => (format!("/svc{i}/items/{{id}}"), format!("/svc{i}/items/77")),
            _ => (format!("/svc{i}/*"), format!("/svc{i}/deep/path")),
        };
        specs.push(RouteSpec {
            hosts: vec![HostPattern::parse(&host).unwrap()],
            paths: vec![PathPattern::parse(&path).unwrap()],
            methods: vec![],
            headers: vec![],
            query: vec![],
            priority: 0,
            value: i,
        });
        expect.push((host, probe, i));
    }
    let r = Router::new(specs).unwrap();
    assert_eq!(r.len(), 10_000);
    let h = HeaderMap::new();
    for (host, path, i) in &expect {
        let m = r.find(&RequestParts { host, path, method: &Method::GET, headers: &h, query: None });
        assert_eq!(m.map(|m| *m.value), Some(*i), "{host}{path}");
    }
    let miss =
        r.find(&RequestParts { host: "h1.test", path: "/svc0/items", method: &Method::GET, headers: &h, query: None });
    assert!(miss.is_none(), "route 0 belongs to host h0.test");
}

/// A table edited one route at a time answers every request exactly like a table built from
/// scratch with the same routes in the same order.
#[test]
fn edits_match_a_fresh_build() {
    use crate::router::Edit;
    // A small xorshift generator: deterministic, no dependency.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut rnd = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let hosts = ["", "a.test", "*.w.test", "b.test"];
    let paths = [
        "/x",
        "/x/*",
        "/x/{id}",
        "/x/{name}",
        "/x/{*rest}",
        "/y/{id}/z",
        "/y/*",
        "/*",
        "~/x/[0-9]+",
        "~/y/(?P<n>[a-z]+)/z",
        "/y/q/z",
    ];
    let gen_spec = |rnd: &mut dyn FnMut(usize) -> usize, label: usize| {
        let mut s = spec(&[], &[], "");
        let h = hosts[rnd(hosts.len())];
        if !h.is_empty() {
            s.hosts.push(HostPattern::parse(h).unwrap());
        }
        for _ in 0..=rnd(2) {
            s.paths.push(PathPattern::parse(paths[rnd(paths.len())]).unwrap());
        }
        if rnd(3) == 0 {
            s.methods.push(Method::POST);
        }
        s.priority = rnd(3) as i32 - 1;
        (s, label)
    };
    let mut specs: Vec<(RouteSpec<&'static str>, usize)> = Vec::new();
    for i in 0..20 {
        specs.push(gen_spec(&mut rnd, i));
    }
    let to_router = |v: &[(RouteSpec<&'static str>, usize)]| {
        Router::new(
            v.iter()
                .map(|(s, l)| {
                    let mut s = s.clone();
                    s.value = Box::leak(l.to_string().into_boxed_str());
                    s
                })
                .collect(),
        )
        .unwrap()
    };
    let mut edited = to_router(&specs);
    let probes: Vec<(&str, &str)> = ["a.test", "q.w.test", "b.test", "other"]
        .iter()
        .flat_map(|h| ["/x", "/x/7", "/x/7/8", "/y/abc/z", "/y/q/z", "/y/1/z", "/y", "/", "/zz"].map(move |p| (*h, p)))
        .collect();
    let mut next_label = 100;
    for step in 0..300 {
        let edit = match rnd(3) {
            0 if !specs.is_empty() => {
                let pos = rnd(specs.len());
                specs.remove(pos);
                Edit::Remove(pos)
            }
            1 if !specs.is_empty() => {
                let pos = rnd(specs.len());
                let (mut s, l) = gen_spec(&mut rnd, next_label);
                next_label += 1;
                specs[pos] = (s.clone(), l);
                s.value = Box::leak(l.to_string().into_boxed_str());
                Edit::Replace(pos, s)
            }
            _ => {
                let (mut s, l) = gen_spec(&mut rnd, next_label);
                next_label += 1;
                specs.push((s.clone(), l));
                s.value = Box::leak(l.to_string().into_boxed_str());
                Edit::Push(s)
            }
        };
        edited = edited.edit(edit).unwrap();
        let fresh = to_router(&specs);
        assert_eq!(edited.len(), fresh.len());
        for (h, p) in &probes {
            for m in [Method::GET, Method::POST] {
                let hm = HeaderMap::new();
                let q = RequestParts { host: h, path: p, method: &m, headers: &hm, query: None };
                let a = edited.find(&q).map(|x| (*x.value, x.params.clone(), x.matched_len));
                let b = fresh.find(&q).map(|x| (*x.value, x.params.clone(), x.matched_len));
                assert_eq!(a, b, "step {step}: {m} {h}{p}");
            }
        }
    }
}
