//! Shared helpers: synthetic profiles, vaults over temp dirs, S3 clients for the test servers.

#![allow(dead_code)]

pub mod daemon;
pub mod faults;
pub mod hooked;
pub mod nginx;
pub mod site;
pub mod viewer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use profile_vault::store::fs::LocalFileSystem;
use profile_vault::store::StoreOptions;
use profile_vault::{Keyring, Store, Vault, VaultOptions};

/// Markers that must never appear in stored bytes.
pub const COOKIE_MARKER: &str = "cookievalue-7f3a9c2e1b";
pub const FILE_NAME_MARKER: &str = "secret-file-name-4d2c.txt";
pub const CONTENT_MARKER: &str = "secret-file-content-9e8d7c6b5a";

pub fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Makes the profile `variant` in `dir/<variant>` ([`make_profile`]) and saves it as `at`,
/// continuing whatever the head is.
pub async fn save_variant(
    vault: &Vault,
    at: &profile_vault::layout::ProfileAddr,
    dir: &Path,
    variant: &str,
) -> Result<profile_vault::vault::SaveReport, profile_vault::vault::Error> {
    let src = dir.join(variant);
    make_profile(&src, variant);
    vault
        .save(
            at,
            &src,
            profile_vault::vault::Base::Current,
            Arc::new(profile_vault::NoProgress),
        )
        .await
}

/// A small Chromium-like profile with markers in a cookie, a file name and a file's content.
pub fn make_profile(root: &Path, variant: &str) {
    write(
        root,
        "Local State",
        format!("{{\"variant\":\"{variant}\"}}").as_bytes(),
    );
    write(root, "Last Version", b"156.0.8078.79");
    write(
        root,
        "Default/Preferences",
        br#"{"profile":{"exit_type":"Normal"}}"#,
    );
    let mut cookies = b"SQLite format 3\0".to_vec();
    cookies.extend_from_slice(b"v10");
    cookies.extend_from_slice(COOKIE_MARKER.as_bytes());
    cookies.resize(8192, 0);
    write(root, "Default/Cookies", &cookies);
    write(
        root,
        &format!("Default/{FILE_NAME_MARKER}"),
        CONTENT_MARKER.repeat(50).as_bytes(),
    );
    write(root, "Default/History", &vec![b'h'; 20_000]);
    write(root, "Default/Cache/Cache_Data/data_1", &vec![1u8; 4096]);
    std::os::unix::fs::symlink("host-1", root.join("SingletonLock")).unwrap();
}

/// No stored object under `root` carries a marker of [`make_profile`], in its bytes or name.
pub fn assert_nothing_readable(root: &Path) {
    for (path, bytes) in tree(root) {
        for m in [COOKIE_MARKER, FILE_NAME_MARKER, CONTENT_MARKER] {
            assert!(
                !bytes.windows(m.len()).any(|w| w == m.as_bytes()),
                "{m} found in {path}"
            );
            assert!(!path.contains(m), "{m} in object name {path}");
        }
    }
}

pub fn keyring(id: &str, byte: u8) -> Arc<Keyring> {
    Arc::new(Keyring::from_keys(vec![(id.into(), [byte; 32])], id).unwrap())
}

pub fn options(spool: &Path) -> VaultOptions {
    VaultOptions {
        spool_dir: spool.to_path_buf(),
        pack: Default::default(),
        limits: Default::default(),
        chunk_size: 64 * 1024,
        keep: 5,
        max_parallel_jobs: 2,
        data_max_bytes: 64 * 1024,
        contents_report: true,
        write_format: 2,
        full_read_every: 10,
        reread: false,
        pack_grace: std::time::Duration::from_secs(3600),
    }
}

/// A vault over a fresh filesystem store in `dir`.
pub fn fs_vault(dir: &Path) -> (Vault, PathBuf) {
    let root = dir.join("store");
    let store: Arc<dyn Store> = Arc::new(LocalFileSystem::new(&root).unwrap());
    (
        Vault::new(store, keyring("k1", 1), options(&dir.join("spool"))).unwrap(),
        root,
    )
}

/// Files of a directory tree, as (relative path, bytes), sorted.
pub fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                walk(base, &e.path(), out);
            } else if m.is_file() {
                out.push((
                    e.path()
                        .strip_prefix(base)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                    std::fs::read(e.path()).unwrap(),
                ));
            }
        }
    }
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Endpoint of a test server from the environment; panics (fails the test) when missing.
pub fn endpoint(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run the tests through scripts/test.sh, which starts the S3 servers"
        )
    })
}

pub fn s3_client(endpoint: &str, secret: &str) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{
        BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation,
    };
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", secret, None, None, "static"))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

pub async fn ensure_bucket(client: &aws_sdk_s3::Client, bucket: &str) {
    if client.head_bucket().bucket(bucket).send().await.is_err() {
        client
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {bucket}: {e:?}"));
    }
}

/// The two servers: (name, endpoint, secret key).
pub fn servers() -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("localstack", endpoint("PV_TEST_LOCALSTACK"), "test"),
        ("s3s-fs", endpoint("PV_TEST_S3S"), "testtesttest"),
    ]
}

pub const BUCKET: &str = "profile-vault";

/// A store on a test server under a unique prefix.
pub async fn s3_store(endpoint: &str, secret: &str, prefix: &str) -> Arc<dyn Store> {
    let client = s3_client(endpoint, secret);
    ensure_bucket(&client, BUCKET).await;
    let opts = StoreOptions {
        part_size: 5 << 20,
        concurrency: 3,
        ..Default::default()
    };
    Arc::new(profile_vault::store::s3::AmazonS3::with_client(
        client, BUCKET, prefix, &opts,
    ))
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The address of profile `profile` of `tenant` (valid ids only: tests of invalid ones
/// call `ProfileAddr::new` themselves).
pub fn addr(tenant: &str, profile: &str) -> profile_vault::layout::ProfileAddr {
    profile_vault::layout::ProfileAddr::new(tenant, profile).expect("a valid profile address")
}
