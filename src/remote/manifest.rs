//! The manifest of a run's copy on a remote (FORMAT.md §8.3): which files and artifact bytes
//! make up the copy, with sizes and sha256. Written last and create-if-absent: it is the commit
//! point of a push. Manifests come from remotes, so decoding treats them as untrusted.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::artifact::record::is_sha256_hex;
use crate::error::{Error, Result};
use crate::identity::Identity;

/// Largest manifest read.
pub const MANIFEST_LIMIT: u64 = 64 << 20;
/// Version of the manifest format, its `format` field.
const MANIFEST_VERSION: u64 = 1;

/// A run's copy on a remote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Manifest {
    /// The run.
    pub identity: Identity,
    /// Its location: run files are at `<location>/<path>` on the remote.
    pub location: String,
    /// When the copy was committed (RFC 3339 UTC).
    pub pushed_at: String,
    /// The run directory's files, sorted by path.
    pub files: Vec<ManifestFile>,
    /// The run's artifacts, sorted by id.
    pub artifacts: Vec<ManifestArtifact>,
}

/// One file of a run directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ManifestFile {
    /// Path inside the run directory, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256, 64 lowercase hex.
    pub sha256: String,
}

/// The bytes of one artifact, at `.cairn-remote/artifacts/<aa>/<sha256>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ManifestArtifact {
    /// The resource id.
    pub id: Uuid,
    /// Size in bytes.
    pub size: u64,
    /// sha256, 64 lowercase hex.
    pub sha256: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    format: u64,
    identity: String,
    location: String,
    pushed_at: String,
    files: Vec<ManifestFile>,
    artifacts: Vec<ManifestArtifact>,
}

impl Manifest {
    /// Pretty JSON with a final newline.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            format: MANIFEST_VERSION,
            identity: self.identity.to_hex(),
            location: self.location.clone(),
            pushed_at: self.pushed_at.clone(),
            files: self.files.clone(),
            artifacts: self.artifacts.clone(),
        };
        let mut out = serde_json::to_vec_pretty(&wire).expect("serializable");
        out.push(b'\n');
        out
    }

    /// Decodes and checks a manifest read from `file` (a remote key, for errors): version,
    /// identity, safe relative location and paths, no duplicate paths, sha256 syntax.
    pub fn decode(bytes: &[u8], file: &Path) -> Result<Self> {
        let bad = |what: String| Error::format(file, format!("manifest: {what}"));
        if bytes.len() as u64 > MANIFEST_LIMIT {
            return Err(Error::TooLarge {
                path: file.into(),
                size: bytes.len() as u64,
                limit: MANIFEST_LIMIT,
            });
        }
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if wire.format != MANIFEST_VERSION {
            return Err(Error::UnsupportedVersion {
                path: file.into(),
                found: wire.format.to_string(),
                expected: MANIFEST_VERSION,
            });
        }
        let identity: Identity = wire
            .identity
            .parse()
            .map_err(|e: Error| bad(format!("identity: {e}")))?;
        if !wire.location.is_empty() && !is_safe_relative(&wire.location) {
            return Err(bad(format!("unsafe location {:?}", wire.location)));
        }
        if wire.location.starts_with('.') {
            return Err(bad(format!("location {:?} starts with '.'", wire.location)));
        }
        let mut paths = BTreeSet::new();
        for f in &wire.files {
            if !is_safe_relative(&f.path) {
                return Err(bad(format!("unsafe file path {:?}", f.path)));
            }
            if !paths.insert(f.path.as_str()) {
                return Err(bad(format!("file {:?} listed twice", f.path)));
            }
            if !is_sha256_hex(&f.sha256) {
                return Err(bad(format!(
                    "file {:?}: sha256 is not 64 lowercase hex",
                    f.path
                )));
            }
        }
        if !paths.contains(crate::run::ID_FILE) {
            return Err(bad("no id.json among the files".into()));
        }
        for a in &wire.artifacts {
            if !is_sha256_hex(&a.sha256) {
                return Err(bad(format!(
                    "artifact {}: sha256 is not 64 lowercase hex",
                    a.id
                )));
            }
        }
        Ok(Manifest {
            identity,
            location: wire.location,
            pushed_at: wire.pushed_at,
            files: wire.files,
            artifacts: wire.artifacts,
        })
    }
}

/// A non-empty `/`-separated relative path of normal components only (no `.`, `..`, empty
/// components, backslashes or NUL).
pub(crate) fn is_safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.contains(['\\', '\0'])
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn manifest(path: String, size: u64) -> Manifest {
        Manifest {
            identity: Identity::from_bytes([7; 32]),
            location: "train/07/x".into(),
            pushed_at: "2026-11-22T08:00:00Z".into(),
            files: vec![
                ManifestFile {
                    path: "id.json".into(),
                    size: 10,
                    sha256: "ab".repeat(32),
                },
                ManifestFile {
                    path,
                    size,
                    sha256: "cd".repeat(32),
                },
            ],
            artifacts: vec![ManifestArtifact {
                id: Uuid::new_v4(),
                size,
                sha256: "ef".repeat(32),
            }],
        }
    }

    proptest! {
        #[test]
        fn manifests_round_trip(path in "[a-z]{1,8}(/[a-z0-9.]{1,8}){0,3}", size: u64) {
            prop_assume!(path != "id.json" && is_safe_relative(&path));
            let m = manifest(path, size);
            prop_assert_eq!(Manifest::decode(&m.encode(), Path::new("m")).unwrap(), m);
        }
    }

    #[test]
    fn hostile_manifests_are_refused_by_name() {
        let base = manifest("data/x".into(), 1);
        let mut cases = Vec::new();
        for p in ["../x", "/etc/passwd", "a//b", "a/./b", "", "a\\b"] {
            let mut m = base.clone();
            m.files[1].path = p.into();
            cases.push(m.encode());
        }
        let mut m = base.clone();
        m.files[1].path = "id.json".into();
        cases.push(m.encode());
        let mut m = base.clone();
        m.location = "../up".into();
        cases.push(m.encode());
        let mut m = base.clone();
        m.files[1].sha256 = "AB".repeat(32);
        cases.push(m.encode());
        let text = String::from_utf8(base.encode()).unwrap();
        cases.push(text.replace("\"format\": 1", "\"format\": 2").into_bytes());
        cases.push(
            text.replace("\"format\": 1", "\"format\": 1, \"extra\": 0")
                .into_bytes(),
        );
        for bytes in cases {
            let err = Manifest::decode(&bytes, Path::new("remote:m.json")).unwrap_err();
            assert!(err.to_string().starts_with("remote:m.json"), "{err}");
        }
    }
}
