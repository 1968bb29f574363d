//! The shell: carries out what the pure pipeline decides.
//!
//! - `scan`: walk a watch root (discover).
//! - `hash`: read a settled file once, hash it, keep its head and small content.
//! - `build`: turn a ready group into the object to send.
//! - `intake`: one pass of discover → settle → group → hash → classify → build.
//! - `submit`: send an outbox item, record the outcome (submit → record).
//!
//! `Engine` below is the one place that spawns the pipeline's tasks: the
//! intake pass on the blocking pool, and up to `api.max_in_flight`
//! submissions at once. Everything it learns goes through the store first, so
//! stopping it at any point loses nothing that was recorded.

pub mod build;
pub mod hash;
pub mod intake;
pub mod scan;
pub mod submit;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::{info, warn};

use self::build::Built;
use self::intake::{Intake, PassOutput};
use self::submit::{Submitted, Submitter, now_ms};
use crate::api::{ApiClient, ApiKey};
use crate::config::Config;
use crate::error::FatalError;
use crate::pipeline::Dialect;
use crate::pipeline::retry::Backoff;
use crate::store::{Store, StoreError};
use crate::telemetry::{Counters, CountersSnapshot};

/// Shared access to the store from async code: every call runs on the
/// blocking pool, because SQLite commits wait for the disk.
#[derive(Clone)]
pub struct StoreHandle(Arc<Mutex<Store>>);

impl StoreHandle {
    pub fn new(store: Store) -> StoreHandle {
        StoreHandle(Arc::new(Mutex::new(store)))
    }

    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || f(&mut inner.lock().expect("store lock poisoned")))
            .await
            .expect("a store call panicked")
    }

    /// For code already on the blocking pool.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.0.lock().expect("store lock poisoned")
    }
}

/// How long the engine sleeps at most between two looks at its queues, so a
/// pause ending or a retry coming due is never missed by much.
const MAX_IDLE: Duration = Duration::from_secs(1);

/// What a finished `once` reports.
#[derive(Debug, Clone)]
pub struct OnceReport {
    pub counters: CountersSnapshot,
    /// Groups left behind because their `ready_marker` has not appeared.
    pub awaiting_marker: Vec<String>,
    /// Dead letters in the store when the run ended (including older ones).
    pub dead_letters: u64,
}

pub struct Engine {
    config: Arc<Config>,
    store: StoreHandle,
    intake: Arc<Mutex<Intake>>,
    submitter: Arc<Submitter>,
    counters: Arc<Counters>,
}

impl Engine {
    /// Opens the store and the API client: everything that can fail for good
    /// fails here, before any work starts.
    pub fn new(
        config: Arc<Config>,
        key: ApiKey,
        counters: Arc<Counters>,
    ) -> Result<Engine, FatalError> {
        let store = Store::open(&config.state.dir)?;
        let remembered = store
            .meta(submit::DIALECT_META_KEY)?
            .as_deref()
            .and_then(Dialect::parse);
        let intake = Intake::new(&config.watches, &store)?;
        let client = ApiClient::new(&config.api, key)?;
        let backoff = Backoff::try_new(config.retry.initial, config.retry.max)
            .map_err(|err| FatalError::Runtime(format!("retry settings: {err}")))?;
        let store = StoreHandle::new(store);
        let submitter = Submitter::new(
            client,
            store.clone(),
            backoff,
            config.api.dialect,
            remembered,
            config.api.auto_process,
            Arc::clone(&counters),
        );
        Ok(Engine {
            config,
            store,
            intake: Arc::new(Mutex::new(intake)),
            submitter: Arc::new(submitter),
            counters,
        })
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Scan, deliver everything that is ready, wait until the outbox is empty
    /// or holds only dead letters (SPEC §9 `once`).
    pub async fn once(&self, shutdown: impl Future<Output = ()>) -> Result<OnceReport, FatalError> {
        tokio::pin!(shutdown);
        loop {
            let pass = self.intake_pass().await?;
            self.submit_due().await?;
            let pending = self.store.run(|s| s.pending_count()).await?;
            if pass.settling == 0 && pending == 0 {
                for key_prefix in &pass.awaiting_marker {
                    info!(%key_prefix, "group not sent: its ready_marker has not appeared");
                }
                let dead_letters = self.store.run(|s| s.dead_count()).await?;
                return Ok(OnceReport {
                    counters: self.counters.snapshot(),
                    awaiting_marker: pass.awaiting_marker,
                    dead_letters,
                });
            }
            tokio::select! {
                () = tokio::time::sleep(self.idle_time().await?) => {}
                () = &mut shutdown => {
                    info!("interrupted; what was not delivered stays in the outbox");
                    return Ok(OnceReport {
                        counters: self.counters.snapshot(),
                        awaiting_marker: pass.awaiting_marker,
                        dead_letters: self.store.run(|s| s.dead_count()).await?,
                    });
                }
            }
        }
    }

    /// The daemon loop: passes and submissions until `shutdown` completes.
    /// Scans run every `poll_interval` of the fastest watch (1 s when no watch
    /// sets one), and whenever a settle deadline or a retry comes due.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), FatalError> {
        tokio::pin!(shutdown);
        let scan_every = self
            .config
            .watches
            .iter()
            .map(|w| w.poll_interval)
            .filter(|d| !d.is_zero())
            .min()
            .unwrap_or(MAX_IDLE);
        let mut next_scan = Instant::now();
        loop {
            if Instant::now() >= next_scan {
                self.intake_pass().await?;
                next_scan = Instant::now() + scan_every;
            }
            self.submit_due().await?;
            let wake = self
                .idle_time()
                .await?
                .min(next_scan.saturating_duration_since(Instant::now()));
            tokio::select! {
                () = tokio::time::sleep(wake) => {}
                () = &mut shutdown => {
                    info!("stopping; what was not delivered stays in the outbox");
                    return Ok(());
                }
            }
            if let Some(deadline) = self
                .intake
                .lock()
                .expect("intake lock poisoned")
                .next_deadline(Instant::now())
            {
                if deadline <= Instant::now() {
                    next_scan = Instant::now();
                }
            }
        }
    }

    /// How long nothing can happen: until the next settle deadline or retry.
    async fn idle_time(&self) -> Result<Duration, FatalError> {
        let now = Instant::now();
        let mut wake = now + MAX_IDLE;
        if let Some(deadline) = self
            .intake
            .lock()
            .expect("intake lock poisoned")
            .next_deadline(now)
        {
            wake = wake.min(deadline);
        }
        if let Some(due_ms) = self.store.run(|s| s.next_due_ms()).await? {
            let in_ms = u64::try_from(due_ms - now_ms()).unwrap_or(0);
            wake = wake.min(now + Duration::from_millis(in_ms));
        }
        if let Some(pause) = self.submitter.pause() {
            wake = wake.max(pause.until.min(now + MAX_IDLE));
        }
        // Never spin: a deadline in the past still yields for a moment.
        Ok(wake
            .saturating_duration_since(now)
            .max(Duration::from_millis(10)))
    }

    /// Runs one intake pass on the blocking pool and records what it built.
    async fn intake_pass(&self) -> Result<PassOutput, FatalError> {
        let intake = Arc::clone(&self.intake);
        let store = self.store.clone();
        let counters = Arc::clone(&self.counters);
        let has_upload = self.submitter.dialect_has_upload();
        tokio::task::spawn_blocking(move || {
            let mut intake = intake.lock().expect("intake lock poisoned");
            let mut store = store.lock();
            let mut out = intake.pass(Instant::now(), &store, has_upload, &counters);
            for group in std::mem::take(&mut out.ready) {
                record_built(&mut intake, &mut store, &counters, group)?;
            }
            Ok::<_, FatalError>(out)
        })
        .await
        .expect("the intake pass panicked")
    }

    /// Sends every due outbox item, at most `max_in_flight` at once.
    async fn submit_due(&self) -> Result<(), FatalError> {
        let limit = self.config.api.max_in_flight;
        loop {
            if self.submitter.pause().is_some() {
                return Ok(());
            }
            let now = now_ms();
            let due = self
                .store
                .run(move |s| s.due(now, limit.max(1) * 4))
                .await?;
            if due.is_empty() {
                return Ok(());
            }
            let mut tasks = JoinSet::new();
            let mut paused = false;
            for item in due {
                while tasks.len() >= limit {
                    paused |= join_one(&mut tasks).await? == Submitted::Paused;
                }
                if paused {
                    break;
                }
                let submitter = Arc::clone(&self.submitter);
                tasks.spawn(async move { submitter.submit(item).await });
            }
            while !tasks.is_empty() {
                join_one(&mut tasks).await?;
            }
            if paused {
                return Ok(());
            }
        }
    }
}

async fn join_one(
    tasks: &mut JoinSet<Result<Submitted, FatalError>>,
) -> Result<Submitted, FatalError> {
    match tasks.join_next().await {
        Some(joined) => joined.expect("a submission task panicked"),
        None => Ok(Submitted::Retry),
    }
}

/// Writes one built group to the store and tells intake it is recorded.
fn record_built(
    intake: &mut Intake,
    store: &mut Store,
    counters: &Counters,
    group: intake::ReadyGroup,
) -> Result<(), FatalError> {
    let watch = group.watch;
    match group.built {
        Built::Object {
            object,
            spec,
            bytes,
        } => {
            store.enqueue(&object)?;
            Counters::add(&counters.objects_enqueued, 1);
            info!(
                key_prefix = %spec.key_prefix,
                bucket = %spec.bucket,
                blobs = spec.blobs.len(),
                bytes,
                "queued"
            );
            intake.recorded(watch, &object.files);
        }
        Built::LocalDead { object, reason } => {
            warn!(key_prefix = %object.key_prefix, bucket = %object.bucket, %reason, "not sent; kept as a dead letter");
            store.record_local_dead(&object, &reason)?;
            Counters::add(&counters.objects_dead, 1);
            intake.recorded(watch, &object.files);
        }
        Built::Skipped { object } => {
            info!(key_prefix = %object.key_prefix, bucket = %object.bucket, "every blob already delivered; skipped");
            store.record_skipped(&object, "every blob was already delivered to this bucket")?;
            Counters::add(&counters.objects_skipped, 1);
            intake.recorded(watch, &object.files);
        }
        Built::Unsettled { .. } | Built::Empty => {}
    }
    Ok(())
}
