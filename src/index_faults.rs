//! The index file behind named failpoints (feature `failpoints`): redb's own writes and fsyncs
//! of `index.redb` fail (or the process stops) where a test says, through redb's
//! `StorageBackend` hook, as a full disk, a failing device or a crash inside a commit would.
//!
//! Points: `index.write` (each page write and each resize), `index.fsync` (each `sync_data`),
//! `index.read` (each page read: a failing device is not a damaged index).
//! Everything else, byte-range locks included, is the index's own backend
//! (`crate::index_file`), so the many-process behaviour of the index is unchanged.

use std::io;
use std::ops::Bound;
use std::path::Path;

use redb::{BackendError, StorageBackend};

use crate::durable::injected;
use crate::index_file::IndexFile;

/// The index's backend with failpoints before each write and fsync redb makes.
#[derive(Debug)]
pub(crate) struct FaultyFile(IndexFile);

impl FaultyFile {
    /// Opens (or creates) the index file as redb's `Builder::create` does.
    pub(crate) fn open(path: &Path) -> Result<Self, redb::DatabaseError> {
        Ok(FaultyFile(IndexFile::open(path)?))
    }
}

/// The injected failure at `point`, if any (an `abort` action stops the process here): ENOSPC
/// for `enospc`, else EIO, as a device reports them.
fn fault(point: &str) -> io::Result<()> {
    /// EIO on Linux.
    const EIO: i32 = 5;
    match injected(point) {
        None => Ok(()),
        Some(e) if e.raw_os_error().is_some() => Err(e),
        Some(_) => Err(io::Error::from_raw_os_error(EIO)),
    }
}

impl StorageBackend for FaultyFile {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        fault("index.read")?;
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        fault("index.write")?;
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        fault("index.fsync")?;
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        fault("index.write")?;
        self.0.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.0.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.0.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.query_lock_range(start, end)
    }
}
