//! Errors. One umbrella [`enum@Error`] with structured variants; every variant that concerns a
//! file names it.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias used throughout cairn.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in cairn.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value cannot be canonicalized (identity v1, rule 1).
    #[error("{path}: {kind}")]
    Canonical {
        /// Where in the value, as a JSON-pointer-like path (`config.optimizer.lr`).
        path: String,
        /// What is wrong.
        kind: CanonicalErrorKind,
    },
    /// Input text is not valid JSON (or exceeds the parser's limits).
    #[error("invalid JSON: {message}")]
    Json {
        /// The parser's message, with line and column.
        message: String,
    },
    /// A model is unusable for an identity: empty module, predicate not a map, bad schema.
    #[error("invalid model: {reason}")]
    InvalidModel {
        /// What is wrong.
        reason: String,
    },
    /// A query names a field or value that cannot be searched.
    #[error("invalid query: {reason}")]
    InvalidQuery {
        /// What is wrong.
        reason: String,
    },
    /// A file in a run directory (or another cairn file) is malformed.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file carries a format version this build does not read.
    #[error("{}: unsupported format version {found} (this cairn reads version {expected})", path.display())]
    UnsupportedVersion {
        /// The offending file.
        path: PathBuf,
        /// The version found in the file.
        found: String,
        /// The version this build reads.
        expected: u64,
    },
    /// A file exceeds a parser's size limit.
    #[error("{}: file is {size} bytes, over the limit of {limit}", path.display())]
    TooLarge {
        /// The offending file.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// An I/O operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What cairn was doing (`read`, `write`, `fsync`, `rename`, ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A path escapes the store root or is otherwise unsafe (`..`, absolute, symlink out).
    #[error("{}: unsafe path: {reason}", path.display())]
    UnsafePath {
        /// The offending path.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// The index database cannot be read or written.
    #[error("index {}: {reason}", path.display())]
    Index {
        /// The index file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The index file is damaged: redb found it corrupt, or a record cairn wrote does not decode.
    /// The store heals it (FORMAT.md §9): the file is kept aside, the index rebuilt from the
    /// directories, and the operation retried once.
    #[error("index {} is damaged: {what}", path.display())]
    IndexDamaged {
        /// The index file.
        path: PathBuf,
        /// What was found damaged.
        what: String,
    },
    /// Another process held the index's write slot for longer than the configured timeout.
    #[error("index {} stayed busy for {waited:?} (another process is writing); the run directories are intact and the next index access picks them up", path.display())]
    IndexBusy {
        /// The index file.
        path: PathBuf,
        /// How long cairn waited.
        waited: std::time::Duration,
    },
    /// A run reference is not a valid identity or prefix.
    #[error("invalid run reference {given:?}: {reason}")]
    InvalidReference {
        /// What the user gave.
        given: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A prefix matches more than one run.
    #[error("prefix {prefix} is ambiguous: it matches {matches} runs")]
    AmbiguousPrefix {
        /// The prefix.
        prefix: String,
        /// How many runs it matches.
        matches: usize,
    },
    /// Artifact configuration (environment, `.env` file) names something cairn does not know.
    #[error("{origin}: {reason}")]
    InvalidConfig {
        /// Where the setting came from (a variable name or a file).
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// No resource has this id.
    #[error("no resource {id}")]
    UnknownResource {
        /// The id asked for.
        id: uuid::Uuid,
    },
    /// A resource's bytes do not match its record (size or sha256).
    #[error("resource {id} ({name:?}): {what} is {found}, the record says {expected}")]
    ResourceMismatch {
        /// The resource.
        id: uuid::Uuid,
        /// Its name.
        name: String,
        /// `"size"` or `"sha256"`.
        what: &'static str,
        /// The value in the record.
        expected: String,
        /// The value of the bytes found.
        found: String,
    },
    /// An inline resource's bytes are missing from the index (it was deleted or rebuilt from
    /// scratch; inline bytes have no other copy).
    #[error("resource {id} ({name:?}): its inline bytes are gone from the index")]
    InlineBytesGone {
        /// The resource.
        id: uuid::Uuid,
        /// Its name.
        name: String,
    },
    /// A remote operation failed, or a remote holds something other than it should.
    #[error("remote {remote}: {key}: {reason}")]
    Remote {
        /// The remote's name.
        remote: String,
        /// The object key concerned (empty for the remote as a whole).
        key: String,
        /// What went wrong.
        reason: String,
    },
    /// No remote of this name is configured.
    #[error("no remote named {name:?} (see `cairn remote ls`)")]
    UnknownRemote {
        /// The name asked for.
        name: String,
    },
    /// A run's bytes are not here (evicted or remote) and fetching on demand is off.
    #[error("run {identity} is {state}: its bytes are on a remote (cairn fetch)")]
    NotLocal {
        /// The run.
        identity: crate::identity::Identity,
        /// Its state.
        state: &'static str,
    },
    /// A resource's bytes are held only on a remote (its record's backend is `remote`) and
    /// fetching on demand is off.
    #[error(
        "resource {id} ({name:?}) is held only on remote {remote:?} and on-demand fetching is off (cairn fetch)"
    )]
    ResourceRemote {
        /// The resource.
        id: uuid::Uuid,
        /// Its name.
        name: String,
        /// The remote holding its bytes.
        remote: String,
    },
    /// A remote resource's object is missing from the remote its record names.
    #[error("resource {id} ({name:?}): remote {remote}: {key} is missing")]
    RemoteObjectMissing {
        /// The resource.
        id: uuid::Uuid,
        /// Its name.
        name: String,
        /// The remote its record names.
        remote: String,
        /// The object key.
        key: String,
    },
    /// evict refused: no remote was confirmed to hold a whole copy.
    #[error("evict {identity} refused: {reason}")]
    EvictRefused {
        /// The run.
        identity: crate::identity::Identity,
        /// Why.
        reason: String,
    },
}

/// What is wrong with a value that cannot be canonicalized.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanonicalErrorKind {
    /// A map holds the same key twice.
    DuplicateKey(String),
    /// A map key is not text.
    NonTextKey,
    /// NaN or an infinity.
    NotFinite,
    /// An integer outside −2^64 … 2^64−1 (the literal is given).
    IntegerOutOfRange(String),
    /// A JSON number literal too large for a double.
    FloatOverflow(String),
    /// A CBOR tag, undefined or another value identity v1 has no rule for.
    Unsupported(&'static str),
    /// Nesting deeper than [`crate::canonical::MAX_DEPTH`].
    TooDeep,
    /// CBOR bytes are not in canonical form (decoding only).
    NotCanonical,
    /// CBOR bytes could not be decoded.
    Decode(String),
}

impl fmt::Display for CanonicalErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateKey(k) => write!(f, "duplicate map key {k:?}"),
            Self::NonTextKey => f.write_str("map key is not text"),
            Self::NotFinite => f.write_str("NaN and infinities are not allowed"),
            Self::IntegerOutOfRange(n) => {
                write!(f, "integer {n} is outside the range -2^64 ..= 2^64-1")
            }
            Self::FloatOverflow(n) => write!(f, "number {n} overflows a double"),
            Self::Unsupported(what) => write!(f, "{what} is not allowed"),
            Self::TooDeep => write!(
                f,
                "nesting deeper than {} levels",
                crate::canonical::MAX_DEPTH
            ),
            Self::NotCanonical => f.write_str("CBOR is not in canonical form"),
            Self::Decode(m) => write!(f, "invalid CBOR: {m}"),
        }
    }
}

impl Error {
    /// An [`Error::Io`] for `op` on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Format`] for `path`.
    pub(crate) fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The same error, with file-less variants (JSON, canonical) attributed to `path`.
    pub(crate) fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            Error::Json { message } => Error::format(path, message),
            e @ (Error::Canonical { .. } | Error::InvalidModel { .. }) => {
                Error::format(path, e.to_string())
            }
            other => other,
        }
    }
}
