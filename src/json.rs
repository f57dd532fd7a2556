//! Strict JSON input: one pass from JSON text to canonical CBOR ([`canonical_cbor`]) or to a CBOR
//! data-model value ([`parse`]).
//!
//! Unlike `serde_json::Value`, this sees duplicate map keys (so canonicalization can refuse
//! them), reads integer literals exactly (so `18446744073709551616` is an error, not a rounded
//! float) and bounds nesting (serde_json's recursion limit of 128).

use std::fmt;

use ciborium::Value as C;
use ciborium::value::Integer;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::canonical::encoder::Open;
use crate::canonical::{Encoder, INT_MAX, INT_MIN, NUMBER_TOKEN, Value};
use crate::error::{CanonicalErrorKind, Error, Result};

/// Parses JSON text straight to the canonical CBOR of its value, in the returned encoder
/// (nesting counted from the text's outermost container; errors name paths below `root`).
/// Syntax errors, and number literals out of range, are [`Error::Json`] and take precedence over
/// canonicalization errors (duplicate keys, nesting, the reserved key), of which the first is
/// reported.
pub(crate) fn canonical_cbor(bytes: &[u8], root: &str) -> Result<Encoder> {
    let mut enc = Encoder::new(root, 0);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let range = bytes.as_ptr_range();
    let seed = Canon {
        enc: &mut enc,
        input: (range.start as usize, range.end as usize),
    };
    de::DeserializeSeed::deserialize(seed, &mut de).map_err(json_error)?;
    de.end().map_err(json_error)?;
    match enc.take_error() {
        Some(e) => Err(e),
        None => Ok(enc),
    }
}

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
    Ok(match number_value(lit)? {
        Value::Integer(i) => C::Integer(Integer::try_from(i).expect("in CBOR integer range")),
        Value::Float(f) => C::Float(f),
        _ => unreachable!("a number literal is an integer or a float"),
    })
}

/// [`number`] as a [`Value::Integer`] or an unreduced [`Value::Float`].
pub(crate) fn number_value(lit: &str) -> Result<Value, CanonicalErrorKind> {
    if lit.contains(['.', 'e', 'E']) {
        let f: f64 = lit
            .parse()
            .map_err(|_| CanonicalErrorKind::FloatOverflow(lit.to_owned()))?;
        if !f.is_finite() {
            return Err(CanonicalErrorKind::FloatOverflow(lit.to_owned()));
        }
        Ok(Value::Float(f))
    } else {
        match lit.parse::<i128>() {
            Ok(i) if (INT_MIN..=INT_MAX).contains(&i) => Ok(Value::Integer(i)),
            _ => Err(CanonicalErrorKind::IntegerOutOfRange(lit.to_owned())),
        }
    }
}

/// Deserializes one JSON value into an [`Encoder`]; `input` as in [`Seed`]. Canonicalization
/// errors are recorded in the encoder and parsing goes on, so that a later syntax error still
/// wins.
struct Canon<'a> {
    enc: &'a mut Encoder,
    input: (usize, usize),
}

impl Canon<'_> {
    fn reborrow(&mut self) -> Canon<'_> {
        Canon {
            enc: &mut *self.enc,
            input: self.input,
        }
    }
}

impl<'de> de::DeserializeSeed<'de> for Canon<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canon<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        self.enc.bool(b);
        Ok(())
    }
    fn visit_i64<E>(self, i: i64) -> Result<(), E> {
        self.enc.i64(i);
        Ok(())
    }
    fn visit_u64<E>(self, i: u64) -> Result<(), E> {
        self.enc.u64(i);
        Ok(())
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.enc.text(s);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.enc.null();
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let (mut open, _) = self.enc.begin_array();
        loop {
            self.enc.element(&open);
            let more = seq.next_element_seed(self.reborrow())?.is_some();
            self.enc.end_element(&mut open, more);
            if !more {
                break;
            }
        }
        self.enc.end_array(open);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        // Opened at the first key, which may instead announce a number.
        let mut open = None;
        loop {
            let key = CanonKey {
                enc: &mut *self.enc,
                open: &mut open,
                input: self.input,
            };
            match map.next_key_seed(key)? {
                None => break,
                Some(Key::NumberToken) if open.is_none() => {
                    return map.next_value_seed(NumberSeed { enc: self.enc });
                }
                Some(Key::NumberToken) => return Err(de::Error::custom("misplaced number token")),
                Some(Key::Text(())) => {
                    map.next_value_seed(self.reborrow())?;
                    self.enc.end_entry();
                }
            }
        }
        let open = match open {
            Some(open) => open,
            None => self.enc.begin_map().0,
        };
        // A failure is recorded in the encoder.
        let _ = self.enc.end_map(open);
        Ok(())
    }
}

/// A map key written straight into the encoder (opening the map at the first key).
struct CanonKey<'a, 'b> {
    enc: &'a mut Encoder,
    open: &'b mut Option<Open>,
    input: (usize, usize),
}

impl CanonKey<'_, '_> {
    fn write(self, s: &str) -> Key<()> {
        let open = match self.open {
            Some(open) => open,
            None => self.open.insert(self.enc.begin_map().0),
        };
        // A failure (the reserved key) is recorded in the encoder.
        let _ = self.enc.key(open, s);
        Key::Text(())
    }
}

impl<'de> de::DeserializeSeed<'de> for CanonKey<'_, '_> {
    type Value = Key<()>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key<()>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for CanonKey<'_, '_> {
    type Value = Key<()>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<()>, E> {
        if is_number_token(s, self.input) {
            Ok(Key::NumberToken)
        } else {
            Ok(self.write(s))
        }
    }
    fn visit_str<E>(self, s: &str) -> Result<Key<()>, E> {
        Ok(self.write(s))
    }
}

/// True when `s` is serde_json's number token rather than a user's key spelling it: the token is
/// a static string, a user's key always lies in (or was unescaped out of) the input.
fn is_number_token(s: &str, input: (usize, usize)) -> bool {
    s == NUMBER_TOKEN && !(input.0..input.1).contains(&(s.as_ptr() as usize))
}

/// The literal of a number serde_json announced with its token.
struct NumberSeed<'a> {
    enc: &'a mut Encoder,
}

impl<'de> de::DeserializeSeed<'de> for NumberSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NumberSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number literal")
    }

    fn visit_str<E: de::Error>(self, lit: &str) -> Result<(), E> {
        // Out-of-range literals are JSON errors, as in `parse`; what `number_value` accepts is
        // in range and finite, so the encoder takes it.
        let _ = match number_value(lit).map_err(de::Error::custom)? {
            Value::Integer(i) => self.enc.i128(i),
            Value::Float(f) => self.enc.f64(f),
            _ => unreachable!("a number literal is an integer or a float"),
        };
        Ok(())
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

/// A map key: a user's text (or `()` once written), or serde_json announcing that a number
/// literal follows.
enum Key<T = String> {
    Text(T),
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
        if is_number_token(s, self.input) {
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
