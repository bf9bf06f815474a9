//! How a keysym is typed on the display: found in the keyboard map (Shift flipped for the
//! press where the map has it only in the other column), or put on a spare keycode the map
//! lends it, and text in runs of at most as many characters as there are spares.

use std::time::Duration;

use x11rb::protocol::xproto::{self, ConnectionExt as _};

use super::{keys, Error, State};

/// Spare keycodes kept for characters the map lacks.
pub(super) const SPARES: usize = 32;
/// A spare pressed this recently is not remapped: the browser reads a key's keysym from its
/// copy of the map when it handles the key, and its copy is the map of when it last read it.
/// A browser behind on its events would read a press made before a remap with the new map.
const REUSE_AFTER: Duration = Duration::from_millis(500);

/// How one keysym is typed now.
#[derive(Clone, Copy)]
pub(super) struct Stroke {
    pub(super) kc: u8,
    /// Shift flipped for the press.
    pub(super) flip: bool,
    /// Put on a spare keycode just now (the browser must read the new map first).
    pub(super) remapped: bool,
}

impl State {
    /// How `ks` is typed now; a spare it is put on is none of `pinned` (keycodes held or
    /// about to be pressed).
    pub(super) fn stroke(&mut self, ks: u32, pinned: &[u8]) -> Result<Stroke, Error> {
        let plain = |kc| Stroke {
            kc,
            flip: false,
            remapped: false,
        };
        if let Some((kc, col)) = self.map.get(&ks).copied() {
            // A modifier, or a key named by a function keysym (Tab, Enter, arrows, F-keys),
            // is the same key whatever Shift does (Shift+Tab is Tab with Shift held).
            if keys::is_modifier(ks) || (0xff00..0x0100_0000).contains(&ks) {
                return Ok(plain(kc));
            }
            // The column the key gives now: Shift held, turned again by Caps Lock on a letter.
            let lock = self.cased.contains(&kc) && self.lock_on()?;
            let shifted = (self.shift > 0) != lock;
            if (col == 1) == shifted || (col == 0 && self.one_level.contains(&kc)) {
                return Ok(plain(kc));
            }
            if !self.shifts_to_flip().is_empty() {
                return Ok(Stroke {
                    flip: true,
                    ..plain(kc)
                });
            }
        }
        Ok(match self.remapped.get(&ks) {
            Some(&kc) => plain(kc),
            None => Stroke {
                remapped: true,
                ..plain(self.remap(ks, pinned)?)
            },
        })
    }

    /// Whether Caps Lock is on on the display.
    pub(super) fn lock_on(&self) -> Result<bool, Error> {
        let mask = self.conn.query_pointer(self.root)?.reply()?.mask;
        Ok(mask.contains(xproto::KeyButMask::LOCK))
    }

    /// The Shift keycodes a flip of Shift presses (none held: one) or lets go (those held).
    pub(super) fn shifts_to_flip(&self) -> Vec<u8> {
        let shift_keys = self
            .map
            .iter()
            .filter(|(ks, _)| keys::is_shift(**ks))
            .map(|(_, (kc, _))| *kc);
        let mut kcs: Vec<u8> = if self.shift == 0 {
            shift_keys.take(1).collect()
        } else {
            shift_keys
                .filter(|kc| self.held.values().any(|h| h == kc))
                .collect()
        };
        kcs.sort_unstable();
        kcs.dedup();
        kcs
    }

    /// Presses `kc`; with `flip`, Shift is pressed (none held) or the held Shift keys are
    /// let go (some held) for the press, and put back as they were after it. The X server
    /// reads the keysym at the press, so it means the keysym asked for at once (a remapped
    /// key means it only once the browser has read the new map).
    pub(super) fn press(&mut self, kc: u8, flip: bool) -> Result<(), Error> {
        if self.spare.contains(&kc) {
            self.spare_pressed.insert(kc, std::time::Instant::now());
        }
        let shifts = if flip {
            self.shifts_to_flip()
        } else {
            Vec::new()
        };
        let (around, back) = if self.shift == 0 {
            (xproto::KEY_PRESS_EVENT, xproto::KEY_RELEASE_EVENT)
        } else {
            (xproto::KEY_RELEASE_EVENT, xproto::KEY_PRESS_EVENT)
        };
        for sk in &shifts {
            self.fake(around, *sk)?;
        }
        self.fake(xproto::KEY_PRESS_EVENT, kc)?;
        for sk in &shifts {
            self.fake(back, *sk)?;
        }
        Ok(())
    }

    /// Puts `ks` on a spare keycode (both Shift columns) that is none of `pinned`, and
    /// returns it. The browser sees the new map only after [`State::await_map`].
    pub(super) fn remap(&mut self, ks: u32, pinned: &[u8]) -> Result<u8, Error> {
        // The spare pressed longest ago (or never).
        let Some(kc) = self
            .spare
            .iter()
            .copied()
            .filter(|kc| !pinned.contains(kc))
            .min_by_key(|kc| self.spare_pressed.get(kc).copied())
        else {
            return Err(Error::Request(
                "no spare keycode to type this character".into(),
            ));
        };
        if let Some(at) = self.spare_pressed.get(&kc) {
            std::thread::sleep(REUSE_AFTER.saturating_sub(at.elapsed()));
        }
        self.remapped.retain(|_, k| *k != kc);
        self.remapped.insert(ks, kc);
        let syms = vec![ks; usize::from(self.per_keycode.max(1))];
        self.conn
            .change_keyboard_mapping(1, kc, self.per_keycode.max(1), &syms)?;
        Ok(kc)
    }

    /// How long the run of `all` that starts at `at` would wait in [`State::remap`] for the
    /// spares it takes (pressed less than [`REUSE_AFTER`] ago): waited with the display's
    /// input free ([`super::Input::text`]), not under its lock.
    pub(super) fn run_wait(&self, all: &[u32], at: usize) -> Duration {
        let held: Vec<u8> = self.held.values().copied().collect();
        let free: Vec<u8> = self
            .spare
            .iter()
            .copied()
            .filter(|kc| !held.contains(kc))
            .collect();
        let run = &all[at.min(all.len())..all.len().min(at + free.len().max(1))];
        let mut lacking: Vec<u32> = run
            .iter()
            .copied()
            .filter(|ks| !self.map.contains_key(ks) && !self.remapped.contains_key(ks))
            .collect();
        lacking.sort_unstable();
        lacking.dedup();
        // The spares `remap` takes: those pressed longest ago (or never) first.
        let mut pressed: Vec<Option<std::time::Instant>> = free
            .iter()
            .map(|kc| self.spare_pressed.get(kc).copied())
            .collect();
        pressed.sort_unstable();
        pressed
            .iter()
            .take(lacking.len())
            .flatten()
            .map(|t| REUSE_AFTER.saturating_sub(t.elapsed()))
            .max()
            .unwrap_or_default()
    }

    /// Types the run of `all` that starts at `at`: at most as many characters as there are
    /// spare keycodes no held key is on. Every character the map lacks is put on a spare of
    /// its own, the browser is given one moment to read the new map, then the run is typed.
    /// Modifiers other than Shift that are held (Ctrl, Alt, AltGr, Super: another viewer's,
    /// between two runs) are let go for the run and pressed again after it: text is typed as
    /// text, not as shortcuts. Where the next run starts.
    pub(super) fn type_run(&mut self, all: &[u32], at: usize) -> Result<usize, Error> {
        let held: Vec<u8> = self.held.values().copied().collect();
        let mut mods: Vec<u8> = held
            .iter()
            .copied()
            .filter(|kc| {
                self.map
                    .iter()
                    .any(|(ks, (k, _))| k == kc && keys::is_command_modifier(*ks))
            })
            .collect();
        mods.sort_unstable();
        mods.dedup();
        for kc in &mods {
            self.fake(xproto::KEY_RELEASE_EVENT, *kc)?;
        }
        let free = self.spare.iter().filter(|kc| !held.contains(kc)).count();
        let run = &all[at..all.len().min(at + free.max(1))];
        let mut strokes: Vec<Stroke> = Vec::with_capacity(run.len());
        for ks in run {
            let mut pinned = held.clone();
            pinned.extend(strokes.iter().map(|st| st.kc));
            strokes.push(self.stroke(*ks, &pinned)?);
        }
        if strokes.iter().any(|st| st.remapped) {
            self.await_map()?;
        }
        for st in strokes {
            self.press(st.kc, st.flip)?;
            self.fake(xproto::KEY_RELEASE_EVENT, st.kc)?;
        }
        for kc in &mods {
            self.fake(xproto::KEY_PRESS_EVENT, *kc)?;
        }
        // The run's keys reach the server now, not with the next run's remapping (which
        // would change their keysyms before the browser has read them).
        self.conn.get_input_focus()?.reply()?;
        Ok(at + run.len())
    }

    /// Gives the browser a moment to read the map changed by [`State::remap`]: a round trip
    /// (the server has made the change and sent its MappingNotify), then a wait for the
    /// browser to read it. A key pressed sooner means what the keycode meant before.
    pub(super) fn await_map(&self) -> Result<(), Error> {
        self.conn.get_input_focus()?.reply()?;
        std::thread::sleep(Duration::from_millis(50));
        Ok(())
    }
}
