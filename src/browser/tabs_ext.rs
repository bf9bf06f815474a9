//! The tabs agent every session's browser loads: a small extension (embedded in this binary,
//! `tabs_ext/`) whose service worker holds Chrome's own `chrome.tabs`, so the daemon can answer
//! the SDK's `tabs.*` with Chrome's real `Tab` objects and events. This module owns its files,
//! where they are written, and its id; [`crate::live::chrome_tabs`] talks to it.
//!
//! No page reaches it (no content script, no `externally_connectable`, no web-accessible
//! file). Each browser gets its own copy in its run directory, owner-only and its uid's.

use std::io;
use std::path::Path;

/// Where it is mounted (read-only) inside the sandbox.
pub(super) const IN_SANDBOX: &str = "/pv/tabs-ext";

const FILES: &[(&str, &str)] = &[
    ("manifest.json", include_str!("tabs_ext/manifest.json")),
    ("agent.js", include_str!("tabs_ext/agent.js")),
];

/// The id Chromium gives an unpacked extension loaded from `path`: the first 128 bits of
/// the SHA-256 of the path, each hex digit mapped to `a`-`p`.
pub fn id_for(path: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(path.as_bytes());
    h[..16]
        .iter()
        .flat_map(|b| [b >> 4, b & 15])
        .map(|n| char::from(b'a' + n))
        .collect()
}

/// Writes the extension into `dir` (a browser's run directory's), owner-only like the rest
/// of it.
///
/// # Errors
/// The directory or a file cannot be written.
pub(super) fn install(dir: &Path) -> io::Result<()> {
    crate::fsutil::create_private_dir(dir)?;
    for (name, text) in FILES {
        crate::fsutil::write_private_new(&dir.join(name), text.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chromium's own derivation (an extension loaded from /tmp/ext1 is
    /// `dmaemkobdlanfahboapabkahmgennpml`, measured with Chromium 156).
    #[test]
    fn the_id_is_chromiums() {
        assert_eq!(id_for("/tmp/ext1"), "dmaemkobdlanfahboapabkahmgennpml");
        assert_eq!(id_for(IN_SANDBOX).len(), 32);
    }

    #[test]
    fn the_manifest_names_the_agent_and_no_way_in_for_pages() {
        let m: serde_json::Value = serde_json::from_str(FILES[0].1).unwrap();
        assert_eq!(m["background"]["service_worker"], FILES[1].0);
        for k in [
            "content_scripts",
            "externally_connectable",
            "web_accessible_resources",
        ] {
            assert!(m.get(k).is_none(), "{k}");
        }
    }
}
