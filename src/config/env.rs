//! The `PV_*` environment overlay, derived from one table: each variable names the config
//! key it sets and how its text becomes that key's value. The value is then read by the
//! same deserializer as the file (enums, numbers and types are checked once, the file's
//! way), so a variable can do nothing a config file could not.

use std::collections::BTreeMap;

use super::{Error, FileConfig};

/// How a variable's text becomes a TOML value.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// As it is.
    Text,
    /// A URL: without trailing slashes.
    Url,
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// A switch that weakens a protection: on only for exactly `1`, `true` or `yes`;
    /// anything else leaves it off.
    OnlyIfYes,
    /// A protection: off only for exactly `0`, `false` or `no`; anything else leaves it on.
    UnlessNo,
    /// A non-negative integer.
    Int,
    /// `a,b,c`.
    List,
    /// `name=value,...` (a value may contain `=` and `:`, as ARNs do).
    Map,
}

/// Every `PV_*` variable that sets a config key: (variable, key path, kind).
const VARS: &[(&str, &str, Kind)] = &[
    ("PV_KEYS_DIR", "keys.dir", Kind::Text),
    ("PV_ACTIVE_KEY", "keys.active", Kind::Text),
    ("PV_ALLOW_DEV_KEY", "keys.allow_dev_key", Kind::Bool),
    ("PV_KMS_KEYS", "keys.kms", Kind::Map),
    ("PV_KMS_ENDPOINT", "keys.kms_endpoint", Kind::Text),
    ("PV_TENANT_KEYS", "keys.tenants", Kind::Map),
    ("PV_S3_PATH_STYLE", "s3.path_style", Kind::Bool),
    (
        "PV_KEEP_GENERATIONS",
        "retention.keep_generations",
        Kind::Int,
    ),
    ("PV_PACK_GRACE_SECS", "retention.pack_grace_secs", Kind::Int),
    ("PV_ARCHIVE_FORMAT", "archive.format", Kind::Int),
    ("PV_COMPRESSION", "archive.compression", Kind::Text),
    ("PV_LISTEN", "http.listen", Kind::Text),
    ("PV_PUBLIC_URL", "http.public_url", Kind::Url),
    ("PV_CLUSTER_SECRET", "cluster.secret", Kind::Text),
    ("PV_NODE_URL", "cluster.node_url", Kind::Url),
    (
        "PV_CLUSTER_ACCEPT_UNSIGNED_MEMBERS",
        "cluster.accept_unsigned_members",
        Kind::Bool,
    ),
    (
        "PV_UNSAFE_NO_SANDBOX",
        "browser.unsafe_no_sandbox",
        Kind::OnlyIfYes,
    ),
    ("PV_DISPLAY", "browser.display", Kind::Text),
    (
        "PV_SANDBOX_REQUIRE_CGROUPS",
        "browser.sandbox_require_cgroups",
        Kind::UnlessNo,
    ),
    ("PV_EGRESS_ALLOW", "browser.egress_allow", Kind::List),
    ("PV_EGRESS_DENY", "browser.egress_deny", Kind::List),
    ("PV_CHROMIUM", "browser.chromium", Kind::Text),
    ("PV_API_KEYS_FILE", "http.api_keys_file", Kind::Text),
];

/// A non-empty variable.
pub(super) fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn value(name: &'static str, kind: Kind, v: &str) -> Result<toml::Value, Error> {
    let bad = |message: String| Error::Env { name, message };
    Ok(match kind {
        Kind::Text => toml::Value::String(v.to_string()),
        Kind::Url => toml::Value::String(v.trim_end_matches('/').to_string()),
        Kind::Bool => toml::Value::Boolean(match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(bad(format!("expected true/false, got {v:?}"))),
        }),
        Kind::OnlyIfYes => toml::Value::Boolean(matches!(v, "1" | "true" | "yes")),
        Kind::UnlessNo => toml::Value::Boolean(!matches!(v, "0" | "false" | "no")),
        Kind::Int => toml::Value::Integer(
            v.trim()
                .parse::<u32>()
                .map_err(|_| bad(format!("not a number: {v:?}")))?
                .into(),
        ),
        Kind::List => toml::Value::Array(
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.into()))
                .collect(),
        ),
        Kind::Map => toml::Value::Table(
            map(name, v)?
                .into_iter()
                .map(|(k, v)| (k, toml::Value::String(v)))
                .collect(),
        ),
    })
}

/// Parses `a=x,b=y`.
fn map(name: &'static str, v: &str) -> Result<BTreeMap<String, String>, Error> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(Error::Env {
                name,
                message: format!("expected name=value entries, got {item:?}"),
            }),
        })
        .collect()
}

/// Sets `path` (dotted) in `doc` to `v`.
fn set(doc: &mut toml::Table, path: &str, v: toml::Value) {
    let (sections, key) = path.rsplit_once('.').map_or(("", path), |(s, k)| (s, k));
    let mut t = doc;
    for s in sections.split('.').filter(|s| !s.is_empty()) {
        let entry = t
            .entry(s.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        t = entry.as_table_mut().expect("a table");
    }
    t.insert(key.to_string(), v);
}

/// The config file's document with every `PV_*` variable set in `lookup` (the
/// environment, or a test's map) applied over it, read as a [`FileConfig`]. A variable
/// whose value the config type refuses is named in the error.
///
/// # Errors
/// [`Error::Env`].
pub(super) fn overlay(
    mut doc: toml::Table,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<FileConfig, Error> {
    for &(name, path, kind) in VARS {
        let Some(text) = lookup(name) else {
            continue;
        };
        let v = value(name, kind, &text)?;
        // Checked alone first, so a refused value names its variable.
        let mut alone = toml::Table::new();
        set(&mut alone, path, v.clone());
        toml::Value::Table(alone)
            .try_into::<FileConfig>()
            .map_err(|e| Error::Env {
                name,
                message: e.to_string().trim().replace('\n', " "),
            })?;
        set(&mut doc, path, v);
    }
    toml::Value::Table(doc)
        .try_into::<FileConfig>()
        .map_err(|e| Error::Env {
            name: "PV_*",
            message: e.to_string().trim().replace('\n', " "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DisplayMode;

    fn with(vars: &[(&str, &str)]) -> Result<FileConfig, Error> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut file = toml::Table::new();
        set(&mut file, "http.listen", "127.0.0.1:1".into());
        set(&mut file, "retention.keep_generations", 3.into());
        overlay(file, |n| vars.get(n).cloned())
    }

    #[test]
    fn variables_win_over_the_file_through_the_file_s_types() {
        let c = with(&[
            ("PV_LISTEN", "0.0.0.0:9"),
            ("PV_PUBLIC_URL", "https://pv.example//"),
            ("PV_DISPLAY", "headless"),
            ("PV_UNSAFE_NO_SANDBOX", "yes"),
            ("PV_EGRESS_ALLOW", "10.0.0.0/8, ,192.168.1.0/24"),
            ("PV_KMS_KEYS", "a=arn:aws:kms:x:1:key/k=1,b=alias/b"),
            ("PV_ARCHIVE_FORMAT", "1"),
        ])
        .unwrap();
        assert_eq!(c.http.listen, "0.0.0.0:9");
        assert_eq!(c.http.public_url.as_deref(), Some("https://pv.example"));
        assert_eq!(c.browser.display, DisplayMode::Headless);
        assert!(c.browser.unsafe_no_sandbox);
        // The sandbox goes off only for an exact yes; cgroups stop being required only for
        // an exact no.
        for (v, off) in [("yes", true), ("1", true), ("True", false), ("on", false)] {
            let c = with(&[("PV_UNSAFE_NO_SANDBOX", v)]).unwrap();
            assert_eq!(c.browser.unsafe_no_sandbox, off, "PV_UNSAFE_NO_SANDBOX={v}");
        }
        for (v, required) in [("no", false), ("0", false), ("False", true), ("off", true)] {
            let c = with(&[("PV_SANDBOX_REQUIRE_CGROUPS", v)]).unwrap();
            assert_eq!(
                c.browser.sandbox_require_cgroups, required,
                "PV_SANDBOX_REQUIRE_CGROUPS={v}"
            );
        }
        assert_eq!(c.browser.egress_allow, ["10.0.0.0/8", "192.168.1.0/24"]);
        assert_eq!(c.keys.kms["a"], "arn:aws:kms:x:1:key/k=1");
        assert_eq!(c.archive.format, 1);
        assert_eq!(c.retention.keep_generations, 3, "the file's value stays");
    }

    #[test]
    fn a_refused_value_names_its_variable() {
        for (name, v) in [
            ("PV_DISPLAY", "holographic"),
            ("PV_COMPRESSION", "lz4"),
            ("PV_ALLOW_DEV_KEY", "maybe"),
            ("PV_KEEP_GENERATIONS", "-1"),
            ("PV_TENANT_KEYS", "acme"),
        ] {
            match with(&[(name, v)]) {
                Err(Error::Env { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name}={v}: {other:?}"),
            }
        }
    }

    #[test]
    fn every_variable_is_documented_beside_its_key() {
        let example = include_str!("../../deploy/config.example.toml");
        for &(name, path, _) in VARS {
            let key = path.rsplit('.').next().unwrap();
            let line = example
                .lines()
                .position(|l| l.contains(&format!("({name}")) || l.contains(&format!("{name}=")))
                .unwrap_or_else(|| panic!("{name} is not in deploy/config.example.toml"));
            assert!(
                example.lines().skip(line).take(4).any(|l| {
                    let l = l.trim_start_matches("# ");
                    l.starts_with(&format!("{key} ")) || l == format!("[{path}]")
                }),
                "{name} is documented away from its key `{path}`"
            );
        }
    }

    #[test]
    fn every_variable_names_a_key_the_config_has() {
        // A variable whose key the config does not have would be refused by name.
        for &(name, path, kind) in VARS {
            let sample = match kind {
                Kind::Text | Kind::Url => match name {
                    "PV_DISPLAY" => "virtual",
                    "PV_COMPRESSION" => "zstd",
                    _ => "x",
                },
                Kind::Bool | Kind::OnlyIfYes | Kind::UnlessNo => "true",
                Kind::Int => "2",
                Kind::List => "a",
                Kind::Map => "a=b",
            };
            with(&[(name, sample)]).unwrap_or_else(|e| panic!("{name} ({path}): {e}"));
        }
    }
}
