//! Task status: poll the processing tasks of delivered objects until they end.
//!
//! Inputs: tasks the store holds as still polled (queued with the delivery
//! that answered a `task_id`). Outputs: each poll's state recorded, the
//! final outcome once `pipeline::task` calls it terminal, and a warning for
//! a task that failed (`status` lists them).
//!
//! Polling is second to delivery: the engine polls only while the submitter
//! has nothing due and nothing in flight, so with a request quota
//! (`api.requests_per_minute`, shared by every API call) a poll never takes
//! the place of a create. A 404 ends polling with outcome `unknown` (old
//! tasks expire on the server); any other failure (an outage, a 429) just
//! polls again later on the same backoff.

use tracing::{debug, info, warn};

use super::StoreHandle;
use crate::api::ApiClient;
use crate::error::FatalError;
use crate::pipeline::task::{self, Outcome, Progress};
use crate::store::{TaskRow, unix_now_ms};
use crate::telemetry::Counters;

/// Polls one task and records what it said; counts the poll, and the
/// outcome once there is one.
pub async fn poll(
    client: &ApiClient,
    store: &StoreHandle,
    counters: &Counters,
    row: TaskRow,
) -> Result<(), FatalError> {
    Counters::add(&counters.tasks_polled, 1);
    let response = client.get_task(&row.task_id).await;
    let next = |polls: u32| {
        let delay = task::next_poll(polls);
        unix_now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
    };
    let (state, outcome, error) = match response.status() {
        Some(200..=299) => {
            let body: serde_json::Value =
                serde_json::from_slice(response.body()).unwrap_or_default();
            let state = body
                .get("status")
                .and_then(serde_json::Value::as_str)
                .unwrap_or(&row.state)
                .to_owned();
            let error = body
                .get("error")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            match task::progress(&state) {
                Progress::Running => (state, None, None),
                Progress::Done(outcome) => (state, Some(outcome), error),
            }
        }
        Some(404) => ("UNKNOWN".to_owned(), Some(Outcome::Unknown), None),
        _ => {
            debug!(task_id = %row.task_id, error = %response.error_text(), "task poll failed; polling again later");
            (row.state.clone(), None, None)
        }
    };
    if let Some(outcome) = outcome {
        counters.tasks_ended.add(outcome.as_str(), 1);
    }
    match outcome {
        Some(Outcome::Failed) => warn!(
            task_id = %row.task_id,
            key_prefix = %row.key_prefix,
            bucket = %row.bucket,
            %state,
            error = error.as_deref().unwrap_or("-"),
            "processing task failed"
        ),
        Some(Outcome::Unknown) => info!(
            task_id = %row.task_id,
            key_prefix = %row.key_prefix,
            "the API no longer knows this task; polling stopped"
        ),
        Some(Outcome::Ok) => debug!(task_id = %row.task_id, %state, "task done"),
        None => {}
    }
    let next_poll_ms = next(row.polls.saturating_add(1));
    store
        .run(move |s| {
            s.record_task(
                &row.task_id,
                &state,
                outcome,
                next_poll_ms,
                error.as_deref(),
            )
        })
        .await?;
    Ok(())
}
