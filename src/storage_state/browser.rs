//! The offline Chromium that moves a storage state into or out of a profile directory.
//!
//! It runs on its own directory (a fresh one for import, a restored copy for export), with
//! every request it makes sent to a dead proxy: nothing reaches the network. To reach an
//! origin's storage it opens a page of that origin whose every request is answered locally
//! with an empty document (`Fetch.fulfillRequest`), as Playwright does for `storageState`,
//! so the page runs no site code.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::{Cookie, Item, Origin, SameSite, StorageState};
use crate::browser::{self as chromium, Browser, LaunchOptions, Runtime};
use crate::cdp::{Cdp, Events};

/// Errors of driving the browser.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The browser would not start.
    #[error(transparent)]
    Launch(#[from] chromium::Error),
    /// A DevTools command failed.
    #[error("the browser failed: {0}")]
    Cdp(String),
    /// The browser refused a cookie (a public suffix, or otherwise invalid for it).
    #[error("storage_state cookies[{index}] ({name:?} for {domain:?}) was refused by the browser: a public suffix, or a cookie it cannot set")]
    CookieRefused {
        /// Position in the document.
        index: usize,
        /// Name.
        name: String,
        /// Domain.
        domain: String,
    },
    /// An origin the browser would not open.
    #[error("storage_state origin {origin:?} cannot be opened by the browser: {why}")]
    OriginRefused {
        /// The origin.
        origin: String,
        /// Why.
        why: String,
    },
    /// The browser did not exit cleanly, so what it wrote may be incomplete.
    #[error("the browser did not stop cleanly")]
    Unclean,
    /// The profile holds more than a storageState document may.
    #[error("the profile's storage state is over what a storageState document holds: {0}")]
    TooLarge(String),
}

/// How long an export may drive its browser.
const EXPORT_TIME: Duration = Duration::from_secs(600);

/// Checks that `origins` origins and `bytes` bytes of cookies and items fit in a storageState
/// document (what an import takes back).
fn within_document(origins: usize, bytes: usize) -> Result<(), Error> {
    if origins > super::MAX_ORIGINS {
        return Err(Error::TooLarge(format!(
            "{origins} origins have localStorage, at most {} do",
            super::MAX_ORIGINS
        )));
    }
    if bytes > super::MAX_DOCUMENT_BYTES {
        return Err(Error::TooLarge(format!(
            "over {} bytes of cookies and localStorage",
            super::MAX_DOCUMENT_BYTES
        )));
    }
    Ok(())
}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error::Cdp(s)
    }
}

const BLANK: &str = "<!doctype html><meta charset=utf-8><title></title>";

/// Checks one `indexedDB` database of a document (plain JSON keys and values only).
///
/// # Errors
/// What is wrong with it.
pub fn check_indexed_db(db: &Value) -> Result<(), String> {
    let o = db.as_object().ok_or("must be an object")?;
    for k in o.keys() {
        if !["name", "version", "stores"].contains(&k.as_str()) {
            return Err(format!("unknown member `{k}`"));
        }
    }
    o.get("name")
        .and_then(Value::as_str)
        .ok_or("needs a string `name`")?;
    if let Some(v) = o.get("version") {
        v.as_u64()
            .filter(|v| *v >= 1)
            .ok_or("`version` must be an integer >= 1")?;
    }
    for s in o
        .get("stores")
        .and_then(Value::as_array)
        .ok_or("needs an array `stores`")?
    {
        let s = s.as_object().ok_or("a store must be an object")?;
        for k in s.keys() {
            if ![
                "name",
                "keyPath",
                "keyPathArray",
                "autoIncrement",
                "records",
                "indexes",
            ]
            .contains(&k.as_str())
            {
                return Err(format!("store: unknown member `{k}`"));
            }
        }
        s.get("name")
            .and_then(Value::as_str)
            .ok_or("a store needs a string `name`")?;
        for r in s
            .get("records")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_object().ok_or("a record must be an object")?;
            for k in r.keys() {
                match k.as_str() {
                    "key" | "value" => {}
                    "keyEncoded" | "valueEncoded" => {
                        return Err(format!(
                            "record: `{k}` (a value that is not plain JSON) is not supported"
                        ))
                    }
                    _ => return Err(format!("record: unknown member `{k}`")),
                }
            }
        }
    }
    Ok(())
}

async fn launch(
    rt: &Arc<Runtime>,
    dir: &Path,
    restore_last_session: bool,
    deadline: Duration,
) -> Result<Browser, Error> {
    let opts = LaunchOptions {
        restore_last_session,
        offline: true,
        ..LaunchOptions::default()
    };
    let name = format!("job-{}", uuid::Uuid::new_v4().simple());
    Ok(rt.launch(&name, dir, &opts, deadline).await?)
}

/// A page of `origin` showing an empty document served by the browser itself. The
/// navigation answers only once its request was fulfilled, so both run side by side.
async fn open_origin(
    cdp: &Cdp,
    events: &mut Events,
    origin: &str,
) -> Result<(String, String), Error> {
    let target = cdp
        .call(None, "Target.createTarget", json!({"url": "about:blank"}))
        .await?["targetId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let session = cdp
        .call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        )
        .await?["sessionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let s = Some(session.as_str());
    cdp.call(
        s,
        "Fetch.enable",
        json!({"patterns": [{"urlPattern": "*", "requestStage": "Request"}]}),
    )
    .await?;
    cdp.call(s, "Page.enable", json!({})).await?;
    let refused = |why: String| Error::OriginRefused {
        origin: origin.to_string(),
        why,
    };
    let body = base64::engine::general_purpose::STANDARD.encode(BLANK);
    let url = format!("{origin}/");
    let nav = cdp.call(s, "Page.navigate", json!({"url": url}));
    tokio::pin!(nav);
    let (mut navigated, mut loaded) = (false, false);
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    while !(navigated && loaded) {
        tokio::select! {
            r = &mut nav, if !navigated => {
                let r = r?;
                if let Some(e) = r["errorText"].as_str() {
                    return Err(refused(e.to_string()));
                }
                navigated = true;
            }
            ev = events.recv() => {
                let ev = ev.ok_or_else(|| Error::Cdp("the browser connection closed".into()))?;
                if ev["sessionId"].as_str() != Some(session.as_str()) {
                    continue;
                }
                match ev["method"].as_str() {
                    Some("Fetch.requestPaused") => {
                        let id = ev["params"]["requestId"].clone();
                        cdp.call(
                            s,
                            "Fetch.fulfillRequest",
                            json!({"requestId": id, "responseCode": 200,
                                "responseHeaders": [{"name": "Content-Type", "value": "text/html; charset=utf-8"}],
                                "body": body}),
                        )
                        .await?;
                    }
                    Some("Page.loadEventFired") => loaded = true,
                    _ => {}
                }
            }
            () = &mut deadline => return Err(refused("the page did not load".into())),
        }
    }
    Ok((target, session.clone()))
}

async fn eval(cdp: &Cdp, session: &str, expr: &str) -> Result<Value, Error> {
    let r = cdp
        .call(
            Some(session),
            "Runtime.evaluate",
            json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
        )
        .await?;
    if let Some(e) = r.get("exceptionDetails") {
        return Err(Error::Cdp(format!(
            "page script failed: {}",
            e["exception"]["description"]
                .as_str()
                .unwrap_or("exception")
        )));
    }
    Ok(r["result"]["value"].clone())
}

fn cookie_param(c: &Cookie) -> Value {
    let mut p = json!({"name": c.name, "value": c.value, "domain": c.domain, "path": c.path,
        "secure": c.secure, "httpOnly": c.http_only,
        "sameSite": match c.same_site { SameSite::Strict => "Strict", SameSite::Lax => "Lax", SameSite::None => "None" }});
    if c.expires > 0.0 {
        p["expires"] = json!(c.expires);
    }
    if let Some(k) = &c.partition_key {
        p["partitionKey"] = json!({"topLevelSite": k, "hasCrossSiteAncestor": false});
    }
    p
}

fn same_cookie(a: &Value, c: &Cookie) -> bool {
    a["name"] == c.name.as_str()
        && a["path"] == c.path.as_str()
        && a["domain"].as_str().map(|d| d.trim_start_matches('.'))
            == Some(c.domain.trim_start_matches('.'))
}

const IDB_IMPORT: &str = r#"(async (dbs) => {
  for (const db of dbs) {
    await new Promise((resolve, reject) => {
      const req = indexedDB.open(db.name, db.version || 1);
      req.onupgradeneeded = () => {
        const d = req.result;
        for (const s of db.stores) {
          if (d.objectStoreNames.contains(s.name)) continue;
          const keyPath = s.keyPathArray || s.keyPath;
          const store = d.createObjectStore(s.name, keyPath ? { keyPath, autoIncrement: !!s.autoIncrement } : { autoIncrement: !!s.autoIncrement });
          for (const ix of s.indexes || []) store.createIndex(ix.name, ix.keyPathArray || ix.keyPath, { unique: !!ix.unique, multiEntry: !!ix.multiEntry });
        }
      };
      req.onerror = () => reject(req.error);
      req.onsuccess = () => {
        const d = req.result;
        const names = db.stores.map(s => s.name);
        if (!names.length) { d.close(); resolve(); return; }
        const tx = d.transaction(names, 'readwrite');
        for (const s of db.stores) {
          const store = tx.objectStore(s.name);
          for (const r of s.records || []) (store.keyPath === null && 'key' in r) ? store.put(r.value, r.key) : store.put(r.value);
        }
        tx.oncomplete = () => { d.close(); resolve(); };
        tx.onerror = () => reject(tx.error);
      };
    });
  }
  return true;
})"#;

/// Writes `state` into the empty profile directory `dir` with a real Chromium, and stops
/// it cleanly (so the cookie and storage databases are complete on disk).
///
/// # Errors
/// [`Error::CookieRefused`] when the browser would not keep a cookie; launch and browser failures.
pub async fn import(
    rt: &Arc<Runtime>,
    dir: &Path,
    state: &StorageState,
    deadline: Duration,
) -> Result<(), Error> {
    let mut browser = launch(rt, dir, false, deadline).await?;
    let r = import_into(&browser, state).await;
    let clean = browser.close(deadline).await;
    r?;
    if clean {
        Ok(())
    } else {
        Err(Error::Unclean)
    }
}

async fn import_into(browser: &Browser, state: &StorageState) -> Result<(), Error> {
    let (cdp, mut events) = Cdp::connect(browser.mux(), Duration::from_secs(30)).await?;
    if !state.cookies.is_empty() {
        let params: Vec<Value> = state.cookies.iter().map(cookie_param).collect();
        if let Err(e) = cdp
            .call(None, "Storage.setCookies", json!({"cookies": params}))
            .await
        {
            // The browser refused the whole batch: name the cookie it will not take (the
            // client's bad input, a 400), one at a time.
            for (index, (c, p)) in state.cookies.iter().zip(&params).enumerate() {
                if cdp
                    .call(None, "Storage.setCookies", json!({"cookies": [p]}))
                    .await
                    .is_err()
                {
                    return Err(Error::CookieRefused {
                        index,
                        name: c.name.clone(),
                        domain: c.domain.clone(),
                    });
                }
            }
            return Err(Error::Cdp(e));
        }
        let got = cdp.call(None, "Storage.getCookies", json!({})).await?;
        let got = got["cookies"].as_array().cloned().unwrap_or_default();
        for (index, c) in state.cookies.iter().enumerate() {
            if !got.iter().any(|g| same_cookie(g, c)) {
                return Err(Error::CookieRefused {
                    index,
                    name: c.name.clone(),
                    domain: c.domain.clone(),
                });
            }
        }
    }
    for o in &state.origins {
        if o.local_storage.is_empty() && o.indexed_db.as_ref().is_none_or(Vec::is_empty) {
            continue;
        }
        let (target, session) = open_origin(&cdp, &mut events, &o.origin).await?;
        let items: Vec<(&str, &str)> = o
            .local_storage
            .iter()
            .map(|i| (i.name.as_str(), i.value.as_str()))
            .collect();
        let expr = format!(
            "(() => {{ for (const [k, v] of {}) localStorage.setItem(k, v); return localStorage.length; }})()",
            serde_json::to_string(&items).expect("serializes")
        );
        eval(&cdp, &session, &expr).await?;
        if let Some(dbs) = &o.indexed_db {
            let expr = format!(
                "{IDB_IMPORT}({})",
                serde_json::to_string(dbs).expect("serializes")
            );
            eval(&cdp, &session, &expr).await?;
        }
        cdp.call(None, "Target.closeTarget", json!({"targetId": target}))
            .await?;
    }
    Ok(())
}

/// Reads the storage state of the restored profile copy `dir` (started with its last
/// session, so session cookies are kept), for the localStorage of `origins`.
///
/// # Errors
/// Launch and browser failures.
pub async fn export(
    rt: &Arc<Runtime>,
    dir: &Path,
    origins: &[String],
    deadline: Duration,
) -> Result<StorageState, Error> {
    // The tabs of the last session are not reopened (they would load pages); the session
    // cookies are kept all the same by --restore-last-session.
    let _ = std::fs::remove_dir_all(dir.join("Default/Sessions"));
    // The origins come from what the browser wrote: counted before a page is opened.
    within_document(origins.len(), 0)?;
    let mut browser = launch(rt, dir, true, deadline).await?;
    let r = tokio::time::timeout(EXPORT_TIME, export_from(&browser, origins))
        .await
        .unwrap_or_else(|_| {
            Err(Error::Cdp(format!(
                "the export did not finish within {} s",
                EXPORT_TIME.as_secs()
            )))
        });
    browser.close(deadline).await;
    r
}

async fn export_from(browser: &Browser, origins: &[String]) -> Result<StorageState, Error> {
    let (cdp, mut events) = Cdp::connect(browser.mux(), Duration::from_secs(30)).await?;
    let got = cdp.call(None, "Storage.getCookies", json!({})).await?;
    let mut state = StorageState::default();
    for c in got["cookies"].as_array().into_iter().flatten() {
        let session = c["session"].as_bool().unwrap_or(false);
        state.cookies.push(Cookie {
            name: c["name"].as_str().unwrap_or_default().into(),
            value: c["value"].as_str().unwrap_or_default().into(),
            domain: c["domain"].as_str().unwrap_or_default().into(),
            path: c["path"].as_str().unwrap_or("/").into(),
            expires: if session {
                -1.0
            } else {
                c["expires"].as_f64().unwrap_or(-1.0)
            },
            http_only: c["httpOnly"].as_bool().unwrap_or(false),
            secure: c["secure"].as_bool().unwrap_or(false),
            same_site: match c["sameSite"].as_str() {
                Some("Strict") => SameSite::Strict,
                Some("None") => SameSite::None,
                _ => SameSite::Lax,
            },
            partition_key: c["partitionKey"]["topLevelSite"]
                .as_str()
                .map(str::to_string),
        });
    }
    let mut bytes: usize = state
        .cookies
        .iter()
        .map(|c| c.name.len() + c.value.len() + c.domain.len() + c.path.len())
        .sum();
    within_document(origins.len(), bytes)?;
    for origin in origins {
        let (target, session) = open_origin(&cdp, &mut events, origin).await?;
        let v = eval(
            &cdp,
            &session,
            "JSON.stringify(Object.keys(localStorage).map(k => ({name: k, value: localStorage.getItem(k)})))",
        )
        .await?;
        let items: Vec<Item> = serde_json::from_str(v.as_str().unwrap_or("[]")).unwrap_or_default();
        cdp.call(None, "Target.closeTarget", json!({"targetId": target}))
            .await?;
        bytes += items
            .iter()
            .map(|i| i.name.len() + i.value.len())
            .sum::<usize>();
        within_document(origins.len(), bytes)?;
        if !items.is_empty() {
            state.origins.push(Origin {
                origin: origin.clone(),
                local_storage: items,
                indexed_db: None,
            });
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_holds_what_an_import_takes() {
        assert!(
            within_document(super::super::MAX_ORIGINS, super::super::MAX_DOCUMENT_BYTES).is_ok()
        );
        let e = within_document(1_000_000, 0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the profile's storage state is over what a storageState document holds: 1000000 origins have localStorage, at most 500 do"
        );
        let e = within_document(1, super::super::MAX_DOCUMENT_BYTES + 1).unwrap_err();
        assert!(matches!(e, Error::TooLarge(_)), "{e}");
    }
}
