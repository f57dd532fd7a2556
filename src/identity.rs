//! Identity v1 (FORMAT.md §3): BLAKE3-256 over the canonical CBOR of
//! `{"config", "module", "predicate", "v": 1}`, with the config reduced by the module's schema.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::canonical::encoder::{self, Encoder};
use crate::canonical::{Map, Value};
use crate::error::{Error, Result};

/// The identity algorithm version written into every identity document (`"v"`).
pub const IDENTITY_VERSION: i128 = 1;

/// Shortest prefix accepted wherever a user names a run.
pub const MIN_PREFIX_LEN: usize = 8;

/// A run's identity: 32 bytes of BLAKE3, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity([u8; 32]);

impl Identity {
    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Identity(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64-character lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The identity of a canonical identity document.
    pub fn of_document(document: &Value) -> Self {
        Identity(*blake3::hash(&document.to_cbor()).as_bytes())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({self})")
    }
}

impl FromStr for Identity {
    type Err = Error;

    /// Parses exactly 64 lowercase hex characters.
    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidReference {
            given: s.to_owned(),
            reason,
        };
        if s.len() != 64 {
            return Err(invalid("an identity is 64 hex characters"));
        }
        // One pass: every point lookup by a full identity starts here.
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            let (Some(hi), Some(lo)) = (lower_hex(pair[0]), lower_hex(pair[1])) else {
                return Err(invalid("an identity is lowercase hex"));
            };
            *byte = hi << 4 | lo;
        }
        Ok(Identity(out))
    }
}

/// The value of a lowercase hex digit.
fn lower_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

impl Serialize for Identity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Identity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A validated run reference: a full identity or a lowercase hex prefix of at least
/// [`MIN_PREFIX_LEN`] characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    /// Validates a user-given reference.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidReference {
            given: s.to_owned(),
            reason,
        };
        if s.len() < MIN_PREFIX_LEN {
            return Err(invalid("a prefix needs at least 8 hex characters"));
        }
        if s.len() > 64 {
            return Err(invalid("an identity is 64 hex characters"));
        }
        if !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid("an identity is lowercase hex"));
        }
        Ok(Prefix(s.to_owned()))
    }

    /// True when `id` starts with this prefix.
    pub fn matches(&self, id: &Identity) -> bool {
        id.to_hex().starts_with(&self.0)
    }

    /// The prefix text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A module's schema: defaults dropped from configs, and paths that never identify.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Schema {
    defaults_json: serde_json::Map<String, serde_json::Value>,
    defaults: Map,
    non_identifying: Vec<String>,
    label: Option<String>,
}

/// JSON form of a [`Schema`] (`{"defaults": {..}, "non_identifying": [..]}`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaJson {
    #[serde(default)]
    defaults: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    non_identifying: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label: Option<String>,
}

impl Schema {
    /// The empty schema: no defaults, every field identifying.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A schema from defaults (any `Serialize` value that is a map, e.g. `T::default()`) and
    /// dotted non-identifying paths.
    pub fn new<D: Serialize + ?Sized>(defaults: &D, non_identifying: &[&str]) -> Result<Self> {
        let json = serde_json::to_value(defaults).map_err(|e| Error::InvalidModel {
            reason: format!("schema defaults: {e}"),
        })?;
        let serde_json::Value::Object(defaults_json) = json else {
            return Err(Error::InvalidModel {
                reason: "schema defaults must be a map".into(),
            });
        };
        Self::from_parts(
            defaults_json,
            non_identifying.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn from_parts(
        defaults_json: serde_json::Map<String, serde_json::Value>,
        non_identifying: Vec<String>,
    ) -> Result<Self> {
        for p in &non_identifying {
            if p.split('.').any(str::is_empty) {
                return Err(Error::InvalidModel {
                    reason: format!("non-identifying path {p:?} has an empty segment"),
                });
            }
        }
        let defaults = match Value::from_json_value(
            &serde_json::Value::Object(defaults_json.clone()),
            "schema.defaults",
        )? {
            Value::Map(m) => m,
            _ => unreachable!("an object converts to a map"),
        };
        Ok(Schema {
            defaults_json,
            defaults,
            non_identifying,
            label: None,
        })
    }

    /// The same schema with a label (a version name such as `"v2"`); not identifying.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// The label, if any.
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// The defaults as given (JSON).
    pub fn defaults_json(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.defaults_json
    }

    /// A schema from a type's `Default` value (its serialized fields are the defaults).
    pub fn from_default<T: Serialize + Default>(non_identifying: &[&str]) -> Result<Self> {
        Self::new(&T::default(), non_identifying)
    }

    /// Human-readable reasons why `config` reduces differently under `self` than under
    /// `before` (e.g. "field `epochs` now has default 5"): only changes that touch the config.
    pub fn explain_change(&self, before: &Schema, config: &Value) -> Vec<String> {
        let mut out = Vec::new();
        let Value::Map(cfg) = config else {
            return out;
        };
        let mut paths = Vec::new();
        leaf_paths(cfg, "", &mut paths);
        let old_ni: std::collections::BTreeSet<_> = before.non_identifying.iter().collect();
        let new_ni: std::collections::BTreeSet<_> = self.non_identifying.iter().collect();
        for p in new_ni.difference(&old_ni) {
            if paths
                .iter()
                .any(|(q, _)| q == *p || q.starts_with(&format!("{p}.")))
            {
                out.push(format!("field `{p}` is now non-identifying"));
            }
        }
        for p in old_ni.difference(&new_ni) {
            if paths
                .iter()
                .any(|(q, _)| q == *p || q.starts_with(&format!("{p}.")))
            {
                out.push(format!("field `{p}` is identifying again"));
            }
        }
        for (path, value) in &paths {
            let old = lookup(&before.defaults, path);
            let new = lookup(&self.defaults, path);
            if old != new && (old == Some(value) || new == Some(value)) {
                out.push(match new {
                    Some(d) => format!("field `{path}` now has default {}", d.diagnostic()),
                    None => format!("field `{path}` no longer has a default"),
                });
            }
        }
        out
    }
}

/// Every scalar or list in a map, with its dotted path.
fn leaf_paths<'a>(m: &'a Map, prefix: &str, out: &mut Vec<(String, &'a Value)>) {
    for (k, v) in m.iter() {
        let path = if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Map(inner) if !inner.is_empty() => leaf_paths(inner, &path, out),
            _ => out.push((path, v)),
        }
    }
}

fn lookup<'a>(m: &'a Map, path: &str) -> Option<&'a Value> {
    match path.split_once('.') {
        None => m.get(path),
        Some((head, rest)) => lookup(m.get(head)?.as_map()?, rest),
    }
}

impl Schema {
    /// The canonical defaults.
    pub fn defaults(&self) -> &Map {
        &self.defaults
    }

    /// The non-identifying paths, dotted.
    pub fn non_identifying(&self) -> &[String] {
        &self.non_identifying
    }

    /// True when the schema changes nothing.
    pub fn is_empty(&self) -> bool {
        self.defaults.is_empty() && self.non_identifying.is_empty()
    }

    /// Appends the encoded config `config` (canonical CBOR) reduced by this schema: the
    /// encoding of [`Schema::reduce`] of its value, computed on the bytes (no values are built;
    /// a property test compares the two).
    fn reduce_cbor(&self, config: &[u8], out: &mut Vec<u8>) {
        if !is_map(config) {
            out.extend_from_slice(config);
            return;
        }
        let ni: Vec<&str> = self.non_identifying.iter().map(String::as_str).collect();
        reduce_map(config, &ni, Some(&self.defaults), out, &mut Vec::new());
    }

    /// Reduces a canonical config (identity v1, rule 2). Non-map configs pass unchanged.
    pub fn reduce(&self, config: Value) -> Value {
        let Value::Map(mut m) = config else {
            return config;
        };
        for path in &self.non_identifying {
            remove_path(&mut m, path);
        }
        strip_defaults(&mut m, &self.defaults);
        Value::Map(m)
    }
}

impl Serialize for Schema {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SchemaJson {
            defaults: self.defaults_json.clone(),
            non_identifying: self.non_identifying.clone(),
            label: self.label.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Schema {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let j = SchemaJson::deserialize(d)?;
        let schema =
            Schema::from_parts(j.defaults, j.non_identifying).map_err(serde::de::Error::custom)?;
        Ok(Schema {
            label: j.label,
            ..schema
        })
    }
}

/// Appends the encoded map `m` without the entries at the non-identifying paths `ni` (relative
/// to `m`) and without entries equal to their default in `defaults`; returns how many entries it
/// kept. A nested map with map defaults is reduced the same way and dropped if nothing is left
/// (which is also what happens when it equals its default); other values are dropped when their
/// encoding equals the default's.
fn reduce_map(
    m: &[u8],
    ni: &[&str],
    defaults: Option<&Map>,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> usize {
    let start = out.len();
    out.push(0);
    let mut count = 0;
    let mut child_ni = Vec::new();
    for (k, key, v) in encoder::map_entries(m) {
        child_ni.clear();
        let mut non_identifying = false;
        for p in ni {
            match p.split_once('.') {
                None => non_identifying |= *p == k,
                Some((head, rest)) if head == k => child_ni.push(rest),
                Some(_) => {}
            }
        }
        if non_identifying {
            continue;
        }
        let entry = out.len();
        out.extend_from_slice(key);
        match defaults.and_then(|d| d.get(k)) {
            Some(Value::Map(d)) if is_map(v) => {
                if reduce_map(v, &child_ni, Some(d), out, scratch) == 0 {
                    out.truncate(entry);
                    continue;
                }
            }
            _ if is_map(v) && !child_ni.is_empty() => {
                reduce_map(v, &child_ni, None, out, scratch);
            }
            Some(d) => {
                scratch.clear();
                d.encode_into(scratch);
                if scratch[..] == *v {
                    out.truncate(entry);
                    continue;
                }
                out.extend_from_slice(v);
            }
            None => out.extend_from_slice(v),
        }
        count += 1;
    }
    encoder::close_container(out, start, 5, count);
    count
}

fn remove_path(m: &mut Map, path: &str) {
    match path.split_once('.') {
        None => {
            m.remove(path);
        }
        Some((head, rest)) => {
            if let Some(Value::Map(inner)) = m.get_mut(head) {
                remove_path(inner, rest);
            }
        }
    }
}

fn strip_defaults(m: &mut Map, defaults: &Map) {
    m.retain(|(k, v)| match (defaults.get(k), v) {
        (None, _) => true,
        (Some(d), v) if d == v => false,
        (Some(Value::Map(d)), Value::Map(inner)) => {
            strip_defaults(inner, d);
            !inner.is_empty()
        }
        (Some(_), _) => true,
    });
}

/// A `Serialize` empty map, for "no predicate" or "no config".
#[derive(Clone, Copy, Debug, Default)]
pub struct Empty;

impl Serialize for Empty {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        s.serialize_map(Some(0))?.end()
    }
}

/// The canonical identity document of a module, canonical config and canonical predicate.
///
/// Errors when the module is empty or the predicate is not a map.
pub fn document(module: &str, config: Value, predicate: Value, schema: &Schema) -> Result<Value> {
    check_parts(module.is_empty(), matches!(predicate, Value::Map(_)))?;
    let mut doc = Map::new();
    doc.insert("config".into(), schema.reduce(config));
    doc.insert("module".into(), Value::Text(module.to_owned()));
    doc.insert("predicate".into(), predicate);
    doc.insert("v".into(), Value::Integer(IDENTITY_VERSION));
    Ok(Value::Map(doc))
}

/// The encoded identity document up to the config: `{"v": 1, "config": ` (its keys in canonical
/// order are `v`, `config`, `module`, `predicate`; FORMAT.md §3.3).
const DOC_START: &[u8] = b"\xa4\x61v\x01\x66config";
/// The encoded key `"module"`.
const KEY_MODULE: &[u8] = b"\x66module";
/// The encoded key `"predicate"`.
const KEY_PREDICATE: &[u8] = b"\x69predicate";
/// The encoded empty map, for a missing config or predicate.
const EMPTY_MAP: &[u8] = &[0xa0];

fn check_parts(module_is_empty: bool, predicate_is_map: bool) -> Result<()> {
    if module_is_empty {
        return Err(Error::InvalidModel {
            reason: "module must be a non-empty string".into(),
        });
    }
    if !predicate_is_map {
        return Err(Error::InvalidModel {
            reason: "predicate must be a map".into(),
        });
    }
    Ok(())
}

/// True when canonical bytes encode a map.
fn is_map(cbor: &[u8]) -> bool {
    cbor.first().is_some_and(|b| b >> 5 == 5)
}

/// The identity of `module` with any `Serialize` config and predicate and no schema.
///
/// ```
/// # #[derive(serde::Serialize)] struct Train { lr: f64, epochs: u32 }
/// let id = cairn::identity("train", &Train { lr: 0.1, epochs: 3 }, &cairn::Empty)?;
/// let same = cairn::identity_of_json(br#"{"module": "train", "config": {"epochs": 3.0, "lr": 0.1}}"#)?;
/// assert_eq!(id, same);
/// # Ok::<(), cairn::Error>(())
/// ```
pub fn identity<C, P>(module: &str, config: &C, predicate: &P) -> Result<Identity>
where
    C: Serialize + ?Sized,
    P: Serialize + ?Sized,
{
    identity_with_schema(module, config, predicate, &Schema::empty())
}

/// The identity of `module` with any `Serialize` config and predicate, reduced by `schema`.
pub fn identity_with_schema<C, P>(
    module: &str,
    config: &C,
    predicate: &P,
    schema: &Schema,
) -> Result<Identity>
where
    C: Serialize + ?Sized,
    P: Serialize + ?Sized,
{
    // The document is written in one buffer: the config and the predicate are serialized in
    // place (the config is re-encoded only when a schema reduces it).
    let mut enc = Encoder::new("config", 1);
    enc.out_mut().extend_from_slice(DOC_START);
    let start = enc.bytes().len();
    enc.serialize(config).map_err(|_| enc.error())?;
    if !schema.is_empty() {
        // Reduced after the config in the same buffer, then moved into its place.
        let end = enc.bytes().len();
        let out = enc.out_mut();
        let config = out[start..end].to_vec();
        schema.reduce_cbor(&config, out);
        out.drain(start..end);
    }
    enc.out_mut().extend_from_slice(KEY_MODULE);
    enc.text(module);
    enc.out_mut().extend_from_slice(KEY_PREDICATE);
    let start = enc.bytes().len();
    enc.set_root("predicate", 1);
    enc.serialize(predicate).map_err(|_| enc.error())?;
    check_parts(module.is_empty(), is_map(&enc.bytes()[start..]))?;
    Ok(Identity(*blake3::hash(enc.bytes()).as_bytes()))
}

/// The identity of `module` with a config and a predicate given as canonical CBOR, reduced by
/// `schema`: the document is written and hashed in one buffer (the bytes of [`document`]'s
/// encoding; a property test compares the two).
pub(crate) fn identity_of_parts(
    module: &str,
    config: &[u8],
    predicate: &[u8],
    schema: &Schema,
) -> Result<Identity> {
    check_parts(module.is_empty(), is_map(predicate))?;
    let mut out = Vec::with_capacity(DOC_START.len() + config.len() + predicate.len() + 32);
    out.extend_from_slice(DOC_START);
    if schema.is_empty() {
        out.extend_from_slice(config);
    } else {
        schema.reduce_cbor(config, &mut out);
    }
    out.extend_from_slice(KEY_MODULE);
    Value::Text(module.to_owned()).encode_into(&mut out);
    out.extend_from_slice(KEY_PREDICATE);
    out.extend_from_slice(predicate);
    Ok(Identity(*blake3::hash(&out).as_bytes()))
}

/// An identity request as JSON text, the input of `cairn id`:
/// `{"module": .., "config": .., "predicate": .., "schema": {"defaults": .., "non_identifying": [..]}}`
/// where config, predicate and schema are optional. Other keys are ignored (a `model.json` is a
/// valid request).
pub fn identity_of_json(text: &[u8]) -> Result<Identity> {
    with_document_cbor_of_json(text, |doc| Identity(*blake3::hash(doc).as_bytes()))
}

/// The canonical identity document of an identity request given as JSON text.
pub fn document_of_json(text: &[u8]) -> Result<Value> {
    with_document_cbor_of_json(text, encoder::decode)
}

/// Calls `f` with the encoded identity document of a request. The request is parsed to
/// canonical bytes once; the document is written after them in the same buffer, its config and
/// predicate copied as they are (unless a schema reduces the config).
fn with_document_cbor_of_json<T>(text: &[u8], f: impl FnOnce(&[u8]) -> T) -> Result<T> {
    let mut enc = crate::json::canonical_cbor(text, "$")?;
    let not_object = || Error::InvalidModel {
        reason: "the request must be a JSON object".into(),
    };
    let (mut module, mut config, mut predicate, mut schema) = (None, None, None, None);
    let span = |v: &[u8], all: &[u8]| {
        let start = v.as_ptr() as usize - all.as_ptr() as usize;
        start..start + v.len()
    };
    for (key, v) in enc.root_entries().ok_or_else(not_object)? {
        let slot = match key {
            "module" => &mut module,
            "config" => &mut config,
            "predicate" => &mut predicate,
            "schema" => &mut schema,
            _ => continue,
        };
        *slot = Some(span(v, enc.bytes()));
    }
    let bytes = enc.bytes();
    let module = match module {
        Some(m) if bytes[m.start] >> 5 == 3 => m,
        Some(_) => {
            return Err(Error::InvalidModel {
                reason: "module must be a string".into(),
            });
        }
        None => {
            return Err(Error::InvalidModel {
                reason: "module is missing".into(),
            });
        }
    };
    let schema = match schema {
        None => Schema::empty(),
        Some(v) if is_map(&bytes[v.clone()]) => {
            serde_json::from_value(encoder::decode(&bytes[v]).to_json()).map_err(|e| {
                Error::InvalidModel {
                    reason: format!("schema: {e}"),
                }
            })?
        }
        Some(_) => {
            return Err(Error::InvalidModel {
                reason: "schema must be a map".into(),
            });
        }
    };
    let part = |r: Option<std::ops::Range<usize>>| r.map_or(EMPTY_MAP, |r| &bytes[r]);
    // An empty text is the single byte 0x60.
    check_parts(
        bytes[module.clone()] == [0x60],
        is_map(part(predicate.clone())),
    )?;
    let doc_start = bytes.len();
    let out = enc.out_mut();
    out.extend_from_slice(DOC_START);
    match config {
        Some(c) if !schema.is_empty() => {
            let config = out[c].to_vec();
            schema.reduce_cbor(&config, out);
        }
        Some(c) => out.extend_from_within(c),
        None => out.extend_from_slice(EMPTY_MAP),
    }
    out.extend_from_slice(KEY_MODULE);
    out.extend_from_within(module);
    out.extend_from_slice(KEY_PREDICATE);
    match predicate {
        Some(p) => out.extend_from_within(p),
        None => out.extend_from_slice(EMPTY_MAP),
    }
    Ok(f(&out[doc_start..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_hex_round_trips_and_rejects_uppercase() {
        let id = identity("m", &Empty, &Empty).unwrap();
        assert_eq!(id.to_hex().parse::<Identity>().unwrap(), id);
        assert!(id.to_hex().to_uppercase().parse::<Identity>().is_err());
        assert!(Prefix::parse("abc").is_err());
        assert!(Prefix::parse(&id.to_hex()[..8]).unwrap().matches(&id));
    }

    #[test]
    fn nested_defaults_are_stripped_and_emptied_maps_removed() {
        let schema = Schema::new(
            &serde_json::json!({"opt": {"lr": 0.1, "beta": 0.9}, "epochs": 5}),
            &["log.dir"],
        )
        .unwrap();
        let cfg = Value::from_json_slice(
            br#"{"opt": {"lr": 0.1}, "epochs": 6, "log": {"dir": "/x", "level": 1}}"#,
            "config",
        )
        .unwrap();
        let reduced = schema.reduce(cfg);
        assert_eq!(
            reduced,
            Value::from_json_slice(br#"{"epochs": 6, "log": {"level": 1}}"#, "c").unwrap()
        );
    }

    proptest::proptest! {
        /// The identity hashed from canonical bytes is the identity of the document tree.
        #[test]
        fn identity_of_parts_is_the_documents(
            config in crate::cbor::tests::value(),
            predicate in crate::cbor::tests::value(),
            module in "[a-c.]{0,3}",
            reduce in proptest::prelude::any::<bool>(),
        ) {
            let schema = if reduce {
                Schema::new(&serde_json::json!({"a": 1, "b": {"c": null}}), &["c", "b.a"]).unwrap()
            } else {
                Schema::empty()
            };
            let tree = document(&module, config.clone(), predicate.clone(), &schema)
                .map(|d| Identity::of_document(&d))
                .map_err(|e| e.to_string());
            let bytes = identity_of_parts(&module, &config.to_cbor(), &predicate.to_cbor(), &schema)
                .map_err(|e| e.to_string());
            proptest::prop_assert_eq!(bytes, tree);
        }
    }

    #[test]
    fn predicate_must_be_a_map_and_module_non_empty() {
        assert!(matches!(
            identity("m", &Empty, &[1, 2]),
            Err(Error::InvalidModel { .. })
        ));
        assert!(matches!(
            identity("", &Empty, &Empty),
            Err(Error::InvalidModel { .. })
        ));
    }
}
