#![no_main]
//! Fuzz target: see `dm_client::fuzzing::scep_cert_rep`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| dm_client::fuzzing::scep_cert_rep(data));
