//! The TOML config parser: any text is either a list of errors or a config that is valid and survives a save
//! and reload unchanged.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dbe_fuzz::services::check_config(data);
});
