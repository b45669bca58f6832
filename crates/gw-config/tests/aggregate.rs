//! The `aggregate` service schema: validated in full, errors located at file:line:column with
//! their key.

use std::collections::HashMap;

use gw_config::{ValidateOptions, parse_yaml, validate_located};

fn errors(yaml: &str) -> Vec<String> {
    let file = match parse_yaml(yaml, "gw.yaml", HashMap::new()) {
        Ok(f) => f,
        Err(e) => return e.errors.iter().map(ToString::to_string).collect(),
    };
    match validate_located(&file, "gw.yaml", Some(yaml), &ValidateOptions::default()) {
        Ok(_) => vec![],
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_valid_aggregate_is_accepted() {
    let yaml = r#"
services:
  - name: users
    url: http://127.0.0.1:9001
  - name: orders
    url: http://127.0.0.1:9002
  - name: home
    type: aggregate
    aggregate:
      timeout: 2s
      max_concurrency: 4
      max_body_bytes: 512KiB
      calls:
        - name: user
          service: users
          path: /users/{id}
          deny: [password_hash]
          mapping: { name: display_name }
        - name: orders
          service: orders
          path: /orders?user={resp0.account_id}
          query: { lang: "{query.lang}" }
          headers: { X-Tenant: "{headers.x-tenant}" }
          required: false
          timeout: 500ms
          wrap: items
          group: orders
          allow: [items.id, items.total]
        - name: audit
          url: http://127.0.0.1:9003/v1
          method: POST
          path: /audit
          json_body: { user: "{resp.user.id}", by: "{consumer.username}" }
          after: [orders]
          required: false
routes:
  - name: home
    service: home
    paths: ["/home/{id}"]
"#;
    let errs = errors(yaml);
    assert!(errs.is_empty(), "{errs:#?}");
}

#[test]
fn aggregate_errors_name_file_line_and_key() {
    let yaml = r#"
services:
  - name: users
    url: http://127.0.0.1:9001
  - name: echo
    type: echo
  - name: home
    type: aggregate
    url: http://127.0.0.1:1
    aggregate:
      calls:
        - name: user
          service: nobody
          path: /users/{id}
        - name: echo
          service: echo
          path: /x
        - name: both
          service: users
          url: http://127.0.0.1:2
          path: /x
        - name: orders
          service: users
          path: /orders?user={resp.missing.id}
          headers: { Host: x }
          body: sometimes
        - name: loop
          service: users
          path: /a/{resp.user.id}/{resp4.x}
          allow: ["a..b"]
  - name: plain
    url: http://127.0.0.1:9001
    aggregate: { calls: [] }
"#;
    let errs = errors(yaml);
    for want in [
        "gw.yaml:9:5: services[2].url: `url` does not apply to a service of type aggregate",
        "gw.yaml:13:11: services[2].aggregate.calls[0].service: unknown service \"nobody\"",
        "gw.yaml:16:11: services[2].aggregate.calls[1].service: service \"echo\" is not a proxy service",
        "gw.yaml:18:11: services[2].aggregate.calls[2]: set exactly one of `service` and `url`",
        "gw.yaml:26:11: services[2].aggregate.calls[3].body: \"sometimes\": use client or none",
        "gw.yaml:24:11: services[2].aggregate.calls[3].path: \"{resp.missing.id}\": no call named \"missing\"",
        "gw.yaml:25:22: services[2].aggregate.calls[3].headers.Host: Host is set by the gateway",
        "gw.yaml:27:11: services[2].aggregate.calls[4]: call \"loop\" refers to its own response",
        "gw.yaml:30:19: services[2].aggregate.calls[4].allow[0]: path \"a..b\": empty segment",
        "gw.yaml:33:5: services[3].aggregate: `aggregate` is only for services of type aggregate",
    ] {
        assert!(errs.iter().any(|e| e.contains(want)), "missing {want:?} in {errs:#?}");
    }
}

#[test]
fn an_unknown_key_in_a_call_is_located() {
    let yaml = "services:\n  - name: home\n    type: aggregate\n    aggregate:\n      calls:\n        - name: a\n          service: x\n          path: /\n          colour: blue\n";
    let errs = errors(yaml);
    assert!(errs[0].starts_with("gw.yaml:9:"), "{errs:#?}");
    assert!(errs[0].contains("colour"), "{errs:#?}");
}
