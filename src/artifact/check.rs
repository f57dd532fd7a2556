//! Checking resources against their records (FORMAT.md §7.8): presence and size always, the
//! sha256 of every byte with `contents`; in parallel. Remote records are checked on their
//! remote, never fetched.

use std::path::Path;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use uuid::Uuid;

use super::read;
use super::record::{Backend, ResourceRecord};
use super::tables;
use crate::error::{Error, Result};
use crate::store::Store;

/// The class of a resource finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ResourceFindingKind {
    /// An inline resource whose bytes are gone from the index (inline bytes have no other copy).
    InlineBytesGone,
    /// A filesystem resource whose file is missing.
    FileMissing,
    /// A filesystem resource whose uri points outside the artifact root.
    UnsafeUri,
    /// Size or sha256 differ from the record.
    Mismatch,
    /// The bytes could not be read.
    Unreadable,
    /// A remote resource whose object is missing from its remote.
    RemoteMissing,
}

impl ResourceFindingKind {
    /// The class name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceFindingKind::InlineBytesGone => "inline-bytes-gone",
            ResourceFindingKind::FileMissing => "file-missing",
            ResourceFindingKind::UnsafeUri => "unsafe-uri",
            ResourceFindingKind::Mismatch => "content-mismatch",
            ResourceFindingKind::Unreadable => "unreadable",
            ResourceFindingKind::RemoteMissing => "remote-missing",
        }
    }
}

/// One resource that does not match its record.
#[derive(Debug)]
#[non_exhaustive]
pub struct ResourceFinding {
    /// The class.
    pub kind: ResourceFindingKind,
    /// The resource.
    pub id: Uuid,
    /// Its name.
    pub name: String,
    /// What is wrong.
    pub detail: String,
}

impl std::fmt::Display for ResourceFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<17} {}  {:?}  {}",
            self.kind.as_str(),
            self.id,
            self.name,
            self.detail
        )
    }
}

/// What a resource check found.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ResourceReport {
    /// Resources checked.
    pub resources: usize,
    /// Bytes hashed (with contents).
    pub bytes: u64,
    /// Every finding, by id.
    pub findings: Vec<ResourceFinding>,
    /// Wall time.
    pub elapsed: Duration,
}

impl Store {
    /// Checks every resource: present and of the recorded size; with `contents`, also its
    /// sha256 (every byte read, resources in parallel).
    pub fn verify_resources(&self, contents: bool) -> Result<ResourceReport> {
        let start = Instant::now();
        let records = self.with_index(tables::all)?;
        let results: Vec<(u64, Option<ResourceFinding>)> = records
            .par_iter()
            .map(|rec| match self.check_one(rec, contents) {
                Ok(()) => (if contents { rec.size_bytes } else { 0 }, None),
                Err(e) => (0, Some(finding(rec, e))),
            })
            .collect();
        let mut report = ResourceReport {
            resources: records.len(),
            ..Default::default()
        };
        for (bytes, f) in results {
            report.bytes += bytes;
            report.findings.extend(f);
        }
        report.elapsed = start.elapsed();
        Ok(report)
    }

    fn check_one(&self, rec: &ResourceRecord, contents: bool) -> Result<()> {
        if contents {
            if rec.backend == Backend::Remote {
                return self.check_remote(rec, true);
            }
            // Where the bytes are now: checking never fetches (an evicted run's inline
            // resources are checked in the index, its run left evicted).
            return self.copy_local(rec, &mut std::io::sink(), Path::new("<check>"));
        }
        match rec.backend {
            Backend::Inline => {
                let bytes = self
                    .with_index(|i| tables::inline_bytes(i, rec.id))?
                    .ok_or_else(|| Error::InlineBytesGone {
                        id: rec.id,
                        name: rec.name.clone(),
                    })?;
                if bytes.len() as u64 != rec.size_bytes {
                    return Err(read::mismatch(
                        rec,
                        "size",
                        rec.size_bytes.to_string(),
                        bytes.len().to_string(),
                    ));
                }
                Ok(())
            }
            Backend::Filesystem => {
                let path = super::fs::path_of_uri(&rec.uri, &self.artifacts.read_root())?;
                read::open_checked(&path, rec).map(drop)
            }
            Backend::Remote => self.check_remote(rec, false),
        }
    }

    /// Checks a remote record against its remote, never fetching: the object is there at the
    /// recorded size; with `contents`, streamed and its sha256 compared.
    fn check_remote(&self, rec: &ResourceRecord, contents: bool) -> Result<()> {
        let name = rec.remote_name().expect("a remote record names its remote");
        let remote = self.remote(name)?;
        let key = rec.remote_key();
        let missing = || Error::RemoteObjectMissing {
            id: rec.id,
            name: rec.name.clone(),
            remote: name.to_owned(),
            key: key.clone(),
        };
        let (size, sha) = if contents {
            crate::remote::remote_sha256(remote.as_ref(), &key)?
                .map(|(size, sha)| (size, Some(sha)))
                .ok_or_else(missing)?
        } else {
            (remote.size(&key)?.ok_or_else(missing)?, None)
        };
        if size != rec.size_bytes {
            return Err(read::mismatch(
                rec,
                "size",
                rec.size_bytes.to_string(),
                size.to_string(),
            ));
        }
        sha.map_or(Ok(()), |sha| read::check_hash(rec, sha))
    }
}

fn finding(rec: &ResourceRecord, e: Error) -> ResourceFinding {
    let kind = match &e {
        Error::InlineBytesGone { .. } => ResourceFindingKind::InlineBytesGone,
        Error::UnsafePath { .. } => ResourceFindingKind::UnsafeUri,
        Error::ResourceMismatch { .. } => ResourceFindingKind::Mismatch,
        Error::RemoteObjectMissing { .. } => ResourceFindingKind::RemoteMissing,
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            ResourceFindingKind::FileMissing
        }
        _ => ResourceFindingKind::Unreadable,
    };
    ResourceFinding {
        kind,
        id: rec.id,
        name: rec.name.clone(),
        detail: e.to_string(),
    }
}
