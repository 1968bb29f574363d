//! The retry policy: the one place that decides what an API answer means for
//! the object that caused it (SPEC §7).
//!
//! Input: an [`Outcome`] (a status with its `Retry-After` and body, or a
//! transport error), a [`Context`] (how many tries came before, whether the
//! dialect is still being probed), the validated [`Backoff`] and a random
//! source. Output: a [`Decision`]: deliver, retry after a delay, dead-letter,
//! pause all submissions, or switch dialect. No I/O, no clock: the caller
//! parses `Retry-After` at receive time with [`parse_retry_after`] and carries
//! the decision out.
//!
//! Invariants:
//! - A retry delay is never shorter than the server's `Retry-After`
//!   (capped at [`RETRY_AFTER_CAP`]), and never longer than
//!   `max(backoff.max(), that Retry-After)`.
//! - Only the object's own faults (a permanent 4xx) dead-letter it. Problems
//!   of the whole setup (key refused, bucket or namespace missing, wrong
//!   endpoint) pause everything instead, so a fix resumes delivery without
//!   losing a single object.
//! - No reason string carries the API key: reasons are built from the status
//!   and the response body only, and the client scrubs the key from bodies
//!   before they reach this module.

use std::fmt;
use std::time::{Duration, SystemTime};

use rand::Rng;
use serde_json::Value;
use thiserror::Error;

/// The longest `Retry-After` that is honoured as given.
///
/// A server (or a proxy in front of it) asking for more than an hour is far more
/// likely misconfigured than meaning it; one hour still honours every real
/// quota window, while a typo such as `Retry-After: 86400000` would otherwise
/// park an object for years. Longer values are treated as one hour.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// How much of a non-JSON body goes into a reason.
const RAW_BODY_CHARS: usize = 500;
/// How much of a structured error message goes into a reason.
const MESSAGE_CHARS: usize = 1000;
/// How much of an envelope's `details` object is appended to its message.
const DETAILS_CHARS: usize = 300;

/// Exponential backoff with full jitter, validated when built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BackoffError {
    #[error("retry.initial must be greater than zero")]
    ZeroInitial,
    #[error(
        "retry.initial ({}) must not be greater than retry.max ({})",
        humantime::format_duration(*initial),
        humantime::format_duration(*max)
    )]
    InitialAboveMax { initial: Duration, max: Duration },
}

impl Backoff {
    /// `initial` must be positive (a zero base would retry in a hot loop) and
    /// not above `max`.
    pub fn try_new(initial: Duration, max: Duration) -> Result<Backoff, BackoffError> {
        if initial.is_zero() {
            return Err(BackoffError::ZeroInitial);
        }
        if initial > max {
            return Err(BackoffError::InitialAboveMax { initial, max });
        }
        Ok(Backoff { initial, max })
    }

    /// The upper bound of the delay after `attempt` earlier tries:
    /// `min(max, initial * 2^attempt)`, saturating instead of overflowing.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        2u32.checked_pow(attempt)
            .and_then(|factor| self.initial.checked_mul(factor))
            .map_or(self.max, |d| d.min(self.max))
    }

    /// A delay drawn uniformly from `[0, ceiling(attempt)]` ("full jitter"), so
    /// that many objects failing together do not come back together.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt).as_nanos();
        let nanos = rng.random_range(0..=ceiling);
        duration_from_nanos(nanos)
    }

    /// The longest backoff delay; also the interval of retries while paused.
    pub fn max(&self) -> Duration {
        self.max
    }

    pub fn initial(&self) -> Duration {
        self.initial
    }
}

/// Inverse of `Duration::as_nanos` for every value it can return.
fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    let sub = u32::try_from(nanos % NANOS_PER_SEC).expect("a remainder of 1e9 fits in u32");
    Duration::new(secs, sub)
}

/// Parses a `Retry-After` value: delta-seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`, or the obsolete forms `httpdate` accepts).
///
/// A date in the past means "now" (`Duration::ZERO`). Anything else (negative
/// or fractional numbers, garbage) is `None`: the header is then ignored and
/// plain backoff applies.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // A number too large for u64 is still a number: saturate, the cap in
        // `classify` bounds it anyway.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What came back from one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// The server answered.
    Status {
        code: u16,
        /// Parsed `Retry-After`, if the header was there and valid.
        retry_after: Option<Duration>,
        body: &'a [u8],
    },
    /// No (complete) answer.
    Transport(TransportError),
}

/// A request that got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{kind} error: {message}")]
pub struct TransportError {
    pub kind: TransportKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// The connection could not be made (DNS, refused, TLS handshake).
    Connect,
    /// `api.timeout` elapsed.
    Timeout,
    /// The connection broke while a body was being sent or received.
    Body,
    /// Anything else (connection reset before the answer, protocol errors).
    Other,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Connect => "connect",
            TransportKind::Timeout => "timeout",
            TransportKind::Body => "body",
            TransportKind::Other => "transport",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do about an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delivered: record it.
    Success,
    /// Transient: keep it in the outbox and try again after `after`.
    Retry { after: Duration, reason: String },
    /// The server refused this object for good: keep it with the reason.
    DeadLetter { reason: String },
    /// Not this object's fault (key, bucket, endpoint): pause all submissions,
    /// report unhealthy, probe again every `retry.max`, keep the object.
    Pause { reason: String },
    /// Under `api.dialect = "auto"`: the create endpoint of the dialect being
    /// probed does not exist; switch dialect and resend.
    WrongDialect { reason: String },
}

impl Decision {
    /// A short stable name, for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Success => "success",
            Decision::Retry { .. } => "retry",
            Decision::DeadLetter { .. } => "dead_letter",
            Decision::Pause { .. } => "pause",
            Decision::WrongDialect { .. } => "wrong_dialect",
        }
    }

    /// The reason, for every decision but success.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Decision::Success => None,
            Decision::Retry { reason, .. }
            | Decision::DeadLetter { reason }
            | Decision::Pause { reason }
            | Decision::WrongDialect { reason } => Some(reason),
        }
    }
}

/// What the classifier needs to know besides the outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// How many times this request was tried before the one that produced the
    /// outcome: 0 for the first try. Drives the backoff ceiling.
    pub attempt: u32,
    /// `true` under `api.dialect = "auto"` before a dialect is known: a missing
    /// endpoint then means "try the other dialect", not "misconfigured".
    pub probing_dialect: bool,
}

const KEY_HINT: &str = "check api.api_key_file, the systemd credential mixpeek_api_key, \
     or the environment variable named by api.api_key_env (default MIXPEEK_API_KEY)";

/// Decides what an outcome means. The one classifier of every retry rule.
///
/// | outcome | decision |
/// |---|---|
/// | 2xx | success |
/// | transport errors, 408, 425, 429, 500, 502, 503, 504, other 5xx, codes outside 100–599 | retry |
/// | 401, 403 | pause (key) |
/// | 404 with Mixpeek's error envelope naming the bucket or the namespace | pause |
/// | 404 without Mixpeek's error envelope (a route that does not exist) | wrong dialect while probing, else pause |
/// | other 404 with the envelope | dead letter |
/// | 405 | wrong dialect while probing, else pause |
/// | 501, 505 | pause: the server will not do this request however often it is sent |
/// | 1xx, 3xx (redirects are not followed) | pause: `api.base_url` points at the wrong place |
/// | 400, 413, 415, 422, other 4xx | dead letter |
///
/// Other 5xx (507, 520–524 from CDNs, 511 from captive portals on edge links)
/// are retried: the outbox keeps the object, so retrying is the safe choice for
/// anything that may be transient.
pub fn classify(
    outcome: &Outcome,
    ctx: &Context,
    backoff: &Backoff,
    rng: &mut impl Rng,
) -> Decision {
    let (code, retry_after, body) = match outcome {
        Outcome::Transport(err) => {
            return Decision::Retry {
                after: backoff.delay(ctx.attempt, rng),
                reason: err.to_string(),
            };
        }
        Outcome::Status {
            code,
            retry_after,
            body,
        } => (*code, *retry_after, *body),
    };
    let retry = |rng: &mut _, reason: String| {
        let floor = retry_after.map_or(Duration::ZERO, |d| d.min(RETRY_AFTER_CAP));
        Decision::Retry {
            after: backoff.delay(ctx.attempt, rng).max(floor),
            reason,
        }
    };
    let http = |what: &str| format!("HTTP {code}{what}: {}", error_message(body));
    match code {
        200..=299 => Decision::Success,
        408 | 425 | 429 | 500 | 502 | 503 | 504 => retry(rng, http("")),
        401 | 403 => Decision::Pause {
            reason: format!(
                "the API key was refused (HTTP {code}): {KEY_HINT}; server said: {}",
                error_message(body)
            ),
        },
        404 => classify_404(body, ctx),
        405 if ctx.probing_dialect => Decision::WrongDialect {
            reason: http(" (method not allowed at this dialect's create endpoint)"),
        },
        405 => Decision::Pause {
            reason: format!(
                "the endpoint does not accept this request (HTTP 405) at api.base_url: \
                 check api.base_url and api.dialect; server said: {}",
                error_message(body)
            ),
        },
        400..=499 => Decision::DeadLetter { reason: http("") },
        501 | 505 => Decision::Pause {
            reason: format!(
                "the server cannot handle this request (HTTP {code}): check api.base_url \
                 and api.dialect; server said: {}",
                error_message(body)
            ),
        },
        100..=199 | 300..=399 => Decision::Pause {
            reason: format!(
                "unexpected HTTP {code} (redirects are not followed): set api.base_url \
                 to the API's final address; server said: {}",
                error_message(body)
            ),
        },
        _ => retry(rng, http("")),
    }
}

fn classify_404(body: &[u8], ctx: &Context) -> Decision {
    let Some(envelope) = mixpeek_error(body) else {
        let reason = format!(
            "the create endpoint does not exist at api.base_url (HTTP 404: {}): \
             check api.base_url and api.dialect",
            error_message(body)
        );
        return if ctx.probing_dialect {
            Decision::WrongDialect { reason }
        } else {
            Decision::Pause { reason }
        };
    };
    match missing_container(&envelope) {
        Some(Container::Bucket) => Decision::Pause {
            reason: format!(
                "the bucket was not found (HTTP 404: {}): create it or fix watch.bucket",
                error_message(body)
            ),
        },
        Some(Container::Namespace) => Decision::Pause {
            reason: format!(
                "the namespace was not found (HTTP 404: {}): check api.namespace",
                error_message(body)
            ),
        },
        None => Decision::DeadLetter {
            reason: format!("HTTP 404: {}", error_message(body)),
        },
    }
}

enum Container {
    Bucket,
    Namespace,
}

/// Whether a Mixpeek 404 envelope says the bucket or namespace itself is
/// missing (rather than something the object refers to).
///
/// `error.details.resource` is authoritative when present (Mixpeek's own
/// example: `{"resource": "namespace", "id": "ns_123"}`). Without it, a
/// `NotFoundError` whose message names the bucket or namespace counts.
fn missing_container(error: &serde_json::Map<String, Value>) -> Option<Container> {
    let from_word = |word: &str| {
        if word.contains("bucket") {
            Some(Container::Bucket)
        } else if word.contains("namespace") {
            Some(Container::Namespace)
        } else {
            None
        }
    };
    let resource = error
        .get("details")
        .and_then(|d| d.get("resource"))
        .and_then(Value::as_str);
    if let Some(resource) = resource {
        return from_word(&resource.to_ascii_lowercase());
    }
    let is_not_found = error
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("NotFoundError"));
    let message = error.get("message").and_then(Value::as_str)?;
    if is_not_found {
        from_word(&message.to_ascii_lowercase())
    } else {
        None
    }
}

/// The `error` object of Mixpeek's envelope `{"error": {"message": …, "type": …}}`.
fn mixpeek_error(body: &[u8]) -> Option<serde_json::Map<String, Value>> {
    let Value::Object(mut root) = serde_json::from_slice::<Value>(body).ok()? else {
        return None;
    };
    match root.remove("error")? {
        Value::Object(error) if error.get("message").is_some_and(Value::is_string) => Some(error),
        _ => None,
    }
}

/// Whether `body` is Mixpeek's error envelope (as opposed to a proxy's page or
/// FastAPI's routing `{"detail": "Not Found"}`).
pub fn is_mixpeek_error_body(body: &[u8]) -> bool {
    mixpeek_error(body).is_some()
}

/// The server's message, for reasons and dead letters.
///
/// - Mixpeek's envelope → `"{type}: {message}"`, plus its `details` when
///   they carry something (field errors, ids).
/// - FastAPI's `{"detail": [{"loc", "msg", "type"}]}` → `"body.blobs.0.property: msg; …"`.
/// - `{"detail": "text"}` → the text.
/// - Anything else → the body as (lossy) UTF-8, cut to 500 characters;
///   an empty body → `"(empty body)"`.
pub fn error_message(body: &[u8]) -> String {
    let structured = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(root)) => envelope_message(&root).or_else(|| detail_message(&root)),
        _ => None,
    };
    if let Some(message) = structured {
        return truncate_chars(&message, MESSAGE_CHARS);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        truncate_chars(text, RAW_BODY_CHARS)
    }
}

fn envelope_message(root: &serde_json::Map<String, Value>) -> Option<String> {
    let error = match root.get("error")? {
        // Some endpoints (batch `failed[]`) put a plain string there.
        Value::String(s) => return Some(s.clone()),
        Value::Object(error) => error,
        _ => return None,
    };
    let message = error.get("message").and_then(Value::as_str);
    let kind = error.get("type").and_then(Value::as_str);
    let mut out = match (kind, message) {
        (Some(kind), Some(message)) => format!("{kind}: {message}"),
        (None, Some(text)) | (Some(text), None) => text.to_owned(),
        (None, None) => return None,
    };
    match error.get("details") {
        None | Some(Value::Null) => {}
        Some(Value::Object(d)) if d.is_empty() => {}
        Some(details) => {
            // Validation errors inside details read best in the FastAPI form.
            let text = details
                .get("errors")
                .and_then(validation_list)
                .unwrap_or_else(|| details.to_string());
            out.push_str(" (");
            out.push_str(&truncate_chars(&text, DETAILS_CHARS));
            out.push(')');
        }
    }
    Some(out)
}

fn detail_message(root: &serde_json::Map<String, Value>) -> Option<String> {
    match root.get("detail")? {
        Value::String(s) => Some(s.clone()),
        list @ Value::Array(_) => validation_list(list),
        _ => None,
    }
}

/// `[{"loc": ["body", "blobs", 0, "property"], "msg": "…"}, …]` →
/// `"body.blobs.0.property: …; …"`. `None` unless every entry has a `msg`.
fn validation_list(list: &Value) -> Option<String> {
    let items = list.as_array()?;
    if items.is_empty() {
        return None;
    }
    let parts = items
        .iter()
        .map(|item| {
            let msg = item.get("msg").and_then(Value::as_str)?;
            let loc = item
                .get("loc")
                .and_then(Value::as_array)
                .map(|loc| {
                    loc.iter()
                        .map(|p| match p {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(".")
                })
                .unwrap_or_default();
            Some(if loc.is_empty() {
                msg.to_owned()
            } else {
                format!("{loc}: {msg}")
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(parts.join("; "))
}

/// Cuts `s` to at most `max` characters, marking the cut with `…`.
fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((end, _)) => format!("{}…", &s[..end]),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rstest::rstest;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn backoff() -> Backoff {
        Backoff::try_new(secs(1), secs(300)).unwrap()
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    const MIXPEEK_422: &str = r#"{"success":false,"status":422,"error":{"message":"Schema validation failed","type":"ValidationError","details":{"errors":[{"loc":["body","blobs",0,"type"],"msg":"Input should be 'image' or 'pdf'","type":"enum"}]}}}"#;
    const BUCKET_404_RESOURCE: &str = r#"{"success":false,"status":404,"error":{"message":"Not found","type":"NotFoundError","details":{"resource":"bucket","id":"contracts"}}}"#;
    const BUCKET_404_MESSAGE: &str = r#"{"success":false,"status":404,"error":{"message":"Bucket 'contracts' not found","type":"NotFoundError"}}"#;
    const NAMESPACE_404: &str = r#"{"success":false,"status":404,"error":{"details":{"id":"ns_123","resource":"namespace"},"message":"Namespace not found","type":"NotFoundError"}}"#;
    const OBJECT_404: &str = r#"{"success":false,"status":404,"error":{"message":"Upload upl_1 not found","type":"NotFoundError","details":{"resource":"upload","id":"upl_1"}}}"#;
    const OTHER_404_MENTIONS_BUCKET: &str = r#"{"error":{"message":"bucket schema references a missing collection","type":"ReferenceError"}}"#;
    const FASTAPI_404: &str = r#"{"detail":"Not Found"}"#;

    fn status(code: u16, body: &'static str) -> Outcome<'static> {
        Outcome::Status {
            code,
            retry_after: None,
            body: body.as_bytes(),
        }
    }

    fn transport(kind: TransportKind) -> Outcome<'static> {
        Outcome::Transport(TransportError {
            kind,
            message: "boom".into(),
        })
    }

    #[rstest]
    #[case::ok_200(status(200, "{}"), false, "success")]
    #[case::created_201(status(201, ""), false, "success")]
    #[case::accepted_202(status(202, ""), true, "success")]
    #[case::no_content_204(status(204, ""), false, "success")]
    #[case::connect(transport(TransportKind::Connect), false, "retry")]
    #[case::timeout(transport(TransportKind::Timeout), false, "retry")]
    #[case::body(transport(TransportKind::Body), false, "retry")]
    #[case::other(transport(TransportKind::Other), true, "retry")]
    #[case::request_timeout_408(status(408, ""), false, "retry")]
    #[case::too_early_425(status(425, ""), false, "retry")]
    #[case::too_many_429(status(429, ""), false, "retry")]
    #[case::internal_500(status(500, "oops"), false, "retry")]
    #[case::bad_gateway_502(status(502, "<html>"), false, "retry")]
    #[case::unavailable_503(status(503, ""), true, "retry")]
    #[case::gateway_timeout_504(status(504, ""), false, "retry")]
    #[case::insufficient_storage_507(status(507, ""), false, "retry")]
    #[case::captive_portal_511(status(511, ""), false, "retry")]
    #[case::cdn_520(status(520, ""), false, "retry")]
    #[case::nonsense_600(status(600, ""), false, "retry")]
    #[case::not_implemented_501(status(501, ""), false, "pause")]
    #[case::version_505(status(505, ""), false, "pause")]
    #[case::unauthorized_401(status(401, ""), false, "pause")]
    #[case::unauthorized_probing_401(status(401, ""), true, "pause")]
    #[case::forbidden_403(status(403, "{}"), false, "pause")]
    #[case::redirect_301(status(301, ""), false, "pause")]
    #[case::redirect_308(status(308, ""), true, "pause")]
    #[case::bucket_404_resource(status(404, BUCKET_404_RESOURCE), false, "pause")]
    #[case::bucket_404_resource_probing(status(404, BUCKET_404_RESOURCE), true, "pause")]
    #[case::bucket_404_message(status(404, BUCKET_404_MESSAGE), false, "pause")]
    #[case::namespace_404(status(404, NAMESPACE_404), false, "pause")]
    #[case::object_404(status(404, OBJECT_404), false, "dead_letter")]
    #[case::object_404_probing(status(404, OBJECT_404), true, "dead_letter")]
    #[case::other_404(status(404, OTHER_404_MENTIONS_BUCKET), false, "dead_letter")]
    #[case::route_404_probing(status(404, FASTAPI_404), true, "wrong_dialect")]
    #[case::route_404(status(404, FASTAPI_404), false, "pause")]
    #[case::empty_404_probing(status(404, ""), true, "wrong_dialect")]
    #[case::html_404(status(404, "<h1>nope</h1>"), false, "pause")]
    #[case::method_405_probing(status(405, ""), true, "wrong_dialect")]
    #[case::method_405(status(405, ""), false, "pause")]
    #[case::bad_request_400(status(400, "{}"), false, "dead_letter")]
    #[case::bad_request_400_probing(status(400, "{}"), true, "dead_letter")]
    #[case::conflict_409(status(409, ""), false, "dead_letter")]
    #[case::gone_410(status(410, ""), false, "dead_letter")]
    #[case::too_large_413(status(413, ""), false, "dead_letter")]
    #[case::media_type_415(status(415, ""), false, "dead_letter")]
    #[case::unprocessable_422(status(422, MIXPEEK_422), false, "dead_letter")]
    #[case::teapot_418(status(418, ""), false, "dead_letter")]
    #[case::legal_451(status(451, ""), false, "dead_letter")]
    fn classify_table(#[case] outcome: Outcome, #[case] probing: bool, #[case] expected: &str) {
        let ctx = Context {
            attempt: 0,
            probing_dialect: probing,
        };
        let decision = classify(&outcome, &ctx, &backoff(), &mut rng());
        assert_eq!(decision.kind(), expected, "{decision:?}");
        if let Outcome::Status { code, .. } = outcome
            && let Some(reason) = decision.reason()
        {
            assert!(reason.contains(&code.to_string()), "{reason}");
        }
    }

    #[test]
    fn dead_letter_reason_holds_the_server_message() {
        let ctx = Context {
            attempt: 0,
            probing_dialect: false,
        };
        let d = classify(&status(422, MIXPEEK_422), &ctx, &backoff(), &mut rng());
        assert_eq!(
            d,
            Decision::DeadLetter {
                reason: "HTTP 422: ValidationError: Schema validation failed \
                         (body.blobs.0.type: Input should be 'image' or 'pdf')"
                    .into()
            }
        );
    }

    #[test]
    fn pause_reasons_say_what_to_fix() {
        let ctx = Context {
            attempt: 3,
            probing_dialect: false,
        };
        let reason = |o: Outcome| {
            classify(&o, &ctx, &backoff(), &mut rng())
                .reason()
                .unwrap()
                .to_owned()
        };
        let r401 = reason(status(
            401,
            r#"{"error":{"message":"bad key","type":"AuthError"}}"#,
        ));
        assert!(r401.contains("API key was refused (HTTP 401)"), "{r401}");
        assert!(r401.contains("api.api_key_file"), "{r401}");
        assert!(r401.contains("AuthError: bad key"), "{r401}");
        assert!(reason(status(404, BUCKET_404_MESSAGE)).contains("bucket was not found"));
        assert!(reason(status(404, NAMESPACE_404)).contains("api.namespace"));
        assert!(reason(status(404, FASTAPI_404)).contains("check api.base_url and api.dialect"));
        assert!(reason(status(405, "")).contains("api.dialect"));
    }

    #[test]
    fn transport_reason_names_the_kind() {
        let ctx = Context {
            attempt: 0,
            probing_dialect: false,
        };
        let d = classify(
            &transport(TransportKind::Connect),
            &ctx,
            &backoff(),
            &mut rng(),
        );
        assert_eq!(d.reason(), Some("connect error: boom"));
    }

    #[rstest]
    #[case::seconds("120", Some(secs(120)))]
    #[case::seconds_padded(" 7 ", Some(secs(7)))]
    #[case::zero("0", Some(Duration::ZERO))]
    #[case::huge("99999999999999999999999", Some(Duration::from_secs(u64::MAX)))]
    #[case::imf_fixdate_future("Thu, 01 Jan 2026 00:01:30 GMT", Some(secs(90)))]
    #[case::imf_fixdate_past("Wed, 31 Dec 2025 23:00:00 GMT", Some(Duration::ZERO))]
    #[case::imf_fixdate_now("Thu, 01 Jan 2026 00:00:00 GMT", Some(Duration::ZERO))]
    #[case::rfc850("Thursday, 01-Jan-26 00:00:10 GMT", Some(secs(10)))]
    #[case::asctime("Thu Jan  1 00:00:20 2026", Some(secs(20)))]
    #[case::negative("-5", None)]
    #[case::fraction("1.5", None)]
    #[case::empty("", None)]
    #[case::garbage("soon", None)]
    fn retry_after_forms(#[case] value: &str, #[case] expected: Option<Duration>) {
        // 2026-01-01T00:00:00Z
        let now = SystemTime::UNIX_EPOCH + secs(1_767_225_600);
        assert_eq!(parse_retry_after(value, now), expected);
    }

    #[rstest]
    #[case::short_floor(secs(2))]
    #[case::above_backoff_max(secs(900))]
    fn retry_after_is_a_floor(#[case] retry_after: Duration) {
        let b = backoff();
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let d = classify(
                &Outcome::Status {
                    code: 429,
                    retry_after: Some(retry_after),
                    body: b"",
                },
                &Context {
                    attempt: 2,
                    probing_dialect: false,
                },
                &b,
                &mut rng,
            );
            let Decision::Retry { after, .. } = d else {
                panic!("{d:?}")
            };
            assert!(after >= retry_after, "{after:?} < {retry_after:?}");
            assert!(after <= retry_after.max(b.ceiling(2)));
        }
    }

    #[test]
    fn retry_after_is_capped_at_an_hour() {
        let d = classify(
            &Outcome::Status {
                code: 503,
                retry_after: Some(secs(86_400 * 365)),
                body: b"",
            },
            &Context {
                attempt: 0,
                probing_dialect: false,
            },
            &backoff(),
            &mut rng(),
        );
        assert!(matches!(d, Decision::Retry { after, .. } if after == RETRY_AFTER_CAP));
    }

    #[test]
    fn retry_after_on_a_dead_letter_is_ignored() {
        let d = classify(
            &Outcome::Status {
                code: 422,
                retry_after: Some(secs(5)),
                body: b"",
            },
            &Context {
                attempt: 0,
                probing_dialect: false,
            },
            &backoff(),
            &mut rng(),
        );
        assert_eq!(d.kind(), "dead_letter");
    }

    #[rstest]
    #[case::zero(Duration::ZERO, secs(1), Err(BackoffError::ZeroInitial))]
    #[case::above(secs(10), secs(5), Err(BackoffError::InitialAboveMax { initial: secs(10), max: secs(5) }))]
    #[case::equal(secs(5), secs(5), Ok(()))]
    #[case::default(secs(1), secs(300), Ok(()))]
    #[case::tiny(Duration::from_nanos(1), Duration::from_nanos(1), Ok(()))]
    fn try_new_validates(
        #[case] initial: Duration,
        #[case] max: Duration,
        #[case] expected: Result<(), BackoffError>,
    ) {
        assert_eq!(Backoff::try_new(initial, max).map(|_| ()), expected);
    }

    #[test]
    fn backoff_error_names_the_settings() {
        let e = Backoff::try_new(secs(10), secs(5)).unwrap_err().to_string();
        assert_eq!(
            e,
            "retry.initial (10s) must not be greater than retry.max (5s)"
        );
    }

    #[rstest]
    #[case(0, secs(1))]
    #[case(1, secs(2))]
    #[case(5, secs(32))]
    #[case(8, secs(256))]
    #[case(9, secs(300))]
    #[case(31, secs(300))]
    #[case(32, secs(300))]
    #[case(u32::MAX, secs(300))]
    fn ceilings(#[case] attempt: u32, #[case] expected: Duration) {
        assert_eq!(backoff().ceiling(attempt), expected);
    }

    #[test]
    fn delay_is_jittered_not_constant() {
        let b = backoff();
        let mut rng = rng();
        let delays: std::collections::BTreeSet<_> = (0..50).map(|_| b.delay(4, &mut rng)).collect();
        assert!(delays.len() > 40, "{delays:?}");
    }

    #[test]
    fn delay_handles_the_largest_durations() {
        let b = Backoff::try_new(secs(1), Duration::MAX).unwrap();
        assert_eq!(b.ceiling(200), Duration::MAX);
        assert!(b.delay(200, &mut rng()) <= Duration::MAX);
        assert_eq!(duration_from_nanos(Duration::MAX.as_nanos()), Duration::MAX);
    }

    fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (1u64..=10_000_000_000).prop_map(Duration::from_nanos),
            (1u64..=u64::MAX).prop_map(Duration::from_secs),
            (0u64..=u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        ]
    }

    proptest! {
        #[test]
        fn delay_within_ceiling_within_max(
            a in any_duration(),
            b in any_duration(),
            attempt in any::<u32>(),
            seed in any::<u64>(),
        ) {
            prop_assume!(!a.is_zero());
            let (initial, max) = if a <= b { (a, b) } else { (b, a) };
            let backoff = Backoff::try_new(initial, max).unwrap();
            let ceiling = backoff.ceiling(attempt);
            prop_assert!(ceiling <= backoff.max());
            prop_assert!(ceiling >= initial);
            let delay = backoff.delay(attempt, &mut StdRng::seed_from_u64(seed));
            prop_assert!(delay <= ceiling);
        }

        #[test]
        fn ceilings_are_monotone(
            a in any_duration(),
            b in any_duration(),
            attempt in 0u32..80,
        ) {
            prop_assume!(!a.is_zero());
            let (initial, max) = if a <= b { (a, b) } else { (b, a) };
            let backoff = Backoff::try_new(initial, max).unwrap();
            prop_assert!(backoff.ceiling(attempt) <= backoff.ceiling(attempt + 1));
        }

        #[test]
        fn retry_never_before_retry_after(
            attempt in 0u32..64,
            retry_after in 0u64..10_000,
            code in prop::sample::select(vec![408u16, 425, 429, 500, 502, 503, 504]),
            seed in any::<u64>(),
        ) {
            let backoff = backoff();
            let d = classify(
                &Outcome::Status { code, retry_after: Some(secs(retry_after)), body: b"" },
                &Context { attempt, probing_dialect: false },
                &backoff,
                &mut StdRng::seed_from_u64(seed),
            );
            let Decision::Retry { after, .. } = d else { panic!("{d:?}") };
            prop_assert!(after >= secs(retry_after).min(RETRY_AFTER_CAP));
            prop_assert!(after <= secs(retry_after).min(RETRY_AFTER_CAP).max(backoff.max()));
        }

        #[test]
        fn error_message_never_panics_and_is_bounded(body in prop::collection::vec(any::<u8>(), 0..2000)) {
            let m = error_message(&body);
            prop_assert!(!m.is_empty());
            prop_assert!(m.chars().count() <= MESSAGE_CHARS + 1);
        }
    }

    #[rstest]
    #[case::envelope(
        r#"{"success":false,"status":400,"error":{"message":"Invalid blob","type":"BadRequestError"}}"#,
        "BadRequestError: Invalid blob"
    )]
    #[case::envelope_null_details(
        r#"{"error":{"message":"Invalid blob","type":"BadRequestError","details":null}}"#,
        "BadRequestError: Invalid blob"
    )]
    #[case::envelope_with_ids(
        NAMESPACE_404,
        r#"NotFoundError: Namespace not found ({"id":"ns_123","resource":"namespace"})"#
    )]
    #[case::envelope_no_type(r#"{"error":{"message":"just this"}}"#, "just this")]
    #[case::envelope_string(r#"{"error":"URL validation failed"}"#, "URL validation failed")]
    #[case::fastapi_list(
        r#"{"detail":[{"loc":["body","blobs",0,"property"],"msg":"String should have at most 100 characters","type":"string_too_long"},{"loc":["query","auto_process"],"msg":"bad bool","type":"bool_parsing"}]}"#,
        "body.blobs.0.property: String should have at most 100 characters; query.auto_process: bad bool"
    )]
    #[case::fastapi_no_loc(r#"{"detail":[{"msg":"nope","type":"x"}]}"#, "nope")]
    #[case::fastapi_string(r#"{"detail":"Not Found"}"#, "Not Found")]
    #[case::json_other(r#"{"message":"hi"}"#, r#"{"message":"hi"}"#)]
    #[case::json_array("[1,2]", "[1,2]")]
    #[case::html(
        "<html><body>502 Bad Gateway</body></html>\n",
        "<html><body>502 Bad Gateway</body></html>"
    )]
    #[case::empty("", "(empty body)")]
    #[case::blank(" \r\n", "(empty body)")]
    fn error_messages(#[case] body: &str, #[case] expected: &str) {
        assert_eq!(error_message(body.as_bytes()), expected);
    }

    #[test]
    fn error_message_of_binary_and_long_bodies() {
        assert_eq!(error_message(b"ab\xffcd"), "ab\u{fffd}cd");
        let long = "é".repeat(600);
        let m = error_message(long.as_bytes());
        assert_eq!(m, format!("{}…", "é".repeat(500)));
    }

    #[rstest]
    #[case(BUCKET_404_RESOURCE, true)]
    #[case(r#"{"error":{"message":"x","type":"T"}}"#, true)]
    #[case(r#"{"error":{"type":"T"}}"#, false)]
    #[case(r#"{"error":"x"}"#, false)]
    #[case(FASTAPI_404, false)]
    #[case("not json", false)]
    #[case("", false)]
    fn mixpeek_error_bodies(#[case] body: &str, #[case] expected: bool) {
        assert_eq!(is_mixpeek_error_body(body.as_bytes()), expected);
    }
}
