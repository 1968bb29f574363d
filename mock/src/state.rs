//! The emulator's mutable state and the decisions taken under its lock.
//!
//! Role: hold buckets, the fault script, the outage, the quota, and the record
//! of requests and accepted objects; decide, per request, whether a scripted or
//! lasting failure answers it ([`State::admit`]); register accepted objects
//! ([`State::accept`]).
//! Inputs: control calls from [`crate::MockServer`] and requests from the gate.
//! Outputs: [`Admission`] decisions, ids, and snapshots of the record.
//! Invariants: `objects` and `requests` only grow, in arrival order; every
//! change notifies the condition variable, so waiters re-check at once; ids are
//! unique per emulator (`obj_<n>`, `task_<n>`, counting from 1).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::Dialects;
use crate::envelope::{default_envelope, envelope};
use crate::fault::{Outage, Scripted};
use crate::ratelimit::{RateLimiter, retry_after_secs};
use crate::validate::Dialect;

/// One object the emulator accepted (answered 2xx), as it was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedObject {
    /// `"objects-create"` or `"objects"`.
    pub dialect: String,
    /// The bucket named in the path.
    pub bucket: String,
    /// The request body, unchanged.
    pub body: Value,
    /// The id the emulator gave the object (`obj_<n>`).
    pub object_id: String,
    /// The task id answered, if any (`task_<n>`).
    pub task_id: Option<String>,
    pub received_at: Instant,
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
    /// The body parsed as JSON; `Null` when empty or not JSON.
    pub body: Value,
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

/// A task started by an accepted object.
#[derive(Debug, Clone)]
pub(crate) struct TaskRecord {
    pub(crate) object_id: String,
    pub(crate) bucket: String,
    pub(crate) created_at: SystemTime,
}

impl TaskRecord {
    pub(crate) const TASK_TYPE: &'static str = "api_buckets_objects_create";

    /// Current status. Tasks complete as soon as they exist; a progression over
    /// time (PENDING → PROCESSING → COMPLETED) belongs here, computed from
    /// `created_at`, so that the route stays unchanged.
    pub(crate) fn status(&self) -> &'static str {
        "COMPLETED"
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

/// Everything behind the emulator's lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) api_key: Option<String>,
    pub(crate) buckets: BTreeMap<String, Bucket>,
    pub(crate) dialects: Dialects,
    pub(crate) limiter: Option<RateLimiter>,
    pub(crate) outage: Option<Outage>,
    pub(crate) script: VecDeque<Scripted>,
    pub(crate) objects: Vec<RecordedObject>,
    pub(crate) requests: Vec<RecordedRequest>,
    pub(crate) tasks: HashMap<String, TaskRecord>,
    next_object: u64,
    next_task: u64,
}

/// `bkt_<name>`, the id the emulator gives bucket `name`.
pub(crate) fn bucket_id(name: &str) -> String {
    format!("bkt_{name}")
}

impl State {
    pub(crate) fn new(
        api_key: Option<String>,
        buckets: BTreeMap<String, Value>,
        dialects: Dialects,
        rate_limit_per_minute: Option<u32>,
    ) -> Self {
        State {
            api_key,
            buckets: buckets
                .into_iter()
                .map(|(name, schema)| (name, Bucket::new(schema)))
                .collect(),
            dialects,
            limiter: rate_limit_per_minute.map(RateLimiter::new),
            outage: None,
            script: VecDeque::new(),
            objects: Vec::new(),
            requests: Vec::new(),
            tasks: HashMap::new(),
            next_object: 1,
            next_task: 1,
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
    /// quota only API paths (`/v1/...`).
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
        Admission::Pass
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
        let entry = self.buckets.get_mut(bucket)?;
        entry.object_count += 1;
        let object_id = format!("obj_{}", self.next_object);
        self.next_object += 1;
        let task_id = with_task.then(|| {
            let id = format!("task_{}", self.next_task);
            self.next_task += 1;
            self.tasks.insert(
                id.clone(),
                TaskRecord {
                    object_id: object_id.clone(),
                    bucket: bucket.to_string(),
                    created_at: SystemTime::now(),
                },
            );
            id
        });
        self.objects.push(RecordedObject {
            dialect: dialect.name().to_string(),
            bucket: bucket.to_string(),
            body,
            object_id: object_id.clone(),
            task_id: task_id.clone(),
            received_at: now,
        });
        Some(Accepted {
            object_id,
            task_id,
            bucket_id: bucket_id(bucket),
        })
    }
}

fn is_api_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// The state with the condition variable that waiters sleep on.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    pub(crate) fn new(state: State) -> Self {
        Shared {
            state: Mutex::new(state),
            changed: Condvar::new(),
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
    use std::sync::Arc;

    fn state() -> State {
        let buckets = BTreeMap::from([("b".to_string(), json!({"properties": {}}))]);
        State::new(None, buckets, Dialects::default(), None)
    }

    #[test]
    fn script_is_fifo_and_only_for_api_paths() {
        let mut s = state();
        let now = Instant::now();
        s.script
            .push_back(Scripted::Answer(Fault::status(503).retry_after("2")));
        s.script.push_back(Scripted::DropConnection { delay: None });
        assert_eq!(s.admit("/healthz", now), Admission::Pass);
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
        for path in ["/v1/buckets/b", "/other"] {
            assert!(matches!(
                s.admit(path, Instant::now()),
                Admission::Answer { status: 503, .. }
            ));
        }
        s.outage = None;
        assert_eq!(s.admit("/v1/buckets/b", Instant::now()), Admission::Pass);
    }

    #[test]
    fn quota_answers_429_with_retry_after() {
        let mut s = state();
        s.limiter = Some(RateLimiter::new(1));
        let now = Instant::now();
        assert_eq!(s.admit("/v1/a", now), Admission::Pass);
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
        assert_eq!(s.tasks["task_2"].object_id, "obj_3");
        assert!(
            s.accept(Dialect::Objects, "gone", json!({}), true, now)
                .is_none()
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
