//! CLI integration tests: `cairn id` reproduces every identity vector; conventions (exit codes,
//! one-line errors, --json) hold.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn cairn(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env_remove("CAIRN_ROOT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn id_reproduces_every_vector() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/identity-v1.json"),
    )
    .unwrap();
    let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(vectors.len() >= 40);
    for v in &vectors {
        let name = v["name"].as_str().unwrap();
        let input = v["input"].as_str().unwrap();
        let out = cairn(&["id", "--explain", "--json"], input.as_bytes());
        if let Some(class) = v.get("error") {
            assert_eq!(out.status.code(), Some(2), "{name} ({class}) should fail");
            let err = String::from_utf8(out.stderr).unwrap();
            assert_eq!(err.lines().count(), 1, "{name}: one line on stderr: {err}");
            assert!(err.starts_with("cairn: error: "), "{name}: {err}");
        } else {
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let got: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
            assert_eq!(got["identity"], v["identity"], "{name}");
            assert_eq!(got["cbor"], v["cbor"], "{name}");
            // The plain form prints the identity alone on a line.
            let plain = cairn(&["id", "-"], input.as_bytes());
            assert_eq!(
                stdout(&plain),
                format!("{}\n", v["identity"].as_str().unwrap())
            );
        }
    }
}

#[test]
fn put_then_show_by_prefix_and_bad_input_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    // A bad second line: nothing at all is created.
    let bad = b"{\"module\": \"a\"}\n{\"module\": \"b\", \"predicate\": [1]}\n";
    let out = cairn(&["--root", root, "put"], bad);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("<stdin>:2") && err.contains("predicate"),
        "{err}"
    );
    assert!(cairn::walk::find_runs(dir.path()).runs.is_empty());

    let good = b"{\"module\": \"a\", \"config\": {\"x\": 1}}\n{\"module\": \"b\"}\n";
    let out = cairn(&["--root", root, "put", "--json"], good);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["created"], true);
    let id = lines[0]["identity"].as_str().unwrap();
    assert_eq!(
        id,
        cairn::identity_of_json(b"{\"module\": \"a\", \"config\": {\"x\": 1}}")
            .unwrap()
            .to_hex()
    );

    let show = cairn(&["--root", root, "show", &id[..8], "--json"], b"");
    assert!(show.status.success());
    let shown: serde_json::Value = serde_json::from_str(&stdout(&show)).unwrap();
    assert_eq!(shown["identity"], id);
    assert_eq!(shown["model"]["config"]["x"], 1);
    assert_eq!(shown["model"]["format"], 1);

    let missing = cairn(&["--root", root, "show", "0000000000"], b"");
    assert_eq!(missing.status.code(), Some(2));
    let short = cairn(&["--root", root, "show", "abc"], b"");
    assert_eq!(short.status.code(), Some(2));
    let no_root = cairn(&["show", &id[..8]], b"");
    assert_eq!(no_root.status.code(), Some(2));
}

#[test]
fn pretty_printed_single_model_is_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let out = cairn(
        &["--root", root, "put"],
        b"{\n  \"module\": \"a\",\n  \"config\": {\"x\": [1,\n 2]}\n}\n",
    );
    assert!(out.status.success());
    assert_eq!(stdout(&out).lines().count(), 1);
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(cairn(&["frobnicate"], b"").status.code(), Some(2));
    assert_eq!(
        cairn(&["id", "/nonexistent/model.json"], b"").status.code(),
        Some(2)
    );
}
