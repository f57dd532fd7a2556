//! Run files read straight to canonical CBOR (FORMAT.md §4, §5.5): the fast path of reindex and
//! verify.
//!
//! Each file is parsed once, by [`crate::json::canonical_cbor`], and its fields are taken from
//! the canonical bytes (no JSON or value trees). A file is accepted here only when every rule of
//! the reference parser ([`IdHeader::from_json_bytes`], [`crate::Model::from_json_bytes`]) is
//! seen to hold; anything else is handed to the reference, so a refused file gets the
//! reference's error word for word, and an accepted one the same content (property tests compare
//! the two).

use std::path::Path;

use serde::Deserialize;

use crate::canonical::{Value, encoder};
use crate::error::Result;
use crate::identity::{Identity, Schema};
use crate::index::{Availability, RunRecord};
use crate::run::{self, IdHeader, MODEL_FILE, MODEL_FILE_LIMIT};

/// The encoded empty map: a missing predicate (or model config).
const EMPTY_MAP: &[u8] = &[0xa0];

/// `id.json` with its config and predicate as canonical CBOR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IdBytes {
    /// The run's identity.
    pub(crate) identity: Identity,
    /// The module.
    pub(crate) module: String,
    /// The complete config, canonical CBOR.
    pub(crate) config: Vec<u8>,
    /// The predicate, canonical CBOR of a map.
    pub(crate) predicate: Vec<u8>,
    /// RFC 3339 creation time.
    pub(crate) created_at: String,
    /// Earlier identities.
    pub(crate) aliases: Vec<Identity>,
}

impl IdBytes {
    /// Parses `id.json` bytes: the same acceptance and errors as [`IdHeader::from_json_bytes`],
    /// naming `path`.
    pub(crate) fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        match Self::fast(bytes) {
            Some(h) => Ok(h),
            None => Self::of_header(&IdHeader::from_json_bytes(bytes, path)?)
                .map_err(|e| e.in_file(path)),
        }
    }

    /// The header's fields canonicalized through values (the reference path).
    pub(crate) fn of_header(h: &IdHeader) -> Result<Self> {
        let predicate = serde_json::Value::Object(h.predicate.clone());
        Ok(IdBytes {
            identity: h.identity,
            module: h.module.clone(),
            config: Value::from_json_value(&h.config, "config")?.to_cbor(),
            predicate: Value::from_json_value(&predicate, "predicate")?.to_cbor(),
            created_at: h.created_at.clone(),
            aliases: h.aliases.clone(),
        })
    }

    /// `None` unless the file is certainly one the reference accepts.
    fn fast(bytes: &[u8]) -> Option<Self> {
        let enc = crate::json::canonical_cbor(bytes, "$").ok()?;
        let (mut format, mut identity, mut module, mut config) = (None, None, None, None);
        let (mut predicate, mut created_at, mut aliases) = (EMPTY_MAP, None, Vec::new());
        for (key, v) in enc.root_entries()? {
            match key {
                "format" => format = Some(v),
                "identity" => identity = Some(text(v)?.parse().ok()?),
                "module" => module = Some(text(v)?),
                "config" => config = Some(v),
                "predicate" if is_map(v) => predicate = v,
                "predicate" => return None,
                "created_at" => created_at = Some(time(v)?),
                "aliases" => {
                    aliases = texts(v)?
                        .iter()
                        .map(|a| a.parse().ok())
                        .collect::<Option<_>>()?
                }
                _ => {}
            }
        }
        let module = module.filter(|m| !m.is_empty())?;
        let (identity, config, created_at) = (identity?, config?, created_at?);
        (format? == [0x01] && format_is_one(bytes)).then(|| IdBytes {
            identity,
            module,
            config: config.to_vec(),
            predicate: predicate.to_vec(),
            created_at,
            aliases,
        })
    }

    /// The index record of this run at `location`.
    pub(crate) fn record(&self, location: String, state: Availability) -> RunRecord {
        let mut rec = RunRecord::from_canonical(
            self.identity,
            location,
            self.module.clone(),
            self.created_at.clone(),
            self.aliases.clone(),
            &self.config,
            &self.predicate,
        );
        rec.state = state;
        rec
    }
}

/// `model.json` reduced to what an identity needs, config and predicate as canonical CBOR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ModelBytes {
    /// The module.
    pub(crate) module: String,
    /// The complete config, canonical CBOR (`{}` when absent).
    pub(crate) config: Vec<u8>,
    /// The predicate, canonical CBOR of a map.
    pub(crate) predicate: Vec<u8>,
}

impl ModelBytes {
    /// Reads `<dir>/model.json`; `None` unless it is certainly one [`crate::Model::read`]
    /// accepts (the caller then asks the reference, which reports what is wrong).
    pub(crate) fn read_fast(dir: &Path) -> Option<Self> {
        let path = dir.join(MODEL_FILE);
        Self::fast(&run::read_bounded(&path, MODEL_FILE_LIMIT).ok()?)
    }

    /// `None` unless the file is certainly one [`crate::Model::from_json_bytes`] accepts.
    fn fast(bytes: &[u8]) -> Option<Self> {
        let enc = crate::json::canonical_cbor(bytes, "$").ok()?;
        let (mut format, mut module, mut config, mut predicate) =
            (None, None, EMPTY_MAP, EMPTY_MAP);
        for (key, v) in enc.root_entries()? {
            let ok = match key {
                "format" => {
                    format = Some(v);
                    true
                }
                "module" => {
                    module = Some(text(v)?);
                    true
                }
                "config" => {
                    config = v;
                    true
                }
                "predicate" => {
                    predicate = v;
                    is_map(v)
                }
                "version" | "inherits" => texts(v).is_some(),
                "context" => is_map(v),
                "schema" => is_map(v) && schema_is_valid(v),
                "created_at" => time(v).is_some(),
                "created_by" => text(v).is_some(),
                _ => true,
            };
            if !ok {
                return None;
            }
        }
        let module = module.filter(|m| !m.is_empty())?;
        (format? == [0x01] && format_is_one(bytes)).then(|| ModelBytes {
            module,
            config: config.to_vec(),
            predicate: predicate.to_vec(),
        })
    }
}

/// True when canonical bytes encode a map.
fn is_map(v: &[u8]) -> bool {
    v.first().is_some_and(|b| b >> 5 == 5)
}

/// The text that canonical bytes encode, if they encode one.
fn text(v: &[u8]) -> Option<String> {
    match encoder::decode(v) {
        Value::Text(s) => Some(s),
        _ => None,
    }
}

/// The texts of an encoded array of texts.
fn texts(v: &[u8]) -> Option<Vec<String>> {
    match encoder::decode(v) {
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::Text(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// An encoded RFC 3339 time, as the reference checks it.
fn time(v: &[u8]) -> Option<String> {
    text(v).filter(|s| humantime::parse_rfc3339(s).is_ok())
}

/// Whether an encoded schema map deserializes as the reference's does (the canonical value and
/// the JSON it came from differ only in how numbers are spelled, which no schema field checks).
/// The last valid encoding is remembered per thread: the runs of a module share their schema.
fn schema_is_valid(v: &[u8]) -> bool {
    thread_local! {
        static LAST_VALID: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    if LAST_VALID.with_borrow(|last| !last.is_empty() && last[..] == *v) {
        return true;
    }
    let valid = serde_json::from_value::<Schema>(encoder::decode(v).to_json()).is_ok();
    if valid {
        LAST_VALID.with_borrow_mut(|last| {
            last.clear();
            last.extend_from_slice(v);
        });
    }
    valid
}

/// Whether the file's top-level `format` is spelled `1`, as the reference requires: the
/// canonical bytes alone cannot tell `1` from `1.0`. Called only when the file parsed and its
/// top-level `format` is canonically 1.
fn format_is_one(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Format {
        format: serde_json::Number,
    }
    lone_format_key_is_one(bytes)
        || serde_json::from_slice::<Format>(bytes).is_ok_and(|f| f.format.as_str() == "1")
}

/// A scan that settles [`format_is_one`] for files as cairn writes them. Without `\u` escapes
/// a key `format` can only be spelled `"format"`, and that sequence cannot occur inside a string
/// (a quote there is escaped); so when it occurs exactly once it is the top-level key, and the
/// literal after its colon is read directly.
fn lone_format_key_is_one(bytes: &[u8]) -> bool {
    const KEY: &[u8] = b"\"format\"";
    let mut found = None;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\\' if bytes.get(i + 1) == Some(&b'u') => return false,
            b'"' if bytes[i..].starts_with(KEY) => {
                if found.is_some() {
                    return false;
                }
                found = Some(i + KEY.len());
            }
            _ => {}
        }
    }
    let Some(at) = found else { return false };
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let mut rest = bytes[at..].iter().skip_while(|b| ws(b));
    if rest.next() != Some(&b':') {
        return false;
    }
    let mut rest = rest.skip_while(|b| ws(b));
    rest.next() == Some(&b'1')
        && rest
            .next()
            .is_some_and(|b| !matches!(b, b'0'..=b'9' | b'.' | b'e' | b'E'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Model;
    use proptest::prelude::*;

    fn id_reference(bytes: &[u8]) -> std::result::Result<IdBytes, String> {
        let p = Path::new("r/id.json");
        IdHeader::from_json_bytes(bytes, p)
            .and_then(|h| IdBytes::of_header(&h))
            .map_err(|e| e.to_string())
    }

    /// The model's fields canonicalized through values (the reference path).
    fn model_reference(bytes: &[u8]) -> Option<ModelBytes> {
        let m = Model::from_json_bytes(bytes, Path::new("r/model.json")).ok()?;
        let predicate = serde_json::Value::Object(m.predicate.clone());
        Some(ModelBytes {
            module: m.module.clone(),
            config: Value::from_json_value(&m.config, "config").ok()?.to_cbor(),
            predicate: Value::from_json_value(&predicate, "predicate")
                .ok()?
                .to_cbor(),
        })
    }

    const ID: &str = "0101010101010101010101010101010101010101010101010101010101010101";

    fn header(fields: &[(&str, &str)]) -> String {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
        format!("{{{}}}", body.join(", "))
    }

    /// Field values to combine: valid ones and near misses of each rule.
    fn id_fields() -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
        let format = prop::sample::select(vec!["1", "1.0", "1e0", "2", "\"1\"", "10e-1"]);
        let identity = prop::sample::select(vec![
            "\"0101010101010101010101010101010101010101010101010101010101010101\"",
            "\"01\"",
            "7",
        ]);
        let module = prop::sample::select(vec!["\"train\"", "\"\"", "[]", "\"é\\u00e9\""]);
        let config = prop::sample::select(vec![
            "{\"lr\": 1.0, \"b\": [1, 2.5, null], \"a\": {\"x\": -0.0}}",
            "3",
            "{\"a\": 1, \"a\": 2}",
            "{\"n\": 18446744073709551616}",
            "{\"$serde_json::private::Number\": 1}",
        ]);
        let predicate = prop::sample::select(vec!["{\"split\": \"val\"}", "{}", "[1]", "null"]);
        let created = prop::sample::select(vec![
            "\"2026-01-01T00:00:00Z\"",
            "\"2026-01-01T00:00:00.123456Z\"",
            "\"yesterday\"",
            "5",
        ]);
        let aliases = prop::sample::select(vec![
            "[]",
            "[\"0202020202020202020202020202020202020202020202020202020202020202\"]",
            "[\"zz\"]",
            "[1]",
            "{}",
        ]);
        let extra = prop::sample::select(vec!["{\"k\": [true]}", "1.5e300", "\"x\""]);
        (
            prop::option::weighted(0.9, format),
            prop::option::weighted(0.9, identity),
            prop::option::weighted(0.9, module),
            prop::option::weighted(0.9, config),
            prop::option::of(predicate),
            prop::option::weighted(0.9, created),
            prop::option::of(aliases),
            prop::option::of(extra),
        )
            .prop_map(|(f, i, m, c, p, t, a, x)| {
                [
                    ("format", f),
                    ("identity", i),
                    ("module", m),
                    ("config", c),
                    ("predicate", p),
                    ("created_at", t),
                    ("aliases", a),
                    ("extra", x),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The byte path gives what the reference gives: the same fields, or the same error.
        #[test]
        fn id_bytes_agree_with_the_reference(fields in id_fields(), shuffle in any::<u64>()) {
            let mut fields = fields;
            let n = fields.len().max(1);
            fields.rotate_left((shuffle as usize) % n);
            let text = header(&fields);
            let got = IdBytes::parse(text.as_bytes(), Path::new("r/id.json"))
                .map_err(|e| e.to_string());
            prop_assert_eq!(got, id_reference(text.as_bytes()), "{}", text);
        }

        /// Whatever the byte path accepts as a model, the reference accepts with the same
        /// module, config and predicate.
        #[test]
        fn model_bytes_accept_only_what_the_reference_accepts(
            fields in id_fields(),
            version in prop::option::of(prop::sample::select(vec!["[\"v1\"]", "[1]", "\"v\""])),
            context in prop::option::of(prop::sample::select(vec!["{\"h\": 1}", "[]"])),
            schema in prop::option::of(prop::sample::select(vec![
                "{\"defaults\": {\"lr\": 1.0}, \"non_identifying\": [\"a.b\"]}",
                "{\"defaults\": {}, \"label\": \"v2\"}",
                "{\"defaults\": 1}",
                "{\"other\": 1}",
                "{\"label\": 2.0}",
                "[]",
            ])),
            by in prop::option::of(prop::sample::select(vec!["\"u@h\"", "1"])),
        ) {
            let mut fields = fields;
            for (k, v) in [("version", version), ("context", context), ("schema", schema),
                           ("created_by", by)] {
                if let Some(v) = v {
                    fields.push((k, v));
                }
            }
            let text = header(&fields);
            let reference = model_reference(text.as_bytes());
            // A refusal only costs the slow path (files cairn writes take the fast one:
            // `written_files_take_the_fast_path`).
            if let Some(m) = ModelBytes::fast(text.as_bytes()) {
                prop_assert_eq!(Some(m), reference, "{}", text);
            }
        }
    }

    #[test]
    fn written_files_take_the_fast_path() {
        let mut model = Model::new("train")
            .with_config(&serde_json::json!({"lr": 0.5, "opt": {"name": "sgd"}}))
            .unwrap()
            .with_predicate(&serde_json::json!({"split": "val"}))
            .unwrap()
            .with_schema(Schema::new(&serde_json::json!({"lr": 0.1}), &["log"]).unwrap());
        model.created_at = Some(run::now_rfc3339());
        model.created_by = Some("u@h".into());
        let bytes = model.to_json_bytes();
        let fast = ModelBytes::fast(&bytes).expect("fast path");
        assert_eq!(Some(fast), model_reference(&bytes));

        let mut h = IdHeader::for_model(&model, model.identity().unwrap());
        h.aliases = vec![Identity::from_bytes([2; 32])];
        let bytes = h.to_json_bytes();
        let fast = IdBytes::fast(&bytes).expect("fast path");
        assert_eq!(Ok(fast), id_reference(&bytes));
    }

    #[test]
    fn the_format_scan_is_sure_or_defers_to_the_parse() {
        for (text, sure) in [
            (r#"{"format": 1, "a": 2}"#, true),
            ("{\n  \"format\": 1\n}", true),
            (r#"{"format": 1.0}"#, false),
            (r#"{"format": 1e0}"#, false),
            (r#"{"format": 10}"#, false),
            (r#"{"c": {"format": 1}, "form\u0061t": 1.0}"#, false),
            (r#"{"c": {"format": 1}, "format": 1.0}"#, false),
            (r#"{"s": "\"format\": 1", "format": 2}"#, false),
        ] {
            assert_eq!(lone_format_key_is_one(text.as_bytes()), sure, "{text}");
        }
    }

    #[test]
    fn a_format_spelled_otherwise_is_refused_as_the_reference_refuses_it() {
        let text = header(&[
            ("format", "1.0"),
            ("identity", &format!("{ID:?}")),
            ("module", "\"m\""),
            ("config", "{}"),
            ("created_at", "\"2026-01-01T00:00:00Z\""),
        ]);
        assert!(IdBytes::fast(text.as_bytes()).is_none());
        let err = IdBytes::parse(text.as_bytes(), Path::new("r/id.json")).unwrap_err();
        assert!(
            matches!(err, crate::Error::UnsupportedVersion { .. }),
            "{err}"
        );
    }
}
