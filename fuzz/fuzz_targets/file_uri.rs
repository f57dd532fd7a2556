//! Arbitrary text as a filesystem record's `uri` (FORMAT.md §7.4): parsing never panics, and
//! whatever it accepts is exactly `<root>/<aa>/<uuid>`, a path inside the artifact root.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(uri) = std::str::from_utf8(data) else {
        return;
    };
    let root = Path::new("/data/art ifacts");
    if let Ok(path) = cairn::artifact::fs::path_of_uri(uri, root) {
        let rest = path.strip_prefix(root).expect("inside the root");
        let parts: Vec<_> = rest.components().collect();
        assert_eq!(parts.len(), 2, "{path:?}");
        assert!(parts.iter().all(|c| matches!(c, Component::Normal(_))));
        let name = parts[1].as_os_str().to_str().unwrap();
        assert_eq!(name.len(), 36, "{name}");
        assert_eq!(parts[0].as_os_str().to_str().unwrap(), &name[..2]);
    }
});
