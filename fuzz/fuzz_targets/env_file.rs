//! Arbitrary bytes as a `.env` file handed to the store (FORMAT.md §7.1): parsing never panics
//! and never touches the process environment.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let before = std::env::vars_os().count();
    let _ = cairn::artifact::parse_env_bytes(data);
    assert_eq!(std::env::vars_os().count(), before);
});
