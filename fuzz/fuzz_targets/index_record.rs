//! Arbitrary bytes as an index run record (FORMAT.md §5.2), as a damaged index.redb would hand
//! them over: decoding never panics, accepts only canonical CBOR (checked against the reference
//! decoder), and a decoded record re-encodes to a record that decodes equal.
#![no_main]

use cairn::Identity;
use cairn::index::RunRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = Identity::from_bytes([7; 32]);
    let path = std::path::Path::new("index.redb");
    if let Ok(rec) = RunRecord::decode(id, data, path) {
        assert!(
            cairn::canonical::Value::from_canonical_cbor(data, "record").is_ok(),
            "a record the reference refuses was accepted"
        );
        let again = RunRecord::decode(id, &rec.encode(), path).expect("own encoding decodes");
        assert_eq!(again, rec);
    }
});
