//! Artifacts ("resources"): files attached to runs, their bytes inline in the index database or
//! in a sharded directory (or, once their run is evicted, only on a remote: the `remote`
//! backend, fetched back on read), with durable streaming writes, verified reads, migration
//! between the backends, garbage collection and content checks (FORMAT.md §7).
//!
//! # API layout
//! - [`Store::create_resource`], [`Store::resource_writer`] (streaming): new resources.
//! - [`Store::update_resource`], [`Store::resource_updater`]: new bytes for a resource.
//! - [`Store::get_resource`], [`Store::list_resources`], [`Store::delete_resource`].
//! - [`Store::read_resource_data`] (verified), [`Store::read_resource_unverified`],
//!   [`Store::open_resource`] (ranged reads, mmap for large files).
//! - [`Store::migrate_artifacts`], [`Store::gc_artifacts`], [`Store::verify_resources`].
//! - Configuration: [`StoreBuilder::artifact_backend`](crate::StoreBuilder::artifact_backend),
//!   [`StoreBuilder::artifact_fs_root`](crate::StoreBuilder::artifact_fs_root),
//!   [`StoreBuilder::env_file`](crate::StoreBuilder::env_file), or the environment.

mod buf;
mod check;
pub(crate) mod config;
pub mod fs;
mod gc;
mod migrate;
pub(crate) mod read;
pub mod record;
pub(crate) mod sidecar;
pub(crate) mod tables;
mod write;

use std::io::Write;
use std::path::{Path, PathBuf};

use uuid::Uuid;

pub use buf::AlignedBuf;
pub use check::{ResourceFinding, ResourceFindingKind, ResourceReport};
pub use config::{BACKEND_VAR, DEFAULT_FS_ROOT, FS_ROOT_VAR, parse_env_bytes};
pub use gc::{GcOptions, GcReport};
pub use migrate::{DEFAULT_BATCH_ROWS, MigrateFailure, MigrateOptions, MigrateReport};
pub use read::{MMAP_THRESHOLD, ResourceData, ResourceReader};
pub use record::{Backend, ResourceRecord};
pub use sidecar::SIDECAR_DIR;
pub use write::{INLINE_LIMIT, ResourceWriter, sha256_hex};

use crate::durable::failpoint;
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::index::Index;
use crate::store::{Run, Store};
use write::{Payload, Plan, Staged};

impl Store {
    /// The backend new resources go to.
    pub fn artifact_backend(&self) -> Backend {
        self.artifacts.backend
    }

    /// The filesystem backend's root (resolved once it exists).
    pub fn artifact_fs_root(&self) -> PathBuf {
        self.artifacts.read_root()
    }

    /// A new resource of `run` holding `bytes`, in the configured backend.
    pub fn create_resource(&self, run: &Run, name: &str, bytes: &[u8]) -> Result<ResourceRecord> {
        let id = Uuid::new_v4();
        let plan = Plan::New {
            id,
            run: run.identity(),
            run_dir: run.path().to_path_buf(),
            name: name.into(),
            description: String::new(),
        };
        self.store_bytes(plan, self.artifacts.backend, id, bytes)
    }

    /// A streaming writer for a new resource of `run`, in the configured backend.
    pub fn resource_writer(&self, run: &Run, name: &str) -> Result<ResourceWriter<'_>> {
        let plan = Plan::New {
            id: Uuid::new_v4(),
            run: run.identity(),
            run_dir: run.path().to_path_buf(),
            name: name.into(),
            description: String::new(),
        };
        self.writer(plan, self.artifacts.backend)
    }

    /// Replaces the bytes of resource `id` (written to the configured backend): the new bytes
    /// are made durable, the record switched, then the old bytes removed. A run that is not
    /// local is fetched first, or the call fails with [`Error::NotLocal`].
    pub fn update_resource(&self, id: Uuid, bytes: &[u8]) -> Result<ResourceRecord> {
        let old = self.resource(id)?;
        // Changed in an evicted husk, the change would be undone by the next fetch.
        self.make_local(&old.run)?;
        self.store_bytes(
            Plan::Replace(old),
            self.artifacts.backend,
            Uuid::new_v4(),
            bytes,
        )
    }

    /// A streaming writer of new bytes for resource `id`.
    pub fn resource_updater(&self, id: Uuid) -> Result<ResourceWriter<'_>> {
        let old = self.resource(id)?;
        self.make_local(&old.run)?;
        self.writer(Plan::Replace(old), self.artifacts.backend)
    }

    /// The record of resource `id`.
    pub fn get_resource(&self, id: Uuid) -> Result<Option<ResourceRecord>> {
        self.with_index(|i| tables::get(i, id))
    }

    /// The resources of `run`, oldest first.
    pub fn list_resources(&self, run: &Identity) -> Result<Vec<ResourceRecord>> {
        self.with_index(|i| tables::of_run(i, run))
    }

    /// Every resource record, in id order.
    pub fn all_resources(&self) -> Result<Vec<ResourceRecord>> {
        self.with_index(tables::all)
    }

    /// The bytes of resource `id`, after checking their size and sha256 against the record
    /// (an error naming the resource on mismatch). Reads follow the record's own backend.
    pub fn read_resource_data(&self, id: Uuid) -> Result<ResourceData> {
        self.read_whole(id, true)
    }

    /// The bytes of resource `id`, size checked but not hashed.
    pub fn read_resource_unverified(&self, id: Uuid) -> Result<ResourceData> {
        self.read_whole(id, false)
    }

    /// Writes the verified bytes of resource `id` to `dest`, atomically and durably (a reader of
    /// `dest` sees the old file or all of the new one). The bytes stream through a temporary file
    /// beside `dest` while they are hashed; it is fsynced and renamed over `dest` only if size and
    /// sha256 match the record, so bytes that do not never appear under `dest`.
    pub fn export_resource(&self, id: Uuid, dest: &Path) -> Result<ResourceRecord> {
        let mut rec = None;
        crate::durable::replace_file_with(dest, |file, tmp| {
            rec = Some(self.copy_verified(id, file, tmp)?);
            Ok(())
        })?;
        Ok(rec.expect("set when the copy succeeded"))
    }

    /// Streams the bytes of resource `id` into `out`, one chunk in memory whatever the size,
    /// hashing them on the way; returns the record once size and sha256 match it, else an
    /// [`Error::ResourceMismatch`] naming the resource. The bytes reach `out` before that final
    /// check: to keep unverified bytes from being used, write them somewhere private and keep
    /// them only on success, as [`export_resource`](Store::export_resource) does.
    pub fn copy_resource_to(&self, id: Uuid, out: &mut impl Write) -> Result<ResourceRecord> {
        self.copy_verified(id, out, Path::new("<output>"))
    }

    /// [`copy_resource_to`](Store::copy_resource_to) with `to` naming the output in errors.
    fn copy_verified(&self, id: Uuid, out: &mut dyn Write, to: &Path) -> Result<ResourceRecord> {
        let rec = self.local_resource(self.resource(id)?)?;
        self.copy_local(&rec, out, to)?;
        Ok(rec)
    }

    /// Streams the bytes `rec` names where they are now, verified, without fetching anything: a
    /// `remote` record is an [`Error::ResourceRemote`].
    pub(crate) fn copy_local(
        &self,
        rec: &ResourceRecord,
        out: &mut dyn Write,
        to: &Path,
    ) -> Result<()> {
        match rec.backend {
            Backend::Inline => {
                let bytes = self.inline_of(rec)?;
                read::copy_verified(rec, &mut &bytes[..], Path::new("<index>"), out, to)
            }
            Backend::Filesystem => {
                let path = self.file_of(rec)?;
                let mut file = read::open_checked(&path, rec)?;
                read::copy_verified(rec, &mut file, &path, out, to)
            }
            Backend::Remote => Err(Error::ResourceRemote {
                id: rec.id,
                name: rec.name.clone(),
                remote: rec.remote_name().unwrap_or_default().to_owned(),
            }),
        }
    }

    /// Random access to resource `id` (mmap for files of [`MMAP_THRESHOLD`] bytes or more).
    pub fn open_resource(&self, id: Uuid) -> Result<ResourceReader> {
        let rec = self.local_resource(self.resource(id)?)?;
        match rec.backend {
            Backend::Inline => {
                let bytes = self.inline_of(&rec)?;
                Ok(ResourceReader::inline(rec, bytes))
            }
            Backend::Filesystem => {
                let path = self.file_of(&rec)?;
                let file = read::open_checked(&path, &rec)?;
                ResourceReader::file(rec, file, &path)
            }
            Backend::Remote => unreachable!("local_resource fetches remote bytes"),
        }
    }

    /// Deletes resource `id`: its record beside the run, then its index entry (and inline
    /// bytes), then its file. Returns false when there was no such resource. A run that is not
    /// local is fetched first (as reads do), or the call fails with [`Error::NotLocal`].
    pub fn delete_resource(&self, id: Uuid) -> Result<bool> {
        let index = self.index()?;
        let Some(rec) = tables::get(index, id)? else {
            return Ok(false);
        };
        // Deleted from an evicted husk, the resource would come back with the next fetch.
        self.make_local(&rec.run)?;
        let run_dir = self.run_dir(&rec.run)?;
        if let Some(dir) = &run_dir {
            sidecar::remove(dir, id)?;
        }
        let removed = failpoint("artifact.after_sidecar_removed")
            .and_then(|()| index.write(|txn| tables::remove(index, txn, &rec)));
        if let Err(e) = removed {
            // Still in the index: put its record back beside the run.
            if let Some(dir) = &run_dir {
                let _ = sidecar::write(dir, &rec);
            }
            return Err(e);
        }
        if rec.backend == Backend::Filesystem {
            self.remove_file_of(&rec);
        }
        Ok(true)
    }

    fn resource(&self, id: Uuid) -> Result<ResourceRecord> {
        self.get_resource(id)?.ok_or(Error::UnknownResource { id })
    }

    fn read_whole(&self, id: Uuid, verify: bool) -> Result<ResourceData> {
        let rec = self.local_resource(self.resource(id)?)?;
        let (data, sha) = match rec.backend {
            Backend::Inline => {
                let bytes = self.inline_of(&rec)?;
                if bytes.len() as u64 != rec.size_bytes {
                    return Err(read::mismatch(
                        &rec,
                        "size",
                        rec.size_bytes.to_string(),
                        bytes.len().to_string(),
                    ));
                }
                let mut data = AlignedBuf::zeroed(bytes.len());
                data.as_mut_slice().copy_from_slice(&bytes);
                (data, verify.then(|| sha256_hex(&bytes)))
            }
            Backend::Filesystem => {
                let path = self.file_of(&rec)?;
                let mut file = read::open_checked(&path, &rec)?;
                if verify && rec.size_bytes >= MMAP_THRESHOLD {
                    // Hashing the mapping and lending it costs no copy.
                    return read::read_mapped_verified(&file, &path, &rec);
                }
                read::read_file(&mut file, rec.size_bytes, &path, verify)?
            }
            Backend::Remote => unreachable!("local_resource fetches remote bytes"),
        };
        if let Some(sha) = sha {
            read::check_hash(&rec, sha)?;
        }
        Ok(ResourceData::owned(data))
    }

    /// Points remote record `old` at `file`, which holds its bytes (checked and durable, in
    /// a shard of the filesystem root): the record goes beside the run, then into the index;
    /// on failure the file is removed and the record stays remote.
    pub(crate) fn switch_to_file(
        &self,
        old: ResourceRecord,
        file: PathBuf,
    ) -> Result<ResourceRecord> {
        let staged = Staged {
            backend: Backend::Filesystem,
            size: old.size_bytes,
            sha256: old.content_hash.clone(),
            payload: Payload::File(file),
        };
        self.commit_resource(Plan::Replace(old), staged)
    }

    fn inline_of(&self, rec: &ResourceRecord) -> Result<Vec<u8>> {
        self.with_index(|i| tables::inline_bytes(i, rec.id))?
            .ok_or_else(|| Error::InlineBytesGone {
                id: rec.id,
                name: rec.name.clone(),
            })
    }

    /// The file of a filesystem record, refused unless inside the configured root.
    fn file_of(&self, rec: &ResourceRecord) -> Result<PathBuf> {
        fs::path_of_uri(&rec.uri, &self.artifacts.read_root())
    }

    /// Removes the file of a filesystem record; best effort (gc collects what remains), and
    /// never outside the root.
    fn remove_file_of(&self, rec: &ResourceRecord) {
        if let Ok(path) = self.file_of(rec)
            && std::fs::remove_file(&path).is_ok()
            && let Some(shard) = path.parent()
        {
            let _ = crate::durable::sync_dir(shard);
        }
    }

    /// The directory of run `identity`, if it is present.
    fn run_dir(&self, identity: &Identity) -> Result<Option<PathBuf>> {
        Ok(self.get(identity)?.map(|r| r.path().to_path_buf()))
    }

    fn writer(&self, plan: Plan, backend: Backend) -> Result<ResourceWriter<'_>> {
        let root = match backend {
            Backend::Filesystem => self.artifacts.write_root()?.to_path_buf(),
            Backend::Inline => PathBuf::new(),
            Backend::Remote => unreachable!("the configuration refuses remote for new bytes"),
        };
        ResourceWriter::new(self, plan, backend, root)
    }

    /// Stores bytes held in memory to `backend` under `file_id` and records them.
    fn store_bytes(
        &self,
        plan: Plan,
        backend: Backend,
        file_id: Uuid,
        bytes: &[u8],
    ) -> Result<ResourceRecord> {
        let sha256 = sha256_hex(bytes);
        let payload = match backend {
            Backend::Filesystem => {
                let root = self.artifacts.write_root()?;
                Payload::File(write::write_file(root, file_id, bytes)?)
            }
            Backend::Inline => {
                if bytes.len() as u64 > INLINE_LIMIT {
                    return Err(Error::TooLarge {
                        path: "<inline resource>".into(),
                        size: bytes.len() as u64,
                        limit: INLINE_LIMIT,
                    });
                }
                Payload::Slice(bytes)
            }
            Backend::Remote => unreachable!("the configuration refuses remote for new bytes"),
        };
        let staged = Staged {
            backend,
            size: bytes.len() as u64,
            sha256,
            payload,
        };
        self.commit_resource(plan, staged)
    }

    /// Points a record at staged bytes. Filesystem bytes are already durable: the record goes
    /// beside the run first, then into the index (the commit point), then the old bytes go.
    /// Inline bytes enter the index together with the record, then the record goes beside the
    /// run. On failure before the commit point the staged file is removed and the record beside
    /// the run restored: the resource stays exactly as it was.
    pub(crate) fn commit_resource(&self, plan: Plan, staged: Staged<'_>) -> Result<ResourceRecord> {
        let now = crate::run::now_rfc3339();
        let (uri, file) = match &staged.payload {
            Payload::File(p) => (fs::uri_of(p)?, Some(p.clone())),
            _ => (String::new(), None),
        };
        let (rec, old, run_dir) = match plan {
            Plan::New {
                id,
                run,
                run_dir,
                name,
                description,
            } => {
                let rec = ResourceRecord {
                    id,
                    run,
                    name,
                    description,
                    created_at: now.clone(),
                    updated_at: now,
                    backend: staged.backend,
                    uri,
                    size_bytes: staged.size,
                    content_hash: staged.sha256,
                };
                (rec, None, Some(run_dir))
            }
            Plan::Replace(old) => {
                let run_dir = self.run_dir(&old.run)?;
                let rec = ResourceRecord {
                    updated_at: now,
                    backend: staged.backend,
                    uri,
                    size_bytes: staged.size,
                    content_hash: staged.sha256,
                    ..old.clone()
                };
                (rec, Some(old), run_dir)
            }
        };
        let index = self.index()?;
        // A commit that finds the index damaged changed nothing; it is retried once on the
        // healed index (`Store::on_index`), which holds the records beside the runs.
        let committed = self.on_index(index, |index| match &staged.payload {
            Payload::File(_) => {
                self.commit_file_record(index, &rec, old.as_ref(), run_dir.as_deref())
            }
            Payload::Slice(bytes) => {
                self.commit_inline_record(index, &rec, old.as_ref(), run_dir.as_deref(), |slot| {
                    slot.copy_from_slice(bytes);
                    Ok(())
                })
            }
            Payload::Spool(spool) => {
                self.commit_inline_record(index, &rec, old.as_ref(), run_dir.as_deref(), |slot| {
                    use std::os::unix::fs::FileExt;
                    spool
                        .read_exact_at(slot, 0)
                        .map_err(|e| Error::io("read", "<spool>", e))
                })
            }
        });
        if let Err(e) = committed {
            // When the index file itself failed, the commit may have persisted: the new file
            // stays (gc removes it once no record names it).
            if let Some(f) = file.as_ref().filter(|_| !index.failed_inside(&e)) {
                let _ = std::fs::remove_file(f);
            }
            return Err(e);
        }
        if let Some(old) = old.filter(|o| o.backend == Backend::Filesystem && o.uri != rec.uri) {
            failpoint("artifact.before_old_removed")?;
            self.remove_file_of(&old);
        }
        Ok(rec)
    }

    fn commit_file_record(
        &self,
        index: &Index,
        rec: &ResourceRecord,
        old: Option<&ResourceRecord>,
        run_dir: Option<&Path>,
    ) -> Result<()> {
        failpoint("artifact.before_record")?;
        if let Some(dir) = run_dir {
            sidecar::write(dir, rec)?;
        }
        let result = failpoint("artifact.after_sidecar").and_then(|()| {
            index.write(|txn| {
                tables::put(index, txn, rec)?;
                tables::drop_inline(index, txn, rec.id)
            })
        });
        if let Err(e) = &result
            && !index.failed_inside(e)
            && let Some(dir) = run_dir
        {
            // Put back what was beside the run, so the resource is exactly as it was (unless
            // the commit may have persisted: then the new record beside the run matches it).
            let _ = match old {
                Some(old) => sidecar::write(dir, old),
                None => sidecar::remove(dir, rec.id),
            };
        }
        result
    }

    fn commit_inline_record(
        &self,
        index: &Index,
        rec: &ResourceRecord,
        old: Option<&ResourceRecord>,
        run_dir: Option<&Path>,
        fill: impl FnOnce(&mut [u8]) -> Result<()>,
    ) -> Result<()> {
        failpoint("artifact.before_record")?;
        // The previous inline bytes, to put back should the record beside the run fail.
        let previous = match old {
            Some(o) if o.backend == Backend::Inline => tables::inline_bytes(index, o.id)?,
            _ => None,
        };
        let len = usize::try_from(rec.size_bytes).expect("under the inline limit");
        index.write(|txn| {
            tables::put(index, txn, rec)?;
            tables::put_inline(index, txn, rec.id, len, fill)
        })?;
        let beside = failpoint("artifact.after_index").and_then(|()| match run_dir {
            Some(dir) => sidecar::write(dir, rec),
            None => Ok(()),
        });
        if beside.is_err() {
            // Undo the commit: a call that fails changes nothing (FORMAT.md §9).
            let _ = index.write(|txn| match old {
                None => tables::remove(index, txn, rec),
                Some(old) => {
                    tables::put(index, txn, old)?;
                    match &previous {
                        Some(b) => tables::put_inline(index, txn, old.id, b.len(), |slot| {
                            slot.copy_from_slice(b);
                            Ok(())
                        }),
                        None => tables::drop_inline(index, txn, old.id),
                    }
                }
            });
        }
        beside
    }
}

/// Restores resource records kept beside `runs` (location, identity, aliases) that the index
/// lacks; records it already has stand (the index is the commit point). Returns how many were
/// restored and the record files that could not be used.
pub(crate) fn restore(
    root: &Path,
    index: &Index,
    runs: &[(String, Identity, Vec<Identity>)],
) -> Result<(usize, Vec<Error>)> {
    use rayon::prelude::*;
    let found: Vec<Vec<Result<ResourceRecord>>> = runs
        .par_iter()
        .map(|(loc, id, aliases)| {
            let dir = root.join(loc);
            sidecar::read_all(&dir)
                .into_iter()
                .map(|r| {
                    r.and_then(|rec| {
                        if rec.run == *id || aliases.contains(&rec.run) {
                            Ok(rec)
                        } else {
                            Err(Error::format(
                                sidecar::path(&dir, rec.id),
                                format!("belongs to run {}, found in run {id}", rec.run),
                            ))
                        }
                    })
                })
                .collect()
        })
        .collect();
    let mut errors = Vec::new();
    let mut candidates = Vec::new();
    for r in found.into_iter().flatten() {
        match r {
            Ok(rec) => candidates.push(rec),
            Err(e) => errors.push(e),
        }
    }
    if candidates.is_empty() {
        return Ok((0, errors));
    }
    let mut missing = Vec::new();
    for rec in candidates {
        // A record the index holds stands, unless it is damaged: the one beside the run then
        // replaces it.
        if !matches!(tables::get(index, rec.id), Ok(Some(_))) {
            missing.push(rec);
        }
    }
    if !missing.is_empty() {
        index.write(|txn| {
            missing
                .iter()
                .try_for_each(|rec| tables::put(index, txn, rec))
        })?;
    }
    Ok((missing.len(), errors))
}
