//! Resource records beside their runs: `<run>/.cairn-resources/<uuid>.cbor`, the same canonical
//! CBOR as in the index, so an index rebuild restores them (FORMAT.md §7.2).

use std::fs;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::record::{RECORD_LIMIT, ResourceRecord};
use crate::durable;
use crate::error::{Error, Result};

/// Directory of resource records inside a run directory.
pub const SIDECAR_DIR: &str = ".cairn-resources";
/// Extension of a record file.
const EXT: &str = "cbor";

/// The record file of `id` in `run_dir`.
pub(crate) fn path(run_dir: &Path, id: Uuid) -> PathBuf {
    run_dir
        .join(SIDECAR_DIR)
        .join(format!("{}.{EXT}", id.hyphenated()))
}

/// The record directory of `run_dir`, created durably; a link there (which could lead out of
/// the store) is refused.
fn real_dir(run_dir: &Path) -> Result<PathBuf> {
    crate::confine::create_dir_below(run_dir, Path::new(SIDECAR_DIR))
}

/// Writes (or atomically replaces) `rec` beside its run, durably.
pub(crate) fn write(run_dir: &Path, rec: &ResourceRecord) -> Result<()> {
    real_dir(run_dir)?;
    durable::replace_file(&path(run_dir, rec.id), &rec.encode())
}

/// [`write`] without the directory fsync: the file is durable, its name once the caller calls
/// [`sync_dir`] (one fsync for many records of a run).
pub(crate) fn write_unsynced_dir(run_dir: &Path, rec: &ResourceRecord) -> Result<()> {
    real_dir(run_dir)?;
    durable::replace_file_unsynced_dir(&path(run_dir, rec.id), &rec.encode())
}

/// fsyncs the record directory of `run_dir`.
pub(crate) fn sync_dir(run_dir: &Path) -> Result<()> {
    durable::sync_dir(&run_dir.join(SIDECAR_DIR))
}

/// Removes the record file of `id`, durably; absent is fine.
pub(crate) fn remove(run_dir: &Path, id: Uuid) -> Result<()> {
    crate::confine::check_no_links(run_dir, Path::new(SIDECAR_DIR))?;
    let p = path(run_dir, id);
    match fs::remove_file(&p) {
        Ok(()) => durable::sync_dir(p.parent().expect("in the sidecar directory")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", &p, e)),
    }
}

/// Every record file in `run_dir` (none when the directory is absent); unreadable ones as
/// errors naming the file. Temporaries of an interrupted replace are skipped. Links (the
/// directory or a record) are refused, and records are read only up to [`RECORD_LIMIT`].
pub(crate) fn read_all(run_dir: &Path) -> Vec<Result<ResourceRecord>> {
    if let Err(e) = crate::confine::check_no_links(run_dir, Path::new(SIDECAR_DIR)) {
        return vec![Err(e)];
    }
    let dir = run_dir.join(SIDECAR_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => return vec![Err(Error::io("list", &dir, e))],
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.push(Err(Error::io("list", &dir, e)));
                continue;
            }
        };
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".cbor")) else {
            continue;
        };
        let Ok(id) = Uuid::try_parse(stem) else {
            continue;
        };
        let p = entry.path();
        let rec = crate::run::read_bounded(&p, RECORD_LIMIT)
            .and_then(|b| ResourceRecord::decode(&b, &p))
            .and_then(|r| {
                if r.id == id {
                    Ok(r)
                } else {
                    Err(Error::format(
                        &p,
                        format!("holds resource {} under another name", r.id),
                    ))
                }
            });
        out.push(rec);
    }
    out
}
