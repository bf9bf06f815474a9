//! A person at the live view: a second, headless Chromium driven by Playwright
//! (`tests/node/viewer.mjs`) that opens embed URLs, clicks, types and looks at the picture.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::endpoint;

/// The Playwright viewer process.
pub struct Viewer {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    script: std::path::PathBuf,
}

impl Viewer {
    pub async fn start() -> Viewer {
        let node_dir = std::path::PathBuf::from(endpoint("PV_TEST_NODE_DIR"));
        // ESM resolves packages from the script's folder: run a copy beside node_modules.
        let script = node_dir.join(format!("viewer-{}.mjs", uuid::Uuid::new_v4().simple()));
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node/viewer.mjs"),
            &script,
        )
        .unwrap();
        let chromium = profile_vault::browser::find_binary(None).unwrap();
        let mut child = tokio::process::Command::new("node")
            .arg(&script)
            .env("PV_VIEWER_CHROMIUM", chromium)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        Viewer {
            child,
            stdin,
            out,
            script,
        }
    }

    pub async fn ask(&mut self, cmd: Value) -> Value {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .unwrap();
        let line = tokio::time::timeout(Duration::from_secs(60), self.out.next_line())
            .await
            .unwrap_or_else(|_| panic!("viewer did not answer {cmd}"))
            .unwrap()
            .unwrap_or_else(|| panic!("viewer exited on {cmd}"));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v["ok"],
            true,
            "viewer command {cmd} failed: {}",
            v["error"].as_str().unwrap_or_default()
        );
        v["value"].clone()
    }

    pub async fn quit(mut self) {
        let _ = self.stdin.write_all(b"{\"cmd\":\"quit\"}\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        let _ = std::fs::remove_file(&self.script);
    }
}
