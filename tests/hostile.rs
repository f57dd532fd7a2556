//! Hostile stores (issue 7 part 4): a run tree received from someone else, holding symlinks out of
//! the root, `..` in locations and uris, `file://` uris outside the artifact root, huge and deeply
//! nested JSON, non-UTF-8 names and headers claiming another run's identity. Every case keeps
//! cairn inside its roots (a canary directory outside must stay unchanged and its secret must
//! never appear in any output), is reported naming the path, and leaves the good runs working.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use cairn::artifact::{Backend, GcOptions, ResourceRecord, SIDECAR_DIR};
use cairn::remote::RemoteSpec;
use cairn::repair::RepairOptions;
use cairn::schemas::Schemas;
use cairn::verify::VerifyOptions;
use cairn::{Error, Identity, Model, Run, Store};
use serde_json::json;
use sha2::Digest;

/// Appears only outside the root: in the canary file, a foreign run's config and artifact.
const SECRET: &str = "SECRET-CANARY-5b9e0c";

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn open(root: &Path) -> Store {
    Store::builder(root)
        .ignore_artifact_env()
        .artifact_backend(Backend::Filesystem)
        .open()
        .unwrap()
}

fn model(i: u64) -> Model {
    Model::new("train")
        .with_config(&json!({"seed": i}))
        .unwrap()
}

/// Every regular file under `dir` (links not followed) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ty = e.file_type().unwrap();
            if ty.is_dir() {
                stack.push(e.path());
            } else if ty.is_file() {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

struct Good {
    run: Run,
    resource: ResourceRecord,
    bytes: Vec<u8>,
}

/// A store with good runs and resources, and `outside/`: the canary, a foreign store whose run
/// and artifact carry the secret, and a directory of uuid-named files.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    foreign_run: PathBuf,
    foreign_record: PathBuf,
    foreign_artifact: PathBuf,
    good: Vec<Good>,
    before: BTreeMap<PathBuf, Vec<u8>>,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let root = base.join("store");
        let outside = base.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("canary.txt"), SECRET).unwrap();

        let foreign = open(&outside.join("foreign"));
        let frun = foreign
            .get_or_create(
                &Model::new("train")
                    .with_config(&json!({"secret": SECRET}))
                    .unwrap(),
            )
            .unwrap();
        let frec = foreign
            .create_resource(&frun, SECRET, SECRET.as_bytes())
            .unwrap();
        let foreign_record = frun
            .path()
            .join(SIDECAR_DIR)
            .join(format!("{}.cbor", frec.id));
        let foreign_artifact = url::Url::parse(&frec.uri).unwrap().to_file_path().unwrap();
        drop(foreign);

        let store = open(&root);
        let good = (0..3)
            .map(|i| {
                let run = store.get_or_create(&model(i)).unwrap();
                let bytes = format!("good bytes {i}").into_bytes();
                let resource = store.create_resource(&run, "r", &bytes).unwrap();
                Good {
                    run,
                    resource,
                    bytes,
                }
            })
            .collect();
        let mut f = Fixture {
            _tmp: tmp,
            root,
            foreign_run: frun.path().to_path_buf(),
            foreign_record,
            foreign_artifact,
            outside,
            good,
            before: BTreeMap::new(),
        };
        f.before = snapshot(&f.outside);
        f
    }

    fn fs_root(&self) -> PathBuf {
        self.root.join(".cairn/artifacts")
    }

    /// A run made by the store, to be damaged by the caller.
    fn run(&self, store: &Store, i: u64) -> Run {
        store.get_or_create(&model(100 + i)).unwrap()
    }

    /// Nothing outside the root changed.
    fn check_outside(&self) {
        assert_eq!(
            snapshot(&self.outside),
            self.before,
            "outside the root changed"
        );
    }

    /// Reindex, find and repair complete, and the good runs are found with their resources read
    /// back verified.
    fn check_good(&self, store: &Store) {
        store.reindex(false, &|_| {}).unwrap();
        store
            .repair(&Schemas::new(), RepairOptions::default())
            .unwrap();
        let found = store.find(&cairn::query::Query::new()).unwrap();
        for g in &self.good {
            assert!(found.iter().any(|r| r.identity == g.run.identity()));
        }
        for g in &self.good {
            let run = store.get(&g.run.identity()).unwrap().unwrap();
            assert_eq!(run.path(), g.run.path());
            let data = store.read_resource_data(g.resource.id).unwrap();
            assert_eq!(&data[..], &g.bytes[..]);
            let listed = store.list_resources(&g.run.identity()).unwrap();
            assert_eq!(listed.len(), 1);
        }
    }
}

/// `err` is `UnsafePath` or `Format`/`TooLarge` naming a path that ends with `tail`.
fn names(err: &Error, tail: &str) -> bool {
    let path = match err {
        Error::UnsafePath { path, .. } | Error::Format { path, .. } => path,
        Error::TooLarge { path, .. } => path,
        Error::Io { path, .. } => path,
        _ => return false,
    };
    path.to_string_lossy().ends_with(tail)
}

fn cairn(root: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("CAIRN_ARTIFACT_BACKEND")
        .env_remove("CAIRN_ARTIFACT_FS_ROOT")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains(SECRET),
        "the secret leaked into output: {text}"
    );
    (out.status.success(), text)
}

#[test]
fn linked_run_directories_and_headers_are_never_followed() {
    let f = Fixture::new();
    let evil = f.root.join("evil");
    std::fs::create_dir_all(evil.join("idlink")).unwrap();
    symlink(&f.foreign_run, evil.join("linked-run")).unwrap();
    symlink(f.foreign_run.join("id.json"), evil.join("idlink/id.json")).unwrap();
    let store = open(&f.root);
    let report = store.reindex(false, &|_| {}).unwrap();
    assert_eq!(report.runs, 3, "{report}");
    assert!(
        report
            .errors
            .iter()
            .any(|e| names(e, "evil/idlink/id.json")),
        "{:?}",
        report.errors
    );
    let (_, text) = cairn(&f.root, &["ls"]);
    assert_eq!(text.lines().count(), 3, "{text}");
    let (_, text) = cairn(&f.root, &["verify"]);
    assert!(text.contains("evil/idlink/id.json"), "{text}");
    f.check_good(&store);

    // A run directory replaced by a link after it was indexed is refused on load.
    let g = &f.good[0];
    let moved = f.root.join("moved-away");
    std::fs::rename(g.run.path(), &moved).unwrap();
    symlink(&f.foreign_run, g.run.path()).unwrap();
    let err = store.get(&g.run.identity()).unwrap_err();
    assert!(names(&err, &g.run.location().to_string_lossy()), "{err}");
    std::fs::remove_file(g.run.path()).unwrap();
    // A link in a parent of the location too.
    let parent = g.run.path().parent().unwrap().to_path_buf();
    let real_parent = f.root.join("real-parent");
    std::fs::rename(&parent, &real_parent).unwrap();
    std::fs::rename(&moved, real_parent.join(g.run.path().file_name().unwrap())).unwrap();
    symlink(&real_parent, &parent).unwrap();
    let err = store.get(&g.run.identity()).unwrap_err();
    assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
    f.check_outside();
}

#[test]
fn a_linked_model_json_is_refused_and_fifos_do_not_hang() {
    let f = Fixture::new();
    let store = open(&f.root);
    let h = f.run(&store, 0);
    std::fs::remove_file(h.path().join("model.json")).unwrap();
    symlink(f.outside.join("canary.txt"), h.path().join("model.json")).unwrap();
    let err = h.model().unwrap_err();
    assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
    assert!(names(&err, "model.json"), "{err}");

    let fifo = f.run(&store, 1);
    std::fs::remove_file(fifo.path().join("model.json")).unwrap();
    let status = Command::new("mkfifo")
        .arg(fifo.path().join("model.json"))
        .status()
        .unwrap();
    assert!(status.success());
    let err = fifo.model().unwrap_err();
    assert!(names(&err, "model.json"), "{err}");

    let (ok, text) = cairn(&f.root, &["show", &h.identity().to_hex()]);
    assert!(!ok && text.contains("model.json"), "{text}");
    let report = store
        .verify(&Schemas::new(), &VerifyOptions::default(), &|_| {})
        .unwrap();
    assert!(!report.is_clean());
    f.check_good(&store);
    f.check_outside();
}

#[test]
fn linked_resource_records_and_record_directories_are_refused() {
    let f = Fixture::new();
    let store = open(&f.root);
    // A record file that is a link to the foreign store's record.
    let a = f.run(&store, 0);
    std::fs::create_dir_all(a.path().join(SIDECAR_DIR)).unwrap();
    let link = a
        .path()
        .join(SIDECAR_DIR)
        .join(f.foreign_record.file_name().unwrap());
    symlink(&f.foreign_record, &link).unwrap();
    // A record directory that is a link to the foreign run's.
    let b = f.run(&store, 1);
    symlink(
        f.foreign_record.parent().unwrap(),
        b.path().join(SIDECAR_DIR),
    )
    .unwrap();

    std::fs::remove_file(store.index_path()).unwrap();
    let store = open(&f.root);
    let report = store.reindex(false, &|_| {}).unwrap();
    assert_eq!(report.runs, 5, "{report}");
    assert!(
        store.list_resources(&a.identity()).unwrap().is_empty()
            && store.list_resources(&b.identity()).unwrap().is_empty()
    );
    let (_, text) = cairn(&f.root, &["reindex"]);
    assert!(text.contains(SIDECAR_DIR), "{text}");

    // Writing a resource to the run with the linked record directory never writes through it.
    let err = store.create_resource(&b, "x", b"bytes").unwrap_err();
    assert!(names(&err, SIDECAR_DIR), "{err}");
    let (_, text) = cairn(&f.root, &["resource", "ls", &b.identity().to_hex()]);
    assert!(!text.contains(SECRET));
    f.check_good(&store);
    let gc = store
        .gc_artifacts(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert!(gc.removed.is_empty(), "{gc}");
    f.check_good(&store);
    f.check_outside();
}

/// A record (beside a run, so reindex restores it) pointing at `uri`, claiming `bytes`.
fn plant_record(run: &Run, template: &ResourceRecord, uri: String, bytes: &[u8]) -> ResourceRecord {
    let mut rec = template.clone();
    rec.id = uuid::Uuid::new_v4();
    rec.run = run.identity();
    rec.uri = uri;
    rec.size_bytes = bytes.len() as u64;
    rec.content_hash = sha256_hex(bytes);
    let dir = run.path().join(SIDECAR_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{}.cbor", rec.id)), rec.encode()).unwrap();
    rec
}

#[test]
fn uris_outside_the_artifact_root_and_linked_shards_are_refused() {
    let f = Fixture::new();
    let store = open(&f.root);
    let template = f.good[0].resource.clone();
    let run = f.run(&store, 0);
    let fs_root = f.fs_root();
    let root_url = url::Url::from_directory_path(&fs_root).unwrap();

    // `..` in a uri, and a uri straight at the foreign artifact (exact bytes and hash).
    let dotdot = plant_record(
        &run,
        &template,
        format!("{root_url}ab/../../../../outside/canary.txt"),
        SECRET.as_bytes(),
    );
    let foreign = plant_record(
        &run,
        &template,
        url::Url::from_file_path(&f.foreign_artifact)
            .unwrap()
            .into(),
        SECRET.as_bytes(),
    );
    // A shard directory that links out of the root, holding a file the record names exactly.
    let shard_target = f.foreign_artifact.parent().unwrap();
    let fid: uuid::Uuid = f
        .foreign_artifact
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let shard = fs_root.join(&fid.to_string()[..2]);
    if !shard.exists() {
        symlink(shard_target, &shard).unwrap();
    }
    let linked = plant_record(
        &run,
        &template,
        url::Url::from_file_path(shard.join(fid.to_string()))
            .unwrap()
            .into(),
        SECRET.as_bytes(),
    );
    if !std::fs::symlink_metadata(&shard).unwrap().is_symlink() {
        // A good resource already uses that shard: link the file itself instead.
        symlink(&f.foreign_artifact, shard.join(fid.to_string())).unwrap();
    }

    std::fs::remove_file(store.index_path()).unwrap();
    let store = open(&f.root);
    store.reindex(false, &|_| {}).unwrap();
    for rec in [&dotdot, &foreign] {
        let err = store.read_resource_data(rec.id).unwrap_err();
        assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
        let (ok, text) = cairn(&f.root, &["resource", "get", &rec.id.to_string()]);
        assert!(!ok && text.contains("outside the artifact root"), "{text}");
    }
    let err = store.read_resource_data(linked.id).unwrap_err();
    assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
    let (ok, text) = cairn(&f.root, &["resource", "get", &linked.id.to_string()]);
    assert!(!ok && text.contains("link"), "{text}");
    let (ok, text) = cairn(&f.root, &["verify", "--contents"]);
    assert!(!ok, "{text}");
    let gc = store
        .gc_artifacts(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert!(gc.removed.is_empty(), "{gc}");
    let (_, text) = cairn(&f.root, &["gc", "--grace", "0"]);
    assert!(!text.contains("outside"), "{text}");
    f.check_good(&store);
    f.check_outside();
}

#[test]
fn gc_and_new_resources_never_go_through_linked_shards() {
    let f = Fixture::new();
    let store = open(&f.root);
    // Old uuid-named files in a directory outside, which every missing shard links to.
    let loot = f.outside.join("loot");
    std::fs::create_dir_all(&loot).unwrap();
    for i in 0..4 {
        let p = loot.join(uuid::Uuid::new_v4().to_string());
        std::fs::write(&p, format!("{SECRET} {i}")).unwrap();
        let old = SystemTime::now() - Duration::from_secs(86400 * 30);
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let before = snapshot(&f.outside);
    for i in 0..=255u8 {
        let shard = f.fs_root().join(hex::encode([i]));
        if !shard.exists() {
            symlink(&loot, &shard).unwrap();
        }
    }
    let gc = store
        .gc_artifacts(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert!(gc.removed.is_empty(), "{gc}");
    let (_, text) = cairn(&f.root, &["gc", "--grace", "0"]);
    assert!(!text.contains("loot"), "{text}");
    let run = f.run(&store, 0);
    let mut refused = 0;
    for _ in 0..8 {
        match store.create_resource(&run, "n", b"new bytes") {
            Ok(rec) => assert_eq!(&store.read_resource_data(rec.id).unwrap()[..], b"new bytes"),
            Err(err) => {
                assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
                refused += 1;
            }
        }
    }
    assert!(
        refused > 0,
        "the shards link out for all but three prefixes"
    );
    assert_eq!(snapshot(&f.outside), before, "outside the root changed");
    f.check_good(&store);
}

#[test]
fn locations_with_dotdot_in_the_index_are_refused() {
    let f = Fixture::new();
    let store = open(&f.root);
    let header = cairn::IdHeader::read(&f.foreign_run).unwrap();
    let rec = cairn::index::RunRecord::from_header(
        &header,
        format!(
            "../outside/foreign/{}",
            f.foreign_run
                .strip_prefix(f.outside.join("foreign"))
                .unwrap()
                .display()
        ),
    )
    .unwrap();
    drop(store);
    {
        let db = redb::Database::open(f.root.join(".cairn/index.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<[u8; 32], &[u8]> = redb::TableDefinition::new("runs");
            let mut t = txn.open_table(def).unwrap();
            t.insert(*header.identity.as_bytes(), rec.encode().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = open(&f.root);
    let err = store.get(&header.identity).unwrap_err();
    assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
    let (ok, text) = cairn(&f.root, &["show", &header.identity.to_hex()]);
    assert!(!ok && text.contains(".."), "{text}");
    let (_, text) = cairn(&f.root, &["verify"]);
    assert!(!text.contains(SECRET), "{text}");
    let repaired = store
        .repair(&Schemas::new(), RepairOptions::default())
        .unwrap();
    let _ = repaired;
    assert!(store.get(&header.identity).unwrap().is_none());
    f.check_good(&store);
    f.check_outside();
}

#[test]
fn huge_and_deeply_nested_json_is_refused_with_its_size_or_depth() {
    let f = Fixture::new();
    let store = open(&f.root);
    // 100 MB model.json (sparse) in a run, and 100 MB id.json in another directory.
    let big = f.run(&store, 0);
    std::fs::File::options()
        .write(true)
        .open(big.path().join("model.json"))
        .unwrap()
        .set_len(100_000_000)
        .unwrap();
    let err = big.model().unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { limit, .. } if limit == cairn::run::MODEL_FILE_LIMIT),
        "{err}"
    );
    let hugeid = f.root.join("hostile/huge-id");
    std::fs::create_dir_all(&hugeid).unwrap();
    std::fs::File::create(hugeid.join("id.json"))
        .unwrap()
        .set_len(100_000_000)
        .unwrap();
    // id.json and model.json nested 100,000 levels deep (no stack overflow, a clear error).
    let deep = f.root.join("hostile/deep");
    std::fs::create_dir_all(&deep).unwrap();
    let nested = "[".repeat(100_000) + &"]".repeat(100_000);
    let text = format!(
        r#"{{"format": 1, "identity": "{}", "module": "m", "config": {nested}, "predicate": {{}}, "created_at": "2026-01-01T00:00:00Z"}}"#,
        "ab".repeat(32)
    );
    std::fs::write(deep.join("id.json"), &text).unwrap();
    let deepmodel = f.run(&store, 1);
    std::fs::write(
        deepmodel.path().join("model.json"),
        text.replace("identity", "x"),
    )
    .unwrap();
    let err = deepmodel.model().unwrap_err();
    assert!(err.to_string().contains("model.json"), "{err}");

    let report = store.reindex(false, &|_| {}).unwrap();
    assert_eq!(report.runs, 5, "{report}");
    assert!(
        report
            .errors
            .iter()
            .any(|e| matches!(e, Error::TooLarge { .. }) && names(e, "huge-id/id.json"))
    );
    assert!(
        report
            .errors
            .iter()
            .any(|e| names(e, "deep/id.json") && e.to_string().contains("deep")),
        "{:?}",
        report.errors
    );
    let report = store
        .verify(&Schemas::new(), &VerifyOptions::default(), &|_| {})
        .unwrap();
    assert!(!report.is_clean());
    let (ok, text) = cairn(&f.root, &["verify"]);
    assert!(!ok && text.contains("model.json"), "{text}");
    store
        .repair(&Schemas::new(), RepairOptions::default())
        .unwrap();
    f.check_good(&store);
    f.check_outside();
}

#[test]
fn non_utf8_names_are_reported_and_skipped() {
    let f = Fixture::new();
    let store = open(&f.root);
    let bad = f.root.join(OsStr::from_bytes(b"bad\xffname"));
    std::fs::create_dir_all(bad.join("run")).unwrap();
    std::fs::copy(
        f.good[0].run.path().join("id.json"),
        bad.join("run/id.json"),
    )
    .unwrap();
    let run = f.run(&store, 0);
    std::fs::write(
        run.path()
            .join(SIDECAR_DIR)
            .join(OsStr::from_bytes(b"\xfe.cbor")),
        b"junk",
    )
    .unwrap_or_else(|_| {
        std::fs::create_dir_all(run.path().join(SIDECAR_DIR)).unwrap();
        std::fs::write(
            run.path()
                .join(SIDECAR_DIR)
                .join(OsStr::from_bytes(b"\xfe.cbor")),
            b"junk",
        )
        .unwrap()
    });
    std::fs::write(f.fs_root().join(OsStr::from_bytes(b"\xfd")), b"x").unwrap();
    let report = store.reindex(false, &|_| {}).unwrap();
    assert_eq!(report.runs, 4, "{report}");
    assert!(
        report
            .errors
            .iter()
            .any(|e| matches!(e, Error::UnsafePath { reason, .. } if reason.contains("UTF-8")))
    );
    let (_, text) = cairn(&f.root, &["reindex"]);
    assert!(
        text.contains("bad\\xFFname") || text.contains("bad\u{FFFD}name"),
        "{text}"
    );
    let gc = store
        .gc_artifacts(&GcOptions::default().grace(Duration::ZERO))
        .unwrap();
    assert!(gc.removed.is_empty(), "{gc}");
    f.check_good(&store);
    f.check_outside();
}

#[test]
fn a_copied_or_forged_header_never_displaces_the_real_run() {
    let f = Fixture::new();
    let store = open(&f.root);
    let g = &f.good[1];
    // A copy of the real directory elsewhere, and a forged header: the real identity over the
    // foreign config.
    let copy = f.root.join("a-copy/run");
    std::fs::create_dir_all(&copy).unwrap();
    for name in ["id.json", "model.json"] {
        std::fs::copy(g.run.path().join(name), copy.join(name)).unwrap();
    }
    let forged = f.root.join("0-forged/run");
    std::fs::create_dir_all(&forged).unwrap();
    let mut header = cairn::IdHeader::read(&f.foreign_run).unwrap();
    header.identity = g.run.identity();
    std::fs::write(forged.join("id.json"), header.to_json_bytes()).unwrap();
    std::fs::copy(f.foreign_run.join("model.json"), forged.join("model.json")).unwrap();

    let report = store.reindex(false, &|_| {}).unwrap();
    assert_eq!(report.duplicates.len(), 2, "{report}");
    assert!(
        report
            .duplicates
            .iter()
            .all(|d| d.kept == g.run.location().to_str().unwrap())
    );
    let report = store
        .verify(&Schemas::new(), &VerifyOptions::default(), &|_| {})
        .unwrap();
    assert!(!report.is_clean());
    let (ok, text) = cairn(&f.root, &["verify"]);
    assert!(
        !ok && text.contains("0-forged/run") && text.contains("a-copy/run"),
        "{text}"
    );
    assert_eq!(
        store.get(&g.run.identity()).unwrap().unwrap().path(),
        g.run.path()
    );
    f.check_good(&store);
    f.check_outside();
}

#[test]
fn fetch_from_a_hostile_dir_remote_stays_inside_both_roots() {
    let f = Fixture::new();
    let store = open(&f.root);
    let mirror = f.root.parent().unwrap().join("mirror");
    store
        .add_remote(
            "m",
            RemoteSpec::Dir {
                path: mirror.clone(),
            },
        )
        .unwrap();
    let big = f.run(&store, 0);
    let mut ids: Vec<Identity> = f.good.iter().map(|g| g.run.identity()).collect();
    ids.push(big.identity());
    let pushed = store.push(&ids, "m", &|_| {}).unwrap();
    assert!(pushed.failed.is_empty(), "{pushed:?}");

    for id in &ids {
        store.evict(id, &Default::default()).unwrap();
    }
    // Run 0: its model.json on the remote becomes a link to the canary, and the manifest claims
    // the canary's size and hash.
    let manifest_of = |id: &Identity| mirror.join(format!(".cairn-remote/manifests/{id}.json"));
    let edit = |id: &Identity, f: &dyn Fn(&mut serde_json::Value)| {
        let p = manifest_of(id);
        let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        f(&mut m);
        std::fs::write(&p, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    };
    let loc0 = f.good[0].run.location().to_str().unwrap().to_owned();
    let remote_model = mirror.join(&loc0).join("model.json");
    std::fs::remove_file(&remote_model).unwrap();
    symlink(f.outside.join("canary.txt"), &remote_model).unwrap();
    edit(&ids[0], &|m| {
        for file in m["files"].as_array_mut().unwrap() {
            if file["path"] == "model.json" {
                file["size"] = json!(SECRET.len());
                file["sha256"] = json!(sha256_hex(SECRET.as_bytes()));
            }
        }
    });
    // Run 3: a 100 MB manifest (sparse), refused at the limit without reading it all.
    std::fs::File::options()
        .write(true)
        .open(manifest_of(&ids[3]))
        .unwrap()
        .set_len(100_000_000)
        .unwrap();
    // Run 1: `..` in the manifest's location; run 2: `..` in a file path.
    edit(&ids[1], &|m| m["location"] = json!("../outside"));
    edit(&ids[2], &|m| {
        m["files"][0]["path"] = json!("../../outside/canary.txt")
    });

    for (i, id) in ids.iter().enumerate() {
        let err = store.fetch(id, Some("m"), &|_| {}).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains(SECRET), "{text}");
        match i {
            0 => assert!(text.contains("model.json"), "{text}"),
            3 => assert!(
                matches!(err, Error::TooLarge { limit, .. } if limit == 64 << 20)
                    && text.contains(&format!("m:.cairn-remote/manifests/{id}.json")),
                "{text}"
            ),
            _ => assert!(text.contains("manifest") && text.contains(".."), "{text}"),
        }
    }
    let (ok, text) = cairn(&f.root, &["fetch", &ids[0].to_hex(), "--from", "m"]);
    assert!(!ok && text.contains("model.json"), "{text}");
    let husk = std::fs::read_to_string(f.good[0].run.path().join("model.json")).unwrap_or_default();
    assert!(!husk.contains(SECRET), "{husk}");
    let (_, text) = cairn(&f.root, &["verify", "--remote", "m"]);
    assert!(text.contains("model.json"), "{text}");
    f.check_outside();
}
