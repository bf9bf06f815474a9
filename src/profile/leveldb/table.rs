//! LevelDB tables (`.ldb`, `.sst`): the footer, the index block, and each data block in
//! file order (an index naming a block twice, or out of order, is refused), verified and
//! decompressed within the caps and the report's [`Budget`](super::Budget).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use super::{masked_crc, varint, Acc, Fatal, Keep, MAX_BLOCK, MAX_TABLE_BYTES_READ, TABLE_MAGIC};

/// A block handle: (offset, size).
fn handle(mut h: &[u8]) -> Result<(u64, u64), Fatal> {
    let bad = || Fatal::File("bad block handle".into());
    Ok((
        varint(&mut h).ok_or_else(bad)?,
        varint(&mut h).ok_or_else(bad)?,
    ))
}

fn read_block(
    f: &mut File,
    file_len: u64,
    (off, size): (u64, u64),
    acc: &mut Acc,
) -> Result<Vec<u8>, Fatal> {
    let bad = || Fatal::File("bad block handle".into());
    if size > MAX_BLOCK as u64 || off.checked_add(size + 5).is_none_or(|end| end > file_len) {
        return Err(bad());
    }
    acc.budget.spend(size + 5)?;
    acc.table_bytes += size + 5;
    if acc.table_bytes > MAX_TABLE_BYTES_READ {
        return Err(Fatal::Cap("tables too large".into()));
    }
    let mut buf = vec![0u8; size as usize + 5];
    f.seek(SeekFrom::Start(off))?;
    f.read_exact(&mut buf)?;
    let (data, trailer) = buf.split_at(size as usize);
    let crc = u32::from_le_bytes([trailer[1], trailer[2], trailer[3], trailer[4]]);
    if crc != masked_crc(&[data, &trailer[..1]]) {
        return Err(Fatal::File("block checksum mismatch".into()));
    }
    match trailer[0] {
        0 => {
            buf.truncate(size as usize);
            Ok(buf)
        }
        1 => {
            let n = snap::raw::decompress_len(data)
                .map_err(|_| Fatal::File("bad snappy block".into()))?;
            if n > MAX_BLOCK {
                return Err(Fatal::File("block too large".into()));
            }
            acc.budget.spend(n as u64)?;
            snap::raw::Decoder::new()
                .decompress_vec(data)
                .map_err(|_| Fatal::File("bad snappy block".into()))
        }
        t => Err(Fatal::File(format!("unsupported compression {t}"))),
    }
}

/// What a block's entries are handed to: false stops early.
type OnEntry<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool, Fatal> + 'a;

/// Calls `on(key, value)` for each entry of a block.
fn block_entries(b: &[u8], on: &mut OnEntry<'_>) -> Result<(), Fatal> {
    let bad = || Fatal::File("bad block".into());
    let n = b.len().checked_sub(4).ok_or_else(bad)?;
    let restarts = u32::from_le_bytes(b[n..].try_into().map_err(|_| bad())?) as usize;
    let end = restarts
        .checked_mul(4)
        .and_then(|r| n.checked_sub(r))
        .ok_or_else(bad)?;
    let mut r = &b[..end];
    let mut key = Vec::new();
    while !r.is_empty() {
        let shared = varint(&mut r).ok_or_else(bad)? as usize;
        let non_shared = varint(&mut r).ok_or_else(bad)? as usize;
        let vlen = varint(&mut r).ok_or_else(bad)? as usize;
        if shared > key.len() || non_shared.checked_add(vlen).is_none_or(|l| l > r.len()) {
            return Err(bad());
        }
        key.truncate(shared);
        key.extend_from_slice(&r[..non_shared]);
        let value = &r[non_shared..non_shared + vlen];
        r = &r[non_shared + vlen..];
        if !on(&key, value)? {
            break;
        }
    }
    Ok(())
}

pub(super) fn read_table(mut f: File, acc: &mut Acc) -> Result<(), Fatal> {
    let len = f.metadata()?.len();
    if len < 48 {
        return Err(Fatal::File("too short for a table".into()));
    }
    let mut footer = [0u8; 48];
    f.seek(SeekFrom::Start(len - 48))?;
    f.read_exact(&mut footer)?;
    if u64::from_le_bytes(footer[40..].try_into().unwrap_or_default()) != TABLE_MAGIC {
        return Err(Fatal::File("bad table magic".into()));
    }
    let mut h = &footer[..40];
    let bad = || Fatal::File("bad footer".into());
    varint(&mut h).ok_or_else(bad)?;
    varint(&mut h).ok_or_else(bad)?;
    let index = read_block(&mut f, len, handle(h)?, acc)?;
    // Data blocks follow each other in the file: an index naming one twice, or out of
    // order, is not a table's (and would have the same bytes read again and again).
    let mut handles = Vec::new();
    let mut next = 0u64;
    block_entries(&index, &mut |_, v| {
        let (off, size) = handle(v)?;
        if off < next {
            return Err(Fatal::File("overlapping block handles".into()));
        }
        next = off.saturating_add(size).saturating_add(5);
        handles.push((off, size));
        Ok(true)
    })?;
    for h in handles {
        let block = read_block(&mut f, len, h, acc)?;
        let mut skip = false;
        block_entries(&block, &mut |ikey, _| {
            let n = ikey
                .len()
                .checked_sub(8)
                .ok_or_else(|| Fatal::File("bad internal key".into()))?;
            let tag = u64::from_le_bytes(ikey[n..].try_into().unwrap_or_default());
            let user = &ikey[..n];
            match (acc.keep)(user) {
                Keep::Yes => match tag & 0xff {
                    t @ (0 | 1) => acc.add(user, tag >> 8, t == 1).map_err(Fatal::Cap)?,
                    _ => return Err(Fatal::File("bad internal key".into())),
                },
                Keep::No => {}
                Keep::SkipRestOfTable => skip = true,
            }
            Ok(!skip)
        })?;
        if skip {
            break;
        }
    }
    Ok(())
}
