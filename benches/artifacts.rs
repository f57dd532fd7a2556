//! Artifact benchmarks, each beside a baseline measured in the same run (FORMAT.md §7,
//! BENCHMARKS.md §7):
//! 1. a large artifact written durably with its sha256 vs `write()` + `fdatasync`, no hashing
//!    (same bytes, same 1 MiB pieces, same file system), passes interleaved in rotating order,
//!    each contender started after `sync` and a short pause; for the record also the baseline
//!    with cairn's writeback hint;
//! 2. reading it back verified vs sha256 over an mmap of the file; unverified vs a raw `read()`
//!    into a page-aligned buffer (and, for the record, into a plain `Vec`);
//! 3. 10,000 artifacts of 4 KiB, inline and filesystem: create and read ops/s, beside cacache's
//!    sync API doing the same writes and reads;
//! 4. `migrate_artifacts` of 10,000 inline artifacts in batches, beside 1,000 in batches of one
//!    row (the row-at-a-time design).
//!
//! `cargo bench --bench artifacts` (1 GiB; data under `target/bench-artifacts/`, deleted at
//! the end). `CAIRN_BENCH_ONLY=large|large-write|many|migrate` (comma-separated) picks parts
//! (`large-write`: part 1 alone); `CAIRN_BENCH_PASSES=N` sets the passes of parts 1-2 (3). Without `--bench` (as under `cargo test --all-targets`) it checks the harness on
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

/// Same bytes, same 1 MiB pieces, same file system as cairn's writer: `write()` then `fdatasync`,
/// no hashing; with `hint`, also cairn's writeback hint every 8 MiB.
fn plain_write(path: &Path, bytes: &[u8], hint: bool) -> Duration {
    let t = Instant::now();
    let mut f = File::create(path).unwrap();
    let mut started = 0;
    for (i, chunk) in bytes.chunks(MIB).enumerate() {
        f.write_all(chunk).unwrap();
        let done = (i + 1) * MIB;
        if hint && done - started >= WRITEBACK_STEP {
            start_writeback(&f, started, done - started);
            started = done;
        }
    }
    f.sync_data().unwrap();
    t.elapsed()
}

/// cairn's writeback step (`src/artifact/write.rs`).
const WRITEBACK_STEP: usize = 8 * MIB;

#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "the same sync_file_range(2) hint as cairn's writer, for the baseline"
)]
fn start_writeback(f: &File, offset: usize, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: a system call on an open descriptor; no memory is passed.
    let rc = unsafe {
        libc::sync_file_range(
            f.as_raw_fd(),
            offset as i64,
            len as i64,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    assert_eq!(rc, 0);
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_f: &File, _offset: usize, _len: usize) {}

/// Part 1: the durable write with sha256 beside `write()` + `fdatasync`, `passes` rounds whose
/// order rotates (each contender goes first once in four); for the record also the baseline with
/// cairn's writeback hint and sha256 of the bytes in memory. Returns the resource written last.
fn large_write(store: &Store, dir: &Path, bytes: &[u8], passes: usize) -> uuid::Uuid {
    let len = bytes.len();
    println!(
        "\n## 1. durable write of one artifact of {} MiB, {passes} interleaved passes (load {})",
        len / MIB,
        loadavg()
    );
    let r = run(store);
    let base_path = dir.join("baseline.bin");
    let mut t = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    let mut cpu = [0.0f64; 4];
    let mut id = None;
    for pass in 0..passes {
        for k in 0..4 {
            let who = (pass + k) % 4;
            // Each contender starts from the same disk state: what an earlier pass wrote or
            // deleted is on disk and the journal quiet (untimed).
            match who {
                0 | 1 => {
                    let _ = std::fs::remove_file(&base_path);
                }
                2 => {
                    if let Some(old) = id.take() {
                        store.delete_resource(old).unwrap();
                    }
                }
                _ => {}
            }
            settle();
            let before = cpu_secs();
            match who {
                0 => t[0].push(plain_write(&base_path, bytes, false)),
                1 => t[1].push(plain_write(&base_path, bytes, true)),
                3 => {
                    let s = Instant::now();
                    std::hint::black_box(Sha256::digest(bytes));
                    t[3].push(s.elapsed());
                }
                _ => {
                    let s = Instant::now();
                    let mut w = store.resource_writer(&r, "large").unwrap();
                    for chunk in bytes.chunks(MIB) {
                        w.write_all(chunk).unwrap();
                    }
                    id = Some(w.commit().unwrap().id);
                    t[2].push(s.elapsed());
                }
            }
            cpu[who] += cpu_secs() - before;
        }
        println!(
            "  pass {pass}: write+fdatasync {:.3}s, same + writeback hint {:.3}s, cairn durable+sha256 {:.3}s, sha256 in memory {:.3}s",
            secs(t[0][pass]),
            secs(t[1][pass]),
            secs(t[2][pass]),
            secs(t[3][pass])
        );
    }
    let _ = std::fs::remove_file(&base_path);
    let [b, hinted, c, hash] = t.map(median);
    let gbs = |d: Duration| len as f64 / secs(d) / 1e9;
    println!(
        "write: cairn {:.3}s ({:.2} GB/s) vs write()+fdatasync {:.3}s ({:.2} GB/s): ratio {:.2}x (target >= 0.9x); load {}",
        secs(c),
        gbs(c),
        secs(b),
        gbs(b),
        secs(b) / secs(c),
        loadavg()
    );
    println!(
        "  for the record: write()+writeback hint+fdatasync {:.3}s ({:.2} GB/s), ratio to cairn {:.2}x",
        secs(hinted),
        gbs(hinted),
        secs(hinted) / secs(c)
    );
    let per = |x: f64| x / passes as f64;
    println!(
        "  for the record: sha256 of the bytes in memory {:.3}s ({:.2} GB/s), the floor of cairn's time",
        secs(hash),
        gbs(hash)
    );
    println!(
        "  CPU time per pass (all threads, user+system): write()+fdatasync {:.2}s, with hint {:.2}s, cairn {:.2}s, sha256 {:.2}s",
        per(cpu[0]),
        per(cpu[1]),
        per(cpu[2]),
        per(cpu[3])
    );
    id.unwrap()
}

/// `sync(1)`, then a short pause: the writeback and journal commits of earlier passes (the
/// delete of a 1 GiB file included) finish before the next contender's clock starts.
fn settle() {
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(Duration::from_millis(500));
}

/// CPU time of this process so far (all threads, user + system; Linux, else 0).
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    // Clock ticks of 1/100 s (USER_HZ on Linux).
    f.iter().sum::<f64>() / 100.0
}

/// The 1-minute load average, printed beside every figure.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Part 2: reads of resource `id` (`len` bytes, sha256 `want`), page cache warm for every contender.
fn large_read(store: &Store, id: uuid::Uuid, len: usize, want: &str, passes: usize) {
    println!(
        "\n## 2. reads of the {} MiB artifact, {passes} passes",
        len / MIB
    );
    let gbs = |d: Duration| len as f64 / secs(d) / 1e9;
    let path = url::Url::parse(&store.get_resource(id).unwrap().unwrap().uri)
        .unwrap()
        .to_file_path()
        .unwrap();
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
    assert_eq!(store.read_resource_data(id).unwrap().len(), len);
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
}

/// Parts 1 and 2 on one artifact of `len` bytes (`write`: part 1 only).
fn large(dir: &Path, len: usize, passes: usize, write_only: bool) {
    let bytes = data(len);
    let want = cairn::artifact::sha256_hex(&bytes);
    let store = store(&dir.join("store-large"), Backend::Filesystem);
    let id = large_write(&store, dir, &bytes, passes);
    drop(bytes);
    if !write_only {
        large_read(&store, id, len, &want, passes);
    }
    store.delete_resource(id).unwrap();
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
    let passes = std::env::var("CAIRN_BENCH_PASSES")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3);
    if want("large") || want("large-write") {
        let write_only = !want("large");
        if bench {
            large(&dir, 1024 * MIB, passes, write_only);
        } else {
            large(&dir, 24 * MIB, 1, write_only);
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
