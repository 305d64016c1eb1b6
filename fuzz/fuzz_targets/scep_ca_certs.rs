#![no_main]
//! Fuzz target: see `dm_client::fuzzing::scep_ca_certs`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| dm_client::fuzzing::scep_ca_certs(data));
