//! Protocol translation for Gatehouse, as pure logic: no IO, no HTTP engine, no plugin
//! contract. The plugins that run these translations in the pipeline (`grpc-web`,
//! `grpc-transcode`, `soap`) are built on the streaming body seam; every piece here works on
//! bytes, header maps and JSON, chunk by chunk where a body streams, so a body filter wraps it
//! in a few lines.
//!
//! | module | what |
//! | --- | --- |
//! | [`frame`] | gRPC length-prefixed messages: incremental decoder (any chunk boundaries, bounded message size), encoder |
//! | [`web`] | gRPC-Web: content types, header mapping, binary and base64 text bodies (incremental, padding per chunk), the trailer frame |
//! | [`status`] | status codes, Google's gRPC to HTTP mapping, `grpc-message` percent-encoding, `grpc-timeout`, `grpc-status-details-bin` |
//! | [`descriptor`] | descriptor sets (`.pb`) and `.proto` files compiled in pure Rust (protox) into a prost-reflect pool |
//! | [`template`] | `google.api.http` path templates: parser and matcher |
//! | [`rules`] | HTTP rules from annotations and configuration, checked into bindings |
//! | [`transcode`] | REST/JSON to gRPC: routing, request building (path, query, body), JSON responses, streams (JSON array or NDJSON), errors as `google.rpc.Status` |
//! | [`xml`] | XML to JSON mapping, SOAP 1.1/1.2 envelopes and faults, JSON to XML templates |
//!
//! ```
//! use gw_grpc::frame::{FrameDecoder, Frame, encode_message};
//!
//! let bytes = encode_message(b"hello", false).unwrap();
//! let mut d = FrameDecoder::new(gw_grpc::frame::DEFAULT_MAX_MESSAGE);
//! d.push(&bytes[..3]); // chunks may end anywhere
//! assert_eq!(d.next_frame().unwrap(), None);
//! d.push(&bytes[3..]);
//! assert!(matches!(d.next_frame().unwrap(), Some(Frame::Message { compressed: false, .. })));
//! ```

pub mod descriptor;
pub mod frame;
pub mod rules;
pub mod status;
pub mod template;
pub mod transcode;
pub mod web;
pub mod xml;
