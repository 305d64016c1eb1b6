#![no_main]
//! Fuzz target: see `dm_shared::fuzzing::software_updates`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| dm_shared::fuzzing::software_updates(data));
