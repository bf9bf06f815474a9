//! Storage faults between the vault and LocalStack, injected by a proxy: transient errors
//! are retried, a save that cannot finish leaves the last good generation as the head, no
//! multipart upload (format 1) or pack of a failed save (format 2) is left, ambiguous
//! retried writes are recognised, and cut ranged reads of packs are retried.

use std::sync::Arc;
use std::time::Duration;

use profile_vault::store::retry::{RetryPolicy, RetryStore};
use profile_vault::store::s3::AmazonS3;
use profile_vault::store::{Store, StoreOptions};
use profile_vault::vault::{Base, Error};
use profile_vault::{NoProgress, Vault};

use crate::common::faults::*;
use crate::common::*;

struct Rig {
    proxy: FaultProxy,
    vault: Vault,
    prefix: String,
    dir: tempfile::TempDir,
}

async fn rig(deadline: Duration) -> Rig {
    rig_with(deadline, 2).await
}

/// A rig whose vault writes payload format `write_format`.
async fn rig_with(deadline: Duration, write_format: u16) -> Rig {
    let ls = endpoint("PV_TEST_LOCALSTACK");
    ensure_bucket(&s3_client(&ls, "test"), BUCKET).await;
    let proxy = FaultProxy::start(&ls).await;
    let prefix = unique("faults");
    use aws_sdk_s3::config::{
        BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation,
    };
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(proxy.endpoint())
        .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(1))
                .build(),
        )
        .build();
    let opts = StoreOptions {
        part_size: 5 << 20,
        concurrency: 2,
        ..Default::default()
    };
    let s3 = Arc::new(AmazonS3::with_client(
        aws_sdk_s3::Client::from_conf(conf),
        BUCKET,
        &prefix,
        &opts,
    ));
    let policy = RetryPolicy {
        deadline,
        base: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
    };
    let store: Arc<dyn Store> = Arc::new(RetryStore::new(s3, policy));
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&dir.path().join("spool"));
    o.write_format = write_format;
    let vault = Vault::new(store, keyring("k1", 5), o).unwrap();
    Rig {
        proxy,
        vault,
        prefix,
        dir,
    }
}

fn profile_with_noise(root: &std::path::Path, variant: &str) {
    make_profile(root, variant);
    let mut noise = vec![0u8; 12 << 20]; // three 5 MiB parts
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut noise);
    write(root, "Default/IndexedDB/blob/1", &noise);
}

async fn open_uploads(prefix: &str) -> usize {
    let c = s3_client(&endpoint("PV_TEST_LOCALSTACK"), "test");
    let r = c
        .list_multipart_uploads()
        .bucket(BUCKET)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    r.uploads().len()
}

fn np() -> Arc<dyn profile_vault::Progress> {
    Arc::new(NoProgress)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried_and_the_save_lands() {
    // Format 1: one payload in a multipart upload.
    let r = rig_with(Duration::from_secs(30), 1).await;
    let src = r.dir.path().join("src");
    profile_with_noise(&src, "a");
    r.proxy.set_rules(vec![
        Rule::new(
            "part-503",
            Req::is_upload_part,
            &[2, 3],
            Action::Status(503, "SlowDown"),
        ),
        Rule::new("complete-reset", Req::is_complete, &[1], Action::Reset),
        Rule::new(
            "head-500",
            |q| q.is_put("head.json"),
            &[1],
            Action::Status(500, "InternalError"),
        ),
    ]);
    let rep = r
        .vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    assert_eq!(rep.generation, 1);
    for rule in ["part-503", "complete-reset", "head-500"] {
        assert!(r.proxy.applied(rule) > 0, "rule {rule} never fired");
    }
    r.proxy.set_rules(vec![]);
    let dst = r.dir.path().join("dst");
    r.vault
        .restore(&addr("t1", "p1"), None, &dst, np())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(dst.join("Default/IndexedDB/blob/1")).unwrap(),
        std::fs::read(src.join("Default/IndexedDB/blob/1")).unwrap()
    );
    assert_eq!(open_uploads(&r.prefix).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_that_cannot_finish_leaves_the_last_good_generation() {
    // Format 1: one payload in a multipart upload.
    let r = rig_with(Duration::from_secs(3), 1).await;
    let src = r.dir.path().join("src");
    profile_with_noise(&src, "good");
    r.vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();

    // Every UploadPart fails: the save fails after its deadline, the upload is aborted.
    let src2 = r.dir.path().join("src2");
    profile_with_noise(&src2, "bad");
    r.proxy.set_rules(vec![Rule::new(
        "parts-down",
        Req::is_upload_part,
        &[],
        Action::Status(500, "InternalError"),
    )]);
    let err = r
        .vault
        .save(&addr("t1", "p1"), &src2, Base::Current, np())
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Store(e) if e.is_transient()), "{err}");
    assert_eq!(open_uploads(&r.prefix).await, 0, "multipart upload aborted");

    // The head write keeps failing: the new generation is kept but the head stays.
    r.proxy.set_rules(vec![Rule::new(
        "head-down",
        |q| q.is_put("head.json"),
        &[],
        Action::Status(503, "SlowDown"),
    )]);
    assert!(r
        .vault
        .save(&addr("t1", "p1"), &src2, Base::Current, np())
        .await
        .is_err());
    r.proxy.set_rules(vec![]);
    let (head, _) = r.vault.head(&addr("t1", "p1")).await.unwrap().unwrap();
    assert_eq!(
        head.generation, 1,
        "the last good generation is still the head"
    );
    let gens = r.vault.versions(&addr("t1", "p1")).await.unwrap();
    assert!(
        gens.iter()
            .any(|g| !g.head && g.payload && g.record.is_some()),
        "the failed save's generation is kept and listed"
    );
    let dst = r.dir.path().join("dst");
    r.vault
        .restore(&addr("t1", "p1"), None, &dst, np())
        .await
        .unwrap();
    assert!(std::fs::read_to_string(dst.join("Local State"))
        .unwrap()
        .contains("good"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_that_landed_late_is_recognised() {
    let r = rig(Duration::from_secs(30)).await;
    let src = r.dir.path().join("src");
    make_profile(&src, "a");
    r.vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    // The first head write stalls past the client's 1 s attempt timeout and then lands; the
    // retry is held until after that, so it fails its If-Match against our own write.
    r.proxy.set_rules(vec![
        Rule::new(
            "head-late",
            |q| q.is_put("head.json"),
            &[1],
            Action::Stall(Duration::from_millis(1500)),
        ),
        Rule::new(
            "head-later",
            |q| q.is_put("head.json"),
            &[2],
            Action::Stall(Duration::from_millis(3000)),
        ),
    ]);
    let rep = r
        .vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    assert_eq!(rep.generation, 2);
    assert!(r.proxy.applied("head-later") > 0);
    r.proxy.set_rules(vec![]);
    assert_eq!(
        r.vault
            .head(&addr("t1", "p1"))
            .await
            .unwrap()
            .unwrap()
            .0
            .generation,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_downloads_are_retried_or_fail_cleanly() {
    let r = rig(Duration::from_secs(5)).await;
    let src = r.dir.path().join("src");
    profile_with_noise(&src, "a");
    r.vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    r.proxy.set_rules(vec![Rule::new(
        "cut-once",
        |q| q.is_get(".pvo"),
        &[1],
        Action::CutBody,
    )]);
    r.vault
        .restore(&addr("t1", "p1"), None, &r.dir.path().join("ok"), np())
        .await
        .unwrap();
    assert!(r.proxy.applied("cut-once") > 0);
    r.proxy.set_rules(vec![Rule::new(
        "cut-always",
        |q| q.is_get(".pvo"),
        &[],
        Action::CutBody,
    )]);
    let target = r.dir.path().join("never");
    let err = r
        .vault
        .restore(&addr("t1", "p1"), None, &target, np())
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Store(e) if e.is_transient()), "{err}");
    assert!(!target.exists());
    let leftovers = std::fs::read_dir(r.dir.path().join("spool"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "no partial download left behind");
}

/// The packs stored under the rig's prefix.
async fn packs(prefix: &str) -> Vec<String> {
    let c = s3_client(&endpoint("PV_TEST_LOCALSTACK"), "test");
    let r = c
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(prefix)
        .send()
        .await
        .unwrap();
    r.contents()
        .iter()
        .filter_map(|o| o.key())
        .filter(|k| k.ends_with(".pvp"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_2_pack_uploads_and_ranged_reads_survive_transient_faults() {
    let r = rig(Duration::from_secs(30)).await;
    let src = r.dir.path().join("src");
    profile_with_noise(&src, "a");
    r.proxy.set_rules(vec![
        Rule::new(
            "pack-503",
            |q| q.is_put(".pvp"),
            &[1, 2],
            Action::Status(503, "SlowDown"),
        ),
        Rule::new("pack-reset", |q| q.is_put(".pvp"), &[4], Action::Reset),
        Rule::new(
            "manifest-500",
            |q| q.is_put(".pvo"),
            &[1],
            Action::Status(500, "InternalError"),
        ),
        Rule::new(
            "head-500",
            |q| q.is_put("head.json"),
            &[1],
            Action::Status(500, "InternalError"),
        ),
    ]);
    let rep = r
        .vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    assert!(rep.chunks.as_ref().unwrap().packs_new >= 3, "{rep:?}");
    for rule in ["pack-503", "pack-reset", "manifest-500", "head-500"] {
        assert!(r.proxy.applied(rule) > 0, "rule {rule} never fired");
    }
    // Ranged reads answered 503, reset, or cut half-way: retried.
    r.proxy.set_rules(vec![
        Rule::new(
            "range-503",
            |q| q.is_get(".pvp"),
            &[1],
            Action::Status(503, "SlowDown"),
        ),
        Rule::new("range-cut", |q| q.is_get(".pvp"), &[2], Action::CutBody),
        Rule::new("range-reset", |q| q.is_get(".pvp"), &[3], Action::Reset),
    ]);
    let dst = r.dir.path().join("dst");
    r.vault
        .restore(&addr("t1", "p1"), None, &dst, np())
        .await
        .unwrap();
    for rule in ["range-503", "range-cut", "range-reset"] {
        assert!(r.proxy.applied(rule) > 0, "rule {rule} never fired");
    }
    assert_eq!(
        std::fs::read(dst.join("Default/IndexedDB/blob/1")).unwrap(),
        std::fs::read(src.join("Default/IndexedDB/blob/1")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_2_save_that_cannot_upload_leaves_the_head_and_no_packs() {
    let r = rig(Duration::from_secs(3)).await;
    let src = r.dir.path().join("src");
    profile_with_noise(&src, "good");
    r.vault
        .save(&addr("t1", "p1"), &src, Base::Current, np())
        .await
        .unwrap();
    let good = packs(&r.prefix).await;
    // The third pack upload of the next save keeps failing: the save fails after its
    // deadline, and the packs it did upload are removed again.
    let src2 = r.dir.path().join("src2");
    profile_with_noise(&src2, "bad");
    r.proxy.set_rules(vec![Rule::new(
        "third-pack-down",
        |q| q.is_put(".pvp"),
        &(3..200).collect::<Vec<_>>(),
        Action::Status(500, "InternalError"),
    )]);
    let err = r
        .vault
        .save(&addr("t1", "p1"), &src2, Base::Current, np())
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Store(e) if e.is_transient()), "{err}");
    r.proxy.set_rules(vec![]);
    let mut now = packs(&r.prefix).await;
    now.sort();
    let mut want = good.clone();
    want.sort();
    assert_eq!(now, want, "only the good generation's packs remain");
    let (head, _) = r.vault.head(&addr("t1", "p1")).await.unwrap().unwrap();
    assert_eq!(head.generation, 1);
    let dst = r.dir.path().join("dst");
    r.vault
        .restore(&addr("t1", "p1"), None, &dst, np())
        .await
        .unwrap();
    assert!(std::fs::read_to_string(dst.join("Local State"))
        .unwrap()
        .contains("good"));
}
