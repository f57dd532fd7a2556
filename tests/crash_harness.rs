//! Crash harness (issue 7 part 1, RELIABILITY.md "Crashes"). Each operation runs in a child
//! process, restored each time from a template store, and is stopped
//!
//! - at every failpoint it reaches, in order: `CAIRN_FAILPOINTS="*=abort@N"` for N = 1, 2, ...
//!   until the operation completes without reaching an N-th point (systematic enumeration), and
//! - by SIGKILL after pseudo-random delays (seed printed; set `CAIRN_HARNESS_SEED` to replay).
//!
//! After each stop: every run directory under a final name is whole, every run that existed or
//! whose creation returned is present, every resource's bytes read back verified (operations that
//! do not move runs away), and a rerun of the operation completes, after which `verify --contents`
//! is clean and the operation's outcome holds. Children run `CAIRN_HARNESS_JOBS` at a time
//! (default 4: most of their time is fsync). Run alone:
//! `cargo test --all-features --test crash_harness -- --nocapture`.
#![cfg(feature = "failpoints")]

#[path = "support/harness.rs"]
#[allow(
    dead_code,
    reason = "shared test support; each test file uses part of it"
)]
mod harness;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::{
    Rng, State, assert_resources_readable, assert_runs_whole, assert_verify_clean, cairn_cmd,
    cairn_ok, copy_tree, open, run,
};

/// A store and its directory remote, at fixed paths (records hold absolute paths).
struct Fix {
    root: PathBuf,
    mirror: PathBuf,
    /// Input files of the operation.
    input: PathBuf,
}

/// One operation under test.
struct Scenario {
    name: &'static str,
    /// Builds the store the operation starts from.
    setup: fn(&Fix),
    /// The operation: a child command and its standard input.
    op: fn(&Fix, &State) -> (Command, Vec<u8>),
    /// Checks right after a stop, before anything else touches the store.
    after_crash: fn(&Fix, &State, &Output),
    /// Checks after the rerun completed.
    finish: fn(&Fix, &State),
}

fn model_line(module: &str, lr: u32) -> String {
    format!(r#"{{"module": "{module}", "config": {{"lr": {lr}, "layers": [1, 2]}}}}"#)
}

fn put_models(root: &Path, lrs: std::ops::Range<u32>) {
    let store = open(root);
    for lr in lrs {
        let model = cairn::Model::new("train")
            .with_config(&serde_json::json!({"lr": lr, "layers": [1, 2]}))
            .unwrap();
        store.get_or_create(&model).unwrap();
    }
}

/// Runs with resources in both backends: two inline and one filesystem resource per run.
fn runs_with_resources(fix: &Fix, runs: u32) {
    put_models(&fix.root, 0..runs);
    let store = open(&fix.root);
    let fs = cairn::Store::builder(&fix.root)
        .ignore_artifact_env()
        .artifact_backend(cairn::artifact::Backend::Filesystem)
        .open()
        .unwrap();
    let mut rng = Rng(u64::from(runs));
    for (i, rec) in store
        .find(&cairn::query::Query::new())
        .unwrap()
        .iter()
        .enumerate()
    {
        let run = store.get(&rec.identity).unwrap().unwrap();
        std::fs::write(run.data_dir().join("metrics.txt"), rng.bytes(300 + i)).unwrap();
        store
            .create_resource(&run, "a", &rng.bytes(100 + i))
            .unwrap();
        store.create_resource(&run, "b", &rng.bytes(7000)).unwrap();
        fs.create_resource(&run, "c", &rng.bytes(UPDATED_SIZE))
            .unwrap();
    }
}

/// After a stopped fetch: every directory under a final name whole, every run still indexed
/// (between fetch's two renames the husk is gone, but the bytes are on the remote and the rerun
/// completes it).
fn runs_whole_and_kept(fix: &Fix, before: &State, _out: &Output) {
    assert_runs_whole(&fix.root, "after the crash");
    let after = State::of(&fix.root);
    for id in before.runs.keys() {
        assert!(
            after.runs.contains_key(id),
            "after the crash: run {id} is gone"
        );
    }
}

fn first_run(before: &State) -> String {
    before.runs.keys().next().unwrap().clone()
}

fn first_resource(before: &State) -> String {
    before.resources.keys().next().unwrap().clone()
}

/// Every run of `before` still answers to its identity (or, re-keyed, to its old one) with a
/// whole directory or husk.
fn assert_runs_kept(fix: &Fix, before: &State, context: &str) {
    let store = open(&fix.root);
    for id in before.runs.keys() {
        let identity: cairn::Identity = id.parse().unwrap();
        assert!(
            store.get(&identity).unwrap().is_some(),
            "{context}: run {id} is gone"
        );
    }
}

/// The common checks after a stop: whole directories, no run lost, resources readable.
fn kept_and_readable(fix: &Fix, before: &State, _out: &Output) {
    assert_runs_whole(&fix.root, "after the crash");
    assert_runs_kept(fix, before, "after the crash");
    assert_resources_readable(&fix.root, before, &[], "after the crash");
}

/// After a rerun of a migration: every resource readable and in `to`.
fn migrated(fix: &Fix, before: &State, to: cairn::artifact::Backend) {
    assert_resources_readable(&fix.root, before, &[], "after the rerun");
    for rec in open(&fix.root).all_resources().unwrap() {
        assert_eq!(rec.backend, to);
    }
}

/// The checks after a stop of an operation that may move bytes away: whole directories, no run
/// lost (resource bytes are checked after the rerun).
fn kept(fix: &Fix, before: &State, _out: &Output) {
    assert_runs_whole(&fix.root, "after the crash");
    assert_runs_kept(fix, before, "after the crash");
}

/// Size of each run's filesystem resource (the one the update scenario rewrites).
const UPDATED_SIZE: usize = 20_000;

/// The update writes these bytes.
fn updated_bytes() -> Vec<u8> {
    Rng(99).bytes(150_000)
}

/// Models `put` creates: two exist before.
const PUT_MODELS: u32 = 32;

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "put",
        setup: |fix| put_models(&fix.root, 0..2),
        op: |fix, _| {
            let lines: Vec<String> = (0..PUT_MODELS).map(|lr| model_line("train", lr)).collect();
            (cairn_cmd(&fix.root, &["put", "-"]), lines.join("\n").into())
        },
        after_crash: |fix, before, out| {
            kept_and_readable(fix, before, out);
            // Every run whose creation returned (a printed line) is present and whole.
            let store = open(&fix.root);
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let id: cairn::Identity = line.split('\t').next().unwrap().parse().unwrap();
                let run = store.get(&id).unwrap().expect("a returned run is indexed");
                assert_eq!(cairn::IdHeader::read(run.path()).unwrap().identity, id);
            }
        },
        finish: |fix, _| {
            let n = PUT_MODELS as usize;
            assert_eq!(assert_runs_whole(&fix.root, "after the rerun"), n);
            assert_eq!(State::of(&fix.root).runs.len(), n);
        },
    },
    Scenario {
        name: "reindex",
        setup: |fix| {
            put_models(&fix.root, 0..6);
            // A moved run and a new directory the index does not know.
            let state = State::of(&fix.root);
            let (_, loc) = state.runs.iter().next().unwrap();
            let loc = loc.split_once(' ').unwrap().1;
            std::fs::create_dir_all(fix.root.join("moved")).unwrap();
            std::fs::rename(fix.root.join(loc), fix.root.join("moved/run")).unwrap();
        },
        op: |fix, _| (cairn_cmd(&fix.root, &["reindex"]), Vec::new()),
        // The index may still place the moved run where it was: the walk must find them all.
        after_crash: |fix, before, _| {
            assert_eq!(
                assert_runs_whole(&fix.root, "after the crash"),
                before.runs.len()
            );
            assert_resources_readable(&fix.root, before, &[], "after the crash");
        },
        finish: |fix, before| {
            let store = open(&fix.root);
            let id: cairn::Identity = first_run(before).parse().unwrap();
            let run = store.get(&id).unwrap().unwrap();
            assert_eq!(run.location(), Path::new("moved/run"));
        },
    },
    Scenario {
        name: "repair --rekey",
        setup: |fix| {
            put_models(&fix.root, 0..3);
            let state = State::of(&fix.root);
            let (_, loc) = state.runs.iter().next().unwrap();
            let loc = loc.split_once(' ').unwrap().1;
            copy_tree(&fix.root.join(loc), &fix.root.join("copy"));
            std::fs::create_dir_all(fix.root.join(".cairn/schemas")).unwrap();
            std::fs::write(
                fix.root.join(".cairn/schemas/train.json"),
                r#"{"module": "train", "defaults": {"layers": [1, 2]}}"#,
            )
            .unwrap();
        },
        op: |fix, _| {
            let cmd = cairn_cmd(&fix.root, &["repair", "--rekey", "--force"]);
            (cmd, Vec::new())
        },
        after_crash: kept_and_readable,
        finish: |fix, before| {
            assert!(!fix.root.join("copy").exists());
            let after = State::of(&fix.root);
            assert_eq!(after.runs.len(), before.runs.len());
            assert!(after.runs.keys().all(|id| !before.runs.contains_key(id)));
        },
    },
    Scenario {
        name: "resource add (inline)",
        setup: |fix| {
            put_models(&fix.root, 0..1);
            std::fs::write(&fix.input, Rng(1).bytes(300_000)).unwrap();
        },
        op: |fix, before| {
            let id = first_run(before);
            let input = fix.input.to_str().unwrap();
            (
                cairn_cmd(&fix.root, &["resource", "add", &id, input]),
                Vec::new(),
            )
        },
        after_crash: kept_and_readable,
        finish: |fix, _| {
            let n = State::of(&fix.root).resources.len();
            assert!((1..=2).contains(&n), "{n} resources");
        },
    },
    Scenario {
        name: "resource add (filesystem)",
        setup: |fix| {
            put_models(&fix.root, 0..1);
            // Three and a bit chunks: the streaming path, more than one 1 MiB buffer.
            std::fs::write(&fix.input, Rng(2).bytes((3 << 20) + 99)).unwrap();
        },
        op: |fix, before| {
            let id = first_run(before);
            let input = fix.input.to_str().unwrap();
            let mut cmd = cairn_cmd(&fix.root, &["resource", "add", &id, input]);
            cmd.env("CAIRN_ARTIFACT_BACKEND", "filesystem");
            (cmd, Vec::new())
        },
        after_crash: kept_and_readable,
        finish: |fix, _| {
            let n = State::of(&fix.root).resources.len();
            assert!((1..=2).contains(&n), "{n} resources");
        },
    },
    Scenario {
        name: "resource update (filesystem)",
        setup: |fix| {
            runs_with_resources(fix, 1);
            std::fs::write(&fix.input, updated_bytes()).unwrap();
        },
        op: update_op,
        after_crash: |fix, before, _| {
            assert_runs_whole(&fix.root, "after the crash");
            let new = cairn::artifact::sha256_hex(&updated_bytes());
            assert_resources_readable(&fix.root, before, &[new], "after the crash");
        },
        finish: |fix, before| {
            let after = State::of(&fix.root);
            let id = update_target(before);
            let new = cairn::artifact::sha256_hex(&updated_bytes());
            assert_eq!(after.resources[&id].2, new);
        },
    },
    Scenario {
        name: "migrate",
        setup: |fix| runs_with_resources(fix, 6),
        op: |fix, _| {
            let cmd = cairn_cmd(&fix.root, &["migrate", "--batch", "2"]);
            (cmd, Vec::new())
        },
        after_crash: kept_and_readable,
        finish: |fix, before| migrated(fix, before, cairn::artifact::Backend::Filesystem),
    },
    Scenario {
        name: "migrate --to inline",
        setup: |fix| {
            runs_with_resources(fix, 4);
            cairn_ok(&fix.root, &["migrate"]);
        },
        op: |fix, _| {
            let cmd = cairn_cmd(&fix.root, &["migrate", "--to", "inline"]);
            (cmd, Vec::new())
        },
        after_crash: kept_and_readable,
        finish: |fix, before| migrated(fix, before, cairn::artifact::Backend::Inline),
    },
    Scenario {
        name: "push",
        setup: |fix| {
            runs_with_resources(fix, 5);
            let mirror = fix.mirror.to_str().unwrap();
            cairn_ok(&fix.root, &["remote", "add", "m", "--dir", mirror]);
        },
        op: |fix, _| (cairn_cmd(&fix.root, &["push", "m", "--all"]), Vec::new()),
        after_crash: kept_and_readable,
        finish: |fix, _| {
            cairn_ok(&fix.root, &["verify", "--remote", "m"]);
        },
    },
    Scenario {
        name: "evict",
        setup: |fix| {
            runs_with_resources(fix, 2);
            let mirror = fix.mirror.to_str().unwrap();
            cairn_ok(&fix.root, &["remote", "add", "m", "--dir", mirror]);
            cairn_ok(&fix.root, &["push", "m", "--all"]);
        },
        op: |fix, before| {
            let id = first_run(before);
            (cairn_cmd(&fix.root, &["evict", &id]), Vec::new())
        },
        after_crash: kept,
        finish: |fix, before| {
            let id = first_run(before);
            let after = State::of(&fix.root);
            assert!(
                after.runs[&id].starts_with("evicted "),
                "{}",
                after.runs[&id]
            );
            // The bytes come back, verified.
            cairn_ok(&fix.root, &["fetch", &id]);
            assert_resources_readable(&fix.root, before, &[], "after a fetch");
        },
    },
    Scenario {
        name: "fetch",
        setup: |fix| {
            runs_with_resources(fix, 2);
            let mirror = fix.mirror.to_str().unwrap();
            cairn_ok(&fix.root, &["remote", "add", "m", "--dir", mirror]);
            cairn_ok(&fix.root, &["push", "m", "--all"]);
            let state = State::of(&fix.root);
            cairn_ok(&fix.root, &["evict", &first_run(&state)]);
        },
        op: |fix, before| {
            let id = first_run(before);
            (cairn_cmd(&fix.root, &["fetch", &id]), Vec::new())
        },
        after_crash: runs_whole_and_kept,
        finish: |fix, before| {
            let id = first_run(before);
            let after = State::of(&fix.root);
            assert!(after.runs[&id].starts_with("local "), "{}", after.runs[&id]);
            assert_resources_readable(&fix.root, before, &[], "after the rerun");
        },
    },
    Scenario {
        name: "fetch (remote-only run)",
        // The runs were pushed from another store; this one knows them only from the remote.
        setup: |fix| {
            let origin = Fix {
                root: fix.root.parent().unwrap().join("origin"),
                mirror: fix.mirror.clone(),
                input: fix.input.clone(),
            };
            std::fs::create_dir_all(&origin.root).unwrap();
            runs_with_resources(&origin, 2);
            let mirror = fix.mirror.to_str().unwrap();
            cairn_ok(&origin.root, &["remote", "add", "m", "--dir", mirror]);
            cairn_ok(&origin.root, &["push", "m", "--all"]);
            cairn_ok(&fix.root, &["remote", "add", "m", "--dir", mirror]);
            cairn_ok(&fix.root, &["reindex", "--remote", "m"]);
        },
        op: |fix, before| {
            let id = first_run(before);
            (cairn_cmd(&fix.root, &["fetch", &id]), Vec::new())
        },
        after_crash: runs_whole_and_kept,
        finish: |fix, before| {
            let id = first_run(before);
            let after = State::of(&fix.root);
            assert!(after.runs[&id].starts_with("local "), "{}", after.runs[&id]);
            // The origin's three resources of that run came with it, readable and verified.
            let of_run: Vec<_> = after.resources.values().filter(|r| r.0 == id).collect();
            assert_eq!(of_run.len(), 3, "{:?}", after.resources);
            assert_resources_readable(&fix.root, &after, &[], "after the rerun");
        },
    },
];

/// The resource the update scenario rewrites: the run's filesystem one.
fn update_target(before: &State) -> String {
    let store_sizes = &before.resources;
    store_sizes
        .iter()
        .find(|(_, (_, size, _))| *size == UPDATED_SIZE as u64)
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| first_resource(before))
}

/// `update_resource` has no CLI: this test binary reruns itself as the child (`update_child`).
fn update_op(fix: &Fix, before: &State) -> (Command, Vec<u8>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "update_child", "--nocapture", "--test-threads=1"])
        .env(
            "CAIRN_HARNESS_UPDATE",
            format!(
                "{}\n{}\n{}",
                fix.root.display(),
                update_target(before),
                fix.input.display()
            ),
        )
        .env_remove("CAIRN_FAILPOINTS");
    (cmd, Vec::new())
}

/// The child process of the update scenario: does nothing unless `CAIRN_HARNESS_UPDATE` names a
/// store, a resource and a file of new bytes.
#[test]
fn update_child() {
    let Ok(spec) = std::env::var("CAIRN_HARNESS_UPDATE") else {
        return;
    };
    let mut parts = spec.lines();
    let (root, id, input) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let store = open(Path::new(root));
    let bytes = std::fs::read(input).unwrap();
    store
        .update_resource(id.parse().unwrap(), &bytes)
        .unwrap_or_else(|e| panic!("update: {e}"));
}

/// Kill points tried for one scenario.
#[derive(Default)]
struct Tally {
    /// Failpoint name → aborts there.
    points: BTreeMap<String, u64>,
    /// SIGKILLs that stopped the child.
    kills: u64,
}

/// One worker's fixture: the store is rebuilt from `template` before every stop.
struct Worker {
    fix: Fix,
    template: PathBuf,
    before: State,
}

impl Worker {
    fn new(dir: &Path, sc: &Scenario) -> Worker {
        let fix = Fix {
            root: dir.join("live/store"),
            mirror: dir.join("live/mirror"),
            input: dir.join("input.bin"),
        };
        std::fs::create_dir_all(&fix.root).unwrap();
        std::fs::create_dir_all(&fix.mirror).unwrap();
        (sc.setup)(&fix);
        let before = State::of(&fix.root);
        let template = dir.join("template");
        copy_tree(&dir.join("live"), &template);
        Worker {
            fix,
            template,
            before,
        }
    }

    fn restore(&self) {
        let live = self.fix.root.parent().unwrap();
        std::fs::remove_dir_all(live).unwrap();
        copy_tree(&self.template, live);
    }

    /// After a stop: the scenario's checks, then a rerun that must complete, then the final ones.
    fn check(&self, sc: &Scenario, out: &Output, context: &str) {
        let guard = |f: &dyn Fn()| {
            if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                eprintln!(
                    "{}: {context}\n{}",
                    sc.name,
                    String::from_utf8_lossy(&out.stderr)
                );
                std::panic::resume_unwind(e);
            }
        };
        guard(&|| (sc.after_crash)(&self.fix, &self.before, out));
        guard(&|| {
            let (cmd, stdin) = (sc.op)(&self.fix, &self.before);
            let rerun = run(cmd, &stdin);
            assert!(
                rerun.status.success(),
                "the rerun failed: {}{}",
                String::from_utf8_lossy(&rerun.stdout),
                String::from_utf8_lossy(&rerun.stderr)
            );
            (sc.finish)(&self.fix, &self.before);
            assert_runs_whole(&self.fix.root, "after the rerun");
            assert_verify_clean(&self.fix.root, "after the rerun");
        });
    }
}

/// A scratch directory: in memory (`/dev/shm`) where there is one, since a process crash loses
/// nothing the kernel holds and fsyncs there cost nothing; `CAIRN_HARNESS_DIR` overrides.
fn scratch() -> tempfile::TempDir {
    let dir = std::env::var_os("CAIRN_HARNESS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"));
    if dir.is_dir() {
        tempfile::tempdir_in(dir).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// Runs every kill point of `sc`; returns its tally.
fn exercise(sc: &Scenario, jobs: usize, seed: u64, kills: u64) -> Tally {
    let base = scratch();
    let tally = Mutex::new(Tally::default());
    let next = AtomicU64::new(1);
    let done_at = AtomicU64::new(u64::MAX);
    let longest = AtomicU64::new(0);
    let next_kill = AtomicU64::new(0);
    std::thread::scope(|s| {
        for w in 0..jobs {
            let (tally, next, done_at, longest, next_kill) =
                (&tally, &next, &done_at, &longest, &next_kill);
            let dir = base.path().join(format!("w{w}"));
            s.spawn(move || {
                let worker = Worker::new(&dir, sc);
                // (a) The N-th failpoint, N = 1, 2, ... until the operation completes.
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n > done_at.load(Ordering::SeqCst) {
                        break;
                    }
                    worker.restore();
                    let (mut cmd, stdin) = (sc.op)(&worker.fix, &worker.before);
                    cmd.env("CAIRN_FAILPOINTS", format!("*=abort@{n}"));
                    let started = Instant::now();
                    let out = run(cmd, &stdin);
                    if out.status.success() {
                        let took = started.elapsed().as_micros() as u64;
                        longest.fetch_max(took, Ordering::SeqCst);
                        done_at.fetch_min(n, Ordering::SeqCst);
                        worker.check(sc, &out, "completed");
                        break;
                    }
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    let point = stderr
                        .lines()
                        .find_map(|l| l.strip_prefix("cairn: failpoint "))
                        .and_then(|l| l.split(':').next())
                        .unwrap_or_else(|| {
                            panic!("{}: failpoint {n}: not a crash: {stderr}", sc.name)
                        })
                        .to_owned();
                    worker.check(sc, &out, &format!("aborted at failpoint {n} ({point})"));
                    *tally.lock().unwrap().points.entry(point).or_default() += 1;
                }
                // (b) SIGKILL after a pseudo-random delay within the operation's duration.
                loop {
                    let k = next_kill.fetch_add(1, Ordering::SeqCst);
                    if k >= kills {
                        break;
                    }
                    let mut rng = Rng(seed ^ (k + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
                    let delay = rng.next() % longest.load(Ordering::SeqCst).max(1000);
                    worker.restore();
                    let (mut cmd, stdin) = (sc.op)(&worker.fix, &worker.before);
                    cmd.stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped());
                    let mut child = cmd.spawn().unwrap();
                    {
                        use std::io::Write;
                        let mut pipe = child.stdin.take().unwrap();
                        let _ = pipe.write_all(&stdin);
                    }
                    std::thread::sleep(Duration::from_micros(delay));
                    let _ = child.kill();
                    let out = child.wait_with_output().unwrap();
                    let killed = out.status.signal() == Some(9);
                    worker.check(sc, &out, &format!("SIGKILL {k} after {delay} µs"));
                    tally.lock().unwrap().kills += u64::from(killed);
                }
            });
        }
    });
    tally.into_inner().unwrap()
}

#[test]
fn every_operation_survives_a_crash_at_every_failpoint_and_at_random_kills() {
    let jobs = std::env::var("CAIRN_HARNESS_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed = std::env::var("CAIRN_HARNESS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let only = std::env::var("CAIRN_HARNESS_ONLY").ok();
    eprintln!("crash harness: seed {seed} (CAIRN_HARNESS_SEED={seed} replays the kills)");
    let started = Instant::now();
    let mut total = 0;
    for sc in SCENARIOS {
        if only.as_deref().is_some_and(|o| o != sc.name) {
            continue;
        }
        let t = Instant::now();
        let tally = exercise(sc, jobs, seed, 20);
        let at_points: u64 = tally.points.values().sum();
        let detail: Vec<String> = tally
            .points
            .iter()
            .map(|(p, n)| format!("{p} {n}"))
            .collect();
        eprintln!(
            "crash harness: {:<28} {:>4} failpoint stops + {:>2} SIGKILLs in {:>5.1} s  [{}]",
            sc.name,
            at_points,
            tally.kills,
            t.elapsed().as_secs_f64(),
            detail.join(", ")
        );
        total += at_points + tally.kills;
    }
    eprintln!(
        "crash harness: {total} kill points in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if only.is_none() {
        assert!(total >= 1000, "only {total} kill points");
    }
}
