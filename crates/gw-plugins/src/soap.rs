//! `soap`: a JSON request to a SOAP (or plain XML) upstream through a template, and the XML
//! answer back to JSON (the mapping of `gw_grpc::xml`); SOAP faults become JSON errors
//! (`client_fault_status` for client faults, `server_fault_status` for the others), and an
//! answer that cannot be read is a 502 with the reason.
//!
//! Both bodies are read whole: the request within the route's body limit (and 8 MiB), the
//! response within `max_body_bytes`.

use bytes::Bytes;
use gw_config::plugins::{NamespaceMode, SchemaContext, Soap as Conf, SoapVersionConfig};
use gw_core::{Ctx, Error, ErrorKind, Flow, Plugin, Reply, RequestHead, ResponseHead, Result, priority};
use gw_grpc::xml::{Namespaces, SoapResponse, SoapVersion, Template, XmlOptions, soap_envelope, soap_response};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use serde_json::{Map, Value};

pub(crate) struct Soap {
    version: SoapVersion,
    action: Option<String>,
    template: Template,
    envelope: bool,
    opts: XmlOptions,
    client_fault: StatusCode,
    server_fault: StatusCode,
}

/// The request went through this plugin (its response is read back).
#[derive(Clone)]
struct Translated;

impl Soap {
    pub(crate) fn new(c: &Conf) -> Result<Self, String> {
        // Template files were made absolute when the configuration was validated.
        let template = c.template(&SchemaContext::default()).map_err(|e| format!("{}: {}", e.path, e.message))?;
        let status = |s: u16| StatusCode::from_u16(s).map_err(|e| e.to_string());
        Ok(Soap {
            version: match c.version {
                SoapVersionConfig::V11 => SoapVersion::V11,
                SoapVersionConfig::V12 => SoapVersion::V12,
            },
            action: c.action.clone(),
            template,
            envelope: c.envelope,
            opts: XmlOptions {
                namespaces: match c.namespaces {
                    NamespaceMode::Strip => Namespaces::Strip,
                    NamespaceMode::Keep => Namespaces::Keep,
                },
                max_bytes: c.max_body_bytes.as_ref().map_or(8 << 20, |b| b.get() as usize),
                max_depth: c.max_depth.map_or(64, |d| d as usize),
                always_array: c.always_array.clone(),
            },
            client_fault: status(c.client_fault_status)?,
            server_fault: status(c.server_fault_status)?,
        })
    }

    /// What the template sees: `body`, `query`, `params`, `headers`.
    fn context(req: &RequestHead, body: Value, cx: &Ctx) -> Value {
        let mut query = Map::new();
        if let Some(q) = req.query() {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                query.insert(k.into_owned(), Value::String(v.into_owned()));
            }
        }
        let params: Map<String, Value> = cx.params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        let mut headers = Map::new();
        for (k, v) in &req.headers {
            if let Ok(v) = v.to_str() {
                headers.entry(k.as_str()).or_insert_with(|| Value::String(v.to_string()));
            }
        }
        let mut cx = Map::new();
        cx.insert("body".into(), body);
        cx.insert("query".into(), Value::Object(query));
        cx.insert("params".into(), Value::Object(params));
        cx.insert("headers".into(), Value::Object(headers));
        Value::Object(cx)
    }
}

fn json_body(status: StatusCode, v: &Value) -> Reply {
    Reply::json(status, v)
}

#[gw_core::plugin]
impl Plugin for Soap {
    fn name(&self) -> &'static str {
        "soap"
    }

    fn priority(&self) -> i32 {
        priority::SOAP
    }

    async fn request_body(&self, req: &mut RequestHead, body: &mut Bytes, cx: &mut Ctx) -> Result<Flow> {
        let json: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Map::new())
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return Ok(Flow::Respond(json_body(
                        StatusCode::BAD_REQUEST,
                        &serde_json::json!({"error": "invalid_json_body", "message": e.to_string()}),
                    )));
                }
            }
        };
        let xml = match self.template.render(&Self::context(req, json, cx)) {
            Ok(x) => x,
            Err(e) => {
                return Ok(Flow::Respond(json_body(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": "bad_request", "message": e.0}),
                )));
            }
        };
        let h = &mut req.headers;
        for f in [header::CONTENT_ENCODING, header::ACCEPT_ENCODING, header::TRANSFER_ENCODING, header::ACCEPT] {
            h.remove(f);
        }
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        let (doc, ct) =
            if self.envelope { soap_envelope(self.version, &xml) } else { (xml, "application/xml; charset=utf-8") };
        let ct = match (self.version, &self.action, self.envelope) {
            (SoapVersion::V12, Some(a), true) => format!("{ct}; action=\"{a}\""),
            _ => ct.to_string(),
        };
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&ct)
                .map_err(|e| Error::new(ErrorKind::Internal, "soap content type").with_cause(e))?,
        );
        if let (SoapVersion::V11, Some(a), true) = (self.version, &self.action, self.envelope) {
            let v = HeaderValue::from_str(&format!("\"{a}\""))
                .map_err(|e| Error::new(ErrorKind::Internal, "SOAPAction").with_cause(e))?;
            h.insert(HeaderName::from_static("soapaction"), v);
        }
        req.method = Method::POST;
        *body = Bytes::from(doc);
        cx.vars.insert(Translated);
        Ok(Flow::Continue)
    }

    fn wants_response_body(&self, _resp: &ResponseHead, cx: &Ctx) -> bool {
        cx.vars.get::<Translated>().is_some()
    }

    async fn response_body(&self, resp: &mut ResponseHead, body: &mut Bytes, cx: &mut Ctx) -> Result<()> {
        if cx.vars.get::<Translated>().is_none() {
            return Ok(());
        }
        let unreadable = |e: gw_grpc::xml::XmlError| {
            Error::new(ErrorKind::ResponseNotEditable, "soap response").with_public_field(
                "detail",
                format!("the upstream's answer (HTTP {}) is not readable: {e}", resp.status.as_u16()),
            )
        };
        let (status, json) = if self.envelope {
            match soap_response(body, &self.opts).map_err(unreadable)? {
                SoapResponse::Body(j) => (StatusCode::OK, j),
                SoapResponse::Fault(f) => {
                    let s = if f.is_client_fault() { self.client_fault } else { self.server_fault };
                    (s, f.to_json())
                }
            }
        } else {
            let j = gw_grpc::xml::xml_to_json(body, &self.opts).map_err(unreadable)?;
            (StatusCode::OK, j)
        };
        // A body that is not a fault under an error status: the upstream's status stays.
        resp.status = if status == StatusCode::OK && !resp.status.is_success() { resp.status } else { status };
        resp.headers.remove(header::CONTENT_LENGTH);
        resp.headers.remove(header::CONTENT_ENCODING);
        resp.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        resp.trailers = None;
        *body = Bytes::from(serde_json::to_vec(&json).unwrap_or_default());
        Ok(())
    }
}
