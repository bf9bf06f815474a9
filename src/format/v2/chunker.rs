//! Where format v2 cuts a file into chunks (`docs/FORMAT.md` §10.3), chosen for how Chromium
//! changes a profile:
//! - **SQLite databases** (History, Cookies, Login Data, Web Data...) rewrite whole pages in
//!   place. They are cut into fixed 64 KiB chunks from offset 0: every legal page size
//!   (512..65536, a power of two) divides 64 KiB, so a chunk never straddles a page and a page
//!   rewritten in place changes exactly one chunk. Found by their 16-byte header (Chromium's
//!   databases have no extension), with a valid page size.
//! - **Everything else** up to 4 MiB is one chunk: LevelDB tables (`.ldb`) are written once
//!   and never changed, JSON files (Preferences, Bookmarks) are rewritten whole.
//! - **Larger files** are cut into fixed 1 MiB chunks from offset 0, so files that grow by
//!   appending (LevelDB `.log`, `MANIFEST-*`) change only their last chunk.
//!
//! These constants are part of the format: changing them changes chunk ids of unchanged
//! content (a later save would upload it again, not break).

/// Fixed chunk length of SQLite databases.
pub const SQLITE_CHUNK: u64 = 64 << 10;
/// Files up to this size (other than SQLite) are one chunk.
pub const WHOLE_FILE_MAX: u64 = 4 << 20;
/// Fixed chunk length of larger files.
pub const LARGE_CHUNK: u64 = 1 << 20;
/// Bytes of a file's start the chunker looks at.
pub const SNIFF_LEN: usize = 18;

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Whether a file starting with `head` is a SQLite database with a valid page size.
pub fn is_sqlite(head: &[u8]) -> bool {
    if head.len() < SNIFF_LEN || &head[..16] != SQLITE_MAGIC {
        return false;
    }
    let page = u32::from(u16::from_be_bytes([head[16], head[17]]));
    let page = if page == 1 { 65536 } else { page };
    page.is_power_of_two() && (512..=65536).contains(&page)
}

/// The length of every chunk but the last of a file of `size` bytes starting with `head`.
pub fn chunk_len(head: &[u8], size: u64) -> u64 {
    if is_sqlite(head) {
        SQLITE_CHUNK
    } else if size <= WHOLE_FILE_MAX {
        size.max(1)
    } else {
        LARGE_CHUNK
    }
}

/// The `(offset, len)` of each chunk of a file (none for an empty file).
pub fn cuts(head: &[u8], size: u64) -> impl Iterator<Item = (u64, u64)> {
    let step = chunk_len(head, size);
    (0..size.div_ceil(step)).map(move |i| {
        let off = i * step;
        (off, step.min(size - off))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_head(page: u16) -> Vec<u8> {
        let mut h = SQLITE_MAGIC.to_vec();
        h.extend_from_slice(&page.to_be_bytes());
        h
    }

    #[test]
    fn sqlite_is_cut_on_page_multiples() {
        for page in [512u16, 4096, 32768, 1] {
            assert!(is_sqlite(&sqlite_head(page)), "page {page}");
            let c: Vec<_> = cuts(&sqlite_head(page), 200_000).collect();
            assert_eq!(c.len(), 4);
            assert!(c.iter().all(|(o, _)| o % 65536 == 0));
            assert_eq!(c.last().unwrap(), &(196_608, 3392));
        }
        for bad in [0u16, 100, 3000] {
            assert!(!is_sqlite(&sqlite_head(bad)), "page {bad}");
        }
        assert!(!is_sqlite(b"SQLite format 3"));
    }

    #[test]
    fn other_files_whole_up_to_4_mib_then_1_mib() {
        assert_eq!(cuts(b"{}", 0).count(), 0);
        assert_eq!(cuts(b"{}", 10).collect::<Vec<_>>(), vec![(0, 10)]);
        assert_eq!(cuts(b"x", 4 << 20).count(), 1);
        let big: Vec<_> = cuts(b"x", (6 << 20) + 5).collect();
        assert_eq!(big.len(), 7);
        assert_eq!(big[6], (6 << 20, 5));
    }
}
