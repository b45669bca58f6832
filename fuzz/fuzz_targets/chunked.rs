//! See gw_fuzz::chunked and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gw_fuzz::chunked::chunked(data));
