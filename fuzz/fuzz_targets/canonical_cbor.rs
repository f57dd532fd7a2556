//! Arbitrary bytes as canonical CBOR (FORMAT.md §2): strict decoding never panics, and accepts
//! only the one canonical encoding of a value (re-encoding gives exactly the input); lenient
//! canonicalization of any decodable CBOR never panics either.
#![no_main]

use cairn::canonical::Value;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Lenient path: any decodable CBOR (deeper than the limit too) canonicalizes or errors.
    if let Ok(raw) = ciborium::de::from_reader_with_recursion_limit::<ciborium::Value, _>(data, 256)
    {
        let _ = Value::from_cbor_value(raw, "$");
    }
    if let Ok(v) = Value::from_canonical_cbor(data, "$") {
        assert_eq!(v.to_cbor(), data, "a non-canonical encoding was accepted");
        let _ = v.to_json();
        let _ = v.diagnostic();
    }
});
