//! Remote configuration: `.cairn/remotes.json` (FORMAT.md §8.1) and builder-given remotes.
//! Credentials are never part of it: they come from the environment (or, embedded, from the
//! builder) and are never written to disk.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{DirRemote, Remote, S3Remote};
use crate::durable;
use crate::error::{Error, Result};
use crate::store::{META_DIR, Store, StoreBuilder};

/// File name of the remote configuration under `<root>/.cairn/`.
pub const REMOTES_FILE: &str = "remotes.json";
/// Largest configuration file read.
const CONFIG_LIMIT: u64 = 1 << 20;

/// How a remote is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
#[non_exhaustive]
pub enum RemoteSpec {
    /// A directory (an NFS or cluster file system mount).
    Dir {
        /// Absolute path of the directory.
        path: PathBuf,
    },
    /// An S3-compatible bucket.
    S3(S3Spec),
}

/// An S3-compatible bucket. Endpoint and region fall back to `AWS_ENDPOINT_URL` and
/// `AWS_REGION`; credentials come from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct S3Spec {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (empty: the bucket's root).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Endpoint URL (`http://127.0.0.1:8333`); `http://` is allowed only when given here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region (default `AWS_REGION`, else `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Static credentials handed in by an embedding program; never serialized.
    #[serde(skip)]
    pub(crate) credentials: Option<(String, String)>,
}

impl S3Spec {
    /// A bucket, with endpoint, region and credentials from the environment.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Spec {
            bucket: bucket.into(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            credentials: None,
        }
    }

    /// Keys go under `prefix/` inside the bucket.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The endpoint URL.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Static credentials instead of the environment's; kept in memory only, never written.
    pub fn credentials(mut self, access_key_id: &str, secret_access_key: &str) -> Self {
        self.credentials = Some((access_key_id.into(), secret_access_key.into()));
        self
    }
}

/// The configuration file: `{"format": 1, "remotes": {name: spec}}`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    format: u64,
    remotes: BTreeMap<String, RemoteSpec>,
}

/// Remote settings of a store: builder-given remotes, on-demand fetching, opened remotes.
#[derive(Debug)]
pub(crate) struct RemoteOptions {
    pub(crate) given: BTreeMap<String, RemoteSpec>,
    pub(crate) fetch_on_demand: bool,
    opened: Mutex<HashMap<String, Arc<dyn Remote>>>,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            given: BTreeMap::new(),
            fetch_on_demand: true,
            opened: Mutex::new(HashMap::new()),
        }
    }
}

impl Clone for RemoteOptions {
    fn clone(&self) -> Self {
        RemoteOptions {
            given: self.given.clone(),
            fetch_on_demand: self.fetch_on_demand,
            opened: Mutex::new(HashMap::new()),
        }
    }
}

impl RemoteOptions {
    /// The remote `name`, opened on first use.
    pub(crate) fn open(&self, root: &Path, name: &str) -> Result<Arc<dyn Remote>> {
        if let Some(r) = self.opened.lock().expect("remotes lock").get(name) {
            return Ok(r.clone());
        }
        let spec = match self.given.get(name) {
            Some(spec) => spec.clone(),
            None => read_config(root)?
                .remotes
                .remove(name)
                .ok_or_else(|| Error::UnknownRemote { name: name.into() })?,
        };
        let remote = open_spec(name, &spec)?;
        self.opened
            .lock()
            .expect("remotes lock")
            .insert(name.into(), remote.clone());
        Ok(remote)
    }
}

/// Opens a remote from its spec (probing an S3 remote's conditional writes).
pub(crate) fn open_spec(name: &str, spec: &RemoteSpec) -> Result<Arc<dyn Remote>> {
    Ok(match spec {
        RemoteSpec::Dir { path } => Arc::new(DirRemote::open(name, path)?),
        RemoteSpec::S3(s3) => Arc::new(S3Remote::open(name, s3)?),
    })
}

/// True for a valid remote name: 1 to 64 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub(crate) fn is_remote_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Checks a remote name ([`is_remote_name`]).
fn check_name(name: &str, origin: &str) -> Result<()> {
    if is_remote_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            origin: origin.into(),
            reason: format!(
                "remote name {name:?} must be 1 to 64 of A-Z a-z 0-9 _ . - (not starting with . or -)"
            ),
        })
    }
}

fn check_spec(spec: &RemoteSpec, origin: &str) -> Result<()> {
    let bad = |reason: String| Error::InvalidConfig {
        origin: origin.into(),
        reason,
    };
    match spec {
        RemoteSpec::Dir { path } if !path.is_absolute() => Err(bad(format!(
            "dir remote path {} is not absolute",
            path.display()
        ))),
        RemoteSpec::S3(s) if s.bucket.is_empty() => Err(bad("s3 remote without a bucket".into())),
        _ => Ok(()),
    }
}

/// Parses the configuration file's bytes; `file` names it in errors.
pub(crate) fn parse_config(bytes: &[u8], file: &Path) -> Result<BTreeMap<String, RemoteSpec>> {
    let origin = file.display().to_string();
    let cfg: ConfigFile =
        serde_json::from_slice(bytes).map_err(|e| Error::format(file, e.to_string()))?;
    if cfg.format != 1 {
        return Err(Error::UnsupportedVersion {
            path: file.into(),
            found: cfg.format.to_string(),
            expected: 1,
        });
    }
    for (name, spec) in &cfg.remotes {
        check_name(name, &origin)?;
        check_spec(spec, &origin)?;
    }
    Ok(cfg.remotes)
}

fn config_path(root: &Path) -> PathBuf {
    root.join(META_DIR).join(REMOTES_FILE)
}

fn read_config(root: &Path) -> Result<ConfigFile> {
    let path = config_path(root);
    let bytes = match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(e) => return Err(Error::io("stat", &path, e)),
        Ok(m) if m.len() > CONFIG_LIMIT => {
            return Err(Error::TooLarge {
                path,
                size: m.len(),
                limit: CONFIG_LIMIT,
            });
        }
        Ok(_) => std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?,
    };
    Ok(ConfigFile {
        format: 1,
        remotes: parse_config(&bytes, &path)?,
    })
}

fn write_config(root: &Path, cfg: &ConfigFile) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(cfg).expect("serializable");
    bytes.push(b'\n');
    durable::replace_file(&config_path(root), &bytes)
}

impl Store {
    /// Adds remote `name` to `.cairn/remotes.json` after opening it (an S3 remote must answer
    /// and honor conditional writes). An existing name is refused.
    pub fn add_remote(&self, name: &str, spec: RemoteSpec) -> Result<()> {
        let path = config_path(self.root());
        let origin = path.display().to_string();
        check_name(name, &origin)?;
        check_spec(&spec, &origin)?;
        let mut cfg = read_config(self.root())?;
        if cfg.remotes.contains_key(name) || self.remotes.given.contains_key(name) {
            return Err(Error::InvalidConfig {
                origin,
                reason: format!("remote {name:?} already exists"),
            });
        }
        open_spec(name, &spec)?;
        cfg.format = 1;
        cfg.remotes.insert(name.into(), spec);
        write_config(self.root(), &cfg)
    }

    /// Removes remote `name` from `.cairn/remotes.json`; returns false when it was not there.
    /// The index forgets its copies, and this handle forgets the remote if it had opened it.
    pub fn remove_remote(&self, name: &str) -> Result<bool> {
        let mut cfg = read_config(self.root())?;
        if cfg.remotes.remove(name).is_none() {
            return Ok(false);
        }
        cfg.format = 1;
        write_config(self.root(), &cfg)?;
        self.remotes
            .opened
            .lock()
            .expect("remotes lock")
            .remove(name);
        super::copies::forget_remote(self.index()?, name)?;
        Ok(true)
    }

    /// Every configured remote: builder-given ones, then those of `.cairn/remotes.json`.
    pub fn remotes(&self) -> Result<Vec<(String, RemoteSpec)>> {
        let mut all: Vec<_> = self
            .remotes
            .given
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        for (n, s) in read_config(self.root())?.remotes {
            if !self.remotes.given.contains_key(&n) {
                all.push((n, s));
            }
        }
        Ok(all)
    }
}

impl StoreBuilder {
    /// Adds remote `name` for this store handle (not written to the configuration file).
    pub fn remote(mut self, name: impl Into<String>, spec: RemoteSpec) -> Self {
        self.remotes.given.insert(name.into(), spec);
        self
    }

    /// Whether reading an evicted or remote run's artifact fetches the run (default on).
    pub fn fetch_on_demand(mut self, on: bool) -> Self {
        self.remotes.fetch_on_demand = on;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_round_trip_and_bad_ones_are_refused_by_file() {
        let f = Path::new("/r/.cairn/remotes.json");
        let good = br#"{"format":1,"remotes":{"nfs":{"type":"dir","path":"/mnt/x"},
            "s3":{"type":"s3","bucket":"b","prefix":"p","endpoint":"http://127.0.0.1:1"}}}"#;
        let m = parse_config(good, f).unwrap();
        assert_eq!(
            m["nfs"],
            RemoteSpec::Dir {
                path: "/mnt/x".into()
            }
        );
        assert_eq!(
            m["s3"],
            RemoteSpec::S3(S3Spec::new("b").prefix("p").endpoint("http://127.0.0.1:1"))
        );
        for bad in [
            &br#"{"format":2,"remotes":{}}"#[..],
            br#"{"format":1,"remotes":{"x":{"type":"dir","path":"rel"}}}"#,
            br#"{"format":1,"remotes":{".x":{"type":"dir","path":"/a"}}}"#,
            br#"{"format":1,"remotes":{"x":{"type":"ftp"}}}"#,
            br#"{"format":1,"remotes":{"x":{"type":"s3","bucket":"b","secret":"k"}}}"#,
            br#"{"format":1,"remotes":{},"remotes":{}}"#,
            b"not json",
        ] {
            let err = parse_config(bad, f).unwrap_err();
            assert!(err.to_string().contains("remotes.json"), "{err}");
        }
    }

    #[test]
    fn credentials_are_never_serialized() {
        let spec = RemoteSpec::S3(S3Spec::new("b").credentials("AKIA", "SECRET"));
        let text = serde_json::to_string(&spec).unwrap();
        assert!(!text.contains("SECRET") && !text.contains("AKIA"), "{text}");
    }
}
