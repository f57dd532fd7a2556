//! Parallel discovery of run directories under a root (rayon).
//!
//! A run directory is any directory holding a regular file `id.json`; the walk reads that header,
//! does not descend further, never follows symbolic links (so it cannot leave the root) and skips
//! the root's `.cairn/`. Given the directory states of a previous walk it skips unchanged
//! directories (same mtime): it neither lists them nor re-reads their headers. The listing of a
//! run directory also tells which of cairn's markers it holds, so that callers need no `stat`
//! per run for them.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use rustix::fs::{self, AtFlags, FileType, Mode, OFlags, RawDir};

use crate::artifact::SIDECAR_DIR;
use crate::error::{Error, Result};
use crate::remote::EVICTED_MARKER;
use crate::run::{ID_FILE, ID_FILE_LIMIT, IdHeader};
use crate::store::META_DIR;

/// A directory mtime this close to the walk's start may still change within the same clock tick,
/// so it is never trusted by the next incremental walk.
const RECENT: Duration = Duration::from_secs(2);

/// Bytes of directory entries fetched per `getdents64` call.
const LIST_BUFFER: usize = 32 << 10;

/// What a walk learned about one directory, relative to the root (`/`-separated, UTF-8; the root
/// itself is `""`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirState {
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
    /// For a run directory `None`; otherwise the names of its subdirectories that are not runs
    /// (its runs are among the walk's runs).
    pub subdirs: Option<Vec<String>>,
    /// Whether the mtime was too recent to trust next time.
    pub recent: bool,
}

impl DirState {
    /// A state an earlier walk recorded, whose stamp 0 stands for a mtime too recent to trust.
    pub(crate) fn recorded(mtime_ns: u64, subdirs: Option<Vec<String>>) -> Self {
        DirState {
            mtime_ns,
            subdirs,
            recent: mtime_ns == 0,
        }
    }
}

/// cairn's markers found in a run directory's listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunEntries {
    /// The eviction marker is a file (FORMAT.md §8.6): the directory is a husk.
    pub evicted: bool,
    /// A resource record directory is present (FORMAT.md §7.2).
    pub resources: bool,
}

/// A run found by a walk; `H` is what was read from its header.
#[derive(Debug)]
pub struct FoundRun<H = IdHeader> {
    /// Location relative to the root.
    pub location: String,
    /// The header, or `None` when the directory was unchanged since the previous walk.
    pub header: Option<H>,
    /// The markers in the directory; all false when it was unchanged (not listed).
    pub entries: RunEntries,
    /// The directory's state (`subdirs` is `None`).
    pub state: DirState,
}

/// What a walk found.
#[derive(Debug)]
pub struct Walk<H = IdHeader> {
    /// Runs, sorted by location.
    pub runs: Vec<FoundRun<H>>,
    /// Every directory visited or skipped as unchanged that is not a run, by location (a run's
    /// is in its [`FoundRun`]).
    pub dirs: HashMap<String, DirState>,
    /// Directories or headers that could not be read; the rest of the walk completed.
    pub errors: Vec<Error>,
    /// Directories listed (not skipped as unchanged).
    pub listed: usize,
}

/// Finds every run directory under `root`, reading each header.
pub fn find_runs(root: &Path) -> Walk {
    walk(root, &HashMap::new(), |_| {})
}

/// Finds every run under `root`; `previous` holds the directory states of an earlier walk, its
/// directories' and its runs' (empty for a full walk). An unchanged directory's subdirectories
/// are its recorded names and the runs `previous` has directly below it. `progress` is called
/// once per run found.
pub fn walk(
    root: &Path,
    previous: &HashMap<String, DirState>,
    progress: impl Fn(usize) + Sync,
) -> Walk {
    walk_with(root, previous, progress, |bytes, path, _, _| {
        IdHeader::from_json_bytes(bytes, path)
    })
}

/// [`walk`] turning each changed run directory's `id.json` into its header with `read` (given
/// the file's bytes, its path, the run's location and its markers), in parallel; a header `read`
/// refuses is reported among the errors.
pub(crate) fn walk_with<H: Send>(
    root: &Path,
    previous: &HashMap<String, DirState>,
    progress: impl Fn(usize) + Sync,
    read: impl Fn(&[u8], &Path, &str, &RunEntries) -> Result<H> + Sync,
) -> Walk<H> {
    let start = SystemTime::now();
    let out = Mutex::new(Walk {
        runs: Vec::new(),
        dirs: HashMap::new(),
        errors: Vec::new(),
        listed: 0,
    });
    let mut runs_below: HashMap<&str, Vec<&str>> = HashMap::new();
    for (loc, state) in previous {
        if state.subdirs.is_none() {
            let (parent, name) = loc.rsplit_once('/').unwrap_or(("", loc));
            runs_below.entry(parent).or_default().push(name);
        }
    }
    let ctx = Ctx {
        previous,
        runs_below,
        out: &out,
        progress: &progress,
        read: &read,
        recent_after_ns: nanos(start.checked_sub(RECENT).unwrap_or(UNIX_EPOCH)),
    };
    let opened = fs::openat(
        fs::CWD,
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    );
    match opened {
        Ok(fd) => {
            ctx.visit(fd, root.to_path_buf(), String::new());
        }
        Err(e) => ctx.error(Error::io("list", root, e.into())),
    }
    let mut walk = out.into_inner().expect("walk lock");
    walk.runs
        .par_sort_unstable_by(|a, b| a.location.cmp(&b.location));
    walk
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

struct Ctx<'a, H, P, R> {
    previous: &'a HashMap<String, DirState>,
    /// The runs in `previous` directly below each directory, by name: an unchanged directory's
    /// recorded names leave them out.
    runs_below: HashMap<&'a str, Vec<&'a str>>,
    out: &'a Mutex<Walk<H>>,
    progress: &'a P,
    read: &'a R,
    recent_after_ns: u64,
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_owned()
    } else {
        format!("{rel}/{name}")
    }
}

/// Opens the directory `name` below the open directory `parent`, never through a link.
fn open_subdir(parent: &OwnedFd, name: &str) -> std::io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(fs::openat(parent, name, flags, Mode::empty())?)
}

impl<H, P, R> Ctx<'_, H, P, R>
where
    H: Send,
    P: Fn(usize) + Sync,
    R: Fn(&[u8], &Path, &str, &RunEntries) -> Result<H> + Sync,
{
    fn error(&self, e: Error) {
        self.out.lock().expect("walk lock").errors.push(e);
    }

    fn found(&self, location: String, header: Option<H>, entries: RunEntries, state: DirState) {
        let mut out = self.out.lock().expect("walk lock");
        out.runs.push(FoundRun {
            location,
            header,
            entries,
            state,
        });
        (self.progress)(out.runs.len());
    }

    /// Visits subdirectory `name` of the open directory `parent` (at `dir`, location `rel`);
    /// whether it is a run (found as one).
    fn visit_child(&self, parent: &OwnedFd, dir: &Path, rel: &str, name: &str) -> bool {
        let path = dir.join(name);
        match open_subdir(parent, name) {
            Ok(fd) => self.visit(fd, path, join(rel, name)),
            Err(e) => {
                self.error(Error::io("list", &path, e));
                false
            }
        }
    }

    /// Visits the subdirectories `state` names, below the open directory `fd`, in parallel and
    /// records the directory's state with the names that are not runs.
    fn visit_children(&self, fd: &OwnedFd, dir: &Path, rel: String, state: DirState) {
        let names = state.subdirs.unwrap_or_default();
        let runs: Vec<bool> = names
            .par_iter()
            .map(|name| self.visit_child(fd, dir, &rel, name))
            .collect();
        let subdirs = names
            .into_iter()
            .zip(runs)
            .filter_map(|(name, run)| (!run).then_some(name))
            .collect();
        self.out.lock().expect("walk lock").dirs.insert(
            rel,
            DirState {
                subdirs: Some(subdirs),
                ..state
            },
        );
    }

    /// Visits the open directory `fd` (at `dir`, location `rel`); whether it is a run (found as
    /// one). Everything below is opened relative to it, so no path is looked up from the root
    /// again.
    fn visit(&self, fd: OwnedFd, dir: PathBuf, rel: String) -> bool {
        let stat = match fs::fstat(&fd) {
            Ok(s) => s,
            Err(e) => {
                self.error(Error::io("stat", &dir, e.into()));
                return false;
            }
        };
        let mtime_ns = (stat.st_mtime as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(stat.st_mtime_nsec as u64);
        let recent = mtime_ns >= self.recent_after_ns;

        if let Some(prev) = self.previous.get(&rel)
            && prev.mtime_ns == mtime_ns
            && !prev.recent
        {
            let mut state = DirState {
                mtime_ns,
                subdirs: prev.subdirs.clone(),
                recent,
            };
            let Some(subdirs) = &mut state.subdirs else {
                self.found(rel, None, RunEntries::default(), state);
                return true;
            };
            let runs = self.runs_below.get(rel.as_str()).into_iter().flatten();
            subdirs.extend(runs.map(|name| (*name).to_owned()));
            self.visit_children(&fd, &dir, rel, state);
            return false;
        }

        self.out.lock().expect("walk lock").listed += 1;
        let mut subdirs = Vec::new();
        let mut is_run = false;
        let mut markers = RunEntries::default();
        // Reported only if this is not a run: what is below a run is the run's own business.
        let mut errors = Vec::new();
        let mut buf = Vec::with_capacity(LIST_BUFFER);
        let mut entries = RawDir::new(&fd, buf.spare_capacity_mut());
        while let Some(entry) = entries.next() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.error(Error::io("list", &dir, e.into()));
                    return false;
                }
            };
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let ft = match entry.file_type() {
                FileType::Unknown => {
                    match fs::statat(&fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => FileType::from_raw_mode(st.st_mode),
                        Err(e) => {
                            errors.push(Error::io(
                                "stat",
                                dir.join(OsStr::from_bytes(name)),
                                e.into(),
                            ));
                            continue;
                        }
                    }
                }
                ft => ft,
            };
            if name == ID_FILE.as_bytes() {
                if ft != FileType::RegularFile {
                    // A linked id.json could point out of the root: refuse the directory.
                    self.error(Error::UnsafePath {
                        path: dir.join(ID_FILE),
                        reason: "id.json is not a regular file".into(),
                    });
                    return false;
                }
                is_run = true;
                continue;
            }
            if name == EVICTED_MARKER.as_bytes() {
                // As `remote::is_husk`: a file, reached through a link or not.
                markers.evicted = ft == FileType::RegularFile
                    || (ft == FileType::Symlink && crate::remote::is_husk(&dir));
            }
            if name == SIDECAR_DIR.as_bytes() {
                markers.resources = true;
            }
            if ft == FileType::Directory && !(rel.is_empty() && name == META_DIR.as_bytes()) {
                match std::str::from_utf8(name) {
                    Ok(n) => subdirs.push(n.to_owned()),
                    Err(_) => errors.push(Error::UnsafePath {
                        path: dir.join(OsStr::from_bytes(name)),
                        reason: "file name is not UTF-8; run locations must be".into(),
                    }),
                }
            }
        }
        if is_run {
            let state = DirState {
                mtime_ns,
                subdirs: None,
                recent,
            };
            let path = dir.join(ID_FILE);
            let header = crate::confine::open_listed_at(&fd, ID_FILE, &path)
                .and_then(|(f, size)| crate::run::read_sized(f, size, &path, ID_FILE_LIMIT))
                .and_then(|bytes| (self.read)(&bytes, &path, &rel, &markers));
            return match header {
                Ok(h) => {
                    self.found(rel, Some(h), markers, state);
                    true
                }
                Err(e) => {
                    // Not indexed, so revisited through its parent's names next time.
                    self.error(e);
                    false
                }
            };
        }
        if !errors.is_empty() {
            self.out.lock().expect("walk lock").errors.extend(errors);
        }
        subdirs.sort_unstable();
        let state = DirState {
            mtime_ns,
            subdirs: Some(subdirs),
            recent,
        };
        self.visit_children(&fd, &dir, rel, state);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: u8) -> String {
        format!(
            r#"{{"format": 1, "identity": "{}", "module": "m", "config": {{}}, "predicate": {{}}, "created_at": "2026-01-01T00:00:00Z"}}"#,
            hex::encode([id; 32])
        )
    }

    #[test]
    fn runs_are_found_without_descending_and_without_following_links() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in [
            "a/run1/nested",
            "b/c/run2",
            ".cairn/tmp/staged",
            "outside/run3",
            "evil",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        for (i, d) in [
            "a/run1",
            "a/run1/nested",
            "b/c/run2",
            ".cairn/tmp/staged",
            "outside/run3",
        ]
        .iter()
        .enumerate()
        {
            std::fs::write(r.join(d).join(ID_FILE), header(i as u8)).unwrap();
        }
        std::os::unix::fs::symlink(r.join("outside"), r.join("b/link")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", r.join("evil").join(ID_FILE)).unwrap();
        let w = find_runs(r);
        assert_eq!(w.errors.len(), 1);
        assert!(matches!(w.errors[0], Error::UnsafePath { .. }));
        let locations: Vec<_> = w.runs.iter().map(|r| r.location.as_str()).collect();
        assert_eq!(locations, ["a/run1", "b/c/run2", "outside/run3"]);
        assert!(w.runs.iter().all(|r| r.header.is_some()));
    }

    #[test]
    fn an_incremental_walk_skips_unchanged_directories() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for (i, d) in ["a/run1", "b/run2"].iter().enumerate() {
            std::fs::create_dir_all(r.join(d)).unwrap();
            std::fs::write(r.join(d).join(ID_FILE), header(i as u8)).unwrap();
        }
        let first = find_runs(r);
        // A directory records the subdirectories that are not runs: its runs are in `runs`.
        assert_eq!(first.dirs[""].subdirs, Some(vec!["a".into(), "b".into()]));
        assert_eq!(first.dirs["a"].subdirs, Some(vec![]));
        // Every directory's state, as if the first walk happened long ago (mtimes trusted).
        let mut previous = first.dirs.clone();
        previous.extend(
            first
                .runs
                .iter()
                .map(|f| (f.location.clone(), f.state.clone())),
        );
        previous.values_mut().for_each(|s| s.recent = false);
        let again = walk(r, &previous, |_| {});
        assert_eq!(again.listed, 0);
        assert_eq!(again.runs.len(), 2);
        assert!(again.runs.iter().all(|r| r.header.is_none()));

        // A new run changes its parent's mtime: only that part is listed again.
        std::fs::create_dir_all(r.join("b/run3")).unwrap();
        std::fs::write(r.join("b/run3").join(ID_FILE), header(9)).unwrap();
        let third = walk(r, &previous, |_| {});
        assert_eq!(third.runs.len(), 3);
        let new = third.runs.iter().find(|x| x.location == "b/run3").unwrap();
        assert!(new.header.is_some());
        assert_eq!(third.listed, 2, "only b/ and the new run are listed");
    }
}
