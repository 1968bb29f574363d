//! `mixpeek-mock`: a local emulator of Mixpeek's bucket-object API (SPEC §11).
//!
//! Role: stand in for `https://api.mixpeek.com` in the integration tests, in
//! `mixpeek-ingest demo` and in the benchmarks. It serves both create dialects
//! (`POST /v1/buckets/{bucket}/objects/create` and `POST /v1/buckets/{bucket}/objects`),
//! `GET /v1/buckets/{bucket}` with a configurable `bucket_schema`, and
//! `GET /v1/tasks/{task_id}`; it validates bodies as the real service does and
//! records every request and every accepted object for assertions.
//!
//! Misbehaviour on demand: a FIFO script of faults (status, `Retry-After`, delay,
//! body; or a dropped connection), a per-minute quota answering 429, an outage
//! (a status for every request, or a closed port), and the bearer key.
//!
//! ```text
//! MockServer ──control──► Shared (state.rs: buckets, script, quota, records)
//!     │                        ▲
//!     └─ own thread + runtime (server.rs) ─► connection ─► gate ─► handlers (routes.rs)
//!                                                           │         └─ validate.rs
//!                                                           └─ fault / outage / quota
//! ```
//!
//! Invariants: the emulator never uses the caller's runtime; every control call
//! has taken effect when it returns; records only grow, in arrival order.

mod envelope;
mod fault;
mod ratelimit;
mod routes;
mod server;
mod state;
mod timestamp;
mod validate;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

pub use fault::{Fault, Outage};
pub use state::{RecordedObject, RecordedRequest};

use fault::Scripted;
use state::{Shared, State};

/// Which create endpoints exist. A disabled one answers 405 with an empty body,
/// as a router does for a path that only has other methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialects {
    /// `POST /v1/buckets/{bucket}/objects/create` (the docs page's endpoint).
    pub objects_create: bool,
    /// `POST /v1/buckets/{bucket}/objects` (openapi.json's endpoint).
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
    /// API requests allowed per fixed 60 s window; over it, 429 with `Retry-After`.
    pub rate_limit_per_minute: Option<u32>,
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
}

impl Default for MockConfig {
    /// No key, no buckets, both dialects, no quota, `127.0.0.1:0`.
    fn default() -> Self {
        MockConfig {
            api_key: None,
            buckets: BTreeMap::new(),
            dialects: Dialects::default(),
            rate_limit_per_minute: None,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
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
        } = cfg;
        let shared = Arc::new(Shared::new(State::new(
            api_key,
            buckets,
            dialects,
            rate_limit_per_minute,
        )));
        let server = server::Server::start(listen, routes::router(Arc::clone(&shared)))?;
        Ok(MockServer { shared, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://IP:PORT`, to use as `[api] base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Every accepted create, in arrival order.
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

    /// Stops serving and joins the emulator's thread.
    pub fn shutdown(self) {
        drop(self);
    }
}
