//! What a browser occupies on disk, for its disk quota (`browser.sandbox_disk_mb`): its
//! profile directory and everything under its run directory that it can write to (home and
//! downloads, the files people uploaded, its X socket and sound directories).
//!
//! Every entry is charged the larger of its allocated blocks, its length (a sparse file is
//! charged what a restore of it would write) and [`MIN_ENTRY`] (so that millions of empty
//! files or links, which take no blocks, run into the quota before they run the filesystem
//! out of inodes). Links are never followed.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The least an entry of any kind is charged: one filesystem block.
pub const MIN_ENTRY: u64 = 4096;

/// What one entry is charged.
fn charge(m: &std::fs::Metadata) -> u64 {
    let len = if m.is_file() { m.len() } else { 0 };
    (m.blocks() * 512).max(len).max(MIN_ENTRY)
}

/// Bytes charged for the trees under `roots` (each root's own entry excluded), counted up to
/// a little past `limit` only. Blocking: a directory walk.
pub fn used(roots: &[&Path], limit: u64) -> u64 {
    let mut used = 0u64;
    for root in roots {
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                    continue;
                };
                if m.is_dir() {
                    stack.push(e.path());
                }
                used = used.saturating_add(charge(&m));
                if used > limit {
                    return used;
                }
            }
        }
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_files_and_empty_entries_are_charged() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::create_dir_all(a.join("sub")).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        // A sparse file takes no blocks but is charged its length.
        let f = std::fs::File::create(a.join("sub/sparse")).unwrap();
        f.set_len(1 << 30).unwrap();
        assert!(f.metadata().unwrap().blocks() * 512 < 1 << 20);
        assert!(used(&[&a], u64::MAX) >= 1 << 30);
        // Empty files and links take no blocks either; each is charged a block.
        for i in 0..1000 {
            std::fs::File::create(b.join(format!("e{i}"))).unwrap();
            std::os::unix::fs::symlink("/", b.join(format!("l{i}"))).unwrap();
        }
        assert!(used(&[&b], u64::MAX) >= 2000 * MIN_ENTRY);
        // Every root counts; links are not followed (`/` is not walked).
        let both = used(&[&a, &b], u64::MAX);
        assert!(((1 << 30) + 2000 * MIN_ENTRY..(1 << 30) + (64 << 20)).contains(&both));
        // The walk stops a little past the limit.
        assert!(used(&[&b], 10 * MIN_ENTRY) <= 11 * MIN_ENTRY);
    }
}
