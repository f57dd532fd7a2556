//! Moving resource bytes between backends (FORMAT.md §7.6). To the filesystem, rows go in
//! batches: every row's file written and fsynced (the fsyncs overlapping on several threads),
//! read back and checked, renamed into its shard, each touched shard fsynced once; then every
//! row's record beside its run (one directory fsync per run); then ONE index transaction switches
//! the batch's records and drops their inline bytes. A row that fails at any step is rolled back
//! alone and stays exactly as it was; rows already in the target backend are skipped, so a rerun
//! picks up where a stopped or crashed one left off. To inline, rows go one at a time. Remote
//! records (bytes held only on a remote) are skipped: fetch brings them back.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::read;
use super::record::{Backend, ResourceRecord};
use super::write::{self, Payload, Plan, Staged};
use super::{fs, sidecar, tables};
use crate::durable::{self, failpoint};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::store::Store;

/// Rows per batch (one index transaction, one fsync per touched shard and run directory).
pub const DEFAULT_BATCH_ROWS: usize = 1024;
/// Threads issuing fsyncs at once, so that the file system commits them together.
const SYNC_THREADS: usize = 16;

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
    /// Rows per batch to the filesystem backend (at least 1; 1 commits every row alone).
    pub batch_rows: usize,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            to: Backend::Filesystem,
            inline_max: 1 << 20,
            keep_going: false,
            dry_run: false,
            batch_rows: DEFAULT_BATCH_ROWS,
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

    /// Rows per batch to the filesystem backend (0 is taken as 1).
    pub fn batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows.max(1);
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
    /// True when a failure stopped the run before every row was tried (rows of the failed
    /// row's batch that succeeded are migrated).
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
        self.healing(|| self.migrate_artifacts_once(opts, progress))
    }

    /// [`Store::migrate_artifacts`], once.
    fn migrate_artifacts_once(
        &self,
        opts: &MigrateOptions,
        progress: &dyn Fn(u64, u64),
    ) -> Result<MigrateReport> {
        let start = Instant::now();
        if opts.to == Backend::Remote {
            return Err(Error::InvalidConfig {
                origin: "migrate".into(),
                reason: "bytes go to a remote by push and evict, not by migrate".into(),
            });
        }
        let records = tables::all(self.index()?)?;
        let total = records.len() as u64;
        let mut report = MigrateReport {
            dry_run: opts.dry_run,
            ..Default::default()
        };
        let batch_rows = opts.batch_rows.max(1);
        let mut batch = Vec::new();
        for (i, rec) in records.into_iter().enumerate() {
            progress(i as u64, total);
            // Remote records are skipped: their bytes come back by fetch.
            let wanted = rec.backend != opts.to
                && rec.backend != Backend::Remote
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
            if opts.to == Backend::Filesystem {
                batch.push(rec);
                if batch.len() == batch_rows {
                    self.migrate_batch(std::mem::take(&mut batch), opts.keep_going, &mut report)?;
                }
            } else {
                let (id, name, size) = (rec.id, rec.name.clone(), rec.size_bytes);
                match self.migrate_to_inline(rec) {
                    Ok(()) => {
                        report.migrated += 1;
                        report.bytes += size;
                    }
                    Err(error) => report.failed.push(MigrateFailure { id, name, error }),
                }
            }
            if !report.failed.is_empty() && !opts.keep_going {
                report.stopped = true;
                break;
            }
        }
        if !report.stopped && !batch.is_empty() {
            self.migrate_batch(batch, opts.keep_going, &mut report)?;
            report.stopped = !report.failed.is_empty() && !opts.keep_going;
        }
        progress(total, total);
        report.elapsed = start.elapsed();
        Ok(report)
    }

    fn migrate_to_inline(&self, rec: ResourceRecord) -> Result<()> {
        let bytes = self.read_resource_data(rec.id)?;
        let staged = Staged {
            backend: Backend::Inline,
            size: rec.size_bytes,
            sha256: rec.content_hash.clone(),
            payload: Payload::Slice(&bytes),
        };
        self.commit_resource(Plan::Replace(rec), staged).map(drop)
    }

    /// Moves `rows` (inline, in id order) to files, committing them in one index transaction.
    /// Failed rows are rolled back one by one and reported; with `keep_going` false, rows after
    /// the first that fails to be written are not tried. Errs only if no row could be tried.
    fn migrate_batch(
        &self,
        rows: Vec<ResourceRecord>,
        keep_going: bool,
        report: &mut MigrateReport,
    ) -> Result<()> {
        let root = self.artifacts.write_root()?.to_path_buf();
        let index = self.index()?;
        let mut fail = |m: &Move, error: Error| {
            m.undo();
            report.failed.push(MigrateFailure {
                id: m.old.id,
                name: m.old.name.clone(),
                error,
            });
        };

        // 1. Write every row's file to staging, in id order (page cache only).
        let mut moves = Vec::with_capacity(rows.len());
        for old in rows {
            let mut m = Move::new(old);
            match m.stage(self, &root) {
                Ok(()) => moves.push(m),
                Err(e) => {
                    fail(&m, e);
                    if !keep_going {
                        break;
                    }
                }
            }
        }
        // 2. fsync them (overlapped), read each back and check its sha256.
        let checked = overlapped(moves.len(), |i| moves[i].sync_and_check());
        let mut moves = keep_ok(moves, checked, &mut fail);
        // 3. Rename each into its shard; fsync every touched shard once.
        let renamed: Vec<Result<()>> = moves.iter_mut().map(|m| m.publish(&root)).collect();
        let moves = keep_ok(moves, renamed, &mut fail);
        let shards: Vec<PathBuf> = moves
            .iter()
            .filter_map(|m| m.shard().map(Path::to_path_buf))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let synced = overlapped(shards.len(), |i| durable::sync_dir(&shards[i]));
        let synced = dir_results(&shards, synced);
        let results = moves.iter().map(|m| synced.check(m.shard())).collect();
        let mut moves = keep_ok(moves, results, &mut fail);
        // 4. The new records, written beside their runs (overlapped), one fsync per run directory.
        let mut run_dirs: HashMap<Identity, Option<PathBuf>> = HashMap::new();
        let prepared: Vec<Result<()>> = moves
            .iter_mut()
            .map(|m| m.prepare(self, &mut run_dirs))
            .collect();
        let mut moves = keep_ok(moves, prepared, &mut fail);
        let written = overlapped(moves.len(), |i| moves[i].write_sidecar());
        for (m, r) in moves.iter_mut().zip(&written) {
            m.sidecar_written = r.is_ok();
        }
        let mut moves = keep_ok(moves, written, &mut fail);
        let dirs: Vec<PathBuf> = moves
            .iter()
            .filter_map(|m| m.run_dir.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let synced = dirs.iter().map(|d| sidecar::sync_dir(d)).collect();
        let synced = dir_results(&dirs, synced);
        let results = moves
            .iter()
            .map(|m| synced.check(m.run_dir.as_deref()))
            .collect();
        for m in &mut moves {
            // A failed directory fsync may have left the new record in place: undo restores it.
            m.sidecar_written = m.run_dir.is_some();
        }
        let moves = keep_ok(moves, results, &mut fail);
        if moves.is_empty() {
            return Ok(());
        }
        // 5. The commit point: one transaction for the whole batch.
        let committed = failpoint("artifact.after_sidecar").and_then(|()| {
            index.write(|txn| {
                moves.iter().try_for_each(|m| {
                    tables::put(index, txn, m.new.as_ref().expect("prepared"))?;
                    tables::drop_inline(index, txn, m.old.id)
                })
            })
        });
        match committed {
            Ok(()) => {
                report.migrated += moves.len() as u64;
                report.bytes += moves.iter().map(|m| m.old.size_bytes).sum::<u64>();
            }
            Err(e) if index.failed_inside(&e) => {
                // The index file itself failed: the batch's commit may have persisted, so the
                // new files and records beside the runs stay (the bytes are in both backends
                // until one is dropped; gc removes files no record names).
                let msg = e.to_string();
                let mut first = Some(e);
                for m in &moves {
                    let error = first.take().unwrap_or_else(|| {
                        Error::io("commit", index.path(), std::io::Error::other(msg.clone()))
                    });
                    report.failed.push(MigrateFailure {
                        id: m.old.id,
                        name: m.old.name.clone(),
                        error,
                    });
                }
            }
            Err(e) => {
                let msg = e.to_string();
                let mut first = Some(e);
                for m in &moves {
                    let error = first.take().unwrap_or_else(|| {
                        Error::io(
                            "commit",
                            index.path(),
                            std::io::Error::other(format!("the batch's transaction failed: {msg}")),
                        )
                    });
                    fail(m, error);
                }
            }
        }
        Ok(())
    }
}

/// One row on its way to a file.
struct Move {
    /// The record as it is (inline).
    old: ResourceRecord,
    file_id: Uuid,
    /// The staging file, until renamed.
    tmp: Option<(PathBuf, File)>,
    /// The file under its final name.
    dest: Option<PathBuf>,
    /// The record naming the file.
    new: Option<ResourceRecord>,
    /// The run's directory, when present.
    run_dir: Option<PathBuf>,
    /// Whether the new record may be beside the run.
    sidecar_written: bool,
}

impl Move {
    fn new(old: ResourceRecord) -> Self {
        Move {
            old,
            file_id: Uuid::new_v4(),
            tmp: None,
            dest: None,
            new: None,
            run_dir: None,
            sidecar_written: false,
        }
    }

    /// Reads the inline bytes (checking them) and writes them to a new staging file.
    fn stage(&mut self, store: &Store, root: &Path) -> Result<()> {
        let bytes = store.read_resource_data(self.old.id)?;
        let tmp = write::staging_path(root, self.file_id)?;
        let mut f = write::create_new(&tmp)?;
        let written = failpoint("artifact.write")
            .and_then(|()| f.write_all(&bytes).map_err(|e| Error::io("write", &tmp, e)));
        self.tmp = Some((tmp, f));
        written
    }

    /// fsyncs the staging file, then reads it back: what is recorded is what the disk holds.
    fn sync_and_check(&self) -> Result<()> {
        let (tmp, f) = self.tmp.as_ref().expect("staged");
        durable::sync_file(f, tmp)?;
        let len = usize::try_from(self.old.size_bytes).expect("inline bytes fit in memory");
        let mut back = vec![0u8; len];
        f.read_exact_at(&mut back, 0)
            .map_err(|e| Error::io("read", tmp, e))?;
        read::check_hash(&self.old, write::sha256_hex(&back))
    }

    fn publish(&mut self, root: &Path) -> Result<()> {
        let (tmp, _) = self.tmp.as_ref().expect("staged");
        self.dest = Some(write::rename_into_shard(root, tmp, self.file_id)?);
        self.tmp = None;
        Ok(())
    }

    fn shard(&self) -> Option<&Path> {
        self.dest.as_deref().and_then(Path::parent)
    }

    /// The new record, and the run directory it goes beside.
    fn prepare(
        &mut self,
        store: &Store,
        run_dirs: &mut HashMap<Identity, Option<PathBuf>>,
    ) -> Result<()> {
        failpoint("artifact.before_record")?;
        let dest = self.dest.as_ref().expect("published");
        let new = ResourceRecord {
            updated_at: crate::run::now_rfc3339(),
            backend: Backend::Filesystem,
            uri: fs::uri_of(dest)?,
            ..self.old.clone()
        };
        let run_dir = match run_dirs.get(&self.old.run) {
            Some(d) => d.clone(),
            None => {
                let d = store.run_dir(&self.old.run)?;
                run_dirs.insert(self.old.run, d.clone());
                d
            }
        };
        self.new = Some(new);
        self.run_dir = run_dir;
        Ok(())
    }

    fn write_sidecar(&self) -> Result<()> {
        match &self.run_dir {
            Some(dir) => sidecar::write_unsynced_dir(dir, self.new.as_ref().expect("prepared")),
            None => Ok(()),
        }
    }

    /// Puts the row back as it was: the old record beside the run, then the new file removed.
    /// If the old record cannot be put back, the file stays: a record names it (gc keeps it).
    fn undo(&self) {
        if self.sidecar_written
            && let Some(dir) = &self.run_dir
            && sidecar::write(dir, &self.old).is_err()
        {
            return;
        }
        if let Some((tmp, _)) = &self.tmp {
            let _ = std::fs::remove_file(tmp);
        }
        if let Some(dest) = &self.dest {
            let _ = std::fs::remove_file(dest);
        }
    }
}

/// Keeps the moves whose step succeeded; the others are rolled back and reported by `fail`.
fn keep_ok(
    moves: Vec<Move>,
    results: Vec<Result<()>>,
    fail: &mut impl FnMut(&Move, Error),
) -> Vec<Move> {
    moves
        .into_iter()
        .zip(results)
        .filter_map(|(m, r)| match r {
            Ok(()) => Some(m),
            Err(e) => {
                fail(&m, e);
                None
            }
        })
        .collect()
}

/// Directory fsync failures, by directory.
struct DirResults(HashMap<PathBuf, String>);

fn dir_results(dirs: &[PathBuf], results: Vec<Result<()>>) -> DirResults {
    DirResults(
        dirs.iter()
            .zip(results)
            .filter_map(|(d, r)| r.err().map(|e| (d.clone(), e.to_string())))
            .collect(),
    )
}

impl DirResults {
    /// The failure of a row whose entry is in `dir`, if that directory's fsync failed.
    fn check(&self, dir: Option<&Path>) -> Result<()> {
        match dir.and_then(|d| self.0.get(d).map(|msg| (d, msg))) {
            Some((d, msg)) => Err(Error::io(
                "fsync directory",
                d,
                std::io::Error::other(msg.clone()),
            )),
            None => Ok(()),
        }
    }
}

/// `f(0..n)` run from up to [`SYNC_THREADS`] threads, results in order. For fsync-bound steps:
/// concurrent fsyncs share journal commits.
fn overlapped<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let mut out: Vec<Option<R>> = (0..n).map(|_| None).collect();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..SYNC_THREADS.min(n))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break done;
                        }
                        done.push((i, f(i)));
                    }
                })
            })
            .collect();
        for w in workers {
            for (i, r) in w.join().expect("a migration worker does not panic") {
                out[i] = Some(r);
            }
        }
    });
    out.into_iter().map(|r| r.expect("every row ran")).collect()
}
