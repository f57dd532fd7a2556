//! `evict`: deletes a run's local bytes once a remote is checked, at that moment, to hold a
//! whole copy; keeps a husk (`id.json`, `model.json`, resource records, a marker) so the run
//! stays indexed and a reindex still knows it (FORMAT.md §8.6). Filesystem resource records
//! become `remote` records naming the copy (beside the run, then the index) before any
//! artifact file is deleted.

use std::fs;
use std::path::Path;

use super::{check_copy, copies, read_manifest};
use crate::artifact::record::remote_uri;
use crate::artifact::{Backend, ResourceRecord, sidecar, tables};
use crate::durable::{self, failpoint};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::index::Availability;
use crate::run::{ID_FILE, MODEL_FILE};
use crate::store::Store;

/// Marker file of an evicted run's husk.
pub const EVICTED_MARKER: &str = ".cairn-evicted";

/// True when the run directory `dir` is an evicted husk.
pub(crate) fn is_husk(dir: &Path) -> bool {
    dir.join(EVICTED_MARKER).is_file()
}

/// Options of [`Store::evict`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct EvictOptions {
    /// Evict even when no remote is confirmed to hold a copy (the bytes may be lost for good).
    pub force: bool,
}

impl EvictOptions {
    /// Evict without a confirmed remote copy.
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
}

impl Store {
    /// Evicts run `identity`. Unless forced, refuses unless a remote recorded as holding a copy
    /// is checked now to have its manifest, every object at its size, and every local file and
    /// artifact of the run in that manifest. Returns the remote that confirmed the copy.
    pub fn evict(&self, identity: &Identity, opts: &EvictOptions) -> Result<Option<String>> {
        self.healing(|| self.evict_once(identity, opts))
    }

    /// [`Store::evict`], once.
    fn evict_once(&self, identity: &Identity, opts: &EvictOptions) -> Result<Option<String>> {
        let index = self.index()?;
        let mut rec = index
            .get(identity)?
            .ok_or_else(|| Error::InvalidReference {
                given: identity.to_hex(),
                reason: "no such run in the index",
            })?;
        match rec.state {
            Availability::Local => {}
            Availability::Evicted => return Ok(None),
            state => {
                return Err(Error::NotLocal {
                    identity: *identity,
                    state: state.as_str(),
                });
            }
        }
        let dir = self.root().join(&rec.location);
        let local = super::push::run_files(&dir)?;
        let resources = self.list_resources(identity)?;
        let mut confirmed = None;
        let mut reasons = Vec::new();
        for copy in copies::of_run(index, identity)? {
            match self.confirm(&copy.remote, identity, &dir, &local, &resources) {
                Ok(None) => {
                    confirmed = Some(copy.remote);
                    break;
                }
                Ok(Some(why)) => reasons.push(format!("{}: {why}", copy.remote)),
                Err(e) => reasons.push(format!("{}: {e}", copy.remote)),
            }
        }
        // The remote the records will name: the confirmed one; forced, the most recently
        // verified recorded copy (unconfirmed), else none.
        let holder = match &confirmed {
            Some(name) => {
                copies::record(index, name, &[*identity], copies::now_ms())?;
                Some(name.clone())
            }
            None if opts.force => {
                let mut c = copies::of_run(index, identity)?;
                c.sort_by_key(|c| std::cmp::Reverse(c.verified_at_ms));
                c.into_iter().next().map(|c| c.remote)
            }
            None => {
                return Err(Error::EvictRefused {
                    identity: *identity,
                    reason: if reasons.is_empty() {
                        "no remote holds a copy (push it first, or --force)".into()
                    } else {
                        format!("no remote holds a whole copy: {}", reasons.join("; "))
                    },
                });
            }
        };

        // The marker first: from here a crash leaves a husk that reindex reads as evicted.
        durable::replace_file(&dir.join(EVICTED_MARKER), b"evicted\n")?;
        failpoint("remote.evict_after_marker")?;
        for rel in &local {
            if rel == ID_FILE || rel == MODEL_FILE || rel.starts_with(crate::artifact::SIDECAR_DIR)
            {
                continue;
            }
            let p = dir.join(rel);
            fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
        }
        remove_empty_dirs(&dir)?;

        // Filesystem records become remote records naming the copy (beside the run, then in
        // the index with the state, one transaction); only then do their files go, so no record
        // ever names bytes that are gone. Forced with no remote at all, they stay as they are.
        let now = crate::run::now_rfc3339();
        let switched: Vec<(ResourceRecord, ResourceRecord)> = match &holder {
            Some(name) => resources
                .into_iter()
                .filter(|r| r.backend == Backend::Filesystem)
                .map(|r| {
                    let remote = ResourceRecord {
                        backend: Backend::Remote,
                        uri: remote_uri(name, &r.content_hash),
                        updated_at: now.clone(),
                        ..r.clone()
                    };
                    (r, remote)
                })
                .collect(),
            None => Vec::new(),
        };
        let committed = switched
            .iter()
            .try_for_each(|(_, new)| sidecar::write(&dir, new))
            .and_then(|()| failpoint("remote.evict_after_records"))
            .and_then(|()| {
                rec.state = Availability::Evicted;
                index.write(|txn| {
                    for (_, new) in &switched {
                        tables::put(index, txn, new)?;
                    }
                    index.put(txn, &rec, 0)
                })
            });
        if let Err(e) = committed {
            // The index still has the filesystem records: put them back beside the run.
            for (old, _) in &switched {
                let _ = sidecar::write(&dir, old);
            }
            return Err(e);
        }
        failpoint("remote.evict_before_artifact_delete")?;
        for (old, _) in &switched {
            let path = crate::artifact::fs::path_of_uri(&old.uri, &self.artifact_fs_root())?;
            match fs::remove_file(&path) {
                Ok(()) => durable::sync_dir(path.parent().expect("in a shard"))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &path, e)),
            }
        }
        Ok(confirmed)
    }

    /// Checks remote `name`'s copy of a run against the remote and the local files; `Some`
    /// says what is wrong.
    fn confirm(
        &self,
        name: &str,
        identity: &Identity,
        dir: &Path,
        local: &[String],
        resources: &[ResourceRecord],
    ) -> Result<Option<String>> {
        let remote = self.remote(name)?;
        let Some(m) = read_manifest(remote.as_ref(), identity)? else {
            return Ok(Some("no committed copy (manifest missing)".into()));
        };
        for rel in local {
            if rel.starts_with(crate::artifact::SIDECAR_DIR) {
                continue; // records: checked below by id and sha256 (a husk's may be remote)
            }
            let size = fs::metadata(dir.join(rel))
                .map_err(|e| Error::io("stat", dir.join(rel), e))?
                .len();
            if !m.files.iter().any(|f| f.path == *rel && f.size == size) {
                return Ok(Some(format!(
                    "local file {rel} is not in the copy (push again)"
                )));
            }
        }
        for r in resources {
            if !m
                .artifacts
                .iter()
                .any(|a| a.id == r.id && a.sha256 == r.content_hash)
            {
                return Ok(Some(format!(
                    "resource {} is not in the copy (push again)",
                    r.id
                )));
            }
        }
        Ok(check_copy(remote.as_ref(), &m, false)?.into_iter().next())
    }
}

/// Removes the empty subdirectories of `dir` (deepest first), fsyncing each parent.
fn remove_empty_dirs(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let sub = entry.path();
            remove_empty_dirs(&sub)?;
            if fs::remove_dir(&sub).is_ok() {
                continue;
            }
        }
    }
    durable::sync_dir(dir)
}
