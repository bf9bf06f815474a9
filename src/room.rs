//! The session room: a realtime key-value store shared by everyone attached to one browser
//! session (API-key holder, admin-token holder, every viewer), living as long as the session
//! and never saved with the profile or logged.
//!
//! Every change takes the next version number of the room. Writes may be conditional on an
//! entry's version (`If-Match`) or on its absence (`If-None-Match: *`). Watchers get a
//! snapshot, then every change in order; the last [`RoomConfig::log_len`] changes are kept so
//! a watcher that reconnects with the last version it saw resumes without a gap (older
//! ones start again from a snapshot). Changes reach watchers over a bounded broadcast
//! channel: one that stops reading falls behind and is resynchronised with a snapshot, so
//! memory stays bounded whatever watchers do.
//!
//! Values are kept as their compact JSON text, never as parsed trees (a tree of a 16 KiB
//! array of zeros takes 256 KiB), and the kept log holds at most `max_total_bytes` of
//! changes besides its count: a room holds a few times `max_total_bytes` whatever is
//! written to it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::broadcast;

/// `[room]`: the limits of every session's store, the section of the configuration this
/// module owns.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomSection {
    /// Largest value in a session's store, bytes.
    pub max_value_bytes: usize,
    /// Most keys in a session's store.
    pub max_keys: usize,
    /// Most bytes (keys and values) in a session's store.
    pub max_bytes: usize,
    /// Writes per second to one session's store.
    pub writes_per_sec: u32,
    /// Seconds one store watch (SSE) lasts before the client reconnects with Last-Event-ID.
    pub watch_max_secs: u64,
}

impl Default for RoomSection {
    fn default() -> Self {
        let r = RoomConfig::default();
        RoomSection {
            max_value_bytes: r.max_value_bytes,
            max_keys: r.max_keys,
            max_bytes: r.max_total_bytes,
            writes_per_sec: r.max_writes_per_sec,
            watch_max_secs: 3600,
        }
    }
}

/// Limits of a room (from `[room]`).
#[derive(Debug, Clone)]
pub struct RoomConfig {
    /// Largest value (its JSON), bytes.
    pub max_value_bytes: usize,
    /// Most keys.
    pub max_keys: usize,
    /// Most bytes of keys and values together.
    pub max_total_bytes: usize,
    /// Writes per second (a burst of twice that is allowed).
    pub max_writes_per_sec: u32,
    /// Changes kept for watchers that resume.
    pub log_len: usize,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            max_value_bytes: 16 * 1024,
            max_keys: 256,
            max_total_bytes: 1 << 20,
            max_writes_per_sec: 5000,
            log_len: 4096,
        }
    }
}

/// A key: `[A-Za-z0-9._:-]{1,128}` (the pattern in the OpenAPI document).
pub fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 128
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

/// One change.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The room's version after it.
    pub version: u64,
    /// Key.
    pub key: String,
    /// New value (`null` when deleted), as compact JSON.
    pub value: Box<RawValue>,
    /// Whether the key was deleted.
    pub deleted: bool,
}

impl PartialEq for Change {
    fn eq(&self, o: &Self) -> bool {
        (self.version, &self.key, self.value.get(), self.deleted)
            == (o.version, &o.key, o.value.get(), o.deleted)
    }
}

/// One entry.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Value, as compact JSON.
    pub value: Box<RawValue>,
    /// Version of the change that wrote it.
    pub version: u64,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.value.get(), self.version) == (o.value.get(), o.version)
    }
}

/// Changes broadcast to watchers and not yet taken by all (a slower one is resynchronised).
const BROADCAST: usize = 256;

/// A write's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// None.
    Always,
    /// The entry exists at this version (`If-Match`).
    Version(u64),
    /// The entry does not exist (`If-None-Match: *`).
    Absent,
}

/// Why a write was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Key does not match `[A-Za-z0-9._:-]{1,128}`.
    #[error("keys are 1-128 characters of A-Z a-z 0-9 . _ : -")]
    BadKey,
    /// Value larger than the limit.
    #[error("the value is larger than {0} bytes (room.max_value_bytes)")]
    ValueTooLarge(usize),
    /// Key count limit.
    #[error("the store holds {0} keys already (room.max_keys)")]
    TooManyKeys(usize),
    /// Size limit.
    #[error("the store would hold more than {0} bytes (room.max_bytes)")]
    Full(usize),
    /// Write rate limit.
    #[error("more than {0} writes per second to this session's store (room.writes_per_sec)")]
    RateLimited(u32),
    /// The condition did not hold.
    #[error("precondition failed: the entry is at version {current:?}")]
    Precondition {
        /// The entry's version now (`None`: absent).
        current: Option<u64>,
    },
    /// No such key.
    #[error("no such key")]
    NotFound,
}

struct Inner {
    entries: BTreeMap<String, Entry>,
    bytes: usize,
    version: u64,
    log: VecDeque<Arc<Change>>,
    /// Bytes of keys and values in `log`.
    log_bytes: usize,
    budget: f64,
    refilled: Instant,
}

/// What a new watcher starts from.
#[derive(Debug)]
pub enum Start {
    /// Everything now, at this version.
    Snapshot(u64, BTreeMap<String, Entry>),
    /// The changes after the version it last saw.
    Replay(Vec<Arc<Change>>),
}

/// Most `?watch=true` streams of one session's store at once: a watcher that does not read
/// holds up to [`WATCH_QUEUE`] events (a snapshot is up to `max_bytes`).
pub const MAX_WATCHERS: usize = 32;
/// Of those, most opened with viewer tokens: the others are kept for the API key and the
/// admin token (viewers holding every slot shut the app out of its own session's store).
pub const MAX_VIEWER_WATCHERS: usize = 24;
/// Events queued for one watcher.
pub const WATCH_QUEUE: usize = 4;

/// A session's room.
pub struct Room {
    cfg: RoomConfig,
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Change>>,
    /// Watch slots taken: (all, by viewers).
    watchers: Arc<Mutex<(usize, usize)>>,
}

/// One of the [`MAX_WATCHERS`] watch slots, given back when dropped.
#[derive(Debug)]
pub struct WatchSlot {
    taken: Arc<Mutex<(usize, usize)>>,
    viewer: bool,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut t = self.taken.lock().expect("watch slots");
        t.0 -= 1;
        if self.viewer {
            t.1 -= 1;
        }
    }
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values are the users' data: never printed.
        f.debug_struct("Room").finish_non_exhaustive()
    }
}

fn size_of(key: &str, value: &RawValue) -> usize {
    key.len() + value.get().len()
}

/// `null`, the value of a deleted key's change.
fn null() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("null is JSON")
}

impl Room {
    /// An empty room.
    pub fn new(cfg: RoomConfig) -> Room {
        let rate = f64::from(cfg.max_writes_per_sec);
        Room {
            inner: Mutex::new(Inner {
                entries: BTreeMap::new(),
                bytes: 0,
                version: 0,
                log: VecDeque::new(),
                log_bytes: 0,
                budget: rate * 2.0,
                refilled: Instant::now(),
            }),
            tx: broadcast::channel(BROADCAST).0,
            cfg,
            watchers: Arc::default(),
        }
    }

    /// A watch slot, unless [`MAX_WATCHERS`] are taken (or, for a `viewer`,
    /// [`MAX_VIEWER_WATCHERS`] by viewers).
    pub fn watch_slot(&self, viewer: bool) -> Option<WatchSlot> {
        let mut t = self.watchers.lock().expect("watch slots");
        if t.0 >= MAX_WATCHERS || (viewer && t.1 >= MAX_VIEWER_WATCHERS) {
            return None;
        }
        t.0 += 1;
        if viewer {
            t.1 += 1;
        }
        Some(WatchSlot {
            taken: self.watchers.clone(),
            viewer,
        })
    }

    /// Limits.
    pub fn config(&self) -> &RoomConfig {
        &self.cfg
    }

    /// All entries and the room's version.
    pub fn snapshot(&self) -> (u64, BTreeMap<String, Entry>) {
        let i = self.inner.lock().expect("room");
        (i.version, i.entries.clone())
    }

    /// One entry.
    pub fn get(&self, key: &str) -> Option<Entry> {
        self.inner.lock().expect("room").entries.get(key).cloned()
    }

    fn write(
        &self,
        key: &str,
        value: Option<Value>,
        cond: Condition,
    ) -> Result<Arc<Change>, Error> {
        if !valid_key(key) {
            return Err(Error::BadKey);
        }
        let mut i = self.inner.lock().expect("room");
        let current = i.entries.get(key).map(|e| e.version);
        match (cond, current) {
            (Condition::Version(v), Some(c)) if v == c => {}
            (Condition::Absent, None) | (Condition::Always, _) => {}
            _ => return Err(Error::Precondition { current }),
        }
        if value.is_none() && current.is_none() {
            return Err(Error::NotFound);
        }
        let value = match value {
            // Compact JSON text: what is measured is what is kept.
            Some(v) => Some(
                serde_json::value::to_raw_value(&v)
                    .map_err(|_| Error::ValueTooLarge(self.cfg.max_value_bytes))?,
            ),
            None => None,
        };
        let old = i.entries.get(key).map_or(0, |e| size_of(key, &e.value));
        if let Some(v) = &value {
            let new = size_of(key, v);
            if new - key.len() > self.cfg.max_value_bytes {
                return Err(Error::ValueTooLarge(self.cfg.max_value_bytes));
            }
            if current.is_none() && i.entries.len() >= self.cfg.max_keys {
                return Err(Error::TooManyKeys(self.cfg.max_keys));
            }
            if i.bytes - old + new > self.cfg.max_total_bytes {
                return Err(Error::Full(self.cfg.max_total_bytes));
            }
        }
        let rate = f64::from(self.cfg.max_writes_per_sec);
        let now = Instant::now();
        i.budget = (i.budget + now.duration_since(i.refilled).as_secs_f64() * rate).min(rate * 2.0);
        i.refilled = now;
        if i.budget < 1.0 {
            return Err(Error::RateLimited(self.cfg.max_writes_per_sec));
        }
        i.budget -= 1.0;
        i.version += 1;
        let version = i.version;
        let change = Arc::new(Change {
            version,
            key: key.to_string(),
            deleted: value.is_none(),
            value: value.clone().unwrap_or_else(null),
        });
        match value {
            Some(v) => {
                i.bytes = i.bytes - old + size_of(key, &v);
                i.entries
                    .insert(key.to_string(), Entry { value: v, version });
            }
            None => {
                i.bytes -= old;
                i.entries.remove(key);
            }
        }
        i.log_bytes += size_of(&change.key, &change.value);
        i.log.push_back(change.clone());
        // The last change is always kept; older ones while the count and bytes allow.
        while i.log.len() > self.cfg.log_len.max(1)
            || (i.log.len() > 1 && i.log_bytes > self.cfg.max_total_bytes)
        {
            if let Some(c) = i.log.pop_front() {
                i.log_bytes -= size_of(&c.key, &c.value);
            }
        }
        // Sent under the lock, so every watcher sees changes in version order.
        let _ = self.tx.send(change.clone());
        Ok(change)
    }

    /// Sets `key`.
    ///
    /// # Errors
    /// [`Error`]; nothing changed.
    pub fn put(&self, key: &str, value: Value, cond: Condition) -> Result<Arc<Change>, Error> {
        self.write(key, Some(value), cond)
    }

    /// Deletes `key`.
    ///
    /// # Errors
    /// [`Error`]; nothing changed.
    pub fn delete(&self, key: &str, cond: Condition) -> Result<Arc<Change>, Error> {
        self.write(key, None, cond)
    }

    /// Starts watching: where to start (a snapshot, or the changes after `after` when they
    /// are all still kept), and the changes from then on.
    pub fn watch(&self, after: Option<u64>) -> (Start, broadcast::Receiver<Arc<Change>>) {
        let i = self.inner.lock().expect("room");
        let rx = self.tx.subscribe();
        let start = match after {
            Some(v) if v == i.version => Start::Replay(Vec::new()),
            Some(v) if v < i.version && i.log.front().is_some_and(|c| c.version <= v + 1) => {
                Start::Replay(i.log.iter().filter(|c| c.version > v).cloned().collect())
            }
            _ => Start::Snapshot(i.version, i.entries.clone()),
        };
        (start, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_conditions_limits_and_resume() {
        let r = Room::new(RoomConfig {
            max_keys: 2,
            max_value_bytes: 10,
            max_total_bytes: 20,
            log_len: 3,
            ..Default::default()
        });
        let a = r.put("a", json!(1), Condition::Absent).unwrap();
        assert_eq!(a.version, 1);
        assert_eq!(
            r.put("a", json!(2), Condition::Absent),
            Err(Error::Precondition { current: Some(1) })
        );
        assert_eq!(
            r.put("a", json!(2), Condition::Version(9)),
            Err(Error::Precondition { current: Some(1) })
        );
        assert_eq!(
            r.put("a", json!(2), Condition::Version(1)).unwrap().version,
            2
        );
        assert_eq!(
            r.put("bad key", json!(1), Condition::Always),
            Err(Error::BadKey)
        );
        assert_eq!(
            r.put("b", json!("01234567890"), Condition::Always),
            Err(Error::ValueTooLarge(10))
        );
        r.put("b", json!("x"), Condition::Always).unwrap();
        assert_eq!(
            r.put("c", json!(1), Condition::Always),
            Err(Error::TooManyKeys(2))
        );
        assert_eq!(
            r.put("b", json!("0123456"), Condition::Always)
                .unwrap()
                .version,
            4
        );
        assert_eq!(
            r.put("a", json!("01234567"), Condition::Always),
            Err(Error::Full(20))
        );
        assert_eq!(r.delete("zz", Condition::Always), Err(Error::NotFound));
        r.delete("a", Condition::Always).unwrap();
        let (v, snap) = r.snapshot();
        assert_eq!((v, snap.len()), (5, 1));
        match r.watch(Some(3)).0 {
            Start::Replay(c) => {
                assert_eq!(c.iter().map(|c| c.version).collect::<Vec<_>>(), vec![4, 5])
            }
            s => panic!("{s:?}"),
        }
        assert!(
            matches!(r.watch(Some(1)).0, Start::Snapshot(5, _)),
            "version 2 is no longer kept"
        );
        assert!(matches!(r.watch(Some(5)).0, Start::Replay(ref c) if c.is_empty()));
        assert!(matches!(r.watch(None).0, Start::Snapshot(5, _)));
    }

    #[test]
    fn what_a_room_keeps_is_bounded_by_bytes() {
        let r = Room::new(RoomConfig::default());
        // Values of 16 KiB whose trees would be 16 times that: kept as text, and the log
        // holds at most `max_total_bytes` of them (it held 4096 changes, whatever their size).
        let big = json!(vec![0; 8190]);
        for _ in 0..1000 {
            r.put("k", big.clone(), Condition::Always).unwrap();
        }
        let i = r.inner.lock().unwrap();
        let kept: usize = i.log.iter().map(|c| size_of(&c.key, &c.value)).sum();
        assert_eq!(kept, i.log_bytes);
        assert!(kept <= RoomConfig::default().max_total_bytes, "{kept}");
        assert!(i.log.len() >= 60, "{}", i.log.len());
        assert_eq!(i.entries["k"].value.get(), big.to_string());
        drop(i);
        // A watcher from before what is kept starts again from a snapshot.
        assert!(matches!(r.watch(Some(1)).0, Start::Snapshot(1000, _)));
        match r.watch(Some(994)).0 {
            Start::Replay(c) => assert_eq!(c.len(), 6),
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn writes_are_rate_limited() {
        let r = Room::new(RoomConfig {
            max_writes_per_sec: 10,
            ..Default::default()
        });
        let ok = (0..100)
            .filter(|i| r.put("k", json!(i), Condition::Always).is_ok())
            .count();
        assert!((20..=22).contains(&ok), "{ok} writes passed a burst of 20");
        assert_eq!(
            r.put("k", json!(0), Condition::Always),
            Err(Error::RateLimited(10))
        );
    }
}
