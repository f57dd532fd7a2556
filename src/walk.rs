//! Parallel discovery of run directories under a root (rayon).
//!
//! A run directory is any directory holding `id.json`; the walk does not descend into runs, never
//! follows symbolic links (so it cannot leave the root) and skips the root's `.cairn/`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::Error;
use crate::run::ID_FILE;
use crate::store::META_DIR;

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Run directories, absolute, sorted.
    pub runs: Vec<PathBuf>,
    /// Directories that could not be listed; the rest of the walk completed.
    pub errors: Vec<Error>,
}

/// Finds every run directory under `root`.
pub fn find_runs(root: &Path) -> Walk {
    let out = Mutex::new(Walk::default());
    visit(root, true, &out);
    let mut walk = out.into_inner().expect("walk lock");
    walk.runs.sort();
    walk
}

fn visit(dir: &Path, is_root: bool, out: &Mutex<Walk>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            out.lock()
                .expect("walk lock")
                .errors
                .push(Error::io("list", dir, e));
            return;
        }
    };
    let mut subdirs = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.lock()
                    .expect("walk lock")
                    .errors
                    .push(Error::io("list", dir, e));
                continue;
            }
        };
        // DirEntry::file_type does not follow symlinks: a symlinked directory is not entered.
        let Ok(ft) = entry.file_type() else { continue };
        let name = entry.file_name();
        if name == ID_FILE {
            let mut out = out.lock().expect("walk lock");
            if ft.is_file() {
                out.runs.push(dir.to_path_buf());
            } else {
                // A linked id.json could point out of the root: refuse the directory.
                out.errors.push(Error::UnsafePath {
                    path: entry.path(),
                    reason: "id.json is not a regular file".into(),
                });
            }
            return;
        }
        if ft.is_dir() && !(is_root && name == META_DIR) {
            subdirs.push(entry.path());
        }
    }
    subdirs.par_iter().for_each(|d| visit(d, false, out));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_found_without_descending_and_without_following_links() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in [
            "a/run1/nested",
            "b/c/run2",
            ".cairn/tmp/staged",
            "outside/run3",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        for d in [
            "a/run1",
            "a/run1/nested",
            "b/c/run2",
            ".cairn/tmp/staged",
            "outside/run3",
        ] {
            std::fs::write(r.join(d).join(ID_FILE), "{}").unwrap();
        }
        std::os::unix::fs::symlink(r.join("outside"), r.join("b/link")).unwrap();
        std::fs::create_dir_all(r.join("evil")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", r.join("evil").join(ID_FILE)).unwrap();
        let w = find_runs(r);
        assert_eq!(w.errors.len(), 1);
        assert!(matches!(w.errors[0], Error::UnsafePath { .. }));
        assert_eq!(
            w.runs,
            vec![r.join("a/run1"), r.join("b/c/run2"), r.join("outside/run3")]
        );
    }
}
