//! The conformance suite every [`Store`] backend must pass.
//!
//! One public function per behaviour (each under a prefix of its own, so each runs alone),
//! and [`run`] for all of them. Run one test per behaviour on the in-memory store
//! ([`super::memory`]), by the filesystem backend's unit tests and, against real
//! S3-compatible servers (LocalStack, s3s-fs), by the integration tests. Each panics on the
//! first deviation.

use std::sync::Arc;

use bytes::Bytes;

use super::{Error, PutBody, PutMode, Store};

/// A put of `bytes` at `key`.
async fn put(
    store: &dyn Store,
    key: &str,
    bytes: &'static [u8],
    mode: PutMode,
) -> Result<String, Error> {
    store
        .put(key, PutBody::Bytes(Bytes::from_static(bytes)), mode)
        .await
}

/// Runs every check under `prefix` (which should be unique per run), each under a prefix
/// of its own.
pub async fn run(store: &dyn Store, prefix: &str) {
    missing_objects(store, &format!("{prefix}/missing_objects")).await;
    round_trip(store, &format!("{prefix}/round_trip")).await;
    ranged_reads(store, &format!("{prefix}/ranged_reads")).await;
    create_only(store, &format!("{prefix}/create_only")).await;
    compare_and_swap(store, &format!("{prefix}/compare_and_swap")).await;
    overwrite(store, &format!("{prefix}/overwrite")).await;
    listing(store, &format!("{prefix}/listing")).await;
    large_bodies(store, &format!("{prefix}/large_bodies")).await;
    invalid_keys(store, &format!("{prefix}/invalid_keys")).await;
    delete(store, &format!("{prefix}/delete")).await;
}

/// Missing objects: `get`, `head` and a ranged read are [`Error::NotFound`]; `delete` succeeds.
pub async fn missing_objects(store: &dyn Store, prefix: &str) {
    let k = |s: &str| format!("{prefix}/{s}");
    assert!(
        matches!(store.get(&k("missing")).await, Err(Error::NotFound { .. })),
        "get missing"
    );
    assert!(
        matches!(store.head(&k("missing")).await, Err(Error::NotFound { .. })),
        "head missing"
    );
    store
        .delete(&k("missing"))
        .await
        .expect("delete of a missing key succeeds");
}

/// A put is read back whole, with the size and etag `head` reports.
pub async fn round_trip(store: &dyn Store, prefix: &str) {
    let k = |s: &str| format!("{prefix}/{s}");
    let e1 = store
        .put(
            &k("a/one"),
            PutBody::Bytes(Bytes::from_static(b"hello")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let got = store.get(&k("a/one")).await.unwrap();
    assert_eq!(got.meta.size, 5);
    assert_eq!(got.bytes().await.unwrap(), Bytes::from_static(b"hello"));
    let h = store.head(&k("a/one")).await.unwrap();
    assert_eq!(h.size, 5);
    assert_eq!(h.etag, e1, "put returns the etag head reports");
}

/// Ranged reads: exact bytes, an empty range, past the end ([`Error::OutOfRange`]).
pub async fn ranged_reads(store: &dyn Store, prefix: &str) {
    let k = |s: &str| format!("{prefix}/{s}");
    put(store, &k("a/one"), b"hello", PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(
        store.get_range(&k("a/one"), 1, 3).await.unwrap(),
        Bytes::from_static(b"ell")
    );
    assert_eq!(
        store.get_range(&k("a/one"), 0, 5).await.unwrap(),
        Bytes::from_static(b"hello")
    );
    assert!(store.get_range(&k("a/one"), 5, 0).await.unwrap().is_empty());
    assert!(
        matches!(
            store.get_range(&k("a/one"), 3, 3).await,
            Err(Error::OutOfRange { size: 5, .. })
        ),
        "range past the end"
    );
    assert!(
        matches!(
            store.get_range(&k("missing"), 0, 1).await,
            Err(Error::NotFound { .. })
        ),
        "range of a missing object"
    );
}

/// [`PutMode::Create`] of an existing key is [`Error::AlreadyExists`] and changes nothing.
pub async fn create_only(store: &dyn Store, prefix: &str) {
    let k = |s: &str| format!("{prefix}/{s}");
    put(store, &k("a/one"), b"hello", PutMode::Overwrite)
        .await
        .unwrap();
    assert!(matches!(
        store
            .put(
                &k("a/one"),
                PutBody::Bytes(Bytes::from_static(b"x")),
                PutMode::Create
            )
            .await,
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(
        store.get(&k("a/one")).await.unwrap().bytes().await.unwrap(),
        Bytes::from_static(b"hello")
    );
    store
        .put(
            &k("a/two"),
            PutBody::Bytes(Bytes::from_static(b"2")),
            PutMode::Create,
        )
        .await
        .unwrap();
}

/// [`PutMode::Update`] replaces only the version it names.
pub async fn compare_and_swap(store: &dyn Store, prefix: &str) {
    let k = |s: &str| format!("{prefix}/{s}");
    let e1 = put(store, &k("a/one"), b"hello", PutMode::Overwrite)
        .await
        .unwrap();
    let e2 = store
        .put(
            &k("a/one"),
            PutBody::Bytes(Bytes::from_static(b"v2")),
            PutMode::Update(e1.clone()),
        )
        .await
        .unwrap();
    assert_ne!(e1, e2);
    assert!(matches!(
        store
            .put(
                &k("a/one"),
                PutBody::Bytes(Bytes::from_static(b"v3")),
                PutMode::Update(e1.clone())
            )
            .await,
        Err(Error::Precondition { .. })
    ));
    assert_eq!(
        store.get(&k("a/one")).await.unwrap().bytes().await.unwrap(),
        Bytes::from_static(b"v2")
    );
    assert!(matches!(
        store
            .put(
                &k("a/none"),
                PutBody::Bytes(Bytes::from_static(b"v")),
                PutMode::Update(e1)
            )
            .await,
        Err(Error::Precondition { .. } | Error::NotFound { .. })
    ));
    assert!(matches!(
        store.head(&k("a/none")).await,
        Err(Error::NotFound { .. })
    ));
}

/// [`PutMode::Overwrite`] replaces.
pub async fn overwrite(store: &dyn Store, prefix: &str) {
    let k = |s: &str| format!("{prefix}/{s}");
    put(store, &k("a/two"), b"2", PutMode::Create)
        .await
        .unwrap();
    store
        .put(
            &k("a/two"),
            PutBody::Bytes(Bytes::from_static(b"22")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    assert_eq!(
        store.get(&k("a/two")).await.unwrap().bytes().await.unwrap(),
        Bytes::from_static(b"22")
    );
}

/// Listings: every key under a prefix, sorted, with sizes; partial prefixes.
pub async fn listing(store: &dyn Store, prefix: &str) {
    let k = |s: &str| format!("{prefix}/{s}");
    put(store, &k("a/one"), b"v2", PutMode::Overwrite)
        .await
        .unwrap();
    put(store, &k("a/two"), b"22", PutMode::Overwrite)
        .await
        .unwrap();
    store
        .put(
            &k("b/three"),
            PutBody::Bytes(Bytes::from_static(b"333")),
            PutMode::Overwrite,
        )
        .await
        .unwrap();
    let all = store.list(&format!("{prefix}/")).await.unwrap();
    let keys: Vec<_> = all.iter().map(|m| m.key.clone()).collect();
    assert_eq!(keys, vec![k("a/one"), k("a/two"), k("b/three")]);
    assert_eq!(all[2].size, 3);
    let a = store.list(&k("a/")).await.unwrap();
    assert_eq!(a.len(), 2);
    let partial = store.list(&k("a/t")).await.unwrap();
    assert_eq!(partial.len(), 1);
    assert!(store.list(&k("zzz/")).await.unwrap().is_empty());
}

/// Bodies from a file, larger than an S3 part (multipart there): round trip, create-only, compare-and-swap.
pub async fn large_bodies(store: &dyn Store, prefix: &str) {
    let k = |s: &str| format!("{prefix}/{s}");
    let dir = tempfile_dir();
    let path = dir.join("big");
    let data: Vec<u8> = (0..(21 * 1024 * 1024 + 123))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    let eb = store
        .put(&k("big"), PutBody::File(path.clone()), PutMode::Create)
        .await
        .unwrap();
    let got = store.get(&k("big")).await.unwrap();
    assert_eq!(got.meta.size, data.len() as u64);
    assert!(got.bytes().await.unwrap() == data, "large body round trip");
    assert!(matches!(
        store
            .put(&k("big"), PutBody::File(path.clone()), PutMode::Create)
            .await,
        Err(Error::AlreadyExists { .. })
    ));
    // S3 etags follow content: the update must change it for the stale etag to be stale.
    let mut changed = data.clone();
    changed[0] ^= 0xff;
    let path = dir.join("big2");
    std::fs::write(&path, &changed).unwrap();
    store
        .put(
            &k("big"),
            PutBody::File(path.clone()),
            PutMode::Update(eb.clone()),
        )
        .await
        .unwrap();
    let stale = store
        .put(&k("big"), PutBody::File(path.clone()), PutMode::Update(eb))
        .await;
    assert!(
        matches!(stale, Err(Error::Precondition { .. })),
        "multipart update with a stale etag: {stale:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Invalid keys never reach the backend.
pub async fn invalid_keys(store: &dyn Store, _prefix: &str) {
    for bad in ["", "/abs", "a/../b", "a//b", "a/./b", "a\\b"] {
        assert!(
            matches!(store.head(bad).await, Err(Error::InvalidKey { .. })),
            "key {bad:?}"
        );
    }
}

/// Delete: the object is gone, and so is everything listed.
pub async fn delete(store: &dyn Store, prefix: &str) {
    let k = |s: &str| format!("{prefix}/{s}");
    put(store, &k("a/one"), b"v2", PutMode::Overwrite)
        .await
        .unwrap();
    put(store, &k("b/two"), b"2", PutMode::Overwrite)
        .await
        .unwrap();
    store.delete(&k("a/one")).await.unwrap();
    assert!(matches!(
        store.get(&k("a/one")).await,
        Err(Error::NotFound { .. })
    ));
    for m in store.list(&format!("{prefix}/")).await.unwrap() {
        store.delete(&m.key).await.unwrap();
    }
    assert!(store.list(&format!("{prefix}/")).await.unwrap().is_empty());
}

/// Races: `n` concurrent create-only puts and `n` concurrent updates from one etag each
/// have exactly one winner.
pub async fn races(store: Arc<dyn Store>, prefix: &str, n: usize) {
    let key = format!("{prefix}/race");
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = store.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            s.put(
                &key,
                PutBody::Bytes(Bytes::from(format!("c{i}"))),
                PutMode::Create,
            )
            .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(Error::AlreadyExists { .. } | Error::Precondition { .. }) => {}
            Err(e) => panic!("unexpected create error: {e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one create-only put wins");
    let etag = store.head(&key).await.unwrap().etag;
    let mut tasks = Vec::new();
    for i in 0..n {
        let s = store.clone();
        let key = key.clone();
        let etag = etag.clone();
        tasks.push(tokio::spawn(async move {
            s.put(
                &key,
                PutBody::Bytes(Bytes::from(format!("u{i}"))),
                PutMode::Update(etag),
            )
            .await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(Error::Precondition { .. }) => {}
            Err(e) => panic!("unexpected update error: {e}"),
        }
    }
    assert_eq!(wins, 1, "exactly one compare-and-swap wins");
    store.delete(&key).await.unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("pv-conformance-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
