#![no_main]
//! Fuzz target: see `dm_mp::server::fuzzing::device_requests`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| dm_mp::server::fuzzing::device_requests(data));
