//! The index: a redb database mapping identities to locations and availability (FORMAT.md §5).
//!
//! It is a cache of the run directories: it can be deleted at any moment and rebuilt by
//! [`crate::Store::reindex`]. Every process of a store keeps it open at once (redb's
//! `MultiWriter` mode); readers never wait, a writer waits for the write slot with backoff up to
//! a configurable timeout.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{
    ConcurrencyMode, Database, Key, MultimapTableDefinition, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, TransactionError, WriteTransaction,
};

use crate::canonical::Value;
use crate::error::{Error, Result};
use crate::identity::{Identity, Prefix};
use crate::run::IdHeader;

/// Version of the table layout and record encoding; an index of another version is rebuilt.
pub const INDEX_SCHEMA_VERSION: u64 = 4;

/// `meta`: `"schema_version"` → u64 little-endian.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// `runs`: identity → run record (canonical CBOR, [`RunRecord`]).
const RUNS: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("runs");
/// `locations`: run location → (identity, directory mtime in ns; 0 = revisit next time).
const LOCATIONS: TableDefinition<&str, ([u8; 32], u64)> = TableDefinition::new("locations");
/// `module_runs`: (module, identity) → nothing; a module's runs are a key range, loaded in key
/// order like every other table.
const MODULES: TableDefinition<(&str, [u8; 32]), ()> = TableDefinition::new("module_runs");
/// The `modules` multimap of schemas 1 and 2, dropped when such an index is rebuilt.
const OLD_MODULES: MultimapTableDefinition<&str, [u8; 32]> =
    MultimapTableDefinition::new("modules");
/// `aliases`: an earlier identity of a re-keyed run → its current identity.
const ALIASES: TableDefinition<[u8; 32], [u8; 32]> = TableDefinition::new("aliases");
/// `dirs`: location of a non-run directory → (mtime ns, 0 = revisit; subdirectory names, NUL-separated).
const DIRS: TableDefinition<&str, (u64, &str)> = TableDefinition::new("dirs");

const SCHEMA_KEY: &str = "schema_version";
/// Version of a run record's encoding, its first item (below 24: one byte encoded).
const RECORD_VERSION: u8 = 2;

/// Where a run's bytes are (FORMAT.md §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Availability {
    /// The run directory is present under the root.
    Local,
    /// Not present locally; a remote holds a copy.
    Remote,
    /// Indexed, bytes not present locally; a husk (`id.json`, `model.json`, marker) remains.
    Evicted,
}

impl Availability {
    /// The state's name in records and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Local => "local",
            Availability::Remote => "remote",
            Availability::Evicted => "evicted",
        }
    }

    /// Parses a state name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "local" => Some(Availability::Local),
            "remote" => Some(Availability::Remote),
            "evicted" => Some(Availability::Evicted),
            _ => None,
        }
    }
}

impl std::fmt::Display for Availability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the index knows about one run.
///
/// The config and the predicate are kept as their canonical CBOR, validated when the record was
/// made or read, and decoded only on request ([`RunRecord::config`]): reading a record costs
/// little more than copying its bytes.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct RunRecord {
    /// The identity, copied from `id.json`.
    pub identity: Identity,
    /// The run directory relative to the root, `/`-separated.
    pub location: String,
    /// The module.
    pub module: String,
    /// Where the bytes are.
    pub state: Availability,
    /// RFC 3339 creation time from `id.json`.
    pub created_at: String,
    /// Earlier identities (from `id.json`'s `aliases`).
    pub aliases: Vec<Identity>,
    /// The canonical CBOR of the config, then that of the predicate; both valid (§5.2).
    values: Box<[u8]>,
    /// Where the predicate starts in `values`.
    split: usize,
}

/// Items of a stored record (FORMAT.md §5.2), in order.
pub(crate) const RECORD_ITEMS: usize = 8;
/// Position of each item in a stored record.
pub(crate) const AT_STATE: usize = 1;
pub(crate) const AT_LOCATION: usize = 2;
pub(crate) const AT_MODULE: usize = 3;
pub(crate) const AT_CREATED_AT: usize = 4;
pub(crate) const AT_ALIASES: usize = 5;
pub(crate) const AT_CONFIG: usize = 6;
pub(crate) const AT_PREDICATE: usize = 7;
/// The first item, the record version: the canonical CBOR of the unsigned integer.
const VERSION_ITEM: [u8; 1] = [RECORD_VERSION];

/// A stored record from its item `at` on (the items before it skipped, nothing validated);
/// `None` for bytes of another shape or record version.
pub(crate) fn record_tail(bytes: &[u8], at: usize) -> Option<&[u8]> {
    if bytes.get(1..2) != Some(&VERSION_ITEM[..]) {
        return None;
    }
    crate::cbor::array_tail(bytes, RECORD_ITEMS as u64, at).ok()
}

impl RunRecord {
    /// A record of a `local` run without aliases; `config` and `predicate` are canonical values.
    pub fn new(
        identity: Identity,
        location: String,
        module: String,
        created_at: String,
        config: &Value,
        predicate: &Value,
    ) -> Self {
        let mut values = config.to_cbor();
        let split = values.len();
        predicate.encode_into(&mut values);
        RunRecord {
            identity,
            location,
            module,
            state: Availability::Local,
            created_at,
            aliases: Vec::new(),
            values: values.into_boxed_slice(),
            split,
        }
    }

    /// The record of a local run from its header.
    pub fn from_header(header: &IdHeader, location: String) -> Result<Self> {
        // Straight from the JSON values to canonical CBOR, in one buffer, no tree built.
        let mut enc = crate::canonical::encoder::Encoder::new("config", 1);
        enc.serialize(&header.config).map_err(|_| enc.error())?;
        let split = enc.bytes().len();
        enc.set_root("predicate", 1);
        enc.serialize(&header.predicate).map_err(|_| enc.error())?;
        Ok(RunRecord {
            identity: header.identity,
            location,
            module: header.module.clone(),
            state: Availability::Local,
            created_at: header.created_at.clone(),
            aliases: header.aliases.clone(),
            values: enc.bytes().into(),
            split,
        })
    }

    /// A record from parts already in canonical CBOR (`config`, `predicate`: each one valid
    /// canonical value, as the caller guarantees).
    pub(crate) fn from_canonical(
        identity: Identity,
        location: String,
        module: String,
        created_at: String,
        aliases: Vec<Identity>,
        config: &[u8],
        predicate: &[u8],
    ) -> Self {
        let values: Box<[u8]> = [config, predicate].concat().into();
        RunRecord {
            identity,
            location,
            module,
            state: Availability::Local,
            created_at,
            aliases,
            values,
            split: config.len(),
        }
    }

    /// The complete config, canonical (not reduced by the schema), decoded from
    /// [`RunRecord::config_cbor`].
    pub fn config(&self) -> Value {
        valid(self.config_cbor())
    }

    /// The predicate, canonical, decoded from [`RunRecord::predicate_cbor`].
    pub fn predicate(&self) -> Value {
        valid(self.predicate_cbor())
    }

    /// The canonical CBOR of the config: equal bytes exactly when the configs are equal.
    pub fn config_cbor(&self) -> &[u8] {
        &self.values[..self.split]
    }

    /// The canonical CBOR of the predicate.
    pub fn predicate_cbor(&self) -> &[u8] {
        &self.values[self.split..]
    }

    /// The stored encoding of the record (FORMAT.md §5.2).
    pub fn encode(&self) -> Vec<u8> {
        use crate::canonical::head;
        let mut out = Vec::with_capacity(
            48 + self.location.len()
                + self.module.len()
                + self.values.len()
                + 33 * self.aliases.len(),
        );
        head(&mut out, 4, RECORD_ITEMS as u64);
        out.extend_from_slice(&VERSION_ITEM);
        for text in [
            self.state.as_str(),
            &self.location,
            &self.module,
            &self.created_at,
        ] {
            head(&mut out, 3, text.len() as u64);
            out.extend_from_slice(text.as_bytes());
        }
        head(&mut out, 4, self.aliases.len() as u64);
        for a in &self.aliases {
            head(&mut out, 2, 32);
            out.extend_from_slice(a.as_bytes());
        }
        out.extend_from_slice(&self.values);
        out
    }

    /// Decodes a record stored under `identity`, accepting only the exact encoding
    /// [`RunRecord::encode`] writes; `index` names the file in errors.
    pub fn decode(identity: Identity, bytes: &[u8], index: &Path) -> Result<Self> {
        let bad = |what: &str| Error::IndexDamaged {
            path: index.into(),
            what: format!("run record {identity}: {what}"),
        };
        // Config and predicate are validated while they are located, nested at depth 1 as the
        // encoder of `from_header` bounds them.
        let items = crate::cbor::array_items_checked::<RECORD_ITEMS>(bytes, AT_CONFIG)
            .map_err(|e| bad(&format!("not an array of {RECORD_ITEMS} valid items: {e}")))?;
        if items[0] != VERSION_ITEM {
            return Err(bad("unknown record version"));
        }
        let text = |at: usize, name: &str| {
            crate::cbor::text_item(items[at]).map_err(|e| bad(&format!("{name}: {e}")))
        };
        let state =
            Availability::parse(text(AT_STATE, "state")?).ok_or_else(|| bad("unknown state"))?;
        let location = text(AT_LOCATION, "location")?.to_owned();
        let module = text(AT_MODULE, "module")?.to_owned();
        let created_at = text(AT_CREATED_AT, "created_at")?.to_owned();
        let aliases = match crate::cbor::decode(items[AT_ALIASES], "aliases") {
            Ok(Value::Array(raw)) => raw
                .into_iter()
                .map(|a| match a {
                    Value::Bytes(b) => <[u8; 32]>::try_from(b.as_slice())
                        .map(Identity::from_bytes)
                        .map_err(|_| bad("alias is not 32 bytes")),
                    _ => Err(bad("alias is not bytes")),
                })
                .collect::<Result<Vec<_>>>()?,
            _ => return Err(bad("aliases: not an array")),
        };
        Ok(RunRecord {
            identity,
            location,
            module,
            state,
            created_at,
            aliases,
            values: [items[AT_CONFIG], items[AT_PREDICATE]].concat().into(),
            split: items[AT_CONFIG].len(),
        })
    }
}

/// Decodes bytes a [`RunRecord`] holds, valid by its invariant.
fn valid(bytes: &[u8]) -> Value {
    crate::cbor::decode(bytes, "record").expect("a record's values are validated canonical CBOR")
}

impl std::fmt::Debug for RunRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunRecord")
            .field("identity", &self.identity)
            .field("location", &self.location)
            .field("module", &self.module)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .field("aliases", &self.aliases)
            .field("config", &self.config())
            .field("predicate", &self.predicate())
            .finish()
    }
}

/// Counts for `cairn stats`.
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct IndexStats {
    /// Runs per (module, state).
    pub per_module: Vec<(String, Availability, u64)>,
    /// All runs.
    pub runs: u64,
    /// Size of the index file in bytes.
    pub file_bytes: u64,
}

/// Longest wait for the index's write slot in this process so far, in nanoseconds.
static LONGEST_WRITE_WAIT_NS: AtomicU64 = AtomicU64::new(0);

/// The longest this process has waited for the index's write slot (another process or thread
/// writing), over every index it opened: a load statistic for tests and tools.
pub fn longest_write_wait() -> Duration {
    Duration::from_nanos(LONGEST_WRITE_WAIT_NS.load(Ordering::Relaxed))
}

/// The open index.
pub struct Index {
    db: Database,
    path: PathBuf,
    write_timeout: Duration,
    /// The identity of the file `db` has open; `path` names another once a heal replaced it.
    id: FileId,
    /// The index file, for its modification stamp (see [`Lookups`]).
    file: std::fs::File,
    /// The read snapshot lookups reuse while it is provably current.
    lookups: Mutex<Option<Arc<Lookups>>>,
}

/// How far the clock must have moved past the index file's mtime before a snapshot may be
/// reused: more than the timestamp granularity of any file system cairn runs on (2 s: FAT; the
/// kernel tick elsewhere), the same margin as the `dirs` table's (FORMAT.md §5.5).
const STAMP_SLACK: Duration = Duration::from_secs(2);
/// Longest reuse of one snapshot, so that it does not keep other processes' writers from
/// reclaiming pages for long.
const SNAPSHOT_TTL: Duration = Duration::from_secs(1);

/// A read snapshot kept for point lookups. A read transaction in `MultiWriter` mode costs
/// several µs of file locking, so lookups reuse one while the file shows no commit since it was
/// taken: every commit writes the file and so moves its mtime past the stamp recorded here, once
/// that stamp is older than [`STAMP_SLACK`] (a later write can then not share its clock tick).
/// A reused snapshot therefore answers exactly as a fresh one would.
struct Lookups {
    runs: redb::ReadOnlyTable<[u8; 32], &'static [u8]>,
    aliases: redb::ReadOnlyTable<[u8; 32], [u8; 32]>,
    stamp: FileStamp,
    taken: Instant,
}

/// What a point lookup runs before it takes a fresh snapshot (the store applies its inbox);
/// returns whether nothing was left pending, so that the snapshot may be kept.
pub(crate) type BeforeFresh<'a> = dyn Fn(&Index) -> Result<bool> + 'a;

/// What every write to the index file changes.
#[derive(Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: SystemTime,
    len: u64,
}

impl FileStamp {
    fn of(file: &std::fs::File, path: &Path) -> Result<Self> {
        use rustix::fs::{AtFlags, StatxFlags};
        // Only the two fields asked for: cheaper than a full `fstat`, once per point lookup.
        let m = rustix::fs::statx(
            file,
            "",
            AtFlags::EMPTY_PATH,
            StatxFlags::MTIME | StatxFlags::SIZE,
        )
        .map_err(|e| Error::io("stat", path, e.into()))?;
        Ok(FileStamp {
            modified: UNIX_EPOCH
                + Duration::new(m.stx_mtime.tv_sec.max(0) as u64, m.stx_mtime.tv_nsec),
            len: m.stx_size,
        })
    }
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("path", &self.path).finish()
    }
}

/// Whether [`Index::open`] found the index usable or had to start it empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opened {
    /// It holds what earlier writes put there.
    Current,
    /// It was missing, of another schema version or corrupt, and is now empty: rebuild it.
    Empty,
    /// redb repaired it on open (a writer crashed, or the file was damaged), possibly falling
    /// back to an earlier commit: rebuild it from the directories.
    Repaired,
}

/// Where the helper thread delivers the opened index.
type OpenResult = mpsc::Receiver<Result<(Index, Opened)>>;

/// What a reindex starts from: one read snapshot of the index.
pub(crate) struct Snapshot {
    /// Every run: (location, identity, directory mtime), in location order.
    pub(crate) runs: Vec<(String, Identity, u64)>,
    /// Every other directory: (location, mtime, names of its subdirectories that are not runs,
    /// `\0`-separated), in location order.
    pub(crate) dirs: Vec<(String, u64, String)>,
    /// Whether the runs table holds exactly the runs the locations table names (false: a
    /// damaged or hand-edited index, which only a full rebuild repairs).
    pub(crate) tables_agree: bool,
    /// Whether the schema version is written, which only a completed rebuild does (§5.2).
    pub(crate) built: bool,
}

/// A run as a rebuild loads it: its record, the record's encoding, and its directory's mtime.
#[derive(Clone, Copy)]
pub(crate) struct Loaded<'a> {
    pub(crate) record: &'a RunRecord,
    pub(crate) encoded: &'a [u8],
    pub(crate) mtime_ns: u64,
}

/// An index opened on a helper thread. redb's open waits, without bound, while another process
/// is inside a write transaction; this bounds the caller's wait. For one timeout after a wait has
/// run out, calls only poll, so a batch does not pay the timeout once per item; then they wait
/// again.
///
/// A heal replaces the index file (`crate::heal`); the handle on the old one is then retired
/// and the next call opens the new file into the next generation. Retired handles stay open
/// until the store is dropped (callers may still hold them), so a store heals at most
/// [`HEALS_PER_STORE`] times.
pub(crate) struct LazyIndex {
    path: PathBuf,
    write_timeout: Duration,
    generations: [OnceLock<Index>; HEALS_PER_STORE + 1],
    /// The generation in use.
    current: AtomicUsize,
    pending: Mutex<Option<OpenResult>>,
    gave_up_at: Mutex<Option<Instant>>,
}

/// Most heals one open store performs; past it, damage is returned as an error.
pub(crate) const HEALS_PER_STORE: usize = 3;

impl std::fmt::Debug for LazyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyIndex")
            .field("path", &self.path)
            .finish()
    }
}

impl LazyIndex {
    /// Starts opening the index at `path`.
    pub(crate) fn open(path: PathBuf, write_timeout: Duration) -> Self {
        let lazy = LazyIndex {
            path,
            write_timeout,
            generations: Default::default(),
            current: AtomicUsize::new(0),
            pending: Mutex::new(None),
            gave_up_at: Mutex::new(None),
        };
        *lazy.pending.lock().expect("index lock") = Some(lazy.spawn());
        lazy
    }

    fn spawn(&self) -> OpenResult {
        let (tx, rx) = mpsc::channel();
        let (path, timeout) = (self.path.clone(), self.write_timeout);
        std::thread::spawn(move || {
            let _ = tx.send(Index::open(&path, timeout));
        });
        rx
    }

    /// The index file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The configured longest wait.
    pub(crate) fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// The index, waiting for it at most the write timeout (or only polling, once a wait has run
    /// out). `Ok(None)` while another process keeps it busy. The `Opened` state is reported once,
    /// on the call that receives the index.
    pub(crate) fn get(&self) -> Result<Option<(&Index, Opened)>> {
        if let Some(index) = self.cell().get() {
            return Ok(Some((index, Opened::Current)));
        }
        let mut pending = self.pending.lock().expect("index lock");
        let cell = self.cell();
        if let Some(index) = cell.get() {
            return Ok(Some((index, Opened::Current)));
        }
        let rx = pending.get_or_insert_with(|| self.spawn());
        let mut gave_up_at = self.gave_up_at.lock().expect("index lock");
        let polling = gave_up_at.is_some_and(|t| t.elapsed() < self.write_timeout);
        let wait = if polling {
            Duration::ZERO
        } else {
            self.write_timeout
        };
        match rx.recv_timeout(wait) {
            Ok(Ok((index, opened))) => {
                *pending = None;
                *gave_up_at = None;
                let index = cell.get_or_init(|| index);
                Ok(Some((index, opened)))
            }
            Ok(Err(e)) => {
                *pending = None; // the next call tries again
                Err(e)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !polling {
                    *gave_up_at = Some(Instant::now());
                }
                Ok(None)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                *pending = None;
                // redb panics on some damaged files (a malformed allocator state or table
                // definition): the opening thread is gone.
                Err(Error::IndexDamaged {
                    path: self.path.clone(),
                    what: "redb failed (panicked) opening it".into(),
                })
            }
        }
    }
}

/// A file's identity: device and inode numbers.
pub(crate) type FileId = (u64, u64);

fn file_id(file: &std::fs::File, path: &Path) -> Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata().map_err(|e| Error::io("stat", path, e))?;
    Ok((m.dev(), m.ino()))
}

/// The identity of the file at `path`; `None` when there is none.
pub(crate) fn id_at(path: &Path) -> Result<Option<FileId>> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((m.dev(), m.ino()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

impl LazyIndex {
    fn cell(&self) -> &OnceLock<Index> {
        &self.generations[self.current.load(Ordering::Acquire)]
    }

    /// Retires `damaged` after a heal replaced its file: the next [`LazyIndex::get`] opens the
    /// file now at the path. False when this store has healed [`HEALS_PER_STORE`] times.
    pub(crate) fn retire(&self, damaged: &Index) -> bool {
        let _pending = self.pending.lock().expect("index lock");
        let now = self.current.load(Ordering::Acquire);
        if !self.generations[now]
            .get()
            .is_some_and(|i| std::ptr::eq(i, damaged))
        {
            return true; // another thread retired it already
        }
        if now == HEALS_PER_STORE {
            return false;
        }
        self.current.store(now + 1, Ordering::Release);
        true
    }
}

fn redb_error(path: &Path, e: impl Into<redb::Error>) -> Error {
    match e.into() {
        // The disk or the device failed, not the index: an I/O error naming the file.
        redb::Error::Io(source) => Error::io("access", path, source),
        // cairn opens every table with the definitions it created them with, and the run tables
        // always exist (`Index::open`): any of these means damaged bytes.
        e @ (redb::Error::Corrupted(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::TableDoesNotExist(_)) => Error::IndexDamaged {
            path: path.into(),
            what: e.to_string(),
        },
        e => Error::Index {
            path: path.into(),
            reason: e.to_string(),
        },
    }
}

impl Index {
    /// Opens (or creates) the index at `path`. An index of another schema version is cleared
    /// ([`Opened::Empty`]); a file redb cannot open as a database is [`Error::IndexDamaged`]
    /// (the store heals it, `crate::heal`), an I/O error that the operating system reports is
    /// [`Error::Io`]: neither is moved nor changed here.
    pub(crate) fn open(path: &Path, write_timeout: Duration) -> Result<(Index, Opened)> {
        let existed = path.exists();
        let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The file's identity is taken before and after redb opens it: equal, they name the file
        // redb opened (a heal in another process may replace the path meanwhile).
        let (db, file) = loop {
            let before = std::fs::File::open(path).ok();
            let db = match Self::open_db(path, &repaired) {
                Ok(db) => db,
                // A full disk or a failing device is no damage: reported, and nothing is moved.
                Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                    if e.raw_os_error().is_some() =>
                {
                    return Err(Error::io("open", path, e));
                }
                Err(redb::DatabaseError::Storage(
                    e @ (redb::StorageError::Corrupted(_) | redb::StorageError::Io(_)),
                )) if existed => {
                    return Err(Error::IndexDamaged {
                        path: path.into(),
                        what: format!("redb cannot open it: {e}"),
                    });
                }
                Err(e) => return Err(redb_error(path, e)),
            };
            let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
            let same = match &before {
                Some(b) => file_id(b, path)? == file_id(&file, path)?,
                None => !existed,
            };
            if same {
                break (db, file);
            }
        };
        let index = Index {
            db,
            path: path.into(),
            write_timeout,
            id: file_id(&file, path)?,
            file,
            lookups: Mutex::new(None),
        };
        // An index of another version is emptied, and its version removed: only a completed
        // rebuild writes the version (`Index::replace_all`), so a rebuild that stops part-way
        // leaves an index the next open rebuilds again, never one that looks current.
        let opened = index.write(|txn| {
            let meta = txn.open_table(META).map_err(|e| redb_error(path, e))?;
            if schema_version(&meta, path)? == Some(INDEX_SCHEMA_VERSION) {
                return Ok(Opened::Current);
            }
            drop(meta);
            if existed {
                eprintln!(
                    "cairn: warning: index {} has no schema version {INDEX_SCHEMA_VERSION}; \
                     rebuilt from the run directories",
                    path.display()
                );
            }
            clear_tables(txn, path)?;
            let mut meta = txn.open_table(META).map_err(|e| redb_error(path, e))?;
            meta.remove(SCHEMA_KEY).map_err(|e| redb_error(path, e))?;
            Ok(Opened::Empty)
        })?;
        if opened == Opened::Current && repaired.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!(
                "cairn: warning: index {} was not closed cleanly or is damaged; redb repaired it, \
                 and it is rebuilt from the run directories",
                path.display()
            );
            return Ok((index, Opened::Repaired));
        }
        Ok((index, opened))
    }

    /// Opens the database; `repaired` is set when redb had to repair it.
    fn open_db(
        path: &Path,
        repaired: &Arc<std::sync::atomic::AtomicBool>,
    ) -> std::result::Result<Database, redb::DatabaseError> {
        let flag = Arc::clone(repaired);
        let mut builder = Database::builder();
        builder
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .set_repair_callback(move |_| flag.store(true, std::sync::atomic::Ordering::Relaxed));
        // Test builds put failpoints under redb's own writes and fsyncs (src/index_faults.rs).
        #[cfg(feature = "failpoints")]
        return builder.create_with_backend(crate::index_faults::FaultyFile::open(path)?);
        #[cfg(not(feature = "failpoints"))]
        builder.create_with_backend(crate::index_file::IndexFile::open(path)?)
    }

    /// The index file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `e` is a failure of the index file itself (a write or fsync of `index.redb`):
    /// then whether a failed commit persisted is unknown, and nothing it may refer to is removed.
    pub(crate) fn failed_inside(&self, e: &Error) -> bool {
        matches!(e, Error::Io { path, .. } if *path == self.path)
    }

    /// A read snapshot, for tables defined outside this module (the resource tables).
    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction> {
        self.db.begin_read().map_err(|e| redb_error(&self.path, e))
    }

    /// An [`Error::Index`] naming this index.
    pub(crate) fn error(&self, e: impl Into<redb::Error>) -> Error {
        redb_error(&self.path, e)
    }

    /// `def` in a fresh read snapshot (the table keeps its transaction alive).
    fn read<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<redb::ReadOnlyTable<K, V>> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| redb_error(&self.path, e))?;
        txn.open_table(def).map_err(|e| redb_error(&self.path, e))
    }

    /// Runs `f` in a write transaction and commits it. Waits for the write slot (another process
    /// or thread writing) with exponential backoff, at most the configured timeout.
    /// A write transaction replaced by a heal (`crate::heal`) while this handle was open is
    /// refused as [`Error::IndexDamaged`] before `f` runs: the store then reopens the index and
    /// retries, so no commit lands in a file that was moved aside.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
        self.write_freeing(|txn| Ok((f(txn)?, ())))
    }

    /// [`Index::write`] where `f` also hands back what it no longer needs, which is freed on
    /// another thread while the commit writes and syncs (a rebuild's records).
    pub(crate) fn write_freeing<T, G: Send>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<(T, G)>,
    ) -> Result<T> {
        let txn = self.write_slot()?;
        if !self.is_current()? {
            return Err(Error::IndexDamaged {
                path: self.path.clone(),
                what: "it was found damaged and replaced by a rebuilt index while open".into(),
            });
        }
        *self.lookups.lock().expect("lookup lock") = None;
        let (out, garbage) = f(&txn)?;
        crate::durable::failpoint("index.before_commit")?;
        std::thread::scope(|s| {
            if std::mem::needs_drop::<G>() {
                // Without a thread to be had, the closure and `garbage` are dropped here.
                let _ = std::thread::Builder::new().spawn_scoped(s, move || drop(garbage));
            }
            txn.commit()
        })
        .map_err(|e| redb_error(&self.path, e))?;
        Ok(out)
    }

    /// The write slot, waited for as [`Index::write`] says: a transaction to commit or abort.
    pub(crate) fn write_slot(&self) -> Result<WriteTransaction> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(200);
        let txn = loop {
            match self.db.try_begin_write() {
                Ok(txn) => break txn,
                Err(TransactionError::WouldBlock) => {
                    let waited = start.elapsed();
                    if waited >= self.write_timeout {
                        return Err(Error::IndexBusy {
                            path: self.path.clone(),
                            waited,
                        });
                    }
                    std::thread::sleep(pause.min(self.write_timeout - waited));
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(redb_error(&self.path, e)),
            }
        };
        LONGEST_WRITE_WAIT_NS.fetch_max(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(txn)
    }

    /// Whether the index path still names the file this handle has open.
    pub(crate) fn is_current(&self) -> Result<bool> {
        Ok(id_at(&self.path)? == Some(self.id))
    }

    /// The snapshot for point lookups: the kept one while the file shows no commit since it was
    /// taken (see [`Lookups`]), else a fresh one, kept if its stamp is settled.
    fn lookups(&self) -> Result<Arc<Lookups>> {
        self.lookups_with(&|_| Ok(true))
    }

    /// [`Index::lookups`], calling `before_fresh` before it takes a fresh snapshot (never when
    /// it reuses the kept one); the snapshot is kept only if `before_fresh` returned true.
    fn lookups_with(&self, before_fresh: &BeforeFresh<'_>) -> Result<Arc<Lookups>> {
        let now = FileStamp::of(&self.file, &self.path)?;
        if let Some(l) = self.lookups.lock().expect("lookup lock").as_ref()
            && l.stamp == now
            && l.taken.elapsed() < SNAPSHOT_TTL
        {
            return Ok(l.clone());
        }
        // Unlocked: `before_fresh` may write, and every write drops the kept snapshot.
        let keep = before_fresh(self)?;
        let mut kept = self.lookups.lock().expect("lookup lock");
        *kept = None;
        let wall = SystemTime::now();
        // Read after `before_fresh`, so that a touch of the file by an inbox writer it did not
        // see is either after this stamp or makes this stamp too recent to keep (FORMAT.md §5.1).
        let stamp = FileStamp::of(&self.file, &self.path)?;
        let txn = self
            .db
            .begin_read()
            .map_err(|e| redb_error(&self.path, e))?;
        let fresh = Arc::new(Lookups {
            runs: txn
                .open_table(RUNS)
                .map_err(|e| redb_error(&self.path, e))?,
            aliases: txn
                .open_table(ALIASES)
                .map_err(|e| redb_error(&self.path, e))?,
            stamp,
            taken: Instant::now(),
        });
        if keep
            && wall
                .duration_since(stamp.modified)
                .is_ok_and(|age| age > STAMP_SLACK)
        {
            *kept = Some(fresh.clone());
        }
        Ok(fresh)
    }

    /// The record of `identity`.
    pub fn get(&self, identity: &Identity) -> Result<Option<RunRecord>> {
        let l = self.lookups()?;
        self.record_in(&l, identity)
    }

    /// The current identity of a run re-keyed away from `old`.
    pub fn alias(&self, old: &Identity) -> Result<Option<Identity>> {
        let l = self.lookups()?;
        self.alias_in(&l, old)
    }

    /// The record of `identity`, or of the run re-keyed away from it, from one snapshot;
    /// `before_fresh` is called if the kept snapshot cannot be reused.
    pub(crate) fn lookup_with(
        &self,
        identity: &Identity,
        before_fresh: &BeforeFresh<'_>,
    ) -> Result<Option<RunRecord>> {
        let l = self.lookups_with(before_fresh)?;
        match self.record_in(&l, identity)? {
            Some(rec) => Ok(Some(rec)),
            None => match self.alias_in(&l, identity)? {
                Some(current) => self.record_in(&l, &current),
                None => Ok(None),
            },
        }
    }

    fn record_in(&self, l: &Lookups, identity: &Identity) -> Result<Option<RunRecord>> {
        match l
            .runs
            .get(identity.as_bytes())
            .map_err(|e| redb_error(&self.path, e))?
        {
            None => Ok(None),
            Some(bytes) => RunRecord::decode(*identity, bytes.value(), &self.path).map(Some),
        }
    }

    fn alias_in(&self, l: &Lookups, old: &Identity) -> Result<Option<Identity>> {
        Ok(l.aliases
            .get(old.as_bytes())
            .map_err(|e| redb_error(&self.path, e))?
            .map(|v| Identity::from_bytes(v.value())))
    }

    /// Up to `limit` (old, current) aliases whose old identity starts with `prefix`.
    pub fn aliases_with_prefix(
        &self,
        prefix: &Prefix,
        limit: usize,
    ) -> Result<Vec<(Identity, Identity)>> {
        let (lo, hi) = prefix_bounds(prefix.as_str());
        let t = self.read(ALIASES)?;
        let mut out = Vec::new();
        for entry in t.range(lo..=hi).map_err(|e| redb_error(&self.path, e))? {
            let (k, v) = entry.map_err(|e| redb_error(&self.path, e))?;
            let old = Identity::from_bytes(k.value());
            if prefix.matches(&old) {
                out.push((old, Identity::from_bytes(v.value())));
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Up to `limit` records whose identity starts with `prefix`, in identity order.
    pub fn with_prefix(&self, prefix: &Prefix, limit: usize) -> Result<Vec<RunRecord>> {
        let (lo, hi) = prefix_bounds(prefix.as_str());
        let runs = self.read(RUNS)?;
        let mut out = Vec::new();
        for entry in runs.range(lo..=hi).map_err(|e| redb_error(&self.path, e))? {
            let (k, v) = entry.map_err(|e| redb_error(&self.path, e))?;
            let id = Identity::from_bytes(k.value());
            if !prefix.matches(&id) {
                continue;
            }
            out.push(RunRecord::decode(id, v.value(), &self.path)?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The identity of the run at `location`.
    pub fn at_location(&self, location: &str) -> Result<Option<Identity>> {
        let t = self.read(LOCATIONS)?;
        Ok(t.get(location)
            .map_err(|e| redb_error(&self.path, e))?
            .map(|v| Identity::from_bytes(v.value().0)))
    }

    /// Identities of the runs of `module`, in identity order.
    pub fn of_module(&self, module: &str) -> Result<Vec<Identity>> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| redb_error(&self.path, e))?;
        let t = txn
            .open_table(MODULES)
            .map_err(|e| redb_error(&self.path, e))?;
        t.range((module, [0; 32])..=(module, [0xff; 32]))
            .map_err(|e| redb_error(&self.path, e))?
            .map(|entry| {
                entry
                    .map(|(k, _)| Identity::from_bytes(k.value().1))
                    .map_err(|e| redb_error(&self.path, e))
            })
            .collect()
    }

    /// Calls `f` with every record, in identity order, until it returns false.
    pub fn for_each(&self, mut f: impl FnMut(RunRecord) -> bool) -> Result<()> {
        let runs = self.read(RUNS)?;
        for entry in runs.iter().map_err(|e| redb_error(&self.path, e))? {
            let (k, v) = entry.map_err(|e| redb_error(&self.path, e))?;
            if !f(RunRecord::decode(
                Identity::from_bytes(k.value()),
                v.value(),
                &self.path,
            )?) {
                break;
            }
        }
        Ok(())
    }

    /// Every record whose encoding (FORMAT.md §5.2) satisfies `keep`, scanning 16 identity
    /// ranges in parallel (each in its own read transaction); in identity order. Only the kept
    /// records are decoded (and validated), so `keep` should accept bytes it cannot read: the
    /// decoder then reports them.
    pub fn filter_par(&self, keep: impl Fn(&[u8]) -> bool + Sync) -> Result<Vec<RunRecord>> {
        use rayon::prelude::*;
        let parts: Vec<Result<Vec<RunRecord>>> = (0u8..16)
            .into_par_iter()
            .map(|part| {
                let mut lo = [0u8; 32];
                let mut hi = [0xffu8; 32];
                lo[0] = part << 4;
                hi[0] = (part << 4) | 0x0f;
                let runs = self.read(RUNS)?;
                let mut out = Vec::new();
                for entry in runs.range(lo..=hi).map_err(|e| redb_error(&self.path, e))? {
                    let (k, v) = entry.map_err(|e| redb_error(&self.path, e))?;
                    if keep(v.value()) {
                        out.push(RunRecord::decode(
                            Identity::from_bytes(k.value()),
                            v.value(),
                            &self.path,
                        )?);
                    }
                }
                Ok(out)
            })
            .collect();
        let mut all = Vec::new();
        for part in parts {
            all.extend(part?);
        }
        Ok(all)
    }

    /// Every record of `identities`, those missing skipped.
    pub fn get_many(&self, identities: &[Identity]) -> Result<Vec<RunRecord>> {
        self.filter_ids(identities, usize::MAX, |_| true)
    }

    /// The first `limit` records of `identities` (in that order, those missing skipped) whose
    /// encoding satisfies `keep`, as [`Index::filter_par`].
    pub(crate) fn filter_ids(
        &self,
        identities: &[Identity],
        limit: usize,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<RunRecord>> {
        let l = self.lookups()?;
        let mut out = Vec::new();
        for id in identities {
            if out.len() >= limit {
                break;
            }
            if let Some(v) = l
                .runs
                .get(id.as_bytes())
                .map_err(|e| redb_error(&self.path, e))?
                && keep(v.value())
            {
                out.push(RunRecord::decode(*id, v.value(), &self.path)?);
            }
        }
        Ok(out)
    }

    /// For each `(identity, encoding)` of `runs` (sorted by identity, unique), whether the runs
    /// table holds exactly that encoding; compared in place, from one snapshot per thread.
    /// When `runs` covers much of the table, its range is scanned in two halves on two threads;
    /// else each identity is looked up.
    pub(crate) fn same_encodings(&self, runs: &[(Identity, &[u8])]) -> Result<Vec<bool>> {
        use rayon::prelude::*;
        let table = self.read(RUNS)?;
        let stored = table.len().map_err(|e| redb_error(&self.path, e))?;
        if (runs.len() as u64) * 16 < stored {
            return runs
                .par_chunks(4096)
                .map(|chunk| {
                    let table = self.read(RUNS)?;
                    chunk
                        .iter()
                        .map(|(id, encoded)| {
                            let got = table
                                .get(id.as_bytes())
                                .map_err(|e| redb_error(&self.path, e))?;
                            Ok(got.is_some_and(|v| v.value() == *encoded))
                        })
                        .collect::<Result<Vec<bool>>>()
                })
                .collect::<Result<Vec<_>>>()
                .map(|parts| parts.concat());
        }
        let (low, high) = runs.split_at(runs.len() / 2);
        let (low, high) = rayon::join(|| self.same_in_range(low), || self.same_in_range(high));
        let mut same = low?;
        same.extend(high?);
        Ok(same)
    }

    /// [`Index::same_encodings`] by one scan of the range `runs` spans.
    fn same_in_range(&self, runs: &[(Identity, &[u8])]) -> Result<Vec<bool>> {
        let (Some((first, _)), Some((last, _))) = (runs.first(), runs.last()) else {
            return Ok(Vec::new());
        };
        let e = |e| redb_error(&self.path, e);
        let table = self.read(RUNS)?;
        let mut stored = table
            .range::<&[u8; 32]>(first.as_bytes()..=last.as_bytes())
            .map_err(e)?;
        let mut next = stored.next().transpose().map_err(e)?;
        let mut same = Vec::with_capacity(runs.len());
        for (id, encoded) in runs {
            while next
                .as_ref()
                .is_some_and(|(k, _)| k.value() < *id.as_bytes())
            {
                next = stored.next().transpose().map_err(e)?;
            }
            same.push(
                next.as_ref()
                    .is_some_and(|(k, v)| k.value() == *id.as_bytes() && v.value() == *encoded),
            );
        }
        Ok(same)
    }

    /// The first `limit` records in identity order whose encoding satisfies `keep`, as
    /// [`Index::filter_par`] but reading only as far as needed, on one thread.
    pub(crate) fn filter_first(
        &self,
        limit: usize,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<RunRecord>> {
        let runs = self.read(RUNS)?;
        let mut out = Vec::new();
        for entry in runs.iter().map_err(|e| redb_error(&self.path, e))? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = entry.map_err(|e| redb_error(&self.path, e))?;
            if keep(v.value()) {
                out.push(RunRecord::decode(
                    Identity::from_bytes(k.value()),
                    v.value(),
                    &self.path,
                )?);
            }
        }
        Ok(out)
    }

    /// Every run's location, identity and mtime, and every other directory's location, mtime
    /// and names of the subdirectories that are not runs (`\0`-separated), each in location
    /// order: what a reindex starts from.
    pub(crate) fn snapshot(&self) -> Result<Snapshot> {
        let p = &self.path;
        // Every table from one snapshot.
        let txn = self.db.begin_read().map_err(|e| redb_error(p, e))?;
        let locs = txn.open_table(LOCATIONS).map_err(|e| redb_error(p, e))?;
        let mut runs = Vec::with_capacity(locs.len().unwrap_or(0) as usize);
        for entry in locs.iter().map_err(|e| redb_error(p, e))? {
            let (k, v) = entry.map_err(|e| redb_error(p, e))?;
            let (id, mtime) = v.value();
            runs.push((k.value().to_owned(), Identity::from_bytes(id), mtime));
        }
        let dirs_table = txn.open_table(DIRS).map_err(|e| redb_error(p, e))?;
        let mut dirs = Vec::new();
        for entry in dirs_table.iter().map_err(|e| redb_error(p, e))? {
            let (k, v) = entry.map_err(|e| redb_error(p, e))?;
            let (mtime, names) = v.value();
            dirs.push((k.value().to_owned(), mtime, names.to_owned()));
        }
        let run_count = txn
            .open_table(RUNS)
            .and_then(|t| Ok(t.len()?))
            .map_err(|e| redb_error(p, e))?;
        let meta = txn.open_table(META).map_err(|e| redb_error(p, e))?;
        Ok(Snapshot {
            tables_agree: run_count == runs.len() as u64,
            built: schema_version(&meta, p)? == Some(INDEX_SCHEMA_VERSION),
            runs,
            dirs,
        })
    }

    /// Inserts or replaces one run (a new run, or one found moved); `mtime_ns` 0 means "revisit
    /// on the next incremental reindex".
    pub(crate) fn put(&self, txn: &WriteTransaction, rec: &RunRecord, mtime_ns: u64) -> Result<()> {
        let p = &self.path;
        let mut runs = txn.open_table(RUNS).map_err(|e| redb_error(p, e))?;
        let mut locs = txn.open_table(LOCATIONS).map_err(|e| redb_error(p, e))?;
        let mut modules = txn.open_table(MODULES).map_err(|e| redb_error(p, e))?;
        let mut aliases = txn.open_table(ALIASES).map_err(|e| redb_error(p, e))?;
        let key = rec.identity.as_bytes();
        for a in &rec.aliases {
            aliases
                .insert(a.as_bytes(), key)
                .map_err(|e| redb_error(p, e))?;
            // A run known under its old identity is now this one.
            if let Some(stale) = runs.remove(a.as_bytes()).map_err(|e| redb_error(p, e))? {
                let stale = RunRecord::decode(*a, stale.value(), p)?;
                stale_location(&mut locs, &stale, p)?;
                modules
                    .remove((stale.module.as_str(), *a.as_bytes()))
                    .map_err(|e| redb_error(p, e))?;
            }
        }
        if let Some(old) = runs.get(key).map_err(|e| redb_error(p, e))? {
            let old = RunRecord::decode(rec.identity, old.value(), p)?;
            if old.location != rec.location {
                locs.remove(old.location.as_str())
                    .map_err(|e| redb_error(p, e))?;
            }
            if old.module != rec.module {
                modules
                    .remove((old.module.as_str(), *key))
                    .map_err(|e| redb_error(p, e))?;
            }
        }
        runs.insert(key, rec.encode().as_slice())
            .map_err(|e| redb_error(p, e))?;
        locs.insert(rec.location.as_str(), (*key, mtime_ns))
            .map_err(|e| redb_error(p, e))?;
        modules
            .insert((rec.module.as_str(), *key), ())
            .map_err(|e| redb_error(p, e))?;
        Ok(())
    }

    /// Removes one run.
    pub(crate) fn remove(&self, txn: &WriteTransaction, identity: &Identity) -> Result<()> {
        let p = &self.path;
        let mut runs = txn.open_table(RUNS).map_err(|e| redb_error(p, e))?;
        let Some(old) = runs
            .remove(identity.as_bytes())
            .map_err(|e| redb_error(p, e))?
        else {
            return Ok(());
        };
        let old = RunRecord::decode(*identity, old.value(), p)?;
        let mut locs = txn.open_table(LOCATIONS).map_err(|e| redb_error(p, e))?;
        stale_location(&mut locs, &old, p)?;
        let mut aliases = txn.open_table(ALIASES).map_err(|e| redb_error(p, e))?;
        for a in &old.aliases {
            aliases.remove(a.as_bytes()).map_err(|e| redb_error(p, e))?;
        }
        let mut modules = txn.open_table(MODULES).map_err(|e| redb_error(p, e))?;
        modules
            .remove((old.module.as_str(), *identity.as_bytes()))
            .map_err(|e| redb_error(p, e))?;
        Ok(())
    }

    /// Replaces every run table with `records` (sorted by identity, unique) and the directory
    /// states with `dirs` (sorted by location), each table loaded through a cursor in key order
    /// (redb's fast path for bulk loads), and writes the schema version: the index is then
    /// built (§5.2). redb lets the tables of one write transaction be used from several
    /// threads: the tables load on three, the runs table (the largest) with the aliases, the
    /// locations, and the module table with the directory states.
    pub(crate) fn replace_all(
        &self,
        txn: &WriteTransaction,
        records: &[Loaded<'_>],
        dirs: &[(String, u64, String)],
    ) -> Result<()> {
        let p = &self.path;
        clear_tables(txn, p)?;
        std::thread::scope(|s| {
            let runs = s.spawn(|| {
                self.load_runs(txn, records)
                    .and_then(|()| self.load_aliases(txn, records))
            });
            let modules = s.spawn(|| {
                self.load_modules(txn, records)
                    .and_then(|()| self.put_dirs(txn, dirs))
            });
            let locations = self.load_locations(txn, records);
            for loaded in [runs.join(), modules.join()] {
                loaded.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            }
            locations
        })?;
        let mut meta = txn.open_table(META).map_err(|e| redb_error(p, e))?;
        meta.insert(SCHEMA_KEY, INDEX_SCHEMA_VERSION.to_le_bytes().as_slice())
            .map_err(|e| redb_error(p, e))?;
        Ok(())
    }

    /// Whether the schema version is written in `txn`: a rebuild completed (§5.2).
    pub(crate) fn built(&self, txn: &WriteTransaction) -> Result<bool> {
        let meta = txn
            .open_table(META)
            .map_err(|e| redb_error(&self.path, e))?;
        Ok(schema_version(&meta, &self.path)? == Some(INDEX_SCHEMA_VERSION))
    }

    /// Loads `entries`, in key order, into the empty table `def` through a cursor at its end
    /// (redb's fast path for bulk loads).
    fn load_in_order<'e, K: Key + 'static, V: redb::Value + 'static>(
        &self,
        txn: &WriteTransaction,
        def: TableDefinition<K, V>,
        entries: impl IntoIterator<Item = (K::SelfType<'e>, V::SelfType<'e>)>,
    ) -> Result<()> {
        let p = &self.path;
        let mut table = txn.open_table(def).map_err(|e| redb_error(p, e))?;
        let mut cursor = table
            .upper_bound_mut(Bound::<K::SelfType<'e>>::Unbounded)
            .map_err(|e| redb_error(p, e))?;
        for (key, value) in entries {
            cursor
                .insert_before(key, value)
                .map_err(|e| redb_error(p, e))?;
        }
        cursor.close().map_err(|e| redb_error(p, e))
    }

    fn load_runs(&self, txn: &WriteTransaction, records: &[Loaded<'_>]) -> Result<()> {
        let entries = records
            .iter()
            .map(|r| (*r.record.identity.as_bytes(), r.encoded));
        self.load_in_order(txn, RUNS, entries)
    }

    fn load_locations(&self, txn: &WriteTransaction, records: &[Loaded<'_>]) -> Result<()> {
        use rayon::slice::ParallelSliceMut;
        let mut by_loc: Vec<(&str, [u8; 32], u64)> = records
            .iter()
            .map(|r| {
                let rec = r.record;
                (rec.location.as_str(), *rec.identity.as_bytes(), r.mtime_ns)
            })
            .collect();
        by_loc.par_sort_unstable_by(|a, b| a.0.cmp(b.0));
        let entries = by_loc
            .into_iter()
            .map(|(loc, id, mtime)| (loc, (id, mtime)));
        self.load_in_order(txn, LOCATIONS, entries)
    }

    fn load_modules(&self, txn: &WriteTransaction, records: &[Loaded<'_>]) -> Result<()> {
        // Grouped by module without a comparison sort: few modules, and each group keeps the
        // records' identity order.
        let mut groups: HashMap<&str, Vec<[u8; 32]>> = HashMap::new();
        for r in records {
            groups
                .entry(r.record.module.as_str())
                .or_default()
                .push(*r.record.identity.as_bytes());
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_unstable_by_key(|(module, _)| *module);
        let by_module = groups
            .into_iter()
            .flat_map(|(module, ids)| ids.into_iter().map(move |id| (module, id)));
        self.load_in_order(txn, MODULES, by_module.map(|key| (key, ())))
    }

    fn load_aliases(&self, txn: &WriteTransaction, records: &[Loaded<'_>]) -> Result<()> {
        let p = &self.path;
        let mut pairs: Vec<([u8; 32], [u8; 32])> = records
            .iter()
            .flat_map(|r| {
                let id = *r.record.identity.as_bytes();
                r.record.aliases.iter().map(move |a| (*a.as_bytes(), id))
            })
            .collect();
        pairs.sort_unstable();
        let mut aliases = txn.open_table(ALIASES).map_err(|e| redb_error(p, e))?;
        for (old, new) in pairs {
            aliases.insert(old, new).map_err(|e| redb_error(p, e))?;
        }
        Ok(())
    }

    /// Replaces the directory states (sorted by location).
    pub(crate) fn put_dirs(
        &self,
        txn: &WriteTransaction,
        dirs: &[(String, u64, String)],
    ) -> Result<()> {
        let p = &self.path;
        txn.delete_table(DIRS).map_err(|e| redb_error(p, e))?;
        let entries = dirs
            .iter()
            .map(|(loc, mtime, names)| (loc.as_str(), (*mtime, names.as_str())));
        self.load_in_order(txn, DIRS, entries)
    }

    /// Counts per module and state, and the file size.
    pub fn stats(&self) -> Result<IndexStats> {
        let mut counts: HashMap<(String, Availability), u64> = HashMap::new();
        let mut runs = 0;
        self.for_each(|r| {
            runs += 1;
            *counts.entry((r.module, r.state)).or_default() += 1;
            true
        })?;
        let mut per_module: Vec<_> = counts.into_iter().map(|((m, s), n)| (m, s, n)).collect();
        per_module.sort();
        let file_bytes = std::fs::metadata(&self.path)
            .map_err(|e| Error::io("stat", &self.path, e))?
            .len();
        Ok(IndexStats {
            per_module,
            runs,
            file_bytes,
        })
    }
}

/// Drops `rec`'s location entry if it still names `rec` (a duplicate may hold it).
fn stale_location(
    locs: &mut redb::Table<&str, ([u8; 32], u64)>,
    rec: &RunRecord,
    p: &Path,
) -> Result<()> {
    let here = locs
        .get(rec.location.as_str())
        .map_err(|e| redb_error(p, e))?
        .is_some_and(|v| v.value().0 == *rec.identity.as_bytes());
    if here {
        locs.remove(rec.location.as_str())
            .map_err(|e| redb_error(p, e))?;
    }
    Ok(())
}

/// Empties the data tables, leaving each present (readers never meet a missing table).
/// The resource tables (`crate::artifact::tables`) are deliberately not touched: inline bytes
/// live only there and no rebuild could restore them (FORMAT.md §7.3).
/// The schema version written in `meta`, if any.
fn schema_version(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    path: &Path,
) -> Result<Option<u64>> {
    Ok(meta
        .get(SCHEMA_KEY)
        .map_err(|e| redb_error(path, e))?
        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
        .map(u64::from_le_bytes))
}

fn clear_tables(txn: &WriteTransaction, path: &Path) -> Result<()> {
    let e = |e: redb::TableError| redb_error(path, e);
    txn.delete_table(RUNS).map_err(e)?;
    txn.delete_table(LOCATIONS).map_err(e)?;
    txn.delete_multimap_table(OLD_MODULES).map_err(e)?;
    txn.delete_table(MODULES).map_err(e)?;
    txn.delete_table(DIRS).map_err(e)?;
    txn.delete_table(ALIASES).map_err(e)?;
    txn.open_table(ALIASES).map_err(e)?;
    txn.open_table(RUNS).map_err(e)?;
    txn.open_table(LOCATIONS).map_err(e)?;
    txn.open_table(MODULES).map_err(e)?;
    txn.open_table(DIRS).map_err(e)?;
    Ok(())
}

/// The identity range covered by a hex prefix.
fn prefix_bounds(prefix: &str) -> ([u8; 32], [u8; 32]) {
    let mut lo = [0u8; 32];
    let mut hi = [0xffu8; 32];
    for (i, c) in prefix.bytes().enumerate() {
        let nibble = (c as char).to_digit(16).expect("validated hex") as u8;
        let byte = i / 2;
        if i % 2 == 0 {
            lo[byte] = nibble << 4;
            hi[byte] = (nibble << 4) | 0x0f;
        } else {
            lo[byte] |= nibble;
            hi[byte] = (hi[byte] & 0xf0) | nibble;
        }
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_bounds_cover_odd_and_even_prefixes() {
        let (lo, hi) = prefix_bounds("abc");
        assert_eq!(&lo[..2], &[0xab, 0xc0]);
        assert_eq!(&hi[..2], &[0xab, 0xcf]);
        assert!(lo[2..].iter().all(|&b| b == 0) && hi[2..].iter().all(|&b| b == 0xff));
    }

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let mut rec = RunRecord::new(
            Identity::from_bytes([7; 32]),
            "train/07/x".into(),
            "train".into(),
            "2026-11-22T08:00:00Z".into(),
            &Value::from_json_slice(br#"{"lr": 0.5}"#, "c").unwrap(),
            &Value::from_json_slice(br#"{"split": "val"}"#, "p").unwrap(),
        );
        rec.state = Availability::Evicted;
        rec.aliases = vec![Identity::from_bytes([9; 32])];
        let p = Path::new("index.redb");
        // FORMAT.md §5.2, byte for byte (also fuzz/seeds/index_record/record.cbor).
        let golden = concat!(
            "88026765766963",
            "7465646a747261696e2f30372f7865747261696e74",
            "323032362d31",
            "312d32325430383a30303a30305a81582009090909",
            "090909",
            "09090909090909090909090909090909090909090909090909a1626c72f93800",
            "a16573706c69746376616c",
        );
        let bytes = rec.encode();
        assert_eq!(hex(&bytes), golden);
        let back = RunRecord::decode(rec.identity, &bytes, p).unwrap();
        assert_eq!(back, rec);
        assert_eq!(back.config().to_json(), serde_json::json!({"lr": 0.5}));
        assert_eq!(
            back.predicate().to_json(),
            serde_json::json!({"split": "val"})
        );
        // Another shape, another version, a damaged field, a non-canonical config, trailing
        // bytes: each is refused naming the index.
        let mut old_version = bytes.clone();
        old_version[1] = 0x01;
        let mut bad_text = bytes.clone();
        bad_text[3] = 0xff; // inside "evicted"
        // 0.5 as a single-precision float: wider than its shortest form.
        let n = bytes.len();
        let long_head = [&bytes[..n - 14], b"\xfa\x3f\x00\x00\x00", &bytes[n - 11..]].concat();
        assert_eq!(&bytes[n - 14..n - 11], b"\xf9\x38\x00");
        for damaged in [
            &b"\xa0"[..],
            &old_version,
            &bad_text,
            &long_head,
            &[&bytes[..], b"\x00"].concat(),
            &bytes[..bytes.len() - 1],
        ] {
            let err = RunRecord::decode(rec.identity, damaged, p).unwrap_err();
            assert!(
                matches!(&err, Error::IndexDamaged { path, .. } if path == p),
                "{damaged:02x?}: {err}"
            );
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    proptest::proptest! {
        /// The lazily decoded record agrees with the canonical value the record encodes (decoded
        /// whole by the reference), and every truncation or one-byte change of it is either
        /// refused or a record that re-encodes to exactly those bytes.
        #[test]
        fn records_agree_with_the_reference_decoder(
            config in crate::cbor::tests::value(),
            predicate in crate::cbor::tests::value(),
            location in "[a-z/]{0,30}",
            aliases in proptest::collection::vec(proptest::prelude::any::<[u8; 32]>(), 0..3),
            state in 0usize..3,
            at in proptest::prelude::any::<usize>(),
            byte in proptest::prelude::any::<u8>(),
        ) {
            let mut rec = RunRecord::new(
                Identity::from_bytes([1; 32]),
                location,
                "train".into(),
                "2026-11-22T08:00:00Z".into(),
                &config,
                &predicate,
            );
            rec.state = [Availability::Local, Availability::Remote, Availability::Evicted][state];
            rec.aliases = aliases.into_iter().map(Identity::from_bytes).collect();
            let bytes = rec.encode();
            let Ok(Value::Array(items)) = Value::from_canonical_cbor(&bytes, "r") else {
                panic!("not a canonical array");
            };
            proptest::prop_assert_eq!(&items[6], &config);
            proptest::prop_assert_eq!(&items[7], &predicate);
            let p = Path::new("index.redb");
            let back = RunRecord::decode(rec.identity, &bytes, p).unwrap();
            proptest::prop_assert_eq!(back.config(), config);
            proptest::prop_assert_eq!(back.predicate(), predicate);
            proptest::prop_assert_eq!(&back, &rec);
            let at = at % bytes.len();
            let mut changed = bytes.clone();
            changed[at] = byte;
            for input in [&bytes[..at], &changed[..]] {
                if let Ok(r) = RunRecord::decode(rec.identity, input, p) {
                    proptest::prop_assert_eq!(&r.encode()[..], input);
                    proptest::prop_assert!(Value::from_canonical_cbor(input, "r").is_ok());
                }
            }
        }
    }

    #[test]
    fn another_schema_version_is_cleared_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        {
            let (index, opened) = Index::open(&path, Duration::from_secs(1)).unwrap();
            assert_eq!(opened, Opened::Empty);
            index
                .write(|txn| {
                    let mut meta = txn.open_table(META).unwrap();
                    meta.insert(SCHEMA_KEY, 99u64.to_le_bytes().as_slice())
                        .unwrap();
                    Ok(())
                })
                .unwrap();
        }
        let (index, opened) = Index::open(&path, Duration::from_secs(1)).unwrap();
        assert_eq!(opened, Opened::Empty);
        drop(index);
        // Emptied, the index is not current until a rebuild completes: one that stops before
        // leaves an index the next open rebuilds again.
        let (index, opened) = Index::open(&path, Duration::from_secs(1)).unwrap();
        assert_eq!(opened, Opened::Empty);
        assert!(!index.snapshot().unwrap().built);
        index.write(|txn| index.replace_all(txn, &[], &[])).unwrap();
        assert!(index.snapshot().unwrap().built);
        drop(index);
        let (_, opened) = Index::open(&path, Duration::from_secs(1)).unwrap();
        assert_eq!(opened, Opened::Current);
    }

    #[test]
    fn a_kept_snapshot_sees_every_commit_of_other_handles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let (index, _) = Index::open(&path, Duration::from_secs(1)).unwrap();
        let empty = Value::Map(crate::canonical::Map::new());
        let rec = RunRecord::new(
            Identity::from_bytes([3; 32]),
            "m/03/x".into(),
            "m".into(),
            "2026-11-22T08:00:00Z".into(),
            &empty,
            &empty,
        );
        // A settled file: the miss below comes from a kept snapshot.
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_eq!(index.get(&rec.identity).unwrap(), None);
        assert!(index.lookups.lock().unwrap().is_some(), "snapshot not kept");
        // A commit that bypasses `write` (as another process's would) is still seen.
        let txn = index.db.begin_write().unwrap();
        txn.open_table(RUNS)
            .unwrap()
            .insert(rec.identity.as_bytes(), rec.encode().as_slice())
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(index.get(&rec.identity).unwrap(), Some(rec));
    }

    #[test]
    fn a_file_redb_cannot_open_is_reported_damaged_and_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let garbage = vec![0x5a; 8192];
        std::fs::write(&path, &garbage).unwrap();
        let err = Index::open(&path, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(&err, Error::IndexDamaged { path: p, .. } if *p == path),
            "{err}"
        );
        // The store heals it (crate::heal); opening alone changes nothing.
        assert_eq!(std::fs::read(&path).unwrap(), garbage);
    }
}
