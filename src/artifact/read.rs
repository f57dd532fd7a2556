//! Reading resource bytes: whole (a `read()` into a page-aligned buffer, or for a verified read
//! of a large file a checked mapping, [`ResourceData`]), or through a [`ResourceReader`] for
//! ranged reads (mmap for large files, `pread` for small ones; copies of the ranges asked for).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::buf::AlignedBuf;
use super::record::ResourceRecord;
use super::write::{CHUNK, sha256_hex};
use crate::error::{Error, Result};

/// Files at least this large are mapped by [`ResourceReader`]; smaller ones are read.
pub const MMAP_THRESHOLD: u64 = 1 << 20;

/// The bytes of a resource; derefs to `[u8]`.
///
/// Owned (page-aligned) bytes, except for a verified read of a file of at least
/// [`MMAP_THRESHOLD`] bytes: then a read-only mapping of the file, whose sha256 was checked over
/// that same mapping, so no copy is made. Sound because resource files are immutable: cairn
/// never writes a file after publishing it, and unlinking it (delete, update, gc) leaves the
/// mapping intact. Do not modify files under the artifact root by other means while holding one.
pub struct ResourceData(Data);

enum Data {
    Owned(AlignedBuf),
    Mapped(memmap2::Mmap),
}

impl ResourceData {
    pub(crate) fn owned(buf: AlignedBuf) -> Self {
        ResourceData(Data::Owned(buf))
    }

    /// The bytes, copied into a plain `Vec`.
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_ref().to_vec()
    }
}

impl std::ops::Deref for ResourceData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Data::Owned(b) => b,
            Data::Mapped(m) => m,
        }
    }
}

impl AsRef<[u8]> for ResourceData {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for ResourceData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match self.0 {
            Data::Owned(_) => "owned",
            Data::Mapped(_) => "mapped",
        };
        write!(f, "ResourceData({} bytes, {how})", self.len())
    }
}

/// A verified read of a large file: sha256 over a mapping of it, the mapping returned.
pub(crate) fn read_mapped_verified(
    file: &File,
    path: &Path,
    rec: &ResourceRecord,
) -> Result<ResourceData> {
    let map = map(file, path)?;
    if map.len() as u64 != rec.size_bytes {
        return Err(mismatch(
            rec,
            "size",
            rec.size_bytes.to_string(),
            map.len().to_string(),
        ));
    }
    check_hash(rec, sha256_hex(&map[..]))?;
    Ok(ResourceData(Data::Mapped(map)))
}

/// Opens a resource file, refusing anything but a regular file of the recorded size.
/// `path` is `<root>/<aa>/<uuid>` (from `path_of_uri`): its shard must be a real directory too.
pub(crate) fn open_checked(path: &Path, rec: &ResourceRecord) -> Result<File> {
    let shard = path.parent().expect("<root>/<aa>/<uuid>");
    if std::fs::symlink_metadata(shard).is_ok_and(|m| !m.is_dir()) {
        return Err(Error::UnsafePath {
            path: shard.into(),
            reason: "a shard must be a real directory, not a link".into(),
        });
    }
    let (file, len) = crate::confine::open_regular(path)?;
    if len != rec.size_bytes {
        return Err(mismatch(
            rec,
            "size",
            rec.size_bytes.to_string(),
            len.to_string(),
        ));
    }
    Ok(file)
}

pub(crate) fn mismatch(
    rec: &ResourceRecord,
    what: &'static str,
    want: String,
    got: String,
) -> Error {
    Error::ResourceMismatch {
        id: rec.id,
        name: rec.name.clone(),
        what,
        expected: want,
        found: got,
    }
}

/// Checks `sha256` against the record.
pub(crate) fn check_hash(rec: &ResourceRecord, sha256: String) -> Result<()> {
    if sha256 == rec.content_hash {
        Ok(())
    } else {
        Err(mismatch(rec, "sha256", rec.content_hash.clone(), sha256))
    }
}

/// Reads all of `file` (of `len` bytes) into a page-aligned buffer; with `verify`, also
/// returns its sha256.
pub(crate) fn read_file(
    file: &mut File,
    len: u64,
    path: &Path,
    verify: bool,
) -> Result<(AlignedBuf, Option<String>)> {
    let len = usize::try_from(len).map_err(|_| Error::TooLarge {
        path: path.into(),
        size: len,
        limit: usize::MAX as u64,
    })?;
    let mut buf = AlignedBuf::zeroed(len);
    file.read_exact(buf.as_mut_slice())
        .map_err(|e| Error::io("read", path, e))?;
    let sha = verify.then(|| sha256_hex(&buf));
    Ok((buf, sha))
}

/// Streams `source`, the bytes of `rec` (read from `from`), into `out` (written to `to`) one
/// chunk at a time through sha256, then checks the size and hash against the record. Bytes
/// reach `out` before that check, but never more than the recorded size.
pub(crate) fn copy_verified(
    rec: &ResourceRecord,
    source: &mut dyn Read,
    from: &Path,
    out: &mut dyn Write,
    to: &Path,
) -> Result<()> {
    let mut buf = AlignedBuf::zeroed(CHUNK);
    let mut h = Sha256::new();
    let mut done = 0u64;
    loop {
        let n = match source.read(buf.as_mut_slice()) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", from, e)),
        };
        if done + n as u64 > rec.size_bytes {
            return Err(mismatch(
                rec,
                "size",
                rec.size_bytes.to_string(),
                format!("more than {}", done + n as u64 - 1),
            ));
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("write", to, e))?;
        done += n as u64;
    }
    if done != rec.size_bytes {
        return Err(mismatch(
            rec,
            "size",
            rec.size_bytes.to_string(),
            done.to_string(),
        ));
    }
    check_hash(rec, hex::encode(h.finalize()))
}

enum Source {
    Inline(Vec<u8>),
    File(File),
    Mapped(memmap2::Mmap),
}

/// Random access to one resource's bytes. Ranges are returned as owned copies; the mapping of
/// a large file stays private to this type.
pub struct ResourceReader {
    record: ResourceRecord,
    source: Source,
    pos: u64,
}

impl std::fmt::Debug for ResourceReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceReader")
            .field("id", &self.record.id)
            .field("len", &self.record.size_bytes)
            .finish()
    }
}

impl ResourceReader {
    pub(crate) fn inline(record: ResourceRecord, bytes: Vec<u8>) -> Self {
        ResourceReader {
            record,
            source: Source::Inline(bytes),
            pos: 0,
        }
    }

    pub(crate) fn file(record: ResourceRecord, file: File, path: &Path) -> Result<Self> {
        let source = if record.size_bytes >= MMAP_THRESHOLD {
            Source::Mapped(map(&file, path)?)
        } else {
            Source::File(file)
        };
        Ok(ResourceReader {
            record,
            source,
            pos: 0,
        })
    }

    /// The resource's record.
    pub fn record(&self) -> &ResourceRecord {
        &self.record
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.record.size_bytes
    }

    /// True for an empty resource.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies bytes from `offset` into `buf`; returns how many (0 at or past the end).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        match &self.source {
            Source::Inline(b) => Ok(copy_from(b, offset, buf)),
            Source::Mapped(m) => Ok(copy_from(m, offset, buf)),
            Source::File(f) => {
                let mut done = 0;
                while done < buf.len() {
                    match f.read_at(&mut buf[done..], offset + done as u64) {
                        Ok(0) => break,
                        Ok(n) => done += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(done)
            }
        }
    }

    /// The bytes in `range` (clamped to the end), as an owned copy.
    pub fn read_range(&self, range: std::ops::Range<u64>) -> io::Result<Vec<u8>> {
        let end = range.end.min(self.len());
        let len = end.saturating_sub(range.start) as usize;
        let mut out = vec![0; len];
        let n = self.read_at(range.start, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// Checks the bytes against the record's sha256 (an error naming the resource if not).
    pub fn verify(&self) -> Result<()> {
        let sha = match &self.source {
            Source::Inline(b) => sha256_hex(b),
            Source::Mapped(m) => sha256_hex(&m[..]),
            Source::File(f) => {
                let mut h = Sha256::new();
                let mut buf = AlignedBuf::zeroed(CHUNK);
                let mut off = 0;
                loop {
                    let n = f
                        .read_at(buf.as_mut_slice(), off)
                        .map_err(|e| Error::io("read", &self.record.uri, e))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    off += n as u64;
                }
                hex::encode(h.finalize())
            }
        };
        check_hash(&self.record, sha)
    }
}

fn copy_from(bytes: &[u8], offset: u64, buf: &mut [u8]) -> usize {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let n = buf.len().min(bytes.len() - start);
    buf[..n].copy_from_slice(&bytes[start..start + n]);
    n
}

#[expect(
    unsafe_code,
    reason = "memmap2::Mmap::map is unsafe: the mapping is only sound while the file is not changed"
)]
fn map(file: &File, path: &Path) -> Result<memmap2::Mmap> {
    // SAFETY: resource files are immutable by construction: cairn writes each one under a
    // staging name, renames it into place once durable and never opens it for writing again
    // (new bytes go to a new file; delete, update and gc unlink, which keeps a mapping valid).
    // `ResourceReader` hands out copies only; `ResourceData` lends the mapped bytes for as long
    // as it lives, documented as requiring that no one outside cairn modifies the file (a
    // truncation would raise SIGBUS). The file was opened after the root containment check.
    unsafe { memmap2::Mmap::map(file) }.map_err(|e| Error::io("map", path, e))
}

impl Read for ResourceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.read_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ResourceReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::record::inline_record_for_test;

    fn copy(rec: &ResourceRecord, mut source: &[u8]) -> (Result<()>, Vec<u8>) {
        let mut out = Vec::new();
        let r = copy_verified(
            rec,
            &mut source,
            Path::new("in"),
            &mut out,
            Path::new("out"),
        );
        (r, out)
    }

    #[test]
    fn copy_verified_passes_matching_bytes_and_refuses_others() {
        // Around the chunk boundary, where the loop turns.
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 3] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let rec = inline_record_for_test(&bytes);
            let (r, out) = copy(&rec, &bytes);
            assert!(r.is_ok() && out == bytes, "{len}");

            let mut longer = bytes.clone();
            longer.push(1);
            let (r, out) = copy(&rec, &longer);
            assert!(
                matches!(r, Err(Error::ResourceMismatch { what: "size", .. })),
                "{len}"
            );
            assert!(
                out.len() as u64 <= rec.size_bytes,
                "{len}: wrote past the size"
            );
            if len > 0 {
                let (r, _) = copy(&rec, &bytes[..len - 1]);
                assert!(matches!(
                    r,
                    Err(Error::ResourceMismatch { what: "size", .. })
                ));
                let mut flipped = bytes.clone();
                flipped[len - 1] ^= 0x80;
                let (r, _) = copy(&rec, &flipped);
                assert!(matches!(
                    r,
                    Err(Error::ResourceMismatch { what: "sha256", .. })
                ));
            }
        }
    }
}
