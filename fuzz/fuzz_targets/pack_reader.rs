//! Fuzzes the format 2 pack and blob readers: a pack prefix and a blob (as a ranged read of
//! a pack gives it) must open only if genuine, never panic, and never decompress into more
//! than one byte past the manifest's length.
//!
//! Input: 4 bytes of the length the manifest claims, then the blob. Mode: when the first
//! byte is even the blob is taken as given; when odd, a genuine blob of the rest is sealed
//! and then damaged at fuzzer-chosen places, so the decompression and id checks are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profile_vault::crypt::blob::{BlobError, ChunkKeys};
use profile_vault::crypt::DataKey;
use profile_vault::format::v2::pack;

fuzz_target!(|data: &[u8]| {
    let _ = pack::check_prefix("p", data);
    if data.len() < 4 {
        return;
    }
    let keys = ChunkKeys::derive(&DataKey::from_bytes([9u8; 32]));
    let claimed = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) % (8 << 20);
    let rest = &data[4..];
    let (id, blob) = if data[0] % 2 == 0 {
        (keys.id(rest), rest.to_vec())
    } else {
        let (ctl, raw) = rest.split_at(rest.len().min(6));
        let id = keys.id(raw);
        let mut blob = keys.seal(&id, raw, 1);
        for pair in ctl.chunks(2) {
            let pos = usize::from(pair[0]) * blob.len() / 256;
            match pair.get(1).copied().unwrap_or(0) % 3 {
                0 if pos < blob.len() => blob[pos] ^= 1 << (pair[0] % 8),
                1 => blob.truncate(pos),
                _ => blob.push(pair[0]),
            }
        }
        (id, blob)
    };
    match keys.open(&id, &blob, claimed) {
        Ok(raw) => {
            assert_eq!(raw.len() as u32, claimed);
            assert_eq!(keys.id(&raw), id);
        }
        // Decompression never runs past one byte more than the manifest says; a stored
        // chunk is only as long as the blob that holds it.
        Err(BlobError::Length { found, .. }) => {
            assert!(found <= (u64::from(claimed) + 1).max(blob.len() as u64))
        }
        Err(_) => {}
    }
});
