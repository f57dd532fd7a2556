//! Replays every tracked input of the `model_ops` fuzz target (its seeds and the minimized
//! reproducers of crashes it found) through the same model, on stable and on every `cargo test`:
//! a store driven by the input's operations agrees with the in-memory reference at every step.

#[path = "../fuzz/model/ops.rs"]
mod ops;

use std::path::Path;

fn replay(dir: &str) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut n = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        eprintln!("model_ops: {}", path.display());
        ops::run(&data);
        n += 1;
    }
    n
}

#[test]
fn seeds_and_regressions_agree_with_the_reference() {
    let seeds = replay("fuzz/seeds/model_ops");
    assert!(seeds >= 5, "the seeds are tracked");
    replay("fuzz/regressions/model_ops");
}

/// Found by `model_ops` (fuzz/regressions/model_ops/delete_in_evicted_run_resurrected_by_fetch):
/// deleting a resource of an evicted run removed it from the index only, and the next fetch
/// brought it back from the remote copy. Now the run is fetched first.
#[test]
fn a_resource_deleted_from_an_evicted_run_stays_deleted() {
    use cairn::remote::{EvictOptions, RemoteSpec};
    let tmp = tempfile::tempdir().unwrap();
    let store = cairn::Store::builder(tmp.path().join("store"))
        .ignore_artifact_env()
        .open()
        .unwrap();
    store
        .add_remote(
            "m",
            RemoteSpec::Dir {
                path: tmp.path().join("mirror"),
            },
        )
        .unwrap();
    let run = store.get_or_create(&cairn::Model::new("m")).unwrap();
    let kept = store.create_resource(&run, "kept", b"kept").unwrap();
    let gone = store.create_resource(&run, "gone", b"gone").unwrap();
    store.push(&[run.identity()], "m", &|_| {}).unwrap();
    store
        .evict(&run.identity(), &EvictOptions::default())
        .unwrap();
    assert!(store.delete_resource(gone.id).unwrap());
    store.fetch(&run.identity(), Some("m"), &|_| {}).unwrap();
    let ids: Vec<_> = store
        .list_resources(&run.identity())
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [kept.id]);
    assert!(store.get_resource(gone.id).unwrap().is_none());
    assert_eq!(&store.read_resource_data(kept.id).unwrap()[..], b"kept");
}
