//! Staying inside a root: cairn never follows a symbolic link below a root it owns (the store
//! root, the artifact root, a `dir` remote), so a tree received from someone else cannot send a
//! read or a write outside (FORMAT.md §4.5).

use std::fs::{self, File};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::durable;
use crate::error::{Error, Result};

const LINK: &str = "a symbolic link below a cairn root (links are never followed)";

/// Refuses `rel` unless it is a plain relative path (no `..`, `.`, or root) none of whose
/// existing components below `root` is a symbolic link. Components that do not exist yet are
/// fine: whatever creates them creates real directories.
pub(crate) fn check_no_links(root: &Path, rel: &Path) -> Result<()> {
    let mut p = root.to_path_buf();
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(Error::UnsafePath {
                path: root.join(rel),
                reason: "not a plain relative path below the root".into(),
            });
        };
        p.push(name);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::UnsafePath {
                    path: p,
                    reason: LINK.into(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("stat", &p, e)),
        }
    }
    Ok(())
}

/// Creates the directory `root/rel` (and missing parents, durably), refusing links on the way.
pub(crate) fn create_dir_below(root: &Path, rel: &Path) -> Result<PathBuf> {
    check_no_links(root, rel)?;
    let dir = root.join(rel);
    durable::create_dir_all(&dir)?;
    // A link swapped in meanwhile is caught here; the directory itself was created real.
    check_no_links(root, rel)?;
    Ok(dir)
}

/// Opens `path` for reading only if it is a regular file: not a link (which could lead out of
/// the root), nor a FIFO or device (which could block or never end, and is never opened). The
/// opened file is checked to be the one inspected. Returns the file and its size. A missing file
/// is an [`Error::Io`] of kind `NotFound`.
pub(crate) fn open_regular(path: &Path) -> Result<(File, u64)> {
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io("read", path, e))?;
    if !meta.is_file() {
        return Err(Error::UnsafePath {
            path: path.into(),
            reason: if meta.file_type().is_symlink() {
                LINK.into()
            } else {
                "not a regular file".into()
            },
        });
    }
    let (f, opened) = open_no_follow(path)?;
    if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
        return Err(Error::UnsafePath {
            path: path.into(),
            reason: "replaced while it was opened".into(),
        });
    }
    Ok((f, opened.len()))
}

/// [`open_regular`] for `name` below the open directory `dir` (at `path`), which the
/// directory's listing has just shown to be a regular file, without a `stat` beforehand: what
/// was put in its place since (a link, a FIFO) is refused all the same, by the open itself or by
/// a check of the opened file.
pub(crate) fn open_listed_at(dir: &OwnedFd, name: &str, path: &Path) -> Result<(File, u64)> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let f = rustix::fs::openat(dir, name, flags, Mode::empty())
        .map_err(|e| no_follow_error(path, e.into()))?;
    let (f, opened) = regular(File::from(f), path)?;
    Ok((f, opened.len()))
}

/// Opens `path` read-only, never through a link in its last component (`O_NOFOLLOW`) and without
/// blocking on a FIFO (`O_NONBLOCK`, which changes nothing for regular files); refuses anything
/// but a regular file.
fn open_no_follow(path: &Path) -> Result<(File, fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| no_follow_error(path, e))?;
    regular(f, path)
}

/// The error of an `O_NOFOLLOW` open: `ELOOP` means a link.
fn no_follow_error(path: &Path, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ELOOP) => Error::UnsafePath {
            path: path.into(),
            reason: LINK.into(),
        },
        _ => Error::io("read", path, e),
    }
}

/// `f` (opened from `path`) and its metadata, if it is a regular file.
fn regular(f: File, path: &Path) -> Result<(File, fs::Metadata)> {
    let meta = f.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !meta.is_file() {
        return Err(Error::UnsafePath {
            path: path.into(),
            reason: "not a regular file".into(),
        });
    }
    Ok((f, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_fifos_and_dotdot_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        fs::write(r.join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink(r.join("a"), r.join("l")).unwrap();
        std::os::unix::fs::symlink(r.join("a/b/f"), r.join("a/lf")).unwrap();
        check_no_links(r, Path::new("a/b/f")).unwrap();
        check_no_links(r, Path::new("a/new/deeper")).unwrap();
        for bad in ["l/b/f", "a/lf", "a/../a", "/a"] {
            let err = check_no_links(r, Path::new(bad)).unwrap_err();
            assert!(matches!(err, Error::UnsafePath { .. }), "{bad}: {err}");
        }
        assert!(create_dir_below(r, Path::new("l/c")).is_err());
        assert!(!r.join("a/c").exists());
        assert!(open_regular(&r.join("a/b/f")).is_ok());
        assert!(matches!(
            open_regular(&r.join("a/lf")),
            Err(Error::UnsafePath { .. })
        ));
        let fifo = r.join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(matches!(open_regular(&fifo), Err(Error::UnsafePath { .. })));
        // What a listing showed as a file but is now a link or a FIFO: refused, without blocking.
        let dir: OwnedFd = File::open(r).unwrap().into();
        let at = |name: &str| open_listed_at(&dir, name, &r.join(name));
        std::fs::copy(r.join("a/b/f"), r.join("f")).unwrap();
        std::os::unix::fs::symlink(r.join("a/b/f"), r.join("lf")).unwrap();
        assert_eq!(at("f").unwrap().1, 1);
        for bad in ["lf", "fifo", "a"] {
            let err = at(bad).unwrap_err();
            assert!(matches!(err, Error::UnsafePath { .. }), "{bad}: {err}");
        }
    }
}
