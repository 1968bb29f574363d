//! Monitor: what the engine says about itself while it runs.
//!
//! Inputs: the store (the outbox figures), the submitter (the pause, PUTs
//! under way), the process counters, and what the engine reports as it
//! goes: a submission finished, the start scan is queued, how each watch
//! learns of changes. A state disk that refuses writes holds work like a
//! pause does. Outputs: the `pipeline::health` verdict, for
//! `/healthz`, the systemd watchdog and the `STATUS=` line, and the
//! [`Scrape`] behind `/metrics` (this type is the endpoint's [`Probe`]).
//!
//! Invariants: one [`Stall`] decides "stuck" for `/healthz` and the watchdog
//! alike, so the two never disagree; a change into or out of "stuck" is
//! logged once, not at every look. The endpoint never waits on the store for
//! long: a store that does not answer within [`PROBE_STORE_TIMEOUT`] makes
//! `/healthz` answer 503 and leaves the outbox gauges out of a scrape.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::StoreHandle;
use super::submit::Submitter;
use super::watch::Mode;
use crate::error::FatalError;
use crate::metrics::{Outbox, Probe, Scrape};
use crate::pipeline::health::{Health, Observation, Stall};
use crate::store::{OutboxFigures, unix_now_ms};
use crate::telemetry::Counters;

/// How long the HTTP endpoint waits for the state store.
pub const PROBE_STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why work is held while the state disk refuses writes.
const DISK_HELD: &str =
    "the state disk is full or read-only; work waits until it takes writes again";

pub struct Monitor {
    store: StoreHandle,
    submitter: Arc<Submitter>,
    counters: Arc<Counters>,
    stall: Mutex<Stall>,
    /// The state word of the last verdict, to log changes once.
    last: Mutex<&'static str>,
    ready: AtomicBool,
    /// Each watch's root and mode, once the watchers started.
    watches: Mutex<Vec<(String, &'static str)>>,
}

impl Monitor {
    /// Starts the stuck clock now, with `stuck_after` as its threshold.
    pub fn new(
        store: StoreHandle,
        submitter: Arc<Submitter>,
        counters: Arc<Counters>,
        stuck_after: Duration,
    ) -> Monitor {
        Monitor {
            store,
            submitter,
            counters,
            stall: Mutex::new(Stall::new(stuck_after, Instant::now())),
            last: Mutex::new("ok"),
            ready: AtomicBool::new(false),
            watches: Mutex::new(Vec::new()),
        }
    }

    /// A submission finished, whatever its outcome.
    pub fn finished(&self) {
        self.lock_stall().finished(Instant::now());
    }

    /// The start scan is queued.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// How each watch learns of changes, by root.
    pub fn set_watches(&self, watches: impl IntoIterator<Item = (String, Mode)>) {
        *self.watches.lock().expect("watches lock poisoned") = watches
            .into_iter()
            .map(|(root, mode)| (root, mode.as_str()))
            .collect();
    }

    /// The verdict now, and the outbox it was drawn from.
    pub async fn assess(&self) -> Result<(Health, OutboxFigures), FatalError> {
        let now_ms = unix_now_ms();
        let figures = self.store.run(move |s| s.outbox_figures(now_ms)).await?;
        Ok((self.judge(&figures), figures))
    }

    fn judge(&self, figures: &OutboxFigures) -> Health {
        let pause = self.submitter.pause();
        let held = match &pause {
            Some(pause) => Some(pause.reason.as_str()),
            None => self.store.is_blocked().then_some(DISK_HELD),
        };
        let seen = Observation {
            due: figures.due,
            transferring: self.submitter.transferring(),
            held,
        };
        let (health, threshold) = {
            let mut stall = self.lock_stall();
            (stall.assess(Instant::now(), &seen), stall.threshold())
        };
        self.log_change(&health, threshold);
        health
    }

    /// Logs entering and leaving "stuck"; pauses are logged by the submitter.
    fn log_change(&self, health: &Health, threshold: Duration) {
        let mut last = self.last.lock().expect("last-verdict lock poisoned");
        let state = health.state();
        if *last == state {
            return;
        }
        if matches!(health, Health::Stuck { .. }) {
            warn!(
                %health,
                stuck_after_s = threshold.as_secs(),
                "pipeline stuck: /healthz answers 503 and the systemd watchdog is no longer fed"
            );
        } else if *last == "stuck" {
            info!(%health, "pipeline moving again");
        }
        *last = state;
    }

    fn lock_stall(&self) -> std::sync::MutexGuard<'_, Stall> {
        self.stall.lock().expect("stall lock poisoned")
    }

    /// The outbox figures for the endpoint, or `None` (logged) when the
    /// store fails or does not answer in time.
    async fn figures_for_probe(&self) -> Result<OutboxFigures, String> {
        let now_ms = unix_now_ms();
        let read = self.store.run(move |s| s.outbox_figures(now_ms));
        match tokio::time::timeout(PROBE_STORE_TIMEOUT, read).await {
            Ok(Ok(figures)) => Ok(figures),
            Ok(Err(err)) => Err(format!("cannot read the state store: {err}")),
            Err(_) => Err(format!(
                "the state store did not answer within {}s",
                PROBE_STORE_TIMEOUT.as_secs()
            )),
        }
    }
}

impl Probe for Monitor {
    async fn scrape(&self) -> Scrape {
        let figures = match self.figures_for_probe().await {
            Ok(figures) => Some(figures),
            Err(why) => {
                warn!(%why, "metrics scrape without the outbox gauges");
                None
            }
        };
        let healthy = figures.is_some_and(|f| self.judge(&f).is_healthy());
        let now_ms = unix_now_ms();
        let counters = &self.counters;
        Scrape {
            counters: counters.snapshot(),
            files_ignored: counters.files_ignored.snapshot(),
            answers: counters.answers.snapshot(),
            rescans: counters.rescans.snapshot(),
            tasks_polled: counters.tasks_polled.load(Ordering::Relaxed),
            tasks_ended: counters.tasks_ended.snapshot(),
            outbox: figures.map(|f| Outbox {
                pending: f.pending,
                due: f.due,
                oldest_pending_age: f.oldest_created_ms.map_or(Duration::ZERO, |at| {
                    Duration::from_millis(u64::try_from(now_ms - at).unwrap_or(0))
                }),
            }),
            watches: self.watches.lock().expect("watches lock poisoned").clone(),
            paused: self.submitter.pause().is_some(),
            disk_blocked: self.store.is_blocked(),
            healthy,
            ready: self.is_ready(),
        }
    }

    async fn health(&self) -> Result<Health, String> {
        let figures = self.figures_for_probe().await?;
        Ok(self.judge(&figures))
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}
