//! Hyperbeam's roles (its `guides/roles`): what a connected user may do. The server enforces
//! them; the embed page only mirrors them.

use std::collections::BTreeSet;

/// A role of a connected user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Send mouse and keyboard input (and use the toolbar: navigation, address bar, tabs).
    Control,
    /// Resize the browser's viewport to the viewer's frame.
    Resize,
    /// Copy from the browser to the viewer's clipboard (Ctrl/Cmd+C).
    ClipboardCopy,
    /// Drive the tabs programmatically (tab strip messages without `control`).
    ChromeApis,
    /// Receive the other users' cursor positions.
    CursorData,
    /// Accepted for compatibility; file uploads are not offered by the live view.
    FileUpload,
    /// Accepted for compatibility; field masking is not implemented.
    FieldMasking,
}

/// Every role, with its Hyperbeam name.
pub const ALL: &[(Role, &str)] = &[
    (Role::Control, "control"),
    (Role::Resize, "resize"),
    (Role::ClipboardCopy, "clipboard_copy"),
    (Role::ChromeApis, "chrome_apis"),
    (Role::CursorData, "cursor_data"),
    (Role::FileUpload, "file_upload"),
    (Role::FieldMasking, "field_masking"),
];

/// Hyperbeam's defaults for a newly connected user.
pub const DEFAULT: &[Role] = &[Role::ChromeApis, Role::Resize, Role::Control];

impl Role {
    /// Its Hyperbeam name.
    pub fn name(self) -> &'static str {
        ALL.iter()
            .find(|(r, _)| *r == self)
            .map(|(_, n)| *n)
            .expect("every role is named")
    }

    /// Parses a Hyperbeam role name.
    pub fn parse(name: &str) -> Option<Role> {
        ALL.iter().find(|(_, n)| *n == name).map(|(r, _)| *r)
    }
}

/// Parses a list of role names.
///
/// # Errors
/// The first unknown name.
pub fn parse_all<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<BTreeSet<Role>, String> {
    names
        .into_iter()
        .map(|n| Role::parse(n).ok_or_else(|| n.to_string()))
        .collect()
}

/// The names of a set of roles.
pub fn names(roles: &BTreeSet<Role>) -> Vec<&'static str> {
    roles.iter().map(|r| r.name()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused() {
        for (r, n) in ALL {
            assert_eq!(Role::parse(n), Some(*r));
            assert_eq!(r.name(), *n);
        }
        assert_eq!(parse_all(["control", "admin"]), Err("admin".into()));
        assert_eq!(parse_all(["resize"]).unwrap().len(), 1);
    }
}
