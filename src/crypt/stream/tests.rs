//! Tests of `stream`.

use super::*;

const CS: u32 = MIN_CHUNK_SIZE;

fn keys(dek: &DataKey) -> ObjectKeys {
    ObjectKeys::derive(dek, &[9u8; SALT_LEN])
}

fn seal(dek: &DataKey, data: &[u8]) -> Vec<u8> {
    let mut w = StreamWriter::new(keys(dek), CS, Vec::new());
    // Write in odd pieces to exercise buffering.
    for piece in data.chunks(1000) {
        w.write_all(piece).unwrap();
    }
    let (out, len) = w.finish().unwrap();
    assert_eq!(out.len() as u64, len);
    out
}

fn open(dek: &DataKey, ct: &[u8]) -> Result<Vec<u8>, Error> {
    let mut r = StreamReader::new(keys(dek), CS, ct);
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(unwrap_io)?;
    Ok(out)
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 7) as u8).collect()
}

fn chunks(ct: &[u8]) -> Vec<Vec<u8>> {
    ct.chunks(CS as usize + TAG_LEN)
        .map(<[u8]>::to_vec)
        .collect()
}

#[test]
fn round_trips_at_every_boundary() {
    let dek = DataKey::generate();
    let cs = CS as usize;
    for n in [0, 1, cs - 1, cs, cs + 1, 2 * cs, 5 * cs + 17] {
        let d = data(n);
        let ct = seal(&dek, &d);
        let expected_chunks = if n == 0 { 1 } else { n.div_ceil(cs) };
        assert_eq!(ct.len(), n + expected_chunks * TAG_LEN, "size {n}");
        assert_eq!(open(&dek, &ct).unwrap(), d, "size {n}");
    }
}

#[test]
fn plaintext_does_not_appear() {
    let dek = DataKey::generate();
    let marker = b"SECRET-MARKER-1234567890";
    let ct = seal(&dek, &marker.repeat(100));
    assert!(!ct.windows(marker.len()).any(|w| w == marker));
}

#[test]
fn wrong_key_fails() {
    let ct = seal(&DataKey::generate(), &data(100));
    assert!(matches!(
        open(&DataKey::generate(), &ct),
        Err(Error::ChunkTampered { index: 0 })
    ));
}

#[test]
fn flipped_bits_fail() {
    let dek = DataKey::generate();
    let ct = seal(&dek, &data(3 * CS as usize));
    for pos in [0, 5, CS as usize + 3, ct.len() - 1] {
        let mut bad = ct.clone();
        bad[pos] ^= 0x40;
        assert!(
            matches!(open(&dek, &bad), Err(Error::ChunkTampered { .. })),
            "pos {pos}"
        );
    }
}

#[test]
fn reordered_dropped_duplicated() {
    let dek = DataKey::generate();
    let ct = seal(&dek, &data(4 * CS as usize + 10));
    let c = chunks(&ct);
    assert_eq!(c.len(), 5);
    let swapped = [
        c[0].clone(),
        c[2].clone(),
        c[1].clone(),
        c[3].clone(),
        c[4].clone(),
    ]
    .concat();
    assert!(matches!(
        open(&dek, &swapped),
        Err(Error::ChunkOutOfOrder { index: 1, found: 2 })
    ));
    let dropped = [c[0].clone(), c[2].clone(), c[3].clone(), c[4].clone()].concat();
    assert!(matches!(
        open(&dek, &dropped),
        Err(Error::ChunkOutOfOrder { index: 1, found: 2 })
    ));
    let dup = [c[0].clone(), c[0].clone(), c[1].clone()].concat();
    assert!(matches!(
        open(&dek, &dup),
        Err(Error::ChunkOutOfOrder { index: 1, found: 0 })
    ));
}

#[test]
fn truncation_everywhere() {
    let dek = DataKey::generate();
    let ct = seal(&dek, &data(3 * CS as usize));
    let full = CS as usize + TAG_LEN;
    // At every chunk boundary.
    for k in 1..3 {
        let r = open(&dek, &ct[..k * full]);
        assert!(
            matches!(r, Err(Error::TruncatedAtBoundary { .. })),
            "boundary {k}: {r:?}"
        );
    }
    assert!(matches!(
        open(&dek, &[]),
        Err(Error::Truncated { index: 0 })
    ));
    // Inside chunks.
    for cut in [1, 10, full - 1, full + 1, 2 * full + 100, ct.len() - 1] {
        assert!(open(&dek, &ct[..cut]).is_err(), "cut {cut}");
    }
}

#[test]
fn appended_data_fails() {
    let dek = DataKey::generate();
    let ct = seal(&dek, &data(CS as usize * 2));
    let mut longer = ct.clone();
    longer.extend_from_slice(b"x");
    assert!(matches!(
        open(&dek, &longer),
        Err(Error::TrailingData { index: 1 })
    ));
    // An appended copy of a whole chunk.
    let c = chunks(&ct);
    let appended = [ct.clone(), c[0].clone()].concat();
    assert!(open(&dek, &appended).is_err());
    // Short final chunk with bytes after it.
    let ct = seal(&dek, &data(100));
    let mut longer = ct.clone();
    longer.extend_from_slice(&[0u8; 20]);
    assert!(open(&dek, &longer).is_err());
}

#[test]
fn commitment_and_mac() {
    let dek = DataKey::generate();
    let k = keys(&dek);
    k.check_commitment(&k.commitment()).unwrap();
    let other = keys(&DataKey::generate());
    assert!(matches!(
        other.check_commitment(&k.commitment()),
        Err(Error::CommitmentMismatch)
    ));
    let mac = k.header_mac(b"header");
    k.check_header_mac(b"header", &mac).unwrap();
    assert!(matches!(
        k.check_header_mac(b"headex", &mac),
        Err(Error::HeaderTampered)
    ));
}
