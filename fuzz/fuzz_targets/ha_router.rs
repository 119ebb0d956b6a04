//! Fuzz target `ha_router`: see fuzz/src/lib.rs for what it drives and asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| promgres_fuzz::ha_router(data));
