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
//!
//! Dialect `objects` adds two paths:
//! - **Uploads.** An object with `upload` blobs first has `upload.rs` run
//!   each blob's presigned upload (create → PUT → confirm, resumable). A
//!   file that is not the hashed version any more ends the object as
//!   `skipped` (its new version is queued on its own); it is never confirmed.
//! - **Batches.** Objects without uploads go to `objects/batch` in groups
//!   (`pipeline::batch` decides the groups and reads the answers); each
//!   object gets its own outcome, recorded in one transaction.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::upload::{UploadEnd, Uploader};
use super::{StoreHandle, failpoint};
use crate::api::{ApiClient, Response, parse_create_ack};
use crate::config::DialectSetting;
use crate::error::FatalError;
use crate::pipeline::batch::{self, Verdict};
use crate::pipeline::retry::{self, Backoff, Context, Decision};
use crate::pipeline::{BlobData, Dialect, ObjectSpec, request};
use crate::store::{Ack, OutboxItem, PAUSE_META_KEY, unix_now_ms};
use crate::telemetry::Counters;
use crate::transfer::Presigned;

/// Store key under which the dialect chosen by `auto` is remembered.
pub const DIALECT_META_KEY: &str = "dialect";

/// What one submission ended in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    Delivered,
    Retry,
    Dead,
    Paused,
    /// Its upload file changed or vanished: recorded as skipped, not sent.
    Superseded,
    /// Sent in a batch that was refused as a whole for other objects' sake:
    /// still due, to be sent again at once without them.
    Again,
}

/// A due object with its stored request read.
#[derive(Debug)]
pub struct Due {
    pub item: OutboxItem,
    /// The stored request, or why it cannot be read.
    pub spec: Result<ObjectSpec, String>,
}

impl Due {
    pub fn new(item: OutboxItem) -> Due {
        let spec = serde_json::from_str(&item.spec_json)
            .map_err(|err| format!("stored request is unreadable: {err}"));
        Due { item, spec }
    }
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
    /// Under probing: the API answered "no such endpoint" to an upload, so
    /// new objects are built without the upload flow.
    no_uploads: bool,
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
        no_uploads: false,
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
    uploader: Uploader,
    store: StoreHandle,
    backoff: Backoff,
    auto_process: bool,
    counters: Arc<Counters>,
    dialect: Mutex<DialectState>,
    pause: Mutex<Option<Pause>>,
    /// Objects of a batch refused as a whole that named no culprit: each
    /// goes alone next time, to get its own verdict.
    alone: Mutex<HashSet<i64>>,
    /// The batch endpoint answered "no such endpoint": objects go one by one.
    no_batch_endpoint: AtomicBool,
}

/// What the engine passes to [`Submitter::new`].
pub struct SubmitterSettings {
    pub backoff: Backoff,
    pub setting: DialectSetting,
    pub remembered: Option<Dialect>,
    pub auto_process: bool,
    pub max_in_flight: usize,
}

impl Submitter {
    pub fn new(
        client: ApiClient,
        presigned: Presigned,
        store: StoreHandle,
        settings: SubmitterSettings,
        counters: Arc<Counters>,
    ) -> Submitter {
        let uploader = Uploader::new(
            client.clone(),
            presigned,
            store.clone(),
            settings.backoff,
            Arc::clone(&counters),
            settings.max_in_flight,
        );
        Submitter {
            client,
            uploader,
            store,
            backoff: settings.backoff,
            auto_process: settings.auto_process,
            counters,
            dialect: Mutex::new(DialectState {
                setting: settings.setting,
                known: settings.remembered,
                trying: None,
                no_uploads: false,
            }),
            pause: Mutex::new(None),
            alone: Mutex::new(HashSet::new()),
            no_batch_endpoint: AtomicBool::new(false),
        }
    }

    /// The dialect requests are rendered in right now.
    pub fn dialect(&self) -> Dialect {
        self.lock_dialect().current().0
    }

    /// Whether the presigned upload flow may be planned for new objects: the
    /// dialect is `objects`, or `auto` has not settled on `objects-create`
    /// (an object with uploads is sent in dialect `objects` whatever `auto`
    /// is probing).
    pub fn dialect_has_upload(&self) -> bool {
        let state = self.lock_dialect();
        match (state.setting, state.known) {
            (DialectSetting::ObjectsCreate, _) => false,
            (DialectSetting::Objects, _) => true,
            (DialectSetting::Auto, known) => {
                known != Some(Dialect::ObjectsCreate) && !state.no_uploads
            }
        }
    }

    /// Whether `due` may travel in a batch now: dialect `objects` confirmed,
    /// the batch endpoint exists, no uploads to run first, not singled out.
    pub fn batchable(&self, due: &Due) -> bool {
        let Ok(spec) = &due.spec else { return false };
        let (dialect, probing) = self.lock_dialect().current();
        dialect == Dialect::Objects
            && !probing
            && !self.no_batch_endpoint.load(Ordering::Relaxed)
            && !request::has_uploads(spec)
            && !self.lock_alone().contains(&due.item.id)
    }

    /// Whether objects go in batches now (dialect `objects` confirmed and a
    /// batch endpoint): a partial batch may then wait for more.
    pub fn batching(&self) -> bool {
        let (dialect, probing) = self.lock_dialect().current();
        dialect == Dialect::Objects && !probing && !self.no_batch_endpoint.load(Ordering::Relaxed)
    }

    /// The object is to be sent on its own next time (see `alone`).
    pub fn goes_alone(&self, id: i64) -> bool {
        self.lock_alone().contains(&id)
    }

    fn lock_alone(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.alone.lock().expect("alone lock poisoned")
    }

    /// A presigned PUT is under way (bounded by its own timeout, which
    /// grows with the file: movement, for the stuck check).
    pub fn transferring(&self) -> bool {
        self.uploader.transferring()
    }

    /// The pause in force, if any.
    pub fn pause(&self) -> Option<Pause> {
        let pause = self.pause.lock().expect("pause lock poisoned").clone();
        pause.filter(|p| p.until > Instant::now())
    }

    fn lock_dialect(&self) -> std::sync::MutexGuard<'_, DialectState> {
        self.dialect.lock().expect("dialect lock poisoned")
    }

    /// Sends one item (after its uploads, if it has any) and records the
    /// outcome. Fails only on a store error.
    pub async fn submit(&self, due: Due) -> Result<Submitted, FatalError> {
        let Due { item, spec } = due;
        self.lock_alone().remove(&item.id);
        let mut spec = match spec {
            Ok(spec) => spec,
            Err(reason) => return self.dead(&item, reason).await,
        };
        let uploads = request::has_uploads(&spec);
        if uploads {
            if !self.dialect_has_upload() {
                // Built while `auto` had not settled; the API turned out to
                // have objects/create only. `retry` rebuilds it from the
                // files once a setting gives its large files another way.
                let reason = "the object has files for the presigned upload flow, which \
                     dialect objects-create does not have; raise inline_max_bytes or set \
                     url_template, then `mixpeek-ingest retry` rebuilds it from the files"
                    .to_owned();
                return self.unsendable(&item, reason).await;
            }
            if let Some(outcome) = self.run_uploads(&item, &mut spec).await? {
                return Ok(outcome);
            }
        }
        loop {
            let (dialect, probing) = if uploads {
                // Only dialect `objects` has upload ids.
                (Dialect::Objects, false)
            } else {
                self.lock_dialect().current()
            };
            let request = request::render(&spec, dialect, self.auto_process);
            let response = self.client.send(&request).await;
            let ctx = Context {
                attempt: item.attempts,
                probing_dialect: probing,
            };
            let decision = self.classify(&response, &ctx);
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
                    self.confirmed(dialect).await?;
                    self.log_delivered(&spec, ack.object_id.as_deref(), ack.task_id.as_deref());
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
                other => return self.settle_failure(&item, &spec.key_prefix, other).await,
            }
        }
    }

    /// Sends `items` (due objects of `bucket`, each [`Submitter::batchable`])
    /// in one batch create and records each object's outcome. Returns the
    /// outcome per object id.
    pub async fn submit_batch(
        &self,
        bucket: &str,
        items: Vec<Due>,
    ) -> Result<Vec<(i64, Submitted)>, FatalError> {
        let mut specs = Vec::with_capacity(items.len());
        let mut outboxed = Vec::with_capacity(items.len());
        let mut outcomes = Vec::with_capacity(items.len());
        for due in items {
            match due.spec {
                Ok(spec) => {
                    specs.push(spec);
                    outboxed.push(due.item);
                }
                // `batchable` keeps these out; should one slip in, it is
                // judged on its own rather than spoil the batch.
                Err(reason) => outcomes.push((due.item.id, self.dead(&due.item, reason).await?)),
            }
        }
        if outboxed.is_empty() {
            return Ok(outcomes);
        }
        let request = request::render_batch(bucket, &specs, self.auto_process);
        let response = self.client.send(&request).await;
        let ctx = Context {
            attempt: outboxed.iter().map(|i| i.attempts).min().unwrap_or(0),
            // A missing batch route answers like a missing dialect: 404
            // without an envelope, or 405.
            probing_dialect: true,
        };
        match self.classify(&response, &ctx) {
            Decision::Success => {
                failpoint::hit(failpoint::AFTER_RESPONSE);
                let key_prefixes: Vec<&str> = specs.iter().map(|s| s.key_prefix.as_str()).collect();
                let verdicts = batch::verdicts(response.body(), &key_prefixes);
                let acks: Vec<Ack> = outboxed
                    .iter()
                    .zip(&verdicts)
                    .filter_map(|(item, verdict)| match verdict {
                        Verdict::Delivered { object_id, task_id } => Some(Ack {
                            id: item.id,
                            server_object_id: object_id.clone(),
                            task_id: task_id.clone(),
                        }),
                        _ => None,
                    })
                    .collect();
                let delivered = acks.len();
                self.store
                    .run(move |store| store.mark_delivered_many(&acks))
                    .await?;
                failpoint::hit(failpoint::AFTER_RECORD);
                if delivered > 0 {
                    self.confirmed(Dialect::Objects).await?;
                }
                for ((item, spec), verdict) in outboxed.iter().zip(&specs).zip(verdicts) {
                    let outcome = match verdict {
                        Verdict::Delivered { object_id, task_id } => {
                            self.log_delivered(spec, object_id.as_deref(), task_id.as_deref());
                            Submitted::Delivered
                        }
                        Verdict::Retry { reason } => {
                            let after = self.backoff.delay(item.attempts, &mut rand::rng());
                            let decision = Decision::Retry { after, reason };
                            self.settle_failure(item, &spec.key_prefix, decision)
                                .await?
                        }
                        Verdict::DeadLetter { reason } => self.dead(item, reason).await?,
                    };
                    outcomes.push((item.id, outcome));
                }
            }
            Decision::WrongDialect { reason } => {
                // 404 without an envelope or 405 on the batch path: this API
                // has single creates only. Nothing was created; the objects
                // stay due and go one by one.
                if !self.no_batch_endpoint.swap(true, Ordering::Relaxed) {
                    info!(%reason, "the API has no objects/batch endpoint; sending objects one by one");
                }
                outcomes.extend(outboxed.iter().map(|i| (i.id, Submitted::Again)));
            }
            Decision::DeadLetter { reason } => {
                // The batch as a whole was refused. The objects it names are
                // dead letters; the rest were not judged and go again.
                let culprits = batch::refused_objects(response.body());
                if culprits.is_empty() {
                    debug!(%reason, objects = outboxed.len(), "batch refused as a whole; sending its objects one by one");
                    self.lock_alone().extend(outboxed.iter().map(|i| i.id));
                }
                for (index, item) in outboxed.iter().enumerate() {
                    let outcome = match culprits.get(&index) {
                        Some(message) => self.dead(item, message.clone()).await?,
                        None => Submitted::Again,
                    };
                    outcomes.push((item.id, outcome));
                }
            }
            other => {
                let now = unix_now_ms();
                for (item, spec) in outboxed.iter().zip(&specs) {
                    let outcome = self
                        .settle_failure_at(item, &spec.key_prefix, other.clone(), now)
                        .await?;
                    outcomes.push((item.id, outcome));
                }
            }
        }
        Ok(outcomes)
    }

    fn classify(&self, response: &Response, ctx: &Context) -> Decision {
        let mut rng = rand::rng();
        retry::classify(&response.outcome(), ctx, &self.backoff, &mut rng)
    }

    /// After a 2xx in `dialect`: remember the dialect `auto` found, and end
    /// a pause.
    async fn confirmed(&self, dialect: Dialect) -> Result<(), FatalError> {
        let unconfirmed = {
            let state = self.lock_dialect();
            state.setting == DialectSetting::Auto && state.known.is_none()
        };
        if unconfirmed {
            self.remember_dialect(dialect).await?;
        }
        self.clear_pause().await
    }

    fn log_delivered(&self, spec: &ObjectSpec, object_id: Option<&str>, task_id: Option<&str>) {
        Counters::add(&self.counters.objects_delivered, 1);
        let bytes: u64 = spec.blobs.iter().map(blob_size).sum();
        info!(
            key_prefix = %spec.key_prefix,
            bucket = %spec.bucket,
            blobs = spec.blobs.len(),
            bytes,
            object_id = object_id.unwrap_or("-"),
            task_id = task_id.unwrap_or("-"),
            "delivered"
        );
    }

    /// Records a failed attempt: retry later, dead letter, or pause.
    async fn settle_failure(
        &self,
        item: &OutboxItem,
        key_prefix: &str,
        decision: Decision,
    ) -> Result<Submitted, FatalError> {
        self.settle_failure_at(item, key_prefix, decision, unix_now_ms())
            .await
    }

    /// [`Submitter::settle_failure`] with the retry time counted from `now`,
    /// so the objects of one batch come due again together.
    async fn settle_failure_at(
        &self,
        item: &OutboxItem,
        key_prefix: &str,
        decision: Decision,
        now: i64,
    ) -> Result<Submitted, FatalError> {
        match decision {
            Decision::Success => unreachable!("success is not a failure"),
            Decision::WrongDialect { reason } | Decision::Pause { reason } => {
                self.set_pause(&reason).await?;
                let next = now + millis(self.backoff.max());
                let id = item.id;
                self.store
                    .run(move |store| store.defer(id, next, &reason))
                    .await?;
                Ok(Submitted::Paused)
            }
            Decision::Retry { after, reason } => {
                Counters::add(&self.counters.retries, 1);
                warn!(
                    %key_prefix,
                    bucket = %item.bucket,
                    attempt = item.attempts + 1,
                    retry_in_ms = millis(after),
                    %reason,
                    "will retry"
                );
                let next = now + millis(after);
                let id = item.id;
                self.store
                    .run(move |store| store.mark_retry(id, next, &reason))
                    .await?;
                Ok(Submitted::Retry)
            }
            Decision::DeadLetter { reason } => self.dead(item, reason).await,
        }
    }

    /// Runs the uploads of `spec`'s `upload` blobs and fills in their ids.
    /// `Some(outcome)` when the object cannot be created now (recorded
    /// already).
    async fn run_uploads(
        &self,
        item: &OutboxItem,
        spec: &mut ObjectSpec,
    ) -> Result<Option<Submitted>, FatalError> {
        let id = item.id;
        let probing = self.lock_dialect().current().1;
        let worst = self.uploader.upload_all(item, spec, probing).await?;
        match worst {
            None => Ok(None),
            Some(UploadEnd::Superseded(reason)) => {
                info!(key_prefix = %spec.key_prefix, bucket = %spec.bucket, %reason, "not sent: a file changed after it was queued; its new version is queued on its own");
                self.store
                    .run(move |store| store.mark_superseded(id, &reason))
                    .await?;
                Counters::add(&self.counters.objects_skipped, 1);
                Ok(Some(Submitted::Superseded))
            }
            Some(UploadEnd::Failed(Decision::WrongDialect { reason })) => {
                self.lock_dialect().no_uploads = true;
                info!(%reason, "the API has no presigned uploads; large files take url_template or stay dead letters");
                let reason = format!(
                    "the API has no presigned upload endpoint ({reason}); raise inline_max_bytes \
                     or set url_template, then `mixpeek-ingest retry` rebuilds it from the files"
                );
                self.unsendable(item, reason).await.map(Some)
            }
            Some(UploadEnd::Failed(decision)) => self
                .settle_failure(item, &spec.key_prefix, decision)
                .await
                .map(Some),
            Some(UploadEnd::Ready(_)) => unreachable!("a ready upload is never the worst"),
        }
    }

    /// A dead letter whose stored request can never be sent as it is:
    /// `retry` rebuilds it from the files.
    async fn unsendable(&self, item: &OutboxItem, reason: String) -> Result<Submitted, FatalError> {
        warn!(
            key_prefix = %item.key_prefix,
            bucket = %item.bucket,
            %reason,
            "cannot be sent as built; kept as a dead letter"
        );
        let id = item.id;
        self.store
            .run(move |store| store.mark_dead_unsendable(id, &reason))
            .await?;
        Counters::add(&self.counters.objects_dead, 1);
        Ok(Submitted::Dead)
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
fn blob_size(blob: &crate::pipeline::BlobSpec) -> u64 {
    match &blob.data {
        BlobData::Inline { base64, .. } => base64.len() as u64 / 4 * 3,
        BlobData::Text { text } => text.len() as u64,
        BlobData::Json { value } => value.to_string().len() as u64,
        BlobData::Url { .. } => 0,
        BlobData::Upload { file, .. } => file.size,
    }
}
