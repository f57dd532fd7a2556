//! Store latency: `Store::get_or_create` of new and of existing runs, each measured beside
//! baselines of the bare file system (and raw redb) work in the same run (see BENCHMARKS.md).
//!
//! Run with `cargo bench --bench store`. fsync dominates, so sample sizes are small. Before the
//! criterion groups, an interleaved pass (every variant once per round) prints medians and
//! per-round ratios to stderr: fsync latency on a shared machine swings far more between
//! criterion's back-to-back benchmarks than between neighbours in one round.

use std::fs::{self, File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn::{Model, Store};
use criterion::measurement::WallTime;
use criterion::{BatchSize, BenchmarkGroup, Criterion, criterion_group, criterion_main};
use redb::{ConcurrencyMode, Database, ReadableDatabase, TableDefinition};
use serde::Serialize;

const MODULE: &str = "experiments.lm.train";
/// The baselines' raw redb table: identity bytes → a record-sized value.
const RAW: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("raw");
/// Size of the raw record the baselines write (an index record is of this order).
const RECORD_LEN: usize = 200;

/// A small training config; `seed` varies so that every run is new.
#[derive(Serialize)]
struct Train {
    lr: f64,
    batch_size: u32,
    epochs: u32,
    optimizer: &'static str,
    dropout: f64,
    seed: u64,
}

fn model(seed: u64) -> Model {
    let cfg = Train {
        lr: 3.0e-4,
        batch_size: 512,
        epochs: 40,
        optimizer: "adamw",
        dropout: 0.1,
        seed,
    };
    Model::new(MODULE)
        .with_config(&cfg)
        .and_then(|m| m.with_predicate(&serde_json::json!({"split": "val"})))
        .expect("model")
}

fn write_fsync(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

fn fsync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

/// A raw redb database opened like cairn's index (multi-writer mode, default durability).
fn raw_db(path: &Path) -> Database {
    let db = Database::builder()
        .set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .create(path)
        .unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(RAW).unwrap();
    txn.commit().unwrap();
    db
}

fn key(n: u64) -> [u8; 32] {
    *blake3::hash(&n.to_le_bytes()).as_bytes()
}

/// The bare durable work of materializing one run directory: mkdir a staging directory, create +
/// write + fsync two files of the given sizes, fsync the staging directory, rename it into a
/// pre-created shard directory and fsync that parent (four fsyncs, like `get_or_create`).
struct DirWork {
    staging_root: PathBuf,
    runs: PathBuf,
    model_bytes: Vec<u8>,
    id_bytes: Vec<u8>,
}

impl DirWork {
    fn new(base: &Path, model_len: usize, id_len: usize) -> Self {
        let staging_root = base.join("tmp");
        let runs = base.join("runs");
        fs::create_dir_all(&staging_root).unwrap();
        for shard in 0..256 {
            fs::create_dir_all(runs.join(format!("{shard:02x}"))).unwrap();
        }
        DirWork {
            staging_root,
            runs,
            model_bytes: vec![b'm'; model_len],
            id_bytes: vec![b'i'; id_len],
        }
    }

    fn run(&self, n: u64) {
        let name = format!("{n:016x}");
        let staging = self.staging_root.join(&name);
        fs::create_dir(&staging).unwrap();
        write_fsync(&staging.join("model.json"), &self.model_bytes);
        write_fsync(&staging.join("id.json"), &self.id_bytes);
        fsync_dir(&staging);
        let parent = self.runs.join(format!("{:02x}", n % 256));
        fs::rename(&staging, parent.join(name)).unwrap();
        fsync_dir(&parent);
    }
}

/// Interleaved timing, robust to a shared machine: each round runs every variant once, in
/// rotating order, so that all see the same load. Prints each variant's median and p90 and the
/// median over rounds of (variant 0 time / this variant's time) to stderr.
fn paired(title: &str, rounds: usize, variants: &mut [(&str, &mut dyn FnMut())]) {
    let k = variants.len();
    let mut times = vec![Vec::with_capacity(rounds); k];
    for r in 0..rounds {
        for j in 0..k {
            let i = (r + j) % k;
            let start = Instant::now();
            (variants[i].1)();
            times[i].push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    let quantile = |v: &[f64], q: f64| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    eprintln!("paired {title} ({rounds} interleaved rounds):");
    for i in 0..k {
        let ratios: Vec<f64> = (0..rounds).map(|r| times[0][r] / times[i][r]).collect();
        eprintln!(
            "  {:<50} median {:>10.2} us  p90 {:>10.2} us  ratio {:.2}",
            variants[i].0,
            quantile(&times[i], 0.5),
            quantile(&times[i], 0.9),
            quantile(&ratios, 0.5),
        );
    }
}

fn configure(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
}

fn bench_store(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store")).expect("store");

    // Sizes of the two files a new run gets, so that the baselines write the same bytes.
    let probe = store.get_or_create(&model(u64::MAX)).expect("probe run");
    let model_len = fs::metadata(probe.path().join("model.json")).unwrap().len() as usize;
    let id_len = fs::metadata(probe.path().join("id.json")).unwrap().len() as usize;
    eprintln!("store bench inputs: model.json {model_len} B, id.json {id_len} B");

    let dir_work = DirWork::new(&tmp.path().join("baseline"), model_len, id_len);
    let db = raw_db(&tmp.path().join("raw.redb"));
    let record = vec![b'r'; RECORD_LEN];
    // The directory work plus what recording the run in the index costs at the least: one raw
    // redb write transaction inserting one record-sized value, committed durably.
    let dir_work_redb = |n: u64| {
        dir_work.run(n);
        let txn = db.begin_write().unwrap();
        txn.open_table(RAW)
            .unwrap()
            .insert(key(n), record.as_slice())
            .unwrap();
        txn.commit().unwrap();
    };
    let existing = model(0);
    let id_path = store
        .get_or_create(&existing)
        .unwrap()
        .path()
        .join("id.json");
    let existing_key = key(0);
    dir_work_redb(0);
    let redb_get_stat_read = || {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(RAW).unwrap();
        let rec = table.get(black_box(&existing_key)).unwrap().unwrap();
        let meta = fs::symlink_metadata(black_box(&id_path)).unwrap();
        (
            rec.value().len(),
            meta.is_file(),
            fs::read(&id_path).unwrap(),
        )
    };
    let stat_read = || {
        let meta = fs::symlink_metadata(black_box(&id_path)).unwrap();
        (meta.is_file(), fs::read(&id_path).unwrap())
    };

    // Interleaved passes first (their own seeds and names, far from the criterion ones).
    let (mut s1, mut n1, mut n2) = (1u64 << 40, 1u64 << 40, 2u64 << 40);
    paired(
        "get_or_create_new",
        300,
        &mut [
            ("get_or_create", &mut || {
                s1 += 1;
                assert!(store.get_or_create(&model(s1)).unwrap().was_created());
            }),
            ("baseline_mkdir_write2_fsync_rename", &mut || {
                n1 += 1;
                dir_work.run(n1);
            }),
            (
                "baseline_mkdir_write2_fsync_rename_redb_commit",
                &mut || {
                    n2 += 1;
                    dir_work_redb(n2);
                },
            ),
        ],
    );
    paired(
        "get_or_create_existing",
        5000,
        &mut [
            ("get_or_create", &mut || {
                assert!(!store.get_or_create(&existing).unwrap().was_created());
            }),
            ("model_identity_only", &mut || {
                black_box(black_box(&existing).identity().unwrap());
            }),
            ("baseline_stat_read_id_json", &mut || {
                black_box(stat_read());
            }),
            ("baseline_redb_get_stat_read_id_json", &mut || {
                black_box(redb_get_stat_read());
            }),
        ],
    );

    let mut g = c.benchmark_group("get_or_create_new");
    configure(&mut g);
    let mut seed = 0u64;
    g.bench_function("get_or_create", |b| {
        b.iter_batched(
            || {
                seed += 1;
                model(seed)
            },
            |m| {
                let run = store.get_or_create(&m).unwrap();
                assert!(run.was_created());
                run
            },
            BatchSize::SmallInput,
        )
    });
    let mut n = 0u64;
    g.bench_function("baseline_mkdir_write2_fsync_rename", |b| {
        b.iter(|| {
            n += 1;
            dir_work.run(n);
        })
    });
    g.bench_function("baseline_mkdir_write2_fsync_rename_redb_commit", |b| {
        b.iter(|| {
            n += 1;
            dir_work_redb(n);
        })
    });
    g.finish();

    // An existing run: identity, index lookup, stat + read + parse of its id.json.
    let mut g = c.benchmark_group("get_or_create_existing");
    configure(&mut g);
    g.bench_function("get_or_create", |b| {
        b.iter(|| {
            let run = store.get_or_create(black_box(&existing)).unwrap();
            assert!(!run.was_created());
            run
        })
    });
    g.bench_function("model_identity_only", |b| {
        b.iter(|| black_box(&existing).identity().unwrap())
    });
    g.bench_function("baseline_stat_read_id_json", |b| b.iter(stat_read));
    g.bench_function("baseline_redb_get_stat_read_id_json", |b| {
        b.iter(redb_get_stat_read)
    });
    g.finish();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
