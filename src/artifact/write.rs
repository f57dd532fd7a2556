//! Writing resource bytes durably: a file in the staging directory, fsynced, renamed into its
//! shard and the shard fsynced (filesystem), or a spool file copied into the index (inline).
//! The sha256 is computed while the bytes stream through: the caller's thread hashes each
//! large piece while a rayon worker `write()`s the same piece, so hashing overlaps the writes
//! without copying the caller's bytes (FORMAT.md §7.5).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::buf::AlignedBuf;
use super::fs::{STAGING_DIR, file_path};
use super::record::{Backend, ResourceRecord};
use crate::durable::{self, failpoint};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::store::Store;

/// Bytes per buffered write and per read chunk; caller slices at least this long skip the buffer.
pub(crate) const CHUNK: usize = 1 << 20;
/// Pieces shorter than this (only the last, partial buffer of a stream) are hashed and written
/// one after the other on the caller's thread, without waking a worker.
const PARALLEL_MIN: usize = 128 << 10;
/// Bytes of a staging file after which the writer asks the kernel to start writing them back
/// (FORMAT.md §7.5): the disk works while the rest streams in, and the final fsync is short.
const WRITEBACK_STEP: u64 = 8 << 20;
/// Largest inline resource; larger ones belong in the filesystem backend.
pub const INLINE_LIMIT: u64 = 64 << 20;

/// The sha256 of `bytes`, 64 lowercase hex characters.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What a write is for.
#[derive(Debug)]
pub(crate) enum Plan {
    /// A new resource of `run`.
    New {
        id: Uuid,
        run: Identity,
        run_dir: PathBuf,
        name: String,
        description: String,
    },
    /// New bytes (or a new backend) for an existing resource.
    Replace(ResourceRecord),
}

/// Bytes ready to be referenced by a record.
pub(crate) struct Staged<'a> {
    pub(crate) backend: Backend,
    pub(crate) size: u64,
    pub(crate) sha256: String,
    pub(crate) payload: Payload<'a>,
}

/// Where staged bytes are.
pub(crate) enum Payload<'a> {
    /// A durable file under its final name.
    File(PathBuf),
    /// Bytes in memory, for the inline table.
    Slice(&'a [u8]),
    /// An unlinked spool file, for the inline table.
    Spool(File),
}

/// Writes `bytes` to the file of `file_id` under `root` (absolute, resolved): staging file,
/// fsync, rename into the shard, fsync the shard. Returns the final path. On error nothing
/// remains under a final name and the staging file is removed.
pub(crate) fn write_file(root: &Path, file_id: Uuid, bytes: &[u8]) -> Result<PathBuf> {
    let tmp = staging_path(root, file_id)?;
    let result = (|| {
        let f = create_new(&tmp)?;
        // Writeback of each full step starts while the next is written (a hint, as in the
        // streaming writer); the fsync below is what makes the file durable.
        append(&f, &tmp, bytes, 0, &mut 0, |o, l| {
            durable::start_writeback(&f, o, l);
        })?;
        durable::sync_file(&f, &tmp)?;
        publish(root, &tmp, file_id)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A fresh staging path under `root/.staging/`, the directories created.
pub(crate) fn staging_path(root: &Path, file_id: Uuid) -> Result<PathBuf> {
    let dir = crate::confine::create_dir_below(root, Path::new(STAGING_DIR))?;
    Ok(dir.join(format!("{file_id}.{}", Uuid::new_v4().simple())))
}

/// Creates `path`, which must not exist, for reading and writing.
pub(crate) fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io("create", path, e))
}

/// Renames a durable staging file into its shard and makes the entry durable.
fn publish(root: &Path, tmp: &Path, file_id: Uuid) -> Result<PathBuf> {
    let dest = rename_into_shard(root, tmp, file_id)?;
    durable::sync_dir(dest.parent().expect("a shard"))?;
    Ok(dest)
}

/// Renames a durable staging file into its shard (created durably if new). The entry is durable
/// only once the caller fsyncs the shard directory.
pub(crate) fn rename_into_shard(root: &Path, tmp: &Path, file_id: Uuid) -> Result<PathBuf> {
    let dest = file_path(root, file_id);
    let shard = dest.parent().expect("a shard");
    crate::confine::create_dir_below(root, shard.strip_prefix(root).expect("under the root"))?;
    failpoint("artifact.before_rename")?;
    fs::rename(tmp, &dest).map_err(|e| Error::io("rename", tmp, e))?;
    Ok(dest)
}

/// Where a streaming writer's bytes go: the file, their running sha256 and size.
struct Sink {
    file: File,
    /// The file's path, for errors (`<spool>` for the unlinked inline spool).
    path: PathBuf,
    /// Whether to start writeback as the file grows (the staging file, on Linux; the spool is
    /// never fsynced, so writing it back would be wasted I/O).
    hint: bool,
    /// Started at the first full [`WRITEBACK_STEP`] of a staging file.
    writeback: Option<durable::BackgroundWriteback>,
    hasher: Sha256,
    size: u64,
    /// Bytes of the file whose writeback has been started.
    written_back: u64,
}

impl Sink {
    /// Appends `data` and hashes it; for a piece of at least [`PARALLEL_MIN`] bytes the
    /// `write()`s run on a rayon worker while this thread hashes, and both end before return
    /// (a scope), so the caller's slice is never copied nor kept.
    fn absorb(&mut self, data: &[u8]) -> Result<()> {
        if self.hint && self.writeback.is_none() && self.size + data.len() as u64 >= WRITEBACK_STEP
        {
            self.writeback = Some(durable::BackgroundWriteback::new(&self.file, &self.path)?);
        }
        let Sink {
            file,
            path,
            hasher,
            size,
            written_back,
            writeback,
            ..
        } = self;
        let mut write = || {
            append(file, path, data, *size, written_back, |o, l| {
                if let Some(w) = writeback.as_ref() {
                    w.start(o, l);
                }
            })
        };
        let result = if data.len() < PARALLEL_MIN {
            hasher.update(data);
            write()
        } else {
            let mut result = Ok(());
            rayon::in_place_scope(|s| {
                s.spawn(|_| result = write());
                hasher.update(data);
            });
            result
        };
        if result.is_ok() {
            *size += data.len() as u64;
        }
        result
    }
}

/// Writes `data` at the end of `file` (`at` bytes long) and calls `start_writeback(offset, len)`
/// for each [`WRITEBACK_STEP`] completed since `written_back` (advanced accordingly).
fn append(
    mut file: &File,
    path: &Path,
    data: &[u8],
    at: u64,
    written_back: &mut u64,
    mut start_writeback: impl FnMut(u64, u64),
) -> Result<()> {
    failpoint("artifact.write")?;
    let mut end = at;
    for piece in data.chunks(WRITEBACK_STEP as usize) {
        file.write_all(piece)
            .map_err(|e| Error::io("write", path, e))?;
        end += piece.len() as u64;
        if end - *written_back >= WRITEBACK_STEP {
            start_writeback(*written_back, end - *written_back);
            *written_back = end;
        }
    }
    Ok(())
}

/// A streaming writer of a resource's bytes (`impl Write`); nothing is recorded until
/// [`commit`](ResourceWriter::commit). The bytes never sit in memory as a whole: size and
/// sha256 are computed as they stream. Dropped without commit, it leaves nothing behind.
pub struct ResourceWriter<'s> {
    store: &'s Store,
    /// Taken by `commit`.
    plan: Option<Plan>,
    backend: Backend,
    file_id: Uuid,
    root: PathBuf,
    sink: Sink,
    /// The staging file of the filesystem backend, removed on drop until published.
    tmp: Option<PathBuf>,
    /// Small writes gather here until [`CHUNK`] bytes; `filled` of them are pending.
    buf: AlignedBuf,
    filled: usize,
    failed: bool,
}

impl std::fmt::Debug for ResourceWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceWriter")
            .field("backend", &self.backend)
            .field("file_id", &self.file_id)
            .field("size", &self.sink.size)
            .finish()
    }
}

impl<'s> ResourceWriter<'s> {
    /// A writer for `plan` into `backend`; `root` is the resolved filesystem root.
    pub(crate) fn new(
        store: &'s Store,
        plan: Plan,
        backend: Backend,
        root: PathBuf,
    ) -> Result<Self> {
        let file_id = match &plan {
            Plan::New { id, .. } => *id,
            Plan::Replace(_) => Uuid::new_v4(),
        };
        let (file, tmp) = match backend {
            Backend::Filesystem => {
                let tmp = staging_path(&root, file_id)?;
                (create_new(&tmp)?, Some(tmp))
            }
            Backend::Inline => {
                // A spool unlinked at once: a crash leaves nothing to clean up.
                let spool = store
                    .root()
                    .join(crate::store::META_DIR)
                    .join("tmp")
                    .join(format!("spool-{}", Uuid::new_v4().simple()));
                let f = create_new(&spool)?;
                fs::remove_file(&spool).map_err(|e| Error::io("remove", &spool, e))?;
                (f, None)
            }
            Backend::Remote => unreachable!("the configuration refuses remote for new bytes"),
        };
        let sink = Sink {
            file,
            path: tmp.clone().unwrap_or_else(|| PathBuf::from("<spool>")),
            hint: cfg!(target_os = "linux") && backend == Backend::Filesystem,
            writeback: None,
            hasher: Sha256::new(),
            size: 0,
            written_back: 0,
        };
        Ok(ResourceWriter {
            store,
            plan: Some(plan),
            backend,
            file_id,
            root,
            sink,
            tmp,
            buf: AlignedBuf::zeroed(CHUNK),
            filled: 0,
            failed: false,
        })
    }

    /// Sets the description of a new resource.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        if let Some(Plan::New { description, .. }) = &mut self.plan {
            *description = text.into();
        }
        self
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.sink.size + self.filled as u64
    }

    /// Hashes and appends `data` (the buffer's pending bytes or a caller's slice), refusing
    /// inline bytes past [`INLINE_LIMIT`]; an error fails the writer for good.
    fn absorb(sink: &mut Sink, backend: Backend, failed: &mut bool, data: &[u8]) -> Result<()> {
        let size = sink.size + data.len() as u64;
        let result = if backend == Backend::Inline && size > INLINE_LIMIT {
            Err(Error::TooLarge {
                path: sink.path.clone(),
                size,
                limit: INLINE_LIMIT,
            })
        } else {
            sink.absorb(data)
        };
        *failed |= result.is_err();
        result
    }

    /// Writes out the buffered bytes.
    fn flush_chunk(&mut self) -> Result<()> {
        if self.filled > 0 {
            let data = &self.buf[..self.filled];
            Self::absorb(&mut self.sink, self.backend, &mut self.failed, data)?;
            self.filled = 0;
        }
        Ok(())
    }

    /// Makes the bytes durable, then records them; returns the record. Until this returns,
    /// no record points at the new bytes.
    pub fn commit(mut self) -> Result<ResourceRecord> {
        if self.failed {
            return Err(Error::io(
                "write",
                self.tmp.clone().unwrap_or_default(),
                io::Error::other("an earlier write failed; nothing was recorded"),
            ));
        }
        self.flush_chunk()?;
        // The helper issues what is queued (one merged call) and ends; the fsync waits for it all.
        self.sink.writeback = None;
        if let Some(tmp) = &self.tmp {
            durable::sync_file(&self.sink.file, tmp)?;
        }
        let sha256 = hex::encode(std::mem::take(&mut self.sink.hasher).finalize());
        let payload = match self.backend {
            Backend::Filesystem => {
                let tmp = self.tmp.clone().expect("filesystem writers stage a file");
                let dest = publish(&self.root, &tmp, self.file_id)?;
                self.tmp = None;
                Payload::File(dest)
            }
            Backend::Remote => unreachable!("the configuration refuses remote for new bytes"),
            Backend::Inline => Payload::Spool(
                self.sink
                    .file
                    .try_clone()
                    .map_err(|e| Error::io("duplicate handle", "<spool>", e))?,
            ),
        };
        let plan = self.plan.take().expect("committed once");
        let staged = Staged {
            backend: self.backend,
            size: self.sink.size,
            sha256,
            payload,
        };
        self.store.commit_resource(plan, staged)
    }
}

impl Write for ResourceWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other("an earlier write failed"));
        }
        let to_io = |e| match e {
            Error::Io { source, .. } => source,
            other => io::Error::other(other),
        };
        if self.filled == 0 && data.len() >= CHUNK {
            // Large slices go straight to the file, hashed while they are written.
            Self::absorb(&mut self.sink, self.backend, &mut self.failed, data).map_err(to_io)?;
            return Ok(data.len());
        }
        let n = data.len().min(CHUNK - self.filled);
        self.buf.as_mut_slice()[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        if self.filled == CHUNK {
            self.flush_chunk().map_err(to_io)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ResourceWriter<'_> {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let _ = fs::remove_file(tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Model;

    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn store(dir: &Path, backend: Backend) -> (Store, crate::Run) {
        let store = Store::builder(dir)
            .ignore_artifact_env()
            .artifact_backend(backend)
            .open()
            .unwrap();
        let model = Model::new("w").with_config(&serde_json::json!({})).unwrap();
        let run = store.get_or_create(&model).unwrap();
        (store, run)
    }

    /// Small pieces (buffered), slices of a chunk or more (straight to the file, hashed while
    /// written), pieces that top up a partly filled buffer and pieces past a writeback step, in
    /// one stream: the bytes and the sha256 are those of the concatenation, on both backends.
    #[test]
    fn buffered_and_direct_pieces_keep_their_order_and_hash() {
        let step = WRITEBACK_STEP as usize;
        let lens = [
            CHUNK,
            5,
            CHUNK,
            CHUNK - 1,
            1,
            step + 7,
            0,
            PARALLEL_MIN,
            PARALLEL_MIN - 1,
            2 * CHUNK + 1,
            3,
        ];
        for backend in [Backend::Filesystem, Backend::Inline] {
            let dir = tempfile::tempdir().unwrap();
            let (store, run) = store(dir.path(), backend);
            let mut all = Vec::new();
            let mut w = store.resource_writer(&run, "mixed").unwrap();
            for (i, len) in lens.into_iter().enumerate() {
                let piece = bytes(len, i as u64);
                w.write_all(&piece).unwrap();
                all.extend_from_slice(&piece);
                assert_eq!(w.written(), all.len() as u64);
            }
            let rec = w.commit().unwrap();
            assert_eq!(rec.size_bytes, all.len() as u64);
            assert_eq!(rec.content_hash, sha256_hex(&all));
            assert!(*store.read_resource_data(rec.id).unwrap() == all[..]);
        }
    }

    /// The writeback hints cover the file from its start in contiguous ranges of at least a
    /// step, whatever the sizes of the pieces appended, and leave less than a step unhinted.
    #[test]
    fn writeback_hints_cover_each_completed_step_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = create_new(&path).unwrap();
        let step = WRITEBACK_STEP as usize;
        let mut hints = Vec::new();
        let (mut size, mut written_back) = (0u64, 0u64);
        for len in [step - 1, 1, 3, 2 * step + 5, 7, step, 0, step / 2] {
            let piece = vec![7u8; len];
            append(&f, &path, &piece, size, &mut written_back, |o, l| {
                hints.push((o, l))
            })
            .unwrap();
            size += len as u64;
        }
        assert_eq!(f.metadata().unwrap().len(), size);
        let mut next = 0;
        for &(o, l) in &hints {
            assert_eq!(o, next, "{hints:?}");
            assert!(l >= WRITEBACK_STEP, "{hints:?}");
            next = o + l;
        }
        assert_eq!(next, written_back);
        assert!(size - written_back < WRITEBACK_STEP, "{hints:?}");
    }

    /// More than [`INLINE_LIMIT`] bytes in one slice to the inline backend are refused before
    /// anything is written; the writer stays failed and records nothing.
    #[test]
    fn an_inline_slice_past_the_limit_is_refused_and_fails_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (store, run) = store(dir.path(), Backend::Inline);
        let mut w = store.resource_writer(&run, "big").unwrap();
        w.write_all(b"head").unwrap();
        let big = vec![0u8; INLINE_LIMIT as usize];
        // The buffer is topped up and written; the rest, a direct slice, crosses the limit.
        let err = w.write_all(&big).unwrap_err();
        assert_eq!(w.written(), CHUNK as u64);
        assert!(err.to_string().contains("<spool>"), "{err}");
        assert!(w.write(b"x").is_err());
        assert!(w.commit().is_err());
        assert!(store.list_resources(&run.identity()).unwrap().is_empty());
    }

    #[test]
    fn sha256_known_answers() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }
}
