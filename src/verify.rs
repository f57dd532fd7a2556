//! `verify`: re-derive every run's identity with the current schemas and compare it with
//! `id.json` and with the index (FORMAT.md §6.2). Read-only.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::canonical::Value;
use crate::error::{Error, Result};
use crate::identity::{self, Identity, Prefix};
use crate::index::{Availability, RunRecord};
use crate::run::{IdHeader, Model};
use crate::run_bytes::{IdBytes, ModelBytes};
use crate::schemas::Schemas;
use crate::store::Store;
use crate::walk;

/// The class of a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FindingKind {
    /// `id.json`'s identity differs from the one re-derived with the current schema.
    IdentityDrift,
    /// `model.json`'s module, config or predicate differs from `id.json`'s.
    HeaderMismatch,
    /// The index disagrees with the directory (location, record), or one side is missing.
    IndexDrift,
    /// Two directories hold one identity.
    Duplicate,
    /// A file cannot be read: invalid JSON, unknown format version, missing file, ...
    Unreadable,
}

impl FindingKind {
    /// The class name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::IdentityDrift => "identity-drift",
            FindingKind::HeaderMismatch => "header-mismatch",
            FindingKind::IndexDrift => "index-drift",
            FindingKind::Duplicate => "duplicate",
            FindingKind::Unreadable => "unreadable",
        }
    }

    /// Every class, in output order.
    pub const ALL: [FindingKind; 5] = [
        FindingKind::IdentityDrift,
        FindingKind::HeaderMismatch,
        FindingKind::IndexDrift,
        FindingKind::Duplicate,
        FindingKind::Unreadable,
    ];
}

/// One problem found by `verify`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Finding {
    /// The class.
    pub kind: FindingKind,
    /// The run's identity (from `id.json` or the index), when known.
    pub identity: Option<Identity>,
    /// The run directory relative to the root, when known.
    pub location: Option<String>,
    /// What is wrong, and for identity drift the schema change that explains it.
    pub detail: String,
    /// For identity drift: the identity re-derived with the current schema.
    pub derived: Option<Identity>,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<16} {}  {}  {}",
            self.kind.as_str(),
            self.identity.map_or("-".into(), |i| i.to_hex()),
            self.location.as_deref().unwrap_or("-"),
            self.detail
        )
    }
}

/// Which runs to verify.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Only runs of this module.
    pub module: Option<String>,
    /// Only runs whose identity starts with this prefix.
    pub prefix: Option<Prefix>,
}

/// What `verify` found.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Run directories checked.
    pub runs: usize,
    /// Every finding, ordered by class then location.
    pub findings: Vec<Finding>,
    /// Wall time.
    pub elapsed: Duration,
}

impl VerifyReport {
    /// Findings per class, every class listed.
    pub fn counts(&self) -> Vec<(FindingKind, usize)> {
        FindingKind::ALL
            .iter()
            .map(|k| (*k, self.findings.iter().filter(|f| f.kind == *k).count()))
            .collect()
    }

    /// True when nothing was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

fn finding(
    kind: FindingKind,
    identity: Option<Identity>,
    location: &str,
    detail: String,
) -> Finding {
    Finding {
        kind,
        identity,
        location: Some(location.to_owned()),
        detail,
        derived: None,
    }
}

/// Verifies the runs under `store`'s root against `schemas` and the index.
pub(crate) fn verify(
    store: &Store,
    index_records: Vec<RunRecord>,
    schemas: &Schemas,
    opts: &VerifyOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<VerifyReport> {
    let start = Instant::now();
    let root = store.root();
    let walk = walk::walk_with(root, &HashMap::new(), progress, |bytes, path, _, _| {
        IdBytes::parse(bytes, path)
    });
    let wanted = |module: &str, id: &Identity| {
        opts.module.as_deref().is_none_or(|m| m == module)
            && opts.prefix.as_ref().is_none_or(|p| p.matches(id))
    };
    let filtering = opts.module.is_some() || opts.prefix.is_some();
    let mut findings: Vec<Finding> = Vec::new();

    for e in walk.errors {
        if filtering {
            continue; // cannot tell whose it is
        }
        let location = error_location(&e, root);
        findings.push(Finding {
            kind: FindingKind::Unreadable,
            identity: None,
            location,
            detail: e.to_string(),
            derived: None,
        });
    }

    let runs: Vec<(String, IdBytes)> = walk
        .runs
        .into_iter()
        .filter_map(|r| r.header.map(|h| (r.location, h)))
        .filter(|(_, h)| wanted(&h.module, &h.identity))
        .collect();

    let indexed: HashMap<Identity, &RunRecord> =
        index_records.iter().map(|r| (r.identity, r)).collect();
    let mut by_id: HashMap<Identity, Vec<&str>> = HashMap::new();
    for (location, header) in &runs {
        by_id.entry(header.identity).or_default().push(location);
    }

    // Per run, in parallel: model.json against id.json and the current schema, on canonical
    // bytes; only a run that is not clean there goes through the value checks, which describe
    // what is wrong. Then the index entry against the directory.
    let per_run: Vec<Vec<Finding>> = runs
        .par_iter()
        .map(|(location, header)| {
            let mut out = if is_clean(root, location, header, schemas) {
                Vec::new()
            } else {
                check_run(root, location, header.identity, schemas)
            };
            out.extend(check_index(location, header, &indexed, &by_id));
            out
        })
        .collect();
    findings.extend(per_run.into_iter().flatten());

    // Duplicates: one identity, several directories. The index's location is the one kept.
    for (id, mut locations) in by_id.iter().map(|(i, l)| (*i, l.clone())) {
        if locations.len() < 2 {
            continue;
        }
        let kept = indexed
            .get(&id)
            .map(|r| r.location.as_str())
            .filter(|k| locations.contains(k))
            .unwrap_or_else(|| {
                locations.sort_unstable();
                locations[0]
            });
        for other in locations.iter().filter(|l| **l != kept) {
            findings.push(finding(
                FindingKind::Duplicate,
                Some(id),
                other,
                format!("same identity as {kept}"),
            ));
        }
    }

    for rec in &index_records {
        if rec.state == Availability::Local
            && wanted(&rec.module, &rec.identity)
            && !by_id.contains_key(&rec.identity)
        {
            findings.push(finding(
                FindingKind::IndexDrift,
                Some(rec.identity),
                &rec.location,
                "index entry without a directory".into(),
            ));
        }
    }

    findings.sort_by(|a, b| {
        a.kind
            .cmp(&b.kind)
            .then_with(|| a.location.cmp(&b.location))
    });
    Ok(VerifyReport {
        runs: runs.len(),
        findings,
        elapsed: start.elapsed(),
    })
}

/// The index entry of the run at `location` against its directory.
fn check_index(
    location: &str,
    header: &IdBytes,
    indexed: &HashMap<Identity, &RunRecord>,
    by_id: &HashMap<Identity, Vec<&str>>,
) -> Option<Finding> {
    let id = Some(header.identity);
    match indexed.get(&header.identity) {
        None => Some(finding(
            FindingKind::IndexDrift,
            id,
            location,
            "directory missing from the index".into(),
        )),
        Some(rec) if rec.location != location => {
            let duplicate = by_id
                .get(&header.identity)
                .is_some_and(|l| l.contains(&rec.location.as_str()));
            // A duplicate is reported as such.
            (!duplicate).then(|| {
                finding(
                    FindingKind::IndexDrift,
                    id,
                    location,
                    format!("index has location {}", rec.location),
                )
            })
        }
        Some(rec) => {
            let expected = header.record(location.to_owned(), rec.state);
            let differ = record_differences(rec, &expected);
            (!differ.is_empty()).then(|| {
                finding(
                    FindingKind::IndexDrift,
                    id,
                    location,
                    format!("index record differs in {}", differ.join(", ")),
                )
            })
        }
    }
}

/// True when the run at `location` certainly has nothing for [`check_run`] to report: its
/// `model.json` is one the reference parser accepts, agrees with `id.json` byte for byte, and
/// gives `id.json`'s identity under the current schema.
fn is_clean(root: &Path, location: &str, header: &IdBytes, schemas: &Schemas) -> bool {
    let Some(model) = ModelBytes::read_fast(&root.join(location)) else {
        return false;
    };
    model.module == header.module
        && model.config == header.config
        && model.predicate == header.predicate
        && identity::identity_of_parts(
            &model.module,
            &model.config,
            &model.predicate,
            schemas.get(&model.module),
        )
        .is_ok_and(|derived| derived == header.identity)
}

fn record_differences(have: &RunRecord, want: &RunRecord) -> Vec<&'static str> {
    let mut out = Vec::new();
    if have.module != want.module {
        out.push("module");
    }
    if have.config_cbor() != want.config_cbor() {
        out.push("config");
    }
    if have.predicate_cbor() != want.predicate_cbor() {
        out.push("predicate");
    }
    if have.created_at != want.created_at {
        out.push("created_at");
    }
    if have.aliases != want.aliases {
        out.push("aliases");
    }
    out
}

/// The location (relative to the root) an error names, if any.
fn error_location(e: &Error, root: &Path) -> Option<String> {
    let path = match e {
        Error::Format { path, .. }
        | Error::UnsupportedVersion { path, .. }
        | Error::TooLarge { path, .. }
        | Error::Io { path, .. }
        | Error::UnsafePath { path, .. } => path,
        _ => return None,
    };
    let dir = if path
        .file_name()
        .is_some_and(|n| n == "id.json" || n == "model.json")
    {
        path.parent()?
    } else {
        path
    };
    dir.strip_prefix(root)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The checks that need only the run's own directory, on values: what is wrong, described.
fn check_run(root: &Path, location: &str, identity: Identity, schemas: &Schemas) -> Vec<Finding> {
    let id = Some(identity);
    let unreadable = |e: Error| {
        vec![finding(
            FindingKind::Unreadable,
            id,
            location,
            e.to_string(),
        )]
    };
    let dir = root.join(location);
    let header = match IdHeader::read(&dir) {
        Ok(h) => h,
        Err(e) => return unreadable(e),
    };
    let model = match Model::read(&dir) {
        Ok(m) => m,
        Err(e) => return unreadable(e),
    };
    let canon = |v: &serde_json::Value, what: &str| Value::from_json_value(v, what);
    let canon_map = |m: &serde_json::Map<String, serde_json::Value>| {
        canon(&serde_json::Value::Object(m.clone()), "predicate")
    };
    let model_config = canon(&model.config, "config");
    let model_predicate = canon_map(&model.predicate);
    // Equal JSON (literals compared exactly) canonicalizes equally: only a header that differs
    // as text is canonicalized on its own.
    let header_config = match &model_config {
        Ok(c) if header.config == model.config => Ok(c.clone()),
        _ => canon(&header.config, "config"),
    };
    let header_predicate = match &model_predicate {
        Ok(p) if header.predicate == model.predicate => Ok(p.clone()),
        _ => canon_map(&header.predicate),
    };
    let (config, predicate, header_config, header_predicate) = match (
        model_config,
        model_predicate,
        header_config,
        header_predicate,
    ) {
        (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
        (Err(e), ..) | (_, Err(e), ..) | (.., Err(e), _) | (.., Err(e)) => return unreadable(e),
    };
    let mut out = Vec::new();
    let mut differ = Vec::new();
    if model.module != header.module {
        differ.push(format!("module {:?} vs {:?}", model.module, header.module));
    }
    if config != header_config {
        differ.push("config".to_owned());
    }
    if predicate != header_predicate {
        differ.push("predicate".to_owned());
    }
    if !differ.is_empty() {
        out.push(finding(
            FindingKind::HeaderMismatch,
            id,
            location,
            format!("model.json and id.json differ in {}", differ.join(", ")),
        ));
        return out; // which of the two to re-derive from would be a guess
    }

    let schema = schemas.get(&model.module);
    let derived = identity::document(&model.module, config.clone(), predicate.clone(), schema)
        .map(|doc| Identity::of_document(&doc));
    match derived {
        Err(e) => out.push(finding(
            FindingKind::Unreadable,
            id,
            location,
            e.to_string(),
        )),
        Ok(derived) if derived == header.identity => {}
        Ok(derived) => {
            let mut reasons = schema.explain_change(&model.schema, &config);
            if schema.label() != model.schema.label() {
                reasons.push(format!(
                    "schema label {} → {}",
                    model.schema.label().unwrap_or("(none)"),
                    schema.label().unwrap_or("(none)")
                ));
            }
            let original = identity::document(&model.module, config, predicate, &model.schema)
                .map(|doc| Identity::of_document(&doc));
            if !matches!(original, Ok(o) if o == header.identity || header.aliases.contains(&o)) {
                reasons.push(
                    "model.json does not give id.json's identity even under the schema it was \
                     created with"
                        .into(),
                );
            }
            if reasons.is_empty() {
                reasons.push("the current schema reduces the config differently".into());
            }
            out.push(Finding {
                kind: FindingKind::IdentityDrift,
                identity: id,
                location: Some(location.to_owned()),
                detail: format!("now {derived}: {}", reasons.join("; ")),
                derived: Some(derived),
            });
        }
    }
    out
}
