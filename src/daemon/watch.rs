//! Watch: OS file events, as hints.
//!
//! Events make the daemon fast; scans make it correct (SPEC §2, promise 7).
//! So nothing here is trusted to be complete: the `notify` callback only
//! forwards the paths it is told about, with `try_send` on a bounded channel
//! so it never blocks the OS watcher thread, and whenever it cannot (channel
//! full, an event with the rescan flag, a queue overflow, a watch that could
//! not be added) it raises the watch's "rescan needed" flag instead of
//! dropping the news silently. The engine then walks that watch again.
//!
//! A watch with `poll_interval > 0`, or whose root the OS watcher cannot
//! watch (NFS, SMB, FUSE, inotify limits), is polled: the engine scans it
//! every interval instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{Notify, mpsc};
use tracing::{info, warn};

/// How often a watch is scanned when OS events are not available for it and
/// it sets no `poll_interval` of its own.
pub const FALLBACK_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// How many event paths may wait for the engine before a rescan is cheaper.
const HINT_CAPACITY: usize = 8192;

/// A path an OS event named, inside watch number `watch`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hint {
    pub watch: usize,
    pub path: PathBuf,
}

/// How a watch learns about changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Events,
    Polling(Duration),
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Events => "events",
            Mode::Polling(_) => "polling",
        }
    }
}

/// Why the events of a watch cannot be trusted to be complete any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The OS event queue overflowed, or the hint channel was full.
    Overflow,
    /// The watcher reported an error (a watch that could not be added for
    /// a new directory, an I/O error).
    WatchError,
}

impl Cause {
    const fn bit(self) -> u8 {
        match self {
            Cause::Overflow => 1,
            Cause::WatchError => 2,
        }
    }

    /// The label of the rescan it calls for.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Overflow => "overflow",
            Cause::WatchError => "watch_error",
        }
    }
}

/// The per-watch "rescan needed" flags, as the engine sees them.
pub struct Rescans {
    flags: Arc<Flags>,
}

struct Flags {
    /// Per watch, the [`Cause`] bits raised since the last `take`.
    rescan: Vec<AtomicU8>,
    wake: Notify,
}

impl Flags {
    fn raise(&self, watch: usize, cause: Cause) {
        if let Some(flag) = self.rescan.get(watch) {
            flag.fetch_or(cause.bit(), Ordering::AcqRel);
        }
        self.wake.notify_one();
    }
}

impl Rescans {
    /// The watches that need a full scan, each with what called for it (an
    /// overflow first, when both did); clears their flags.
    pub fn take(&self) -> Vec<(usize, Cause)> {
        self.flags
            .rescan
            .iter()
            .enumerate()
            .filter_map(|(index, flag)| {
                let bits = flag.swap(0, Ordering::AcqRel);
                let cause = if bits & Cause::Overflow.bit() != 0 {
                    Cause::Overflow
                } else if bits & Cause::WatchError.bit() != 0 {
                    Cause::WatchError
                } else {
                    return None;
                };
                Some((index, cause))
            })
            .collect()
    }

    /// Completes when a rescan flag is raised.
    pub async fn raised(&self) {
        self.flags.wake.notified().await;
    }
}

/// The OS watchers; dropping this stops them.
pub struct Watchers {
    _watchers: Vec<RecommendedWatcher>,
    pub modes: Vec<Mode>,
}

/// Starts one OS watcher per watch root that wants events. `roots[i]` is the
/// canonical root of watch `i` (None when it does not exist yet) and its
/// `poll_interval`.
pub fn start(roots: &[(Option<PathBuf>, Duration)]) -> (Watchers, mpsc::Receiver<Hint>, Rescans) {
    let (tx, rx) = mpsc::channel(HINT_CAPACITY);
    let flags = Arc::new(Flags {
        rescan: roots.iter().map(|_| AtomicU8::new(0)).collect(),
        wake: Notify::new(),
    });
    let mut watchers = Vec::new();
    let mut modes = Vec::with_capacity(roots.len());
    for (index, (root, poll_interval)) in roots.iter().enumerate() {
        if !poll_interval.is_zero() {
            modes.push(Mode::Polling(*poll_interval));
            continue;
        }
        let Some(root) = root else {
            warn!(
                watch = index,
                "watch root does not exist yet; polling it until it does"
            );
            modes.push(Mode::Polling(FALLBACK_POLL_INTERVAL));
            continue;
        };
        match watch_root(index, root, tx.clone(), Arc::clone(&flags)) {
            Ok(watcher) => {
                watchers.push(watcher);
                modes.push(Mode::Events);
            }
            Err(err) => {
                warn!(
                    path = %root.display(),
                    error = %err,
                    poll_every_s = FALLBACK_POLL_INTERVAL.as_secs(),
                    "cannot watch with OS events; polling instead"
                );
                modes.push(Mode::Polling(FALLBACK_POLL_INTERVAL));
            }
        }
    }
    for (index, (root, _)) in roots.iter().enumerate() {
        let path = root.as_deref().map(Path::display);
        match modes[index] {
            Mode::Events => {
                info!(watch = index, path = %path.map(|p| p.to_string()).unwrap_or_default(), "watching with OS events")
            }
            Mode::Polling(every) => info!(
                watch = index,
                path = %path.map(|p| p.to_string()).unwrap_or_default(),
                every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
                "watching by polling"
            ),
        }
    }
    (
        Watchers {
            _watchers: watchers,
            modes,
        },
        rx,
        Rescans { flags },
    )
}

fn watch_root(
    index: usize,
    root: &Path,
    tx: mpsc::Sender<Hint>,
    flags: Arc<Flags>,
) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                // A watch that could not be added for a new directory, an
                // overflow, an I/O error: the events may be incomplete now.
                warn!(watch = index, error = %err, "file events incomplete; rescanning");
                flags.raise(index, Cause::WatchError);
                return;
            }
        };
        if event.need_rescan() {
            flags.raise(index, Cause::Overflow);
            return;
        }
        if !matters(&event.kind) {
            return;
        }
        for path in event.paths {
            match tx.try_send(Hint { watch: index, path }) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    flags.raise(index, Cause::Overflow);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    })?;
    watcher.watch(root, RecursiveMode::Recursive)?;
    Ok(watcher)
}

/// Opening or reading a file changes nothing; everything else may.
fn matters(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rescans(watches: usize) -> (Rescans, Arc<Flags>) {
        let flags = Arc::new(Flags {
            rescan: (0..watches).map(|_| AtomicU8::new(0)).collect(),
            wake: Notify::new(),
        });
        (
            Rescans {
                flags: Arc::clone(&flags),
            },
            flags,
        )
    }

    #[test]
    fn take_reports_each_raised_watch_once_with_its_cause() {
        let (rescans, flags) = rescans(3);
        assert!(rescans.take().is_empty());
        flags.raise(2, Cause::WatchError);
        flags.raise(0, Cause::WatchError);
        flags.raise(0, Cause::Overflow);
        // Out of range (a watch that does not exist) is ignored.
        flags.raise(7, Cause::Overflow);
        assert_eq!(
            rescans.take(),
            vec![(0, Cause::Overflow), (2, Cause::WatchError)]
        );
        assert!(rescans.take().is_empty(), "take clears the flags");
    }
}
