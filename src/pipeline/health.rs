//! Health: is the pipeline moving? (SPEC §10)
//!
//! One decision serves `/healthz` and the systemd watchdog, so the two can
//! never disagree about the daemon being stuck.
//!
//! Inputs: what the outbox holds that is due now, whether a presigned PUT is
//! under way, what holds submissions (a pause, a state disk that refuses
//! writes), and the moments submissions finished; all with an explicit
//! clock. Output: a [`Health`].
//!
//! The rule. The submitter is **stuck** when objects are due, submissions
//! are not held, no presigned PUT is under way, and no submission has
//! finished (delivered, retried, refused or paused: any outcome is
//! movement) for longer than the threshold. Every moment one of those does
//! not hold resets the clock: an idle outbox, or one whose objects wait for
//! their retry time, is not stuck, and neither is a long upload (a PUT is
//! bounded by its own timeout, which grows with the file). Every other
//! request is bounded by `api.timeout`, and the longest submission is three
//! requests in a row (upload create, confirm, object create), so the default
//! threshold is `max(3 × api.timeout, 60 s)`, plus three request slots when
//! `api.requests_per_minute` spaces requests out.
//!
//! Held work is its own state, [`Health::Paused`]: unhealthy for `/healthz`
//! (an operator must fix the key, the bucket or the disk), but the watchdog
//! is still fed, because the daemon is doing what it should (probing every
//! `retry.max`, waiting for disk space) and a restart would mend neither a
//! refused key nor a full disk; it would only lose the wait.

use std::fmt;
use std::time::{Duration, Instant};

/// The floor of the default threshold: short stalls on a busy machine are
/// not worth a restart.
pub const MIN_STUCK_AFTER: Duration = Duration::from_secs(60);

/// The default threshold for a given `api.timeout` and
/// `api.requests_per_minute` (0 = no quota); see the module doc.
pub fn default_stuck_after(api_timeout: Duration, requests_per_minute: u32) -> Duration {
    let requests = api_timeout.saturating_mul(3).max(MIN_STUCK_AFTER);
    let quota = match requests_per_minute {
        0 => Duration::ZERO,
        rpm => Duration::from_secs(60 * 3) / rpm,
    };
    requests.saturating_add(quota)
}

/// What the engine sees at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation<'a> {
    /// Pending objects whose time has come (sending, or waiting for a slot).
    pub due: u64,
    /// A presigned PUT is under way.
    pub transferring: bool,
    /// Why submissions are held, while they are (a pause, a full disk).
    pub held: Option<&'a str>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Work moves, or there is none waiting.
    Healthy { due: u64 },
    /// Submissions are held: a refused key, a missing bucket, a wrong
    /// endpoint, or a state disk that refuses writes.
    Paused { reason: String },
    /// Work is due and nothing has finished for `stalled`.
    Stuck { due: u64, stalled: Duration },
}

impl Health {
    /// `/healthz` answers 200.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy { .. })
    }

    /// The service manager's watchdog may be fed: anything but a stall.
    pub fn feeds_watchdog(&self) -> bool {
        !matches!(self, Health::Stuck { .. })
    }

    /// A short word for the state, for logs and JSON.
    pub fn state(&self) -> &'static str {
        match self {
            Health::Healthy { .. } => "ok",
            Health::Paused { .. } => "paused",
            Health::Stuck { .. } => "stuck",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Healthy { due: 0 } => write!(f, "ok: nothing due"),
            Health::Healthy { due } => write!(f, "ok: {due} object(s) due, submissions moving"),
            Health::Paused { reason } => write!(f, "paused: {reason}"),
            Health::Stuck { due, stalled } => write!(
                f,
                "stuck: {due} object(s) due and no submission finished for {}s",
                stalled.as_secs()
            ),
        }
    }
}

/// Remembers when the submitter last moved, and judges observations
/// against the threshold.
#[derive(Debug, Clone)]
pub struct Stall {
    threshold: Duration,
    /// The latest moment the submitter was not behind: a submission
    /// finished, a PUT was under way, nothing was due, or something held it.
    moving_at: Instant,
}

impl Stall {
    /// Starts the clock at `now` (the engine's start counts as movement).
    pub fn new(threshold: Duration, now: Instant) -> Stall {
        Stall {
            threshold,
            moving_at: now,
        }
    }

    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// A submission finished, whatever its outcome.
    pub fn finished(&mut self, now: Instant) {
        self.moving_at = self.moving_at.max(now);
    }

    /// The verdict at `now`.
    pub fn assess(&mut self, now: Instant, seen: &Observation<'_>) -> Health {
        if seen.due == 0 || seen.transferring || seen.held.is_some() {
            self.moving_at = self.moving_at.max(now);
        }
        if let Some(reason) = seen.held {
            return Health::Paused {
                reason: reason.to_owned(),
            };
        }
        let stalled = now.saturating_duration_since(self.moving_at);
        if stalled > self.threshold {
            Health::Stuck {
                due: seen.due,
                stalled,
            }
        } else {
            Health::Healthy { due: seen.due }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const THRESHOLD: Duration = Duration::from_secs(60);

    /// One step of a scenario, at a number of seconds after the start.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Finished(u64),
        /// At `s`: `due` objects due, a PUT under way or not, paused or not.
        Seen {
            at: u64,
            due: u64,
            transferring: bool,
            paused: bool,
        },
    }

    fn seen(at: u64, due: u64) -> Step {
        Step::Seen {
            at,
            due,
            transferring: false,
            paused: false,
        }
    }

    fn putting(at: u64, due: u64) -> Step {
        Step::Seen {
            at,
            due,
            transferring: true,
            paused: false,
        }
    }

    fn paused(at: u64, due: u64) -> Step {
        Step::Seen {
            at,
            due,
            transferring: false,
            paused: true,
        }
    }

    /// Runs the steps; returns the state word of the last observation.
    fn run(steps: &[Step]) -> Health {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut stall = Stall::new(THRESHOLD, start);
        let mut last = Health::Healthy { due: 0 };
        for step in steps {
            match *step {
                Step::Finished(s) => stall.finished(at(s)),
                Step::Seen {
                    at: s,
                    due,
                    transferring,
                    paused,
                } => {
                    let observation = Observation {
                        due,
                        transferring,
                        held: paused.then_some("the API key was refused"),
                    };
                    last = stall.assess(at(s), &observation);
                }
            }
        }
        last
    }

    #[rstest]
    #[case::idle(&[seen(0, 0), seen(3600, 0)], "ok")]
    #[case::due_within_the_threshold(&[seen(0, 5), seen(60, 5)], "ok")]
    #[case::due_past_the_threshold(&[seen(0, 5), seen(61, 5)], "stuck")]
    #[case::the_clock_starts_with_the_engine(&[seen(61, 5)], "stuck")]
    #[case::a_finish_resets_the_clock(&[seen(0, 5), Step::Finished(50), seen(100, 5)], "ok")]
    #[case::a_finish_long_ago_does_not(&[Step::Finished(10), seen(71, 5)], "stuck")]
    #[case::work_arriving_after_idle_starts_the_clock(&[seen(0, 0), seen(1000, 0), seen(1050, 3)], "ok")]
    #[case::work_arriving_after_idle_then_nothing(&[seen(1000, 0), seen(1061, 3)], "stuck")]
    #[case::a_long_put_is_movement(&[putting(0, 1), putting(500, 1), seen(550, 1)], "ok")]
    #[case::after_the_put_the_clock_runs(&[putting(500, 1), seen(561, 1)], "stuck")]
    #[case::paused_is_its_own_state(&[seen(0, 5), paused(500, 5)], "paused")]
    #[case::a_pause_is_not_a_stall_afterwards(&[paused(500, 5), seen(530, 5)], "ok")]
    #[case::recovers_once_a_submission_finishes(&[seen(0, 5), seen(100, 5), Step::Finished(101), seen(102, 5)], "ok")]
    #[case::recovers_once_the_outbox_empties(&[seen(100, 5), seen(101, 0)], "ok")]
    fn verdicts(#[case] steps: &[Step], #[case] want: &str) {
        assert_eq!(run(steps).state(), want, "{steps:?}");
    }

    #[test]
    fn a_stall_says_how_long_and_how_much() {
        let health = run(&[seen(0, 4), seen(90, 4)]);
        assert_eq!(
            health,
            Health::Stuck {
                due: 4,
                stalled: Duration::from_secs(90)
            }
        );
        assert_eq!(
            health.to_string(),
            "stuck: 4 object(s) due and no submission finished for 90s"
        );
        assert!(!health.is_healthy());
        assert!(!health.feeds_watchdog());
    }

    #[test]
    fn a_pause_is_unhealthy_but_feeds_the_watchdog() {
        let health = run(&[paused(0, 1)]);
        assert!(!health.is_healthy());
        assert!(health.feeds_watchdog());
        assert_eq!(health.to_string(), "paused: the API key was refused");
    }

    #[test]
    fn healthy_is_healthy_and_feeds_the_watchdog() {
        let health = run(&[seen(0, 2)]);
        assert!(health.is_healthy());
        assert!(health.feeds_watchdog());
    }

    #[test]
    fn an_earlier_finish_reported_late_does_not_move_the_clock_back() {
        let start = Instant::now();
        let mut stall = Stall::new(THRESHOLD, start);
        stall.finished(start + Duration::from_secs(50));
        stall.finished(start + Duration::from_secs(10));
        let seen = Observation {
            due: 1,
            transferring: false,
            held: None,
        };
        assert!(
            stall
                .assess(start + Duration::from_secs(100), &seen)
                .is_healthy()
        );
    }

    #[rstest]
    #[case::short_timeout_hits_the_floor(10, 0, 60)]
    #[case::long_timeout_triples(60, 0, 180)]
    #[case::a_quota_adds_three_slots(10, 6, 90)]
    #[case::a_slow_quota_adds_minutes(60, 1, 360)]
    fn default_thresholds(#[case] timeout_s: u64, #[case] rpm: u32, #[case] want_s: u64) {
        assert_eq!(
            default_stuck_after(Duration::from_secs(timeout_s), rpm),
            Duration::from_secs(want_s)
        );
    }
}
