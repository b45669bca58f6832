//! See gw_fuzz::request_head and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gw_fuzz::request_head::request_head(data));
