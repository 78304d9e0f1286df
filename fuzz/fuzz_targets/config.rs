//! The configuration parser and its checks: any TOML text gives a
//! configuration or an error that names what is wrong, never a panic.
#![no_main]

use driftwatch::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(error) = Config::from_toml(text) {
        assert!(!error.to_string().is_empty());
    }
});
