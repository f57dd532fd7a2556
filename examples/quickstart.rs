//! cairn's main job on a small example: give runs identities, materialize them, find them again.
//!
//! `cargo run --release --example quickstart [ROOT]` (default: a fresh directory under the
//! system temp dir).

use serde::Serialize;

#[derive(Serialize, Default)]
struct Optimizer {
    name: String,
    lr: f64,
}

#[derive(Serialize, Default)]
struct Train {
    epochs: u32,
    batch_size: u32,
    optimizer: Optimizer,
    log_dir: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = match std::env::args_os().nth(1) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::env::temp_dir().join(format!("cairn-quickstart-{}", std::process::id())),
    };
    let store = cairn::Store::open(&root)?;
    println!("store root: {}", store.root().display());

    // The module's schema: defaults do not identify, and neither does where logs go.
    let defaults = Train {
        epochs: 10,
        batch_size: 32,
        optimizer: Optimizer {
            name: "adam".into(),
            lr: 1e-3,
        },
        log_dir: String::new(),
    };
    let schema = cairn::Schema::new(&defaults, &["log_dir"])?;

    for (lr, log_dir) in [(1e-3, "/tmp/a"), (1e-3, "/tmp/b"), (3e-4, "/tmp/a")] {
        let config = Train {
            optimizer: Optimizer {
                name: "adam".into(),
                lr,
            },
            log_dir: log_dir.into(),
            ..Train {
                epochs: 10,
                batch_size: 32,
                ..Default::default()
            }
        };
        let model = cairn::Model::new("train")
            .with_config(&config)?
            .with_predicate(&serde_json::json!({"dataset": "mnist", "split": "train"}))?
            .with_schema(schema.clone());
        let run = store.get_or_create(&model)?;
        println!(
            "{} {}  lr={lr:<7} log_dir={log_dir}  -> {}",
            if run.was_created() {
                "created "
            } else {
                "existing"
            },
            &run.identity().to_hex()[..16],
            run.location().display()
        );
        std::fs::write(run.data_dir().join("metrics.csv"), "step,loss\n0,2.30\n")?;
    }

    // Any unique prefix of 8+ hex characters names a run.
    let (runs, errors) = store.scan();
    assert!(errors.is_empty());
    for run in &runs {
        let found = store
            .resolve(&run.identity().to_hex()[..8])?
            .expect("run by prefix");
        assert_eq!(found.path(), run.path());
    }
    println!(
        "{} runs under the root (the second config only changed a non-identifying field)",
        runs.len()
    );
    Ok(())
}
