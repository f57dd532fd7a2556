//! A full reindex into an existing index writes only what changed, and whether it patches the
//! index or reloads it, the content is that of an index rebuilt from nothing (FORMAT.md §5.5).

use std::collections::BTreeMap;
use std::path::Path;

use cairn::index::RunRecord;
use cairn::query::Query;
use cairn::{Model, Store};
use serde_json::json;

fn model(seed: u64) -> Model {
    Model::new(if seed % 3 == 0 { "eval" } else { "train" })
        .with_config(&json!({"seed": seed, "opt": {"lr": seed as f64 / 100.0}}))
        .unwrap()
        .with_predicate(&json!({"split": if seed % 2 == 0 { "train" } else { "val" }}))
        .unwrap()
}

/// Everything the index answers about the runs: records by identity (the `runs` table), the
/// identities per module (the `modules` table) and the identity at each location (the
/// `locations` table).
fn content(store: &Store) -> (BTreeMap<String, RunRecord>, Vec<usize>, Vec<String>) {
    let records: BTreeMap<String, RunRecord> = store
        .find(&Query::new())
        .unwrap()
        .into_iter()
        .map(|r| (r.identity.to_hex(), r))
        .collect();
    let per_module = ["eval", "train"]
        .iter()
        .map(|m| store.find(&Query::new().module(*m)).unwrap().len())
        .collect();
    let at_locations = records
        .values()
        .map(|r| {
            let run = store.at_location(Path::new(&r.location)).unwrap();
            run.expect("location indexed").identity().to_hex()
        })
        .collect();
    (records, per_module, at_locations)
}

fn stamp(path: &Path) -> (u64, std::time::SystemTime) {
    let m = std::fs::metadata(path).unwrap();
    (m.len(), m.modified().unwrap())
}

#[test]
fn an_unchanged_tree_is_reindexed_without_writing_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for seed in 0..40 {
        store.get_or_create(&model(seed)).unwrap();
    }
    store.reindex(false, &|_| {}).unwrap();
    let index = dir.path().join(".cairn/index.redb");
    let before = stamp(&index);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let report = store.reindex(false, &|_| {}).unwrap();
    assert_eq!((report.runs, report.unchanged), (40, 40), "{report}");
    assert_eq!(stamp(&index), before, "a reindex that found nothing wrote");
}

#[test]
fn patched_and_reloaded_indexes_equal_a_fresh_rebuild() {
    // 1 change in 60 patches the index; 20 in 60 reload it.
    for changes in [1, 20] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let runs: Vec<_> = (0..60)
            .map(|s| store.get_or_create(&model(s)).unwrap())
            .collect();
        std::fs::create_dir_all(dir.path().join("moved")).unwrap();
        for (i, run) in runs.iter().take(changes).enumerate() {
            std::fs::rename(run.path(), dir.path().join(format!("moved/r{i}"))).unwrap();
        }
        std::fs::remove_dir_all(runs[59].path()).unwrap();
        let added = tempfile::tempdir().unwrap();
        let foreign = Store::open(added.path())
            .unwrap()
            .get_or_create(&model(1000))
            .unwrap();
        std::fs::rename(foreign.path(), dir.path().join("moved/foreign")).unwrap();

        let report = store.reindex(false, &|_| {}).unwrap();
        assert_eq!(
            (report.moved, report.removed, report.added, report.runs),
            (changes, 1, 1, 60),
            "{report}"
        );
        let patched = content(&store);
        assert_eq!(patched.0.len(), 60);
        assert_eq!(patched.0[&runs[0].identity().to_hex()].location, "moved/r0");
        drop(store);
        std::fs::remove_file(dir.path().join(".cairn/index.redb")).unwrap();
        let store = Store::open(dir.path()).unwrap(); // rebuilt from nothing
        assert_eq!(content(&store), patched, "{changes} changes");
    }
}
