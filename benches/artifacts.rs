//! Artifact benchmarks, each beside a baseline measured in the same run (FORMAT.md §7,
//! BENCHMARKS.md §7):
//! 1. a large artifact written durably with its sha256 vs `write()` + `fdatasync`, no hashing;
//! 2. reading it back verified vs sha256 over an mmap of the file; unverified vs a raw `read()`
//!    into a page-aligned buffer (and, for the record, into a plain `Vec`);
//! 3. 10,000 artifacts of 4 KiB, inline and filesystem: create and read ops/s, beside cacache's
//!    sync API doing the same writes and reads;
//! 4. `migrate_artifacts` of 10,000 inline artifacts in batches, beside 1,000 in batches of one
//!    row (the row-at-a-time design).
//!
//! `cargo bench --bench artifacts` (1 GiB; data under `target/bench-artifacts/`, deleted at
//! the end). Without `--bench` (as under `cargo test --all-targets`) it checks the harness on
//! small sizes in a temporary directory.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use cairn::artifact::{Backend, MigrateOptions};
use cairn::{Model, Store};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn data(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn store(root: &Path, backend: Backend) -> Store {
    Store::builder(root)
        .ignore_artifact_env()
        .artifact_backend(backend)
        .open()
        .unwrap()
}

fn run(store: &Store) -> cairn::Run {
    let model = Model::new("bench")
        .with_config(&serde_json::json!({"k": 1}))
        .unwrap();
    store.get_or_create(&model).unwrap()
}

/// A page-aligned buffer of `len` bytes (over-allocated, safe code).
fn aligned(len: usize) -> (Vec<u8>, usize) {
    let raw = vec![0u8; len + 4096];
    let off = raw.as_ptr().align_offset(4096);
    (raw, off)
}

#[expect(
    unsafe_code,
    reason = "the mmap baseline maps a file this process wrote and keeps"
)]
fn sha256_mmap(path: &Path) -> String {
    let f = File::open(path).unwrap();
    // SAFETY: the benchmark's own file, not modified while mapped.
    let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    hex::encode(Sha256::digest(&map[..]))
}

fn large(dir: &Path, len: usize, passes: usize) {
    println!(
        "\n## 1-2. one artifact of {} MiB, {passes} interleaved passes",
        len / MIB
    );
    let bytes = data(len);
    let store = store(&dir.join("store-large"), Backend::Filesystem);
    let r = run(&store);
    let base_path = dir.join("baseline.bin");
    let (mut t_base, mut t_cairn) = (Vec::new(), Vec::new());
    let mut id = None;
    for pass in 0..passes {
        let _ = std::fs::remove_file(&base_path);
        let t = Instant::now();
        let mut f = File::create(&base_path).unwrap();
        for chunk in bytes.chunks(MIB) {
            f.write_all(chunk).unwrap();
        }
        f.sync_data().unwrap();
        t_base.push(t.elapsed());

        if let Some(old) = id.take() {
            store.delete_resource(old).unwrap();
        }
        let t = Instant::now();
        let mut w = store.resource_writer(&r, "large").unwrap();
        for chunk in bytes.chunks(MIB) {
            w.write_all(chunk).unwrap();
        }
        let rec = w.commit().unwrap();
        t_cairn.push(t.elapsed());
        id = Some(rec.id);
        println!(
            "  pass {pass}: write+fdatasync {:.3}s, cairn durable+sha256 {:.3}s",
            secs(t_base[pass]),
            secs(t_cairn[pass])
        );
    }
    let id = id.unwrap();
    let (b, c) = (median(t_base), median(t_cairn));
    let gbs = |d: Duration| len as f64 / secs(d) / 1e9;
    println!(
        "write: cairn {:.3}s ({:.2} GB/s) vs write()+fdatasync {:.3}s ({:.2} GB/s): ratio {:.2}x (target >= 0.9x)",
        secs(c),
        gbs(c),
        secs(b),
        gbs(b),
        secs(b) / secs(c)
    );

    // Reads: the file is in the page cache for every contender (written just before).
    let path = url::Url::parse(&store.get_resource(id).unwrap().unwrap().uri)
        .unwrap()
        .to_file_path()
        .unwrap();
    let want = cairn::artifact::sha256_hex(&bytes);
    drop(bytes);
    let mut t = [Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..passes {
        let s = Instant::now();
        assert_eq!(sha256_mmap(&path), want);
        t[0].push(s.elapsed());

        let s = Instant::now();
        let got = store.read_resource_data(id).unwrap();
        t[1].push(s.elapsed());
        assert_eq!(got.len(), len);
        drop(got);

        let s = Instant::now();
        let (mut raw, off) = aligned(len);
        File::open(&path)
            .unwrap()
            .read_exact(&mut raw[off..off + len])
            .unwrap();
        t[2].push(s.elapsed());
        drop(raw);

        let s = Instant::now();
        let got = store.read_resource_unverified(id).unwrap();
        t[3].push(s.elapsed());
        drop(got);

        let s = Instant::now();
        let mut v = vec![0u8; len];
        File::open(&path).unwrap().read_exact(&mut v).unwrap();
        t[4].push(s.elapsed());
        println!("  Vec buffer at {} mod 4096", v.as_ptr() as usize % 4096);
    }
    let [mmap_sha, verified, raw_aligned, unverified, raw_vec] = t.map(median);
    println!(
        "read verified: cairn {:.3}s ({:.2} GB/s) vs sha256 over mmap {:.3}s ({:.2} GB/s): ratio {:.2}x (target >= 0.9x)",
        secs(verified),
        gbs(verified),
        secs(mmap_sha),
        gbs(mmap_sha),
        secs(mmap_sha) / secs(verified)
    );
    println!(
        "read unverified: cairn {:.3}s ({:.2} GB/s) vs read() into a page-aligned buffer {:.3}s ({:.2} GB/s): ratio {:.2}x (target >= 0.9x)",
        secs(unverified),
        gbs(unverified),
        secs(raw_aligned),
        gbs(raw_aligned),
        secs(raw_aligned) / secs(unverified)
    );
    println!(
        "  for the record: read() into a plain Vec {:.3}s ({:.2} GB/s), {:.2}x the aligned time",
        secs(raw_vec),
        gbs(raw_vec),
        secs(raw_vec) / secs(raw_aligned)
    );
    store.delete_resource(id).unwrap();
    let _ = std::fs::remove_file(&base_path);
}

fn many(dir: &Path, n: usize) {
    println!("\n## 3. {n} artifacts of 4 KiB");
    let payloads: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut d = data(4096);
            d[..8].copy_from_slice(&(i as u64).to_le_bytes());
            d
        })
        .collect();
    let rate = |d: Duration| n as f64 / secs(d);
    for backend in [Backend::Inline, Backend::Filesystem] {
        let s = store(&dir.join(format!("store-{backend}")), backend);
        let r = run(&s);
        let t = Instant::now();
        let ids: Vec<_> = payloads
            .iter()
            .map(|p| s.create_resource(&r, "small", p).unwrap().id)
            .collect();
        let create = t.elapsed();
        let t = Instant::now();
        for (id, p) in ids.iter().zip(&payloads) {
            assert_eq!(&*s.read_resource_data(*id).unwrap(), &p[..]);
        }
        let read = t.elapsed();
        println!(
            "cairn {backend:<10} create {:>8.0} ops/s ({:.2}s), read verified {:>8.0} ops/s ({:.2}s)",
            rate(create),
            secs(create),
            rate(read),
            secs(read)
        );
    }
    let cache = dir.join("cacache");
    let t = Instant::now();
    for (i, p) in payloads.iter().enumerate() {
        cacache::write_sync(&cache, format!("k{i}"), p).unwrap();
    }
    let create = t.elapsed();
    let t = Instant::now();
    for (i, p) in payloads.iter().enumerate() {
        assert_eq!(&cacache::read_sync(&cache, format!("k{i}")).unwrap(), p);
    }
    let read = t.elapsed();
    println!(
        "cacache (sync API) create {:>8.0} ops/s ({:.2}s), read verified {:>8.0} ops/s ({:.2}s)",
        rate(create),
        secs(create),
        rate(read),
        secs(read)
    );
}

/// Migrates `n` inline artifacts of 4 KiB in batches of `batch_rows`; returns rows/s.
fn migrate_rate(dir: &Path, n: usize, batch_rows: usize) -> f64 {
    let s = store(
        &dir.join(format!("store-migrate-{batch_rows}")),
        Backend::Inline,
    );
    let r = run(&s);
    for i in 0..n {
        let mut d = data(4096);
        d[..8].copy_from_slice(&(i as u64).to_le_bytes());
        s.create_resource(&r, "m", &d).unwrap();
    }
    let t = Instant::now();
    let report = s
        .migrate_artifacts(
            &MigrateOptions::default().batch_rows(batch_rows),
            &|_, _| {},
        )
        .unwrap();
    let d = t.elapsed();
    assert_eq!(report.migrated as usize, n);
    println!(
        "migrate, batches of {batch_rows}: {n} rows in {:.2}s = {:.0} rows/s ({:.2} MB/s)",
        secs(d),
        n as f64 / secs(d),
        report.bytes as f64 / secs(d) / 1e6
    );
    n as f64 / secs(d)
}

/// Batched migration of `n` rows beside the row-at-a-time baseline (batches of one row: one
/// index transaction and every directory fsync per row) on `n_base` rows, in the same run.
fn migrate(dir: &Path, n: usize, n_base: usize) {
    println!("\n## 4. migrate_artifacts of inline artifacts of 4 KiB");
    let base = migrate_rate(dir, n_base, 1);
    let batched = migrate_rate(dir, n, MigrateOptions::default().batch_rows);
    println!(
        "migrate: batched {batched:.0} rows/s vs one row per batch {base:.0} rows/s: {:.1}x",
        batched / base
    );
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let tmp = tempfile::tempdir().unwrap();
    let dir = if bench {
        let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-artifacts");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    } else {
        tmp.path().to_path_buf()
    };
    let only = std::env::var("CAIRN_BENCH_ONLY").unwrap_or_default();
    let want = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);
    if want("large") {
        if bench {
            large(&dir, 1024 * MIB, 3);
        } else {
            large(&dir, 8 * MIB, 1);
        }
    }
    if want("many") {
        many(&dir, if bench { 10_000 } else { 50 });
    }
    if want("migrate") {
        if bench {
            migrate(&dir, 10_000, 1_000);
        } else {
            migrate(&dir, 50, 10);
        }
    }
    if bench {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
