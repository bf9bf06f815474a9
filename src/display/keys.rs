//! DOM `KeyboardEvent.key` values to X keysyms: the named keys by table, any other single
//! character by its code point (Latin-1 keysyms are the code point; the rest are
//! `0x0100_0000 + code point`, X's Unicode keysyms).

/// The keysym of a DOM key value, `None` for keys the display has no use for.
pub fn keysym(key: &str) -> Option<u32> {
    let mut chars = key.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return Some(char_keysym(c));
    }
    Some(match key {
        "Enter" => 0xff0d,
        "Tab" => 0xff09,
        "Backspace" => 0xff08,
        "Escape" => 0xff1b,
        "Delete" => 0xffff,
        "Insert" => 0xff63,
        "Home" => 0xff50,
        "End" => 0xff57,
        "PageUp" => 0xff55,
        "PageDown" => 0xff56,
        "ArrowLeft" => 0xff51,
        "ArrowUp" => 0xff52,
        "ArrowRight" => 0xff53,
        "ArrowDown" => 0xff54,
        "Shift" => 0xffe1,
        "Control" => 0xffe3,
        "Alt" => 0xffe9,
        "AltGraph" => 0xfe03,
        "Meta" => 0xffeb,
        "CapsLock" => 0xffe5,
        "NumLock" => 0xff7f,
        "ScrollLock" => 0xff14,
        "Pause" => 0xff13,
        "PrintScreen" => 0xff61,
        "ContextMenu" => 0xff67,
        "F1" => 0xffbe,
        "F2" => 0xffbf,
        "F3" => 0xffc0,
        "F4" => 0xffc1,
        "F5" => 0xffc2,
        "F6" => 0xffc3,
        "F7" => 0xffc4,
        "F8" => 0xffc5,
        "F9" => 0xffc6,
        "F10" => 0xffc7,
        "F11" => 0xffc8,
        "F12" => 0xffc9,
        _ => return None,
    })
}

/// The keysym of one character.
pub fn char_keysym(c: char) -> u32 {
    match c {
        '\n' | '\r' => 0xff0d,
        '\t' => 0xff09,
        c if (' '..='~').contains(&c) || ('\u{a0}'..='\u{ff}').contains(&c) => u32::from(c),
        c => 0x0100_0000 + u32::from(c),
    }
}

/// The character a keysym types, for Latin-1 and Unicode keysyms.
fn keysym_char(keysym: u32) -> Option<char> {
    match keysym {
        0x20..=0x7e | 0xa0..=0xff => char::from_u32(keysym),
        0x0100_0000..=0x0110_ffff => char::from_u32(keysym - 0x0100_0000),
        _ => None,
    }
}

/// Whether two keysyms are a letter and its capital (a key Caps Lock turns).
pub fn is_case_pair(lower: u32, upper: u32) -> bool {
    match (keysym_char(lower), keysym_char(upper)) {
        (Some(l), Some(u)) => l != u && l.to_uppercase().eq(std::iter::once(u)),
        _ => false,
    }
}

/// Whether a keysym is a modifier (held across other keys, never remapped).
pub fn is_modifier(keysym: u32) -> bool {
    matches!(keysym, 0xffe1..=0xffee | 0xfe03)
}

/// Whether a keysym is Shift.
pub fn is_shift(keysym: u32) -> bool {
    matches!(keysym, 0xffe1 | 0xffe2)
}

/// Whether `keysym` is a modifier that makes keys shortcuts or other levels: Control, Meta,
/// Alt, Super, Hyper (left and right), ISO_Level3_Shift (AltGr) and Mode_switch.
pub fn is_command_modifier(keysym: u32) -> bool {
    matches!(keysym, 0xffe3 | 0xffe4 | 0xffe7..=0xffee | 0xfe03 | 0xff7e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_and_their_capitals() {
        assert!(is_case_pair(u32::from('a'), u32::from('A')));
        assert!(is_case_pair(0xe9, 0xc9)); // é É
        assert!(is_case_pair(0x0100_0000 + 0x43c, 0x0100_0000 + 0x41c)); // м М
        assert!(!is_case_pair(u32::from('1'), u32::from('!')));
        assert!(!is_case_pair(u32::from(' '), u32::from(' ')));
        assert!(!is_case_pair(0xff09, 0xfe20)); // Tab, ISO_Left_Tab
    }

    #[test]
    fn dom_keys_map_to_keysyms() {
        assert_eq!(keysym("a"), Some(0x61));
        assert_eq!(keysym("A"), Some(0x41));
        assert_eq!(keysym("é"), Some(0xe9));
        assert_eq!(keysym("中"), Some(0x0100_4e2d));
        assert_eq!(keysym("Enter"), Some(0xff0d));
        assert_eq!(keysym("F12"), Some(0xffc9));
        assert_eq!(keysym("Unidentified"), None);
        assert!(is_modifier(0xffe3) && !is_modifier(0x61));
    }
}
