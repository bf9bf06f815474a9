//! The `profile-vault` binary: parse the command line, set up tracing, run the job.

use std::process::ExitCode;

use clap::Parser;

mod cli;

/// Caps glibc's per-thread malloc arenas. With one arena per worker thread, memory freed by
/// compression workers is retained per arena and peak RSS grows with the amount of data
/// handled; one arena keeps it flat (measured with `profile-vault bench`).
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator tunables; called first thing in main, before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Everything this process (and the browsers it starts) creates is owner-only.
#[allow(unsafe_code)]
fn private_umask() {
    // SAFETY: umask(2) only sets the process file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

fn main() -> ExitCode {
    // The sandbox's init (PID 1 inside a browser's sandbox): no runtime, no config.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("sandbox-init") {
        let code = profile_vault::browser::init::main(&argv[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    limit_malloc_arenas();
    private_umask();
    let args = cli::Cli::parse();
    let level = if matches!(args.command, cli::Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    profile_vault::telemetry::init(level);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(cli::exit_code(&e))
        }
    }
}
