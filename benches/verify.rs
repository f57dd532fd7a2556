//! `verify` of 100,000 runs (no artifacts), beside the reindex baseline (a parallel list + read +
//! parse of every `id.json`, `cairn::walk::find_runs`) in the same run, with 1 and 2 threads.
//!
//! `cargo bench --bench verify`. Reuses `$CAIRN_BENCH_DIR/runs-100000/` (default
//! `target/bench-fixtures/`) when complete (the index bench writes it), else writes its own
//! fixture there. Without `--bench` (as under
//! `cargo test --all-targets`) it checks the harness on 200 runs in a temporary directory.

use std::path::Path;
use std::time::{Duration, Instant};

use cairn::schemas::Schemas;
use cairn::verify::VerifyOptions;
use cairn::{IdHeader, Model, Schema, Store};
use rayon::prelude::*;
use serde_json::json;

const MODULES: [&str; 5] = ["train", "eval", "pkg.pretrain", "data.prep", "sweep.hparam"];
const MARKER: &str = ".fixture-complete";

/// Writes `n` run directories under `root` (no fsync: a fixture, not a store write).
fn make_fixture(root: &Path, n: usize) {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).unwrap();
    (0..n).into_par_iter().for_each(|i| {
        let lr = [1e-4, 3e-4, 1e-3][i % 3];
        let split = ["train", "val", "test"][i % 3];
        let mut model = Model::new(MODULES[i % MODULES.len()])
            .with_config(&json!({
                "seed": i, "lr": lr, "epochs": 10 + i % 7,
                "optimizer": {"name": "adamw", "beta": 0.9}, "tags": ["bench", "v1"],
            }))
            .unwrap()
            .with_predicate(&json!({"split": split}))
            .unwrap();
        model.created_at = Some(cairn::run::now_rfc3339());
        model.created_by = Some("bench@host".into());
        let id = model.identity().unwrap();
        let dir = root.join(Store::placement(&model.module, &id).unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.json"), model.to_json_bytes()).unwrap();
        std::fs::write(
            dir.join("id.json"),
            IdHeader::for_model(&model, id).to_json_bytes(),
        )
        .unwrap();
    });
    std::fs::write(root.join(MARKER), b"").unwrap();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let tmp;
    let (root, n) = if bench {
        let root = std::env::var_os("CAIRN_BENCH_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-fixtures"))
            .join("runs-100000");
        if !root.join(MARKER).exists() {
            println!("writing the 100,000-run fixture ...");
            make_fixture(&root, 100_000);
        }
        (root, 100_000)
    } else {
        tmp = tempfile::tempdir().unwrap();
        make_fixture(tmp.path(), 200);
        (tmp.path().to_path_buf(), 200)
    };
    let store = Store::open(&root).unwrap();
    // The current schemas: every module registered (a non-empty schema that reduces nothing
    // these configs hold, so the store verifies clean and re-derivation does its full work).
    let schemas = MODULES.iter().fold(Schemas::new(), |s, m| {
        s.with(
            *m,
            Schema::new(&json!({"warmup": 0}), &["log_dir"]).unwrap(),
        )
    });
    let passes = if bench { 3 } else { 1 };
    println!(
        "{:<28} {:>8} {:>7} {:>12} {:>14} {:>7}  target",
        "name", "runs", "threads", "runs/s", "baseline r/s", "ratio"
    );
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let (verify, base) = pool.install(|| {
            // One untimed pass of each warms the page cache.
            let warm = store
                .verify(&schemas, &VerifyOptions::default(), &|_| {})
                .unwrap();
            assert!(
                warm.is_clean(),
                "fixture must verify clean: {:?}",
                warm.findings.first()
            );
            assert_eq!(warm.runs, n);
            assert_eq!(cairn::walk::find_runs(&root).runs.len(), n);
            let mut v = Vec::new();
            let mut b = Vec::new();
            for _ in 0..passes {
                let t = Instant::now();
                let report = store
                    .verify(&schemas, &VerifyOptions::default(), &|_| {})
                    .unwrap();
                v.push(t.elapsed());
                assert_eq!(report.runs, n);
                let t = Instant::now();
                let walk = cairn::walk::find_runs(&root);
                b.push(t.elapsed());
                assert_eq!(walk.runs.len(), n);
            }
            (median(v), median(b))
        });
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "{:<28} {:>8} {:>7} {:>12.0} {:>14.0} {:>6.2}x  >= 40000 runs/s: {}",
            "verify (no artifacts)",
            n,
            threads,
            rate(verify),
            rate(base),
            rate(verify) / rate(base),
            if rate(verify) >= 40_000.0 {
                "met"
            } else {
                "not met"
            }
        );
    }
}
