//! gRPC status: codes, their HTTP mapping, `grpc-status` / `grpc-message` /
//! `grpc-status-details-bin` fields, `grpc-timeout`, and the JSON form of `google.rpc.Status`.

use std::time::Duration;

use base64::Engine as _;
use http::HeaderMap;
use percent_encoding::{AsciiSet, percent_decode, utf8_percent_encode};
use prost::Message as _;

/// A gRPC status code (`google.rpc.Code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Code {
    /// Not an error.
    Ok = 0,
    /// The operation was cancelled, typically by the caller.
    Cancelled = 1,
    /// Unknown error.
    Unknown = 2,
    /// The client specified an invalid argument.
    InvalidArgument = 3,
    /// The deadline expired before the operation could complete.
    DeadlineExceeded = 4,
    /// Some requested entity was not found.
    NotFound = 5,
    /// The entity that a client attempted to create already exists.
    AlreadyExists = 6,
    /// The caller does not have permission.
    PermissionDenied = 7,
    /// Some resource has been exhausted (a quota, a rate limit).
    ResourceExhausted = 8,
    /// The system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// The operation was aborted (a concurrency conflict).
    Aborted = 10,
    /// The operation was attempted past the valid range.
    OutOfRange = 11,
    /// The operation is not implemented.
    Unimplemented = 12,
    /// Internal error.
    Internal = 13,
    /// The service is currently unavailable.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// No valid authentication credentials.
    Unauthenticated = 16,
}

const CODES: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

impl Code {
    /// The code of a number; numbers outside 0..=16 are `Unknown` (as gRPC treats them).
    pub fn from_i32(n: i32) -> Code {
        usize::try_from(n).ok().and_then(|i| CODES.get(i).copied()).unwrap_or(Code::Unknown)
    }

    /// The number.
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The canonical name, e.g. `NOT_FOUND`.
    pub fn name(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The HTTP status of this code, per Google's mapping (`google/rpc/code.proto`, used by
    /// grpc-gateway and Envoy's transcoder).
    pub fn http_status(self) -> u16 {
        match self {
            Code::Ok => 200,
            Code::Cancelled => 499,
            Code::Unknown | Code::Internal | Code::DataLoss => 500,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists | Code::Aborted => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        }
    }

    /// The code of an HTTP response that carries no `grpc-status` (a proxy's error page, an
    /// upstream that is not gRPC), per gRPC's `http-grpc-status-mapping.md`.
    pub fn from_http_status(status: u16) -> Code {
        match status {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502..=504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

/// Bytes written as they are in `grpc-message`: space and visible ASCII except `%`.
const MESSAGE_ESCAPES: &AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// `grpc-message` percent-encoding (UTF-8; bytes outside `0x20..=0x7E` and `%` escaped).
pub fn encode_message(message: &str) -> String {
    utf8_percent_encode(message, MESSAGE_ESCAPES).to_string()
}

/// `grpc-message` decoding. Invalid escapes are kept as they are and invalid UTF-8 is
/// replaced, as the gRPC spec asks of receivers (never an error).
pub fn decode_message(value: &[u8]) -> String {
    percent_decode(value).decode_utf8_lossy().into_owned()
}

/// Parse `grpc-timeout` (`1*8DIGIT` then `H`, `M`, `S`, `m`, `u` or `n`).
pub fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Format a `grpc-timeout` value: the finest unit whose value fits in 8 digits (rounded up,
/// so a deadline is never shortened below what was asked except by the unit's precision).
pub fn format_timeout(d: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    for (unit, per) in [("n", 1u128), ("u", 1_000), ("m", 1_000_000), ("S", 1_000_000_000), ("M", 60_000_000_000)] {
        let v = nanos.div_ceil(per);
        if v <= MAX {
            return format!("{v}{unit}");
        }
    }
    format!("{}H", nanos.div_ceil(3_600_000_000_000).min(MAX))
}

/// `google.rpc.Status` as protobuf (the value of `grpc-status-details-bin`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// The status code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The developer-facing message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Error details (`google.protobuf.Any`).
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

/// A call's status, read from `grpc-status`, `grpc-message` and `grpc-status-details-bin`.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The status number as sent (may be outside the known codes; see [`Status::code`]).
    pub raw_code: i32,
    /// The decoded `grpc-message` (empty when absent).
    pub message: String,
    /// The details of `grpc-status-details-bin`, when present and decodable.
    pub details: Vec<prost_types::Any>,
}

impl Status {
    /// A status with a code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status { raw_code: code.as_i32(), message: message.into(), details: Vec::new() }
    }

    /// The code (`Unknown` for a number outside the known codes).
    pub fn code(&self) -> Code {
        Code::from_i32(self.raw_code)
    }

    /// The status in a header map (the trailers, or the headers of a trailers-only response):
    /// `None` without `grpc-status`. A `grpc-status` that is not a number is `UNKNOWN` with
    /// a message saying so. Details that do not decode are left out.
    pub fn from_headers(headers: &HeaderMap) -> Option<Status> {
        let raw = headers.get("grpc-status")?;
        let message = headers.get("grpc-message").map(|m| decode_message(m.as_bytes())).unwrap_or_default();
        let Some(raw_code) = raw.to_str().ok().and_then(|s| s.trim().parse::<i32>().ok()) else {
            return Some(Status {
                raw_code: Code::Unknown.as_i32(),
                message: format!("invalid grpc-status {:?}", String::from_utf8_lossy(raw.as_bytes())),
                details: Vec::new(),
            });
        };
        let details = headers
            .get("grpc-status-details-bin")
            .and_then(|v| decode_binary_header(v.as_bytes()))
            .and_then(|b| RpcStatus::decode(b.as_slice()).ok())
            .map(|s| s.details)
            .unwrap_or_default();
        Some(Status { raw_code, message, details })
    }

    /// Write the status into a header map (as trailers): `grpc-status`, `grpc-message` when
    /// not empty, `grpc-status-details-bin` when there are details.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert("grpc-status", http::HeaderValue::from(self.raw_code));
        if !self.message.is_empty()
            && let Ok(v) = http::HeaderValue::from_str(&encode_message(&self.message))
        {
            headers.insert("grpc-message", v);
        }
        if !self.details.is_empty() {
            let bin = RpcStatus { code: self.raw_code, message: self.message.clone(), details: self.details.clone() }
                .encode_to_vec();
            let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bin);
            if let Ok(v) = http::HeaderValue::from_str(&b64) {
                headers.insert("grpc-status-details-bin", v);
            }
        }
    }

    /// The HTTP status for a transcoded response.
    pub fn http_status(&self) -> u16 {
        self.code().http_status()
    }

    /// The JSON form of `google.rpc.Status`: `{"code": 5, "message": "...", "details": [...]}`
    /// (`details` left out when empty). `render` turns each detail into its JSON (the
    /// transcoder renders the types it knows, with `@type`; see [`crate::json::Codec::any_to_json`]).
    pub fn to_json(&self, render: impl Fn(&prost_types::Any) -> serde_json::Value) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("code".into(), self.raw_code.into());
        m.insert("message".into(), self.message.clone().into());
        if !self.details.is_empty() {
            m.insert("details".into(), self.details.iter().map(render).collect::<Vec<_>>().into());
        }
        serde_json::Value::Object(m)
    }
}

/// A gRPC binary metadata value (`-bin` suffix): base64, padded or not.
pub fn decode_binary_header(value: &[u8]) -> Option<Vec<u8>> {
    let trimmed: &[u8] = value.strip_suffix(b"==").or_else(|| value.strip_suffix(b"=")).unwrap_or(value);
    base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code maps to Google's HTTP status, and numbers round-trip.
    #[test]
    fn codes_map_to_http_statuses() {
        let want = [200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401];
        for (i, w) in want.iter().enumerate() {
            let c = Code::from_i32(i as i32);
            assert_eq!(c.as_i32(), i as i32);
            assert_eq!(c.http_status(), *w, "{}", c.name());
        }
        assert_eq!(Code::from_i32(17), Code::Unknown);
        assert_eq!(Code::from_i32(-1), Code::Unknown);
        assert_eq!(Code::from_http_status(404), Code::Unimplemented);
        assert_eq!(Code::from_http_status(502), Code::Unavailable);
        assert_eq!(Code::from_http_status(500), Code::Unknown);
    }

    /// `grpc-message` escapes `%`, controls and non-ASCII, and decodes leniently.
    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(encode_message("a b: 100%"), "a b: 100%25");
        assert_eq!(encode_message("line\nnext é"), "line%0Anext %C3%A9");
        for m in ["", "plain", "100% ünïcödé\r\n\t", "%%%"] {
            assert_eq!(decode_message(encode_message(m).as_bytes()), m);
        }
        assert_eq!(decode_message(b"bad %zz escape %"), "bad %zz escape %");
        assert_eq!(decode_message(b"%FF"), "\u{FFFD}");
    }

    /// `grpc-timeout` parses every unit and refuses malformed values; formatting round-trips.
    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "100", "123456789S", "-1S", "1s", "1.5S", " 1S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
        for d in [Duration::from_millis(1500), Duration::from_secs(3600 * 24 * 365), Duration::from_nanos(1)] {
            let back = parse_timeout(&format_timeout(d)).unwrap();
            assert!(back >= d, "{d:?} -> {back:?}");
        }
        assert_eq!(format_timeout(Duration::from_millis(1500)), "1500000u");
    }

    /// Status from trailers: code, decoded message, details; round trip through headers.
    #[test]
    fn status_from_and_to_headers() {
        let mut s = Status::new(Code::NotFound, "no shelf 7: 100%");
        s.details.push(prost_types::Any { type_url: "type.googleapis.com/x.Y".into(), value: vec![1, 2, 3] });
        let mut h = HeaderMap::new();
        s.write_headers(&mut h);
        assert_eq!(h["grpc-status"], "5");
        assert_eq!(h["grpc-message"], "no shelf 7: 100%25");
        assert_eq!(Status::from_headers(&h), Some(s.clone()));
        assert_eq!(s.http_status(), 404);
        let j = s.to_json(|a| serde_json::json!({"@type": a.type_url}));
        assert_eq!(
            j,
            serde_json::json!({"code": 5, "message": "no shelf 7: 100%", "details": [{"@type": "type.googleapis.com/x.Y"}]})
        );
        assert_eq!(Status::from_headers(&HeaderMap::new()), None);
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "abc".parse().unwrap());
        let s = Status::from_headers(&h).unwrap();
        assert_eq!(s.code(), Code::Unknown);
        assert!(s.message.contains("invalid grpc-status"));
        // Padded base64 is accepted too; undecodable details are left out.
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "3".parse().unwrap());
        h.insert("grpc-status-details-bin", "CAMSAXg=".parse().unwrap());
        assert_eq!(Status::from_headers(&h).unwrap().details, vec![]);
        h.insert("grpc-status-details-bin", "!!".parse().unwrap());
        assert_eq!(Status::from_headers(&h).unwrap().code(), Code::InvalidArgument);
    }
}
