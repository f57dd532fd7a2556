//! Remotes: copies of runs and their artifacts on a directory mirror or an S3-compatible object
//! store; push, fetch (also on demand), safe evict, whereis (FORMAT.md §8).
//!
//! # API layout
//! - [`Remote`]: the object-level trait, implemented by [`DirRemote`] and [`S3Remote`].
//! - [`RemoteSpec`]: how a remote is reached; configured by name in `.cairn/remotes.json`
//!   ([`Store::add_remote`], [`Store::remove_remote`], [`Store::remotes`]) or through
//!   [`StoreBuilder::remote`](crate::StoreBuilder::remote).
//! - [`Store::push`], [`Store::fetch`], [`Store::fetch_many`], [`Store::evict`], [`Store::whereis`],
//!   [`Store::reindex_remote`], [`Store::verify_remote`], [`Store::gc_remote`].
//!
//! A remote holds run files at `<location>/<path>` (the run directory format), artifact bytes
//! content-addressed at `.cairn-remote/artifacts/<aa>/<sha256>`, and one manifest per run at
//! `.cairn-remote/manifests/<identity>.json`. The manifest is written last, with a
//! create-if-absent write: a copy without its manifest does not exist.

mod config;
mod copies;
mod dir;
mod evict;
mod fetch;
mod gc;
mod manifest;
mod push;
mod s3;
mod verify;

use std::io::{Read, Write};
use std::ops::Range;
use std::sync::Arc;

pub use config::{REMOTES_FILE, RemoteSpec, S3Spec};
pub use copies::Copy;
pub use dir::DirRemote;
pub use evict::{EVICTED_MARKER, EvictOptions};
pub use fetch::FetchReport;
pub use gc::RemoteGcReport;
pub use manifest::{Manifest, ManifestArtifact, ManifestFile};
pub use push::PushReport;
pub use s3::S3Remote;
pub use verify::{RemoteFinding, RemoteReport};

pub(crate) use config::{RemoteOptions, is_remote_name};
pub(crate) use evict::is_husk;

use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::index::Availability;
use crate::store::Store;

/// Prefix of every key a remote holds besides run files (module directories never start
/// with `.`, FORMAT.md §4.3, so no run location can collide with it).
pub const META_PREFIX: &str = ".cairn-remote";

/// Outcome of a create-if-absent write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// The object did not exist and now holds the bytes.
    Created,
    /// An object already existed under the key; nothing was written.
    Exists,
}

/// Progress callback: called with the number of bytes moved since the last call.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// An object store holding copies of runs: keys are `/`-separated relative paths.
///
/// Every write is create-if-absent: nothing that exists is ever overwritten.
pub trait Remote: Send + Sync + std::fmt::Debug {
    /// The remote's configured name.
    fn name(&self) -> &str;

    /// Streams `size` bytes from `src` to `key` unless an object exists there. A partial
    /// upload (a crash, an error) never appears under `key`.
    fn put_stream(
        &self,
        key: &str,
        src: &mut dyn Read,
        size: u64,
        progress: Progress<'_>,
    ) -> Result<Put>;

    /// Writes the small object `bytes` to `key` unless an object exists there.
    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<Put>;

    /// Streams the object at `key` into `sink`; `None` when there is none.
    fn get(&self, key: &str, sink: &mut dyn Write, progress: Progress<'_>) -> Result<Option<u64>>;

    /// Bytes `range` of the object at `key`.
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>>;

    /// The size of the object at `key`; `None` when there is none.
    fn size(&self, key: &str) -> Result<Option<u64>>;

    /// Every key under `prefix` (a directory-like prefix ending in `/`).
    fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// Deletes the object at `key`; absent is fine.
    fn delete(&self, key: &str) -> Result<()>;

    /// When the object at `key` was written; `None` when there is none.
    fn modified(&self, key: &str) -> Result<Option<std::time::SystemTime>>;

    /// Run files larger than this many bytes are stored content-addressed (at
    /// [`artifact_key`] of their sha256) instead of at their path, because this remote cannot
    /// write objects that large create-if-absent. `None`: every run file is at its path.
    fn content_addressed_above(&self) -> Option<u64> {
        None
    }
}

/// A whole small object, or `None`.
/// An object read whole, refused past `limit` bytes (a hostile remote's object may be huge):
/// the read stops one chunk past the limit.
pub(crate) fn get_bytes(remote: &dyn Remote, key: &str, limit: u64) -> Result<Option<Vec<u8>>> {
    /// A sink that refuses to grow past `limit`.
    struct Bounded {
        buf: Vec<u8>,
        limit: u64,
        seen: u64,
    }
    impl std::io::Write for Bounded {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.seen += b.len() as u64;
            if self.seen > self.limit {
                return Err(std::io::Error::other("over the size limit"));
            }
            self.buf.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut sink = Bounded {
        buf: Vec::new(),
        limit,
        seen: 0,
    };
    match remote.get(key, &mut sink, &|_| {}) {
        Ok(got) => Ok(got.map(|_| sink.buf)),
        Err(_) if sink.seen > limit => Err(Error::TooLarge {
            path: format!("{}:{key}", remote.name()).into(),
            size: sink.seen,
            limit,
        }),
        Err(e) => Err(e),
    }
}

/// The key of a run's manifest.
pub(crate) fn manifest_key(identity: &Identity) -> String {
    format!("{META_PREFIX}/manifests/{identity}.json")
}

/// The key of artifact bytes (and of content-addressed run files) with this sha256
/// (lowercase hex).
pub(crate) fn artifact_key(sha256: &str) -> String {
    format!("{META_PREFIX}/artifacts/{}/{sha256}", &sha256[..2])
}

/// The key of a run file.
pub(crate) fn file_key(location: &str, path: &str) -> String {
    if location.is_empty() {
        path.to_owned()
    } else {
        format!("{location}/{path}")
    }
}

/// The key of run file `f` of the copy at `location`: content-addressed when `remote` keeps
/// files of its size that way (FORMAT.md §8.3), else [`file_key`].
pub(crate) fn run_file_key(remote: &dyn Remote, location: &str, f: &ManifestFile) -> String {
    if remote
        .content_addressed_above()
        .is_some_and(|max| f.size > max)
    {
        artifact_key(&f.sha256)
    } else {
        file_key(location, &f.path)
    }
}

/// An [`Error::Remote`] naming the remote, the key and what went wrong.
pub(crate) fn remote_error(remote: &str, key: &str, reason: impl Into<String>) -> Error {
    Error::Remote {
        remote: remote.to_owned(),
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Where a run is: its state, and which remotes hold a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Whereis {
    /// The run.
    pub identity: Identity,
    /// Its location (relative to the root; also its location on remotes).
    pub location: String,
    /// Local, remote or evicted.
    pub state: Availability,
    /// The remotes holding a copy, by name.
    pub copies: Vec<Copy>,
}

impl Store {
    /// The remote called `name`: from the builder, else from `.cairn/remotes.json`. Opened once
    /// per store; opening an S3 remote probes that it honors conditional writes.
    pub fn remote(&self, name: &str) -> Result<Arc<dyn Remote>> {
        self.remotes.open(self.root(), name)
    }

    /// Where run `identity` is, and which remotes hold verified copies.
    pub fn whereis(&self, identity: &Identity) -> Result<Option<Whereis>> {
        self.healing(|| self.whereis_once(identity))
    }

    /// [`Store::whereis`], once.
    fn whereis_once(&self, identity: &Identity) -> Result<Option<Whereis>> {
        let index = self.index()?;
        let Some(rec) = index.get(identity)? else {
            return Ok(None);
        };
        Ok(Some(Whereis {
            identity: rec.identity,
            location: rec.location,
            state: rec.state,
            copies: copies::of_run(index, &rec.identity)?,
        }))
    }

    /// Before reading the bytes of resource `res`: makes its run local ([`Store::open_run`]'s
    /// rule), then fetches the bytes of a record still `remote` alone (its run was local
    /// already, e.g. after a crash inside a fetch); returns the record as it now is. Inline
    /// bytes never leave the index, so they need nothing. With on-demand fetching off, a
    /// remote record gives [`Error::ResourceRemote`] naming the resource and the remote.
    pub(crate) fn local_resource(
        &self,
        res: crate::artifact::ResourceRecord,
    ) -> Result<crate::artifact::ResourceRecord> {
        use crate::artifact::Backend;
        match res.backend {
            Backend::Inline => return Ok(res),
            Backend::Remote if !self.remotes.fetch_on_demand => {
                return Err(Error::ResourceRemote {
                    id: res.id,
                    name: res.name.clone(),
                    remote: res.remote_name().unwrap_or_default().to_owned(),
                });
            }
            _ => {}
        }
        self.make_local(&res.run)?;
        let res = self
            .get_resource(res.id)?
            .ok_or(Error::UnknownResource { id: res.id })?;
        if res.backend == Backend::Remote {
            return self.fetch_resource(res, &|_| {});
        }
        Ok(res)
    }

    /// Fetches run `identity` when the index has it `evicted` or `remote` and on-demand
    /// fetching is on; an [`Error::NotLocal`] naming the run when it is off.
    pub(crate) fn make_local(&self, identity: &Identity) -> Result<()> {
        let Some(rec) = self.lookup(self.index()?, identity)? else {
            return Ok(());
        };
        if rec.state == Availability::Local {
            return Ok(());
        }
        if !self.remotes.fetch_on_demand {
            return Err(Error::NotLocal {
                identity: rec.identity,
                state: rec.state.as_str(),
            });
        }
        self.fetch(&rec.identity, None, &|_| {}).map(drop)
    }
}

/// A reader that hashes (sha256) what passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: sha2::Digest::new(),
        }
    }

    /// The sha256 (lowercase hex) of everything read.
    pub(crate) fn finish(self) -> String {
        hex::encode(sha2::Digest::finalize(self.hasher))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes (sha256) what passes through it.
pub(crate) struct HashingWriter<W> {
    pub(crate) inner: W,
    hasher: sha2::Sha256,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: sha2::Digest::new(),
        }
    }

    /// The sha256 (lowercase hex) of everything written.
    pub(crate) fn finish(self) -> (W, String) {
        (self.inner, hex::encode(sha2::Digest::finalize(self.hasher)))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The sha256 of the object at `key`, streamed; `None` when there is none.
pub(crate) fn remote_sha256(remote: &dyn Remote, key: &str) -> Result<Option<(u64, String)>> {
    let mut w = HashingWriter::new(std::io::sink());
    let size = remote.get(key, &mut w, &|_| {})?;
    Ok(size.map(|s| (s, w.finish().1)))
}

/// Reads and decodes the manifest of `identity`; `None` when the remote has none.
pub(crate) fn read_manifest(remote: &dyn Remote, identity: &Identity) -> Result<Option<Manifest>> {
    let key = manifest_key(identity);
    let Some(bytes) = get_bytes(remote, &key, manifest::MANIFEST_LIMIT)? else {
        return Ok(None);
    };
    let label = std::path::PathBuf::from(format!("{}:{key}", remote.name()));
    let m = Manifest::decode(&bytes, &label)?;
    if m.identity != *identity {
        return Err(Error::format(
            label,
            format!("manifest names run {}, not {identity}", m.identity),
        ));
    }
    Ok(Some(m))
}

/// Checks that every object a manifest lists is on the remote with its size (a HEAD each);
/// with `hashes`, also streams each and checks its sha256. Returns what is wrong, if anything.
pub(crate) fn check_copy(remote: &dyn Remote, m: &Manifest, hashes: bool) -> Result<Vec<String>> {
    let mut wrong = Vec::new();
    let objects = m
        .files
        .iter()
        .map(|f| (run_file_key(remote, &m.location, f), f.size, &f.sha256))
        .chain(
            m.artifacts
                .iter()
                .map(|a| (artifact_key(&a.sha256), a.size, &a.sha256)),
        );
    for (key, size, sha) in objects {
        if hashes {
            match remote_sha256(remote, &key)? {
                None => wrong.push(format!("{key} is missing")),
                Some((s, _)) if s != size => {
                    wrong.push(format!("{key} is {s} bytes, the manifest says {size}"))
                }
                Some((_, h)) if h != *sha => {
                    wrong.push(format!("{key} has sha256 {h}, the manifest says {sha}"))
                }
                Some(_) => {}
            }
        } else {
            match remote.size(&key)? {
                None => wrong.push(format!("{key} is missing")),
                Some(s) if s != size => {
                    wrong.push(format!("{key} is {s} bytes, the manifest says {size}"))
                }
                Some(_) => {}
            }
        }
    }
    Ok(wrong)
}
