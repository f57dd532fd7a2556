//! Index benchmarks: full reindex, lookups, `find` and `get_or_create` of existing runs, each
//! measured beside a baseline of the bare work (a raw parallel walk, raw redb tables) in the same
//! run, and printed as one table (see BENCHMARKS.md, section "Index").
//!
//! A plain `fn main()` harness: criterion gives neither p99 nor sensible handling of iterations
//! that take 20 seconds.
//!
//! - `cargo bench --bench index`: 10,000 runs (find, get_or_create, lookups) and 100,000 runs
//!   (reindex).
//! - `CAIRN_BENCH_ONLY=reindex cargo bench --bench index`: only the 100,000-run reindex part
//!   (`CAIRN_BENCH_ONLY=queries`: only the 10,000-run queries).
//! - `CAIRN_BENCH_1M=1 cargo bench --bench index`: also 1,000,000 runs (fixture creation, full
//!   rebuild, index size, lookups, find, get_or_create); takes a long time and ~13 GB of disk.
//!
//! - `CAIRN_BENCH_ONLY=queries` (with or without `CAIRN_BENCH_1M=1`): lookups, get_or_create
//!   and find only, no reindex passes.
//!
//! Fixtures are run directories written straight to disk (no fsync) under
//! `$CAIRN_BENCH_DIR/runs-<N>/` (default `target/bench-fixtures/`) and reused while their marker
//! file is present; `cargo bench --bench index -- --fixtures-only` only writes them. Without
//! `--bench` (as under `cargo test --all-targets`) a quick smoke run on a few hundred runs in a
//! temporary directory checks that the harness works.

use std::fs;
use std::hint::black_box;
use std::io::Write;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn::canonical::Value;
use cairn::index::RunRecord;
use cairn::query::{Condition, Filter, Query};
use cairn::{IdHeader, Identity, Model, Store};
use rayon::prelude::*;
use redb::{ConcurrencyMode, Database, ReadableDatabase, TableDefinition};
use serde_json::json;

const MODULES: [&str; 5] = ["train", "eval", "pkg.pretrain", "data.prep", "sweep.hparam"];
const OPTIMIZERS: [&str; 4] = ["adamw", "sgd", "lion", "adafactor"];
const SPLITS: [&str; 3] = ["train", "val", "test"];
const LRS: [f64; 7] = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2];
/// Written last into a fixture root: the fixture is complete.
const MARKER: &str = ".fixture-complete";
/// The fixture's identities in generation order, 32 bytes each.
const IDS_FILE: &str = ".fixture-ids";
/// The bench's own raw redb table: identity → bytes of a record of the same size.
const RAW: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("raw");

/// The model of fixture run `i`: a ~200-byte config, a predicate, one of five modules.
fn model(i: u64) -> Model {
    let config = json!({
        "seed": i,
        "lr": LRS[(i % 7) as usize],
        "epochs": 10 + (i % 5) * 10,
        "batch_size": 32u64 << (i % 4),
        "dropout": 0.1,
        "weight_decay": 0.01,
        "warmup_steps": 500,
        "optimizer": {"name": OPTIMIZERS[((i / 3) % 4) as usize], "beta": 0.9 + (i % 10) as f64 * 0.009},
        "tags": [if i % 2 == 0 { "baseline" } else { "ablation" }, format!("v{}", i % 3)],
    });
    Model::new(MODULES[(i % 5) as usize])
        .with_config(&config)
        .and_then(|m| m.with_predicate(&json!({"split": SPLITS[(i % 3) as usize]})))
        .expect("fixture model")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// A root of `n` run directories and their identities in generation order (`ids[i]` is the
/// identity of `model(i)`).
struct Fixture {
    root: PathBuf,
    ids: Vec<Identity>,
    /// Time to write it, when this process wrote it.
    created: Option<Duration>,
}

/// Writes `n` runs under `root` (in parallel, no fsync) and returns their identities.
fn write_runs(root: &Path, n: usize) -> Vec<Identity> {
    let done = AtomicUsize::new(0);
    (0..n as u64)
        .into_par_iter()
        .map(|i| {
            let mut m = model(i);
            let id = m.identity().expect("identity");
            m.created_at = Some(cairn::run::now_rfc3339());
            let dir = root.join(Store::placement(&m.module, &id).expect("placement"));
            fs::create_dir_all(&dir).expect("create run dir");
            fs::write(dir.join("model.json"), m.to_json_bytes()).expect("write model.json");
            let header = IdHeader::for_model(&m, id);
            fs::write(dir.join("id.json"), header.to_json_bytes()).expect("write id.json");
            let k = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= 200_000 && k % 100_000 == 0 {
                eprintln!("  fixture: {k}/{n} runs written");
            }
            id
        })
        .collect()
}

/// The cached fixture of `n` runs, created if missing or incomplete.
fn fixture(n: usize) -> Fixture {
    let root = std::env::var_os("CAIRN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("bench-fixtures"))
        .join(format!("runs-{n}"));
    if let Some(ids) = read_cached(&root, n) {
        return Fixture {
            root,
            ids,
            created: None,
        };
    }
    if root.exists() {
        eprintln!("  fixture {}: incomplete, rewriting", root.display());
        fs::remove_dir_all(&root).expect("remove incomplete fixture");
    }
    eprintln!("  fixture {}: writing {n} runs", root.display());
    fs::create_dir_all(&root).expect("create fixture root");
    let start = Instant::now();
    let ids = write_runs(&root, n);
    let created = start.elapsed();
    let bytes: Vec<u8> = ids.iter().flat_map(|id| *id.as_bytes()).collect();
    fs::write(root.join(IDS_FILE), bytes).expect("write ids");
    fs::write(root.join(MARKER), format!("{n}\n")).expect("write marker");
    Fixture {
        root,
        ids,
        created: Some(created),
    }
}

fn read_cached(root: &Path, n: usize) -> Option<Vec<Identity>> {
    let marker = fs::read_to_string(root.join(MARKER)).ok()?;
    if marker.trim() != n.to_string() {
        return None;
    }
    let bytes = fs::read(root.join(IDS_FILE)).ok()?;
    (bytes.len() == 32 * n).then(|| {
        bytes
            .chunks_exact(32)
            .map(|c| Identity::from_bytes(c.try_into().expect("32 bytes")))
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Statistics and formatting

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// p50 and p99 of samples in nanoseconds.
fn p50_p99(mut ns: Vec<u64>) -> (Duration, Duration) {
    ns.sort_unstable();
    let at = |q: usize| Duration::from_nanos(ns[(ns.len() * q / 100).min(ns.len() - 1)]);
    (at(50), at(99))
}

fn dur(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn rate_str(r: f64) -> String {
    format!("{:.1}k runs/s", r / 1e3)
}

fn bytes(b: f64) -> String {
    format!("{b:.0} B/run")
}

/// Calls `f` in a loop, timing each call; returns the samples in nanoseconds.
fn sample<T>(items: &[T], mut f: impl FnMut(&T)) -> Vec<u64> {
    items
        .iter()
        .map(|x| {
            let t = Instant::now();
            f(x);
            t.elapsed().as_nanos() as u64
        })
        .collect()
}

/// Deterministic pseudo-random numbers (splitmix64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

/// One line of the results table.
struct Row {
    name: String,
    n: usize,
    result: String,
    baseline: String,
    ratio: String,
    target: String,
    met: Option<bool>,
}

#[derive(Default)]
struct Table(Vec<Row>);

impl Table {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        name: &str,
        n: usize,
        result: String,
        baseline: String,
        ratio: String,
        target: &str,
        met: Option<bool>,
    ) {
        let row = Row {
            name: name.into(),
            n,
            result,
            baseline,
            ratio,
            target: target.into(),
            met,
        };
        println!(
            "  {:<48} {:>9} {:>16} {:>26} {:>14} {:>16} {}",
            row.name,
            row.n,
            row.result,
            row.baseline,
            row.ratio,
            row.target,
            met_str(row.met)
        );
        self.0.push(row);
    }

    /// A throughput row: `ratio` is result speed / baseline speed.
    fn speed(
        &mut self,
        name: &str,
        n: usize,
        t: Duration,
        base: Option<(&str, Duration)>,
        target: &str,
        met: Option<bool>,
    ) {
        let (b, r) = match base {
            Some((what, bt)) => (
                format!("{} ({what})", rate_str(rate(n, bt))),
                format!("{:.2}× speed", bt.as_secs_f64() / t.as_secs_f64()),
            ),
            None => ("-".into(), "-".into()),
        };
        let result = format!("{} ({})", rate_str(rate(n, t)), dur(t));
        self.add(name, n, result, b, r, target, met);
    }

    /// A latency row: `ratio` is result time / baseline time.
    fn time(
        &mut self,
        name: &str,
        n: usize,
        t: Duration,
        base: Option<(&str, Duration)>,
        target: &str,
        met: Option<bool>,
    ) {
        let (b, r) = match base {
            Some((what, bt)) => (
                format!("{} ({what})", dur(bt)),
                format!("{:.2}× time", t.as_secs_f64() / bt.as_secs_f64()),
            ),
            None => ("-".into(), "-".into()),
        };
        self.add(name, n, dur(t), b, r, target, met);
    }

    fn print(&self) {
        println!();
        println!(
            "| name | N | result | baseline | ratio | target | met? |\n|---|---:|---|---|---|---|---|"
        );
        for r in &self.0 {
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.name,
                r.n,
                r.result,
                r.baseline,
                r.ratio,
                r.target,
                met_str(r.met)
            );
        }
    }
}

fn met_str(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "-",
    }
}

// ---------------------------------------------------------------------------------------------
// Baselines

/// Lists `dir` recursively in parallel (rayon), reading and parsing each `id.json` with plain
/// serde_json; returns the runs found. The floor of what a full reindex has to do.
fn raw_walk(dir: &Path, top: bool) -> usize {
    let mut subdirs = Vec::new();
    for entry in fs::read_dir(dir).expect("list") {
        let entry = entry.expect("entry");
        let ft = entry.file_type().expect("file type");
        let name = entry.file_name();
        if name == "id.json" && ft.is_file() {
            let text = fs::read(entry.path()).expect("read id.json");
            let v: serde_json::Value = serde_json::from_slice(&text).expect("parse id.json");
            black_box(v);
            return 1;
        }
        if ft.is_dir() && !(top && name == ".cairn") {
            subdirs.push(entry.path());
        }
    }
    subdirs.par_iter().map(|d| raw_walk(d, false)).sum()
}

/// The bench's own redb database: `n` identities → a record-sized value, in the index's
/// concurrency mode.
struct RawDb {
    db: Database,
    path: PathBuf,
    load: Duration,
}

impl RawDb {
    /// Creates it afresh and bulk-loads `pairs` (sorted by key) in one write transaction.
    fn build(path: PathBuf, pairs: &[([u8; 32], Vec<u8>)], mode: ConcurrencyMode) -> RawDb {
        let _ = fs::remove_file(&path);
        let db = Database::builder()
            .set_concurrency_mode(mode)
            .create(&path)
            .expect("raw db");
        let start = Instant::now();
        let txn = db.begin_write().expect("raw write");
        {
            let mut t = txn.open_table(RAW).expect("raw table");
            let mut cursor = t
                .upper_bound_mut(Bound::<[u8; 32]>::Unbounded)
                .expect("cursor");
            for (k, v) in pairs {
                cursor.insert_before(k, v.as_slice()).expect("raw insert");
            }
            cursor.close().expect("cursor close");
        }
        txn.commit().expect("raw commit");
        let load = start.elapsed();
        RawDb { db, path, load }
    }

    /// One lookup in its own read transaction, as `Index::get` does.
    fn get(&self, key: &[u8; 32]) -> usize {
        let txn = self.db.begin_read().expect("raw read");
        let t = txn.open_table(RAW).expect("raw table");
        let v = t.get(key).expect("raw get").expect("raw key present");
        v.value().len()
    }

    /// A full scan touching every value (a byte sum), split like `Index::filter_par` into 16
    /// identity ranges scanned in parallel, each in its own read transaction: the floor of a
    /// scanning `find`.
    fn scan(&self) -> u64 {
        (0u8..16)
            .into_par_iter()
            .map(|part| {
                let mut lo = [0u8; 32];
                let mut hi = [0xffu8; 32];
                lo[0] = part << 4;
                hi[0] = (part << 4) | 0x0f;
                let txn = self.db.begin_read().expect("raw read");
                let t = txn.open_table(RAW).expect("raw table");
                let mut sum = 0u64;
                for entry in t.range(lo..=hi).expect("raw range") {
                    let (_, v) = entry.expect("raw entry");
                    sum += v.value().iter().map(|&b| u64::from(b)).sum::<u64>();
                }
                sum
            })
            .sum()
    }

    fn bytes(&self) -> u64 {
        fs::metadata(&self.path).expect("raw db size").len()
    }
}

/// Record bytes of every fixture run (as the index encodes them), sorted by identity.
fn raw_pairs(fx: &Fixture) -> Vec<([u8; 32], Vec<u8>)> {
    let created_at = cairn::run::now_rfc3339();
    let mut pairs: Vec<_> = fx
        .ids
        .par_iter()
        .enumerate()
        .map(|(i, id)| {
            let mut m = model(i as u64);
            m.created_at = Some(created_at.clone());
            let location = Store::placement(&m.module, id)
                .expect("placement")
                .to_str()
                .expect("utf-8")
                .to_owned();
            let rec =
                RunRecord::from_header(&IdHeader::for_model(&m, *id), location).expect("record");
            (*id.as_bytes(), rec.encode())
        })
        .collect();
    pairs.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
    pairs
}

fn index_path(root: &Path) -> PathBuf {
    root.join(".cairn").join("index.redb")
}

/// A store whose index is built (rebuilt on open when missing; an index this build cannot read,
/// left by an older build, is deleted and rebuilt).
fn open_store(root: &Path, n: usize) -> Store {
    let store = Store::open(root).expect("open store");
    let runs = match store.stats() {
        Ok(stats) => stats.runs,
        Err(e) => {
            eprintln!("  index unreadable ({e}): deleting and rebuilding it");
            drop(store);
            fs::remove_file(index_path(root)).expect("delete index");
            return open_store(root, n);
        }
    };
    if runs != n as u64 {
        eprintln!("  index holds {runs} runs, expected {n}: rebuilding");
        store.reindex(false, &|_| {}).expect("reindex");
    }
    store
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").len()
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// What a full reindex must achieve.
#[derive(Clone, Copy)]
enum Goal {
    /// At least 0.8× the raw walk's speed and this many runs per second.
    Rate(f64),
    /// Done within this time.
    Within(Duration),
}

/// Full reindex at `fx.ids.len()` runs: a fresh index (delete, `Store::open`) and the reconcile
/// path (`reindex(false)` on a full index), beside a raw walk and `find_runs`.
/// Returns the index file's size right after the last fresh rebuild.
fn bench_reindex(table: &mut Table, fx: &Fixture, passes: usize, goal: Goal) -> u64 {
    let n = fx.ids.len();
    let root = &fx.root;
    println!("reindex, {n} runs, warm cache, median of {passes} passes (+1 untimed)");
    // Warm-up (also makes sure the index exists for the reconcile passes).
    assert_eq!(raw_walk(root, true), n);
    drop(open_store(root, n));

    let (mut raw, mut find, mut fresh, mut full, mut incr) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut full_report, mut incr_report) = (String::new(), String::new());
    let (mut fresh_bytes, mut full_bytes) = (0, 0);
    for pass in 0..passes {
        let t = Instant::now();
        assert_eq!(black_box(raw_walk(root, true)), n);
        raw.push(t.elapsed());

        let t = Instant::now();
        let w = cairn::walk::find_runs(root);
        find.push(t.elapsed());
        assert_eq!((w.runs.len(), w.errors.len()), (n, 0));
        drop(w);

        fs::remove_file(index_path(root)).expect("delete index");
        let t = Instant::now();
        let store = Store::open(root).expect("open (rebuild)");
        fresh.push(t.elapsed());
        // The file Store::stats().file_bytes reports, without its scan of every record.
        fresh_bytes = file_len(&index_path(root));

        let t = Instant::now();
        let report = store.reindex(false, &|_| {}).expect("reindex");
        full.push(t.elapsed());
        full_bytes = file_len(&index_path(root));
        assert_eq!(report.runs, n);
        full_report = report.to_string();

        let t = Instant::now();
        let report = store.reindex(true, &|_| {}).expect("incremental reindex");
        incr.push(t.elapsed());
        incr_report = report.to_string();
        eprintln!(
            "  pass {pass}: raw {} find_runs {} rebuild {} reindex {} incremental {}",
            dur(raw[pass]),
            dur(find[pass]),
            dur(fresh[pass]),
            dur(full[pass]),
            dur(incr[pass])
        );
    }
    println!("  last reindex(false): {full_report}");
    println!("  last reindex(true):  {incr_report}");
    let (raw, find, fresh, full, incr) = (
        median(raw),
        median(find),
        median(fresh),
        median(full),
        median(incr),
    );
    let raw_b = Some(("raw walk", raw));
    table.speed(
        "walk: raw rayon list+read+serde_json (baseline)",
        n,
        raw,
        None,
        "-",
        None,
    );
    table.speed("walk: cairn::walk::find_runs", n, find, raw_b, "-", None);
    // Against the raw walk: at least 0.8× its speed, and the absolute goal.
    let (target, ok): (String, Box<dyn Fn(Duration) -> bool>) = match goal {
        Goal::Rate(r) => (
            format!("≥0.8×, ≥{:.0}k/s", r / 1e3),
            Box::new(move |t| rate(n, t) >= 0.8 * rate(n, raw) && rate(n, t) >= r),
        ),
        Goal::Within(limit) => (
            format!("< {:.0} s", limit.as_secs_f64()),
            Box::new(move |t| t < limit),
        ),
    };
    table.speed(
        "reindex full, fresh index (delete + Store::open)",
        n,
        fresh,
        raw_b,
        &target,
        Some(ok(fresh)),
    );
    table.speed(
        "  same, against find_runs",
        n,
        fresh,
        Some(("find_runs", find)),
        "≥0.8×",
        Some(rate(n, fresh) >= 0.8 * rate(n, find)),
    );
    table.speed(
        "reindex(false) on a full index (reconcile)",
        n,
        full,
        raw_b,
        &target,
        Some(ok(full)),
    );
    table.time(
        "reindex(true), nothing changed",
        n,
        incr,
        Some(("raw walk", raw)),
        "-",
        None,
    );
    for (name, b) in [
        ("index file per run, fresh rebuild", fresh_bytes),
        ("index file per run, after reindex(false)", full_bytes),
    ] {
        table.add(
            name,
            n,
            bytes(b as f64 / n as f64),
            "-".into(),
            "-".into(),
            "-",
            None,
        );
    }
    fresh_bytes
}

/// Lookups, `get_or_create` of existing runs and `find`, at `fx.ids.len()` runs.
/// `fresh_bytes`: the index file's size after a fresh rebuild, compared with the raw table's.
fn bench_queries(
    table: &mut Table,
    fx: &Fixture,
    lookups: usize,
    big: bool,
    fresh_bytes: Option<u64>,
) {
    let n = fx.ids.len();
    let root = &fx.root;
    println!("queries, {n} runs");
    let store = open_store(root, n);
    let t = Instant::now();
    let pairs = raw_pairs(fx);
    eprintln!("  raw records built in {}", dur(t.elapsed()));
    let raw_path = root.with_extension("raw.redb");
    let raw = RawDb::build(raw_path.clone(), &pairs, ConcurrencyMode::MultiWriter);
    let excl_path = root.with_extension("raw-excl.redb");
    let excl = RawDb::build(excl_path.clone(), &pairs, ConcurrencyMode::default());
    let some_records: Vec<([u8; 32], Vec<u8>)> =
        pairs.iter().step_by((n / 20_000).max(1)).cloned().collect();
    drop(pairs);

    {
        // Without a reindex pass in this run: the index as opened (rebuilt when it was missing
        // or of another schema version).
        let fresh = fresh_bytes.unwrap_or_else(|| store.stats().expect("stats").file_bytes);
        let per = fresh as f64 / n as f64;
        let raw_per = raw.bytes() as f64 / n as f64;
        table.add(
            if fresh_bytes.is_some() {
                "index size per run, fresh (stats().file_bytes / N)"
            } else {
                "index size per run, as opened (stats().file_bytes / N)"
            },
            n,
            bytes(per),
            format!("{} (raw redb, runs only)", bytes(raw_per)),
            format!("{:.2}× size", per / raw_per),
            "-",
            None,
        );
    }
    if big {
        table.time(
            "raw redb bulk load of the runs (baseline)",
            n,
            raw.load,
            None,
            "-",
            None,
        );
    }

    // Lookups of random existing identities.
    let mut rng = Rng(0x5eed ^ n as u64);
    let picks: Vec<usize> = (0..lookups).map(|_| rng.below(n)).collect();
    let ids: Vec<Identity> = picks.iter().map(|&i| fx.ids[i]).collect();
    let hexes: Vec<String> = ids.iter().map(Identity::to_hex).collect();
    let id_paths: Vec<PathBuf> = picks
        .iter()
        .map(|&i| {
            let m = &MODULES[i % 5];
            root.join(Store::placement(m, &fx.ids[i]).expect("placement"))
                .join("id.json")
        })
        .collect();
    // Warm-up pass over everything touched.
    for (id, hex) in ids.iter().zip(&hexes) {
        black_box(store.get(id).expect("get"));
        black_box(store.record_of(hex).expect("record_of"));
        black_box(raw.get(id.as_bytes()));
        black_box(excl.get(id.as_bytes()));
    }
    let raw_get = p50_p99(sample(&ids, |id| {
        black_box(raw.get(id.as_bytes()));
    }));

    let excl_get = p50_p99(sample(&ids, |id| {
        black_box(excl.get(id.as_bytes()));
    }));
    // Interleaved, one each per identity: `record_of` and its floor, a raw get in one kept read
    // transaction (a lookup reuses its snapshot while the index is unchanged).
    let (record_of, kept_get) = {
        let txn = raw.db.begin_read().expect("raw read");
        let kept = txn.open_table(RAW).expect("raw table");
        let (mut mine, mut floor) = (Vec::new(), Vec::new());
        for (id, hex) in ids.iter().zip(&hexes) {
            let t = Instant::now();
            black_box(
                kept.get(id.as_bytes())
                    .expect("raw get")
                    .expect("present")
                    .value()
                    .len(),
            );
            floor.push(t.elapsed().as_nanos() as u64);
            let t = Instant::now();
            assert!(store.record_of(hex).expect("record_of").is_some());
            mine.push(t.elapsed().as_nanos() as u64);
        }
        (p50_p99(mine), p50_p99(floor))
    };
    let items: Vec<(&Identity, &PathBuf)> = ids.iter().zip(&id_paths).collect();
    let raw_get_read = p50_p99(sample(&items, |(id, path)| {
        black_box(raw.get(id.as_bytes()));
        let text = fs::read(path).expect("read id.json");
        black_box(serde_json::from_slice::<serde_json::Value>(&text).expect("parse"));
    }));
    let get = p50_p99(sample(&ids, |id| {
        assert!(store.get(id).expect("get").is_some());
    }));
    let k = |s: &str| format!("{s}, {}k random", lookups / 1000);
    table.time(
        &k("lookup p50: record_of(full hex), index only"),
        n,
        record_of.0,
        Some(("raw redb get", raw_get.0)),
        "≤ 5 µs",
        Some(record_of.0 <= Duration::from_micros(5)),
    );
    table.time(
        &k("lookup p99: record_of(full hex), index only"),
        n,
        record_of.1,
        Some(("raw redb get", raw_get.1)),
        "-",
        None,
    );
    table.time(
        &k("lookup p50 again, against a raw get in a kept read txn"),
        n,
        record_of.0,
        Some(("raw get, kept txn", kept_get.0)),
        "≤ 5 µs",
        Some(record_of.0 <= Duration::from_micros(5)),
    );
    table.time(
        "  raw redb get p50, default ExclusiveWriter mode",
        n,
        excl_get.0,
        Some(("MultiWriter", raw_get.0)),
        "-",
        None,
    );
    table.time(
        &k("lookup p50: Store::get (index + id.json)"),
        n,
        get.0,
        Some(("raw get+read+parse", raw_get_read.0)),
        "-",
        None,
    );
    table.time(
        &k("lookup p99: Store::get (index + id.json)"),
        n,
        get.1,
        Some(("raw get+read+parse", raw_get_read.1)),
        "-",
        None,
    );

    // get_or_create of existing runs; the caller already holds its model.
    let mut rng = Rng(0xc0ffee ^ n as u64);
    let calls: Vec<(Model, PathBuf)> = (0..10_000)
        .map(|_| {
            let i = rng.below(n);
            let m = model(i as u64);
            let path = root
                .join(Store::placement(&m.module, &fx.ids[i]).expect("placement"))
                .join("id.json");
            (m, path)
        })
        .collect();
    for (m, _) in &calls {
        black_box(store.get_or_create(m).expect("warm get_or_create"));
    }
    let goc = p50_p99(sample(&calls, |(m, _)| {
        assert!(!store.get_or_create(m).expect("get_or_create").was_created());
    }));
    let goc_base = p50_p99(sample(&calls, |(m, path)| {
        let id = m.identity().expect("identity");
        black_box(raw.get(id.as_bytes()));
        let text = fs::read(path).expect("read id.json");
        black_box(serde_json::from_slice::<serde_json::Value>(&text).expect("parse"));
    }));
    table.time(
        "get_or_create, existing: median of 10k",
        n,
        goc.0,
        Some(("identity+raw get+read+parse", goc_base.0)),
        "≤ 50 µs",
        Some(goc.0 <= Duration::from_micros(50)),
    );
    table.time(
        "get_or_create, existing: p99 of 10k",
        n,
        goc.1,
        Some(("identity+raw get+read+parse", goc_base.1)),
        "-",
        None,
    );

    // find over every record: a config equality filter and a range filter.
    let passes = if big { 3 } else { 7 };
    let target = if big { 500 } else { 5 };
    let eq = Query::new().filter(
        Filter::new(
            "config.optimizer.name",
            Condition::Eq(Value::Text("sgd".into())),
        )
        .expect("filter"),
    );
    let lo = n - n / 10;
    let range = Query::new().filter(
        Filter::new("config.seed", Condition::Ge(Value::Integer(lo as i128))).expect("filter"),
    );
    let expect_eq = (0..n).filter(|i| (i / 3) % 4 == 1).count();
    let mut scan_t = Vec::new();
    for (name, q, want) in [
        (
            "find: config.optimizer.name == \"sgd\" (25% hit)",
            &eq,
            expect_eq,
        ),
        ("find: config.seed >= 0.9·N (10% hit)", &range, n / 10),
    ] {
        assert_eq!(store.find(q).expect("find").len(), want);
        let mut times = Vec::new();
        for _ in 0..passes {
            let t = Instant::now();
            let hits = store.find(q).expect("find");
            times.push(t.elapsed());
            assert_eq!(hits.len(), want);
            drop(hits);
            let t = Instant::now();
            black_box(raw.scan());
            scan_t.push(t.elapsed());
        }
        let t = median(times);
        table.time(
            name,
            n,
            t,
            Some(("raw redb scan", median(scan_t.clone()))),
            &format!("≤ {target} ms"),
            Some(t <= Duration::from_millis(target)),
        );
    }
    // The first 100 matches of the 25% query (no sort): reads only as far as it needs.
    let first = eq.clone().limit(100);
    let mut times = Vec::new();
    for _ in 0..passes {
        let t = Instant::now();
        assert_eq!(store.find(&first).expect("find").len(), 100.min(expect_eq));
        times.push(t.elapsed());
    }
    table.time(
        "find: the 25% query with limit 100, no sort",
        n,
        median(times),
        Some(("raw redb scan", median(scan_t.clone()))),
        "-",
        None,
    );
    let mut excl_t = Vec::new();
    for _ in 0..passes {
        let t = Instant::now();
        black_box(excl.scan());
        excl_t.push(t.elapsed());
    }
    table.time(
        "  raw redb scan, default ExclusiveWriter mode",
        n,
        median(excl_t),
        Some(("MultiWriter", median(scan_t))),
        "-",
        None,
    );
    decode_costs(table, n, &some_records, &eq);
    drop((raw, excl));
    let _ = fs::remove_file(raw_path);
    let _ = fs::remove_file(excl_path);
}

/// One step of decoding a stored record (identity, bytes), named.
type Step<'a> = (&'a str, &'a dyn Fn(&[u8; 32], &[u8]));

/// Where a scanning `find` spends its time: the cost per record (one thread) of each step of
/// decoding a stored record, beside touching its bytes.
fn decode_costs(table: &mut Table, n: usize, records: &[([u8; 32], Vec<u8>)], q: &Query) {
    let path = Path::new("index.redb");
    let per_record = |f: &dyn Fn(&[u8; 32], &[u8])| {
        let runs: Vec<Duration> = (0..5)
            .map(|_| {
                let t = Instant::now();
                for (k, v) in records {
                    f(k, v);
                }
                t.elapsed() / records.len() as u32
            })
            .collect();
        median(runs)
    };
    let touch = per_record(&|_, v| {
        black_box(v.iter().map(|&b| u64::from(b)).sum::<u64>());
    });
    let steps: [Step; 5] = [
        ("ciborium::Value decode", &|_, v| {
            let c: ciborium::Value = ciborium::de::from_reader(v).expect("cbor");
            black_box(c);
        }),
        ("Value::from_cbor_bytes", &|_, v| {
            black_box(Value::from_cbor_bytes(v, "r").expect("cbor"));
        }),
        ("Value::from_canonical_cbor", &|_, v| {
            black_box(Value::from_canonical_cbor(v, "r").expect("cbor"));
        }),
        ("RunRecord::decode", &|k, v| {
            black_box(RunRecord::decode(Identity::from_bytes(*k), v, path).expect("decode"));
        }),
        ("RunRecord::decode + filter", &|k, v| {
            let r = RunRecord::decode(Identity::from_bytes(*k), v, path).expect("decode");
            black_box(q.matches(&r));
        }),
    ];
    for (name, f) in steps {
        table.time(
            &format!("  find, per record, 1 thread: {name}"),
            n,
            per_record(f),
            Some(("byte sum", touch)),
            "-",
            None,
        );
    }
}

/// `cargo test --all-targets` runs bench targets without `--bench`: check the harness on a few
/// hundred runs in a temporary directory, quickly.
fn smoke() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("runs");
    fs::create_dir_all(&root).expect("root");
    let fx = Fixture {
        ids: write_runs(&root, 300),
        root,
        created: None,
    };
    assert_eq!(raw_walk(&fx.root, true), 300);
    let mut table = Table::default();
    let fresh = bench_reindex(&mut table, &fx, 1, Goal::Rate(0.0));
    bench_queries(&mut table, &fx, 1000, false, Some(fresh));
    table.print();
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return smoke();
    }
    let big = std::env::var("CAIRN_BENCH_1M").is_ok_and(|v| v == "1");
    if std::env::args().any(|a| a == "--fixtures-only") {
        for n in [10_000, 100_000]
            .into_iter()
            .chain(big.then_some(1_000_000))
        {
            let fx = fixture(n);
            println!("fixture {}: {} runs", fx.root.display(), fx.ids.len());
        }
        return;
    }
    let mut table = Table::default();
    println!(
        "cairn index bench ({} rayon threads; results are medians unless marked p99)",
        rayon::current_num_threads()
    );
    println!(
        "  {:<48} {:>9} {:>16} {:>26} {:>14} {:>16} met?",
        "name", "N", "result", "baseline", "ratio", "target"
    );

    // `CAIRN_BENCH_ONLY=reindex` (or `queries`) runs one part alone.
    let only = std::env::var("CAIRN_BENCH_ONLY").ok();
    let part = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if part("queries") {
        let fx = fixture(10_000);
        fixture_row(&mut table, &fx);
        bench_queries(&mut table, &fx, 100_000, false, None);
    }

    if part("reindex") {
        let fx = fixture(100_000);
        fixture_row(&mut table, &fx);
        bench_reindex(&mut table, &fx, 5, Goal::Rate(60_000.0));
    }

    if big {
        let fx = fixture(1_000_000);
        fixture_row(&mut table, &fx);
        let fresh = part("reindex")
            .then(|| bench_reindex(&mut table, &fx, 3, Goal::Within(Duration::from_secs(20))));
        if part("queries") {
            bench_queries(&mut table, &fx, 100_000, true, fresh);
        }
    } else {
        println!("(set CAIRN_BENCH_1M=1 for the 1,000,000-run figures)");
    }
    table.print();
    std::io::stdout().flush().expect("flush");
}

fn fixture_row(table: &mut Table, fx: &Fixture) {
    let n = fx.ids.len();
    match fx.created {
        Some(d) => table.speed("fixture creation (rayon, no fsync)", n, d, None, "-", None),
        None => println!("  fixture {} reused (cached)", fx.root.display()),
    }
}
