//! Task status (SPEC §7): what a task's `status` means, and when to ask again.
//!
//! Inputs: the `status` string of `GET /v1/tasks/{task_id}` (or its HTTP
//! status when there is no task body), and how often the task was polled.
//! Outputs: [`Progress`] (still running, or done with an outcome) and the
//! delay before the next poll.
//!
//! Terminal states are those of openapi.json's `TaskStatusEnum`
//! (`COMPLETED`, `COMPLETED_WITH_ERRORS`, `FAILED`, `CANCELED`) and the older
//! ones of the create-object docs page (`DONE`, `FAILED`, `SKIPPED`,
//! `CANCELLED`). Anything else, including a state this version has never
//! heard of, keeps the task polled: an unknown word is not a verdict.

use std::time::Duration;

use serde::Serialize;

/// The first poll delay; it doubles with every poll.
pub const FIRST_POLL: Duration = Duration::from_secs(1);
/// The longest poll delay.
pub const MAX_POLL: Duration = Duration::from_secs(30);

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// `COMPLETED`, `DONE`, `SKIPPED`.
    Ok,
    /// `FAILED`, `CANCELED`/`CANCELLED`, `COMPLETED_WITH_ERRORS`.
    Failed,
    /// The API no longer knows the task (404).
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Running,
    Done(Outcome),
}

/// What a reported status means. Case does not matter.
pub fn progress(status: &str) -> Progress {
    match status.to_ascii_uppercase().as_str() {
        "COMPLETED" | "DONE" | "SKIPPED" => Progress::Done(Outcome::Ok),
        "FAILED" | "CANCELED" | "CANCELLED" | "COMPLETED_WITH_ERRORS" => {
            Progress::Done(Outcome::Failed)
        }
        _ => Progress::Running,
    }
}

/// The delay before the next poll of a task polled `polls` times: 1 s,
/// doubling, at most 30 s (openapi.json's polling guidance).
pub fn next_poll(polls: u32) -> Duration {
    FIRST_POLL
        .saturating_mul(1u32.checked_shl(polls.min(31)).unwrap_or(u32::MAX))
        .min(MAX_POLL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("COMPLETED", Progress::Done(Outcome::Ok))]
    #[case("DONE", Progress::Done(Outcome::Ok))]
    #[case("SKIPPED", Progress::Done(Outcome::Ok))]
    #[case("completed", Progress::Done(Outcome::Ok))]
    #[case("FAILED", Progress::Done(Outcome::Failed))]
    #[case("CANCELED", Progress::Done(Outcome::Failed))]
    #[case("CANCELLED", Progress::Done(Outcome::Failed))]
    #[case("COMPLETED_WITH_ERRORS", Progress::Done(Outcome::Failed))]
    #[case("PENDING", Progress::Running)]
    #[case("IN_PROGRESS", Progress::Running)]
    #[case("PROCESSING", Progress::Running)]
    #[case("UNKNOWN", Progress::Running)]
    #[case("SOMETHING_NEW", Progress::Running)]
    fn states(#[case] status: &str, #[case] want: Progress) {
        assert_eq!(progress(status), want);
    }

    #[test]
    fn polls_back_off_from_one_to_thirty_seconds() {
        let delays: Vec<u64> = (0..8).map(|n| next_poll(n).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(next_poll(u32::MAX), MAX_POLL);
    }
}
