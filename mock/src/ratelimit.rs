//! The emulator's request quota: a fixed window of 60 seconds.
//!
//! Role: decide whether one more API request fits the per-minute quota.
//! Inputs: the instant the request arrived. Outputs: admitted, or the time until
//! the window resets (sent as `Retry-After`, rounded up to whole seconds).
//!
//! Semantics (fixed window, not a sliding one or a token bucket): a window of
//! 60 s opens with the first counted request after the previous window ended;
//! within it the first `limit` requests are admitted and every further one is
//! refused until the window ends. Refused requests do not use up quota, so a
//! client retrying early never pushes the reset further away. What is counted
//! is decided by the caller (`State::admit`): every `/v1/...` request that no
//! outage or scripted fault answered first, whatever its later status (401,
//! 404, 422 included); presigned PUTs (`/presigned/...`) never.
//! Invariants: at most `limit` requests are admitted per window; an idle
//! emulator never refuses its first request. No clock is read here: callers
//! pass `now`.

use std::time::{Duration, Instant};

/// Length of one quota window.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// How many API requests the quota stage admitted and refused, since start.
/// Without a configured limit every request counted is admitted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitStats {
    /// Requests that passed the quota stage.
    pub admitted: u64,
    /// Requests answered 429 by the quota (scripted 429 faults are not counted).
    pub limited: u64,
}

/// Fixed-window counter; see the module doc.
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    limit: u32,
    window_start: Option<Instant>,
    used: u32,
}

impl RateLimiter {
    pub(crate) fn new(limit_per_minute: u32) -> Self {
        RateLimiter {
            limit: limit_per_minute,
            window_start: None,
            used: 0,
        }
    }

    /// Counts a request arriving at `now`; `Err(wait)` when it is over the quota,
    /// with `wait` the time left until the window resets.
    pub(crate) fn check(&mut self, now: Instant) -> Result<(), Duration> {
        let start = match self.window_start {
            Some(start) if now.saturating_duration_since(start) < WINDOW => start,
            _ => {
                self.window_start = Some(now);
                self.used = 0;
                now
            }
        };
        if self.used < self.limit {
            self.used += 1;
            Ok(())
        } else {
            Err(WINDOW.saturating_sub(now.saturating_duration_since(start)))
        }
    }
}

/// `Retry-After` seconds for a wait: rounded up, never 0 (0 would invite a
/// client to hammer the quota again at once).
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let whole = wait.as_secs();
    let secs = if wait.subsec_nanos() > 0 {
        whole + 1
    } else {
        whole
    };
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn admits_limit_then_refuses_until_the_window_ends() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(3);
        for i in 0..3 {
            assert_eq!(limiter.check(t0 + Duration::from_secs(i)), Ok(()));
        }
        assert_eq!(
            limiter.check(t0 + Duration::from_secs(20)),
            Err(Duration::from_secs(40))
        );
        assert_eq!(
            limiter.check(t0 + Duration::from_millis(59_500)),
            Err(Duration::from_millis(500))
        );
        assert_eq!(limiter.check(t0 + WINDOW), Ok(()));
    }

    #[test]
    fn a_new_window_starts_with_the_first_request_after_idle() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(1);
        assert_eq!(limiter.check(t0), Ok(()));
        let later = t0 + Duration::from_secs(600);
        assert_eq!(limiter.check(later), Ok(()));
        assert_eq!(
            limiter.check(later + Duration::from_secs(1)),
            Err(Duration::from_secs(59))
        );
    }

    #[test]
    fn zero_limit_refuses_everything() {
        let mut limiter = RateLimiter::new(0);
        assert!(limiter.check(Instant::now()).is_err());
    }

    #[rstest]
    #[case(Duration::from_secs(40), 40)]
    #[case(Duration::from_millis(39_001), 40)]
    #[case(Duration::from_millis(1), 1)]
    #[case(Duration::ZERO, 1)]
    fn retry_after_rounds_up(#[case] wait: Duration, #[case] secs: u64) {
        assert_eq!(retry_after_secs(wait), secs);
    }
}
