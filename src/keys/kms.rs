//! Master keys in AWS KMS (or anything that speaks its API, like LocalStack).
//!
//! A KMS master key is a name in the keyring (`[keys.kms] <name> = "<key id, ARN or alias>"`)
//! backed by a symmetric KMS key. New data keys come from `GenerateDataKey` (AES-256); an
//! existing data key (rekey, or a save whose generation number changed under contention) is
//! wrapped with `Encrypt`; `Decrypt` unwraps, naming the key ARN recorded at wrap time, so a
//! repointed alias never orphans old generations. Every call carries the encryption context
//! of [`encryption_context`] (tenant, profile, generation, object id): a wrapped key copied to
//! another profile or generation is refused by KMS itself.
//!
//! Credentials and region come from the standard AWS chain; the endpoint from
//! `keys.kms_endpoint` / `PV_KMS_ENDPOINT`, else `AWS_ENDPOINT_URL_KMS` / `AWS_ENDPOINT_URL`.
//!
//! Key material: a plaintext data key from KMS is copied into a [`DataKey`] (zeroized on
//! drop) and the decoded output buffer is zeroized; the SDK's own HTTP buffers (the base64
//! JSON of `GenerateDataKey`/`Decrypt` answers and of `Encrypt` requests) and the copy made
//! for an `Encrypt` request are not. Error messages never embed requests ([`describe`]).
//!
//! Trust: the recorded `kms_key_arn` is the key `Decrypt` must use. It may differ from the
//! configured key (a repointed alias, a rekey), but only within the configured key's own
//! partition, region and account ([`KmsKey::unwrap`]): a record written by whoever can
//! write the store cannot name a key of theirs in another account (one whose policy lets
//! the daemon's role decrypt, under a data key they chose), and `Decrypt` must answer for
//! the very key named. KMS requires the encryption context (tenant, profile, generation,
//! object), so a record cannot be moved between profiles. Scope the role's `kms:Decrypt`
//! to the keys in use.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeySpec, KeyState, KeyUsageType};
use aws_sdk_kms::Client;
use zeroize::Zeroizing;

use super::{Error, KmsFailure, WrapContext, Wrapped};
use crate::crypt::{DataKey, KEY_LEN};

/// One KMS-backed master key.
#[derive(Clone)]
pub struct KmsKey {
    id: String,
    key: String,
    client: Client,
    /// `arn:<partition>:kms:<region>:<account>:` of the configured key, once described.
    home: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

impl std::fmt::Debug for KmsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsKey")
            .field("id", &self.id)
            .field("kms_key", &self.key)
            .finish_non_exhaustive()
    }
}

/// `arn:<partition>:kms:<region>:<account>:` of a KMS key ARN (empty for anything else).
fn arn_home(arn: &str) -> String {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "kms", region, account, rest]
            if !partition.is_empty()
                && !region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && !rest.is_empty() =>
        {
            format!("arn:{partition}:kms:{region}:{account}:")
        }
        _ => String::new(),
    }
}

/// Builds a KMS client from the standard AWS chain, with `endpoint` when given.
///
/// # Errors
/// [`Error::KmsConfig`] for an endpoint that is not an http(s) URL or when no region is
/// configured.
pub async fn client(endpoint: Option<&str>) -> Result<Client, Error> {
    if let Some(ep) = endpoint {
        let ok = (ep.starts_with("http://") || ep.starts_with("https://"))
            && ep.len() > "https://".len()
            && !ep.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return Err(Error::KmsConfig(format!(
                "KMS endpoint {ep:?} is not an http(s):// URL"
            )));
        }
    }
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    if sdk.region().is_none() {
        return Err(Error::KmsConfig(
            "no AWS region configured for KMS: set AWS_REGION (or a profile with a region)".into(),
        ));
    }
    let mut b = aws_sdk_kms::config::Builder::from(&sdk).timeout_config(
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(30))
            .build(),
    );
    if let Some(ep) = endpoint {
        b = b.endpoint_url(ep);
    }
    Ok(Client::from_conf(b.build()))
}

/// The encryption context every KMS call of a wrap carries. Part of record format 2:
/// DO NOT CHANGE without a new record format.
pub fn encryption_context(ctx: &WrapContext<'_>) -> HashMap<String, String> {
    HashMap::from([
        ("profile-vault:tenant".to_string(), ctx.tenant.to_string()),
        ("profile-vault:profile".to_string(), ctx.profile.to_string()),
        (
            "profile-vault:generation".to_string(),
            ctx.generation.to_string(),
        ),
        (
            "profile-vault:object".to_string(),
            ctx.object_id.to_string(),
        ),
    ])
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    id: &str,
    op: &'static str,
    err: SdkError<E>,
) -> Error {
    let message = describe(&err);
    let kind = match &err {
        SdkError::ServiceError(_) => match err.code().unwrap_or_default() {
            "InvalidCiphertextException" | "IncorrectKeyException" => KmsFailure::Rejected,
            "ThrottlingException"
            | "KMSInternalException"
            | "DependencyTimeoutException"
            | "KeyUnavailableException"
            | "LimitExceededException" => KmsFailure::Unavailable,
            _ => KmsFailure::Refused,
        },
        SdkError::ResponseError(_) | SdkError::TimeoutError(_) => KmsFailure::Unavailable,
        // Connection failures and timeouts mean KMS could not be reached; the rest of the
        // dispatch failures (no credentials, an endpoint that cannot be applied) are
        // configuration errors that retrying will not fix.
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => KmsFailure::Unavailable,
        _ => KmsFailure::Refused,
    };
    Error::Kms {
        key: id.into(),
        op,
        kind,
        message,
    }
}

/// The error's chain of messages, without `Debug` output. A message that embeds the HTTP
/// request (the SDK does so when an endpoint cannot be applied) is withheld: the body of an
/// `Encrypt` request holds the plaintext data key.
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if s.contains("SdkBody") || s.contains("Plaintext") || s.contains("Request {") {
            parts.push("<request details withheld>".to_string());
            break;
        }
        if parts.last() != Some(&s) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// Counts a finished request in the metrics and maps its error.
fn counted<T, E: ProvideErrorMetadata + std::error::Error + 'static>(
    id: &str,
    op: &'static str,
    r: Result<T, SdkError<E>>,
) -> Result<T, Error> {
    let r = r.map_err(|e| classify(id, op, e));
    let outcome = match &r {
        Ok(_) => "ok",
        Err(Error::Kms { kind, .. }) => match kind {
            KmsFailure::Unavailable => "unavailable",
            KmsFailure::Rejected => "rejected",
            KmsFailure::Refused => "refused",
        },
        Err(_) => "refused",
    };
    crate::metrics::METRICS.kms_request(op, outcome);
    r
}

fn data_key(id: &str, op: &'static str, blob: Option<Blob>) -> Result<DataKey, Error> {
    let raw = Zeroizing::new(blob.map(Blob::into_inner).unwrap_or_default());
    if raw.len() != KEY_LEN {
        return Err(Error::Kms {
            key: id.into(),
            op,
            kind: KmsFailure::Rejected,
            message: format!(
                "KMS returned a {}-byte data key, expected {KEY_LEN}",
                raw.len()
            ),
        });
    }
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    bytes.copy_from_slice(&raw);
    Ok(DataKey::from_bytes(*bytes))
}

impl KmsKey {
    /// A keyring entry `id` backed by the KMS key `key` (id, ARN, alias name or alias ARN).
    pub fn new(id: &str, key: &str, client: Client) -> Self {
        KmsKey {
            id: id.into(),
            key: key.into(),
            client,
            home: std::sync::Arc::default(),
        }
    }

    /// The keyring id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The KMS key as configured.
    pub fn kms_key(&self) -> &str {
        &self.key
    }

    /// A fresh AES-256 data key from `GenerateDataKey`, with its wrapped form.
    ///
    /// # Errors
    /// [`Error::Kms`].
    pub async fn generate(&self, ctx: &WrapContext<'_>) -> Result<(DataKey, Wrapped), Error> {
        const OP: &str = "GenerateDataKey";
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(encryption_context(ctx)))
            .send()
            .await;
        let mut out = counted(&self.id, OP, out)?;
        let dek = data_key(&self.id, OP, out.plaintext.take())?;
        Ok((dek, self.wrapped(OP, out.ciphertext_blob, out.key_id)?))
    }

    /// Wraps an existing data key with `Encrypt`.
    ///
    /// # Errors
    /// [`Error::Kms`].
    pub async fn wrap(&self, dek: &DataKey, ctx: &WrapContext<'_>) -> Result<Wrapped, Error> {
        const OP: &str = "Encrypt";
        let out = self
            .client
            .encrypt()
            .key_id(&self.key)
            // The SDK takes ownership of this copy and does not wipe it (see module docs).
            .plaintext(Blob::new(dek.as_bytes().to_vec()))
            .set_encryption_context(Some(encryption_context(ctx)))
            .send()
            .await;
        let out = counted(&self.id, OP, out)?;
        self.wrapped(OP, out.ciphertext_blob, out.key_id)
    }

    fn wrapped(
        &self,
        op: &'static str,
        blob: Option<Blob>,
        arn: Option<String>,
    ) -> Result<Wrapped, Error> {
        match (blob, arn) {
            (Some(b), Some(arn)) if !b.as_ref().is_empty() => Ok(Wrapped {
                key_id: self.id.clone(),
                blob: b.into_inner(),
                kms_key_arn: Some(arn),
            }),
            _ => Err(Error::Kms {
                key: self.id.clone(),
                op,
                kind: KmsFailure::Refused,
                message: "KMS answered without a ciphertext or key ARN".into(),
            }),
        }
    }

    /// Unwraps with `Decrypt`, requiring the KMS key `arn` (recorded at wrap time).
    ///
    /// # Errors
    /// [`Error::Kms`]; [`KmsFailure::Rejected`] when the blob, its context or its key differ.
    pub async fn unwrap(
        &self,
        blob: &[u8],
        arn: &str,
        ctx: &WrapContext<'_>,
    ) -> Result<DataKey, Error> {
        const OP: &str = "Decrypt";
        let rejected = |message: String| Error::Kms {
            key: self.id.clone(),
            op: OP,
            kind: KmsFailure::Rejected,
            message,
        };
        let foreign = || {
            rejected(format!(
                "the record names KMS key {arn}, outside the account and region of {}",
                self.key
            ))
        };
        // Where the configured key lives, learnt once: a record naming a key elsewhere is
        // refused before KMS is asked. When it cannot be learnt now (KMS unreachable),
        // Decrypt goes first (and fails as it would) and the check follows it.
        let home = match self.home.get() {
            Some(h) => Some(h),
            None => self
                .home
                .get_or_try_init(|| async { self.describe().await.map(|a| arn_home(&a)) })
                .await
                .ok(),
        };
        if let Some(home) = home {
            if home.is_empty() || arn_home(arn) != *home {
                return Err(foreign());
            }
        }
        let out = self
            .client
            .decrypt()
            .key_id(arn)
            .ciphertext_blob(Blob::new(blob.to_vec()))
            .set_encryption_context(Some(encryption_context(ctx)))
            .send()
            .await;
        let mut out = counted(&self.id, OP, out)?;
        if out.key_id() != Some(arn) {
            return Err(rejected(format!(
                "Decrypt answered for key {:?}, not {arn}",
                out.key_id()
            )));
        }
        // The data key is used only if the record's key lives where the configured one does.
        let home = self
            .home
            .get_or_try_init(|| async { self.describe().await.map(|a| arn_home(&a)) })
            .await?;
        if home.is_empty() || arn_home(arn) != *home {
            return Err(foreign());
        }
        data_key(&self.id, OP, out.plaintext.take())
    }

    /// Checks that the key exists, is enabled and is a symmetric encryption key; returns its ARN.
    ///
    /// # Errors
    /// [`Error::Kms`].
    pub async fn describe(&self) -> Result<String, Error> {
        const OP: &str = "DescribeKey";
        let out = self.client.describe_key().key_id(&self.key).send().await;
        let out = counted(&self.id, OP, out)?;
        let refused = |message: String| Error::Kms {
            key: self.id.clone(),
            op: OP,
            kind: KmsFailure::Refused,
            message,
        };
        let meta = out
            .key_metadata()
            .ok_or_else(|| refused("no key metadata in the answer".into()))?;
        if !meta.enabled() || meta.key_state() != Some(&KeyState::Enabled) {
            return Err(refused(format!(
                "KMS key {} is not enabled (state {:?})",
                self.key,
                meta.key_state()
            )));
        }
        if meta.key_usage() != Some(&KeyUsageType::EncryptDecrypt)
            || meta.key_spec() != Some(&KeySpec::SymmetricDefault)
        {
            return Err(refused(format!(
                "KMS key {} is not a symmetric ENCRYPT_DECRYPT key",
                self.key
            )));
        }
        Ok(meta.arn().unwrap_or_default().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(String, Option<Box<Layer>>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn messages_that_embed_the_request_are_withheld() {
        let secret = "c2VjcmV0LWRhdGEta2V5LWJ5dGVzLTAxMjM0NTY3ODk=";
        let err = Layer(
            "dispatch failure".into(),
            Some(Box::new(Layer(
                format!("other: failed to apply endpoint `x` to request `Request {{ body: SdkBody {{ inner: Once(Some(b\"{{\\\"Plaintext\\\":\\\"{secret}\\\"}}\")) }} }}`"),
                None,
            ))),
        );
        let msg = describe(&err);
        assert_eq!(msg, "dispatch failure: <request details withheld>");
        assert!(!msg.contains(secret));
        let io = Layer(
            "dispatch failure".into(),
            Some(Box::new(Layer("io error: connection refused".into(), None))),
        );
        assert_eq!(
            describe(&io),
            "dispatch failure: io error: connection refused"
        );
    }

    #[test]
    fn recorded_keys_are_held_to_the_configured_key_s_account_and_region() {
        let home = arn_home("arn:aws:kms:us-east-1:000000000000:key/1111");
        assert_eq!(home, "arn:aws:kms:us-east-1:000000000000:");
        assert_eq!(arn_home("arn:aws:kms:us-east-1:000000000000:alias/x"), home);
        for other in [
            "arn:aws:kms:us-east-1:111111111111:key/1111",
            "arn:aws:kms:eu-west-1:000000000000:key/1111",
            "arn:aws-cn:kms:us-east-1:000000000000:key/1111",
        ] {
            assert_ne!(arn_home(other), home, "{other}");
        }
        for junk in [
            "",
            "alias/x",
            "arn:aws:s3:us-east-1:000000000000:key/1",
            "arn:aws:kms:us-east-1:0:key/1",
            "arn:aws:kms:us-east-1:000000000000:",
        ] {
            assert_eq!(arn_home(junk), "", "{junk}");
        }
    }

    #[test]
    fn context_names_tenant_profile_generation_and_object() {
        let ctx = WrapContext {
            tenant: "t",
            profile: "p",
            generation: 7,
            object_id: "o",
        };
        let c = encryption_context(&ctx);
        assert_eq!(c.len(), 4);
        assert_eq!(c["profile-vault:generation"], "7");
        assert_eq!(c["profile-vault:tenant"], "t");
    }

    #[tokio::test]
    async fn a_malformed_endpoint_is_refused_before_any_request() {
        for ep in ["not a url", "ftp://x", "http://a b"] {
            match client(Some(ep)).await {
                Err(Error::KmsConfig(m)) => assert!(m.contains("endpoint"), "{m}"),
                other => panic!("{ep}: {:?}", other.map(|_| ())),
            }
        }
    }
}
