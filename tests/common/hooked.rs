//! A store that passes every call to another, with a hook around each write and delete: what
//! tests use to make a race or a lost answer happen at one chosen write.

use std::sync::Arc;

use profile_vault::store::{GetResult, ObjectMeta, Result};
use profile_vault::{PutBody, PutMode, Store};

/// What happens around each write and delete of a [`Hooked`] store.
#[async_trait::async_trait]
pub trait PutHook: Send + Sync + std::fmt::Debug {
    /// Before the write of `key` reaches `inner`.
    async fn before(&self, _key: &str, _inner: &dyn Store) -> Result<()> {
        Ok(())
    }
    /// After it landed with `etag`: what the writer is answered.
    fn after(&self, _key: &str, etag: String) -> Result<String> {
        Ok(etag)
    }
    /// Before the delete of `key` reaches `inner`.
    async fn before_delete(&self, _key: &str, _inner: &dyn Store) -> Result<()> {
        Ok(())
    }
}

/// `inner`, with `hook` around each write and delete.
#[derive(Debug)]
pub struct Hooked<H> {
    pub inner: Arc<dyn Store>,
    pub hook: H,
}

#[async_trait::async_trait]
impl<H: PutHook> Store for Hooked<H> {
    async fn put(&self, key: &str, body: PutBody, mode: PutMode) -> Result<String> {
        self.hook.before(key, self.inner.as_ref()).await?;
        let etag = self.inner.put(key, body, mode).await?;
        self.hook.after(key, etag)
    }
    async fn get(&self, key: &str) -> Result<GetResult> {
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.hook.before_delete(key, self.inner.as_ref()).await?;
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        format!("{:?} over {}", self.hook, self.inner.describe())
    }
}

/// While armed (from the start), every delete of a key under `prefix` fails: a store that
/// refuses them (a whole profile's, or one object's).
#[derive(Debug)]
pub struct RefuseDeletes {
    pub prefix: String,
    pub armed: std::sync::atomic::AtomicBool,
}

impl RefuseDeletes {
    pub fn of(prefix: &str) -> Self {
        RefuseDeletes {
            prefix: prefix.to_string(),
            armed: true.into(),
        }
    }
}

#[async_trait::async_trait]
impl PutHook for RefuseDeletes {
    async fn before_delete(&self, key: &str, _: &dyn Store) -> Result<()> {
        if key.starts_with(&self.prefix) && self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(profile_vault::store::Error::Unavailable {
                op: "delete",
                key: key.into(),
                message: "refused by the test".into(),
            });
        }
        Ok(())
    }
}
