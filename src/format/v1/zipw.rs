//! A minimal streaming ZIP writer: entries whose compressed bytes are ready (produced in
//! parallel by the packer) and entries streamed with a data descriptor, with ZIP64 where
//! sizes or offsets need it. Output needs no `Seek`, so it can feed the encryptor directly.
//!
//! Timestamps are fixed (1980-01-01) and modes are 0600/0700, so the same tree gives the
//! same bytes.

use std::io::{self, Write};

/// Compression method ids (APPNOTE 4.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// 0: stored.
    Stored,
    /// 8: deflate.
    Deflate,
    /// 93: zstd.
    Zstd,
}

impl Method {
    fn id(self) -> u16 {
        match self {
            Method::Stored => 0,
            Method::Deflate => 8,
            Method::Zstd => 93,
        }
    }
    fn version_needed(self, zip64: bool) -> u16 {
        match self {
            Method::Zstd => 63,
            _ if zip64 => 45,
            Method::Deflate => 20,
            Method::Stored => 10,
        }
    }
}

const FLAG_DESCRIPTOR: u16 = 1 << 3;
const FLAG_UTF8: u16 = 1 << 11;
const DOS_DATE_1980: u16 = (1 << 5) | 1;
const U32_MAX: u64 = 0xFFFF_FFFF;

struct Central {
    name: Vec<u8>,
    method: Method,
    flags: u16,
    crc: u32,
    comp: u64,
    uncomp: u64,
    offset: u64,
    dir: bool,
}

/// Counts bytes written through it.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a ZIP archive sequentially.
pub struct ZipWriter<W: Write> {
    out: Counting<W>,
    entries: Vec<Central>,
}

impl<W: Write> ZipWriter<W> {
    /// Starts an archive.
    pub fn new(inner: W) -> Self {
        ZipWriter {
            out: Counting { inner, n: 0 },
            entries: Vec::new(),
        }
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.out.n
    }

    /// Adds a directory entry (`name` without trailing slash).
    ///
    /// # Errors
    /// I/O errors.
    pub fn add_dir(&mut self, name: &str) -> io::Result<()> {
        let name = format!("{name}/").into_bytes();
        self.add_raw(name, Method::Stored, 0, 0, &[], true)
    }

    /// Adds a file whose compressed bytes are known.
    ///
    /// # Errors
    /// I/O errors.
    pub fn add_compressed(
        &mut self,
        name: &str,
        method: Method,
        crc: u32,
        uncomp: u64,
        data: &[u8],
    ) -> io::Result<()> {
        self.add_raw(name.as_bytes().to_vec(), method, crc, uncomp, data, false)
    }

    fn add_raw(
        &mut self,
        name: Vec<u8>,
        method: Method,
        crc: u32,
        uncomp: u64,
        data: &[u8],
        dir: bool,
    ) -> io::Result<()> {
        let offset = self.out.n;
        let comp = data.len() as u64;
        let zip64 = comp >= U32_MAX || uncomp >= U32_MAX;
        let mut h = Vec::with_capacity(30 + name.len() + 20);
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&method.version_needed(zip64).to_le_bytes());
        h.extend_from_slice(&FLAG_UTF8.to_le_bytes());
        h.extend_from_slice(&method.id().to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&DOS_DATE_1980.to_le_bytes());
        h.extend_from_slice(&crc.to_le_bytes());
        if zip64 {
            h.extend_from_slice(&(U32_MAX as u32).to_le_bytes());
            h.extend_from_slice(&(U32_MAX as u32).to_le_bytes());
        } else {
            h.extend_from_slice(&(comp as u32).to_le_bytes());
            h.extend_from_slice(&(uncomp as u32).to_le_bytes());
        }
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&(if zip64 { 20u16 } else { 0 }).to_le_bytes());
        h.extend_from_slice(&name);
        if zip64 {
            h.extend_from_slice(&1u16.to_le_bytes());
            h.extend_from_slice(&16u16.to_le_bytes());
            h.extend_from_slice(&uncomp.to_le_bytes());
            h.extend_from_slice(&comp.to_le_bytes());
        }
        self.out.write_all(&h)?;
        self.out.write_all(data)?;
        self.entries.push(Central {
            name,
            method,
            flags: FLAG_UTF8,
            crc,
            comp,
            uncomp,
            offset,
            dir,
        });
        Ok(())
    }

    /// Starts a streamed entry; write its compressed bytes to the returned writer, then
    /// call [`ZipWriter::end_streamed`] with the CRC and uncompressed size.
    ///
    /// # Errors
    /// I/O errors.
    pub fn begin_streamed(
        &mut self,
        name: &str,
        method: Method,
    ) -> io::Result<(u64, &mut impl Write)> {
        let offset = self.out.n;
        let name = name.as_bytes();
        let mut h = Vec::with_capacity(30 + name.len() + 20);
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&method.version_needed(true).to_le_bytes());
        h.extend_from_slice(&(FLAG_UTF8 | FLAG_DESCRIPTOR).to_le_bytes());
        h.extend_from_slice(&method.id().to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&DOS_DATE_1980.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&(U32_MAX as u32).to_le_bytes());
        h.extend_from_slice(&(U32_MAX as u32).to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&20u16.to_le_bytes());
        h.extend_from_slice(name);
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(&[0u8; 16]);
        self.out.write_all(&h)?;
        let data_start = self.out.n;
        self.entries.push(Central {
            name: name.to_vec(),
            method,
            flags: FLAG_UTF8 | FLAG_DESCRIPTOR,
            crc: 0,
            comp: 0,
            uncomp: 0,
            offset,
            dir: false,
        });
        Ok((data_start, &mut self.out))
    }

    /// Ends a streamed entry with its data descriptor.
    ///
    /// # Errors
    /// I/O errors.
    pub fn end_streamed(&mut self, data_start: u64, crc: u32, uncomp: u64) -> io::Result<()> {
        let comp = self.out.n - data_start;
        let mut d = Vec::with_capacity(24);
        d.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
        d.extend_from_slice(&crc.to_le_bytes());
        d.extend_from_slice(&comp.to_le_bytes());
        d.extend_from_slice(&uncomp.to_le_bytes());
        self.out.write_all(&d)?;
        let e = self
            .entries
            .last_mut()
            .expect("begin_streamed pushed an entry");
        e.crc = crc;
        e.comp = comp;
        e.uncomp = uncomp;
        Ok(())
    }

    /// Writes the central directory and returns the inner writer and total size.
    ///
    /// # Errors
    /// I/O errors.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        let cd_start = self.out.n;
        let mut buf = Vec::with_capacity(64 * 1024);
        for e in &self.entries {
            let mut extra = Vec::new();
            let big_u = e.uncomp >= U32_MAX || e.flags & FLAG_DESCRIPTOR != 0;
            let big_c = e.comp >= U32_MAX || e.flags & FLAG_DESCRIPTOR != 0;
            let big_o = e.offset >= U32_MAX;
            if big_u {
                extra.extend_from_slice(&e.uncomp.to_le_bytes());
            }
            if big_c {
                extra.extend_from_slice(&e.comp.to_le_bytes());
            }
            if big_o {
                extra.extend_from_slice(&e.offset.to_le_bytes());
            }
            let zip64 = !extra.is_empty();
            let mode: u32 = if e.dir { 0o040_700 } else { 0o100_600 };
            let external = (mode << 16) | (u32::from(e.dir) * 0x10);
            buf.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            buf.extend_from_slice(&(0x0300u16 | 63).to_le_bytes());
            buf.extend_from_slice(
                &e.method
                    .version_needed(zip64 || e.flags & FLAG_DESCRIPTOR != 0)
                    .to_le_bytes(),
            );
            buf.extend_from_slice(&e.flags.to_le_bytes());
            buf.extend_from_slice(&e.method.id().to_le_bytes());
            buf.extend_from_slice(&0u16.to_le_bytes());
            buf.extend_from_slice(&DOS_DATE_1980.to_le_bytes());
            buf.extend_from_slice(&e.crc.to_le_bytes());
            buf.extend_from_slice(&(if big_c { U32_MAX } else { e.comp } as u32).to_le_bytes());
            buf.extend_from_slice(&(if big_u { U32_MAX } else { e.uncomp } as u32).to_le_bytes());
            buf.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            buf.extend_from_slice(&(if zip64 { extra.len() as u16 + 4 } else { 0 }).to_le_bytes());
            buf.extend_from_slice(&0u16.to_le_bytes()); // comment
            buf.extend_from_slice(&0u16.to_le_bytes()); // disk
            buf.extend_from_slice(&0u16.to_le_bytes()); // internal attrs
            buf.extend_from_slice(&external.to_le_bytes());
            buf.extend_from_slice(&(if big_o { U32_MAX } else { e.offset } as u32).to_le_bytes());
            buf.extend_from_slice(&e.name);
            if zip64 {
                buf.extend_from_slice(&1u16.to_le_bytes());
                buf.extend_from_slice(&(extra.len() as u16).to_le_bytes());
                buf.extend_from_slice(&extra);
            }
            if buf.len() >= 60 * 1024 {
                self.out.write_all(&buf)?;
                buf.clear();
            }
        }
        self.out.write_all(&buf)?;
        let cd_end = self.out.n;
        let cd_size = cd_end - cd_start;
        let count = self.entries.len() as u64;
        let need64 = count >= 0xFFFF || cd_size >= U32_MAX || cd_start >= U32_MAX;
        let mut t = Vec::with_capacity(100);
        if need64 {
            t.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
            t.extend_from_slice(&44u64.to_le_bytes());
            t.extend_from_slice(&(0x0300u16 | 63).to_le_bytes());
            t.extend_from_slice(&45u16.to_le_bytes());
            t.extend_from_slice(&0u32.to_le_bytes());
            t.extend_from_slice(&0u32.to_le_bytes());
            t.extend_from_slice(&count.to_le_bytes());
            t.extend_from_slice(&count.to_le_bytes());
            t.extend_from_slice(&cd_size.to_le_bytes());
            t.extend_from_slice(&cd_start.to_le_bytes());
            t.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
            t.extend_from_slice(&0u32.to_le_bytes());
            t.extend_from_slice(&cd_end.to_le_bytes());
            t.extend_from_slice(&1u32.to_le_bytes());
        }
        t.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        t.extend_from_slice(&0u16.to_le_bytes());
        t.extend_from_slice(&0u16.to_le_bytes());
        let c16 = if need64 { 0xFFFF } else { count as u16 };
        t.extend_from_slice(&c16.to_le_bytes());
        t.extend_from_slice(&c16.to_le_bytes());
        t.extend_from_slice(&(if need64 { U32_MAX } else { cd_size } as u32).to_le_bytes());
        t.extend_from_slice(&(if need64 { U32_MAX } else { cd_start } as u32).to_le_bytes());
        t.extend_from_slice(&0u16.to_le_bytes());
        self.out.write_all(&t)?;
        self.out.flush()?;
        let total = self.out.n;
        Ok((self.out.inner, total))
    }
}
