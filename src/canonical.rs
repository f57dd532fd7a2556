//! Canonical values and their deterministic CBOR encoding (identity v1, rule 1; FORMAT.md §2).
//!
//! A [`Value`] is always canonical: map keys are unique text in canonical order, floats are finite
//! and non-integral (integral floats were reduced to integers), integers lie in −2^64 … 2^64−1.
//! Every constructor enforces this, so encoding cannot fail and equal values encode equally.
//!
//! `Serialize` values and JSON text are encoded without building a [`Value`] first
//! (`encoder`, `ser`); a [`Value`] is decoded from those bytes only when asked for.

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde::Serialize;

use crate::error::{CanonicalErrorKind, Error, Result};

pub(crate) mod encoder;
mod ser;

pub(crate) use encoder::{Encoder, NUMBER_TOKEN};

/// Deepest nesting of arrays and maps, counted from the outermost container of an identity
/// document, a JSON request or a `model.json`/`id.json` file (serde_json's own limit): a config or
/// predicate, which sits one level inside such a document, nests at most `MAX_DEPTH - 1` levels.
pub const MAX_DEPTH: usize = 127;

/// Smallest integer identity v1 accepts: −2^64.
pub const INT_MIN: i128 = -(1i128 << 64);
/// Largest integer identity v1 accepts: 2^64 − 1.
pub const INT_MAX: i128 = (1i128 << 64) - 1;

/// A canonical value: the data model of identity v1.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// CBOR `null`.
    Null,
    /// CBOR `true` / `false`.
    Bool(bool),
    /// An integer in −2^64 … 2^64−1.
    Integer(i128),
    /// A finite float that is not integral within the integer range.
    Float(f64),
    /// UTF-8 text, exactly as given.
    Text(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// An array, order kept.
    Array(Vec<Value>),
    /// A map with unique text keys in canonical order.
    Map(Map),
}

// Sound: a canonical Float is never NaN, so `==` is reflexive.
impl Eq for Value {}

/// A map with unique text keys, kept in canonical order (shorter keys first, then bytewise).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Map(Vec<(String, Value)>);

/// The canonical order of text keys: the bytewise order of their CBOR encodings, which for text is
/// shorter first, then bytewise (RFC 8949 §4.2.1).
pub fn key_order(a: &str, b: &str) -> Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

impl Map {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a map from entries in any order; a repeated key is an error naming it.
    pub fn from_entries(mut entries: Vec<(String, Value)>) -> Result<Self, CanonicalErrorKind> {
        entries.sort_by(|a, b| key_order(&a.0, &b.0));
        if let Some(w) = entries.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(CanonicalErrorKind::DuplicateKey(w[0].0.clone()));
        }
        Ok(Map(entries))
    }

    fn position(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| key_order(k, key))
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).ok().map(|i| &self.0[i].1)
    }

    /// The value under `key`, mutably.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.position(key).ok().map(|i| &mut self.0[i].1)
    }

    /// Inserts or replaces `key`, keeping canonical order; returns the old value.
    pub fn insert(&mut self, key: String, value: Value) -> Option<Value> {
        match self.position(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.position(key).ok().map(|i| self.0.remove(i).1)
    }

    /// Keeps only the entries for which `f` returns true.
    pub fn retain(&mut self, f: impl FnMut(&mut (String, Value)) -> bool) {
        self.0.retain_mut(f);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// Canonicalization failure with the path collected while unwinding (innermost segment first).
struct PathError {
    rev_path: Vec<Segment>,
    kind: CanonicalErrorKind,
}

enum Segment {
    Key(String),
    Index(usize),
}

impl PathError {
    fn new(kind: CanonicalErrorKind) -> Self {
        PathError {
            rev_path: Vec::new(),
            kind,
        }
    }

    fn at(mut self, seg: Segment) -> Self {
        self.rev_path.push(seg);
        self
    }

    fn into_error(self, root: &str) -> Error {
        let mut path = root.to_owned();
        for seg in self.rev_path.iter().rev() {
            match seg {
                Segment::Index(i) => push_index(&mut path, *i),
                Segment::Key(k) => push_key(&mut path, k),
            }
        }
        Error::Canonical {
            path,
            kind: self.kind,
        }
    }
}

/// Appends an array index to an error path: `[3]`.
fn push_index(path: &mut String, i: usize) {
    let _ = write!(path, "[{i}]");
}

/// Appends a map key to an error path: `.name` for plain keys, `["a b"]` for any other.
fn push_key(path: &mut String, k: &str) {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        let _ = write!(path, ".{k}");
    } else {
        let _ = write!(path, "[{k:?}]");
    }
}

/// Reduces a float per identity v1: integral values in range become integers; NaN and infinities
/// are errors; anything else stays a float.
pub fn reduce_float(f: f64) -> Result<Value, CanonicalErrorKind> {
    if !f.is_finite() {
        return Err(CanonicalErrorKind::NotFinite);
    }
    Ok(integral(f).map_or(Value::Float(f), Value::Integer))
}

/// The integer a finite float reduces to, if it is integral within the integer range.
fn integral(f: f64) -> Option<i128> {
    // Both bounds are exact in f64; `-0.0` lands here and becomes 0.
    (f.trunc() == f && (-18446744073709551616.0..18446744073709551616.0).contains(&f))
        .then_some(f as i128)
}

fn from_cbor(v: ciborium::Value, depth: usize) -> Result<Value, PathError> {
    use ciborium::Value as C;
    Ok(match v {
        C::Null => Value::Null,
        C::Bool(b) => Value::Bool(b),
        C::Integer(i) => Value::Integer(i128::from(i)),
        C::Float(f) => reduce_float(f).map_err(PathError::new)?,
        C::Text(s) => Value::Text(s),
        C::Bytes(b) => Value::Bytes(b),
        C::Array(items) => {
            if depth >= MAX_DEPTH {
                return Err(PathError::new(CanonicalErrorKind::TooDeep));
            }
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                out.push(from_cbor(item, depth + 1).map_err(|e| e.at(Segment::Index(i)))?);
            }
            Value::Array(out)
        }
        C::Map(pairs) => {
            if depth >= MAX_DEPTH {
                return Err(PathError::new(CanonicalErrorKind::TooDeep));
            }
            let mut out = Vec::with_capacity(pairs.len());
            for (k, v) in pairs {
                let C::Text(k) = k else {
                    return Err(PathError::new(CanonicalErrorKind::NonTextKey));
                };
                if k == NUMBER_TOKEN {
                    return Err(PathError::new(encoder::RESERVED_KEY));
                }
                let v = match from_cbor(v, depth + 1) {
                    Ok(v) => v,
                    Err(e) => return Err(e.at(Segment::Key(k))),
                };
                out.push((k, v));
            }
            Value::Map(Map::from_entries(out).map_err(PathError::new)?)
        }
        C::Tag(..) => {
            return Err(PathError::new(CanonicalErrorKind::Unsupported(
                "a CBOR tag",
            )));
        }
        _ => {
            return Err(PathError::new(CanonicalErrorKind::Unsupported(
                "a CBOR simple value other than null, true and false",
            )));
        }
    })
}

impl Value {
    /// Canonicalizes a ciborium value; errors name the offending place below `root`.
    pub fn from_cbor_value(v: ciborium::Value, root: &str) -> Result<Value> {
        from_cbor(v, 0).map_err(|e| e.into_error(root))
    }

    /// Canonicalizes any `Serialize` value (structs become maps keyed by field name; the mapping
    /// is described in FORMAT.md §2.6) as a field of an identity document (so it nests at most
    /// `MAX_DEPTH - 1` levels).
    pub fn from_serialize<T: Serialize + ?Sized>(v: &T, root: &str) -> Result<Value> {
        let mut enc = Encoder::new(root, 1);
        enc.serialize(v).map_err(|_| enc.error())?;
        Ok(encoder::decode(enc.bytes()))
    }

    /// Parses JSON text strictly (duplicate keys, exact integer literals; see [`crate::json`]).
    pub fn from_json_slice(bytes: &[u8], root: &str) -> Result<Value> {
        Ok(encoder::decode(
            crate::json::canonical_cbor(bytes, root)?.bytes(),
        ))
    }

    /// Converts a parsed JSON value (numbers kept exact by `arbitrary_precision`) as a field of
    /// an identity document, like [`Value::from_serialize`].
    pub fn from_json_value(v: &serde_json::Value, root: &str) -> Result<Value> {
        Self::from_serialize(v, root)
    }

    /// The map inside, if this is a map.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Appends the canonical CBOR encoding of this value to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode(out, self);
    }

    /// The canonical CBOR encoding of this value.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out);
        out
    }

    /// Decodes CBOR into a canonical value (validating every value rule) without requiring the
    /// bytes themselves to be the canonical encoding; for cairn's own records, where the cost of
    /// re-encoding would dominate a scan.
    pub fn from_cbor_bytes(bytes: &[u8], root: &str) -> Result<Value> {
        let raw: ciborium::Value = ciborium::de::from_reader_with_recursion_limit(bytes, MAX_DEPTH)
            .map_err(|e| Error::Canonical {
                path: root.to_owned(),
                kind: CanonicalErrorKind::Decode(e.to_string()),
            })?;
        Self::from_cbor_value(raw, root)
    }

    /// Decodes canonical CBOR; bytes that decode but are not exactly the canonical encoding of
    /// their value (wrong key order, long-form integers, integral floats, trailing bytes) are
    /// rejected, so one value has one accepted encoding.
    pub fn from_canonical_cbor(bytes: &[u8], root: &str) -> Result<Value> {
        let value = Self::from_cbor_bytes(bytes, root)?;
        if value.to_cbor() != bytes {
            return Err(Error::Canonical {
                path: root.to_owned(),
                kind: CanonicalErrorKind::NotCanonical,
            });
        }
        Ok(value)
    }

    /// RFC 8949 §8 diagnostic notation, with encoding indicators (`_1`, `_2`, `_3`) on floats.
    pub fn diagnostic(&self) -> String {
        let mut s = String::new();
        diag(self, &mut s);
        s
    }

    /// This value as JSON, for display. Byte strings become `h'..'`-style hex text, since JSON
    /// has no byte strings.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Integer(i) => J::Number(i.to_string().parse().expect("integer literal")),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Text(s) => J::String(s.clone()),
            Value::Bytes(b) => J::String(format!("h'{}'", hex::encode(b))),
            Value::Array(a) => J::Array(a.iter().map(Value::to_json).collect()),
            Value::Map(m) => {
                J::Object(m.iter().map(|(k, v)| (k.to_owned(), v.to_json())).collect())
            }
        }
    }
}

/// A CBOR head: major type and argument in the shortest form (RFC 8949 §4.2.1).
#[inline]
pub(crate) fn head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        out.push(m | arg as u8);
    } else if arg <= u64::from(u8::MAX) {
        out.extend_from_slice(&[m | 24, arg as u8]);
    } else if arg <= u64::from(u16::MAX) {
        out.push(m | 25);
        out.extend_from_slice(&(arg as u16).to_be_bytes());
    } else if arg <= u64::from(u32::MAX) {
        out.push(m | 26);
        out.extend_from_slice(&(arg as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

/// An integer in −2^64 … 2^64−1 (checked by the caller) in the shortest form.
fn write_int(out: &mut Vec<u8>, i: i128) {
    if i >= 0 {
        head(out, 0, i as u64);
    } else {
        head(out, 1, (-1 - i) as u64);
    }
}

/// A finite, non-integral float in the shortest of half, single and double that keeps its
/// exact value.
fn write_float(out: &mut Vec<u8>, f: f64) {
    let single = f as f32;
    // Most floats need a double; only a float exact in single can be exact in half.
    if f64::from(single).to_bits() != f.to_bits() {
        out.push(0xfb);
        out.extend_from_slice(&f.to_be_bytes());
        return;
    }
    let half = half::f16::from_f64(f);
    if f64::from(half).to_bits() == f.to_bits() {
        out.push(0xf9);
        out.extend_from_slice(&half.to_be_bytes());
    } else {
        out.push(0xfa);
        out.extend_from_slice(&single.to_be_bytes());
    }
}

/// Any float, reduced per identity v1 ([`reduce_float`]) and encoded.
fn write_number(out: &mut Vec<u8>, f: f64) -> Result<(), CanonicalErrorKind> {
    if !f.is_finite() {
        return Err(CanonicalErrorKind::NotFinite);
    }
    match integral(f) {
        Some(i) => write_int(out, i),
        None => write_float(out, f),
    }
    Ok(())
}

/// Canonical encoding, written directly into `out` (FORMAT.md §2; the vectors pin every byte).
fn encode(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.push(0xf6),
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        // In range by construction.
        Value::Integer(i) => write_int(out, *i),
        Value::Float(f) => write_float(out, *f),
        Value::Text(s) => {
            head(out, 3, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bytes(b) => {
            head(out, 2, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Array(items) => {
            head(out, 4, items.len() as u64);
            items.iter().for_each(|item| encode(out, item));
        }
        Value::Map(m) => {
            head(out, 5, m.len() as u64);
            for (k, v) in m.iter() {
                head(out, 3, k.len() as u64);
                out.extend_from_slice(k.as_bytes());
                encode(out, v);
            }
        }
    }
}

fn diag(v: &Value, s: &mut String) {
    match v {
        Value::Null => s.push_str("null"),
        Value::Bool(b) => {
            let _ = write!(s, "{b}");
        }
        Value::Integer(i) => {
            let _ = write!(s, "{i}");
        }
        Value::Float(f) => {
            let width = match v.to_cbor().len() {
                3 => 1,
                5 => 2,
                _ => 3,
            };
            let _ = write!(s, "{f:?}_{width}");
        }
        Value::Text(t) => s.push_str(&serde_json::to_string(t).expect("string to JSON")),
        Value::Bytes(b) => {
            let _ = write!(s, "h'{}'", hex::encode(b));
        }
        Value::Array(items) => {
            s.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                diag(item, s);
            }
            s.push(']');
        }
        Value::Map(m) => {
            s.push('{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                s.push_str(&serde_json::to_string(k).expect("string to JSON"));
                s.push_str(": ");
                diag(v, s);
            }
            s.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_of(v: &Value) -> String {
        hex::encode(v.to_cbor())
    }

    #[test]
    fn floats_take_the_shortest_exact_width() {
        assert_eq!(hex_of(&reduce_float(0.5).unwrap()), "f93800");
        assert_eq!(hex_of(&reduce_float(0.1).unwrap()), "fb3fb999999999999a");
        assert_eq!(hex_of(&reduce_float(100000.5).unwrap()), "fa47c35040");
        assert_eq!(hex_of(&reduce_float(-0.0).unwrap()), "00");
        assert_eq!(hex_of(&reduce_float(1.0).unwrap()), "01");
        // 2^64 is integral but out of range, so it stays a float.
        assert_eq!(
            hex_of(&reduce_float(18446744073709551616.0).unwrap()),
            "fa5f800000"
        );
        assert_eq!(
            hex_of(&reduce_float(-18446744073709551616.0).unwrap()),
            "3bffffffffffffffff"
        );
        assert_eq!(reduce_float(f64::NAN), Err(CanonicalErrorKind::NotFinite));
        assert_eq!(
            reduce_float(f64::NEG_INFINITY),
            Err(CanonicalErrorKind::NotFinite)
        );
    }

    #[test]
    fn keys_sort_by_length_then_bytes() {
        let m = Map::from_entries(vec![
            ("bb".into(), Value::Null),
            ("a".into(), Value::Null),
            ("ab".into(), Value::Null),
            ("z".into(), Value::Null),
        ])
        .unwrap();
        let keys: Vec<_> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "z", "ab", "bb"]);
    }

    #[test]
    fn decoding_rejects_non_canonical_bytes() {
        // {"b": 1, "a": 2}: wrong key order.
        let err = Value::from_canonical_cbor(&hex::decode("a2616201616102").unwrap(), "x");
        assert!(matches!(
            err,
            Err(Error::Canonical {
                kind: CanonicalErrorKind::NotCanonical,
                ..
            })
        ));
        // 1 as a two-byte integer.
        assert!(Value::from_canonical_cbor(&hex::decode("1801").unwrap(), "x").is_err());
        // 1.0 as a half float.
        assert!(Value::from_canonical_cbor(&hex::decode("f93c00").unwrap(), "x").is_err());
        // trailing byte
        assert!(Value::from_canonical_cbor(&hex::decode("0100").unwrap(), "x").is_err());
        assert_eq!(
            Value::from_canonical_cbor(&hex::decode("a2616101616202").unwrap(), "x").unwrap(),
            Value::Map(
                Map::from_entries(vec![
                    ("a".into(), Value::Integer(1)),
                    ("b".into(), Value::Integer(2))
                ])
                .unwrap()
            )
        );
    }

    #[test]
    fn serde_json_values_inside_serialize_types_keep_their_numbers() {
        #[derive(Serialize)]
        struct Cfg {
            extra: serde_json::Value,
        }
        let json = serde_json::json!({"lr": 0.1, "n": 18446744073709551615u64, "k": -3});
        let direct = Value::from_serialize(&json, "c").unwrap();
        assert_eq!(
            direct,
            Value::from_json_slice(br#"{"lr": 0.1, "n": 18446744073709551615, "k": -3}"#, "c")
                .unwrap()
        );
        let nested = Value::from_serialize(&Cfg { extra: json }, "c").unwrap();
        assert_eq!(nested.as_map().unwrap().get("extra"), Some(&direct));
    }

    #[test]
    fn errors_name_the_path() {
        let err =
            Value::from_json_slice(br#"{"opt": {"layers": [1, {"a": 1, "a": 2}]}}"#, "config")
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "config.opt.layers[1]: duplicate map key \"a\""
        );
    }
}
