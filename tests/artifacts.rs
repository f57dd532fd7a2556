//! Resources end to end through the library: both backends, switching backends, updates,
//! migration, reindex, gc, hostile records and content checks.

#[path = "support/harness.rs"]
#[allow(
    dead_code,
    reason = "shared test support; each test file uses part of it"
)]
mod harness;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use cairn::artifact::{Backend, GcOptions, MigrateOptions, ResourceFindingKind};
use cairn::{Error, Model, Run, Store};
use harness::Rng;
use harness::open_with as open;

fn run(store: &Store, lr: f64) -> Run {
    let model = Model::new("train")
        .with_config(&serde_json::json!({ "lr": lr }))
        .unwrap();
    store.get_or_create(&model).unwrap()
}

fn file_of(uri: &str) -> PathBuf {
    url::Url::parse(uri).unwrap().to_file_path().unwrap()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn round_trips_on_both_backends_small_and_streamed() {
    for backend in [Backend::Inline, Backend::Filesystem] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), backend);
        let r = run(&store, 0.1);
        // Empty, one byte, just under/over a chunk, several chunks.
        for (i, len) in [0usize, 1, (1 << 20) - 1, (1 << 20) + 1, 3 * (1 << 20) + 17]
            .into_iter()
            .enumerate()
        {
            let data = Rng(i as u64).bytes(len);
            let a = store.create_resource(&r, "a", &data).unwrap();
            assert_eq!(a.backend, backend);
            assert_eq!(a.size_bytes, len as u64);
            assert_eq!(a.content_hash, cairn::artifact::sha256_hex(&data));
            assert_eq!(&*store.read_resource_data(a.id).unwrap(), &data[..]);

            let mut w = store
                .resource_writer(&r, "streamed")
                .unwrap()
                .description("in pieces");
            for piece in data.chunks(4093) {
                w.write_all(piece).unwrap();
            }
            let b = w.commit().unwrap();
            assert_eq!(b.content_hash, a.content_hash);
            assert_eq!(b.description, "in pieces");
            assert_eq!(&*store.read_resource_unverified(b.id).unwrap(), &data[..]);
            assert_eq!(store.get_resource(b.id).unwrap().unwrap(), b);

            // Ranged reads through the reader agree with a plain slice (mmap and pread paths).
            let mut reader = store.open_resource(b.id).unwrap();
            assert_eq!(reader.len(), len as u64);
            reader.verify().unwrap();
            let lo = (len / 3) as u64;
            let hi = (2 * len / 3 + 5) as u64;
            assert_eq!(
                reader.read_range(lo..hi).unwrap(),
                &data[lo as usize..(hi as usize).min(len)]
            );
            assert!(
                reader
                    .read_range(len as u64 + 10..len as u64 + 20)
                    .unwrap()
                    .is_empty()
            );
            reader.seek(SeekFrom::Start(lo)).unwrap();
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest).unwrap();
            assert_eq!(rest, &data[lo as usize..]);
        }
        assert_eq!(store.list_resources(&r.identity()).unwrap().len(), 10);
        assert!(store.verify_resources(true).unwrap().findings.is_empty());
    }
}

#[test]
fn sha256_known_answers_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Backend::Filesystem);
    let r = run(&store, 0.1);
    for (input, want) in [
        (
            &b""[..],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (
            b"abc",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
    ] {
        assert_eq!(
            store.create_resource(&r, "k", input).unwrap().content_hash,
            want
        );
        let mut w = store.resource_writer(&r, "k").unwrap();
        w.write_all(input).unwrap();
        assert_eq!(w.commit().unwrap().content_hash, want);
    }
}

#[test]
fn files_are_sharded_by_uuid_and_identical_bytes_get_distinct_files() {
    let dir = tempfile::tempdir().unwrap();
    let fs_root = dir.path().join("blobs with space");
    let store = Store::builder(dir.path().join("store"))
        .ignore_artifact_env()
        .artifact_backend(Backend::Filesystem)
        .artifact_fs_root(&fs_root)
        .open()
        .unwrap();
    assert!(!fs_root.exists(), "the root is created on the first write");
    let r = run(&store, 0.1);
    let a = store.create_resource(&r, "same", b"identical").unwrap();
    let b = store.create_resource(&r, "same", b"identical").unwrap();
    let (pa, pb) = (file_of(&a.uri), file_of(&b.uri));
    assert_ne!(pa, pb);
    assert!(a.uri.contains("blobs%20with%20space"), "{}", a.uri);
    let id = a.id.to_string();
    assert_eq!(pa, fs_root.canonicalize().unwrap().join(&id[..2]).join(&id));
    // Deleting one never breaks the other.
    assert!(store.delete_resource(a.id).unwrap());
    assert!(!pa.exists());
    assert_eq!(&*store.read_resource_data(b.id).unwrap(), b"identical");
}

#[test]
fn delete_is_idempotent_and_removes_bytes_and_records() {
    for backend in [Backend::Inline, Backend::Filesystem] {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), backend);
        let r = run(&store, 0.1);
        let a = store.create_resource(&r, "a", b"bytes").unwrap();
        let beside = r
            .path()
            .join(cairn::artifact::SIDECAR_DIR)
            .join(format!("{}.cbor", a.id));
        assert!(beside.is_file());
        assert!(store.delete_resource(a.id).unwrap());
        assert!(!store.delete_resource(a.id).unwrap());
        assert!(store.get_resource(a.id).unwrap().is_none());
        assert!(!beside.exists());
        assert!(
            files_under(&store.artifact_fs_root())
                .iter()
                .all(|p| p.is_dir())
        );
        let err = store.read_resource_data(a.id).unwrap_err();
        assert!(
            matches!(err, Error::UnknownResource { id } if id == a.id),
            "{err}"
        );
    }
}

#[test]
fn reads_follow_the_record_after_switching_the_configured_backend_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let (inline, file) = {
        let store = open(dir.path(), Backend::Inline);
        let r = run(&store, 0.1);
        let i = store.create_resource(&r, "i", b"inline bytes").unwrap();
        drop(store);
        let store = open(dir.path(), Backend::Filesystem);
        assert_eq!(&*store.read_resource_data(i.id).unwrap(), b"inline bytes");
        let f = store.create_resource(&r, "f", b"file bytes").unwrap();
        assert_eq!(f.backend, Backend::Filesystem);
        (i, f)
    };
    let store = open(dir.path(), Backend::Inline);
    assert_eq!(&*store.read_resource_data(file.id).unwrap(), b"file bytes");
    assert_eq!(
        &*store.read_resource_data(inline.id).unwrap(),
        b"inline bytes"
    );
}

#[test]
fn updates_switch_backends_and_remove_old_files_and_migration_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Backend::Filesystem);
    let r = run(&store, 0.1);
    let a = store.create_resource(&r, "a", b"v1").unwrap();
    let old_file = file_of(&a.uri);
    drop(store);

    // Update into inline: the old file goes once the record no longer names it.
    let store = open(dir.path(), Backend::Inline);
    let a2 = store.update_resource(a.id, b"version two").unwrap();
    assert_eq!(
        (a2.id, a2.backend, a2.size_bytes),
        (a.id, Backend::Inline, 11)
    );
    assert_eq!(a2.created_at, a.created_at);
    assert!(!old_file.exists());
    let mut w = store.resource_updater(a.id).unwrap();
    w.write_all(b"version three").unwrap();
    w.commit().unwrap();
    let others: Vec<_> = (0..20)
        .map(|i| {
            let data = Rng(i as u64).bytes(100 + i);
            (store.create_resource(&r, "o", &data).unwrap().id, data)
        })
        .collect();

    let report = store
        .migrate_artifacts(&MigrateOptions::default(), &|_, _| {})
        .unwrap();
    assert_eq!(
        (report.migrated, report.skipped, report.failed.len()),
        (21, 0, 0)
    );
    assert_eq!(&*store.read_resource_data(a.id).unwrap(), b"version three");
    for (id, data) in &others {
        let rec = store.get_resource(*id).unwrap().unwrap();
        assert_eq!(rec.backend, Backend::Filesystem);
        assert_eq!(&*store.read_resource_data(*id).unwrap(), &data[..]);
    }
    // Idempotent: a second run skips everything.
    let again = store
        .migrate_artifacts(&MigrateOptions::default(), &|_, _| {})
        .unwrap();
    assert_eq!((again.migrated, again.skipped), (0, 21));
    // And back, under a size limit.
    let back = store
        .migrate_artifacts(
            &MigrateOptions::default()
                .to(Backend::Inline)
                .inline_max(110),
            &|_, _| {},
        )
        .unwrap();
    // Sizes 100..=110 and the 13-byte resource `a`.
    assert_eq!((back.migrated, back.skipped), (12, 9));
    assert!(store.verify_resources(true).unwrap().findings.is_empty());
    // Every file left is named by a record: nothing stranded.
    let gc = store
        .gc_artifacts(&GcOptions::default().grace(std::time::Duration::ZERO))
        .unwrap();
    assert!(gc.removed.is_empty(), "{:?}", gc.removed);
}

#[test]
fn reindex_restores_filesystem_records_and_reports_lost_inline_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (f, i, r) = {
        let store = open(dir.path(), Backend::Filesystem);
        let r = run(&store, 0.1);
        let f = store.create_resource(&r, "f", b"on disk").unwrap();
        let store = open(dir.path(), Backend::Inline);
        let i = store.create_resource(&r, "i", b"in the db").unwrap();
        (f, i, r.identity())
    };
    std::fs::remove_file(dir.path().join(".cairn/index.redb")).unwrap();
    let store = open(dir.path(), Backend::Inline);
    let listed = store.list_resources(&r).unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(store.get_resource(f.id).unwrap().unwrap(), f);
    assert_eq!(&*store.read_resource_data(f.id).unwrap(), b"on disk");
    // Inline bytes have no other copy: the record is back, the bytes are not, and both the
    // read and verify say so.
    let err = store.read_resource_data(i.id).unwrap_err();
    assert!(
        matches!(err, Error::InlineBytesGone { id, .. } if id == i.id),
        "{err}"
    );
    let report = store.verify_resources(false).unwrap();
    assert_eq!(report.findings.len(), 1);
    assert_eq!(
        report.findings[0].kind,
        ResourceFindingKind::InlineBytesGone
    );
    // An explicit reindex restores nothing twice.
    assert_eq!(store.reindex(false, &|_| {}).unwrap().resources_restored, 0);
}

#[test]
fn an_index_schema_rebuild_keeps_inline_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let i = {
        let store = open(dir.path(), Backend::Inline);
        let r = run(&store, 0.1);
        store.create_resource(&r, "i", b"only copy").unwrap()
    };
    {
        // Another schema version: the run tables are cleared and rebuilt on the next open.
        let db = redb::Database::builder()
            .set_concurrency_mode(redb::ConcurrencyMode::MultiWriter)
            .create(dir.path().join(".cairn/index.redb"))
            .unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("meta"))
                .unwrap();
            meta.insert("schema_version", 99u64.to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = open(dir.path(), Backend::Inline);
    assert_eq!(&*store.read_resource_data(i.id).unwrap(), b"only copy");
    // A full reindex (which replaces every run table) keeps them too.
    store.reindex(false, &|_| {}).unwrap();
    assert_eq!(&*store.read_resource_data(i.id).unwrap(), b"only copy");
    assert!(store.verify_resources(true).unwrap().findings.is_empty());
}

#[test]
fn records_pointing_outside_the_artifact_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("secret");
    std::fs::write(&outside, b"do not touch").unwrap();
    let store = open(dir.path().join("s").as_path(), Backend::Filesystem);
    let r = run(&store, 0.1);
    let f = store.create_resource(&r, "f", b"x").unwrap();
    // A hostile record beside the run, naming a file outside the root.
    let beside = r
        .path()
        .join(cairn::artifact::SIDECAR_DIR)
        .join(format!("{}.cbor", f.id));
    let mut hostile = f.clone();
    hostile.uri = url::Url::from_file_path(&outside).unwrap().to_string();
    hostile.size_bytes = 12;
    std::fs::write(&beside, hostile.encode()).unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("s/.cairn/index.redb")).unwrap();
    let store = open(dir.path().join("s").as_path(), Backend::Filesystem);
    let err = store.read_resource_data(f.id).unwrap_err();
    assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
    assert!(
        err.to_string().contains("outside the artifact root"),
        "{err}"
    );
    let report = store.verify_resources(false).unwrap();
    assert_eq!(report.findings[0].kind, ResourceFindingKind::UnsafeUri);
    assert!(store.delete_resource(f.id).unwrap());
    assert_eq!(std::fs::read(&outside).unwrap(), b"do not touch");
}

#[test]
fn verify_contents_catches_changed_bytes_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Backend::Filesystem);
    let r = run(&store, 0.1);
    let a = store.create_resource(&r, "a", b"hello world").unwrap();
    let b = store.create_resource(&r, "b", b"gone soon").unwrap();
    std::fs::write(file_of(&a.uri), b"hello WORLD").unwrap();
    std::fs::remove_file(file_of(&b.uri)).unwrap();
    // Presence only: the same-size change goes unseen, the missing file does not.
    let quick = store.verify_resources(false).unwrap();
    assert_eq!(quick.findings.len(), 1);
    assert_eq!(quick.findings[0].kind, ResourceFindingKind::FileMissing);
    let full = store.verify_resources(true).unwrap();
    let mut kinds: Vec<_> = full.findings.iter().map(|f| (f.id, f.kind)).collect();
    kinds.sort();
    let mut want = vec![
        (a.id, ResourceFindingKind::Mismatch),
        (b.id, ResourceFindingKind::FileMissing),
    ];
    want.sort();
    assert_eq!(kinds, want);
    let err = store.read_resource_data(a.id).unwrap_err();
    assert!(
        matches!(&err, Error::ResourceMismatch { what: "sha256", name, .. } if name == "a"),
        "{err}"
    );
}

#[test]
fn gc_removes_only_old_unreferenced_files_and_dry_run_removes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Backend::Filesystem);
    let r = run(&store, 0.1);
    let kept = store.create_resource(&r, "kept", b"kept").unwrap();
    let root = store.artifact_fs_root();
    let orphan_id = uuid::Uuid::new_v4().to_string();
    let orphan = root.join(&orphan_id[..2]).join(&orphan_id);
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"crash leftover").unwrap();
    let staging = root.join(".staging").join("x.tmp");
    std::fs::write(&staging, b"half").unwrap();
    let stranger = root.join("README");
    std::fs::write(&stranger, b"not cairn's").unwrap();

    let fresh = store.gc_artifacts(&GcOptions::default()).unwrap();
    assert!(fresh.removed.is_empty());
    assert_eq!(fresh.kept_recent, 2);

    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    for p in [&orphan, &staging, &file_of(&kept.uri)] {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
    }
    let dry = store
        .gc_artifacts(&GcOptions::default().dry_run(true))
        .unwrap();
    assert_eq!(dry.removed.len(), 2);
    assert!(orphan.exists() && staging.exists());
    let done = store.gc_artifacts(&GcOptions::default()).unwrap();
    let mut removed: Vec<_> = done.removed.iter().map(|(p, _)| p.clone()).collect();
    removed.sort();
    let mut want = vec![orphan.clone(), staging.clone()];
    want.sort();
    assert_eq!(removed, want);
    assert_eq!(done.referenced, 1);
    assert!(!orphan.exists() && !staging.exists() && stranger.exists());
    assert_eq!(&*store.read_resource_data(kept.id).unwrap(), b"kept");
}

#[test]
fn configuration_comes_from_an_env_file_and_bad_names_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("cfg.env");
    std::fs::write(
        &env,
        "CAIRN_ARTIFACT_BACKEND=filesystem\nCAIRN_ARTIFACT_FS_ROOT=blobs\n",
    )
    .unwrap();
    let store = Store::builder(dir.path().join("s"))
        .ignore_artifact_env()
        .env_file(&env)
        .open()
        .unwrap();
    assert_eq!(store.artifact_backend(), Backend::Filesystem);
    let r = run(&store, 0.1);
    let rec = store.create_resource(&r, "x", b"x").unwrap();
    assert!(file_of(&rec.uri).starts_with(dir.path().join("blobs").canonicalize().unwrap()));
    std::fs::write(&env, "CAIRN_ARTIFACT_BACKEND=tape\n").unwrap();
    let err = Store::builder(dir.path().join("s"))
        .ignore_artifact_env()
        .env_file(&env)
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    assert!(
        err.to_string().contains("cfg.env") && err.to_string().contains("tape"),
        "{err}"
    );
}

#[test]
fn a_dropped_writer_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Backend::Filesystem);
    let r = run(&store, 0.1);
    let mut w = store.resource_writer(&r, "abandoned").unwrap();
    w.write_all(&Rng(1).bytes(3 << 20)).unwrap();
    drop(w);
    assert!(files_under(&store.artifact_fs_root()).is_empty());
    assert!(store.list_resources(&r.identity()).unwrap().is_empty());
}
