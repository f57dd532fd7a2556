//! Crash and fault tests for resources, through named failpoints (feature `failpoints`): a child
//! `cairn resource add` or `cairn migrate` is aborted (as a crash would stop it) or fails at each
//! step. Afterwards no record, in the index or beside the run, points at missing or partial
//! bytes, and a retry completes.
#![cfg(feature = "failpoints")]

#[path = "support/harness.rs"]
#[allow(
    dead_code,
    reason = "shared test support; each test file uses part of it"
)]
mod harness;

use std::path::{Path, PathBuf};

use cairn::Model;
use cairn::artifact::{Backend, ResourceRecord, SIDECAR_DIR};
use harness::{cairn_env as cairn, open};

fn setup(root: &Path) -> (cairn::Run, PathBuf, Vec<u8>) {
    let store = open(root);
    let model = Model::new("train")
        .with_config(&serde_json::json!({"lr": 0.1}))
        .unwrap();
    let run = store.get_or_create(&model).unwrap();
    // Three and a bit chunks: the streaming path, more than one 1 MiB buffer.
    let data: Vec<u8> = (0..(3 << 20) + 99).map(|i| (i * 7 % 251) as u8).collect();
    let input = root.join("input.bin");
    std::fs::write(&input, &data).unwrap();
    (run, input, data)
}

fn sidecars(run_dir: &Path) -> Vec<ResourceRecord> {
    let Ok(entries) = std::fs::read_dir(run_dir.join(SIDECAR_DIR)) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let p = e.unwrap().path();
            p.extension()
                .is_some_and(|x| x == "cbor")
                .then(|| ResourceRecord::decode(&std::fs::read(&p).unwrap(), &p).unwrap())
        })
        .collect()
}

fn shard_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return out;
    };
    for shard in entries {
        let shard = shard.unwrap().path();
        if shard.file_name().unwrap() == ".staging" {
            continue;
        }
        for f in std::fs::read_dir(&shard).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

/// No record points at missing or partial bytes; every file under a final name is complete.
fn assert_consistent(root: &Path, run_dir: &Path, contents: &[&[u8]]) {
    let store = open(root);
    let report = store.verify_resources(true).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    for rec in sidecars(run_dir) {
        match rec.backend {
            Backend::Filesystem => {
                let path = url::Url::parse(&rec.uri).unwrap().to_file_path().unwrap();
                let bytes = std::fs::read(&path).unwrap();
                assert_eq!(cairn::artifact::sha256_hex(&bytes), rec.content_hash);
            }
            // Written beside the run only after the index committed it with its bytes.
            Backend::Inline => {
                store.read_resource_data(rec.id).unwrap();
            }
            _ => unreachable!(),
        }
    }
    for f in shard_files(&store.artifact_fs_root()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            contents.contains(&&bytes[..]),
            "partial file {}",
            f.display()
        );
    }
}

const ADD_STEPS: &[&str] = &[
    "artifact.write",
    "durable.fsync",
    "artifact.before_rename",
    "durable.fsync_dir",
    "artifact.before_record",
    "artifact.after_sidecar",
    "index.before_commit",
    "artifact.after_index",
];

#[test]
fn a_crash_at_any_step_of_an_add_leaves_no_record_without_its_bytes() {
    for backend in ["inline", "filesystem"] {
        for step in ADD_STEPS {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let (run, input, data) = setup(root);
            let id = run.identity().to_hex();
            let args = ["resource", "add", id.as_str(), input.to_str().unwrap()];
            let backend_env = ("CAIRN_ARTIFACT_BACKEND", backend);
            let fp = format!("{step}=abort");
            let out = cairn(root, &args, &[backend_env, ("CAIRN_FAILPOINTS", &fp)]);
            let crashed = !out.status.success();
            assert_consistent(root, run.path(), &[&data]);
            let out = cairn(root, &args, &[backend_env]);
            assert!(out.status.success(), "{backend} {step}: {out:?}");
            assert_consistent(root, run.path(), &[&data]);
            let store = open(root);
            let n = store.list_resources(&run.identity()).unwrap().len();
            assert!(
                (1..=2).contains(&n) && (crashed || n == 2),
                "{backend} {step}: {n} resources"
            );
            assert!(
                std::fs::read_dir(store.artifact_fs_root().join(".staging"))
                    .map_or(0, |d| d.count())
                    == 0
                    || *step == "artifact.write"
                    || *step == "durable.fsync"
                    || *step == "artifact.before_rename",
                "{backend} {step}: staging leftovers beyond a crash mid-write"
            );
        }
    }
}

fn inline_store(root: &Path, n: usize) -> (cairn::Run, Vec<(uuid::Uuid, Vec<u8>)>) {
    let store = open(root);
    let model = Model::new("train")
        .with_config(&serde_json::json!({"lr": 0.2}))
        .unwrap();
    let run = store.get_or_create(&model).unwrap();
    let mut rows: Vec<_> = (0..n)
        .map(|i| {
            let data = vec![i as u8; 1000 + i];
            (store.create_resource(&run, "r", &data).unwrap().id, data)
        })
        .collect();
    rows.sort(); // migration goes in id order
    (run, rows)
}

#[test]
fn enospc_in_the_middle_of_a_migration_leaves_that_row_untouched_and_a_rerun_completes() {
    for keep_going in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (run, rows) = inline_store(root, 6);
        let mut args = vec!["--json", "migrate"];
        if keep_going {
            args.push("--keep-going");
        }
        // The third file write, and every one after it, hits a full disk.
        let out = cairn(
            root,
            &args,
            &[("CAIRN_FAILPOINTS", "artifact.write=enospc@3")],
        );
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let failed_rows = if keep_going { 4 } else { 1 };
        assert_eq!(summary["migrated"], 2, "{stdout}");
        assert_eq!(summary["failed"], failed_rows, "{stdout}");
        assert_eq!(summary["stopped"], !keep_going, "{stdout}");
        assert!(stdout.contains("No space left on device"), "{stdout}");

        let store = open(root);
        for (i, (id, data)) in rows.iter().enumerate() {
            let rec = store.get_resource(*id).unwrap().unwrap();
            let want = if i < 2 {
                Backend::Filesystem
            } else {
                Backend::Inline
            };
            assert_eq!(rec.backend, want, "row {i}");
            assert_eq!(&*store.read_resource_data(*id).unwrap(), &data[..]);
        }
        let root_dir = store.artifact_fs_root();
        assert_eq!(shard_files(&root_dir).len(), 2, "no partial file remains");
        assert_eq!(
            std::fs::read_dir(root_dir.join(".staging"))
                .unwrap()
                .count(),
            0
        );
        drop(store);
        assert_consistent(
            root,
            run.path(),
            &rows.iter().map(|(_, d)| &d[..]).collect::<Vec<_>>(),
        );

        let out = cairn(root, &["--json", "migrate"], &[]);
        assert!(out.status.success(), "{out:?}");
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["migrated"], 4);
        assert_eq!(summary["skipped"], 2);
        let store = open(root);
        for (id, data) in &rows {
            assert_eq!(
                store.get_resource(*id).unwrap().unwrap().backend,
                Backend::Filesystem
            );
            assert_eq!(&*store.read_resource_data(*id).unwrap(), &data[..]);
        }
    }
}

#[test]
fn a_crash_at_any_step_of_a_migration_loses_nothing_and_a_rerun_completes() {
    for step in [
        "artifact.write",
        "durable.fsync",
        "artifact.before_rename",
        "durable.fsync_dir",
        "artifact.before_record",
        "durable.before_rename",
        "artifact.after_sidecar",
        "index.before_commit",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (run, rows) = inline_store(root, 4);
        // Batches of two: per-batch steps (the directory fsyncs, the commit) hit the second
        // batch, after the first one committed.
        let fp = format!("{step}=abort@2");
        let out = cairn(
            root,
            &["migrate", "--batch", "2"],
            &[("CAIRN_FAILPOINTS", &fp)],
        );
        assert!(!out.status.success(), "{step}: the crash happened");
        let contents: Vec<&[u8]> = rows.iter().map(|(_, d)| &d[..]).collect();
        assert_consistent(root, run.path(), &contents);
        let out = cairn(root, &["migrate"], &[]);
        assert!(out.status.success(), "{step}: {out:?}");
        assert_consistent(root, run.path(), &contents);
        let store = open(root);
        for (id, data) in &rows {
            assert_eq!(
                store.get_resource(*id).unwrap().unwrap().backend,
                Backend::Filesystem
            );
            assert_eq!(&*store.read_resource_data(*id).unwrap(), &data[..]);
        }
        // What the crash stranded is unreferenced, and gc collects it once old enough.
        let gc = store
            .gc_artifacts(&cairn::artifact::GcOptions::default().grace(std::time::Duration::ZERO))
            .unwrap();
        assert!(gc.errors.is_empty());
        assert_eq!(
            shard_files(&store.artifact_fs_root()).len(),
            rows.len(),
            "{step}"
        );
    }
}

#[test]
fn one_row_failing_in_the_middle_of_a_batch_leaves_that_row_alone_and_the_batch_commits() {
    for fp in [
        // The fourth row's file write, in id order.
        "artifact.write=enospc@4-4",
        // One of the data fsyncs, which run concurrently: which row is not known in advance.
        "durable.fsync=error@3-3",
        // The fifth rename into a shard.
        "artifact.before_rename=error@5-5",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (run, rows) = inline_store(root, 8);
        let out = cairn(
            root,
            &["--json", "migrate", "--keep-going", "--batch", "8"],
            &[("CAIRN_FAILPOINTS", fp)],
        );
        assert_eq!(out.status.code(), Some(1), "{fp}: {out:?}");
        let stdout = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let summary = lines.last().unwrap();
        assert_eq!(summary["migrated"], 7, "{fp}: {stdout}");
        assert_eq!(summary["failed"], 1, "{fp}: {stdout}");
        let failed_id: uuid::Uuid = lines[0]["failed"].as_str().unwrap().parse().unwrap();
        if fp.starts_with("artifact.write") {
            assert_eq!(failed_id, rows[3].0, "{fp}: the fourth row in id order");
        }
        let store = open(root);
        for (id, data) in &rows {
            let want = if *id == failed_id {
                Backend::Inline
            } else {
                Backend::Filesystem
            };
            assert_eq!(
                store.get_resource(*id).unwrap().unwrap().backend,
                want,
                "{fp}"
            );
            assert_eq!(&*store.read_resource_data(*id).unwrap(), &data[..]);
        }
        let beside: Vec<_> = sidecars(run.path())
            .into_iter()
            .filter(|r| r.id == failed_id)
            .collect();
        assert_eq!(beside.len(), 1);
        assert_eq!(
            beside[0].backend,
            Backend::Inline,
            "{fp}: record beside the run restored"
        );
        let fs_root = store.artifact_fs_root();
        assert_eq!(
            shard_files(&fs_root).len(),
            7,
            "{fp}: the failed row left no file"
        );
        assert_eq!(
            std::fs::read_dir(fs_root.join(".staging")).unwrap().count(),
            0
        );
        drop(store);
        let contents: Vec<&[u8]> = rows.iter().map(|(_, d)| &d[..]).collect();
        assert_consistent(root, run.path(), &contents);
        let out = cairn(root, &["--json", "migrate"], &[]);
        assert!(out.status.success(), "{fp}: {out:?}");
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["migrated"], 1);
        assert_eq!(summary["skipped"], 7);
    }
}

#[test]
fn a_failed_batch_commit_restores_every_record_beside_the_run_and_removes_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (run, rows) = inline_store(root, 5);
    let out = cairn(
        root,
        &["--json", "migrate", "--keep-going"],
        // Just before the batch's transaction (opening the store commits its own).
        &[("CAIRN_FAILPOINTS", "artifact.after_sidecar=error")],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["migrated"], 0, "{stdout}");
    assert_eq!(summary["failed"], 5, "{stdout}");
    let store = open(root);
    for (id, data) in &rows {
        assert_eq!(
            store.get_resource(*id).unwrap().unwrap().backend,
            Backend::Inline
        );
        assert_eq!(&*store.read_resource_data(*id).unwrap(), &data[..]);
    }
    assert!(
        sidecars(run.path())
            .iter()
            .all(|r| r.backend == Backend::Inline)
    );
    assert!(shard_files(&store.artifact_fs_root()).is_empty());
}
