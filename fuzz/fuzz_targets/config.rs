//! See gw_fuzz::config, gw_fuzz::mutate and docs/fuzzing.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gw_fuzz::config::config(data));

// Half of the mutations are line-wise YAML edits (keys and values the configuration knows),
// the other half libFuzzer's own byte-level ones.
libfuzzer_sys::fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    if seed % 2 == 0
        && let Some(m) = gw_fuzz::mutate::yaml(&data[..size], seed / 2, max_size)
    {
        data[..m.len()].copy_from_slice(&m);
        return m.len();
    }
    libfuzzer_sys::fuzzer_mutate(data, size, max_size)
});
