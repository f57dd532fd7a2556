//! Streaming resource transfers: `cairn resource get` (and `Store::copy_resource_to`,
//! `Store::export_resource`) stream verified bytes and never publish a corrupt file under the
//! requested name; the streaming writer fsyncs the complete staging file before renaming it
//! into its shard (failpoint tests, feature `failpoints`).

#[path = "support/harness.rs"]
#[allow(
    dead_code,
    reason = "shared test support; each test file uses part of it"
)]
mod harness;

use std::path::{Path, PathBuf};

use cairn::artifact::Backend;
use cairn::{Model, Store};
use harness::{cairn_env as cairn, open_with as open};

fn run(store: &Store) -> cairn::Run {
    let model = Model::new("train")
        .with_config(&serde_json::json!({"lr": 0.1}))
        .unwrap();
    store.get_or_create(&model).unwrap()
}

/// Three chunks and a bit: several reads and writes per transfer.
fn payload() -> Vec<u8> {
    (0..(3 << 20) + 99).map(|i| (i * 7 % 251) as u8).collect()
}

fn file_of(store: &Store, id: uuid::Uuid) -> PathBuf {
    let rec = store.get_resource(id).unwrap().unwrap();
    url::Url::parse(&rec.uri).unwrap().to_file_path().unwrap()
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn get_streams_the_verified_bytes_to_a_file_and_to_stdout_on_both_backends() {
    for backend in [Backend::Inline, Backend::Filesystem] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let data = payload();
        let id = {
            let store = open(&root, backend);
            let r = run(&store);
            store.create_resource(&r, "ckpt", &data).unwrap().id
        };
        let out_dir = dir.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let dest = out_dir.join("ckpt.bin");
        std::fs::write(&dest, b"old contents").unwrap();
        let o = cairn(
            &root,
            &[
                "resource",
                "get",
                &id.to_string(),
                "-o",
                dest.to_str().unwrap(),
            ],
            &[],
        );
        assert!(o.status.success(), "{backend}: {o:?}");
        assert!(std::fs::read(&dest).unwrap() == data, "{backend}: -o bytes");
        assert_eq!(names(&out_dir), ["ckpt.bin"], "{backend}: leftovers");

        let o = cairn(&root, &["resource", "get", &id.to_string()], &[]);
        assert!(o.status.success(), "{backend}: {:?}", o.status);
        assert!(o.stdout == data, "{backend}: stdout bytes");

        let store = open(&root, backend);
        let mut sink = Vec::new();
        let rec = store.copy_resource_to(id, &mut sink).unwrap();
        assert_eq!(rec.id, id);
        assert!(sink == data, "{backend}: copy_resource_to bytes");
    }
}

#[test]
fn a_corrupted_artifact_is_refused_and_never_lands_under_the_requested_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let data = payload();
    let store = open(&root, Backend::Filesystem);
    let r = run(&store);
    let id = store.create_resource(&r, "ckpt", &data).unwrap().id;
    let path = file_of(&store, id);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let fresh = out_dir.join("fresh.bin");
    let kept = out_dir.join("kept.bin");
    std::fs::write(&kept, b"old contents").unwrap();

    // Same size, one byte flipped in the last chunk: only the final hash check can see it.
    let mut bad = data.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let corruptions: [(&str, Vec<u8>); 2] = [
        ("flipped byte", bad),
        ("truncated", data[..data.len() / 2].to_vec()),
    ];
    for (what, bytes) in corruptions {
        std::fs::write(&path, &bytes).unwrap();
        for dest in [&fresh, &kept] {
            let o = cairn(
                &root,
                &[
                    "resource",
                    "get",
                    &id.to_string(),
                    "-o",
                    dest.to_str().unwrap(),
                ],
                &[],
            );
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{what}: accepted");
            assert!(err.contains(&id.to_string()), "{what}: {err}");
        }
        assert!(!fresh.exists(), "{what}: a corrupt file landed");
        assert_eq!(std::fs::read(&kept).unwrap(), b"old contents", "{what}");
        assert_eq!(names(&out_dir), ["kept.bin"], "{what}: leftovers");

        let o = cairn(&root, &["resource", "get", &id.to_string()], &[]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{what}: stdout accepted");
        assert!(
            err.contains(&id.to_string()) && err.contains("ckpt"),
            "{what}: {err}"
        );
        assert!(
            o.stdout.len() <= data.len(),
            "{what}: more than the record's size"
        );

        let err = store.copy_resource_to(id, &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, cairn::Error::ResourceMismatch { id: got, .. } if got == id),
            "{what}: {err}"
        );
        let err = store.export_resource(id, &fresh).unwrap_err();
        assert!(
            matches!(err, cairn::Error::ResourceMismatch { .. }),
            "{what}: {err}"
        );
        assert!(!fresh.exists(), "{what}: export left a file");
    }
}

/// The exported file is fsynced before it is renamed under its name: failing that fsync
/// (or crashing just before the rename) leaves nothing under the name.
#[cfg(feature = "failpoints")]
#[test]
fn get_to_a_file_publishes_it_only_after_its_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let data = payload();
    let id = {
        let store = open(&root, Backend::Filesystem);
        let r = run(&store);
        store.create_resource(&r, "ckpt", &data).unwrap().id
    };
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let dest = out_dir.join("ckpt.bin");
    for fp in ["durable.fsync=error", "durable.before_rename=abort"] {
        let o = cairn(
            &root,
            &[
                "resource",
                "get",
                &id.to_string(),
                "-o",
                dest.to_str().unwrap(),
            ],
            &[("CAIRN_FAILPOINTS", fp)],
        );
        assert!(!o.status.success(), "{fp}: succeeded");
        assert!(!dest.exists(), "{fp}: published");
    }
}

/// The streaming writer's first file fsync is the staging file's, complete, before anything is
/// in a shard: a crash there leaves no file under a final name and no record. Fails if that
/// fsync were dropped or moved after the rename (the next fsync, of the record beside the run,
/// comes after the rename).
#[cfg(feature = "failpoints")]
#[test]
fn the_writer_fsyncs_the_whole_staging_file_before_renaming_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    // Past several writeback steps (8 MiB).
    let data: Vec<u8> = (0..(20 << 20) + 5).map(|i| (i * 13 % 241) as u8).collect();
    let input = dir.path().join("input.bin");
    std::fs::write(&input, &data).unwrap();
    let (store, r) = {
        let store = open(&root, Backend::Filesystem);
        let r = run(&store);
        (store, r)
    };
    let fs_root = store.artifact_fs_root();
    drop(store);
    let id = r.identity().to_hex();
    let add = ["resource", "add", id.as_str(), input.to_str().unwrap()];
    let env = [("CAIRN_ARTIFACT_BACKEND", "filesystem")];
    let o = cairn(
        &root,
        &add,
        &[env[0], ("CAIRN_FAILPOINTS", "durable.fsync=abort@1")],
    );
    assert!(!o.status.success(), "the first fsync was not reached");
    let staged: Vec<PathBuf> = std::fs::read_dir(fs_root.join(".staging"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(staged.len(), 1, "{staged:?}");
    assert!(std::fs::read(&staged[0]).unwrap() == data, "staged bytes");
    let shards: Vec<String> = names(&fs_root)
        .into_iter()
        .filter(|n| n != ".staging")
        .collect();
    assert!(shards.is_empty(), "renamed before its fsync: {shards:?}");
    let store = open(&root, Backend::Filesystem);
    assert!(store.list_resources(&r.identity()).unwrap().is_empty());

    // An fsync error instead: nothing recorded, the staging file removed.
    std::fs::remove_file(&staged[0]).unwrap();
    let o = cairn(
        &root,
        &add,
        &[env[0], ("CAIRN_FAILPOINTS", "durable.fsync=error@1")],
    );
    assert!(!o.status.success());
    assert!(names(&fs_root.join(".staging")).is_empty());
    assert!(store.list_resources(&r.identity()).unwrap().is_empty());
    let o = cairn(&root, &add, &env);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(store.list_resources(&r.identity()).unwrap().len(), 1);
}
