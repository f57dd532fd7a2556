//! Arbitrary bytes as JSON text (FORMAT.md §2): parsing never panics; the direct encoder agrees
//! with the tree path (`json::parse` + canonicalization) on the value or the exact error; an
//! accepted value encodes to canonical CBOR that strictly decodes to the same value, survives
//! `to_json` → text → parse, and gives the same identity as a config however it is re-spelled.
#![no_main]

use cairn::canonical::{Map, Value};
use cairn::identity::{Schema, document};
use cairn::Identity;
use libfuzzer_sys::fuzz_target;

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Map(m) => 1 + m.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
        _ => 0,
    }
}

fn has_bytes(v: &Value) -> bool {
    match v {
        Value::Bytes(_) => true,
        Value::Array(items) => items.iter().any(has_bytes),
        Value::Map(m) => m.iter().any(|(_, v)| has_bytes(v)),
        _ => false,
    }
}

fn text_of(v: &Value) -> Vec<u8> {
    serde_json::to_vec(&v.to_json()).expect("a canonical value is JSON")
}

fuzz_target!(|data: &[u8]| {
    // The input as a whole request: must never panic, and a re-spelled request agrees.
    let request_id = cairn::identity_of_json(data);
    let _ = cairn::document_of_json(data);

    let direct = Value::from_json_slice(data, "$");
    let tree = cairn::json::parse(data).and_then(|t| Value::from_cbor_value(t, "$"));
    match (&direct, &tree) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "direct and tree paths disagree"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "errors disagree"),
        _ => panic!("direct {direct:?} vs tree {tree:?}"),
    }

    let Ok(v) = direct else {
        assert!(request_id.is_err(), "a request that is not even a value has an identity");
        return;
    };

    // Canonical CBOR is strict-decodable and stable.
    let cbor = v.to_cbor();
    let decoded = match Value::from_canonical_cbor(&cbor, "$") {
        Ok(d) => d,
        Err(e) => panic!("own encoding {} refused: {e}", hex::encode(&cbor)),
    };
    assert_eq!(decoded, v, "CBOR round trip changed the value");
    assert_eq!(decoded.to_cbor(), cbor, "CBOR encoding is not stable");

    // JSON has no byte strings, so none can come from JSON text.
    assert!(!has_bytes(&v), "a byte string came out of JSON");
    let text = text_of(&v);
    let again = match Value::from_json_slice(&text, "$") {
        Ok(a) => a,
        Err(e) => panic!("to_json output {} refused: {e}", String::from_utf8_lossy(&text)),
    };
    assert_eq!(again, v, "to_json → text → value changed the value");
    assert_eq!(text_of(&again), text, "to_json text is not stable");

    if let Ok(id) = request_id {
        assert_eq!(
            cairn::identity_of_json(&text).ok(),
            Some(id),
            "re-spelled request has another identity"
        );
    }

    // The value as a config, one level inside the request (FORMAT.md §2.5: a config nests at most
    // MAX_DEPTH - 1 levels).
    let mut wrapped = br#"{"module": "m", "config": "#.to_vec();
    wrapped.extend_from_slice(data);
    wrapped.extend_from_slice(b"}");
    let as_config = cairn::identity_of_json(&wrapped);
    if depth(&v) < cairn::canonical::MAX_DEPTH {
        let expected = Identity::of_document(
            &document("m", v.clone(), Value::Map(Map::new()), &Schema::empty())
                .expect("module and predicate are valid"),
        );
        match as_config {
            Ok(id) => assert_eq!(id, expected, "config identity differs from its value's"),
            Err(e) => panic!("value accepted alone but not as a config: {e}"),
        }
    } else {
        assert!(as_config.is_err(), "a config nesting {} levels was accepted", depth(&v));
    }
});
