//! Rebuilding the index from the run directories (FORMAT.md §5.5).
//!
//! A pure copy: identities come from `id.json`, never recomputed. A full reindex walks the whole
//! root in parallel and bulk-loads every table in key order in one write transaction; an
//! incremental one walks only directories whose mtime changed and patches the index.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use rayon::slice::ParallelSliceMut;

use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::index::{Availability, Index, Loaded, RunRecord};
use crate::run_bytes::IdBytes;
use crate::walk::{self, DirState};

/// Two directories holding one identity: the index keeps `kept`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The identity.
    pub identity: Identity,
    /// The location the index points to.
    pub kept: String,
    /// Another location with the same identity (nothing is deleted).
    pub other: String,
}

/// What a reindex did, by class.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ReindexReport {
    /// Whether only changed directories were visited.
    pub incremental: bool,
    /// Runs in the index afterwards.
    pub runs: usize,
    /// Runs new to the index.
    pub added: usize,
    /// Runs found at another location than the index had.
    pub moved: usize,
    /// Runs whose record changed in place.
    pub updated: usize,
    /// Index entries dropped because their directory is gone.
    pub removed: usize,
    /// Runs already indexed as they are.
    pub unchanged: usize,
    /// Directories listed (an incremental reindex skips unchanged ones).
    pub listed_dirs: usize,
    /// Identities held by more than one directory.
    pub duplicates: Vec<Duplicate>,
    /// Directories or headers that could not be read, each naming the path; they were skipped.
    pub errors: Vec<Error>,
    /// Resource records restored from beside their runs (FORMAT.md §7.2).
    pub resources_restored: usize,
    /// Wall time.
    pub elapsed: Duration,
}

impl fmt::Display for ReindexReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} runs in {:.2}s: {} added, {} moved, {} updated, {} removed, {} unchanged; \
             {} duplicates, {} errors ({} directories listed)",
            if self.incremental {
                "incremental reindex:"
            } else {
                "reindex:"
            },
            self.runs,
            self.elapsed.as_secs_f64(),
            self.added,
            self.moved,
            self.updated,
            self.removed,
            self.unchanged,
            self.duplicates.len(),
            self.errors.len(),
            self.listed_dirs,
        )
    }
}

/// A run seen by this walk: its place in the walk's runs, and what the index says of it.
struct Seen {
    run: usize,
    mtime_ns: u64,
    identity: Identity,
    /// Whether the index has this identity at this location.
    indexed: bool,
    /// The directory mtime the index has for this location, if any.
    indexed_mtime: Option<u64>,
}

/// Where a run stands among the runs seen (compared only): by identity, a directory the index
/// has first, then by its place in the walk's (location) order.
type SeenKey = (Identity, bool, u32);

/// A full reindex patches the index in place unless more than one run in this many changed;
/// then it reloads every table in key order (redb's fast path for bulk loads).
const REBUILD_ABOVE: usize = 8;

/// Reindexes `root` into `index`; `progress` is called with the number of runs found so far.
pub(crate) fn reindex(
    root: &std::path::Path,
    index: &Index,
    incremental: bool,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<ReindexReport> {
    let start = Instant::now();
    let snapshot = index.snapshot()?;
    let mut previous: HashMap<String, DirState> = HashMap::new();
    if incremental {
        for (loc, mtime, names) in &snapshot.dirs {
            let subdirs = names
                .split('\0')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect();
            previous.insert(loc.clone(), DirState::recorded(*mtime, Some(subdirs)));
        }
        for (loc, _, mtime) in &snapshot.runs {
            previous.insert(loc.clone(), DirState::recorded(*mtime, None));
        }
    }
    // Each header read straight to its record, and the record encoded, during the parallel
    // walk.
    let walk = walk::walk_with(
        root,
        &previous,
        progress,
        |bytes, path, location, entries| {
            let state = if entries.evicted {
                Availability::Evicted // a husk (FORMAT.md §8.6)
            } else {
                Availability::Local
            };
            let rec = IdBytes::parse(bytes, path)?.record(location.to_owned(), state);
            let encoded = rec.encode();
            Ok((rec, encoded))
        },
    );
    drop(previous);
    let mut report = ReindexReport {
        incremental,
        listed_dirs: walk.listed,
        errors: walk.errors,
        ..Default::default()
    };
    let stamp = |s: &DirState| if s.recent { 0 } else { s.mtime_ns };
    // Resource records beside the runs read, for restoring those the index lacks; only
    // directories whose listing showed a record directory.
    let with_resources: Vec<(String, Identity, Vec<Identity>)> = walk
        .runs
        .iter()
        .filter(|f| f.entries.resources)
        .filter_map(|f| {
            let (rec, _) = f.header.as_ref()?;
            Some((f.location.clone(), rec.identity, rec.aliases.clone()))
        })
        .collect();

    // The identities the index has, in order.
    let mut old_ids: Vec<Identity> = snapshot.runs.iter().map(|(_, id, _)| *id).collect();
    old_ids.par_sort_unstable();
    old_ids.dedup();
    // In location order: the walk's and the index's, merged, so that each run meets the entry
    // the index has at its location.
    let mut at = snapshot.runs.iter().peekable();
    let runs = walk.runs;
    let seen: Vec<Seen> = runs
        .iter()
        .enumerate()
        .filter_map(|(run, found)| {
            while at.next_if(|(loc, ..)| *loc < found.location).is_some() {}
            let here = at
                .peek()
                .filter(|(loc, ..)| *loc == found.location)
                .map(|&(_, id, mtime)| (*id, *mtime));
            let identity = match &found.header {
                Some((rec, _)) => rec.identity,
                None => here?.0,
            };
            Some(Seen {
                run,
                indexed: here.is_some_and(|(id, _)| id == identity),
                indexed_mtime: here.map(|(_, mtime)| mtime),
                identity,
                mtime_ns: stamp(&found.state),
            })
        })
        .collect();
    // The location and the record (with its encoding; `None` when the directory was unchanged
    // and the index's record stands) of a run seen.
    let location = |k: usize| &runs[seen[k].run].location;
    let record = |k: usize| runs[seen[k].run].header.as_ref();

    // One directory per identity: the location the index already has wins (so a copy never
    // displaces the original), then the first in location order; the rest are reported.
    // `kept` holds positions in `seen`, in identity order.
    let mut order: Vec<SeenKey> = (0..)
        .zip(&seen)
        .map(|(i, s)| (s.identity, !s.indexed, i))
        .collect();
    order.par_sort_unstable();
    let mut kept: Vec<usize> = Vec::with_capacity(seen.len());
    for (identity, _, i) in order {
        let i = i as usize;
        match kept.last() {
            Some(&k) if seen[k].identity == identity => report.duplicates.push(Duplicate {
                identity,
                kept: location(k).clone(),
                other: location(i).clone(),
            }),
            _ => kept.push(i),
        }
    }

    // Entries without a directory (both in identity order): dropped when local, kept when
    // another state says the bytes are elsewhere (remote or evicted).
    let mut gone = Vec::new();
    let mut elsewhere = Vec::new();
    let mut walked = kept.iter().map(|&k| seen[k].identity).peekable();
    for id in &old_ids {
        while walked.next_if(|w| w < id).is_some() {}
        if walked.peek() == Some(id) {
            continue;
        }
        match index.get(id)? {
            Some(rec) if rec.state != Availability::Local => elsewhere.push(rec),
            _ => gone.push(*id),
        }
    }
    report.removed = gone.len();

    // Runs read again at the location the index has: their encodings are compared with the
    // stored ones, in place.
    let same_place: Vec<(Identity, &[u8])> = kept
        .iter()
        .filter(|&&k| seen[k].indexed)
        .filter_map(|&k| Some((seen[k].identity, record(k)?.1.as_slice())))
        .collect();
    let mut same = index.same_encodings(&same_place)?.into_iter();
    drop(same_place);
    // Positions in `seen` of the runs to write: records that changed, and records that did not
    // but whose directory stamp did.
    let mut changed: Vec<usize> = Vec::new();
    let mut stamps_only: Vec<usize> = Vec::new();
    for &k in &kept {
        let s = &seen[k];
        if record(k).is_none() {
            // Directory unchanged since the last walk: its record stands.
            report.unchanged += 1;
        } else if !s.indexed {
            if old_ids.binary_search(&s.identity).is_ok() {
                report.moved += 1;
            } else {
                report.added += 1;
            }
            changed.push(k);
        } else if same.next() == Some(true) {
            report.unchanged += 1;
            if s.indexed_mtime != Some(s.mtime_ns) {
                stamps_only.push(k);
            }
        } else {
            report.updated += 1;
            changed.push(k);
        }
    }

    // Each other directory with the names of its subdirectories that are not runs (§5.2).
    let mut dirs: Vec<(String, u64, String)> = walk
        .dirs
        .iter()
        .filter_map(|(loc, st)| {
            st.subdirs
                .as_ref()
                .map(|sub| (loc.clone(), stamp(st), sub.join("\0")))
        })
        .collect();
    dirs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let dirs_changed = dirs != snapshot.dirs;
    report.runs = kept.len() + elsewhere.len();

    let rebuild = !snapshot.tables_agree
        || (!incremental
            && (snapshot.runs.is_empty()
                || (changed.len() + gone.len()) * REBUILD_ABOVE > kept.len()));
    if rebuild {
        // Records taken from the index: runs whose directory an incremental walk skipped as
        // unchanged, and runs whose bytes live elsewhere.
        let mut fetched: Vec<(RunRecord, Vec<u8>, u64)> = Vec::new();
        for &k in &kept {
            if record(k).is_none()
                && let Some(rec) = index.get(&seen[k].identity)?
            {
                let encoded = rec.encode();
                fetched.push((rec, encoded, seen[k].mtime_ns));
            }
        }
        fetched.extend(elsewhere.into_iter().map(|rec| {
            let encoded = rec.encode();
            (rec, encoded, 0)
        }));
        let built = snapshot.built;
        let walk_dirs = walk.dirs;
        let replaced = index.write_freeing(move |txn| {
            // Another process completed a rebuild since the snapshot: its index is reconciled
            // below, never replaced by what this walk saw.
            if !built && index.built(txn)? {
                return Ok((false, (runs, seen, fetched, walk_dirs)));
            }
            let mut all: Vec<Loaded<'_>> = kept
                .iter()
                .filter_map(|&k| {
                    let (record, encoded) = runs[seen[k].run].header.as_ref()?;
                    Some(Loaded {
                        record,
                        encoded,
                        mtime_ns: seen[k].mtime_ns,
                    })
                })
                .chain(fetched.iter().map(|(record, encoded, mtime_ns)| Loaded {
                    record,
                    encoded,
                    mtime_ns: *mtime_ns,
                }))
                .collect();
            if !fetched.is_empty() {
                all.sort_unstable_by_key(|l| l.record.identity);
            }
            index.replace_all(txn, &all, &dirs)?;
            drop(all);
            // Freed while the commit writes.
            Ok((true, (runs, seen, fetched, walk_dirs)))
        })?;
        if !replaced {
            return reindex(root, index, incremental, progress);
        }
    } else if !(gone.is_empty() && changed.is_empty() && stamps_only.is_empty() && !dirs_changed) {
        // Only what changed is written.
        index.write(|txn| {
            for id in &gone {
                index.remove(txn, id)?;
            }
            // A directory read again (its mtime moved) but equal: only its stamp changes.
            for &k in changed.iter().chain(&stamps_only) {
                if let Some((rec, _)) = record(k) {
                    index.put(txn, rec, seen[k].mtime_ns)?;
                }
            }
            index.put_dirs(txn, &dirs)
        })?;
    }
    let (restored, errors) = crate::artifact::restore(root, index, &with_resources)?;
    report.resources_restored = restored;
    report.errors.extend(errors);
    report.elapsed = start.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Once;
    use std::time::Duration;

    use super::*;
    use crate::canonical::{Map, Value};

    /// A store under a temporary root holding `n` runs, its index deleted.
    fn runs_without_index(n: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        for i in 0..n {
            let model = crate::Model::new("m")
                .with_config(&serde_json::json!({ "i": i }))
                .unwrap();
            store.get_or_create(&model).unwrap();
        }
        let index = store.index_path().to_path_buf();
        drop(store);
        std::fs::remove_file(&index).unwrap();
        (dir, index)
    }

    /// Sets the mtime of every directory under `dir` an hour back, so that a walk trusts it.
    fn backdate(dir: &std::path::Path) {
        let past = std::time::SystemTime::now() - Duration::from_secs(3600);
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                backdate(&path);
            }
        }
        std::fs::File::open(dir)
            .unwrap()
            .set_modified(past)
            .unwrap();
    }

    #[test]
    fn an_incremental_reindex_visits_the_runs_of_an_unchanged_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path()).unwrap();
        let runs: Vec<_> = (0..3)
            .map(|i| {
                let model = crate::Model::new("m")
                    .with_config(&serde_json::json!({ "i": i }))
                    .unwrap();
                store.get_or_create(&model).unwrap()
            })
            .collect();
        backdate(dir.path());
        store.reindex(false, &|_| {}).unwrap();
        // The dirs table names no run (§5.2): the runs of a directory come from the locations.
        let index = store.index().unwrap();
        assert!(index.snapshot().unwrap().dirs.iter().all(|(_, _, names)| {
            names
                .split('\0')
                .all(|n| n.is_empty() || n == "m" || n.len() == 2)
        }));
        // A marker inside one run changes that run directory's mtime, not its parent's.
        std::fs::write(runs[1].path().join(crate::remote::EVICTED_MARKER), b"").unwrap();
        let report = store.reindex(true, &|_| {}).unwrap();
        assert_eq!((report.updated, report.listed_dirs), (1, 1), "{report}");
        let rec = index.get(&runs[1].identity()).unwrap().unwrap();
        assert_eq!(rec.state, Availability::Evicted);
    }

    #[test]
    fn a_rebuild_never_replaces_one_another_completed_meanwhile() {
        let (dir, path) = runs_without_index(3);
        let (index, _) = Index::open(&path, Duration::from_secs(5)).unwrap();
        // A run only the index knows of, its bytes on a remote.
        let empty = Value::Map(Map::new());
        let mut remote = RunRecord::new(
            Identity::from_bytes([7; 32]),
            "m/07/remote".into(),
            "m".into(),
            "2026-11-23T00:00:00Z".into(),
            &empty,
            &empty,
        );
        remote.state = Availability::Remote;
        // While this rebuild walks, another completes (as another process's would) and then
        // records the remote run.
        let other = Once::new();
        let meanwhile = |_: usize| {
            other.call_once(|| {
                reindex(dir.path(), &index, false, &|_| {}).unwrap();
                index.write(|txn| index.put(txn, &remote, 0)).unwrap();
            })
        };
        let report = reindex(dir.path(), &index, false, &meanwhile).unwrap();
        assert!(other.is_completed());
        assert_eq!(report.runs, 4, "{report}");
        assert_eq!(index.get(&remote.identity).unwrap(), Some(remote));
        assert!(index.snapshot().unwrap().built);
    }
}
