//! Command-line interface. Conventions shared by every command:
//! `--root DIR` (default `$CAIRN_ROOT`), `--json` for machine-readable output, and exit codes
//! 0 success, 1 a check found problems, 2 usage or input error, 3 an operation failed (I/O).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;

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

fn run(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Id { file, explain } => cmd_id(cli, file, *explain),
        Command::Put { file } => cmd_put(cli, file),
        Command::Show { run } => cmd_show(cli, run),
    }
}

fn open_store(cli: &Cli) -> Result<Store, Failure> {
    let root = cli
        .root
        .as_ref()
        .ok_or_else(|| input_error("no store root: pass --root DIR or set CAIRN_ROOT"))?;
    Ok(Store::open(root)?)
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
