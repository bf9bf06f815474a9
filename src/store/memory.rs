//! [`InMemory`]: a store in a map, for tests that need a [`Store`] and nothing else (the
//! vault's and the API's in-process tests, the conformance suite's own unit tests). Same
//! semantics as the real backends: validated keys, create-only and compare-and-swap puts,
//! sorted listings, ranged reads; nothing survives the process.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;

use super::{validate_key, Error, GetResult, ObjectMeta, PutBody, PutMode, Result, Store};

#[derive(Debug, Clone)]
struct Object {
    bytes: Bytes,
    etag: String,
    modified: u64,
}

/// Objects in memory.
#[derive(Debug, Default)]
pub struct InMemory {
    objects: Mutex<BTreeMap<String, Object>>,
    /// Makes every etag new (a put of the same bytes is still a new version).
    version: std::sync::atomic::AtomicU64,
}

impl InMemory {
    /// An empty store.
    pub fn new() -> InMemory {
        InMemory::default()
    }

    fn meta(key: &str, o: &Object) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size: o.bytes.len() as u64,
            etag: o.etag.clone(),
            modified: o.modified,
        }
    }
}

fn not_found(key: &str) -> Error {
    Error::NotFound { key: key.into() }
}

#[async_trait::async_trait]
impl Store for InMemory {
    async fn put(&self, key: &str, body: PutBody, mode: PutMode) -> Result<String> {
        validate_key(key)?;
        let bytes = match body {
            PutBody::Bytes(b) => b,
            PutBody::File(path) => tokio::fs::read(&path)
                .await
                .map_err(|source| Error::Io {
                    key: key.into(),
                    source,
                })?
                .into(),
        };
        let n = self
            .version
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let etag = format!("\"m{n}\"");
        let mut objects = self.objects.lock().expect("objects lock");
        match (&mode, objects.get(key)) {
            (PutMode::Create, Some(_)) => return Err(Error::AlreadyExists { key: key.into() }),
            (PutMode::Update(want), Some(o)) if *want != o.etag => {
                return Err(Error::Precondition { key: key.into() })
            }
            (PutMode::Update(_), None) => return Err(Error::Precondition { key: key.into() }),
            _ => {}
        }
        let modified = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        objects.insert(
            key.to_string(),
            Object {
                bytes,
                etag: etag.clone(),
                modified,
            },
        );
        Ok(etag)
    }

    async fn get(&self, key: &str) -> Result<GetResult> {
        validate_key(key)?;
        let o = self
            .objects
            .lock()
            .expect("objects lock")
            .get(key)
            .cloned()
            .ok_or_else(|| not_found(key))?;
        Ok(GetResult {
            meta: InMemory::meta(key, &o),
            body: Box::pin(std::io::Cursor::new(o.bytes)),
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        validate_key(key)?;
        let objects = self.objects.lock().expect("objects lock");
        let o = objects.get(key).ok_or_else(|| not_found(key))?;
        Ok(InMemory::meta(key, o))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let objects = self.objects.lock().expect("objects lock");
        Ok(objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| InMemory::meta(k, o))
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.objects.lock().expect("objects lock").remove(key);
        Ok(())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

#[cfg(test)]
mod tests {
    //! The conformance suite, one test per behaviour.

    use std::sync::Arc;

    use super::InMemory;
    use crate::store::conformance as c;

    macro_rules! conformance {
        ($($name:ident),+ $(,)?) => {$(
            #[tokio::test]
            async fn $name() {
                c::$name(&InMemory::new(), "t").await;
            }
        )+};
    }

    conformance!(
        missing_objects,
        round_trip,
        ranged_reads,
        create_only,
        compare_and_swap,
        overwrite,
        listing,
        large_bodies,
        invalid_keys,
        delete,
    );

    #[tokio::test]
    async fn races() {
        c::races(Arc::new(InMemory::new()), "t", 16).await;
    }
}

#[cfg(test)]
mod conditional_tests {
    use super::InMemory;
    use crate::store::{
        check_conditional_writes, Conditional, GetResult, ObjectMeta, PutBody, PutMode, Result,
        Store,
    };

    /// A store that writes every put, whatever its condition (what some S3-compatible
    /// servers do with `If-None-Match` / `If-Match`).
    #[derive(Debug)]
    struct Careless(InMemory);

    #[async_trait::async_trait]
    impl Store for Careless {
        async fn put(&self, key: &str, body: PutBody, _: PutMode) -> Result<String> {
            self.0.put(key, body, PutMode::Overwrite).await
        }
        async fn get(&self, key: &str) -> Result<GetResult> {
            self.0.get(key).await
        }
        async fn head(&self, key: &str) -> Result<ObjectMeta> {
            self.0.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
            self.0.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.0.delete(key).await
        }
        fn describe(&self) -> String {
            "careless".into()
        }
    }

    #[tokio::test]
    async fn a_store_that_ignores_conditions_is_found_out_and_the_probe_leaves_nothing() {
        let good = InMemory::new();
        assert_eq!(
            check_conditional_writes(&good).await.unwrap(),
            Conditional::Enforced
        );
        assert!(good.list("").await.unwrap().is_empty());
        let bad = Careless(InMemory::new());
        assert!(matches!(
            check_conditional_writes(&bad).await.unwrap(),
            Conditional::Ignored(_)
        ));
        assert!(bad.list("").await.unwrap().is_empty());
    }
}
