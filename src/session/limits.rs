//! The session manager's limits: slots for starting sessions (node-wide and per tenant,
//! reserved atomically and given back by the start guard), slots for storage-state jobs,
//! and the tenant's share of DevTools clients and viewers.

use super::*;

/// A place counted in a map by key (a tenant's storage-state jobs, a session's DevTools
/// clients being connected), given back when dropped.
#[derive(Debug)]
pub struct Slot<K: std::hash::Hash + Eq> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: std::hash::Hash + Eq> Slot<K> {
    /// Counts one more under `key` in `counts` (whose lock the caller holds) until dropped.
    fn take(counts: &Arc<Mutex<HashMap<K, usize>>>, held: &mut HashMap<K, usize>, key: K) -> Self
    where
        K: Clone,
    {
        *held.entry(key.clone()).or_default() += 1;
        Slot {
            counts: counts.clone(),
            key,
        }
    }
}

impl<K: std::hash::Hash + Eq> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut c = self.counts.lock().expect("slots lock");
        if let Some(n) = c.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(&self.key);
            }
        }
    }
}

/// A running storage-state job's slot (see [`Manager::begin_state_job`]).
pub type JobSlot = Slot<String>;

/// A DevTools client's place while it connects (see [`Manager::reserve_cdp_client`]).
pub type CdpSlot = Slot<(String, String)>;

impl Manager {
    /// A place for one more DevTools client of `s`, held while it connects (once connected
    /// it is counted by the session's pipe): clients connecting at once are counted with
    /// those connected, so no burst gets past the limits.
    ///
    /// # Errors
    /// Which limit is reached: (whose, the setting, its value).
    pub fn reserve_cdp_client(
        &self,
        s: &Session,
    ) -> Result<CdpSlot, (&'static str, &'static str, usize)> {
        let mut c = self.cdp_connecting.lock().expect("cdp lock");
        let key = (s.tenant.clone(), s.id.clone());
        let mine = c.get(&key).copied().unwrap_or(0);
        let tenant: usize = c
            .iter()
            .filter(|((t, _), _)| *t == s.tenant)
            .map(|(_, n)| n)
            .sum();
        for (max, now, whose, setting) in [
            (
                self.cfg.max_cdp_clients,
                s.cdp().client_count() + mine,
                "this session",
                "max_cdp_clients",
            ),
            (
                self.cfg.max_cdp_clients_per_tenant,
                self.tenant_clients(&s.tenant).0 + tenant,
                "this tenant on this node",
                "max_cdp_clients_per_tenant",
            ),
        ] {
            if max > 0 && now >= max {
                return Err((whose, setting, max));
            }
        }
        Ok(Slot::take(&self.cdp_connecting, &mut c, key))
    }

    /// A slot for a storage-state import or export of `tenant` (a browser of its own), held
    /// until the returned guard drops.
    ///
    /// # Errors
    /// [`Error::TooManyJobs`] past `max_state_jobs` on this node or for the tenant.
    pub fn begin_state_job(&self, tenant: &str) -> Result<JobSlot, Error> {
        let (node_max, tenant_max) = self.cfg.max_state_jobs;
        let mut jobs = self.state_jobs.lock().expect("jobs lock");
        if node_max > 0 && jobs.values().sum::<usize>() >= node_max {
            return Err(Error::TooManyJobs(format!(
                "sessions.max_state_jobs = {node_max}"
            )));
        }
        let mine = jobs.get(tenant).copied().unwrap_or(0);
        if tenant_max > 0 && mine >= tenant_max {
            return Err(Error::TooManyJobs(format!(
                "sessions.max_state_jobs_per_tenant = {tenant_max}"
            )));
        }
        Ok(Slot::take(&self.state_jobs, &mut jobs, tenant.to_string()))
    }

    /// DevTools connections and live-view viewers of `tenant`'s sessions on this node.
    pub fn tenant_clients(&self, tenant: &str) -> (usize, usize) {
        self.list(tenant, true).iter().fold((0, 0), |(c, v), s| {
            (c + s.cdp().client_count(), v + s.live.viewer_count())
        })
    }

    /// Reserves a session slot for `id` (counted with the running sessions until the start
    /// finishes), or refuses when every slot is taken.
    pub(super) fn reserve_slot(
        self: &Arc<Self>,
        tenant: &str,
        id: &str,
    ) -> Result<start::StartGuard, Error> {
        let sessions = self.sessions.lock().expect("sessions lock");
        let mut starting = self.starting.lock().expect("starting lock");
        let active = sessions.values().filter(|s| s.is_active());
        let mine = active.clone().filter(|s| s.tenant == tenant).count()
            + starting.get(tenant).copied().unwrap_or(0);
        if active.count() + starting.values().sum::<usize>() >= self.cfg.max_sessions {
            return Err(Error::TooManySessions(self.cfg.max_sessions));
        }
        if self.cfg.max_sessions_per_tenant > 0 && mine >= self.cfg.max_sessions_per_tenant {
            return Err(Error::TenantLimit(self.cfg.max_sessions_per_tenant));
        }
        *starting.entry(tenant.to_string()).or_default() += 1;
        Ok(start::StartGuard {
            manager: self.clone(),
            tenant: tenant.to_string(),
            id: id.to_string(),
            profile: None,
            lease: None,
            armed: true,
            restore: None,
            leasing: None,
        })
    }
}
