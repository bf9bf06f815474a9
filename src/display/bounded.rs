//! The stream under the daemon's X connections, which refuses a packet longer than
//! [`MAX_PACKET`]: the X server runs in the session's sandbox as the browser's uid, so code
//! that took the browser over could make it send anything, and the X library allocates a
//! packet's whole length (up to 16 GiB) as soon as it reads its header. Here every packet's
//! length is read from its header as it passes (the setup reply's, a reply's, a generic
//! event's; other events and errors are 32 bytes) and a longer one ends the connection
//! before the library sees it.
//!
//! The server could also flood: descriptors passed with its bytes are closed at once (the
//! daemon asks for none), and events the connection's owner has not drained are held to
//! [`MAX_PENDING_EVENTS`] bytes ([`Bounded::drained`] says they were taken).

use std::io::IoSlice;
use std::sync::Mutex;

use x11rb::rust_connection::{DefaultStream, PollMode, Stream};
use x11rb::utils::RawFdContainer;

/// The longest packet taken from the X server: a whole 4K screen of 32-bit pixels is 33 MB.
pub const MAX_PACKET: u64 = 64 << 20;

/// The most bytes of events received and not yet drained by the connection's owner.
pub const MAX_PENDING_EVENTS: u64 = 16 << 20;

/// A [`DefaultStream`] whose incoming packets are held to [`MAX_PACKET`].
#[derive(Debug)]
pub struct Bounded {
    inner: DefaultStream,
    framer: Mutex<Framer>,
}

impl Bounded {
    /// Wraps a stream before the connection's setup.
    pub fn new(inner: DefaultStream) -> Bounded {
        Bounded {
            inner,
            framer: Mutex::new(Framer::default()),
        }
    }

    /// The connection's owner took every event received so far (`poll_for_event` answered
    /// `None`).
    pub fn drained(&self) {
        self.framer.lock().expect("x framer").pending_events = 0;
    }
}

impl std::os::fd::AsRawFd for Bounded {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.inner.as_raw_fd()
    }
}

impl Stream for Bounded {
    fn poll(&self, mode: PollMode) -> std::io::Result<()> {
        self.inner.poll(mode)
    }

    fn read(&self, buf: &mut [u8], fds: &mut Vec<RawFdContainer>) -> std::io::Result<usize> {
        let n = self.inner.read(buf, fds)?;
        // The daemon asks for no descriptor: any the server passes is closed here.
        fds.clear();
        self.framer.lock().expect("x framer").feed(&buf[..n])?;
        Ok(n)
    }

    fn write(&self, buf: &[u8], fds: &mut Vec<RawFdContainer>) -> std::io::Result<usize> {
        self.inner.write(buf, fds)
    }

    fn write_vectored(
        &self,
        bufs: &[IoSlice<'_>],
        fds: &mut Vec<RawFdContainer>,
    ) -> std::io::Result<usize> {
        self.inner.write_vectored(bufs, fds)
    }
}

/// Where the incoming byte stream is: in a header (`have` bytes of it), or in a body
/// (`skip` bytes left). The client speaks its own byte order, so the server answers in it.
#[derive(Debug, Default)]
struct Framer {
    /// Whether the setup reply's header was read (packets follow it).
    set_up: bool,
    head: [u8; 32],
    have: usize,
    skip: u64,
    /// The stream was refused: nothing more is taken.
    refused: bool,
    /// Bytes of events since the owner last drained them.
    pending_events: u64,
}

impl Framer {
    fn feed(&mut self, mut b: &[u8]) -> std::io::Result<()> {
        while !b.is_empty() && !self.refused {
            if self.skip > 0 {
                let n = self.skip.min(b.len() as u64);
                self.skip -= n;
                b = &b[n as usize..];
                continue;
            }
            // The setup reply's header is 8 bytes; every packet's is 32.
            let want = if self.set_up { 32 } else { 8 };
            let n = (want - self.have).min(b.len());
            self.head[self.have..self.have + n].copy_from_slice(&b[..n]);
            self.have += n;
            b = &b[n..];
            if self.have < want {
                break;
            }
            self.have = 0;
            let h = &self.head;
            // Replies (1) and errors (0) are taken by the requests awaiting them; events
            // wait in the library's queue until the owner drains it.
            let event = self.set_up && h[0] > 1;
            let extra = if !self.set_up {
                self.set_up = true;
                u64::from(u16::from_ne_bytes([h[6], h[7]])) * 4
            } else if h[0] == 1 || h[0] & 0x7f == 35 {
                // A reply, or a generic event: 32 bytes and `length` 4-byte units more.
                u64::from(u32::from_ne_bytes([h[4], h[5], h[6], h[7]])) * 4
            } else {
                0
            };
            if event {
                self.pending_events += extra + 32;
                if self.pending_events > MAX_PENDING_EVENTS {
                    self.refused = true;
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the X server sent more events than were taken",
                    ));
                }
            }
            if extra + 32 > MAX_PACKET {
                self.refused = true;
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("the X server sent a packet of {} bytes", extra + 32),
                ));
            }
            self.skip = extra;
        }
        if self.refused {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the X server sent a packet over the bound",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(extra_units: u16) -> Vec<u8> {
        let mut v = vec![1, 0, 11, 0, 0, 0];
        v.extend_from_slice(&extra_units.to_ne_bytes());
        v.extend(vec![7u8; usize::from(extra_units) * 4]);
        v
    }

    fn packet(kind: u8, units: u32) -> Vec<u8> {
        let mut v = vec![kind, 0, 0, 0];
        v.extend_from_slice(&units.to_ne_bytes());
        v.resize(32 + units as usize * 4, 9);
        v
    }

    #[test]
    fn packets_are_followed_and_an_oversized_one_is_refused() {
        // Setup, a reply of 8 more bytes, an event, an error, a generic event, a reply of
        // one whole (bounded) screen: fed at once and byte by byte.
        let mut ok = setup(3);
        for p in [
            packet(1, 2),
            packet(12, 0),
            packet(0, 0),
            packet(35 | 0x80, 1),
            packet(1, (33 << 20) / 4),
        ] {
            ok.extend(p);
        }
        Framer::default().feed(&ok).unwrap();
        let mut f = Framer::default();
        for b in &ok {
            f.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!((f.have, f.skip), (0, 0), "ends between packets");

        // A reply or a generic event claiming 16 GiB is refused from its header alone, and
        // nothing after it is taken.
        for kind in [1u8, 35] {
            let mut bad = setup(0);
            bad.extend(&packet(1, 1));
            let mut head = vec![kind, 0, 0, 0];
            head.extend_from_slice(&u32::MAX.to_ne_bytes());
            head.resize(32, 0);
            bad.extend(&head);
            let mut f = Framer::default();
            assert!(f.feed(&bad).is_err(), "{kind}");
            assert!(f.feed(&[0; 32]).is_err());
        }
        // Just over the bound: refused too.
        let mut over = setup(0);
        let mut head = vec![1u8, 0, 0, 0];
        head.extend_from_slice(&(((MAX_PACKET - 32) / 4) as u32 + 1).to_ne_bytes());
        head.resize(32, 0);
        over.extend(&head);
        assert!(Framer::default().feed(&over).is_err());
    }

    #[test]
    fn undrained_events_are_bounded() {
        let mut f = Framer::default();
        f.feed(&setup(0)).unwrap();
        let event = packet(12, 0);
        let n = MAX_PENDING_EVENTS / 32;
        for _ in 0..n {
            f.feed(&event).unwrap();
        }
        // Replies and errors are not events; draining starts the count again.
        f.feed(&packet(1, 0)).unwrap();
        f.feed(&packet(0, 0)).unwrap();
        f.pending_events = 0;
        for _ in 0..n {
            f.feed(&event).unwrap();
        }
        assert!(f.feed(&event).is_err(), "one event past the bound");
    }

    #[test]
    #[allow(unsafe_code)]
    fn descriptors_the_server_passes_are_closed() {
        use std::os::fd::AsRawFd;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let passed = std::fs::File::open("/dev/null").unwrap();
        // sendmsg with one SCM_RIGHTS descriptor and one byte.
        let byte = [1u8];
        let mut iov = libc::iovec {
            iov_base: byte.as_ptr() as *mut libc::c_void,
            iov_len: 1,
        };
        let mut cbuf = [0u64; 8];
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), passed.as_raw_fd());
            assert_eq!(libc::sendmsg(theirs.as_raw_fd(), &msg, 0), 1);
        }
        let (stream, _) = DefaultStream::from_unix_stream(ours).unwrap();
        let b = Bounded::new(stream);
        let (mut buf, mut fds) = ([0u8; 8], Vec::new());
        assert_eq!(b.read(&mut buf, &mut fds).unwrap(), 1);
        assert!(fds.is_empty(), "a passed descriptor was kept: {fds:?}");
    }
}
