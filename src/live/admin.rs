//! What a session's admin does to its users: their roles (`addRoles`/`removeRoles`), their
//! permissions (`setPermissions`) and their removal, for users connected and users away for
//! a moment alike. Every change and revocation is made under the users' lock, which a join
//! and a resume take too.

use super::*;

impl Live {
    /// `addRoles`/`removeRoles`: changes the roles of the listed users (or, `exclusive`, of
    /// every other user). Returns how many users changed.
    pub fn change_roles(
        &self,
        ids: &[String],
        roles: &BTreeSet<Role>,
        exclusive: bool,
        add: bool,
    ) -> usize {
        // Both lists under the users' lock (as a resume takes them): a user coming back in
        // between does not miss the change.
        let users = self.users.lock().expect("users");
        let mut n = 0;
        for u in users.iter().filter(|u| ids.contains(&u.id) != exclusive) {
            {
                let mut r = u.roles.lock().expect("roles");
                if add {
                    r.extend(roles.iter().copied());
                } else {
                    r.retain(|x| !roles.contains(x));
                }
            }
            u.notify(Notice::Roles);
            n += 1;
        }
        // Users away for a moment come back with the roles they would have now.
        for d in self
            .departed
            .lock()
            .expect("departed")
            .iter_mut()
            .filter(|d| ids.contains(&d.id) != exclusive)
        {
            if add {
                d.roles.extend(roles.iter().copied());
            } else {
                d.roles.retain(|x| !roles.contains(x));
            }
        }
        n
    }

    /// [`Live::set_permissions`] from Hyperbeam's JSON `{priority?, idle_timeout?,
    /// control_disabled?}` (setPermissions, an auth webhook's `permissions`); keys left out,
    /// or a value that is not an object, change nothing.
    pub fn set_permissions_json(&self, id: &str, p: &serde_json::Value) -> bool {
        p.is_object()
            && self.set_permissions(
                id,
                p["priority"].as_i64(),
                p["idle_timeout"].as_u64(),
                p["control_disabled"].as_bool(),
            )
    }

    /// `setPermissions`: the keys given change, the others stay (also of a user away for a
    /// moment, who comes back with them). False for an unknown user.
    pub fn set_permissions(
        &self,
        id: &str,
        priority: Option<i64>,
        idle_timeout: Option<u64>,
        control_disabled: Option<bool>,
    ) -> bool {
        let change = |p: &mut Permissions| {
            if let Some(v) = priority {
                p.priority = v;
            }
            if let Some(v) = idle_timeout {
                p.idle_timeout = v;
            }
            if let Some(v) = control_disabled {
                p.control_disabled = v;
            }
        };
        let users = self.users.lock().expect("users");
        if let Some(u) = users.iter().find(|u| u.id == id) {
            change(&mut u.perms.lock().expect("perms"));
            u.notify(Notice::Roles);
            return true;
        }
        let mut departed = self.departed.lock().expect("departed");
        match departed.iter_mut().find(|d| d.id == id) {
            Some(d) => {
                change(&mut d.perms);
                true
            }
            None => false,
        }
    }

    /// Removes a user: revokes the viewer token it joined with (it cannot come back with
    /// it, nor can anyone else holding it) and closes its socket from the server, however
    /// full its queue. False if no such user is connected.
    pub fn kick(&self, id: &str) -> bool {
        let u = {
            // Revoked under the users' lock: a join checks the token under it.
            let users = self.users.lock().expect("users");
            let Some(u) = users.iter().find(|u| u.id == id).cloned() else {
                return self.kick_departed(&users, id);
            };
            self.tokens
                .lock()
                .expect("tokens")
                .retain(|t| !bool::from(t.hash.ct_eq(&u.token)));
            u
        };
        u.kicked.store(true, std::sync::atomic::Ordering::SeqCst);
        u.removed.notify_one();
        self.forget(&u);
        true
    }

    /// Removes a user that is not connected now (it left and could come back): its token is
    /// revoked and it cannot return. False when there is no such user. Called with the
    /// users' lock held (`_users`), as every revocation is.
    fn kick_departed(&self, _users: &std::sync::MutexGuard<'_, Vec<Arc<User>>>, id: &str) -> bool {
        let gone = {
            let mut departed = self.departed.lock().expect("departed");
            let i = departed.iter().position(|d| d.id == id);
            i.map(|i| departed.remove(i))
        };
        let Some(d) = gone else { return false };
        self.tokens
            .lock()
            .expect("tokens")
            .retain(|t| !bool::from(t.hash.ct_eq(&d.token)));
        true
    }

    /// Removes a user for good (kicked, or refused by the auth webhook): it cannot come back.
    pub fn forget(&self, user: &User) {
        self.users
            .lock()
            .expect("users")
            .retain(|u| u.id != user.id);
    }
}
