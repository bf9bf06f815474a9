//! The screen's size: a display whose X server can change it (Xvnc's RandR) is resized to
//! the viewer that holds the `resize` role. Xvfb's screen is fixed: it answers
//! [`Error::NotResizable`](super::Error::NotResizable).

use x11rb::connection::Connection;
use x11rb::protocol::randr::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{ConnectionExt as _, Window};

use super::Error;

/// Smallest screen a viewer may ask for, pixels (Chromium keeps its window above ~500 px wide).
pub const MIN: (u16, u16) = (640, 360);
/// The largest: 4K UHD (its framebuffer and the capture's shadow are 33 MB each).
pub const MAX: (u16, u16) = (3840, 2160);

/// The largest screen a session may be created with (`width`, `height` of `POST /v0/vm`),
/// and so the largest the daemon believes an X server that reports its size.
pub const LARGEST: (u16, u16) = (7680, 4320);

/// The least time between two changes of a screen's size (a later one waits): each change
/// lays the browser out again and re-encodes the whole screen for every viewer (a 4K
/// keyframe is megabytes), so a viewer sending them as fast as it may, or two viewers of
/// different sizes taking turns, would spend the daemon's CPU and flip everyone's picture.
pub const SPACING: std::time::Duration = std::time::Duration::from_secs(1);

/// Names of the modes made here (one per size asked for; the unused ones are removed).
const PREFIX: &str = "pv-";

/// Clamps a size a viewer asked for to [`MIN`]..[`MAX`].
pub fn clamp(width: u64, height: u64) -> (u16, u16) {
    let c = |v: u64, lo: u16, hi: u16| u16::try_from(v.clamp(lo.into(), hi.into())).unwrap_or(hi);
    (c(width, MIN.0, MAX.0), c(height, MIN.1, MAX.1))
}

/// Makes the screen of `root` `width` x `height`: a mode of that size on its one output
/// (made when there is none), the screen grown first when needed, the CRTC switched, the
/// screen then cut to size (the order RandR requires), and the modes made here before that
/// are no longer used removed.
pub(crate) fn resize(
    conn: &impl Connection,
    root: Window,
    (width, height): (u16, u16),
) -> Result<(), Error> {
    if conn
        .extension_information(randr::X11_EXTENSION_NAME)?
        .is_none()
    {
        return Err(Error::NotResizable);
    }
    conn.randr_query_version(1, 3)?.reply()?;
    let res = conn.randr_get_screen_resources_current(root)?.reply()?;
    let Some(&crtc) = res.crtcs.first() else {
        return Err(Error::NotResizable);
    };
    let info = conn
        .randr_get_crtc_info(crtc, res.config_timestamp)?
        .reply()?;
    let Some(&output) = info.outputs.first().or(res.outputs.first()) else {
        return Err(Error::NotResizable);
    };
    let names = mode_names(&res);
    let on_output = conn
        .randr_get_output_info(output, res.config_timestamp)?
        .reply()?
        .modes;
    let wanted = format!("{PREFIX}{width}x{height}");
    let mode = match names.iter().find(|(_, n)| *n == wanted).map(|(id, _)| *id) {
        Some(m) => {
            if !on_output.contains(&m) {
                conn.randr_add_output_mode(output, m)?.check()?;
            }
            m
        }
        None => {
            let mi = randr::ModeInfo {
                id: 0,
                width,
                height,
                dot_clock: u32::from(width) * u32::from(height) * 60,
                hsync_start: width,
                hsync_end: width,
                htotal: width,
                hskew: 0,
                vsync_start: height,
                vsync_end: height,
                vtotal: height,
                name_len: u16::try_from(wanted.len()).unwrap_or(0),
                mode_flags: randr::ModeFlag::default(),
            };
            let m = conn
                .randr_create_mode(root, mi, wanted.as_bytes())?
                .reply()?
                .mode;
            conn.randr_add_output_mode(output, m)?.check()?;
            m
        }
    };
    let g = conn.get_geometry(root)?.reply()?;
    let now = (g.width, g.height);
    // 96 dots per inch, as a desktop reports.
    let mm = |px: u16| u32::from(px) * 254 / 960;
    let grown = (width.max(now.0), height.max(now.1));
    if grown != now {
        conn.randr_set_screen_size(root, grown.0, grown.1, mm(grown.0), mm(grown.1))?
            .check()?;
    }
    let set = conn
        .randr_set_crtc_config(
            crtc,
            x11rb::CURRENT_TIME,
            res.config_timestamp,
            0,
            0,
            mode,
            randr::Rotation::ROTATE0,
            &[output],
        )?
        .reply()?;
    if set.status != randr::SetConfig::SUCCESS {
        return Err(Error::Request(format!(
            "the screen refused {width}x{height}: {:?}",
            set.status
        )));
    }
    if grown != (width, height) {
        conn.randr_set_screen_size(root, width, height, mm(width), mm(height))?
            .check()?;
    }
    // Modes of earlier sizes: off the output and gone (a viewer resizing for hours makes
    // one per size otherwise).
    for (old, name) in names {
        if old != mode && name.starts_with(PREFIX) {
            let _ = conn.randr_delete_output_mode(output, old)?.check();
            let _ = conn.randr_destroy_mode(old)?.check();
        }
    }
    conn.flush()?;
    Ok(())
}

/// The modes the screen knows, with their names.
fn mode_names(res: &randr::GetScreenResourcesCurrentReply) -> Vec<(randr::Mode, String)> {
    let mut at = 0usize;
    res.modes
        .iter()
        .map(|m| {
            let len = usize::from(m.name_len);
            let name = res
                .names
                .get(at..at + len)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            at += len;
            (m.id, name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_are_clamped() {
        assert_eq!(super::clamp(10, 10), super::MIN);
        assert_eq!(super::clamp(99_999, 99_999), super::MAX);
        assert_eq!(super::clamp(1000, 640), (1000, 640));
    }
}
