//! Submit: send one outbox item and record what became of it.
//!
//! The decision for every answer comes from `pipeline::retry::classify`; this
//! module carries it out: a 2xx is recorded as delivered in one transaction
//! before anything else happens (promise 4 hangs on that), a retry is written
//! back with its next attempt time, a permanent refusal becomes a dead letter
//! with the server's message, and a pause (bad key, missing bucket) holds every
//! submission until `retry.max` has passed, without blaming the object.
//!
//! Under `api.dialect = "auto"` the first create that answers "no such
//! endpoint" switches the dialect, logs it once, and remembers it in the store.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::StoreHandle;
use crate::api::{ApiClient, parse_create_ack};
use crate::config::DialectSetting;
use crate::error::FatalError;
use crate::pipeline::retry::{self, Backoff, Context, Decision};
use crate::pipeline::{Dialect, ObjectSpec, request};
use crate::store::OutboxItem;
use crate::telemetry::Counters;

/// Store key under which the dialect chosen by `auto` is remembered.
pub const DIALECT_META_KEY: &str = "dialect";

pub fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// What one submission ended in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    Delivered,
    Retry,
    Dead,
    Paused,
}

/// The dialect in use, and whether it is still being probed.
#[derive(Debug, Clone, Copy)]
struct DialectState {
    setting: DialectSetting,
    known: Option<Dialect>,
}

impl DialectState {
    fn current(&self) -> (Dialect, bool) {
        match (self.setting, self.known) {
            (DialectSetting::ObjectsCreate, _) => (Dialect::ObjectsCreate, false),
            (DialectSetting::Objects, _) => (Dialect::Objects, false),
            (DialectSetting::Auto, Some(known)) => (known, false),
            (DialectSetting::Auto, None) => (Dialect::ObjectsCreate, true),
        }
    }
}

/// Why and until when all submissions are held.
#[derive(Debug, Clone)]
pub struct Pause {
    pub until: Instant,
    pub reason: String,
}

pub struct Submitter {
    client: ApiClient,
    store: StoreHandle,
    backoff: Backoff,
    auto_process: bool,
    counters: Arc<Counters>,
    dialect: Mutex<DialectState>,
    pause: Mutex<Option<Pause>>,
}

impl Submitter {
    pub fn new(
        client: ApiClient,
        store: StoreHandle,
        backoff: Backoff,
        setting: DialectSetting,
        remembered: Option<Dialect>,
        auto_process: bool,
        counters: Arc<Counters>,
    ) -> Submitter {
        Submitter {
            client,
            store,
            backoff,
            auto_process,
            counters,
            dialect: Mutex::new(DialectState {
                setting,
                known: remembered,
            }),
            pause: Mutex::new(None),
        }
    }

    /// The dialect requests are rendered in right now.
    pub fn dialect(&self) -> Dialect {
        self.lock_dialect().current().0
    }

    /// Whether the presigned upload flow may be planned for new objects.
    pub fn dialect_has_upload(&self) -> bool {
        self.dialect().has_upload()
    }

    /// The pause in force, if any.
    pub fn pause(&self) -> Option<Pause> {
        let pause = self.pause.lock().expect("pause lock poisoned").clone();
        pause.filter(|p| p.until > Instant::now())
    }

    fn lock_dialect(&self) -> std::sync::MutexGuard<'_, DialectState> {
        self.dialect.lock().expect("dialect lock poisoned")
    }

    /// Sends one item and records the outcome. Fails only on a store error.
    pub async fn submit(&self, item: OutboxItem) -> Result<Submitted, FatalError> {
        let spec: ObjectSpec = match serde_json::from_str(&item.spec_json) {
            Ok(spec) => spec,
            Err(err) => {
                let reason = format!("stored request is unreadable: {err}");
                return self.dead(&item, reason).await;
            }
        };
        loop {
            let (dialect, probing) = self.lock_dialect().current();
            let request = request::render(&spec, dialect, self.auto_process);
            Counters::add(&self.counters.requests, 1);
            let response = self.client.send(&request).await;
            let ctx = Context {
                attempt: item.attempts,
                probing_dialect: probing,
            };
            let decision = {
                let mut rng = rand::rng();
                retry::classify(&response.outcome(), &ctx, &self.backoff, &mut rng)
            };
            match decision {
                Decision::Success => {
                    let ack = parse_create_ack(response.body());
                    if probing {
                        self.remember_dialect(dialect).await?;
                    }
                    let id = item.id;
                    let (object_id, task_id) = (ack.object_id.clone(), ack.task_id.clone());
                    self.store
                        .run(move |store| {
                            store.mark_delivered(id, object_id.as_deref(), task_id.as_deref())
                        })
                        .await?;
                    self.clear_pause();
                    Counters::add(&self.counters.objects_delivered, 1);
                    let bytes: usize = spec.blobs.iter().map(blob_size).sum();
                    info!(
                        key_prefix = %spec.key_prefix,
                        bucket = %spec.bucket,
                        blobs = spec.blobs.len(),
                        bytes,
                        object_id = ack.object_id.as_deref().unwrap_or("-"),
                        task_id = ack.task_id.as_deref().unwrap_or("-"),
                        "delivered"
                    );
                    return Ok(Submitted::Delivered);
                }
                Decision::WrongDialect { reason } if probing => {
                    info!(
                        from = dialect.as_str(),
                        to = Dialect::Objects.as_str(),
                        %reason,
                        "the API has no objects/create endpoint; switching dialect"
                    );
                    self.remember_dialect(Dialect::Objects).await?;
                }
                Decision::WrongDialect { reason } | Decision::Pause { reason } => {
                    self.set_pause(&reason);
                    let next = now_ms() + millis(self.backoff.max());
                    let id = item.id;
                    self.store
                        .run(move |store| store.mark_retry(id, next, &reason))
                        .await?;
                    return Ok(Submitted::Paused);
                }
                Decision::Retry { after, reason } => {
                    Counters::add(&self.counters.retries, 1);
                    warn!(
                        key_prefix = %spec.key_prefix,
                        bucket = %spec.bucket,
                        attempt = item.attempts + 1,
                        retry_in_ms = millis(after),
                        %reason,
                        "will retry"
                    );
                    let next = now_ms() + millis(after);
                    let id = item.id;
                    self.store
                        .run(move |store| store.mark_retry(id, next, &reason))
                        .await?;
                    return Ok(Submitted::Retry);
                }
                Decision::DeadLetter { reason } => return self.dead(&item, reason).await,
            }
        }
    }

    async fn dead(&self, item: &OutboxItem, reason: String) -> Result<Submitted, FatalError> {
        warn!(
            key_prefix = %item.key_prefix,
            bucket = %item.bucket,
            %reason,
            "refused for good; kept as a dead letter"
        );
        let id = item.id;
        self.store
            .run(move |store| store.mark_dead(id, &reason))
            .await?;
        Counters::add(&self.counters.objects_dead, 1);
        Ok(Submitted::Dead)
    }

    async fn remember_dialect(&self, dialect: Dialect) -> Result<(), FatalError> {
        self.lock_dialect().known = Some(dialect);
        self.store
            .run(move |store| store.set_meta(DIALECT_META_KEY, dialect.as_str()))
            .await?;
        Ok(())
    }

    fn set_pause(&self, reason: &str) {
        let until = Instant::now() + self.backoff.max();
        let mut pause = self.pause.lock().expect("pause lock poisoned");
        let fresh = pause.as_ref().is_none_or(|p| p.reason != reason);
        if fresh {
            warn!(
                %reason,
                retry_in_s = self.backoff.max().as_secs(),
                "submissions paused; nothing is dropped, they resume on their own once fixed"
            );
        }
        *pause = Some(Pause {
            until,
            reason: reason.to_owned(),
        });
    }

    fn clear_pause(&self) {
        let mut pause = self.pause.lock().expect("pause lock poisoned");
        if let Some(previous) = pause.take() {
            info!(reason = %previous.reason, "submissions resumed");
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Approximate payload size of a blob, for the delivery log line.
fn blob_size(blob: &crate::pipeline::BlobSpec) -> usize {
    use crate::pipeline::BlobData;
    match &blob.data {
        BlobData::Inline { base64, .. } => base64.len() / 4 * 3,
        BlobData::Text { text } => text.len(),
        BlobData::Json { value } => value.to_string().len(),
        BlobData::Url { .. } => 0,
    }
}
