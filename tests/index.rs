//! Index integration tests: rebuild equality, moved trees, incremental reindex, many processes
//! at once, and a busy index that must not lose runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cairn::index::RunRecord;
use cairn::query::{Condition, Filter, Query};
use cairn::{Model, Store};
use serde_json::json;

fn model(seed: u64) -> Model {
    Model::new(if seed % 3 == 0 { "eval" } else { "train" })
        .with_config(&json!({"seed": seed, "opt": {"lr": seed as f64 / 100.0}}))
        .unwrap()
        .with_predicate(&json!({"split": if seed % 2 == 0 { "train" } else { "val" }}))
        .unwrap()
}

/// The whole index content, by identity.
fn content(store: &Store) -> BTreeMap<String, RunRecord> {
    store
        .find(&Query::new())
        .unwrap()
        .into_iter()
        .map(|r| (r.identity.to_hex(), r))
        .collect()
}

#[test]
fn a_deleted_index_is_rebuilt_equal_and_a_moved_tree_keeps_every_identity() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("a");
    let before = {
        let store = Store::open(&root).unwrap();
        for seed in 0..200 {
            store.get_or_create(&model(seed)).unwrap();
        }
        content(&store)
    };
    assert_eq!(before.len(), 200);
    std::fs::remove_file(root.join(".cairn/index.redb")).unwrap();
    let store = Store::open(&root).unwrap(); // rebuilt on open
    assert_eq!(content(&store), before);
    let report = store.reindex(false, &|_| {}).unwrap();
    assert_eq!((report.runs, report.unchanged, report.added), (200, 200, 0));
    assert_eq!(content(&store), before);
    drop(store);

    let moved = dir.path().join("b/c");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::rename(&root, &moved).unwrap();
    let store = Store::open(&moved).unwrap();
    let report = store.reindex(false, &|_| {}).unwrap();
    assert_eq!(
        report.unchanged, 200,
        "locations are relative: nothing moved"
    );
    for (id, rec) in &before {
        let run = store.resolve(id).unwrap().expect("found after the move");
        assert_eq!(run.location(), Path::new(&rec.location));
        assert!(run.path().starts_with(&moved));
    }
}

#[test]
fn reindex_reconciles_and_reports_each_class() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let runs: Vec<_> = (0..10)
        .map(|s| store.get_or_create(&model(s)).unwrap())
        .collect();
    // Remove one, move one, copy one (a duplicate), break one header, add one by hand.
    std::fs::remove_dir_all(runs[0].path()).unwrap();
    std::fs::create_dir_all(dir.path().join("archive")).unwrap();
    std::fs::rename(runs[1].path(), dir.path().join("archive/r1")).unwrap();
    std::fs::create_dir_all(dir.path().join("copy/r2")).unwrap();
    for f in ["id.json", "model.json"] {
        std::fs::copy(runs[2].path().join(f), dir.path().join("copy/r2").join(f)).unwrap();
    }
    std::fs::write(runs[3].path().join("id.json"), b"{\"format\": 2}").unwrap();
    let other = tempfile::tempdir().unwrap();
    let foreign = Store::open(other.path())
        .unwrap()
        .get_or_create(&model(99))
        .unwrap();
    std::fs::create_dir_all(dir.path().join("imported")).unwrap();
    std::fs::rename(foreign.path(), dir.path().join("imported/r99")).unwrap();

    for incremental in [true, false] {
        // The incremental pass runs first; the full one then finds the index already current.
        let report = store.reindex(incremental, &|_| {}).unwrap();
        if incremental {
            assert_eq!(report.added, 1, "{report}");
            assert_eq!(report.moved, 1, "{report}");
            // run 0 is gone and run 3's header is unreadable: both leave the index
            assert_eq!(report.removed, 2, "{report}");
        } else {
            assert_eq!(
                (report.added, report.moved, report.removed),
                (0, 0, 0),
                "{report}"
            );
        }
        assert_eq!(report.duplicates.len(), 1, "{report}");
        assert_eq!(report.errors.len(), 1, "{report}");
        let err = report.errors[0].to_string();
        assert!(
            err.contains("id.json") && err.contains("unsupported format version 2"),
            "{err}"
        );
        assert_eq!(report.runs, 9, "{report}");
    }
    assert!(store.get(&runs[0].identity()).unwrap().is_none());
    assert_eq!(
        store.get(&runs[1].identity()).unwrap().unwrap().location(),
        Path::new("archive/r1")
    );
    assert!(store.get(&foreign.identity()).unwrap().is_some());
}

#[test]
fn a_limit_without_sort_returns_the_first_matches_in_identity_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for seed in 0..40 {
        store.get_or_create(&model(seed)).unwrap();
    }
    let v = |t: &str| cairn::canonical::Value::from_json_slice(t.as_bytes(), "v").unwrap();
    let split = || Filter::new("predicate.split", Condition::Eq(v("\"val\""))).unwrap();
    for base in [Query::new(), Query::new().module("train")] {
        let q = base.filter(split());
        let all = store.find(&q).unwrap();
        assert!(all.len() > 5 && all.is_sorted_by_key(|r| r.identity));
        for n in [0, 1, 5, all.len(), all.len() + 3] {
            let first = store.find(&q.clone().limit(n)).unwrap();
            assert_eq!(
                first,
                all[..n.min(all.len())],
                "limit {n}, module {:?}",
                q.module
            );
        }
    }
}

/// An index written by schema version 1 (map-shaped records) is rebuilt on open, never misread.
#[test]
fn an_index_of_the_previous_schema_version_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let store = Store::open(dir.path()).unwrap();
        for seed in 0..20 {
            store.get_or_create(&model(seed)).unwrap();
        }
        content(&store)
    };
    let path = dir.path().join(".cairn/index.redb");
    {
        let db = redb::Database::builder()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .create(&path)
            .unwrap();
        let txn = db.begin_write().unwrap();
        {
            let meta: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
            let runs: redb::TableDefinition<[u8; 32], &[u8]> = redb::TableDefinition::new("runs");
            let mut meta = txn.open_table(meta).unwrap();
            meta.insert("schema_version", 1u64.to_le_bytes().as_slice())
                .unwrap();
            // A version 1 record (a map with "v": 1) under every identity.
            let mut runs = txn.open_table(runs).unwrap();
            for id in before.values().map(|r| r.identity) {
                runs.insert(id.as_bytes(), b"\xa1\x61v\x01".as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(content(&store), before);
}

#[test]
fn find_filters_sorts_and_limits_on_canonical_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for seed in 0..30 {
        store.get_or_create(&model(seed)).unwrap();
    }
    let v = |t: &str| cairn::canonical::Value::from_json_slice(t.as_bytes(), "v").unwrap();
    let q = Query::new()
        .module("train")
        .filter(Filter::new("config.opt.lr", Condition::Ge(v("0.1"))).unwrap())
        .filter(Filter::new("predicate.split", Condition::Eq(v("\"val\""))).unwrap())
        .sort("config.seed", true)
        .limit(3);
    let hits = store.find(&q).unwrap();
    let seeds: Vec<_> = hits
        .iter()
        .map(|r| r.config().to_json()["seed"].clone())
        .collect();
    assert_eq!(seeds, [json!(29), json!(25), json!(23)]);
    // 1 and 1.0 are one canonical value.
    let one = store
        .find(&Query::new().filter(Filter::new("config.seed", Condition::Eq(v("1.0"))).unwrap()))
        .unwrap();
    assert_eq!(one.len(), 1);
    let all_eval = store.find(&Query::new().module("eval")).unwrap();
    assert_eq!(all_eval.len(), 10);
    // Lookup by location, through the index.
    let loc = std::path::PathBuf::from(&all_eval[0].location);
    let run = store.at_location(&loc).unwrap().unwrap();
    assert_eq!(run.identity(), all_eval[0].identity);
    assert!(
        store
            .at_location(Path::new("no/such/run"))
            .unwrap()
            .is_none()
    );
    assert!(store.at_location(Path::new("../escape")).is_err());
}

#[test]
fn a_busy_index_delays_indexing_but_never_loses_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    Store::open(root).unwrap();
    // Hold the index's write slot from this process, as a long reindex elsewhere would.
    let db = redb::Database::builder()
        .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
        .open(root.join(".cairn/index.redb"))
        .unwrap();
    let txn = db.begin_write().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "--root",
            root.to_str().unwrap(),
            "--index-timeout",
            "0.3",
            "put",
            "--json",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(b"{\"module\": \"busy\"}")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        std::fs::read_dir(root.join(".cairn/inbox"))
            .unwrap()
            .count(),
        1
    );
    drop(txn);
    drop(db);
    // The next index access picks it up.
    let store = Store::builder(root)
        .index_timeout(Duration::from_secs(5))
        .open()
        .unwrap();
    let id = line["identity"].as_str().unwrap();
    assert!(store.record_of(id).unwrap().is_some());
    assert_eq!(
        std::fs::read_dir(root.join(".cairn/inbox"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn eight_processes_times_a_thousand_overlapping_get_or_create() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    Store::open(&root).unwrap();
    let (procs, per_proc, stride) = (8u64, 1000u64, 500u64);
    let children: Vec<_> = (0..procs)
        .map(|p| {
            // Process p asks for seeds p*500 .. p*500+1000: each overlaps its neighbours by half.
            let lines: Vec<String> = (p * stride..p * stride + per_proc)
                .map(|s| json!({"module": "load", "config": {"seed": s}}).to_string())
                .collect();
            let input = dir.path().join(format!("in-{p}.jsonl"));
            std::fs::write(&input, lines.join("\n")).unwrap();
            Command::new(env!("CARGO_BIN_EXE_cairn"))
                .args([
                    "--root",
                    root.to_str().unwrap(),
                    "--index-timeout",
                    "60",
                    "put",
                ])
                .arg(&input)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap().lines().count(),
            per_proc as usize
        );
    }
    let distinct = ((procs - 1) * stride + per_proc) as usize;
    let walk = cairn::walk::find_runs(&root);
    assert!(walk.errors.is_empty(), "{:?}", walk.errors);
    assert_eq!(walk.runs.len(), distinct, "no duplicate directories");
    let store = Store::open(&root).unwrap();
    let indexed = content(&store);
    assert_eq!(
        indexed.len(),
        distinct,
        "every identity exactly once in the index"
    );
    for found in &walk.runs {
        let id = found.header.as_ref().unwrap().identity.to_hex();
        assert_eq!(indexed[&id].location, found.location);
    }
}
