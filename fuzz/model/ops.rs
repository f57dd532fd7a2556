//! The model of the `model_ops` fuzz target (also replayed by `tests/model_ops.rs`). The input
//! is a sequence of store operations (get_or_create, resource add, update and delete, push + evict and fetch through a `dir` remote, reindex, migrate to files, gc,
//! deleting the index), applied to a real store in a temporary directory and to a small
//! in-memory reference. After every step the store must agree with the reference: the runs
//! indexed (identity and availability), each run's resources, and every readable resource's bytes.
//!
//! Operations the reference cannot call exactly (changing the resources of an evicted run,
//! evicting a run whose inline bytes are gone) may fail, but a failure must change nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cairn::artifact::{Backend, GcOptions, MigrateOptions};
use cairn::index::Availability;
use cairn::query::Query;
use cairn::remote::{EvictOptions, RemoteSpec};
use cairn::{Identity, Model, Store};
use uuid::Uuid;

/// At most this many operations per input (each does several fsyncs).
const MAX_OPS: usize = 24;
/// Distinct models the operations choose from.
const MODELS: u8 = 4;

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    /// Up to 64 bytes of resource content (a length byte, then the bytes, short at the end).
    fn bytes(&mut self) -> Vec<u8> {
        let n = (self.byte().unwrap_or(0) % 65) as usize;
        let n = n.min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b.to_vec()
    }
}

#[derive(Debug)]
enum Op {
    Create(u8),
    Add(u8, Vec<u8>),
    Update(u8, Vec<u8>),
    Delete(u8),
    Evict(u8),
    Fetch(u8),
    Reindex(bool),
    Migrate,
    Gc,
    DropIndex,
}

fn decode(data: &[u8]) -> Vec<Op> {
    let mut c = Cursor(data);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS {
        let Some(b) = c.byte() else { break };
        let arg = c.byte().unwrap_or(0);
        ops.push(match b % 10 {
            0 => Op::Create(arg % MODELS),
            1 => Op::Add(arg % MODELS, c.bytes()),
            2 => Op::Update(arg, c.bytes()),
            3 => Op::Delete(arg),
            4 => Op::Evict(arg % MODELS),
            5 => Op::Fetch(arg % MODELS),
            6 => Op::Reindex(arg % 2 == 1),
            7 => Op::Migrate,
            8 => Op::Gc,
            _ => Op::DropIndex,
        });
    }
    ops
}

/// What the store must hold.
#[derive(Default)]
struct Reference {
    /// Model number → identity and whether it is evicted.
    runs: BTreeMap<u8, (Identity, bool)>,
    /// Resource → (model number, bytes, `None` once its inline bytes are gone with the index).
    resources: BTreeMap<Uuid, (u8, Option<Vec<u8>>)>,
    /// Model number → its resources when its copy was committed on the remote.
    pushed: BTreeMap<u8, BTreeMap<Uuid, Option<Vec<u8>>>>,
}

impl Reference {
    fn nth_resource(&self, n: u8) -> Option<Uuid> {
        if self.resources.is_empty() {
            return None;
        }
        self.resources
            .keys()
            .nth(n as usize % self.resources.len())
            .copied()
    }
    fn of_run(&self, m: u8) -> BTreeMap<Uuid, Option<Vec<u8>>> {
        self.resources
            .iter()
            .filter(|(_, (rm, _))| *rm == m)
            .map(|(id, (_, b))| (*id, b.clone()))
            .collect()
    }
    /// Changing a resource of an evicted run fetches the run first.
    fn fetched(&mut self, m: u8) {
        if let Some(run) = self.runs.get_mut(&m) {
            run.1 = false;
        }
    }
    fn evicted(&self, m: u8) -> bool {
        self.runs.get(&m).is_some_and(|r| r.1)
    }
}

fn model(m: u8) -> Model {
    Model::new("fuzz")
        .with_config(&serde_json::json!({"m": m}))
        .unwrap()
}

fn open(root: &Path) -> Store {
    Store::builder(root)
        .ignore_artifact_env()
        .artifact_backend(Backend::Inline)
        .open()
        .expect("open the store")
}

fn scratch() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let n = N.fetch_add(1, Ordering::Relaxed);
    if n == 0 {
        // An input cut short (`-max_total_time`, a crash) leaves its directory: remove those of
        // processes that are gone.
        for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix("cairn-model-ops-")
                .and_then(|r| r.split('-').next());
            if pid.is_some_and(|p| !Path::new("/proc").join(p).exists()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = base.join(format!("cairn-model-ops-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The store agrees with the reference.
fn check(store: &Store, r: &Reference, step: usize, op: &Op) {
    let ctx = || format!("after step {step} ({op:?})");
    let indexed: BTreeMap<Identity, Availability> = store
        .find(&Query::new())
        .unwrap()
        .into_iter()
        .map(|rec| (rec.identity, rec.state))
        .collect();
    let expected: BTreeMap<Identity, Availability> = r
        .runs
        .values()
        .map(|&(id, evicted)| {
            let state = if evicted {
                Availability::Evicted
            } else {
                Availability::Local
            };
            (id, state)
        })
        .collect();
    assert_eq!(indexed, expected, "runs {}", ctx());
    for (&m, &(id, _)) in &r.runs {
        let listed: BTreeSet<Uuid> = store
            .list_resources(&id)
            .unwrap()
            .iter()
            .map(|rec| rec.id)
            .collect();
        let want: BTreeSet<Uuid> = r
            .resources
            .iter()
            .filter(|(_, (rm, _))| *rm == m)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(listed, want, "resources of model {m} {}", ctx());
    }
    assert_eq!(
        store.all_resources().unwrap().len(),
        r.resources.len(),
        "{}",
        ctx()
    );
    for (id, (m, bytes)) in &r.resources {
        let rec = store
            .get_resource(*id)
            .unwrap()
            .expect("a reference resource");
        assert_eq!(rec.run, r.runs[m].0, "{}", ctx());
        if r.evicted(*m) {
            continue;
        }
        match bytes {
            Some(b) => {
                assert_eq!(rec.size_bytes, b.len() as u64, "{}", ctx());
                let data = store
                    .read_resource_data(*id)
                    .unwrap_or_else(|e| panic!("read {id} {}: {e}", ctx()));
                assert_eq!(&data[..], &b[..], "bytes of {id} {}", ctx());
            }
            None => assert!(store.read_resource_data(*id).is_err(), "{}", ctx()),
        }
    }
}

fn run_ops(dir: &Path, ops: &[Op]) {
    let root = dir.join("store");
    let mut store = open(&root);
    store
        .add_remote(
            "m",
            RemoteSpec::Dir {
                path: dir.join("mirror"),
            },
        )
        .unwrap();
    let mut r = Reference::default();
    let create = |store: &Store, r: &mut Reference, m: u8| {
        let run = store.get_or_create(&model(m)).unwrap();
        let (id, _) = *r.runs.entry(m).or_insert((run.identity(), false));
        assert_eq!(run.identity(), id, "one identity per model");
        run
    };
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Create(m) => {
                create(&store, &mut r, *m);
            }
            Op::Add(m, bytes) => {
                let run = create(&store, &mut r, *m);
                match store.create_resource(&run, "r", bytes) {
                    Ok(rec) => {
                        r.resources.insert(rec.id, (*m, Some(bytes.clone())));
                    }
                    Err(e) => assert!(r.evicted(*m), "add to a local run failed: {e}"),
                }
            }
            Op::Update(n, bytes) => {
                let Some(id) = r.nth_resource(*n) else {
                    continue;
                };
                let m = r.resources[&id].0;
                match store.update_resource(id, bytes) {
                    Ok(_) => {
                        r.resources.insert(id, (m, Some(bytes.clone())));
                        r.fetched(m);
                    }
                    Err(e) => assert!(r.evicted(m), "update in a local run failed: {e}"),
                }
            }
            Op::Delete(n) => {
                let Some(id) = r.nth_resource(*n) else {
                    continue;
                };
                let m = r.resources[&id].0;
                match store.delete_resource(id) {
                    Ok(existed) => {
                        assert!(existed, "a reference resource existed");
                        r.resources.remove(&id);
                        r.fetched(m);
                        assert!(!store.delete_resource(id).unwrap(), "deleted twice");
                    }
                    Err(e) => assert!(r.evicted(m), "delete in a local run failed: {e}"),
                }
            }
            Op::Evict(m) => {
                let Some(&(id, evicted)) = r.runs.get(m) else {
                    continue;
                };
                let lost = r.resources.values().any(|(rm, b)| rm == m && b.is_none());
                let now = r.of_run(*m);
                let pushed = store.push(&[id], "m", &|_| {}).unwrap();
                if pushed.pushed.contains(&id) {
                    r.pushed.insert(*m, now.clone());
                }
                // A copy, once committed, is never replaced (FORMAT.md §8.3): a run whose
                // resources changed since may be refused eviction, safely.
                let stale = r.pushed.get(m).is_some_and(|copy| *copy != now);
                let done =
                    pushed.failed.is_empty() && store.evict(&id, &EvictOptions::default()).is_ok();
                if done {
                    r.runs.insert(*m, (id, true));
                } else {
                    assert!(
                        evicted || lost || stale,
                        "evicting a whole local run failed: {pushed:?}"
                    );
                }
            }
            Op::Fetch(m) => {
                let Some(&(id, evicted)) = r.runs.get(m) else {
                    continue;
                };
                let got = store.fetch(&id, Some("m"), &|_| {});
                if evicted {
                    got.unwrap_or_else(|e| panic!("fetch {id}: {e}"));
                    r.runs.insert(*m, (id, false));
                } else {
                    assert_eq!(got.unwrap(), 0, "a local run downloads nothing");
                }
            }
            Op::Reindex(incremental) => {
                store.reindex(*incremental, &|_| {}).unwrap();
            }
            Op::Migrate => {
                let opts = MigrateOptions::default()
                    .to(Backend::Filesystem)
                    .keep_going(true);
                store.migrate_artifacts(&opts, &|_, _| {}).unwrap();
            }
            Op::Gc => {
                store
                    .gc_artifacts(&GcOptions::default().grace(std::time::Duration::ZERO))
                    .unwrap();
            }
            Op::DropIndex => {
                let index = store.index_path().to_path_buf();
                drop(store);
                std::fs::remove_file(&index).unwrap();
                store = open(&root);
                for (id, (_, bytes)) in r.resources.iter_mut() {
                    let rec = store.get_resource(*id).unwrap().expect("records come back");
                    if rec.backend == Backend::Inline {
                        *bytes = None; // inline bytes live only in the index (FORMAT.md §7)
                    }
                }
            }
        }
        check(&store, &r, step, op);
    }
}

/// Applies the operations `data` decodes to in a fresh scratch directory (removed afterwards),
/// checking the store against the reference after every step; panics on a disagreement.
pub fn run(data: &[u8]) {
    let ops = decode(data);
    if ops.is_empty() {
        return;
    }
    let dir = scratch();
    run_ops(&dir, &ops);
    std::fs::remove_dir_all(&dir).unwrap();
}
