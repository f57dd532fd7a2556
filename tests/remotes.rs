//! One suite run against both remotes: a `dir` remote in a temporary directory and an `s3`
//! remote on a real SeaweedFS server on 127.0.0.1 (tests/support/seaweed.rs).

#[path = "support/lying_proxy.rs"]
mod lying_proxy;
#[path = "support/seaweed.rs"]
mod seaweed;

use std::path::Path;
use std::time::{Duration, Instant};

use cairn::artifact::{Backend, GcOptions};
use cairn::remote::{EvictOptions, RemoteSpec, S3Spec};
use cairn::{Error, Identity, Model, Store};

/// Which remote a case runs against.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Dir,
    S3,
}

/// A fresh remote spec (an empty directory, or a fresh prefix in the bucket); `None` when the
/// S3 server is unavailable (reported loudly by the harness).
fn spec(kind: Kind, tmp: &Path) -> Option<RemoteSpec> {
    match kind {
        Kind::Dir => Some(RemoteSpec::Dir {
            path: tmp.join("mirror"),
        }),
        Kind::S3 => {
            let server = seaweed::server()?;
            let spec = S3Spec::new(seaweed::BUCKET)
                .prefix(format!("t-{}", uuid::Uuid::new_v4().simple()))
                .endpoint(&server.endpoint)
                .region("us-east-1")
                .credentials(seaweed::ACCESS_KEY, seaweed::SECRET_KEY);
            Some(RemoteSpec::S3(spec))
        }
    }
}

/// A store with remote `r` (waiting for a starting server to accept the bucket).
fn store(root: &Path, spec: &RemoteSpec) -> Store {
    store_named(root, "r", spec)
}

/// A store with remote `name`.
fn store_named(root: &Path, name: &str, spec: &RemoteSpec) -> Store {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let store = Store::builder(root)
            .remote(name, spec.clone())
            .ignore_artifact_env()
            .artifact_backend(cairn::artifact::Backend::Filesystem)
            .artifact_fs_root(root.join("artifacts"))
            .open()
            .unwrap();
        match store.remote(name) {
            Ok(_) => return store,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for the remote: {e}");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("remote never answered: {e}"),
        }
    }
}

/// A run with a data file in a subdirectory, a filesystem artifact and an inline one.
fn populated(store: &Store, big: usize) -> (Identity, Vec<u8>, uuid::Uuid, uuid::Uuid) {
    let model = Model::new("train")
        .with_config(&serde_json::json!({"lr": 0.1, "n": big}))
        .unwrap();
    let run = store.get_or_create(&model).unwrap();
    std::fs::create_dir_all(run.data_dir().join("sub")).unwrap();
    std::fs::write(
        run.data_dir().join("sub/metrics.csv"),
        b"step,loss\n1,0.5\n",
    )
    .unwrap();
    let bytes: Vec<u8> = (0..big).map(|i| (i * 31 % 251) as u8).collect();
    let mut w = store.resource_writer(&run, "checkpoint").unwrap();
    std::io::Write::write_all(&mut w, &bytes).unwrap();
    let fs_rec = w.commit().unwrap();
    let inline = Store::builder(store.root())
        .ignore_artifact_env()
        .open()
        .unwrap()
        .create_resource(&run, "note", b"inline bytes")
        .unwrap();
    (run.identity(), bytes, fs_rec.id, inline.id)
}

fn state(store: &Store, id: &Identity) -> String {
    store.whereis(id).unwrap().unwrap().state.to_string()
}

macro_rules! both {
    ($case:ident) => {
        mod $case {
            #[test]
            fn dir() {
                super::$case(super::Kind::Dir);
            }
            #[test]
            fn s3() {
                super::$case(super::Kind::S3);
            }
        }
    };
}

both!(push_evict_fetch_keeps_bytes_and_identity);
fn push_evict_fetch_keeps_bytes_and_identity(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let store = store(&tmp.path().join("store"), &spec);
    let (id, bytes, fs_id, _) = populated(&store, 3 << 20);
    let run = store.get(&id).unwrap().unwrap();
    let dir = run.path().to_path_buf();
    let id_json = std::fs::read(dir.join("id.json")).unwrap();

    let report = store.push(&[id], "r", &|_| {}).unwrap();
    assert_eq!(report.pushed, vec![id]);
    assert!(report.failed.is_empty());
    let w = store.whereis(&id).unwrap().unwrap();
    assert_eq!(w.copies.len(), 1);
    assert!(w.copies[0].verified_at_ms.is_some());
    // A second push finds the committed copy and uploads nothing.
    let again = store.push(&[id], "r", &|_| {}).unwrap();
    assert_eq!((again.already, again.bytes), (vec![id], 0));

    assert_eq!(
        store
            .evict(&id, &EvictOptions::default())
            .unwrap()
            .as_deref(),
        Some("r")
    );
    assert_eq!(state(&store, &id), "evicted");
    let mut husk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    husk.sort();
    assert_eq!(
        husk,
        [
            ".cairn-evicted",
            ".cairn-resources",
            "id.json",
            "model.json"
        ]
    );
    let fs_file = store.get_resource(fs_id).unwrap().unwrap().uri;
    assert!(!Path::new(&fs_file["file://".len()..]).exists());
    // A full reindex keeps the husk evicted.
    store.reindex(false, &|_| {}).unwrap();
    assert_eq!(state(&store, &id), "evicted");

    let fetched = store.fetch(&id, None, &|_| {}).unwrap();
    assert!(fetched >= bytes.len() as u64);
    assert_eq!(state(&store, &id), "local");
    let run = store.get(&id).unwrap().unwrap();
    assert_eq!(run.identity(), id);
    assert_eq!(std::fs::read(dir.join("id.json")).unwrap(), id_json);
    assert_eq!(
        std::fs::read(dir.join("sub/metrics.csv")).unwrap(),
        b"step,loss\n1,0.5\n"
    );
    assert!(!dir.join(".cairn-evicted").exists());
    assert_eq!(&store.read_resource_data(fs_id).unwrap()[..], &bytes[..]);
    assert!(store.verify_remote("r").unwrap().findings.is_empty());
}

both!(evict_without_a_remote_copy_is_refused);
fn evict_without_a_remote_copy_is_refused(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let store = store(&tmp.path().join("store"), &spec);
    let (id, bytes, fs_id, _) = populated(&store, 1000);
    let err = store.evict(&id, &EvictOptions::default()).unwrap_err();
    assert!(matches!(err, Error::EvictRefused { .. }), "{err}");
    assert_eq!(state(&store, &id), "local");
    assert_eq!(&store.read_resource_data(fs_id).unwrap()[..], &bytes[..]);
    // A file written after the push is not in the copy: refused again.
    store.push(&[id], "r", &|_| {}).unwrap();
    let run = store.get(&id).unwrap().unwrap();
    std::fs::write(run.data_dir().join("late.txt"), b"new").unwrap();
    let err = store.evict(&id, &EvictOptions::default()).unwrap_err();
    assert!(err.to_string().contains("late.txt"), "{err}");
    assert!(run.data_dir().join("late.txt").exists());
    // --force overrides.
    store
        .evict(&id, &EvictOptions::default().force(true))
        .unwrap();
    assert_eq!(state(&store, &id), "evicted");
}

both!(a_lost_object_is_caught_by_verify_and_evict_then_refuses);
fn a_lost_object_is_caught_by_verify_and_evict_then_refuses(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let store = store(&tmp.path().join("store"), &spec);
    let (id, _, fs_id, _) = populated(&store, 5000);
    store.push(&[id], "r", &|_| {}).unwrap();
    let sha = store.get_resource(fs_id).unwrap().unwrap().content_hash;
    let remote = store.remote("r").unwrap();
    let key = format!(".cairn-remote/artifacts/{}/{sha}", &sha[..2]);
    assert_eq!(remote.size(&key).unwrap(), Some(5000));
    remote.delete(&key).unwrap();

    let report = store.verify_remote("r").unwrap();
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    assert!(
        report.findings[0].problem.contains(&sha),
        "{:?}",
        report.findings
    );
    assert!(store.whereis(&id).unwrap().unwrap().copies.is_empty());
    let err = store.evict(&id, &EvictOptions::default()).unwrap_err();
    assert!(matches!(err, Error::EvictRefused { .. }), "{err}");
    assert_eq!(state(&store, &id), "local");
}

both!(reading_an_evicted_runs_artifact_fetches_it);
fn reading_an_evicted_runs_artifact_fetches_it(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let root = tmp.path().join("store");
    let store = store(&root, &spec);
    let (id, bytes, fs_id, _) = populated(&store, 200_000);
    store.push(&[id], "r", &|_| {}).unwrap();
    store.evict(&id, &EvictOptions::default()).unwrap();

    let off = Store::builder(&root)
        .remote("r", spec.clone())
        .fetch_on_demand(false)
        .ignore_artifact_env()
        .artifact_fs_root(root.join("artifacts"))
        .open()
        .unwrap();
    let err = off.read_resource_data(fs_id).unwrap_err();
    assert!(
        matches!(&err, Error::ResourceRemote { id, remote, .. } if *id == fs_id && remote == "r"),
        "{err}"
    );
    assert_eq!(state(&store, &id), "evicted");

    let mut part = vec![0u8; 100];
    let reader = store.open_resource(fs_id).unwrap();
    reader.read_at(1000, &mut part).unwrap();
    assert_eq!(part, bytes[1000..1100]);
    assert_eq!(state(&store, &id), "local");
    assert_eq!(&store.read_resource_data(fs_id).unwrap()[..], &bytes[..]);
}

both!(a_remote_only_run_is_discovered_and_fetched);
fn a_remote_only_run_is_discovered_and_fetched(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let first = store(&tmp.path().join("a"), &spec);
    let (id, bytes, fs_id, inline_id) = populated(&first, 70_000);
    first.push(&[id], "r", &|_| {}).unwrap();

    let second = store(&tmp.path().join("b"), &spec);
    assert!(second.whereis(&id).unwrap().is_none());
    let report = second.reindex_remote("r").unwrap();
    assert_eq!(report.discovered, vec![id]);
    assert_eq!(state(&second, &id), "remote");
    second.fetch(&id, Some("r"), &|_| {}).unwrap();
    assert_eq!(state(&second, &id), "local");
    assert_eq!(&second.read_resource_data(fs_id).unwrap()[..], &bytes[..]);
    assert_eq!(
        &second.read_resource_data(inline_id).unwrap()[..],
        b"inline bytes"
    );
    // The records survive an index rebuild of the second store.
    std::fs::remove_file(second.index_path()).unwrap();
    drop(second);
    let reopened = store(&tmp.path().join("b"), &spec);
    assert_eq!(&reopened.read_resource_data(fs_id).unwrap()[..], &bytes[..]);
}

#[cfg(feature = "failpoints")]
both!(a_push_killed_mid_upload_leaves_no_complete_copy_and_a_retry_completes);
#[cfg(feature = "failpoints")]
fn a_push_killed_mid_upload_leaves_no_complete_copy_and_a_retry_completes(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let root = tmp.path().join("store");
    let store = store(&root, &spec);
    // Over the multipart threshold: the S3 upload is a multipart one, killed at its 30th MiB
    // (after the first 16 MiB part went up).
    let (id, bytes, fs_id, _) = populated(&store, 40 << 20);
    // The child process reads the remote from the configuration file, credentials from the
    // environment.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
    let (name, spec_for_child) = ("c", spec.clone());
    store.add_remote(name, spec_for_child).unwrap();
    cmd.args(["--root", root.to_str().unwrap(), "push", name, &id.to_hex()])
        .env("CAIRN_FAILPOINTS", "remote.upload_chunk=abort@30")
        .env("CAIRN_ARTIFACT_BACKEND", "filesystem")
        .env("CAIRN_ARTIFACT_FS_ROOT", root.join("artifacts"))
        .env("AWS_ACCESS_KEY_ID", seaweed::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", seaweed::SECRET_KEY)
        .env("AWS_REGION", "us-east-1");
    let status = cmd.status().unwrap();
    assert!(
        !status.success() && status.code().is_none(),
        "not killed: {status}"
    );

    // In this process the same bucket and prefix are remote "r" (credentials from the builder).
    let remote = store.remote("r").unwrap();
    let manifest = format!(".cairn-remote/manifests/{id}.json");
    assert_eq!(remote.size(&manifest).unwrap(), None);
    let sha = store.get_resource(fs_id).unwrap().unwrap().content_hash;
    let key = format!(".cairn-remote/artifacts/{}/{sha}", &sha[..2]);
    assert_eq!(
        remote.size(&key).unwrap(),
        None,
        "a half upload looks complete"
    );
    assert!(store.whereis(&id).unwrap().unwrap().copies.is_empty());
    assert!(store.reindex_remote("r").unwrap().discovered.is_empty());
    let err = store.evict(&id, &EvictOptions::default()).unwrap_err();
    assert!(matches!(err, Error::EvictRefused { .. }), "{err}");

    let report = store.push(&[id], "r", &|_| {}).unwrap();
    assert_eq!(report.pushed, vec![id], "{:?}", report.failed);
    assert_eq!(remote.size(&key).unwrap(), Some(bytes.len() as u64));
    store.evict(&id, &EvictOptions::default()).unwrap();
    assert_eq!(&store.read_resource_data(fs_id).unwrap()[..], &bytes[..]);
}

#[test]
fn an_unknown_remote_is_named_in_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let err = store.push(&[], "nowhere", &|_| {}).unwrap_err();
    assert!(err.to_string().contains("nowhere"), "{err}");
}

#[test]
fn the_s3_server_honors_conditional_writes_so_the_probe_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(Kind::S3, tmp.path()) else {
        return;
    };
    let store = store(tmp.path(), &spec);
    let r = store.remote("r").unwrap();
    assert_eq!(r.put_new("k", b"1").unwrap(), cairn::remote::Put::Created);
    assert_eq!(r.put_new("k", b"2").unwrap(), cairn::remote::Put::Exists);
    let mut out = Vec::new();
    r.get("k", &mut out, &|_| {}).unwrap();
    assert_eq!(out, b"1");
    assert_eq!(r.get_range("k", 0..1).unwrap(), b"1");
}

#[test]
fn a_server_ignoring_conditional_writes_is_refused_when_added_or_opened() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(RemoteSpec::S3(honest)) = spec(Kind::S3, tmp.path()) else {
        return;
    };
    // The real server is up (and honors conditional writes) ...
    let _ = store(tmp.path(), &RemoteSpec::S3(honest.clone()));
    // ... but behind the proxy a refused conditional PUT is answered 200, as Garage 2.5.0 does.
    let proxy = lying_proxy::start(&seaweed::server().unwrap().endpoint);
    let lying = RemoteSpec::S3(honest.endpoint(&proxy));
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    let err = store.add_remote("garage", lying.clone()).unwrap_err();
    assert!(
        err.to_string().contains("ignores conditional writes"),
        "{err}"
    );
    assert!(
        store.remotes().unwrap().is_empty(),
        "nothing was configured"
    );
    assert!(
        !root
            .join(cairn::store::META_DIR)
            .join(cairn::remote::REMOTES_FILE)
            .exists()
    );
    let given = Store::builder(&root)
        .remote("garage", lying)
        .open()
        .unwrap();
    let err = given.remote("garage").unwrap_err();
    assert!(
        matches!(&err, Error::Remote { remote, reason, .. }
            if remote == "garage" && reason.contains("ignores conditional writes")),
        "{err}"
    );
    let err = given.push(&[], "garage", &|_| {}).unwrap_err();
    assert!(
        err.to_string().contains("ignores conditional writes"),
        "{err}"
    );
}

both!(a_damaged_copy_is_never_fetched_over_the_husk);
fn a_damaged_copy_is_never_fetched_over_the_husk(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let store = store(&tmp.path().join("store"), &spec);
    let (id, _, fs_id, _) = populated(&store, 4096);
    store.push(&[id], "r", &|_| {}).unwrap();
    store.evict(&id, &EvictOptions::default()).unwrap();
    // Replace the artifact's bytes on the remote with others of the same size.
    let sha = store.get_resource(fs_id).unwrap().unwrap().content_hash;
    let remote = store.remote("r").unwrap();
    let key = format!(".cairn-remote/artifacts/{}/{sha}", &sha[..2]);
    remote.delete(&key).unwrap();
    let mut other: &[u8] = &[0u8; 4096];
    remote.put_stream(&key, &mut other, 4096, &|_| {}).unwrap();

    let err = store.fetch(&id, None, &|_| {}).unwrap_err();
    assert!(err.to_string().contains(&sha), "{err}");
    assert_eq!(state(&store, &id), "evicted");
    let dir = store
        .root()
        .join(store.whereis(&id).unwrap().unwrap().location);
    assert!(dir.join(".cairn-evicted").is_file() && dir.join("id.json").is_file());
    assert!(!dir.join("sub").exists());
    let staging = store.root().join(".cairn/tmp");
    assert_eq!(
        std::fs::read_dir(staging).unwrap().count(),
        0,
        "staging left behind"
    );
}

#[cfg(feature = "failpoints")]
both!(a_fetch_killed_between_its_renames_is_completed_by_the_next);
#[cfg(feature = "failpoints")]
fn a_fetch_killed_between_its_renames_is_completed_by_the_next(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let root = tmp.path().join("store");
    let store = store(&root, &spec);
    let (id, bytes, fs_id, _) = populated(&store, 10_000);
    store.push(&[id], "r", &|_| {}).unwrap();
    store.evict(&id, &EvictOptions::default()).unwrap();
    store.add_remote("c", spec.clone()).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args([
            "--root",
            root.to_str().unwrap(),
            "fetch",
            &id.to_hex(),
            "--from",
            "c",
        ])
        .env("CAIRN_FAILPOINTS", "remote.fetch_between_renames=abort")
        .env("CAIRN_ARTIFACT_BACKEND", "filesystem")
        .env("CAIRN_ARTIFACT_FS_ROOT", root.join("artifacts"))
        .env("AWS_ACCESS_KEY_ID", seaweed::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", seaweed::SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .status()
        .unwrap();
    assert!(status.code().is_none(), "not killed: {status}");
    assert_eq!(state(&store, &id), "evicted");
    // A reindex keeps the entry (its bytes are elsewhere), and the next fetch completes.
    store.reindex(false, &|_| {}).unwrap();
    assert_eq!(state(&store, &id), "evicted");
    store.fetch(&id, Some("r"), &|_| {}).unwrap();
    assert_eq!(state(&store, &id), "local");
    assert_eq!(&store.read_resource_data(fs_id).unwrap()[..], &bytes[..]);
    assert_eq!(store.get(&id).unwrap().unwrap().identity(), id);
}

#[test]
fn the_cli_configures_remotes_pushes_evicts_and_tells_whereis() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let mirror = tmp.path().join("mirror");
    let cairn = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg("--root")
            .arg(&root)
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap();
        (out.status.code(), text)
    };
    let store = Store::open(&root).unwrap();
    let run = store
        .get_or_create(
            &Model::new("m")
                .with_config(&serde_json::json!({"a": 1}))
                .unwrap(),
        )
        .unwrap();
    std::fs::write(run.data_dir().join("out.txt"), b"result").unwrap();
    let hex = run.identity().to_hex();
    let res = Store::builder(&root)
        .ignore_artifact_env()
        .artifact_backend(cairn::artifact::Backend::Filesystem)
        .open()
        .unwrap()
        .create_resource(&run, "ckpt", b"weights")
        .unwrap();

    assert_eq!(
        cairn(&["remote", "add", "d", "--dir", mirror.to_str().unwrap()]).0,
        Some(0)
    );
    let (code, text) = cairn(&["remote", "add", "d", "--dir", "/elsewhere"]);
    assert_eq!(code, Some(2), "{text}");
    let (code, text) = cairn(&["remote", "add", "rel", "--dir", "relative/path"]);
    assert!(code == Some(2) && text.contains("not absolute"), "{text}");
    let (_, text) = cairn(&["--json", "remote", "ls"]);
    assert!(
        text.contains("\"name\":\"d\"") && text.contains("\"type\":\"dir\""),
        "{text}"
    );
    let config = std::fs::read_to_string(root.join(".cairn/remotes.json")).unwrap();
    assert!(config.contains("\"format\": 1"), "{config}");

    let (code, text) = cairn(&["evict", &hex[..8]]);
    assert!(code == Some(2) && text.contains("refused"), "{text}");
    let (code, text) = cairn(&["push", "d", "--all"]);
    assert!(code == Some(0) && text.contains("1 pushed"), "{text}");
    let (_, text) = cairn(&["--json", "whereis", &hex[..8]]);
    assert!(
        text.contains("\"state\":\"local\"") && text.contains("\"remote\":\"d\""),
        "{text}"
    );
    assert_eq!(cairn(&["evict", &hex[..8]]).0, Some(0));
    assert!(!run.data_dir().join("out.txt").exists());
    // whereis and resource ls show the backend of each resource.
    let (_, text) = cairn(&["whereis", &hex[..8]]);
    assert!(
        text.contains(&format!("resource {}\tremote\tckpt", res.id)),
        "{text}"
    );
    let (_, text) = cairn(&["--json", "whereis", &hex[..8]]);
    assert!(
        text.contains("\"backend\":\"remote\"") && text.contains("cairn-remote://d/"),
        "{text}"
    );
    let (_, text) = cairn(&["resource", "ls", &hex[..8]]);
    assert!(text.contains("remote"), "{text}");
    let (code, text) = cairn(&["verify", "--remote", "d"]);
    assert!(code == Some(0) && text.contains("1 whole"), "{text}");
    assert_eq!(cairn(&["fetch", &hex[..8]]).0, Some(0));
    assert_eq!(
        std::fs::read(run.data_dir().join("out.txt")).unwrap(),
        b"result"
    );
    let (_, text) = cairn(&["whereis", &hex[..8]]);
    assert!(
        text.contains(&format!("resource {}\tfilesystem\tckpt", res.id)),
        "{text}"
    );
    assert_eq!(cairn(&["remote", "rm", "d"]).0, Some(0));
    let (_, text) = cairn(&["whereis", &hex[..8]]);
    assert!(!text.contains("verified"), "{text}");
    assert_eq!(cairn(&["remote", "rm", "d"]).0, Some(2));
}

both!(two_pushers_of_different_large_files_never_clobber_each_other);
/// Two stores hold the same runs (same identities) with different bytes in a file above the
/// multipart threshold, and push them to one remote at the same moment. Whichever manifest
/// commits first, the objects it names hold its bytes: every copy verifies whole, and a third
/// store fetches one pusher's bytes, never a mix.
fn two_pushers_of_different_large_files_never_clobber_each_other(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let size = (16 << 20) + 4096;
    let pushers = [
        store(&tmp.path().join("a"), &spec),
        store(&tmp.path().join("b"), &spec),
    ];
    // The same run directories in both stores (id.json and model.json byte for byte), with
    // different bytes in the large file.
    let mut ids = Vec::new();
    for i in 0..3u8 {
        let model = Model::new("big")
            .with_config(&serde_json::json!({ "i": i }))
            .unwrap();
        let run = pushers[0].get_or_create(&model).unwrap();
        let other = tmp.path().join("b").join(run.location());
        std::fs::create_dir_all(&other).unwrap();
        for f in ["id.json", "model.json"] {
            std::fs::copy(run.path().join(f), other.join(f)).unwrap();
        }
        std::fs::write(run.data_dir().join("weights.bin"), vec![1 + 2 * i; size]).unwrap();
        std::fs::write(other.join("weights.bin"), vec![2 + 2 * i; size]).unwrap();
        ids.push(run.identity());
    }
    pushers[1].reindex(false, &|_| {}).unwrap();
    let barrier = std::sync::Barrier::new(pushers.len());
    let reports: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = pushers
            .iter()
            .map(|s| {
                scope.spawn(|| {
                    barrier.wait();
                    s.push(&ids, "r", &|_| {}).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // A pusher may lose a race cleanly (the dir remote creates every file create-if-absent,
    // so the second writer of a path is refused); it never replaces the other's bytes.
    for r in &reports {
        for (_, e) in &r.failed {
            assert!(e.to_string().contains("refusing to overwrite"), "{e}");
        }
    }
    let report = pushers[0].verify_remote("r").unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.good, ids.len());

    let third = store(&tmp.path().join("c"), &spec);
    assert_eq!(
        third.reindex_remote("r").unwrap().discovered.len(),
        ids.len()
    );
    for (i, id) in ids.iter().enumerate() {
        third.fetch(id, Some("r"), &|_| {}).unwrap();
        let run = third.get(id).unwrap().unwrap();
        let got = std::fs::read(run.data_dir().join("weights.bin")).unwrap();
        assert_eq!(got.len(), size);
        let fill = got[0];
        assert!(fill == 1 + i as u8 * 2 || fill == 2 + i as u8 * 2, "{fill}");
        assert!(
            got.iter().all(|&b| b == fill),
            "a mix of both pushers' bytes"
        );
    }
}

both!(opening_an_evicted_or_remote_runs_data_fetches_it);
/// `open_run` hands back a run whose data directory holds its files: an evicted run is fetched
/// first, and so is a run known only from a remote; with on-demand fetching off it is refused
/// and nothing changes. `get` returns the husk as it is.
fn opening_an_evicted_or_remote_runs_data_fetches_it(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let root = tmp.path().join("store");
    let local = store(&root, &spec);
    let (id, _, _, _) = populated(&local, 1000);
    let metrics = std::path::Path::new("sub/metrics.csv");
    local.push(&[id], "r", &|_| {}).unwrap();
    local.evict(&id, &EvictOptions::default()).unwrap();
    let husk = local.get(&id).unwrap().unwrap();
    assert!(!husk.data_dir().join(metrics).exists());

    let off = Store::builder(&root)
        .remote("r", spec.clone())
        .fetch_on_demand(false)
        .open()
        .unwrap();
    let err = off.open_run(&id).unwrap_err();
    assert!(
        matches!(err, Error::NotLocal { identity, .. } if identity == id),
        "{err}"
    );
    assert_eq!(state(&local, &id), "evicted");
    assert!(!husk.data_dir().join(metrics).exists());

    let run = local.open_run(&id).unwrap().unwrap();
    assert_eq!(run.identity(), id);
    assert_eq!(
        std::fs::read(run.data_dir().join(metrics)).unwrap(),
        b"step,loss\n1,0.5\n"
    );
    assert_eq!(state(&local, &id), "local");

    let other = store(&tmp.path().join("other"), &spec);
    other.reindex_remote("r").unwrap();
    assert_eq!(state(&other, &id), "remote");
    let run = other.open_run(&id).unwrap().unwrap();
    assert!(run.data_dir().join(metrics).exists());
    assert_eq!(state(&other, &id), "local");
    assert!(
        other
            .open_run(&Identity::from_bytes([7; 32]))
            .unwrap()
            .is_none()
    );
}

/// An evicted run pushed to a second remote is fetched from the first and pushed; a remote
/// removed with `remove_remote` is gone from the handle that had opened it.
#[test]
fn an_evicted_run_goes_to_a_second_remote_and_a_removed_remote_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let first = spec(Kind::Dir, tmp.path()).unwrap();
    let root = tmp.path().join("store");
    let store = store(&root, &first);
    let (id, bytes, fs_id, _) = populated(&store, 5000);
    store.push(&[id], "r", &|_| {}).unwrap();
    store.evict(&id, &EvictOptions::default()).unwrap();
    store
        .add_remote(
            "second",
            RemoteSpec::Dir {
                path: tmp.path().join("second"),
            },
        )
        .unwrap();
    let report = store.push(&[id], "second", &|_| {}).unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.pushed, vec![id]);
    let copies: Vec<_> = store
        .whereis(&id)
        .unwrap()
        .unwrap()
        .copies
        .into_iter()
        .map(|c| c.remote)
        .collect();
    assert_eq!(copies, ["r", "second"]);
    assert_eq!(state(&store, &id), "local");
    assert_eq!(&store.read_resource_data(fs_id).unwrap()[..], &bytes[..]);
    // Pushing again finds the committed copy, fetching nothing.
    store.evict(&id, &EvictOptions::default()).unwrap();
    assert_eq!(
        store.push(&[id], "second", &|_| {}).unwrap().already,
        vec![id]
    );
    assert_eq!(state(&store, &id), "evicted");

    assert!(store.remove_remote("second").unwrap());
    let err = store.remote("second").unwrap_err();
    assert!(matches!(err, Error::UnknownRemote { .. }), "{err}");
    let err = store.push(&[id], "second", &|_| {}).unwrap_err();
    assert!(matches!(err, Error::UnknownRemote { .. }), "{err}");
}

/// The `cairn` binary against `root`, with the environment a child needs for remote `c`.
fn cairn(root: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(["--root", root.to_str().unwrap()])
        .env("CAIRN_ARTIFACT_BACKEND", "filesystem")
        .env("CAIRN_ARTIFACT_FS_ROOT", root.join("artifacts"))
        .env("AWS_ACCESS_KEY_ID", seaweed::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", seaweed::SECRET_KEY)
        .env("AWS_REGION", "us-east-1");
    cmd
}

/// Writes remote `c` into the configuration file, for a child `cairn` (credentials come from
/// its environment).
#[cfg(feature = "failpoints")]
fn config_remote_c(root: &Path, spec: &RemoteSpec) {
    std::fs::create_dir_all(root.join(".cairn")).unwrap();
    let config = serde_json::json!({"format": 1, "remotes": {"c": spec}});
    std::fs::write(root.join(".cairn/remotes.json"), config.to_string()).unwrap();
}

/// The path a filesystem record names.
fn file_of(uri: &str) -> std::path::PathBuf {
    url::Url::parse(uri).unwrap().to_file_path().unwrap()
}

both!(evict_turns_records_remote_and_a_read_fetches_them_back);
fn evict_turns_records_remote_and_a_read_fetches_them_back(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let root = tmp.path().join("store");
    let store = store(&root, &spec);
    let (id, bytes, fs_id, inline_id) = populated(&store, 300_000);
    let before = store.get_resource(fs_id).unwrap().unwrap();
    let dir = store.get(&id).unwrap().unwrap().path().to_path_buf();
    let sidecar = dir.join(format!(".cairn-resources/{fs_id}.cbor"));
    let pushed_sidecar = std::fs::read(&sidecar).unwrap();
    store.push(&[id], "r", &|_| {}).unwrap();
    store.evict(&id, &EvictOptions::default()).unwrap();

    // The filesystem record now names the verified copy; its file is gone; inline stays.
    let rec = store.get_resource(fs_id).unwrap().unwrap();
    assert_eq!(rec.backend, Backend::Remote);
    assert_eq!(rec.remote_name(), Some("r"));
    assert_eq!(
        rec.uri,
        format!(
            "cairn-remote://r/.cairn-remote/artifacts/{}/{}",
            &before.content_hash[..2],
            before.content_hash
        )
    );
    assert_eq!(
        (rec.size_bytes, &rec.content_hash),
        (before.size_bytes, &before.content_hash)
    );
    assert!(!file_of(&before.uri).exists());
    let on_disk =
        cairn::artifact::ResourceRecord::decode(&std::fs::read(&sidecar).unwrap(), &sidecar)
            .unwrap();
    assert_eq!(on_disk, rec, "the husk keeps the remote record");
    let inline = store.get_resource(inline_id).unwrap().unwrap();
    assert_eq!(inline.backend, Backend::Inline);
    assert_eq!(
        &store.read_resource_data(inline_id).unwrap()[..],
        b"inline bytes"
    );
    assert_eq!(
        state(&store, &id),
        "evicted",
        "an inline read fetches nothing"
    );

    // verify checks remote records on the remote, without fetching.
    for contents in [false, true] {
        let report = store.verify_resources(contents).unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
    }
    assert_eq!(state(&store, &id), "evicted");
    // migrate leaves remote records alone.
    let m = store
        .migrate_artifacts(&cairn::artifact::MigrateOptions::default(), &|_, _| {})
        .unwrap();
    assert_eq!((m.migrated, m.failed.len()), (1, 0), "only the inline row");
    let migrated = store.get_resource(inline_id).unwrap().unwrap();
    assert_eq!(migrated.backend, Backend::Filesystem);
    assert_eq!(store.get_resource(fs_id).unwrap().unwrap(), rec);

    // The index lost (remote copies with it): reindex restores the remote record from the
    // husk, and a read still finds the remote through it.
    drop(store);
    std::fs::remove_file(root.join(".cairn/index.redb")).unwrap();
    let store = store_named(&root, "r", &spec);
    assert_eq!(store.get_resource(fs_id).unwrap().unwrap(), rec);
    assert!(store.whereis(&id).unwrap().unwrap().copies.is_empty());
    assert_eq!(state(&store, &id), "evicted");
    assert_eq!(&store.read_resource_data(fs_id).unwrap()[..], &bytes[..]);

    // Fetched back: local, the record as it was pushed, its file where it was.
    assert_eq!(state(&store, &id), "local");
    let back = store.get_resource(fs_id).unwrap().unwrap();
    assert_eq!(back.backend, Backend::Filesystem);
    assert_eq!(back.uri, before.uri);
    assert_eq!(std::fs::read(&sidecar).unwrap(), pushed_sidecar);
    assert!(file_of(&before.uri).is_file());
    // The record migrated while evicted is beside the run as the index has it, not as pushed.
    let beside = dir.join(format!(".cairn-resources/{inline_id}.cbor"));
    assert_eq!(std::fs::read(&beside).unwrap(), migrated.encode());
    let report = store.verify_resources(true).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    // Evicted again (the copy still covers every file and resource), then the index lost once
    // more: every record comes back from beside the run.
    store.evict(&id, &EvictOptions::default()).unwrap();
    drop(store);
    std::fs::remove_file(root.join(".cairn/index.redb")).unwrap();
    let store = store_named(&root, "r", &spec);
    assert_eq!(
        &store.read_resource_data(inline_id).unwrap()[..],
        b"inline bytes"
    );
    assert_eq!(&store.read_resource_data(fs_id).unwrap()[..], &bytes[..]);
}

both!(a_remote_record_of_a_local_run_is_fetched_alone);
fn a_remote_record_of_a_local_run_is_fetched_alone(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let root = tmp.path().join("store");
    let store = store(&root, &spec);
    let (id, bytes, fs_id, _) = populated(&store, 50_000);
    store.push(&[id], "r", &|_| {}).unwrap();
    store.evict(&id, &EvictOptions::default()).unwrap();
    // A crash after a fetch swapped the run in but before its index transaction: the run is
    // local (reindex sees the whole directory) while the index keeps the remote record.
    let husk = store.get(&id).unwrap().unwrap().path().to_path_buf();
    let rec = store.get_resource(fs_id).unwrap().unwrap();
    store.fetch(&id, None, &|_| {}).unwrap();
    let fetched = store.get_resource(fs_id).unwrap().unwrap();
    // Only the record beside the run still says remote, and the index is rebuilt from it.
    let index = store.index_path().to_path_buf();
    drop(store);
    std::fs::write(
        husk.join(format!(".cairn-resources/{fs_id}.cbor")),
        rec.encode(),
    )
    .unwrap();
    std::fs::remove_file(&index).unwrap();
    let store = store_named(&root, "r", &spec);
    assert_eq!(state(&store, &id), "local");
    assert_eq!(store.get_resource(fs_id).unwrap().unwrap(), rec);
    // On-demand off: the error names the resource and its remote, and nothing changes.
    let off = Store::builder(&root)
        .remote("r", spec.clone())
        .fetch_on_demand(false)
        .ignore_artifact_env()
        .artifact_fs_root(root.join("artifacts"))
        .open()
        .unwrap();
    let err = off.open_resource(fs_id).unwrap_err();
    assert!(err.to_string().contains(&fs_id.to_string()), "{err}");
    assert!(err.to_string().contains("\"r\""), "{err}");
    assert_eq!(off.get_resource(fs_id).unwrap().unwrap(), rec);
    drop(off);
    // On: the bytes alone come back, verified, to a new file; the record switches back.
    let reader = store.open_resource(fs_id).unwrap();
    assert_eq!(reader.read_range(10..20).unwrap(), bytes[10..20]);
    let now = store.get_resource(fs_id).unwrap().unwrap();
    assert_eq!(now.backend, Backend::Filesystem);
    assert_ne!(
        now.uri, fetched.uri,
        "a new file, never one a record may name"
    );
    let beside = husk.join(format!(".cairn-resources/{fs_id}.cbor"));
    assert_eq!(std::fs::read(&beside).unwrap(), now.encode());
    assert_eq!(&store.read_resource_data(fs_id).unwrap()[..], &bytes[..]);
}

#[cfg(feature = "failpoints")]
both!(a_crash_inside_evict_loses_nothing_and_gc_keeps_needed_bytes);
#[cfg(feature = "failpoints")]
fn a_crash_inside_evict_loses_nothing_and_gc_keeps_needed_bytes(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let root = tmp.path().join("store");
    let store = store_named(&root, "c", &spec);
    let (id, bytes, fs_id, _) = populated(&store, 120_000);
    // A second run that stays local: gc must keep its file.
    let other = store.get_or_create(&cairn::Model::new("other")).unwrap();
    let other_res = store
        .create_resource(&other, "keep", b"kept bytes")
        .unwrap();
    config_remote_c(&root, &spec);
    store.push(&[id], "c", &|_| {}).unwrap();
    let before = store.get_resource(fs_id).unwrap().unwrap();

    // Killed after the records beside the run were switched, before the index: the index
    // still names the file, which is still there.
    let status = cairn(&root)
        .args(["evict", &id.to_hex()])
        .env("CAIRN_FAILPOINTS", "remote.evict_after_records=abort")
        .status()
        .unwrap();
    assert!(status.code().is_none(), "not killed: {status}");
    assert_eq!(store.get_resource(fs_id).unwrap().unwrap(), before);
    assert!(file_of(&before.uri).is_file());
    let gc = store
        .gc_artifacts(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert!(gc.removed.is_empty(), "{:?}", gc.removed);
    assert_eq!(&store.read_resource_data(fs_id).unwrap()[..], &bytes[..]);

    // Killed after the index switched, before the file was deleted: the record names the
    // verified copy; the file is an orphan that gc removes, and the bytes come back.
    let status = cairn(&root)
        .args(["evict", &id.to_hex()])
        .env(
            "CAIRN_FAILPOINTS",
            "remote.evict_before_artifact_delete=abort",
        )
        .status()
        .unwrap();
    assert!(status.code().is_none(), "not killed: {status}");
    let rec = store.get_resource(fs_id).unwrap().unwrap();
    assert_eq!(
        (rec.backend, rec.remote_name()),
        (Backend::Remote, Some("c"))
    );
    assert_eq!(state(&store, &id), "evicted");
    assert!(file_of(&before.uri).is_file());
    let gc = store
        .gc_artifacts(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    let removed: Vec<_> = gc.removed.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(removed, [file_of(&before.uri)]);
    let other_now = store.get_resource(other_res.id).unwrap().unwrap();
    assert!(
        file_of(&other_now.uri).is_file(),
        "a needed file was collected"
    );
    // Remote gc keeps every object the copy needs.
    let rgc = store
        .gc_remote("c", &GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert!(rgc.removed.is_empty(), "{:?}", rgc.removed);
    assert_eq!(&store.read_resource_data(fs_id).unwrap()[..], &bytes[..]);
    assert_eq!(state(&store, &id), "local");
    assert_eq!(
        store.get_resource(fs_id).unwrap().unwrap().backend,
        Backend::Filesystem
    );
}

both!(remote_gc_removes_only_orphans);
fn remote_gc_removes_only_orphans(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let root = tmp.path().join("store");
    let store = store(&root, &spec);
    let (id, bytes, fs_id, _) = populated(&store, 40_000);
    store.push(&[id], "r", &|_| {}).unwrap();
    let remote = store.remote("r").unwrap();
    let before = remote.list("").unwrap();
    // What an interrupted push leaves: a run file and artifact bytes no manifest names.
    let sha = "ee".repeat(32);
    let orphans = [
        "train/aa/orphan-run/id.json".to_owned(),
        format!(".cairn-remote/artifacts/ee/{sha}"),
    ];
    for key in &orphans {
        remote
            .put_new(key, b"left by a push that never committed")
            .unwrap();
    }
    // Within the grace period nothing goes.
    let young = store.gc_remote("r", &GcOptions::default()).unwrap();
    assert!(young.removed.is_empty(), "{:?}", young.removed);
    assert_eq!(young.kept_recent, 2);
    assert_eq!(young.manifests, 1);
    // A dry run lists exactly the orphans and deletes nothing.
    let opts = GcOptions::default().grace(Duration::ZERO);
    let dry = store.gc_remote("r", &opts.clone().dry_run(true)).unwrap();
    let mut want = orphans.to_vec();
    want.sort();
    let mut got = dry.removed.clone();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(remote.list("").unwrap().len(), before.len() + 2);
    // The real run removes them and nothing a manifest references.
    let done = store.gc_remote("r", &opts).unwrap();
    assert_eq!(done.removed.len(), 2);
    let mut after = remote.list("").unwrap();
    after.sort();
    let mut before = before;
    before.sort();
    assert_eq!(after, before);
    assert!(store.verify_remote("r").unwrap().findings.is_empty());
    store.evict(&id, &EvictOptions::default()).unwrap();
    assert_eq!(&store.read_resource_data(fs_id).unwrap()[..], &bytes[..]);
    // A manifest that cannot be read stops the collection before anything is deleted.
    remote.put_new("train/bb/orphan", b"x").unwrap();
    remote
        .put_new(
            &format!(".cairn-remote/manifests/{}.json", "0".repeat(64)),
            b"{",
        )
        .unwrap();
    let err = store.gc_remote("r", &opts).unwrap_err();
    assert!(err.to_string().contains("manifests/"), "{err}");
    assert_eq!(remote.size("train/bb/orphan").unwrap(), Some(1));
    if let Kind::Dir = kind {
        // The CLI: `cairn gc --remote NAME`.
        remote
            .delete(&format!(".cairn-remote/manifests/{}.json", "0".repeat(64)))
            .unwrap();
        store.add_remote("d", spec.clone()).unwrap();
        let out = cairn(&root)
            .args(["gc", "--remote", "d", "--grace", "0"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(stdout.contains("removed d:train/bb/orphan"), "{stdout}");
        assert_eq!(remote.size("train/bb/orphan").unwrap(), None);
    }
}

#[test]
fn remote_is_never_a_backend_for_new_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Store::builder(tmp.path())
        .ignore_artifact_env()
        .artifact_backend(Backend::Remote)
        .open()
        .unwrap_err();
    assert!(err.to_string().contains("remote"), "{err}");
    let env = tmp.path().join("cairn.env");
    std::fs::write(&env, "CAIRN_ARTIFACT_BACKEND=remote\n").unwrap();
    let err = Store::builder(tmp.path())
        .ignore_artifact_env()
        .env_file(&env)
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    let store = Store::open(tmp.path()).unwrap();
    let err = store
        .migrate_artifacts(
            &cairn::artifact::MigrateOptions::default().to(Backend::Remote),
            &|_, _| {},
        )
        .unwrap_err();
    assert!(err.to_string().contains("push and evict"), "{err}");
}

both!(new_bytes_written_while_evicted_survive_the_fetch);
fn new_bytes_written_while_evicted_survive_the_fetch(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let root = tmp.path().join("store");
    let store = store(&root, &spec);
    let (id, _, fs_id, _) = populated(&store, 30_000);
    store.push(&[id], "r", &|_| {}).unwrap();
    store.evict(&id, &EvictOptions::default()).unwrap();
    let updated = store.update_resource(fs_id, b"newer bytes").unwrap();
    assert_eq!(updated.backend, Backend::Filesystem);
    // Reading fetches the run; the copy's older bytes never replace the newer ones.
    assert_eq!(
        &store.read_resource_data(fs_id).unwrap()[..],
        b"newer bytes"
    );
    assert_eq!(state(&store, &id), "local");
    assert_eq!(store.get_resource(fs_id).unwrap().unwrap(), updated);
    let dir = store.get(&id).unwrap().unwrap().path().to_path_buf();
    let beside = dir.join(format!(".cairn-resources/{fs_id}.cbor"));
    assert_eq!(std::fs::read(beside).unwrap(), updated.encode());
    assert!(store.verify_resources(true).unwrap().findings.is_empty());
}

#[cfg(feature = "failpoints")]
both!(a_crash_while_a_remote_record_is_fetched_alone_loses_nothing);
#[cfg(feature = "failpoints")]
fn a_crash_while_a_remote_record_is_fetched_alone_loses_nothing(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let root = tmp.path().join("store");
    let store = store_named(&root, "c", &spec);
    config_remote_c(&root, &spec);
    let (id, bytes, fs_id, _) = populated(&store, 80_000);
    store.push(&[id], "c", &|_| {}).unwrap();
    store.evict(&id, &EvictOptions::default()).unwrap();
    let remote_rec = store.get_resource(fs_id).unwrap().unwrap();
    store.fetch(&id, None, &|_| {}).unwrap();
    let dir = store.get(&id).unwrap().unwrap().path().to_path_buf();
    let beside = dir.join(format!(".cairn-resources/{fs_id}.cbor"));
    // A local run whose record is remote (a fetch interrupted before its index transaction,
    // then the index rebuilt).
    let index = store.index_path().to_path_buf();
    drop(store);
    std::fs::write(&beside, remote_rec.encode()).unwrap();
    std::fs::remove_file(&index).unwrap();
    let store = store_named(&root, "c", &spec);
    assert_eq!(store.get_resource(fs_id).unwrap().unwrap(), remote_rec);

    // Killed after the new record went beside the run, before the index took it.
    let out = tmp.path().join("out.bin");
    let status = cairn(&root)
        .args(["resource", "get", &fs_id.to_string(), "-o"])
        .arg(&out)
        .env("CAIRN_FAILPOINTS", "artifact.after_sidecar=abort")
        .status()
        .unwrap();
    assert!(status.code().is_none(), "not killed: {status}");
    assert_eq!(store.get_resource(fs_id).unwrap().unwrap(), remote_rec);
    let written =
        cairn::artifact::ResourceRecord::decode(&std::fs::read(&beside).unwrap(), &beside).unwrap();
    assert_eq!(written.backend, Backend::Filesystem);
    assert_eq!(
        std::fs::read(file_of(&written.uri)).unwrap(),
        bytes,
        "the record beside the run names complete bytes"
    );
    // The next read completes the switch; gc then removes only the orphan of the crash.
    assert_eq!(&store.read_resource_data(fs_id).unwrap()[..], &bytes[..]);
    let now = store.get_resource(fs_id).unwrap().unwrap();
    assert_eq!(now.backend, Backend::Filesystem);
    let gc = store
        .gc_artifacts(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert!(
        gc.removed.iter().all(|(p, _)| *p != file_of(&now.uri)),
        "{:?}",
        gc.removed
    );
    assert_eq!(&store.read_resource_data(fs_id).unwrap()[..], &bytes[..]);
    let v = store.verify_resources(true).unwrap();
    assert!(v.findings.iter().all(|f| f.id != fs_id), "{:?}", v.findings);
}

/// `verify --contents` checks an evicted run's resources where their bytes are (inline ones in
/// the index, remote ones on the remote) and never fetches the run back.
fn verify_contents_leaves_an_evicted_run_evicted(kind: Kind) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(spec) = spec(kind, tmp.path()) else {
        return;
    };
    let store = store(&tmp.path().join("store"), &spec);
    let (id, _, fs_id, inline_id) = populated(&store, 300_000);
    store.push(&[id], "r", &|_| {}).unwrap();
    store.evict(&id, &EvictOptions::default()).unwrap();
    let report = store.verify_resources(true).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.resources, 2);
    assert_eq!(state(&store, &id), "evicted", "verify fetched the run");
    assert_eq!(
        store.get_resource(fs_id).unwrap().unwrap().backend,
        Backend::Remote
    );
    assert_eq!(
        store.get_resource(inline_id).unwrap().unwrap().backend,
        Backend::Inline
    );
}
both!(verify_contents_leaves_an_evicted_run_evicted);
