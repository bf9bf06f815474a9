//! Fuzzes the archive validator: any bytes given as a decrypted archive must be rejected or
//! fully checked, never panic or expand past the limits.
//!
//! Mode byte 0: the input is the archive. Otherwise: the input describes entries (names and
//! data split on 0xFF) written by the crate's own ZIP writer, then patched at fuzzer-chosen
//! bytes (modes, sizes, names), so the structure-aware checks are reached.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use profile_vault::format::v1::archive::{self, Limits};
use profile_vault::format::v1::zipw::{Method, ZipWriter};

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_files: 1000, max_file_size: 1 << 20, max_total_size: 4 << 20, max_ratio: 200 };
    let zip = match data.split_first() {
        None => return,
        Some((0, rest)) => rest.to_vec(),
        Some((_, rest)) => {
            let (ctl, spec) = rest.split_at(rest.len().min(6));
            let mut z = ZipWriter::new(Vec::new());
            let parts: Vec<&[u8]> = spec.split(|b| *b == 0xFF).collect();
            for pair in parts.chunks(2) {
                let name = String::from_utf8_lossy(pair[0]).into_owned();
                let body = pair.get(1).copied().unwrap_or_default();
                if name.is_empty() {
                    continue;
                }
                let _ = z.add_compressed(&name, Method::Stored, crc32(body), body.len() as u64, body);
            }
            let mut out = z.finish().unwrap().0;
            for pair in ctl.chunks(2) {
                if out.is_empty() {
                    break;
                }
                let pos = usize::from(pair[0]) * out.len() / 256;
                out[pos] = pair.get(1).copied().unwrap_or(0);
            }
            out
        }
    };
    let _ = archive::check_from(&|| Ok(Cursor::new(&zip[..])), &limits);
});

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}
