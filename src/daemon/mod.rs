//! The shell: carries out what the pure pipeline decides.
//!
//! - `scan`: walk a watch root (discover).
//! - `watch`: OS events as hints, and the rescan flags.
//! - `intake`: candidates per watch: settle and group (discover → settle → group).
//! - `hash`: read a settled file once, hash it, keep its head and small content.
//! - `build`: turn a ready group into the object to send (hash → classify → build).
//! - `submit`: send an outbox item or a batch, record the outcome (submit → record).
//! - `upload`: presigned uploads of an item's large files, before its create.
//! - `tasks`: poll the processing tasks of delivered objects.
//! - `monitor`: health (stuck or not) and the figures `/metrics` shows.
//!
//! `Engine` below is the one place that spawns the pipeline's tasks: scans,
//! event handling and builds on the blocking pool (at most `BUILD_SLOTS`
//! builds at once), up to `api.max_in_flight` submissions (an object or a
//! batch each), the task poller, and under `run` the metrics endpoint on
//! `metrics.listen` (`crate::metrics`, fed by `monitor`). Intake and
//! submission run side by side, joined by the durable outbox: a build records
//! its object in the store and wakes the submitter. Everything goes through
//! the store first, so stopping the engine at any point loses nothing that
//! was recorded.

pub mod build;
pub mod dispose;
pub mod failpoint;
pub mod hash;
pub mod intake;
pub mod monitor;
pub mod scan;
pub mod shutdown;
pub mod submit;
pub mod tasks;
pub mod upload;
pub mod watch;

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use self::build::Built;
use self::dispose::Disposer;
use self::intake::{GroupPlan, Intake, Waiting};
use self::monitor::Monitor;
use self::submit::{Due, Submitted, Submitter, SubmitterSettings};
use self::watch::{Hint, Mode};
use crate::api::{ApiClient, ApiKey};
use crate::config::Config;
use crate::error::FatalError;
use crate::metrics;
use crate::pipeline::health::Health;
use crate::pipeline::retry::Backoff;
use crate::pipeline::{Dialect, batch, request};
use crate::store::{DueEntry, ObjectStatus, OutboxFigures, Record, Store, StoreError, unix_now_ms};
use crate::telemetry::{Counters, CountersSnapshot, service};
use crate::transfer::Presigned;

/// Shared access to the store. SQLite commits wait for the disk, so async
/// code goes through `run`, which takes the blocking pool.
#[derive(Clone)]
pub struct StoreHandle {
    store: Arc<Mutex<Store>>,
    /// A second, read-only connection for the lookups of intake and builds
    /// (is this file recorded, is this hash delivered): with WAL, reads do
    /// not wait for a commit's fsync, so builds never queue behind one.
    reader: Option<Arc<Mutex<Store>>>,
    /// Writes waiting for the state disk to take writes again (`write`).
    blocked: Arc<AtomicUsize>,
}

impl StoreHandle {
    pub fn new(store: Store) -> StoreHandle {
        StoreHandle {
            store: Arc::new(Mutex::new(store)),
            reader: None,
            blocked: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Adds a read-only connection to the same database for [`StoreHandle::read`].
    pub fn with_reader(mut self, reader: Store) -> StoreHandle {
        self.reader = Some(Arc::new(Mutex::new(reader)));
        self
    }

    /// For lookups that only need what is committed; see `reader`.
    pub fn read(&self) -> std::sync::MutexGuard<'_, Store> {
        match &self.reader {
            Some(reader) => reader.lock().expect("store reader lock poisoned"),
            None => self.lock(),
        }
    }

    /// Runs `f` on the blocking pool; see `write` for a full disk.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&mut Store) -> Result<T, StoreError> + Send + 'static,
    {
        let handle = self.clone();
        tokio::task::spawn_blocking(move || handle.write(f))
            .await
            .expect("a store call panicked")
    }

    /// Runs `f` with the store, for code already on the blocking pool. A full
    /// (or read-only) state disk is waited out, not turned into an error: the transaction
    /// was rolled back, so nothing is half-written, and whatever called for
    /// the write (a delivery to record, an object to queue) holds until it
    /// can be made durable. So nothing is disposed of, and nothing sent
    /// twice, for want of space; work resumes once space returns.
    pub fn write<T>(
        &self,
        f: impl Fn(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut warned_at: Option<Instant> = None;
        let mut waiting: Option<DiskWait<'_>> = None;
        loop {
            let result = f(&mut self.lock());
            match result {
                Err(err) if err.is_unwritable() => {
                    waiting.get_or_insert_with(|| DiskWait::start(&self.blocked));
                    if warned_at.is_none_or(|at| at.elapsed() >= DISK_FULL_LOG_EVERY) {
                        error!(
                            path = %err.path().display(),
                            error = %err,
                            "state disk full or read-only; holding work until it takes writes again"
                        );
                        warned_at = Some(Instant::now());
                    }
                    std::thread::sleep(DISK_FULL_RETRY);
                }
                other => return other,
            }
        }
    }

    /// Some write waits for the state disk (full, or read-only): work is
    /// held by design, not stuck (`monitor`).
    pub fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::SeqCst) > 0
    }

    /// For reads on the blocking pool.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().expect("store lock poisoned")
    }
}

/// Counts a write as waiting for the disk while it lives.
struct DiskWait<'a>(&'a AtomicUsize);

impl<'a> DiskWait<'a> {
    fn start(count: &'a AtomicUsize) -> DiskWait<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        DiskWait(count)
    }
}

impl Drop for DiskWait<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How often a write refused for a full state disk is tried again.
const DISK_FULL_RETRY: Duration = Duration::from_secs(1);
/// How often a full state disk is logged while it lasts.
const DISK_FULL_LOG_EVERY: Duration = Duration::from_secs(60);

/// An exclusive lock on `<state.dir>/lock`. Two processes on one outbox
/// would each send every object; the second is refused instead. `status`,
/// `retry` and `plan` do not take it: SQLite keeps them consistent beside a
/// running daemon.
struct InstanceLock {
    _file: std::fs::File,
}

impl InstanceLock {
    fn acquire(dir: &std::path::Path) -> Result<InstanceLock, FatalError> {
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join("lock");
        let mut file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|err| FatalError::io(&path, err))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(FatalError::Runtime(format!(
                    "another mixpeek-ingest (pid {}) is using the state directory {}; \
                     stop it first, or give this one its own state.dir",
                    holder.trim(),
                    dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(err)) => return Err(FatalError::io(&path, err)),
        }
        // The pid is only for that message; failing to write it is harmless.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(InstanceLock { _file: file })
    }
}

/// How long the engine sleeps at most when it has nothing scheduled, so a
/// pause ending or a retry coming due is never missed by much.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// Groups read and hashed at once. Hashing is disk-bound; two keeps one
/// large file from holding up every small group behind it.
const BUILD_SLOTS: usize = 2;
/// Event paths handled in one step before intake looks at readiness again.
const HINT_BATCH: usize = 4096;
/// How long a partial batch waits for more objects while builds are still
/// running (`run`): long enough for a burst to fill batches, short against
/// the settle time an operator waits anyway.
const BATCH_LINGER_RUN: Duration = Duration::from_millis(500);
/// The same for `once`, where nobody waits on a single object; it only
/// guards against waiting forever.
const BATCH_LINGER_ONCE: Duration = Duration::from_secs(30);
/// Tasks polled per pass of the task loop.
const TASK_POLLS: usize = 8;
/// How often `run` judges its health (logs a stall, sends `STATUS=`) when
/// no systemd watchdog sets a shorter period.
const HEALTH_EVERY: Duration = Duration::from_secs(10);
/// How long the metrics endpoint may finish answering after the pipeline
/// stopped, before it is dropped.
const ENDPOINT_DRAIN: Duration = Duration::from_secs(1);

/// What a finished `once` reports.
#[derive(Debug, Clone)]
pub struct OnceReport {
    pub counters: CountersSnapshot,
    /// Groups left behind because their `ready_marker` has not appeared.
    pub awaiting_marker: Vec<String>,
    pub end: OnceEnd,
    /// Watch roots that could not be scanned.
    pub unscannable: Vec<PathBuf>,
}

/// Why `once` stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnceEnd {
    /// Nothing settling, nothing in the outbox but dead letters.
    Done,
    /// Submissions paused (key, bucket, endpoint); the outbox keeps the rest.
    Paused(String),
    /// Stopped by a signal.
    Interrupted,
}

pub struct Engine {
    /// Held for the engine's life: one process per state directory.
    _lock: InstanceLock,
    config: Arc<Config>,
    store: StoreHandle,
    intake: Arc<Mutex<Intake>>,
    submitter: Arc<Submitter>,
    counters: Arc<Counters>,
    /// Raised when a build put a new object in the outbox.
    work: Arc<Notify>,
    /// Raised when a submission finished, for `once` waiting on the outbox.
    progress: Notify,
    disposer: Arc<Disposer>,
    /// Raised when an object was delivered or skipped: disposals may be due.
    dispose_wake: Arc<Notify>,
    /// For task polls, and for callers beside the engine.
    client: ApiClient,
    /// Groups queued for building or being built: more objects are coming,
    /// so a partial batch may wait for them.
    building: Arc<AtomicUsize>,
    /// Groups still settling at the last look: more objects are coming soon.
    settling: AtomicUsize,
    /// Submissions in flight (objects or batches).
    in_flight: AtomicUsize,
    /// Health and metrics; shared with the endpoint.
    monitor: Arc<Monitor>,
}

/// A finished send: the object ids it carried, and each one's outcome.
type Sent = (Vec<i64>, Result<Vec<(i64, Submitted)>, FatalError>);

/// A build that came back, for intake to apply.
struct BuildDone {
    watch: usize,
    key_prefix: String,
    built: Built,
    /// Members that could not be read (permissions, I/O errors).
    unreadable: Vec<String>,
}

impl BuildDone {
    /// Hands the outcome to intake.
    fn apply(&self, intake: &mut Intake) {
        intake.built(
            self.watch,
            &self.key_prefix,
            &self.built,
            &self.unreadable,
            Instant::now(),
        );
    }
}

/// The build stage: groups read and hashed on the blocking pool,
/// `BUILD_SLOTS` at once, then recorded in the store. Every build that
/// finished while the last commit waited for the disk is recorded in the
/// next commit, together (group commit): a burst of small groups costs a
/// few fsyncs, not one per group. A build is handed back to intake only
/// once it is recorded, so intake never forgets a file the store has not
/// got.
struct Builds {
    queue: VecDeque<GroupPlan>,
    running: JoinSet<BuildDone>,
    /// Built, waiting for the next commit.
    built: Vec<BuildDone>,
    /// The commit in progress (at most one).
    recording: JoinSet<Result<Vec<BuildDone>, FatalError>>,
}

impl Builds {
    fn new() -> Builds {
        Builds {
            queue: VecDeque::new(),
            running: JoinSet::new(),
            built: Vec::new(),
            recording: JoinSet::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
            && self.running.is_empty()
            && self.built.is_empty()
            && self.recording.is_empty()
    }

    /// The next recorded builds, or `None` when nothing is queued, running
    /// or waiting to be recorded. Cancel-safe: nothing is lost when another
    /// branch of a `select!` wins.
    async fn next(&mut self, engine: &Engine) -> Option<Result<Vec<BuildDone>, FatalError>> {
        loop {
            while self.running.len() < BUILD_SLOTS {
                let Some(plan) = self.queue.pop_front() else {
                    break;
                };
                engine.spawn_build(&mut self.running, plan);
            }
            if self.recording.is_empty() && !self.built.is_empty() {
                engine.spawn_record(&mut self.recording, std::mem::take(&mut self.built));
            }
            if self.running.is_empty() && self.recording.is_empty() {
                return None;
            }
            tokio::select! {
                Some(done) = self.running.join_next(), if !self.running.is_empty() => {
                    self.built.push(done.expect("a build panicked"));
                }
                Some(recorded) = self.recording.join_next(), if !self.recording.is_empty() => {
                    return Some(recorded.expect("recording builds panicked"));
                }
            }
        }
    }
}

impl Engine {
    /// Opens the store and the API client: everything that can fail for good
    /// fails here, before any work starts.
    pub fn new(
        config: Arc<Config>,
        key: ApiKey,
        counters: Arc<Counters>,
    ) -> Result<Engine, FatalError> {
        let mut store = Store::open(&config.state.dir)?;
        let lock = InstanceLock::acquire(&config.state.dir)?;
        // A pause is this process's finding; one left by a stopped process
        // says nothing about the key or bucket now.
        store.clear_meta(crate::store::PAUSE_META_KEY)?;
        let remembered = store
            .meta(submit::DIALECT_META_KEY)?
            .as_deref()
            .and_then(Dialect::parse);
        let intake = Intake::new(&config.watches)?;
        let client = ApiClient::new(&config.api, key)?.counting(Arc::clone(&counters));
        let presigned = Presigned::new(&config.api, client.throttle())?;
        let backoff = Backoff::try_new(config.retry.initial, config.retry.max)
            .map_err(|err| FatalError::Runtime(format!("retry settings: {err}")))?;
        // Opened after `open` migrated the database, so it sees the schema.
        let reader = Store::open_read_only(&config.state.dir)?;
        let store = StoreHandle::new(store).with_reader(reader);
        let submitter = Submitter::new(
            client.clone(),
            presigned,
            store.clone(),
            SubmitterSettings {
                backoff,
                setting: config.api.dialect,
                remembered,
                auto_process: config.api.auto_process,
                max_in_flight: config.api.max_in_flight,
            },
            Arc::clone(&counters),
        );
        let submitter = Arc::new(submitter);
        let monitor = Arc::new(Monitor::new(
            store.clone(),
            Arc::clone(&submitter),
            Arc::clone(&counters),
            config.stuck_after(),
        ));
        Ok(Engine {
            _lock: lock,
            store,
            intake: Arc::new(Mutex::new(intake)),
            submitter,
            counters,
            work: Arc::new(Notify::new()),
            progress: Notify::new(),
            disposer: Arc::new(Disposer::new(&config.watches)),
            dispose_wake: Arc::new(Notify::new()),
            client,
            building: Arc::new(AtomicUsize::new(0)),
            settling: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            monitor,
            config,
        })
    }

    /// The API client every call of this engine goes through (one request
    /// quota, one bandwidth cap).
    pub fn client(&self) -> &ApiClient {
        &self.client
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    fn lock_intake(&self) -> std::sync::MutexGuard<'_, Intake> {
        self.intake.lock().expect("intake lock poisoned")
    }

    /// Scan, deliver everything that is ready, wait until the outbox is empty
    /// or holds only dead letters (SPEC §9 `once`). Stops early, with the
    /// outbox intact, when submissions are paused (a refused key, a missing
    /// bucket: nothing a script gains by waiting for) or on `shutdown`.
    pub async fn once(&self, shutdown: impl Future<Output = ()>) -> Result<OnceReport, FatalError> {
        let cancel = CancellationToken::new();
        let submit = self.submit_loop(cancel.clone(), BATCH_LINGER_ONCE);
        let drive = async {
            let result = self.once_drive(shutdown).await;
            cancel.cancel();
            result
        };
        let (driven, submitted) = tokio::join!(drive, submit);
        submitted?;
        let (end, awaiting_marker) = driven?;
        self.dispose_due().await?;
        Ok(OnceReport {
            counters: self.counters.snapshot(),
            awaiting_marker,
            end,
            unscannable: self.lock_intake().unscannable(),
        })
    }

    /// Passes of scan → build until nothing is settling and the outbox is empty.
    async fn once_drive(
        &self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(OnceEnd, Vec<String>), FatalError> {
        tokio::pin!(shutdown);
        let mut first = true;
        loop {
            // Without OS events, a new walk is how a settling file is seen
            // to change; once intake holds nothing, walking the tree again
            // while the outbox drains would only find what is recorded.
            let rescan = first || self.lock_intake().candidates() > 0;
            first = false;
            let watches: Vec<usize> = if rescan {
                (0..self.lock_intake().len()).collect()
            } else {
                Vec::new()
            };
            self.intake_step(Vec::new(), watches).await;
            let (plans, mut waiting) = self.ready(false);
            self.settling.store(waiting.settling, Ordering::SeqCst);
            // A large tree is walked a part at a time: the next part is
            // taken (and settles) while this one is built.
            let (built, ()) = tokio::join!(
                self.build_all(plans),
                self.intake_step(Vec::new(), Vec::new())
            );
            waiting.settling += built?;
            self.settling.store(waiting.settling, Ordering::SeqCst);
            let pending = self.store.run(|s| s.pending_count()).await?;
            let awaiting_marker = || self.lock_intake().awaiting_marker();
            if let Some(pause) = self.submitter.pause() {
                return Ok((OnceEnd::Paused(pause.reason), awaiting_marker()));
            }
            if waiting.settling == 0 && pending == 0 {
                let awaiting_marker = awaiting_marker();
                for key_prefix in &awaiting_marker {
                    info!(%key_prefix, "group not sent: its ready_marker has not appeared");
                }
                return Ok((OnceEnd::Done, awaiting_marker));
            }
            tokio::select! {
                () = tokio::time::sleep(self.idle_time().await?) => {}
                () = self.progress.notified() => {}
                () = &mut shutdown => {
                    info!("interrupted; what was not delivered stays in the outbox");
                    return Ok((OnceEnd::Interrupted, awaiting_marker()));
                }
            }
        }
    }

    /// The daemon: a start scan, then OS events (or polling) and periodic
    /// rescans feeding intake, while the submitter drains the outbox, and
    /// the metrics endpoint answers on `metrics.listen`; until `stop`
    /// completes. Then intake stops, requests in flight get `shutdown_grace`
    /// to finish, and `stop`'s output is returned. The endpoint answers until
    /// the pipeline has stopped. An address it cannot listen on is fatal
    /// before any work starts.
    pub async fn run<T>(&self, stop: impl Future<Output = T>) -> Result<T, FatalError> {
        let listener = match self.config.metrics.listen {
            Some(addr) => Some(metrics::bind(addr).await?),
            None => None,
        };
        let cancel = CancellationToken::new();
        let stopped = CancellationToken::new();
        let pipeline = async {
            let (intake, submit, dispose, tasks) = tokio::join!(
                self.intake_loop(cancel.clone()),
                self.submit_loop(cancel.clone(), BATCH_LINGER_RUN),
                self.dispose_loop(cancel.clone()),
                self.task_loop(cancel.clone())
            );
            stopped.cancel();
            intake.and(submit).and(dispose).and(tasks)
        };
        let work = async {
            let (pipeline, endpoint) =
                tokio::join!(pipeline, self.endpoint(listener, stopped.clone()));
            pipeline.and(endpoint)
        };
        tokio::pin!(stop);
        tokio::pin!(work);
        tokio::select! {
            stopped = &mut stop => {
                cancel.cancel();
                work.await?;
                Ok(stopped)
            }
            ended = &mut work => {
                ended?;
                Err(FatalError::Runtime("the pipeline stopped on its own".into()))
            }
        }
    }

    /// Serves `/metrics`, `/healthz` and `/readyz` on `listener` (when
    /// `metrics.listen` is set) until `stopped`, then for at most
    /// `ENDPOINT_DRAIN` while answers in progress finish.
    async fn endpoint(
        &self,
        listener: Option<tokio::net::TcpListener>,
        stopped: CancellationToken,
    ) -> Result<(), FatalError> {
        let Some(listener) = listener else {
            return Ok(());
        };
        let addr = listener
            .local_addr()
            .map_err(|err| FatalError::io("metrics.listen", err))?;
        info!(%addr, "serving /metrics, /healthz and /readyz");
        let serve = metrics::serve(
            listener,
            Arc::clone(&self.monitor),
            stopped.clone().cancelled_owned(),
        );
        let drained = async {
            stopped.cancelled().await;
            tokio::time::sleep(ENDPOINT_DRAIN).await;
        };
        let failed = |err| FatalError::io(format!("metrics.listen = {addr}"), err);
        tokio::select! {
            served = serve => served.map_err(failed),
            () = drained => Ok(()),
        }
    }

    /// Discover → settle → group → build, until cancelled.
    async fn intake_loop(&self, cancel: CancellationToken) -> Result<(), FatalError> {
        let result = self.intake_loop_inner(&cancel).await;
        if result.is_err() {
            cancel.cancel();
        }
        result
    }

    async fn intake_loop_inner(&self, cancel: &CancellationToken) -> Result<(), FatalError> {
        let roots: Vec<(Option<PathBuf>, Duration)> = {
            let intake = self.lock_intake();
            (0..intake.len())
                .map(|i| {
                    (
                        intake.root(i).map(PathBuf::from),
                        intake.watch(i).poll_interval,
                    )
                })
                .collect()
        };
        let (watchers, mut hints, rescans) = watch::start(&roots);
        self.monitor.set_watches(
            self.config
                .watches
                .iter()
                .zip(&watchers.modes)
                .map(|(watch, mode)| (watch.path.display().to_string(), *mode)),
        );
        let intervals: Vec<Duration> = self
            .config
            .watches
            .iter()
            .zip(&watchers.modes)
            .map(|(watch, mode)| match mode {
                Mode::Polling(every) => *every,
                Mode::Events => watch.rescan_interval,
            })
            .collect();
        // The start scan: everything dropped while the daemon was down.
        let mut next_scan: Vec<Instant> = vec![Instant::now(); intervals.len()];
        let mut builds = Builds::new();
        let mut batch: Vec<Hint> = Vec::new();
        let mut hints_open = true;
        let mut announced = false;
        // The watchdog is fed only while the pipeline moves (`monitor`):
        // a stuck submitter stops the pings, and systemd restarts us.
        let watchdog = service::watchdog_interval();
        let check_every = watchdog.map_or(HEALTH_EVERY, |every| every.min(HEALTH_EVERY));
        let mut next_check = Instant::now();
        loop {
            let now = Instant::now();
            let mut due: Vec<usize> = Vec::new();
            for (index, cause) in rescans.take() {
                info!(
                    watch = %self.config.watches[index].path.display(),
                    cause = cause.as_str(),
                    "file events overflowed or were incomplete; rescanning"
                );
                self.counters.rescanned(cause.as_str());
                due.push(index);
            }
            for (index, at) in next_scan.iter_mut().enumerate() {
                if *at <= now || due.contains(&index) {
                    if !due.contains(&index) {
                        due.push(index);
                        self.counters
                            .rescanned(scan_reason(announced, watchers.modes[index]));
                    }
                    *at = now + intervals[index];
                }
            }
            let hinted = std::mem::take(&mut batch);
            if !due.is_empty() || !hinted.is_empty() || self.lock_intake().may_advance(now) {
                self.intake_step(hinted, due).await;
            }
            if !announced {
                // The start scan is done and its groups are queued.
                self.monitor.set_ready();
                service::ready();
                announced = true;
            }
            let (plans, waiting) = self.ready(true);
            self.settling.store(waiting.settling, Ordering::SeqCst);
            self.building.fetch_add(plans.len(), Ordering::SeqCst);
            builds.queue.extend(plans);
            if Instant::now() >= next_check {
                let (health, outbox) = self.monitor.assess().await?;
                service::status(&self.status_line(&waiting, &outbox, &health));
                if watchdog.is_some() && health.feeds_watchdog() {
                    service::watchdog();
                }
                next_check = Instant::now() + check_every;
            }

            let mut wake = next_scan
                .iter()
                .min()
                .copied()
                .unwrap_or(now + MAX_IDLE)
                .min(next_check);
            if let Some(deadline) = self.lock_intake().next_deadline(now) {
                wake = wake.min(deadline);
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                received = hints.recv_many(&mut batch, HINT_BATCH), if hints_open => {
                    // Closed when no watch uses OS events: polling only.
                    hints_open = received > 0;
                }
                () = rescans.raised() => {}
                Some(recorded) = builds.next(self), if !builds.is_empty() => {
                    let mut intake = self.lock_intake();
                    for done in recorded? {
                        done.apply(&mut intake);
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        drop(watchers);
        // Builds cannot be interrupted mid-read; what they record is whole,
        // and what they did not record is found again at the next start.
        let grace = self.config.shutdown_grace;
        builds.queue.clear();
        if tokio::time::timeout(grace, async {
            while let Some(recorded) = builds.next(self).await {
                recorded?;
            }
            Ok::<_, FatalError>(())
        })
        .await
        .is_err()
        {
            warn!("builds still reading files at shutdown; they are redone at the next start");
        }
        Ok(())
    }

    /// Sends outbox items as they come due, at most `max_in_flight` sends at
    /// once (a send is one object, or a batch of them), until cancelled;
    /// then gives requests in flight `shutdown_grace`. While builds are
    /// still running, a batch that is not full waits up to `linger` for more
    /// objects: a burst then goes in full batches instead of many small ones.
    async fn submit_loop(
        &self,
        cancel: CancellationToken,
        linger: Duration,
    ) -> Result<(), FatalError> {
        let limit = self.config.api.max_in_flight.max(1);
        let mut tasks: JoinSet<Sent> = JoinSet::new();
        let mut in_flight: HashSet<i64> = HashSet::new();
        let result: Result<(), FatalError> = async {
            loop {
                let mut wake = self.next_submit_wake().await?;
                if tasks.len() < limit && self.submitter.pause().is_none() {
                    let hold = self.partial_wait(&in_flight, linger).await?;
                    if let Some(wait) = hold {
                        wake = wake.min(wait);
                    }
                    let room = limit - tasks.len();
                    self.send_due(&mut tasks, &mut in_flight, room, hold.is_some())
                        .await?;
                }
                self.in_flight.store(in_flight.len(), Ordering::SeqCst);
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                        let (ids, outcomes) = joined.expect("a submission task panicked");
                        self.monitor.finished();
                        for id in &ids {
                            in_flight.remove(id);
                        }
                        if outcomes?.iter().any(|(_, o)| *o == Submitted::Delivered) {
                            self.dispose_wake.notify_one();
                        }
                        self.progress.notify_one();
                    }
                    () = self.work.notified() => {}
                    () = tokio::time::sleep(wake) => {}
                }
            }
        }
        .await;
        if result.is_err() {
            cancel.cancel();
        }
        let grace = self.config.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            while let Some(joined) = tasks.join_next().await {
                let (_, outcome) = joined.expect("a submission task panicked");
                outcome?;
            }
            Ok::<_, FatalError>(())
        })
        .await;
        match drained {
            Ok(outcome) => outcome?,
            Err(_) => {
                warn!(
                    in_flight = tasks.len(),
                    grace_s = grace.as_secs(),
                    "requests still in flight after shutdown_grace; they stay in the outbox and are sent again at the next start"
                );
                tasks.abort_all();
            }
        }
        result
    }

    /// `Some(wait)` while a partial batch should wait for the objects intake
    /// is about to queue: batching is on, groups are settling or building,
    /// and the longest due object (not in flight) has waited less than
    /// `linger`.
    async fn partial_wait(
        &self,
        in_flight: &HashSet<i64>,
        linger: Duration,
    ) -> Result<Option<Duration>, FatalError> {
        let coming =
            self.building.load(Ordering::SeqCst) + self.settling.load(Ordering::SeqCst) > 0;
        if !coming || !self.submitter.batching() {
            return Ok(None);
        }
        let now = unix_now_ms();
        let limit = 1 + in_flight.len();
        let due = self.store.run(move |s| s.due_ids(now, limit)).await?;
        let Some(oldest) = due
            .iter()
            .find(|(id, _)| !in_flight.contains(id))
            .map(|(_, at)| *at)
        else {
            return Ok(None);
        };
        let waited = Duration::from_millis(u64::try_from(now - oldest).unwrap_or(0));
        Ok(linger.checked_sub(waited).filter(|left| !left.is_zero()))
    }

    /// Starts up to `room` sends of the objects due now; with
    /// `hold_partial`, batches that are not full stay for more objects.
    async fn send_due(
        &self,
        tasks: &mut JoinSet<Sent>,
        in_flight: &mut HashSet<i64>,
        room: usize,
        hold_partial: bool,
    ) -> Result<(), FatalError> {
        let now = unix_now_ms();
        let fetch = room * batch::MAX_OBJECTS + in_flight.len();
        let listed = self.store.run(move |s| s.due_list(now, fetch)).await?;
        let waiting: Vec<DueEntry> = listed
            .into_iter()
            .filter(|e| !in_flight.contains(&e.id))
            .collect();
        // While a burst builds, this runs at every commit: when no batch
        // can be full and nothing goes on its own, load nothing.
        if hold_partial
            && waiting.len() < batch::MAX_OBJECTS
            && !waiting
                .iter()
                .any(|e| e.may_upload || self.submitter.goes_alone(e.id))
        {
            return Ok(());
        }
        // Load what `room` sends can carry, not every due request.
        let budget = room * batch::MAX_BATCH_BYTES;
        let mut ids = Vec::new();
        let mut bytes = 0;
        for entry in &waiting {
            if !ids.is_empty() && bytes + entry.bytes > budget {
                break;
            }
            bytes += entry.bytes;
            ids.push(entry.id);
        }
        let due = self.store.run(move |s| s.pending_items(&ids)).await?;
        let due: Vec<Due> = due
            .into_iter()
            .filter(|i| !in_flight.contains(&i.id))
            .map(Due::new)
            .collect();
        let candidates: Vec<batch::Candidate<'_>> = due
            .iter()
            .map(|d| batch::Candidate {
                bucket: &d.item.bucket,
                bytes: d.item.spec_json.len(),
                batchable: self.submitter.batchable(d),
            })
            .collect();
        let sends = batch::plan(&candidates, batch::MAX_OBJECTS);
        drop(candidates);
        let mut slots: Vec<Option<Due>> = due.into_iter().map(Some).collect();
        let sends = sends.into_iter().filter(|send| {
            !hold_partial
                || send.len() >= batch::MAX_OBJECTS
                || !slots[send[0]]
                    .as_ref()
                    .is_some_and(|d| self.submitter.batchable(d))
        });
        for send in sends.take(room).collect::<Vec<_>>() {
            let mut items: Vec<Due> = send.iter().filter_map(|i| slots[*i].take()).collect();
            let ids: Vec<i64> = items.iter().map(|d| d.item.id).collect();
            in_flight.extend(&ids);
            let submitter = Arc::clone(&self.submitter);
            // One object goes to the single create, whose answer is the
            // object itself; a batch of one would only add an envelope.
            if items.len() == 1 {
                let due = items.remove(0);
                tasks.spawn(async move {
                    let id = due.item.id;
                    let outcome = submitter.submit(due).await.map(|o| vec![(id, o)]);
                    (ids, outcome)
                });
            } else {
                let bucket = items[0].item.bucket.clone();
                tasks.spawn(async move {
                    let outcome = submitter.submit_batch(&bucket, items).await;
                    (ids, outcome)
                });
            }
        }
        Ok(())
    }

    /// Polls the processing tasks of delivered objects while the submitter
    /// has nothing to do (`tasks.rs`), until cancelled.
    async fn task_loop(&self, cancel: CancellationToken) -> Result<(), FatalError> {
        let result: Result<(), FatalError> = async {
            loop {
                let now = unix_now_ms();
                let idle = self.in_flight.load(Ordering::SeqCst) == 0
                    && self.submitter.pause().is_none()
                    && self
                        .store
                        .run(|s| s.next_due_ms())
                        .await?
                        .is_none_or(|due| due > now);
                if idle {
                    let rows = self
                        .store
                        .run(move |s| s.due_tasks(now, TASK_POLLS))
                        .await?;
                    for row in rows {
                        tasks::poll(&self.client, &self.store, &self.counters, row).await?;
                    }
                }
                let next = self.store.run(|s| s.next_task_poll_ms()).await?;
                let wake = next.map_or(MAX_IDLE, |at| {
                    Duration::from_millis(u64::try_from(at - unix_now_ms()).unwrap_or(0))
                });
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(wake.clamp(Duration::from_millis(50), MAX_IDLE)) => {}
                }
            }
        }
        .await;
        if result.is_err() {
            cancel.cancel();
        }
        result
    }

    /// Disposes of delivered files (`after_delivery`) at start, for what a
    /// crash left undone, and whenever a delivery is recorded; until cancelled.
    async fn dispose_loop(&self, cancel: CancellationToken) -> Result<(), FatalError> {
        if !self.disposer.is_active() {
            return Ok(());
        }
        loop {
            if let Err(err) = self.dispose_due().await {
                cancel.cancel();
                return Err(err);
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = self.dispose_wake.notified() => {}
            }
        }
    }

    /// Runs every due disposal on the blocking pool.
    async fn dispose_due(&self) -> Result<(), FatalError> {
        let disposer = Arc::clone(&self.disposer);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || disposer.run(&store))
            .await
            .expect("a disposal pass panicked")?;
        Ok(())
    }

    /// The `STATUS=` line: what the pipeline holds and has done, and why
    /// it is not moving when it is not.
    fn status_line(&self, waiting: &Waiting, outbox: &OutboxFigures, health: &Health) -> String {
        let c = self.counters.snapshot();
        let mut line = format!(
            "{} pending, {} settling; {} delivered, {} dead, {} queued since start",
            outbox.pending,
            waiting.settling,
            c.objects_delivered,
            c.objects_dead,
            c.objects_enqueued
        );
        match health {
            Health::Healthy { .. } => {}
            Health::Paused { reason } => line.push_str(&format!("; PAUSED: {reason}")),
            Health::Stuck { due, stalled } => line.push_str(&format!(
                "; STUCK: {due} due, no submission finished for {}s",
                stalled.as_secs()
            )),
        }
        line
    }

    /// How long the submitter may sleep: until the next retry comes due, or
    /// the pause ends, at most `MAX_IDLE`. Items already due but in flight
    /// wake it through their task instead.
    async fn next_submit_wake(&self) -> Result<Duration, FatalError> {
        let next = self.store.run(|s| s.next_due_ms()).await?;
        let now = unix_now_ms();
        let mut wake = MAX_IDLE;
        if let Some(due) = next.filter(|due| *due > now) {
            wake = wake.min(Duration::from_millis(u64::try_from(due - now).unwrap_or(0)));
        }
        if let Some(pause) = self.submitter.pause() {
            wake = wake.min(pause.until.saturating_duration_since(Instant::now()));
        }
        Ok(wake.max(Duration::from_millis(10)))
    }

    /// How long `once` can sleep: until the next settle deadline or retry.
    async fn idle_time(&self) -> Result<Duration, FatalError> {
        let now = Instant::now();
        let mut wake = now + MAX_IDLE;
        if let Some(deadline) = self.lock_intake().next_deadline(now) {
            wake = wake.min(deadline);
        }
        if let Some(due_ms) = self.store.run(|s| s.next_due_ms()).await? {
            let in_ms = u64::try_from(due_ms - unix_now_ms()).unwrap_or(0);
            wake = wake.min(now + Duration::from_millis(in_ms));
        }
        // Never spin: a deadline in the past still yields for a moment.
        Ok(wake
            .saturating_duration_since(now)
            .max(Duration::from_millis(10)))
    }

    /// Applies event hints and full scans on the blocking pool.
    async fn intake_step(&self, hints: Vec<Hint>, scans: Vec<usize>) {
        let intake = Arc::clone(&self.intake);
        let counters = Arc::clone(&self.counters);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut intake = intake.lock().expect("intake lock poisoned");
            for index in &scans {
                intake.start_scan(*index, &counters);
            }
            let mut seen = HashSet::new();
            for hint in hints {
                // A full walk of the watch covers it; one look a path suffices.
                if scans.contains(&hint.watch) || !seen.insert(hint.clone()) {
                    continue;
                }
                intake.hint(hint.watch, &hint.path, &counters, &store);
            }
            intake.advance(Instant::now(), &counters, &store);
        })
        .await
        .expect("an intake step panicked");
    }

    /// The groups ready now.
    fn ready(&self, restat: bool) -> (Vec<GroupPlan>, Waiting) {
        self.lock_intake().ready(Instant::now(), restat)
    }

    /// Starts one build on the blocking pool: read, hash, build.
    fn spawn_build(&self, builds: &mut JoinSet<BuildDone>, plan: GroupPlan) {
        let store = self.store.clone();
        let counters = Arc::clone(&self.counters);
        let has_upload = self.submitter.dialect_has_upload();
        builds.spawn_blocking(move || {
            let (built, unreadable) = plan.build(&store, has_upload, &counters);
            if matches!(built, Built::Object { .. }) {
                failpoint::hit(failpoint::AFTER_HASH);
            }
            for item in &unreadable {
                counters.ignored("unreadable");
                warn!(path = %item.path.display(), error = %item.error, "cannot read file; skipped until the next periodic rescan");
            }
            BuildDone {
                watch: plan.watch,
                key_prefix: plan.key_prefix,
                built,
                unreadable: unreadable.into_iter().map(|u| u.rel).collect(),
            }
        });
    }

    /// Records finished builds in one transaction on the blocking pool, then
    /// wakes the submitter (and the disposer for skipped objects).
    fn spawn_record(
        &self,
        recording: &mut JoinSet<Result<Vec<BuildDone>, FatalError>>,
        done: Vec<BuildDone>,
    ) {
        let store = self.store.clone();
        let counters = Arc::clone(&self.counters);
        let work = Arc::clone(&self.work);
        let dispose_wake = Arc::clone(&self.dispose_wake);
        let building = Arc::clone(&self.building);
        recording.spawn_blocking(move || {
            let records: Vec<Record<'_>> =
                done.iter().filter_map(|d| record_of(&d.built)).collect();
            if !records.is_empty() {
                store.write(|s| s.record(&records))?;
            }
            let objects = done
                .iter()
                .filter(|d| matches!(d.built, Built::Object { .. }))
                .count();
            for d in &done {
                log_recorded(&counters, &d.built);
            }
            // The last build of a burst ends a batch's wait for more.
            let last = building.fetch_sub(done.len(), Ordering::SeqCst) == done.len();
            if objects > 0 {
                failpoint::hit(failpoint::AFTER_ENQUEUE);
            }
            if objects > 0 || last {
                work.notify_one();
            }
            if done
                .iter()
                .any(|d| matches!(d.built, Built::Skipped { .. }))
            {
                dispose_wake.notify_one();
            }
            Ok(done)
        });
    }

    /// Builds every plan (`BUILD_SLOTS` at once) and applies the results;
    /// returns how many groups went back to settling.
    async fn build_all(&self, plans: Vec<GroupPlan>) -> Result<usize, FatalError> {
        let mut builds = Builds::new();
        self.building.fetch_add(plans.len(), Ordering::SeqCst);
        builds.queue.extend(plans);
        let mut unsettled = 0;
        while let Some(recorded) = builds.next(self).await {
            let mut intake = self.lock_intake();
            for done in recorded? {
                if matches!(done.built, Built::Unsettled { .. }) {
                    unsettled += 1;
                }
                done.apply(&mut intake);
            }
        }
        Ok(unsettled)
    }
}

/// The `rescans_total` reason of a scheduled full scan: the start scan, a
/// polled watch's scan, or the periodic safety rescan of an evented one.
fn scan_reason(started: bool, mode: Mode) -> &'static str {
    match (started, mode) {
        (false, _) => "start",
        (true, Mode::Polling(_)) => "poll",
        (true, Mode::Events) => "periodic",
    }
}

/// What the store records of a built group, if anything.
fn record_of(built: &Built) -> Option<Record<'_>> {
    match built {
        Built::Object { object, spec, .. } => Some(Record {
            object,
            status: ObjectStatus::Pending,
            reason: None,
            has_uploads: Some(request::has_uploads(spec)),
        }),
        Built::LocalDead { object, reason } => Some(Record {
            object,
            status: ObjectStatus::Dead,
            reason: Some(reason),
            has_uploads: None,
        }),
        Built::Skipped { object } => Some(Record {
            object,
            status: ObjectStatus::Skipped,
            reason: Some(SKIPPED_REASON),
            has_uploads: None,
        }),
        Built::Unsettled { .. } | Built::Empty => None,
    }
}

/// Why an object whose blobs were all delivered already is not sent.
const SKIPPED_REASON: &str = "every blob was already delivered to this bucket";

/// Logs and counts one recorded build.
fn log_recorded(counters: &Counters, built: &Built) {
    match built {
        Built::Object {
            object: _,
            spec,
            bytes,
        } => {
            Counters::add(&counters.objects_enqueued, 1);
            info!(
                key_prefix = %spec.key_prefix,
                bucket = %spec.bucket,
                blobs = spec.blobs.len(),
                bytes,
                "queued"
            );
        }
        Built::LocalDead { object, reason } => {
            warn!(key_prefix = %object.key_prefix, bucket = %object.bucket, %reason, "not sent; kept as a dead letter");
            Counters::add(&counters.objects_dead, 1);
        }
        Built::Skipped { object } => {
            info!(key_prefix = %object.key_prefix, bucket = %object.bucket, "every blob already delivered; skipped");
            Counters::add(&counters.objects_skipped, 1);
        }
        Built::Unsettled { .. } | Built::Empty => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    #[test]
    fn a_write_waiting_for_the_disk_shows_as_blocked_until_it_lands() {
        let dir = tempfile::tempdir().unwrap();
        let handle = StoreHandle::new(Store::open(dir.path()).unwrap());
        let full = Arc::new(AtomicBool::new(true));
        let writer = {
            let (handle, full) = (handle.clone(), Arc::clone(&full));
            std::thread::spawn(move || {
                handle.write(|store| {
                    if full.load(Ordering::SeqCst) {
                        return Err(StoreError::Io {
                            path: store.path().to_path_buf(),
                            source: std::io::ErrorKind::StorageFull.into(),
                        });
                    }
                    store.set_meta("written", "yes")
                })
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !handle.is_blocked() {
            assert!(Instant::now() < deadline, "never blocked");
            std::thread::sleep(Duration::from_millis(5));
        }
        full.store(false, Ordering::SeqCst);
        writer.join().unwrap().unwrap();
        assert!(!handle.is_blocked());
        assert_eq!(
            handle.lock().meta("written").unwrap().as_deref(),
            Some("yes")
        );
    }

    #[rstest::rstest]
    #[case(false, Mode::Events, "start")]
    #[case(false, Mode::Polling(Duration::from_secs(2)), "start")]
    #[case(true, Mode::Events, "periodic")]
    #[case(true, Mode::Polling(Duration::from_secs(2)), "poll")]
    fn scheduled_scans_are_counted_by_reason(
        #[case] started: bool,
        #[case] mode: Mode,
        #[case] want: &str,
    ) {
        assert_eq!(scan_reason(started, mode), want);
    }
}
