//! Reading canonical CBOR in place: a strict decoder into [`Value`] that builds no intermediate
//! tree, and navigation that finds one field of a map without decoding the rest.
//!
//! The decoder accepts exactly the canonical encodings of FORMAT.md §2 (shortest heads, definite
//! lengths, text keys in canonical order and unique, floats in their shortest exact width and
//! never integral, no tags, no simple values but `false`, `true`, `null`, nesting at most
//! [`MAX_DEPTH`]), so one value has one accepted encoding and two canonical values are equal
//! exactly when their encodings are.

use crate::canonical::{MAX_DEPTH, Map, Value};
use crate::error::{CanonicalErrorKind, Error, Result};

/// A position in a byte string of canonical CBOR.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// The head of one data item: major type and argument (or, for major type 7, the additional
/// information and the float bits).
#[derive(Clone, Copy)]
struct Head {
    major: u8,
    info: u8,
    arg: u64,
}

pub(crate) type Step<T> = std::result::Result<T, CanonicalErrorKind>;

/// What the decoder makes of each item: a [`Value`] tree ([`Tree`]), or nothing ([`Check`]),
/// with exactly the same acceptance rules.
trait Build {
    type Item;
    type Entry;
    fn integer(i: i128) -> Self::Item;
    fn bytes(b: &[u8]) -> Self::Item;
    fn text(s: &str) -> Self::Item;
    /// `null`, a boolean or a (canonical) float.
    fn scalar(v: Value) -> Self::Item;
    fn array(items: Vec<Self::Item>) -> Self::Item;
    fn entry(key: &str, v: Self::Item) -> Self::Entry;
    /// Entries in canonical key order, unique (checked by the decoder).
    fn map(entries: Vec<Self::Entry>) -> Step<Self::Item>;
}

/// Builds the decoded [`Value`].
enum Tree {}

impl Build for Tree {
    type Item = Value;
    type Entry = (String, Value);
    fn integer(i: i128) -> Value {
        Value::Integer(i)
    }
    fn bytes(b: &[u8]) -> Value {
        Value::Bytes(b.to_vec())
    }
    fn text(s: &str) -> Value {
        Value::Text(s.to_owned())
    }
    fn scalar(v: Value) -> Value {
        v
    }
    fn array(items: Vec<Value>) -> Value {
        Value::Array(items)
    }
    fn entry(key: &str, v: Value) -> (String, Value) {
        (key.to_owned(), v)
    }
    fn map(entries: Vec<(String, Value)>) -> Step<Value> {
        Ok(Value::Map(Map::from_entries(entries)?))
    }
}

/// Builds nothing: validation only (`Vec<()>` never allocates).
enum Check {}

impl Build for Check {
    type Item = ();
    type Entry = ();
    fn integer(_: i128) {}
    fn bytes(_: &[u8]) {}
    fn text(_: &str) {}
    fn scalar(_: Value) {}
    fn array(_: Vec<()>) {}
    fn entry(_: &str, _: ()) {}
    fn map(_: Vec<()>) -> Step<()> {
        Ok(())
    }
}

fn invalid(what: &str) -> CanonicalErrorKind {
    CanonicalErrorKind::Decode(what.to_owned())
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| invalid("unexpected end of input"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn head(&mut self) -> Step<Head> {
        let b = self.take(1)?[0];
        let (major, info) = (b >> 5, b & 0x1f);
        let arg = match info {
            0..=23 => u64::from(info),
            24 => u64::from(self.take(1)?[0]),
            25 => u64::from(u16::from_be_bytes(
                self.take(2)?.try_into().expect("2 bytes"),
            )),
            26 => u64::from(u32::from_be_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            )),
            27 => u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")),
            _ => return Err(invalid("reserved or indefinite-length head")),
        };
        // Floats (major 7) carry bits, not a number, and are checked where they are decoded.
        let shortest = match info {
            24 => arg >= 24,
            25 => arg > 0xff,
            26 => arg > 0xffff,
            27 => arg > 0xffff_ffff,
            _ => true,
        };
        if major != 7 && !shortest {
            return Err(CanonicalErrorKind::NotCanonical);
        }
        Ok(Head { major, info, arg })
    }

    fn len(&self, arg: u64) -> Step<usize> {
        usize::try_from(arg)
            .ok()
            .filter(|&n| n <= self.bytes.len() - self.pos)
            .ok_or_else(|| invalid("length exceeds the input"))
    }

    fn text(&mut self, arg: u64) -> Step<&'a str> {
        let n = self.len(arg)?;
        std::str::from_utf8(self.take(n)?).map_err(|_| invalid("text is not UTF-8"))
    }

    /// Decodes one item at nesting `depth` (the outermost container is at depth 0) into what
    /// `B` builds from it.
    fn value<B: Build>(&mut self, depth: usize) -> Step<B::Item> {
        let h = self.head()?;
        Ok(match h.major {
            0 => B::integer(i128::from(h.arg)),
            1 => B::integer(-1 - i128::from(h.arg)),
            2 => {
                let n = self.len(h.arg)?;
                B::bytes(self.take(n)?)
            }
            3 => B::text(self.text(h.arg)?),
            4 => {
                if depth >= MAX_DEPTH {
                    return Err(CanonicalErrorKind::TooDeep);
                }
                // Every item takes at least one byte: bounds the allocation.
                let n = self.len(h.arg)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value::<B>(depth + 1)?);
                }
                B::array(items)
            }
            5 => {
                if depth >= MAX_DEPTH {
                    return Err(CanonicalErrorKind::TooDeep);
                }
                let n = self.len(h.arg)?;
                let mut entries = Vec::with_capacity(n);
                let mut last: &[u8] = &[];
                for _ in 0..n {
                    let key_start = self.pos;
                    let kh = self.head()?;
                    if kh.major != 3 {
                        return Err(CanonicalErrorKind::NonTextKey);
                    }
                    let key = self.text(kh.arg)?;
                    // Canonical key order is the bytewise order of the encoded keys.
                    let encoded = &self.bytes[key_start..self.pos];
                    if encoded <= last {
                        return Err(if encoded == last {
                            CanonicalErrorKind::DuplicateKey(key.to_owned())
                        } else {
                            CanonicalErrorKind::NotCanonical
                        });
                    }
                    last = encoded;
                    if key == crate::canonical::NUMBER_TOKEN {
                        return Err(CanonicalErrorKind::Unsupported(
                            "the map key \"$serde_json::private::Number\" (reserved)",
                        ));
                    }
                    entries.push(B::entry(key, self.value::<B>(depth + 1)?));
                }
                B::map(entries)?
            }
            6 => return Err(CanonicalErrorKind::Unsupported("a CBOR tag")),
            _ => match (h.info, h.arg) {
                (20, _) => B::scalar(Value::Bool(false)),
                (21, _) => B::scalar(Value::Bool(true)),
                (22, _) => B::scalar(Value::Null),
                (25..=27, bits) => {
                    let f = match h.info {
                        25 => f64::from(half::f16::from_bits(bits as u16)),
                        26 => f64::from(f32::from_bits(bits as u32)),
                        _ => f64::from_bits(bits),
                    };
                    let v = crate::canonical::reduce_float(f)?;
                    // Integral floats and wider-than-needed widths have another encoding.
                    if !matches!(v, Value::Float(_)) || shortest_float_info(f) != h.info {
                        return Err(CanonicalErrorKind::NotCanonical);
                    }
                    B::scalar(v)
                }
                _ => {
                    return Err(CanonicalErrorKind::Unsupported(
                        "a CBOR simple value other than null, true and false",
                    ));
                }
            },
        })
    }

    /// Skips one well-formed item (heads and lengths checked; contents and nesting depth are
    /// left to the decoder), returning its encoded bytes.
    pub(crate) fn skip(&mut self) -> Step<&'a [u8]> {
        let start = self.pos;
        // Items still to skip, nested ones included: a container adds its children. No stack:
        // nothing here depends on which level an item is at.
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let h = self.head()?;
            match h.major {
                2 | 3 => {
                    let n = self.len(h.arg)?;
                    self.take(n)?;
                }
                4 | 5 => {
                    let items = if h.major == 5 {
                        h.arg
                            .checked_mul(2)
                            .ok_or_else(|| invalid("map too long"))?
                    } else {
                        h.arg
                    };
                    pending = pending
                        .checked_add(self.len(items)? as u64)
                        .ok_or_else(|| invalid("too many items"))?;
                }
                6 => return Err(CanonicalErrorKind::Unsupported("a CBOR tag")),
                _ => {}
            }
        }
        Ok(&self.bytes[start..self.pos])
    }

    /// Within the map that starts here, moves to the value under `key` and returns true; false
    /// when this is not a map or the key is absent.
    pub(crate) fn enter(&mut self, key: &str) -> Step<bool> {
        let h = self.head()?;
        if h.major != 5 {
            return Ok(false);
        }
        for _ in 0..h.arg {
            let kh = self.head()?;
            if kh.major != 3 {
                return Err(CanonicalErrorKind::NonTextKey);
            }
            let n = self.len(kh.arg)?;
            if self.take(n)? == key.as_bytes() {
                return Ok(true);
            }
            self.skip()?;
        }
        Ok(false)
    }
}

/// Decodes canonical CBOR into a value; anything but the canonical encoding of one value
/// (including trailing bytes) is an error naming `root`.
pub fn decode(bytes: &[u8], root: &str) -> Result<Value> {
    whole::<Tree>(bytes, 0).map_err(|kind| Error::Canonical {
        path: root.to_owned(),
        kind,
    })
}

fn whole<B: Build>(bytes: &[u8], depth: usize) -> Step<B::Item> {
    let mut r = Reader::new(bytes);
    let v = r.value::<B>(depth)?;
    if r.pos == bytes.len() {
        Ok(v)
    } else {
        Err(invalid("trailing bytes"))
    }
}

/// The encoded items of `bytes`, one definite-length array of exactly `N` well-formed items and
/// nothing after it; the items from position `checked` on are also validated as [`decode`]
/// would (building nothing), at nesting depth 1, in the same pass.
pub(crate) fn array_items_checked<const N: usize>(
    bytes: &[u8],
    checked: usize,
) -> Step<[&[u8]; N]> {
    let mut r = Reader::new(bytes);
    let h = r.head()?;
    if h.major != 4 || h.arg != N as u64 {
        return Err(invalid("not an array of the expected length"));
    }
    let mut items = [&[][..]; N];
    for (at, item) in items.iter_mut().enumerate() {
        *item = if at < checked {
            r.skip()?
        } else {
            let start = r.pos;
            r.value::<Check>(1)?;
            &bytes[start..r.pos]
        };
    }
    if r.pos != bytes.len() {
        return Err(invalid("trailing bytes"));
    }
    Ok(items)
}

/// `bytes` from item `at` of the definite-length array of `n` items they start with, the items
/// before it skipped (what follows item `at` is not looked at).
pub(crate) fn array_tail(bytes: &[u8], n: u64, at: usize) -> Step<&[u8]> {
    let mut r = Reader::new(bytes);
    let h = r.head()?;
    if h.major != 4 || h.arg != n || at as u64 >= n {
        return Err(invalid("not an array of the expected length"));
    }
    for _ in 0..at {
        r.skip()?;
    }
    Ok(&bytes[r.pos..])
}

/// The text that `item` is exactly the canonical encoding of.
pub(crate) fn text_item(item: &[u8]) -> Step<&str> {
    let mut r = Reader::new(item);
    let h = r.head()?;
    if h.major != 3 {
        return Err(invalid("not text"));
    }
    let s = r.text(h.arg)?;
    if r.pos != item.len() {
        return Err(invalid("trailing bytes"));
    }
    Ok(s)
}

/// The encoded value at the dotted `path` of maps inside the item `bytes` start with (what
/// follows that item is not read), `None` when a step is missing or not a map; errors only for
/// bytes that are not well-formed.
pub(crate) fn find_path<'a>(
    bytes: &'a [u8],
    path: impl IntoIterator<Item = &'a str>,
) -> Step<Option<&'a [u8]>> {
    let mut r = Reader::new(bytes);
    for seg in path {
        if !r.enter(seg)? {
            return Ok(None);
        }
    }
    r.skip().map(Some)
}

/// The additional information (25: half, 26: single, 27: double) of the shortest CBOR float
/// that holds `f` exactly: the width the canonical encoder writes.
fn shortest_float_info(f: f64) -> u8 {
    if f64::from(half::f16::from_f64(f)).to_bits() == f.to_bits() {
        25
    } else if f64::from(f as f32).to_bits() == f.to_bits() {
        26
    } else {
        27
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Canonical values of every kind, nested a few levels.
    pub(crate) fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| Value::Integer(i.into())),
            any::<u64>().prop_map(|i| Value::Integer(-1 - i128::from(i))),
            any::<f64>().prop_filter_map("finite", |f| crate::canonical::reduce_float(f).ok()),
            (-4i32..4).prop_map(|e| crate::canonical::reduce_float(1.5 * 10f64.powi(e)).unwrap()),
            "[a-c]{0,3}".prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..4).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-c]{0,2}", inner, 0..4).prop_map(|m| {
                    Value::Map(Map::from_entries(m.into_iter().collect()).expect("unique keys"))
                }),
            ]
        })
    }

    proptest! {
        /// The direct decoder, and the validator, agree with the reference (ciborium,
        /// canonicalize, re-encode and compare) on canonical encodings and on every truncation
        /// and one-byte change of them.
        #[test]
        fn decoder_agrees_with_the_reference(v in value(), at in any::<usize>(), byte in any::<u8>()) {
            let bytes = v.to_cbor();
            prop_assert_eq!(decode(&bytes, "t").unwrap(), v);
            prop_assert!(whole::<Check>(&bytes, 0).is_ok());
            prop_assert_eq!(Reader::new(&bytes).skip(), Ok(&bytes[..]));
            let at = at % bytes.len();
            let mut changed = bytes.clone();
            changed[at] = byte;
            for input in [&bytes[..at], &changed[..]] {
                let reference = Value::from_canonical_cbor(input, "t").ok();
                prop_assert_eq!(whole::<Check>(input, 0).is_ok(), reference.is_some(), "input {:02x?}", input);
                prop_assert_eq!(decode(input, "t").ok(), reference, "input {:02x?}", input);
            }
        }
    }

    fn canon(json: &str) -> Value {
        Value::from_json_slice(json.as_bytes(), "t").unwrap()
    }

    #[test]
    fn decodes_what_the_encoder_writes() {
        for json in [
            r#"{"a": 1, "bb": [1.5, -2, "x", null, true, false], "c": {"d": 1e300, "e": -18446744073709551616}}"#,
            r#"[0.1, 65504.5, 3.4028234663852886e38, 1e-7, 23, 24, 255, 256, 65536, 4294967296]"#,
            r#""ünïcode""#,
        ] {
            let v = canon(json);
            assert_eq!(decode(&v.to_cbor(), "t").unwrap(), v, "{json}");
        }
        let b = Value::Bytes(vec![1, 2, 3]);
        assert_eq!(decode(&b.to_cbor(), "t").unwrap(), b);
    }

    #[test]
    fn refuses_every_non_canonical_form() {
        for (bytes, what) in [
            (&b"\x18\x05"[..], "long-form integer"),
            (b"\xf9\x3c\x00", "integral float"),
            (
                b"\xfb\x3f\xf8\x00\x00\x00\x00\x00\x00",
                "float wider than needed",
            ),
            (b"\xa2\x61\x62\x01\x61\x61\x01", "keys out of order"),
            (b"\xa2\x61\x61\x01\x61\x61\x02", "duplicate key"),
            (b"\xa1\x01\x01", "integer key"),
            (b"\x9f\xff", "indefinite length"),
            (b"\xc1\x00", "tag"),
            (b"\xf7", "undefined"),
            (b"\x01\x02", "trailing bytes"),
            (b"\x62\xff\xfe", "invalid UTF-8"),
            (b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff", "huge length"),
        ] {
            assert!(
                matches!(decode(bytes, "t"), Err(Error::Canonical { .. })),
                "{what} accepted"
            );
        }
        let deep = [vec![0x81u8; MAX_DEPTH + 1], vec![0x00]].concat();
        assert!(matches!(
            decode(&deep, "t"),
            Err(Error::Canonical {
                kind: CanonicalErrorKind::TooDeep,
                ..
            })
        ));
    }

    #[test]
    fn paths_find_encoded_fields() {
        let v = canon(r#"{"a": {"b": [1, {"c": 2}], "c": "x"}, "z": 0.5}"#);
        let bytes = v.to_cbor();
        assert_eq!(
            find_path(&bytes, ["a", "c"]).unwrap(),
            Some(&Value::Text("x".into()).to_cbor()[..])
        );
        assert_eq!(
            find_path(&bytes, ["z"]).unwrap(),
            Some(&Value::Float(0.5).to_cbor()[..])
        );
        assert_eq!(find_path(&bytes, ["a", "b", "c"]).unwrap(), None);
        assert_eq!(find_path(&bytes, ["q"]).unwrap(), None);
        assert!(find_path(&bytes[..bytes.len() - 1], ["z"]).is_err());
    }
}
