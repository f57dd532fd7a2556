//! Healing a damaged index (FORMAT.md §9 "The index"): the damaged file is kept aside, a new
//! index is rebuilt from the run directories, and the inline resource bytes it lacks are
//! salvaged from the damaged file where their size and sha256 match their records.
//!
//! The new index is built under `.cairn/tmp/` and renamed over `index.redb` only when complete,
//! so the path always names either the damaged file or a whole rebuilt index. Healers of one
//! store serialize on a lock beside the index (`HealLock`) and re-check, under it, that the
//! path still names the file they found damaged: a file another process (or thread) has
//! already replaced is reopened, never moved aside again.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use redb::{ReadTransaction, ReadableDatabase};

use crate::artifact::tables;
use crate::artifact::{Backend, sha256_hex};
use crate::durable::{self, failpoint};
use crate::error::{Error, Result};
use crate::index::Index;

/// What salvaging inline bytes from a damaged file recovered.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Salvage {
    /// Inline resources whose bytes were copied, their size and sha256 matching the record.
    pub(crate) salvaged: usize,
    /// Inline resources whose bytes are missing, unreadable or wrong in the damaged file.
    pub(crate) lost: usize,
}

/// Heals of this process, one at a time; [`HealLock`] excludes other processes.
static HEALING: Mutex<()> = Mutex::new(());

/// The exclusive right to heal one store: [`HEALING`], and the write slot of a small redb
/// database beside the index, which redb's byte-range locks hold across processes (released
/// by the kernel if the holder dies). Fields drop in order: the slot, then its database.
struct HealLock {
    _slot: redb::WriteTransaction,
    _db: redb::Database,
    _in_process: MutexGuard<'static, ()>,
}

impl HealLock {
    /// Waits for the lock at `path`.
    fn take(path: &Path) -> Result<Self> {
        let in_process = HEALING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut builder = redb::Database::builder();
        builder.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
        let failed = |e: String| Error::Index {
            path: path.into(),
            reason: format!("heal lock: {e}"),
        };
        let db = builder.create(path).map_err(|e| failed(e.to_string()))?;
        let slot = db.begin_write().map_err(|e| failed(e.to_string()))?;
        Ok(HealLock {
            _slot: slot,
            _db: db,
            _in_process: in_process,
        })
    }
}

/// Replaces the damaged index at `path` (of the store at `root`) by one rebuilt from the run
/// directories, keeping the damaged file as `index.redb.damaged-<random>` and salvaging its
/// inline bytes; says so on stderr. `damaged` is the handle that found the damage on use
/// (`None`: redb could not open the file). Returns false, changing nothing, when `path` no
/// longer names the damaged file: another process or thread healed it first.
pub(crate) fn heal(
    root: &Path,
    path: &Path,
    damaged: Option<&Index>,
    what: &str,
    timeout: Duration,
) -> Result<bool> {
    let _lock = HealLock::take(&path.with_extension("redb.heal-lock"))?;
    // Held while the new index is built and swapped in: a writer of another process then
    // commits to the damaged file before the rebuild reads the directories, or to the new one
    // (`Index::write` refuses a file that was replaced).
    let mut slot = None;
    match damaged {
        Some(d) => {
            if !d.is_current()? {
                return Ok(false);
            }
            match d.write_slot() {
                Ok(txn) => slot = Some(txn),
                Err(Error::IndexDamaged { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        None => match contained(|| Index::open(path, timeout)) {
            Some(Ok(_)) => return Ok(false),
            Some(Err(Error::IndexDamaged { .. })) | None => {}
            Some(Err(e)) => return Err(e),
        },
    }
    let tmp = root
        .join(crate::store::META_DIR)
        .join(crate::store::TMP_DIR)
        .join(format!(
            "index.rebuild-{}.redb",
            uuid::Uuid::new_v4().simple()
        ));
    let built = rebuild(root, path, &tmp, damaged, timeout);
    let (runs, restored, salvage, unreadable) = match built {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let aside = path.with_extension(format!("redb.damaged-{}", uuid::Uuid::new_v4().simple()));
    // A second name for the damaged file first: the path never goes missing.
    if std::fs::hard_link(path, &aside).is_err() {
        std::fs::rename(path, &aside).map_err(|e| Error::io("move damaged index", path, e))?;
    }
    let swapped = failpoint("index.heal.before_swap")
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e)));
    if let Err(e) = swapped {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    durable::sync_dir(path.parent().expect("the index is in .cairn/"))?;
    if let Some(txn) = slot {
        let _ = txn.abort();
    }
    let inline = match unreadable {
        Some(why) => format!(
            "no inline bytes salvaged (the damaged file cannot be read: {why}), {} lost",
            salvage.lost
        ),
        None => format!(
            "{} inline resources salvaged from it (size and sha256 verified), {} lost",
            salvage.salvaged, salvage.lost
        ),
    };
    eprintln!(
        "cairn: warning: index {} is damaged ({what}); kept as {} and rebuilt from the run \
         directories: {runs} runs, {restored} resource records; {inline}",
        path.display(),
        aside.display(),
    );
    Ok(true)
}

/// Builds the new index at `tmp` from the directories and salvages into it from the damaged
/// file: (runs, resource records restored, salvage, why the damaged file could not be read).
fn rebuild(
    root: &Path,
    path: &Path,
    tmp: &Path,
    damaged: Option<&Index>,
    timeout: Duration,
) -> Result<(usize, usize, Salvage, Option<String>)> {
    let (new, _) = Index::open(tmp, timeout)?;
    let report = crate::reindex::reindex(root, &new, false, &|_| {})?;
    // Each way of reading the damaged file in turn, until nothing is missing: salvage only
    // fills bytes the new index still lacks, so the passes add up.
    let mut total = Salvage::default();
    let mut why = Vec::new();
    let mut read = false;
    let mut pass = |from: std::result::Result<ReadTransaction, String>| -> Result<bool> {
        match from {
            Ok(txn) => {
                let got = salvage(&new, Some(&txn))?;
                total.salvaged += got.salvaged;
                total.lost = got.lost;
                read = true;
            }
            Err(e) => why.push(e),
        }
        Ok(read && total.lost == 0)
    };
    let mut done = false;
    if let Some(d) = damaged {
        let txn = contained(|| d.begin_read().map_err(|e| e.to_string()))
            .unwrap_or_else(|| Err("redb failed (panicked) reading it".into()));
        done = pass(txn)?;
    }
    let ways: [&dyn Fn() -> std::result::Result<Damaged, String>; 2] =
        [&|| Damaged::read_only(path), &|| {
            Damaged::repaired_copy(path, tmp)
        }];
    for way in ways {
        if done {
            break;
        }
        // Kept open while it is read: dropping a database closes its file.
        let opened =
            contained(way).unwrap_or_else(|| Err("redb failed (panicked) opening it".into()));
        let txn = opened.as_ref().map_err(Clone::clone).and_then(|d| {
            contained(|| d.begin_read())
                .unwrap_or_else(|| Err("redb failed (panicked) reading it".into()))
        });
        done = pass(txn)?;
    }
    let unreadable = if read {
        None
    } else {
        total.lost = salvage(&new, None)?.lost;
        Some(why.join("; "))
    };
    let salvage = total;
    Ok((report.runs, report.resources_restored, salvage, unreadable))
}

/// `f`'s result; `None` when it panicked, as redb does on some damaged pages.
fn contained<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// redb's page size: a damaged file is padded to whole pages for salvage.
const PAGE: u64 = 4096;
/// The first bytes of every redb file (redb's `docs/design.md`, "Database header").
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// The damaged file, opened for reading although redb could not open it for writing.
enum Damaged {
    /// As it is, read-only.
    ReadOnly(redb::ReadOnlyDatabase),
    /// A copy that redb repaired (it may fall back to an earlier commit); the copy's name is
    /// removed at once, the open handle keeps its bytes.
    Repaired(redb::Database),
}

impl Damaged {
    fn builder() -> redb::Builder {
        let mut builder = redb::Database::builder();
        builder.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
        builder
    }

    /// The damaged file at `path`, read-only.
    fn read_only(path: &Path) -> std::result::Result<Self, String> {
        Self::builder()
            .open_read_only(path)
            .map(Damaged::ReadOnly)
            .map_err(|e| format!("read-only: {e}"))
    }

    /// A copy of the damaged file at `path`, beside `tmp`, that redb repairs.
    fn repaired_copy(path: &Path, tmp: &Path) -> std::result::Result<Self, String> {
        let copy = tmp.with_extension("salvage");
        std::fs::copy(path, &copy).map_err(|e| format!("copy: {e}"))?;
        // A file cut short gets its last page back, zero-filled: redb refuses a file shorter
        // than its layout, and what the zeros replace fails its hash check. A damaged magic
        // number, a constant, is written back.
        let repaired = std::fs::OpenOptions::new()
            .write(true)
            .open(&copy)
            .and_then(|f| {
                use std::os::unix::fs::FileExt;
                f.set_len(f.metadata()?.len().next_multiple_of(PAGE))?;
                f.write_all_at(&REDB_MAGIC, 0)
            })
            .map_err(|e| format!("pad the copy: {e}"))
            .and_then(|()| {
                Self::builder()
                    .create(&copy)
                    .map_err(|e| format!("a repaired copy: {e}"))
            });
        let _ = std::fs::remove_file(&copy);
        repaired.map(Damaged::Repaired)
    }

    fn begin_read(&self) -> std::result::Result<ReadTransaction, String> {
        match self {
            Damaged::ReadOnly(db) => db.begin_read(),
            Damaged::Repaired(db) => db.begin_read(),
        }
        .map_err(|e| e.to_string())
    }
}

/// Copies into `index` the bytes of every inline resource it has a record of and no bytes for,
/// from `from` (a snapshot of the damaged file; `None`: unreadable, all lost), each only when
/// its size and sha256 match the record: never wrong bytes.
pub(crate) fn salvage(index: &Index, from: Option<&ReadTransaction>) -> Result<Salvage> {
    let mut wanted = Vec::new();
    for rec in tables::all(index)? {
        if rec.backend == Backend::Inline && tables::inline_bytes(index, rec.id)?.is_none() {
            wanted.push(rec);
        }
    }
    let mut out = Salvage::default();
    // No table (none was ever written), or one that does not open: nothing to salvage.
    let source = from.and_then(|txn| contained(|| txn.open_table(tables::INLINE_BYTES).ok())?);
    let mut found: Vec<(uuid::Uuid, Vec<u8>)> = Vec::new();
    for rec in wanted {
        let bytes = source
            .as_ref()
            .and_then(|t| contained(|| Some(t.get(rec.id.as_bytes()).ok()??.value().to_vec()))?)
            .filter(|b| b.len() as u64 == rec.size_bytes && sha256_hex(b) == rec.content_hash);
        match bytes {
            Some(b) => found.push((rec.id, b)),
            None => out.lost += 1,
        }
    }
    if !found.is_empty() {
        index.write(|txn| {
            for (id, bytes) in &found {
                tables::put_inline(index, txn, *id, bytes.len(), |slot| {
                    slot.copy_from_slice(bytes);
                    Ok(())
                })?;
            }
            Ok(())
        })?;
    }
    out.salvaged = found.len();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::ResourceRecord;
    use crate::artifact::record::inline_record_for_test;

    /// The damaged files kept beside the index at `path`, oldest name first.
    fn kept_aside(path: &Path) -> Vec<std::path::PathBuf> {
        let prefix = format!(
            "{}.damaged-",
            path.file_name().expect("a file").to_string_lossy()
        );
        let mut out: Vec<std::path::PathBuf> = std::fs::read_dir(path.parent().expect("a parent"))
            .expect("listable")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect();
        out.sort();
        out
    }

    fn put(index: &Index, rec: &ResourceRecord, bytes: Option<&[u8]>) {
        index
            .write(|txn| {
                tables::put(index, txn, rec)?;
                match bytes {
                    Some(b) => tables::put_inline(index, txn, rec.id, b.len(), |slot| {
                        slot.copy_from_slice(b);
                        Ok(())
                    }),
                    None => Ok(()),
                }
            })
            .unwrap();
    }

    #[test]
    fn only_bytes_of_the_recorded_size_and_sha256_are_salvaged() {
        let dir = tempfile::tempdir().unwrap();
        let t = Duration::from_secs(1);
        let (old, _) = Index::open(&dir.path().join("old.redb"), t).unwrap();
        let (new, _) = Index::open(&dir.path().join("new.redb"), t).unwrap();
        let good = inline_record_for_test(b"good bytes");
        let other_hash = inline_record_for_test(b"same size!");
        let other_size = inline_record_for_test(b"short");
        let missing = inline_record_for_test(b"nowhere");
        let present = inline_record_for_test(b"already here");
        put(&old, &good, Some(b"good bytes"));
        put(&old, &other_hash, Some(b"SAME SIZE!"));
        put(&old, &other_size, Some(b"longer than recorded"));
        put(&old, &present, Some(b"stale bytes"));
        for rec in [&good, &other_hash, &other_size, &missing] {
            put(&new, rec, None);
        }
        put(&new, &present, Some(b"already here"));
        let from = old.begin_read().unwrap();
        let got = salvage(&new, Some(&from)).unwrap();
        assert_eq!(
            got,
            Salvage {
                salvaged: 1,
                lost: 3
            }
        );
        assert_eq!(
            tables::inline_bytes(&new, good.id).unwrap().as_deref(),
            Some(&b"good bytes"[..])
        );
        for rec in [&other_hash, &other_size, &missing] {
            assert_eq!(tables::inline_bytes(&new, rec.id).unwrap(), None);
        }
        // Bytes the new index holds are never replaced.
        assert_eq!(
            tables::inline_bytes(&new, present.id).unwrap().as_deref(),
            Some(&b"already here"[..])
        );
        // An unreadable damaged file salvages nothing and counts every one lost.
        let (fresh, _) = Index::open(&dir.path().join("fresh.redb"), t).unwrap();
        put(&fresh, &good, None);
        assert_eq!(
            salvage(&fresh, None).unwrap(),
            Salvage {
                salvaged: 0,
                lost: 1
            }
        );
    }

    #[test]
    fn a_file_already_replaced_is_not_moved_aside_again() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let store = crate::Store::open(root).unwrap();
        let path = store.index_path().to_path_buf();
        let (stale, _) = Index::open(&path, Duration::from_secs(1)).unwrap();
        assert!(heal(root, &path, Some(&stale), "test", Duration::from_secs(1)).unwrap());
        assert_eq!(kept_aside(&path).len(), 1);
        // The handle on the moved file is refused for writing, and a second heal of it (as by
        // another process that found the same damage) changes nothing.
        assert!(matches!(
            stale.write(|_| Ok(())),
            Err(Error::IndexDamaged { .. })
        ));
        assert!(!heal(root, &path, Some(&stale), "test", Duration::from_secs(1)).unwrap());
        assert_eq!(kept_aside(&path).len(), 1);
        // A file redb can open is not damaged: no heal on open either.
        assert!(!heal(root, &path, None, "test", Duration::from_secs(1)).unwrap());
        assert_eq!(kept_aside(&path).len(), 1);
    }
}
