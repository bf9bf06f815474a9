//! The arguments of `profile-vault bench`: which bench runs, and its sizes and counts.

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kept size of the synthetic profile, in MB (10^6 bytes).
    #[arg(long, default_value_t = 500)]
    pub size_mb: u64,
    /// Store to benchmark (default: a temporary filesystem store in the data dir).
    #[arg(long = "bench-store")]
    pub bench_store: Option<String>,
    /// Keep the generated profile for the next run (in <data_dir>/bench).
    #[arg(long)]
    pub keep_profile: bool,
    /// Measure the session service instead: POST /v0/vm with a load of the profile until
    /// the browser answers on CDP, and DELETE until the generation is saved.
    #[arg(long)]
    pub session: bool,
    /// Repetitions of the session measurement.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Save the profile as this many different profiles at once (sessions ending together)
    /// and report total time and peak RSS.
    #[arg(long)]
    pub concurrent: Option<usize>,
    /// Measure the live view instead: frames per second on an animating page,
    /// input-to-frame latency, and CPU of daemon and browser with 1 and `--viewers` viewers.
    #[arg(long)]
    pub live_view: bool,
    /// Viewers of the second live-view measurement.
    #[arg(long, default_value_t = 5)]
    pub viewers: usize,
    /// Measure the session store instead: one writer and `--watchers` SSE watchers.
    #[arg(long = "session-store")]
    pub session_store: bool,
    /// Watchers of the store measurement.
    #[arg(long, default_value_t = 20)]
    pub watchers: usize,
    /// Measure what the contents report adds to a save: the same profile saved with and
    /// without it, `--rounds` times each, alternately.
    #[arg(long)]
    pub contents_report: bool,
    /// Seconds of each live-view or store measurement.
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
    /// Bench a cluster: two in-process nodes on one store; the latency a forwarding node adds
    /// to an API call and to a CDP round trip, against calling the owner directly.
    #[arg(long)]
    pub cluster: bool,
    /// Calls (and CDP round trips) per path in `--cluster`.
    #[arg(long, default_value_t = 300)]
    pub calls: usize,
    /// Measure re-saves instead: format 1 against format 2 in one run (`--rounds` each,
    /// alternating): first save, a re-save after `--change-pct` % of the files changed
    /// (bytes sent), and restore.
    #[arg(long)]
    pub resave: bool,
    /// Percent of the kept files `--resave` changes between the two saves.
    #[arg(long, default_value_t = 2.0)]
    pub change_pct: f64,
    /// Measure first saves and restores against `tar | zstd -1 -T0 | openssl enc` (and
    /// back) in one run, `--rounds` each, alternating.
    #[arg(long)]
    pub vs_tar: bool,
    /// With `--vs-tar` on a store served from this machine (LocalStack, MinIO): the server's
    /// process id. Its CPU time during each save and restore is reported and counted in the
    /// least time (it shares the cores).
    #[arg(long)]
    pub store_pid: Option<u32>,
}
