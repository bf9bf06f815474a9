//! Which parts of the screen a capture sends: what changed, aligned to JPEG's 16-pixel
//! blocks and merged ([`merge`]), less what the viewers already have ([`changed`]).

use x11rb::protocol::xproto::Rectangle;

/// The part of `r` (whose pixels are `img`) that differs from the shadow (what the
/// viewers have, `size` big), aligned to 16 pixels; the shadow takes the new pixels.
pub(super) fn changed(
    shadow: &mut Vec<u8>,
    size: (u16, u16),
    img: &[u8],
    r: Rectangle,
) -> Option<Rectangle> {
    let (sw, sh) = (usize::from(size.0), usize::from(size.1));
    if shadow.len() != sw * sh * 4 {
        *shadow = vec![0; sw * sh * 4];
    }
    let (rx, ry) = (r.x.max(0) as usize, r.y.max(0) as usize);
    let (rw, rh) = (usize::from(r.width), usize::from(r.height));
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for row in 0..rh {
        let new = &img[row * rw * 4..(row + 1) * rw * 4];
        let at = ((ry + row) * sw + rx) * 4;
        let old = &mut shadow[at..at + rw * 4];
        if new == old {
            continue;
        }
        let first = new
            .chunks_exact(4)
            .zip(old.chunks_exact(4))
            .position(|(a, b)| a != b);
        let last = new
            .chunks_exact(4)
            .zip(old.chunks_exact(4))
            .rposition(|(a, b)| a != b);
        if let (Some(f), Some(l)) = (first, last) {
            (x0, x1) = (x0.min(f), x1.max(l + 1));
            (y0, y1) = (y0.min(row), y1.max(row + 1));
        }
        old.copy_from_slice(new);
    }
    if x0 == usize::MAX {
        return None;
    }
    // Align within the (already aligned) rectangle.
    let (x0, y0) = (x0 & !15, y0 & !15);
    let (x1, y1) = (((x1 + 15) & !15).min(rw), ((y1 + 15) & !15).min(rh));
    Some(Rectangle {
        x: (rx + x0) as i16,
        y: (ry + y0) as i16,
        width: (x1 - x0) as u16,
        height: (y1 - y0) as u16,
    })
}

/// The rectangles to send for what changed: each aligned outward to 16 pixels and clamped
/// to the screen; many small ones become their bounding box (one JPEG costs less than many).
pub fn merge(rects: &[Rectangle], size: (u16, u16)) -> Vec<Rectangle> {
    let align = |r: &Rectangle| -> Option<Rectangle> {
        let x0 = i32::from(r.x).max(0) & !15;
        let y0 = i32::from(r.y).max(0) & !15;
        let x1 = ((i32::from(r.x) + i32::from(r.width) + 15) & !15).min(i32::from(size.0));
        let y1 = ((i32::from(r.y) + i32::from(r.height) + 15) & !15).min(i32::from(size.1));
        (x1 > x0 && y1 > y0).then(|| Rectangle {
            x: x0 as i16,
            y: y0 as i16,
            width: (x1 - x0) as u16,
            height: (y1 - y0) as u16,
        })
    };
    let aligned: Vec<Rectangle> = rects.iter().filter_map(align).collect();
    if aligned.len() <= 1 {
        return aligned;
    }
    let area = |r: &Rectangle| u64::from(r.width) * u64::from(r.height);
    let bx0 = aligned.iter().map(|r| r.x).min().unwrap_or(0);
    let by0 = aligned.iter().map(|r| r.y).min().unwrap_or(0);
    let bx1 = aligned
        .iter()
        .map(|r| i32::from(r.x) + i32::from(r.width))
        .max()
        .unwrap_or(0);
    let by1 = aligned
        .iter()
        .map(|r| i32::from(r.y) + i32::from(r.height))
        .max()
        .unwrap_or(0);
    let bbox = Rectangle {
        x: bx0,
        y: by0,
        width: (bx1 - i32::from(bx0)) as u16,
        height: (by1 - i32::from(by0)) as u16,
    };
    let sum: u64 = aligned.iter().map(area).sum();
    if aligned.len() > 8 || sum * 2 > area(&bbox) {
        vec![bbox]
    } else {
        aligned
    }
}
