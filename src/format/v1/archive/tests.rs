use super::*;
use crate::progress::NoProgress;
use std::os::unix::fs::PermissionsExt;

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn sample_profile(root: &Path) {
    write(root, "Local State", b"{\"a\":1}");
    write(root, "Last Version", b"156.0.8078.79\n");
    write(
        root,
        "Default/Preferences",
        br#"{"profile":{"exit_type":"Normal"}}"#,
    );
    write(
        root,
        "Default/Cookies",
        b"SQLite format 3\0....v10xxxxxxxxxxxxxxxxxxxx",
    );
    write(root, "Default/Cookies-journal", b"");
    write(
        root,
        "Default/Local Storage/leveldb/000003.log",
        &vec![7u8; 5000],
    );
    write(
        root,
        "Default/Local Storage/leveldb/LOG",
        b"log with /old/path",
    );
    write(root, "Default/Local Storage/leveldb/LOCK", b"");
    write(root, "Default/Cache/Cache_Data/data_0", &vec![1u8; 10000]);
    write(root, "Default/Code Cache/js/abc", b"code");
    // Large and incompressible: streamed through the multi-threaded encoder.
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    write(
        root,
        "Default/IndexedDB/https_x_0.indexeddb.blob/1/00/1",
        &big,
    );
    fs::create_dir_all(root.join("Default/Empty Dir")).unwrap();
    std::os::unix::fs::symlink("host-123", root.join("SingletonLock")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("Default/evil-link")).unwrap();
}

fn pack_to_file(src: &Path, zip_path: &Path, opts: &PackOptions) -> PackStats {
    let f = File::create(zip_path).unwrap();
    let (_, stats) = pack(src, f, opts, &Limits::default(), &NoProgress).unwrap();
    stats
}

#[test]
fn round_trip_keeps_what_matters_and_leaves_out_the_rest() {
    for compression in [Compression::Zstd, Compression::Deflate] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        sample_profile(&src);
        let zip_path = tmp.path().join("p.zip");
        let opts = PackOptions {
            compression,
            ..PackOptions::default()
        };
        let stats = pack_to_file(&src, &zip_path, &opts);
        assert_eq!(stats.chromium_version.as_deref(), Some("156.0.8078.79"));
        // exit_type says Normal, but a SingletonLock was left behind: a crash snapshot.
        assert_eq!(stats.clean_exit, Some(false));
        fs::remove_file(src.join("SingletonLock")).unwrap();
        let again = pack_to_file(&src, &tmp.path().join("p2.zip"), &opts);
        assert_eq!(again.clean_exit, Some(true));
        std::os::unix::fs::symlink("host-123", src.join("SingletonLock")).unwrap();
        assert!(!stats.cookie_v11_warning);
        assert_eq!(stats.skipped_special, 2, "two symlinks skipped");
        assert!(stats.excluded >= 4, "{stats:?}");
        let dst = tmp.path().join("dst");
        let un = unpack(&zip_path, &dst, &Limits::default(), &NoProgress).unwrap();
        assert_eq!(un.files, stats.files);
        assert_eq!(
            fs::read(dst.join("Default/IndexedDB/https_x_0.indexeddb.blob/1/00/1")).unwrap(),
            fs::read(src.join("Default/IndexedDB/https_x_0.indexeddb.blob/1/00/1")).unwrap()
        );
        assert_eq!(fs::read(dst.join("Local State")).unwrap(), b"{\"a\":1}");
        assert!(dst.join("Default/Cookies-journal").exists());
        assert!(dst.join("Default/Empty Dir").is_dir());
        assert!(!dst.join("Default/Cache").exists());
        assert!(!dst.join("Default/Code Cache").exists());
        assert!(!dst.join("Default/Local Storage/leveldb/LOG").exists());
        assert!(!dst.join("Default/Local Storage/leveldb/LOCK").exists());
        assert!(fs::symlink_metadata(dst.join("SingletonLock")).is_err());
        assert!(fs::symlink_metadata(dst.join("Default/evil-link")).is_err());
        let mode = fs::metadata(dst.join("Local State"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(dst.join("Default"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
        // The archive is a standard ZIP that check() accepts.
        assert_eq!(
            check(&zip_path, &Limits::default()).unwrap().files,
            stats.files
        );
    }
}

#[test]
fn v11_cookies_and_unclean_exit_are_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(
        &src,
        "Default/Preferences",
        br#"{"profile":{"exit_type":"Crashed"}}"#,
    );
    // A real cookie database: the warning comes from its rows, not from bytes that look alike.
    let db = src.join("Default/Cookies");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE cookies (host_key TEXT, name TEXT, encrypted_value BLOB, is_persistent INTEGER);
         INSERT INTO cookies VALUES ('.a.test', 'x', x'7631300102', 1), ('.v11.test', 'v11', x'763130ff', 1);",
    )
    .unwrap();
    let stats = pack_to_file(&src, &tmp.path().join("z"), &PackOptions::default());
    assert!(!stats.cookie_v11_warning, "v10 values only (v11 in names)");
    conn.execute(
        "INSERT INTO cookies VALUES ('.b.test', 'y', x'7631310102', 1)",
        [],
    )
    .unwrap();
    drop(conn);
    let stats = pack_to_file(&src, &tmp.path().join("z2"), &PackOptions::default());
    assert!(stats.cookie_v11_warning);
    assert_eq!(stats.clean_exit, Some(false));
}

#[test]
fn output_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    sample_profile(&src);
    pack_to_file(&src, &tmp.path().join("a"), &PackOptions::default());
    pack_to_file(
        &src,
        &tmp.path().join("b"),
        &PackOptions {
            threads: 1,
            ..PackOptions::default()
        },
    );
    assert_eq!(
        fs::read(tmp.path().join("a")).unwrap(),
        fs::read(tmp.path().join("b")).unwrap()
    );
}

/// Builds an archive with arbitrary names using the crate's own writer.
fn hostile(entries: &[(&str, &[u8])]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("h.zip");
    let mut z = ZipWriter::new(File::create(&path).unwrap());
    for (name, data) in entries {
        z.add_compressed(
            name,
            Method::Stored,
            crc32fast::hash(data),
            data.len() as u64,
            data,
        )
        .unwrap();
    }
    z.finish().unwrap();
    (tmp, path)
}

fn expect_rejected(zip: &Path, limits: &Limits) -> Error {
    let parent = zip.parent().unwrap();
    let target = parent.join("target");
    let err = unpack(zip, &target, limits, &NoProgress).unwrap_err();
    assert!(!target.exists(), "target must not be created");
    let leftovers: Vec<_> = fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains("pv-staging"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    err
}

#[test]
fn hostile_names_are_rejected() {
    for name in [
        "../evil",
        "a/../../evil",
        "/etc/passwd",
        "a\\b",
        "a//b",
        "./a",
        "C:/x",
        "a\0b",
    ] {
        let (_t, z) = hostile(&[("ok", b"1"), (name, b"x")]);
        let err = expect_rejected(&z, &Limits::default());
        assert!(matches!(err, Error::UnsafeName { .. }), "{name:?}: {err}");
    }
}

#[test]
fn duplicates_and_clashes_are_rejected() {
    let (_t, z) = hostile(&[("a", b"1"), ("a", b"2")]);
    assert!(matches!(
        expect_rejected(&z, &Limits::default()),
        Error::Duplicate(_)
    ));
    let (_t, z) = hostile(&[("a", b"1"), ("a/b", b"2")]);
    assert!(matches!(
        expect_rejected(&z, &Limits::default()),
        Error::Duplicate(_)
    ));
}

#[test]
fn symlink_entries_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s.zip");
    let mut z = zip::ZipWriter::new(File::create(&path).unwrap());
    z.add_symlink(
        "link",
        "/etc/passwd",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    z.finish().unwrap();
    assert!(matches!(
        expect_rejected(&path, &Limits::default()),
        Error::Symlink(_)
    ));
}

/// Sets the Unix mode of the first central-directory entry of an archive.
fn patch_mode(path: &Path, mode: u32) {
    let mut b = fs::read(path).unwrap();
    let pos = b
        .windows(4)
        .position(|w| w == [0x50, 0x4b, 0x01, 0x02])
        .unwrap();
    b[pos + 38..pos + 42].copy_from_slice(&(mode << 16).to_le_bytes());
    fs::write(path, b).unwrap();
}

#[test]
fn special_files_and_patched_links_are_rejected() {
    for (mode, what) in [
        (0o020_644, "char device"),
        (0o060_644, "block device"),
        (0o010_644, "fifo"),
        (0o140_644, "socket"),
    ] {
        let (_t, z) = hostile(&[("dev", b"")]);
        patch_mode(&z, mode);
        let err = expect_rejected(&z, &Limits::default());
        assert!(matches!(err, Error::SpecialFile { .. }), "{what}: {err}");
    }
    let (_t, z) = hostile(&[("link", b"/etc/passwd")]);
    patch_mode(&z, 0o120_777);
    assert!(matches!(
        expect_rejected(&z, &Limits::default()),
        Error::Symlink(_)
    ));
}

#[test]
fn limits_are_enforced() {
    let (_t, z) = hostile(&[("a", b"1"), ("b", b"2"), ("c", b"3")]);
    let l = Limits {
        max_files: 2,
        ..Limits::default()
    };
    assert!(matches!(
        expect_rejected(&z, &l),
        Error::TooManyFiles { .. }
    ));
    let (_t, z) = hostile(&[("a", &[0u8; 100])]);
    let l = Limits {
        max_file_size: 50,
        ..Limits::default()
    };
    assert!(matches!(
        expect_rejected(&z, &l),
        Error::FileTooLarge { .. }
    ));
    let (_t, z) = hostile(&[("a", &[0u8; 60]), ("b", &[0u8; 60])]);
    let l = Limits {
        max_total_size: 100,
        ..Limits::default()
    };
    assert!(matches!(
        expect_rejected(&z, &l),
        Error::TotalTooLarge { .. }
    ));
}

#[test]
fn zip_bomb_is_rejected() {
    // 64 MiB of zeros compresses to a few KiB.
    let tmp = tempfile::tempdir().unwrap();
    let zeros = vec![0u8; 64 << 20];
    let packed = zstd::bulk::compress(&zeros, 3).unwrap();
    assert!(packed.len() < 64 * 1024);
    let path = tmp.path().join("bomb.zip");
    let mut z = ZipWriter::new(File::create(&path).unwrap());
    z.add_compressed(
        "bomb",
        Method::Zstd,
        crc32fast::hash(&zeros),
        zeros.len() as u64,
        &packed,
    )
    .unwrap();
    z.finish().unwrap();
    assert!(matches!(
        expect_rejected(&path, &Limits::default()),
        Error::RatioTooHigh { .. }
    ));
}

#[test]
fn lying_sizes_and_crcs_are_caught() {
    // Declares 5 bytes but holds 10 (stored): the reader must not write past the declaration.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("lie.zip");
    let mut z = ZipWriter::new(File::create(&path).unwrap());
    z.add_compressed(
        "a",
        Method::Stored,
        crc32fast::hash(b"0123456789"),
        5,
        b"0123456789",
    )
    .unwrap();
    z.finish().unwrap();
    assert!(unpack(
        &path,
        &tmp.path().join("t"),
        &Limits::default(),
        &NoProgress
    )
    .is_err());
    assert!(!tmp.path().join("t").exists());
    let path = tmp.path().join("crc.zip");
    let mut z = ZipWriter::new(File::create(&path).unwrap());
    z.add_compressed("a", Method::Stored, 12345, 3, b"abc")
        .unwrap();
    z.finish().unwrap();
    assert!(matches!(
        expect_rejected(&path, &Limits::default()),
        Error::Damaged { .. }
    ));
}

#[test]
fn target_must_be_new_or_empty() {
    let (t, z) = hostile(&[("a", b"1")]);
    let target = t.path().join("full");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("x"), b"keep me").unwrap();
    assert!(matches!(
        unpack(&z, &target, &Limits::default(), &NoProgress),
        Err(Error::TargetNotEmpty(_))
    ));
    assert_eq!(fs::read(target.join("x")).unwrap(), b"keep me");
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    unpack(&z, &empty, &Limits::default(), &NoProgress).unwrap();
    assert_eq!(fs::read(empty.join("a")).unwrap(), b"1");
}

#[test]
fn garbage_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("g.zip");
    fs::write(&p, b"this is not a zip file at all").unwrap();
    assert!(matches!(
        expect_rejected(&p, &Limits::default()),
        Error::Corrupt(_)
    ));
}

#[test]
fn what_a_restore_would_refuse_is_not_packed() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("p");
    write(&src, "a", &[0u8; 60]);
    write(&src, "d/b", &[0u8; 60]);
    let over = |limits: Limits| {
        let e = pack(
            &src,
            std::io::sink(),
            &PackOptions::default(),
            &limits,
            &NoProgress,
        )
        .map(|_| ())
        .expect_err("refused");
        let walked = walk_profile(&src, &PackOptions::default().excludes, &limits)
            .map(|_| ())
            .expect_err("refused by the walk too");
        assert_eq!(e.to_string(), walked.to_string());
        match e {
            Error::OverLimits(inner) => *inner,
            other => panic!("{other}"),
        }
    };
    let files = Limits {
        max_files: 2,
        ..Limits::default()
    };
    assert!(matches!(
        over(files),
        Error::TooManyFiles { count: 3, limit: 2 }
    ));
    let size = Limits {
        max_file_size: 50,
        ..Limits::default()
    };
    assert!(matches!(over(size), Error::FileTooLarge { size: 60, .. }));
    let total = Limits {
        max_total_size: 100,
        ..Limits::default()
    };
    assert!(matches!(
        over(total),
        Error::TotalTooLarge { total: 120, .. }
    ));
    // Within the limits: packed.
    assert!(pack(
        &src,
        std::io::sink(),
        &PackOptions::default(),
        &Limits::default(),
        &NoProgress
    )
    .is_ok());
}
