//! Arbitrary bytes as an index run record (FORMAT.md §5.2), as a damaged index.redb would hand
//! them over: decoding never panics, accepts only canonical CBOR (checked against the reference
//! decoder) that is exactly the record's own encoding, and the lazily decoded config and
//! predicate are the reference's last two items.
#![no_main]

use cairn::Identity;
use cairn::canonical::Value;
use cairn::index::RunRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = Identity::from_bytes([7; 32]);
    let path = std::path::Path::new("index.redb");
    if let Ok(rec) = RunRecord::decode(id, data, path) {
        let Ok(Value::Array(items)) = Value::from_canonical_cbor(data, "record") else {
            panic!("a record the reference refuses, or not an array, was accepted");
        };
        assert_eq!(rec.encode(), data, "accepted bytes are not the record's own encoding");
        assert_eq!(items.len(), 8);
        assert_eq!(rec.config(), items[6]);
        assert_eq!(rec.predicate(), items[7]);
    }
});
