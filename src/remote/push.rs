//! `push`: copies runs (their directories and artifacts) to a remote, verifies the copies and
//! records them (FORMAT.md §8.5). Objects first, the manifest last and create-if-absent.

use std::fs::File;
use std::path::Path;

use super::manifest::{Manifest, ManifestArtifact, ManifestFile};
use super::{
    HashingReader, Progress, Put, Remote, artifact_key, check_copy, copies, file_key, manifest_key,
    read_manifest, remote_error, remote_sha256,
};
use crate::artifact::Backend;
use crate::durable::failpoint;
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::index::{Availability, RunRecord};
use crate::store::Store;

/// What a push did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct PushReport {
    /// Runs copied by this push.
    pub pushed: Vec<Identity>,
    /// Runs whose committed copy was already on the remote (checked, and recorded).
    pub already: Vec<Identity>,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Runs that could not be pushed, with the reason; the others went on.
    pub failed: Vec<(Identity, Error)>,
}

impl Store {
    /// Pushes `runs` to remote `name` (an evicted or remote-only run is fetched first, as
    /// [`Store::open_run`] does, and stays local): uploads each run's files and artifacts,
    /// checks every object's size on the remote and every byte's sha256 on the way, commits the
    /// copy with its manifest, and records it in the index. A run that fails is reported and
    /// the others go on; rerunning resumes, skipping objects already there.
    pub fn push(
        &self,
        runs: &[Identity],
        name: &str,
        progress: Progress<'_>,
    ) -> Result<PushReport> {
        self.healing(|| self.push_once(runs, name, progress))
    }

    /// [`Store::push`], once.
    fn push_once(
        &self,
        runs: &[Identity],
        name: &str,
        progress: Progress<'_>,
    ) -> Result<PushReport> {
        let remote = self.remote(name)?;
        let index = self.index()?;
        let mut report = PushReport::default();
        let mut done = Vec::new();
        // Runs go up several at once (the transfers' latencies overlap); each run's objects in
        // order, its manifest last.
        use rayon::prelude::*;
        let outcomes: Vec<(Identity, Result<Option<u64>>)> = runs
            .par_iter()
            .map(|id| (*id, self.push_checked(remote.as_ref(), index, id, progress)))
            .collect();
        for (id, outcome) in outcomes {
            let id = &id;
            match outcome {
                Ok(None) => {
                    report.already.push(*id);
                    done.push(*id);
                }
                Ok(Some(bytes)) => {
                    report.bytes += bytes;
                    report.pushed.push(*id);
                    done.push(*id);
                }
                Err(e) => report.failed.push((*id, e)),
            }
        }
        copies::record(index, name, &done, copies::now_ms())?;
        Ok(report)
    }

    /// Pushes run `id`, making it local first; `None` when its committed copy was already on
    /// the remote (checked), else bytes uploaded.
    fn push_checked(
        &self,
        remote: &dyn Remote,
        index: &crate::index::Index,
        id: &Identity,
        progress: Progress<'_>,
    ) -> Result<Option<u64>> {
        match index.get(id)? {
            None => Err(Error::InvalidReference {
                given: id.to_hex(),
                reason: "no such run in the index",
            }),
            Some(_) if has_whole_copy(remote, id)? => Ok(None),
            Some(rec) if rec.state != Availability::Local => {
                // Evicted or remote-only: its bytes come back first (refused when on-demand
                // fetching is off), then go up like a local run's.
                self.make_local(id)?;
                let rec = index.get(id)?.ok_or_else(|| Error::InvalidReference {
                    given: id.to_hex(),
                    reason: "no such run in the index",
                })?;
                self.push_one(remote, &rec, progress)
            }
            Some(rec) => self.push_one(remote, &rec, progress),
        }
    }

    /// Pushes one local run that has no committed copy on `remote`; returns bytes uploaded.
    fn push_one(
        &self,
        remote: &dyn Remote,
        rec: &RunRecord,
        progress: Progress<'_>,
    ) -> Result<Option<u64>> {
        let dir = self.root().join(&rec.location);
        let mut bytes = 0u64;
        let mut files = Vec::new();
        for rel in run_files(&dir)? {
            let path = dir.join(&rel);
            let key = file_key(&rec.location, &rel);
            let (size, sha256, sent) = put_file(remote, &key, &path, progress)?;
            bytes += sent;
            files.push(ManifestFile {
                path: rel,
                size,
                sha256,
            });
        }
        let mut artifacts = Vec::new();
        for res in self.list_resources(&rec.identity)? {
            let key = artifact_key(&res.content_hash);
            if remote.size(&key)? != Some(res.size_bytes) {
                let (put, sha) = match res.backend {
                    Backend::Filesystem => {
                        let path =
                            crate::artifact::fs::path_of_uri(&res.uri, &self.artifact_fs_root())?;
                        let f = crate::artifact::read::open_checked(&path, &res)?;
                        let mut r = HashingReader::new(f);
                        let put = remote.put_stream(&key, &mut r, res.size_bytes, progress)?;
                        (put, r.finish())
                    }
                    _ => {
                        let data = self.read_resource_data(res.id)?;
                        let mut r = HashingReader::new(&data[..]);
                        let put = remote.put_stream(&key, &mut r, res.size_bytes, progress)?;
                        (put, r.finish())
                    }
                };
                if put == Put::Created {
                    if sha != res.content_hash {
                        return Err(Error::ResourceMismatch {
                            id: res.id,
                            name: res.name.clone(),
                            what: "sha256",
                            expected: res.content_hash.clone(),
                            found: sha,
                        });
                    }
                    bytes += res.size_bytes;
                }
                let got = remote.size(&key)?;
                if got != Some(res.size_bytes) {
                    return Err(remote_error(
                        remote.name(),
                        &key,
                        format!(
                            "holds {got:?} bytes after upload, expected {}",
                            res.size_bytes
                        ),
                    ));
                }
            }
            artifacts.push(ManifestArtifact {
                id: res.id,
                size: res.size_bytes,
                sha256: res.content_hash,
            });
        }
        artifacts.sort_by_key(|a| a.id);
        let manifest = Manifest {
            identity: rec.identity,
            location: rec.location.clone(),
            pushed_at: crate::run::now_rfc3339(),
            files,
            artifacts,
        };
        failpoint("remote.before_manifest")?;
        let key = manifest_key(&rec.identity);
        if remote.put_new(&key, &manifest.encode())? == Put::Exists {
            // Another pusher committed first; its copy stands if it is whole.
            let theirs = read_manifest(remote, &rec.identity)?
                .ok_or_else(|| remote_error(remote.name(), &key, "manifest vanished"))?;
            if let Some(w) = check_copy(remote, &theirs, false)?.first() {
                return Err(remote_error(remote.name(), &key, w.clone()));
            }
        }
        Ok(Some(bytes))
    }
}

/// Whether `remote` holds a committed copy of run `identity` with every object at its size; an
/// error when the committed copy is damaged.
fn has_whole_copy(remote: &dyn Remote, identity: &Identity) -> Result<bool> {
    let Some(m) = read_manifest(remote, identity)? else {
        return Ok(false);
    };
    match check_copy(remote, &m, false)?.first() {
        None => Ok(true),
        Some(w) => Err(remote_error(
            remote.name(),
            &manifest_key(identity),
            format!("the committed copy is damaged ({w}); run verify --remote"),
        )),
    }
}

/// Uploads one run file unless its key exists; returns (size, sha256, bytes sent). An existing
/// object must hold the same bytes (streamed back and hashed), else the push stops there. A
/// file the remote keeps content-addressed is hashed first, to name its key.
fn put_file(
    remote: &dyn Remote,
    key: &str,
    path: &Path,
    progress: Progress<'_>,
) -> Result<(u64, String, u64)> {
    let (f, size) = crate::confine::open_regular(path)?;
    if remote
        .content_addressed_above()
        .is_some_and(|max| size > max)
    {
        return put_content_addressed(remote, f, path, size, progress);
    }
    let mut r = HashingReader::new(f);
    match remote.put_stream(key, &mut r, size, progress)? {
        Put::Created => {
            let got = remote.size(key)?;
            if got != Some(size) {
                return Err(remote_error(
                    remote.name(),
                    key,
                    format!("holds {got:?} bytes after upload, expected {size}"),
                ));
            }
            Ok((size, r.finish(), size))
        }
        Put::Exists => {
            std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| Error::io("read", path, e))?;
            let local = r.finish();
            match remote_sha256(remote, key)? {
                Some((s, h)) if s == size && h == local => Ok((size, local, 0)),
                other => Err(remote_error(
                    remote.name(),
                    key,
                    format!(
                        "already holds other bytes ({}) than {}; refusing to overwrite",
                        other.map_or("gone".into(), |(s, h)| format!("{s} bytes, sha256 {h}")),
                        path.display()
                    ),
                )),
            }
        }
    }
}

/// Uploads a large run file `f` (of `size` bytes, at `path`) to the key of its sha256: two
/// pushers of different bytes write different keys, and their manifests decide which copy
/// stands. Returns (size, sha256, bytes sent).
fn put_content_addressed(
    remote: &dyn Remote,
    mut f: File,
    path: &Path,
    size: u64,
    progress: Progress<'_>,
) -> Result<(u64, String, u64)> {
    let mut hashing = HashingReader::new(&mut f);
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| Error::io("read", path, e))?;
    let sha256 = hashing.finish();
    let key = artifact_key(&sha256);
    if remote.size(&key)? == Some(size) {
        return Ok((size, sha256, 0));
    }
    std::io::Seek::rewind(&mut f).map_err(|e| Error::io("seek", path, e))?;
    let mut r = HashingReader::new(f);
    let put = remote.put_stream(&key, &mut r, size, progress)?;
    if put == Put::Created && r.finish() != sha256 {
        let _ = remote.delete(&key);
        return Err(remote_error(
            remote.name(),
            &key,
            format!("{} changed while it was pushed", path.display()),
        ));
    }
    let got = remote.size(&key)?;
    if got != Some(size) {
        return Err(remote_error(
            remote.name(),
            &key,
            format!("holds {got:?} bytes after upload, expected {size}"),
        ));
    }
    Ok((size, sha256, if put == Put::Created { size } else { 0 }))
}

/// The regular files of a run directory, relative and `/`-separated, sorted. Symbolic links
/// and non-UTF-8 names are refused.
pub(crate) fn run_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io("list", &d, e))? {
            let entry = entry.map_err(|e| Error::io("list", &d, e))?;
            let path = entry.path();
            let ty = entry.file_type().map_err(|e| Error::io("stat", &path, e))?;
            if ty.is_dir() {
                stack.push(path);
                continue;
            }
            if !ty.is_file() {
                return Err(Error::UnsafePath {
                    path,
                    reason: "a run pushed to a remote may hold only regular files and directories"
                        .into(),
                });
            }
            let rel = path
                .strip_prefix(dir)
                .ok()
                .and_then(Path::to_str)
                .filter(|r| super::manifest::is_safe_relative(r))
                .ok_or_else(|| Error::UnsafePath {
                    path: path.clone(),
                    reason: "not a UTF-8 name cairn can push".into(),
                })?;
            // A crashed atomic replace's temporary is no part of the run.
            let temporary = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(crate::durable::is_temporary);
            if rel != super::EVICTED_MARKER && !temporary {
                out.push(rel.to_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}
