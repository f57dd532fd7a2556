//! Identity throughput: identity v1 of a realistic ~1 KiB config, from a serde struct, from JSON
//! text and through a schema, each measured beside a baseline in the same run (see BENCHMARKS.md).
//! The `reference_tree_path` variants compute the same identity the way cairn did before its
//! direct encoder (serde or JSON into a `ciborium::Value` tree, then a canonical tree, then the
//! encoding), so before/after is a same-run ratio too.
//!
//! Run with `cargo bench --bench identity`. Before the criterion groups, an interleaved pass (every
//! variant once per round, 20,000 rounds) prints medians and per-round ratios to stderr: those
//! ratios hold even while other processes share the machine. Criterion's warm-up and measurement
//! windows are short (1 s + 3 s) so that each benchmark and its baseline run seconds apart.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cairn::canonical::Value;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::Serialize;

/// Optimizer settings.
#[derive(Serialize, Clone)]
struct Optimizer {
    name: String,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    warmup_steps: u32,
    grad_clip: f64,
    lr_schedule: Vec<f64>,
}

/// Data pipeline settings.
#[derive(Serialize, Clone)]
struct Data {
    dataset: String,
    split: String,
    root: String,
    batch_size: u32,
    num_workers: u32,
    shuffle: bool,
    max_seq_len: u32,
    tokenizer: String,
    augment: Vec<String>,
}

/// Network architecture.
#[derive(Serialize, Clone)]
struct Network {
    arch: String,
    layers: u32,
    hidden: u32,
    heads: u32,
    dropout: f64,
    activation: String,
    norm_eps: f64,
    tie_embeddings: bool,
    vocab_size: u32,
}

/// A training config whose compact JSON is about 1 KiB.
#[derive(Serialize, Clone)]
struct TrainConfig {
    optimizer: Optimizer,
    data: Data,
    model: Network,
    seed: u64,
    epochs: u32,
    precision: String,
    log_every: u32,
    checkpoint_dir: String,
}

fn config() -> TrainConfig {
    // 20 non-integral floats: a cosine-like schedule that stays a float after canonicalization.
    let lr_schedule = (0..20)
        .map(|i| 3.0e-4 * (0.5 + 0.5 * (i as f64 * 0.157).cos()) + 1.0e-7)
        .collect();
    TrainConfig {
        optimizer: Optimizer {
            name: "adamw".into(),
            lr: 3.0e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1.0e-8,
            weight_decay: 0.01,
            warmup_steps: 2000,
            grad_clip: 1.5,
            lr_schedule,
        },
        data: Data {
            dataset: "openwebtext-2".into(),
            split: "train".into(),
            root: "/datasets/openwebtext/v2/shards".into(),
            batch_size: 512,
            num_workers: 8,
            shuffle: true,
            max_seq_len: 1024,
            tokenizer: "gpt2-bpe-50257".into(),
            augment: vec!["random_crop".into(), "token_dropout".into()],
        },
        model: Network {
            arch: "transformer-decoder".into(),
            layers: 12,
            hidden: 768,
            heads: 12,
            dropout: 0.1,
            activation: "gelu".into(),
            norm_eps: 1.0e-5,
            tie_embeddings: true,
            vocab_size: 50257,
        },
        seed: 1234567,
        epochs: 40,
        precision: "bf16-mixed".into(),
        log_every: 50,
        checkpoint_dir: "/scratch/checkpoints/gpt-small".into(),
    }
}

const MODULE: &str = "experiments.lm.train";

/// The identity request `{"module": .., "config": ..}` for `cfg`, as compact JSON text.
fn request_json(cfg: &TrainConfig) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "module": MODULE, "config": cfg }))
        .expect("config to JSON")
}

/// The identity through trees, as cairn computed it before the direct encoder.
fn tree_identity(cfg: &TrainConfig) -> cairn::Identity {
    let config = Value::from_cbor_value(ciborium::Value::serialized(cfg).unwrap(), "config");
    let document = cairn::identity::document(
        MODULE,
        config.unwrap(),
        Value::Map(Default::default()),
        &cairn::Schema::empty(),
    );
    cairn::Identity::of_document(&document.unwrap())
}

/// The identity of a request through trees, as cairn computed it before the direct encoder.
fn tree_identity_of_json(text: &[u8]) -> cairn::Identity {
    let request = cairn::json::parse(text).unwrap();
    let Value::Map(mut request) = Value::from_cbor_value(request, "$").unwrap() else {
        panic!("not a map")
    };
    let Some(Value::Text(module)) = request.remove("module") else {
        panic!("no module")
    };
    let config = request.remove("config").unwrap();
    let predicate = Value::Map(Default::default());
    let document =
        cairn::identity::document(&module, config, predicate, &cairn::Schema::empty()).unwrap();
    cairn::Identity::of_document(&document)
}

fn schema() -> cairn::Schema {
    cairn::Schema::new(
        &serde_json::json!({
            "optimizer": {"beta1": 0.9, "beta2": 0.999, "eps": 1.0e-8},
            "data": {"shuffle": true},
            "precision": "fp32",
        }),
        &["data.num_workers", "log_every", "checkpoint_dir"],
    )
    .expect("schema")
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

fn bench_identity(c: &mut Criterion) {
    let cfg = config();
    let config_json = serde_json::to_vec(&cfg).expect("config to JSON");
    let request = request_json(&cfg);
    let doc_len = cairn::document_of_json(&request)
        .expect("document")
        .to_cbor()
        .len();
    let doc_bytes: Vec<u8> = (0..doc_len).map(|i| (i * 31 % 251) as u8).collect();
    let schema = schema();

    // The three paths must agree with each other, or the numbers compare different work.
    let from_struct = cairn::identity(MODULE, &cfg, &cairn::Empty).expect("identity");
    assert_eq!(
        from_struct,
        cairn::identity_of_json(&request).expect("identity of JSON")
    );
    assert_eq!(from_struct, tree_identity(&cfg));
    assert_eq!(from_struct, tree_identity_of_json(&request));
    eprintln!(
        "identity bench inputs: config JSON {} B, request JSON {} B, canonical document {} B",
        config_json.len(),
        request.len(),
        doc_len
    );

    // Interleaved passes first: ratios that hold even when other processes share the machine.
    for _ in 0..2000 {
        black_box(cairn::identity(MODULE, &cfg, &cairn::Empty).unwrap()); // warm-up
    }
    paired(
        "identity_struct",
        20_000,
        &mut [
            ("identity", &mut || {
                black_box(
                    cairn::identity(black_box(MODULE), black_box(&cfg), &cairn::Empty).unwrap(),
                );
            }),
            ("identity_with_schema", &mut || {
                black_box(
                    cairn::identity_with_schema(
                        black_box(MODULE),
                        black_box(&cfg),
                        &cairn::Empty,
                        black_box(&schema),
                    )
                    .unwrap(),
                );
            }),
            ("baseline_blake3_same_bytes", &mut || {
                black_box(blake3::hash(black_box(&doc_bytes)));
            }),
            ("baseline_serde_json_to_vec_blake3", &mut || {
                black_box(blake3::hash(&serde_json::to_vec(black_box(&cfg)).unwrap()));
            }),
            ("reference_tree_path", &mut || {
                black_box(tree_identity(black_box(&cfg)));
            }),
        ],
    );
    paired(
        "identity_json",
        20_000,
        &mut [
            ("identity_of_json", &mut || {
                black_box(cairn::identity_of_json(black_box(&request)).unwrap());
            }),
            ("baseline_serde_json_value_parse_blake3", &mut || {
                let v: serde_json::Value = serde_json::from_slice(black_box(&request)).unwrap();
                black_box((v, blake3::hash(black_box(&request))));
            }),
            ("baseline_serde_json_ignored_any_blake3", &mut || {
                let v: serde::de::IgnoredAny = serde_json::from_slice(black_box(&request)).unwrap();
                black_box((v, blake3::hash(black_box(&request))));
            }),
            ("reference_tree_path_json", &mut || {
                black_box(tree_identity_of_json(black_box(&request)));
            }),
        ],
    );

    let mut g = c.benchmark_group("identity_struct");
    g.throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("identity", |b| {
        b.iter(|| cairn::identity(black_box(MODULE), black_box(&cfg), &cairn::Empty).unwrap())
    });
    g.bench_function("identity_with_schema", |b| {
        b.iter(|| {
            cairn::identity_with_schema(
                black_box(MODULE),
                black_box(&cfg),
                &cairn::Empty,
                black_box(&schema),
            )
            .unwrap()
        })
    });
    g.bench_function("baseline_blake3_same_bytes", |b| {
        b.iter(|| blake3::hash(black_box(&doc_bytes)))
    });
    g.bench_function("baseline_serde_json_to_vec_blake3", |b| {
        b.iter(|| blake3::hash(&serde_json::to_vec(black_box(&cfg)).unwrap()))
    });
    g.bench_function("reference_tree_path", |b| {
        b.iter(|| tree_identity(black_box(&cfg)))
    });
    g.finish();

    let mut g = c.benchmark_group("identity_json");
    g.throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("identity_of_json", |b| {
        b.iter(|| cairn::identity_of_json(black_box(&request)).unwrap())
    });
    g.bench_function("baseline_serde_json_value_parse_blake3", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_slice(black_box(&request)).unwrap();
            (v, blake3::hash(black_box(&request)))
        })
    });
    g.bench_function("baseline_serde_json_ignored_any_blake3", |b| {
        b.iter(|| {
            let v: serde::de::IgnoredAny = serde_json::from_slice(black_box(&request)).unwrap();
            (v, blake3::hash(black_box(&request)))
        })
    });
    g.bench_function("reference_tree_path_json", |b| {
        b.iter(|| tree_identity_of_json(black_box(&request)))
    });
    g.finish();

    // Where the struct path spends its time: the direct encoding with and without BLAKE3, and
    // the stages of the old tree path.
    let document = cairn::document_of_json(&request).expect("document");
    let mut g = c.benchmark_group("identity_struct_stages");
    g.throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("value_from_serialize", |b| {
        b.iter(|| Value::from_serialize(black_box(&cfg), "config").unwrap())
    });
    g.bench_function("tree_ciborium_value_serialized", |b| {
        b.iter(|| ciborium::Value::serialized(black_box(&cfg)).unwrap())
    });
    g.bench_function("tree_value_from_cbor_value", |b| {
        b.iter(|| {
            Value::from_cbor_value(ciborium::Value::serialized(black_box(&cfg)).unwrap(), "c")
                .unwrap()
        })
    });
    g.bench_function("document_to_cbor", |b| {
        b.iter(|| black_box(&document).to_cbor())
    });
    g.bench_function("identity_of_document", |b| {
        b.iter(|| cairn::Identity::of_document(black_box(&document)))
    });
    g.finish();
}

criterion_group!(benches, bench_identity);
criterion_main!(benches);
