//! The store: a root directory of runs, and materializing runs into it.

use std::fs;
use std::path::{Path, PathBuf};

use crate::durable::{self, failpoint};
use crate::error::{Error, Result};
use crate::identity::{Identity, Prefix};
use crate::run::{ID_FILE, IdHeader, MODEL_FILE, Model};
use crate::walk;

/// Name of the store's metadata directory under the root.
pub const META_DIR: &str = ".cairn";
/// Staging area for runs under construction, on the same file system as the root.
const TMP_DIR: &str = "tmp";
/// Staging directories older than this are leftovers of a crash (a live creation takes
/// milliseconds) and are removed when a store is opened.
const STAGING_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);
/// Longest encoded module directory name accepted by the default placement.
const MAX_MODULE_DIR: usize = 200;

/// Options for opening a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreBuilder {
    root: PathBuf,
    created_by: Option<String>,
}

impl StoreBuilder {
    /// Who is recorded as `created_by` in new runs (default `$USER@hostname`).
    pub fn created_by(mut self, who: impl Into<String>) -> Self {
        self.created_by = Some(who.into());
        self
    }

    /// Opens the store, creating the root and `<root>/.cairn/` on first use.
    pub fn open(self) -> Result<Store> {
        durable::create_dir_all(&self.root)?;
        let root = fs::canonicalize(&self.root).map_err(|e| Error::io("resolve", &self.root, e))?;
        let staging = root.join(META_DIR).join(TMP_DIR);
        durable::create_dir_all(&staging)?;
        sweep_staging(&staging, STAGING_MAX_AGE);
        Ok(Store {
            root,
            created_by: self.created_by.unwrap_or_else(default_creator),
        })
    }
}

/// A store of runs under one root directory.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let store = cairn::Store::open(dir.path())?;
/// let model = cairn::Model::new("train").with_config(&serde_json::json!({"lr": 0.1}))?;
/// let run = store.get_or_create(&model)?;
/// assert!(run.path().join("id.json").is_file());
/// assert_eq!(store.get_or_create(&model)?.identity(), run.identity());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    created_by: String,
}

impl Store {
    /// Opens the store at `root` with default options.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        Self::builder(root).open()
    }

    /// A builder for opening the store at `root`.
    pub fn builder(root: impl AsRef<Path>) -> StoreBuilder {
        StoreBuilder {
            root: root.as_ref().to_path_buf(),
            created_by: None,
        }
    }

    /// The root directory (absolute, symlinks resolved).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a new run of `module` with `identity` is placed, relative to the root:
    /// `<module-dir>/<first two hex>/<identity>` (FORMAT.md §4.4). Nothing depends on it: runs may
    /// be moved anywhere under the root.
    pub fn placement(module: &str, identity: &Identity) -> Result<PathBuf> {
        let hex = identity.to_hex();
        Ok(PathBuf::from(module_dir(module)?).join(&hex[..2]).join(hex))
    }

    /// Returns the run of `model`, materializing it if it does not exist yet.
    ///
    /// The directory is built under `.cairn/tmp/`, its files and itself fsynced, then renamed into
    /// place and the parent fsynced: a run directory under its final name is always complete.
    /// When two processes race on one identity, exactly one directory results and both return it.
    pub fn get_or_create(&self, model: &Model) -> Result<Run> {
        let identity = model.identity()?;
        let location = Self::placement(&model.module, &identity)?;
        let dest = self.root.join(&location);
        if let Some(run) = self.load(&location, Some(identity))? {
            return Ok(run);
        }

        let mut model = model.clone();
        model.created_at.get_or_insert_with(crate::run::now_rfc3339);
        model
            .created_by
            .get_or_insert_with(|| self.created_by.clone());
        let header = IdHeader::for_model(&model, identity);

        let staging = self.root.join(META_DIR).join(TMP_DIR).join(format!(
            "{}.{}",
            identity,
            uuid::Uuid::new_v4().simple()
        ));
        let staged = self.stage(&staging, &model, &header, &dest);
        match staged {
            Ok(()) => {
                let parent = dest.parent().expect("placement has a parent");
                durable::sync_dir(parent)?;
                failpoint("run.after_rename")?;
                Ok(Run {
                    identity,
                    location,
                    path: dest,
                    header,
                    created: true,
                })
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                // Lost a race: another process renamed the same identity into place first.
                match self.load(&location, Some(identity))? {
                    Some(run) => Ok(run),
                    None => Err(e),
                }
            }
        }
    }

    fn stage(&self, staging: &Path, model: &Model, header: &IdHeader, dest: &Path) -> Result<()> {
        fs::create_dir(staging).map_err(|e| Error::io("create directory", staging, e))?;
        durable::write_new(&staging.join(MODEL_FILE), &model.to_json_bytes())?;
        failpoint("run.after_model")?;
        durable::write_new(&staging.join(ID_FILE), &header.to_json_bytes())?;
        durable::sync_dir(staging)?;
        failpoint("run.before_rename")?;
        durable::create_dir_all(dest.parent().expect("placement has a parent"))?;
        fs::rename(staging, dest).map_err(|e| Error::io("rename", dest, e))
    }

    /// The run at `location` (relative to the root), if there is one. With `expected`, a header
    /// naming another identity is an error.
    pub fn load(&self, location: &Path, expected: Option<Identity>) -> Result<Option<Run>> {
        check_relative(location)?;
        let path = self.root.join(location);
        match fs::symlink_metadata(path.join(ID_FILE)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("stat", path.join(ID_FILE), e)),
            Ok(m) if !m.is_file() => {
                return Err(Error::UnsafePath {
                    path: path.join(ID_FILE),
                    reason: "id.json is not a regular file".into(),
                });
            }
            Ok(_) => {}
        }
        let header = IdHeader::read(&path)?;
        if let Some(want) = expected.filter(|want| *want != header.identity) {
            return Err(Error::format(
                path.join(ID_FILE),
                format!(
                    "holds identity {} where {want} was expected",
                    header.identity
                ),
            ));
        }
        Ok(Some(Run {
            identity: header.identity,
            location: location.to_path_buf(),
            path,
            header,
            created: false,
        }))
    }

    /// Every run under the root, found by walking the directories; unreadable ones are
    /// returned as errors beside the rest.
    pub fn scan(&self) -> (Vec<Run>, Vec<Error>) {
        let walk = walk::find_runs(&self.root);
        let runs = walk
            .runs
            .into_iter()
            .filter_map(|found| {
                let header = found.header?;
                Some(Run {
                    identity: header.identity,
                    path: self.root.join(&found.location),
                    location: PathBuf::from(found.location),
                    header,
                    created: false,
                })
            })
            .collect();
        (runs, walk.errors)
    }

    /// The run named by a full identity or a unique prefix of at least 8 hex characters.
    pub fn resolve(&self, reference: &str) -> Result<Option<Run>> {
        let prefix = Prefix::parse(reference)?;
        let (runs, _) = self.scan();
        let mut matching: Vec<Run> = runs
            .into_iter()
            .filter(|r| prefix.matches(&r.identity))
            .collect();
        matching.sort_by_key(|r| r.identity);
        matching.dedup_by_key(|r| r.identity);
        match matching.len() {
            0 => Ok(None),
            1 => Ok(matching.pop()),
            n => Err(Error::AmbiguousPrefix {
                prefix: reference.to_owned(),
                matches: n,
            }),
        }
    }
}

/// A materialized run.
#[derive(Debug, Clone)]
pub struct Run {
    identity: Identity,
    location: PathBuf,
    path: PathBuf,
    header: IdHeader,
    created: bool,
}

impl Run {
    /// The run's identity.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The run directory relative to the store root.
    pub fn location(&self) -> &Path {
        &self.location
    }

    /// The run directory, absolute.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the run's data files go: the run directory itself, beside `id.json`.
    pub fn data_dir(&self) -> &Path {
        &self.path
    }

    /// The identity header.
    pub fn header(&self) -> &IdHeader {
        &self.header
    }

    /// Reads the run's `model.json`.
    pub fn model(&self) -> Result<Model> {
        Model::read(&self.path)
    }

    /// True when this call materialized the run, false when it already existed.
    pub fn was_created(&self) -> bool {
        self.created
    }
}

/// The module as one safe directory name: bytes outside `[A-Za-z0-9_.-]` and a leading `.` are
/// percent-encoded (uppercase hex), so no module can name `..`, `.cairn` or a nested path.
fn module_dir(module: &str) -> Result<String> {
    let mut out = String::with_capacity(module.len());
    for (i, b) in module.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() || out.len() > MAX_MODULE_DIR {
        return Err(Error::InvalidModel {
            reason: format!(
                "module {module:?} encodes to a directory name of {} bytes (1 ..= {MAX_MODULE_DIR})",
                out.len()
            ),
        });
    }
    Ok(out)
}

/// Removes crash leftovers from the staging area; best effort, never fails the caller.
fn sweep_staging(staging: &Path, max_age: std::time::Duration) {
    let Ok(entries) = fs::read_dir(staging) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > max_age);
        if old {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Refuses locations that could leave the root.
fn check_relative(location: &Path) -> Result<()> {
    use std::path::Component;
    if location
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        Ok(())
    } else {
        Err(Error::UnsafePath {
            path: location.to_path_buf(),
            reason: "a run location is relative to the root, without `..`".into(),
        })
    }
}

fn default_creator() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_dirs_are_single_safe_components() {
        assert_eq!(module_dir("pkg.train").unwrap(), "pkg.train");
        assert_eq!(module_dir("..").unwrap(), "%2E.");
        assert_eq!(module_dir(".cairn").unwrap(), "%2Ecairn");
        assert_eq!(module_dir("a/b c").unwrap(), "a%2Fb%20c");
        assert_eq!(module_dir("é").unwrap(), "%C3%A9");
        assert!(module_dir(&"x".repeat(201)).is_err());
    }

    #[test]
    fn stale_staging_directories_are_swept_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join(META_DIR).join(TMP_DIR);
        fs::create_dir_all(staging.join("stale/inner")).unwrap();
        fs::create_dir_all(staging.join("fresh")).unwrap();
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        fs::File::open(staging.join("stale"))
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        Store::open(dir.path()).unwrap();
        assert!(!staging.join("stale").exists());
        assert!(staging.join("fresh").exists());
    }

    #[test]
    fn locations_with_parent_components_are_refused() {
        assert!(check_relative(Path::new("a/../../etc")).is_err());
        assert!(check_relative(Path::new("/etc")).is_err());
        assert!(check_relative(Path::new("a/b")).is_ok());
    }
}
