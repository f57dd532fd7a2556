//! `repair`: fix what `verify` finds when the fix needs no guessing (FORMAT.md §6.3).
//! Idempotent (a second run has nothing to do) and crash-safe (each step is atomic, and an
//! interrupted repair is completed by the next one).

use std::fmt;
use std::fs;

use crate::durable::{self, failpoint};
use crate::error::Result;
use crate::identity::Identity;
use crate::reindex::ReindexReport;
use crate::run::{ID_FILE, IdHeader};
use crate::schemas::Schemas;
use crate::store::{META_DIR, Store};
use crate::verify::{Finding, FindingKind, VerifyOptions};

/// What `repair` may change beyond the index.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct RepairOptions {
    /// Rewrite `id.json` of runs with identity drift to their re-derived identity, keeping the
    /// old one in `aliases`.
    pub rekey: bool,
    /// Delete the extra directories of duplicate identities (the indexed one is kept).
    pub force: bool,
}

impl RepairOptions {
    /// Also re-key runs with identity drift.
    pub fn rekey(mut self, yes: bool) -> Self {
        self.rekey = yes;
        self
    }

    /// Also delete duplicate directories.
    pub fn force(mut self, yes: bool) -> Self {
        self.force = yes;
        self
    }
}

/// A run whose `id.json` was re-keyed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rekeyed {
    /// The run directory.
    pub location: String,
    /// The identity it had (now in `aliases`).
    pub old: Identity,
    /// The identity it has.
    pub new: Identity,
}

/// What `repair` did, and what it left.
#[derive(Debug)]
#[non_exhaustive]
pub struct RepairReport {
    /// The reconciliation of the index with the directories.
    pub reindex: ReindexReport,
    /// Runs re-keyed.
    pub rekeyed: Vec<Rekeyed>,
    /// Duplicate directories deleted (`force`).
    pub deleted: Vec<String>,
    /// Findings not fixed: identity drift without `rekey` (or whose new identity another run
    /// holds), duplicates without `force`, header mismatches, unreadable runs.
    pub left: Vec<Finding>,
}

impl RepairReport {
    /// True when the repair changed nothing.
    pub fn did_nothing(&self) -> bool {
        self.rekeyed.is_empty()
            && self.deleted.is_empty()
            && self.reindex.added + self.reindex.moved + self.reindex.updated + self.reindex.removed
                == 0
    }
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "repair: index {} added, {} moved, {} updated, {} removed; {} re-keyed; {} duplicate \
             directories deleted; {} findings left",
            self.reindex.added,
            self.reindex.moved,
            self.reindex.updated,
            self.reindex.removed,
            self.rekeyed.len(),
            self.deleted.len(),
            self.left.len()
        )
    }
}

pub(crate) fn repair(
    store: &Store,
    schemas: &Schemas,
    opts: RepairOptions,
) -> Result<RepairReport> {
    // The index first takes in what the directories hold, so that a re-key never lands on an
    // identity a directory already carries (one a crashed repair gave it, say).
    let before = store.reindex(false, &|_| {})?;
    let found = store.verify(schemas, &VerifyOptions::default(), &|_| {})?;
    let mut left = Vec::new();
    let mut rekeyed = Vec::new();
    let mut deleted = Vec::new();
    // New identities handed out by this repair: two runs that differed only in a field now
    // non-identifying drift onto one identity, and only the first may take it.
    let mut assigned = std::collections::HashSet::new();
    // Duplicates go first, so a crash never leaves a re-keyed run beside its undeleted copy, and
    // a directory about to be deleted is never re-keyed.
    let (duplicates, findings): (Vec<Finding>, Vec<Finding>) = found
        .findings
        .into_iter()
        .partition(|f| opts.force && f.kind == FindingKind::Duplicate && f.location.is_some());
    for location in duplicates.into_iter().filter_map(|f| f.location) {
        // Renamed out of the tree first, so no half-deleted run is ever visible.
        let dir = store.root().join(&location);
        let trash = store
            .root()
            .join(META_DIR)
            .join("tmp")
            .join(format!("deleted.{}", uuid::Uuid::new_v4().simple()));
        fs::rename(&dir, &trash).map_err(|e| crate::Error::io("rename", &dir, e))?;
        durable::sync_dir(dir.parent().unwrap_or(store.root()))?;
        failpoint("repair.after_unlink")?;
        fs::remove_dir_all(&trash).map_err(|e| crate::Error::io("remove", &trash, e))?;
        deleted.push(location);
    }

    for f in findings {
        match (f.kind, &f.location, f.identity, f.derived) {
            (FindingKind::IdentityDrift, Some(location), ..) if deleted.contains(location) => {}
            (FindingKind::IdentityDrift, Some(location), Some(old), Some(new)) if opts.rekey => {
                // Never re-key onto an identity another run holds: that would make a duplicate.
                if store
                    .get(&new)?
                    .is_some_and(|r| r.location().to_str() != Some(location))
                    || !assigned.insert(new)
                {
                    left.push(Finding {
                        detail: format!(
                            "{} (not re-keyed: {new} belongs to another run)",
                            f.detail
                        ),
                        ..f
                    });
                    continue;
                }
                let dir = store.root().join(location);
                let mut header = IdHeader::read(&dir)?;
                if header.identity != old {
                    continue; // changed since verify read it
                }
                header.aliases.retain(|a| *a != new);
                header.aliases.push(old);
                header.identity = new;
                durable::replace_file(&dir.join(ID_FILE), &header.to_json_bytes())?;
                failpoint("repair.after_rekey")?;
                rekeyed.push(Rekeyed {
                    location: location.clone(),
                    old,
                    new,
                });
            }
            // The index is reconciled below, as a whole.
            (FindingKind::IndexDrift, ..) => {}
            _ => left.push(f),
        }
    }
    let mut reindex = store.reindex(false, &|_| {})?;
    // The index changes of both passes.
    reindex.added += before.added;
    reindex.moved += before.moved;
    reindex.updated += before.updated;
    reindex.removed += before.removed;
    Ok(RepairReport {
        reindex,
        rekeyed,
        deleted,
        left,
    })
}
