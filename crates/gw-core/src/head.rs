//! Gateway-owned request and response heads that plugins read and edit.

use http::{HeaderMap, Method, StatusCode, Uri, Version};

/// The request head as it will be sent upstream. Plugins may edit any field: the proxy builds
/// the upstream request from it after the `upstream_request` phase.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Method.
    pub method: Method,
    /// Origin-form URI (`/path?query`) sent upstream.
    pub uri: Uri,
    /// Version received from the client.
    pub version: Version,
    /// Headers (hop-by-hop headers already removed).
    pub headers: HeaderMap,
}

impl RequestHead {
    /// The path part of the URI.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The query string, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// Replace the path, keeping the query.
    pub fn set_path(&mut self, path: &str) -> Result<(), http::Error> {
        let pq = match self.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_string(),
        };
        self.uri = Uri::builder().path_and_query(pq).build()?;
        Ok(())
    }

    /// Replace the query string (`None` removes it), keeping the path.
    pub fn set_query(&mut self, query: Option<&str>) -> Result<(), http::Error> {
        let pq = match query {
            Some(q) if !q.is_empty() => format!("{}?{q}", self.uri.path()),
            _ => self.uri.path().to_string(),
        };
        self.uri = Uri::builder().path_and_query(pq).build()?;
        Ok(())
    }

    /// First value of a header as text, if valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The response head on its way to the client.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// Status.
    pub status: StatusCode,
    /// Version.
    pub version: Version,
    /// Headers.
    pub headers: HeaderMap,
    /// The trailers, where they are known with the head: in [`crate::Plugin::response_body`]
    /// (the whole body has been read, e.g. a gRPC response's `grpc-status` can be read and
    /// mapped there; what is left here is sent after the body). `None` elsewhere: a streaming
    /// body's trailers pass through [`crate::BodyFilter::trailers`].
    pub trailers: Option<HeaderMap>,
}

impl ResponseHead {
    /// A head without trailers.
    pub fn new(status: StatusCode, version: Version, headers: HeaderMap) -> Self {
        ResponseHead { status, version, headers, trailers: None }
    }
}
