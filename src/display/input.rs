//! A person's hands on the display: pointer, buttons, wheel, keys and text as XTEST input,
//! which the X server delivers as it would a real keyboard's and mouse's — so Chromium's own
//! UI (menus, dialogs, bubbles, `<select>` lists, the address bar) answers them.
//!
//! Keys are found in the server's keyboard map. A character the map has only in the other
//! Shift column than the one held now is pressed with Shift flipped for that press (a
//! viewer's "Q" sent without Shift); one the map lacks is put on a spare keycode, so text in
//! any script arrives exactly. Keys and buttons held belong to the viewer that pressed them:
//! they are released when another viewer's input they would change comes in (a Control one
//! viewer left down never turns another's `w` into Ctrl+W or a click into Ctrl+click, nor a
//! held button another's moves into drags; another's pointer moves leave keys held, and
//! another's keys leave buttons held), and when their viewer leaves or loses control.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::xproto::{self, AtomEnum, ConnectionExt as _, Window};
use x11rb::protocol::xtest::{self, ConnectionExt as _};
use x11rb::protocol::Event;

use super::{keys, Error};

mod typing;
use typing::SPARES;

/// Keys held down at once, at most (by the viewers' `code`s): a key pressed past that is
/// ignored until some are released.
pub const MAX_HELD: usize = 32;

/// What a viewer's input would be changed by, held by another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Keys (modifiers): keys and text.
    Keys,
    /// Buttons: pointer moves (a drag).
    Buttons,
    /// Both: clicks and the wheel (Ctrl+click, Ctrl+wheel).
    Both,
}

/// A mouse button as the live view names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    /// Primary.
    Left,
    /// Wheel button.
    Middle,
    /// Secondary (context menu).
    Right,
    /// History back.
    Back,
    /// History forward.
    Forward,
}

impl Button {
    fn x11(self) -> u8 {
        match self {
            Button::Left => 1,
            Button::Middle => 2,
            Button::Right => 3,
            Button::Back => 8,
            Button::Forward => 9,
        }
    }
}

struct State {
    conn: super::Conn,
    root: Window,
    size: (u16, u16),
    /// keysym -> (keycode, column: 0 plain, 1 with Shift).
    map: HashMap<u32, (u8, usize)>,
    /// Keycodes Shift does not change (no second column, or the same keysym in it: Space).
    one_level: HashSet<u8>,
    /// Keycodes of a letter and its capital, which Caps Lock turns as Shift does.
    cased: HashSet<u8>,
    per_keycode: u8,
    spare: Vec<u8>,
    /// When each spare was last pressed: it is not remapped sooner than [`REUSE_AFTER`].
    spare_pressed: HashMap<u8, std::time::Instant>,
    /// keysym -> the spare keycode it was put on (there until that spare is reused).
    remapped: HashMap<u32, u8>,
    /// Shift keys held now.
    shift: u8,
    /// Keycodes held, by the viewer's `code` (released by the same keycode).
    held: HashMap<String, u8>,
    buttons: Vec<u8>,
    /// The viewer whose keys are held.
    key_owner: Option<String>,
    /// The viewer whose buttons are held.
    button_owner: Option<String>,
    /// An unmapped window of ours that receives the clipboard's text, and the atoms for it.
    clip: Option<(Window, [xproto::Atom; 3])>,
    /// When the latest change of the screen's size is (or was) made (changes are spaced: each one re-encodes the whole
    /// screen for every viewer).
    resized_at: Option<std::time::Instant>,
}

/// Input into one display (its own X connection).
#[derive(Clone)]
pub struct Input(Arc<Mutex<State>>);

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Input")
    }
}

impl Input {
    /// Connects and reads the keyboard map.
    ///
    /// # Errors
    /// The connection, or XTEST missing.
    pub fn open(socket: &Path, uid: u32) -> Result<Input, Error> {
        let conn = super::connect(socket, uid)?;
        if conn
            .extension_information(xtest::X11_EXTENSION_NAME)?
            .is_none()
        {
            return Err(Error::Missing("XTEST"));
        }
        conn.xtest_get_version(2, 2)?.reply()?;
        let setup = conn.setup();
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let screen = &setup.roots[0];
        let (root, size) = (
            screen.root,
            (screen.width_in_pixels, screen.height_in_pixels),
        );
        let km = conn.get_keyboard_mapping(min, max - min + 1)?.reply()?;
        let per = km.keysyms_per_keycode;
        let mut map = HashMap::new();
        let (mut one_level, mut cased) = (HashSet::new(), HashSet::new());
        let mut spare = Vec::new();
        for (i, syms) in km.keysyms.chunks(usize::from(per.max(1))).enumerate() {
            let kc = min + i as u8;
            if syms.iter().all(|s| *s == 0) {
                spare.push(kc);
                continue;
            }
            for (col, s) in syms.iter().take(2).enumerate() {
                if *s != 0 {
                    map.entry(*s).or_insert((kc, col));
                }
            }
            let (plain, shifted) = (syms[0], syms.get(1).copied().unwrap_or(0));
            if shifted == 0 || shifted == plain {
                one_level.insert(kc);
            } else if keys::is_case_pair(plain, shifted) {
                cased.insert(kc);
            }
        }
        // Keep spares for remapping (the last ones: least likely to mean anything).
        spare.reverse();
        spare.truncate(SPARES);
        Ok(Input(Arc::new(Mutex::new(State {
            conn,
            root,
            size,
            map,
            one_level,
            cased,
            per_keycode: per,
            spare,
            spare_pressed: HashMap::new(),
            remapped: HashMap::new(),
            shift: 0,
            held: HashMap::new(),
            buttons: Vec::new(),
            key_owner: None,
            button_owner: None,
            clip: None,
            resized_at: None,
        }))))
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let me = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = me
                .lock()
                .map_err(|_| Error::Request("input poisoned".into()))?;
            // Events this connection does not wait for are dropped (the X server may send
            // any; undrained ones are bounded, see `bounded`).
            while s.conn.poll_for_event()?.is_some() {}
            s.conn.stream().drained();
            let r = f(&mut s)?;
            s.conn.flush()?;
            Ok(r)
        })
        .await
        .map_err(|e| Error::Request(e.to_string()))?
    }

    /// Makes the screen `size` (see [`super::screen::resize`]), at least
    /// [`super::screen::SPACING`] after the last change; the pointer is then clamped to the
    /// new screen.
    ///
    /// # Errors
    /// [`Error::NotResizable`] on a fixed-size X server; the display is gone.
    pub async fn resize(&self, size: (u16, u16)) -> Result<(), Error> {
        // Each change takes a slot at least SPACING after the one before; waiting for it keeps
        // the last size asked for (one viewer's messages are handled one after the other).
        let wait = {
            let mut s = self
                .0
                .lock()
                .map_err(|_| Error::Request("input poisoned".into()))?;
            let now = std::time::Instant::now();
            let slot = s
                .resized_at
                .map_or(now, |t| (t + super::screen::SPACING).max(now));
            s.resized_at = Some(slot);
            slot - now
        };
        tokio::time::sleep(wait).await;
        self.with(move |s| {
            super::screen::resize(&s.conn, s.root, size)?;
            s.size = size;
            Ok(())
        })
        .await
    }

    /// Moves the pointer to (`x`, `y`) (screen pixels, clamped to the screen).
    ///
    /// # Errors
    /// The display is gone.
    pub async fn pointer(&self, by: &str, x: f64, y: f64) -> Result<(), Error> {
        let by = by.to_string();
        self.with(move |s| {
            s.own(&by, Held::Buttons)?;
            s.motion(x, y)
        })
        .await
    }

    /// Presses or releases `button` at (`x`, `y`).
    ///
    /// # Errors
    /// The display is gone.
    pub async fn button(
        &self,
        by: &str,
        (x, y): (f64, f64),
        button: Button,
        down: bool,
    ) -> Result<(), Error> {
        let by = by.to_string();
        self.with(move |s| {
            s.own(&by, Held::Both)?;
            s.motion(x, y)?;
            let b = button.x11();
            if down {
                s.buttons.push(b);
            } else {
                s.buttons.retain(|x| *x != b);
            }
            s.fake(
                if down {
                    xproto::BUTTON_PRESS_EVENT
                } else {
                    xproto::BUTTON_RELEASE_EVENT
                },
                b,
            )
        })
        .await
    }

    /// Scrolls at (`x`, `y`): one wheel click per ~100 pixels of delta (at least one).
    ///
    /// # Errors
    /// The display is gone.
    pub async fn wheel(&self, by: &str, (x, y): (f64, f64), dx: f64, dy: f64) -> Result<(), Error> {
        let by = by.to_string();
        self.with(move |s| {
            s.own(&by, Held::Both)?;
            s.motion(x, y)?;
            for (d, neg, pos) in [(dy, 4u8, 5u8), (dx, 6, 7)] {
                if d == 0.0 || !d.is_finite() {
                    continue;
                }
                let clicks = ((d.abs() / 100.0).round() as u32).clamp(1, 10);
                let b = if d < 0.0 { neg } else { pos };
                for _ in 0..clicks {
                    s.fake(xproto::BUTTON_PRESS_EVENT, b)?;
                    s.fake(xproto::BUTTON_RELEASE_EVENT, b)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// A key goes down or up. `code` (the viewer's physical key) pairs a release with its
    /// press; `key` (the DOM key value) says what the key means. Keys the display has no
    /// keysym for are ignored.
    ///
    /// # Errors
    /// The display is gone.
    pub async fn key(&self, by: &str, code: String, key: String, down: bool) -> Result<(), Error> {
        let by = by.to_string();
        self.with(move |s| {
            let Some(ks) = keys::keysym(&key) else {
                return Ok(());
            };
            s.own(&by, Held::Keys)?;
            let id = if code.is_empty() { key.clone() } else { code };
            if !down {
                let kc = match s.held.remove(&id) {
                    Some(kc) => kc,
                    None => match s.map.get(&ks) {
                        Some((kc, _)) => *kc,
                        None => return Ok(()),
                    },
                };
                if keys::is_shift(ks) {
                    s.shift = s.shift.saturating_sub(1);
                }
                return s.fake(xproto::KEY_RELEASE_EVENT, kc);
            }
            if !s.held.contains_key(&id) && s.held.len() >= MAX_HELD {
                // More keys down at once than any keyboard holds: every one would stay in
                // the map (and be looked through on each key) until its release.
                return Ok(());
            }
            if let Some(old) = s.held.remove(&id) {
                // A repeat: release first, as a real keyboard's autorepeat does under X.
                s.fake(xproto::KEY_RELEASE_EVENT, old)?;
                if keys::is_shift(ks) {
                    s.shift = s.shift.saturating_sub(1);
                }
            }
            let held: Vec<u8> = s.held.values().copied().collect();
            let st = s.stroke(ks, &held)?;
            if st.remapped {
                s.await_map()?;
            }
            if keys::is_shift(ks) {
                s.shift += 1;
            }
            s.held.insert(id, st.kc);
            s.press(st.kc, st.flip)
        })
        .await
    }

    /// Types `text` (committed IME text, a paste): every character exactly, in runs (see
    /// [`State::type_run`]). The display's input is free between two runs (other viewers'
    /// input goes in between), and before each run `go_on` says whether its sender may still
    /// type: false (removed, control taken away or preempted) drops the rest. Whether all of
    /// it was typed.
    ///
    /// # Errors
    /// The display is gone.
    pub async fn text(
        &self,
        by: &str,
        text: String,
        go_on: impl Fn() -> bool,
    ) -> Result<bool, Error> {
        let all: Arc<[u32]> = text.chars().map(keys::char_keysym).collect();
        let mut at = 0;
        while at < all.len() {
            if !go_on() {
                return Ok(false);
            }
            // Spares typed on a moment ago are waited for with the input free: another
            // viewer's input goes in meanwhile (the run may then wait again).
            let run = all.clone();
            let wait = self.with(move |s| Ok(s.run_wait(&run, at))).await?;
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
                continue;
            }
            let (all, by) = (all.clone(), by.to_string());
            at = self
                .with(move |s| {
                    s.own(&by, Held::Keys)?;
                    s.type_run(&all, at)
                })
                .await?;
        }
        Ok(true)
    }

    /// The text on the display's clipboard (what Chromium copied), if any: at most 1 MiB.
    ///
    /// # Errors
    /// The display is gone.
    pub async fn clipboard(&self) -> Result<Option<String>, Error> {
        self.with(State::read_clipboard).await
    }

    /// Releases the keys and buttons `by` holds, if any (a viewer left or lost control).
    ///
    /// # Errors
    /// The display is gone.
    pub async fn release(&self, by: &str) -> Result<(), Error> {
        let by = by.to_string();
        self.with(move |s| {
            if s.key_owner.as_deref() == Some(by.as_str()) {
                s.release_keys()?;
                s.key_owner = None;
            }
            if s.button_owner.as_deref() == Some(by.as_str()) {
                s.release_buttons()?;
                s.button_owner = None;
            }
            Ok(())
        })
        .await
    }
}

impl State {
    /// Input of `by` that what is `held` would change comes in: what another viewer holds of
    /// it is released first, and `by` holds it from now on.
    fn own(&mut self, by: &str, held: Held) -> Result<(), Error> {
        if held != Held::Buttons && self.key_owner.as_deref() != Some(by) {
            self.release_keys()?;
            self.key_owner = Some(by.to_string());
        }
        if held != Held::Keys && self.button_owner.as_deref() != Some(by) {
            self.release_buttons()?;
            self.button_owner = Some(by.to_string());
        }
        Ok(())
    }

    fn release_keys(&mut self) -> Result<(), Error> {
        let held: Vec<u8> = self.held.drain().map(|(_, kc)| kc).collect();
        for kc in held {
            self.fake(xproto::KEY_RELEASE_EVENT, kc)?;
        }
        self.shift = 0;
        Ok(())
    }

    fn release_buttons(&mut self) -> Result<(), Error> {
        for b in std::mem::take(&mut self.buttons) {
            self.fake(xproto::BUTTON_RELEASE_EVENT, b)?;
        }
        Ok(())
    }

    fn fake(&self, kind: u8, detail: u8) -> Result<(), Error> {
        self.conn
            .xtest_fake_input(kind, detail, x11rb::CURRENT_TIME, x11rb::NONE, 0, 0, 0)?;
        Ok(())
    }

    fn motion(&self, x: f64, y: f64) -> Result<(), Error> {
        let clamp = |v: f64, max: u16| {
            if v.is_finite() {
                v.round().clamp(0.0, f64::from(max.saturating_sub(1))) as i16
            } else {
                0
            }
        };
        self.conn.xtest_fake_input(
            xproto::MOTION_NOTIFY_EVENT,
            0,
            x11rb::CURRENT_TIME,
            self.root,
            clamp(x, self.size.0),
            clamp(y, self.size.1),
            0,
        )?;
        Ok(())
    }

    fn read_clipboard(&mut self) -> Result<Option<String>, Error> {
        let (win, [clipboard, utf8, prop]) = match self.clip {
            Some(c) => c,
            None => {
                let win = self.conn.generate_id()?;
                self.conn.create_window(
                    0,
                    win,
                    self.root,
                    0,
                    0,
                    1,
                    1,
                    0,
                    xproto::WindowClass::INPUT_ONLY,
                    0,
                    &Default::default(),
                )?;
                let mut atoms = [0; 3];
                for (a, name) in atoms
                    .iter_mut()
                    .zip(["CLIPBOARD", "UTF8_STRING", "PV_CLIP"])
                {
                    *a = self.conn.intern_atom(false, name.as_bytes())?.reply()?.atom;
                }
                self.clip = Some((win, atoms));
                (win, atoms)
            }
        };
        self.conn
            .convert_selection(win, clipboard, utf8, prop, x11rb::CURRENT_TIME)?;
        self.conn.flush()?;
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        let notified = loop {
            match self.conn.poll_for_event()? {
                Some(Event::SelectionNotify(e)) if e.requestor == win => break e,
                Some(_) => {}
                None if std::time::Instant::now() > deadline => return Ok(None),
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        if notified.property == u32::from(AtomEnum::NONE) {
            return Ok(None);
        }
        let r = self
            .conn
            .get_property(true, win, prop, utf8, 0, (1 << 20) / 4)?
            .reply()?;
        // INCR (a transfer in pieces) is for text larger than we take: not followed.
        if r.type_ != utf8 {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(&r.value).into_owned()))
    }
}
