//! Tests for `profile::contents` on hand-built SQLite databases shaped like Chromium 156's
//! (the web storage and LevelDB reader tests are in `tests/storage.rs`).

use super::*;
use rusqlite::params;
use std::path::PathBuf;

mod storage;

pub(super) fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

pub(super) fn sqlite(path: &Path, sql: &str) -> Connection {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let c = Connection::open(path).unwrap();
    c.execute_batch(sql).unwrap();
    c
}

pub(super) fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

pub(super) const COOKIES: &str =
    "CREATE TABLE cookies(host_key TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    encrypted_value BLOB NOT NULL, has_expires INTEGER NOT NULL, is_persistent INTEGER NOT NULL);";

#[test]
fn sqlite_parts_and_files() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("Default");
    let c = sqlite(&d.join("Network/Cookies"), COOKIES);
    for (host, pers, enc) in [
        (".example.com", 1, &b"v10xxxx"[..]),
        ("example.com", 1, b"v11yyyy"),
        ("example.com", 0, b"v11"),
        ("a.test", 0, b""),
    ] {
        c.execute(
            "INSERT INTO cookies VALUES (?1, 'n', '', ?2, ?3, ?3)",
            params![host, enc, pers],
        )
        .unwrap();
    }
    drop(c);
    sqlite(&d.join("History"), "CREATE TABLE urls(id INTEGER PRIMARY KEY, url TEXT); INSERT INTO urls(url) VALUES ('a'),('b'),('c');");
    sqlite(
        &d.join("Login Data"),
        "CREATE TABLE logins(origin_url TEXT, signon_realm TEXT, password_value BLOB, blacklisted_by_user INTEGER);
         INSERT INTO logins VALUES ('https://accounts.example.com/x', 'https://accounts.example.com/', x'00', 0),
           ('https://accounts.example.com/y', 'https://u@accounts.example.com:443/', x'00', 0),
           ('https://never.test/', 'https://never.test/', x'', 1);",
    );
    sqlite(
        &d.join("Login Data For Account"),
        "CREATE TABLE logins(signon_realm TEXT); INSERT INTO logins VALUES ('android://hash@com.example.app/');",
    );
    let bookmarks = r#"{"checksum":"x","roots":{
        "bookmark_bar":{"type":"folder","children":[{"type":"url","url":"https://a/"},
            {"type":"folder","children":[{"type":"url","url":"https://b/"},{"type":"folder","children":[]}]}]},
        "other":{"type":"folder","children":[{"type":"url","url":"https://c/"}]},
        "synced":{"type":"folder","children":[]}},"version":1}"#;
    write(&d.join("Bookmarks"), bookmarks.as_bytes());
    for e in [
        "aaaabbbbccccddddeeeeffffgggghhhh",
        "ppppoooonnnnmmmmllllkkkkjjjjiiii",
        "Temp",
    ] {
        std::fs::create_dir_all(d.join("Extensions").join(e).join("1.0_0")).unwrap();
    }
    write(&d.join("Extensions/stray-file"), b"x");

    let before = snapshot(t.path());
    let c = read(t.path());
    assert_eq!(
        snapshot(t.path()),
        before,
        "read must not modify the profile"
    );
    assert_eq!(c.unreadable, Vec::<String>::new());
    let cc = |p, s| CookieCount {
        persistent: p,
        session: s,
    };
    assert_eq!(
        c.cookies,
        BTreeMap::from([
            ("a.test".into(), cc(0, 1)),
            ("example.com".into(), cc(2, 1))
        ])
    );
    assert_eq!(c.cookies_v11, 2);
    assert_eq!(c.history_entries, Some(3));
    assert_eq!(c.saved_logins, Some(3));
    assert_eq!(
        c.login_sites,
        s(&["accounts.example.com", "com.example.app"])
    );
    assert_eq!(c.bookmarks, Some(3));
    assert_eq!(c.extensions, Some(2));
    assert_eq!(c.unreadable, Vec::<String>::new());

    // An empty profile: everything absent, nothing unreadable.
    let e = tempfile::tempdir().unwrap();
    assert_eq!(read(e.path()), Contents::default());
}

pub(super) fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() {
                stack.push(e);
            } else {
                out.insert(e.clone(), std::fs::read(&e).unwrap());
            }
        }
    }
    out
}

#[test]
fn old_cookie_layout_and_live_wal_are_read_from_a_copy() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("Default");
    // Old schema: no is_persistent, only has_expires.
    let c = sqlite(
        &d.join("Cookies"),
        "CREATE TABLE cookies(host_key TEXT, encrypted_value BLOB, has_expires INTEGER);",
    );
    c.execute("INSERT INTO cookies VALUES ('.old.test', x'763131', 1)", [])
        .unwrap();
    drop(c);
    // History in WAL mode with rows still only in the -wal (the writer is alive).
    let h = sqlite(
        &d.join("History"),
        "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE urls(id INTEGER PRIMARY KEY, url TEXT);",
    );
    h.execute_batch("INSERT INTO urls(url) VALUES ('a'),('b');")
        .unwrap();
    assert!(std::fs::metadata(d.join("History-wal")).unwrap().len() > 0);
    let before = snapshot(t.path());
    let c = read(t.path());
    assert_eq!(snapshot(t.path()), before);
    assert_eq!(
        c.cookies["old.test"],
        CookieCount {
            persistent: 1,
            session: 0
        }
    );
    assert_eq!(c.cookies_v11, 1);
    assert_eq!(c.history_entries, Some(2));
    assert!(c.unreadable.is_empty(), "{:?}", c.unreadable);
    drop(h);
}

#[test]
fn diff_lines() {
    let cc = |p, s| CookieCount {
        persistent: p,
        session: s,
    };
    let a = Contents {
        cookies: BTreeMap::from([
            ("a.test".into(), cc(1, 1)),
            ("example.com".into(), cc(2, 0)),
        ]),
        local_storage: s(&["https://x.test", "https://y.test"]),
        indexed_db: s(&["https://y.test"]),
        service_workers: vec![],
        history_entries: Some(10),
        bookmarks: Some(4),
        saved_logins: Some(2),
        login_sites: s(&["accounts.example.com", "b.test"]),
        extensions: Some(1),
        cookies_v11: 0,
        unreadable: s(&["Default/Cookies: database is locked"]),
    };
    assert_eq!(diff(&a, &a), Vec::<String>::new());
    let b = Contents {
        cookies: BTreeMap::from([
            ("a.test".into(), cc(1, 0)),
            ("example.com".into(), cc(5, 0)),
            ("n.test".into(), cc(1, 0)),
        ]),
        local_storage: s(&["https://x.test", "https://z.test"]),
        indexed_db: vec![],
        service_workers: s(&["https://x.test"]),
        history_entries: Some(22),
        bookmarks: None,
        saved_logins: Some(1),
        login_sites: s(&["b.test", "c.test"]),
        extensions: Some(2),
        cookies_v11: 3,
        unreadable: vec![],
    };
    assert_eq!(
        diff(&a, &b),
        s(&[
            "-1 session cookie on a.test",
            "+3 cookies on example.com",
            "+1 cookie on n.test",
            "+3 keyring-encrypted (v11) cookies",
            "-origin https://y.test (localStorage)",
            "+origin https://z.test (localStorage)",
            "-origin https://y.test (IndexedDB)",
            "+origin https://x.test (service worker)",
            "+12 history entries",
            "bookmarks: was 4, now unknown",
            "-1 saved login (accounts.example.com)",
            "+login site c.test",
            "+1 extension",
            "no longer unreadable: Default/Cookies: database is locked",
        ])
    );
    assert_eq!(diff(&b, &a)[0], "+1 session cookie on a.test");
    assert!(diff(&b, &a).contains(&"+1 saved login (accounts.example.com)".to_string()));
}

#[test]
fn serde_round_trip_is_strict() {
    let mut c = Contents {
        history_entries: Some(3),
        ..Default::default()
    };
    c.cookies.insert(
        "a.test".into(),
        CookieCount {
            persistent: 1,
            session: 2,
        },
    );
    let j = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<Contents>(&j).unwrap(), c);
    let extra = j.replacen('{', "{\"values\":[],", 1);
    assert!(serde_json::from_str::<Contents>(&extra).is_err());
}

/// A profile the browser filled with links and FIFOs: nothing outside it is read, nothing
/// blocks, and what could not be read is named.
#[test]
#[allow(unsafe_code)]
fn links_and_fifos_planted_by_the_browser_are_not_followed() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;
    let other = tempfile::tempdir().unwrap();
    let od = other.path().join("Default");
    sqlite(&od.join("History"), "CREATE TABLE urls(id INTEGER PRIMARY KEY, url TEXT); INSERT INTO urls(url) VALUES ('secret');");
    sqlite(&od.join("Network/Cookies"), COOKIES)
        .execute(
            "INSERT INTO cookies VALUES ('victim.test', 'n', '', x'', 1, 1)",
            [],
        )
        .unwrap();
    write(
        &od.join("Bookmarks"),
        br#"{"roots":{"bookmark_bar":{"type":"folder","children":[{"type":"url","url":"https://v/"}]}}}"#,
    );

    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("Default");
    std::fs::create_dir_all(&d).unwrap();
    symlink(od.join("History"), d.join("History")).unwrap();
    symlink(od.join("Network"), d.join("Network")).unwrap();
    symlink(od.join("Bookmarks"), d.join("Bookmarks")).unwrap();
    symlink(other.path(), d.join("Extensions")).unwrap();
    let fifo = std::ffi::CString::new(d.join("Login Data").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);

    let c = read(t.path());
    assert_eq!(c.history_entries, None);
    assert_eq!(c.saved_logins, None);
    assert_eq!(c.bookmarks, None);
    assert_eq!(c.extensions, None);
    assert!(c.cookies.is_empty(), "{:?}", c.cookies);
    for part in ["History", "Login Data", "Bookmarks", "Extensions"] {
        assert!(
            c.unreadable
                .iter()
                .any(|u| u.starts_with(&format!("Default/{part}: "))),
            "{part} not noted: {:?}",
            c.unreadable
        );
    }
    assert_eq!(cookies_v11(t.path()), None);

    // A link on the way to the cookie database is named too.
    let c = read(t.path());
    assert!(c.cookies.is_empty(), "{:?}", c.cookies);
    assert!(
        c.unreadable
            .iter()
            .any(|u| u.starts_with("Default/Network/Cookies: ")),
        "{:?}",
        c.unreadable
    );
    // The profile directory itself a link: nothing is read.
    let t2 = tempfile::tempdir().unwrap();
    symlink(&od, t2.path().join("Default")).unwrap();
    let c = read(t2.path());
    assert_eq!(c.history_entries, None);
    assert!(c.cookies.is_empty());
    assert_eq!(c.unreadable.len(), 1, "{:?}", c.unreadable);
}

/// An endless query: what a view over a recursive query runs.
const ENDLESS: &str = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r)";

#[test]
fn views_and_virtual_tables_the_browser_planted_are_not_read() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("Default");
    sqlite(
        &d.join("Network/Cookies"),
        &format!("CREATE VIEW cookies AS {ENDLESS} SELECT 'h' || x AS host_key, 1 AS is_persistent, X'' AS encrypted_value FROM r;"),
    );
    sqlite(
        &d.join("History"),
        &format!("CREATE VIEW urls AS {ENDLESS} SELECT x AS id FROM r;"),
    );
    sqlite(
        &d.join("Login Data"),
        &format!("CREATE VIEW logins AS {ENDLESS} SELECT 'https://h' || x || '/' AS signon_realm FROM r;"),
    );
    sqlite(
        &d.join("Login Data For Account"),
        "CREATE VIRTUAL TABLE logins USING rtree(id, a, b);",
    );
    std::fs::create_dir_all(d.join("WebStorage/1/IndexedDB")).unwrap();
    write(&d.join("WebStorage/1/IndexedDB/x"), b"x");
    sqlite(
        &d.join("WebStorage/QuotaManager"),
        &format!(
            "CREATE VIEW buckets AS {ENDLESS} SELECT 1 AS id, 'https://a/' AS storage_key FROM r;"
        ),
    );
    // Without the checks, this never returns (and the cookie and login maps grow until the
    // memory is gone); a thread and a generous wait make that a failure, not a hang.
    let root = t.path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(read(&root)).unwrap());
    let c = rx
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("reading the planted profile ended");
    assert_eq!(
        c.unreadable,
        s(&[
            "Default/History: urls is a view, not a table",
            "Default/Login Data For Account: logins is a virtual table",
            "Default/Login Data: logins is a view, not a table",
            "Default/Network/Cookies: cookies is a view, not a table",
            "Default/WebStorage/1/IndexedDB: bucket not in QuotaManager",
            "Default/WebStorage/QuotaManager: buckets is a view, not a table",
        ])
    );
    assert!(c.cookies.is_empty() && c.login_sites.is_empty());
    assert_eq!((c.history_entries, c.saved_logins), (None, None));
}

#[test]
fn a_statement_that_runs_past_its_budget_is_interrupted() {
    let mut c = Connection::open_in_memory().unwrap();
    sqlite::limit_time(&mut c, std::time::Duration::from_millis(200)).unwrap();
    let e = c
        .query_row(&format!("{ENDLESS} SELECT count(*) FROM r"), [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap_err();
    assert_eq!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::OperationInterrupted),
        "{e}"
    );
    assert_eq!(sqlite::why(&e), "reading it took more than 5 s");
}

#[test]
fn a_database_naming_too_many_sites_is_noted_not_gathered() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("Default");
    let c = sqlite(&d.join("Network/Cookies"), COOKIES);
    c.execute(
        &format!(
            "INSERT INTO cookies {ENDLESS} SELECT 'h' || x || '.test', 'n', '', X'', 1, 1 FROM r LIMIT ?1"
        ),
        [sqlite::MAX_SITES as i64 + 1],
    )
    .unwrap();
    drop(c);
    let got = read(t.path());
    assert_eq!(
        got.unreadable,
        s(&[&format!(
            "Default/Network/Cookies: more than {} sites",
            sqlite::MAX_SITES
        )])
    );
    assert!(got.cookies.is_empty());
}
