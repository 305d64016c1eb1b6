#![no_main]
//! Fuzz target: see `dm_mp::server::fuzzing::debian_repository`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| dm_mp::server::fuzzing::debian_repository(data));
