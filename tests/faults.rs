//! Faults (issue 7 part 3, RELIABILITY.md "Faults"): ENOSPC and EIO injected at every failpoint
//! an operation reaches, one at a time (`CAIRN_FAILPOINTS="*=enospc@N-N"`, `"*=error@N-N"`, N = 1, 2, ...,
//! which covers every data write, `id.json`, `model.json`, resource record, fsync, directory
//! fsync and index commit on its path), and a real write failure (RLIMIT_FSIZE set in the child,
//! so `write` fails with EFBIG). Each must leave the store exactly as it was and exit 3 with one
//! line naming the file or step that failed.
#![cfg(feature = "failpoints")]

#[path = "support/harness.rs"]
#[allow(
    dead_code,
    reason = "shared test support; each test file uses part of it"
)]
mod harness;

use std::path::Path;
use std::process::Command;

use harness::{Rng, State, assert_runs_whole, cairn_cmd, copy_tree, open, run};

/// One write path: its name, the command, and whether it writes a file resource.
struct Path_ {
    name: &'static str,
    args: fn(&State, &Path) -> Vec<String>,
    filesystem: bool,
}

const PATHS: &[Path_] = &[
    Path_ {
        name: "put (model.json, id.json, index)",
        args: |_, _| vec!["put".into(), "-".into()],
        filesystem: false,
    },
    Path_ {
        name: "resource add (inline: record, index)",
        args: |s, input| resource_add(s, input),
        filesystem: false,
    },
    Path_ {
        name: "resource add (filesystem: data, record, index)",
        args: |s, input| resource_add(s, input),
        filesystem: true,
    },
    Path_ {
        name: "migrate (data, records, index)",
        args: |_, _| vec!["migrate".into()],
        filesystem: false,
    },
];

fn resource_add(s: &State, input: &Path) -> Vec<String> {
    let run = s.runs.keys().next().unwrap().clone();
    let input = input.to_str().unwrap().to_owned();
    vec!["resource".into(), "add".into(), run, input]
}

const NEW_MODEL: &str = r#"{"module": "train", "config": {"lr": 99}}"#;

/// A store with one run and one inline resource; `input` holds 2 MiB to add.
fn build(root: &Path, input: &Path) -> State {
    let store = open(root);
    let model = cairn::Model::new("train")
        .with_config(&serde_json::json!({"lr": 1}))
        .unwrap();
    let run = store.get_or_create(&model).unwrap();
    store
        .create_resource(&run, "small", &Rng(3).bytes(3000))
        .unwrap();
    std::fs::write(input, Rng(4).bytes(2 << 20)).unwrap();
    drop(store);
    State::of(root)
}

fn command(root: &Path, p: &Path_, before: &State, input: &Path) -> Command {
    let args = (p.args)(before, input);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = cairn_cmd(root, &args);
    if p.filesystem {
        cmd.env("CAIRN_ARTIFACT_BACKEND", "filesystem");
    }
    cmd
}

/// The store holds what it held: the same runs and records, every resource readable and
/// verified. Returns whether the failed call's whole effect is there instead, which only a
/// failure of the index file itself may leave (`committed`: the input's sha256 and size).
fn assert_unchanged(
    root: &Path,
    before: &State,
    context: &str,
    committed: Option<(&str, u64)>,
) -> bool {
    assert_runs_whole(root, context);
    let mut after = State::of(root);
    let mut whole_effect = false;
    if let Some((sha, size)) = committed {
        // put writes the run directory (the truth) before the index: when the index commit
        // fails inside redb, the complete new run stays and the rebuild after redb's repair
        // indexes it. A commit whose final fsync failed may have persisted (its outcome is
        // unknown, as for any database): then the whole new resource is there, with the
        // input's bytes. FORMAT.md §9.
        let new_run = cairn::Model::new("train")
            .with_config(&serde_json::json!({"lr": 99}))
            .unwrap()
            .identity()
            .unwrap()
            .to_hex();
        if !before.runs.contains_key(&new_run) {
            whole_effect |= after.runs.remove(&new_run).is_some();
        }
        let added: Vec<String> = after
            .resources
            .iter()
            .filter(|(id, r)| !before.resources.contains_key(*id) && r.1 == size && r.2 == sha)
            .map(|(id, _)| id.clone())
            .collect();
        assert!(added.len() <= 1, "{context}: {added:?}");
        for id in added {
            after.resources.remove(&id);
            whole_effect = true;
        }
    }
    assert_eq!(&after, before, "{context}");
    let store = open(root);
    for rec in store.all_resources().unwrap() {
        let data = store
            .read_resource_data(rec.id)
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        assert_eq!(
            cairn::artifact::sha256_hex(&data.to_vec()),
            rec.content_hash,
            "{context}"
        );
    }
    whole_effect
}

#[test]
fn enospc_and_eio_at_every_step_of_every_write_path_change_nothing_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let root = live.join("store");
    std::fs::create_dir_all(&root).unwrap();
    let input = dir.path().join("input.bin");
    let before = build(&root, &input);
    let template = dir.path().join("template");
    copy_tree(&live, &template);
    let mut total = 0;
    let mut maybe_committed = 0;
    let input_bytes = std::fs::read(&input).unwrap();
    let input_sha = cairn::artifact::sha256_hex(&input_bytes);
    let input_len = input_bytes.len() as u64;
    for p in PATHS {
        for action in ["enospc", "error"] {
            let mut n = 1;
            loop {
                std::fs::remove_dir_all(&live).unwrap();
                copy_tree(&template, &live);
                let mut cmd = command(&root, p, &before, &input);
                cmd.env("CAIRN_FAILPOINTS", format!("*={action}@{n}-{n}"));
                let out = run(cmd, NEW_MODEL.as_bytes());
                let context = format!("{}: {action} at failpoint {n}", p.name);
                let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                if out.status.success() {
                    break;
                }
                // migrate reports a failed row (exit 1) and goes on to print its summary.
                let code = out.status.code();
                assert!(code == Some(3) || code == Some(1), "{context}: {stderr}");
                // A file step names its file; a logical step (before the index commit, say)
                // names its failpoint. migrate names it in the row's warning line.
                assert!(
                    stderr.contains('/') || stderr.contains("failpoint"),
                    "{context}: names no file: {stderr}"
                );
                if action == "enospc" {
                    assert!(
                        stderr.contains("No space left on device"),
                        "{context}: {stderr}"
                    );
                }
                // Only a failure of the index file itself may leave the call's whole effect.
                let committed = stderr
                    .contains("index.redb")
                    .then_some((input_sha.as_str(), input_len));
                if assert_unchanged(&root, &before, &context, committed) {
                    maybe_committed += 1;
                }
                total += 1;
                n += 1;
            }
            eprintln!("faults: {}: {action} at {} steps", p.name, n - 1);
        }
    }
    eprintln!(
        "faults: {total} injected faults, each leaving the store as it was, or (index file \
         failures only) with the call's whole effect: {maybe_committed}"
    );
    assert!(total > 50, "{total}");
}

/// A real failure, not an injected one: the child may write no file past 1 MiB (RLIMIT_FSIZE,
/// with SIGXFSZ ignored so that `write` returns EFBIG), and a 2 MiB resource is added.
#[test]
fn a_real_write_failure_changes_nothing_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(&root).unwrap();
    let input = dir.path().join("input.bin");
    let before = build(&root, &input);
    for backend in ["filesystem", "inline"] {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(r#"trap '' XFSZ; ulimit -f 1024; exec "$@""#)
            .arg("bash")
            .arg(env!("CARGO_BIN_EXE_cairn"))
            .arg("--root")
            .arg(&root)
            .args(["resource", "add"])
            .arg(before.runs.keys().next().unwrap())
            .arg(&input)
            .env("CAIRN_ARTIFACT_BACKEND", backend)
            .env_remove("CAIRN_FAILPOINTS");
        let out = run(cmd, b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{backend}: {stderr}");
        assert!(stderr.contains("File too large"), "{backend}: {stderr}");
        assert!(
            stderr.contains(root.to_str().unwrap()),
            "{backend}: {stderr}"
        );
        assert_unchanged(&root, &before, backend, None);
    }
}
