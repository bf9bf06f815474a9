//! The flat `[server]` section of earlier releases, still read: each of its keys has a home
//! in one of the sections the modules own (`[http]`, `[sessions]`, `[room]`, `[live]`,
//! `[cluster]`, `[browser]`), and [`lift`] moves it there before the file is read. A key set
//! both ways is refused, as is a `[server]` key that never existed.

use toml::{Table, Value};

/// Every key of the old `[server]` section and where it lives now (section, key).
pub(super) const SERVER_KEYS: &[(&str, &str, &str)] = &[
    ("listen", "http", "listen"),
    ("public_url", "http", "public_url"),
    ("api_keys_file", "http", "api_keys_file"),
    ("max_body_bytes", "http", "max_body_bytes"),
    ("max_sessions", "sessions", "max_sessions"),
    (
        "max_sessions_per_tenant",
        "sessions",
        "max_sessions_per_tenant",
    ),
    ("max_cdp_clients", "sessions", "max_cdp_clients"),
    (
        "max_cdp_clients_per_tenant",
        "sessions",
        "max_cdp_clients_per_tenant",
    ),
    ("max_state_jobs", "sessions", "max_state_jobs"),
    (
        "max_state_jobs_per_tenant",
        "sessions",
        "max_state_jobs_per_tenant",
    ),
    ("inactive_timeout", "sessions", "inactive_timeout"),
    ("absolute_timeout", "sessions", "absolute_timeout"),
    ("max_session_secs", "sessions", "max_session_secs"),
    ("allow_older_browser", "sessions", "allow_older_browser"),
    (
        "profile_data_max_bytes",
        "sessions",
        "profile_data_max_bytes",
    ),
    ("close_deadline", "sessions", "close_deadline"),
    ("restore_deadline", "sessions", "restore_deadline"),
    ("start_deadline", "sessions", "start_deadline"),
    ("shutdown_grace", "sessions", "shutdown_grace"),
    ("max_concurrent_saves", "sessions", "max_concurrent_saves"),
    ("retry_failed_every", "sessions", "retry_failed_every"),
    ("lease_ttl", "sessions", "lease_ttl"),
    ("hold_failed_saves", "sessions", "hold_failed_saves"),
    ("keep_refused_saves", "sessions", "keep_refused_saves"),
    ("store_max_value_bytes", "room", "max_value_bytes"),
    ("store_max_keys", "room", "max_keys"),
    ("store_max_bytes", "room", "max_bytes"),
    ("store_writes_per_sec", "room", "writes_per_sec"),
    ("store_watch_max_secs", "room", "watch_max_secs"),
    ("max_viewers", "live", "max_viewers"),
    ("max_viewers_per_tenant", "live", "max_viewers_per_tenant"),
    ("viewer_input_rate", "live", "input_rate"),
    ("viewer_origins", "live", "origins"),
    ("frame_ancestors", "live", "frame_ancestors"),
    ("viewer_send_timeout", "live", "send_timeout"),
    ("cluster_secret", "cluster", "secret"),
    ("node_url", "cluster", "node_url"),
    ("cluster_heartbeat_secs", "cluster", "heartbeat_secs"),
    ("cluster_node_ttl_secs", "cluster", "node_ttl_secs"),
    (
        "cluster_accept_unsigned_members",
        "cluster",
        "accept_unsigned_members",
    ),
    ("chromium", "browser", "chromium"),
    ("display", "browser", "display"),
    ("unsafe_no_sandbox", "browser", "unsafe_no_sandbox"),
    ("egress_allow", "browser", "egress_allow"),
    ("egress_deny", "browser", "egress_deny"),
    ("sandbox_memory_mb", "browser", "sandbox_memory_mb"),
    ("sandbox_pids", "browser", "sandbox_pids"),
    ("sandbox_cpus", "browser", "sandbox_cpus"),
    ("sandbox_disk_mb", "browser", "sandbox_disk_mb"),
    ("sandbox_uid_base", "browser", "sandbox_uid_base"),
    (
        "sandbox_require_cgroups",
        "browser",
        "sandbox_require_cgroups",
    ),
];

/// Moves the keys of a `[server]` table to their sections. Returns whether there was one.
///
/// # Errors
/// A message naming the key: not a key `[server]` ever had, set in both places, or a
/// `[server]` that is not a table.
pub(super) fn lift(doc: &mut Table) -> Result<bool, String> {
    let Some(server) = doc.remove("server") else {
        return Ok(false);
    };
    let Value::Table(server) = server else {
        return Err("`server` must be a table".into());
    };
    for (key, value) in server {
        let Some((_, section, new)) = SERVER_KEYS.iter().find(|(old, _, _)| *old == key) else {
            return Err(format!("unknown field `{key}` in [server]"));
        };
        let table = doc
            .entry(*section)
            .or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(table) = table else {
            return Err(format!("`{section}` must be a table"));
        };
        if table.contains_key(*new) {
            return Err(format!(
                "server.{key} and {section}.{new} are the same setting: keep {section}.{new}"
            ));
        }
        table.insert((*new).to_string(), value);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn old_keys_move_to_their_sections() {
        let mut d =
            doc("[server]\nstore_max_keys = 6\ncluster_secret = \"s\"\n[room]\nmax_bytes = 9\n");
        assert!(lift(&mut d).unwrap());
        assert!(d.get("server").is_none());
        assert_eq!(d["room"]["max_keys"].as_integer(), Some(6));
        assert_eq!(d["room"]["max_bytes"].as_integer(), Some(9));
        assert_eq!(d["cluster"]["secret"].as_str(), Some("s"));
        let mut none = doc("[room]\nmax_keys = 1\n");
        assert!(!lift(&mut none).unwrap());
    }

    #[test]
    fn unknown_and_doubled_keys_are_refused_by_name() {
        let e = lift(&mut doc("[server]\nmax_sesions = 1\n")).unwrap_err();
        assert!(e.contains("max_sesions"), "{e}");
        let e = lift(&mut doc(
            "[server]\nlisten = \"a\"\n[http]\nlisten = \"b\"\n",
        ))
        .unwrap_err();
        assert!(
            e.contains("server.listen") && e.contains("http.listen"),
            "{e}"
        );
    }

    #[test]
    fn every_old_key_has_exactly_one_home() {
        let mut seen = std::collections::BTreeSet::new();
        for (old, section, new) in SERVER_KEYS {
            assert!(seen.insert(*old), "{old} twice");
            let mut d = Table::new();
            let mut server = Table::new();
            server.insert((*old).into(), Value::Boolean(true));
            d.insert("server".into(), Value::Table(server));
            lift(&mut d).unwrap();
            assert!(d[*section].get(*new).is_some(), "{old}");
        }
    }
}
