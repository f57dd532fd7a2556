//! Writing resource bytes durably: a file in the staging directory, fsynced, renamed into its
//! shard and the shard fsynced (filesystem), or a spool file copied into the index (inline).
//! The sha256 is computed while the bytes stream through, on a helper thread, so hashing
//! overlaps the writes (FORMAT.md §7.5).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::buf::AlignedBuf;
use super::fs::{STAGING_DIR, file_path};
use super::record::{Backend, ResourceRecord};
use crate::durable::{self, failpoint};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::store::Store;

/// Bytes per write and per hashed chunk.
pub(crate) const CHUNK: usize = 1 << 20;
/// Buffers in flight between the writer and the hashing thread.
const BUFFERS: usize = 4;
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
        let mut f = create_new(&tmp)?;
        failpoint("artifact.write")?;
        // Writeback of each full step starts while the next is written (a hint, as in the
        // streaming writer); the fsync below is what makes the file durable.
        let step = WRITEBACK_STEP as usize;
        for (i, piece) in bytes.chunks(step).enumerate() {
            f.write_all(piece)
                .map_err(|e| Error::io("write", &tmp, e))?;
            if piece.len() == step {
                durable::start_writeback(&f, (i * step) as u64, step as u64);
            }
        }
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

/// sha256 on a helper thread, fed whole buffers; empties come back for reuse.
struct HashPipe {
    tx: Option<mpsc::SyncSender<(AlignedBuf, usize)>>,
    spare: mpsc::Receiver<AlignedBuf>,
    thread: Option<JoinHandle<String>>,
    made: usize,
}

impl HashPipe {
    fn new() -> Self {
        let (tx, rx) = mpsc::sync_channel::<(AlignedBuf, usize)>(BUFFERS);
        let (back, spare) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut h = Sha256::new();
            for (buf, n) in rx {
                h.update(&buf[..n]);
                let _ = back.send(buf);
            }
            hex::encode(h.finalize())
        });
        HashPipe {
            tx: Some(tx),
            spare,
            thread: Some(thread),
            made: 0,
        }
    }

    fn buffer(&mut self) -> AlignedBuf {
        if let Ok(b) = self.spare.try_recv() {
            return b;
        }
        if self.made < BUFFERS {
            self.made += 1;
            return AlignedBuf::zeroed(CHUNK);
        }
        self.spare
            .recv()
            .expect("the hashing thread returns buffers")
    }

    fn submit(&mut self, buf: AlignedBuf, n: usize) {
        let tx = self.tx.as_ref().expect("open until finished");
        tx.send((buf, n)).expect("the hashing thread runs");
    }

    fn finish(mut self) -> String {
        self.tx = None;
        let thread = self.thread.take().expect("finished once");
        thread.join().expect("the hashing thread does not panic")
    }
}

impl Drop for HashPipe {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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
    file: File,
    /// The staging file of the filesystem backend, removed on drop until published.
    tmp: Option<PathBuf>,
    buf: AlignedBuf,
    filled: usize,
    pipe: Option<HashPipe>,
    size: u64,
    /// Bytes of the staging file whose writeback has been started.
    writeback: u64,
    failed: bool,
}

impl std::fmt::Debug for ResourceWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceWriter")
            .field("backend", &self.backend)
            .field("file_id", &self.file_id)
            .field("size", &self.size)
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
        let mut pipe = HashPipe::new();
        Ok(ResourceWriter {
            store,
            plan: Some(plan),
            backend,
            file_id,
            root,
            file,
            tmp,
            buf: pipe.buffer(),
            filled: 0,
            pipe: Some(pipe),
            size: 0,
            writeback: 0,
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
        self.size + self.filled as u64
    }

    fn flush_chunk(&mut self) -> Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let path = self.tmp.clone().unwrap_or_else(|| PathBuf::from("<spool>"));
        let result = (|| {
            if self.backend == Backend::Inline && self.written() > INLINE_LIMIT {
                return Err(Error::TooLarge {
                    path: path.clone(),
                    size: self.written(),
                    limit: INLINE_LIMIT,
                });
            }
            failpoint("artifact.write")?;
            self.file
                .write_all(&self.buf[..self.filled])
                .map_err(|e| Error::io("write", &path, e))
        })();
        if result.is_err() {
            self.failed = true;
        }
        result?;
        let pipe = self.pipe.as_mut().expect("open until commit");
        let full = std::mem::replace(&mut self.buf, pipe.buffer());
        pipe.submit(full, self.filled);
        self.size += self.filled as u64;
        self.filled = 0;
        // The inline spool is unlinked and never fsynced: writing it back would be wasted I/O.
        if self.backend == Backend::Filesystem && self.size - self.writeback >= WRITEBACK_STEP {
            durable::start_writeback(&self.file, self.writeback, self.size - self.writeback);
            self.writeback = self.size;
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
        if let Some(tmp) = &self.tmp {
            // Before joining the hashing thread: it finishes the last chunks during the fsync.
            durable::sync_file(&self.file, tmp)?;
        }
        let sha256 = self.pipe.take().expect("open until commit").finish();
        let payload = match self.backend {
            Backend::Filesystem => {
                let tmp = self.tmp.clone().expect("filesystem writers stage a file");
                let dest = publish(&self.root, &tmp, self.file_id)?;
                self.tmp = None;
                Payload::File(dest)
            }
            Backend::Remote => unreachable!("the configuration refuses remote for new bytes"),
            Backend::Inline => Payload::Spool(
                self.file
                    .try_clone()
                    .map_err(|e| Error::io("duplicate handle", "<spool>", e))?,
            ),
        };
        let plan = self.plan.take().expect("committed once");
        let staged = Staged {
            backend: self.backend,
            size: self.size,
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
        let n = data.len().min(CHUNK - self.filled);
        self.buf.as_mut_slice()[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        if self.filled == CHUNK {
            self.flush_chunk().map_err(|e| match e {
                Error::Io { source, .. } => source,
                other => io::Error::other(other),
            })?;
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
