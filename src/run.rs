//! Run directory format v1 (FORMAT.md §4): `model.json` and the immutable `id.json` header.
//!
//! Parsing is strict and bounded: size limits, nesting limits, duplicate keys refused, an exact
//! `format` version. Unknown top-level fields survive a read and a write.

use std::io::Read;
use std::path::Path;

use serde::de;
use serde_json::{Map as JsonMap, Value as Json};

use crate::canonical::Value;
use crate::error::{Error, Result};
use crate::identity::{self, Identity, Schema};

/// The run directory format version written into `model.json` and `id.json`.
pub const FORMAT_VERSION: u64 = 1;
/// Name of the model file in a run directory.
pub const MODEL_FILE: &str = "model.json";
/// Name of the identity header in a run directory; its presence makes a directory a run.
pub const ID_FILE: &str = "id.json";
/// Largest `id.json` accepted (16 MiB: it carries the config).
pub const ID_FILE_LIMIT: u64 = 16 << 20;
/// Largest `model.json` accepted (64 MiB).
pub const MODEL_FILE_LIMIT: u64 = 64 << 20;

/// What a run is: module, config, predicate and context, as written to `model.json`.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// The module (the code that runs); non-empty.
    pub module: String,
    /// The config, complete and as given (defaults included).
    pub config: Json,
    /// The predicate: what the run is about beyond its config (e.g. a dataset split).
    pub predicate: JsonMap<String, Json>,
    /// Code versions that produced the run (may be empty); not identifying.
    pub version: Vec<String>,
    /// Module names this module inherits from; not identifying.
    pub inherits: Vec<String>,
    /// Free context (host, user notes, ...); not identifying.
    pub context: JsonMap<String, Json>,
    /// The schema in force when the run was materialized.
    pub schema: Schema,
    /// RFC 3339 UTC creation time; set when the run is materialized.
    pub created_at: Option<String>,
    /// Who created the run (`user@host`); set when the run is materialized.
    pub created_by: Option<String>,
    /// Unknown top-level fields, kept so that they survive a read and a write.
    pub extra: JsonMap<String, Json>,
}

impl Model {
    /// A model of `module` with an empty config and predicate.
    pub fn new(module: impl Into<String>) -> Self {
        Model {
            module: module.into(),
            config: Json::Object(JsonMap::new()),
            predicate: JsonMap::new(),
            version: Vec::new(),
            inherits: Vec::new(),
            context: JsonMap::new(),
            schema: Schema::empty(),
            created_at: None,
            created_by: None,
            extra: JsonMap::new(),
        }
    }

    /// Sets the config from any `Serialize` value.
    pub fn with_config<T: serde::Serialize + ?Sized>(mut self, config: &T) -> Result<Self> {
        self.config = to_json(config, "config")?;
        Ok(self)
    }

    /// Sets the predicate from any `Serialize` value that is a map.
    pub fn with_predicate<T: serde::Serialize + ?Sized>(mut self, predicate: &T) -> Result<Self> {
        match to_json(predicate, "predicate")? {
            Json::Object(m) => self.predicate = m,
            _ => {
                return Err(Error::InvalidModel {
                    reason: "predicate must be a map".into(),
                });
            }
        }
        Ok(self)
    }

    /// Sets the schema.
    pub fn with_schema(mut self, schema: Schema) -> Self {
        self.schema = schema;
        self
    }

    /// The canonical identity document (identity v1).
    pub fn document(&self) -> Result<Value> {
        identity::document(
            &self.module,
            Value::from_json_value(&self.config, "config")?,
            Value::from_serialize(&self.predicate, "predicate")?,
            &self.schema,
        )
    }

    /// The run's identity under the model's own schema.
    pub fn identity(&self) -> Result<Identity> {
        // Equal to hashing `document()`, without building it.
        identity::identity_with_schema(&self.module, &self.config, &self.predicate, &self.schema)
    }

    /// `model.json` bytes: pretty JSON, keys sorted, newline-terminated.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut m = self.extra.clone();
        m.insert("format".into(), Json::from(FORMAT_VERSION));
        m.insert("module".into(), Json::String(self.module.clone()));
        m.insert("config".into(), self.config.clone());
        m.insert("predicate".into(), Json::Object(self.predicate.clone()));
        m.insert("version".into(), Json::from(self.version.clone()));
        m.insert("inherits".into(), Json::from(self.inherits.clone()));
        m.insert("context".into(), Json::Object(self.context.clone()));
        m.insert(
            "schema".into(),
            serde_json::to_value(&self.schema).expect("schema to JSON"),
        );
        if let Some(t) = &self.created_at {
            m.insert("created_at".into(), Json::String(t.clone()));
        }
        if let Some(b) = &self.created_by {
            m.insert("created_by".into(), Json::String(b.clone()));
        }
        pretty(&Json::Object(m))
    }

    /// Parses `model.json` bytes; errors name `path`.
    pub fn from_json_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        Self::parse(bytes, path, true)
    }

    /// Parses a model request (the input of `cairn put`): `model.json` fields where `format` may
    /// be absent (if present it must be 1); errors name `source`.
    pub fn from_request_json(bytes: &[u8], source: &Path) -> Result<Self> {
        Self::parse(bytes, source, false)
    }

    fn parse(bytes: &[u8], path: &Path, require_format: bool) -> Result<Self> {
        let mut m = parse_object(bytes, path)?;
        if require_format || m.contains_key("format") {
            check_format(&mut m, path)?;
        }
        let mut model = Model::new(take_string(&mut m, "module", path)?);
        if model.module.is_empty() {
            return Err(Error::format(path, "module must be a non-empty string"));
        }
        if let Some(c) = m.remove("config") {
            model.config = c;
        }
        model.predicate = take_object(&mut m, "predicate", path)?;
        model.version = take_strings(&mut m, "version", path)?;
        model.inherits = take_strings(&mut m, "inherits", path)?;
        model.context = take_object(&mut m, "context", path)?;
        if let Some(s) = m.remove("schema") {
            if !s.is_object() {
                return Err(Error::format(path, "schema must be a map"));
            }
            model.schema = serde_json::from_value(s)
                .map_err(|e| Error::format(path, format!("schema: {e}")))?;
        }
        model.created_at = take_time(&mut m, path)?;
        model.created_by = match m.remove("created_by") {
            None => None,
            Some(Json::String(s)) => Some(s),
            Some(_) => return Err(Error::format(path, "created_by must be a string")),
        };
        model.extra = m;
        Ok(model)
    }

    /// Reads and parses `<dir>/model.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MODEL_FILE);
        Self::from_json_bytes(&read_bounded(&path, MODEL_FILE_LIMIT)?, &path)
    }
}

/// The identity header `id.json`: written once when a run is materialized, never changed in
/// place. The index copies identities from it without recomputing them.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq)]
pub struct IdHeader {
    /// The run's identity.
    pub identity: Identity,
    /// The module, as in `model.json`.
    pub module: String,
    /// The complete config, as in `model.json`, so that the index can search configs from this
    /// file alone.
    pub config: Json,
    /// The predicate, as in `model.json`.
    pub predicate: JsonMap<String, Json>,
    /// RFC 3339 UTC creation time.
    pub created_at: String,
    /// Earlier identities of this run, oldest first, left by `repair --rekey`; lookups by any of
    /// them find the run.
    pub aliases: Vec<Identity>,
    /// Unknown fields, kept.
    pub extra: JsonMap<String, Json>,
}

impl IdHeader {
    /// The header for a model (whose `created_at` must be set) with its identity.
    pub fn for_model(model: &Model, identity: Identity) -> Self {
        IdHeader {
            identity,
            module: model.module.clone(),
            config: model.config.clone(),
            predicate: model.predicate.clone(),
            created_at: model.created_at.clone().unwrap_or_default(),
            aliases: Vec::new(),
            extra: JsonMap::new(),
        }
    }

    /// `id.json` bytes: pretty JSON, keys sorted, newline-terminated.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut m = self.extra.clone();
        m.insert("format".into(), Json::from(FORMAT_VERSION));
        m.insert("identity".into(), Json::String(self.identity.to_hex()));
        m.insert("module".into(), Json::String(self.module.clone()));
        m.insert("config".into(), self.config.clone());
        m.insert("predicate".into(), Json::Object(self.predicate.clone()));
        m.insert("created_at".into(), Json::String(self.created_at.clone()));
        if !self.aliases.is_empty() {
            let aliases = self
                .aliases
                .iter()
                .map(|a| Json::String(a.to_hex()))
                .collect();
            m.insert("aliases".into(), Json::Array(aliases));
        }
        pretty(&Json::Object(m))
    }

    /// Parses `id.json` bytes; errors name `path`.
    pub fn from_json_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let mut m = parse_object(bytes, path)?;
        check_format(&mut m, path)?;
        let identity = take_string(&mut m, "identity", path)?
            .parse()
            .map_err(|e: Error| Error::format(path, format!("identity: {e}")))?;
        let module = take_string(&mut m, "module", path)?;
        if module.is_empty() {
            return Err(Error::format(path, "module must be a non-empty string"));
        }
        let config = m
            .remove("config")
            .ok_or_else(|| Error::format(path, "config is missing"))?;
        let predicate = take_object(&mut m, "predicate", path)?;
        let created_at =
            take_time(&mut m, path)?.ok_or_else(|| Error::format(path, "created_at is missing"))?;
        let aliases = take_strings(&mut m, "aliases", path)?
            .iter()
            .map(|a| {
                a.parse()
                    .map_err(|e: Error| Error::format(path, format!("aliases: {e}")))
            })
            .collect::<Result<Vec<Identity>>>()?;
        Ok(IdHeader {
            identity,
            module,
            config,
            predicate,
            created_at,
            aliases,
            extra: m,
        })
    }

    /// Reads and parses `<dir>/id.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(ID_FILE);
        Self::from_json_bytes(&read_bounded(&path, ID_FILE_LIMIT)?, &path)
    }
}

/// The current time as RFC 3339 UTC with microseconds (`2026-11-22T08:12:22.123456Z`).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// Reads a whole regular file (never through a link), refusing files over `limit` bytes.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let (f, size) = crate::confine::open_regular(path)?;
    read_sized(f, size, path, limit)
}

/// Reads the `size` bytes that `f` (at `path`) had when opened. The files cairn reads are
/// replaced by renames, never written in place, so no end-of-file probe follows; a file cut
/// short meanwhile is an error.
pub(crate) fn read_sized(
    mut f: std::fs::File,
    size: u64,
    path: &Path,
    limit: u64,
) -> Result<Vec<u8>> {
    if size > limit {
        return Err(Error::TooLarge {
            path: path.into(),
            size,
            limit,
        });
    }
    let mut buf = vec![0; size as usize];
    f.read_exact(&mut buf)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(buf)
}

fn to_json<T: serde::Serialize + ?Sized>(v: &T, root: &str) -> Result<Json> {
    serde_json::to_value(v).map_err(|e| Error::Canonical {
        path: root.to_owned(),
        kind: crate::error::CanonicalErrorKind::Decode(e.to_string()),
    })
}

fn pretty(v: &Json) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).expect("JSON value to text");
    out.push(b'\n');
    out
}

/// Strict parse in one pass: the canonical-value rules of FORMAT.md §2 over the whole file
/// (duplicate keys, integer range, finite numbers, depth, the reserved key), then a JSON object.
/// It accepts exactly what [`Value::from_json_slice`] accepts; a refused file is parsed again by
/// that reference, so that the error names the place exactly as it does.
fn parse_object(bytes: &[u8], path: &Path) -> Result<JsonMap<String, Json>> {
    let range = bytes.as_ptr_range();
    let seed = Strict {
        depth: 0,
        input: (range.start as usize, range.end as usize),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = de::DeserializeSeed::deserialize(seed, &mut de).and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(Json::Object(m)) => Ok(m),
        Ok(_) => Err(Error::format(path, "expected a JSON object")),
        Err(e) => match Value::from_json_slice(bytes, "$") {
            Err(reference) => Err(reference.in_file(path)),
            Ok(_) => Err(Error::format(path, format!("invalid JSON: {e}"))),
        },
    }
}

/// One JSON value at nesting `depth` (the file's outermost container is at 0), checked as it is
/// built. Knows the input's address range to tell serde_json's number token (a static string,
/// see [`crate::canonical::NUMBER_TOKEN`]) from a user's key that spells it.
#[derive(Clone, Copy)]
struct Strict {
    depth: usize,
    input: (usize, usize),
}

impl Strict {
    fn inner<E: de::Error>(self) -> std::result::Result<Self, E> {
        if self.depth >= crate::canonical::MAX_DEPTH {
            return Err(E::custom("too deep"));
        }
        Ok(Strict {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> de::DeserializeSeed<'de> for Strict {
    type Value = Json;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<Json, D::Error> {
        d.deserialize_any(self)
    }
}

/// A map key, or serde_json announcing that a number literal follows.
enum Key {
    Text(String),
    NumberToken,
}

impl<'de> de::DeserializeSeed<'de> for StrictKey {
    type Value = Key;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

#[derive(Clone, Copy)]
struct StrictKey {
    input: (usize, usize),
}

impl<'de> de::Visitor<'de> for StrictKey {
    type Value = Key;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map key")
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> std::result::Result<Key, E> {
        let at = s.as_ptr() as usize;
        if s == crate::canonical::NUMBER_TOKEN && !(self.input.0..self.input.1).contains(&at) {
            Ok(Key::NumberToken)
        } else {
            self.visit_str(s)
        }
    }
    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Key, E> {
        if s == crate::canonical::NUMBER_TOKEN {
            return Err(E::custom("reserved key"));
        }
        Ok(Key::Text(s.to_owned()))
    }
}

impl<'de> de::Visitor<'de> for Strict {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> std::result::Result<Json, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> std::result::Result<Json, E> {
        Ok(Json::Number(i.into()))
    }
    fn visit_u64<E>(self, i: u64) -> std::result::Result<Json, E> {
        Ok(Json::Number(i.into()))
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> std::result::Result<Json, E> {
        serde_json::Number::from_f64(f)
            .map(Json::Number)
            .ok_or_else(|| E::custom("not finite"))
    }
    fn visit_str<E>(self, s: &str) -> std::result::Result<Json, E> {
        Ok(Json::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> std::result::Result<Json, E> {
        Ok(Json::String(s))
    }
    fn visit_unit<E>(self) -> std::result::Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Json, A::Error> {
        let inner = self.inner()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Json, A::Error> {
        let key_seed = StrictKey { input: self.input };
        let inner = self.inner()?;
        let mut out = JsonMap::new();
        let mut first = true;
        while let Some(key) = map.next_key_seed(key_seed)? {
            match key {
                Key::NumberToken if first => {
                    let lit: String = map.next_value()?;
                    crate::json::number(&lit).map_err(de::Error::custom)?;
                    return lit.parse().map(Json::Number).map_err(de::Error::custom);
                }
                Key::NumberToken => return Err(de::Error::custom("misplaced number token")),
                Key::Text(k) => {
                    let v = map.next_value_seed(inner)?;
                    if out.insert(k, v).is_some() {
                        return Err(de::Error::custom("duplicate key"));
                    }
                }
            }
            first = false;
        }
        Ok(Json::Object(out))
    }
}

fn check_format(m: &mut JsonMap<String, Json>, path: &Path) -> Result<()> {
    match m.remove("format") {
        None => Err(Error::format(path, "format is missing")),
        Some(Json::Number(n)) if n.as_str() == "1" => Ok(()),
        Some(other) => Err(Error::UnsupportedVersion {
            path: path.into(),
            found: other.to_string(),
            expected: FORMAT_VERSION,
        }),
    }
}

fn take_string(m: &mut JsonMap<String, Json>, key: &str, path: &Path) -> Result<String> {
    match m.remove(key) {
        Some(Json::String(s)) => Ok(s),
        Some(_) => Err(Error::format(path, format!("{key} must be a string"))),
        None => Err(Error::format(path, format!("{key} is missing"))),
    }
}

fn take_object(
    m: &mut JsonMap<String, Json>,
    key: &str,
    path: &Path,
) -> Result<JsonMap<String, Json>> {
    match m.remove(key) {
        None => Ok(JsonMap::new()),
        Some(Json::Object(o)) => Ok(o),
        Some(_) => Err(Error::format(path, format!("{key} must be a map"))),
    }
}

fn take_strings(m: &mut JsonMap<String, Json>, key: &str, path: &Path) -> Result<Vec<String>> {
    match m.remove(key) {
        None => Ok(Vec::new()),
        Some(Json::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                Json::String(s) => Ok(s),
                _ => Err(Error::format(
                    path,
                    format!("{key} must be a list of strings"),
                )),
            })
            .collect(),
        Some(_) => Err(Error::format(
            path,
            format!("{key} must be a list of strings"),
        )),
    }
}

fn take_time(m: &mut JsonMap<String, Json>, path: &Path) -> Result<Option<String>> {
    match m.remove("created_at") {
        None => Ok(None),
        Some(Json::String(s)) => {
            humantime::parse_rfc3339(&s).map_err(|e| {
                Error::format(path, format!("created_at {s:?} is not RFC 3339 UTC: {e}"))
            })?;
            Ok(Some(s))
        }
        Some(_) => Err(Error::format(path, "created_at must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The two-pass parse `parse_object` replaces: the reference it must agree with.
    fn two_pass(bytes: &[u8], path: &Path) -> Result<JsonMap<String, Json>> {
        Value::from_json_slice(bytes, "$").map_err(|e| e.in_file(path))?;
        match serde_json::from_slice(bytes) {
            Ok(Json::Object(m)) => Ok(m),
            Ok(_) => Err(Error::format(path, "expected a JSON object")),
            Err(e) => Err(Error::format(path, format!("invalid JSON: {e}"))),
        }
    }

    fn agree(text: &[u8]) -> std::result::Result<(), TestCaseError> {
        let one = parse_object(text, p()).map_err(|e| e.to_string());
        let two = two_pass(text, p()).map_err(|e| e.to_string());
        prop_assert_eq!(one, two, "{}", String::from_utf8_lossy(text));
        Ok(())
    }

    #[test]
    fn one_pass_parse_agrees_on_edge_cases() {
        let deep = |n: usize| format!("{{\"a\": {}1{}}}", "[".repeat(n), "]".repeat(n));
        let cases = [
            r#"{"a": 1, "a": 2}"#.to_owned(),
            r#"{"a": {"b": [1, {"c": 1, "c": 1}]}}"#.into(),
            r#"{"$serde_json::private::Number": "1"}"#.into(),
            r#"{"x": {"$serde_json::private::Number": "1"}}"#.into(),
            r#"{"\u0024serde_json::private::Number": 1}"#.into(),
            r#"{"n": 18446744073709551615, "m": -18446744073709551616}"#.into(),
            r#"{"n": 18446744073709551616}"#.into(),
            r#"{"n": -18446744073709551617}"#.into(),
            r#"{"n": 1e400}"#.into(),
            r#"{"n": 1.0, "m": 1e0, "k": -0.0}"#.into(),
            "[1]".into(),
            "{} x".into(),
            "{".into(),
            deep(125),
            deep(126),
            deep(127),
            deep(200),
            format!("{{\"a\": {}{{}}{}}}", "[".repeat(126), "]".repeat(126)),
        ];
        for c in cases {
            agree(c.as_bytes()).unwrap();
        }
    }

    proptest! {
        /// On generated documents and every one-byte change of them, the one-pass parse accepts
        /// what the two-pass parse accepts, with the same result or the same error.
        #[test]
        fn one_pass_parse_agrees_with_two_pass(
            v in crate::cbor::tests::value(),
            at in any::<usize>(),
            byte in prop_oneof![Just(b'"'), Just(b','), Just(b'{'), Just(b'}'), Just(b'1'), any::<u8>()],
        ) {
            let text = serde_json::to_vec(&serde_json::json!({"x": v.to_json(), "y": 1})).unwrap();
            agree(&text)?;
            let mut changed = text.clone();
            changed[at % text.len()] = byte;
            agree(&changed)?;
        }
    }

    fn p() -> &'static Path {
        Path::new("run/id.json")
    }

    #[test]
    fn id_header_round_trips_and_keeps_unknown_fields() {
        let text = br#"{"format": 1, "identity": "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            "module": "m", "config": {"lr": 0.5}, "predicate": {"split": "val"}, "created_at": "2026-11-22T08:00:00Z", "future": [1]}"#;
        let h = IdHeader::from_json_bytes(text, p()).unwrap();
        assert_eq!(h.extra.get("future"), Some(&serde_json::json!([1])));
        let again = IdHeader::from_json_bytes(&h.to_json_bytes(), p()).unwrap();
        assert_eq!(again, h);
    }

    #[test]
    fn wrong_versions_and_bad_fields_name_the_file() {
        let e = IdHeader::from_json_bytes(br#"{"format": 2}"#, p()).unwrap_err();
        assert!(matches!(e, Error::UnsupportedVersion { ref found, .. } if found == "2"));
        assert!(
            e.to_string()
                .starts_with("run/id.json: unsupported format version 2")
        );
        let e = IdHeader::from_json_bytes(br#"{"format": 1, "format": 1}"#, p()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "run/id.json: $: duplicate map key \"format\""
        );
        let e = IdHeader::from_json_bytes(br#"{"format": 1, "identity": "xyz"}"#, p()).unwrap_err();
        assert!(e.to_string().contains("identity"), "{e}");
        let e = Model::from_json_bytes(br#"{"format": 1, "module": ""}"#, p()).unwrap_err();
        assert!(e.to_string().contains("non-empty"), "{e}");
    }

    #[test]
    fn oversized_files_are_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ID_FILE);
        std::fs::write(&path, vec![b' '; (ID_FILE_LIMIT + 1) as usize]).unwrap();
        assert!(matches!(
            IdHeader::read(dir.path()),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn model_round_trips_with_extra_fields() {
        let text = br#"{"format": 1, "module": "train", "config": {"lr": 1e0}, "note": {"x": 1},
            "created_at": "2026-11-22T08:00:00.5Z", "created_by": "me@host"}"#;
        let m = Model::from_json_bytes(text, p()).unwrap();
        assert_eq!(m.extra.get("note"), Some(&serde_json::json!({"x": 1})));
        let again = Model::from_json_bytes(&m.to_json_bytes(), p()).unwrap();
        assert_eq!(again, m);
        assert!(
            String::from_utf8(m.to_json_bytes())
                .unwrap()
                .contains("\"lr\": 1e+0")
        );
    }
}
