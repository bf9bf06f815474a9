//! A headful browser's virtual display, seen from the daemon: the X server (Xvnc or Xvfb) the
//! sandbox's init started, reached through its socket in the browser's run directory.
//!
//! - [`capture`]: ONE capture per session, whatever the number of viewers. The X DAMAGE
//!   extension says what changed; only those rectangles are read and sent, as JPEG tiles
//!   ([`Tile`]), at most [`FPS`] times a second, and nothing at all while the screen is
//!   still or nobody watches. A viewer that joins (or falls behind) gets a whole-screen
//!   keyframe, then the tiles after it.
//! - [`input`]: mouse, wheel, keys and text at the display level (XTEST), so Chromium's own
//!   UI — tab strip, address bar, menus, bubbles, dialogs, `<select>` lists — answers them
//!   as it answers a person's hands; text in any script arrives exactly.
//! - [`keys`]: DOM key names to X keysyms;
//! - [`audio`]: the session's sound (PulseAudio's pipe sink in the sandbox), as µ-law packets
//!   to every viewer while something plays.
//!
//! The X server is the browser's: it runs inside the sandbox as the browser's uid. Nothing it
//! sends is trusted beyond "pixels": sizes are clamped to the screen the daemon asked for,
//! and no packet longer than [`bounded::MAX_PACKET`] is read ([`bounded`]).

pub mod audio;
pub mod bounded;
pub mod capture;
pub mod input;
pub mod keys;
pub mod screen;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use x11rb::rust_connection::{DefaultStream, RustConnection};

pub use audio::Sound;
pub use capture::{Capture, Tile};
pub use input::Input;

/// Most frames per second the capture sends: a little over 30, so an animating page is seen
/// at 30 whatever the scheduling jitter, at a bounded cost (~0.6 % of a core per frame per
/// second at 1280x720 on this project's 2-core reference machine).
pub const FPS: u32 = 32;

/// What every display of this daemon produced (for `/metrics`): made once, sent to every
/// viewer of the session.
#[derive(Debug)]
pub struct Counters {
    /// Tiles of what changed.
    pub tiles: AtomicU64,
    /// Whole-screen keyframes (viewers joining or behind).
    pub keyframes: AtomicU64,
    /// JPEG bytes of both.
    pub picture_bytes: AtomicU64,
    /// Sound packets (silence is not sent).
    pub audio_packets: AtomicU64,
    /// Their bytes.
    pub audio_bytes: AtomicU64,
}

/// The daemon's display counters.
pub static COUNTERS: Counters = Counters {
    tiles: AtomicU64::new(0),
    keyframes: AtomicU64::new(0),
    picture_bytes: AtomicU64::new(0),
    audio_packets: AtomicU64::new(0),
    audio_bytes: AtomicU64::new(0),
};

/// Errors of talking to a display.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket or the X connection failed.
    #[error("the virtual display: {0}")]
    Connect(String),
    /// The X server lacks an extension the live view needs.
    #[error("the virtual display has no {0} extension")]
    Missing(&'static str),
    /// A request failed.
    #[error("the virtual display: {0}")]
    Request(String),
    /// The X server's screen has a fixed size (Xvfb).
    #[error("the virtual display cannot change its size (Xvfb; Xvnc can)")]
    NotResizable,
}

impl From<x11rb::errors::ConnectionError> for Error {
    fn from(e: x11rb::errors::ConnectionError) -> Self {
        Error::Request(e.to_string())
    }
}

impl From<x11rb::errors::ReplyOrIdError> for Error {
    fn from(e: x11rb::errors::ReplyOrIdError) -> Self {
        Error::Request(e.to_string())
    }
}

impl From<x11rb::errors::ReplyError> for Error {
    fn from(e: x11rb::errors::ReplyError) -> Self {
        Error::Request(e.to_string())
    }
}

/// An X connection of the daemon's, its incoming packets bounded ([`bounded`]).
pub(crate) type Conn = RustConnection<bounded::Bounded>;

/// Opens a new X connection on the display's socket.
/// The socket is in a directory the browser's uid owns: it could have put a symlink there to
/// any socket the daemon may open, or swap one in after a check. So the socket is opened
/// (`O_PATH | O_NOFOLLOW`), checked to be a socket, and connected to through that very
/// descriptor; and the server that answers must run as the browser's `uid` (its X server
/// does).
pub(crate) fn connect(socket: &Path, uid: u32) -> Result<Conn, Error> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let refuse = |why: &str| Error::Connect(format!("{}: {why}", socket.display()));
    let node = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(socket)
        .map_err(|e| refuse(&e.to_string()))?;
    let meta = node.metadata().map_err(|e| refuse(&e.to_string()))?;
    if !meta.file_type().is_socket() {
        return Err(refuse("not a socket"));
    }
    let s = UnixStream::connect(format!("/proc/self/fd/{}", node.as_raw_fd()))
        .map_err(|e| refuse(&e.to_string()))?;
    drop(node);
    if peer_uid(&s).map_err(|e| refuse(&e.to_string()))? != uid {
        return Err(refuse("answered by another user than the browser's"));
    }
    let (stream, _) =
        DefaultStream::from_unix_stream(s).map_err(|e| Error::Connect(e.to_string()))?;
    RustConnection::connect_to_stream(bounded::Bounded::new(stream), 0)
        .map_err(|e| Error::Connect(e.to_string()))
}

/// The uid of the process at the other end of a Unix socket.
#[allow(unsafe_code)]
fn peer_uid(s: &UnixStream) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into the ucred we own.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// One session's display: its capture and its input.
#[derive(Debug)]
pub struct Display {
    /// What changes on it (and its size now).
    pub capture: Arc<Capture>,
    /// Hands on it.
    pub input: Input,
    /// Its sound, if it has any.
    pub sound: Option<Sound>,
}

impl Display {
    /// Connects to the display behind `socket`, served by the browser's `uid` (two connections: the capture's own thread,
    /// and input). Blocking: call it off the async runtime.
    ///
    /// # Errors
    /// [`Error`]: the socket, or a missing extension (DAMAGE, XFIXES, XTEST).
    pub fn open(socket: &Path, uid: u32, quality: u8) -> Result<Display, Error> {
        let capture = Capture::start(socket, uid, quality)?;
        let input = Input::open(socket, uid)?;
        Ok(Display {
            capture,
            input,
            sound: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_browser_s_own_socket_is_connected_to() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("other.sock");
        let _l = std::os::unix::net::UnixListener::bind(&real).unwrap();
        // A symlink the browser planted, to some other socket.
        let planted = t.path().join("X0");
        std::os::unix::fs::symlink(&real, &planted).unwrap();
        let e = connect(&planted, 0).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        // A socket served by another user than the browser's.
        let e = connect(&real, 4_000_000).unwrap_err().to_string();
        assert!(e.contains("another user"), "{e}");
    }
}
