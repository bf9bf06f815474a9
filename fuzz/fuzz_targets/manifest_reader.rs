//! Fuzzes the format 2 manifest reader: any bytes, as the (already authenticated) plaintext
//! of a version 2 payload, must give an error or a manifest whose every name, index and
//! length checked out, never a panic, a hang or unbounded memory.
//!
//! Mode byte 0: the input is the zstd frame itself. Otherwise: the input is the JSON, which
//! is compressed first, so the parser and the checks are reached without the fuzzer having
//! to find zstd frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profile_vault::format::v1::archive::Limits;
use profile_vault::format::v2::manifest;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_files: 1000,
        ..Limits::default()
    };
    let bytes = match data.split_first() {
        None => return,
        Some((0, rest)) => rest.to_vec(),
        Some((_, rest)) => match zstd::bulk::compress(rest, 1) {
            Ok(b) => b,
            Err(_) => return,
        },
    };
    if let Ok((m, ids)) = manifest::decode(&bytes, &limits) {
        // What decode promises: every index in range, sizes adding up.
        assert_eq!(ids.len(), m.chunks.len());
        for f in &m.files {
            let sum: u64 = f.chunks.iter().map(|&c| u64::from(m.chunks[c as usize].raw)).sum();
            assert_eq!(sum, f.size);
            assert!(!f.path.contains(".."));
        }
        for c in &m.chunks {
            assert!((c.pack as usize) < m.packs.len());
        }
    }
});
