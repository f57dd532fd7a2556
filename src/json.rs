//! Strict JSON input: one pass from JSON text to a CBOR data-model value.
//!
//! Unlike `serde_json::Value`, this keeps duplicate map keys (so canonicalization can refuse
//! them), reads integer literals exactly (so `18446744073709551616` is an error, not a rounded
//! float) and bounds nesting (serde_json's recursion limit of 128).

use std::fmt;

use ciborium::Value as C;
use ciborium::value::Integer;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::canonical::{INT_MAX, INT_MIN};
use crate::error::{CanonicalErrorKind, Error, Result};

/// Key under which serde_json's `arbitrary_precision` feature hands a number's literal to a
/// visitor (serde_json's own `Value` relies on the same protocol). The test
/// `number_literals_are_exact` fails if serde_json ever changes it.
pub(crate) const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Parses JSON text into a CBOR data-model value; duplicates are kept for the caller to reject.
pub fn parse(bytes: &[u8]) -> Result<C> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let range = bytes.as_ptr_range();
    let seed = Seed {
        input: (range.start as usize, range.end as usize),
    };
    let v = de::DeserializeSeed::deserialize(seed, &mut de).map_err(json_error)?;
    de.end().map_err(json_error)?;
    Ok(v)
}

fn json_error(e: serde_json::Error) -> Error {
    Error::Json {
        message: e.to_string(),
    }
}

/// Converts an already-parsed JSON value (which cannot hold duplicate keys).
pub fn to_cbor(v: &serde_json::Value, root: &str) -> Result<C> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => C::Null,
        J::Bool(b) => C::Bool(*b),
        J::Number(n) => number(n.as_str()).map_err(|kind| Error::Canonical {
            path: root.to_owned(),
            kind,
        })?,
        J::String(s) => C::Text(s.clone()),
        J::Array(a) => C::Array(a.iter().map(|x| to_cbor(x, root)).collect::<Result<_>>()?),
        J::Object(m) => C::Map(
            m.iter()
                .map(|(k, v)| Ok((C::Text(k.clone()), to_cbor(v, root)?)))
                .collect::<Result<_>>()?,
        ),
    })
}

/// Reads a JSON number literal exactly: integer literals must fit −2^64 … 2^64−1; literals with a
/// fraction or exponent are doubles (correctly rounded) and must not overflow.
pub fn number(lit: &str) -> Result<C, CanonicalErrorKind> {
    if lit.contains(['.', 'e', 'E']) {
        let f: f64 = lit
            .parse()
            .map_err(|_| CanonicalErrorKind::FloatOverflow(lit.to_owned()))?;
        if !f.is_finite() {
            return Err(CanonicalErrorKind::FloatOverflow(lit.to_owned()));
        }
        Ok(C::Float(f))
    } else {
        match lit.parse::<i128>() {
            Ok(i) if (INT_MIN..=INT_MAX).contains(&i) => Ok(C::Integer(
                Integer::try_from(i).expect("in CBOR integer range"),
            )),
            _ => Err(CanonicalErrorKind::IntegerOutOfRange(lit.to_owned())),
        }
    }
}

/// Deserializes one JSON value. Knows the input's address range, to tell serde_json's number
/// token (a static string) from a user's map key (always taken from, or unescaped out of, the
/// input) even when both spell `NUMBER_TOKEN`.
#[derive(Clone, Copy)]
struct Seed {
    /// Start and end address of the input text.
    input: (usize, usize),
}

impl<'de> de::DeserializeSeed<'de> for Seed {
    type Value = C;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<C, D::Error> {
        d.deserialize_any(self)
    }
}

/// A map key: a user's text, or serde_json announcing that a number literal follows.
enum Key {
    Text(String),
    NumberToken,
}

impl<'de> de::DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

#[derive(Clone, Copy)]
struct KeySeed {
    input: (usize, usize),
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key, E> {
        let at = s.as_ptr() as usize;
        if s == NUMBER_TOKEN && !(self.input.0..self.input.1).contains(&at) {
            Ok(Key::NumberToken)
        } else {
            Ok(Key::Text(s.to_owned()))
        }
    }
    fn visit_str<E>(self, s: &str) -> Result<Key, E> {
        Ok(Key::Text(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Key, E> {
        Ok(Key::Text(s))
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = C;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<C, E> {
        Ok(C::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<C, E> {
        Ok(C::Integer(i.into()))
    }
    fn visit_u64<E>(self, i: u64) -> Result<C, E> {
        Ok(C::Integer(i.into()))
    }
    fn visit_f64<E>(self, f: f64) -> Result<C, E> {
        Ok(C::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<C, E> {
        Ok(C::Text(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<C, E> {
        Ok(C::Text(s))
    }
    fn visit_unit<E>(self) -> Result<C, E> {
        Ok(C::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<C, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element_seed(self)? {
            items.push(v);
        }
        Ok(C::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<C, A::Error> {
        let mut pairs = Vec::new();
        let key_seed = KeySeed { input: self.input };
        while let Some(key) = map.next_key_seed(key_seed)? {
            match key {
                Key::NumberToken if pairs.is_empty() => {
                    let lit: String = map.next_value()?;
                    return number(&lit).map_err(de::Error::custom);
                }
                Key::NumberToken => return Err(de::Error::custom("misplaced number token")),
                Key::Text(k) => {
                    let v = map.next_value_seed(self)?;
                    pairs.push((C::Text(k), v));
                }
            }
        }
        Ok(C::Map(pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_literals_are_exact() {
        assert_eq!(
            parse(b"18446744073709551615").unwrap(),
            C::Integer(Integer::from(u64::MAX))
        );
        assert_eq!(
            parse(b"-18446744073709551616").unwrap(),
            C::Integer(Integer::try_from(-(1i128 << 64)).unwrap())
        );
        assert!(parse(b"18446744073709551616").is_err());
        assert!(parse(b"-18446744073709551617").is_err());
        assert!(parse(b"1e400").is_err());
        assert_eq!(parse(b"[1.5]").unwrap(), C::Array(vec![C::Float(1.5)]));
    }

    #[test]
    fn duplicates_survive_parsing() {
        let C::Map(pairs) = parse(br#"{"a":1,"a":2}"#).unwrap() else {
            panic!("not a map")
        };
        assert_eq!(pairs.len(), 2);
    }

    #[test]
    fn depth_and_trailing_garbage_are_errors() {
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(deep.as_bytes()).is_err());
        assert!(parse(b"{} x").is_err());
        assert!(parse(b"NaN").is_err());
    }
}
