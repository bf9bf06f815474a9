//! The browser's standard error — bubblewrap's, the sandbox init's and Chromium's own:
//! appended to `PV_BROWSER_LOG` when it is set, else drained all the time with its last
//! [`KEPT`] bytes kept, so that a browser that did not start is explained in the log
//! ("bwrap: …", "sandbox-init: …") instead of only "exited before answering".

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;

/// The bytes kept of what the browser wrote last.
pub const KEPT: usize = 2048;

/// Where the browser's standard error goes, and what is kept of it.
pub(super) enum Stderr {
    /// Appended to this file (`PV_BROWSER_LOG`).
    File(std::fs::File),
    /// Read by the daemon: the last [`KEPT`] bytes are kept.
    Kept,
}

/// The last bytes a browser wrote to its standard error.
pub(super) struct Tail {
    kept: Arc<Mutex<VecDeque<u8>>>,
    /// Becomes true once the browser closed its standard error.
    done: tokio::sync::watch::Receiver<bool>,
}

impl Stderr {
    /// `PV_BROWSER_LOG`'s file if it is set and can be opened, else a [`Tail`].
    pub(super) fn new() -> Stderr {
        std::env::var_os("PV_BROWSER_LOG")
            .and_then(|p| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .ok()
            })
            .map_or(Stderr::Kept, Stderr::File)
    }

    /// What the child's standard error is.
    pub(super) fn stdio(&self) -> std::process::Stdio {
        match self {
            Stderr::File(f) => f
                .try_clone()
                .map_or_else(|_| std::process::Stdio::null(), std::process::Stdio::from),
            Stderr::Kept => std::process::Stdio::piped(),
        }
    }

    /// Starts reading the spawned child's standard error; the [`Tail`] it fills, if any.
    pub(super) fn attach(self, child: &mut tokio::process::Child) -> Option<Tail> {
        let (Stderr::Kept, Some(mut pipe)) = (self, child.stderr.take()) else {
            return None;
        };
        let kept = Arc::new(Mutex::new(VecDeque::new()));
        let (done_tx, done) = tokio::sync::watch::channel(false);
        let k = kept.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                let mut k = k.lock().expect("tail");
                k.extend(&buf[..n]);
                let over = k.len().saturating_sub(KEPT);
                k.drain(..over);
            }
            let _ = done_tx.send(true);
        });
        Some(Tail { kept, done })
    }
}

impl Tail {
    /// What was kept, once the browser closed its standard error (or after `wait`), as
    /// text on one line.
    pub(super) async fn text(&self, wait: Duration) -> String {
        let mut done = self.done.clone();
        let _ = tokio::time::timeout(wait, done.wait_for(|d| *d)).await;
        let k = self.kept.lock().expect("tail");
        let (a, b) = k.as_slices();
        let mut s = String::from_utf8_lossy(a).into_owned();
        s.push_str(&String::from_utf8_lossy(b));
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// Logs what a browser that did not start (`what`) wrote last, if it was kept.
pub(super) async fn told(tail: Option<&Tail>, what: &str) {
    if let Some(t) = tail {
        let text = t.text(Duration::from_millis(500)).await;
        tracing::warn!(stderr = %text, "{what}: what it wrote last");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_bytes_are_kept_and_the_pipe_is_drained() {
        let mut child = tokio::process::Command::new("sh")
            .args([
                "-c",
                "head -c 100000 /dev/zero | tr '\\0' x >&2; echo >&2; echo 'bwrap: no  luck' >&2",
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let tail = Stderr::Kept.attach(&mut child).unwrap();
        assert!(
            child.wait().await.unwrap().success(),
            "the pipe was drained"
        );
        let text = tail.text(Duration::from_secs(5)).await;
        assert!(text.ends_with("bwrap: no luck"), "{text}");
        assert!(text.len() <= KEPT, "{}", text.len());
    }
}
