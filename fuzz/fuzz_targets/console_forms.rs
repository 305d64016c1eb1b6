#![no_main]
//! Fuzz target: see `dm_mp::server::console::fuzzing::forms`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| dm_mp::server::console::fuzzing::forms(data));
