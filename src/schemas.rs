//! The schemas of the current code: one per module, used by `verify` to re-derive identities
//! (FORMAT.md §6.1). Orchestration code builds a registry in code; the CLI loads one from
//! `<root>/.cairn/schemas/*.json`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::LazyLock;

use serde::Serialize;

use crate::canonical::Value;
use crate::error::{Error, Result};
use crate::identity::Schema;

/// Directory under `.cairn/` holding one schema file per module.
pub const SCHEMAS_DIR: &str = "schemas";
/// Largest schema file accepted (1 MiB).
const SCHEMA_FILE_LIMIT: u64 = 1 << 20;

static EMPTY: LazyLock<Schema> = LazyLock::new(Schema::empty);

/// Module → current schema. A module without an entry uses the empty schema.
#[derive(Clone, Debug, Default)]
pub struct Schemas {
    by_module: HashMap<String, Schema>,
}

impl Schemas {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `schema` for `module` (replacing any earlier one).
    pub fn with(mut self, module: impl Into<String>, schema: Schema) -> Self {
        self.by_module.insert(module.into(), schema);
        self
    }

    /// Registers the schema derived from `T::default()` for `module`.
    pub fn with_default<T: Serialize + Default>(
        self,
        module: impl Into<String>,
        non_identifying: &[&str],
    ) -> Result<Self> {
        Ok(self.with(module, Schema::from_default::<T>(non_identifying)?))
    }

    /// The schema of `module` (the empty schema if none is registered).
    pub fn get(&self, module: &str) -> &Schema {
        self.by_module.get(module).unwrap_or(&EMPTY)
    }

    /// Number of registered modules.
    pub fn len(&self) -> usize {
        self.by_module.len()
    }

    /// True when no module is registered.
    pub fn is_empty(&self) -> bool {
        self.by_module.is_empty()
    }

    /// Loads every `*.json` file of `dir`: `{"module": .., "defaults": {..},
    /// "non_identifying": [..], "label": ..}`. A missing directory is an empty registry; a bad
    /// file is an error naming it; two files for one module are an error.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let mut out = Schemas::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("list", dir, e)),
        };
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for path in files {
            let bytes = crate::run::read_bounded(&path, SCHEMA_FILE_LIMIT)?;
            Value::from_json_slice(&bytes, "$").map_err(|e| e.in_file(&path))?;
            let mut obj: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&bytes)
                    .map_err(|e| Error::format(&path, format!("expected a JSON object: {e}")))?;
            let module = match obj.remove("module") {
                Some(serde_json::Value::String(m)) if !m.is_empty() => m,
                _ => return Err(Error::format(&path, "module must be a non-empty string")),
            };
            let schema: Schema = serde_json::from_value(serde_json::Value::Object(obj))
                .map_err(|e| Error::format(&path, format!("schema: {e}")))?;
            if out.by_module.insert(module.clone(), schema).is_some() {
                return Err(Error::format(
                    &path,
                    format!("a second schema for module {module:?}"),
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_files_load_strictly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("train.json"),
            r#"{"module": "train", "defaults": {"epochs": 5}, "non_identifying": ["log"], "label": "v2"}"#,
        )
        .unwrap();
        let s = Schemas::load_dir(dir.path()).unwrap();
        assert_eq!(s.get("train").label(), Some("v2"));
        assert!(s.get("other").is_empty());
        std::fs::write(
            dir.path().join("bad.json"),
            r#"{"module": "x", "defualts": {}}"#,
        )
        .unwrap();
        let err = Schemas::load_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("bad.json"), "{err}");
        assert!(
            Schemas::load_dir(&dir.path().join("missing"))
                .unwrap()
                .is_empty()
        );
    }
}
