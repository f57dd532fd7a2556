//! Test support for the crash and fault tests: a store state taken before an operation, the
//! invariants every crash or fault must leave true, and a `cairn` child process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use cairn::Store;

/// The `cairn` binary with `--root root`, failpoints and artifact settings cleared.
pub fn cairn_cmd(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.arg("--root").arg(root).args(args);
    cmd.env_remove("CAIRN_FAILPOINTS")
        .env_remove("CAIRN_ARTIFACT_BACKEND")
        .env_remove("CAIRN_ARTIFACT_FS_ROOT")
        .stdin(Stdio::null());
    cmd
}

/// Runs [`cairn_cmd`] with the extra environment `env`; returns its output.
pub fn cairn_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = cairn_cmd(root, args);
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

/// Runs `cmd`, feeding `stdin`; returns its output.
pub fn run(mut cmd: Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn a child");
    let mut pipe = child.stdin.take().expect("stdin");
    // A child stopped early closes its end: a broken pipe here is expected.
    let _ = pipe.write_all(stdin);
    drop(pipe);
    child.wait_with_output().expect("wait for the child")
}

/// Runs `cairn` without failpoints and asserts it succeeds; returns its standard output.
pub fn cairn_ok(root: &Path, args: &[&str]) -> String {
    let out = run(cairn_cmd(root, args), b"");
    assert!(
        out.status.success(),
        "cairn {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Opens the store as a reader would, ignoring the environment's artifact settings.
pub fn open(root: &Path) -> Store {
    Store::builder(root).ignore_artifact_env().open().unwrap()
}

/// The store at `root` writing new resource bytes to `backend`, whatever the environment says.
pub fn open_with(root: &Path, backend: cairn::artifact::Backend) -> Store {
    Store::builder(root)
        .ignore_artifact_env()
        .artifact_backend(backend)
        .open()
        .unwrap()
}

/// What a store holds: run identity → location, resource id → (run, size, sha256).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    /// Every indexed run: identity (hex) → `<state> <location>`.
    pub runs: BTreeMap<String, String>,
    /// Every resource: id → (run identity hex, size, sha256).
    pub resources: BTreeMap<String, (String, u64, String)>,
}

impl State {
    /// The state of the store at `root`, through a fresh open (which rebuilds a damaged index).
    pub fn of(root: &Path) -> State {
        let store = open(root);
        let mut state = State::default();
        for rec in store.find(&cairn::query::Query::new()).unwrap() {
            state.runs.insert(
                rec.identity.to_hex(),
                format!("{} {}", rec.state, rec.location),
            );
        }
        for rec in store.all_resources().unwrap() {
            state.resources.insert(
                rec.id.to_string(),
                (rec.run.to_hex(), rec.size_bytes, rec.content_hash.clone()),
            );
        }
        state
    }
}

/// Every directory under a final run name is whole: the walk finds no damaged run, each run's
/// `id.json` and `model.json` parse, and every directory at a placement (`<module>/<aa>/<dir>`)
/// is a run. Returns the number of runs.
pub fn assert_runs_whole(root: &Path, context: &str) -> usize {
    let walk = cairn::walk::find_runs(root);
    assert!(walk.errors.is_empty(), "{context}: {:?}", walk.errors);
    for run in &walk.runs {
        let dir = root.join(&run.location);
        cairn::IdHeader::read(&dir).unwrap_or_else(|e| panic!("{context}: {e}"));
        cairn::Model::read(&dir).unwrap_or_else(|e| panic!("{context}: {e}"));
    }
    for module in ["train", "eval"] {
        let Ok(shards) = std::fs::read_dir(root.join(module)) else {
            continue;
        };
        for shard in shards {
            for dir in std::fs::read_dir(shard.unwrap().path()).unwrap() {
                let dir = dir.unwrap().path();
                for f in ["id.json", "model.json"] {
                    assert!(
                        dir.join(f).is_file(),
                        "{context}: {} under a final name lacks {f}",
                        dir.display()
                    );
                }
            }
        }
    }
    walk.runs.len()
}

/// Every resource of `before` is still there and its bytes read back whole and verified, with
/// the recorded sha256 or (for a resource being updated) one of `allowed`.
pub fn assert_resources_readable(root: &Path, before: &State, allowed: &[String], context: &str) {
    let store = open(root);
    for (id, (_, _, sha)) in &before.resources {
        let uuid: uuid::Uuid = id.parse().unwrap();
        let rec = store
            .get_resource(uuid)
            .unwrap()
            .unwrap_or_else(|| panic!("{context}: resource {id} is gone"));
        let data = store
            .read_resource_data(uuid)
            .unwrap_or_else(|e| panic!("{context}: resource {id}: {e}"));
        let got = cairn::artifact::sha256_hex(&data.to_vec());
        assert_eq!(got, rec.content_hash, "{context}: resource {id} bytes");
        assert!(
            &got == sha || allowed.contains(&got),
            "{context}: resource {id} holds unexpected bytes"
        );
    }
}

/// `cairn verify --contents` finds nothing (exit 0).
pub fn assert_verify_clean(root: &Path, context: &str) {
    let out = run(cairn_cmd(root, &["verify", "--contents"]), b"");
    assert!(
        out.status.success(),
        "{context}: verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies the directory tree `from` to `to` (which must not exist), keeping nothing else.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest: PathBuf = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// A small deterministic pseudo-random generator (SplitMix64): the seed is printed, so a failure
/// reproduces.
pub struct Rng(pub u64);

impl Rng {
    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `len` pseudo-random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}
