//! Store integration tests: materialization, lookup, moving the tree. (Many processes at once:
//! tests/index.rs.)

use std::collections::BTreeSet;
use std::path::Path;

use cairn::{Model, Store};
use serde_json::json;

fn model(i: u64) -> Model {
    Model::new("train")
        .with_config(&json!({"lr": 0.1, "seed": i}))
        .unwrap()
        .with_predicate(&json!({"split": "train"}))
        .unwrap()
}

/// Every run directory under `root` (excluding `.cairn`), by walking the directories.
fn run_dirs(root: &Path) -> Vec<std::path::PathBuf> {
    let walk = cairn::walk::find_runs(root);
    assert!(walk.errors.is_empty(), "{:?}", walk.errors);
    walk.runs.iter().map(|r| root.join(&r.location)).collect()
}

#[test]
fn get_or_create_writes_both_files_and_returns_the_existing_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let run = store.get_or_create(&model(1)).unwrap();
    assert!(run.was_created());
    assert_eq!(run.identity(), model(1).identity().unwrap());
    let header = cairn::IdHeader::read(run.path()).unwrap();
    assert_eq!(header.identity, run.identity());
    let on_disk = run.model().unwrap();
    assert_eq!(on_disk.config, model(1).config);
    assert!(on_disk.created_at.is_some() && on_disk.created_by.is_some());
    // The identity re-derived from model.json equals the header.
    assert_eq!(on_disk.identity().unwrap(), header.identity);

    let again = store.get_or_create(&model(1)).unwrap();
    assert!(!again.was_created());
    assert_eq!(again.path(), run.path());
    assert_eq!(run_dirs(store.root()).len(), 1);
    // Staging is empty after success.
    assert_eq!(
        std::fs::read_dir(store.root().join(".cairn/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn a_moved_tree_keeps_every_identity() {
    let dir = tempfile::tempdir().unwrap();
    let old_root = dir.path().join("old");
    let store = Store::open(&old_root).unwrap();
    let ids: BTreeSet<_> = (0..20)
        .map(|i| store.get_or_create(&model(i)).unwrap().identity())
        .collect();
    // Move the whole root, and also move one run to an arbitrary place inside it.
    let new_root = dir.path().join("elsewhere/new");
    std::fs::create_dir_all(new_root.parent().unwrap()).unwrap();
    std::fs::rename(&old_root, &new_root).unwrap();
    let store = Store::open(&new_root).unwrap();
    let one = store
        .resolve(&ids.first().unwrap().to_hex())
        .unwrap()
        .unwrap();
    std::fs::create_dir_all(new_root.join("archive/2026")).unwrap();
    std::fs::rename(one.path(), new_root.join("archive/2026/best-run")).unwrap();
    // A run moved inside the root is found again by a reindex, counted as moved.
    let report = store.reindex(false, &|_| {}).unwrap();
    assert_eq!(
        (report.moved, report.added, report.removed, report.unchanged),
        (1, 0, 0, 19)
    );

    let (runs, errors) = store.scan();
    assert!(errors.is_empty(), "{errors:?}");
    let found: BTreeSet<_> = runs.iter().map(|r| r.identity()).collect();
    assert_eq!(found, ids);
    for id in &ids {
        let run = store.resolve(&id.to_hex()[..8]).unwrap().unwrap();
        assert_eq!(run.identity(), *id);
        assert_eq!(run.model().unwrap().identity().unwrap(), *id);
    }
    let moved = store
        .resolve(&ids.first().unwrap().to_hex())
        .unwrap()
        .unwrap();
    assert_eq!(moved.location(), Path::new("archive/2026/best-run"));
}

#[test]
fn prefixes_must_be_long_enough_and_unique() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let run = store.get_or_create(&model(7)).unwrap();
    assert!(matches!(
        store.resolve(&run.identity().to_hex()[..7]),
        Err(cairn::Error::InvalidReference { .. })
    ));
    let hex = run.identity().to_hex();
    let other = format!(
        "{}{}",
        if hex.starts_with('0') { '1' } else { '0' },
        &hex[1..8]
    );
    assert!(store.resolve(&other).unwrap().is_none());
    assert_eq!(
        store
            .resolve(&run.identity().to_hex()[..8])
            .unwrap()
            .unwrap()
            .identity(),
        run.identity()
    );
}

#[test]
fn a_foreign_header_at_the_placement_is_an_error_not_a_silent_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let a = store.get_or_create(&model(1)).unwrap();
    let b_id = model(2).identity().unwrap();
    let b_place = store.root().join(Store::placement("train", &b_id).unwrap());
    std::fs::create_dir_all(b_place.parent().unwrap()).unwrap();
    // Someone copied run a's directory to where run b belongs.
    std::fs::create_dir(&b_place).unwrap();
    for f in ["id.json", "model.json"] {
        std::fs::copy(a.path().join(f), b_place.join(f)).unwrap();
    }
    let err = store.get_or_create(&model(2)).unwrap_err();
    assert!(
        err.to_string().contains("id.json") && err.to_string().contains("expected"),
        "{err}"
    );
}
