//! Tests of `capture`.

#[test]
fn screens_larger_than_a_session_may_be_are_not_believed() {
    assert!(super::plausible((1280, 720)));
    assert!(super::plausible(super::super::screen::LARGEST));
    assert!(!super::plausible((0, 720)));
    assert!(!super::plausible((65_535, 65_535)));
    assert!(!super::plausible((7681, 100)));
}

use super::*;

fn r(x: i16, y: i16, w: u16, h: u16) -> Rectangle {
    Rectangle {
        x,
        y,
        width: w,
        height: h,
    }
}

fn m(rects: &[Rectangle], size: (u16, u16)) -> Vec<(i16, i16, u16, u16)> {
    merge(rects, size)
        .iter()
        .map(|r| (r.x, r.y, r.width, r.height))
        .collect()
}

#[test]
fn only_pixels_that_differ_are_sent() {
    let size = (64, 64);
    let mut shadow = Vec::new();
    let whole = r(0, 0, 64, 64);
    let mut img = vec![0u8; 64 * 64 * 4];
    // Nothing differs from the (black) start.
    assert!(changed(&mut shadow, size, &img, whole).is_none());
    // One pixel at (37, 20): its 16-pixel block.
    img[(20 * 64 + 37) * 4] = 9;
    let c = changed(&mut shadow, size, &img, whole).unwrap();
    assert_eq!((c.x, c.y, c.width, c.height), (32, 16, 16, 16));
    // The shadow took it: sent once only.
    assert!(changed(&mut shadow, size, &img, whole).is_none());
    // Within a damaged sub-rectangle, coordinates stay the screen's.
    let sub = r(16, 32, 32, 32);
    let mut part = vec![0u8; 32 * 32 * 4];
    part[(5 * 32 + 20) * 4 + 1] = 1; // screen (36, 37)
    let c = changed(&mut shadow, size, &part, sub).unwrap();
    assert_eq!((c.x, c.y, c.width, c.height), (32, 32, 16, 16));
}

#[test]
fn damage_becomes_aligned_tiles_within_the_screen() {
    assert_eq!(m(&[r(3, 5, 2, 2)], (100, 100)), vec![(0, 0, 16, 16)]);
    // Clamped to the screen.
    assert_eq!(m(&[r(90, 90, 20, 20)], (100, 100)), vec![(80, 80, 20, 20)]);
    // Hostile values from the server stay inside.
    assert!(m(&[r(-50, -50, 10, 10)], (100, 100)).is_empty());
    // Two far-apart carets stay two tiles; a spread of pieces becomes one box.
    assert_eq!(
        m(&[r(0, 0, 8, 8), r(500, 500, 8, 8)], (1000, 1000)).len(),
        2
    );
    assert_eq!(
        m(&[r(0, 0, 16, 16), r(16, 0, 16, 16)], (1000, 1000)),
        vec![(0, 0, 32, 16)]
    );
    let many: Vec<Rectangle> = (0..20).map(|i| r(i * 40, 0, 8, 8)).collect();
    assert_eq!(m(&many, (1000, 1000)).len(), 1);
}
