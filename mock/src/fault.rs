//! Scripted misbehaviour: one-shot faults and lasting outages.
//!
//! Role: the values a test hands to [`crate::MockServer::push_fault`],
//! [`crate::MockServer::push_presigned_fault`] and [`crate::MockServer::set_outage`].
//! They only describe what to do; the request gate in `routes.rs` and the
//! presigned PUT handler in `upload_routes.rs` carry them out.
//! Invariants: a fault answers exactly one request of its script (API requests,
//! or presigned PUTs); an outage lasts until it is cleared.

use std::time::Duration;

use serde_json::Value;

/// One scripted answer, consumed FIFO by the next API (`/v1/...`) request, before
/// the rate limit, authentication and validation are looked at.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// HTTP status to answer.
    pub status: u16,
    /// `Retry-After` header value (seconds or an HTTP date), sent as is.
    pub retry_after: Option<String>,
    /// Time to wait before answering (the request is read first).
    pub delay: Option<Duration>,
    /// Body to send; `None` sends Mixpeek's error envelope for `status`.
    pub body: Option<Value>,
}

impl Fault {
    /// A fault answering `status` at once with the default envelope.
    pub fn status(status: u16) -> Fault {
        Fault {
            status,
            retry_after: None,
            delay: None,
            body: None,
        }
    }

    /// Sends `Retry-After: <value>` with the answer.
    #[must_use]
    pub fn retry_after(mut self, value: impl Into<String>) -> Fault {
        self.retry_after = Some(value.into());
        self
    }

    /// Waits `delay` before answering (to exercise client timeouts).
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Fault {
        self.delay = Some(delay);
        self
    }

    /// Answers this body instead of the default envelope.
    #[must_use]
    pub fn body(mut self, body: Value) -> Fault {
        self.body = Some(body);
        self
    }
}

/// A lasting failure of the whole emulator, until `set_outage(None)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Every request (any path) is answered with this status and the default
    /// envelope, e.g. 503.
    Status(u16),
    /// The listening socket is closed and open connections are dropped, so
    /// clients get "connection refused"; clearing the outage listens again on
    /// the same port.
    ClosedPort,
}

/// An entry of the fault script.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scripted {
    Answer(Fault),
    /// Read the request, wait `delay`, then close the connection without answering.
    DropConnection {
        delay: Option<Duration>,
    },
}

/// An entry of the presigned-PUT script (consumed FIFO by `PUT /presigned/...`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PresignedScripted {
    /// Answer this instead of storing the content; a fault without a body
    /// answers S3's XML error for its status.
    Answer(Fault),
    /// Read at least this many body bytes (whole chunks as they arrive), then
    /// close the connection without an answer.
    DropAfter(u64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builders_fill_every_field() {
        let fault = Fault::status(429)
            .retry_after("2")
            .delay(Duration::from_millis(5))
            .body(json!({"x": 1}));
        assert_eq!(
            fault,
            Fault {
                status: 429,
                retry_after: Some("2".to_string()),
                delay: Some(Duration::from_millis(5)),
                body: Some(json!({"x": 1})),
            }
        );
        assert_eq!(Fault::status(503).body, None);
    }
}
