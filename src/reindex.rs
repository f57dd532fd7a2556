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
use crate::index::{Availability, Index, RunRecord};
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

/// A run seen by this walk.
struct Seen {
    location: String,
    mtime_ns: u64,
    /// The record and its encoding; `None` when the directory was unchanged and the index's
    /// record stands.
    record: Option<(RunRecord, Vec<u8>)>,
    identity: Identity,
    /// Whether the index has this identity at this location.
    indexed: bool,
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
    let (old_runs, old_dirs, tables_agree) = index.snapshot()?;
    let mut previous: HashMap<String, DirState> = HashMap::new();
    if incremental {
        previous = old_dirs.clone();
        for (loc, (_, mtime)) in &old_runs {
            previous.insert(
                loc.clone(),
                DirState {
                    mtime_ns: *mtime,
                    subdirs: None,
                    recent: *mtime == 0,
                },
            );
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

    let old_by_id: HashMap<Identity, &str> = old_runs
        .iter()
        .map(|(loc, (id, _))| (*id, loc.as_str()))
        .collect();
    // In location order (the walk's).
    let seen: Vec<Seen> = walk
        .runs
        .into_iter()
        .filter_map(|found| {
            let mtime_ns = stamp(&found.state);
            let identity = match &found.header {
                Some((rec, _)) => rec.identity,
                None => old_runs.get(&found.location)?.0,
            };
            Some(Seen {
                indexed: old_by_id.get(&identity) == Some(&found.location.as_str()),
                identity,
                location: found.location,
                mtime_ns,
                record: found.header,
            })
        })
        .collect();

    // One directory per identity: the location the index already has wins (so a copy never
    // displaces the original), then the first in location order; the rest are reported. Sorted
    // through small keys, so that each large entry moves once.
    let mut order: Vec<SeenKey> = (0..)
        .zip(&seen)
        .map(|(i, s)| (s.identity, !s.indexed, i))
        .collect();
    order.par_sort_unstable();
    let mut slots: Vec<Option<Seen>> = seen.into_iter().map(Some).collect();
    let mut kept: Vec<Seen> = Vec::with_capacity(slots.len());
    for (.., i) in order {
        let s = slots[i as usize].take().expect("each entry is taken once");
        match kept.last() {
            Some(k) if k.identity == s.identity => report.duplicates.push(Duplicate {
                identity: s.identity,
                kept: k.location.clone(),
                other: s.location,
            }),
            _ => kept.push(s),
        }
    }

    // Entries without a directory (`kept` is sorted by identity): dropped when local, kept when
    // another state says the bytes are elsewhere (remote or evicted).
    let mut gone = Vec::new();
    let mut elsewhere = Vec::new();
    let found = |id: &Identity| kept.binary_search_by_key(id, |s| s.identity).is_ok();
    for id in old_by_id.keys().filter(|id| !found(id)) {
        match index.get(id)? {
            Some(rec) if rec.state != Availability::Local => elsewhere.push(rec),
            _ => gone.push(*id),
        }
    }
    report.removed = gone.len();

    // Runs read again at the location the index has: their encodings are compared with the
    // stored ones (no decoding), fetched in one read snapshot.
    let same_place: Vec<Identity> = kept
        .iter()
        .filter(|s| s.record.is_some() && s.indexed)
        .map(|s| s.identity)
        .collect();
    let mut stored = index.encoded_many(&same_place)?.into_iter();
    // Indexes into `kept` of the runs to write: records that changed, and records that did not
    // but whose directory stamp did.
    let mut changed: Vec<usize> = Vec::new();
    let mut stamps_only: Vec<usize> = Vec::new();
    for (i, s) in kept.iter().enumerate() {
        let Some((_, encoded)) = &s.record else {
            // Directory unchanged since the last walk: its record stands.
            report.unchanged += 1;
            continue;
        };
        if !s.indexed {
            if old_by_id.contains_key(&s.identity) {
                report.moved += 1;
            } else {
                report.added += 1;
            }
            changed.push(i);
        } else if stored.next().flatten().as_deref() == Some(encoded.as_slice()) {
            report.unchanged += 1;
            if old_runs.get(&s.location).map(|(_, m)| *m) != Some(s.mtime_ns) {
                stamps_only.push(i);
            }
        } else {
            report.updated += 1;
            changed.push(i);
        }
    }

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
    let dirs_changed = dirs.len() != old_dirs.len()
        || dirs.iter().any(|(loc, mtime, names)| {
            old_dirs.get(loc).is_none_or(|o| {
                o.mtime_ns != *mtime
                    || o.subdirs.as_ref().map(|s| s.join("\0")) != Some(names.clone())
            })
        });
    report.runs = kept.len() + elsewhere.len();

    let rebuild = !tables_agree
        || (!incremental
            && (old_runs.is_empty() || (changed.len() + gone.len()) * REBUILD_ABOVE > kept.len()));
    if rebuild {
        // Every record from what was read (or kept from the index when the bytes live
        // elsewhere), loaded in key order.
        let mut all: Vec<(RunRecord, Vec<u8>, u64)> = Vec::with_capacity(report.runs);
        for s in kept {
            match s.record {
                Some((rec, encoded)) => all.push((rec, encoded, s.mtime_ns)),
                None => {
                    if let Some(rec) = index.get(&s.identity)? {
                        let encoded = rec.encode();
                        all.push((rec, encoded, s.mtime_ns));
                    }
                }
            }
        }
        all.extend(elsewhere.into_iter().map(|rec| {
            let encoded = rec.encode();
            (rec, encoded, 0)
        }));
        all.par_sort_unstable_by_key(|(rec, ..)| rec.identity);
        index.write(|txn| index.replace_all(txn, &all, &dirs))?;
    } else if !(gone.is_empty() && changed.is_empty() && stamps_only.is_empty() && !dirs_changed) {
        // Only what changed is written.
        index.write(|txn| {
            for id in &gone {
                index.remove(txn, id)?;
            }
            // A directory read again (its mtime moved) but equal: only its stamp changes.
            for &i in changed.iter().chain(&stamps_only) {
                if let Some((rec, _)) = &kept[i].record {
                    index.put(txn, rec, kept[i].mtime_ns)?;
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
