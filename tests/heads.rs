//! The head under saves and operators at once: what a save planned from is still what it
//! follows when others rewrote the head naming the same generation.

use std::sync::Arc;

use profile_vault::vault::{Base, Vault};

use crate::common::*;

/// Runs, when the save starts uploading, `rollback` to 1 and back to 2 from another vault
/// on the same store (an operator), and waits for both.
struct AwayAndBack(std::path::PathBuf, std::sync::atomic::AtomicBool);

impl profile_vault::Progress for AwayAndBack {
    fn start(&self, label: &str, _: u64) {
        if label != "uploading" || self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let dir = self.0.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (operator, _) = fs_vault(&dir);
                assert_eq!(
                    operator
                        .rollback(&addr("t1", "p1"), 1)
                        .await
                        .unwrap()
                        .generation,
                    1
                );
                assert_eq!(
                    operator
                        .rollback(&addr("t1", "p1"), 2)
                        .await
                        .unwrap()
                        .generation,
                    2
                );
                // A rollback to where the head is changes nothing.
                operator.rollback(&addr("t1", "p1"), 2).await.unwrap();
            });
        })
        .join()
        .unwrap();
    }
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// A save based on generation 2, while an operator rolls the head to 1 and back to 2: the
/// head is where the save planned from, so the save moves it (it was a conflict, and a
/// session's work was left as a non-head generation, its directory removed).
#[tokio::test]
async fn a_save_follows_a_head_rolled_away_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, _): (Vault, _) = fs_vault(dir.path());
    let at = addr("t1", "p1");
    for variant in ["a", "b"] {
        let src = dir.path().join(variant);
        make_profile(&src, variant);
        vault
            .save(
                &at,
                &src,
                Base::Current,
                Arc::new(profile_vault::NoProgress),
            )
            .await
            .unwrap();
    }
    let src = dir.path().join("c");
    make_profile(&src, "c");
    let progress = Arc::new(AwayAndBack(dir.path().to_path_buf(), false.into()));
    let r = vault
        .save(&at, &src, Base::Expect(Some(2)), progress.clone())
        .await
        .unwrap();
    assert!(progress.1.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(r.generation, 3);
    let restored = vault
        .restore(
            &at,
            None,
            &dir.path().join("dst"),
            Arc::new(profile_vault::NoProgress),
        )
        .await
        .unwrap();
    assert_eq!(restored.generation, 3);
}
