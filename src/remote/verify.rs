//! `verify --remote` and `reindex --remote`: check the copies on a remote and correct what the
//! index believes; discover runs that exist only there (FORMAT.md §8.7).

use std::collections::BTreeSet;

use super::{META_PREFIX, check_copy, copies, file_key, get_bytes, read_manifest};
use crate::error::Result;
use crate::identity::Identity;
use crate::index::{Availability, RunRecord};
use crate::run::{ID_FILE, IdHeader};
use crate::store::Store;

/// What `verify --remote` found.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RemoteReport {
    /// Copies checked.
    pub checked: usize,
    /// Copies confirmed whole (every object's size and sha256).
    pub good: usize,
    /// Problems found; each copy found damaged was dropped from the index.
    pub findings: Vec<RemoteFinding>,
    /// Runs discovered on the remote by `reindex --remote` (state `remote`).
    pub discovered: Vec<Identity>,
}

/// One problem with a copy on a remote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteFinding {
    /// The run.
    pub identity: Identity,
    /// What is wrong.
    pub problem: String,
}

impl Store {
    /// Checks every copy on remote `name` (those the index records and those the remote lists):
    /// each object's size and sha256 against the manifest. Whole copies get a fresh
    /// verification time; damaged or missing ones are dropped from the index, so that evict no
    /// longer counts them.
    pub fn verify_remote(&self, name: &str) -> Result<RemoteReport> {
        self.healing(|| self.verify_remote_once(name))
    }

    /// [`Store::verify_remote`], once.
    fn verify_remote_once(&self, name: &str) -> Result<RemoteReport> {
        let remote = self.remote(name)?;
        let index = self.index()?;
        let mut runs: BTreeSet<Identity> = copies::all(index)?
            .into_iter()
            .filter(|(_, c)| c.remote == name)
            .map(|(id, _)| id)
            .collect();
        runs.extend(listed_runs(remote.as_ref())?);
        let mut report = RemoteReport::default();
        let (mut good, mut bad) = (Vec::new(), Vec::new());
        for id in runs {
            report.checked += 1;
            let problem = match read_manifest(remote.as_ref(), &id) {
                Err(e) => Some(e.to_string()),
                Ok(None) => Some("the index records a copy but the remote has no manifest".into()),
                Ok(Some(m)) => {
                    let wrong = check_copy(remote.as_ref(), &m, true)?;
                    (!wrong.is_empty()).then(|| wrong.join("; "))
                }
            };
            match problem {
                None => good.push(id),
                Some(problem) => {
                    report.findings.push(RemoteFinding {
                        identity: id,
                        problem,
                    });
                    bad.push(id);
                }
            }
        }
        let known: Vec<Identity> = good
            .into_iter()
            .filter(|id| index.get(id).ok().flatten().is_some())
            .collect();
        report.good = known.len();
        copies::record(index, name, &known, copies::now_ms())?;
        copies::forget(index, name, &bad)?;
        for id in &bad {
            if let Some(rec) = index.get(id)?
                && rec.state != Availability::Local
                && copies::of_run(index, id)?.is_empty()
            {
                report.findings.push(RemoteFinding {
                    identity: *id,
                    problem: format!("run is {} and no remote holds a copy any more", rec.state),
                });
            }
        }
        Ok(report)
    }

    /// Discovers the runs committed on remote `name`: records its copy of runs the index knows,
    /// and indexes the others from their `id.json` on the remote with state `remote`.
    pub fn reindex_remote(&self, name: &str) -> Result<RemoteReport> {
        let remote = self.remote(name)?;
        let index = self.index()?;
        let mut report = RemoteReport::default();
        let mut seen = Vec::new();
        let mut new_records = Vec::new();
        for id in listed_runs(remote.as_ref())? {
            report.checked += 1;
            let m = match read_manifest(remote.as_ref(), &id) {
                Ok(Some(m)) => m,
                Ok(None) => continue,
                Err(e) => {
                    report.findings.push(RemoteFinding {
                        identity: id,
                        problem: e.to_string(),
                    });
                    continue;
                }
            };
            let known = copies::of_run(index, &id)?.iter().any(|c| c.remote == name);
            if index.get(&id)?.is_some() {
                if !known {
                    seen.push(id);
                }
                continue;
            }
            let key = file_key(&m.location, ID_FILE);
            let label = std::path::PathBuf::from(format!("{name}:{key}"));
            let header = get_bytes(remote.as_ref(), &key, crate::run::ID_FILE_LIMIT)?
                .ok_or_else(|| {
                    super::remote_error(name, &key, "listed in the manifest but missing")
                })
                .and_then(|b| IdHeader::from_json_bytes(&b, &label));
            match header.and_then(|h| {
                let mut rec = RunRecord::from_header(&h, m.location.clone())?;
                rec.state = Availability::Remote;
                Ok((h.identity, rec))
            }) {
                Ok((hid, rec)) if hid == id => {
                    new_records.push(rec);
                    seen.push(id);
                    report.discovered.push(id);
                }
                Ok((hid, _)) => report.findings.push(RemoteFinding {
                    identity: id,
                    problem: format!("{}: names run {hid}", label.display()),
                }),
                Err(e) => report.findings.push(RemoteFinding {
                    identity: id,
                    problem: e.to_string(),
                }),
            }
        }
        index.write(|txn| new_records.iter().try_for_each(|r| index.put(txn, r, 0)))?;
        copies::record(index, name, &seen, 0)?;
        Ok(report)
    }
}

/// The runs whose manifests a remote lists.
fn listed_runs(remote: &dyn super::Remote) -> Result<Vec<Identity>> {
    Ok(remote
        .list(&format!("{META_PREFIX}/manifests/"))?
        .iter()
        .filter_map(|k| k.rsplit('/').next()?.strip_suffix(".json")?.parse().ok())
        .collect())
}
