//! `mixpeek-mock`: a local emulator of Mixpeek's bucket-object API (SPEC §11).
//!
//! Role: stand in for `https://api.mixpeek.com` in the integration tests, in
//! `mixpeek-ingest demo` and in the benchmarks. It serves both create dialects
//! (`POST /v1/buckets/{bucket}/objects/create` and `POST /v1/buckets/{bucket}/objects`),
//! batch create (`POST /v1/buckets/{bucket}/objects/batch`, ≤100 objects,
//! partial success), presigned uploads (`POST /v1/buckets/{bucket}/uploads`, a
//! streamed `PUT` to a presigned URL on the emulator itself, `POST
//! .../uploads/{upload_id}/confirm`, `GET .../uploads/{upload_id}`),
//! `GET /v1/buckets/{bucket}` with a configurable `bucket_schema`, and
//! `GET /v1/tasks/{task_id}` with tasks moving PENDING → PROCESSING → outcome
//! over time. It validates bodies as the real service does, against the
//! project's own JSON Schemas of every request body the daemon sends
//! ([`contract`], `mock/contract/*.schema.json`), and records every request
//! (with its body size), accepted object and presigned PUT for assertions.
//!
//! Misbehaviour on demand: a FIFO script of faults (status, `Retry-After`, delay,
//! body; or a dropped connection), a second script for presigned PUTs (S3-like
//! errors, or a connection cut after N bytes), expiring presigned URLs, a
//! per-minute quota answering 429 (fixed window, see `ratelimit.rs`), an outage
//! (a status for every request, or a closed port), the bearer key, and scripted
//! task outcomes.
//!
//! ```text
//! MockServer ──control──► Shared (state.rs: buckets, scripts, quota, uploads, tasks, records)
//!     │                        ▲
//!     └─ own thread + runtime (server.rs) ─► connection ─► gate ─► handlers (routes.rs, upload_routes.rs)
//!                                                           │         └─ validate.rs, uploads.rs, tasks.rs
//!                                                           │               └─ contract.rs (every body's shape)
//!                                                           └─ fault / outage / quota
//! ```
//!
//! Invariants: the emulator never uses the caller's runtime; every control call
//! has taken effect when it returns; records only grow, in arrival order;
//! presigned PUT bodies are streamed and hashed, never held in memory.

pub mod contract;
mod envelope;
mod fault;
mod ratelimit;
mod routes;
mod server;
mod state;
mod tasks;
mod timestamp;
mod upload_routes;
mod uploads;
mod validate;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use fault::{Fault, Outage};
pub use ratelimit::RateLimitStats;
pub use state::{BatchSlot, RecordedObject, RecordedRequest};
pub use tasks::{RecordedTask, TaskStatus, TaskTimeline};
pub use uploads::RecordedUpload;

use fault::{PresignedScripted, Scripted};
use state::{Settings, Shared, State};

/// What a batch create does with an object whose body does not have the
/// `CreateObjectRequest` shape (a missing `property`, an upper-case `type`, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BatchShapeErrors {
    /// The whole batch is refused with FastAPI's 422 `detail` (locations
    /// `["body", "objects", i, ...]`), as a service validating
    /// `CreateObjectsBatchRequest` with pydantic does. Schema mismatches and
    /// unusable upload ids still fail per object.
    #[default]
    RejectBatch,
    /// The object alone fails, listed in `failed[]` with `ValidationError`.
    PerObject,
}

/// Which create endpoints exist. A disabled one answers 405 with an empty body,
/// as a router does for a path that only has other methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialects {
    /// `POST /v1/buckets/{bucket}/objects/create` (the docs page's endpoint).
    pub objects_create: bool,
    /// `POST /v1/buckets/{bucket}/objects` (openapi.json's endpoint), and with
    /// it the rest of that dialect: `objects/batch` and the `uploads` routes.
    /// Presigned PUTs are storage, not API, and stay available.
    pub objects: bool,
}

impl Default for Dialects {
    fn default() -> Self {
        Dialects {
            objects_create: true,
            objects: true,
        }
    }
}

/// How to start a [`MockServer`].
#[derive(Debug, Clone, PartialEq)]
pub struct MockConfig {
    /// When set, requests must carry `Authorization: Bearer <key>` or get 401.
    pub api_key: Option<String>,
    /// Bucket name → `bucket_schema` (`{"properties": {...}}`). Other buckets get
    /// 404 `NotFoundError`.
    pub buckets: BTreeMap<String, Value>,
    pub dialects: Dialects,
    /// API requests allowed per fixed 60 s window; over it, 429 with `Retry-After`
    /// (counted: every `/v1/...` request not answered by an outage or a
    /// scripted fault; never presigned PUTs).
    pub rate_limit_per_minute: Option<u32>,
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// How new tasks evolve (default: `COMPLETED` at once).
    pub task_timeline: TaskTimeline,
    /// How batch creates treat malformed objects (default: reject the batch).
    pub batch_shape_errors: BatchShapeErrors,
}

impl Default for MockConfig {
    /// No key, no buckets, both dialects, no quota, `127.0.0.1:0`, tasks
    /// complete at once, malformed batch objects reject their batch.
    fn default() -> Self {
        MockConfig {
            api_key: None,
            buckets: BTreeMap::new(),
            dialects: Dialects::default(),
            rate_limit_per_minute: None,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            task_timeline: TaskTimeline::default(),
            batch_shape_errors: BatchShapeErrors::default(),
        }
    }
}

impl MockConfig {
    /// Adds bucket `name` with an empty schema (any property is accepted).
    #[must_use]
    pub fn with_bucket(self, name: impl Into<String>) -> Self {
        self.with_bucket_schema(name, json!({ "properties": {} }))
    }

    /// Adds bucket `name` with `schema` as its `bucket_schema`.
    #[must_use]
    pub fn with_bucket_schema(mut self, name: impl Into<String>, schema: Value) -> Self {
        self.buckets.insert(name.into(), schema);
        self
    }

    #[must_use]
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    #[must_use]
    pub fn with_dialects(mut self, dialects: Dialects) -> Self {
        self.dialects = dialects;
        self
    }

    #[must_use]
    pub fn with_rate_limit(mut self, per_minute: u32) -> Self {
        self.rate_limit_per_minute = Some(per_minute);
        self
    }

    #[must_use]
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    #[must_use]
    pub fn with_task_timeline(mut self, timeline: TaskTimeline) -> Self {
        self.task_timeline = timeline;
        self
    }

    #[must_use]
    pub fn with_batch_shape_errors(mut self, mode: BatchShapeErrors) -> Self {
        self.batch_shape_errors = mode;
        self
    }
}

/// A running emulator. Dropping it (or [`MockServer::shutdown`]) stops it.
pub struct MockServer {
    shared: Arc<Shared>,
    server: server::Server,
}

impl std::fmt::Debug for MockServer {
    // The state holds every recorded body and the key: show only where it listens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr())
            .finish_non_exhaustive()
    }
}

impl MockServer {
    /// Binds `cfg.listen` and serves from a thread of its own (with its own tokio
    /// runtime); returns once the port accepts connections. Blocking: call it from
    /// sync code, or from async code that may block briefly.
    pub fn start(cfg: MockConfig) -> std::io::Result<MockServer> {
        let MockConfig {
            api_key,
            buckets,
            dialects,
            rate_limit_per_minute,
            listen,
            task_timeline,
            batch_shape_errors,
        } = cfg;
        let shared = Arc::new(Shared::new(State::new(Settings {
            api_key,
            buckets,
            dialects,
            rate_limit_per_minute,
            task_timeline,
            batch_shape_errors,
        })));
        let server = server::Server::start(listen, routes::router(Arc::clone(&shared)))?;
        let self_url = format!("http://{}", server.addr());
        shared.update(|s| s.self_url = self_url);
        Ok(MockServer { shared, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://IP:PORT`, to use as `[api] base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Every accepted object, in arrival order (single creates, batch members,
    /// objects created on upload confirmation).
    pub fn objects(&self) -> Vec<RecordedObject> {
        self.shared.lock().objects.clone()
    }

    /// Every request received, in arrival order, with the status answered.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Queues a scripted answer for the next API request (FIFO, one each).
    pub fn push_fault(&self, fault: Fault) {
        self.shared
            .update(|s| s.script.push_back(Scripted::Answer(fault)));
    }

    /// Scripted faults and dropped connections not yet consumed.
    pub fn pending_faults(&self) -> usize {
        self.shared.lock().script.len()
    }

    /// Queues a dropped connection: the next API request (in FIFO order with
    /// [`MockServer::push_fault`]) is read, then after `delay` its connection is
    /// closed without an answer. It is recorded with status 0.
    pub fn push_drop_connection(&self, delay: Option<Duration>) {
        self.shared
            .update(|s| s.script.push_back(Scripted::DropConnection { delay }));
    }

    /// Starts (`Some`) or ends (`None`) an outage. With [`Outage::ClosedPort`] the
    /// port is closed when this returns; leaving it reopens the same port.
    pub fn set_outage(&self, outage: Option<Outage>) {
        let listening = outage != Some(Outage::ClosedPort);
        self.shared.update(|s| s.outage = outage);
        if let Err(e) = self.server.set_listening(listening) {
            tracing::error!(error = %e, listening, addr = %self.addr(), "could not change the emulator's port");
        }
    }

    pub fn set_api_key(&self, key: Option<String>) {
        self.shared.update(|s| s.api_key = key);
    }

    pub fn set_dialects(&self, dialects: Dialects) {
        self.shared.update(|s| s.dialects = dialects);
    }

    /// Sets the `bucket_schema` of `bucket`, creating the bucket if needed.
    pub fn set_bucket_schema(&self, bucket: &str, schema: Value) {
        self.shared.update(|s| s.set_bucket_schema(bucket, schema));
    }

    /// Removes `bucket`: its requests then get 404.
    pub fn remove_bucket(&self, bucket: &str) {
        self.shared.update(|s| {
            s.buckets.remove(bucket);
        });
    }

    /// Waits until at least `n` objects were accepted; false on timeout.
    pub fn wait_for_objects(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |s| s.objects.len() >= n)
    }

    /// Waits until at least `n` requests were answered; false on timeout.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |s| s.requests.len() >= n)
    }

    /// Every presigned PUT received, in arrival order, once it ended (stored,
    /// refused or cut).
    pub fn uploads(&self) -> Vec<RecordedUpload> {
        self.shared.lock().upload_log.clone()
    }

    /// Waits until at least `n` presigned PUTs ended; false on timeout.
    pub fn wait_for_uploads(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_until(timeout, |s| s.upload_log.len() >= n)
    }

    /// Body bytes received by presigned PUTs so far, counted as they arrive
    /// (also while a PUT is in progress).
    pub fn presigned_bytes_received(&self) -> u64 {
        self.shared.presigned_bytes.load(Ordering::Relaxed)
    }

    /// Expires every presigned URL issued so far: PUTs to them answer 403
    /// `AccessDenied` "Request has expired" (S3's XML body). URLs issued
    /// afterwards (a new `POST .../uploads`) work.
    pub fn expire_presigned_urls(&self) {
        self.shared.update(|s| {
            for upload in s.uploads.values_mut() {
                upload.url_revoked = true;
            }
        });
    }

    /// Queues a scripted answer for the next presigned PUT (FIFO, separate from
    /// [`MockServer::push_fault`]); its body is read and discarded, nothing is
    /// stored. A fault without a body answers S3's XML error for its status
    /// (503 `SlowDown`, 500 `InternalError`, ...).
    pub fn push_presigned_fault(&self, fault: Fault) {
        self.shared.update(|s| {
            s.presigned_script
                .push_back(PresignedScripted::Answer(fault))
        });
    }

    /// Queues a cut connection for the next presigned PUT: once at least
    /// `after_bytes` body bytes arrived (whole chunks), the connection is closed
    /// without an answer and nothing is stored. The PUT is recorded with status 0.
    pub fn push_presigned_drop(&self, after_bytes: u64) {
        self.shared.update(|s| {
            s.presigned_script
                .push_back(PresignedScripted::DropAfter(after_bytes))
        });
    }

    /// Every task, ordered by creation, with the status a GET would answer now.
    pub fn tasks(&self) -> Vec<RecordedTask> {
        self.shared.lock().task_snapshots(Instant::now())
    }

    /// Sets the timeline of tasks created from now on.
    pub fn set_task_timeline(&self, timeline: TaskTimeline) {
        self.shared.update(|s| s.task_timeline = timeline);
    }

    /// Queues the outcome of the next task created (FIFO; each outcome is used
    /// by one task, replacing its timeline's outcome).
    pub fn push_task_outcome(&self, outcome: TaskStatus) {
        self.shared.update(|s| s.task_outcomes.push_back(outcome));
    }

    /// Sets the outcome of an existing task (shown once its timeline reaches
    /// it); false when no such task exists.
    pub fn set_task_outcome(&self, task_id: &str, outcome: TaskStatus) -> bool {
        self.shared.update(|s| match s.tasks.get_mut(task_id) {
            Some(task) => {
                task.timeline.outcome = outcome;
                true
            }
            None => false,
        })
    }

    /// Forgets a task, as Mixpeek does after its retention: GETs answer 404.
    /// False when no such task exists.
    pub fn forget_task(&self, task_id: &str) -> bool {
        self.shared.update(|s| s.tasks.remove(task_id).is_some())
    }

    /// Requests the quota stage admitted and refused (429) so far.
    pub fn rate_limit_stats(&self) -> RateLimitStats {
        self.shared.lock().quota
    }

    /// Replaces the per-minute quota (`None`: no limit); a new window starts
    /// with the next request. The counters of [`MockServer::rate_limit_stats`]
    /// carry on.
    pub fn set_rate_limit(&self, per_minute: Option<u32>) {
        self.shared
            .update(|s| s.limiter = per_minute.map(ratelimit::RateLimiter::new));
    }

    /// Stops serving and joins the emulator's thread.
    pub fn shutdown(self) {
        drop(self);
    }
}
