//! Garbage collection of the filesystem backend (FORMAT.md §7.7): files under the root that no
//! record names (in the index or beside a run) and staging files, once older than a grace
//! period. A crash can leave such files; a live write's file is younger than the grace period.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::fs::{STAGING_DIR, path_of_uri};
use super::record::Backend;
use super::{sidecar, tables};
use crate::error::{Error, Result};
use crate::store::Store;

/// How to collect.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GcOptions {
    /// Files younger than this (by mtime) are kept (default one hour).
    pub grace: Duration,
    /// Only report what would be removed.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(3600),
            dry_run: false,
        }
    }
}

impl GcOptions {
    /// The grace period.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Report only.
    pub fn dry_run(mut self, yes: bool) -> Self {
        self.dry_run = yes;
        self
    }
}

/// What gc found and removed.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct GcReport {
    /// Files removed (or, dry run, that would be), with their sizes.
    pub removed: Vec<(PathBuf, u64)>,
    /// Unreferenced files kept because they are younger than the grace period.
    pub kept_recent: usize,
    /// Files some record names.
    pub referenced: usize,
    /// Entries that could not be listed or removed.
    pub errors: Vec<Error>,
    /// Whether nothing was removed on purpose.
    pub dry_run: bool,
    /// Wall time.
    pub elapsed: Duration,
}

impl std::fmt::Display for GcReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "gc{}: {} files {} ({} bytes), {} referenced, {} unreferenced but recent, {} errors in {:.2}s",
            if self.dry_run { " (dry run)" } else { "" },
            self.removed.len(),
            if self.dry_run { "to remove" } else { "removed" },
            self.removed.iter().map(|(_, n)| n).sum::<u64>(),
            self.referenced,
            self.kept_recent,
            self.errors.len(),
            self.elapsed.as_secs_f64()
        )
    }
}

impl Store {
    /// Removes artifact files no record names, and stale staging files, older than the grace
    /// period.
    pub fn gc_artifacts(&self, opts: &GcOptions) -> Result<GcReport> {
        self.healing(|| self.gc_artifacts_once(opts))
    }

    /// [`Store::gc_artifacts`], once.
    fn gc_artifacts_once(&self, opts: &GcOptions) -> Result<GcReport> {
        let start = Instant::now();
        let root = self.artifacts.read_root();
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..Default::default()
        };
        if !root.is_dir() {
            report.elapsed = start.elapsed();
            return Ok(report);
        }
        let index = self.index()?;
        let mut named: HashSet<PathBuf> = HashSet::new();
        let mut note = |uri: &str| {
            if let Ok(p) = path_of_uri(uri, &root) {
                named.insert(p);
            }
        };
        for rec in tables::all(index)? {
            if rec.backend == Backend::Filesystem {
                note(&rec.uri);
            }
        }
        // Records beside the runs too: one written before a crash kept it from the index.
        for run in index.filter_par(|_| true)? {
            for rec in sidecar::read_all(&self.root().join(&run.location))
                .into_iter()
                .flatten()
            {
                if rec.backend == Backend::Filesystem {
                    note(&rec.uri);
                }
            }
        }
        let entries = list(&root, &mut report.errors);
        for shard in entries {
            let name = shard.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_shard = name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit());
            // A linked shard could lead out of the root: never listed, never emptied.
            let real_dir = std::fs::symlink_metadata(&shard).is_ok_and(|m| m.is_dir());
            if !(is_shard || name == STAGING_DIR) || !real_dir {
                continue; // not cairn's: left alone
            }
            for file in list(&shard, &mut report.errors) {
                if is_shard && named.contains(&file) {
                    report.referenced += 1;
                    continue;
                }
                let Ok(meta) = std::fs::symlink_metadata(&file) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= opts.grace);
                if !old {
                    report.kept_recent += 1;
                    continue;
                }
                if !opts.dry_run {
                    if let Err(e) = std::fs::remove_file(&file) {
                        report.errors.push(Error::io("remove", &file, e));
                        continue;
                    }
                    let _ = crate::durable::sync_dir(&shard);
                }
                report.removed.push((file, meta.len()));
            }
        }
        report.removed.sort();
        report.elapsed = start.elapsed();
        Ok(report)
    }
}

fn list(dir: &Path, errors: &mut Vec<Error>) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            errors.push(Error::io("list", dir, e));
            Vec::new()
        }
    }
}
