//! Opening a database the browser wrote, and reading it within bounds.
//!
//! The file is opened read-only and immutable by the path of its checked descriptor, or as
//! a private copy when a journal or WAL holds data (see the parent module). What is in it is
//! the browser's (or a tenant's, or code that took the browser over): a table may be a view
//! over a recursive query that never ends, or a virtual table. So a table is read only when
//! the schema says it is an ordinary table, every statement on a connection runs within
//! [`BUDGET`] (SQLite's progress handler interrupts it), and what a read gathers per
//! database is capped ([`MAX_SITES`]). A database that breaks any of these is noted as
//! unreadable, with why; the rest of the report goes on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::profile::untrusted::{fd_path, Tree};

/// How long the statements on one database may run in all.
pub(super) const BUDGET: Duration = Duration::from_secs(5);
/// Distinct sites one database may name (cookies' hosts, logins' realms).
pub(super) const MAX_SITES: usize = 100_000;
/// SQLite virtual machine steps between two looks at the clock.
const STEPS: i32 = 10_000;

/// A temporary directory removed on drop.
pub(super) struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a connection reads from: the private copy, or the checked file itself.
pub(super) enum Held {
    Copy(#[allow(dead_code)] Scratch),
    File(#[allow(dead_code)] std::fs::File),
}

/// Copies the checked file `from` (at most the size it has) to a new private file `to`.
fn copy_private(from: &mut std::fs::File, to: &Path) -> std::io::Result<()> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let len = from.metadata()?.len();
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    std::io::copy(&mut from.take(len), &mut out)?;
    Ok(())
}

/// Opens the SQLite file `rel` of `d` without touching it, its statements limited to
/// [`BUDGET`] in all. What it returns beside the connection must outlive it.
pub(super) fn open_sqlite(d: &Tree, rel: &Path) -> Result<(Connection, Held), String> {
    let mut main = d.file(rel).map_err(|e| e.to_string())?;
    let side = |ext: &str| {
        let mut s = rel.as_os_str().to_owned();
        s.push(ext);
        d.file(Path::new(&s)).ok()
    };
    let sides: Vec<(&str, std::fs::File)> = ["-wal", "-journal"]
        .into_iter()
        .filter_map(|x| side(x).map(|f| (x, f)))
        .collect();
    let dirty = sides
        .iter()
        .any(|(_, f)| f.metadata().is_ok_and(|m| m.len() > 0));
    let (conn, held) = if dirty {
        let dir = std::env::temp_dir().join(format!(
            "pv-contents-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        create_private_dir(&dir).map_err(|e| format!("temporary copy: {e}"))?;
        let scratch = Scratch(dir);
        let copy = scratch.0.join("db");
        copy_private(&mut main, &copy).map_err(|e| format!("temporary copy: {e}"))?;
        for (x, mut f) in sides {
            let mut to = copy.as_os_str().to_owned();
            to.push(x);
            copy_private(&mut f, &PathBuf::from(to)).map_err(|e| format!("temporary copy: {e}"))?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        (
            Connection::open_with_flags(&copy, flags).map_err(|e| e.to_string())?,
            Held::Copy(scratch),
        )
    } else {
        // Immutable: SQLite reads this file only (no journal, no WAL, no locks), at the
        // real path of the descriptor checked above (see the module).
        let mut uri = String::from("file:");
        for &b in fd_path(&main).as_os_str().as_encoded_bytes() {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                uri.push(char::from(b));
            } else {
                uri.push_str(&format!("%{b:02X}"));
            }
        }
        uri.push_str("?mode=ro&immutable=1");
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        (
            Connection::open_with_flags(&uri, flags).map_err(|e| e.to_string())?,
            Held::File(main),
        )
    };
    let mut conn = conn;
    conn.pragma_update(None, "trusted_schema", false)
        .map_err(|e| e.to_string())?;
    limit_time(&mut conn, BUDGET).map_err(|e| e.to_string())?;
    Ok((conn, held))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Interrupts every statement on `conn` once `budget` has passed since now.
pub(super) fn limit_time(conn: &mut Connection, budget: Duration) -> rusqlite::Result<()> {
    let until = Instant::now() + budget;
    conn.progress_handler(STEPS, Some(move || Instant::now() >= until))
}

/// What a failed statement says, with an interrupted one said as running out of time.
pub(super) fn why(e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::OperationInterrupted) => {
            format!("reading it took more than {} s", BUDGET.as_secs())
        }
        _ => e.to_string(),
    }
}

/// The columns of `table`, which must be an ordinary table of the database (a view or a
/// virtual table is refused: reading one runs what the browser wrote).
pub(super) fn columns(conn: &Connection, table: &str) -> rusqlite::Result<BTreeSet<String>> {
    let kind: Option<(String, String)> = conn
        .query_row(
            "SELECT type, ifnull(sql, '') FROM sqlite_schema WHERE name = ?1 COLLATE NOCASE",
            [table],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    match kind {
        None => return Err(not_table(format!("no table {table}"))),
        Some((t, _)) if t != "table" => {
            return Err(not_table(format!("{table} is a {t}, not a table")))
        }
        Some((_, sql))
            if sql
                .trim_start()
                .to_ascii_uppercase()
                .starts_with("CREATE VIRTUAL") =>
        {
            return Err(not_table(format!("{table} is a virtual table")))
        }
        Some(_) => {}
    }
    let mut st = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names = st.query_map([table], |r| r.get::<_, String>(0))?.collect();
    names
}

fn not_table(why: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some(why),
    )
}

/// Refuses a read that has named more than [`MAX_SITES`] sites.
pub(super) fn check_sites(n: usize) -> rusqlite::Result<()> {
    if n > MAX_SITES {
        return Err(not_table(format!("more than {MAX_SITES} sites")));
    }
    Ok(())
}
