//! Tasks that move through states over time, as `GET /v1/tasks/{task_id}` shows them.
//!
//! Role: the pure model of an emulated task. A task is created by an accepted
//! `objects-create` object, by an `objects` create or batch with
//! `?auto_process=true`; from then on its status is a function of the time
//! elapsed since its creation and of its [`TaskTimeline`]:
//!
//! ```text
//! 0 ── PENDING ──► pending ── PROCESSING ──► pending + processing ── outcome
//! ```
//!
//! Inputs: the timeline the task was created with (the emulator's default,
//! or the next scripted outcome), the creation instant and `now`.
//! Outputs: the status and the `TaskResponse` JSON of openapi.json 0.81.
//! Invariants: a task's status never goes back (PENDING, then PROCESSING, then
//! the outcome); zero delays skip a phase, so the default timeline answers the
//! outcome at once. No clock is read here: callers pass `now`.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};

use crate::state::bucket_id;
use crate::timestamp::rfc3339;

/// `TaskType` of a task started by one accepted object.
pub(crate) const OBJECT_CREATE: &str = "api_buckets_objects_create";
/// `TaskType` of the processing batch a batch create with `auto_process=true` submits.
pub(crate) const BATCH_PROCESS: &str = "api_buckets_batches_process";

/// A task status: the values of openapi.json's `TaskStatusEnum` and of the
/// create-object docs page that a client may meet, plus any other string.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    /// `PENDING`: queued (both sources).
    Pending,
    /// `PROCESSING` (both sources).
    Processing,
    /// `COMPLETED` (openapi): finished without errors.
    Completed,
    /// `COMPLETED_WITH_ERRORS` (openapi): finished, some items failed.
    CompletedWithErrors,
    /// `FAILED` (both sources).
    Failed,
    /// `CANCELED` (openapi spelling).
    Canceled,
    /// `DONE` (docs page): finished.
    Done,
    /// `SKIPPED` (both sources).
    Skipped,
    /// `CANCELLED` (docs page spelling).
    Cancelled,
    /// Any other status string, sent as is (e.g. `DOWNLOADING`, `UNKNOWN`), to
    /// check that clients keep statuses they do not know.
    Other(String),
}

impl TaskStatus {
    /// The named statuses, for parsing and for help texts.
    pub const NAMED: [TaskStatus; 9] = [
        TaskStatus::Pending,
        TaskStatus::Processing,
        TaskStatus::Completed,
        TaskStatus::CompletedWithErrors,
        TaskStatus::Failed,
        TaskStatus::Canceled,
        TaskStatus::Done,
        TaskStatus::Skipped,
        TaskStatus::Cancelled,
    ];

    /// The string sent in `status`.
    pub fn as_str(&self) -> &str {
        match self {
            TaskStatus::Pending => "PENDING",
            TaskStatus::Processing => "PROCESSING",
            TaskStatus::Completed => "COMPLETED",
            TaskStatus::CompletedWithErrors => "COMPLETED_WITH_ERRORS",
            TaskStatus::Failed => "FAILED",
            TaskStatus::Canceled => "CANCELED",
            TaskStatus::Done => "DONE",
            TaskStatus::Skipped => "SKIPPED",
            TaskStatus::Cancelled => "CANCELLED",
            TaskStatus::Other(other) => other,
        }
    }

    /// The named status spelled `raw` (case-insensitive, `-` for `_` allowed),
    /// or `None`.
    pub fn named(raw: &str) -> Option<TaskStatus> {
        let wanted = raw.trim().to_ascii_uppercase().replace('-', "_");
        TaskStatus::NAMED.into_iter().find(|s| s.as_str() == wanted)
    }

    /// Statuses that carry an error message (`error`, `additional_data.error`).
    fn reports_error(&self) -> bool {
        matches!(self, TaskStatus::Failed | TaskStatus::CompletedWithErrors)
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a task's status evolves: `pending`, then `processing`, then `outcome`
/// for good. The emulator's default is `0s`, `0s`, `COMPLETED`: tasks are done
/// when they are created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskTimeline {
    /// How long a new task answers `PENDING`.
    pub pending: Duration,
    /// How long it then answers `PROCESSING`.
    pub processing: Duration,
    /// What it answers afterwards. A non-terminal status (e.g. `PROCESSING`)
    /// makes a task that never finishes.
    pub outcome: TaskStatus,
}

impl Default for TaskTimeline {
    fn default() -> Self {
        TaskTimeline {
            pending: Duration::ZERO,
            processing: Duration::ZERO,
            outcome: TaskStatus::Completed,
        }
    }
}

impl TaskTimeline {
    /// A timeline of `pending`, then `processing`, then `COMPLETED`.
    pub fn new(pending: Duration, processing: Duration) -> Self {
        TaskTimeline {
            pending,
            processing,
            outcome: TaskStatus::Completed,
        }
    }

    /// The same timeline ending in `outcome`.
    #[must_use]
    pub fn ending(mut self, outcome: TaskStatus) -> Self {
        self.outcome = outcome;
        self
    }

    /// The status `elapsed` after the task was created.
    pub fn status_after(&self, elapsed: Duration) -> TaskStatus {
        if elapsed < self.pending {
            TaskStatus::Pending
        } else if elapsed < self.pending.saturating_add(self.processing) {
            TaskStatus::Processing
        } else {
            self.outcome.clone()
        }
    }
}

/// A snapshot of one task, for assertions ([`crate::MockServer::tasks`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedTask {
    /// `task_<n>`.
    pub task_id: String,
    /// `api_buckets_objects_create` (one object) or `api_buckets_batches_process`
    /// (a batch created with `auto_process=true`).
    pub task_type: String,
    /// The bucket name.
    pub bucket: String,
    /// The objects the task processes.
    pub object_ids: Vec<String>,
    /// The status a GET would answer at the time of the snapshot.
    pub status: TaskStatus,
    pub created_at: Instant,
}

/// A task the emulator knows.
#[derive(Debug, Clone)]
pub(crate) struct TaskRecord {
    pub(crate) task_type: &'static str,
    pub(crate) bucket: String,
    pub(crate) object_ids: Vec<String>,
    /// `btch_<n>` for a batch's processing task.
    pub(crate) batch_id: Option<String>,
    pub(crate) timeline: TaskTimeline,
    pub(crate) created_at: Instant,
    pub(crate) created_wall: SystemTime,
}

impl TaskRecord {
    pub(crate) fn status_at(&self, now: Instant) -> TaskStatus {
        self.timeline
            .status_after(now.saturating_duration_since(self.created_at))
    }

    pub(crate) fn snapshot(&self, task_id: &str, now: Instant) -> RecordedTask {
        RecordedTask {
            task_id: task_id.to_string(),
            task_type: self.task_type.to_string(),
            bucket: self.bucket.clone(),
            object_ids: self.object_ids.clone(),
            status: self.status_at(now),
            created_at: self.created_at,
        }
    }

    /// `TaskResponse` as `GET /v1/tasks/{task_id}` answers it at `now`.
    pub(crate) fn to_json(&self, task_id: &str, now: Instant) -> Value {
        let status = self.status_at(now);
        let mut additional = Map::new();
        if let [only] = self.object_ids.as_slice() {
            additional.insert("object_id".into(), json!(only));
        } else {
            additional.insert("object_ids".into(), json!(self.object_ids));
        }
        additional.insert("bucket_id".into(), json!(bucket_id(&self.bucket)));
        if let Some(batch_id) = &self.batch_id {
            additional.insert("batch_id".into(), json!(batch_id));
        }
        let error = status.reports_error().then(|| {
            format!(
                "Task ended {status}: processing failed for {} object(s)",
                self.object_ids.len()
            )
        });
        if let Some(error) = &error {
            additional.insert("error".into(), json!(error));
        }
        let finished = matches!(status, TaskStatus::Completed | TaskStatus::Done);
        let outputs: Vec<&String> = if finished {
            self.object_ids.iter().collect()
        } else {
            Vec::new()
        };
        json!({
            "task_id": task_id,
            "task_type": self.task_type,
            "status": status.as_str(),
            "inputs": self.batch_id.iter().collect::<Vec<_>>(),
            "outputs": outputs,
            "additional_data": additional,
            "error": error,
            "created_at": rfc3339(self.created_wall),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const MS: Duration = Duration::from_millis(1);

    #[rstest]
    #[case::default_is_done_at_once(TaskTimeline::default(), 0, "COMPLETED")]
    #[case::pending_first(TaskTimeline::new(MS * 100, MS * 200), 0, "PENDING")]
    #[case::pending_until_its_end(TaskTimeline::new(MS * 100, MS * 200), 99, "PENDING")]
    #[case::then_processing(TaskTimeline::new(MS * 100, MS * 200), 100, "PROCESSING")]
    #[case::processing_until_its_end(TaskTimeline::new(MS * 100, MS * 200), 299, "PROCESSING")]
    #[case::then_outcome(TaskTimeline::new(MS * 100, MS * 200), 300, "COMPLETED")]
    #[case::no_pending_phase(TaskTimeline::new(Duration::ZERO, MS * 50), 0, "PROCESSING")]
    #[case::scripted_outcome(TaskTimeline::new(MS, MS).ending(TaskStatus::Failed), 5, "FAILED")]
    #[case::stuck(TaskTimeline::default().ending(TaskStatus::Processing), 1_000_000, "PROCESSING")]
    #[case::huge_delays_do_not_overflow(
        TaskTimeline::new(Duration::MAX, Duration::MAX),
        5,
        "PENDING"
    )]
    fn status_follows_the_timeline(
        #[case] timeline: TaskTimeline,
        #[case] elapsed_ms: u64,
        #[case] status: &str,
    ) {
        assert_eq!(
            timeline
                .status_after(Duration::from_millis(elapsed_ms))
                .as_str(),
            status
        );
    }

    #[rstest]
    #[case("COMPLETED", Some(TaskStatus::Completed))]
    #[case("completed-with-errors", Some(TaskStatus::CompletedWithErrors))]
    #[case(" cancelled ", Some(TaskStatus::Cancelled))]
    #[case("CANCELED", Some(TaskStatus::Canceled))]
    #[case("done", Some(TaskStatus::Done))]
    #[case("DOWNLOADING", None)]
    fn named_statuses_parse(#[case] raw: &str, #[case] parsed: Option<TaskStatus>) {
        assert_eq!(TaskStatus::named(raw), parsed);
    }

    #[test]
    fn every_named_status_round_trips() {
        for status in TaskStatus::NAMED {
            assert_eq!(TaskStatus::named(status.as_str()), Some(status.clone()));
        }
        assert_eq!(TaskStatus::Other("QUEUED".into()).to_string(), "QUEUED");
    }

    fn record(timeline: TaskTimeline, objects: &[&str], batch: Option<&str>) -> TaskRecord {
        TaskRecord {
            task_type: BATCH_PROCESS,
            bucket: "docs".into(),
            object_ids: objects.iter().map(ToString::to_string).collect(),
            batch_id: batch.map(str::to_string),
            timeline,
            created_at: Instant::now(),
            created_wall: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn json_of_a_completed_batch_task() {
        let task = record(TaskTimeline::default(), &["obj_1", "obj_2"], Some("btch_1"));
        let body = task.to_json("task_7", task.created_at);
        assert_eq!(body["task_id"], json!("task_7"));
        assert_eq!(body["task_type"], json!("api_buckets_batches_process"));
        assert_eq!(body["status"], json!("COMPLETED"));
        assert_eq!(body["inputs"], json!(["btch_1"]));
        assert_eq!(body["outputs"], json!(["obj_1", "obj_2"]));
        assert_eq!(
            body["additional_data"],
            json!({"object_ids": ["obj_1", "obj_2"], "bucket_id": "bkt_docs", "batch_id": "btch_1"})
        );
        assert_eq!(body["error"], Value::Null);
        assert_eq!(body["created_at"], json!("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn json_of_a_failed_single_task_carries_the_error() {
        let task = record(
            TaskTimeline::default().ending(TaskStatus::Failed),
            &["obj_3"],
            None,
        );
        let body = task.to_json("task_1", task.created_at);
        assert_eq!(body["status"], json!("FAILED"));
        assert_eq!(body["additional_data"]["object_id"], json!("obj_3"));
        assert!(body["error"].as_str().is_some_and(|e| e.contains("FAILED")));
        assert_eq!(body["additional_data"]["error"], body["error"]);
        assert_eq!(body["outputs"], json!([]));
    }
}
