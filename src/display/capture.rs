//! The capture of one display: a thread of its own with its own X connection. DAMAGE tells
//! it what changed; it reads those rectangles (aligned to JPEG's 16-pixel blocks, so tiles
//! meet without seams), encodes each as a JPEG [`Tile`] and broadcasts it to every viewer of
//! the session. Tiles are numbered; a viewer that joins or lags asks for a keyframe (the
//! whole screen) and drops any tile numbered before it. Keyframes are paced: one made for
//! every viewer waiting, at most one each [`KEYFRAME_GAP`], and the last one sent again while
//! nothing changed.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{broadcast, oneshot};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::damage::{self, ConnectionExt as _};
use x11rb::protocol::xfixes::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{
    ChangeWindowAttributesAux, ConnectionExt as _, EventMask, ImageFormat, Rectangle, Window,
};
use x11rb::protocol::Event;

use super::Error;

/// Keyframes asked for (a viewer joining, resuming its picture, or behind) are made at most
/// once in this time, for every viewer waiting then; asked for again with nothing changed
/// on the screen, the last one is sent again. (A viewer that pauses and resumes its picture
/// in a loop would otherwise have the capture encode the whole screen for each resume.)
const KEYFRAME_GAP: Duration = Duration::from_millis(250);

/// A rectangle of the screen as a JPEG, placed at (`x`, `y`).
#[derive(Debug)]
pub struct Tile {
    /// Left edge, pixels.
    pub x: u16,
    /// Top edge, pixels.
    pub y: u16,
    /// Width, pixels.
    pub width: u16,
    /// Height, pixels.
    pub height: u16,
    /// Number: tiles are sent in increasing order; a keyframe holds everything before it.
    pub seq: u64,
    /// The whole screen (sent to one viewer that joined or fell behind, or to all when the
    /// screen changed size).
    pub key: bool,
    /// The screen's size when it was made.
    pub screen: (u16, u16),
    /// JPEG bytes.
    pub jpeg: Bytes,
}

impl Tile {
    /// The viewer socket's binary message: `0x01`, x and y (u16 big-endian), then the JPEG.
    /// (A bare JPEG, starting `0xFF`, is a whole frame of the page-only view.)
    pub fn message(&self) -> Bytes {
        let mut m = Vec::with_capacity(5 + self.jpeg.len());
        m.push(1);
        m.extend_from_slice(&self.x.to_be_bytes());
        m.extend_from_slice(&self.y.to_be_bytes());
        m.extend_from_slice(&self.jpeg);
        m.into()
    }
}

enum Command {
    Keyframe(oneshot::Sender<Arc<Tile>>),
    Stop,
}

/// The running capture of one display.
pub struct Capture {
    /// The screen's size now (the worker follows RandR changes).
    screen: Arc<Mutex<(u16, u16)>>,
    tiles: broadcast::Sender<Arc<Tile>>,
    commands: mpsc::Sender<Command>,
    wake: UnixStream,
    viewers: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        let _ = (&self.wake).write_all_nb();
    }
}

trait Wake {
    fn write_all_nb(self) -> std::io::Result<()>;
}

impl Wake for &UnixStream {
    fn write_all_nb(self) -> std::io::Result<()> {
        use std::io::Write;
        // A full wake pipe already wakes the thread: a failed write loses nothing.
        let mut s = self;
        s.write(&[1]).map(|_| ())
    }
}

impl Capture {
    /// Connects and starts the capture thread.
    ///
    /// # Errors
    /// The connection, or DAMAGE / XFIXES missing.
    pub fn start(socket: &Path, uid: u32, quality: u8) -> Result<Arc<Capture>, Error> {
        let conn = super::connect(socket, uid)?;
        for (name, ext) in [
            ("DAMAGE", damage::X11_EXTENSION_NAME),
            ("XFIXES", xfixes::X11_EXTENSION_NAME),
        ] {
            if conn.extension_information(ext)?.is_none() {
                return Err(Error::Missing(name));
            }
        }
        conn.damage_query_version(1, 1)?.reply()?;
        conn.xfixes_query_version(5, 0)?.reply()?;
        let screen = &conn.setup().roots[0];
        let (root, size) = (
            screen.root,
            (screen.width_in_pixels, screen.height_in_pixels),
        );
        if !plausible(size) {
            return Err(Error::Request(format!("a screen of {}x{}", size.0, size.1)));
        }
        let damage = conn.generate_id()?;
        conn.damage_create(damage, root, damage::ReportLevel::NON_EMPTY)?;
        // The root's ConfigureNotify says the screen changed size (RandR).
        conn.change_window_attributes(
            root,
            &ChangeWindowAttributesAux::new().event_mask(EventMask::STRUCTURE_NOTIFY),
        )?;
        let region = conn.generate_id()?;
        conn.xfixes_create_region(region, &[])?;
        conn.flush()?;
        let (wake, wake_rx) = UnixStream::pair().map_err(|e| Error::Connect(e.to_string()))?;
        for s in [&wake, &wake_rx] {
            s.set_nonblocking(true)
                .map_err(|e| Error::Connect(e.to_string()))?;
        }
        let (commands, rx) = mpsc::channel();
        let (tiles, _) = broadcast::channel(64);
        let viewers = Arc::new(AtomicUsize::new(0));
        let screen = Arc::new(Mutex::new(size));
        let worker = Worker {
            conn,
            root,
            size,
            screen: screen.clone(),
            damage,
            region,
            quality: quality.clamp(1, 100),
            tiles: tiles.clone(),
            viewers: viewers.clone(),
            seq: 0,
            shadow: Vec::new(),
            waiting: Vec::new(),
            last_key: None,
            changed_since_key: true,
        };
        std::thread::Builder::new()
            .name("pv-display".into())
            .spawn(move || {
                if let Err(e) = worker.run(&rx, &wake_rx) {
                    tracing::debug!(error = %e, "display capture ended");
                }
            })
            .map_err(|e| Error::Connect(e.to_string()))?;
        Ok(Arc::new(Capture {
            screen,
            tiles,
            commands,
            wake,
            viewers,
        }))
    }

    /// The screen's size now.
    pub fn size(&self) -> (u16, u16) {
        *self.screen.lock().expect("screen")
    }

    /// A viewer starts watching: the tiles from now on, and a keyframe to start from.
    ///
    /// # Errors
    /// The capture has stopped (the browser is gone).
    pub async fn watch(&self) -> Result<(broadcast::Receiver<Arc<Tile>>, Arc<Tile>), Error> {
        let rx = self.tiles.subscribe();
        let key = self.keyframe().await?;
        Ok((rx, key))
    }

    /// The whole screen now.
    ///
    /// # Errors
    /// The capture has stopped.
    pub async fn keyframe(&self) -> Result<Arc<Tile>, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Keyframe(tx))
            .map_err(|_| Error::Request("the capture has stopped".into()))?;
        let _ = (&self.wake).write_all_nb();
        rx.await
            .map_err(|_| Error::Request("the capture has stopped".into()))
    }

    /// Counts a viewer in (tiles are made only while someone watches).
    pub fn viewer_joined(&self) {
        self.viewers.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a viewer out.
    pub fn viewer_left(&self) {
        let _ = self
            .viewers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
}

struct Worker {
    conn: super::Conn,
    root: Window,
    size: (u16, u16),
    /// `size`, shared with [`Capture::size`].
    screen: Arc<Mutex<(u16, u16)>>,
    damage: damage::Damage,
    region: xfixes::Region,
    quality: u8,
    tiles: broadcast::Sender<Arc<Tile>>,
    viewers: Arc<AtomicUsize>,
    seq: u64,
    /// What the viewers were sent, pixel for pixel (BGRX), to send only what differs.
    shadow: Vec<u8>,
    /// Viewers waiting for a keyframe, served together.
    waiting: Vec<oneshot::Sender<Arc<Tile>>>,
    /// The last keyframe made, and when.
    last_key: Option<(Arc<Tile>, Instant)>,
    /// Whether the screen may have changed since `last_key` was made.
    changed_since_key: bool,
}

impl Worker {
    fn run(mut self, rx: &mpsc::Receiver<Command>, wake: &UnixStream) -> Result<(), Error> {
        let frame = Duration::from_secs(1) / super::FPS;
        let mut dirty = false;
        let mut due = Instant::now();
        loop {
            dirty |= self.drain_events()?;
            loop {
                match rx.try_recv() {
                    Ok(Command::Keyframe(tx)) => self.waiting.push(tx),
                    Ok(Command::Stop) | Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            let key_due = self.serve_keyframes()?;
            if dirty && Instant::now() >= due {
                // Captures keep to a schedule (not "a period after the last one ended"), so
                // their own work and the wake-up jitter do not slow the rate.
                due = (due + frame).max(Instant::now().checked_sub(frame).unwrap_or(due));
                self.send_damage()?;
                dirty = false;
            }
            // Waiting for a reply reads whatever else the socket holds: events queued then
            // are in the connection's buffer, not on the socket. Take them before sleeping.
            dirty |= self.drain_events()?;
            let timeout = match (dirty.then_some(due), key_due) {
                (None, None) => -1,
                (a, b) => {
                    let next = a.into_iter().chain(b).min().unwrap_or(due);
                    // Round up: waking early only to sleep again costs a loop.
                    let left = next
                        .saturating_duration_since(Instant::now())
                        .as_micros()
                        .div_ceil(1000);
                    i32::try_from(left).unwrap_or(0).max(1)
                }
            };
            wait(self.conn.stream().as_raw_fd(), wake.as_raw_fd(), timeout);
            let mut buf = [0u8; 64];
            while matches!(std::io::Read::read(&mut &*wake, &mut buf), Ok(n) if n > 0) {}
        }
    }

    /// Reads the events received so far; whether the screen changed. A new screen size
    /// goes to every viewer at once, as a keyframe of the new screen.
    fn drain_events(&mut self) -> Result<bool, Error> {
        let mut changed = false;
        let mut resized = None;
        while let Some(ev) = self.conn.poll_for_event()? {
            match ev {
                Event::DamageNotify(_) => changed = true,
                Event::ConfigureNotify(c) if c.window == self.root => {
                    resized = Some((c.width, c.height));
                }
                _ => {}
            }
        }
        self.conn.stream().drained();
        self.changed_since_key |= changed || resized.is_some();
        if let Some(size) = resized {
            self.resized(size)?;
        }
        Ok(changed)
    }

    /// The screen is `size` now: the shadow starts again, and every viewer gets a keyframe
    /// of the new screen.
    fn resized(&mut self, size: (u16, u16)) -> Result<(), Error> {
        if size == self.size {
            return Ok(());
        }
        if !plausible(size) {
            return Err(Error::Request(format!("a screen of {}x{}", size.0, size.1)));
        }
        self.size = size;
        self.shadow.clear();
        *self.screen.lock().expect("screen") = size;
        if self.viewers.load(Ordering::SeqCst) > 0 && self.tiles.receiver_count() > 0 {
            let k = self.keyframe()?;
            let _ = self.tiles.send(k);
        }
        Ok(())
    }

    /// Asks the X server for the screen's size (a resize may have come between the event
    /// and a request): whether it changed.
    fn refresh_size(&mut self) -> Result<bool, Error> {
        let g = self.conn.get_geometry(self.root)?.reply()?;
        let changed = (g.width, g.height) != self.size;
        self.resized((g.width, g.height))?;
        Ok(changed)
    }

    /// Takes what changed since the last call; tiles of it when someone watches.
    fn send_damage(&mut self) -> Result<(), Error> {
        self.conn
            .damage_subtract(self.damage, x11rb::NONE, self.region)?;
        let rects = self
            .conn
            .xfixes_fetch_region(self.region)?
            .reply()?
            .rectangles;
        // The damage region reports only its first change until it is taken here: what it
        // holds may have been painted after the last keyframe was grabbed.
        self.changed_since_key |= !rects.is_empty();
        if self.viewers.load(Ordering::SeqCst) == 0 || self.tiles.receiver_count() == 0 {
            return Ok(());
        }
        for r in merge(&rects, self.size) {
            let img = match self.grab(r) {
                Ok(img) => img,
                // Out of a screen that just shrank: the new screen's keyframe replaces it.
                Err(_) if self.refresh_size()? => return Ok(()),
                Err(e) => return Err(e),
            };
            // Damage is coarse (a blinking caret repaints its whole field): send only the
            // part that differs from what the viewers were sent.
            if let Some(c) = changed(&mut self.shadow, self.size, &img, r) {
                let t = self.tile(&img, r, c, false)?;
                let _ = self.tiles.send(t);
            }
        }
        Ok(())
    }

    /// Sends the viewers waiting for a keyframe the last one, when nothing changed since it
    /// was made, or a new one, unless one was made less than [`KEYFRAME_GAP`] ago: then
    /// when to come back.
    fn serve_keyframes(&mut self) -> Result<Option<Instant>, Error> {
        if self.waiting.is_empty() {
            return Ok(None);
        }
        let key = match &self.last_key {
            Some((k, _))
                if !self.changed_since_key && k.seq == self.seq && k.screen == self.size =>
            {
                k.clone()
            }
            Some((_, at)) if at.elapsed() < KEYFRAME_GAP => return Ok(Some(*at + KEYFRAME_GAP)),
            _ => self.keyframe()?,
        };
        for tx in self.waiting.drain(..) {
            // A viewer that left meanwhile dropped its end.
            let _ = tx.send(key.clone());
        }
        Ok(None)
    }

    /// The whole screen now (kept as the last keyframe).
    fn keyframe(&mut self) -> Result<Arc<Tile>, Error> {
        let whole = Rectangle {
            x: 0,
            y: 0,
            width: self.size.0,
            height: self.size.1,
        };
        let img = match self.grab(whole) {
            Ok(img) => img,
            Err(_) if self.refresh_size()? => return self.keyframe(),
            Err(e) => return Err(e),
        };
        let k = self.tile(&img, whole, whole, true)?;
        self.last_key = Some((k.clone(), Instant::now()));
        self.changed_since_key = false;
        Ok(k)
    }

    /// The pixels of `r` (BGRX rows).
    fn grab(&self, r: Rectangle) -> Result<Vec<u8>, Error> {
        let img = self
            .conn
            .get_image(
                ImageFormat::Z_PIXMAP,
                self.root,
                r.x,
                r.y,
                r.width,
                r.height,
                !0,
            )?
            .reply()?;
        let want = usize::from(r.width) * usize::from(r.height) * 4;
        if img.depth != 24 || img.data.len() != want {
            return Err(Error::Request(format!(
                "unexpected image: depth {}, {} bytes for {}x{}",
                img.depth,
                img.data.len(),
                r.width,
                r.height
            )));
        }
        Ok(img.data)
    }

    /// The JPEG tile of `part`, a rectangle within `r` whose pixels are `img`.
    fn tile(
        &mut self,
        img: &[u8],
        r: Rectangle,
        part: Rectangle,
        key: bool,
    ) -> Result<Arc<Tile>, Error> {
        let rw = usize::from(r.width);
        let (ox, oy) = ((part.x - r.x) as usize, (part.y - r.y) as usize);
        let (pw, ph) = (usize::from(part.width), usize::from(part.height));
        let pixels: std::borrow::Cow<'_, [u8]> = if part.width == r.width && part.height == r.height
        {
            img.into()
        } else {
            let mut v = Vec::with_capacity(pw * ph * 4);
            for row in oy..oy + ph {
                let at = (row * rw + ox) * 4;
                v.extend_from_slice(&img[at..at + pw * 4]);
            }
            v.into()
        };
        let mut jpeg = Vec::with_capacity(pw * ph / 2);
        jpeg_encoder::Encoder::new(&mut jpeg, self.quality)
            .encode(
                &pixels,
                part.width,
                part.height,
                jpeg_encoder::ColorType::Bgra,
            )
            .map_err(|e| Error::Request(format!("JPEG: {e}")))?;
        self.seq += 1;
        let c = &super::COUNTERS;
        if key {
            c.keyframes.fetch_add(1, Ordering::Relaxed);
        } else {
            c.tiles.fetch_add(1, Ordering::Relaxed);
        }
        c.picture_bytes
            .fetch_add(jpeg.len() as u64, Ordering::Relaxed);
        Ok(Arc::new(Tile {
            x: u16::try_from(part.x).unwrap_or(0),
            y: u16::try_from(part.y).unwrap_or(0),
            width: part.width,
            height: part.height,
            seq: self.seq,
            key,
            screen: self.size,
            jpeg: jpeg.into(),
        }))
    }
}

/// Whether a size the X server reports is one the daemon could have asked for. The server is
/// the browser's (its uid could run one of its own on that socket): a screen past
/// [`super::screen::LARGEST`] would make the shadow, and every grab, as large as it says.
fn plausible((w, h): (u16, u16)) -> bool {
    let max = super::screen::LARGEST;
    w > 0 && h > 0 && w <= max.0 && h <= max.1
}

/// Blocks until the X socket or the wake socket is readable, or `timeout_ms` passed (-1:
/// no timeout).
#[allow(unsafe_code)]
fn wait(x: i32, wake: i32, timeout_ms: i32) {
    let mut fds = [
        libc::pollfd {
            fd: x,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: poll(2) reads and writes only the array we pass, of the length we pass.
    unsafe {
        libc::poll(fds.as_mut_ptr(), 2, timeout_ms);
    }
}

mod rects;
use rects::changed;
pub use rects::merge;

#[cfg(test)]
mod tests;
