//! Where a vault operation's time goes, for the benches: the wall time of each phase it
//! reports through [`Progress`], and the busy time of each [`Step`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::common::median;
use profile_vault::progress::Step;

/// Where a vault operation's time went, by the phases it reports through
/// [`profile_vault::Progress`]: before the first (walking, planning), each phase, and what
/// follows each (committing: the manifest, the head).
/// Also sums each [`Step`]'s busy time (over threads: steps overlap).
#[derive(Default)]
pub(super) struct Phases {
    t0: Option<Instant>,
    marks: std::sync::Mutex<Vec<(String, Instant)>>,
    steps: [AtomicU64; Step::ALL.len()],
}

impl Phases {
    pub(super) fn new() -> Phases {
        Phases {
            t0: Some(Instant::now()),
            ..Phases::default()
        }
    }

    /// (step, seconds) of every step that took time, in [`Step::ALL`]'s order.
    pub(super) fn steps(&self) -> Vec<(String, f64)> {
        Step::ALL
            .iter()
            .zip(&self.steps)
            .map(|(s, ns)| {
                (
                    s.name().to_string(),
                    ns.load(Ordering::Relaxed) as f64 / 1e9,
                )
            })
            .filter(|(_, secs)| *secs > 0.0)
            .collect()
    }

    /// (phase, seconds), in order, the time after the last mark as `after`.
    pub(super) fn split(&self, end: Instant) -> Vec<(String, f64)> {
        let marks = self.marks.lock().expect("marks");
        let mut out = Vec::new();
        let mut prev = ("before".to_string(), self.t0.unwrap_or(end));
        for (label, at) in marks.iter() {
            out.push((prev.0.clone(), at.duration_since(prev.1).as_secs_f64()));
            prev = (label.clone(), *at);
        }
        out.push((prev.0, end.duration_since(prev.1).as_secs_f64()));
        out
    }
}

impl profile_vault::Progress for Phases {
    fn start(&self, label: &str, _: u64) {
        self.marks
            .lock()
            .expect("marks")
            .push((label.to_string(), Instant::now()));
    }
    fn advance(&self, _: u64) {}
    fn finish(&self) {
        let mut marks = self.marks.lock().expect("marks");
        let last = marks.last().map_or(String::new(), |m| m.0.clone());
        marks.push((format!("after {last}"), Instant::now()));
    }
    fn spent(&self, step: Step, took: Duration) {
        self.steps[step as usize].fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Adds one run's phases to the totals (for the medians' neighbourhood: means per phase).
pub(super) fn add_phases(into: &mut Vec<(String, Vec<f64>)>, run: Vec<(String, f64)>) {
    for (label, secs) in run.into_iter().filter(|(_, s)| *s > 0.0005) {
        match into.iter_mut().find(|(l, _)| *l == label) {
            Some((_, v)) => v.push(secs),
            None => into.push((label, vec![secs])),
        }
    }
}

pub(super) fn phase_line(p: &[(String, Vec<f64>)]) -> String {
    p.iter()
        .map(|(l, v)| format!("{l} {:.3}", median(v)))
        .collect::<Vec<_>>()
        .join(", ")
}
