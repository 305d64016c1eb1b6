#![no_main]
//! Fuzz target: see `dm_shared::fuzzing::signature_files`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| dm_shared::fuzzing::signature_files(data));
