//! The response as the data plane passes it along: [`Response`] (a [`Head`] and a body), whose
//! header fields have exactly one owner, [`Fields`].
//!
//! On the plain HTTP/1.1 proxy path an upstream's fields stay the bytes they arrived as
//! ([`RawFields`]): no header map is built for a response nobody reads. [`Fields`] holds them
//! (or a map) behind one API: reading or editing through [`Fields::map_mut`] (or
//! [`Response::headers_mut`], [`Response::into_parts`], [`Response::into_http`]) moves the bytes
//! into the map first, once; appending a field, or setting one the bytes do not hold, does not.
//! Only the HTTP/1.1 encoder looks at the two parts apart ([`Fields::wire`]). Pure: no IO.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Extensions, StatusCode, Version};

use crate::wire::response::RawFields;

/// A response's header fields: the upstream's bytes (when still kept so) followed by a map of
/// the fields added since, or only the map.
#[derive(Default)]
pub(crate) struct Fields {
    /// Fields kept as received (plain path), written before `map`'s.
    raw: Option<RawFields>,
    map: HeaderMap,
}

impl Fields {
    /// Fields already in a map.
    pub(crate) fn from_map(map: HeaderMap) -> Fields {
        Fields { raw: None, map }
    }

    /// An upstream's fields as parsed: bytes when the parser kept them, else its map.
    pub(crate) fn parsed(raw: Option<RawFields>, map: HeaderMap) -> Fields {
        Fields { raw, map }
    }

    /// Every field in one map (the bytes moved into it first, once). Whatever reads or edits
    /// existing fields goes through here.
    pub(crate) fn map_mut(&mut self) -> &mut HeaderMap {
        if let Some(raw) = self.raw.take() {
            raw.merge_into(&mut self.map);
        }
        &mut self.map
    }

    /// The fields as one map.
    pub(crate) fn into_map(mut self) -> HeaderMap {
        self.map_mut();
        self.map
    }

    /// Set `name` to `value`, replacing fields of that name (the bytes are moved into the map
    /// only when they hold one). While the fields are bytes and nothing was added to the map,
    /// the field becomes one more line (no map is built for the plain path's request id).
    pub(crate) fn insert(&mut self, name: HeaderName, value: HeaderValue) {
        if let Some(raw) = &mut self.raw {
            if raw.contains(&name) {
                self.map_mut();
            } else if self.map.is_empty() && !read_by_encoder(&name) {
                raw.push(&name, &value);
                return;
            }
        }
        self.map.insert(name, value);
    }

    /// Add a field after the others.
    pub(crate) fn append(&mut self, name: HeaderName, value: HeaderValue) {
        self.map.append(name, value);
    }

    /// For the HTTP/1.1 encoder only: the lines kept as bytes (written first), then the map.
    pub(crate) fn wire(&self) -> (Option<&RawFields>, &HeaderMap) {
        (self.raw.as_ref(), &self.map)
    }
}

/// Fields the HTTP/1.1 encoder reads from the map (framing, connection, date): never kept as
/// added lines.
fn read_by_encoder(name: &HeaderName) -> bool {
    use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
    name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == CONNECTION || name == DATE
}

/// A response head: status, version, [`Fields`] and extensions.
#[derive(Default)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) fields: Fields,
    pub(crate) extensions: Extensions,
}

impl Head {
    /// This head as `http`'s (fields in one map).
    pub(crate) fn into_http(self) -> http::response::Parts {
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = self.status;
        parts.version = self.version;
        parts.headers = self.fields.into_map();
        parts.extensions = self.extensions;
        parts
    }
}

impl Head {
    /// An upstream's head as parsed: its fields as bytes when the parser kept them (see
    /// [`Fields::parsed`]).
    pub(crate) fn parsed(p: http::response::Parts, raw: Option<RawFields>) -> Head {
        Head { status: p.status, version: p.version, fields: Fields::parsed(raw, p.headers), extensions: p.extensions }
    }
}

impl From<http::response::Parts> for Head {
    fn from(p: http::response::Parts) -> Head {
        Head { status: p.status, version: p.version, fields: Fields::from_map(p.headers), extensions: p.extensions }
    }
}

/// A response of the data plane: a [`Head`] and a body. Its methods follow `http::Response`'s,
/// except that the fields are reached through [`Fields`].
pub(crate) struct Response<B> {
    pub(crate) head: Head,
    pub(crate) body: B,
}

impl<B> Response<B> {
    /// `200 OK`, no fields.
    pub(crate) fn new(body: B) -> Self {
        Response { head: Head::default(), body }
    }

    pub(crate) fn from_parts(head: Head, body: B) -> Self {
        Response { head, body }
    }

    pub(crate) fn into_parts(self) -> (Head, B) {
        (self.head, self.body)
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.head.status
    }

    pub(crate) fn status_mut(&mut self) -> &mut StatusCode {
        &mut self.head.status
    }

    /// Every field in one map (see [`Fields::map_mut`]).
    pub(crate) fn headers_mut(&mut self) -> &mut HeaderMap {
        self.head.fields.map_mut()
    }

    pub(crate) fn fields_mut(&mut self) -> &mut Fields {
        &mut self.head.fields
    }

    pub(crate) fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.head.extensions
    }

    pub(crate) fn body_mut(&mut self) -> &mut B {
        &mut self.body
    }

    /// As `http`'s response (hyper's HTTP/2 server writes the map only).
    pub(crate) fn into_http(self) -> http::Response<B> {
        http::Response::from_parts(self.head.into_http(), self.body)
    }
}

impl<B> From<http::Response<B>> for Response<B> {
    fn from(r: http::Response<B>) -> Self {
        let (parts, body) = r.into_parts();
        Response { head: Head::from(parts), body }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn raw() -> RawFields {
        RawFields::from_lines(b"Server: up\r\nX-Id: a\r\n", Some(5), false)
    }

    /// Appending, or setting a field the bytes do not hold, keeps the bytes; setting one they
    /// hold, or reading the map, moves them into the map once (before the added fields).
    #[test]
    fn bytes_stay_until_read() {
        let mut f = Fields::parsed(Some(raw()), HeaderMap::new());
        f.append(HeaderName::from_static("x-a"), HeaderValue::from_static("1"));
        f.insert(HeaderName::from_static("x-b"), HeaderValue::from_static("2"));
        assert!(f.wire().0.is_some());
        assert!(f.wire().1.contains_key("x-b"), "after a field in the map, set ones go there too");
        f.insert(HeaderName::from_static("x-id"), HeaderValue::from_static("b"));
        assert!(f.wire().0.is_none());
        let m = f.into_map();
        let names: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["server", "x-id", "content-length", "x-a", "x-b"]);
        assert_eq!(m.get_all("x-id").iter().collect::<Vec<_>>(), ["b"]);
        assert_eq!(m[header::CONTENT_LENGTH], "5");
    }

    /// The plain path's request id: one more line while nothing else was added (no map);
    /// setting it again replaces it; the encoder's fields always go to the map.
    #[test]
    fn set_field_becomes_a_line() {
        let mut f = Fields::parsed(Some(raw()), HeaderMap::new());
        f.insert(HeaderName::from_static("x-request-id"), HeaderValue::from_static("r1"));
        let (bytes, map) = f.wire();
        assert_eq!(bytes.map(|r| r.lines()), Some((&b"Server: up\r\nX-Id: a\r\n"[..], &b"x-request-id: r1\r\n"[..])));
        assert!(map.is_empty());
        f.insert(HeaderName::from_static("x-request-id"), HeaderValue::from_static("r2"));
        assert!(f.wire().0.is_none());
        let mut f = Fields::parsed(Some(raw()), HeaderMap::new());
        f.insert(header::DATE, HeaderValue::from_static("d"));
        assert_eq!(f.wire().0.map(|r| r.lines().1.len()), Some(0));
        let m = f.into_map();
        assert_eq!(m.get_all("x-request-id").iter().count(), 0);
        assert_eq!(m[header::DATE], "d");
        let mut f = Fields::parsed(Some(raw()), HeaderMap::new());
        f.insert(HeaderName::from_static("x-request-id"), HeaderValue::from_static("r1"));
        let m = f.into_map();
        let names: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["server", "x-id", "content-length", "x-request-id"]);
    }

    #[test]
    fn http_round_trip() {
        let mut r = Response::new(());
        r.fields_mut().append(header::SERVER, HeaderValue::from_static("gw"));
        *r.status_mut() = StatusCode::NOT_FOUND;
        let h = r.into_http();
        assert_eq!(h.status(), StatusCode::NOT_FOUND);
        assert_eq!(h.headers()[header::SERVER], "gw");
        let back = Response::from(h);
        assert_eq!(back.head.fields.wire().1[header::SERVER], "gw");
    }
}
