//! Crash and fault tests for materialization, through named failpoints compiled in with the
//! `failpoints` feature (`cargo test --all-features`). A child `cairn put` is aborted (as a crash
//! would stop it) or fails at each step; invariants are checked; a retry must complete.
#![cfg(feature = "failpoints")]

use std::path::Path;
use std::process::{Command, Output, Stdio};

const MODEL: &str = r#"{"module": "train", "config": {"lr": 0.1}}"#;

fn put(root: &Path, failpoints: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["--root", root.to_str().unwrap(), "put", "-"])
        .env("CAIRN_FAILPOINTS", failpoints)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(MODEL.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Every directory under a final name is a complete, valid run.
fn assert_no_partial_runs(root: &Path) -> usize {
    let walk = cairn::walk::find_runs(root);
    assert!(walk.errors.is_empty(), "{:?}", walk.errors);
    for run in &walk.runs {
        let dir = root.join(&run.location);
        let header = cairn::IdHeader::read(&dir).unwrap();
        let model = cairn::Model::read(&dir).unwrap();
        assert_eq!(model.identity().unwrap(), header.identity);
    }
    // No directory outside .cairn lacks an id.json at the placement depth.
    let placement = root.join("train");
    if placement.exists() {
        for shard in std::fs::read_dir(&placement).unwrap() {
            for run in std::fs::read_dir(shard.unwrap().path()).unwrap() {
                assert!(run.unwrap().path().join("id.json").is_file());
            }
        }
    }
    walk.runs.len()
}

const STEPS: &[(&str, bool)] = &[
    // (failpoint, whether the run is complete under its final name when the crash hits)
    ("durable.write", false),
    ("durable.fsync", false),
    ("run.after_model", false),
    ("durable.fsync_dir", false),
    ("run.before_rename", false),
    ("run.after_rename", true),
];

#[test]
fn a_crash_at_any_step_leaves_no_partial_run_and_a_retry_completes() {
    for &(point, complete) in STEPS {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        std::fs::create_dir(&root).unwrap();
        let out = put(&root, &format!("{point}=abort"));
        assert!(
            !out.status.success(),
            "{point}: the child must have been stopped"
        );
        assert_eq!(
            assert_no_partial_runs(&root),
            usize::from(complete),
            "{point}"
        );

        let retry = put(&root, "");
        assert!(
            retry.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&retry.stderr)
        );
        assert_eq!(assert_no_partial_runs(&root), 1, "{point}");
    }
}

#[test]
fn a_failing_write_or_fsync_is_reported_and_changes_nothing() {
    for point in [
        "durable.write",
        "durable.fsync",
        "durable.fsync_dir",
        "run.before_rename",
    ] {
        for action in ["error", "enospc"] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("store");
            std::fs::create_dir(&root).unwrap();
            // The store exists already, so the fault hits materialization itself.
            cairn::Store::open(&root).unwrap();
            let out = put(&root, &format!("{point}={action}"));
            // I/O failures exit 3 with one line naming the operation.
            assert_eq!(out.status.code(), Some(3), "{point}={action}");
            let err = String::from_utf8(out.stderr).unwrap();
            assert_eq!(err.lines().count(), 1, "{err}");
            if action == "enospc" {
                assert!(err.contains("No space left on device"), "{err}");
            }
            assert_eq!(assert_no_partial_runs(&root), 0, "{point}={action}");
            // The staging area was cleaned up.
            let staged = std::fs::read_dir(root.join(".cairn/tmp")).unwrap().count();
            assert_eq!(staged, 0, "{point}={action}");
        }
    }
}

/// Runs `cairn` with failpoints; returns the output.
fn cairn_with(root: &Path, failpoints: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env("CAIRN_FAILPOINTS", failpoints)
        .output()
        .unwrap()
}

#[test]
fn an_interrupted_repair_resumes_to_completion() {
    for point in [
        "repair.after_rekey",
        "repair.after_unlink",
        "index.before_commit",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let store = cairn::Store::open(&root).unwrap();
        let mut ids = Vec::new();
        for lr in [0.1, 0.2] {
            let model = cairn::Model::new("train")
                .with_config(&serde_json::json!({"lr": lr}))
                .unwrap();
            ids.push(store.get_or_create(&model).unwrap());
        }
        // A duplicate to delete, and a schema under which both runs drift.
        let copy = root.join("copy");
        std::fs::create_dir(&copy).unwrap();
        for f in ["id.json", "model.json"] {
            std::fs::copy(ids[1].path().join(f), copy.join(f)).unwrap();
        }
        std::fs::create_dir_all(root.join(".cairn/schemas")).unwrap();
        std::fs::write(
            root.join(".cairn/schemas/train.json"),
            r#"{"module": "train", "defaults": {"lr": 0.1}}"#,
        )
        .unwrap();
        drop(store);

        let out = cairn_with(
            &root,
            &format!("{point}=abort"),
            &["repair", "--rekey", "--force"],
        );
        assert!(
            !out.status.success(),
            "{point}: the repair must have been stopped"
        );
        // Whatever the crash left, every run directory is whole, and a rerun completes.
        assert!(assert_no_partial_runs_anywhere(&root) >= 2, "{point}");
        let out = cairn_with(&root, "", &["repair", "--rekey", "--force"]);
        assert!(
            out.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = cairn_with(&root, "", &["verify"]);
        assert!(
            out.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // The re-keyed run answers to its old identity.
        let store = cairn::Store::open(&root).unwrap();
        assert!(store.get(&ids[0].identity()).unwrap().is_some(), "{point}");
        assert!(!copy.exists(), "{point}");
    }
}

/// Every run directory anywhere under `root` is complete and self-consistent.
fn assert_no_partial_runs_anywhere(root: &Path) -> usize {
    let walk = cairn::walk::find_runs(root);
    assert!(walk.errors.is_empty(), "{:?}", walk.errors);
    for run in &walk.runs {
        let dir = root.join(&run.location);
        cairn::IdHeader::read(&dir).unwrap();
        cairn::Model::read(&dir).unwrap();
    }
    walk.runs.len()
}

/// A process killed at any step of the rebuild of a missing index leaves an index the next
/// command rebuilds again: never one that looks current but lacks runs (FORMAT.md §5.2).
#[test]
fn a_first_rebuild_stopped_at_any_step_is_redone_by_the_next_command() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = cairn::Store::open(&root).unwrap();
    let ids: Vec<String> = (0..5)
        .map(|i| {
            let model = cairn::Model::new("train")
                .with_config(&serde_json::json!({ "seed": i }))
                .unwrap();
            store.get_or_create(&model).unwrap().identity().to_string()
        })
        .collect();
    let index = store.index_path().to_path_buf();
    drop(store);
    let mut stopped = 0;
    for step in 1.. {
        std::fs::remove_file(&index).unwrap();
        let first = cairn_with(&root, &format!("*=abort@{step}"), &["ls"]);
        let out = cairn_with(&root, "", &["ls"]);
        assert!(out.status.success(), "step {step}: {out:?}");
        let listed = String::from_utf8(out.stdout).unwrap();
        for id in &ids {
            assert!(
                listed.contains(id.as_str()),
                "step {step}: {id} not listed:\n{listed}"
            );
        }
        if first.status.success() {
            break;
        }
        stopped += 1;
    }
    // Every step of the rebuild was a place to stop: the loop did test something.
    assert!(stopped > 10, "stopped at only {stopped} steps");
}
