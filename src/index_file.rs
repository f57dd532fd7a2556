//! The index file under redb: redb's own file backend, with page writes gathered and written in
//! file order.
//!
//! redb writes a commit's pages one `pwrite` each, in its cache's order rather than the file's.
//! The page cache then holds every 4 KiB page on its own, and the commit's fsync writes them back
//! at well under half the speed of the same bytes written in large pieces (62 MiB written in
//! 4 KiB pieces or in 1 MiB pieces, then `fdatasync`: 150–164 ms against 60–68 ms on this
//! project's machine). Here page writes are kept (copied into large anonymous mappings) and
//! written in file order, each run of contiguous pages with one `pwritev` whose writeback starts
//! at once, before anything else reaches the file.
//!
//! Invariants, which leave redb's protocol and what other processes see unchanged:
//! - Every call other than a page write (a resize, an fsync, the length, a lock or unlock, the
//!   close, and a read of a range with kept bytes) first writes everything kept. The file is then
//!   exactly as if each write had been made when redb made it.
//! - A write to the header page is never kept: other processes read the header without taking a
//!   lock this process holds.
//! - At most [`KEEP_AT_MOST`] bytes are kept; a write that overlaps a kept page other than by
//!   replacing it whole first writes what is kept.
//! - A failed write of kept pages drops them: nothing kept before an I/O error is written after it.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

use memmap2::{Advice, MmapMut};
use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// The header page: writes below this offset go to the file at once.
const HEADER_PAGE: u64 = 4096;
/// The most bytes kept before they are written.
const KEEP_AT_MOST: usize = 128 << 20;
/// Bytes of the first mapping kept pages are copied into, and of each further one.
const FIRST_CHUNK: usize = 1 << 20;
const CHUNK: usize = 8 << 20;
/// The most pieces one `pwritev` takes (`IOV_MAX` on Linux).
const MAX_SLICES: usize = 1024;

/// redb's file backend with page writes gathered (module docs).
pub(crate) struct IndexFile {
    /// redb's backend: reads, resizes, fsyncs and the byte-range locks.
    inner: FileBackend,
    /// The same open file description, for the gathered writes.
    file: File,
    kept: Mutex<Kept>,
    /// The most bytes kept ([`KEEP_AT_MOST`]; less in tests).
    limit: usize,
}

/// Page writes not yet made: their bytes, copied into large anonymous mappings (the kernel may
/// back them with huge pages, so copying a commit's pages costs few page faults), and where
/// each belongs in the file.
#[derive(Default)]
struct Kept {
    /// File offset → the page's bytes in `chunks`; no two pages overlap.
    pages: BTreeMap<u64, Span>,
    chunks: Vec<MmapMut>,
    /// Bytes used in the last chunk.
    used: usize,
    /// Bytes copied into `chunks` (replaced pages included).
    bytes: usize,
}

/// Where a kept page's bytes are: `len` bytes at `at` in chunk `chunk`.
#[derive(Clone, Copy)]
struct Span {
    chunk: usize,
    at: usize,
    len: usize,
}

impl Kept {
    /// Copies `data` into the chunks: the first small (a commit of a few pages touches little
    /// memory, and it is kept from one write of the pages to the next), the others large and
    /// advised to be backed by huge pages (a hint: without them the copy only faults more).
    fn copy(&mut self, data: &[u8]) -> io::Result<Span> {
        if self
            .chunks
            .last()
            .is_none_or(|c| c.len() - self.used < data.len())
        {
            let (size, huge) = match self.chunks.len() {
                0 => (FIRST_CHUNK, false),
                _ => (CHUNK, true),
            };
            let chunk = MmapMut::map_anon(size.max(data.len()))?;
            if huge {
                let _ = chunk.advise(Advice::HugePage);
            }
            self.chunks.push(chunk);
            self.used = 0;
        }
        let chunk = self.chunks.len() - 1;
        let at = self.used;
        self.chunks[chunk][at..at + data.len()].copy_from_slice(data);
        self.used += data.len();
        self.bytes += data.len();
        Ok(Span {
            chunk,
            at,
            len: data.len(),
        })
    }

    /// The bytes of a kept page.
    fn bytes_of(&self, span: Span) -> &[u8] {
        &self.chunks[span.chunk][span.at..span.at + span.len]
    }

    /// Forgets every kept page, keeping the first chunk for the next ones.
    fn clear(&mut self) {
        self.pages.clear();
        self.chunks.truncate(1);
        self.used = 0;
        self.bytes = 0;
    }

    /// Whether a kept page overlaps `[start, end)`. Pages do not overlap one another, so only
    /// the last one starting before `end` can.
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.pages
            .range(..end)
            .next_back()
            .is_some_and(|(&at, page)| at + page.len as u64 > start)
    }
}

impl fmt::Debug for IndexFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept = self.kept.lock().map(|k| k.bytes).unwrap_or(0);
        f.debug_struct("IndexFile")
            .field("file", &self.file)
            .field("kept_bytes", &kept)
            .finish()
    }
}

impl IndexFile {
    /// Opens (or creates) the index file as redb's `Builder::create` does.
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(IndexFile {
            file: file.try_clone()?,
            inner: FileBackend::new(file).map_err(io::Error::other)?,
            kept: Mutex::new(Kept::default()),
            limit: KEEP_AT_MOST,
        })
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        // A panic while the lock was held left the map whole (it is changed by single calls).
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes everything kept, in file order.
    fn write_kept(&self) -> io::Result<()> {
        let mut kept = self.kept();

        self.write_all_kept(&mut kept)
    }

    fn write_all_kept(&self, kept: &mut Kept) -> io::Result<()> {
        let written = self.write_pages(kept);
        kept.clear();
        written
    }

    /// Writes the pages of `kept` in file order.
    fn write_pages(&self, kept: &Kept) -> io::Result<()> {
        let mut pages = kept.pages.iter().peekable();
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(MAX_SLICES);
        while let Some((&start, &first)) = pages.next() {
            slices.clear();
            slices.push(IoSlice::new(kept.bytes_of(first)));
            let mut end = start + first.len as u64;
            while slices.len() < MAX_SLICES {
                match pages.peek() {
                    Some(&(&at, &page)) if at == end => {
                        slices.push(IoSlice::new(kept.bytes_of(page)));
                        end += page.len as u64;
                        pages.next();
                    }
                    _ => break,
                }
            }
            write_all_at(&self.file, &mut slices, start)?;
            // The disk starts on this run while the next is written; the fsync that follows
            // waits for all of it.
            crate::durable::start_writeback(&self.file, start, end - start);
        }
        Ok(())
    }
}

/// `pwritev` of all of `slices` at `offset`, continuing after short writes.
fn write_all_at(file: &File, mut slices: &mut [IoSlice<'_>], mut offset: u64) -> io::Result<()> {
    while !slices.is_empty() {
        match rustix::io::pwritev(file, slices, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                offset += n as u64;
                IoSlice::advance_slices(&mut slices, n);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes what is kept, then makes a lock call.
fn locked<T>(
    file: &IndexFile,
    call: impl FnOnce(&FileBackend) -> Result<T, BackendError>,
) -> Result<T, BackendError> {
    file.write_kept()?;
    call(&file.inner)
}

impl StorageBackend for IndexFile {
    fn len(&self) -> io::Result<u64> {
        self.write_kept()?;
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        {
            let mut kept = self.kept();
            if kept.overlaps(offset, offset + out.len() as u64) {
                self.write_all_kept(&mut kept)?;
            }
        }
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.write_kept()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.write_kept()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut kept = self.kept();
        let end = offset + data.len() as u64;
        if offset < HEADER_PAGE {
            self.write_all_kept(&mut kept)?;
            return self.inner.write(offset, data);
        }
        let replaces = kept.pages.get(&offset).map(|p| p.len);
        if replaces != Some(data.len()) && kept.overlaps(offset, end) {
            self.write_all_kept(&mut kept)?;
        }
        let span = kept.copy(data)?;
        kept.pages.insert(offset, span);
        if kept.bytes > self.limit {
            self.write_all_kept(&mut kept)?;
        }
        Ok(())
    }

    fn close(&self) -> io::Result<()> {
        let written = self.write_kept();
        let closed = self.inner.close();
        written.and(closed)
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        locked(self, |f| f.try_lock_range(start, end))
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        locked(self, |f| f.try_lock_shared_range(start, end))
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        locked(self, |f| f.lock_range(start, end))
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        locked(self, |f| f.lock_shared_range(start, end))
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        locked(self, |f| f.unlock_range(start, end))
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        locked(self, |f| f.query_lock_range(start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PAGE: usize = 4096;

    /// An index file of `pages` zeroed pages under a temporary directory.
    fn file(pages: usize) -> (tempfile::TempDir, std::path::PathBuf, IndexFile) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        let f = IndexFile::open(&path).unwrap();
        f.set_len((pages * PAGE) as u64).unwrap();
        (dir, path, f)
    }

    fn on_disk(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    fn page_is(disk: &[u8], page: usize, byte: u8) -> bool {
        disk[page * PAGE..(page + 1) * PAGE]
            .iter()
            .all(|&b| b == byte)
    }

    #[test]
    fn page_writes_are_kept_until_the_fsync_writes_them_all() {
        let (_dir, path, f) = file(8);
        f.write((3 * PAGE) as u64, &[3; PAGE]).unwrap();
        f.write((2 * PAGE) as u64, &[2; PAGE]).unwrap();
        f.write((5 * PAGE) as u64, &[5; PAGE]).unwrap();
        assert!(
            on_disk(&path).iter().all(|&b| b == 0),
            "written before the fsync"
        );
        f.sync_data().unwrap();
        let disk = on_disk(&path);
        for (page, byte) in [(1, 0), (2, 2), (3, 3), (4, 0), (5, 5)] {
            assert!(page_is(&disk, page, byte), "page {page}");
        }
    }

    #[test]
    fn a_header_write_reaches_the_file_at_once_after_the_kept_pages() {
        let (_dir, path, f) = file(4);
        f.write((2 * PAGE) as u64, &[2; PAGE]).unwrap();
        f.write(0, &[9; 320]).unwrap();
        let disk = on_disk(&path);
        assert!(disk[..320].iter().all(|&b| b == 9));
        assert!(page_is(&disk, 2, 2), "a kept page written after the header");
    }

    #[test]
    fn every_call_but_a_page_write_first_writes_what_is_kept() {
        let lock = (Bound::Included(1 << 40), Bound::Excluded((1 << 40) + 1));
        type Call = fn(&IndexFile, (Bound<u64>, Bound<u64>));
        let calls: [(&str, Call); 8] = [
            ("len", |f, _| assert!(f.len().unwrap() > 0)),
            ("set_len", |f, _| f.set_len((8 * PAGE) as u64).unwrap()),
            ("read of a kept page", |f, _| {
                f.read(PAGE as u64, &mut [0; PAGE]).unwrap()
            }),
            ("try_lock_range", |f, (a, b)| {
                assert!(f.try_lock_range(a, b).unwrap())
            }),
            ("lock_shared_range", |f, (a, b)| {
                f.lock_shared_range(a, b).unwrap()
            }),
            ("query_lock_range", |f, (a, b)| {
                assert!(!f.query_lock_range(a, b).unwrap())
            }),
            ("lock_range", |f, (a, b)| f.lock_range(a, b).unwrap()),
            ("close", |f, _| f.close().unwrap()),
        ];
        for (name, call) in calls {
            let (_dir, path, f) = file(4);
            f.write(PAGE as u64, &[1; PAGE]).unwrap();
            call(&f, lock);
            assert!(page_is(&on_disk(&path), 1, 1), "{name}");
        }
        let (_dir, path, f) = file(4);
        assert!(f.try_lock_range(lock.0, lock.1).unwrap());
        f.write(PAGE as u64, &[1; PAGE]).unwrap();
        f.unlock_range(lock.0, lock.1).unwrap();
        assert!(page_is(&on_disk(&path), 1, 1), "unlock_range");
    }

    #[test]
    fn a_read_elsewhere_leaves_kept_pages_kept() {
        let (_dir, path, f) = file(4);
        f.write(PAGE as u64, &[1; PAGE]).unwrap();
        let mut out = [7; PAGE];
        f.read((2 * PAGE) as u64, &mut out).unwrap();
        assert_eq!(out, [0; PAGE]);
        assert!(page_is(&on_disk(&path), 1, 0));
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// `pages` pages of `byte` from page `at`.
        Write {
            at: usize,
            pages: usize,
            byte: u8,
        },
        Read {
            at: usize,
            pages: usize,
        },
        Sync,
    }

    fn op(pages: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..pages - 2, 1..=2usize, any::<u8>())
                .prop_map(|(at, pages, byte)| Op::Write { at, pages, byte }),
            2 => (0..pages - 2, 1..=2usize).prop_map(|(at, pages)| Op::Read { at, pages }),
            1 => Just(Op::Sync),
        ]
    }

    proptest! {
        /// Whatever the order and overlap of the writes, and however few bytes may be kept,
        /// every read and every fsync sees exactly what plain writes would have left.
        #[test]
        fn it_reads_and_syncs_as_plain_writes_would(
            ops in proptest::collection::vec(op(16), 1..60),
            limit_pages in 1..8usize,
        ) {
            let (_dir, path, mut f) = file(16);
            f.limit = limit_pages * PAGE;
            let mut model = vec![0u8; 16 * PAGE];
            for op in ops {
                match op {
                    Op::Write { at, pages, byte } => {
                        let bytes = vec![byte; pages * PAGE];
                        f.write((at * PAGE) as u64, &bytes).unwrap();
                        model[at * PAGE..(at + pages) * PAGE].copy_from_slice(&bytes);
                    }
                    Op::Read { at, pages } => {
                        let mut out = vec![0; pages * PAGE];
                        f.read((at * PAGE) as u64, &mut out).unwrap();
                        prop_assert_eq!(&out[..], &model[at * PAGE..(at + pages) * PAGE]);
                    }
                    Op::Sync => {
                        f.sync_data().unwrap();
                        prop_assert!(on_disk(&path) == model);
                    }
                }
            }
            f.sync_data().unwrap();
            prop_assert!(on_disk(&path) == model);
        }
    }
}
