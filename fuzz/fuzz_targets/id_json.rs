//! `id.json` parsing (FORMAT.md §4.2) on arbitrary bytes: never panics, and whatever it accepts
//! survives cairn's own write → read unchanged.
#![no_main]

use std::path::Path;

use cairn::IdHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz/id.json");
    let Ok(header) = IdHeader::from_json_bytes(data, path) else {
        return;
    };
    let bytes = header.to_json_bytes();
    let again = match IdHeader::from_json_bytes(&bytes, path) {
        Ok(h) => h,
        Err(e) => panic!(
            "cairn cannot read the id.json it wrote: {e}\n{}",
            String::from_utf8_lossy(&bytes)
        ),
    };
    assert_eq!(again, header, "id.json changed in a write → read round trip");
    assert_eq!(again.to_json_bytes(), bytes, "id.json bytes are not stable");
});
