//! Public suffixes (`co.uk`, `github.io`): a cookie for one would reach every site under it,
//! so import refuses it. The list is the system's copy of the Public Suffix List (Debian's
//! `publicsuffix` package, `/usr/share/publicsuffix/public_suffix_list.dat`, or the file
//! `PV_PUBLIC_SUFFIX_LIST` names); without one, every single-label domain but `localhost`
//! counts as a public suffix.

use std::collections::HashSet;
use std::sync::LazyLock;

const SYSTEM_LIST: &str = "/usr/share/publicsuffix/public_suffix_list.dat";

#[derive(Default)]
struct Rules {
    exact: HashSet<String>,
    wildcard: HashSet<String>,
    exception: HashSet<String>,
}

fn parse(text: &str) -> Rules {
    let mut r = Rules::default();
    for line in text.lines() {
        let rule = line.split_whitespace().next().unwrap_or("");
        if rule.is_empty() || rule.starts_with("//") {
            continue;
        }
        let rule = rule.to_ascii_lowercase();
        if let Some(e) = rule.strip_prefix('!') {
            r.exception.insert(e.to_string());
        } else if let Some(w) = rule.strip_prefix("*.") {
            r.wildcard.insert(w.to_string());
        } else {
            r.exact.insert(rule);
        }
    }
    r
}

static RULES: LazyLock<Option<Rules>> = LazyLock::new(|| {
    let path = std::env::var("PV_PUBLIC_SUFFIX_LIST").unwrap_or_else(|_| SYSTEM_LIST.into());
    match std::fs::read_to_string(&path) {
        Ok(t) => Some(parse(&t)),
        Err(e) => {
            tracing::warn!(path, error = %e, "no public suffix list: only single-label cookie domains are refused as public suffixes (install Debian's publicsuffix)");
            None
        }
    }
});

fn is_suffix_in(r: &Rules, host: &str) -> bool {
    if r.exception.contains(host) {
        return false;
    }
    if r.exact.contains(host) {
        return true;
    }
    host.split_once('.')
        .is_some_and(|(_, parent)| r.wildcard.contains(parent))
}

/// Whether `domain` (a cookie domain, with or without its leading dot) is a public suffix.
pub fn is_public_suffix(domain: &str) -> bool {
    let host = domain.trim_start_matches('.').to_ascii_lowercase();
    if host.parse::<std::net::IpAddr>().is_ok() {
        return false;
    }
    match RULES.as_ref() {
        Some(r) => is_suffix_in(r, &host),
        None => !host.contains('.') && host != "localhost",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_exact_wildcard_exception() {
        let r = parse("// comment\ncom\nco.uk\n*.ck\n!www.ck\ngithub.io\n");
        for s in ["com", "co.uk", "foo.ck", "github.io"] {
            assert!(is_suffix_in(&r, s), "{s}");
        }
        for s in [
            "example.com",
            "bbc.co.uk",
            "www.ck",
            "me.github.io",
            "a.foo.ck",
        ] {
            assert!(!is_suffix_in(&r, s), "{s}");
        }
        assert!(!is_public_suffix("127.0.0.1"));
    }
}
