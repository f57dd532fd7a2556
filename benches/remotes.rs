//! Remote benchmarks against a real S3-compatible server (SeaweedFS on 127.0.0.1, started by
//! tests/support/seaweed.rs or named by `CAIRN_TEST_S3_ENDPOINT`): push and fetch of 1,000 small
//! runs and of one 1 GiB artifact, each beside object_store used directly for the same bytes in
//! the same run (the floor cairn's bookkeeping adds to). See BENCHMARKS.md, section "Remotes".
//!
//! - `cargo bench --bench remotes`: the full sizes, rounds alternating cairn and baseline.
//! - Without `--bench` (under `cargo test --all-targets`): a smoke run on 20 runs and 4 MiB.
//!
//! Ratios are *baseline time ÷ cairn time* (1.0 = as fast as the bare transfers).

#[path = "../tests/support/seaweed.rs"]
mod seaweed;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::remote::{EvictOptions, RemoteSpec, S3Spec};
use cairn::{Identity, Model, Store};
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};

fn s3_spec(endpoint: &str, prefix: &str) -> RemoteSpec {
    RemoteSpec::S3(
        S3Spec::new(seaweed::BUCKET)
            .prefix(prefix)
            .endpoint(endpoint)
            .region("us-east-1")
            .credentials(seaweed::ACCESS_KEY, seaweed::SECRET_KEY),
    )
}

fn raw_store(endpoint: &str) -> Arc<AmazonS3> {
    Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(seaweed::BUCKET)
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id(seaweed::ACCESS_KEY)
            .with_secret_access_key(seaweed::SECRET_KEY)
            .build()
            .expect("object_store"),
    )
}

fn open(root: &Path, endpoint: &str, prefix: &str) -> Store {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let store = Store::builder(root)
            .remote("s3", s3_spec(endpoint, prefix))
            .ignore_artifact_env()
            .artifact_backend(cairn::artifact::Backend::Filesystem)
            .artifact_fs_root(root.join("artifacts"))
            .open()
            .expect("store");
        match store.remote("s3") {
            Ok(_) => return store,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for the server: {e}");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Every file of the store's run directories and artifact files: (relative key, bytes).
fn files_of(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.file_name().is_some_and(|n| n == ".cairn") {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let key = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
                out.push((key, std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

struct Row {
    name: &'static str,
    size: String,
    cairn: Duration,
    baseline: Duration,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (runs, big): (usize, usize) = if full { (1000, 1 << 30) } else { (20, 4 << 20) };
    let Some(server) = seaweed::server() else {
        return;
    };
    let endpoint = server.endpoint.clone();
    let tmp = tempfile::tempdir().unwrap();
    let raw = raw_store(&endpoint);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    let tag = uuid::Uuid::new_v4().simple().to_string();

    // --- small runs: a 1 KiB data file each, plus id.json and model.json.
    let root = tmp.path().join("small");
    let store = open(&root, &endpoint, &format!("bench-{tag}/small"));
    let ids: Vec<Identity> = (0..runs)
        .map(|i| {
            let m = Model::new("bench")
                .with_config(&serde_json::json!({"i": i}))
                .unwrap();
            let run = store.get_or_create(&m).unwrap();
            std::fs::write(run.data_dir().join("metrics.csv"), vec![b'x'; 1024]).unwrap();
            run.identity()
        })
        .collect();
    let files = files_of(&root);
    let small_bytes: usize = files.iter().map(|(_, b)| b.len()).sum();

    let t = Instant::now();
    let report = store.push(&ids, "s3", &|_| {}).unwrap();
    let push_small = t.elapsed();
    assert_eq!(report.pushed.len(), runs, "{:?}", report.failed.first());

    let t = Instant::now();
    rt.block_on(async {
        for (key, bytes) in &files {
            let path = ObjectPath::parse(format!("bench-{tag}/raw-small/{key}")).unwrap();
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            raw.put_opts(&path, PutPayload::from(bytes.clone()), opts)
                .await
                .unwrap();
        }
    });
    let put_small = t.elapsed();
    rows.push(Row {
        name: "push, small runs",
        size: format!(
            "{runs} runs, {} files, {} KiB",
            files.len(),
            small_bytes >> 10
        ),
        cairn: push_small,
        baseline: put_small,
    });

    for id in &ids {
        store.evict(id, &EvictOptions::default()).unwrap();
    }
    let t = Instant::now();
    let report = store.fetch_many(&ids, Some("s3"), &|_| {}).unwrap();
    assert_eq!(report.fetched.len(), runs, "{:?}", report.failed.first());
    let fetch_small = t.elapsed();
    let t = Instant::now();
    rt.block_on(async {
        for (key, bytes) in &files {
            let path = ObjectPath::parse(format!("bench-{tag}/raw-small/{key}")).unwrap();
            let got = raw.get(&path).await.unwrap().bytes().await.unwrap();
            assert_eq!(got.len(), bytes.len());
        }
    });
    let get_small = t.elapsed();
    rows.push(Row {
        name: "fetch, small runs",
        size: format!("{runs} runs"),
        cairn: fetch_small,
        baseline: get_small,
    });

    // --- one large artifact.
    let root = tmp.path().join("big");
    let store = open(&root, &endpoint, &format!("bench-{tag}/big"));
    let run = store
        .get_or_create(
            &Model::new("bench")
                .with_config(&serde_json::json!({"big": 1}))
                .unwrap(),
        )
        .unwrap();
    let mut w = store.resource_writer(&run, "checkpoint").unwrap();
    let chunk: Vec<u8> = (0..(1 << 20)).map(|i: usize| (i * 7 % 253) as u8).collect();
    for _ in 0..big / chunk.len() {
        w.write_all(&chunk).unwrap();
    }
    let rec = w.commit().unwrap();
    let file = cairn::artifact::fs::path_of_uri(&rec.uri, &store.artifact_fs_root()).unwrap();
    let id = run.identity();

    let t = Instant::now();
    store.push(&[id], "s3", &|_| {}).unwrap();
    let push_big = t.elapsed();
    let raw_path = ObjectPath::parse(format!("bench-{tag}/raw-big/blob")).unwrap();
    let t = Instant::now();
    rt.block_on(async {
        let upload = raw.put_multipart(&raw_path).await.unwrap();
        let mut w = WriteMultipart::new_with_chunk_size(upload, 16 << 20);
        let mut f = std::fs::File::open(&file).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            w.wait_for_capacity(4).await.unwrap();
            w.write(&buf[..n]);
        }
        w.finish().await.unwrap();
    });
    let put_big = t.elapsed();
    rows.push(Row {
        name: "push, one artifact",
        size: format!("{} MiB", big >> 20),
        cairn: push_big,
        baseline: put_big,
    });

    store.evict(&id, &EvictOptions::default()).unwrap();
    let t = Instant::now();
    store.fetch(&id, Some("s3"), &|_| {}).unwrap();
    let fetch_big = t.elapsed();
    let dest = tmp.path().join("raw-big");
    let t = Instant::now();
    rt.block_on(async {
        let mut f =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&dest).unwrap());
        let mut s = raw.get(&raw_path).await.unwrap().into_stream();
        while let Some(c) = s.next().await {
            f.write_all(&c.unwrap()).unwrap();
        }
        f.into_inner().unwrap().sync_all().unwrap();
    });
    let get_big = t.elapsed();
    rows.push(Row {
        name: "fetch, one artifact",
        size: format!("{} MiB", big >> 20),
        cairn: fetch_big,
        baseline: get_big,
    });

    println!(
        "\n{:<22} {:<34} {:>10} {:>10} {:>6}",
        "bench", "input", "cairn", "baseline", "ratio"
    );
    for r in rows {
        println!(
            "{:<22} {:<34} {:>9.2}s {:>9.2}s {:>6.2}",
            r.name,
            r.size,
            r.cairn.as_secs_f64(),
            r.baseline.as_secs_f64(),
            r.baseline.as_secs_f64() / r.cairn.as_secs_f64()
        );
    }
}
