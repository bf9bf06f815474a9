//! Tests of the contents report's web storage (localStorage, service workers, IndexedDB) and
//! of the LevelDB reader under it, on logs, tables and manifests built by hand the way
//! Chromium 156 writes them.

use super::*;
use crate::profile::leveldb::{self, masked_crc, Keep, LOG_BLOCK, TABLE_MAGIC};

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_slice(out: &mut Vec<u8>, s: &[u8]) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// A WriteBatch: puts (Some value) and deletes (None) from sequence `seq` on.
fn batch(seq: u64, ops: &[(&[u8], Option<&[u8]>)]) -> Vec<u8> {
    let mut b = seq.to_le_bytes().to_vec();
    b.extend((ops.len() as u32).to_le_bytes());
    for (k, v) in ops {
        b.push(u8::from(v.is_some()));
        put_slice(&mut b, k);
        if let Some(v) = v {
            put_slice(&mut b, v);
        }
    }
    b
}

/// LevelDB log format: records split over 32 KiB blocks as FULL or FIRST/MIDDLE/LAST.
fn log_file(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for rec in records {
        let (mut rest, mut first) = (&rec[..], true);
        loop {
            let left = LOG_BLOCK - out.len() % LOG_BLOCK;
            if left < 7 {
                out.resize(out.len() + left, 0);
                continue;
            }
            let n = rest.len().min(left - 7);
            let last = n == rest.len();
            let ty = match (first, last) {
                (true, true) => 1u8,
                (true, false) => 2,
                (false, false) => 3,
                (false, true) => 4,
            };
            out.extend(masked_crc(&[&[ty], &rest[..n]]).to_le_bytes());
            out.extend((n as u16).to_le_bytes());
            out.push(ty);
            out.extend_from_slice(&rest[..n]);
            (rest, first) = (&rest[n..], false);
            if last {
                break;
            }
        }
    }
    out
}

#[derive(Default)]
struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    last: Vec<u8>,
    n: usize,
}

impl BlockBuilder {
    fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = if self.n.is_multiple_of(2) {
            self.restarts.push(self.buf.len() as u32);
            0
        } else {
            self.last
                .iter()
                .zip(key)
                .take_while(|(a, b)| a == b)
                .count()
        };
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (key.len() - shared) as u64);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last = key.to_vec();
        self.n += 1;
    }
    fn finish(mut self) -> Vec<u8> {
        if self.restarts.is_empty() {
            self.restarts.push(0);
        }
        for r in &self.restarts {
            self.buf.extend(r.to_le_bytes());
        }
        self.buf.extend((self.restarts.len() as u32).to_le_bytes());
        self.buf
    }
}

fn write_block(out: &mut Vec<u8>, data: Vec<u8>, snappy: bool) -> Vec<u8> {
    let (body, ty) = if snappy {
        (snap::raw::Encoder::new().compress_vec(&data).unwrap(), 1u8)
    } else {
        (data, 0)
    };
    let mut handle = Vec::new();
    put_varint(&mut handle, out.len() as u64);
    put_varint(&mut handle, body.len() as u64);
    out.extend_from_slice(&body);
    out.push(ty);
    out.extend(masked_crc(&[&body, &[ty]]).to_le_bytes());
    handle
}

/// An SSTable of (user key, sequence, live) entries in the given order, 3 per data block.
fn table(entries: &[(&[u8], u64, bool)], snappy: bool) -> Vec<u8> {
    let (mut out, mut index) = (Vec::new(), BlockBuilder::default());
    for chunk in entries.chunks(3) {
        let mut b = BlockBuilder::default();
        for (k, seq, live) in chunk {
            let mut ik = k.to_vec();
            ik.extend(((seq << 8) | u64::from(*live)).to_le_bytes());
            b.add(&ik, if *live { &b"\x01some value"[..] } else { b"" });
        }
        let last = b.last.clone();
        let handle = write_block(&mut out, b.finish(), snappy);
        index.add(&last, &handle);
    }
    let mut footer = write_block(&mut out, BlockBuilder::default().finish(), false);
    footer.extend(write_block(&mut out, index.finish(), snappy));
    footer.resize(40, 0);
    footer.extend(TABLE_MAGIC.to_le_bytes());
    out.extend(footer);
    out
}

/// A MANIFEST naming `tables` as live and `log` as the current log.
fn manifest(log: u64, tables: &[u64], deleted: &[u64]) -> Vec<u8> {
    let mut e = Vec::new();
    put_varint(&mut e, 1);
    put_slice(&mut e, b"leveldb.BytewiseComparator");
    put_varint(&mut e, 2);
    put_varint(&mut e, log);
    for t in tables {
        put_varint(&mut e, 7);
        put_varint(&mut e, 0);
        put_varint(&mut e, *t);
        put_varint(&mut e, 100);
        put_slice(&mut e, b"a\x01\0\0\0\0\0\0\0");
        put_slice(&mut e, b"z\x01\0\0\0\0\0\0\0");
    }
    let mut d = Vec::new();
    for t in deleted {
        put_varint(&mut d, 6);
        put_varint(&mut d, 0);
        put_varint(&mut d, *t);
    }
    log_file(&[e, d])
}

fn ls_meta(o: &str) -> Vec<u8> {
    format!("META:{o}").into_bytes()
}

fn ls_data(o: &str, k: &str) -> Vec<u8> {
    format!("_{o}\0\x01{k}").into_bytes()
}

#[test]
fn local_storage_newest_sequence_wins_across_logs_and_tables() {
    for snappy in [false, true] {
        let t = tempfile::tempdir().unwrap();
        let ls = t.path().join("Default/Local Storage/leveldb");
        let (a, b, c, x) = (
            "https://a.test",
            "https://b.test",
            "https://c.test",
            "http://127.0.0.1:8765",
        );
        // Table (older, seq 1..): a, b, c all present; x present only as a data key.
        let (ma, mb, mc) = (ls_meta(a), ls_meta(b), ls_meta(c));
        let (da, dx) = (ls_data(a, "k"), ls_data(x, "k"));
        let t5 = table(
            &[
                (b"VERSION", 1, true),
                (&ma, 2, true),
                (&mb, 3, true),
                (&mc, 4, true),
                (&da, 5, true),
                (&dx, 6, true),
            ],
            snappy,
        );
        write(&ls.join("000005.ldb"), &t5);
        // Log (newer): b is cleared; c deleted at seq 7 but re-put in a later batch; a huge value
        // spanning several log blocks; METAACCESS is not META.
        let big = vec![b'v'; 3 * LOG_BLOCK + 100];
        let log = log_file(&[
            batch(7, &[(&mb, None), (&ls_data(b, "k"), None), (&mc, None)]),
            batch(10, &[(&ls_data(c, "big"), Some(&big)), (&mc, Some(b"m"))]),
            batch(12, &[(b"METAACCESS:https://d.test", Some(b"x"))]),
        ]);
        write(&ls.join("000006.log"), &log);
        // A table read last (higher number) holding older entries does not win.
        write(&ls.join("000009.ldb"), &table(&[(&mb, 3, true)], snappy));
        let r = read(t.path());
        assert_eq!(r.local_storage, s(&[x, a, c]), "snappy={snappy}");
        assert!(r.unreadable.is_empty(), "{:?}", r.unreadable);

        // A later delete of META:a removes a even though its data key is still live.
        write(
            &ls.join("000007.log"),
            &log_file(&[batch(20, &[(&ma, None)])]),
        );
        assert_eq!(read(t.path()).local_storage, s(&[x, c]));
    }
}

#[test]
fn manifest_names_the_live_files() {
    let t = tempfile::tempdir().unwrap();
    let ls = t.path().join("Default/Local Storage/leveldb");
    let (ma, mb) = (ls_meta("https://a.test"), ls_meta("https://b.test"));
    write(&ls.join("000004.ldb"), &table(&[(&ma, 1, true)], true)); // obsolete: compacted away
    write(&ls.join("000005.ldb"), &table(&[(&mb, 2, true)], true));
    write(
        &ls.join("000003.log"),
        &log_file(&[batch(1, &[(&ma, Some(b"x"))])]),
    ); // obsolete log
    write(
        &ls.join("000008.log"),
        &log_file(&[batch(3, &[(&ls_meta("https://c.test"), Some(b"x"))])]),
    );
    write(&ls.join("MANIFEST-000002"), &manifest(8, &[4, 5, 6], &[4]));
    write(&ls.join("CURRENT"), b"MANIFEST-000002\n");
    let r = read(t.path());
    assert_eq!(r.local_storage, s(&["https://b.test", "https://c.test"]));
    assert_eq!(
        r.unreadable,
        s(&["Default/Local Storage/leveldb/table 000006: missing"])
    );
    // Without CURRENT every file counts.
    std::fs::remove_file(ls.join("CURRENT")).unwrap();
    assert_eq!(
        read(t.path()).local_storage,
        s(&["https://a.test", "https://b.test", "https://c.test"])
    );
}

fn idb_name_key(origin_id: &str, name: &str) -> Vec<u8> {
    let mut k = vec![0, 0, 0, 0, 0xc9];
    for s in [origin_id, name] {
        let u: Vec<u16> = s.encode_utf16().collect();
        put_varint(&mut k, u.len() as u64);
        k.extend(u.iter().flat_map(|c| c.to_be_bytes()));
    }
    k
}

#[test]
fn service_workers_and_indexed_db() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("Default");
    let sw = d.join("Service Worker/Database");
    let reg = |o: &str, id: u8| [format!("REG:{o}").as_bytes(), &[0, b'0' + id]].concat();
    write(
        &sw.join("000003.log"),
        &log_file(&[
            batch(
                1,
                &[
                    (b"INITDATA_DB_VERSION", Some(b"2")),
                    (b"INITDATA_UNIQUE_ORIGIN:https://a.test/", Some(b"")),
                ],
            ),
            batch(
                3,
                &[
                    (&reg("https://a.test/", 0), Some(b"\x08\x00")),
                    (b"REGID_TO_ORIGIN:0", Some(b"x")),
                ],
            ),
            batch(5, &[(&reg("https://b.test/", 1), Some(b"\x08\x01"))]),
            batch(
                6,
                &[(
                    &reg("https://c.test/^0https://top.test", 2),
                    Some(b"\x08\x02"),
                )],
            ),
            batch(7, &[(&reg("https://b.test/", 1), None)]),
        ]),
    );
    // Old layout: one LevelDB per origin, named by its identifier.
    let idb = d.join("IndexedDB");
    let live = idb_name_key("http_127.0.0.1_8765", "testdb");
    let meta1: &[u8] = &[0, 1, 0, 0, 0x32, 1, 0];
    write(
        &idb.join("http_127.0.0.1_8765.indexeddb.leveldb/000005.ldb"),
        &table(&[(&live, 5, true), (meta1, 6, true)], true),
    );
    let gone = idb_name_key("https_gone.test_0", "db");
    write(
        &idb.join("https_gone.test_0.indexeddb.leveldb/000005.ldb"),
        &table(&[(&gone, 5, true)], false),
    );
    write(
        &idb.join("https_gone.test_0.indexeddb.leveldb/000006.log"),
        &log_file(&[batch(9, &[(&gone, None)])]),
    );
    // Keys of database 1 sort first: the rest of the table is not looked at.
    let late = idb_name_key("https_late.test_0", "db");
    write(
        &idb.join("https_late.test_0.indexeddb.leveldb/000005.ldb"),
        &table(&[(meta1, 1, true), (&late, 2, true)], false),
    );
    std::fs::create_dir_all(idb.join("https_a.test_0.indexeddb.blob")).unwrap();
    // Bucket layout: WebStorage/<bucket id>/IndexedDB, mapped by QuotaManager.
    let ws = d.join("WebStorage");
    sqlite(
        &ws.join("QuotaManager"),
        "CREATE TABLE buckets(id INTEGER PRIMARY KEY, storage_key TEXT NOT NULL, host TEXT, name TEXT);
         INSERT INTO buckets VALUES (1, 'https://bucket.test/', 'bucket.test', 'default'),
           (2, 'https://third.test/^0https://top.test', 'third.test', 'default');",
    );
    let bk = idb_name_key("https_bucket.test_0", "db");
    write(
        &ws.join("1/IndexedDB/indexeddb.leveldb/000003.log"),
        &log_file(&[batch(1, &[(&bk, Some(b"\x01"))])]),
    );
    write(
        &ws.join("2/IndexedDB/indexeddb.leveldb/000003.log"),
        &log_file(&[batch(1, &[(&bk, None)])]),
    );
    write(&ws.join("7/IndexedDB/indexeddb.leveldb/000003.log"), b"");
    let r = read(t.path());
    assert_eq!(r.service_workers, s(&["https://a.test", "https://c.test"]));
    assert_eq!(
        r.indexed_db,
        s(&["http://127.0.0.1:8765", "https://bucket.test"])
    );
    assert_eq!(
        r.unreadable,
        s(&["Default/WebStorage/7/IndexedDB: bucket not in QuotaManager"])
    );
}

#[test]
fn origins_from_identifiers_and_realms() {
    assert_eq!(
        idb_dir_origin("https_example.com_0").as_deref(),
        Some("https://example.com")
    );
    assert_eq!(
        idb_dir_origin("http_127.0.0.1_8765").as_deref(),
        Some("http://127.0.0.1:8765")
    );
    assert_eq!(
        idb_dir_origin("https_a_b.test_443@1").as_deref(),
        Some("https://a_b.test")
    );
    assert_eq!(
        idb_dir_origin("http_[__1]_8080").as_deref(),
        Some("http://[::1]:8080")
    );
    assert_eq!(idb_dir_origin("nonsense"), None);
    assert_eq!(
        realm_host("https://u@accounts.example.com:8443/path"),
        "accounts.example.com"
    );
    assert_eq!(realm_host("http://[::1]:80/"), "[::1]");
    assert_eq!(realm_host("android://h@com.app/"), "com.app");
    assert_eq!(
        storage_key_origin(b"https://a.test/^0https://b.test"),
        "https://a.test"
    );
}

#[test]
fn damaged_files_land_in_unreadable() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("Default");
    write(
        &d.join("History"),
        b"this is not an SQLite database, just some text long enough to be a header......",
    );
    write(&d.join("Bookmarks"), b"{\"roots\": {\"bookmark_bar\": [");
    let ls = d.join("Local Storage/leveldb");
    let good = table(&[(&ls_meta("https://ok.test"), 1, true)], true);
    write(&ls.join("000005.ldb"), &good[..good.len() / 2]);
    write(&ls.join("000006.ldb"), &good);
    write(&ls.join("000007.log"), &[0xAB; 100]);
    let mut bad_crc = log_file(&[batch(2, &[(&ls_meta("https://crc.test"), Some(b"x"))])]);
    bad_crc[10] ^= 1;
    write(&ls.join("000008.log"), &bad_crc);
    write(&ls.join("000009.log"), &log_file(&[b"short".to_vec()]));
    let mut flipped = good.clone();
    flipped[3] ^= 0xff;
    write(&ls.join("000010.ldb"), &flipped);
    write(&d.join("Service Worker/Database/CURRENT"), b"garbage\n");
    let r = read(t.path());
    assert_eq!(r.history_entries, None);
    assert_eq!(r.bookmarks, None);
    assert_eq!(r.local_storage, s(&["https://ok.test"]));
    assert_eq!(
        r.unreadable,
        s(&[
            "Default/Bookmarks: not JSON (truncated)",
            "Default/History: file is not a database",
            "Default/Local Storage/leveldb/000005.ldb: bad table magic",
            "Default/Local Storage/leveldb/000007.log: truncated record at 0",
            "Default/Local Storage/leveldb/000008.log: checksum mismatch at 0",
            "Default/Local Storage/leveldb/000009.log: 1 bad write batch(es)",
            "Default/Local Storage/leveldb/000010.ldb: block checksum mismatch",
            "Default/Service Worker/Database/MANIFEST: CURRENT names no manifest; read every file",
        ])
    );
}

#[test]
fn every_truncation_and_byte_flip_is_survived() {
    let big = vec![7u8; LOG_BLOCK + 50];
    let (m, k) = (ls_meta("https://a.test"), ls_data("https://a.test", "x"));
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "000005.ldb",
            table(
                &[
                    (&m, 1, true),
                    (&k, 2, true),
                    (b"z", 3, false),
                    (b"zz", 4, true),
                ],
                true,
            ),
        ),
        ("000006.ldb", table(&[(&m, 1, true), (&k, 2, true)], false)),
        (
            "000007.log",
            log_file(&[
                batch(5, &[(&k, Some(&big)), (&m, None)]),
                batch(9, &[(&m, Some(b"y"))]),
            ]),
        ),
        ("MANIFEST-000001", manifest(7, &[5, 6], &[])),
    ];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for (name, good) in &files {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        let others: Vec<_> = files.iter().filter(|(n, _)| n != name).collect();
        for (n, b) in &others {
            write(&dir.join(n), b);
        }
        write(&dir.join("CURRENT"), b"MANIFEST-000001\n");
        let keep = |_: &[u8]| Keep::Yes;
        let tree = crate::profile::untrusted::Tree::open(dir).unwrap();
        let here = Path::new("");
        let step = (good.len() / 300).max(1);
        for cut in (0..good.len()).step_by(step) {
            write(&dir.join(name), &good[..cut]);
            let _ = leveldb::read_keys(&tree, here, &keep, &leveldb::Budget::new());
        }
        for _ in 0..300 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let mut b = good.clone();
            let i = (rng % b.len() as u64) as usize;
            b[i] ^= (rng >> 32) as u8 | 1;
            write(&dir.join(name), &b);
            let _ = leveldb::read_keys(&tree, here, &keep, &leveldb::Budget::new());
        }
        write(&dir.join(name), good);
        let r = leveldb::read_keys(&tree, here, &keep, &leveldb::Budget::new()).unwrap();
        assert!(r.problems.is_empty(), "{name}: {:?}", r.problems);
        assert_eq!(r.keys.get(&m), Some(&true), "{name}");
    }
}

#[test]
fn what_a_report_reads_is_bounded() {
    let t = tempfile::tempdir().unwrap();
    let ls = t.path().join("Default/Local Storage/leveldb");
    let (ma, mb) = (ls_meta("https://a.test"), ls_meta("https://b.test"));
    write(&ls.join("000005.ldb"), &table(&[(&mb, 2, true)], true));
    // A MANIFEST past its cap is not read (its records would all be held): every file is.
    let m = ls.join("MANIFEST-000002");
    write(&m, &manifest(8, &[6], &[]));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&m)
        .unwrap()
        .set_len(17 << 20)
        .unwrap();
    write(&ls.join("CURRENT"), b"MANIFEST-000002\n");
    // A table whose index names its one data block twice (its bytes would be read again
    // for each naming): refused.
    let (mut out, mut b, mut index) =
        (Vec::new(), BlockBuilder::default(), BlockBuilder::default());
    let mut ik = ma.clone();
    ik.extend(((1u64 << 8) | 1).to_le_bytes());
    b.add(&ik, b"\x01v");
    let h = write_block(&mut out, b.finish(), true);
    index.add(b"k1", &h);
    index.add(b"k2", &h);
    let mut footer = write_block(&mut out, BlockBuilder::default().finish(), false);
    footer.extend(write_block(&mut out, index.finish(), false));
    footer.resize(40, 0);
    footer.extend(TABLE_MAGIC.to_le_bytes());
    out.extend(footer);
    write(&ls.join("000009.ldb"), &out);
    let r = read(t.path());
    assert_eq!(r.local_storage, s(&["https://b.test"]));
    assert_eq!(
        r.unreadable,
        s(&[
            "Default/Local Storage/leveldb/000009.ldb: overlapping block handles",
            "Default/Local Storage/leveldb/MANIFEST: manifest too large; read every file",
        ])
    );
    // One budget for all of a report's databases: bytes and time.
    let tree = crate::profile::untrusted::Tree::open(&ls).unwrap();
    let keep = |_: &[u8]| Keep::Yes;
    let here = Path::new("");
    let bytes = leveldb::Budget::with(100, std::time::Duration::from_secs(60));
    let e = leveldb::read_keys(&tree, here, &keep, &bytes).unwrap_err();
    assert_eq!(e, "over the 100 bytes a report may read");
    let e = leveldb::read_keys(&tree, here, &keep, &bytes).unwrap_err();
    assert_eq!(
        e, "over the 100 bytes a report may read",
        "spent stays spent"
    );
    let time = leveldb::Budget::with(1 << 30, std::time::Duration::ZERO);
    let e = leveldb::read_keys(&tree, here, &keep, &time).unwrap_err();
    assert_eq!(e, "over the 0ns a report may take");
}
