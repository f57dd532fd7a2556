//! The `dir` remote: a directory (an NFS or cluster file system mount) holding runs in the run
//! directory format. Every object is written crash-safely and create-if-absent: a temporary file
//! in the target directory, fsync, `link(2)` to the final name (which fails if it exists), unlink
//! the temporary, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::manifest::is_safe_relative;
use super::{Progress, Put, Remote, remote_error};
use crate::durable::{self, failpoint};
use crate::error::{Error, Result};

/// Copy buffer size.
const CHUNK: usize = 1 << 20;
/// Marks a temporary file name; the listing skips them.
const TMP_MARK: &str = ".tmp-";

/// A directory remote.
#[derive(Debug)]
pub struct DirRemote {
    name: String,
    root: PathBuf,
}

impl DirRemote {
    /// Opens (creating if needed) the directory `root` as remote `name`.
    pub fn open(name: &str, root: &Path) -> Result<Self> {
        durable::create_dir_all(root)?;
        let root = fs::canonicalize(root).map_err(|e| Error::io("resolve", root, e))?;
        Ok(DirRemote {
            name: name.into(),
            root,
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        if !is_safe_relative(key) {
            return Err(remote_error(&self.name, key, "unsafe key"));
        }
        // A hostile mirror's links could lead reads or writes out of it.
        crate::confine::check_no_links(&self.root, Path::new(key))?;
        Ok(self.root.join(key))
    }

    /// Writes through `fill` into a temporary beside `key`'s file, then links it into place
    /// unless the name exists.
    fn create(&self, key: &str, fill: impl FnOnce(&mut File, &Path) -> Result<()>) -> Result<Put> {
        let dest = self.path(key)?;
        if fs::symlink_metadata(&dest).is_ok() {
            return Ok(Put::Exists);
        }
        let dir = dest.parent().expect("a key has a parent under the root");
        durable::create_dir_all(dir)?;
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        let tmp = dir.join(format!(
            ".{name}{TMP_MARK}{}",
            uuid::Uuid::new_v4().simple()
        ));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| Error::io("create", &tmp, e))?;
            fill(&mut f, &tmp)?;
            durable::sync_file(&f, &tmp)?;
            failpoint("remote.before_commit")?;
            match fs::hard_link(&tmp, &dest) {
                Ok(()) => Ok(Put::Created),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Put::Exists),
                Err(e) => Err(Error::io("link", &dest, e)),
            }
        })();
        let _ = fs::remove_file(&tmp);
        let put = result?;
        durable::sync_dir(dir)?;
        Ok(put)
    }
}

impl Remote for DirRemote {
    fn name(&self) -> &str {
        &self.name
    }

    fn put_stream(
        &self,
        key: &str,
        src: &mut dyn Read,
        size: u64,
        progress: Progress<'_>,
    ) -> Result<Put> {
        self.create(key, |f, tmp| {
            let mut buf = vec![0u8; CHUNK];
            let mut done = 0u64;
            loop {
                let n = src
                    .read(&mut buf)
                    .map_err(|e| remote_error(&self.name, key, format!("read source: {e}")))?;
                if n == 0 {
                    break;
                }
                failpoint("remote.upload_chunk")?;
                f.write_all(&buf[..n])
                    .map_err(|e| Error::io("write", tmp, e))?;
                done += n as u64;
                progress(n as u64);
            }
            if done != size {
                return Err(remote_error(
                    &self.name,
                    key,
                    format!("source gave {done} bytes, expected {size}"),
                ));
            }
            Ok(())
        })
    }

    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<Put> {
        self.create(key, |f, tmp| {
            f.write_all(bytes).map_err(|e| Error::io("write", tmp, e))
        })
    }

    fn get(&self, key: &str, sink: &mut dyn Write, progress: Progress<'_>) -> Result<Option<u64>> {
        let path = self.path(key)?;
        let mut f = match crate::confine::open_regular(&path) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(e),
            Ok((f, _)) => f,
        };
        let mut buf = vec![0u8; CHUNK];
        let mut done = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::io("read", &path, e))?;
            if n == 0 {
                return Ok(Some(done));
            }
            sink.write_all(&buf[..n])
                .map_err(|e| remote_error(&self.name, key, format!("write destination: {e}")))?;
            done += n as u64;
            progress(n as u64);
        }
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let path = self.path(key)?;
        let (f, _) = crate::confine::open_regular(&path)?;
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        f.read_exact_at(&mut buf, range.start)
            .map_err(|e| Error::io("read", &path, e))?;
        Ok(buf)
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key)?;
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", &path, e)),
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Err(remote_error(&self.name, key, "not a regular file")),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let start = self.root.join(prefix.trim_end_matches('/'));
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("list", &dir, e)),
                Ok(e) => e,
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
                let ty = entry
                    .file_type()
                    .map_err(|e| Error::io("stat", entry.path(), e))?;
                let name = entry.file_name();
                if ty.is_dir() {
                    stack.push(entry.path());
                } else if ty.is_file() && !name.to_string_lossy().contains(TMP_MARK) {
                    let rel = entry.path();
                    if let Some(key) = rel.strip_prefix(&self.root).ok().and_then(Path::to_str) {
                        out.push(key.to_owned());
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn modified(&self, key: &str) -> Result<Option<std::time::SystemTime>> {
        let path = self.path(key)?;
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", &path, e)),
            Ok(m) => m
                .modified()
                .map(Some)
                .map_err(|e| Error::io("stat", &path, e)),
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => durable::sync_dir(path.parent().expect("under the root")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_created_once_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let r = DirRemote::open("d", dir.path()).unwrap();
        assert_eq!(r.put_new("a/b/c", b"one").unwrap(), Put::Created);
        assert_eq!(r.put_new("a/b/c", b"two").unwrap(), Put::Exists);
        let mut src: &[u8] = b"three";
        assert_eq!(
            r.put_stream("a/b/c", &mut src, 5, &|_| {}).unwrap(),
            Put::Exists
        );
        assert_eq!(
            super::super::get_bytes(&r, "a/b/c", 3).unwrap().unwrap(),
            b"one"
        );
        assert!(matches!(
            super::super::get_bytes(&r, "a/b/c", 2),
            Err(Error::TooLarge { size: 3, .. })
        ));
        assert_eq!(r.get_range("a/b/c", 1..3).unwrap(), b"ne");
        assert_eq!(r.list("a/").unwrap(), vec!["a/b/c".to_owned()]);
        assert_eq!(fs::read_dir(dir.path().join("a/b")).unwrap().count(), 1);
        assert!(r.put_new("../x", b"").is_err());
    }

    #[test]
    fn a_short_source_leaves_nothing_under_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let r = DirRemote::open("d", dir.path()).unwrap();
        let mut src: &[u8] = b"abc";
        assert!(r.put_stream("k", &mut src, 10, &|_| {}).is_err());
        assert_eq!(r.size("k").unwrap(), None);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
