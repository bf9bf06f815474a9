//! Tracing setup: human-readable or JSON (`PV_LOG_FORMAT=json`) logs on stderr, filtered
//! by `PV_LOG` (or `RUST_LOG`), default `info` for the daemon and `warn` for CLI jobs.
//! Secrets never reach a log field: key types redact their `Debug`, and tokens/keys are
//! never passed to `tracing` macros.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call once per process.
pub fn init(default_level: &str) {
    let filter = std::env::var("PV_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| {
            EnvFilter::new(format!(
                "{default_level},aws_config=warn,aws_smithy_runtime=warn,hyper=warn"
            ))
        });
    let json = std::env::var("PV_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colours only on a terminal: files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
