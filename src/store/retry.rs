//! [`RetryStore`]: retries transient failures of any [`Store`] with exponential backoff and
//! full jitter, within a deadline. Permanent errors and conditional-write outcomes
//! (`AlreadyExists`, `Precondition`) pass through at once.
//!
//! A retried conditional write is ambiguous: the first attempt may have landed before its
//! answer was lost, and the retry then fails its own condition. [`RetryStore::put`] reports
//! that case as [`Error::AlreadyExists`]/[`Error::Precondition`] like any other; callers that
//! care (the vault) check whether the object now holds what they wrote.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::{GetResult, ObjectMeta, PutBody, PutMode, Result, Store};

/// When to give up.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total time allowed for one operation, retries included.
    pub deadline: Duration,
    /// First backoff.
    pub base: Duration,
    /// Largest backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            deadline: Duration::from_secs(60),
            base: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// A store wrapper that retries transient errors.
#[derive(Debug, Clone)]
pub struct RetryStore {
    inner: Arc<dyn Store>,
    policy: RetryPolicy,
}

impl RetryStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, policy: RetryPolicy) -> Self {
        RetryStore { inner, policy }
    }

    async fn run<T, F, Fut>(&self, op: &'static str, key: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let start = tokio::time::Instant::now();
        let mut attempt: u32 = 0;
        loop {
            let result = f().await;
            if let Err(e) = &result {
                crate::metrics::METRICS.store_error(e.kind());
            }
            match result {
                Err(e) if e.is_transient() => {
                    let backoff = self
                        .policy
                        .base
                        .saturating_mul(1 << attempt.min(16))
                        .min(self.policy.max_delay);
                    let sleep = Duration::from_millis(
                        rand::thread_rng().gen_range(0..=backoff.as_millis() as u64),
                    );
                    if start.elapsed() + sleep >= self.policy.deadline {
                        tracing::warn!(op, key, attempts = attempt + 1, error = %e, "storage still failing at the retry deadline");
                        return Err(e);
                    }
                    tracing::info!(op, key, attempt = attempt + 1, error = %e, backoff_ms = sleep.as_millis() as u64, "transient storage error; retrying");
                    tokio::time::sleep(sleep).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[async_trait::async_trait]
impl Store for RetryStore {
    async fn put(&self, key: &str, body: PutBody, mode: PutMode) -> Result<String> {
        self.run("put", key, || {
            self.inner.put(key, body.clone(), mode.clone())
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<GetResult> {
        self.run("get", key, || self.inner.get(key)).await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        self.run("head", key, || self.inner.head(key)).await
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<bytes::Bytes> {
        self.run("get", key, || self.inner.get_range(key, start, len))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.run("list", prefix, || self.inner.list(prefix)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.run("delete", key, || self.inner.delete(key)).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn local_path(&self, key: &str) -> Option<std::path::PathBuf> {
        self.inner.local_path(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Error;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, Default)]
    struct Flaky {
        calls: AtomicUsize,
        fail_first: usize,
    }

    #[async_trait::async_trait]
    impl Store for Flaky {
        async fn put(&self, key: &str, _: PutBody, _: PutMode) -> Result<String> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_first {
                Err(Error::Unavailable {
                    op: "put",
                    key: key.into(),
                    message: "503".into(),
                })
            } else {
                Ok("etag".into())
            }
        }
        async fn get(&self, key: &str) -> Result<GetResult> {
            Err(Error::NotFound { key: key.into() })
        }
        async fn head(&self, key: &str) -> Result<ObjectMeta> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::Backend {
                op: "head",
                key: key.into(),
                message: "403".into(),
            })
        }
        async fn list(&self, _: &str) -> Result<Vec<ObjectMeta>> {
            Ok(vec![])
        }
        async fn delete(&self, _: &str) -> Result<()> {
            Ok(())
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            deadline: Duration::from_millis(500),
            base: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn retries_transient_then_succeeds() {
        let inner = Arc::new(Flaky {
            fail_first: 3,
            ..Default::default()
        });
        let s = RetryStore::new(inner.clone(), fast());
        assert_eq!(
            s.put("k", PutBody::Bytes(bytes::Bytes::new()), PutMode::Create)
                .await
                .unwrap(),
            "etag"
        );
        assert_eq!(inner.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn gives_up_at_the_deadline() {
        let inner = Arc::new(Flaky {
            fail_first: usize::MAX,
            ..Default::default()
        });
        let s = RetryStore::new(inner.clone(), fast());
        let t = std::time::Instant::now();
        assert!(s
            .put("k", PutBody::Bytes(bytes::Bytes::new()), PutMode::Create)
            .await
            .unwrap_err()
            .is_transient());
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(inner.calls.load(Ordering::SeqCst) > 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let inner = Arc::new(Flaky::default());
        let s = RetryStore::new(inner.clone(), fast());
        assert!(s.head("k").await.is_err());
        assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    }
}
