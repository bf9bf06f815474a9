//! Fuzzes the object reader: any bytes given as an object must yield an error or plaintext,
//! never a panic, a hang or unbounded memory.
//!
//! Mode byte 0: the input is the object. Otherwise: the input is a plaintext that is sealed
//! into a valid object, which is then damaged at fuzzer-chosen places (flips, truncation,
//! appended bytes), so the chunk and header checks are reached deep.
#![no_main]

use std::io::{Read, Write};

use libfuzzer_sys::fuzz_target;
use profile_vault::crypt::DataKey;
use profile_vault::format::{self, Expected, Sealer};

fuzz_target!(|data: &[u8]| {
    let dek = DataKey::from_bytes([7u8; 32]);
    let expected = Expected { tenant: "t1", profile: "p1", generation: Some(1), object_id: Some("o1") };
    let object = match data.split_first() {
        None => return,
        Some((0, rest)) => rest.to_vec(),
        Some((_, rest)) => {
            let (ctl, plain) = rest.split_at(rest.len().min(8));
            let sealer = Sealer::new(&dek, 4096);
            let mut obj = sealer.header_bytes("t1", "p1", 1, "o1", 1);
            let mut w = sealer.body_writer(Vec::new());
            w.write_all(plain).unwrap();
            obj.extend_from_slice(&w.finish().unwrap().0);
            for pair in ctl.chunks(2) {
                let pos = usize::from(pair[0]) * obj.len() / 256;
                match pair.get(1).copied().unwrap_or(0) % 4 {
                    0 if pos < obj.len() => obj[pos] ^= 1 << (pair[0] % 8),
                    1 => obj.truncate(pos),
                    2 => obj.push(pair[0]),
                    _ => {}
                }
            }
            obj
        }
    };
    if let Ok((_, mut body)) = format::open(&object[..], &dek, &expected) {
        let mut sink = Vec::new();
        let _ = body.read_to_end(&mut sink);
    }
});
