//! OTLP/protobuf encoding of the gateway's finished spans: one `ExportTraceServiceRequest`
//! written straight from the [`Finished`] records with prost's wire-format primitives, with
//! the field numbers of the official definitions (`opentelemetry/proto/collector/trace/v1`,
//! `trace/v1/trace.proto`, `common/v1/common.proto`, `resource/v1/resource.proto`).
//!
//! Pure logic, no IO. Building `opentelemetry-proto`'s message structs first cost about
//! 10,000 instructions per span (a `String` per attribute key and value, prost's nested length
//! computations); writing the wire format directly costs a fraction of that
//! (docs/benchmarks.md). The tests decode what this writes with `opentelemetry-proto`'s
//! generated types and compare it with the same spans converted to those types.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::export::{Finished, Kind};
use gw_core::AttrValue;

/// OTLP `SpanFlags`: the W3C trace flags (sampled), "has is-remote" and "is-remote".
const FLAG_SAMPLED: u32 = 0x01;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

fn len_field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_len_key(out: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
    put_len_key(out, tag, b.len());
    out.extend_from_slice(b);
}

/// `AnyValue`'s encoded length (the oneof field is written even when it holds a default).
fn any_value_len(v: &AttrValue) -> usize {
    match v {
        AttrValue::Str(s) => len_field_len(1, s.len()),
        AttrValue::Bool(_) => 2,
        // int64: negative numbers take ten bytes.
        #[allow(clippy::cast_sign_loss)]
        AttrValue::Int(i) => 1 + encoded_len_varint(*i as u64),
        AttrValue::Float(_) => 9,
    }
}

fn put_any_value(out: &mut Vec<u8>, v: &AttrValue) {
    match v {
        AttrValue::Str(s) => put_bytes(out, 1, s.as_bytes()),
        AttrValue::Bool(b) => {
            encode_key(2, WireType::Varint, out);
            out.push(u8::from(*b));
        }
        #[allow(clippy::cast_sign_loss)]
        AttrValue::Int(i) => {
            encode_key(3, WireType::Varint, out);
            encode_varint(*i as u64, out);
        }
        AttrValue::Float(f) => {
            encode_key(4, WireType::SixtyFourBit, out);
            out.extend_from_slice(&f.to_le_bytes());
        }
    }
}

/// `KeyValue`'s encoded length: `(key, value)` and the length of the value's `AnyValue`.
fn key_value_len(key: &str, v: &AttrValue) -> (usize, usize) {
    let any = any_value_len(v);
    let key = if key.is_empty() { 0 } else { len_field_len(1, key.len()) };
    (key + len_field_len(2, any), any)
}

fn put_key_value(out: &mut Vec<u8>, tag: u32, key: &str, v: &AttrValue) {
    let (len, any) = key_value_len(key, v);
    put_len_key(out, tag, len);
    if !key.is_empty() {
        put_bytes(out, 1, key.as_bytes());
    }
    put_len_key(out, 2, any);
    put_any_value(out, v);
}

fn kind_number(k: Kind) -> u64 {
    match k {
        Kind::Internal => 1,
        Kind::Server => 2,
        Kind::Client => 3,
    }
}

/// The span's `tracestate` (a protobuf `string`: not written unless it is UTF-8, which the
/// gateway's own values are; a plugin could set another).
fn tracestate(s: &Finished) -> &[u8] {
    s.tracestate.as_ref().and_then(|v| v.to_str().ok()).map_or(&[][..], str::as_bytes)
}

/// `Status`: message (2) and code (3: `Error` is 2; `Unset`, 0, is not written).
fn status_len(s: &Finished) -> usize {
    match &s.error {
        None => 0,
        Some(m) if m.is_empty() => 2,
        Some(m) => len_field_len(2, m.len()) + 2,
    }
}

/// A `Span`'s encoded length.
fn span_len(s: &Finished) -> usize {
    let mut n = len_field_len(1, 16) + len_field_len(2, 8);
    let state = tracestate(s);
    if !state.is_empty() {
        n += len_field_len(3, state.len());
    }
    if s.parent_span_id != [0; 8] {
        n += len_field_len(4, 8);
    }
    if !s.name.is_empty() {
        n += len_field_len(5, s.name.len());
    }
    // kind (6) and flags (16, fixed32: a two-byte key); start (7) and end (8) times, not
    // written when zero (as prost does).
    n += 2 + 6;
    n += 9 * usize::from(nanos(s.start) != 0) + 9 * usize::from(nanos(s.end) != 0);
    for (k, v) in &s.attributes {
        n += len_field_len(9, key_value_len(k, v).0);
    }
    n + len_field_len(15, status_len(s))
}

fn put_span(out: &mut Vec<u8>, s: &Finished) {
    put_len_key(out, 2, span_len(s));
    put_bytes(out, 1, &s.trace_id);
    put_bytes(out, 2, &s.span_id);
    let state = tracestate(s);
    if !state.is_empty() {
        put_bytes(out, 3, state);
    }
    if s.parent_span_id != [0; 8] {
        put_bytes(out, 4, &s.parent_span_id);
    }
    if !s.name.is_empty() {
        put_bytes(out, 5, s.name.as_bytes());
    }
    encode_key(6, WireType::Varint, out);
    encode_varint(kind_number(s.kind), out);
    for (tag, t) in [(7, nanos(s.start)), (8, nanos(s.end))] {
        if t != 0 {
            encode_key(tag, WireType::SixtyFourBit, out);
            out.extend_from_slice(&t.to_le_bytes());
        }
    }
    for (k, v) in &s.attributes {
        put_key_value(out, 9, k, v);
    }
    put_len_key(out, 15, status_len(s));
    if let Some(m) = &s.error {
        if !m.is_empty() {
            put_bytes(out, 2, m.as_bytes());
        }
        encode_key(3, WireType::Varint, out);
        out.push(2);
    }
    let mut flags = FLAG_SAMPLED | FLAG_HAS_IS_REMOTE;
    if s.remote_parent {
        flags |= FLAG_IS_REMOTE;
    }
    encode_key(16, WireType::ThirtyTwoBit, out);
    out.extend_from_slice(&flags.to_le_bytes());
}

/// Nanoseconds since the Unix epoch (0 before it).
pub(crate) fn nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Who the spans are from: the encoded OTLP `Resource` (`service.name`) and
/// `InstrumentationScope` fields, the same in every request.
#[derive(Debug, Clone)]
pub(crate) struct Origin {
    /// `ResourceSpans.resource` (field 1), whole.
    resource: Vec<u8>,
    /// `ScopeSpans.scope` (field 1), whole.
    scope: Vec<u8>,
}

impl Origin {
    pub(crate) fn new(service_name: &str) -> Origin {
        let mut attrs = Vec::new();
        put_key_value(&mut attrs, 1, "service.name", &AttrValue::Str(service_name.to_string().into()));
        let mut resource = Vec::new();
        put_bytes(&mut resource, 1, &attrs);
        let mut body = Vec::new();
        put_bytes(&mut body, 1, b"gatehouse");
        put_bytes(&mut body, 2, env!("CARGO_PKG_VERSION").as_bytes());
        let mut scope = Vec::new();
        put_bytes(&mut scope, 1, &body);
        Origin { resource, scope }
    }

    /// One export request holding `spans`, encoded. The spans are written once, after room
    /// left for the request's, resource's and scope's headers, which are written last into
    /// the end of that room.
    pub(crate) fn encode(&self, spans: &[Finished]) -> bytes::Bytes {
        // Two keys and two length varints (at most 5 bytes each) besides the constant parts.
        let room = self.resource.len() + self.scope.len() + 2 * (1 + 5);
        let mut out = Vec::with_capacity(room + spans.iter().map(|s| 3 + span_len(s)).sum::<usize>());
        out.resize(room, 0);
        for s in spans {
            put_span(&mut out, s);
        }
        let scope_spans = self.scope.len() + (out.len() - room);
        let resource_spans = self.resource.len() + len_field_len(2, scope_spans);
        let mut head = Vec::with_capacity(room);
        put_len_key(&mut head, 1, resource_spans);
        head.extend_from_slice(&self.resource);
        put_len_key(&mut head, 2, scope_spans);
        head.extend_from_slice(&self.scope);
        let start = room - head.len();
        out[start..room].copy_from_slice(&head);
        bytes::Bytes::from(out).slice(start..)
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::{Duration, UNIX_EPOCH};

    use http::HeaderValue;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, SpanFlags, Status, span, status};
    use prost::Message as _;

    use super::*;

    /// The reference: the same span as `opentelemetry-proto`'s generated struct.
    fn reference(s: &Finished) -> Span {
        let mut flags = 0x01 | SpanFlags::ContextHasIsRemoteMask as u32;
        if s.remote_parent {
            flags |= SpanFlags::ContextIsRemoteMask as u32;
        }
        let kind = match s.kind {
            Kind::Server => span::SpanKind::Server,
            Kind::Client => span::SpanKind::Client,
            Kind::Internal => span::SpanKind::Internal,
        };
        let status = match &s.error {
            Some(m) => Status { code: status::StatusCode::Error as i32, message: m.to_string() },
            None => Status { code: status::StatusCode::Unset as i32, message: String::new() },
        };
        let value = |v: &AttrValue| match v {
            AttrValue::Str(s) => any_value::Value::StringValue(s.to_string()),
            AttrValue::Int(i) => any_value::Value::IntValue(*i),
            AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
            AttrValue::Float(f) => any_value::Value::DoubleValue(*f),
        };
        Span {
            trace_id: s.trace_id.to_vec(),
            span_id: s.span_id.to_vec(),
            trace_state: s.tracestate.as_ref().map(|v| v.to_str().unwrap().to_string()).unwrap_or_default(),
            parent_span_id: if s.parent_span_id == [0; 8] { Vec::new() } else { s.parent_span_id.to_vec() },
            flags,
            name: s.name.to_string(),
            kind: kind as i32,
            start_time_unix_nano: nanos(s.start),
            end_time_unix_nano: nanos(s.end),
            attributes: s
                .attributes
                .iter()
                .map(|(k, v)| KeyValue {
                    key: (*k).to_string(),
                    value: Some(AnyValue { value: Some(value(v)) }),
                    ..KeyValue::default()
                })
                .collect(),
            status: Some(status),
            ..Span::default()
        }
    }

    fn reference_request(service: &str, spans: &[Finished]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue { value: Some(any_value::Value::StringValue(service.into())) }),
                        ..KeyValue::default()
                    }],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "gatehouse".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..InstrumentationScope::default()
                    }),
                    spans: spans.iter().map(reference).collect(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn server_span() -> Finished {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        Finished {
            trace_id: [0x4b; 16],
            span_id: [0x0f; 8],
            parent_span_id: [0x11; 8],
            remote_parent: true,
            kind: Kind::Server,
            name: Cow::Borrowed("GET /users/{id}"),
            start,
            end: start + Duration::from_micros(1500),
            attributes: vec![
                ("http.request.method", AttrValue::from("GET")),
                ("url.path", AttrValue::from("/users/7".to_string())),
                ("http.response.status_code", AttrValue::Int(200)),
                ("gatehouse.cached", AttrValue::Bool(false)),
                ("gatehouse.connect_time_ms", AttrValue::Float(0.25)),
            ],
            error: None,
            tracestate: Some(HeaderValue::from_static("vendor=abc")),
        }
    }

    /// A span decodes (with the official types) to what was put in: ids, parent, flags, kind,
    /// times, every attribute type, status and tracestate, under one resource
    /// (`service.name`) and the gateway's scope.
    #[test]
    fn export_request_decodes_to_the_spans() {
        let mut root = server_span();
        root.parent_span_id = [0; 8];
        root.remote_parent = false;
        root.kind = Kind::Internal;
        root.error = Some(Cow::Borrowed("timeout"));
        root.tracestate = None;
        let spans = [server_span(), root];
        let req = ExportTraceServiceRequest::decode(Origin::new("edge").encode(&spans)).unwrap();
        assert_eq!(req, reference_request("edge", &spans));
        let s = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(s[0].flags, 0x301, "sampled, has-is-remote, is-remote");
        assert_eq!(s[0].parent_span_id, vec![0x11; 8]);
        assert_eq!(s[0].end_time_unix_nano - s[0].start_time_unix_nano, 1_500_000);
        assert_eq!(s[0].trace_state, "vendor=abc");
        assert_eq!(s[1].flags, 0x101, "sampled, has-is-remote, not remote");
        assert!(s[1].parent_span_id.is_empty(), "a root span has no parent id");
        assert_eq!(s[1].status, Some(Status { code: status::StatusCode::Error as i32, message: "timeout".into() }));
    }

    /// An empty batch is a valid request with no spans.
    #[test]
    fn empty_batch() {
        let req = ExportTraceServiceRequest::decode(Origin::new("").encode(&[])).unwrap();
        assert_eq!(req, reference_request("", &[]));
    }

    fn random_string(rng: &mut fastrand::Rng) -> String {
        let n = match rng.u8(..4) {
            0 => 0,
            1 => rng.usize(1..8),
            2 => rng.usize(100..300),
            _ => rng.usize(8..40),
        };
        (0..n).map(|_| if rng.bool() { rng.alphanumeric() } else { rng.char(..) }).collect()
    }

    fn random_span(rng: &mut fastrand::Rng) -> Finished {
        const KEYS: [&str; 5] = ["a", "url.path", "gatehouse.attempt", "", "k"];
        let start = UNIX_EPOCH + Duration::from_nanos(rng.u64(..u64::MAX / 2));
        let attributes = (0..rng.usize(..30))
            .map(|_| {
                let v = match rng.u8(..4) {
                    0 => AttrValue::from(random_string(rng)),
                    1 => AttrValue::Int(match rng.u8(..3) {
                        0 => rng.i64(..),
                        1 => rng.i64(-200..200),
                        _ => 0,
                    }),
                    2 => AttrValue::Bool(rng.bool()),
                    _ => AttrValue::Float(f64::from_bits(rng.u64(..)).clamp(-1e300, 1e300) * f64::from(rng.u8(..2))),
                };
                (KEYS[rng.usize(..KEYS.len())], v)
            })
            .collect();
        let kind = [Kind::Server, Kind::Client, Kind::Internal][rng.usize(..3)];
        Finished {
            trace_id: rng.u128(..).to_be_bytes(),
            span_id: rng.u64(..).to_be_bytes(),
            parent_span_id: if rng.bool() { [0; 8] } else { rng.u64(..).to_be_bytes() },
            remote_parent: rng.bool(),
            kind,
            name: Cow::Owned(random_string(rng)),
            start,
            end: start + Duration::from_nanos(rng.u64(..1 << 40)),
            attributes,
            error: match rng.u8(..3) {
                0 => None,
                1 => Some(Cow::Borrowed("")),
                _ => Some(Cow::Owned(random_string(rng))),
            },
            tracestate: rng.bool().then(|| HeaderValue::from_static("a=1,b=2")),
        }
    }

    /// Random batches (strings of every length class and of any characters, negative and zero
    /// integers, floats, empty keys, names and messages, root and remote-parent spans) decode
    /// exactly to the reference conversion.
    #[test]
    fn random_batches_match_the_reference() {
        let mut rng = fastrand::Rng::with_seed(22);
        for round in 0..300 {
            let spans: Vec<Finished> = (0..rng.usize(..12)).map(|_| random_span(&mut rng)).collect();
            let service = random_string(&mut rng);
            let bytes = Origin::new(&service).encode(&spans);
            let req = ExportTraceServiceRequest::decode(bytes.clone())
                .unwrap_or_else(|e| panic!("round {round}: {e}: {spans:#?}"));
            let want = reference_request(&service, &spans);
            // NaN never equals itself: compare the encodings of both instead.
            assert_eq!(req.encode_to_vec(), want.encode_to_vec(), "round {round}: {spans:#?}");
            assert_eq!(bytes.len(), want.encoded_len(), "round {round}: minimal encoding");
        }
    }
}
