//! Logs and counters.
//!
//! Logs go to stderr through `tracing`: plain text (without timestamps under
//! journald, which stamps lines itself) or JSON lines. The counters are the
//! figures the daemon keeps about its own work; `once` prints them at the end
//! and tests assert on them instead of on timings.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Safe to call once per process; later calls
/// (a config reload) leave the first subscriber in place.
pub fn init_logging(cfg: &LogConfig) {
    // The level was validated with the config; fall back rather than fail here.
    let filter = EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match (cfg.format, under_journald) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Text, true) => builder.without_time().with_ansi(false).try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
    // An error only means a subscriber is already installed.
    drop(result);
}

/// What the pipeline has done since the process started.
#[derive(Debug, Default)]
pub struct Counters {
    pub files_seen: AtomicU64,
    pub files_skipped: AtomicU64,
    pub files_hashed: AtomicU64,
    pub bytes_hashed: AtomicU64,
    pub objects_enqueued: AtomicU64,
    pub objects_delivered: AtomicU64,
    pub objects_skipped: AtomicU64,
    pub objects_dead: AtomicU64,
    pub requests: AtomicU64,
    pub retries: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CountersSnapshot {
    pub files_seen: u64,
    pub files_skipped: u64,
    pub files_hashed: u64,
    pub bytes_hashed: u64,
    pub objects_enqueued: u64,
    pub objects_delivered: u64,
    pub objects_skipped: u64,
    pub objects_dead: u64,
    pub requests: u64,
    pub retries: u64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            files_seen: get(&self.files_seen),
            files_skipped: get(&self.files_skipped),
            files_hashed: get(&self.files_hashed),
            bytes_hashed: get(&self.bytes_hashed),
            objects_enqueued: get(&self.objects_enqueued),
            objects_delivered: get(&self.objects_delivered),
            objects_skipped: get(&self.objects_skipped),
            objects_dead: get(&self.objects_dead),
            requests: get(&self.requests),
            retries: get(&self.retries),
        }
    }
}

impl std::fmt::Display for CountersSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "files_seen={} files_skipped={} files_hashed={} bytes_hashed={} objects_enqueued={} \
             objects_delivered={} objects_skipped={} objects_dead={} requests={} retries={}",
            self.files_seen,
            self.files_skipped,
            self.files_hashed,
            self.bytes_hashed,
            self.objects_enqueued,
            self.objects_delivered,
            self.objects_skipped,
            self.objects_dead,
            self.requests,
            self.retries
        )
    }
}

/// The service manager's notification protocol (`sd_notify`, SPEC §10).
/// Every call is a no-op outside systemd (no `NOTIFY_SOCKET`), and a failed
/// send is never fatal: the daemon's work does not depend on being watched.
pub mod service {
    use std::time::Duration;

    use sd_notify::NotifyState;

    fn send(states: &[NotifyState<'_>]) {
        if let Err(err) = sd_notify::notify(false, states) {
            tracing::debug!(error = %err, "cannot notify the service manager");
        }
    }

    /// The start scan is queued: the service is up.
    pub fn ready() {
        send(&[NotifyState::Ready]);
    }

    /// A reload began; `ready` follows once the new configuration runs.
    pub fn reloading() {
        send(&[NotifyState::Reloading]);
    }

    pub fn stopping() {
        send(&[NotifyState::Stopping]);
    }

    /// One line for `systemctl status`.
    pub fn status(line: &str) {
        send(&[NotifyState::Status(line)]);
    }

    /// The pipeline is alive.
    pub fn watchdog() {
        send(&[NotifyState::Watchdog]);
    }

    /// How often to ping the watchdog: half of `WatchdogSec`, when set.
    ///
    /// Read here rather than with `sd_notify::watchdog_enabled`, which also
    /// demands `WATCHDOG_PID`; systemd's own `sd_watchdog_enabled` accepts
    /// its absence (the watchdog is then ours), and only a PID naming another
    /// process means the watchdog is not for us.
    pub fn watchdog_interval() -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID")
            && pid.parse::<u32>().ok()? != std::process::id()
        {
            return None;
        }
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}
