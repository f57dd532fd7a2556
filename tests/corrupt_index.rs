//! A damaged `index.redb` (issue 7 part 2, RELIABILITY.md "Corrupted index"): truncated to
//! several lengths, or with bytes flipped in its header or in random pages. cairn notices on open
//! or on use and heals by itself (no `cairn reindex`, no file removed by hand): the damaged file
//! is kept aside, the index rebuilt from the run directories, the command retried, all said on
//! stderr; nothing the directories hold is lost. Inline bytes live only in the index
//! (FORMAT.md §7): they are salvaged from the damaged file where their sha256 still matches.

#[path = "support/harness.rs"]
#[allow(
    dead_code,
    reason = "shared test support; each test file uses part of it"
)]
mod harness;

use std::path::{Path, PathBuf};

use harness::{
    Rng, State, assert_resources_readable, assert_runs_whole, cairn_cmd, copy_tree, open, run,
};

/// A store with runs and resources of both backends; returns its state.
fn build(root: &Path) -> State {
    let store = open(root);
    let fs = cairn::Store::builder(root)
        .ignore_artifact_env()
        .artifact_backend(cairn::artifact::Backend::Filesystem)
        .open()
        .unwrap();
    let mut rng = Rng(7);
    for lr in 0..40 {
        let model = cairn::Model::new("train")
            .with_config(&serde_json::json!({"lr": lr}))
            .unwrap();
        let run = store.get_or_create(&model).unwrap();
        if lr % 4 == 0 {
            store
                .create_resource(&run, "inline", &rng.bytes(500))
                .unwrap();
            fs.create_resource(&run, "file", &rng.bytes(5000)).unwrap();
        }
    }
    drop((store, fs));
    State::of(root)
}

/// A store under `<dir>/live/store` and a pristine copy of `live` in `<dir>/template`: each
/// damage is tried on a fresh copy.
struct Fixture {
    live: PathBuf,
    template: PathBuf,
    root: PathBuf,
    index: PathBuf,
    /// What the store holds.
    before: State,
}

impl Fixture {
    fn new(dir: &Path) -> Self {
        let live = dir.join("live");
        let root = live.join("store");
        std::fs::create_dir_all(&root).unwrap();
        let before = build(&root);
        let template = dir.join("template");
        copy_tree(&live, &template);
        Fixture {
            index: root.join(".cairn/index.redb"),
            live,
            template,
            root,
            before,
        }
    }

    /// Puts the pristine store back, with `index` as its index file's bytes.
    fn reset(&self, index: &[u8]) {
        std::fs::remove_dir_all(&self.live).unwrap();
        copy_tree(&self.template, &self.live);
        std::fs::write(&self.index, index).unwrap();
    }
}

/// The damages tried: a name and the bytes of the damaged file.
fn damages(original: &[u8]) -> Vec<(String, Vec<u8>)> {
    let len = original.len();
    let mut out = Vec::new();
    for cut in [0, 1, 100, 511, 4096, len / 2, len - 1] {
        out.push((
            format!("truncated to {cut} bytes"),
            original[..cut].to_vec(),
        ));
    }
    // The header (magic, god byte, region layout, commit slots) lives in the first page.
    for at in [0, 8, 9, 16, 40, 64, 100, 200, 300, 400, 500] {
        let mut bytes = original.to_vec();
        bytes[at] ^= 0xff;
        out.push((format!("byte {at} of the header flipped"), bytes));
    }
    let mut rng = Rng(0x5eed);
    for _ in 0..24 {
        let at = 4096 + (rng.next() as usize) % (len - 4096);
        let mut bytes = original.to_vec();
        for b in &mut bytes[at..(at + 16).min(len)] {
            *b ^= rng.next() as u8 | 1;
        }
        out.push((format!("16 bytes at {at} scrambled"), bytes));
    }
    out
}

/// Every place the head of a `local` run record (FORMAT.md §5.2) occurs, 16 bytes scrambled:
/// the live runs table is damaged, the resource tables untouched (their records are maps and
/// their bytes random).
fn run_records_scrambled(original: &[u8]) -> (String, Vec<u8>) {
    let head = b"\x88\x02\x65local";
    let mut bytes = original.to_vec();
    let mut hits = 0;
    for at in 0..original.len() - head.len() {
        if original[at..].starts_with(head) {
            for b in &mut bytes[at..(at + 16).min(original.len())] {
                *b ^= 0x5a;
            }
            hits += 1;
        }
    }
    assert!(hits >= 40, "run records not found in the index file");
    ("every run record's head scrambled".into(), bytes)
}

/// `N` in "... N <what>" said on stderr, summed over every heal.
fn said_count(stderr: &str, what: &str) -> usize {
    stderr
        .lines()
        .filter_map(|l| {
            let end = l.find(what)?;
            l[..end].split_whitespace().last()?.parse::<usize>().ok()
        })
        .sum()
}

#[test]
fn a_damaged_index_heals_itself_and_loses_nothing_the_directories_hold() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new(dir.path());
    let (root, index, before) = (fx.root.clone(), fx.index.clone(), fx.before.clone());
    let inline = before.resources.len() / 2;
    let original = std::fs::read(&index).unwrap();
    let last_byte_cut = format!("truncated to {} bytes", original.len() - 1);
    let mut all = damages(&original);
    all.push(run_records_scrambled(&original));
    let (mut on_open, mut on_use, mut harmless) = (0, 0, 0);
    let (mut salvaged, mut inline_lost, mut inline_failed_reads) = (0, 0, 0);
    for (damage, bytes) in all {
        fx.reset(&bytes);

        // `ls` reads every run record, `verify --contents` every resource record and byte. No
        // manual step follows: whatever they find they heal.
        let mut said = String::new();
        let mut cairn = |args: &[&str]| {
            let out = run(cairn_cmd(&root, args), b"");
            said.push_str(&String::from_utf8_lossy(&out.stderr));
            out
        };
        let ls = cairn(&["ls"]);
        assert!(ls.status.success(), "{damage}: ls: {said}");
        assert_eq!(
            String::from_utf8_lossy(&ls.stdout).lines().count(),
            before.runs.len(),
            "{damage}"
        );
        let verify = cairn(&["verify", "--contents"]);
        let findings = String::from_utf8_lossy(&verify.stdout).into_owned();
        if !verify.status.success() {
            // Only inline bytes may be missing or wrong (damage inside the inline table);
            // every other finding would be a loss.
            let listed = |l: &&str| {
                !l.starts_with(char::is_whitespace)
                    && !l.starts_with("verified")
                    && !l.starts_with("checked")
            };
            for line in findings.lines().filter(listed) {
                assert!(
                    line.contains("inline-bytes-gone") || line.contains("the record says"),
                    "{damage}: {line}\n{findings}{said}"
                );
            }
        }
        let healed = said.contains("is damaged (");
        let noticed_on_open = said.contains("cannot open it")
            || said.contains("panicked) opening it")
            || said.contains("redb repaired it")
            || said.contains("has no schema version");
        if noticed_on_open {
            on_open += 1;
        } else if healed {
            on_use += 1;
        } else {
            harmless += 1;
        }
        if healed {
            // The damaged file is kept beside the new one.
            let kept = std::fs::read_dir(root.join(".cairn"))
                .unwrap()
                .filter_map(|e| e.ok())
                .any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("index.redb.damaged-")
                });
            assert!(kept, "{damage}");
        }
        let got = said_count(&said, "inline resources salvaged");
        salvaged += got;
        inline_lost += said_count(&said, "lost");

        // Runs and resource records all back, files readable and verified; inline bytes read
        // back verified or fail with a clear error, never wrong.
        assert_runs_whole(&root, &damage);
        let after = State::of(&root);
        assert_eq!(after, before, "{damage}");
        let store = open(&root);
        let mut failed = 0;
        for rec in store.all_resources().unwrap() {
            match store.read_resource_data(rec.id) {
                Ok(data) => assert_eq!(
                    cairn::artifact::sha256_hex(&data.to_vec()),
                    rec.content_hash,
                    "{damage}"
                ),
                Err(e) => {
                    assert_eq!(rec.backend, cairn::artifact::Backend::Inline, "{damage}");
                    let e = e.to_string();
                    assert!(
                        e.contains("inline bytes are gone") || e.contains("the record says"),
                        "{damage}: {e}"
                    );
                    failed += 1;
                }
            }
        }
        inline_failed_reads += failed;
        if damage.starts_with("every run record") {
            // Found on use, and the inline table was intact: every inline resource salvaged.
            assert!(healed && !noticed_on_open, "{damage}: {said}");
            assert_eq!((got, failed), (inline, 0), "{damage}: {said}");
        }
        if damage == last_byte_cut || damage.starts_with("byte 0 ") || damage.starts_with("byte 8 ")
        {
            // redb cannot open these, but a copy padded to whole pages, with the magic number
            // written back, reads: every inline resource salvaged.
            assert!(healed && noticed_on_open, "{damage}: {said}");
            assert_eq!((got, failed), (inline, 0), "{damage}: {said}");
        }
        eprintln!(
            "{damage}: healed {healed}, noticed on open {noticed_on_open}, {got} inline salvaged, {failed} inline reads failed"
        );
    }
    eprintln!(
        "corrupt index: {on_open} damages noticed on open, {on_use} healed on use, {harmless} \
         harmless, 0 manual interventions; inline resources: {salvaged} salvaged, {inline_lost} \
         lost in heals, {inline_failed_reads} reads failed over all damages"
    );
    assert!(on_open > 0 && on_use > 0);
}

/// The files kept aside beside the index of `root`.
fn kept_aside(root: &Path) -> usize {
    std::fs::read_dir(root.join(".cairn"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("index.redb.damaged-")
        })
        .count()
}

/// A device that fails to read (EIO at each of redb's page reads of `index.redb` in turn, on
/// open and on use) is no damage: the command fails naming the index, nothing is moved aside or
/// rebuilt, and the next command finds everything as it was.
#[cfg(feature = "failpoints")]
#[test]
fn a_failing_read_is_an_error_not_a_heal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let before = build(&root);
    let (mut failed, mut n) = (0, 1);
    loop {
        let point = format!("index.read=error@{n}-{n}");
        let mut cmd = cairn_cmd(&root, &["verify", "--contents"]);
        cmd.env("CAIRN_FAILPOINTS", &point);
        let out = run(cmd, b"");
        // Findings (verify's stdout) or the error (stderr).
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            break; // past the last read
        }
        failed += 1;
        assert!(
            // redb reports an error it latched earlier (in another thread) as a previous one.
            stderr.contains("index.redb")
                && (stderr.contains("Input/output error") || stderr.contains("Previous I/O error")),
            "{point}: {stderr}"
        );
        assert!(!stderr.contains("is damaged"), "{point}: {stderr}");
        assert_eq!(kept_aside(&root), 0, "{point}: {stderr}");
        n += 1;
        assert!(n < 500, "reads never stop failing");
    }
    assert!(failed > 0, "no read of the index was reached");
    assert_eq!(State::of(&root), before);
    assert_eq!(kept_aside(&root), 0);
    eprintln!("failing reads: {failed} commands failed with an I/O error, none healed");
}

/// A heal stopped at any step (`*=abort@N`: the process killed at the N-th failpoint it reaches,
/// N = 1, 2, ... through every index write and fsync of the rebuild, the swap and the directory
/// fsync) leaves the damaged file or the whole new index at `index.redb`: the next command heals
/// or finds the index whole, and every run, record and inline byte (salvaged) is there.
#[cfg(feature = "failpoints")]
#[test]
fn a_heal_killed_at_any_step_is_completed_by_the_next_command() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new(dir.path());
    let (root, before) = (fx.root.clone(), fx.before.clone());
    let (_, damaged) = run_records_scrambled(&std::fs::read(&fx.index).unwrap());
    let mut n = 1;
    loop {
        fx.reset(&damaged);
        let point = format!("*=abort@{n}");
        let mut cmd = cairn_cmd(&root, &["ls"]);
        cmd.env("CAIRN_FAILPOINTS", &point);
        let stopped = !run(cmd, b"").status.success();
        let out = run(cairn_cmd(&root, &["ls"]), b"");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{point}: {said}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).lines().count(),
            before.runs.len(),
            "{point}"
        );
        assert_eq!(State::of(&root), before, "{point}");
        assert_resources_readable(&root, &before, &[], &point);
        if !stopped {
            break; // past the last failpoint of the heal
        }
        n += 1;
        assert!(n < 2000, "the heal never completes");
    }
    eprintln!(
        "heal killed at each of {} failpoints: completed by the next command",
        n - 1
    );
    assert!(n > 10, "the heal reached too few failpoints");
}

/// Processes that find the same damage at once heal it once: they serialize on the heal lock,
/// the later ones see the path name another file and reopen it. Exactly one damaged file is
/// kept, and every process lists every run.
#[test]
fn processes_finding_the_same_damage_heal_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new(dir.path());
    let (root, before) = (fx.root.clone(), fx.before.clone());
    let (_, damaged) = run_records_scrambled(&std::fs::read(&fx.index).unwrap());
    for round in 0..5 {
        fx.reset(&damaged);
        let children: Vec<_> = (0..4)
            .map(|_| {
                let mut cmd = cairn_cmd(&root, &["ls"]);
                cmd.stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                cmd.spawn().unwrap()
            })
            .collect();
        let mut heals = 0;
        for child in children {
            let out = child.wait_with_output().unwrap();
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "round {round}: {said}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).lines().count(),
                before.runs.len(),
                "round {round}: {said}"
            );
            heals += said.matches("is damaged (").count();
        }
        assert_eq!(heals, 1, "round {round}");
        assert_eq!(kept_aside(&root), 1, "round {round}");
        assert_eq!(State::of(&root), before, "round {round}");
    }
}

/// A whole operation outside the per-call healing (here `whereis`; push, fetch, evict,
/// migrate, gc and repair go through the same path) that finds the index damaged heals it and
/// runs once more: the caller gets the answer, not the damage.
#[test]
fn a_whole_operation_heals_and_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let fx = Fixture::new(dir.path());
    let (_, damaged) = run_records_scrambled(&std::fs::read(&fx.index).unwrap());
    fx.reset(&damaged);
    let store = open(&fx.root);
    for hex in fx.before.runs.keys() {
        let id: cairn::Identity = hex.parse().unwrap();
        let w = store.whereis(&id).unwrap();
        assert_eq!(w.map(|w| w.identity), Some(id));
    }
    assert_eq!(kept_aside(&fx.root), 1);
    drop(store);
    assert_eq!(State::of(&fx.root), fx.before);
}
