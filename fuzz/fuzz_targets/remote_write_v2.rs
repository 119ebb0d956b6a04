//! Fuzz target `remote_write_v2`: see fuzz/src/lib.rs for what it drives and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| promgres_fuzz::remote_write_v2(data));
