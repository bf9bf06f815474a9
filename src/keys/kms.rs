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
//! Plaintext data keys from KMS are copied into a [`DataKey`] and the SDK's buffer zeroized.

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
}

impl std::fmt::Debug for KmsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsKey")
            .field("id", &self.id)
            .field("kms_key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Builds a KMS client from the standard AWS chain, with `endpoint` when given.
///
/// # Errors
/// [`Error::KmsConfig`] when no region is configured.
pub async fn client(endpoint: Option<&str>) -> Result<Client, Error> {
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
    let message = aws_sdk_kms::error::DisplayErrorContext(&err).to_string();
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
        SdkError::ResponseError(_) => KmsFailure::Unavailable,
        // Construction failures (bad endpoint, no credentials) are configuration errors;
        // dispatch and timeout failures mean KMS could not be reached.
        SdkError::ConstructionFailure(_) => KmsFailure::Refused,
        _ => KmsFailure::Unavailable,
    };
    Error::Kms {
        key: id.into(),
        op,
        kind,
        message,
    }
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
    let mut bytes = [0u8; KEY_LEN];
    bytes.copy_from_slice(&raw);
    let dek = DataKey::from_bytes(bytes);
    zeroize::Zeroize::zeroize(&mut bytes);
    Ok(dek)
}

impl KmsKey {
    /// A keyring entry `id` backed by the KMS key `key` (id, ARN, alias name or alias ARN).
    pub fn new(id: &str, key: &str, client: Client) -> Self {
        KmsKey {
            id: id.into(),
            key: key.into(),
            client,
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
        let out = self
            .client
            .decrypt()
            .key_id(arn)
            .ciphertext_blob(Blob::new(blob.to_vec()))
            .set_encryption_context(Some(encryption_context(ctx)))
            .send()
            .await;
        let mut out = counted(&self.id, OP, out)?;
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
