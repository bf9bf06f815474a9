//! The S3 store (aws-sdk-s3): AWS S3 and compatible servers (LocalStack, MinIO, s3s).
//!
//! - Credentials, region and endpoint come from the standard AWS chain (`AWS_*` env,
//!   profiles, SSO, IMDS); `AWS_ENDPOINT_URL` points at a local server and
//!   `PV_S3_PATH_STYLE=true` (or `path_style` in the config) forces path-style addressing.
//! - Bodies up to one part are sent with one `PutObject`; larger files go as a multipart
//!   upload read part by part from the file with at most `concurrency` parts in flight
//!   (memory: `part_size × concurrency`), aborted on any failure.
//! - `Create` sends `If-None-Match: *` and `Update(etag)` sends `If-Match` (on
//!   `CompleteMultipartUpload` for multipart), so conditional writes hold on the server.
//! - Checksums are computed only when required, and completed parts list ETag + part
//!   number only (the combination every server accepts, see the multipart-checksum trap).

use std::sync::Arc;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{
    validate_key, Error, GetResult, ObjectMeta, PutBody, PutMode, Result, Store, StoreOptions,
};

/// A [`Store`] in an S3 bucket, under an optional key prefix.
#[derive(Clone)]
pub struct AmazonS3 {
    client: Client,
    bucket: String,
    prefix: String,
    part_size: u64,
    concurrency: usize,
}

impl std::fmt::Debug for AmazonS3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmazonS3")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
enum Op {
    Put(bool),
    Other,
}

fn classify<E: ProvideErrorMetadata + std::fmt::Debug>(
    op: &'static str,
    key: &str,
    mode: Op,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Error {
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_string);
    let key = key.to_string();
    let message = match (&code, err.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.clone(),
        _ => match &err {
            SdkError::DispatchFailure(d) => {
                format!("dispatch failure: {:?}", d.as_connector_error())
            }
            SdkError::TimeoutError(_) => "timeout".into(),
            other => format!("{other:?}").chars().take(300).collect(),
        },
    };
    match (status, code.as_deref(), mode) {
        (_, Some("NoSuchBucket"), _) => Error::Backend {
            op,
            key,
            message: format!("{message} (create the bucket, or check the store URL)"),
        },
        (Some(412), _, Op::Put(true)) => Error::AlreadyExists { key },
        (Some(409), Some("ConditionalRequestConflict"), Op::Put(true)) => {
            Error::AlreadyExists { key }
        }
        (Some(412 | 409), _, Op::Put(false)) => Error::Precondition { key },
        (Some(404), _, Op::Put(false)) => Error::Precondition { key },
        (Some(404), _, _) | (_, Some("NoSuchKey" | "NotFound"), _) => Error::NotFound { key },
        (Some(s), _, _) if s >= 500 => Error::Unavailable { op, key, message },
        (Some(429), _, _) | (_, Some("SlowDown" | "RequestTimeout" | "InternalError"), _) => {
            Error::Unavailable { op, key, message }
        }
        (None, _, _) => Error::Unavailable { op, key, message },
        _ => Error::Backend { op, key, message },
    }
}

fn unix(t: Option<&aws_sdk_s3::primitives::DateTime>) -> u64 {
    t.map(|d| d.secs().max(0) as u64).unwrap_or(0)
}

impl AmazonS3 {
    /// Builds a client from the standard AWS environment.
    ///
    /// # Errors
    /// An empty bucket name.
    pub async fn from_env(bucket: &str, prefix: &str, opts: &StoreOptions) -> Result<Self> {
        if bucket.is_empty() {
            return Err(Error::InvalidKey {
                key: "s3://".into(),
                reason: "bucket name missing",
            });
        }
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        // `PV_S3_PATH_STYLE` reaches here through the config (`s3.path_style`).
        let path_style = opts.path_style;
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(path_style)
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            )
            .response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            )
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(10))
                    .operation_attempt_timeout(std::time::Duration::from_secs(
                        opts.attempt_timeout.max(1),
                    ))
                    .build(),
            )
            .build();
        Ok(Self::with_client(
            Client::from_conf(conf),
            bucket,
            prefix,
            opts,
        ))
    }

    /// Wraps an existing client.
    pub fn with_client(client: Client, bucket: &str, prefix: &str, opts: &StoreOptions) -> Self {
        let prefix = prefix.trim_matches('/');
        AmazonS3 {
            client,
            bucket: bucket.into(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            part_size: opts.part_size.max(5 << 20),
            concurrency: opts.concurrency.clamp(1, 16),
        }
    }

    fn full(&self, key: &str) -> Result<String> {
        validate_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    async fn put_small(
        &self,
        key: &str,
        full: &str,
        data: Bytes,
        mode: &PutMode,
    ) -> Result<String> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .body(ByteStream::from(data));
        let create = match mode {
            PutMode::Overwrite => None,
            PutMode::Create => {
                req = req.if_none_match("*");
                Some(true)
            }
            PutMode::Update(tag) => {
                req = req.if_match(tag);
                Some(false)
            }
        };
        let out = req
            .send()
            .await
            .map_err(|e| classify("put", key, create.map_or(Op::Other, Op::Put), e))?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }

    async fn put_multipart(
        &self,
        key: &str,
        full: &str,
        path: &std::path::Path,
        size: u64,
        mode: &PutMode,
    ) -> Result<String> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| classify("create-multipart", key, Op::Other, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let res = self
            .upload_parts_and_complete(key, full, path, size, mode, &upload_id)
            .await;
        if res.is_err() {
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(full)
                .upload_id(&upload_id)
                .send()
                .await
            {
                tracing::warn!(key, error = %classify("abort-multipart", key, Op::Other, e), "could not abort multipart upload; the bucket lifecycle rule will remove it");
            }
        }
        res
    }

    async fn upload_parts_and_complete(
        &self,
        key: &str,
        full: &str,
        path: &std::path::Path,
        size: u64,
        mode: &PutMode,
        upload_id: &str,
    ) -> Result<String> {
        let parts = size.div_ceil(self.part_size);
        let sem = Arc::new(tokio::sync::Semaphore::new(self.concurrency));
        let mut set = tokio::task::JoinSet::new();
        let mut completed = Vec::with_capacity(parts as usize);
        let joined = |r: Result<Result<CompletedPart>, tokio::task::JoinError>| {
            r.map_err(|e| Error::Io {
                key: key.into(),
                source: std::io::Error::other(e),
            })?
        };
        for i in 0..parts {
            let permit = sem
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore never closed");
            let offset = i * self.part_size;
            let len = self.part_size.min(size - offset) as usize;
            let path = path.to_path_buf();
            let client = self.client.clone();
            let (bucket, full, upload_id, key) = (
                self.bucket.clone(),
                full.to_string(),
                upload_id.to_string(),
                key.to_string(),
            );
            set.spawn(async move {
                let _permit = permit;
                let mut f = tokio::fs::File::open(&path).await.map_err(|e| Error::Io {
                    key: key.clone(),
                    source: e,
                })?;
                f.seek(std::io::SeekFrom::Start(offset))
                    .await
                    .map_err(|e| Error::Io {
                        key: key.clone(),
                        source: e,
                    })?;
                let mut buf = vec![0u8; len];
                f.read_exact(&mut buf).await.map_err(|e| Error::Io {
                    key: key.clone(),
                    source: e,
                })?;
                let n = i32::try_from(i + 1).expect("at most 10000 parts");
                let out = client
                    .upload_part()
                    .bucket(bucket)
                    .key(full)
                    .upload_id(upload_id)
                    .part_number(n)
                    .body(ByteStream::from(buf))
                    .send()
                    .await
                    .map_err(|e| classify("upload-part", &key, Op::Other, e))?;
                Ok::<_, Error>(
                    CompletedPart::builder()
                        .part_number(n)
                        .e_tag(out.e_tag().unwrap_or_default())
                        .build(),
                )
            });
            // Surface failures early instead of queueing every part.
            let mut failed = None;
            while let Some(done) = set.try_join_next() {
                match joined(done) {
                    Ok(p) => completed.push(p),
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            if let Some(e) = failed {
                // Parts under way end first: one that landed after the upload was aborted
                // would keep its storage.
                while set.join_next().await.is_some() {}
                return Err(e);
            }
        }
        let mut failed = None;
        while let Some(done) = set.join_next().await {
            match joined(done) {
                Ok(p) => completed.push(p),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        completed.sort_by_key(|p| p.part_number());
        if completed.len() as u64 != parts {
            return Err(Error::Backend {
                op: "upload-part",
                key: key.into(),
                message: "a part result was lost".into(),
            });
        }
        let mut req = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            );
        let create = match mode {
            PutMode::Overwrite => None,
            PutMode::Create => {
                req = req.if_none_match("*");
                Some(true)
            }
            PutMode::Update(tag) => {
                req = req.if_match(tag);
                Some(false)
            }
        };
        let out = req.send().await.map_err(|e| {
            classify(
                "complete-multipart",
                key,
                create.map_or(Op::Other, Op::Put),
                e,
            )
        })?;
        Ok(out.e_tag().unwrap_or_default().to_string())
    }
}

#[async_trait::async_trait]
impl Store for AmazonS3 {
    async fn put(&self, key: &str, body: PutBody, mode: PutMode) -> Result<String> {
        let full = self.full(key)?;
        match body {
            PutBody::Bytes(b) => self.put_small(key, &full, b, &mode).await,
            PutBody::File(path) => {
                let size = tokio::fs::metadata(&path)
                    .await
                    .map_err(|e| Error::Io {
                        key: key.into(),
                        source: e,
                    })?
                    .len();
                if size <= self.part_size {
                    let data = tokio::fs::read(&path).await.map_err(|e| Error::Io {
                        key: key.into(),
                        source: e,
                    })?;
                    self.put_small(key, &full, data.into(), &mode).await
                } else {
                    self.put_multipart(key, &full, &path, size, &mode).await
                }
            }
        }
    }

    async fn get(&self, key: &str) -> Result<GetResult> {
        let full = self.full(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| classify("get", key, Op::Other, e))?;
        let meta = ObjectMeta {
            key: key.into(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().unwrap_or_default().to_string(),
            modified: unix(out.last_modified()),
        };
        Ok(GetResult {
            meta,
            body: Box::pin(out.body.into_async_read()),
        })
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Bytes> {
        let full = self.full(key)?;
        if len == 0 {
            let m = self.head(key).await?;
            if start > m.size {
                return Err(Error::OutOfRange {
                    key: key.into(),
                    start,
                    len,
                    size: m.size,
                });
            }
            return Ok(Bytes::new());
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .range(format!("bytes={start}-{}", start + len - 1))
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(416) => {
                let size = self.head(key).await.map(|m| m.size).unwrap_or(0);
                return Err(Error::OutOfRange {
                    key: key.into(),
                    start,
                    len,
                    size,
                });
            }
            Err(e) => return Err(classify("get", key, Op::Other, e)),
        };
        // A range that runs past the end is answered short (206 with what there is).
        let got = out.content_length().unwrap_or(0).max(0) as u64;
        if got != len {
            let size = out
                .content_range()
                .and_then(|r| r.rsplit('/').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(start + got);
            return Err(Error::OutOfRange {
                key: key.into(),
                start,
                len,
                size,
            });
        }
        let mut v = vec![0u8; len as usize];
        out.body
            .into_async_read()
            .read_exact(&mut v)
            .await
            .map_err(|e| Error::Unavailable {
                op: "get",
                key: key.into(),
                message: e.to_string(),
            })?;
        Ok(v.into())
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let full = self.full(key)?;
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| classify("head", key, Op::Other, e))?;
        Ok(ObjectMeta {
            key: key.into(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: out.e_tag().unwrap_or_default().to_string(),
            modified: unix(out.last_modified()),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let full = format!("{}{prefix}", self.prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| classify("list", prefix, Op::Other, e))?;
            for o in resp.contents() {
                let Some(k) = o.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: k.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: o.e_tag().unwrap_or_default().to_string(),
                    modified: unix(o.last_modified()),
                });
            }
            match resp.next_continuation_token() {
                Some(t) if resp.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.full(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match classify("delete", key, Op::Other, e) {
                Error::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix.trim_end_matches('/'))
    }
}
