//! The store's layout: every object key the daemon reads or writes, in one place
//! (`docs/FORMAT.md` §1 for profiles; the audit trail and the cluster's records beside
//! them), and the validated names keys are made of.
//!
//! A [`ProfileAddr`] is a tenant and a profile id checked once, where they enter (the vault's
//! public calls); everything under it builds keys from it and checks nothing again. Parsing
//! goes the other way for listings: [`GenFile::parse`] names what a key under `gens/` is.

use std::fmt;

/// A tenant or profile id that is not `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} id {id:?}: use 1-128 characters of [A-Za-z0-9._-], starting with a letter or digit")]
pub struct InvalidId {
    /// "tenant" or "profile".
    pub what: &'static str,
    /// The id.
    pub id: String,
}

/// Checks a tenant or profile id (`what` names which, for the error).
///
/// # Errors
/// [`InvalidId`].
pub fn validate_id(what: &'static str, id: &str) -> Result<(), InvalidId> {
    let b = id.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(InvalidId {
            what,
            id: id.into(),
        })
    }
}

/// A tenant's profile: both ids valid, so its keys are safe to build.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProfileAddr {
    tenant: String,
    profile: String,
    /// `tenants/<tenant>/profiles/<profile>/`.
    prefix: String,
}

impl ProfileAddr {
    /// Profile `profile` of tenant `tenant`.
    ///
    /// # Errors
    /// Either id is invalid.
    pub fn new(tenant: &str, profile: &str) -> Result<ProfileAddr, InvalidId> {
        validate_id("tenant", tenant)?;
        validate_id("profile", profile)?;
        Ok(ProfileAddr {
            prefix: format!("{}{profile}/", profiles_prefix(tenant)),
            tenant: tenant.to_string(),
            profile: profile.to_string(),
        })
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The profile id.
    pub fn profile(&self) -> &str {
        &self.profile
    }

    /// `tenants/<tenant>/profiles/<profile>/`: every object of the profile.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `head.json`: the head record (§4).
    pub fn head(&self) -> String {
        format!("{}head.json", self.prefix)
    }

    /// `data.json`: the data document (§8).
    pub fn data(&self) -> String {
        format!("{}data.json", self.prefix)
    }

    /// `lease.json`: who holds the profile for a session.
    pub fn lease(&self) -> String {
        format!("{}lease.json", self.prefix)
    }

    /// `last_used`: when a session last loaded the profile (retention).
    pub fn last_used(&self) -> String {
        format!("{}last_used", self.prefix)
    }

    /// `gc.json`: the pack collection record (§10.7).
    pub fn gc(&self) -> String {
        format!("{}gc.json", self.prefix)
    }

    /// `gens/`: every generation's files.
    pub fn gens(&self) -> String {
        format!("{}gens/", self.prefix)
    }

    /// `gens/<generation:020>.<ext>`: one file of a generation.
    pub fn generation(&self, generation: u64, file: GenFile) -> String {
        format!("{}gens/{generation:020}.{}", self.prefix, file.ext())
    }

    /// `packs/`: the chunk packs (format 2).
    pub fn packs(&self) -> String {
        format!("{}packs/", self.prefix)
    }

    /// `packs/<pack id>.pvp` (§10.4).
    pub fn pack(&self, pack: &str) -> String {
        format!("{}packs/{pack}.pvp", self.prefix)
    }
}

impl fmt::Display for ProfileAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.profile)
    }
}

/// A generation's files under `gens/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenFile {
    /// `.pvo`: the encrypted payload (§2).
    Payload,
    /// `.json`: the generation record (§5).
    Record,
    /// `.meta`: the sidecar (§9).
    Meta,
}

/// The largest generation number a store may hold (far beyond any profile's saves).
pub const MAX_GENERATION: u64 = 1 << 53;

impl GenFile {
    fn ext(self) -> &'static str {
        match self {
            GenFile::Payload => "pvo",
            GenFile::Record => "json",
            GenFile::Meta => "meta",
        }
    }

    /// The generation and file a name under `gens/` is (`None`: not one of ours). Only the
    /// names the daemon writes count: 20 digits, a generation from 1 to [`MAX_GENERATION`]
    /// (a planted `+5`, `7` or `18446744073709551615` is not a generation, and no save can
    /// be made to overflow the number after it).
    pub fn parse(name: &str) -> Option<(u64, GenFile)> {
        let (n, ext) = name.split_once('.')?;
        let file = [GenFile::Payload, GenFile::Record, GenFile::Meta]
            .into_iter()
            .find(|f| f.ext() == ext)?;
        if n.len() != 20 || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let g: u64 = n.parse().ok()?;
        (1..=MAX_GENERATION).contains(&g).then_some((g, file))
    }
}

/// `tenants/`: every tenant.
pub const TENANTS: &str = "tenants/";

/// `tenants/<tenant>/profiles/`: a tenant's profiles (the tenant is not checked: callers
/// list with it, or made it from checked ids).
pub fn profiles_prefix(tenant: &str) -> String {
    format!("{TENANTS}{tenant}/profiles/")
}

/// `tenants/<tenant>/aliases/<alias>`: a profile id that names another (the profile a
/// session's id saved under).
///
/// # Errors
/// Either id is invalid.
pub fn alias(tenant: &str, alias: &str) -> Result<String, InvalidId> {
    validate_id("tenant", tenant)?;
    validate_id("profile", alias)?;
    Ok(format!("{TENANTS}{tenant}/aliases/{alias}"))
}

/// `audit/<tenant>/`: a tenant's audit trail.
pub fn audit_prefix(tenant: &str) -> String {
    format!("audit/{tenant}/")
}

/// `audit/<tenant>/<ms:013>-<id>.json`: one audit event.
pub fn audit_event(tenant: &str, at_ms: u64, id: &str) -> String {
    format!("{}{at_ms:013}-{id}.json", audit_prefix(tenant))
}

/// `cluster/nodes/`: the cluster's members, `<node>.json` each.
pub const CLUSTER_NODES: &str = "cluster/nodes/";
/// `cluster/sessions/`: public session records, `<session id>.json` each.
pub const CLUSTER_SESSIONS: &str = "cluster/sessions/";
/// `cluster/admins/`: the admin-token index, `<SHA-256 of the token>` each holding its
/// session's id, so a node finds the session of an admin token used on a route without a
/// session id (the profile data document). A hash of a random 256-bit token reveals nothing.
pub const CLUSTER_ADMINS: &str = "cluster/admins/";

/// `cluster/nodes/<node>.json`.
pub fn cluster_node(node: &str) -> String {
    format!("{CLUSTER_NODES}{node}.json")
}

/// `cluster/sessions/<id>.json`.
pub fn cluster_session(id: &str) -> String {
    format!("{CLUSTER_SESSIONS}{id}.json")
}

/// `cluster/admins/<sha256>`, if `token_sha256` is 64 hex digits.
pub fn cluster_admin(token_sha256: &str) -> Option<String> {
    (token_sha256.len() == 64 && token_sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("{CLUSTER_ADMINS}{token_sha256}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_those_format_md_names() {
        let at = ProfileAddr::new("acme", "p-1").unwrap();
        assert_eq!(at.prefix(), "tenants/acme/profiles/p-1/");
        assert_eq!(at.head(), "tenants/acme/profiles/p-1/head.json");
        assert_eq!(
            at.generation(7, GenFile::Payload),
            "tenants/acme/profiles/p-1/gens/00000000000000000007.pvo"
        );
        assert_eq!(at.pack("ab"), "tenants/acme/profiles/p-1/packs/ab.pvp");
        assert_eq!(
            GenFile::parse("00000000000000000007.meta"),
            Some((7, GenFile::Meta))
        );
        assert_eq!(GenFile::parse("7.tmp"), None);
        // Only the names the daemon writes are generations.
        for planted in [
            "7.json",
            "+0000000000000000007.json",
            "00000000000000000000.json",
            "18446744073709551615.json",
            "09007199254740993.pvo",
            "00009007199254740993.pvo",
        ] {
            assert_eq!(GenFile::parse(planted), None, "{planted}");
        }
        assert_eq!(
            GenFile::parse("00009007199254740992.pvo"),
            Some((MAX_GENERATION, GenFile::Payload))
        );
        assert_eq!(GenFile::parse("x.json"), None);
        assert_eq!(alias("acme", "a").unwrap(), "tenants/acme/aliases/a");
        assert_eq!(
            audit_event("acme", 5, "e"),
            "audit/acme/0000000000005-e.json"
        );
    }

    #[test]
    fn hostile_ids_make_no_key() {
        for bad in ["", "../x", ".hidden", "a/b", "a\0", &"x".repeat(129)] {
            assert!(ProfileAddr::new("acme", bad).is_err(), "{bad:?}");
            assert!(ProfileAddr::new(bad, "p").is_err(), "{bad:?}");
        }
        assert!(ProfileAddr::new(&"x".repeat(128), "p").is_ok());
        assert!(cluster_admin("../../x").is_none());
    }
}
