//! What a saved Chromium profile holds, as counts and site names only, never values.
//!
//! [`read`] inspects a `--user-data-dir` (its `Default` profile) without modifying it:
//! cookies per site (persistent/session, and how many are keyring-encrypted `v11`),
//! origins with localStorage, IndexedDB and service workers, and the number of history
//! entries, bookmarks, saved logins (with their sites) and extensions. [`diff`] turns two
//! such summaries into human lines. Layout facts (measured on Chromium 156, see the tests
//! for the shapes): `Default/Cookies` or `Default/Network/Cookies`; localStorage keys
//! `META:<origin>` and `_<origin>\0<key>` in `Default/Local Storage/leveldb`; service
//! worker registrations `REG:<origin>/\0<id>` in `Default/Service Worker/Database`;
//! IndexedDB in `Default/IndexedDB/<scheme>_<host>_<port>.indexeddb.leveldb` (and, for
//! non-default buckets, `Default/WebStorage/<bucket id>/IndexedDB/`, mapped to origins by
//! the `buckets` table of `Default/WebStorage/QuotaManager`), where a database exists while
//! its name key (prefix `00 00 00 00 C9`) is live.
//!
//! The browser wrote the tree, so it is read through [`Tree`]: no link is followed and only
//! regular files are opened (a link, a FIFO or a device where a file should be is noted as
//! unreadable). SQLite files are opened read-only and immutable by the path of the
//! descriptor that was checked (SQLite resolves `/proc/self/fd/N` back to the file's real
//! path, which has no link in it; the tree no longer changes once the browser has stopped),
//! or, when a journal or WAL holds data, as a private copy (of the checked descriptors, at
//! most their size) in a fresh temporary directory. Cookie values are never selected.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rusqlite::Connection;

use super::untrusted::Tree;
use sqlite::{check_sites, columns, open_sqlite, why};
#[cfg(test)]
use storage::{idb_dir_origin, storage_key_origin};
use storage::{indexed_db, local_storage, service_workers};

mod sqlite;

/// What a profile holds: counts and site names only.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contents {
    /// Cookies per site (host without leading dot, e.g. "example.com"), split persistent/session.
    pub cookies: BTreeMap<String, CookieCount>,
    /// Origins (e.g. "https://example.com") with localStorage data.
    pub local_storage: Vec<String>,
    /// Origins with IndexedDB databases.
    pub indexed_db: Vec<String>,
    /// Origins with service worker registrations.
    pub service_workers: Vec<String>,
    /// Rows in History's `urls` table (None: unreadable/absent).
    pub history_entries: Option<u64>,
    /// URL bookmarks in Default/Bookmarks (folders not counted).
    pub bookmarks: Option<u64>,
    /// Saved logins (rows of `logins` in Default/Login Data and Default/Login Data For
    /// Account, "never save" entries not counted) and their sites (signon_realm host).
    pub saved_logins: Option<u64>,
    /// Distinct sites of the saved logins, sorted.
    pub login_sites: Vec<String>,
    /// Installed extensions (directories under Default/Extensions, ids only counted).
    pub extensions: Option<u64>,
    /// Cookies whose encrypted_value starts with b"v11" (keyring-encrypted: they will not decrypt on another machine).
    pub cookies_v11: u64,
    /// Parts that could not be read, with why (e.g. "Default/Cookies: database is locked"); never values.
    pub unreadable: Vec<String>,
}

/// Cookies of one site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieCount {
    /// Cookies with an expiry (kept across browser restarts).
    pub persistent: u64,
    /// Session cookies.
    pub session: u64,
}

const MAX_BOOKMARKS_BYTES: u64 = 64 << 20;

/// Reads the profile at `root` (a Chromium --user-data-dir; the profile is root/Default). Never fails: what it cannot read goes to `unreadable`. Synchronous and CPU/IO bound: callers run it on a blocking thread.
/// How many cookies of the profile at `root` are `v11` (keyring-encrypted: they do not
/// decrypt on another machine), read from the cookie database with SQLite; `None` when
/// there is no readable cookie database.
pub fn cookies_v11(root: &Path) -> Option<u64> {
    let d = Tree::open(root)
        .and_then(|t| t.dir(Path::new("Default")))
        .ok()?;
    let p = cookie_file(&d).ok()??;
    read_cookies(&d, Path::new(p)).ok().map(|(_, v11)| v11)
}

/// Which cookie database the profile has (Chromium moved it into `Network/`): the first
/// present, or the part that could not be looked at and why.
fn cookie_file(d: &Tree) -> Result<Option<&'static str>, (&'static str, String)> {
    for p in ["Network/Cookies", "Cookies"] {
        match d.kind(Path::new(p)) {
            Ok(_) => return Ok(Some(p)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err((p, e.to_string())),
        }
    }
    Ok(None)
}

/// Reads what the profile at `root` holds (see [`Contents`]).
pub fn read(root: &Path) -> Contents {
    let mut c = Contents::default();
    let d = match Tree::open(root).and_then(|t| t.dir(Path::new("Default"))) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return c,
        Err(e) => {
            c.unreadable = vec![format!("Default: {e}")];
            return c;
        }
    };
    let mut unreadable = Vec::new();
    let mut note = |part: &str, why: String| unreadable.push(format!("Default/{part}: {why}"));

    match cookie_file(&d) {
        Ok(Some(p)) => match read_cookies(&d, Path::new(p)) {
            Ok((map, v11)) => (c.cookies, c.cookies_v11) = (map, v11),
            Err(e) => note(p, e),
        },
        Ok(None) => {}
        Err((p, e)) => note(p, e),
    }
    c.history_entries = optional(&d, "History", &mut note, |conn| {
        columns(conn, "urls")?;
        conn.query_row("SELECT count(*) FROM urls", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
    });
    let mut sites = BTreeSet::new();
    for p in ["Login Data", "Login Data For Account"] {
        let n = optional(&d, p, &mut note, |conn| read_logins(conn, &mut sites));
        if let Some(n) = n {
            *c.saved_logins.get_or_insert(0) += n;
        }
    }
    c.login_sites = sites.into_iter().collect();
    c.bookmarks = match read_bookmarks(&d) {
        Ok(n) => n,
        Err(e) => {
            note("Bookmarks", e);
            None
        }
    };
    c.extensions = match d.read_dir(Path::new("Extensions")) {
        Ok(it) => Some(it.iter().filter(|(n, t)| t.is_dir() && n != "Temp").count() as u64),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            note("Extensions", e.to_string());
            None
        }
    };
    // One budget for every LevelDB database of the profile (there may be thousands).
    let budget = super::leveldb::Budget::new();
    c.local_storage = local_storage(&d, &budget, &mut note);
    c.service_workers = service_workers(&d, &budget, &mut note);
    c.indexed_db = indexed_db(&d, &budget, &mut note);
    unreadable.sort();
    c.unreadable = unreadable;
    c
}

/// Runs `f` on the database `part` of `d`: None when absent or unreadable (then noted).
fn optional<T>(
    d: &Tree,
    part: &str,
    note: &mut dyn FnMut(&str, String),
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> Option<T> {
    match d.kind(Path::new(part)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            note(part, e.to_string());
            return None;
        }
        Ok(_) => {}
    }
    let res =
        open_sqlite(d, Path::new(part)).and_then(|(conn, _held)| f(&conn).map_err(|e| why(&e)));
    res.map_err(|e| note(part, e)).ok()
}

type CookieMap = BTreeMap<String, CookieCount>;

fn read_cookies(d: &Tree, rel: &Path) -> Result<(CookieMap, u64), String> {
    let (conn, _held) = open_sqlite(d, rel)?;
    let run = || -> rusqlite::Result<(CookieMap, u64)> {
        let cols = columns(&conn, "cookies")?;
        let pers = ["is_persistent", "has_expires"]
            .into_iter()
            .find(|c| cols.contains(*c));
        let pers =
            pers.ok_or_else(|| rusqlite::Error::InvalidColumnName("cookies.is_persistent".into()))?;
        let v11 = match cols.contains("encrypted_value") {
            true => "ifnull(substr(encrypted_value, 1, 3) = X'763131', 0)",
            false => "0",
        };
        let sql =
            format!("SELECT ifnull(host_key, ''), ifnull({pers}, 0) != 0, {v11} FROM cookies");
        let mut st = conn.prepare(&sql)?;
        let mut rows = st.query([])?;
        let (mut map, mut n11) = (CookieMap::new(), 0u64);
        while let Some(r) = rows.next()? {
            let host = String::from_utf8_lossy(r.get_ref(0)?.as_bytes()?);
            let e: &mut CookieCount = map
                .entry(host.trim_start_matches('.').to_string())
                .or_default();
            *(if r.get::<_, bool>(1)? {
                &mut e.persistent
            } else {
                &mut e.session
            }) += 1;
            n11 += u64::from(r.get::<_, bool>(2)?);
            check_sites(map.len())?;
        }
        Ok((map, n11))
    };
    run().map_err(|e| why(&e))
}

fn read_logins(conn: &Connection, sites: &mut BTreeSet<String>) -> rusqlite::Result<u64> {
    let filter = if columns(conn, "logins")?.contains("blacklisted_by_user") {
        " WHERE ifnull(blacklisted_by_user, 0) = 0"
    } else {
        ""
    };
    let mut st = conn.prepare(&format!(
        "SELECT ifnull(signon_realm, '') FROM logins{filter}"
    ))?;
    let mut rows = st.query([])?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        n += 1;
        let realm = String::from_utf8_lossy(r.get_ref(0)?.as_bytes()?).into_owned();
        let host = realm_host(&realm);
        if !host.is_empty() {
            sites.insert(host.to_string());
            check_sites(sites.len())?;
        }
    }
    Ok(n)
}

/// "https://user@accounts.example.com:8443/path" → "accounts.example.com".
fn realm_host(realm: &str) -> &str {
    let rest = realm.split_once("://").map_or(realm, |(_, r)| r);
    let auth = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.split(':').next().unwrap_or(host)
}

fn read_bookmarks(d: &Tree) -> Result<Option<u64>, String> {
    use std::io::Read;
    let f = match d.file(Path::new("Bookmarks")) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut buf = Vec::new();
    f.take(MAX_BOOKMARKS_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    if buf.len() as u64 > MAX_BOOKMARKS_BYTES {
        return Err("too large".into());
    }
    let v: serde_json::Value = serde_json::from_slice(&buf).map_err(|e| match e.classify() {
        serde_json::error::Category::Eof => "not JSON (truncated)".to_string(),
        _ => format!("not JSON (line {})", e.line()),
    })?;
    fn urls(v: &serde_json::Value) -> u64 {
        let own = u64::from(v.get("type").and_then(|t| t.as_str()) == Some("url"));
        own + v
            .get("children")
            .and_then(|c| c.as_array())
            .map_or(0, |c| c.iter().map(urls).sum())
    }
    let roots = v
        .get("roots")
        .and_then(|r| r.as_object())
        .ok_or("no roots")?;
    Ok(Some(roots.values().map(urls).sum()))
}

type Words = [&'static str; 2];

fn count_line(out: &mut Vec<String>, x: u64, y: u64, [one, many]: Words, suffix: &str) {
    let d = i128::from(y) - i128::from(x);
    if d != 0 {
        let sign = if d > 0 { '+' } else { '-' };
        let word = if d.abs() == 1 { one } else { many };
        out.push(format!("{sign}{} {word}{suffix}", d.abs()));
    }
}

fn opt_count(out: &mut Vec<String>, a: Option<u64>, b: Option<u64>, w: Words, suffix: &str) {
    match (a, b) {
        (Some(x), Some(y)) => count_line(out, x, y, w, suffix),
        (Some(x), None) => out.push(format!("{}: was {x}, now unknown", w[1])),
        (None, Some(y)) => out.push(format!("{}: was unknown, now {y}", w[1])),
        (None, None) => {}
    }
}

/// "-"/"+" lines for what only `a`/only `b` holds, in sorted order.
fn set_lines(
    out: &mut Vec<String>,
    a: &[&String],
    b: &[&String],
    line: impl Fn(char, &str) -> String,
) {
    let (sa, sb): (BTreeSet<&String>, BTreeSet<&String>) =
        (a.iter().copied().collect(), b.iter().copied().collect());
    for s in sa.symmetric_difference(&sb) {
        out.push(line(if sb.contains(s) { '+' } else { '-' }, s));
    }
}

fn refs(v: &[String]) -> Vec<&String> {
    v.iter().collect()
}

const COOKIE: Words = ["cookie", "cookies"];
const SESSION: Words = ["session cookie", "session cookies"];
const V11: Words = [
    "keyring-encrypted (v11) cookie",
    "keyring-encrypted (v11) cookies",
];
const HISTORY: Words = ["history entry", "history entries"];
const BOOKMARK: Words = ["bookmark", "bookmarks"];
const LOGIN: Words = ["saved login", "saved logins"];
const EXTENSION: Words = ["extension", "extensions"];

/// Human lines describing how `b` differs from `a`, e.g. "+3 cookies on example.com", "-1 session cookie on a.test", "+origin https://x.test (localStorage)", "-origin https://y.test (IndexedDB)", "+12 history entries", "-1 saved login (accounts.example.com)", "+1 extension". Empty when equal. Deterministic order (sorted by kind then site).
pub fn diff(a: &Contents, b: &Contents) -> Vec<String> {
    let mut out = Vec::new();
    let sites: BTreeSet<&String> = a.cookies.keys().chain(b.cookies.keys()).collect();
    for s in sites {
        let x = a.cookies.get(s).copied().unwrap_or_default();
        let y = b.cookies.get(s).copied().unwrap_or_default();
        let on = format!(" on {s}");
        count_line(&mut out, x.persistent, y.persistent, COOKIE, &on);
        count_line(&mut out, x.session, y.session, SESSION, &on);
    }
    count_line(&mut out, a.cookies_v11, b.cookies_v11, V11, "");
    for (x, y, kind) in [
        (&a.local_storage, &b.local_storage, "localStorage"),
        (&a.indexed_db, &b.indexed_db, "IndexedDB"),
        (&a.service_workers, &b.service_workers, "service worker"),
    ] {
        set_lines(&mut out, &refs(x), &refs(y), |sign, o| {
            format!("{sign}origin {o} ({kind})")
        });
    }
    opt_count(&mut out, a.history_entries, b.history_entries, HISTORY, "");
    opt_count(&mut out, a.bookmarks, b.bookmarks, BOOKMARK, "");
    // The count line names the sites that went (or came) with the change; other site
    // changes get lines of their own.
    let sa: BTreeSet<&String> = a.login_sites.iter().collect();
    let sb: BTreeSet<&String> = b.login_sites.iter().collect();
    let named: Vec<&String> = match (a.saved_logins, b.saved_logins) {
        (Some(x), Some(y)) if y > x => sb.difference(&sa).copied().collect(),
        (Some(x), Some(y)) if y < x => sa.difference(&sb).copied().collect(),
        _ => Vec::new(),
    };
    let list = named
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let suffix = if named.is_empty() {
        String::new()
    } else {
        format!(" ({list})")
    };
    opt_count(&mut out, a.saved_logins, b.saved_logins, LOGIN, &suffix);
    let unnamed = |s: &&String| !named.contains(s);
    let ra: Vec<&String> = a.login_sites.iter().filter(unnamed).collect();
    let rb: Vec<&String> = b.login_sites.iter().filter(unnamed).collect();
    set_lines(&mut out, &ra, &rb, |sign, s| {
        format!("{sign}login site {s}")
    });
    opt_count(&mut out, a.extensions, b.extensions, EXTENSION, "");
    let (ua, ub) = (refs(&a.unreadable), refs(&b.unreadable));
    set_lines(&mut out, &ua, &ub, |sign, u| match sign {
        '+' => format!("now unreadable: {u}"),
        _ => format!("no longer unreadable: {u}"),
    });
    out
}

mod storage;
#[cfg(test)]
mod tests;
