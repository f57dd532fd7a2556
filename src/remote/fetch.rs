//! `fetch`: brings an evicted or remote-only run back from a remote, verifying every byte, and
//! marks it local (FORMAT.md §8.8). The run directory is rebuilt under `.cairn/tmp/` and renamed
//! into place; artifact files are staged in the artifact root and renamed into their shards.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use super::manifest::{Manifest, ManifestFile};
use super::{
    EVICTED_MARKER, HashingWriter, Progress, Remote, artifact_key, copies, read_manifest,
    remote_error, run_file_key,
};
use crate::artifact::record::ResourceRecord;
use crate::artifact::{Backend, sidecar, tables};
use crate::durable::{self, failpoint};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::index::{Availability, RunRecord};
use crate::store::{META_DIR, Run, Store};

/// What a fetch of several runs did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct FetchReport {
    /// Runs made local.
    pub fetched: Vec<Identity>,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Runs that could not be fetched, with the reason; the others went on.
    pub failed: Vec<(Identity, Error)>,
}

/// A run downloaded and swapped in, not yet recorded in the index.
struct Fetched {
    rec: RunRecord,
    resources: Vec<ResourceRecord>,
    remote: String,
    bytes: u64,
}

impl Store {
    /// Makes run `identity` local from remote `from` (default: the remotes the index records,
    /// most recently verified first). Every file and artifact is checked against the manifest's
    /// size and sha256 before anything replaces the husk. Returns the bytes downloaded (0 when
    /// the run was already local).
    pub fn fetch(
        &self,
        identity: &Identity,
        from: Option<&str>,
        progress: Progress<'_>,
    ) -> Result<u64> {
        self.healing(|| self.fetch_once(identity, from, progress))
    }

    /// [`Store::fetch`], once.
    fn fetch_once(
        &self,
        identity: &Identity,
        from: Option<&str>,
        progress: Progress<'_>,
    ) -> Result<u64> {
        match self.fetch_unrecorded(identity, from, progress)? {
            None => Ok(0),
            Some(f) => {
                self.record_fetched(std::slice::from_ref(&f))?;
                Ok(f.bytes)
            }
        }
    }

    /// Opens run `identity` (or the run re-keyed away from it) with its data present: an
    /// `evicted` or `remote` run is fetched first from the remotes holding a copy, unless
    /// on-demand fetching is off ([`StoreBuilder::fetch_on_demand`](crate::StoreBuilder::fetch_on_demand)),
    /// which gives [`Error::NotLocal`]. [`Store::get`] never fetches: it returns an evicted
    /// run's husk as it is. `None` when the index has no such run.
    pub fn open_run(&self, identity: &Identity) -> Result<Option<Run>> {
        self.make_local(identity)?;
        self.get(identity)
    }

    /// Fetches `runs` as [`Store::fetch`] does, several at once, and records them in the index
    /// in one transaction. A run that fails is reported and the others go on.
    pub fn fetch_many(
        &self,
        runs: &[Identity],
        from: Option<&str>,
        progress: Progress<'_>,
    ) -> Result<FetchReport> {
        self.healing(|| self.fetch_many_once(runs, from, progress))
    }

    /// [`Store::fetch_many`], once.
    fn fetch_many_once(
        &self,
        runs: &[Identity],
        from: Option<&str>,
        progress: Progress<'_>,
    ) -> Result<FetchReport> {
        use rayon::prelude::*;
        let results: Vec<(Identity, Result<Option<Fetched>>)> = runs
            .par_iter()
            .map(|id| (*id, self.fetch_unrecorded(id, from, progress)))
            .collect();
        let mut report = FetchReport::default();
        let mut done = Vec::new();
        for (id, r) in results {
            match r {
                Ok(Some(f)) => {
                    report.bytes += f.bytes;
                    report.fetched.push(id);
                    done.push(f);
                }
                Ok(None) => report.fetched.push(id),
                Err(e) => report.failed.push((id, e)),
            }
        }
        self.record_fetched(&done)?;
        Ok(report)
    }

    /// Marks fetched runs local, with their new resource records, in one transaction; then
    /// records the copies they came from as verified now.
    fn record_fetched(&self, done: &[Fetched]) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let index = self.index()?;
        index.write(|txn| {
            for f in done {
                index.put(txn, &f.rec, 0)?;
                f.resources
                    .iter()
                    .try_for_each(|r| tables::put(index, txn, r))?;
            }
            Ok(())
        })?;
        let mut by_remote: std::collections::BTreeMap<&str, Vec<Identity>> = Default::default();
        for f in done {
            by_remote.entry(&f.remote).or_default().push(f.rec.identity);
        }
        let now = copies::now_ms();
        by_remote
            .into_iter()
            .try_for_each(|(name, ids)| copies::record(index, name, &ids, now))
    }

    /// Downloads and swaps in run `identity`; `None` when it is already local.
    fn fetch_unrecorded(
        &self,
        identity: &Identity,
        from: Option<&str>,
        progress: Progress<'_>,
    ) -> Result<Option<Fetched>> {
        let index = self.index()?;
        let rec = index
            .get(identity)?
            .ok_or_else(|| Error::InvalidReference {
                given: identity.to_hex(),
                reason: "no such run in the index",
            })?;
        if rec.state == Availability::Local {
            return Ok(None);
        }
        let names: Vec<String> = match from {
            Some(n) => vec![n.to_owned()],
            None => {
                let mut c = copies::of_run(index, identity)?;
                c.sort_by_key(|c| std::cmp::Reverse(c.verified_at_ms));
                let mut names: Vec<String> = c.into_iter().map(|c| c.remote).collect();
                // Then the remotes its remote records name (the copies table may be lost with
                // the index; the records come back from the husk).
                for r in tables::of_run(index, identity)? {
                    if let Some(n) = r.remote_name()
                        && !names.iter().any(|x| x == n)
                    {
                        names.push(n.to_owned());
                    }
                }
                names
            }
        };
        let mut last = None;
        for name in names {
            let remote = match self.remote(&name) {
                Ok(r) => r,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let m = match read_manifest(remote.as_ref(), identity) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    last = Some(remote_error(
                        &name,
                        &super::manifest_key(identity),
                        "no committed copy",
                    ));
                    continue;
                }
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match self.fetch_from(remote.as_ref(), &m, &rec.location, progress) {
                Ok((bytes, resources)) => {
                    let mut rec = rec.clone();
                    rec.state = Availability::Local;
                    return Ok(Some(Fetched {
                        rec,
                        resources,
                        remote: name,
                        bytes,
                    }));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(Error::NotLocal {
            identity: *identity,
            state: rec.state.as_str(),
        }))
    }

    /// Downloads a copy and swaps it in; returns the bytes moved and the resource records the
    /// index lacks (a remote-only run's), rewritten to the local filesystem backend.
    fn fetch_from(
        &self,
        remote: &dyn Remote,
        m: &Manifest,
        location: &str,
        progress: Progress<'_>,
    ) -> Result<(u64, Vec<ResourceRecord>)> {
        let tmp = self.root().join(META_DIR).join("tmp");
        let staging = tmp.join(format!("{}.{}", m.identity, uuid::Uuid::new_v4().simple()));
        let result = self.stage_copy(remote, m, &staging, progress);
        let (bytes, new_records) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        let dest = self.root().join(location);
        let parent = dest.parent().expect("a run has a parent directory");
        durable::create_dir_all(parent)?;
        let husk = tmp.join(format!(
            "{}.husk.{}",
            m.identity,
            uuid::Uuid::new_v4().simple()
        ));
        match fs::symlink_metadata(&dest) {
            // A fetch that crashed after its last rename: the copy is in place, and only the
            // index is left to record it.
            Ok(_) if holds_copy(&dest, m)? => {
                // Its resource records become this fetch's (the crashed fetch's name files of
                // its own, which gc then collects), so the run and the index agree.
                for rec in &new_records {
                    sidecar::write(&dest, rec)?;
                }
                let _ = fs::remove_dir_all(&staging);
                return Ok((bytes, new_records));
            }
            Ok(_) if !dest.join(EVICTED_MARKER).is_file() => {
                let _ = fs::remove_dir_all(&staging);
                return Err(Error::UnsafePath {
                    path: dest,
                    reason: "a run directory that is not an evicted husk is in the way".into(),
                });
            }
            Ok(_) => fs::rename(&dest, &husk).map_err(|e| Error::io("rename", &dest, e))?,
            Err(_) => {}
        }
        failpoint("remote.fetch_between_renames")?;
        fs::rename(&staging, &dest).map_err(|e| Error::io("rename", &staging, e))?;
        durable::sync_dir(parent)?;
        let _ = fs::remove_dir_all(&husk);
        Ok((bytes, new_records))
    }

    /// Where the bytes of remote record `r` go back, and its record once they are there: the
    /// record as pushed (staged beside the run) when it is the same resource as a filesystem
    /// record inside the artifact root, so the run directory is again the copy byte for byte;
    /// else a new file, the record switched to it.
    fn restored_record(
        &self,
        pushed: Option<&ResourceRecord>,
        r: ResourceRecord,
    ) -> Result<(PathBuf, ResourceRecord)> {
        if let Some(p) = pushed
            && p.backend == Backend::Filesystem
            && (&p.run, p.size_bytes, &p.content_hash) == (&r.run, r.size_bytes, &r.content_hash)
            && let Ok(target) = crate::artifact::fs::path_of_uri(&p.uri, &self.artifact_fs_root())
        {
            return Ok((target, p.clone()));
        }
        let target =
            crate::artifact::fs::file_path(self.artifacts.write_root()?, uuid::Uuid::new_v4());
        let rec = ResourceRecord {
            backend: Backend::Filesystem,
            uri: crate::artifact::fs::uri_of(&target)?,
            updated_at: crate::run::now_rfc3339(),
            ..r
        };
        Ok((target, rec))
    }

    /// Brings the bytes of remote record `rec` back alone (its run is local): from the remote
    /// its uri names, checked and made durable in a new file, then the record switched to it
    /// (beside the run, then the index). Returns the new record.
    pub(crate) fn fetch_resource(
        &self,
        rec: ResourceRecord,
        progress: Progress<'_>,
    ) -> Result<ResourceRecord> {
        let name = rec.remote_name().expect("a remote record names its remote");
        let remote = self.remote(name)?;
        let target =
            crate::artifact::fs::file_path(self.artifacts.write_root()?, uuid::Uuid::new_v4());
        fetch_artifact(
            remote.as_ref(),
            &rec.remote_key(),
            &target,
            rec.size_bytes,
            &rec.content_hash,
            progress,
        )?;
        self.switch_to_file(rec, target)
    }

    fn stage_copy(
        &self,
        remote: &dyn Remote,
        m: &Manifest,
        staging: &Path,
        progress: Progress<'_>,
    ) -> Result<(u64, Vec<ResourceRecord>)> {
        let mut bytes = 0u64;
        let mut dirs = BTreeSet::new();
        durable::create_dir_all(staging)?;
        for f in &m.files {
            let dest = staging.join(&f.path);
            let dir = dest.parent().expect("inside staging").to_path_buf();
            durable::create_dir_all(&dir)?;
            download(
                remote,
                &run_file_key(remote, &m.location, f),
                &dest,
                f.size,
                &f.sha256,
                progress,
            )?;
            bytes += f.size;
            dirs.insert(dir);
        }
        let index = self.index()?;
        let mut new_records = Vec::new();
        // The records as pushed, fetched beside the run.
        let pushed: std::collections::HashMap<uuid::Uuid, ResourceRecord> =
            sidecar::read_all(staging)
                .into_iter()
                .flatten()
                .map(|r| (r.id, r))
                .collect();
        // A run the index has (evicted) keeps its resources in the index: one it lacks was
        // deleted after the push and stays deleted, record and bytes. A remote-only run's
        // resources come from the copy.
        let remote_only = self
            .lookup(index, &m.identity)?
            .is_none_or(|r| r.state == Availability::Remote);
        if !remote_only {
            for id in pushed.keys() {
                if tables::get(index, *id)?.is_none() {
                    sidecar::remove(staging, *id)?;
                }
            }
        }
        for a in &m.artifacts {
            let key = artifact_key(&a.sha256);
            let known = tables::get(index, a.id)?;
            let (target, record) = match known {
                Some(r) if r.backend == Backend::Filesystem => {
                    if r.content_hash != a.sha256 {
                        continue; // updated since the push: its new bytes never left
                    }
                    let target =
                        crate::artifact::fs::path_of_uri(&r.uri, &self.artifact_fs_root())?;
                    if fs::metadata(&target).is_ok_and(|md| md.len() == a.size) {
                        continue;
                    }
                    (target, None)
                }
                Some(r) if r.backend == Backend::Remote => {
                    let (target, rec) = self.restored_record(pushed.get(&r.id), r)?;
                    (target, Some(rec))
                }
                Some(_) => continue, // inline: the bytes never left the index
                None if !remote_only => continue,
                None => {
                    // A remote-only run: its record (fetched beside the run) now points here.
                    let file = sidecar::path(staging, a.id);
                    let bytes = fs::read(&file).map_err(|e| Error::io("read", &file, e))?;
                    let mut rec = ResourceRecord::decode(&bytes, &file)?;
                    let root = self.artifacts.write_root()?;
                    let target = crate::artifact::fs::file_path(root, uuid::Uuid::new_v4());
                    rec.backend = Backend::Filesystem;
                    rec.uri = crate::artifact::fs::uri_of(&target)?;
                    (target, Some(rec))
                }
            };
            fetch_artifact(remote, &key, &target, a.size, &a.sha256, progress)?;
            bytes += a.size;
            if let Some(rec) = record {
                if pushed.get(&rec.id) != Some(&rec) {
                    sidecar::write(staging, &rec)?;
                }
                new_records.push(rec);
            }
        }
        // The index is the commit point of every record: one changed since the push (say,
        // migrated while the run was evicted) goes beside the run as the index has it.
        for rec in tables::of_run(index, &m.identity)? {
            if rec.backend != Backend::Remote && pushed.get(&rec.id) != Some(&rec) {
                sidecar::write(staging, &rec)?;
            }
        }
        for dir in dirs {
            durable::sync_dir(&dir)?;
        }
        Ok((bytes, new_records))
    }
}

/// Downloads artifact bytes `key` to `target` (`<root>/<aa>/<uuid>`): staged under the root's
/// `.staging/`, size and sha256 checked, fsynced, renamed into the shard, shard fsynced.
fn fetch_artifact(
    remote: &dyn Remote,
    key: &str,
    target: &Path,
    size: u64,
    sha256: &str,
    progress: Progress<'_>,
) -> Result<()> {
    let shard = target.parent().expect("<root>/<aa>/<uuid>");
    let root = shard.parent().expect("<root>/<aa>/<uuid>");
    let stage_dir =
        crate::confine::create_dir_below(root, Path::new(crate::artifact::fs::STAGING_DIR))?;
    let staged = stage_dir.join(uuid::Uuid::new_v4().to_string());
    if let Err(e) = download(remote, key, &staged, size, sha256, progress) {
        let _ = fs::remove_file(&staged);
        return Err(e);
    }
    crate::confine::create_dir_below(root, shard.strip_prefix(root).expect("in the root"))?;
    if let Err(e) = fs::rename(&staged, target) {
        let _ = fs::remove_file(&staged);
        return Err(Error::io("rename", &staged, e));
    }
    durable::sync_dir(shard)
}

/// Downloads `key` to the new file `dest`, checks size and sha256, fsyncs it.
/// Whether `dir` holds exactly the run files `m` lists, each of its size and sha256, and no
/// eviction marker.
fn holds_copy(dir: &Path, m: &Manifest) -> Result<bool> {
    if dir.join(EVICTED_MARKER).exists() {
        return Ok(false);
    }
    // Resource records are not compared: a fetch rewrites a remote-only run's records to its
    // new local files, and the caller writes this fetch's records over them.
    let not_record = |p: &&str| !Path::new(p).starts_with(sidecar::SIDECAR_DIR);
    let files = super::push::run_files(dir)?;
    let files: Vec<&str> = files
        .iter()
        .map(String::as_str)
        .filter(not_record)
        .collect();
    let wanted: Vec<&ManifestFile> = m
        .files
        .iter()
        .filter(|f| not_record(&f.path.as_str()))
        .collect();
    if files.len() != wanted.len() || files.iter().zip(&wanted).any(|(a, b)| *a != b.path) {
        return Ok(false);
    }
    for f in wanted {
        let path = dir.join(&f.path);
        let mut file = fs::File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let mut w = super::HashingWriter::new(std::io::sink());
        let size = std::io::copy(&mut file, &mut w).map_err(|e| Error::io("read", &path, e))?;
        if size != f.size || w.finish().1 != f.sha256 {
            return Ok(false);
        }
    }
    Ok(true)
}

fn download(
    remote: &dyn Remote,
    key: &str,
    dest: &Path,
    size: u64,
    sha256: &str,
    progress: Progress<'_>,
) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| Error::io("create", dest, e))?;
    let mut w = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, f));
    let got = remote
        .get(key, &mut w, progress)?
        .ok_or_else(|| remote_error(remote.name(), key, "missing"))?;
    let (buf, sha) = w.finish();
    let f = buf
        .into_inner()
        .map_err(|e| Error::io("write", dest, e.into_error()))?;
    if got != size || sha != sha256 {
        return Err(remote_error(
            remote.name(),
            key,
            format!(
                "holds {got} bytes with sha256 {sha}; the manifest says {size} bytes, {sha256}"
            ),
        ));
    }
    durable::sync_file(&f, dest)
}
