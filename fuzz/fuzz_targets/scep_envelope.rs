#![no_main]
//! Fuzz target: see `dm_client::fuzzing::scep_envelope`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| dm_client::fuzzing::scep_envelope(data));
