//! See gw_fuzz::connection and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gw_fuzz::connection::request_connection(data));
