//! The resource tables in the index database (FORMAT.md §7.3). Unlike the run tables they are
//! never cleared by a rebuild: `inline_bytes` is the only copy of inline resources.

use redb::{
    MultimapTableDefinition, ReadTransaction, ReadableTable, TableDefinition, TableError,
    WriteTransaction,
};
use uuid::Uuid;

use super::record::ResourceRecord;
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::index::Index;

/// `resources`: resource id (16 bytes) → record (canonical CBOR, [`ResourceRecord`]).
pub(crate) const RESOURCES: TableDefinition<[u8; 16], &[u8]> = TableDefinition::new("resources");
/// `run_resources`: run identity → ids of its resources.
pub(crate) const RUN_RESOURCES: MultimapTableDefinition<[u8; 32], [u8; 16]> =
    MultimapTableDefinition::new("run_resources");
/// `inline_bytes`: resource id → the bytes of an inline resource. The only copy.
pub(crate) const INLINE_BYTES: TableDefinition<[u8; 16], &[u8]> =
    TableDefinition::new("inline_bytes");

/// Inserts or replaces `rec` (and its run entry).
pub(crate) fn put(index: &Index, txn: &WriteTransaction, rec: &ResourceRecord) -> Result<()> {
    let e = |e: redb::Error| index.error(e);
    let mut t = txn.open_table(RESOURCES).map_err(|x| e(x.into()))?;
    t.insert(rec.id.as_bytes(), rec.encode().as_slice())
        .map_err(|x| e(x.into()))?;
    let mut by_run = txn
        .open_multimap_table(RUN_RESOURCES)
        .map_err(|x| e(x.into()))?;
    by_run
        .insert(rec.run.as_bytes(), rec.id.as_bytes())
        .map_err(|x| e(x.into()))?;
    Ok(())
}

/// Removes `rec` and any inline bytes of its id.
pub(crate) fn remove(index: &Index, txn: &WriteTransaction, rec: &ResourceRecord) -> Result<()> {
    let e = |e: redb::Error| index.error(e);
    let mut t = txn.open_table(RESOURCES).map_err(|x| e(x.into()))?;
    t.remove(rec.id.as_bytes()).map_err(|x| e(x.into()))?;
    let mut by_run = txn
        .open_multimap_table(RUN_RESOURCES)
        .map_err(|x| e(x.into()))?;
    by_run
        .remove(rec.run.as_bytes(), rec.id.as_bytes())
        .map_err(|x| e(x.into()))?;
    drop_inline(index, txn, rec.id)
}

/// Stores the inline bytes of `id`, filled by `fill` into a reserved value of `len` bytes.
pub(crate) fn put_inline(
    index: &Index,
    txn: &WriteTransaction,
    id: Uuid,
    len: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<()>,
) -> Result<()> {
    let mut t = txn.open_table(INLINE_BYTES).map_err(|x| index.error(x))?;
    let mut slot = t
        .insert_reserve(id.as_bytes(), len)
        .map_err(|x| index.error(x))?;
    fill(slot.as_mut())
}

/// Drops the inline bytes of `id`, if any.
pub(crate) fn drop_inline(index: &Index, txn: &WriteTransaction, id: Uuid) -> Result<()> {
    let mut t = txn.open_table(INLINE_BYTES).map_err(|x| index.error(x))?;
    t.remove(id.as_bytes()).map_err(|x| index.error(x))?;
    Ok(())
}

/// `table` of a read snapshot; `None` when no resource was ever written.
fn open<K: redb::Key + 'static, V: redb::Value + 'static>(
    index: &Index,
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(x) => Err(index.error(x)),
    }
}

/// A record stored in the index: one that does not decode is damage (FORMAT.md §7.2, §9).
fn decode(index: &Index, bytes: &[u8]) -> Result<ResourceRecord> {
    ResourceRecord::decode(bytes, index.path()).map_err(|e| Error::IndexDamaged {
        path: index.path().into(),
        what: e.to_string(),
    })
}

/// The record of `id`.
pub(crate) fn get(index: &Index, id: Uuid) -> Result<Option<ResourceRecord>> {
    let txn = index.begin_read()?;
    let Some(t) = open(index, &txn, RESOURCES)? else {
        return Ok(None);
    };
    match t.get(id.as_bytes()).map_err(|x| index.error(x))? {
        Some(v) => decode(index, v.value()).map(Some),
        None => Ok(None),
    }
}

/// The records of `run`'s resources, ordered by creation time then id.
pub(crate) fn of_run(index: &Index, run: &Identity) -> Result<Vec<ResourceRecord>> {
    let txn = index.begin_read()?;
    let by_run = match txn.open_multimap_table(RUN_RESOURCES) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(x) => return Err(index.error(x)),
    };
    let Some(t) = open(index, &txn, RESOURCES)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for id in by_run.get(run.as_bytes()).map_err(|x| index.error(x))? {
        let id = id.map_err(|x| index.error(x))?.value();
        if let Some(v) = t.get(&id).map_err(|x| index.error(x))? {
            out.push(decode(index, v.value())?);
        }
    }
    out.sort_by(|a, b| (&a.created_at, a.id).cmp(&(&b.created_at, b.id)));
    Ok(out)
}

/// Every record, in id order.
pub(crate) fn all(index: &Index) -> Result<Vec<ResourceRecord>> {
    let txn = index.begin_read()?;
    let Some(t) = open(index, &txn, RESOURCES)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in t.iter().map_err(|x| index.error(x))? {
        let (_, v) = entry.map_err(|x| index.error(x))?;
        out.push(decode(index, v.value())?);
    }
    Ok(out)
}

/// The inline bytes of `id`.
pub(crate) fn inline_bytes(index: &Index, id: Uuid) -> Result<Option<Vec<u8>>> {
    let txn = index.begin_read()?;
    let Some(t) = open(index, &txn, INLINE_BYTES)? else {
        return Ok(None);
    };
    Ok(t.get(id.as_bytes())
        .map_err(|x| index.error(x))?
        .map(|v| v.value().to_vec()))
}
