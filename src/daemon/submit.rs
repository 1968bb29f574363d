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
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{StoreHandle, failpoint};
use crate::api::{ApiClient, parse_create_ack};
use crate::config::DialectSetting;
use crate::error::FatalError;
use crate::pipeline::retry::{self, Backoff, Context, Decision};
use crate::pipeline::{Dialect, ObjectSpec, request};
use crate::store::{OutboxItem, PAUSE_META_KEY, unix_now_ms};
use crate::telemetry::Counters;

/// Store key under which the dialect chosen by `auto` is remembered.
pub const DIALECT_META_KEY: &str = "dialect";

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
    /// Confirmed by a 2xx, now or in an earlier run (the store remembers).
    known: Option<Dialect>,
    /// Under probing: the dialect being tried after the first said "no such
    /// endpoint".
    trying: Option<Dialect>,
}

impl DialectState {
    /// The dialect to render in, and whether the answer is still a probe.
    fn current(&self) -> (Dialect, bool) {
        match (self.setting, self.known) {
            (DialectSetting::ObjectsCreate, _) => (Dialect::ObjectsCreate, false),
            (DialectSetting::Objects, _) => (Dialect::Objects, false),
            (DialectSetting::Auto, Some(known)) => (known, false),
            // The second dialect is the last resort: if it too says "no such
            // endpoint", that is a configuration problem, and a pause.
            (DialectSetting::Auto, None) => match self.trying {
                Some(trying) => (trying, false),
                None => (Dialect::ObjectsCreate, true),
            },
        }
    }
}

/// The dialect `plan` renders in: the configured one, or under `auto` the
/// one the store remembers, else the first `auto` tries.
pub fn planned_dialect(setting: DialectSetting, remembered: Option<Dialect>) -> Dialect {
    DialectState {
        setting,
        known: remembered,
        trying: None,
    }
    .current()
    .0
}

/// Why and until when all submissions are held.
#[derive(Debug, Clone)]
pub struct Pause {
    pub until: Instant,
    pub reason: String,
    /// When the pause was last logged: an operator hears of it once a
    /// minute, not once per probe.
    logged_at: Instant,
}

/// How often a pause that goes on is logged again.
const PAUSE_LOG_EVERY: Duration = Duration::from_secs(60);

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
                trying: None,
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
                    failpoint::hit(failpoint::AFTER_RESPONSE);
                    let ack = parse_create_ack(response.body());
                    let id = item.id;
                    let (object_id, task_id) = (ack.object_id.clone(), ack.task_id.clone());
                    // The delivery is recorded first: it is what promise 2
                    // and 3 rest on; the dialect is a convenience.
                    self.store
                        .run(move |store| {
                            store.mark_delivered(id, object_id.as_deref(), task_id.as_deref())
                        })
                        .await?;
                    failpoint::hit(failpoint::AFTER_RECORD);
                    let unconfirmed = {
                        let state = self.lock_dialect();
                        state.setting == DialectSetting::Auto && state.known.is_none()
                    };
                    if unconfirmed {
                        self.remember_dialect(dialect).await?;
                    }
                    self.clear_pause().await?;
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
                    // Tried in memory only; the choice is stored once the
                    // other dialect has answered 2xx, so a wrong base_url
                    // cannot pin a dialect for good.
                    let mut state = self.lock_dialect();
                    if state.trying.is_none() {
                        state.trying = Some(Dialect::Objects);
                        info!(
                            from = dialect.as_str(),
                            to = Dialect::Objects.as_str(),
                            %reason,
                            "the API has no objects/create endpoint; trying the other dialect"
                        );
                    }
                }
                Decision::WrongDialect { reason } | Decision::Pause { reason } => {
                    self.set_pause(&reason).await?;
                    let next = unix_now_ms() + millis(self.backoff.max());
                    let id = item.id;
                    self.store
                        .run(move |store| store.defer(id, next, &reason))
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
                    let next = unix_now_ms() + millis(after);
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

    /// Holds every submission for `retry.max`, and tells the operator (the
    /// log, at most once a minute, and `status` through the store).
    async fn set_pause(&self, reason: &str) -> Result<(), FatalError> {
        let now = Instant::now();
        let changed = {
            let mut pause = self.pause.lock().expect("pause lock poisoned");
            let previous = pause.take();
            let changed = previous.as_ref().is_none_or(|p| p.reason != reason);
            let due = previous
                .as_ref()
                .is_none_or(|p| now.saturating_duration_since(p.logged_at) >= PAUSE_LOG_EVERY);
            if changed || due {
                warn!(
                    %reason,
                    retry_in_s = self.backoff.max().as_secs(),
                    "submissions paused; nothing is dropped, they resume on their own once fixed"
                );
            }
            *pause = Some(Pause {
                until: now + self.backoff.max(),
                reason: reason.to_owned(),
                logged_at: match previous {
                    Some(p) if !(changed || due) => p.logged_at,
                    _ => now,
                },
            });
            changed
        };
        if changed {
            let reason = reason.to_owned();
            self.store
                .run(move |store| store.set_meta(PAUSE_META_KEY, &reason))
                .await?;
        }
        Ok(())
    }

    async fn clear_pause(&self) -> Result<(), FatalError> {
        let previous = self.pause.lock().expect("pause lock poisoned").take();
        if let Some(previous) = previous {
            info!(reason = %previous.reason, "submissions resumed");
            self.store
                .run(|store| store.clear_meta(PAUSE_META_KEY))
                .await?;
        }
        Ok(())
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
