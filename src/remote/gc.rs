//! Remote garbage collection (FORMAT.md §8.9): objects that no committed manifest references,
//! left by an interrupted push or by the loser of two concurrent pushers, are deleted once
//! older than a grace period. Objects a manifest (or a local remote record) names are never
//! touched, and a manifest that cannot be read stops the collection.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use super::{META_PREFIX, Remote, artifact_key, read_manifest, run_file_key};
use crate::artifact::{GcOptions, tables};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::store::Store;

/// What [`Store::gc_remote`] found and removed.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RemoteGcReport {
    /// The remote.
    pub remote: String,
    /// Committed copies (manifests) read.
    pub manifests: usize,
    /// Objects some manifest or remote record references.
    pub referenced: usize,
    /// Unreferenced objects removed (or, dry run, that would be), by key.
    pub removed: Vec<String>,
    /// Unreferenced objects kept because they are younger than the grace period.
    pub kept_recent: usize,
    /// Whether nothing was removed on purpose.
    pub dry_run: bool,
    /// Wall time.
    pub elapsed: Duration,
}

impl std::fmt::Display for RemoteGcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gc {}{}: {} objects {}, {} referenced by {} manifests, {} unreferenced but recent in {:.2}s",
            self.remote,
            if self.dry_run { " (dry run)" } else { "" },
            self.removed.len(),
            if self.dry_run { "to remove" } else { "removed" },
            self.referenced,
            self.manifests,
            self.kept_recent,
            self.elapsed.as_secs_f64()
        )
    }
}

impl Store {
    /// Deletes the objects on remote `name` that no committed manifest references and that are
    /// older than `opts.grace` (by the remote's modification time): run files and artifact
    /// bytes of interrupted or losing pushes. Manifests, the content keys named by this
    /// store's remote records, and keys under `.cairn-remote/` other than `artifacts/` are
    /// never deleted. The references are read twice, before and after listing, so a push
    /// that commits meanwhile keeps its objects. The remote is taken to be cairn's alone:
    /// any other unreferenced key under it is collected too.
    pub fn gc_remote(&self, name: &str, opts: &GcOptions) -> Result<RemoteGcReport> {
        self.healing(|| self.gc_remote_once(name, opts))
    }

    /// [`Store::gc_remote`], once.
    fn gc_remote_once(&self, name: &str, opts: &GcOptions) -> Result<RemoteGcReport> {
        let start = Instant::now();
        let remote = self.remote(name)?;
        let mut report = RemoteGcReport {
            remote: name.to_owned(),
            dry_run: opts.dry_run,
            ..Default::default()
        };
        let (manifests, before) = self.remote_references(remote.as_ref())?;
        let keys = remote.list("")?;
        let (_, after) = self.remote_references(remote.as_ref())?;
        report.manifests = manifests;
        let artifacts = format!("{META_PREFIX}/artifacts/");
        let now = SystemTime::now();
        for key in keys {
            if before.contains(&key) || after.contains(&key) {
                report.referenced += 1;
                continue;
            }
            if key.starts_with(META_PREFIX) && !key.starts_with(&artifacts) {
                continue; // manifests, probes and anything else of cairn's own: left alone
            }
            let Some(modified) = remote.modified(&key)? else {
                continue; // gone meanwhile
            };
            // A time in the future (clock skew) counts as young.
            if now.duration_since(modified).unwrap_or_default() < opts.grace {
                report.kept_recent += 1;
                continue;
            }
            if !opts.dry_run {
                remote.delete(&key)?;
            }
            report.removed.push(key);
        }
        report.elapsed = start.elapsed();
        Ok(report)
    }

    /// The number of manifests on `remote` and every key they reference (the manifests
    /// included), plus the content keys this store's remote records on it name. A manifest
    /// that cannot be read or decoded is an error: what it references is unknown.
    fn remote_references(&self, remote: &dyn Remote) -> Result<(usize, HashSet<String>)> {
        let mut keys = HashSet::new();
        let prefix = format!("{META_PREFIX}/manifests/");
        let mut manifests = 0;
        for key in remote.list(&prefix)? {
            let Some(identity) = key
                .strip_prefix(&prefix)
                .and_then(|k| k.strip_suffix(".json"))
                .and_then(|hex| hex.parse::<Identity>().ok())
            else {
                continue;
            };
            let m = read_manifest(remote, &identity)?.ok_or_else(|| Error::Remote {
                remote: remote.name().to_owned(),
                key: key.clone(),
                reason: "listed but gone; rerun gc".into(),
            })?;
            manifests += 1;
            keys.extend(m.files.iter().map(|f| run_file_key(remote, &m.location, f)));
            keys.extend(m.artifacts.iter().map(|a| artifact_key(&a.sha256)));
            keys.insert(key);
        }
        for rec in tables::all(self.index()?)? {
            if rec.remote_name() == Some(remote.name()) {
                keys.insert(rec.remote_key());
            }
        }
        Ok((manifests, keys))
    }
}
