//! Fuzz target `remote_read`: see fuzz/src/lib.rs for what it drives and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| promgres_fuzz::remote_read(data));
