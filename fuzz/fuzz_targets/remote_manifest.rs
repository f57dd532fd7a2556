//! Arbitrary bytes as a remote's run manifest (FORMAT.md §8.3), as a hostile or damaged remote
//! would hand them over: decoding never panics, every accepted path is a safe relative one, and
//! a decoded manifest re-encodes to one that decodes equal.
#![no_main]

use cairn::remote::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("remote:manifest.json");
    if let Ok(m) = Manifest::decode(data, path) {
        for f in &m.files {
            assert!(!f.path.starts_with('/') && !f.path.split('/').any(|c| c == ".." || c.is_empty()));
        }
        let again = Manifest::decode(&m.encode(), path).expect("own encoding decodes");
        assert_eq!(again, m);
    }
});
