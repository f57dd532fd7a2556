//! Load (issue 7 part 6): N processes doing mixed operations on one store for a bounded time —
//! get_or_create over overlapping configs, resource add and verified get, find, resource ls and
//! incremental reindex — after which the invariants hold: verify is clean, every run is in the
//! index exactly once with no duplicate directory, every resource reads back verified with the
//! bytes its writer gave it. Prints throughput per kind and the longest wait for the index.
//!
//!   cargo test --test load -- --nocapture                                  # 6 processes, 3 s
//!   CAIRN_LOAD_PROCS=8 CAIRN_LOAD_SECS=60 cargo test --release --test load -- --nocapture
//!
//! Each worker is this test binary again, running `load_worker` with `CAIRN_LOAD_WORKER` set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn::artifact::Backend;
use cairn::query::Query;
use cairn::schemas::Schemas;
use cairn::verify::VerifyOptions;
use cairn::{Model, Store};
use serde_json::{Value, json};

/// Distinct configs the workers draw from: they overlap, so get_or_create races on each.
const CONFIGS: u64 = 400;
const KINDS: [&str; 6] = [
    "get_or_create",
    "resource_add",
    "resource_get",
    "find",
    "resource_ls",
    "reindex_incremental",
];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn open(root: &Path) -> Store {
    Store::builder(root)
        .ignore_artifact_env()
        .artifact_backend(Backend::Filesystem)
        .index_timeout(Duration::from_secs(60))
        .open()
        .unwrap()
}

fn model(seed: u64) -> Model {
    Model::new(if seed % 2 == 0 { "train" } else { "eval" })
        .with_config(&json!({"seed": seed, "lr": seed as f64 / 1000.0}))
        .unwrap()
}

/// xorshift64: a reproducible operation mix per worker.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One worker: runs the mix until the deadline, then prints one JSON line with its counts, its
/// slowest operation per kind, the longest index wait, and the resources it wrote.
#[test]
fn load_worker() {
    let Ok(spec) = std::env::var("CAIRN_LOAD_WORKER") else {
        return; // only as a child of `mixed_operations_from_many_processes`
    };
    let spec: Value = serde_json::from_str(&spec).unwrap();
    let root = Path::new(spec["root"].as_str().unwrap());
    let worker = spec["worker"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_millis(spec["millis"].as_u64().unwrap());
    let store = open(root);
    let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (worker + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let mut slowest: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut written: Vec<(String, String, String)> = Vec::new();
    let mut runs = BTreeSet::new();
    while Instant::now() < deadline {
        let seed = next(&mut rng) % CONFIGS;
        let kind = match next(&mut rng) % 20 {
            0..=7 => "get_or_create",
            8..=10 => "resource_add",
            11..=13 => "resource_get",
            14..=16 => "find",
            17..=18 => "resource_ls",
            _ => "reindex_incremental",
        };
        let t = Instant::now();
        match kind {
            "get_or_create" => {
                let run = store.get_or_create(&model(seed)).unwrap();
                runs.insert(run.identity().to_hex());
            }
            "resource_add" => {
                let run = store.get_or_create(&model(seed)).unwrap();
                let bytes = format!("worker {worker} op {} seed {seed}", written.len());
                let rec = store
                    .create_resource(&run, "load", bytes.as_bytes())
                    .unwrap();
                runs.insert(run.identity().to_hex());
                written.push((rec.id.to_string(), run.identity().to_hex(), bytes));
            }
            "resource_get" => {
                if let Some((id, _, bytes)) =
                    written.get(next(&mut rng) as usize % written.len().max(1))
                {
                    let data = store.read_resource_data(id.parse().unwrap()).unwrap();
                    assert_eq!(&data[..], bytes.as_bytes());
                }
            }
            "find" => {
                let q = Query::new().module(if seed % 2 == 0 { "train" } else { "eval" });
                store.find(&q).unwrap();
            }
            "resource_ls" => {
                if let Some(run) = store.get(&model(seed).identity().unwrap()).unwrap() {
                    store.list_resources(&run.identity()).unwrap();
                }
            }
            _ => {
                store.reindex(true, &|_| {}).unwrap();
            }
        }
        let took = t.elapsed();
        *counts.entry(kind).or_default() += 1;
        let s = slowest.entry(kind).or_default();
        *s = (*s).max(took);
    }
    let slowest: BTreeMap<&str, f64> = slowest.iter().map(|(k, d)| (*k, d.as_secs_f64())).collect();
    println!(
        "LOAD {}",
        json!({
            "counts": counts,
            "slowest_s": slowest,
            "longest_index_wait_s": cairn::index::longest_write_wait().as_secs_f64(),
            "written": written,
            "runs": runs,
        })
    );
}

#[test]
fn mixed_operations_from_many_processes() {
    let procs = env_or("CAIRN_LOAD_PROCS", 6);
    let secs = env_or("CAIRN_LOAD_SECS", 3);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    drop(open(&root));
    let start = Instant::now();
    let children: Vec<_> = (0..procs)
        .map(|worker| {
            let spec = json!({"root": root, "worker": worker, "millis": secs * 1000});
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "load_worker", "--nocapture", "--test-threads=1"])
                .env("CAIRN_LOAD_WORKER", spec.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut slowest: BTreeMap<String, f64> = BTreeMap::new();
    let mut longest_wait = 0f64;
    let mut written = Vec::new();
    let mut runs = BTreeSet::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "worker failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("LOAD ").map(|(_, r)| r))
            .expect("the worker's report");
        let r: Value = serde_json::from_str(line).unwrap();
        for (k, v) in r["counts"].as_object().unwrap() {
            *counts.entry(k.clone()).or_default() += v.as_u64().unwrap();
        }
        for (k, v) in r["slowest_s"].as_object().unwrap() {
            let s = slowest.entry(k.clone()).or_default();
            *s = s.max(v.as_f64().unwrap());
        }
        longest_wait = longest_wait.max(r["longest_index_wait_s"].as_f64().unwrap());
        written.extend(r["written"].as_array().unwrap().iter().cloned());
        runs.extend(
            r["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned()),
        );
    }
    let wall = start.elapsed().as_secs_f64();

    // Invariants: every run once in the index and once on disk, verify clean, every resource
    // present under its run and read back verified with its writer's bytes.
    let store = open(&root);
    let walk = cairn::walk::find_runs(&root);
    assert!(walk.errors.is_empty(), "{:?}", walk.errors);
    let on_disk: BTreeSet<String> = walk
        .runs
        .iter()
        .map(|r| r.header.as_ref().unwrap().identity.to_hex())
        .collect();
    assert_eq!(on_disk.len(), walk.runs.len(), "no duplicate directories");
    let indexed: Vec<String> = store
        .find(&Query::new())
        .unwrap()
        .iter()
        .map(|r| r.identity.to_hex())
        .collect();
    let indexed_set: BTreeSet<String> = indexed.iter().cloned().collect();
    assert_eq!(
        indexed.len(),
        indexed_set.len(),
        "each run once in the index"
    );
    assert_eq!(indexed_set, on_disk, "index and directories agree");
    assert_eq!(on_disk, runs, "exactly the runs the workers made");
    let report = store
        .verify(&Schemas::new(), &VerifyOptions::default(), &|_| {})
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    let resources = store.verify_resources(true).unwrap();
    assert!(resources.findings.is_empty(), "{:?}", resources.findings);
    assert_eq!(store.all_resources().unwrap().len(), written.len());
    for w in &written {
        let (id, run, bytes) = (
            w[0].as_str().unwrap(),
            w[1].as_str().unwrap(),
            w[2].as_str().unwrap(),
        );
        let rec = store.get_resource(id.parse().unwrap()).unwrap().unwrap();
        assert_eq!(rec.run.to_hex(), run);
        assert_eq!(
            &store.read_resource_data(rec.id).unwrap()[..],
            bytes.as_bytes()
        );
    }

    let total: u64 = counts.values().sum();
    println!(
        "load: {procs} processes, {secs} s of operations, {wall:.1} s wall, {total} operations ({:.0}/s)",
        total as f64 / secs as f64
    );
    for kind in KINDS {
        let n = counts.get(kind).copied().unwrap_or(0);
        println!(
            "load: {kind:>20}: {n:>7} ops, {:>8.1}/s, slowest {:.3} s",
            n as f64 / secs as f64,
            slowest.get(kind).copied().unwrap_or(0.0)
        );
    }
    println!(
        "load: longest wait for the index write slot {longest_wait:.3} s; {} runs, {} resources; invariants hold",
        runs.len(),
        written.len()
    );
    assert!(
        counts.values().all(|&n| n > 0) && counts.len() == KINDS.len(),
        "every kind ran: {counts:?}"
    );
}
