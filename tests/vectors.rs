//! Identity v1 test vectors (`tests/vectors/identity-v1.json`, FORMAT.md §3.5) checked against the
//! Rust implementation. The same file is checked against the independent Python reference
//! implementation by `python3 tests/vectors/reference.py check tests/vectors/identity-v1.json`.

use cairn::{CanonicalErrorKind, Error};
use serde::Deserialize;

const VECTORS: &str = include_str!("vectors/identity-v1.json");

/// Every error class the vectors must exercise.
const ERROR_CLASSES: &[&str] = &[
    "reserved-key",
    "duplicate-key",
    "integer-out-of-range",
    "float-overflow",
    "empty-module",
    "predicate-not-map",
    "invalid-json",
    "too-deep",
    "invalid-schema",
];

/// Groups of vectors that must share one identity (FORMAT.md says they are the same input).
const SAME_IDENTITY: &[&[&str]] = &[
    &[
        "minimal: module only, no config, no predicate (FORMAT.md 3.4 example)",
        "explicit empty config and empty predicate equal the missing ones",
        "empty config only",
    ],
    &[
        "float 1.0: integral: integer 1",
        "float 1e0: integral: integer 1",
        "float 10e-1: integral: integer 1",
        "integer 1 equals 1.0, 1e0 and 10e-1",
    ],
    &[
        "float 9007199254740992.0: 2^53 as float: integer",
        "integer 9007199254740992 (2^53) equals the float spelling",
    ],
    &[
        "float 65504.0: largest half, integral: integer 65504",
        "integer 65504 equals the float spelling",
    ],
    &[
        "float -0.0: negative zero is integer 0",
        "integer 0 equals -0.0",
    ],
    &[
        "escaped \\u00e9",
        "raw precomposed \u{e9} (same as the escape)",
    ],
    &[
        "emoji as surrogate-pair escape",
        "emoji raw (same as the surrogate-pair escape)",
    ],
    &[
        "key order: written a, b, c",
        "key order: written c, a, b (same identity)",
    ],
    &[
        "defaults: key equal to its default is dropped",
        "defaults: result equals config without the default key",
    ],
];

/// Pairs of vectors that must have different identities.
const DIFFERENT_IDENTITY: &[(&str, &str)] = &[
    (
        "raw precomposed \u{e9} (same as the escape)",
        "decomposed e + U+0301 (differs from precomposed)",
    ),
    (
        "arrays keep their order",
        "arrays keep their order (reversed gives another identity)",
    ),
    (
        "minimal: module only, no config, no predicate (FORMAT.md 3.4 example)",
        "config is null (not missing)",
    ),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    name: String,
    input: String,
    cbor: Option<String>,
    identity: Option<String>,
    error: Option<String>,
}

fn vectors() -> Vec<Vector> {
    serde_json::from_str(VECTORS).expect("identity-v1.json is a JSON array of vectors")
}

/// Whether `err` is what the library reports for an input of error class `class`. Errors found
/// while reading JSON text (number literals, nesting) surface as `Error::Json`, with the message
/// of the corresponding canonical error.
fn class_matches(class: &str, err: &Error) -> bool {
    use CanonicalErrorKind as K;
    match class {
        "duplicate-key" => matches!(
            err,
            Error::Canonical {
                kind: K::DuplicateKey(_),
                ..
            }
        ),
        "integer-out-of-range" => match err {
            Error::Canonical {
                kind: K::IntegerOutOfRange(_),
                ..
            } => true,
            Error::Json { message } => message.contains("is outside the range -2^64 ..= 2^64-1"),
            _ => false,
        },
        "float-overflow" => match err {
            Error::Canonical {
                kind: K::FloatOverflow(_),
                ..
            } => true,
            Error::Json { message } => message.contains("overflows a double"),
            _ => false,
        },
        "reserved-key" => matches!(
            err,
            Error::Canonical { kind: K::Unsupported(what), .. } if what.contains("reserved")
        ),
        "too-deep" => match err {
            Error::Canonical {
                kind: K::TooDeep, ..
            } => true,
            Error::Json { message } => message.contains("recursion limit exceeded"),
            _ => false,
        },
        "empty-module" => {
            matches!(err, Error::InvalidModel { reason } if reason.contains("module"))
        }
        "predicate-not-map" => {
            matches!(err, Error::InvalidModel { reason } if reason.contains("predicate"))
        }
        "invalid-schema" => {
            matches!(err, Error::InvalidModel { reason } if reason.contains("schema"))
        }
        "invalid-json" => matches!(err, Error::Json { .. }),
        other => panic!("unknown error class {other:?} in identity-v1.json"),
    }
}

/// (cbor hex, identity hex) computed by the library; `identity_of_json`, which hashes the
/// document's bytes without building it, must agree (on the error too).
fn compute(input: &str) -> cairn::Result<(String, String)> {
    let direct = cairn::identity_of_json(input.as_bytes());
    let doc = match cairn::document_of_json(input.as_bytes()) {
        Ok(doc) => doc,
        Err(e) => {
            let direct =
                direct.expect_err("identity_of_json accepted what document_of_json refused");
            assert_eq!(direct.to_string(), e.to_string(), "{input}");
            return Err(e);
        }
    };
    let identity = cairn::Identity::of_document(&doc);
    assert_eq!(direct.ok(), Some(identity), "{input}");
    Ok((hex::encode(doc.to_cbor()), identity.to_hex()))
}

#[test]
fn vector_file_is_complete() {
    let vectors = vectors();
    assert!(vectors.len() >= 40, "only {} vectors", vectors.len());
    for class in ERROR_CLASSES {
        assert!(
            vectors.iter().any(|v| v.error.as_deref() == Some(*class)),
            "no vector of error class {class}"
        );
    }
    let mut names = std::collections::HashSet::new();
    for v in &vectors {
        assert!(
            names.insert(v.name.as_str()),
            "duplicate vector name {:?}",
            v.name
        );
        match (&v.cbor, &v.identity, &v.error) {
            (Some(cbor), Some(identity), None) => {
                // FORMAT.md §3.3: every document starts with {"v": 1, "config": ...
                assert!(
                    cbor.starts_with("a461760166636f6e666967"),
                    "{}: {cbor}",
                    v.name
                );
                let bytes = hex::decode(cbor).expect("cbor is hex");
                assert_eq!(
                    *identity,
                    blake3::hash(&bytes).to_hex().as_str(),
                    "{}",
                    v.name
                );
            }
            (None, None, Some(_)) => {}
            _ => panic!("{}: needs cbor and identity, or error alone", v.name),
        }
    }
}

#[test]
fn identity_v1_vectors() {
    let mut checked = 0;
    for v in vectors() {
        let name = &v.name;
        let result = compute(&v.input);
        match (&v.error, result) {
            (None, Ok((cbor, identity))) => {
                assert_eq!(Some(&cbor), v.cbor.as_ref(), "{name}: cbor");
                assert_eq!(Some(&identity), v.identity.as_ref(), "{name}: identity");
            }
            (None, Err(err)) => panic!("{name}: expected an identity, got error {err}"),
            (Some(class), Ok((cbor, _))) => {
                panic!("{name}: expected error {class}, got document {cbor}")
            }
            (Some(class), Err(err)) => {
                assert!(
                    class_matches(class, &err),
                    "{name}: expected {class}, got {err:?}: {err}"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} vectors checked");
}

#[test]
fn identities_equal_and_differ_where_format_md_says() {
    let vectors = vectors();
    let identity = |name: &str| -> &str {
        let v = vectors.iter().find(|v| v.name == name);
        let v = v.unwrap_or_else(|| panic!("no vector named {name:?}"));
        v.identity
            .as_deref()
            .unwrap_or_else(|| panic!("{name}: no identity"))
    };
    for group in SAME_IDENTITY {
        for name in &group[1..] {
            assert_eq!(identity(group[0]), identity(name), "{} vs {name}", group[0]);
        }
    }
    for (a, b) in DIFFERENT_IDENTITY {
        assert_ne!(identity(a), identity(b), "{a} vs {b}");
    }
}
