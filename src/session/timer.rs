//! A session's timeouts and the deadline they give: absolute (from creation or the last
//! reset, capped by the server), inactive (since the last activity), offline (with no
//! DevTools client connected), and the warning ahead of them. Pure bookkeeping on
//! [`mono_ms`] (tokio's clock), so its tests run on a paused clock.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::EndReason;

/// Milliseconds on tokio's clock: monotonic, paused in tests. Deadlines are counted on it
/// and nothing else: published and stored times are [`unix_ms`] ([`to_unix`] converts).
pub fn mono_ms() -> u64 {
    // The base lies a day back, so no clock (a paused one of another runtime included)
    // reads earlier than it.
    static BASE: OnceLock<std::time::Instant> = OnceLock::new();
    let base = BASE.get_or_init(|| {
        let now = std::time::Instant::now();
        [86_400, 3_600, 60]
            .into_iter()
            .find_map(|s| now.checked_sub(std::time::Duration::from_secs(s)))
            .unwrap_or(now)
    });
    tokio::time::Instant::now()
        .into_std()
        .saturating_duration_since(*base)
        .as_millis() as u64
}

/// Unix milliseconds (the wall clock): what clients, records and other nodes see.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A time on [`mono_ms`]'s clock as Unix milliseconds.
pub fn to_unix(mono: u64) -> u64 {
    let (m, u) = (i128::from(mono_ms()), i128::from(unix_ms()));
    u64::try_from((u + i128::from(mono) - m).max(0)).unwrap_or(u64::MAX)
}

/// Per-session timeouts in seconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Timeouts {
    /// From creation.
    pub absolute: Option<u64>,
    /// Since the last activity (CDP traffic, ping).
    pub inactive: Option<u64>,
    /// With no DevTools client connected.
    pub offline: Option<u64>,
}

impl Timeouts {
    /// These timeouts with those `change` names replaced (`Some(None)` removes one).
    pub fn changed_by(mut self, change: &TimeoutChange) -> Timeouts {
        if let Some(a) = change.absolute {
            self.absolute = a;
        }
        if let Some(i) = change.inactive {
            self.inactive = i;
        }
        if let Some(o) = change.offline {
            self.offline = o;
        }
        self
    }
}

/// A change of a running session's timeouts (`POST <base_url>/timeout`): `None` leaves one
/// as it is, `Some(None)` removes it.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeoutChange {
    /// Seconds from the start (or from the reset).
    pub absolute: Option<Option<u64>>,
    /// Seconds without activity.
    pub inactive: Option<Option<u64>>,
    /// Seconds without a connected client.
    pub offline: Option<Option<u64>>,
    /// Seconds of warning before a timeout.
    pub warning: Option<u64>,
    /// Every counter starts again now (Hyperbeam's default).
    pub reset: bool,
}

/// What the session's timeout webhook should hear now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warning {
    /// Nothing (no deadline, already warned, or not near yet).
    None,
    /// The deadline is within the warning: warn once, of this deadline ([`mono_ms`]) and why.
    Due(u64, EndReason),
}

/// The timeouts of one session and the counters they run on.
#[derive(Debug)]
pub struct Timer {
    created_ms: u64,
    timeouts: Mutex<Timeouts>,
    /// Where the absolute timeout counts from (creation, or its last reset).
    absolute_from_ms: AtomicU64,
    last_activity_ms: AtomicU64,
    clients: AtomicUsize,
    offline_since_ms: AtomicU64,
    warning_secs: AtomicU64,
    warned: AtomicBool,
}

impl Timer {
    /// Timeouts of a session created at `created_ms` (on [`mono_ms`]'s clock), warned
    /// `warning_secs` ahead; its activity and offline counters start now.
    pub fn new(timeouts: Timeouts, warning_secs: u64, created_ms: u64) -> Timer {
        let now = mono_ms();
        Timer {
            created_ms,
            timeouts: Mutex::new(timeouts),
            absolute_from_ms: AtomicU64::new(created_ms),
            last_activity_ms: AtomicU64::new(now),
            clients: AtomicUsize::new(0),
            offline_since_ms: AtomicU64::new(now),
            warning_secs: AtomicU64::new(warning_secs),
            warned: AtomicBool::new(false),
        }
    }

    /// Records activity (renews the inactivity timeout).
    pub fn touch(&self) {
        self.last_activity_ms.store(mono_ms(), Ordering::Relaxed);
    }

    /// A DevTools client connected.
    pub fn client_connected(&self) {
        self.clients.fetch_add(1, Ordering::SeqCst);
        self.touch();
    }

    /// A DevTools client disconnected (the last one starts the offline timeout).
    pub fn client_disconnected(&self) {
        if self.clients.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.offline_since_ms.store(mono_ms(), Ordering::SeqCst);
        }
        self.touch();
    }

    /// DevTools clients connected.
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::SeqCst)
    }

    /// The timeouts now.
    pub fn timeouts(&self) -> Timeouts {
        *self.timeouts.lock().expect("timeouts")
    }

    /// Seconds before a timeout at which the webhook and the viewers are warned.
    pub fn warning_secs(&self) -> u64 {
        self.warning_secs.load(Ordering::Relaxed)
    }

    /// When the session would time out now (on [`mono_ms`]'s clock), and why: the earliest
    /// of its timeouts.
    pub fn deadline(&self) -> Option<(u64, EndReason)> {
        let mut best: Option<(u64, EndReason)> = None;
        let mut consider = |at_ms: u64, why| {
            if best.is_none_or(|(b, _)| at_ms < b) {
                best = Some((at_ms, why));
            }
        };
        let timeouts = self.timeouts();
        if let Some(a) = timeouts.absolute {
            consider(
                self.absolute_from_ms.load(Ordering::Relaxed) + a * 1000,
                EndReason::Absolute,
            );
        }
        if let Some(i) = timeouts.inactive {
            consider(
                self.last_activity_ms.load(Ordering::Relaxed) + i * 1000,
                EndReason::Inactive,
            );
        }
        if let Some(o) = timeouts.offline {
            if self.clients() == 0 {
                consider(
                    self.offline_since_ms.load(Ordering::SeqCst) + o * 1000,
                    EndReason::Offline,
                );
            }
        }
        best
    }

    /// The deadline, if it has passed at `now` ([`mono_ms`]).
    pub fn expired(&self, now: u64) -> Option<EndReason> {
        self.deadline()
            .and_then(|(at, why)| (at <= now).then_some(why))
    }

    /// The deadline, if it is within the warning at `now` (and not passed).
    pub fn near(&self, now: u64) -> Option<(u64, EndReason)> {
        self.deadline()
            .filter(|&(at, _)| at > now && at <= now + self.warning_secs() * 1000)
    }

    /// Whether the webhook is to be warned at `now` ([`mono_ms`]): once per approach of a deadline (activity
    /// that moves the deadline away re-arms it).
    pub fn warning_due(&self, now: u64) -> Warning {
        let Some((at, why)) = self.deadline() else {
            return Warning::None;
        };
        if at > now + self.warning_secs() * 1000 {
            self.warned.store(false, Ordering::SeqCst);
            Warning::None
        } else if at > now && !self.warned.swap(true, Ordering::SeqCst) {
            Warning::Due(at, why)
        } else {
            Warning::None
        }
    }

    /// `POST <base_url>/timeout`: the timeouts `change` names are replaced (`Some(None)`
    /// removes one), the absolute one capped at `cap` seconds from creation; with `reset`,
    /// every counter starts again now (absolute from now, no activity since now, offline
    /// since now).
    pub fn change(&self, change: TimeoutChange, cap: Option<u64>) {
        let now = mono_ms();
        let mut t = self.timeouts.lock().expect("timeouts");
        *t = t.changed_by(&change);
        if let Some(w) = change.warning {
            self.warning_secs.store(w, Ordering::Relaxed);
        }
        if change.reset {
            self.absolute_from_ms.store(now, Ordering::Relaxed);
            self.last_activity_ms.store(now, Ordering::Relaxed);
            if self.clients() == 0 {
                self.offline_since_ms.store(now, Ordering::SeqCst);
            }
        }
        if let Some(cap) = cap {
            // The server's cap counts from the start, whatever the resets.
            let from = self.absolute_from_ms.load(Ordering::Relaxed);
            let left = (self.created_ms + cap * 1000).saturating_sub(from) / 1000;
            t.absolute = Some(t.absolute.map_or(left, |a| a.min(left)));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::advance;

    use super::*;

    fn timer(t: Timeouts, warning: u64) -> Timer {
        Timer::new(t, warning, mono_ms())
    }

    #[tokio::test(start_paused = true)]
    async fn inactivity_ends_a_session_unless_it_is_used() {
        let t = timer(
            Timeouts {
                inactive: Some(30),
                ..Timeouts::default()
            },
            10,
        );
        advance(Duration::from_secs(29)).await;
        assert_eq!(t.expired(mono_ms()), None);
        t.touch();
        assert_eq!(
            t.warning_due(mono_ms()),
            Warning::None,
            "a sweep sees it far: re-armed"
        );
        advance(Duration::from_secs(29)).await;
        assert_eq!(t.expired(mono_ms()), None, "activity renewed it");
        advance(Duration::from_secs(1)).await;
        assert_eq!(t.expired(mono_ms()), Some(EndReason::Inactive));
    }

    #[tokio::test(start_paused = true)]
    async fn offline_counts_only_without_clients() {
        let t = timer(
            Timeouts {
                offline: Some(5),
                ..Timeouts::default()
            },
            1,
        );
        t.client_connected();
        advance(Duration::from_secs(60)).await;
        assert_eq!(t.deadline(), None, "a client is connected");
        t.client_disconnected();
        advance(Duration::from_secs(4)).await;
        assert_eq!(t.expired(mono_ms()), None);
        advance(Duration::from_secs(1)).await;
        assert_eq!(t.expired(mono_ms()), Some(EndReason::Offline));
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_timeout_wins_and_the_webhook_is_warned_once_per_approach() {
        let t = timer(
            Timeouts {
                absolute: Some(100),
                inactive: Some(40),
                offline: None,
            },
            10,
        );
        let start = mono_ms();
        assert_eq!(t.deadline(), Some((start + 40_000, EndReason::Inactive)));
        advance(Duration::from_secs(29)).await;
        assert_eq!(t.warning_due(mono_ms()), Warning::None, "not near yet");
        advance(Duration::from_secs(2)).await;
        assert_eq!(
            t.warning_due(mono_ms()),
            Warning::Due(start + 40_000, EndReason::Inactive)
        );
        assert_eq!(t.warning_due(mono_ms()), Warning::None, "warned once");
        assert!(t.near(mono_ms()).is_some(), "viewers still see it near");
        t.touch();
        assert_eq!(
            t.warning_due(mono_ms()),
            Warning::None,
            "moved away: re-armed"
        );
        advance(Duration::from_secs(30)).await;
        assert_eq!(
            t.warning_due(mono_ms()),
            Warning::Due(start + 71_000, EndReason::Inactive),
            "near again: warned again"
        );
        t.touch();
        assert_eq!(
            t.warning_due(mono_ms()),
            Warning::None,
            "a sweep sees it far: re-armed"
        );
        advance(Duration::from_secs(29)).await;
        // 90 s in: the absolute timeout (100 s) is now the nearer one.
        assert_eq!(
            t.warning_due(mono_ms()),
            Warning::Due(start + 100_000, EndReason::Absolute)
        );
        advance(Duration::from_secs(10)).await;
        assert_eq!(t.expired(mono_ms()), Some(EndReason::Absolute));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_restarts_the_counters_within_the_server_cap() {
        let created = mono_ms();
        let t = Timer::new(
            Timeouts {
                absolute: Some(60),
                ..Timeouts::default()
            },
            10,
            created,
        );
        advance(Duration::from_secs(50)).await;
        let change = TimeoutChange {
            reset: true,
            ..TimeoutChange::default()
        };
        t.change(change, Some(90));
        // 60 s from the reset would be 110 s from creation: the cap keeps it at 90.
        assert_eq!(t.deadline(), Some((created + 90_000, EndReason::Absolute)));
        t.change(
            TimeoutChange {
                absolute: Some(None),
                warning: Some(5),
                ..TimeoutChange::default()
            },
            None,
        );
        assert_eq!(t.deadline(), None, "removed");
        assert_eq!(t.warning_secs(), 5);
    }
}
