//! Crash-safe file system steps. Every write that must survive a crash goes through here:
//! write to a temporary name, fsync the file, rename into place, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Creates `path` (which must not exist), writes `bytes` and fsyncs the file.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io("create", path, e))?;
    failpoint_at("durable.write", "write", path)?;
    f.write_all(bytes)
        .map_err(|e| Error::io("write", path, e))?;
    sync_file(&f, path)
}

/// fsyncs an open file.
pub(crate) fn sync_file(f: &File, path: &Path) -> Result<()> {
    failpoint_at("durable.fsync", "fsync", path)?;
    f.sync_all().map_err(|e| Error::io("fsync", path, e))
}

/// fsyncs a directory, making entries created, renamed or removed in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    failpoint_at("durable.fsync_dir", "fsync directory", dir)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// Creates `dir` and any missing ancestors, fsyncing each parent that gained an entry.
pub(crate) fn create_dir_all(dir: &Path) -> Result<()> {
    // The empty path is the parent of a relative one-component path: the current directory.
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            sync_dir(parent_dir(dir))?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(Error::io("create directory", dir, e)),
    }
}

/// The directory holding `path` (`.` for a bare relative name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether `name` is a temporary of [`replace_file`] (`.<name>.tmp-<32 hex>`): a crash between
/// its write and its rename leaves one behind, which is never part of what the directory holds.
pub(crate) fn is_temporary(name: &str) -> bool {
    name.starts_with('.')
        && name.rsplit_once(".tmp-").is_some_and(|(_, tail)| {
            tail.len() == 32 && tail.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// Replaces `path` atomically with `bytes`: a reader sees the old file or the new, never a mix,
/// and after return the new content survives a crash.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    replace_file_unsynced_dir(path, bytes)?;
    sync_dir(parent_dir(path))
}

/// [`replace_file`] without the final directory fsync: the new content is durable, and the
/// swap is once the caller fsyncs the directory (one fsync for many files in it).
pub(crate) fn replace_file_unsynced_dir(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = write_new(&tmp, bytes).and_then(|()| {
        failpoint_at("durable.before_rename", "rename", &tmp)?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A fresh temporary name beside `path`: `.<name>.tmp-<random>`.
fn temp_path(path: &Path) -> std::path::PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    parent_dir(path).join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()))
}

/// [`replace_file`] with content streamed by `fill` into the new file (given with its temporary
/// path, for errors). Only if `fill` succeeds is the file fsynced and renamed over `path` and
/// the directory fsynced; otherwise the temporary is removed and `path` is untouched.
pub(crate) fn replace_file_with(
    path: &Path,
    fill: impl FnOnce(&mut File, &Path) -> Result<()>,
) -> Result<()> {
    let tmp = temp_path(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::io("create", &tmp, e))?;
    let result = failpoint("durable.write")
        .and_then(|()| fill(&mut f, &tmp))
        .and_then(|()| sync_file(&f, &tmp))
        .and_then(|()| failpoint("durable.before_rename"))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_dir(parent_dir(path))
}

/// Asks the kernel to start writing `f`'s dirty pages in `offset..offset + len` to disk without
/// waiting (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`, as RocksDB's `bytes_per_sync`), so
/// that the fsync ending a long write finds little left to do. A hint only: durability comes
/// from [`sync_file`] alone, which also reports any write error. Elsewhere it does nothing.
#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "sync_file_range(2) has no wrapper in std; a plain system call on a borrowed fd"
)]
pub(crate) fn start_writeback(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: no memory is passed; the descriptor is open for the whole call (borrowed from
    // `f`). The result is ignored on purpose: errors of the writeback surface in the fsync.
    let _ =
        unsafe { libc::sync_file_range(f.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Does nothing off Linux: the final fsync writes everything.
#[cfg(not(target_os = "linux"))]
pub(crate) fn start_writeback(_f: &File, _offset: u64, _len: u64) {}

/// [`start_writeback`] on a helper thread: `sync_file_range` submits the pages itself and
/// blocks while the device queue is full, so a writer that also hashes hands the hints here and
/// keeps streaming at memory speed while the disk stays busy. Ranges that queue up while a call
/// blocks are merged into one. Dropping it waits for the call in progress, if any.
pub(crate) struct BackgroundWriteback {
    tx: Option<std::sync::mpsc::Sender<(u64, u64)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundWriteback {
    /// A helper thread starting the writeback of ranges of `f` (its own handle to the file).
    pub(crate) fn new(f: &File, path: &Path) -> Result<Self> {
        let f = f
            .try_clone()
            .map_err(|e| Error::io("duplicate handle", path, e))?;
        let (tx, rx) = std::sync::mpsc::channel::<(u64, u64)>();
        let thread = std::thread::Builder::new()
            .name("cairn-writeback".into())
            .spawn(move || {
                while let Ok((mut lo, len)) = rx.recv() {
                    let mut hi = lo + len;
                    for (o, l) in rx.try_iter() {
                        lo = lo.min(o);
                        hi = hi.max(o + l);
                    }
                    start_writeback(&f, lo, hi - lo);
                }
            })
            .map_err(|e| Error::io("start writeback thread", path, e))?;
        Ok(BackgroundWriteback {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues the writeback of `offset..offset + len`; returns at once.
    pub(crate) fn start(&self, offset: u64, len: u64) {
        if let Some(tx) = &self.tx {
            // The thread only ends once `tx` is dropped, so the send cannot fail.
            let _ = tx.send((offset, len));
        }
    }
}

impl Drop for BackgroundWriteback {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for BackgroundWriteback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackgroundWriteback")
    }
}

/// Named failpoints for crash and fault tests (feature `failpoints`).
///
/// `CAIRN_FAILPOINTS="name=action,..."` where action is `error` (return an injected I/O error),
/// `enospc` (the same as ENOSPC) or `abort` (kill the process on the spot, as a crash would).
/// `action@N` fires only from the N-th time the point is reached (1-based) in this process, so a
/// fault can hit in the middle of a batch; `action@N-M` only from the N-th to the M-th time. The
/// name `*` stands for every point, counted together: `*=abort@N` stops the process at the N-th
/// point it reaches, whichever it is, so N = 1, 2, ... enumerates every step of an operation.
/// An abort names the point on stderr first. Without the feature this compiles to nothing.
#[cfg(feature = "failpoints")]
pub(crate) fn failpoint(name: &str) -> Result<()> {
    match injected(name) {
        Some(e) => Err(Error::io("failpoint", name, e)),
        None => Ok(()),
    }
}

/// [`failpoint`] for a step on `path`: an injected error names the file and the operation
/// (`op`), as a real failure of that step would.
#[cfg(feature = "failpoints")]
pub(crate) fn failpoint_at(name: &str, op: &'static str, path: &Path) -> Result<()> {
    match injected(name) {
        Some(e) => Err(Error::io(op, path, e)),
        None => Ok(()),
    }
}

/// The failure `CAIRN_FAILPOINTS` injects at this passage through `name`, if any; aborts here
/// when the action is `abort`.
#[cfg(feature = "failpoints")]
pub(crate) fn injected(name: &str) -> Option<std::io::Error> {
    /// Passages so far, per point name (`*`: through any point).
    static HITS: std::sync::Mutex<Vec<(String, u64)>> = std::sync::Mutex::new(Vec::new());
    let spec = std::env::var("CAIRN_FAILPOINTS").ok()?;
    for item in spec.split(',') {
        let Some((point, action)) = item.split_once('=') else {
            continue;
        };
        if point != name && point != "*" {
            continue;
        }
        let (action, from, to) = match action.split_once('@') {
            Some((a, range)) => {
                let (n, m) = range.split_once('-').unwrap_or((range, ""));
                let n = n.parse::<u64>().unwrap_or(1);
                (a, n, m.parse::<u64>().unwrap_or(u64::MAX))
            }
            None => (action, 1, u64::MAX),
        };
        let hit = {
            let mut hits = HITS.lock().expect("failpoint lock");
            match hits.iter_mut().find(|(p, _)| p == point) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    hits.push((point.to_owned(), 1));
                    1
                }
            }
        };
        if hit < from || hit > to {
            continue;
        }
        return match action {
            "abort" => {
                eprintln!("cairn: failpoint {name}: abort (passage {hit} of {point})");
                std::process::abort()
            }
            "enospc" => Some(std::io::Error::from_raw_os_error(28)),
            _ => Some(std::io::Error::other(format!(
                "injected failure at failpoint {name}"
            ))),
        };
    }
    None
}

/// Named failpoints compile to nothing without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn failpoint(_name: &str) -> Result<()> {
    Ok(())
}

/// Named failpoints compile to nothing without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn failpoint_at(_name: &str, _op: &'static str, _path: &Path) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_file_swaps_content_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("entry");
        replace_file(&p, b"one").unwrap();
        replace_file(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temporaries_are_recognized_by_name() {
        let tmp = format!(".id.json.tmp-{}", uuid::Uuid::new_v4().simple());
        assert!(is_temporary(&tmp));
        for name in [
            "id.json",
            ".id.json.tmp-",
            "x.tmp-0123456789abcdef0123456789abcdef",
        ] {
            assert!(!is_temporary(name), "{name}");
        }
    }

    #[test]
    fn write_new_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        write_new(&p, b"a").unwrap();
        assert!(write_new(&p, b"b").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"a");
    }
}
