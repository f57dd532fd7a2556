//! Artifact configuration: backend and filesystem root from builder methods, the process
//! environment or a `.env` file (FORMAT.md §7.1). The process environment is only read, never
//! changed.

use std::path::{Path, PathBuf};

use super::record::Backend;
use crate::error::{Error, Result};
use crate::store::StoreBuilder;

/// Environment variable naming the backend for new resources (`inline` or `filesystem`).
pub const BACKEND_VAR: &str = "CAIRN_ARTIFACT_BACKEND";
/// Environment variable naming the filesystem backend's root directory.
pub const FS_ROOT_VAR: &str = "CAIRN_ARTIFACT_FS_ROOT";
/// Default filesystem root, relative to the store root.
pub const DEFAULT_FS_ROOT: &str = ".cairn/artifacts";

/// Settings given to the builder, not yet resolved.
#[derive(Debug, Clone, Default)]
pub(crate) struct ArtifactOptions {
    backend: Option<Backend>,
    fs_root: Option<PathBuf>,
    env_file: Option<PathBuf>,
    ignore_process_env: bool,
}

/// The resolved configuration of a store's artifacts.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactConfig {
    /// Backend of new resources.
    pub(crate) backend: Backend,
    /// Absolute filesystem root; the only directory filesystem records may point into.
    pub(crate) fs_root: PathBuf,
    /// `fs_root` with symlinks resolved, once it exists.
    resolved: std::sync::OnceLock<PathBuf>,
}

impl ArtifactConfig {
    /// The resolved root, created first if missing (with its parents, durably).
    pub(crate) fn write_root(&self) -> Result<&Path> {
        if let Some(r) = self.resolved.get() {
            return Ok(r);
        }
        crate::durable::create_dir_all(&self.fs_root)?;
        let r = std::fs::canonicalize(&self.fs_root)
            .map_err(|e| Error::io("resolve", &self.fs_root, e))?;
        Ok(self.resolved.get_or_init(|| r))
    }

    /// The resolved root for reads and checks (as configured while it does not exist).
    pub(crate) fn read_root(&self) -> PathBuf {
        match self.resolved.get() {
            Some(r) => r.clone(),
            None => match std::fs::canonicalize(&self.fs_root) {
                Ok(r) => self.resolved.get_or_init(|| r).clone(),
                Err(_) => self.fs_root.clone(),
            },
        }
    }
}

impl ArtifactOptions {
    /// Resolves the settings, in order of precedence: builder, process environment, `.env`
    /// file, defaults. Relative roots are taken relative to the current directory (environment)
    /// or the `.env` file's directory.
    pub(crate) fn resolve(&self, store_root: &Path) -> Result<ArtifactConfig> {
        let mut backend = None;
        let mut fs_root = None;
        if let Some(file) = &self.env_file {
            let (b, r) = read_env_file(file)?;
            let base = file.parent().unwrap_or(Path::new("."));
            backend = b.map(|b| (b, file.display().to_string()));
            fs_root = r.map(|r| absolute(base, Path::new(&r), file)).transpose()?;
        }
        if !self.ignore_process_env {
            if let Ok(b) = std::env::var(BACKEND_VAR) {
                backend = Some((b, format!("environment variable {BACKEND_VAR}")));
            }
            if let Some(r) = std::env::var_os(FS_ROOT_VAR) {
                let cwd = std::env::current_dir()
                    .map_err(|e| Error::io("resolve current directory", ".", e))?;
                fs_root = Some(absolute(&cwd, Path::new(&r), Path::new(FS_ROOT_VAR))?);
            }
        }
        let backend = match (self.backend, backend) {
            (Some(b), _) => b,
            (None, Some((name, source))) => {
                Backend::parse(name.trim()).ok_or_else(|| Error::InvalidConfig {
                    origin: source,
                    reason: format!(
                        "unknown artifact backend {name:?} (expected \"inline\" or \"filesystem\")"
                    ),
                })?
            }
            (None, None) => Backend::Inline,
        };
        if backend == Backend::Remote {
            return Err(Error::InvalidConfig {
                origin: "artifact backend".into(),
                reason: "\"remote\" holds evicted bytes only; new resources go to \"inline\" or \"filesystem\"".into(),
            });
        }
        let fs_root = match &self.fs_root {
            Some(r) => absolute(store_root, r, r)?,
            None => fs_root.unwrap_or_else(|| store_root.join(DEFAULT_FS_ROOT)),
        };
        Ok(ArtifactConfig {
            backend,
            fs_root,
            resolved: std::sync::OnceLock::new(),
        })
    }
}

/// `CAIRN_ARTIFACT_BACKEND` and `CAIRN_ARTIFACT_FS_ROOT` from a `.env` file; other keys are
/// ignored, a malformed line is an error naming the file.
pub(crate) fn read_env_file(file: &Path) -> Result<(Option<String>, Option<String>)> {
    let iter = dotenvy::from_path_iter(file).map_err(|e| env_error(file, e))?;
    parse_env_entries(iter, file)
}

/// The two settings from `.env` entries (dotenvy's iterator; the environment is not touched).
pub(crate) fn parse_env_entries(
    entries: impl Iterator<Item = dotenvy::Result<(String, String)>>,
    file: &Path,
) -> Result<(Option<String>, Option<String>)> {
    let (mut backend, mut root) = (None, None);
    for entry in entries {
        let (k, v) = entry.map_err(|e| env_error(file, e))?;
        match k.as_str() {
            BACKEND_VAR => backend = Some(v),
            FS_ROOT_VAR => root = Some(v),
            _ => {}
        }
    }
    Ok((backend, root))
}

/// Parses `.env` text held in memory (what the `env_file` fuzz target drives).
pub fn parse_env_bytes(bytes: &[u8]) -> Result<(Option<String>, Option<String>)> {
    parse_env_entries(dotenvy::from_read_iter(bytes), Path::new("<.env>"))
}

fn env_error(file: &Path, e: dotenvy::Error) -> Error {
    match e {
        dotenvy::Error::Io(source) => Error::io("read", file, source),
        other => Error::format(file, other.to_string()),
    }
}

/// `p` made absolute against `base`; an empty path is refused.
fn absolute(base: &Path, p: &Path, named: &Path) -> Result<PathBuf> {
    if p.as_os_str().is_empty() {
        return Err(Error::InvalidConfig {
            origin: named.display().to_string(),
            reason: "the artifact root is empty".into(),
        });
    }
    Ok(base.join(p))
}

impl StoreBuilder {
    /// Backend of new resources (overrides `CAIRN_ARTIFACT_BACKEND`; default inline).
    pub fn artifact_backend(mut self, backend: Backend) -> Self {
        self.artifacts.backend = Some(backend);
        self
    }

    /// Root of the filesystem backend (overrides `CAIRN_ARTIFACT_FS_ROOT`; default
    /// `<root>/.cairn/artifacts`); relative paths are taken relative to the store root.
    pub fn artifact_fs_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.artifacts.fs_root = Some(dir.into());
        self
    }

    /// A `.env` file to read `CAIRN_ARTIFACT_BACKEND` and `CAIRN_ARTIFACT_FS_ROOT` from; the
    /// process environment still takes precedence, and is never modified.
    pub fn env_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.artifacts.env_file = Some(file.into());
        self
    }

    /// Ignores the process environment's artifact variables (for embedding and tests).
    pub fn ignore_artifact_env(mut self) -> Self {
        self.artifacts.ignore_process_env = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_are_parsed_without_touching_the_environment() {
        let (b, r) = parse_env_bytes(
            b"# comment\nOTHER=1\nCAIRN_ARTIFACT_BACKEND=filesystem\nCAIRN_ARTIFACT_FS_ROOT=\"/a b\"\n",
        )
        .unwrap();
        assert_eq!(b.as_deref(), Some("filesystem"));
        assert_eq!(r.as_deref(), Some("/a b"));
        assert!(std::env::var("OTHER").is_err());
        let err = parse_env_bytes(b"CAIRN_ARTIFACT_BACKEND='unterminated\n").unwrap_err();
        assert!(err.to_string().starts_with("<.env>: "), "{err}");
    }

    #[test]
    fn unknown_backends_are_errors_never_fallbacks() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join(".env");
        std::fs::write(&env, "CAIRN_ARTIFACT_BACKEND=s3\n").unwrap();
        let opts = ArtifactOptions {
            env_file: Some(env.clone()),
            ignore_process_env: true,
            ..Default::default()
        };
        let err = opts.resolve(dir.path()).unwrap_err();
        assert!(matches!(&err, Error::InvalidConfig { origin, .. } if origin.contains(".env")));
        std::fs::write(&env, "CAIRN_ARTIFACT_FS_ROOT=blobs\n").unwrap();
        let cfg = opts.resolve(dir.path()).unwrap();
        assert_eq!(cfg.backend, Backend::Inline);
        assert_eq!(cfg.fs_root, dir.path().join("blobs"));
    }
}
