//! One-pass canonical encoding of a stream of values (serde calls or JSON parse events).
//!
//! Values are written straight into one buffer in their canonical form. A container's head is
//! reserved as one byte and fixed when the container closes; a map's entries are written in the
//! order given and, only when that order is not already canonical, sorted and checked for
//! duplicates on close. No tree is built: the output is exactly what [`super::Value::to_cbor`]
//! would give for the equivalent value (the property tests compare the two).
//!
//! The first canonicalization error is kept with the path where it happened; callers that can
//! stop (serde) stop, callers that cannot (a JSON parse, whose syntax errors take precedence)
//! keep feeding events and check [`Encoder::take_error`] at the end.

use std::fmt::Write as _;

use super::{MAX_DEPTH, Map, Value, head, write_int, write_number};
use crate::error::{CanonicalErrorKind, Error};

/// Key under which serde_json's `arbitrary_precision` feature carries a number's literal; it is
/// reserved as a map key (FORMAT.md §2.2).
pub(crate) const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// The error for a map using [`NUMBER_TOKEN`] as a key.
pub(crate) const RESERVED_KEY: CanonicalErrorKind =
    CanonicalErrorKind::Unsupported("the map key \"$serde_json::private::Number\" (reserved)");

/// Marker for "the encoder holds an error"; the error itself is in [`Encoder::take_error`].
#[derive(Debug)]
pub(crate) struct Failed;

/// A map entry being written: offsets into the output.
#[derive(Clone, Copy)]
struct Entry {
    /// Start of the encoded key (its head).
    start: usize,
    /// Start of the key's text.
    text: usize,
    /// End of the key, start of the value.
    value: usize,
    /// End of the value.
    end: usize,
}

/// One step of the path from the root to the value being written.
enum Segment {
    /// A map key; its text lies at this range of the output (entries of open maps never move).
    Key(usize, usize),
    /// An array index.
    Index(usize),
}

/// An open array or map.
pub(crate) struct Open {
    /// Offset of the reserved head byte.
    start: usize,
    /// First entry of this map in the entry stack.
    base: usize,
    /// Items (or entries) written so far.
    count: usize,
}

/// The buffers of an [`Encoder`], kept per thread between uses (allocating and growing them
/// anew would cost a good part of an identity).
#[derive(Default)]
struct Buffers {
    out: Vec<u8>,
    scratch: Vec<u8>,
    entries: Vec<Entry>,
    path: Vec<Segment>,
}

/// Buffers larger than this are not kept for the next encoder.
const KEEP_LIMIT: usize = 1 << 20;

thread_local! {
    static SPARE: std::cell::Cell<Option<Buffers>> = const { std::cell::Cell::new(None) };
}

/// A canonical CBOR writer over reusable buffers.
pub(crate) struct Encoder {
    out: Vec<u8>,
    scratch: Vec<u8>,
    entries: Vec<Entry>,
    path: Vec<Segment>,
    depth: usize,
    root: &'static str,
    owned_root: Option<String>,
    error: Option<Error>,
    /// The entries of the outermost map once closed: (key text start, value start, value end).
    root_entries: Vec<(usize, usize, usize)>,
}

impl Encoder {
    /// An empty encoder; values written start at nesting `depth` (1 for a field of a document)
    /// and errors name paths below `root`.
    pub(crate) fn new(root: &str, depth: usize) -> Self {
        // A nested use (a `Serialize` impl computing an identity) finds no spare and allocates.
        let b = SPARE.with(|s| s.take()).unwrap_or_default();
        let mut e = Encoder {
            out: b.out,
            scratch: b.scratch,
            entries: b.entries,
            path: b.path,
            depth,
            root: "",
            owned_root: None,
            error: None,
            root_entries: Vec::new(),
        };
        e.set_root(root, depth);
        e
    }

    /// Starts a new top-level value below `root` at nesting `depth`.
    pub(crate) fn set_root(&mut self, root: &str, depth: usize) {
        // The common roots are static: no allocation per identity.
        match ["config", "predicate", "$"]
            .into_iter()
            .find(|r| *r == root)
        {
            Some(r) => {
                self.root = r;
                self.owned_root = None;
            }
            None => self.owned_root = Some(root.to_owned()),
        }
        self.depth = depth;
        debug_assert!(self.path.is_empty() && self.entries.is_empty());
    }

    /// The bytes written so far.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.out
    }

    /// The output buffer, for writing fixed (already canonical) bytes or truncating.
    pub(crate) fn out_mut(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// The entries of the outermost value, if it is a map: (key, encoded value) in canonical
    /// order.
    pub(crate) fn root_entries(&self) -> Option<impl Iterator<Item = (&str, &[u8])>> {
        if self.out.first()? >> 5 != 5 {
            return None;
        }
        Some(self.root_entries.iter().map(|&(k, v, end)| {
            let key = std::str::from_utf8(&self.out[k..v]).expect("keys are UTF-8");
            (key, &self.out[v..end])
        }))
    }

    /// The first error recorded, if any.
    pub(crate) fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// The error recorded by a call that returned [`Failed`].
    pub(crate) fn error(&mut self) -> Error {
        self.error.take().expect("a failure is recorded")
    }

    /// Records `kind` at the current path unless an earlier error is kept.
    pub(crate) fn fail(&mut self, kind: CanonicalErrorKind) -> Failed {
        if self.error.is_none() {
            let mut path = self.owned_root.as_deref().unwrap_or(self.root).to_owned();
            for seg in &self.path {
                match *seg {
                    Segment::Index(i) => {
                        let _ = write!(path, "[{i}]");
                    }
                    Segment::Key(a, b) => {
                        let k = std::str::from_utf8(&self.out[a..b]).expect("keys are UTF-8");
                        if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        {
                            let _ = write!(path, ".{k}");
                        } else {
                            let _ = write!(path, "[{k:?}]");
                        }
                    }
                }
            }
            self.error = Some(Error::Canonical { path, kind });
        }
        Failed
    }

    /// Records that serde failed for its own reasons (a `Serialize` impl's custom error) here,
    /// unless the failure is one already recorded.
    pub(crate) fn serde_failed(&mut self) -> Failed {
        self.fail(CanonicalErrorKind::Unsupported(
            "a value that serde cannot express in CBOR",
        ))
    }

    pub(crate) fn null(&mut self) {
        self.out.push(0xf6);
    }

    pub(crate) fn bool(&mut self, b: bool) {
        self.out.push(if b { 0xf5 } else { 0xf4 });
    }

    pub(crate) fn u64(&mut self, i: u64) {
        head(&mut self.out, 0, i);
    }

    pub(crate) fn i64(&mut self, i: i64) {
        write_int(&mut self.out, i128::from(i));
    }

    /// An integer that must lie in −2^64 … 2^64−1.
    pub(crate) fn i128(&mut self, i: i128) -> Result<(), Failed> {
        if (super::INT_MIN..=super::INT_MAX).contains(&i) {
            write_int(&mut self.out, i);
            Ok(())
        } else {
            Err(self.fail(CanonicalErrorKind::IntegerOutOfRange(i.to_string())))
        }
    }

    /// A float, reduced per identity v1 (integral values become integers; NaN, ±inf fail).
    pub(crate) fn f64(&mut self, f: f64) -> Result<(), Failed> {
        write_number(&mut self.out, f).map_err(|k| self.fail(k))
    }

    /// A JSON number literal, read exactly (see [`crate::json::number`]).
    pub(crate) fn number_literal(&mut self, lit: &str) -> Result<(), Failed> {
        match crate::json::number_value(lit) {
            Ok(Value::Integer(i)) => self.i128(i),
            Ok(Value::Float(f)) => self.f64(f),
            Ok(_) => unreachable!("a number literal is an integer or a float"),
            Err(k) => Err(self.fail(k)),
        }
    }

    pub(crate) fn text(&mut self, s: &str) {
        head(&mut self.out, 3, s.len() as u64);
        self.out.extend_from_slice(s.as_bytes());
    }

    pub(crate) fn bytes_value(&mut self, b: &[u8]) {
        head(&mut self.out, 2, b.len() as u64);
        self.out.extend_from_slice(b);
    }

    /// Opens a container; fails (but still opens it, for callers that continue) when it would
    /// nest deeper than [`MAX_DEPTH`].
    fn open(&mut self) -> (Open, Result<(), Failed>) {
        let r = if self.depth >= MAX_DEPTH {
            Err(self.fail(CanonicalErrorKind::TooDeep))
        } else {
            Ok(())
        };
        self.depth += 1;
        let open = Open {
            start: self.out.len(),
            base: self.entries.len(),
            count: 0,
        };
        self.out.push(0);
        (open, r)
    }

    /// Opens an array.
    pub(crate) fn begin_array(&mut self) -> (Open, Result<(), Failed>) {
        self.open()
    }

    /// Makes the next array element the current path.
    pub(crate) fn element(&mut self, a: &Open) {
        self.path.push(Segment::Index(a.count));
    }

    /// Ends the current array element; `written` is false when there was none after all (the
    /// end of a JSON array).
    pub(crate) fn end_element(&mut self, a: &mut Open, written: bool) {
        self.path.pop();
        a.count += usize::from(written);
    }

    /// Closes an array.
    pub(crate) fn end_array(&mut self, a: Open) {
        self.depth -= 1;
        close_container(&mut self.out, a.start, 4, a.count);
    }

    /// Opens a map.
    pub(crate) fn begin_map(&mut self) -> (Open, Result<(), Failed>) {
        self.open()
    }

    /// Writes the next key of a map and makes its value the current path; the reserved key is
    /// refused (reported at the map itself).
    pub(crate) fn key(&mut self, m: &mut Open, k: &str) -> Result<(), Failed> {
        let r = if k == NUMBER_TOKEN {
            Err(self.fail(RESERVED_KEY))
        } else {
            Ok(())
        };
        let start = self.out.len();
        self.text(k);
        let value = self.out.len();
        let text = value - k.len();
        self.entries.push(Entry {
            start,
            text,
            value,
            end: value,
        });
        self.path.push(Segment::Key(text, value));
        m.count += 1;
        r
    }

    /// Ends the current map entry's value.
    pub(crate) fn end_entry(&mut self) {
        self.path.pop();
        let end = self.out.len();
        self.entries.last_mut().expect("an open entry").end = end;
    }

    /// Closes a map: sorts its entries into canonical order if they are not, and fails on a
    /// duplicate key (the first in canonical order, reported at the map).
    pub(crate) fn end_map(&mut self, m: Open) -> Result<(), Failed> {
        self.depth -= 1;
        let out = &self.out;
        // Encoded keys compare bytewise exactly as RFC 8949 §4.2.1 orders them. The first byte
        // (the head, which holds the length of keys under 24 bytes) usually decides.
        let cmp = |a: &Entry, b: &Entry| {
            let (a, b) = (&out[a.start..a.value], &out[b.start..b.value]);
            a[0].cmp(&b[0]).then_with(|| a[1..].cmp(&b[1..]))
        };
        let entries = &mut self.entries[m.base..];
        let sorted = entries.windows(2).all(|w| cmp(&w[0], &w[1]).is_lt());
        let mut r = Ok(());
        if !sorted {
            entries.sort_unstable_by(cmp);
            if let Some(w) = entries.windows(2).find(|w| cmp(&w[0], &w[1]).is_eq()) {
                let k =
                    String::from_utf8(out[w[0].text..w[0].value].to_vec()).expect("keys are UTF-8");
                r = Err(CanonicalErrorKind::DuplicateKey(k));
            }
            self.scratch.clear();
            head(&mut self.scratch, 5, m.count as u64);
            for e in entries.iter() {
                self.scratch.extend_from_slice(&out[e.start..e.end]);
            }
            self.out.truncate(m.start);
            self.out.extend_from_slice(&self.scratch);
        } else {
            close_container(&mut self.out, m.start, 5, m.count);
        }
        if self.path.is_empty() && m.base == 0 {
            // The outermost map: note where its entries ended up.
            let entries = &self.entries[..];
            let body: usize = entries.iter().map(|e| e.end - e.start).sum();
            let mut at = self.out.len() - body;
            self.root_entries.clear();
            for e in entries {
                let start = at;
                at += e.end - e.start;
                self.root_entries
                    .push((start + e.text - e.start, start + e.value - e.start, at));
            }
        }
        self.entries.truncate(m.base);
        r.map_err(|k| self.fail(k))
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let mut b = Buffers {
            out: std::mem::take(&mut self.out),
            scratch: std::mem::take(&mut self.scratch),
            entries: std::mem::take(&mut self.entries),
            path: std::mem::take(&mut self.path),
        };
        if b.out.capacity().max(b.scratch.capacity()) <= KEEP_LIMIT {
            b.out.clear();
            b.scratch.clear();
            b.entries.clear();
            b.path.clear();
            SPARE.with(|s| s.set(Some(b)));
        }
    }
}

/// The value that canonical bytes written by this module (or [`Value::to_cbor`]) encode.
/// Panics on anything else: only for bytes known to be canonical.
pub(crate) fn decode(bytes: &[u8]) -> Value {
    let mut pos = 0;
    let v = decode_at(bytes, &mut pos);
    debug_assert_eq!(pos, bytes.len());
    v
}

/// Reads a head at `pos`: (major type, argument or simple/float bits).
fn read_head(b: &[u8], pos: &mut usize) -> (u8, u64) {
    let first = b[*pos];
    *pos += 1;
    let (major, info) = (first >> 5, first & 0x1f);
    let n = match info {
        0..=23 => return (major, u64::from(info)),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        _ => unreachable!("canonical bytes have definite lengths"),
    };
    let mut arg = 0u64;
    for &x in &b[*pos..*pos + n] {
        arg = (arg << 8) | u64::from(x);
    }
    *pos += n;
    (major, arg)
}

fn take<'a>(b: &'a [u8], pos: &mut usize, n: u64) -> &'a [u8] {
    let s = &b[*pos..*pos + n as usize];
    *pos += n as usize;
    s
}

fn decode_at(b: &[u8], pos: &mut usize) -> Value {
    let first = b[*pos];
    match first {
        0xf4 => return skip_one(pos, Value::Bool(false)),
        0xf5 => return skip_one(pos, Value::Bool(true)),
        0xf6 => return skip_one(pos, Value::Null),
        _ => {}
    }
    let (major, arg) = read_head(b, pos);
    match major {
        0 => Value::Integer(i128::from(arg)),
        1 => Value::Integer(-1 - i128::from(arg)),
        2 => Value::Bytes(take(b, pos, arg).to_vec()),
        3 => Value::Text(utf8(take(b, pos, arg))),
        4 => Value::Array((0..arg).map(|_| decode_at(b, pos)).collect()),
        5 => Value::Map(Map((0..arg)
            .map(|_| {
                let (_, len) = read_head(b, pos);
                let k = utf8(take(b, pos, len));
                (k, decode_at(b, pos))
            })
            .collect())),
        _ => Value::Float(match first {
            0xf9 => f64::from(half::f16::from_bits(arg as u16)),
            0xfa => f64::from(f32::from_bits(arg as u32)),
            _ => f64::from_bits(arg),
        }),
    }
}

fn skip_one(pos: &mut usize, v: Value) -> Value {
    *pos += 1;
    v
}

fn utf8(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).expect("canonical text is UTF-8")
}

/// The entries of the canonical map `bytes` (which must be one), in order, as (key text,
/// encoded key, encoded value).
pub(crate) fn map_entries(bytes: &[u8]) -> impl Iterator<Item = (&str, &[u8], &[u8])> {
    let mut pos = 0;
    let (major, n) = read_head(bytes, &mut pos);
    assert_eq!(major, 5, "not a map");
    (0..n).map(move |_| {
        let key_start = pos;
        let (_, len) = read_head(bytes, &mut pos);
        let text = std::str::from_utf8(take(bytes, &mut pos, len)).expect("keys are UTF-8");
        let value_start = pos;
        skip(bytes, &mut pos);
        (
            text,
            &bytes[key_start..value_start],
            &bytes[value_start..pos],
        )
    })
}

/// Moves `pos` past one canonical value.
fn skip(b: &[u8], pos: &mut usize) {
    let (major, arg) = read_head(b, pos);
    match major {
        2 | 3 => *pos += arg as usize,
        4 => (0..arg).for_each(|_| skip(b, pos)),
        5 => (0..arg * 2).for_each(|_| skip(b, pos)),
        _ => {}
    }
}

/// Replaces the reserved head byte at `start` with the head of a container of `count` items.
pub(crate) fn close_container(out: &mut Vec<u8>, start: usize, major: u8, count: usize) {
    if count < 24 {
        out[start] = (major << 5) | count as u8;
    } else {
        let mut h = Vec::with_capacity(9);
        head(&mut h, major, count as u64);
        out.splice(start..start + 1, h);
    }
}
