//! cairn gives every computational run a content-addressed identity and keeps track of where
//! its bytes live.
//!
//! # API layout
//! - [`identity()`], [`identity_with_schema`], [`identity_of_json`]: identity v1 of a module,
//!   config and predicate ([`identity`](mod@identity) module; FORMAT.md §3).
//! - [`canonical`]: canonical values and their deterministic CBOR encoding (FORMAT.md §2).
//! - [`Model`], [`IdHeader`]: the run directory format v1, `model.json` and `id.json`
//!   ([`run`] module; FORMAT.md §4).
//! - [`Store`], [`Run`]: a root of run directories; [`Store::get_or_create`] materializes runs
//!   crash-safely ([`store`] module).
//! - [`walk`]: parallel discovery of run directories.
//! - [`artifact`]: resources (files attached to runs), inline or in a sharded directory.
//! - [`remote`]: copies on a directory mirror or S3; push, fetch, evict, whereis.
//!
//! # Example
//! ```
//! use serde::Serialize;
//!
//! #[derive(Serialize)]
//! struct Train { lr: f64, epochs: u32 }
//!
//! let root = tempfile::tempdir()?;
//! let store = cairn::Store::open(root.path())?;
//! let model = cairn::Model::new("train").with_config(&Train { lr: 0.1, epochs: 3 })?;
//! let run = store.get_or_create(&model)?;
//! std::fs::write(run.data_dir().join("metrics.csv"), "step,loss\n")?;
//!
//! // Identity is not location: the same model always has the same identity.
//! assert_eq!(run.identity(), cairn::identity("train", &Train { lr: 0.1, epochs: 3 }, &cairn::Empty)?);
//! assert_eq!(store.resolve(&run.identity().to_hex()[..8])?.unwrap().path(), run.path());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod artifact;
pub mod canonical;
mod cbor;
mod confine;
mod durable;
pub mod error;
mod heal;
pub mod identity;
pub mod index;
#[cfg(feature = "failpoints")]
mod index_faults;
mod index_file;
pub mod json;
pub mod query;
pub mod reindex;
pub mod remote;
pub mod repair;
pub mod run;
mod run_bytes;
pub mod schemas;
pub mod store;
pub mod verify;
pub mod walk;

pub use error::{CanonicalErrorKind, Error, Result};
pub use identity::{
    Empty, Identity, Prefix, Schema, document_of_json, identity, identity_of_json,
    identity_with_schema,
};
pub use run::{IdHeader, Model};
pub use store::{Run, Store, StoreBuilder};

/// The README's examples compile and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
