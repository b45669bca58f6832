//! Protocol translation for Gatehouse, as pure logic (no IO, no HTTP engine).
pub mod descriptor;
pub mod frame;
pub mod rules;
pub mod status;
pub mod template;
pub mod transcode;
pub mod web;
