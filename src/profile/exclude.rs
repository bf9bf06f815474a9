//! Which parts of a Chromium profile are left out of an archive.
//!
//! The rules are data: [`DEFAULT_EXCLUDES`] (from measured Chromium facts: caches, locks,
//! logs, temp files, crash dumps, `Singleton*`) plus user patterns from the config.
//!
//! Pattern language, matched against `/`-separated relative paths:
//! - `*` matches any run of characters within one path component, `?` one character;
//! - a pattern without `/` matches any single component at any depth (the whole subtree
//!   under a matching directory is left out);
//! - a pattern with inner `/` matches that run of consecutive components at any depth;
//! - a trailing `/` restricts the last component to directories.

/// Leave-out patterns applied to every profile.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    "Singleton*",
    "Cache/",
    "Code Cache/",
    "GPUCache/",
    "DawnGraphiteCache/",
    "DawnWebGPUCache/",
    "GPUPersistentCache/",
    "GrShaderCache/",
    "ShaderCache/",
    "GraphiteDawnCache/",
    "Shared Dictionary/cache/",
    "component_crx_cache/",
    "extensions_crx_cache/",
    "Safe Browsing/",
    "OptimizationGuideModelsManifest/",
    "optimization_guide_*",
    "Crashpad/",
    "Crash Reports/",
    "BrowserMetrics*",
    "blob_storage/",
    "LOG",
    "LOG.old",
    "LOCK",
    "*.tmp",
    ".org.chromium.Chromium.*",
    ".com.google.Chrome.*",
];

#[derive(Debug, Clone)]
struct Pattern {
    parts: Vec<String>,
    dir_only: bool,
}

/// A compiled set of leave-out patterns.
#[derive(Debug, Clone)]
pub struct Excludes {
    patterns: Vec<Pattern>,
}

impl Default for Excludes {
    fn default() -> Self {
        Excludes::new(&[])
    }
}

impl Excludes {
    /// The default patterns plus `extra`.
    pub fn new(extra: &[String]) -> Self {
        let patterns = DEFAULT_EXCLUDES
            .iter()
            .map(|s| s.to_string())
            .chain(extra.iter().cloned())
            .filter(|p| !p.trim_matches('/').is_empty())
            .map(|p| Pattern {
                dir_only: p.ends_with('/'),
                parts: p.trim_matches('/').split('/').map(str::to_string).collect(),
            })
            .collect();
        Excludes { patterns }
    }

    /// Whether the entry at `components` (relative path) is left out.
    pub fn is_excluded(&self, components: &[&str], is_dir: bool) -> bool {
        self.patterns.iter().any(|p| {
            if p.dir_only && !is_dir {
                return false;
            }
            let n = p.parts.len();
            // The pattern's last part must match the entry itself; earlier parts the
            // components just before it.
            if components.len() < n {
                return false;
            }
            let tail = &components[components.len() - n..];
            p.parts
                .iter()
                .zip(tail)
                .all(|(pat, name)| glob(pat.as_bytes(), name.as_bytes()))
        })
    }
}

/// `*` and `?` matching of one component.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(path: &str, dir: bool) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        Excludes::new(&["Custom Junk/".into(), "Default/*.bak".into()]).is_excluded(&parts, dir)
    }

    #[test]
    fn defaults() {
        assert!(ex("SingletonLock", false));
        assert!(ex("Default/Cache", true));
        assert!(!ex("Default/Cache", false));
        assert!(ex("Default/Code Cache", true));
        assert!(ex("Default/Shared Dictionary/cache", true));
        assert!(!ex("Default/Shared Dictionary", true));
        assert!(ex("Default/Local Storage/leveldb/LOG", false));
        assert!(ex("Default/Local Storage/leveldb/LOG.old", false));
        assert!(ex("Default/Local Storage/leveldb/LOCK", false));
        assert!(ex("BrowserMetrics-spare.pma", false));
        assert!(ex("optimization_guide_hint_cache_store", true));
        assert!(ex("Default/x.tmp", false));
        assert!(ex(".org.chromium.Chromium.abc123", false));
        assert!(!ex("Default/Cookies", false));
        assert!(!ex("Default/Cookies-journal", false));
        assert!(!ex("Default/Local Storage/leveldb/000003.log", false));
        assert!(!ex("Default/History", false));
        assert!(!ex("Local State", false));
    }

    #[test]
    fn extra_patterns() {
        assert!(ex("Default/Custom Junk", true));
        assert!(ex("Default/old.bak", false));
        assert!(!ex("Other/old.bak", false));
    }

    #[test]
    fn glob_cases() {
        assert!(glob(b"a*c", b"abbbc"));
        assert!(glob(b"*", b""));
        assert!(!glob(b"a?c", b"ac"));
        assert!(glob(b"*.tmp", b"x.y.tmp"));
    }
}
