//! Store latency: `Store::get_or_create` of new and of existing runs, each measured beside a
//! baseline of the bare file system work in the same run (see BENCHMARKS.md).
//!
//! Run with `cargo bench --bench store`. fsync dominates, so sample sizes are small.

use std::fs::{self, File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use cairn::{Model, Store};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde::Serialize;

const MODULE: &str = "experiments.lm.train";

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

fn bench_store(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path().join("store")).expect("store");

    // Sizes of the two files a new run gets, so that the baseline writes the same bytes.
    let probe = store.get_or_create(&model(u64::MAX)).expect("probe run");
    let model_len = fs::metadata(probe.path().join("model.json")).unwrap().len() as usize;
    let id_len = fs::metadata(probe.path().join("id.json")).unwrap().len() as usize;
    eprintln!("store bench inputs: model.json {model_len} B, id.json {id_len} B");
    let model_bytes = vec![b'm'; model_len];
    let id_bytes = vec![b'i'; id_len];

    let mut g = c.benchmark_group("get_or_create_new");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
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

    // The same durable work without cairn: mkdir a staging directory, create + write + fsync
    // two files of the same sizes, fsync the staging directory, rename it into a (pre-created)
    // shard directory and fsync that parent. Four fsyncs, like get_or_create.
    let base = tmp.path().join("baseline");
    let staging_root = base.join("tmp");
    fs::create_dir_all(&staging_root).unwrap();
    for shard in 0..256 {
        fs::create_dir_all(base.join("runs").join(format!("{shard:02x}"))).unwrap();
    }
    let mut n = 0u64;
    g.bench_function("baseline_mkdir_write2_fsync_rename", |b| {
        b.iter(|| {
            n += 1;
            let staging = staging_root.join(format!("{n:016x}"));
            fs::create_dir(&staging).unwrap();
            write_fsync(&staging.join("model.json"), &model_bytes);
            write_fsync(&staging.join("id.json"), &id_bytes);
            fsync_dir(&staging);
            let parent = base.join("runs").join(format!("{:02x}", n % 256));
            fs::rename(&staging, parent.join(format!("{n:016x}"))).unwrap();
            fsync_dir(&parent);
        })
    });
    g.finish();

    // An existing run: identity, stat of id.json at the default placement, read + parse it.
    let existing = model(0);
    let id_path = store
        .get_or_create(&existing)
        .unwrap()
        .path()
        .join("id.json");
    let mut g = c.benchmark_group("get_or_create_existing");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
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
    g.bench_function("baseline_stat_read_id_json", |b| {
        b.iter(|| {
            let meta = fs::symlink_metadata(black_box(&id_path)).unwrap();
            (meta.is_file(), fs::read(&id_path).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
