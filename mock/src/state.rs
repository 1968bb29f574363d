//! The emulator's mutable state and the decisions taken under its lock.
//!
//! Role: hold buckets, the fault scripts, the outage, the quota, uploads,
//! tasks, and the record of requests, accepted objects and presigned PUTs;
//! decide, per request, whether a scripted or lasting failure answers it
//! ([`State::admit`]); register accepted objects ([`State::accept`],
//! [`State::accept_batch`]), uploads ([`State::create_upload`],
//! [`State::confirm_upload`]) and tasks.
//! Inputs: control calls from [`crate::MockServer`] and requests from the
//! handlers. Outputs: [`Admission`] decisions, ids, and snapshots of the record.
//! Invariants: `objects`, `requests` and `upload_log` only grow, in arrival
//! order; every change notifies the condition variable, so waiters re-check at
//! once; ids are unique per emulator and count from 1 (`obj_<n>`, `task_<n>`,
//! `btch_<n>`, `upl_<n as 16 digits>`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};

use crate::envelope::{default_envelope, envelope, not_found};
use crate::fault::{Outage, PresignedScripted, Scripted};
use crate::ratelimit::{RateLimitStats, RateLimiter, retry_after_secs};
use crate::tasks::{self, TaskRecord, TaskStatus, TaskTimeline};
use crate::uploads::{ConfirmRequest, RecordedUpload, UploadRecord, UploadRequest};
use crate::validate::{Dialect, ValidObject};
use crate::{BatchShapeErrors, Dialects};

/// One object the emulator accepted (answered 2xx), as it was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedObject {
    /// `"objects-create"` or `"objects"` (batch creates and objects created on
    /// upload confirmation are `"objects"`).
    pub dialect: String,
    /// The bucket named in the path.
    pub bucket: String,
    /// The request body, unchanged; for a batch, this object's entry of
    /// `objects[]`; for an object created on upload confirmation, the body the
    /// emulator made up (`{"blobs": [{"property", "type", "upload_id"}], …object_metadata}`).
    pub body: Value,
    /// The id the emulator gave the object (`obj_<n>`).
    pub object_id: String,
    /// The task id answered, if any (`task_<n>`).
    pub task_id: Option<String>,
    /// Where the object sat in a batch create; `None` for a single create.
    pub batch: Option<BatchSlot>,
    pub received_at: Instant,
}

/// The place of an object in a batch create (`POST .../objects/batch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSlot {
    /// `btch_<n>`, one per batch request that created at least one object.
    pub batch_id: String,
    /// 0-based index of the object in the request's `objects[]`.
    pub index: usize,
}

/// One HTTP request the emulator received, with the status it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path with the query string, e.g. `/v1/buckets/b/objects?auto_process=true`.
    pub path: String,
    /// Status answered; 0 when no answer was sent: a scripted dropped connection,
    /// a closed port, or a client that went away while its answer was delayed.
    pub status: u16,
    /// Headers in arrival order, names lower-case; values that are not UTF-8 are
    /// replaced lossily.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; `Null` when empty, not JSON, or a presigned PUT
    /// (whose bytes are streamed, never kept: see [`crate::RecordedUpload`]).
    pub body: Value,
    /// Body bytes received, as they came off the wire (after any transfer
    /// decoding): the whole JSON body of an API request (up to the point it
    /// was cut off, for one too large or broken), the bytes a presigned PUT
    /// delivered (also when refused or cut). For counting bytes sent per time
    /// window against a bandwidth cap.
    pub body_bytes: u64,
    pub received_at: Instant,
}

impl RecordedRequest {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A bucket the emulator knows.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    pub(crate) schema: Value,
    pub(crate) object_count: u64,
    pub(crate) created_at: SystemTime,
}

impl Bucket {
    fn new(schema: Value) -> Self {
        Bucket {
            schema,
            object_count: 0,
            created_at: SystemTime::now(),
        }
    }
}

/// What the gate does with a request before routing it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Admission {
    /// Route it normally.
    Pass,
    /// Answer this instead (fault, outage or quota).
    Answer {
        status: u16,
        retry_after: Option<String>,
        delay: Option<Duration>,
        body: Value,
    },
    /// Close the connection without an answer, after `delay`.
    Drop { delay: Option<Duration> },
}

/// Ids of an accepted object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Accepted {
    pub(crate) object_id: String,
    pub(crate) task_id: Option<String>,
    pub(crate) bucket_id: String,
}

/// Why an object's `upload_id` blob cannot be used: the status and envelope
/// of the answer (404 unknown upload, 400 upload not confirmed).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RefusedUpload {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

impl RefusedUpload {
    pub(crate) fn message(&self) -> String {
        self.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// The outcome of `POST .../uploads`, with a copy of the upload's record.
#[derive(Debug, Clone)]
pub(crate) enum UploadCreated {
    /// A new upload, waiting for its PUT.
    Fresh(UploadRecord),
    /// `skip_duplicates` with a `file_hash` already confirmed in the bucket:
    /// the existing upload.
    Duplicate(UploadRecord),
}

#[cfg(test)]
impl UploadCreated {
    pub(crate) fn upload_id(&self) -> &str {
        match self {
            UploadCreated::Fresh(u) | UploadCreated::Duplicate(u) => &u.upload_id,
        }
    }
}

/// Why a confirmation was refused.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ConfirmRefusal {
    /// No such upload in this bucket.
    UnknownUpload,
    /// The bucket disappeared meanwhile.
    UnknownBucket,
    /// The content does not match (answered 400 with this message).
    Mismatch(String),
}

/// Everything behind the emulator's lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) api_key: Option<String>,
    pub(crate) buckets: BTreeMap<String, Bucket>,
    pub(crate) dialects: Dialects,
    pub(crate) batch_shape_errors: BatchShapeErrors,
    pub(crate) limiter: Option<RateLimiter>,
    pub(crate) quota: RateLimitStats,
    pub(crate) outage: Option<Outage>,
    pub(crate) script: VecDeque<Scripted>,
    pub(crate) presigned_script: VecDeque<PresignedScripted>,
    pub(crate) objects: Vec<RecordedObject>,
    pub(crate) requests: Vec<RecordedRequest>,
    pub(crate) tasks: HashMap<String, TaskRecord>,
    /// Timeline given to new tasks.
    pub(crate) task_timeline: TaskTimeline,
    /// Outcomes for the next new tasks, FIFO, overriding the timeline's.
    pub(crate) task_outcomes: VecDeque<TaskStatus>,
    pub(crate) uploads: BTreeMap<String, UploadRecord>,
    pub(crate) upload_log: Vec<RecordedUpload>,
    /// `http://IP:PORT` the emulator listens on, for presigned URLs of
    /// requests without a `Host` header.
    pub(crate) self_url: String,
    next_object: u64,
    next_task: u64,
    next_batch: u64,
    next_upload: u64,
}

/// `bkt_<name>`, the id the emulator gives bucket `name`.
pub(crate) fn bucket_id(name: &str) -> String {
    format!("bkt_{name}")
}

/// What [`State::new`] needs from the configuration.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    pub(crate) api_key: Option<String>,
    pub(crate) buckets: BTreeMap<String, Value>,
    pub(crate) dialects: Dialects,
    pub(crate) rate_limit_per_minute: Option<u32>,
    pub(crate) task_timeline: TaskTimeline,
    pub(crate) batch_shape_errors: BatchShapeErrors,
}

impl State {
    pub(crate) fn new(settings: Settings) -> Self {
        State {
            api_key: settings.api_key,
            buckets: settings
                .buckets
                .into_iter()
                .map(|(name, schema)| (name, Bucket::new(schema)))
                .collect(),
            dialects: settings.dialects,
            batch_shape_errors: settings.batch_shape_errors,
            limiter: settings.rate_limit_per_minute.map(RateLimiter::new),
            quota: RateLimitStats::default(),
            outage: None,
            script: VecDeque::new(),
            presigned_script: VecDeque::new(),
            objects: Vec::new(),
            requests: Vec::new(),
            tasks: HashMap::new(),
            task_timeline: settings.task_timeline,
            task_outcomes: VecDeque::new(),
            uploads: BTreeMap::new(),
            upload_log: Vec::new(),
            self_url: "http://127.0.0.1".to_string(),
            next_object: 1,
            next_task: 1,
            next_batch: 1,
            next_upload: 1,
        }
    }

    /// Adds bucket `name` or replaces its schema, keeping its object count.
    pub(crate) fn set_bucket_schema(&mut self, name: &str, schema: Value) {
        self.buckets
            .entry(name.to_string())
            .and_modify(|b| b.schema = schema.clone())
            .or_insert_with(|| Bucket::new(schema));
    }

    /// Resolves a path's bucket identifier: a bucket name, or `bkt_<name>`.
    pub(crate) fn bucket_name(&self, identifier: &str) -> Option<String> {
        if self.buckets.contains_key(identifier) {
            return Some(identifier.to_string());
        }
        identifier
            .strip_prefix("bkt_")
            .filter(|name| self.buckets.contains_key(*name))
            .map(str::to_string)
    }

    /// Decides whether an outage, the fault script or the quota answers a request
    /// to `path` arriving at `now`. Outages cover every path; the script and the
    /// quota only API paths (`/v1/...`). See `ratelimit.rs` for what is counted.
    pub(crate) fn admit(&mut self, path: &str, now: Instant) -> Admission {
        if let Some(Outage::Status(status)) = self.outage {
            return Admission::Answer {
                status,
                retry_after: None,
                delay: None,
                body: default_envelope(status),
            };
        }
        if !is_api_path(path) {
            return Admission::Pass;
        }
        if let Some(scripted) = self.script.pop_front() {
            return match scripted {
                Scripted::Answer(fault) => Admission::Answer {
                    status: fault.status,
                    body: fault.body.unwrap_or_else(|| default_envelope(fault.status)),
                    retry_after: fault.retry_after,
                    delay: fault.delay,
                },
                Scripted::DropConnection { delay } => Admission::Drop { delay },
            };
        }
        if let Some(limiter) = &mut self.limiter
            && let Err(wait) = limiter.check(now)
        {
            self.quota.limited += 1;
            let secs = retry_after_secs(wait);
            return Admission::Answer {
                status: 429,
                retry_after: Some(secs.to_string()),
                delay: None,
                body: envelope(
                    429,
                    "Rate limit exceeded",
                    Some(json!({ "retry_after_seconds": secs })),
                ),
            };
        }
        self.quota.admitted += 1;
        Admission::Pass
    }

    fn new_object_id(&mut self) -> String {
        let id = format!("obj_{}", self.next_object);
        self.next_object += 1;
        id
    }

    /// Registers a task over `object_ids`, with the next scripted outcome if any.
    fn start_task(
        &mut self,
        task_type: &'static str,
        bucket: &str,
        object_ids: Vec<String>,
        batch_id: Option<String>,
        now: Instant,
    ) -> String {
        let id = format!("task_{}", self.next_task);
        self.next_task += 1;
        let mut timeline = self.task_timeline.clone();
        if let Some(outcome) = self.task_outcomes.pop_front() {
            timeline.outcome = outcome;
        }
        self.tasks.insert(
            id.clone(),
            TaskRecord {
                task_type,
                bucket: bucket.to_string(),
                object_ids,
                batch_id,
                timeline,
                created_at: now,
                created_wall: SystemTime::now(),
            },
        );
        id
    }

    /// Registers an accepted object of `bucket` (a name, already resolved), with
    /// a task when `with_task`. `None` when the bucket disappeared meanwhile.
    pub(crate) fn accept(
        &mut self,
        dialect: Dialect,
        bucket: &str,
        body: Value,
        with_task: bool,
        now: Instant,
    ) -> Option<Accepted> {
        self.buckets.get_mut(bucket)?.object_count += 1;
        let object_id = self.new_object_id();
        let task_id = with_task.then(|| {
            self.start_task(
                tasks::OBJECT_CREATE,
                bucket,
                vec![object_id.clone()],
                None,
                now,
            )
        });
        self.objects.push(RecordedObject {
            dialect: dialect.name().to_string(),
            bucket: bucket.to_string(),
            body,
            object_id: object_id.clone(),
            task_id: task_id.clone(),
            batch: None,
            received_at: now,
        });
        Some(Accepted {
            object_id,
            task_id,
            bucket_id: bucket_id(bucket),
        })
    }

    /// Registers the accepted objects of one batch create, given as
    /// `(index in objects[], body)`, in that order; with `auto_process`, one
    /// processing task covers them all. `None` when the bucket disappeared
    /// meanwhile; an empty list registers nothing.
    pub(crate) fn accept_batch(
        &mut self,
        bucket: &str,
        items: Vec<(usize, Value)>,
        auto_process: bool,
        now: Instant,
    ) -> Option<Vec<Accepted>> {
        let entry = self.buckets.get_mut(bucket)?;
        if items.is_empty() {
            return Some(Vec::new());
        }
        entry.object_count += items.len() as u64;
        let batch_id = format!("btch_{}", self.next_batch);
        self.next_batch += 1;
        let object_ids: Vec<String> = items.iter().map(|_| self.new_object_id()).collect();
        let task_id = auto_process.then(|| {
            self.start_task(
                tasks::BATCH_PROCESS,
                bucket,
                object_ids.clone(),
                Some(batch_id.clone()),
                now,
            )
        });
        let mut accepted = Vec::with_capacity(items.len());
        for ((index, body), object_id) in items.into_iter().zip(object_ids) {
            self.objects.push(RecordedObject {
                dialect: Dialect::Objects.name().to_string(),
                bucket: bucket.to_string(),
                body,
                object_id: object_id.clone(),
                task_id: task_id.clone(),
                batch: Some(BatchSlot {
                    batch_id: batch_id.clone(),
                    index,
                }),
                received_at: now,
            });
            accepted.push(Accepted {
                object_id,
                task_id: task_id.clone(),
                bucket_id: bucket_id(bucket),
            });
        }
        Some(accepted)
    }

    /// Whether every `upload_id` blob of `object` names a confirmed upload of
    /// `bucket`.
    pub(crate) fn check_upload_refs(
        &self,
        bucket: &str,
        object: &ValidObject,
    ) -> Result<(), RefusedUpload> {
        for upload_id in object.blobs.iter().filter_map(|b| b.upload_id.as_deref()) {
            match self.uploads.get(upload_id) {
                Some(upload) if upload.bucket == bucket => {
                    if upload.confirmed.is_none() {
                        return Err(RefusedUpload {
                            status: 400,
                            body: envelope(
                                400,
                                &format!(
                                    "Upload '{upload_id}' is not confirmed (status PENDING): \
                                     confirm it before using it in an object"
                                ),
                                Some(json!({ "resource": "upload", "id": upload_id })),
                            ),
                        });
                    }
                }
                _ => {
                    return Err(RefusedUpload {
                        status: 404,
                        body: not_found("upload", upload_id),
                    });
                }
            }
        }
        Ok(())
    }

    /// Registers an upload of `bucket`, or finds the confirmed upload it duplicates.
    pub(crate) fn create_upload(
        &mut self,
        bucket: &str,
        request: UploadRequest,
        now: Instant,
    ) -> UploadCreated {
        if request.skip_duplicates
            && let Some(hash) = &request.file_hash
            && let Some(existing) = self.uploads.values().find(|u| {
                u.bucket == bucket && u.confirmed.as_ref().is_some_and(|c| c.sha256 == *hash)
            })
        {
            return UploadCreated::Duplicate(existing.clone());
        }
        let upload_id = format!("upl_{:016}", self.next_upload);
        self.next_upload += 1;
        let record = UploadRecord::new(
            upload_id.clone(),
            bucket.to_string(),
            request,
            now,
            SystemTime::now(),
        );
        self.uploads.insert(upload_id, record.clone());
        UploadCreated::Fresh(record)
    }

    /// Confirms upload `upload_id` of `bucket` (idempotent: a repeat checks the
    /// request against the confirmed content and changes nothing). A first
    /// confirmation with `create_object_on_confirm` creates the object.
    /// Returns the `ConfirmUploadResponse`.
    pub(crate) fn confirm_upload(
        &mut self,
        bucket: &str,
        upload_id: &str,
        request: &ConfirmRequest,
        now: Instant,
    ) -> Result<Value, ConfirmRefusal> {
        let upload = self
            .uploads
            .get(upload_id)
            .filter(|u| u.bucket == bucket)
            .ok_or(ConfirmRefusal::UnknownUpload)?;
        let content = upload.verify(request).map_err(ConfirmRefusal::Mismatch)?;
        if upload.confirmed.is_some() {
            return Ok(upload.confirm_response(true));
        }
        let object_body = upload
            .request
            .create_object_on_confirm
            .then(|| object_on_confirm(&upload.request, &upload.upload_id));
        let object_id = match object_body {
            Some(body) => Some(
                self.accept(Dialect::Objects, bucket, body, false, now)
                    .ok_or(ConfirmRefusal::UnknownBucket)?
                    .object_id,
            ),
            None => None,
        };
        let upload = self
            .uploads
            .get_mut(upload_id)
            .ok_or(ConfirmRefusal::UnknownUpload)?;
        upload.confirmed = Some(content);
        upload.completed_wall = Some(SystemTime::now());
        upload.object_id = object_id;
        Ok(upload.confirm_response(false))
    }

    /// Snapshot of every task, ordered by id number.
    pub(crate) fn task_snapshots(&self, now: Instant) -> Vec<crate::RecordedTask> {
        let mut all: Vec<_> = self
            .tasks
            .iter()
            .map(|(id, task)| task.snapshot(id, now))
            .collect();
        all.sort_by_key(|t| {
            t.task_id
                .trim_start_matches("task_")
                .parse::<u64>()
                .unwrap_or(u64::MAX)
        });
        all
    }
}

/// The body of the object an upload creates on confirmation:
/// `{"blobs": [{"property", "type", "upload_id"}], …object_metadata}`.
pub(crate) fn object_on_confirm(request: &UploadRequest, upload_id: &str) -> Value {
    let mut body: Map<String, Value> = request.object_metadata.clone().unwrap_or_default();
    body.insert(
        "blobs".into(),
        json!([{
            "property": request.property(),
            "type": request.kind(),
            "upload_id": upload_id,
        }]),
    );
    Value::Object(body)
}

fn is_api_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// The state with the condition variable that waiters sleep on.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Body bytes received by presigned PUTs so far, updated per chunk
    /// outside the lock so that streaming never contends with control calls.
    pub(crate) presigned_bytes: AtomicU64,
}

impl Shared {
    pub(crate) fn new(state: State) -> Self {
        Shared {
            state: Mutex::new(state),
            changed: Condvar::new(),
            presigned_bytes: AtomicU64::new(0),
        }
    }

    /// Locks the state. A panic elsewhere while holding the lock cannot leave the
    /// state half-updated (no update panics midway), so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the state and wakes every waiter.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let result = f(&mut self.lock());
        self.changed.notify_all();
        result
    }

    pub(crate) fn add_presigned_bytes(&self, n: u64) {
        self.presigned_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Blocks until `done` holds or `timeout` passes; returns whether it holds.
    pub(crate) fn wait_until(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |state| !done(state))
            .unwrap_or_else(PoisonError::into_inner);
        done(&guard)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::fault::Fault;
    use crate::uploads::{Stored, validate_upload_request};
    use crate::validate::{BatchItem, validate_batch, validate_create};
    use std::sync::Arc;

    fn state() -> State {
        State::new(Settings {
            buckets: BTreeMap::from([("b".to_string(), json!({"properties": {}}))]),
            ..Settings::default()
        })
    }

    #[test]
    fn script_is_fifo_and_only_for_api_paths() {
        let mut s = state();
        let now = Instant::now();
        s.script
            .push_back(Scripted::Answer(Fault::status(503).retry_after("2")));
        s.script.push_back(Scripted::DropConnection { delay: None });
        assert_eq!(s.admit("/healthz", now), Admission::Pass);
        assert_eq!(s.admit("/presigned/upl_1", now), Admission::Pass);
        let Admission::Answer {
            status,
            retry_after,
            body,
            ..
        } = s.admit("/v1/tasks/x", now)
        else {
            panic!("expected the scripted answer");
        };
        assert_eq!((status, retry_after.as_deref()), (503, Some("2")));
        assert_eq!(body["error"]["type"], json!("ServiceUnavailableError"));
        assert_eq!(s.admit("/v1/x", now), Admission::Drop { delay: None });
        assert_eq!(s.admit("/v1/x", now), Admission::Pass);
    }

    #[test]
    fn outage_answers_every_path_until_cleared() {
        let mut s = state();
        s.outage = Some(Outage::Status(503));
        for path in ["/v1/buckets/b", "/other", "/presigned/upl_1"] {
            assert!(matches!(
                s.admit(path, Instant::now()),
                Admission::Answer { status: 503, .. }
            ));
        }
        s.outage = None;
        assert_eq!(s.admit("/v1/buckets/b", Instant::now()), Admission::Pass);
    }

    #[test]
    fn quota_answers_429_with_retry_after_and_counts() {
        let mut s = state();
        s.limiter = Some(RateLimiter::new(1));
        let now = Instant::now();
        s.script.push_back(Scripted::Answer(Fault::status(500)));
        // A scripted answer comes before the quota and does not use it up.
        assert!(matches!(
            s.admit("/v1/a", now),
            Admission::Answer { status: 500, .. }
        ));
        assert_eq!(s.admit("/v1/a", now), Admission::Pass);
        // Presigned PUTs and other non-API paths are never counted.
        assert_eq!(s.admit("/presigned/upl_1", now), Admission::Pass);
        let Admission::Answer {
            status,
            retry_after,
            body,
            ..
        } = s.admit("/v1/a", now + Duration::from_secs(10))
        else {
            panic!("expected 429");
        };
        assert_eq!(status, 429);
        assert_eq!(retry_after.as_deref(), Some("50"));
        assert_eq!(body["error"]["type"], json!("RateLimitError"));
        assert_eq!(
            s.quota,
            RateLimitStats {
                admitted: 1,
                limited: 1
            }
        );
    }

    #[test]
    fn without_a_limit_every_api_request_is_admitted_and_counted() {
        let mut s = state();
        for _ in 0..3 {
            assert_eq!(s.admit("/v1/a", Instant::now()), Admission::Pass);
        }
        s.admit("/elsewhere", Instant::now());
        assert_eq!(s.quota.admitted, 3);
        assert_eq!(s.quota.limited, 0);
    }

    #[test]
    fn accept_numbers_objects_and_tasks() {
        let mut s = state();
        let now = Instant::now();
        let a = s
            .accept(Dialect::ObjectsCreate, "b", json!({}), true, now)
            .unwrap();
        let b = s
            .accept(Dialect::Objects, "b", json!({}), false, now)
            .unwrap();
        let c = s
            .accept(Dialect::Objects, "b", json!({}), true, now)
            .unwrap();
        assert_eq!(
            (a.object_id.as_str(), a.task_id.as_deref()),
            ("obj_1", Some("task_1"))
        );
        assert_eq!(
            (b.object_id.as_str(), b.task_id.as_deref()),
            ("obj_2", None)
        );
        assert_eq!(c.task_id.as_deref(), Some("task_2"));
        assert_eq!(s.buckets["b"].object_count, 3);
        assert_eq!(s.objects.len(), 3);
        assert!(s.objects.iter().all(|o| o.batch.is_none()));
        assert_eq!(s.tasks["task_2"].object_ids, ["obj_3"]);
        assert!(
            s.accept(Dialect::Objects, "gone", json!({}), true, now)
                .is_none()
        );
    }

    #[test]
    fn a_batch_gets_one_id_one_task_and_slots() {
        let mut s = state();
        let now = Instant::now();
        let accepted = s
            .accept_batch(
                "b",
                vec![(0, json!({"n": 0})), (2, json!({"n": 2}))],
                true,
                now,
            )
            .unwrap();
        let ids: Vec<_> = accepted.iter().map(|a| a.object_id.as_str()).collect();
        assert_eq!(ids, ["obj_1", "obj_2"]);
        assert!(
            accepted
                .iter()
                .all(|a| a.task_id.as_deref() == Some("task_1"))
        );
        assert_eq!(s.tasks["task_1"].object_ids, ["obj_1", "obj_2"]);
        assert_eq!(s.tasks["task_1"].batch_id.as_deref(), Some("btch_1"));
        let slots: Vec<_> = s.objects.iter().map(|o| o.batch.clone().unwrap()).collect();
        assert_eq!(
            slots,
            [
                BatchSlot {
                    batch_id: "btch_1".into(),
                    index: 0
                },
                BatchSlot {
                    batch_id: "btch_1".into(),
                    index: 2
                }
            ]
        );
        assert_eq!(s.objects[1].body, json!({"n": 2}));
        assert_eq!(s.buckets["b"].object_count, 2);

        // Without auto_process: no task; an empty batch uses no batch id.
        assert!(
            s.accept_batch("b", Vec::new(), true, now)
                .unwrap()
                .is_empty()
        );
        let plain = s
            .accept_batch("b", vec![(0, json!({}))], false, now)
            .unwrap();
        assert_eq!(plain[0].task_id, None);
        assert_eq!(s.objects[2].batch.as_ref().unwrap().batch_id, "btch_2");
        assert!(
            s.accept_batch("gone", vec![(0, json!({}))], true, now)
                .is_none()
        );
    }

    #[test]
    fn scripted_outcomes_go_to_the_next_tasks_in_order() {
        let mut s = state();
        s.task_timeline = TaskTimeline::new(Duration::from_secs(60), Duration::ZERO);
        s.task_outcomes.push_back(TaskStatus::Failed);
        let now = Instant::now();
        for _ in 0..2 {
            s.accept(Dialect::Objects, "b", json!({}), true, now);
        }
        let later = now + Duration::from_secs(60);
        assert_eq!(s.tasks["task_1"].status_at(now), TaskStatus::Pending);
        assert_eq!(s.tasks["task_1"].status_at(later), TaskStatus::Failed);
        assert_eq!(s.tasks["task_2"].status_at(later), TaskStatus::Completed);
        let ids: Vec<_> = s
            .task_snapshots(later)
            .into_iter()
            .map(|t| (t.task_id, t.status))
            .collect();
        assert_eq!(
            ids,
            [
                ("task_1".to_string(), TaskStatus::Failed),
                ("task_2".to_string(), TaskStatus::Completed)
            ]
        );
    }

    fn upload_request(hash: &str, on_confirm: bool) -> UploadRequest {
        validate_upload_request(&json!({
            "filename": "clip.mp4", "content_type": "video/mp4", "file_size_bytes": 5,
            "file_hash": hash, "create_object_on_confirm": on_confirm,
            "object_metadata": {"title": "t"},
        }))
        .unwrap()
    }

    fn put(s: &mut State, id: &str, hash: &str) {
        s.uploads.get_mut(id).unwrap().stored = Some(Stored {
            bytes: 5,
            sha256: hash.to_string(),
        });
    }

    #[test]
    fn uploads_confirm_and_deduplicate_per_bucket() {
        let hash = "a".repeat(64);
        let mut s = state();
        s.set_bucket_schema("other", json!({"properties": {}}));
        let now = Instant::now();
        let created = s.create_upload("b", upload_request(&hash, false), now);
        assert!(
            matches!(created, UploadCreated::Fresh(_)),
            "a first upload is fresh"
        );
        let id = created.upload_id().to_string();
        assert_eq!(id, "upl_0000000000000001");
        // Not confirmed yet: no duplicate.
        assert!(matches!(
            s.create_upload("b", upload_request(&hash, false), now),
            UploadCreated::Fresh(_)
        ));
        let confirm = ConfirmRequest::default();
        assert!(matches!(
            s.confirm_upload("b", &id, &confirm, now),
            Err(ConfirmRefusal::Mismatch(_))
        ));
        put(&mut s, &id, &hash);
        assert_eq!(
            s.confirm_upload("other", &id, &confirm, now),
            Err(ConfirmRefusal::UnknownUpload)
        );
        let answer = s.confirm_upload("b", &id, &confirm, now).unwrap();
        assert_eq!(answer["status"], json!("COMPLETED"));
        assert_eq!(answer["object_id"], Value::Null);
        assert!(s.objects.is_empty(), "create_object_on_confirm was false");
        let again = s.confirm_upload("b", &id, &confirm, now).unwrap();
        assert_eq!(again["message"], json!("Upload was already confirmed"));

        let duplicate = s.create_upload("b", upload_request(&hash, false), now);
        assert!(matches!(duplicate, UploadCreated::Duplicate(_)));
        assert_eq!(duplicate.upload_id(), id);
        // Other buckets and skip_duplicates = false get a fresh upload.
        assert!(matches!(
            s.create_upload("other", upload_request(&hash, false), now),
            UploadCreated::Fresh(_)
        ));
        let mut no_skip = upload_request(&hash, false);
        no_skip.skip_duplicates = false;
        assert!(matches!(
            s.create_upload("b", no_skip, now),
            UploadCreated::Fresh(_)
        ));
    }

    #[test]
    fn confirming_with_create_object_on_confirm_records_an_object() {
        let hash = "b".repeat(64);
        let mut s = state();
        let now = Instant::now();
        let id = s
            .create_upload("b", upload_request(&hash, true), now)
            .upload_id()
            .to_string();
        put(&mut s, &id, &hash);
        let answer = s
            .confirm_upload("b", &id, &ConfirmRequest::default(), now)
            .unwrap();
        assert_eq!(answer["object_id"], json!("obj_1"));
        assert_eq!(
            s.objects[0].body,
            json!({"title": "t", "blobs": [{"property": "clip", "type": "video", "upload_id": id}]})
        );
        assert_eq!(s.objects[0].dialect, "objects");
    }

    #[test]
    fn upload_refs_must_be_confirmed_uploads_of_the_bucket() {
        let hash = "c".repeat(64);
        let mut s = state();
        s.set_bucket_schema("other", json!({"properties": {}}));
        let now = Instant::now();
        let id = s
            .create_upload("b", upload_request(&hash, false), now)
            .upload_id()
            .to_string();
        let object = |upload_id: &str| {
            let body =
                json!({"blobs": [{"property": "v", "type": "video", "upload_id": upload_id}]});
            validate_create(Dialect::Objects, &body, "b", &json!({})).unwrap()
        };
        let pending = s.check_upload_refs("b", &object(&id)).unwrap_err();
        assert_eq!(pending.status, 400);
        assert!(pending.message().contains("not confirmed"), "{pending:?}");
        let unknown = s.check_upload_refs("b", &object("upl_nope")).unwrap_err();
        assert_eq!(unknown.status, 404);
        assert_eq!(
            unknown.body["error"]["details"]["resource"],
            json!("upload")
        );
        put(&mut s, &id, &hash);
        s.confirm_upload("b", &id, &ConfirmRequest::default(), now)
            .unwrap();
        assert_eq!(s.check_upload_refs("b", &object(&id)), Ok(()));
        assert_eq!(
            s.check_upload_refs("other", &object(&id))
                .unwrap_err()
                .status,
            404
        );
    }

    #[test]
    fn batch_validation_feeds_accept_batch() {
        let body = json!({"objects": [{"blobs": []}, {"blobs": [{"property": "x", "type": "pdf", "data": "d"}]}]});
        let schema = json!({"properties": {"content": {"type": "pdf"}}});
        let items = validate_batch(&body, "b", &schema, BatchShapeErrors::RejectBatch).unwrap();
        let ok: Vec<(usize, Value)> = items
            .iter()
            .filter(|i| i.result.is_ok())
            .map(|BatchItem { index, body, .. }| (*index, Value::clone(body)))
            .collect();
        assert_eq!(ok, [(0, json!({"blobs": []}))]);
        let mut s = state();
        assert_eq!(
            s.accept_batch("b", ok, false, Instant::now())
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn bucket_identifier_is_a_name_or_an_id() {
        let s = state();
        assert_eq!(s.bucket_name("b").as_deref(), Some("b"));
        assert_eq!(s.bucket_name("bkt_b").as_deref(), Some("b"));
        assert_eq!(s.bucket_name("bkt_x"), None);
    }

    #[test]
    fn set_bucket_schema_keeps_the_count() {
        let mut s = state();
        s.accept(Dialect::Objects, "b", json!({}), false, Instant::now());
        s.set_bucket_schema("b", json!({"properties": {"x": {"type": "pdf"}}}));
        assert_eq!(s.buckets["b"].object_count, 1);
        assert_eq!(
            s.buckets["b"].schema["properties"]["x"]["type"],
            json!("pdf")
        );
    }

    #[test]
    fn waiters_wake_on_update() {
        let shared = Arc::new(Shared::new(state()));
        let writer = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            writer.update(|s| s.accept(Dialect::Objects, "b", json!({}), false, Instant::now()));
        });
        assert!(shared.wait_until(Duration::from_secs(10), |s| s.objects.len() == 1));
        thread.join().unwrap();
        assert!(!shared.wait_until(Duration::from_millis(1), |s| s.objects.len() == 2));
    }
}
