//! Arbitrary bytes as a resource record (FORMAT.md §7.2), as a damaged index or a hostile
//! `<run>/.cairn-resources/<uuid>.cbor` would hand them over: decoding never panics, and a
//! decoded record re-encodes to the same bytes (the encoding is canonical).
#![no_main]

use cairn::artifact::ResourceRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("record.cbor");
    if let Ok(rec) = ResourceRecord::decode(data, path) {
        assert_eq!(rec.encode(), data, "canonical: one encoding per record");
        let again = ResourceRecord::decode(&rec.encode(), path).expect("own encoding decodes");
        assert_eq!(again, rec);
    }
});
