//! The `remote_copies` table of the index (FORMAT.md §8.4): which remotes hold a committed copy
//! of each run, and when each copy was last verified against the remote. Not derived from the
//! run directories: a rebuild keeps it, and `reindex --remote` or `verify --remote` restore it.

use redb::{ReadableTable, TableDefinition, TableError};

use crate::error::Result;
use crate::identity::Identity;
use crate::index::Index;

/// `remote_copies`: (identity, remote name) → last verification, Unix milliseconds (0 = listed
/// on the remote but never verified).
const REMOTE_COPIES: TableDefinition<([u8; 32], &str), u64> = TableDefinition::new("remote_copies");

/// A copy of a run on a remote.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Copy {
    /// The remote's name.
    pub remote: String,
    /// When the copy was last verified against the remote (Unix milliseconds); `None` when it
    /// was discovered but never verified.
    pub verified_at_ms: Option<u64>,
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Records that `remote` holds a copy of each of `runs`, verified at `at_ms` (0: never).
pub(crate) fn record(index: &Index, remote: &str, runs: &[Identity], at_ms: u64) -> Result<()> {
    index.write(|txn| {
        let mut t = txn.open_table(REMOTE_COPIES).map_err(|e| index.error(e))?;
        for id in runs {
            t.insert((*id.as_bytes(), remote), at_ms)
                .map_err(|e| index.error(e))?;
        }
        Ok(())
    })
}

/// Forgets the copies of `runs` on `remote`.
pub(crate) fn forget(index: &Index, remote: &str, runs: &[Identity]) -> Result<()> {
    index.write(|txn| {
        let mut t = txn.open_table(REMOTE_COPIES).map_err(|e| index.error(e))?;
        for id in runs {
            t.remove((*id.as_bytes(), remote))
                .map_err(|e| index.error(e))?;
        }
        Ok(())
    })
}

/// Forgets every copy on `remote`.
pub(crate) fn forget_remote(index: &Index, remote: &str) -> Result<()> {
    let runs: Vec<Identity> = all(index)?
        .into_iter()
        .filter(|(_, c)| c.remote == remote)
        .map(|(id, _)| id)
        .collect();
    forget(index, remote, &runs)
}

/// The copies of `run`, by remote name.
pub(crate) fn of_run(index: &Index, run: &Identity) -> Result<Vec<Copy>> {
    let txn = index.begin_read()?;
    let t = match txn.open_table(REMOTE_COPIES) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(index.error(e)),
    };
    let lo = (*run.as_bytes(), "");
    let mut out = Vec::new();
    for entry in t.range(lo..).map_err(|e| index.error(e))? {
        let (k, v) = entry.map_err(|e| index.error(e))?;
        let (id, remote) = k.value();
        if id != *run.as_bytes() {
            break;
        }
        out.push(copy(remote, v.value()));
    }
    Ok(out)
}

/// Every copy of every run.
pub(crate) fn all(index: &Index) -> Result<Vec<(Identity, Copy)>> {
    let txn = index.begin_read()?;
    let t = match txn.open_table(REMOTE_COPIES) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(index.error(e)),
    };
    let mut out = Vec::new();
    for entry in t.iter().map_err(|e| index.error(e))? {
        let (k, v) = entry.map_err(|e| index.error(e))?;
        let (id, remote) = k.value();
        out.push((Identity::from_bytes(id), copy(remote, v.value())));
    }
    Ok(out)
}

fn copy(remote: &str, at: u64) -> Copy {
    Copy {
        remote: remote.to_owned(),
        verified_at_ms: (at != 0).then_some(at),
    }
}
