//! What a profile's web storage holds, read from its LevelDB databases (through the bounded
//! reader `profile::leveldb`, never following a link the browser planted): the origins with
//! localStorage, the origins with service worker registrations, and the origins with
//! IndexedDB databases (by origin directory, and in non-default buckets mapped to origins
//! through `WebStorage/QuotaManager`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::optional;
use crate::profile::leveldb::{self, Budget, Keep};
use crate::profile::untrusted::Tree;

/// "https://a.test/^0https://b.test" (a storage key) or "https://a.test/" → "https://a.test".
pub(super) fn storage_key_origin(key: &[u8]) -> String {
    let key = String::from_utf8_lossy(key);
    let first = key.split('^').next().unwrap_or("");
    first.trim_end_matches('/').to_string()
}

/// Reads one LevelDB directory, noting damage; None when absent or unreadable.
fn leveldb_keys(
    d: &Tree,
    part: &str,
    keep: &dyn Fn(&[u8]) -> Keep,
    budget: &Budget,
    note: &mut dyn FnMut(&str, String),
) -> Option<BTreeMap<Vec<u8>, bool>> {
    match d.kind(Path::new(part)) {
        Ok(t) if t.is_dir() => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Ok(_) => {
            note(part, "not a directory".into());
            return None;
        }
        Err(e) => {
            note(part, e.to_string());
            return None;
        }
    }
    match leveldb::read_keys(d, Path::new(part), keep, budget) {
        Ok(k) => {
            for p in k.problems {
                let (file, why) = p.split_once(": ").unwrap_or((&p, "damaged"));
                note(&format!("{part}/{file}"), why.to_string());
            }
            Some(k.keys)
        }
        Err(e) => {
            note(part, e);
            None
        }
    }
}

fn prefixed(k: &[u8], prefixes: &[&[u8]]) -> Keep {
    match prefixes.iter().any(|p| k.starts_with(p)) {
        true => Keep::Yes,
        false => Keep::No,
    }
}

/// The part of a key up to its first NUL.
fn to_nul(k: &[u8]) -> &[u8] {
    k.split(|&b| b == 0).next().unwrap_or(k)
}

pub(super) fn local_storage(
    d: &Tree,
    budget: &Budget,
    note: &mut dyn FnMut(&str, String),
) -> Vec<String> {
    let keep = |k: &[u8]| prefixed(k, &[b"META:", b"_"]);
    let Some(keys) = leveldb_keys(d, "Local Storage/leveldb", &keep, budget, note) else {
        return Vec::new();
    };
    let mut meta = BTreeMap::new();
    let mut data = BTreeSet::new();
    for (k, live) in &keys {
        if let Some(o) = k.strip_prefix(b"META:") {
            meta.insert(storage_key_origin(o), *live);
        } else if let (Some(rest), true) = (k.strip_prefix(b"_"), *live) {
            data.insert(storage_key_origin(to_nul(rest)));
        }
    }
    // Chromium writes META:<origin> with the data and deletes it with the last key;
    // data keys count only for an origin whose META record was never seen.
    let mut out: BTreeSet<String> = meta
        .iter()
        .filter(|(_, l)| **l)
        .map(|(o, _)| o.clone())
        .collect();
    out.extend(data.into_iter().filter(|o| !meta.contains_key(o)));
    out.into_iter().collect()
}

pub(super) fn service_workers(
    d: &Tree,
    budget: &Budget,
    note: &mut dyn FnMut(&str, String),
) -> Vec<String> {
    let keep = |k: &[u8]| prefixed(k, &[b"REG:"]);
    let Some(keys) = leveldb_keys(d, "Service Worker/Database", &keep, budget, note) else {
        return Vec::new();
    };
    let live = keys.iter().filter(|(_, l)| **l);
    let origins: BTreeSet<_> = live
        .map(|(k, _)| storage_key_origin(to_nul(&k[4..])))
        .collect();
    origins.into_iter().collect()
}

/// IndexedDB key of a database name (global metadata prefix 0,0,0 + type 201).
const IDB_NAME_PREFIX: &[u8] = &[0, 0, 0, 0, 0xc9];

fn idb_keep(k: &[u8]) -> Keep {
    if k.starts_with(IDB_NAME_PREFIX) {
        return Keep::Yes;
    }
    // Keys sort by database id first, and global metadata (id 0) holds the names.
    let n = usize::from(k.first().map_or(0, |b| b >> 5)) + 1;
    match k.get(1..1 + n) {
        Some(id) if id.iter().any(|&b| b != 0) => Keep::SkipRestOfTable,
        _ => Keep::No,
    }
}

fn idb_has_database(
    d: &Tree,
    part: &str,
    budget: &Budget,
    note: &mut dyn FnMut(&str, String),
) -> bool {
    leveldb_keys(d, part, &idb_keep, budget, note).is_some_and(|k| k.values().any(|l| *l))
}

/// "https_example.com_0" → "https://example.com", "http_127.0.0.1_8765" → "http://127.0.0.1:8765".
pub(super) fn idb_dir_origin(id: &str) -> Option<String> {
    let id = id.split('@').next()?;
    let (scheme, rest) = id.split_once('_')?;
    let (host, port) = rest.rsplit_once('_')?;
    let port: u16 = port.parse().ok()?;
    let host = if host.starts_with('[') {
        host.replace('_', ":")
    } else {
        host.to_string()
    };
    let default = matches!(
        (scheme, port),
        (_, 0) | ("https" | "wss", 443) | ("http" | "ws", 80)
    );
    Some(if default {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{port}")
    })
}

pub(super) fn indexed_db(
    d: &Tree,
    budget: &Budget,
    note: &mut dyn FnMut(&str, String),
) -> Vec<String> {
    let mut out = BTreeSet::new();
    if let Ok(it) = d.read_dir(Path::new("IndexedDB")) {
        for (name, _) in it {
            let name = name.to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".indexeddb.leveldb") else {
                continue;
            };
            let part = format!("IndexedDB/{name}");
            match idb_dir_origin(id) {
                Some(o) if idb_has_database(d, &part, budget, note) => drop(out.insert(o)),
                Some(_) => {}
                None => note(&part, "unknown origin".into()),
            }
        }
    }
    let ws = Path::new("WebStorage");
    let buckets: Vec<u64> = d
        .read_dir(ws)
        .into_iter()
        .flatten()
        .filter_map(|(n, _)| n.to_str().and_then(|n| n.parse::<u64>().ok()))
        .filter(|n| d.is_dir(&ws.join(n.to_string()).join("IndexedDB")))
        .collect();
    if buckets.is_empty() {
        return out.into_iter().collect();
    }
    let keys = optional(d, "WebStorage/QuotaManager", note, |conn| {
        // Only the buckets there are directories of, each key at most a URL's length.
        super::sqlite::columns(conn, "buckets")?;
        let mut st = conn.prepare(
            "SELECT storage_key FROM buckets WHERE id = ?1 AND length(storage_key) <= 4096",
        )?;
        let mut keys = BTreeMap::new();
        for &b in &buckets {
            let mut rows = st.query([b as i64])?;
            if let Some(r) = rows.next()? {
                keys.insert(b as i64, r.get_ref(0)?.as_bytes()?.to_vec());
            }
        }
        Ok(keys)
    });
    for b in buckets {
        let part = format!("WebStorage/{b}/IndexedDB");
        let Some(key) = keys.as_ref().and_then(|k| k.get(&(b as i64))) else {
            note(&part, "bucket not in QuotaManager".into());
            continue;
        };
        let level = format!("{part}/indexeddb.leveldb");
        let present = if d.is_dir(Path::new(&level)) {
            idb_has_database(d, &level, budget, note)
        } else {
            d.read_dir(Path::new(&part))
                .into_iter()
                .flatten()
                .filter(|(_, t)| t.is_file())
                .any(|(n, _)| {
                    d.file(&Path::new(&part).join(n))
                        .and_then(|f| f.metadata())
                        .is_ok_and(|m| m.len() > 0)
                })
        };
        if present {
            out.insert(storage_key_origin(key));
        }
    }
    out.into_iter().collect()
}
