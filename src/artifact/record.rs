//! The resource record and its versioned canonical CBOR encoding (FORMAT.md §7.2). The same
//! bytes are stored in the index (`resources` table) and beside the run
//! (`<run>/.cairn-resources/<uuid>.cbor`).

use std::path::Path;

use uuid::Uuid;

use crate::canonical::{Map, Value};
use crate::error::{Error, Result};
use crate::identity::Identity;

/// Version of the record encoding, its `"v"` field.
pub const RECORD_VERSION: u64 = 1;
/// Largest encoded record accepted (names and descriptions are short texts).
pub const RECORD_LIMIT: u64 = 1 << 20;
/// Scheme of a remote record's uri: `cairn-remote://<remote>/<key>`, `<key>` the content key
/// `.cairn-remote/artifacts/<aa>/<sha256>` of the bytes on that remote (FORMAT.md §7.2).
pub const REMOTE_SCHEME: &str = "cairn-remote://";

/// The uri of bytes with this sha256 held on remote `remote`.
pub(crate) fn remote_uri(remote: &str, sha256: &str) -> String {
    format!(
        "{REMOTE_SCHEME}{remote}/{}",
        crate::remote::artifact_key(sha256)
    )
}

/// Where a resource's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// In the index database's `inline_bytes` table; the uri is empty.
    Inline,
    /// A file `<fs_root>/<aa>/<uuid>`; the uri is its `file://` URL.
    Filesystem,
    /// Held only on a remote (the run was evicted); the uri is [`REMOTE_SCHEME`], the remote's
    /// name and the content key of the bytes there. Never a backend for new bytes.
    Remote,
}

impl Backend {
    /// The backend's name in records, configuration and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Inline => "inline",
            Backend::Filesystem => "filesystem",
            Backend::Remote => "remote",
        }
    }

    /// Parses a backend name; unknown names are `None` (never a silent fallback).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "inline" => Some(Backend::Inline),
            "filesystem" => Some(Backend::Filesystem),
            "remote" => Some(Backend::Remote),
            _ => None,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What cairn knows about one resource (an artifact attached to a run).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceRecord {
    /// Random UUID v4 naming the resource.
    pub id: Uuid,
    /// The run it belongs to.
    pub run: Identity,
    /// Name given by the user (not unique within a run).
    pub name: String,
    /// Free text.
    pub description: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last change of bytes or backend.
    pub updated_at: String,
    /// Where the bytes are.
    pub backend: Backend,
    /// `file://` URL of the bytes (filesystem backend), `cairn-remote://` URL (remote), empty
    /// for inline.
    pub uri: String,
    /// Length of the bytes.
    pub size_bytes: u64,
    /// sha256 of the bytes, 64 lowercase hex characters.
    pub content_hash: String,
}

impl ResourceRecord {
    /// The remote holding a remote record's bytes (`None` for other backends).
    pub fn remote_name(&self) -> Option<&str> {
        if self.backend != Backend::Remote {
            return None;
        }
        let rest = self.uri.strip_prefix(REMOTE_SCHEME)?;
        rest.split_once('/').map(|(name, _)| name)
    }

    /// The key of a remote record's bytes on its remote.
    pub(crate) fn remote_key(&self) -> String {
        crate::remote::artifact_key(&self.content_hash)
    }

    /// Canonical CBOR of the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = Map::new();
        m.insert("v".into(), Value::Integer(RECORD_VERSION.into()));
        m.insert("id".into(), Value::Bytes(self.id.as_bytes().to_vec()));
        m.insert("run".into(), Value::Bytes(self.run.as_bytes().to_vec()));
        m.insert("name".into(), Value::Text(self.name.clone()));
        m.insert("description".into(), Value::Text(self.description.clone()));
        m.insert("created_at".into(), Value::Text(self.created_at.clone()));
        m.insert("updated_at".into(), Value::Text(self.updated_at.clone()));
        m.insert("backend".into(), Value::Text(self.backend.as_str().into()));
        m.insert("uri".into(), Value::Text(self.uri.clone()));
        m.insert("size".into(), Value::Integer(self.size_bytes.into()));
        m.insert("sha256".into(), Value::Text(self.content_hash.clone()));
        Value::Map(m).to_cbor()
    }

    /// Decodes a record; `file` names where the bytes came from in errors. Everything is
    /// checked: canonical form, version, every field's type, no unknown fields.
    pub fn decode(bytes: &[u8], file: &Path) -> Result<Self> {
        let bad = |what: &str| Error::format(file, format!("resource record: {what}"));
        if bytes.len() as u64 > RECORD_LIMIT {
            return Err(Error::TooLarge {
                path: file.into(),
                size: bytes.len() as u64,
                limit: RECORD_LIMIT,
            });
        }
        let Value::Map(mut m) =
            Value::from_canonical_cbor(bytes, "record").map_err(|e| bad(&e.to_string()))?
        else {
            return Err(bad("not a map"));
        };
        match m.remove("v") {
            Some(Value::Integer(v)) if v == i128::from(RECORD_VERSION) => {}
            Some(Value::Integer(v)) => {
                return Err(Error::UnsupportedVersion {
                    path: file.into(),
                    found: v.to_string(),
                    expected: RECORD_VERSION,
                });
            }
            _ => return Err(bad("version \"v\" missing or not an integer")),
        }
        let mut bytes_of = |k: &str, len: usize| match m.remove(k) {
            Some(Value::Bytes(b)) if b.len() == len => Ok(b),
            _ => Err(bad(&format!("{k} missing or not {len} bytes"))),
        };
        let id = Uuid::from_slice(&bytes_of("id", 16)?).expect("16 bytes");
        let run = Identity::from_bytes(bytes_of("run", 32)?.try_into().expect("32 bytes"));
        if id.get_version_num() != 4 {
            return Err(bad("id is not a UUID v4"));
        }
        let mut text = |k: &str| match m.remove(k) {
            Some(Value::Text(s)) => Ok(s),
            _ => Err(bad(&format!("{k} missing or not text"))),
        };
        let name = text("name")?;
        let description = text("description")?;
        let created_at = text("created_at")?;
        let updated_at = text("updated_at")?;
        let backend = text("backend")?;
        let uri = text("uri")?;
        let content_hash = text("sha256")?;
        let backend =
            Backend::parse(&backend).ok_or_else(|| bad(&format!("unknown backend {backend:?}")))?;
        let size_bytes = match m.remove("size") {
            Some(Value::Integer(n)) => u64::try_from(n).map_err(|_| bad("size out of range"))?,
            _ => return Err(bad("size missing or not an integer")),
        };
        if let Some((k, _)) = m.iter().next() {
            return Err(bad(&format!("unknown field {k:?}")));
        }
        if !is_sha256_hex(&content_hash) {
            return Err(bad("sha256 is not 64 lowercase hex characters"));
        }
        match backend {
            Backend::Inline if !uri.is_empty() => return Err(bad("inline record with a uri")),
            Backend::Filesystem if !uri.starts_with("file://") => {
                return Err(bad("filesystem record without a file:// uri"));
            }
            Backend::Remote => {
                let name = uri
                    .strip_prefix(REMOTE_SCHEME)
                    .and_then(|rest| rest.split_once('/'))
                    .map(|(name, _)| name)
                    .filter(|name| crate::remote::is_remote_name(name));
                if name.is_none_or(|name| uri != remote_uri(name, &content_hash)) {
                    return Err(bad(&format!(
                        "remote record's uri {uri:?} is not {REMOTE_SCHEME}<remote>/<content key of its sha256>"
                    )));
                }
            }
            _ => {}
        }
        Ok(ResourceRecord {
            id,
            run,
            name,
            description,
            created_at,
            updated_at,
            backend,
            uri,
            size_bytes,
            content_hash,
        })
    }
}

/// True for 64 lowercase hex characters.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// An inline record of `bytes` with a fresh id, for unit tests.
#[cfg(test)]
pub(crate) fn inline_record_for_test(bytes: &[u8]) -> ResourceRecord {
    ResourceRecord {
        id: Uuid::new_v4(),
        run: Identity::from_bytes([3; 32]),
        name: "r".into(),
        description: String::new(),
        created_at: "2026-11-22T08:00:00Z".into(),
        updated_at: "2026-11-22T08:00:00Z".into(),
        backend: Backend::Inline,
        uri: String::new(),
        size_bytes: bytes.len() as u64,
        content_hash: crate::artifact::sha256_hex(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn remote_record(name: String, size: u64, remote: String) -> ResourceRecord {
        let mut rec = record(name, size, false);
        rec.backend = Backend::Remote;
        rec.uri = remote_uri(&remote, &rec.content_hash);
        rec
    }

    fn record(name: String, size: u64, fs: bool) -> ResourceRecord {
        ResourceRecord {
            id: Uuid::from_u128(0x0123_4567_89ab_4def_8123_4567_89ab_cdef),
            run: Identity::from_bytes([3; 32]),
            name,
            description: "d".into(),
            created_at: "2026-11-22T08:00:00Z".into(),
            updated_at: "2026-11-22T09:00:00Z".into(),
            backend: if fs {
                Backend::Filesystem
            } else {
                Backend::Inline
            },
            uri: if fs {
                "file:///a/01/x".into()
            } else {
                String::new()
            },
            size_bytes: size,
            content_hash: "ab".repeat(32),
        }
    }

    proptest! {
        #[test]
        fn records_round_trip(name in ".{0,40}", size: u64, fs: bool) {
            let rec = record(name, size, fs);
            let bytes = rec.encode();
            prop_assert_eq!(ResourceRecord::decode(&bytes, Path::new("r")).unwrap(), rec);
        }

        #[test]
        fn remote_records_round_trip(
            name in ".{0,40}",
            size: u64,
            remote in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}",
        ) {
            let rec = remote_record(name, size, remote.clone());
            let bytes = rec.encode();
            let back = ResourceRecord::decode(&bytes, Path::new("r")).unwrap();
            prop_assert_eq!(back.remote_name(), Some(remote.as_str()));
            prop_assert_eq!(back, rec);
        }
    }

    #[test]
    fn the_remote_record_seeds_are_a_golden_record_and_a_refused_one() {
        let seed = include_bytes!("../../fuzz/seeds/resource_record/record3_remote.cbor");
        let rec = ResourceRecord::decode(seed, Path::new("seed")).unwrap();
        assert_eq!(rec.backend, Backend::Remote);
        assert_eq!(rec.remote_name(), Some("lake"));
        assert_eq!(rec.encode(), seed, "byte for byte");
        let bad = include_bytes!("../../fuzz/seeds/resource_record/record4_remote_wrong_key.cbor");
        assert!(ResourceRecord::decode(bad, Path::new("seed")).is_err());
    }

    #[test]
    fn remote_records_name_a_valid_remote_and_their_own_content_key() {
        let good = remote_record("n".into(), 1, "lake".into());
        assert_eq!(
            good.uri,
            format!(
                "cairn-remote://lake/.cairn-remote/artifacts/ab/{}",
                "ab".repeat(32)
            )
        );
        let refused = |uri: String| {
            let mut rec = good.clone();
            rec.uri = uri;
            let err = ResourceRecord::decode(&rec.encode(), Path::new("x.cbor")).unwrap_err();
            assert!(err.to_string().starts_with("x.cbor: "), "{err}");
            assert!(err.to_string().contains("remote record"), "{err}");
        };
        refused(String::new());
        refused("file:///a/01/x".into());
        refused(good.uri.replace("lake", ".lake"));
        refused(good.uri.replace("lake", ""));
        refused(good.uri.replace("/ab/", "/cd/"));
        refused(format!("{}/../x", good.uri));
        refused(good.uri.replace(&"ab".repeat(32), &"cd".repeat(32)));
    }

    #[test]
    fn unknown_backends_are_refused_by_name_as_an_old_reader_refuses_remote() {
        // Version 1 reserved "remote": a reader that predates it fails on the backend name,
        // which is how `decode` treats any backend it does not know.
        let rec = remote_record("n".into(), 1, "lake".into());
        let bytes = rec.encode().to_vec();
        let Value::Map(mut m) = Value::from_canonical_cbor(&bytes, "r").unwrap() else {
            unreachable!()
        };
        m.insert("backend".into(), Value::Text("tape".into()));
        let err =
            ResourceRecord::decode(&Value::Map(m).to_cbor(), Path::new("x.cbor")).unwrap_err();
        assert!(
            err.to_string().contains("unknown backend \"tape\""),
            "{err}"
        );
    }

    #[test]
    fn unknown_versions_and_fields_are_refused_by_name() {
        let rec = record("n".into(), 1, false);
        let Value::Map(mut m) = Value::from_canonical_cbor(&rec.encode(), "r").unwrap() else {
            unreachable!()
        };
        m.insert("v".into(), Value::Integer(2));
        let err = ResourceRecord::decode(&Value::Map(m.clone()).to_cbor(), Path::new("x.cbor"))
            .unwrap_err();
        assert!(
            matches!(&err, Error::UnsupportedVersion { found, .. } if found == "2"),
            "{err}"
        );
        m.insert("v".into(), Value::Integer(1));
        m.insert("extra".into(), Value::Null);
        let err =
            ResourceRecord::decode(&Value::Map(m).to_cbor(), Path::new("x.cbor")).unwrap_err();
        assert!(err.to_string().starts_with("x.cbor: "), "{err}");
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn inconsistent_backends_and_hashes_are_refused() {
        let mut rec = record("n".into(), 1, false);
        rec.uri = "file:///x".into();
        assert!(ResourceRecord::decode(&rec.encode(), Path::new("r")).is_err());
        let mut rec = record("n".into(), 1, true);
        rec.content_hash = "AB".repeat(32);
        assert!(ResourceRecord::decode(&rec.encode(), Path::new("r")).is_err());
    }
}
