//! A small, read-only, bounded LevelDB key reader for inspecting saved Chromium profiles.
//!
//! It reads the write-ahead `.log` files and the `.ldb`/`.sst` tables of one database
//! directory (the live set named by `CURRENT` → `MANIFEST-*` when that is readable, else
//! every such file), keeps the user keys a caller asks for and resolves them newest
//! sequence first, so the answer says which keys are live and which were deleted. Values
//! are skipped, never kept. The files come from users' browsers: every length is checked,
//! sizes are capped, checksums are verified, and nothing panics; damage is reported as
//! problems (file name and why) while whatever is intact is still used. What one report
//! reads in all, over every database it opens, is bounded by a [`Budget`]: bytes read and
//! decompressed, and time.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use super::untrusted::Tree;

mod table;
use table::read_table;

/// Size of a log block.
pub(crate) const LOG_BLOCK: usize = 32 * 1024;
/// Magic number at the end of a table.
pub(crate) const TABLE_MAGIC: u64 = 0xdb47_7524_8b80_fb57;
const MAX_FILES: usize = 10_000;
const MAX_LOG_BYTES: u64 = 512 << 20;
const MAX_RECORD: usize = 64 << 20;
const MAX_BLOCK: usize = 16 << 20;
const MAX_KEYS: usize = 1_000_000;
const MAX_KEY_BYTES: usize = 128 << 20;
const MAX_TABLE_BYTES_READ: u64 = 2 << 30;
/// A MANIFEST larger than this is not read (Chromium's are kilobytes).
const MAX_MANIFEST: u64 = 16 << 20;
/// Bytes one [`Budget`] lets its reads take off disk and out of snappy, in all.
const BUDGET_BYTES: u64 = 4 << 30;
/// Time one [`Budget`] lets its reads take, in all.
const BUDGET_TIME: Duration = Duration::from_secs(30);

/// What the reads of one report may spend in all, over every database: bytes read and
/// decompressed ([`BUDGET_BYTES`]) and time ([`BUDGET_TIME`]). Spent, every read after
/// fails with a cap.
#[derive(Debug)]
pub(crate) struct Budget {
    bytes: u64,
    time: Duration,
    until: Instant,
    bytes_left: Cell<u64>,
}

impl Budget {
    /// A budget starting now.
    pub(crate) fn new() -> Budget {
        Budget::with(BUDGET_BYTES, BUDGET_TIME)
    }

    /// A budget of `bytes` and `time`, starting now.
    pub(crate) fn with(bytes: u64, time: Duration) -> Budget {
        Budget {
            bytes,
            time,
            until: Instant::now() + time,
            bytes_left: Cell::new(bytes),
        }
    }

    /// Takes `n` bytes off the budget.
    fn spend(&self, n: u64) -> Result<(), Fatal> {
        let left = self.bytes_left.get();
        if n > left {
            self.bytes_left.set(0);
            return Err(Fatal::Cap(format!(
                "over the {} bytes a report may read",
                self.bytes
            )));
        }
        self.bytes_left.set(left - n);
        if Instant::now() >= self.until {
            return Err(Fatal::Cap(format!(
                "over the {:?} a report may take",
                self.time
            )));
        }
        Ok(())
    }
}

/// What a caller wants done with a user key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Track this key.
    Yes,
    /// Ignore this key.
    No,
    /// Ignore it and every later key of this table (the wanted keys sort before it).
    SkipRestOfTable,
}

/// Kept user keys after newest-sequence-wins: `true` live, `false` deleted.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    /// Key → live.
    pub keys: BTreeMap<Vec<u8>, bool>,
    /// Damage found on the way, as "file: why" (never keys or values).
    pub problems: Vec<String>,
}

struct Acc<'a> {
    keep: &'a dyn Fn(&[u8]) -> Keep,
    budget: &'a Budget,
    newest: BTreeMap<Vec<u8>, (u64, bool)>,
    key_bytes: usize,
    table_bytes: u64,
}

impl Acc<'_> {
    fn add(&mut self, key: &[u8], seq: u64, live: bool) -> Result<(), String> {
        if let Some(e) = self.newest.get_mut(key) {
            if seq >= e.0 {
                *e = (seq, live);
            }
            return Ok(());
        }
        if self.newest.len() >= MAX_KEYS || self.key_bytes + key.len() > MAX_KEY_BYTES {
            return Err("too many keys".into());
        }
        self.key_bytes += key.len();
        self.newest.insert(key.to_vec(), (seq, live));
        Ok(())
    }
}

/// Reads the database in the directory `dir` of `tree` (no link followed, only regular
/// files read), spending `budget`. Err when the directory cannot be listed or a cap is hit.
pub(crate) fn read_keys(
    tree: &Tree,
    dir: &Path,
    keep: &dyn Fn(&[u8]) -> Keep,
    budget: &Budget,
) -> Result<Keys, String> {
    budget.spend(0).map_err(|e| match e {
        Fatal::Cap(why) | Fatal::File(why) => why,
    })?;
    let mut files: Vec<(u64, String)> = Vec::new();
    for (name, _) in tree.read_dir(dir).map_err(|e| e.to_string())? {
        let name = name.to_string_lossy().into_owned();
        let Some((num, ext)) = name.split_once('.') else {
            continue;
        };
        let (Ok(n), true) = (num.parse::<u64>(), matches!(ext, "log" | "ldb" | "sst")) else {
            continue;
        };
        if files.len() >= MAX_FILES {
            return Err("too many files".into());
        }
        files.push((n, name));
    }
    files.sort();
    let mut out = Keys::default();
    let live = match read_manifest(tree, dir, budget) {
        Ok(v) => v,
        Err(Some(why)) => {
            out.problems
                .push(format!("MANIFEST: {why}; read every file"));
            None
        }
        Err(None) => None,
    };
    let mut acc = Acc {
        keep,
        budget,
        newest: BTreeMap::new(),
        key_bytes: 0,
        table_bytes: 0,
    };
    if let Some(v) = &live {
        for n in &v.tables {
            if !files.iter().any(|(m, f)| m == n && !f.ends_with(".log")) {
                out.problems.push(format!("table {n:06}: missing"));
            }
        }
    }
    for (n, name) in &files {
        let is_log = name.ends_with(".log");
        if let Some(v) = &live {
            let wanted = if is_log {
                *n >= v.log_number || Some(*n) == v.prev_log
            } else {
                v.tables.contains(n)
            };
            if !wanted {
                continue;
            }
        }
        let res = match tree.file(&dir.join(name)) {
            Err(e) => Err(Fatal::from(e)),
            Ok(f) if is_log => read_log_file(f, &mut acc, &mut out.problems, name),
            Ok(f) => read_table(f, &mut acc),
        };
        match res {
            Ok(()) => {}
            Err(Fatal::Cap(why)) => return Err(why),
            Err(Fatal::File(why)) => out.problems.push(format!("{name}: {why}")),
        }
    }
    out.keys = acc
        .newest
        .into_iter()
        .map(|(k, (_, live))| (k, live))
        .collect();
    Ok(out)
}

enum Fatal {
    /// A cap for the whole database was hit.
    Cap(String),
    /// This file is unusable from here on.
    File(String),
}

impl From<std::io::Error> for Fatal {
    fn from(e: std::io::Error) -> Self {
        Fatal::File(e.to_string())
    }
}

/// The live file set of a MANIFEST.
struct Live {
    tables: BTreeSet<u64>,
    log_number: u64,
    prev_log: Option<u64>,
}

/// Err(None): no CURRENT (fall back quietly); Err(Some): unreadable manifest. Its edits are
/// applied as they are read; the live set holds at most [`MAX_FILES`] tables.
fn read_manifest(tree: &Tree, dir: &Path, budget: &Budget) -> Result<Option<Live>, Option<String>> {
    let mut current = String::new();
    match tree.file(&dir.join("CURRENT")) {
        Ok(f) => f
            .take(4096)
            .read_to_string(&mut current)
            .map_err(|e| Some(e.to_string()))?,
        Err(_) => return Err(None),
    };
    let name = current.trim_end_matches('\n');
    if !name
        .strip_prefix("MANIFEST-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(Some("CURRENT names no manifest".into()));
    }
    let mut problems = Vec::new();
    let f = tree
        .file(&dir.join(name))
        .map_err(|e| Some(e.to_string()))?;
    if f.metadata().map_err(|e| Some(e.to_string()))?.len() > MAX_MANIFEST {
        return Err(Some("manifest too large".into()));
    }
    let mut live = Live {
        tables: BTreeSet::new(),
        log_number: 0,
        prev_log: None,
    };
    log_records(
        f,
        budget,
        &mut problems,
        &mut |r| match apply_edit(r, &mut live) {
            Some(()) if live.tables.len() <= MAX_FILES => Ok(()),
            _ => Err(Fatal::File("bad version edit".into())),
        },
    )
    .map_err(|e| match e {
        Fatal::File(why) | Fatal::Cap(why) => Some(why),
    })?;
    if let Some(p) = problems.into_iter().next() {
        return Err(Some(p));
    }
    Ok(Some(live))
}

fn apply_edit(mut r: &[u8], live: &mut Live) -> Option<()> {
    while !r.is_empty() {
        match varint(&mut r)? {
            1 => drop(slice(&mut r)?),
            2 => live.log_number = varint(&mut r)?,
            3 | 4 => drop(varint(&mut r)?),
            5 => {
                varint(&mut r)?;
                slice(&mut r)?;
            }
            6 => {
                varint(&mut r)?;
                live.tables.remove(&varint(&mut r)?);
            }
            7 => {
                varint(&mut r)?;
                live.tables.insert(varint(&mut r)?);
                varint(&mut r)?;
                slice(&mut r)?;
                slice(&mut r)?;
            }
            9 => live.prev_log = Some(varint(&mut r)?),
            _ => return None,
        }
    }
    Some(())
}

/// Reads a little-endian base-128 varint (at most 64 bits) off the front of `b`.
pub(crate) fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&c, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(c & 0x7f) << (7 * i);
        if c < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Reads a varint-length-prefixed slice off the front of `b`.
fn slice<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = usize::try_from(varint(b)?).ok()?;
    if n > b.len() {
        return None;
    }
    let (s, rest) = b.split_at(n);
    *b = rest;
    Some(s)
}

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82f6_3b78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// LevelDB's masked CRC-32C of the concatenation of `parts`.
pub(crate) fn masked_crc(parts: &[&[u8]]) -> u32 {
    let mut c = !0u32;
    for p in parts {
        for &b in *p {
            c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
        }
    }
    (!c).rotate_right(15).wrapping_add(0xa282_ead8)
}

fn read_log_file(
    f: File,
    acc: &mut Acc,
    problems: &mut Vec<String>,
    name: &str,
) -> Result<(), Fatal> {
    if f.metadata()?.len() > MAX_LOG_BYTES {
        return Err(Fatal::Cap(format!("{name}: log too large")));
    }
    let mut local = Vec::new();
    let mut bad_batches = 0usize;
    let budget = acc.budget;
    log_records(f, budget, &mut local, &mut |rec| {
        // A batch is used whole or not at all: checked first, then applied.
        let Some(seq) = parse_batch(rec, &mut |_, _, _| Ok(())).transpose()? else {
            bad_batches += 1;
            return Ok(());
        };
        parse_batch(rec, &mut |i, key, live| {
            if (acc.keep)(key) == Keep::Yes {
                acc.add(key, seq.saturating_add(i), live)
                    .map_err(Fatal::Cap)?;
            }
            Ok(())
        })
        .transpose()?;
        Ok(())
    })?;
    if bad_batches > 0 {
        local.push(format!("{bad_batches} bad write batch(es)"));
    }
    problems.extend(local.into_iter().map(|p| format!("{name}: {p}")));
    Ok(())
}

/// Splits a log file into records and hands each whole one to `on`. Damaged blocks are
/// reported to `problems` and skipped; a torn tail at the end of the file is ignored.
fn log_records(
    mut f: File,
    budget: &Budget,
    problems: &mut Vec<String>,
    on: &mut dyn FnMut(&[u8]) -> Result<(), Fatal>,
) -> Result<(), Fatal> {
    let mut block = vec![0u8; LOG_BLOCK];
    let mut rec: Option<Vec<u8>> = None;
    let mut offset = 0u64;
    loop {
        let mut n = 0;
        while n < LOG_BLOCK {
            let got = f.read(&mut block[n..])?;
            if got == 0 {
                break;
            }
            n += got;
        }
        if n == 0 {
            return Ok(());
        }
        budget.spend(n as u64)?;
        let last = n < LOG_BLOCK;
        let b = &block[..n];
        let mut i = 0;
        while i + 7 <= b.len() {
            let len = usize::from(u16::from_le_bytes([b[i + 4], b[i + 5]]));
            let ty = b[i + 6];
            if ty == 0 && len == 0 {
                break; // preallocated zeroes
            }
            if i + 7 + len > b.len() {
                let why = if last {
                    "truncated record"
                } else {
                    "bad record length"
                };
                problems.push(format!("{why} at {}", offset + i as u64));
                rec = None;
                break;
            }
            let payload = &b[i + 7..i + 7 + len];
            let crc = u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            if crc != masked_crc(&[&[ty], payload]) {
                problems.push(format!("checksum mismatch at {}", offset + i as u64));
                rec = None;
                break;
            }
            i += 7 + len;
            match (ty, rec.as_mut()) {
                (1, r) => {
                    if r.is_some() {
                        problems.push("record without its end".into());
                    }
                    rec = None;
                    on(payload)?;
                }
                (2, r) => {
                    if r.is_some() {
                        problems.push("record without its end".into());
                    }
                    rec = Some(payload.to_vec());
                }
                (3 | 4, Some(r)) => {
                    if r.len() + payload.len() > MAX_RECORD {
                        return Err(Fatal::File("record too large".into()));
                    }
                    r.extend_from_slice(payload);
                    if ty == 4 {
                        let whole = rec.take().unwrap_or_default();
                        on(&whole)?;
                    }
                }
                (3 | 4, None) => problems.push("record without its start".into()),
                _ => {
                    problems.push(format!("unknown record type {ty}"));
                    rec = None;
                    break;
                }
            }
        }
        offset += n as u64;
        if last {
            return Ok(());
        }
    }
}

/// What a write batch's operations are handed to: (index, key, is-put).
type OnOp<'a> = dyn FnMut(u64, &[u8], bool) -> Result<(), Fatal> + 'a;

/// Hands the operations of the write batch `rec` to `on` in order, and returns its first
/// sequence number; None when it is malformed (found when reaching the damage: check a
/// batch with a no-op `on` before applying it).
fn parse_batch(rec: &[u8], on: &mut OnOp<'_>) -> Option<Result<u64, Fatal>> {
    let seq = u64::from_le_bytes(rec.get(..8)?.try_into().ok()?);
    let count = u32::from_le_bytes(rec.get(8..12)?.try_into().ok()?);
    let mut r = &rec[12..];
    for i in 0..u64::from(count) {
        let (&tag, rest) = r.split_first()?;
        r = rest;
        let key = slice(&mut r)?;
        match tag {
            1 => drop(slice(&mut r)?),
            0 => {}
            _ => return None,
        }
        if let Err(e) = on(i, key, tag == 1) {
            return Some(Err(e));
        }
    }
    r.is_empty().then_some(Ok(seq))
}
