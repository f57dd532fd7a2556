//! verify and repair: every finding class is created on purpose and reported exactly; repair
//! fixes what needs no guessing, is idempotent, and re-keyed runs answer to both identities.

use std::collections::BTreeSet;
use std::process::Command;

use cairn::repair::RepairOptions;
use cairn::schemas::Schemas;
use cairn::verify::{FindingKind, VerifyOptions};
use cairn::{Model, Schema, Store};
use serde_json::json;

fn model(lr: f64, seed: u64) -> Model {
    Model::new("train")
        .with_config(&json!({"lr": lr, "epochs": 10, "seed": seed}))
        .unwrap()
        .with_schema(
            Schema::new(&json!({"epochs": 10}), &[])
                .unwrap()
                .with_label("v1"),
        )
}

/// (class, location) of every finding.
fn classes(store: &Store, schemas: &Schemas) -> BTreeSet<(FindingKind, String)> {
    store
        .verify(schemas, &VerifyOptions::default(), &|_| {})
        .unwrap()
        .findings
        .into_iter()
        .map(|f| (f.kind, f.location.unwrap_or_default()))
        .collect()
}

#[test]
fn every_finding_class_is_reported_and_repair_fixes_what_needs_no_guessing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open(root).unwrap();
    let runs: Vec<_> = (0..8)
        .map(|i| {
            store
                .get_or_create(&model(if i < 2 { 0.1 } else { 0.5 }, i))
                .unwrap()
        })
        .collect();
    let loc = |i: usize| runs[i].location().to_str().unwrap().to_owned();
    let old_schemas =
        Schemas::new().with("train", Schema::new(&json!({"epochs": 10}), &[]).unwrap());
    assert!(
        classes(&store, &old_schemas).is_empty(),
        "a fresh store is clean"
    );

    // The code changed: lr now defaults to 0.1, so runs 0 and 1 drift.
    let schemas = Schemas::new().with(
        "train",
        Schema::new(&json!({"epochs": 10, "lr": 0.1}), &[])
            .unwrap()
            .with_label("v2"),
    );
    // header mismatch: model.json's predicate edited by hand.
    let mut m = runs[2].model().unwrap();
    m.predicate.insert("split".into(), json!("test"));
    std::fs::write(runs[2].path().join("model.json"), m.to_json_bytes()).unwrap();
    // unreadable: model.json is not JSON; another run's id.json has an unknown version.
    std::fs::write(runs[3].path().join("model.json"), b"{ not json").unwrap();
    std::fs::write(runs[4].path().join("id.json"), b"{\"format\": 7}").unwrap();
    // duplicate: run 5 copied elsewhere.
    let copy = root.join("copies/r5");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["id.json", "model.json"] {
        std::fs::copy(runs[5].path().join(f), copy.join(f)).unwrap();
    }
    // index drift: run 6 deleted behind the index's back; a run added by hand.
    std::fs::remove_dir_all(runs[6].path()).unwrap();
    let other = tempfile::tempdir().unwrap();
    let foreign = Store::open(other.path())
        .unwrap()
        .get_or_create(&model(0.9, 99))
        .unwrap();
    std::fs::rename(foreign.path(), root.join("imported")).unwrap();

    let want: BTreeSet<(FindingKind, String)> = [
        (FindingKind::IdentityDrift, loc(0)),
        (FindingKind::IdentityDrift, loc(1)),
        (FindingKind::HeaderMismatch, loc(2)),
        (FindingKind::Unreadable, loc(3)),
        (FindingKind::Unreadable, loc(4)),
        (FindingKind::Duplicate, "copies/r5".into()),
        (FindingKind::IndexDrift, loc(6)),
        (FindingKind::IndexDrift, "imported".into()),
        // run 4's header is unreadable, so the index entry has no readable directory
        (FindingKind::IndexDrift, loc(4)),
    ]
    .into_iter()
    .collect();
    assert_eq!(classes(&store, &schemas), want);
    let report = store
        .verify(&schemas, &VerifyOptions::default(), &|_| {})
        .unwrap();
    let drift = report
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::IdentityDrift)
        .unwrap();
    assert!(
        drift.detail.contains("field `lr` now has default 0.1"),
        "{}",
        drift.detail
    );
    assert!(
        drift.detail.contains("schema label v1 → v2"),
        "{}",
        drift.detail
    );

    // Filtering by prefix checks only that run.
    let mut opts = VerifyOptions::default();
    opts.prefix = Some(cairn::Prefix::parse(&runs[0].identity().to_hex()[..10]).unwrap());
    let one = store.verify(&schemas, &opts, &|_| {}).unwrap();
    assert_eq!(one.runs, 1);
    assert_eq!(one.findings.len(), 1);

    // repair without options: only the index is fixed; the rest is reported, nothing deleted.
    let r = store.repair(&schemas, RepairOptions::default()).unwrap();
    assert!(r.rekeyed.is_empty() && r.deleted.is_empty());
    assert_eq!(
        (r.reindex.added, r.reindex.removed),
        (1, 2),
        "{}",
        r.reindex
    );
    assert!(copy.exists());
    let after: BTreeSet<_> = classes(&store, &schemas);
    assert!(
        after.iter().all(|(k, _)| *k != FindingKind::IndexDrift),
        "{after:?}"
    );

    // repair --rekey --force: drifted runs re-keyed, the duplicate copy deleted.
    let r = store
        .repair(&schemas, RepairOptions::default().rekey(true).force(true))
        .unwrap();
    assert_eq!(r.deleted, ["copies/r5"]);
    assert!(!copy.exists() && runs[5].path().exists());
    // Runs 0 and 1 differ only in seed, so they re-key to different identities.
    assert_eq!(r.rekeyed.len(), 2);
    let left: BTreeSet<_> = r.left.iter().map(|f| f.kind).collect();
    assert_eq!(
        left,
        [FindingKind::HeaderMismatch, FindingKind::Unreadable]
            .into_iter()
            .collect()
    );

    // What remains needs a human: a header mismatch and two unreadable runs.
    let remaining = classes(&store, &schemas);
    assert_eq!(
        remaining,
        [
            (FindingKind::HeaderMismatch, loc(2)),
            (FindingKind::Unreadable, loc(3)),
            (FindingKind::Unreadable, loc(4)),
        ]
        .into_iter()
        .collect()
    );
    // Idempotent: a second repair does nothing.
    let again = store
        .repair(&schemas, RepairOptions::default().rekey(true).force(true))
        .unwrap();
    assert!(again.did_nothing(), "{again}");

    // A re-keyed run answers to its old and its new identity, by full identity and by prefix.
    let rk = &r.rekeyed[0];
    for id in [rk.old, rk.new] {
        let run = store.get(&id).unwrap().expect("found by either identity");
        assert_eq!(run.identity(), rk.new);
        assert_eq!(
            store
                .resolve(&id.to_hex()[..12])
                .unwrap()
                .unwrap()
                .identity(),
            rk.new
        );
    }
    let header = cairn::IdHeader::read(&root.join(&rk.location)).unwrap();
    assert_eq!(header.aliases, [rk.old]);
    // The old schema's client still finds it through get_or_create, without a second directory.
    let before = cairn::walk::find_runs(root).runs.len();
    let mut m = model(0.1, 0);
    m.schema = Schema::new(&json!({"epochs": 10}), &[])
        .unwrap()
        .with_label("v1");
    let found = store.get_or_create(&m).unwrap();
    assert!(!found.was_created());
    assert_eq!(cairn::walk::find_runs(root).runs.len(), before);
    // And the index survives a rebuild with the aliases intact.
    std::fs::remove_file(root.join(".cairn/index.redb")).unwrap();
    let store = Store::open(root).unwrap();
    assert_eq!(store.get(&rk.old).unwrap().unwrap().identity(), rk.new);
}

#[test]
fn two_runs_drifting_onto_one_identity_are_not_both_rekeyed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for log in ["/a", "/b"] {
        store
            .get_or_create(
                &Model::new("m")
                    .with_config(&json!({"x": 1, "log": log}))
                    .unwrap(),
            )
            .unwrap();
    }
    // `log` became non-identifying: both runs now mean the same thing.
    let schemas = Schemas::new().with("m", Schema::new(&json!({}), &["log"]).unwrap());
    let r = store
        .repair(&schemas, RepairOptions::default().rekey(true))
        .unwrap();
    assert_eq!(r.rekeyed.len(), 1);
    assert_eq!(r.left.len(), 1);
    assert!(
        r.left[0].detail.contains("belongs to another run"),
        "{}",
        r.left[0].detail
    );
    let walk = cairn::walk::find_runs(dir.path());
    let ids: BTreeSet<_> = walk
        .runs
        .iter()
        .map(|r| r.header.as_ref().unwrap().identity)
        .collect();
    assert_eq!(ids.len(), 2, "no duplicate identity was made");
}

/// Regression (crash harness, RELIABILITY.md "Found and fixed"): a drifted run with a duplicate
/// copy used to have the copy re-keyed and then deleted, leaving the kept run drifted.
#[test]
fn one_repair_rekeys_a_drifted_run_whose_duplicate_it_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let run = store
        .get_or_create(&Model::new("m").with_config(&json!({"x": 1})).unwrap())
        .unwrap();
    // The copy sorts first, so verify reports its drift before the original's.
    let copy = dir.path().join("a-copy");
    std::fs::create_dir(&copy).unwrap();
    for f in ["id.json", "model.json"] {
        std::fs::copy(run.path().join(f), copy.join(f)).unwrap();
    }
    let schemas = Schemas::new().with("m", Schema::new(&json!({"x": 1}), &[]).unwrap());
    let r = store
        .repair(&schemas, RepairOptions::default().rekey(true).force(true))
        .unwrap();
    assert_eq!(r.deleted, vec!["a-copy".to_owned()]);
    assert_eq!(r.rekeyed.len(), 1);
    assert_eq!(r.rekeyed[0].location, run.location().to_str().unwrap());
    assert!(r.left.is_empty(), "{:?}", r.left);
    assert!(classes(&store, &schemas).is_empty());
}

#[test]
fn cli_verify_exits_1_on_findings_and_0_when_clean() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = Store::open(root).unwrap();
    let run = store.get_or_create(&model(0.1, 1)).unwrap();
    let cairn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("--root")
            .arg(root)
            .args(args)
            .output()
            .unwrap()
    };
    // Without a schema file the module's schema is empty, so `epochs`, a default when the run
    // was made, identifies again: drift.
    assert_eq!(cairn(&["verify"]).status.code(), Some(1));
    let schemas = root.join(".cairn/schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    std::fs::write(
        schemas.join("train.json"),
        r#"{"module": "train", "defaults": {"epochs": 10}, "label": "v1"}"#,
    )
    .unwrap();
    assert_eq!(cairn(&["verify"]).status.code(), Some(0));
    // A new default that equals the run's lr: identity drift.
    std::fs::write(
        schemas.join("train.json"),
        r#"{"module": "train", "defaults": {"epochs": 10, "lr": 0.1}, "label": "v2"}"#,
    )
    .unwrap();
    let out = cairn(&["verify", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let line: serde_json::Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["class"], "identity-drift");
    assert_eq!(line["identity"], run.identity().to_hex());
    let out = cairn(&["repair", "--rekey"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8(out.stdout).unwrap().contains("re-keyed"));
    assert_eq!(cairn(&["verify"]).status.code(), Some(0));
    let show = cairn(&["show", &run.identity().to_hex()[..8]]);
    assert!(
        show.status.success(),
        "the old identity still names the run"
    );
}
