//! Moving resource bytes between backends (FORMAT.md §7.6). Row by row: write the file
//! durably, read it back and check its sha256, switch the record (and drop the inline bytes) in
//! one index transaction. A row that fails stays exactly as it was; rows already in the target
//! backend are skipped, so a rerun picks up where a stopped or crashed one left off.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::read;
use super::record::{Backend, ResourceRecord};
use super::tables;
use super::write::{self, Payload, Plan, Staged};
use crate::error::{Error, Result};
use crate::store::Store;

/// How to migrate.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MigrateOptions {
    /// Target backend: `Filesystem` (the default) moves inline bytes to files; `Inline` moves
    /// files of at most `inline_max` bytes into the index.
    pub to: Backend,
    /// Largest file moved to inline.
    pub inline_max: u64,
    /// On a failed row, go on with the next (true) or stop (false, the default).
    pub keep_going: bool,
    /// Only count what would move.
    pub dry_run: bool,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            to: Backend::Filesystem,
            inline_max: 1 << 20,
            keep_going: false,
            dry_run: false,
        }
    }
}

impl MigrateOptions {
    /// Target backend.
    pub fn to(mut self, backend: Backend) -> Self {
        self.to = backend;
        self
    }

    /// Largest file moved to inline.
    pub fn inline_max(mut self, bytes: u64) -> Self {
        self.inline_max = bytes;
        self
    }

    /// Continue after a failed row.
    pub fn keep_going(mut self, yes: bool) -> Self {
        self.keep_going = yes;
        self
    }

    /// Count only.
    pub fn dry_run(mut self, yes: bool) -> Self {
        self.dry_run = yes;
        self
    }
}

/// A row that could not be moved; it is unchanged.
#[derive(Debug)]
#[non_exhaustive]
pub struct MigrateFailure {
    /// The resource.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// What went wrong.
    pub error: Error,
}

/// What a migration did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct MigrateReport {
    /// Rows moved (or, dry run, that would move).
    pub migrated: u64,
    /// Rows already in the target backend, or too large for inline.
    pub skipped: u64,
    /// Rows that failed, unchanged.
    pub failed: Vec<MigrateFailure>,
    /// Bytes moved.
    pub bytes: u64,
    /// True when a failure stopped the run before every row was tried.
    pub stopped: bool,
    /// Whether nothing was changed on purpose.
    pub dry_run: bool,
    /// Wall time.
    pub elapsed: Duration,
}

impl std::fmt::Display for MigrateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{} migrated ({} bytes), {} skipped, {} failed in {:.2}s{}",
            if self.dry_run { "dry run: " } else { "" },
            self.migrated,
            self.bytes,
            self.skipped,
            self.failed.len(),
            self.elapsed.as_secs_f64(),
            if self.stopped {
                "; stopped at the first failure, rerun to resume"
            } else {
                ""
            }
        )
    }
}

impl Store {
    /// Moves resource bytes to `opts.to`; `progress` is called with (rows done, rows in all).
    pub fn migrate_artifacts(
        &self,
        opts: &MigrateOptions,
        progress: &dyn Fn(u64, u64),
    ) -> Result<MigrateReport> {
        let start = Instant::now();
        let records = tables::all(self.index()?)?;
        let total = records.len() as u64;
        let mut report = MigrateReport {
            dry_run: opts.dry_run,
            ..Default::default()
        };
        for (i, rec) in records.into_iter().enumerate() {
            progress(i as u64, total);
            let wanted = rec.backend != opts.to
                && (opts.to != Backend::Inline || rec.size_bytes <= opts.inline_max);
            if !wanted {
                report.skipped += 1;
                continue;
            }
            if opts.dry_run {
                report.migrated += 1;
                report.bytes += rec.size_bytes;
                continue;
            }
            let (id, name, size) = (rec.id, rec.name.clone(), rec.size_bytes);
            match self.migrate_one(rec, opts.to) {
                Ok(()) => {
                    report.migrated += 1;
                    report.bytes += size;
                }
                Err(error) => {
                    report.failed.push(MigrateFailure { id, name, error });
                    if !opts.keep_going {
                        report.stopped = true;
                        break;
                    }
                }
            }
        }
        progress(total, total);
        report.elapsed = start.elapsed();
        Ok(report)
    }

    fn migrate_one(&self, rec: ResourceRecord, to: Backend) -> Result<()> {
        match to {
            Backend::Filesystem => {
                let bytes = self.read_resource_data(rec.id)?;
                let root = self.artifacts.write_root()?;
                let path = write::write_file(root, Uuid::new_v4(), &bytes)?;
                // Read the durable file back: what is recorded is what the disk holds.
                let checked = std::fs::read(&path)
                    .map_err(|e| Error::io("read", &path, e))
                    .and_then(|b| read::check_hash(&rec, write::sha256_hex(&b)));
                if let Err(e) = checked {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
                let staged = Staged {
                    backend: Backend::Filesystem,
                    size: rec.size_bytes,
                    sha256: rec.content_hash.clone(),
                    payload: Payload::File(path),
                };
                self.commit_resource(Plan::Replace(rec), staged).map(drop)
            }
            Backend::Inline => {
                let bytes = self.read_resource_data(rec.id)?;
                let staged = Staged {
                    backend: Backend::Inline,
                    size: rec.size_bytes,
                    sha256: rec.content_hash.clone(),
                    payload: Payload::Slice(&bytes),
                };
                self.commit_resource(Plan::Replace(rec), staged).map(drop)
            }
        }
    }
}
