//! What this build can use: records and objects of a newer profile-vault format are refused
//! as such (never as damage), and a generation saved by a newer Chromium than the browser
//! that would open it is refused before anything is restored.

use super::*;

/// Refuses a JSON record whose `format` is later than `reads`, before it is parsed strictly
/// (a newer format may have fields this build does not know).
pub(crate) fn check_not_newer(
    what: &'static str,
    key: &str,
    bytes: &[u8],
    reads: u32,
) -> Result<()> {
    let format = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("format").and_then(serde_json::Value::as_u64));
    match format {
        Some(f) if f > u64::from(reads) => Err(Error::NewerFormat {
            what,
            key: key.to_string(),
            format: f,
            reads,
        }),
        _ => Ok(()),
    }
}

/// The major number of a Chromium version (`"156.0.8078.114"` -> 156).
pub fn major(version: &str) -> Option<u64> {
    version.trim().split('.').next()?.parse().ok()
}

impl Vault {
    /// Refuses to hand generation `generation` (the head when `None`) to a browser of
    /// `browser_version` when a newer Chromium major version wrote it. Unknown versions on
    /// either side pass (nothing to compare).
    ///
    /// # Errors
    /// [`Error::BrowserTooOld`]; reading the record.
    pub async fn check_browser(
        &self,
        at: &ProfileAddr,
        generation: Option<u64>,
        browser_version: Option<&str>,
    ) -> Result<()> {
        let profile = at.profile();
        let Some(browser) = browser_version else {
            return Ok(());
        };
        let generation = self.resolve(at, generation).await?;
        let rec = self.read_record(at, generation).await?;
        let Some(saved) = rec.stats.chromium_version.as_deref() else {
            return Ok(());
        };
        match (major(saved), major(browser)) {
            (Some(s), Some(b)) if s > b => Err(Error::BrowserTooOld {
                profile: profile.into(),
                generation,
                profile_version: saved.into(),
                browser_version: browser.into(),
            }),
            _ => Ok(()),
        }
    }
}
