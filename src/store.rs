//! The store: a root directory of runs, the index over them, and materializing runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::durable::{self, failpoint};
use crate::error::{Error, Result};
use crate::heal;
use crate::identity::{Identity, Prefix};
use crate::index::{Index, IndexStats, LazyIndex, Opened, RunRecord};
use crate::query::{EncodedQuery, Query};
use crate::reindex::{self, ReindexReport};
use crate::repair::{self, RepairOptions, RepairReport};
use crate::run::{ID_FILE, ID_FILE_LIMIT, IdHeader, MODEL_FILE, MODEL_FILE_LIMIT, Model};
use crate::schemas::Schemas;
use crate::verify::{self, VerifyOptions, VerifyReport};
use crate::walk;

/// Name of the store's metadata directory under the root.
pub const META_DIR: &str = ".cairn";
/// Staging area for runs under construction, on the same file system as the root.
pub(crate) const TMP_DIR: &str = "tmp";
/// Runs materialized while the index stayed busy, one file per identity holding its location;
/// applied to the index by the next process that gets the write slot.
const INBOX_DIR: &str = "inbox";
/// File name of the index under `.cairn/`.
pub const INDEX_FILE: &str = "index.redb";
/// Staging directories older than this are leftovers of a crash (a live creation takes
/// milliseconds) and are removed when a store is opened.
const STAGING_MAX_AGE: Duration = Duration::from_secs(3600);
/// Longest encoded module directory name accepted by the default placement.
const MAX_MODULE_DIR: usize = 200;
/// Default longest wait for the index's write slot.
pub const DEFAULT_INDEX_TIMEOUT: Duration = Duration::from_secs(10);

/// Options for opening a [`Store`].
#[derive(Debug, Clone)]
pub struct StoreBuilder {
    root: PathBuf,
    created_by: Option<String>,
    index_timeout: Duration,
    pub(crate) artifacts: crate::artifact::config::ArtifactOptions,
    pub(crate) remotes: crate::remote::RemoteOptions,
}

impl StoreBuilder {
    /// Who is recorded as `created_by` in new runs (default `$USER@hostname`).
    pub fn created_by(mut self, who: impl Into<String>) -> Self {
        self.created_by = Some(who.into());
        self
    }

    /// Longest wait for the index's write slot while another process writes (default 10 s).
    /// A run materialized when the wait runs out is still created, and indexed later.
    pub fn index_timeout(mut self, timeout: Duration) -> Self {
        self.index_timeout = timeout;
        self
    }

    /// Opens the store, creating the root, `<root>/.cairn/` and the index on first use. An
    /// index that is missing, corrupt or of another schema version is rebuilt from the
    /// directories.
    pub fn open(self) -> Result<Store> {
        durable::create_dir_all(&self.root)?;
        let root = fs::canonicalize(&self.root).map_err(|e| Error::io("resolve", &self.root, e))?;
        let meta = root.join(META_DIR);
        let staging = meta.join(TMP_DIR);
        durable::create_dir_all(&staging)?;
        let inbox = meta.join(INBOX_DIR);
        durable::create_dir_all(&inbox)?;
        let inbox_dir = fs::File::open(&inbox).map_err(|e| Error::io("open", &inbox, e))?;
        sweep_staging(&staging, STAGING_MAX_AGE);
        let artifacts = self.artifacts.resolve(&root)?;
        let store = Store {
            artifacts,
            root,
            created_by: self.created_by.unwrap_or_else(default_creator),
            index: LazyIndex::open(meta.join(INDEX_FILE), self.index_timeout),
            inbox_seen_empty: std::sync::Mutex::new(None),
            inbox_dir,
            remotes: self.remotes,
        };
        // Waits for the index at most the timeout; a store whose index another process keeps
        // busy still opens, and materializes runs into the inbox until the index is free.
        store.try_index()?;
        Ok(store)
    }
}

/// A store of runs under one root directory.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let store = cairn::Store::open(dir.path())?;
/// let model = cairn::Model::new("train").with_config(&serde_json::json!({"lr": 0.1}))?;
/// let run = store.get_or_create(&model)?;
/// assert!(run.path().join("id.json").is_file());
/// assert_eq!(store.get_or_create(&model)?.identity(), run.identity());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    created_by: String,
    index: LazyIndex,
    /// The inbox's mtime when it was last found empty: while it stays so, the inbox is not
    /// listed again (a stat instead of a directory listing on every index access).
    inbox_seen_empty: std::sync::Mutex<Option<std::time::SystemTime>>,
    /// `<root>/.cairn/inbox/`, open for `fstat` (the directory is never replaced while a
    /// store is open).
    inbox_dir: fs::File,
    /// Artifact backend and filesystem root (FORMAT.md §7.1).
    pub(crate) artifacts: crate::artifact::config::ArtifactConfig,
    /// Remotes given to the builder, on-demand fetching, remotes opened so far (FORMAT.md §8).
    pub(crate) remotes: crate::remote::RemoteOptions,
}

impl Store {
    /// Opens the store at `root` with default options.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        Self::builder(root).open()
    }

    /// A builder for opening the store at `root`.
    pub fn builder(root: impl AsRef<Path>) -> StoreBuilder {
        StoreBuilder {
            root: root.as_ref().to_path_buf(),
            created_by: None,
            index_timeout: DEFAULT_INDEX_TIMEOUT,
            artifacts: Default::default(),
            remotes: Default::default(),
        }
    }

    /// The root directory (absolute, symlinks resolved).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The index file.
    pub fn index_path(&self) -> &Path {
        self.index.path()
    }

    /// The index, if it can be had within the timeout. The first time it arrives it is rebuilt
    /// if it was missing, corrupt or of another schema version, and the inbox is applied. A
    /// damaged index is healed ([`Store::on_index`]), once per call.
    fn try_index(&self) -> Result<Option<&Index>> {
        self.try_index_with(true)
    }

    /// [`Store::try_index`] for point lookups ([`Store::lookup`]), which apply the inbox only
    /// when they cannot reuse the index's kept snapshot.
    fn try_index_for_lookups(&self) -> Result<Option<&Index>> {
        self.try_index_with(false)
    }

    /// [`Store::try_index`], applying the inbox only if `drain`.
    fn try_index_with(&self, drain: bool) -> Result<Option<&Index>> {
        let mut healed = false;
        loop {
            let got = match self.index.get() {
                Err(Error::IndexDamaged { what, .. }) if !healed => {
                    healed = true;
                    heal::heal(
                        &self.root,
                        self.index.path(),
                        None,
                        &what,
                        self.index_timeout(),
                    )?;
                    continue;
                }
                got => got?,
            };
            let Some((index, opened)) = got else {
                return Ok(None);
            };
            let prepared = if opened != Opened::Current {
                reindex::reindex(&self.root, index, false, &|_| {}).map(drop)
            } else {
                Ok(())
            };
            let applied = prepared.and_then(|()| {
                if drain {
                    self.drain_inbox(index).map(drop)
                } else {
                    Ok(())
                }
            });
            match applied {
                Err(Error::IndexDamaged { what, .. }) if !healed => {
                    healed = true;
                    if !self.heal(index, &what)? {
                        return Err(Error::IndexDamaged {
                            path: self.index.path().to_path_buf(),
                            what,
                        });
                    }
                }
                done => return done.map(|()| Some(index)),
            }
        }
    }

    /// Runs `op` on the index; when it finds the index damaged ([`Error::IndexDamaged`]), heals
    /// the index (`crate::heal`: the damaged file kept aside, the index rebuilt from the
    /// directories, inline bytes salvaged) and runs `op` once more on the new one. Other errors,
    /// I/O and a busy index among them, are returned as they are.
    pub(crate) fn with_index<T>(&self, op: impl Fn(&Index) -> Result<T>) -> Result<T> {
        self.on_index(self.index()?, op)
    }

    /// [`Store::with_index`] on `index`, a handle already obtained.
    ///
    /// redb panics on some damaged pages (bounds of a damaged table definition, a malformed
    /// allocator state): a panic of the first run of `op` is taken as damage too; one of the
    /// retry is not caught.
    pub(crate) fn on_index<T>(&self, index: &Index, op: impl Fn(&Index) -> Result<T>) -> Result<T> {
        let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op(index)))
            .unwrap_or_else(|_| {
                Err(Error::IndexDamaged {
                    path: index.path().to_path_buf(),
                    what: "redb failed (panicked) reading it".into(),
                })
            });
        match first {
            Err(Error::IndexDamaged { path, what }) => {
                if self.heal(index, &what)? {
                    op(self.index()?)
                } else {
                    Err(Error::IndexDamaged { path, what })
                }
            }
            done => done,
        }
    }

    /// Runs `op`, a whole operation that a failure part-way leaves resumable (push, fetch,
    /// evict, migrate, gc, repair: FORMAT.md §9), and when it finds the index damaged, heals the
    /// index and runs `op` once more.
    pub(crate) fn healing<T>(&self, op: impl Fn() -> Result<T>) -> Result<T> {
        match op() {
            Err(Error::IndexDamaged { path, what }) => {
                let damaged = self.try_index_for_lookups()?.ok_or_else(|| self.busy())?;
                if self.heal(damaged, &what)? {
                    op()
                } else {
                    Err(Error::IndexDamaged { path, what })
                }
            }
            done => done,
        }
    }

    /// Heals the index `damaged` found damaged on use (unless another process or thread did)
    /// and retires its handle; false when this store may heal no more.
    fn heal(&self, damaged: &Index, what: &str) -> Result<bool> {
        heal::heal(
            &self.root,
            self.index.path(),
            Some(damaged),
            what,
            self.index_timeout(),
        )?;
        Ok(self.index.retire(damaged))
    }

    /// The index, or [`Error::IndexBusy`] if another process keeps it busy past the timeout.
    pub(crate) fn index(&self) -> Result<&Index> {
        self.try_index()?.ok_or_else(|| self.busy())
    }

    fn busy(&self) -> Error {
        Error::IndexBusy {
            path: self.index.path().to_path_buf(),
            waited: self.index_timeout(),
        }
    }

    /// The record of `identity` (or of the run re-keyed away from it) in `index`. The inbox is
    /// applied only when the lookup cannot reuse the kept snapshot: every inbox writer touches
    /// the index file, which makes the kept snapshot stale (FORMAT.md §5.1).
    pub(crate) fn lookup(&self, index: &Index, identity: &Identity) -> Result<Option<RunRecord>> {
        index.lookup_with(identity, &|index: &Index| self.drain_inbox(index))
    }

    fn index_timeout(&self) -> Duration {
        self.index.write_timeout()
    }

    /// Where a new run of `module` with `identity` is placed, relative to the root:
    /// `<module-dir>/<first two hex>/<identity>` (FORMAT.md §4.3). Nothing depends on it: runs may
    /// be moved anywhere under the root.
    pub fn placement(module: &str, identity: &Identity) -> Result<PathBuf> {
        let hex = identity.to_hex();
        Ok(PathBuf::from(module_dir(module)?).join(&hex[..2]).join(hex))
    }

    /// Returns the run of `model`, materializing it if it does not exist yet.
    ///
    /// An existing run is found through the index, wherever it was moved under the root. A new
    /// directory is built under `.cairn/tmp/`, its files and itself fsynced, then renamed into
    /// place and the parent fsynced: a run directory under its final name is always complete.
    /// The index is updated in the same call; if its write slot stays busy past the timeout the
    /// run is recorded in `.cairn/inbox/` and indexed by the next index access. When two
    /// processes race on one identity, exactly one directory results and both return it.
    pub fn get_or_create(&self, model: &Model) -> Result<Run> {
        let identity = model.identity()?;
        let index = self.try_index_for_lookups()?;
        let found = match index {
            Some(index) => self.on_index(index, |i| self.lookup(i, &identity))?,
            None => None,
        };
        if let Some(rec) = found
            && let Some(run) = self.load(Path::new(&rec.location), Some(rec.identity))?
        {
            return Ok(run);
        }
        let location = Self::placement(&model.module, &identity)?;
        let run = match self.load(&location, Some(identity))? {
            Some(run) => run,
            None => self.materialize(model, identity, location)?,
        };
        self.record(index, &run)?;
        Ok(run)
    }

    fn materialize(&self, model: &Model, identity: Identity, location: PathBuf) -> Result<Run> {
        let dest = self.root.join(&location);
        let mut model = model.clone();
        model.created_at.get_or_insert_with(crate::run::now_rfc3339);
        model
            .created_by
            .get_or_insert_with(|| self.created_by.clone());
        let header = IdHeader::for_model(&model, identity);
        let model_bytes = model.to_json_bytes();
        let header_bytes = header.to_json_bytes();
        // Never write a run that cairn's own strict readers would refuse (a bad created_at, a
        // context breaking §2, a config too large for id.json, ...).
        for (name, bytes, limit) in [
            (MODEL_FILE, &model_bytes, MODEL_FILE_LIMIT),
            (ID_FILE, &header_bytes, ID_FILE_LIMIT),
        ] {
            let path = Path::new(name);
            if bytes.len() as u64 > limit {
                return Err(Error::TooLarge {
                    path: path.into(),
                    size: bytes.len() as u64,
                    limit,
                });
            }
            let check = if name == MODEL_FILE {
                Model::from_json_bytes(bytes, path).map(drop)
            } else {
                IdHeader::from_json_bytes(bytes, path).map(drop)
            };
            check.map_err(|e| Error::InvalidModel {
                reason: e.to_string(),
            })?;
        }

        let staging = self.root.join(META_DIR).join(TMP_DIR).join(format!(
            "{}.{}",
            identity,
            uuid::Uuid::new_v4().simple()
        ));
        match self.stage(&staging, &model_bytes, &header_bytes, &dest) {
            Ok(()) => {
                let parent = dest.parent().expect("placement has a parent");
                durable::sync_dir(parent)?;
                failpoint("run.after_rename")?;
                Ok(Run {
                    identity,
                    location,
                    path: dest,
                    header,
                    created: true,
                })
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&staging);
                // Lost a race: another process renamed the same identity into place first.
                match self.load(&location, Some(identity))? {
                    Some(run) => Ok(run),
                    None => Err(e),
                }
            }
        }
    }

    fn stage(&self, staging: &Path, model: &[u8], header: &[u8], dest: &Path) -> Result<()> {
        fs::create_dir(staging).map_err(|e| Error::io("create directory", staging, e))?;
        durable::write_new(&staging.join(MODEL_FILE), model)?;
        failpoint("run.after_model")?;
        durable::write_new(&staging.join(ID_FILE), header)?;
        durable::sync_dir(staging)?;
        failpoint("run.before_rename")?;
        durable::create_dir_all(dest.parent().expect("placement has a parent"))?;
        fs::rename(staging, dest).map_err(|e| Error::io("rename", dest, e))
    }

    /// Puts a run into the index; when the write slot stays busy, leaves it in the inbox.
    fn record(&self, index: Option<&Index>, run: &Run) -> Result<()> {
        let rec = RunRecord::from_header(&run.header, location_str(&run.location)?)?;
        let written = match index {
            Some(index) => self.on_index(index, |i| i.write(|txn| i.put(txn, &rec, 0))),
            None => Err(self.busy()),
        };
        match written {
            Ok(()) => Ok(()),
            Err(Error::IndexBusy { .. }) => {
                durable::replace_file(
                    &self.inbox().join(run.identity.to_hex()),
                    rec.location.as_bytes(),
                )?;
                self.touch_index()
            }
            Err(e) => Err(e),
        }
    }

    /// Sets the index file's modification time to now, after an inbox entry is durable: every
    /// process's kept lookup snapshot becomes stale, so its next lookup applies the inbox
    /// (FORMAT.md §5.1). Not even opening the index is needed; without a file there is no
    /// snapshot to make stale.
    fn touch_index(&self) -> Result<()> {
        let path = self.index.path();
        match fs::OpenOptions::new().write(true).open(path) {
            Ok(f) => f
                .set_modified(std::time::SystemTime::now())
                .map_err(|e| Error::io("touch", path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("touch", path, e)),
        }
    }

    fn inbox(&self) -> PathBuf {
        self.root.join(META_DIR).join(INBOX_DIR)
    }

    /// Applies inbox entries left by processes that could not get the index in time; false when
    /// some are left because the index stayed busy.
    fn drain_inbox(&self, index: &Index) -> Result<bool> {
        let dir = self.inbox();
        // Through the handle opened with the store: an `fstat`, no path lookup per access.
        let mtime = self
            .inbox_dir
            .metadata()
            .and_then(|m| m.modified())
            .map_err(|e| Error::io("stat", &dir, e))?;
        // An mtime from the last two seconds may yet hide a change within its clock tick.
        let settled = mtime
            .elapsed()
            .is_ok_and(|age| age > Duration::from_secs(2));
        let mut seen = self.inbox_seen_empty.lock().expect("inbox lock");
        if settled && *seen == Some(mtime) {
            return Ok(true);
        }
        let mut entries = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("list", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| n.parse::<Identity>().is_ok()) else {
                continue; // a temporary of replace_file, or a stranger
            };
            let location =
                fs::read_to_string(entry.path()).map_err(|e| Error::io("read", entry.path(), e))?;
            entries.push((entry.path(), name.parse::<Identity>()?, location));
        }
        if entries.is_empty() {
            *seen = settled.then_some(mtime);
            return Ok(true);
        }
        *seen = None;
        let mut records = Vec::new();
        for (_, id, location) in &entries {
            // A run moved or deleted since is left to reindex.
            if let Ok(Some(run)) = self.load(Path::new(location), Some(*id)) {
                records.push(RunRecord::from_header(&run.header, location.clone())?);
            }
        }
        match index.write(|txn| records.iter().try_for_each(|r| index.put(txn, r, 0))) {
            Ok(()) => {}
            Err(Error::IndexBusy { .. }) => return Ok(false),
            Err(e) => return Err(e),
        }
        for (path, _, _) in &entries {
            let _ = fs::remove_file(path);
        }
        durable::sync_dir(&dir)?;
        Ok(true)
    }

    /// The run at `location` (relative to the root), if there is one. With `expected`, a header
    /// naming another identity is an error.
    pub fn load(&self, location: &Path, expected: Option<Identity>) -> Result<Option<Run>> {
        check_relative(location)?;
        // A run directory (or a parent) replaced by a link could lead out of the root.
        crate::confine::check_no_links(&self.root, location)?;
        let path = self.root.join(location);
        match fs::symlink_metadata(path.join(ID_FILE)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("stat", path.join(ID_FILE), e)),
            Ok(m) if !m.is_file() => {
                return Err(Error::UnsafePath {
                    path: path.join(ID_FILE),
                    reason: "id.json is not a regular file".into(),
                });
            }
            Ok(_) => {}
        }
        let header = IdHeader::read(&path)?;
        // An earlier identity of a re-keyed run names it too (the index may lag a re-key).
        if let Some(want) =
            expected.filter(|want| *want != header.identity && !header.aliases.contains(want))
        {
            return Err(Error::format(
                path.join(ID_FILE),
                format!(
                    "holds identity {} where {want} was expected",
                    header.identity
                ),
            ));
        }
        Ok(Some(Run {
            identity: header.identity,
            location: location.to_path_buf(),
            path,
            header,
            created: false,
        }))
    }

    /// Every run under the root, found by walking the directories (not through the index);
    /// unreadable ones are returned as errors beside the rest.
    pub fn scan(&self) -> (Vec<Run>, Vec<Error>) {
        let walk = walk::find_runs(&self.root);
        let runs = walk
            .runs
            .into_iter()
            .filter_map(|found| {
                let header = found.header?;
                Some(Run {
                    identity: header.identity,
                    path: self.root.join(&found.location),
                    location: PathBuf::from(found.location),
                    header,
                    created: false,
                })
            })
            .collect();
        (runs, walk.errors)
    }

    /// The run with this identity, through the index.
    /// A re-keyed run is found by any of its earlier identities too.
    pub fn get(&self, identity: &Identity) -> Result<Option<Run>> {
        let index = self.try_index_for_lookups()?.ok_or_else(|| self.busy())?;
        match self.on_index(index, |i| self.lookup(i, identity))? {
            Some(rec) => self.load(Path::new(&rec.location), Some(rec.identity)),
            None => Ok(None),
        }
    }

    /// The run at `location` (relative to the root), through the index.
    pub fn at_location(&self, location: &Path) -> Result<Option<Run>> {
        check_relative(location)?;
        let loc = location_str(location)?;
        match self.with_index(|i| i.at_location(&loc))? {
            Some(id) => self.load(location, Some(id)),
            None => Ok(None),
        }
    }

    /// The run named by a full identity or a unique prefix of at least 8 hex characters, through
    /// the index (earlier identities of re-keyed runs included).
    pub fn resolve(&self, reference: &str) -> Result<Option<Run>> {
        match self.record_of(reference)? {
            Some(rec) => self.load(Path::new(&rec.location), Some(rec.identity)),
            None => Ok(None),
        }
    }

    /// The index record named by a full identity or a unique prefix (earlier identities of
    /// re-keyed runs included).
    pub fn record_of(&self, reference: &str) -> Result<Option<RunRecord>> {
        if let Ok(identity) = reference.parse::<Identity>() {
            let index = self.try_index_for_lookups()?.ok_or_else(|| self.busy())?;
            return self.on_index(index, |i| self.lookup(i, &identity));
        }
        let prefix = Prefix::parse(reference)?;
        self.with_index(|index| record_of_prefix(index, reference, &prefix))
    }

    /// Rebuilds the index from the directories (or, `incremental`, from the directories changed
    /// since the last reindex). `progress` is called with the number of runs found so far.
    pub fn reindex(
        &self,
        incremental: bool,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<ReindexReport> {
        self.with_index(|i| reindex::reindex(&self.root, i, incremental, progress))
    }

    /// Re-derives every run's identity with `schemas` and compares it with `id.json` and the
    /// index; read-only. `progress` is called with the number of runs found so far.
    pub fn verify(
        &self,
        schemas: &Schemas,
        opts: &VerifyOptions,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<VerifyReport> {
        let records = self.with_index(|i| i.filter_par(|_| true))?;
        verify::verify(self, records, schemas, opts, progress)
    }

    /// Fixes what [`Store::verify`] finds when the fix needs no guessing.
    pub fn repair(&self, schemas: &Schemas, opts: RepairOptions) -> Result<RepairReport> {
        self.healing(|| repair::repair(self, schemas, opts))
    }

    /// Index records matching `query`, in identity order unless it sorts.
    ///
    /// Only matching records are decoded, and into [`RunRecord`]s whose config and predicate
    /// stay encoded until asked for. A query with a limit and no sort reads only as far as its
    /// first `limit` matches.
    pub fn find(&self, query: &Query) -> Result<Vec<RunRecord>> {
        let encoded = EncodedQuery::new(query);
        let keep = |r: &[u8]| encoded.matches(r);
        // Without a sort, the first matches in identity order are the answer.
        let first = query.sort.is_none().then_some(query.limit).flatten();
        let hits = self.with_index(|index| match (&query.module, first) {
            (Some(m), _) => {
                index.filter_ids(&index.of_module(m)?, first.unwrap_or(usize::MAX), keep)
            }
            (None, Some(limit)) => index.filter_first(limit, keep),
            (None, None) => index.filter_par(keep),
        })?;
        Ok(query.finish(hits))
    }

    /// Counts per module and state, and the index size.
    pub fn stats(&self) -> Result<IndexStats> {
        self.with_index(Index::stats)
    }
}

/// The record a unique `prefix` (given as `reference`) names, among current and earlier
/// identities.
fn record_of_prefix(index: &Index, reference: &str, prefix: &Prefix) -> Result<Option<RunRecord>> {
    let mut hits = index.with_prefix(prefix, 2)?;
    if hits.is_empty() {
        for (_, current) in index.aliases_with_prefix(prefix, 2)? {
            hits.extend(index.get(&current)?);
        }
    }
    match hits.len() {
        0 | 1 => Ok(hits.pop()),
        _ => Err(Error::AmbiguousPrefix {
            prefix: reference.to_owned(),
            matches: index.with_prefix(prefix, usize::MAX)?.len().max(2),
        }),
    }
}

/// A location as the index stores it: UTF-8 with `/` separators.
fn location_str(location: &Path) -> Result<String> {
    location
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::UnsafePath {
            path: location.to_path_buf(),
            reason: "run locations must be UTF-8".into(),
        })
}

/// A materialized run.
#[derive(Debug, Clone)]
pub struct Run {
    identity: Identity,
    location: PathBuf,
    path: PathBuf,
    header: IdHeader,
    created: bool,
}

impl Run {
    /// The run's identity.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The run directory relative to the store root.
    pub fn location(&self) -> &Path {
        &self.location
    }

    /// The run directory, absolute.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the run's data files go: the run directory itself, beside `id.json`.
    pub fn data_dir(&self) -> &Path {
        &self.path
    }

    /// The identity header.
    pub fn header(&self) -> &IdHeader {
        &self.header
    }

    /// Reads the run's `model.json`.
    pub fn model(&self) -> Result<Model> {
        Model::read(&self.path)
    }

    /// True when this call materialized the run, false when it already existed.
    pub fn was_created(&self) -> bool {
        self.created
    }
}

/// The module as one safe directory name: bytes outside `[A-Za-z0-9_.-]` and a leading `.` are
/// percent-encoded (uppercase hex), so no module can name `..`, `.cairn` or a nested path.
fn module_dir(module: &str) -> Result<String> {
    let mut out = String::with_capacity(module.len());
    for (i, b) in module.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() || out.len() > MAX_MODULE_DIR {
        return Err(Error::InvalidModel {
            reason: format!(
                "module {module:?} encodes to a directory name of {} bytes (1 ..= {MAX_MODULE_DIR})",
                out.len()
            ),
        });
    }
    Ok(out)
}

/// Removes crash leftovers from the staging area; best effort, never fails the caller.
fn sweep_staging(staging: &Path, max_age: std::time::Duration) {
    let Ok(entries) = fs::read_dir(staging) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > max_age);
        if old {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Refuses locations that could leave the root.
fn check_relative(location: &Path) -> Result<()> {
    use std::path::Component;
    if location
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        Ok(())
    } else {
        Err(Error::UnsafePath {
            path: location.to_path_buf(),
            reason: "a run location is relative to the root, without `..`".into(),
        })
    }
}

fn default_creator() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_lookup_snapshot_does_not_hide_a_later_inbox_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // A settled index file: the first lookup keeps its snapshot.
        fs::File::options()
            .write(true)
            .open(store.index.path())
            .unwrap()
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(60))
            .unwrap();
        let model = Model::new("late");
        let identity = model.identity().unwrap();
        assert!(store.record_of(&identity.to_hex()).unwrap().is_none());
        // A run recorded in the inbox, as by a process that found the index busy.
        let location = Store::placement("late", &identity).unwrap();
        let run = store.materialize(&model, identity, location).unwrap();
        store.record(None, &run).unwrap();
        assert_eq!(fs::read_dir(store.inbox()).unwrap().count(), 1);
        let rec = store.record_of(&identity.to_hex()).unwrap();
        assert_eq!(rec.map(|r| r.identity), Some(identity));
        assert_eq!(fs::read_dir(store.inbox()).unwrap().count(), 0);
    }

    #[test]
    fn module_dirs_are_single_safe_components() {
        assert_eq!(module_dir("pkg.train").unwrap(), "pkg.train");
        assert_eq!(module_dir("..").unwrap(), "%2E.");
        assert_eq!(module_dir(".cairn").unwrap(), "%2Ecairn");
        assert_eq!(module_dir("a/b c").unwrap(), "a%2Fb%20c");
        assert_eq!(module_dir("é").unwrap(), "%C3%A9");
        assert!(module_dir(&"x".repeat(201)).is_err());
    }

    #[test]
    fn stale_staging_directories_are_swept_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join(META_DIR).join(TMP_DIR);
        fs::create_dir_all(staging.join("stale/inner")).unwrap();
        fs::create_dir_all(staging.join("fresh")).unwrap();
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        fs::File::open(staging.join("stale"))
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        Store::open(dir.path()).unwrap();
        assert!(!staging.join("stale").exists());
        assert!(staging.join("fresh").exists());
    }

    #[test]
    fn locations_with_parent_components_are_refused() {
        assert!(check_relative(Path::new("a/../../etc")).is_err());
        assert!(check_relative(Path::new("/etc")).is_err());
        assert!(check_relative(Path::new("a/b")).is_ok());
    }
}
