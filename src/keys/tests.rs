//! Keyring tests: sources, wrapping, rekey, refusals.

use super::*;
use std::os::unix::fs::PermissionsExt;

#[tokio::test]
async fn dev_key_is_generated_private_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let src = KeySources {
        dir: dir.path().join("keys"),
        allow_dev_key: true,
        ..Default::default()
    };
    let k1 = Keyring::load(&src).await.unwrap();
    assert!(k1.active_id().starts_with("dev-"));
    let file = dir
        .path()
        .join("keys")
        .join(format!("{}.key", k1.active_id()));
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let k2 = Keyring::load(&src).await.unwrap();
    assert_eq!(k1.active_id(), k2.active_id());
    // The same key unwraps what the first wrapped.
    let ctx = WrapContext {
        tenant: "t",
        profile: "p",
        generation: 1,
        object_id: "o",
    };
    let (dek, w) = k1.new_data_key(k1.active_id(), &ctx).await.unwrap();
    assert_eq!(
        k2.unwrap(&w, &ctx).await.unwrap().as_bytes(),
        dek.as_bytes()
    );
    // Another profile's context does not unwrap it.
    let other = WrapContext {
        profile: "q",
        ..ctx
    };
    assert!(k2.unwrap(&w, &other).await.unwrap_err().is_integrity());
}

#[tokio::test]
async fn insecure_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    generate_key_file(dir.path(), "k1").unwrap();
    let path = dir.path().join("k1.key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let src = KeySources {
        dir: dir.path().into(),
        ..Default::default()
    };
    assert!(matches!(
        Keyring::load(&src).await,
        Err(Error::InsecureFile { .. })
    ));
}

#[tokio::test]
async fn a_planted_key_file_is_skipped_unless_it_is_a_configured_key() {
    let dir = tempfile::tempdir().unwrap();
    generate_key_file(dir.path(), "k1").unwrap();
    std::fs::write(dir.path().join("ACTIVE"), "k1").unwrap();
    // Dropped in by someone else: other mode, not a key at all.
    std::fs::write(dir.path().join("planted.key"), "not base64").unwrap();
    std::fs::set_permissions(
        dir.path().join("planted.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let src = KeySources {
        dir: dir.path().into(),
        ..Default::default()
    };
    let ring = Keyring::load(&src).await.unwrap();
    assert_eq!(ring.active_id(), "k1");
    assert!(!ring.contains("planted"));
    // Named by the configuration, the same file is an error.
    let named = KeySources {
        tenants: [("acme".to_string(), "planted".to_string())].into(),
        ..src
    };
    assert!(matches!(
        Keyring::load(&named).await,
        Err(Error::InsecureFile { .. })
    ));
}

#[tokio::test]
async fn no_keys_without_dev_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let src = KeySources {
        dir: dir.path().into(),
        ..Default::default()
    };
    assert!(matches!(Keyring::load(&src).await, Err(Error::NoKeys)));
}

#[test]
fn debug_redacts_key_bytes() {
    let ring = Keyring::from_keys(vec![("k1".into(), [0x5a; 32])], "k1").unwrap();
    let s = format!("{ring:?}");
    assert!(
        s.contains("k1") && s.contains("redacted") && !s.contains("90"),
        "{s}"
    );
}

#[test]
fn bad_ids_rejected() {
    for id in ["", "../x", "a/b", ".hidden", &"x".repeat(65)] {
        assert!(validate_id(id).is_err(), "{id}");
    }
    validate_id("prod-2026.1_a").unwrap();
}

#[tokio::test]
async fn tenant_keys_and_source_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = KeySources {
        dir: dir.path().into(),
        inline: Some(format!(
            "a:{},b:{}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [1u8; 32]),
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [2u8; 32])
        )),
        active: Some("a".into()),
        ..Default::default()
    };
    src.tenants.insert("acme".into(), "b".into());
    let ring = Keyring::load(&src).await.unwrap();
    assert_eq!(ring.active_for("acme"), "b");
    assert_eq!(ring.active_for("other"), "a");
    let info = ring.infos();
    assert_eq!(info[1].tenants, vec!["acme".to_string()]);
    // A record claiming a KMS wrap under a local key is refused, not misread.
    let ctx = WrapContext {
        tenant: "acme",
        profile: "p",
        generation: 3,
        object_id: "o",
    };
    let (_, mut w) = ring.new_data_key("b", &ctx).await.unwrap();
    w.kms_key_arn = Some("arn:aws:kms:us-east-1:0:key/x".into());
    assert!(matches!(
        ring.unwrap(&w, &ctx).await,
        Err(Error::SourceMismatch { .. })
    ));
    // A tenant key that is not loaded is an error at load.
    src.tenants.insert("zeta".into(), "nope".into());
    assert!(matches!(Keyring::load(&src).await, Err(Error::UnknownKey(k)) if k == "nope"));
}
