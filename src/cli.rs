//! Command-line interface. Conventions shared by every command:
//! `--root DIR` (default `$CAIRN_ROOT`), `--json` for machine-readable output, and exit codes
//! 0 success, 1 a check found problems, 2 usage or input error, 3 an operation failed (I/O).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;

use cairn::index::{Availability, RunRecord};
use cairn::query::{Condition, Filter, Query};
use cairn::{Error, Model, Store};

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Content-addressed identities for computational runs"
)]
struct Cli {
    /// Store root directory.
    #[arg(long, global = true, env = "CAIRN_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,
    /// Machine-readable output: one JSON object per line.
    #[arg(long, global = true)]
    json: bool,
    /// Longest wait, in seconds, for the index while another process writes it.
    #[arg(
        long,
        global = true,
        env = "CAIRN_INDEX_TIMEOUT",
        value_name = "SECS",
        default_value_t = 10.0
    )]
    index_timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the identity of a model given as JSON:
    /// {"module", "config", "predicate", "schema": {"defaults", "non_identifying"}}.
    Id {
        /// JSON file, or `-` for standard input.
        #[arg(default_value = "-")]
        file: PathBuf,
        /// Also print the canonical document in CBOR diagnostic notation and hex.
        #[arg(long)]
        explain: bool,
    },
    /// Materialize runs from a model (JSON) or many models (JSON Lines); print identity and path.
    Put {
        /// JSON or JSON Lines file, or `-` for standard input.
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// Show a run named by its identity or a unique prefix (at least 8 hex characters).
    Show {
        /// Identity or prefix.
        run: String,
    },
    /// Rebuild the index from the run directories.
    Reindex {
        /// Visit only directories changed since the last reindex.
        #[arg(long)]
        incremental: bool,
        /// Instead: discover the runs committed on this remote (new ones get state `remote`).
        #[arg(long, value_name = "NAME", conflicts_with = "incremental")]
        remote: Option<String>,
    },
    /// List runs (optionally of one module or state).
    Ls {
        /// Only runs of this module.
        #[arg(long)]
        module: Option<String>,
        /// Only runs in this state (local, remote, evicted).
        #[arg(long)]
        state: Option<String>,
    },
    /// Find runs by config and predicate values. PATH is config.<dotted path>,
    /// predicate.<dotted path>, module, created_at, location or state; VALUE is JSON (bare words
    /// are text).
    Find(Box<FindArgs>),
    /// Counts per module and state, and the index size.
    Stats,
    /// Re-derive every run's identity with the current schemas (`.cairn/schemas/*.json`) and
    /// compare with id.json and the index. Exit 1 when anything is found.
    Verify {
        /// Only runs of this module.
        #[arg(long)]
        module: Option<String>,
        /// Only runs whose identity starts with this prefix (8+ hex characters).
        #[arg(long)]
        prefix: Option<String>,
        /// Also read every resource and check its size and sha256 (in parallel).
        #[arg(long)]
        contents: bool,
        /// Instead: check every copy on this remote (size and sha256 of each object) and drop
        /// damaged ones from the index.
        #[arg(long, value_name = "NAME", conflicts_with_all = ["module", "prefix", "contents"])]
        remote: Option<String>,
    },
    /// Fix what verify finds when the fix needs no guessing: the index always; identity drift
    /// with --rekey; duplicate directories with --force.
    Repair {
        /// Rewrite id.json of drifted runs to the re-derived identity (the old one stays an alias).
        #[arg(long)]
        rekey: bool,
        /// Delete the extra directories of duplicate identities.
        #[arg(long)]
        force: bool,
    },
    /// Resources (files attached to runs): add, get, ls, rm.
    #[command(subcommand)]
    Resource(ResourceCommand),
    /// Move resource bytes between backends (default: inline bytes to the filesystem backend).
    /// Restartable: rows already moved are skipped. Exit 1 when a row failed.
    Migrate {
        /// Only count what would move.
        #[arg(long)]
        dry_run: bool,
        /// Target backend: filesystem or inline.
        #[arg(long, default_value = "filesystem")]
        to: String,
        /// With --to inline: largest file moved, in bytes.
        #[arg(long, default_value_t = 1 << 20)]
        inline_max: u64,
        /// Go on with the next row after a failure (default: stop).
        #[arg(long)]
        keep_going: bool,
        /// Rows per batch to the filesystem (one index transaction each).
        #[arg(long, default_value_t = cairn::artifact::DEFAULT_BATCH_ROWS)]
        batch: usize,
    },
    /// Remotes (a directory mirror or an S3 bucket): add, ls, rm.
    #[command(subcommand)]
    Remote(RemoteCommand),
    /// Copy runs (directories and artifacts) to a remote, verify and record the copies.
    Push {
        /// The remote.
        remote: String,
        /// Runs (identities or prefixes); with none, --all or --module selects.
        runs: Vec<String>,
        /// Every local run.
        #[arg(long, conflicts_with = "runs")]
        all: bool,
        /// Every local run of this module.
        #[arg(long, conflicts_with = "runs")]
        module: Option<String>,
    },
    /// Bring evicted or remote runs back, verified, and mark them local.
    Fetch {
        /// Identities or prefixes.
        #[arg(required = true)]
        runs: Vec<String>,
        /// From this remote (default: those recorded as holding a copy).
        #[arg(long, value_name = "NAME")]
        from: Option<String>,
    },
    /// Delete a run's local bytes, keeping a husk; refused unless a remote is checked now to
    /// hold a whole copy.
    Evict {
        /// Identity or prefix.
        run: String,
        /// Evict even without a confirmed remote copy.
        #[arg(long)]
        force: bool,
    },
    /// Where a run is: local or not, which remotes hold a copy, when each was last verified.
    Whereis {
        /// Identity or prefix.
        run: String,
    },
    /// Remove artifact files no record names (crash leftovers) older than a grace period; with
    /// --remote, objects on that remote that no committed manifest references.
    Gc {
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Grace period in seconds: younger files are kept.
        #[arg(long, default_value_t = 3600)]
        grace: u64,
        /// Collect orphan objects on this remote (left by interrupted pushes) instead.
        #[arg(long)]
        remote: Option<String>,
    },
}

#[derive(Subcommand)]
enum ResourceCommand {
    /// Attach FILE (or `-` for standard input) to RUN, in the configured backend
    /// ($CAIRN_ARTIFACT_BACKEND, $CAIRN_ARTIFACT_FS_ROOT); print the new resource.
    Add {
        /// Run identity or unique prefix.
        run: String,
        /// The file.
        file: PathBuf,
        /// Resource name (default: the file name).
        #[arg(long)]
        name: Option<String>,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Write a resource's bytes, verified, to standard output or FILE. The bytes stream (one
    /// chunk in memory) and are hashed on the way. With -o FILE they land under FILE only if
    /// size and sha256 match the record; to standard output they are written before the final
    /// check, and on a mismatch cairn exits non-zero with an error naming the resource.
    Get {
        /// Resource id.
        id: String,
        /// Output file (written atomically, durably, and only with verified bytes).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// List a run's resources.
    Ls {
        /// Run identity or unique prefix.
        run: String,
    },
    /// Delete a resource (no error if it is already gone).
    Rm {
        /// Resource id.
        id: String,
    },
}

#[derive(clap::Args)]
struct FindArgs {
    /// Only runs of this module.
    #[arg(long)]
    module: Option<String>,
    /// Only runs in this state (local, remote, evicted).
    #[arg(long)]
    state: Option<String>,
    /// PATH=VALUE: equal.
    #[arg(long, value_name = "PATH=VALUE")]
    eq: Vec<String>,
    /// PATH=VALUE: less than.
    #[arg(long, value_name = "PATH=VALUE")]
    lt: Vec<String>,
    /// PATH=VALUE: less than or equal.
    #[arg(long, value_name = "PATH=VALUE")]
    le: Vec<String>,
    /// PATH=VALUE: greater than.
    #[arg(long, value_name = "PATH=VALUE")]
    gt: Vec<String>,
    /// PATH=VALUE: greater than or equal.
    #[arg(long, value_name = "PATH=VALUE")]
    ge: Vec<String>,
    /// PATH=[V1,V2,..]: equal to one of the values (a JSON array).
    #[arg(long = "in", value_name = "PATH=[VALUES]")]
    one_of: Vec<String>,
    /// PATH: the field is present.
    #[arg(long, value_name = "PATH")]
    exists: Vec<String>,
    /// Sort by this field.
    #[arg(long, value_name = "PATH")]
    sort: Option<String>,
    /// Sort descending.
    #[arg(long, requires = "sort")]
    desc: bool,
    /// At most this many runs.
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Subcommand)]
enum RemoteCommand {
    /// Add a remote (written to .cairn/remotes.json; credentials stay in the environment).
    Add {
        /// Its name.
        name: String,
        /// A directory remote at this absolute path.
        #[arg(
            long,
            value_name = "PATH",
            conflicts_with = "s3",
            required_unless_present = "s3"
        )]
        dir: Option<PathBuf>,
        /// An S3 remote in this bucket.
        #[arg(long, value_name = "BUCKET")]
        s3: Option<String>,
        /// Key prefix inside the bucket.
        #[arg(long, requires = "s3", default_value = "")]
        prefix: String,
        /// Endpoint URL (default AWS_ENDPOINT_URL).
        #[arg(long, requires = "s3")]
        endpoint: Option<String>,
        /// Region (default AWS_REGION).
        #[arg(long, requires = "s3")]
        region: Option<String>,
    },
    /// List the remotes.
    Ls,
    /// Remove a remote (the index forgets its copies; nothing on the remote is deleted).
    Rm {
        /// Its name.
        name: String,
    },
}

/// A failure and the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match e {
            Error::Io { .. } => 3,
            _ => 2,
        };
        Failure {
            code,
            message: e.to_string(),
        }
    }
}

fn input_error(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            // One line: newlines inside messages (e.g. from serde) are flattened.
            eprintln!("cairn: error: {}", f.message.replace('\n', " "));
            ExitCode::from(f.code)
        }
    }
}

/// Exit code 1: a check found problems.
const FOUND_PROBLEMS: u8 = 1;

fn run(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Id { file, explain } => cmd_id(cli, file, *explain),
        Command::Put { file } => cmd_put(cli, file),
        Command::Show { run } => cmd_show(cli, run),
        Command::Reindex {
            remote: Some(name), ..
        } => cmd_remote_check(cli, name, false),
        Command::Reindex { incremental, .. } => cmd_reindex(cli, *incremental),
        Command::Ls { module, state } => {
            let mut q = Query::new();
            q.module = module.clone();
            q.state = parse_state(state.as_deref())?;
            print_records(cli, &open_store(cli)?.find(&q)?)
        }
        Command::Find(args) => cmd_find(cli, args),
        Command::Stats => cmd_stats(cli),
        Command::Verify {
            remote: Some(name), ..
        } => cmd_remote_check(cli, name, true),
        Command::Verify {
            module,
            prefix,
            contents,
            ..
        } => cmd_verify(cli, module.clone(), prefix.as_deref(), *contents),
        Command::Repair { rekey, force } => cmd_repair(cli, *rekey, *force),
        Command::Resource(rc) => cmd_resource(cli, rc),
        Command::Migrate {
            dry_run,
            to,
            inline_max,
            keep_going,
            batch,
        } => cmd_migrate(cli, *dry_run, to, *inline_max, *keep_going, *batch),
        Command::Gc {
            dry_run,
            grace,
            remote: None,
        } => cmd_gc(cli, *dry_run, *grace),
        Command::Gc {
            dry_run,
            grace,
            remote: Some(name),
        } => cmd_gc_remote(cli, name, *dry_run, *grace),
        Command::Remote(rc) => cmd_remote(cli, rc),
        Command::Push {
            remote,
            runs,
            all,
            module,
        } => cmd_push(cli, remote, runs, *all, module.as_deref()),
        Command::Fetch { runs, from } => cmd_fetch(cli, runs, from.as_deref()),
        Command::Evict { run, force } => cmd_evict(cli, run, *force),
        Command::Whereis { run } => cmd_whereis(cli, run),
    }
}

fn open_store(cli: &Cli) -> Result<Store, Failure> {
    let root = cli
        .root
        .as_ref()
        .ok_or_else(|| input_error("no store root: pass --root DIR or set CAIRN_ROOT"))?;
    if !(cli.index_timeout.is_finite() && cli.index_timeout >= 0.0) {
        return Err(input_error(
            "--index-timeout must be a non-negative number of seconds",
        ));
    }
    Ok(Store::builder(root)
        .index_timeout(std::time::Duration::from_secs_f64(cli.index_timeout))
        .open()?)
}

fn read_input(file: &Path) -> Result<Vec<u8>, Failure> {
    let mut buf = Vec::new();
    if file == Path::new("-") {
        std::io::stdin().read_to_end(&mut buf).map_err(|e| {
            Failure::from(Error::Io {
                op: "read",
                path: "<stdin>".into(),
                source: e,
            })
        })?;
    } else {
        // A missing or unreadable input file is the user's input error (exit 2).
        buf = std::fs::read(file)
            .map_err(|e| input_error(format!("read {}: {e}", file.display())))?;
    }
    Ok(buf)
}

fn source_name(file: &Path) -> String {
    if file == Path::new("-") {
        "<stdin>".into()
    } else {
        file.display().to_string()
    }
}

fn out(line: impl std::fmt::Display) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").map_err(|e| {
        Failure::from(Error::Io {
            op: "write",
            path: "<stdout>".into(),
            source: e,
        })
    })
}

fn cmd_id(cli: &Cli, file: &Path, explain: bool) -> Result<(), Failure> {
    let input = read_input(file)?;
    let doc = cairn::document_of_json(&input)
        .map_err(|e| input_error(format!("{}: {e}", source_name(file))))?;
    let identity = cairn::Identity::of_document(&doc);
    if cli.json {
        let mut o = json!({"identity": identity.to_hex()});
        if explain {
            o["diagnostic"] = json!(doc.diagnostic());
            o["cbor"] = json!(hex::encode(doc.to_cbor()));
        }
        out(o)
    } else if explain {
        out(format!("diagnostic: {}", doc.diagnostic()))?;
        out(format!("cbor:       {}", hex::encode(doc.to_cbor())))?;
        out(format!("identity:   {identity}"))
    } else {
        out(identity)
    }
}

/// Splits input into its top-level JSON values: one object (possibly pretty-printed) or JSON
/// Lines. Returns each value's bytes and the line it starts on.
fn split_models(input: &[u8]) -> Result<Vec<(&[u8], usize)>, String> {
    let mut stream =
        serde_json::Deserializer::from_slice(input).into_iter::<serde::de::IgnoredAny>();
    let mut parts = Vec::new();
    let mut start = 0;
    while let Some(item) = stream.next() {
        if let Err(e) = item {
            return Err(e.to_string());
        }
        let end = stream.byte_offset();
        let text = &input[start..end];
        let skipped = text.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let line = 1 + input[..start + skipped]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        parts.push((&text[skipped..], line));
        start = end;
    }
    if parts.is_empty() {
        return Err("no model in the input".into());
    }
    Ok(parts)
}

fn cmd_put(cli: &Cli, file: &Path) -> Result<(), Failure> {
    let input = read_input(file)?;
    let name = source_name(file);
    let parts = split_models(&input).map_err(|e| input_error(format!("{name}: {e}")))?;
    // Validate everything before creating anything: bad input changes nothing.
    let mut models = Vec::with_capacity(parts.len());
    for (text, line) in parts {
        let source = PathBuf::from(format!("{name}:{line}"));
        let model = Model::from_request_json(text, &source)?;
        model
            .identity()
            .map_err(|e| input_error(format!("{}: {e}", source.display())))?;
        models.push(model);
    }
    let store = open_store(cli)?;
    for model in &models {
        let run = store.get_or_create(model)?;
        if cli.json {
            out(json!({
                "identity": run.identity().to_hex(),
                "location": run.location(),
                "path": run.path(),
                "created": run.was_created(),
            }))?;
        } else {
            out(format!("{}\t{}", run.identity(), run.path().display()))?;
        }
    }
    Ok(())
}

fn cmd_show(cli: &Cli, reference: &str) -> Result<(), Failure> {
    let store = open_store(cli)?;
    let run = store
        .resolve(reference)?
        .ok_or_else(|| input_error(format!("no run matches {reference}")))?;
    let model = run.model()?;
    if cli.json {
        let model_json: serde_json::Value =
            serde_json::from_slice(&model.to_json_bytes()).expect("model.json is JSON");
        return out(json!({
            "identity": run.identity().to_hex(),
            "location": run.location(),
            "path": run.path(),
            "model": model_json,
        }));
    }
    let compact = |v: &serde_json::Value| v.to_string();
    out(format!("identity    {}", run.identity()))?;
    out(format!("location    {}", run.location().display()))?;
    out(format!("module      {}", model.module))?;
    out(format!(
        "created_at  {}",
        model.created_at.as_deref().unwrap_or("-")
    ))?;
    out(format!(
        "created_by  {}",
        model.created_by.as_deref().unwrap_or("-")
    ))?;
    out(format!("config      {}", compact(&model.config)))?;
    out(format!(
        "predicate   {}",
        compact(&serde_json::Value::Object(model.predicate.clone()))
    ))?;
    if !model.version.is_empty() {
        out(format!("version     {}", model.version.join(" ")))?;
    }
    Ok(())
}

fn parse_state(state: Option<&str>) -> Result<Option<Availability>, Failure> {
    state
        .map(|s| {
            Availability::parse(s)
                .ok_or_else(|| input_error(format!("unknown state {s:?} (local, remote, evicted)")))
        })
        .transpose()
}

/// A filter value: JSON, or a bare word taken as text.
fn parse_value(text: &str) -> Result<cairn::canonical::Value, Failure> {
    use cairn::canonical::Value;
    match Value::from_json_slice(text.as_bytes(), "value") {
        Ok(v) => Ok(v),
        Err(Error::Json { .. }) => Ok(Value::Text(text.to_owned())),
        Err(e) => Err(e.into()),
    }
}

fn split_filter(arg: &str) -> Result<(&str, &str), Failure> {
    arg.split_once('=')
        .ok_or_else(|| input_error(format!("filter {arg:?} must be PATH=VALUE")))
}

fn cmd_find(cli: &Cli, args: &FindArgs) -> Result<(), Failure> {
    let mut q = Query::new();
    q.module = args.module.clone();
    q.state = parse_state(args.state.as_deref())?;
    type MakeCondition = fn(cairn::canonical::Value) -> Condition;
    let ops: [(&Vec<String>, MakeCondition); 5] = [
        (&args.eq, Condition::Eq),
        (&args.lt, Condition::Lt),
        (&args.le, Condition::Le),
        (&args.gt, Condition::Gt),
        (&args.ge, Condition::Ge),
    ];
    for (list, make) in ops {
        for arg in list {
            let (path, value) = split_filter(arg)?;
            q.filters
                .push(Filter::new(path, make(parse_value(value)?))?);
        }
    }
    for arg in &args.one_of {
        let (path, value) = split_filter(arg)?;
        let cairn::canonical::Value::Array(values) = parse_value(value)? else {
            return Err(input_error(format!(
                "--in {arg:?}: the values must be a JSON array"
            )));
        };
        q.filters.push(Filter::new(path, Condition::In(values))?);
    }
    for path in &args.exists {
        q.filters
            .push(Filter::new(path.as_str(), Condition::Exists)?);
    }
    if let Some(path) = &args.sort {
        Filter::new(path.as_str(), Condition::Exists)?;
        q.sort = Some((path.clone(), args.desc));
    }
    q.limit = args.limit;
    print_records(cli, &open_store(cli)?.find(&q)?)
}

fn print_records(cli: &Cli, records: &[RunRecord]) -> Result<(), Failure> {
    for r in records {
        if cli.json {
            out(json!({
                "identity": r.identity.to_hex(),
                "module": r.module,
                "state": r.state.as_str(),
                "location": r.location,
                "created_at": r.created_at,
                "config": r.config().to_json(),
                "predicate": r.predicate().to_json(),
            }))?;
        } else {
            out(format!(
                "{}  {}  {}  {}",
                r.identity, r.module, r.state, r.location
            ))?;
        }
    }
    Ok(())
}

fn cmd_reindex(cli: &Cli, incremental: bool) -> Result<(), Failure> {
    let store = open_store(cli)?;
    // Drawn on a terminal only; hidden when stderr is redirected.
    let bar = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} runs found ({per_sec})")
            .expect("valid template"),
    );
    let report = store.reindex(incremental, &|n| {
        if n % 1024 == 0 {
            bar.set_position(n as u64);
        }
    })?;
    bar.finish_and_clear();
    for e in &report.errors {
        eprintln!(
            "cairn: warning: skipped: {}",
            e.to_string().replace('\n', " ")
        );
    }
    for d in &report.duplicates {
        eprintln!(
            "cairn: warning: duplicate identity {}: indexed {}, also at {}",
            d.identity, d.kept, d.other
        );
    }
    if cli.json {
        out(json!({
            "incremental": report.incremental,
            "runs": report.runs,
            "added": report.added,
            "moved": report.moved,
            "updated": report.updated,
            "removed": report.removed,
            "unchanged": report.unchanged,
            "duplicates": report.duplicates.len(),
            "errors": report.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            "listed_dirs": report.listed_dirs,
            "seconds": report.elapsed.as_secs_f64(),
        }))
    } else {
        out(report)
    }
}

fn cmd_stats(cli: &Cli) -> Result<(), Failure> {
    let stats = open_store(cli)?.stats()?;
    if cli.json {
        let per: Vec<_> = stats
            .per_module
            .iter()
            .map(|(m, s, n)| json!({"module": m, "state": s.as_str(), "runs": n}))
            .collect();
        return out(
            json!({"runs": stats.runs, "index_bytes": stats.file_bytes, "per_module": per}),
        );
    }
    for (m, s, n) in &stats.per_module {
        out(format!("{n:>10}  {s:<8} {m}"))?;
    }
    out(format!("{:>10}  runs in all", stats.runs))?;
    out(format!(
        "{:>10}  index bytes ({:.0} per run)",
        stats.file_bytes,
        stats.file_bytes as f64 / stats.runs.max(1) as f64
    ))
}

fn load_schemas(store: &Store) -> Result<cairn::schemas::Schemas, Failure> {
    let dir = store
        .root()
        .join(cairn::store::META_DIR)
        .join(cairn::schemas::SCHEMAS_DIR);
    Ok(cairn::schemas::Schemas::load_dir(&dir)?)
}

fn spinner(what: &str) -> indicatif::ProgressBar {
    // Drawn on a terminal only; hidden when stderr is redirected.
    indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{spinner}} {{pos}} {what} ({{per_sec}})"
        ))
        .expect("valid template"),
    )
}

fn finding_json(f: &cairn::verify::Finding) -> serde_json::Value {
    json!({
        "class": f.kind.as_str(),
        "identity": f.identity.map(|i| i.to_hex()),
        "location": f.location,
        "detail": f.detail,
        "derived": f.derived.map(|i| i.to_hex()),
    })
}

fn cmd_verify(
    cli: &Cli,
    module: Option<String>,
    prefix: Option<&str>,
    contents: bool,
) -> Result<(), Failure> {
    let store = open_store(cli)?;
    let schemas = load_schemas(&store)?;
    let mut opts = cairn::verify::VerifyOptions::default();
    opts.module = module;
    opts.prefix = prefix.map(cairn::Prefix::parse).transpose()?;
    let bar = spinner("runs");
    let report = store.verify(&schemas, &opts, &|n| {
        if n % 1024 == 0 {
            bar.set_position(n as u64);
        }
    })?;
    bar.finish_and_clear();
    for f in &report.findings {
        if cli.json {
            out(finding_json(f))?;
        } else {
            out(f)?;
        }
    }
    if !cli.json {
        out(format!(
            "verified {} runs in {:.2}s",
            report.runs,
            report.elapsed.as_secs_f64()
        ))?;
        for (kind, n) in report.counts() {
            out(format!("{n:>10}  {}", kind.as_str()))?;
        }
    }
    let resources = store.verify_resources(contents)?;
    for f in &resources.findings {
        if cli.json {
            out(
                json!({"class": f.kind.as_str(), "resource": f.id.to_string(),
                       "name": f.name, "detail": f.detail}),
            )?;
        } else {
            out(f)?;
        }
    }
    if !cli.json {
        out(format!(
            "checked {} resources{} in {:.2}s: {} findings",
            resources.resources,
            if contents { " (contents)" } else { "" },
            resources.elapsed.as_secs_f64(),
            resources.findings.len()
        ))?;
    }
    if report.is_clean() && resources.findings.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            code: FOUND_PROBLEMS,
            message: format!(
                "{} findings",
                report.findings.len() + resources.findings.len()
            ),
        })
    }
}

fn cmd_repair(cli: &Cli, rekey: bool, force: bool) -> Result<(), Failure> {
    let store = open_store(cli)?;
    let schemas = load_schemas(&store)?;
    let report = store.repair(
        &schemas,
        cairn::repair::RepairOptions::default()
            .rekey(rekey)
            .force(force),
    )?;
    for r in &report.rekeyed {
        if cli.json {
            out(json!({"rekeyed": r.location, "old": r.old.to_hex(), "new": r.new.to_hex()}))?;
        } else {
            out(format!("re-keyed  {}  {} -> {}", r.location, r.old, r.new))?;
        }
    }
    for d in &report.deleted {
        if cli.json {
            out(json!({"deleted": d}))?;
        } else {
            out(format!("deleted   {d}"))?;
        }
    }
    for f in &report.left {
        if cli.json {
            out(json!({"left": finding_json(f)}))?;
        } else {
            out(format!("left      {f}"))?;
        }
    }
    if cli.json {
        out(json!({
            "index": {"added": report.reindex.added, "moved": report.reindex.moved,
                      "updated": report.reindex.updated, "removed": report.reindex.removed},
            "rekeyed": report.rekeyed.len(),
            "deleted": report.deleted.len(),
            "left": report.left.len(),
        }))
    } else {
        out(&report)
    }
}

fn resource_json(r: &cairn::artifact::ResourceRecord) -> serde_json::Value {
    json!({
        "id": r.id.to_string(),
        "run": r.run.to_hex(),
        "name": r.name,
        "description": r.description,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "backend": r.backend.as_str(),
        "uri": r.uri,
        "size_bytes": r.size_bytes,
        "content_hash": r.content_hash,
    })
}

fn print_resource(cli: &Cli, r: &cairn::artifact::ResourceRecord) -> Result<(), Failure> {
    if cli.json {
        out(resource_json(r))
    } else {
        out(format!(
            "{}  {:<10} {:>12}  {}  {}",
            r.id,
            r.backend.as_str(),
            r.size_bytes,
            &r.content_hash[..16],
            r.name
        ))
    }
}

fn parse_resource_id(id: &str) -> Result<uuid::Uuid, Failure> {
    uuid::Uuid::try_parse(id).map_err(|e| input_error(format!("invalid resource id {id:?}: {e}")))
}

fn resolve_run(store: &Store, run: &str) -> Result<cairn::Run, Failure> {
    store
        .resolve(run)?
        .ok_or_else(|| input_error(format!("no run {run}")))
}

fn bytes_bar(len: u64) -> indicatif::ProgressBar {
    // Drawn on a terminal only; hidden when stderr is redirected.
    indicatif::ProgressBar::new(len).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .expect("valid template"),
    )
}

fn cmd_resource(cli: &Cli, rc: &ResourceCommand) -> Result<(), Failure> {
    let store = open_store(cli)?;
    match rc {
        ResourceCommand::Add {
            run,
            file,
            name,
            description,
        } => {
            let run = resolve_run(&store, run)?;
            let name = name.clone().unwrap_or_else(|| {
                file.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "stdin".into())
            });
            let (mut input, len): (Box<dyn Read>, u64) = if file == Path::new("-") {
                (Box::new(std::io::stdin().lock()), 0)
            } else {
                let f = std::fs::File::open(file)
                    .map_err(|e| input_error(format!("open {}: {e}", file.display())))?;
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                (Box::new(f), len)
            };
            let mut writer = store
                .resource_writer(&run, &name)?
                .description(description.clone());
            let bar = bytes_bar(len);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_error("read", file, e).into()),
                };
                writer
                    .write_all(&buf[..n])
                    .map_err(|e| io_error("write resource", store.artifact_fs_root(), e))?;
                bar.inc(n as u64);
            }
            let rec = writer.commit()?;
            bar.finish_and_clear();
            print_resource(cli, &rec)
        }
        ResourceCommand::Get { id, output } => {
            let id = parse_resource_id(id)?;
            match output {
                Some(dest) => {
                    let rec = store.export_resource(id, dest)?;
                    if cli.json {
                        out(resource_json(&rec))?;
                    }
                    Ok(())
                }
                None => {
                    let mut stdout = std::io::stdout().lock();
                    store.copy_resource_to(id, &mut stdout)?;
                    stdout
                        .flush()
                        .map_err(|e| io_error("write", "<stdout>", e).into())
                }
            }
        }
        ResourceCommand::Ls { run } => {
            let run = resolve_run(&store, run)?;
            for r in store.list_resources(&run.identity())? {
                print_resource(cli, &r)?;
            }
            Ok(())
        }
        ResourceCommand::Rm { id } => {
            let id = parse_resource_id(id)?;
            let existed = store.delete_resource(id)?;
            if cli.json {
                out(json!({"id": id.to_string(), "deleted": existed}))
            } else if existed {
                out(format!("deleted {id}"))
            } else {
                out(format!("no resource {id} (nothing to delete)"))
            }
        }
    }
}

fn cmd_migrate(
    cli: &Cli,
    dry_run: bool,
    to: &str,
    inline_max: u64,
    keep_going: bool,
    batch: usize,
) -> Result<(), Failure> {
    use cairn::artifact::{Backend, MigrateOptions};
    let to = Backend::parse(to)
        .ok_or_else(|| input_error(format!("unknown backend {to:?} (inline or filesystem)")))?;
    let store = open_store(cli)?;
    let opts = MigrateOptions::default()
        .to(to)
        .inline_max(inline_max)
        .keep_going(keep_going)
        .batch_rows(batch)
        .dry_run(dry_run);
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} resources ({per_sec}, {eta})",
        )
        .expect("valid template"),
    );
    let report = store.migrate_artifacts(&opts, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    for f in &report.failed {
        let line = f.error.to_string().replace('\n', " ");
        if cli.json {
            out(json!({"failed": f.id.to_string(), "name": f.name, "error": line}))?;
        } else {
            eprintln!(
                "cairn: warning: resource {} ({:?}) not moved: {line}",
                f.id, f.name
            );
        }
    }
    if cli.json {
        out(json!({
            "migrated": report.migrated,
            "skipped": report.skipped,
            "failed": report.failed.len(),
            "bytes": report.bytes,
            "stopped": report.stopped,
            "dry_run": report.dry_run,
            "seconds": report.elapsed.as_secs_f64(),
        }))?;
    } else {
        out(&report)?;
    }
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            code: FOUND_PROBLEMS,
            message: format!("{} resources could not be moved", report.failed.len()),
        })
    }
}

fn cmd_gc(cli: &Cli, dry_run: bool, grace: u64) -> Result<(), Failure> {
    let store = open_store(cli)?;
    let opts = cairn::artifact::GcOptions::default()
        .grace(std::time::Duration::from_secs(grace))
        .dry_run(dry_run);
    let report = store.gc_artifacts(&opts)?;
    for (path, size) in &report.removed {
        if cli.json {
            out(json!({"removed": path, "bytes": size, "dry_run": dry_run}))?;
        } else {
            out(format!(
                "{} {}  ({size} bytes)",
                if dry_run { "would remove" } else { "removed" },
                path.display()
            ))?;
        }
    }
    for e in &report.errors {
        eprintln!("cairn: warning: {}", e.to_string().replace('\n', " "));
    }
    if cli.json {
        out(json!({
            "removed": report.removed.len(),
            "bytes": report.removed.iter().map(|(_, n)| n).sum::<u64>(),
            "referenced": report.referenced,
            "kept_recent": report.kept_recent,
            "errors": report.errors.len(),
            "dry_run": report.dry_run,
        }))
    } else {
        out(&report)
    }
}

fn cmd_gc_remote(cli: &Cli, name: &str, dry_run: bool, grace: u64) -> Result<(), Failure> {
    let store = open_store(cli)?;
    let opts = cairn::artifact::GcOptions::default()
        .grace(std::time::Duration::from_secs(grace))
        .dry_run(dry_run);
    let report = store.gc_remote(name, &opts)?;
    for key in &report.removed {
        if cli.json {
            out(json!({"removed": key, "remote": name, "dry_run": dry_run}))?;
        } else {
            out(format!(
                "{} {name}:{key}",
                if dry_run { "would remove" } else { "removed" }
            ))?;
        }
    }
    if cli.json {
        out(json!({
            "remote": name,
            "removed": report.removed.len(),
            "manifests": report.manifests,
            "referenced": report.referenced,
            "kept_recent": report.kept_recent,
            "dry_run": report.dry_run,
        }))
    } else {
        out(&report)
    }
}

fn io_error(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.into(),
        source,
    }
}

// ---- remotes (issue 6) ----

fn run_record(store: &Store, reference: &str) -> Result<RunRecord, Failure> {
    store
        .record_of(reference)?
        .ok_or_else(|| input_error(format!("no run matches {reference}")))
}

fn transfer_bar() -> indicatif::ProgressBar {
    // Drawn on a terminal only; hidden when stderr is redirected.
    indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} {bytes} ({bytes_per_sec})")
            .expect("valid template"),
    )
}

fn cmd_remote(cli: &Cli, rc: &RemoteCommand) -> Result<(), Failure> {
    use cairn::remote::{RemoteSpec, S3Spec};
    let store = open_store(cli)?;
    match rc {
        RemoteCommand::Add {
            name,
            dir,
            s3,
            prefix,
            endpoint,
            region,
        } => {
            let spec = match (dir, s3) {
                (Some(path), _) => RemoteSpec::Dir { path: path.clone() },
                (None, Some(bucket)) => {
                    let mut s = S3Spec::new(bucket).prefix(prefix);
                    if let Some(e) = endpoint {
                        s = s.endpoint(e);
                    }
                    if let Some(r) = region {
                        s = s.region(r);
                    }
                    RemoteSpec::S3(s)
                }
                (None, None) => return Err(input_error("remote add needs --dir or --s3")),
            };
            store.add_remote(name, spec)?;
            Ok(())
        }
        RemoteCommand::Ls => {
            for (name, spec) in store.remotes()? {
                if cli.json {
                    out(json!({"name": name, "spec": spec}))?;
                } else {
                    match spec {
                        RemoteSpec::Dir { path } => {
                            out(format!("{name}\tdir\t{}", path.display()))?
                        }
                        RemoteSpec::S3(s) => out(format!("{name}\ts3\t{}/{}", s.bucket, s.prefix))?,
                        _ => out(name)?,
                    }
                }
            }
            Ok(())
        }
        RemoteCommand::Rm { name } => {
            if store.remove_remote(name)? {
                Ok(())
            } else {
                Err(input_error(format!(
                    "no remote named {name:?} in the configuration"
                )))
            }
        }
    }
}

fn cmd_push(
    cli: &Cli,
    remote: &str,
    runs: &[String],
    all: bool,
    module: Option<&str>,
) -> Result<(), Failure> {
    let store = open_store(cli)?;
    let ids: Vec<cairn::Identity> = if runs.is_empty() {
        if !all && module.is_none() {
            return Err(input_error("push needs runs, --all or --module"));
        }
        let mut q = Query::new();
        q.module = module.map(str::to_owned);
        q.state = Some(Availability::Local);
        store.find(&q)?.into_iter().map(|r| r.identity).collect()
    } else {
        runs.iter()
            .map(|r| run_record(&store, r).map(|rec| rec.identity))
            .collect::<Result<_, _>>()?
    };
    let bar = transfer_bar();
    let report = store.push(&ids, remote, &|n| bar.inc(n))?;
    bar.finish_and_clear();
    for (id, e) in &report.failed {
        eprintln!(
            "cairn: warning: {id} not pushed: {}",
            e.to_string().replace('\n', " ")
        );
    }
    if cli.json {
        out(json!({
            "pushed": report.pushed.len(),
            "already": report.already.len(),
            "bytes": report.bytes,
            "failed": report.failed.len(),
        }))?;
    } else {
        out(format!(
            "{} pushed, {} already there, {} failed ({} bytes)",
            report.pushed.len(),
            report.already.len(),
            report.failed.len(),
            report.bytes
        ))?;
    }
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            code: 3,
            message: format!("{} runs not pushed", report.failed.len()),
        })
    }
}

fn cmd_fetch(cli: &Cli, references: &[String], from: Option<&str>) -> Result<(), Failure> {
    let store = open_store(cli)?;
    let ids: Vec<cairn::Identity> = references
        .iter()
        .map(|r| run_record(&store, r).map(|rec| rec.identity))
        .collect::<Result<_, _>>()?;
    let bar = transfer_bar();
    let report = store.fetch_many(&ids, from, &|n| bar.inc(n))?;
    bar.finish_and_clear();
    for (id, e) in &report.failed {
        eprintln!(
            "cairn: warning: {id} not fetched: {}",
            e.to_string().replace('\n', " ")
        );
    }
    if cli.json {
        out(json!({
            "fetched": report.fetched.len(),
            "bytes": report.bytes,
            "failed": report.failed.len(),
        }))?;
    } else {
        out(format!(
            "{} local, {} failed ({} bytes fetched)",
            report.fetched.len(),
            report.failed.len(),
            report.bytes
        ))?;
    }
    match report.failed.first() {
        None => Ok(()),
        Some((_, e)) if report.failed.len() == 1 && ids.len() == 1 => Err(Failure {
            code: 3,
            message: e.to_string(),
        }),
        Some(_) => Err(Failure {
            code: 3,
            message: format!("{} runs not fetched", report.failed.len()),
        }),
    }
}

fn cmd_evict(cli: &Cli, reference: &str, force: bool) -> Result<(), Failure> {
    let store = open_store(cli)?;
    let rec = run_record(&store, reference)?;
    let opts = cairn::remote::EvictOptions::default().force(force);
    let confirmed = store.evict(&rec.identity, &opts)?;
    if cli.json {
        out(json!({"identity": rec.identity.to_hex(), "confirmed_by": confirmed}))
    } else {
        match confirmed {
            Some(r) => out(format!("{} evicted (copy confirmed on {r})", rec.identity)),
            None => out(format!("{} evicted", rec.identity)),
        }
    }
}

fn cmd_whereis(cli: &Cli, reference: &str) -> Result<(), Failure> {
    let store = open_store(cli)?;
    let rec = run_record(&store, reference)?;
    let w = store
        .whereis(&rec.identity)?
        .ok_or_else(|| input_error(format!("no run matches {reference}")))?;
    let when = |ms: Option<u64>| {
        ms.map(|ms| {
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )
            .to_string()
        })
    };
    let resources = store.list_resources(&w.identity)?;
    if cli.json {
        let copies: Vec<_> = w
            .copies
            .iter()
            .map(|c| json!({"remote": c.remote, "verified_at": when(c.verified_at_ms)}))
            .collect();
        let resources: Vec<_> = resources
            .iter()
            .map(|r| json!({"id": r.id.to_string(), "name": r.name, "backend": r.backend.as_str(), "uri": r.uri}))
            .collect();
        return out(json!({
            "identity": w.identity.to_hex(),
            "location": w.location,
            "state": w.state.as_str(),
            "copies": copies,
            "resources": resources,
        }));
    }
    out(format!("{}\t{}\t{}", w.identity, w.state, w.location))?;
    for c in &w.copies {
        out(format!(
            "  {}\tverified {}",
            c.remote,
            when(c.verified_at_ms).unwrap_or_else(|| "never".into())
        ))?;
    }
    for r in &resources {
        out(format!("  resource {}\t{}\t{}", r.id, r.backend, r.name))?;
    }
    Ok(())
}

fn cmd_remote_check(cli: &Cli, name: &str, verify: bool) -> Result<(), Failure> {
    let store = open_store(cli)?;
    let report = if verify {
        store.verify_remote(name)?
    } else {
        store.reindex_remote(name)?
    };
    for f in &report.findings {
        if cli.json {
            out(json!({"identity": f.identity.to_hex(), "problem": f.problem}))?;
        } else {
            out(format!("{}\t{}", f.identity, f.problem))?;
        }
    }
    if cli.json {
        out(json!({
            "checked": report.checked,
            "good": report.good,
            "discovered": report.discovered.len(),
            "findings": report.findings.len(),
        }))?;
    } else if verify {
        out(format!(
            "{} copies checked, {} whole, {} problems",
            report.checked,
            report.good,
            report.findings.len()
        ))?;
    } else {
        out(format!(
            "{} runs listed, {} discovered",
            report.checked,
            report.discovered.len()
        ))?;
    }
    if verify && !report.findings.is_empty() {
        return Err(Failure {
            code: FOUND_PROBLEMS,
            message: format!("{} problems on remote {name}", report.findings.len()),
        });
    }
    Ok(())
}
