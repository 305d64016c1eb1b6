#![no_main]
//! Fuzz target: see `dm_client::fuzzing::system_images`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| dm_client::fuzzing::system_images(data));
