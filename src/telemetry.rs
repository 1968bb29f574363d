//! Logs, counters and the service manager.
//!
//! Logs go to stderr through `tracing`: plain text (without timestamps under
//! journald, which stamps lines itself) or JSON lines. The counters are the
//! figures the daemon keeps about its own work, for the whole process (a
//! reload keeps them): `once` prints them at the end, tests assert on them
//! instead of on timings, and `crate::metrics` renders them for Prometheus.
//! Plain counts are atomics; counts split by a label (a reason, a status
//! code) are [`Tally`]s.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
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
        .with_writer(crate::progress::LogWriter)
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
    /// New files (and new versions of files) found in the watches.
    pub files_seen: AtomicU64,
    /// Paths passed over; `files_ignored` splits them by reason.
    pub files_skipped: AtomicU64,
    pub files_hashed: AtomicU64,
    pub bytes_hashed: AtomicU64,
    pub objects_enqueued: AtomicU64,
    pub objects_delivered: AtomicU64,
    pub objects_skipped: AtomicU64,
    pub objects_dead: AtomicU64,
    /// API calls answered or failed (presigned PUTs are not API calls).
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    /// Paths passed over, by reason (`hidden`, `temporary`, `unreadable`, …).
    pub files_ignored: Tally<&'static str>,
    /// HTTP calls by kind and status code; `None` when no answer came.
    pub answers: Tally<(RequestKind, Option<u16>)>,
    /// Full scans of a watch, by what called for them.
    pub rescans: Tally<&'static str>,
    /// Task status polls sent.
    pub tasks_polled: AtomicU64,
    /// Tasks that reached an outcome, by outcome (`ok`, `failed`, `unknown`).
    pub tasks_ended: Tally<&'static str>,
}

/// Counts by label value.
#[derive(Debug)]
pub struct Tally<K>(Mutex<BTreeMap<K, u64>>);

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Tally(Mutex::new(BTreeMap::new()))
    }
}

impl<K: Ord + Clone> Tally<K> {
    pub fn add(&self, key: K, n: u64) {
        *self.lock().entry(key).or_insert(0) += n;
    }

    /// The count of one label value (0 when never counted).
    pub fn get(&self, key: &K) -> u64 {
        self.lock().get(key).copied().unwrap_or(0)
    }

    pub fn snapshot(&self) -> BTreeMap<K, u64> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<K, u64>> {
        // A panic while adding leaves the map whole: use it as it is.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Which server an HTTP call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestKind {
    /// The Mixpeek API (creates, uploads' create and confirm, tasks, buckets).
    Api,
    /// A presigned PUT to the storage behind an upload.
    Presigned,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Api => "api",
            RequestKind::Presigned => "presigned",
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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

    /// A path was passed over for `reason` (a short label: `hidden`,
    /// `not_utf8`, `unreadable`, …).
    pub fn ignored(&self, reason: &'static str) {
        Counters::add(&self.files_skipped, 1);
        self.files_ignored.add(reason, 1);
    }

    /// An HTTP call ended: with this status, or with no answer (`None`).
    /// API calls also count in `requests`.
    pub fn answered(&self, kind: RequestKind, status: Option<u16>) {
        if kind == RequestKind::Api {
            Counters::add(&self.requests, 1);
        }
        self.answers.add((kind, status), 1);
    }

    /// A watch was scanned in full, for `reason`.
    pub fn rescanned(&self, reason: &'static str) {
        self.rescans.add(reason, 1);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_paths_count_in_the_total_and_by_reason() {
        let counters = Counters::default();
        counters.ignored("hidden");
        counters.ignored("hidden");
        counters.ignored("unreadable");
        assert_eq!(counters.snapshot().files_skipped, 3);
        assert_eq!(counters.files_ignored.get(&"hidden"), 2);
        assert_eq!(counters.files_ignored.get(&"unreadable"), 1);
        assert_eq!(counters.files_ignored.get(&"excluded"), 0);
    }

    #[test]
    fn only_api_answers_count_as_requests() {
        let counters = Counters::default();
        counters.answered(RequestKind::Api, Some(200));
        counters.answered(RequestKind::Api, None);
        counters.answered(RequestKind::Presigned, Some(200));
        assert_eq!(counters.snapshot().requests, 2);
        assert_eq!(
            counters.answers.get(&(RequestKind::Presigned, Some(200))),
            1
        );
        assert_eq!(counters.answers.snapshot().len(), 3);
    }

    #[test]
    fn the_summary_line_keeps_its_shape() {
        let line = CountersSnapshot {
            files_seen: 1,
            requests: 4,
            ..CountersSnapshot::default()
        }
        .to_string();
        assert_eq!(
            line,
            "files_seen=1 files_skipped=0 files_hashed=0 bytes_hashed=0 objects_enqueued=0 \
             objects_delivered=0 objects_skipped=0 objects_dead=0 requests=4 retries=0"
        );
    }
}
