use super::*;

use std::io::Read;

const CS: u32 = MIN_CHUNK_SIZE;

fn expected() -> Expected<'static> {
    Expected {
        tenant: "t1",
        profile: "p1",
        generation: Some(3),
        object_id: Some("obj-1"),
    }
}

fn seal(dek: &DataKey, body: &[u8]) -> Vec<u8> {
    let s = Sealer::new(dek, CS);
    let mut out = s.header_bytes("t1", "p1", 3, "obj-1", 1_700_000_000);
    let mut w = s.body_writer(Vec::new());
    w.write_all(body).unwrap();
    let (b, _) = w.finish().unwrap();
    out.extend_from_slice(&b);
    out
}

fn read_all(dek: &DataKey, data: &[u8], exp: &Expected<'_>) -> Result<Vec<u8>, Error> {
    let (_, mut r) = open(data, dek, exp)?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)
        .map_err(|e| Error::Crypt(stream::unwrap_io(e)))?;
    Ok(out)
}

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn round_trip_sizes() {
    let dek = DataKey::generate();
    for n in [
        0,
        1,
        CS as usize - 1,
        CS as usize,
        CS as usize + 1,
        10 * CS as usize + 5,
    ] {
        let obj = seal(&dek, &body(n));
        assert_eq!(
            read_all(&dek, &obj, &expected()).unwrap(),
            body(n),
            "size {n}"
        );
    }
}

#[test]
fn header_checks_each_have_their_error() {
    let dek = DataKey::generate();
    let obj = seal(&dek, &body(100));
    let mut m = obj.clone();
    m[0] ^= 1;
    assert!(matches!(
        read_all(&dek, &m, &expected()),
        Err(Error::BadMagic)
    ));
    let mut v = obj.clone();
    v[9] = 3;
    assert!(matches!(
        read_all(&dek, &v, &expected()),
        Err(Error::NewerVersion(3))
    ));
    // Relabelled as the other known version: the header MAC covers the prefix.
    v[9] = 2;
    assert!(read_all(&dek, &v, &expected()).is_err());
    v[9] = 0;
    assert!(matches!(
        read_all(&dek, &v, &expected()),
        Err(Error::UnsupportedVersion(0))
    ));
    let mut s = obj.clone();
    s[11] = 9;
    assert!(matches!(
        read_all(&dek, &s, &expected()),
        Err(Error::UnsupportedSuite(9))
    ));
    let mut l = obj.clone();
    l[12] = 0xff;
    assert!(matches!(
        read_all(&dek, &l, &expected()),
        Err(Error::HeaderTooLarge(_))
    ));
    for cut in [0, 5, 16, 40, header_len(&obj).unwrap() - 1] {
        assert!(
            matches!(
                read_all(&dek, &obj[..cut], &expected()),
                Err(Error::TruncatedHeader)
            ),
            "cut {cut}"
        );
    }
}

#[test]
fn header_edit_is_detected() {
    let dek = DataKey::generate();
    let obj = seal(&dek, &body(100));
    // Change created_at digits in the JSON without breaking its syntax.
    let pos = obj.windows(10).position(|w| w == b"1700000000").unwrap();
    let mut e = obj.clone();
    e[pos] = b'2';
    assert!(matches!(
        read_all(&dek, &e, &expected()),
        Err(Error::Crypt(crypt::Error::HeaderTampered))
    ));
    // A flipped MAC byte.
    let mut m = obj.clone();
    m[header_len(&obj).unwrap() - 1] ^= 1;
    assert!(matches!(
        read_all(&dek, &m, &expected()),
        Err(Error::Crypt(crypt::Error::HeaderTampered))
    ));
    // Broken JSON.
    let mut j = obj.clone();
    j[PREFIX_LEN] = b'[';
    assert!(matches!(
        read_all(&dek, &j, &expected()),
        Err(Error::MalformedHeader(_))
    ));
}

#[test]
fn object_from_elsewhere_is_rejected() {
    let dek = DataKey::generate();
    let obj = seal(&dek, &body(100));
    for (exp, field) in [
        (
            Expected {
                tenant: "t2",
                ..expected()
            },
            "tenant",
        ),
        (
            Expected {
                profile: "p2",
                ..expected()
            },
            "profile",
        ),
        (
            Expected {
                generation: Some(4),
                ..expected()
            },
            "generation",
        ),
        (
            Expected {
                object_id: Some("obj-2"),
                ..expected()
            },
            "object id",
        ),
    ] {
        match read_all(&dek, &obj, &exp) {
            Err(Error::Misplaced { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn wrong_data_key_fails_commitment_before_decrypting() {
    let obj = seal(&DataKey::generate(), &body(100));
    assert!(matches!(
        read_all(&DataKey::generate(), &obj, &expected()),
        Err(Error::Crypt(crypt::Error::CommitmentMismatch))
    ));
}

#[test]
fn body_tampering_truncation_and_trailing() {
    let dek = DataKey::generate();
    let obj = seal(&dek, &body(3 * CS as usize));
    let h = header_len(&obj).unwrap();
    let full = CS as usize + stream::TAG_LEN;
    let mut flip = obj.clone();
    flip[h + 10] ^= 1;
    assert!(matches!(
        read_all(&dek, &flip, &expected()),
        Err(Error::Crypt(crypt::Error::ChunkTampered { index: 0 }))
    ));
    assert!(matches!(
        read_all(&dek, &obj[..h + full], &expected()),
        Err(Error::Crypt(crypt::Error::TruncatedAtBoundary { after: 0 }))
    ));
    assert!(matches!(
        read_all(&dek, &obj[..h], &expected()),
        Err(Error::Crypt(crypt::Error::Truncated { index: 0 }))
    ));
    let mut trailing = obj.clone();
    trailing.push(0);
    assert!(matches!(
        read_all(&dek, &trailing, &expected()),
        Err(Error::Crypt(crypt::Error::TrailingData { .. }))
    ));
    let mut swapped = obj[..h].to_vec();
    swapped.extend_from_slice(&obj[h + full..h + 2 * full]);
    swapped.extend_from_slice(&obj[h..h + full]);
    swapped.extend_from_slice(&obj[h + 2 * full..]);
    assert!(matches!(
        read_all(&dek, &swapped, &expected()),
        Err(Error::Crypt(crypt::Error::ChunkOutOfOrder {
            index: 0,
            found: 1
        }))
    ));
}

#[test]
fn bodies_cannot_be_swapped_between_objects() {
    let dek = DataKey::generate();
    let a = seal(&dek, &body(100));
    let b = seal(&dek, &body(100)); // same DEK, different salt
    let ha = header_len(&a).unwrap();
    let mut mixed = a[..ha].to_vec();
    mixed.extend_from_slice(&b[header_len(&b).unwrap()..]);
    assert!(read_all(&dek, &mixed, &expected()).is_err());
}

#[test]
fn verify_file_then_random_access() {
    use std::io::{Seek, SeekFrom};
    let dek = DataKey::generate();
    let data = body(5 * CS as usize + 123);
    let obj = seal(&dek, &data);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o");
    std::fs::write(&path, &obj).unwrap();
    let file = std::sync::Arc::new(std::fs::File::open(&path).unwrap());
    let (_, _, mut ra) = verify_file(file.clone(), &dek, &expected()).unwrap();
    assert_eq!(ra.len(), data.len() as u64);
    for (pos, n) in [
        (0usize, 10usize),
        (CS as usize - 5, 10),
        (3 * CS as usize + 7, 2 * CS as usize),
        (data.len() - 3, 3),
    ] {
        ra.seek(SeekFrom::Start(pos as u64)).unwrap();
        let mut buf = vec![0u8; n];
        ra.read_exact(&mut buf).unwrap();
        assert_eq!(buf, &data[pos..pos + n], "at {pos}");
    }
    ra.seek(SeekFrom::End(0)).unwrap();
    let mut rest = Vec::new();
    assert_eq!(ra.read_to_end(&mut rest).unwrap(), 0);
    // A truncated or tampered file fails verification before any plaintext is handed out.
    std::fs::write(&path, &obj[..obj.len() - 1]).unwrap();
    let f = std::sync::Arc::new(std::fs::File::open(&path).unwrap());
    assert!(verify_file(f, &dek, &expected()).is_err());
    // A file changed after verification fails when the changed chunk is read.
    let mut bad = obj.clone();
    let hl = header_len(&obj).unwrap();
    bad[hl + (CS as usize + stream::TAG_LEN) + 5] ^= 1; // inside chunk 1
    std::fs::write(&path, &bad).unwrap(); // same inode: the open handle sees it
    let mut ra2 = ra.clone();
    ra2.seek(SeekFrom::Start(CS as u64 + 3)).unwrap();
    let mut buf = [0u8; 10];
    let _ = file;
    let err = ra2.read_exact(&mut buf).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}
