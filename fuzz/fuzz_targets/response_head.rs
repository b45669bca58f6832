//! See gw_fuzz::response_head and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gw_fuzz::response_head::response_head(data));
