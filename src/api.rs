//! The Mixpeek HTTP client (SPEC §7): the key, the headers, the wire.
//!
//! Inputs: the `[api]` config, the API key (from [`load_api_key`]) and the
//! ready-made [`HttpRequest`]s that `pipeline::request` builds. Outputs: a
//! [`Response`] per call, which is either the status, the parsed `Retry-After`
//! and the body, or a [`TransportError`]; [`Response::outcome`] feeds it to
//! `pipeline::retry::classify`, which alone decides what it means. This module
//! decides nothing about retries.
//!
//! Invariants:
//! - Every call carries `Authorization: Bearer <key>` (marked sensitive),
//!   `X-Namespace` when configured, `Content-Type: application/json` and
//!   `User-Agent: mixpeek-ingest/<version>`.
//! - The key never appears in a URL, an error, a `Debug` or `Display` output,
//!   or a response body handed out (a server echoing it gets it scrubbed), so
//!   no log line, dead-letter reason or panic message can leak it.
//! - Redirects are not followed: a redirected POST would turn into a GET and
//!   lose its body, so a 3xx comes back as a status for the classifier to turn
//!   into a "fix api.base_url" pause.
//! - A response body is read up to [`MAX_BODY_BYTES`]; a larger one is cut and
//!   flagged, so a broken server cannot make the daemon's memory grow.
//!
//! The client is for the API only: its default headers include the key, so it
//! must never be used for presigned upload URLs.
//!
//! Every answer (or failure to get one) passes through one place,
//! `ApiClient::execute`, which counts it by status code in the engine's
//! `telemetry::Counters` when the client was given them ([`ApiClient::counting`]).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use crate::config::ApiConfig;
use crate::pipeline::HttpRequest;
use crate::pipeline::retry::{self, Outcome, TransportError, TransportKind};
use crate::telemetry::{Counters, RequestKind};
use crate::transfer::Throttle;

/// `User-Agent` of every call.
pub const USER_AGENT: &str = concat!("mixpeek-ingest/", env!("CARGO_PKG_VERSION"));
/// File name of the key inside systemd's `$CREDENTIALS_DIRECTORY`.
pub const CREDENTIAL_NAME: &str = "mixpeek_api_key";
/// The largest response body kept. Create and batch answers are far smaller;
/// this only guards against a misbehaving server or proxy.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

const NAMESPACE_HEADER: &str = "x-namespace";
const REDACTED: &[u8] = b"<redacted>";

// ---------------------------------------------------------------------------
// The key
// ---------------------------------------------------------------------------

/// The Mixpeek API key. Its `Debug` and `Display` print `ApiKey(<redacted>)`;
/// [`ApiKey::expose`] is for building the `Authorization` header only.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    secret: String,
    source: KeySource,
}

/// Where a key was read from, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `api.api_key_file`.
    File(PathBuf),
    /// `$CREDENTIALS_DIRECTORY/mixpeek_api_key`.
    Credential(PathBuf),
    /// The environment variable named by `api.api_key_env`.
    Env(String),
    /// Handed over by the program itself (`demo`, tests).
    Given,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "the file {} (api.api_key_file)", p.display()),
            KeySource::Credential(p) => write!(f, "the systemd credential {}", p.display()),
            KeySource::Env(name) => write!(f, "the environment variable {name}"),
            KeySource::Given => f.write_str("the program"),
        }
    }
}

impl ApiKey {
    /// A key handed over directly (the emulator's key in `demo`, tests).
    /// Checked like a loaded key.
    pub fn new(secret: impl Into<String>) -> Result<ApiKey, KeyError> {
        check_key(secret.into(), KeySource::Given)
    }

    /// The secret itself: for the `Authorization` header, nothing else.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// `bytes` with every occurrence of the key replaced by `<redacted>`.
    fn scrub(&self, bytes: Vec<u8>) -> Vec<u8> {
        let needle = self.secret.as_bytes();
        if needle.is_empty() || !contains(&bytes, needle) {
            return bytes;
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        while let Some(at) = find(rest, needle) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(REDACTED);
            rest = &rest[at + needle.len()..];
        }
        out.extend_from_slice(rest);
        out
    }

    fn scrub_str(&self, text: String) -> String {
        if self.secret.is_empty() || !text.contains(&self.secret) {
            return text;
        }
        text.replace(&self.secret, "<redacted>")
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Why no usable key was found. No variant holds the key or any part of it.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error(
        "no Mixpeek API key found; provide it in one of these places (first found wins): \
         (1) api.api_key_file in the config, a file holding only the key, mode 0600; \
         (2) the systemd credential {CREDENTIAL_NAME}, e.g. \
         LoadCredential={CREDENTIAL_NAME}:/etc/mixpeek-ingest/api_key in the unit \
         (read from $CREDENTIALS_DIRECTORY/{CREDENTIAL_NAME}); \
         (3) the environment variable {env_var} (export {env_var}=...; \
         api.api_key_env names another variable)"
    )]
    Missing { env_var: String },
    #[error("cannot read the API key from {source_desc}: {error}")]
    Read {
        source_desc: KeySource,
        #[source]
        error: std::io::Error,
    },
    #[error("the API key from {0} is empty")]
    Empty(KeySource),
    #[error("the API key from {0} is not valid UTF-8")]
    NotUnicode(KeySource),
    #[error(
        "the API key from {0} contains spaces, control or non-ASCII characters \
         (only surrounding whitespace is removed); check that it holds only the key"
    )]
    Invalid(KeySource),
}

/// Loads the key from, in order: `api.api_key_file`, the systemd credential
/// `$CREDENTIALS_DIRECTORY/mixpeek_api_key`, the environment variable named by
/// `api.api_key_env`.
pub fn load_api_key(cfg: &ApiConfig) -> Result<ApiKey, KeyError> {
    load_api_key_from(cfg, |name| std::env::var_os(name))
}

/// [`load_api_key`] with the environment passed in, so the order can be
/// tested without touching the process environment.
///
/// A configured `api_key_file` that cannot be read is an error, not a reason
/// to fall back: the operator asked for that file. A credential directory
/// without the credential falls through to the environment variable.
pub fn load_api_key_from(
    cfg: &ApiConfig,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<ApiKey, KeyError> {
    if let Some(path) = &cfg.api_key_file {
        return read_key_file(path, KeySource::File(path.clone()));
    }
    if let Some(dir) = env("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) {
        let path = Path::new(&dir).join(CREDENTIAL_NAME);
        match read_key_file(&path, KeySource::Credential(path.clone())) {
            Err(KeyError::Read { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
    }
    match env(&cfg.api_key_env) {
        Some(value) => {
            let source = KeySource::Env(cfg.api_key_env.clone());
            match value.into_string() {
                Ok(secret) => check_key(secret, source),
                Err(_) => Err(KeyError::NotUnicode(source)),
            }
        }
        None => Err(KeyError::Missing {
            env_var: cfg.api_key_env.clone(),
        }),
    }
}

fn read_key_file(path: &Path, source: KeySource) -> Result<ApiKey, KeyError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) => {
            return Err(KeyError::Read {
                source_desc: source,
                error,
            });
        }
    };
    match String::from_utf8(bytes) {
        Ok(secret) => check_key(secret, source),
        Err(_) => Err(KeyError::NotUnicode(source)),
    }
}

/// Trims surrounding whitespace (the trailing newline of `echo key > file`) and
/// accepts only visible ASCII, which is what a bearer token can carry; a space
/// inside usually means two lines or a pasted label.
fn check_key(secret: String, source: KeySource) -> Result<ApiKey, KeyError> {
    let trimmed = secret.trim();
    if trimmed.is_empty() {
        return Err(KeyError::Empty(source));
    }
    if !trimmed.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(KeyError::Invalid(source));
    }
    Ok(ApiKey {
        secret: trimmed.to_owned(),
        source,
    })
}

/// A warning when the key file can be read (or written) by group or others.
/// `None` when the mode is fine or the file cannot be inspected (loading it
/// reports that).
pub fn key_file_warning(path: &Path) -> Option<String> {
    crate::config::permission_warning(path, "the API key file", 0o077, "chmod 600")
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("api.base_url {url:?} is not usable: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error("api.namespace {0:?} cannot be sent as an HTTP header")]
    InvalidNamespace(String),
    #[error("the API key cannot be sent as an HTTP header")]
    InvalidKey,
    #[error("cannot set up the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// The Mixpeek client. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct ApiClient {
    inner: Arc<Inner>,
    /// Where answers are counted; `None` for one-off commands (`check`).
    counters: Option<Arc<Counters>>,
}

struct Inner {
    http: reqwest::Client,
    /// Without a trailing slash; request paths (starting with `/v1/`) are
    /// appended to it.
    base_url: String,
    base: Url,
    namespace: Option<String>,
    timeout: Duration,
    key: ApiKey,
    /// `api.requests_per_minute`: one request every 60 s / N, no bursts, so
    /// a known quota is used evenly instead of hammered into 429s. Shared by
    /// every API call of this client.
    limiter: Option<governor::DefaultDirectRateLimiter>,
    /// `api.max_bytes_per_second`, for request bodies and presigned PUTs.
    throttle: Arc<Throttle>,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("base_url", &self.inner.base_url)
            .field("namespace", &self.inner.namespace)
            .field("timeout", &self.inner.timeout)
            .field("key", &self.inner.key)
            .finish()
    }
}

impl ApiClient {
    pub fn new(cfg: &ApiConfig, key: ApiKey) -> Result<ApiClient, ApiError> {
        let base_url = cfg.base_url.trim_end_matches('/').to_owned();
        let invalid = |reason: &str| ApiError::InvalidBaseUrl {
            url: cfg.base_url.clone(),
            reason: reason.to_owned(),
        };
        let base = Url::parse(&base_url).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("it must not have a query or fragment"));
        }
        if base.cannot_be_a_base() {
            return Err(invalid("it cannot hold a path"));
        }

        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::try_from(format!("Bearer {}", key.expose()))
            .map_err(|_| ApiError::InvalidKey)?;
        auth.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, auth);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(ns) = &cfg.namespace {
            let value = HeaderValue::try_from(ns.as_str())
                .map_err(|_| ApiError::InvalidNamespace(ns.clone()))?;
            headers.insert(HeaderName::from_static(NAMESPACE_HEADER), value);
        }

        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ApiError::Build)?;
        Ok(ApiClient {
            inner: Arc::new(Inner {
                http,
                base_url,
                base,
                namespace: cfg.namespace.clone(),
                timeout: cfg.timeout,
                key,
                limiter: request_limiter(cfg.requests_per_minute),
                throttle: Arc::new(Throttle::new(cfg.max_bytes_per_second)),
            }),
            counters: None,
        })
    }

    /// This client (and its clones) counting every call in `counters`.
    #[must_use]
    pub fn counting(mut self, counters: Arc<Counters>) -> ApiClient {
        self.counters = Some(counters);
        self
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// Sends a prepared request: its path (with query) appended to the base
    /// URL, its JSON body unless the method is `GET` or `HEAD`.
    pub async fn send(&self, req: &HttpRequest) -> Response {
        let Ok(method) = Method::from_bytes(req.method.as_bytes()) else {
            return Response::transport(
                TransportKind::Other,
                format!("unsupported HTTP method {:?}", req.method),
            );
        };
        let url = format!("{}{}", self.inner.base_url, req.path);
        let mut builder = self.inner.http.request(method.clone(), url);
        if method != Method::GET && method != Method::HEAD {
            let body = serde_json::to_vec(&req.body)
                .expect("a serde_json::Value always serialises (its keys are strings)");
            builder = builder.body(self.inner.throttle.body(body));
        }
        self.execute(builder).await
    }

    /// `GET /v1/buckets/{bucket}` (auth and bucket check, `bucket_schema`).
    pub async fn get_bucket(&self, bucket: &str) -> Response {
        let url = self.url(&["v1", "buckets", bucket]);
        self.execute(self.inner.http.get(url)).await
    }

    /// `GET /v1/tasks/{task_id}`.
    pub async fn get_task(&self, task_id: &str) -> Response {
        let url = self.url(&["v1", "tasks", task_id]);
        self.execute(self.inner.http.get(url)).await
    }

    /// The base URL plus percent-encoded path segments (a bucket name with a
    /// `/` or a space stays one segment).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .expect("checked in new(): the base URL can hold a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// The bandwidth cap (`api.max_bytes_per_second`) this client's bodies
    /// go through; presigned PUTs share it.
    pub fn throttle(&self) -> Arc<Throttle> {
        Arc::clone(&self.inner.throttle)
    }

    /// The `api.timeout` of every call.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    async fn execute(&self, builder: reqwest::RequestBuilder) -> Response {
        if let Some(limiter) = &self.inner.limiter {
            limiter.until_ready().await;
        }
        let response = receive(builder.send().await, Some(&self.inner.key)).await;
        if let Some(counters) = &self.counters {
            counters.answered(RequestKind::Api, response.status());
        }
        response
    }
}

/// Turns what `send` gave into a [`Response`]: the status, `Retry-After`
/// (parsed now, as an HTTP date is relative to the moment of receipt), the
/// `ETag`, and the body up to [`MAX_BODY_BYTES`]; with `key`, every trace of
/// it scrubbed from the body and error text.
pub(crate) async fn receive(
    sent: Result<reqwest::Response, reqwest::Error>,
    key: Option<&ApiKey>,
) -> Response {
    let scrubbed = |e: reqwest::Error| {
        let mut err = transport_error(&e);
        if let Some(key) = key {
            err.message = key.scrub_str(err.message);
        }
        err
    };
    let result = async {
        let mut resp = sent.map_err(scrubbed)?;
        let status = resp.status().as_u16();
        let header_text = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header_text(header::RETRY_AFTER)
            .and_then(|v| retry::parse_retry_after(&v, SystemTime::now()));
        let etag = header_text(header::ETAG);
        let (body, truncated) = read_body(&mut resp, MAX_BODY_BYTES)
            .await
            .map_err(scrubbed)?;
        Ok(RawResponse {
            status,
            retry_after,
            etag,
            body: match key {
                Some(key) => key.scrub(body),
                None => body,
            },
            truncated,
        })
    }
    .await;
    Response { result }
}

/// Reads at most `limit` bytes of the body; the flag says whether more was cut.
async fn read_body(
    resp: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = limit - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// Maps a reqwest error to the classifier's vocabulary. Timeout is checked
/// first: a connect or body read that ran out of time is a timeout.
fn transport_error(e: &reqwest::Error) -> TransportError {
    let kind = if e.is_timeout() {
        TransportKind::Timeout
    } else if e.is_connect() {
        TransportKind::Connect
    } else if e.is_body() || e.is_decode() {
        TransportKind::Body
    } else {
        TransportKind::Other
    };
    // reqwest's Display stops at its own layer; the cause ("connection
    // refused", "dns error") is further down the chain.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    TransportError { kind, message }
}

/// The result of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub result: Result<RawResponse, TransportError>,
}

/// An answer from the server, whatever its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    pub status: u16,
    /// `Retry-After`, parsed when the answer arrived.
    pub retry_after: Option<Duration>,
    /// The `ETag` header, as sent (quotes included).
    pub etag: Option<String>,
    /// With any occurrence of the key replaced by `<redacted>`.
    pub body: Vec<u8>,
    /// The body was longer than [`MAX_BODY_BYTES`] and was cut.
    pub truncated: bool,
}

impl Response {
    fn transport(kind: TransportKind, message: String) -> Response {
        Response {
            result: Err(TransportError { kind, message }),
        }
    }

    /// The classifier's view of this response.
    pub fn outcome(&self) -> Outcome<'_> {
        match &self.result {
            Ok(raw) => Outcome::Status {
                code: raw.status,
                retry_after: raw.retry_after,
                body: &raw.body,
            },
            Err(err) => Outcome::Transport(err.clone()),
        }
    }

    pub fn status(&self) -> Option<u16> {
        self.result.as_ref().ok().map(|r| r.status)
    }

    /// The body; empty when no answer came.
    pub fn body(&self) -> &[u8] {
        self.result.as_ref().map_or(&[], |r| r.body.as_slice())
    }

    /// One line about what went wrong, for operators: the transport error, or
    /// the status with the server's message.
    pub fn error_text(&self) -> String {
        match &self.result {
            Ok(raw) => format!("HTTP {}: {}", raw.status, retry::error_message(&raw.body)),
            Err(err) => err.to_string(),
        }
    }
}

// ---------------------------------------------------------------------------
// Success bodies
// ---------------------------------------------------------------------------

/// What a create call answered, read tolerantly: `objects-create` gives
/// `{task_id, status, inputs, outputs}`, `objects` an `ObjectResponse`
/// `{object_id, bucket_id, status, blobs, …}`. Unknown fields land in
/// `extra`; unknown status strings are kept as they are.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct CreateAck {
    pub object_id: Option<String>,
    pub task_id: Option<String>,
    pub status: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// Never fails: a body that is not a JSON object gives an empty ack (the 2xx
/// status alone already means delivered). A field of an unexpected type (a
/// numeric `status`) stays in `extra` rather than being lost.
pub fn parse_create_ack(body: &[u8]) -> CreateAck {
    let Ok(Value::Object(mut extra)) = serde_json::from_slice::<Value>(body) else {
        return CreateAck::default();
    };
    let mut take = |name: &str| match extra.get(name) {
        Some(Value::String(_)) => match extra.remove(name) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        },
        Some(Value::Null) => {
            extra.remove(name);
            None
        }
        _ => None,
    };
    CreateAck {
        object_id: take("object_id"),
        task_id: take("task_id"),
        status: take("status"),
        extra,
    }
}

/// What `POST .../uploads` answered (`UploadResponse`), read tolerantly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadAck {
    pub upload_id: String,
    /// `None`: the content is already there (a duplicate); no PUT.
    pub presigned_url: Option<String>,
    /// When the presigned URL expires (unix ms), when `expires_at` reads as
    /// RFC 3339 in UTC.
    pub expires_ms: Option<i64>,
    /// `COMPLETED` for a duplicate that needs no confirmation.
    pub status: Option<String>,
}

/// `None` when the body has no `upload_id` string: such an answer cannot be
/// followed up, whatever its status said.
pub fn parse_upload_ack(body: &[u8]) -> Option<UploadAck> {
    let root: Value = serde_json::from_slice(body).ok()?;
    let text = |name: &str| root.get(name).and_then(Value::as_str).map(str::to_owned);
    let expires_ms = text("expires_at")
        .and_then(|at| humantime::parse_rfc3339_weak(at.trim_end_matches("+00:00")).ok())
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok());
    Some(UploadAck {
        upload_id: text("upload_id").filter(|id| !id.is_empty())?,
        presigned_url: text("presigned_url").filter(|url| !url.is_empty()),
        expires_ms,
        status: text("status"),
    })
}

/// The spacing for `api.requests_per_minute` (0 = no limit).
fn request_limiter(per_minute: u32) -> Option<governor::DefaultDirectRateLimiter> {
    let per_minute = std::num::NonZeroU32::new(per_minute)?;
    let quota = governor::Quota::with_period(Duration::from_secs(60) / per_minute.get())?;
    Some(governor::RateLimiter::direct(quota))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::DialectSetting;
    use rstest::rstest;
    use std::os::unix::ffi::OsStringExt;
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    const KEY: &str = "mxp_sk_test_0123456789abcdef";

    fn cfg(base_url: &str) -> ApiConfig {
        ApiConfig {
            base_url: base_url.to_owned(),
            namespace: Some("netflix_prod".to_owned()),
            api_key_file: None,
            api_key_env: "MIXPEEK_API_KEY".to_owned(),
            dialect: DialectSetting::Auto,
            auto_process: true,
            timeout: Duration::from_secs(10),
            requests_per_minute: 0,
            max_in_flight: 4,
            max_bytes_per_second: 0,
        }
    }

    fn client(base_url: &str) -> ApiClient {
        ApiClient::new(&cfg(base_url), ApiKey::new(KEY).unwrap()).unwrap()
    }

    /// One request as the server saw it.
    #[derive(Debug)]
    struct Seen {
        request_line: String,
        /// Lower-cased names.
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    async fn read_request(stream: &mut TcpStream) -> Seen {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(at) = find(&buf, b"\r\n\r\n") {
                break at;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed before the end of the head");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap().to_owned();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < len {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed mid-body");
            body.extend_from_slice(&chunk[..n]);
        }
        Seen {
            request_line,
            headers,
            body,
        }
    }

    /// A server on port 0 that answers one request with `response` (a full
    /// HTTP/1.1 response) and hands back what it saw.
    async fn serve_once(response: String) -> (String, JoinHandle<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let seen = read_request(&mut stream).await;
            stream.write_all(response.as_bytes()).await.unwrap();
            stream.shutdown().await.unwrap();
            seen
        });
        (base, handle)
    }

    fn http_response(status_line: &str, extra_headers: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status_line}\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn create_request() -> HttpRequest {
        HttpRequest {
            method: "POST",
            path: "/v1/buckets/contracts/objects?auto_process=true".to_owned(),
            body: serde_json::json!({"key_prefix": "/a", "blobs": []}),
        }
    }

    #[tokio::test]
    async fn post_sends_headers_and_body() {
        let (base, server) =
            serve_once(http_response("200 OK", "", r#"{"object_id":"obj_1"}"#)).await;
        let resp = client(&base).send(&create_request()).await;
        let seen = server.await.unwrap();

        assert_eq!(
            seen.request_line,
            "POST /v1/buckets/contracts/objects?auto_process=true HTTP/1.1"
        );
        assert_eq!(
            seen.header("authorization"),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert_eq!(seen.header("x-namespace"), Some("netflix_prod"));
        assert_eq!(seen.header("content-type"), Some("application/json"));
        assert_eq!(
            seen.header("user-agent"),
            Some(concat!("mixpeek-ingest/", env!("CARGO_PKG_VERSION")))
        );
        let body: Value = serde_json::from_slice(&seen.body).unwrap();
        assert_eq!(body, create_request().body);

        let raw = resp.result.unwrap();
        assert_eq!(raw.status, 200);
        assert_eq!(raw.retry_after, None);
        assert!(!raw.truncated);
        assert_eq!(
            parse_create_ack(&raw.body).object_id.as_deref(),
            Some("obj_1")
        );
    }

    #[tokio::test]
    async fn get_has_no_body_and_no_namespace_when_unset() {
        let (base, server) = serve_once(http_response("200 OK", "", "{}")).await;
        let mut c = cfg(&base);
        c.namespace = None;
        let client = ApiClient::new(&c, ApiKey::new(KEY).unwrap()).unwrap();
        let resp = client
            .send(&HttpRequest {
                method: "GET",
                path: "/v1/tasks/t1".to_owned(),
                body: Value::Null,
            })
            .await;
        let seen = server.await.unwrap();
        assert_eq!(seen.request_line, "GET /v1/tasks/t1 HTTP/1.1");
        assert!(seen.body.is_empty());
        assert_eq!(seen.header("x-namespace"), None);
        assert!(seen.header("authorization").is_some());
        assert_eq!(resp.status(), Some(200));
    }

    #[rstest]
    #[case::plain("http://HOST", "contracts", "/v1/buckets/contracts")]
    #[case::trailing_slash("http://HOST/", "contracts", "/v1/buckets/contracts")]
    #[case::prefix("http://HOST/api/", "b", "/api/v1/buckets/b")]
    #[case::encoded("http://HOST", "my bucket/x", "/v1/buckets/my%20bucket%2Fx")]
    #[tokio::test]
    async fn get_bucket_paths(#[case] base: &str, #[case] bucket: &str, #[case] expected: &str) {
        let (addr, server) = serve_once(http_response("200 OK", "", "{}")).await;
        let base = base.replace("http://HOST", &addr);
        let resp = client(&base).get_bucket(bucket).await;
        let seen = server.await.unwrap();
        assert_eq!(seen.request_line, format!("GET {expected} HTTP/1.1"));
        assert_eq!(resp.status(), Some(200));
    }

    #[tokio::test]
    async fn get_task_path() {
        let (base, server) = serve_once(http_response("200 OK", "", "{}")).await;
        client(&base).get_task("task_42").await;
        let seen = server.await.unwrap();
        assert_eq!(seen.request_line, "GET /v1/tasks/task_42 HTTP/1.1");
    }

    #[tokio::test]
    async fn retry_after_is_parsed_on_receipt() {
        let (base, server) = serve_once(http_response(
            "429 Too Many Requests",
            "Retry-After: 7\r\n",
            r#"{"error":{"message":"slow down","type":"RateLimitError"}}"#,
        ))
        .await;
        let resp = client(&base).send(&create_request()).await;
        server.await.unwrap();
        match resp.outcome() {
            Outcome::Status {
                code,
                retry_after,
                body,
            } => {
                assert_eq!(code, 429);
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
                assert_eq!(retry::error_message(body), "RateLimitError: slow down");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn retry_after_http_date_in_the_future() {
        let when = SystemTime::now() + Duration::from_secs(120);
        let (base, server) = serve_once(http_response(
            "503 Service Unavailable",
            &format!("Retry-After: {}\r\n", httpdate::fmt_http_date(when)),
            "",
        ))
        .await;
        let resp = client(&base).send(&create_request()).await;
        server.await.unwrap();
        let after = resp.result.unwrap().retry_after.unwrap();
        // Whole seconds on the wire, and the request took a moment.
        assert!(
            after > Duration::from_secs(100) && after <= Duration::from_secs(120),
            "{after:?}"
        );
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (base, server) = serve_once(http_response(
            "301 Moved Permanently",
            "Location: http://127.0.0.1:1/elsewhere\r\n",
            "",
        ))
        .await;
        let resp = client(&base).send(&create_request()).await;
        server.await.unwrap();
        assert_eq!(resp.status(), Some(301));
    }

    #[tokio::test]
    async fn an_echoed_key_is_scrubbed_from_the_body() {
        let (base, server) = serve_once(http_response(
            "401 Unauthorized",
            "",
            &format!(r#"{{"error":{{"message":"key {KEY} is invalid","type":"AuthError"}}}}"#),
        ))
        .await;
        let resp = client(&base).send(&create_request()).await;
        server.await.unwrap();
        let body = String::from_utf8(resp.body().to_vec()).unwrap();
        assert!(!body.contains(KEY), "{body}");
        assert!(body.contains("key <redacted> is invalid"), "{body}");
        assert_eq!(
            resp.error_text(),
            "HTTP 401: AuthError: key <redacted> is invalid"
        );
    }

    #[tokio::test]
    async fn a_counting_client_counts_every_call_by_status() {
        let counters = Arc::new(Counters::default());
        let (base, server) = serve_once(http_response("503 Service Unavailable", "", "{}")).await;
        let counting = client(&base).counting(Arc::clone(&counters));
        counting.send(&create_request()).await;
        server.await.unwrap();
        let (base, server) = serve_once(http_response("200 OK", "", "{}")).await;
        let counting = client(&base).counting(Arc::clone(&counters));
        // A clone counts into the same counters.
        counting.clone().get_task("tsk_1").await;
        server.await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        client(&refused)
            .counting(Arc::clone(&counters))
            .get_bucket("b")
            .await;
        // Without counters nothing is counted.
        client(&refused).get_bucket("b").await;

        let by_status = counters.answers.snapshot();
        assert_eq!(by_status[&(RequestKind::Api, Some(503))], 1);
        assert_eq!(by_status[&(RequestKind::Api, Some(200))], 1);
        assert_eq!(by_status[&(RequestKind::Api, None)], 1);
        assert_eq!(counters.snapshot().requests, 3);
    }

    #[tokio::test]
    async fn connection_refused_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let resp = client(&base).send(&create_request()).await;
        assert!(resp.error_text().starts_with("connect error: "));
        assert!(resp.body().is_empty());
        let err = resp.result.unwrap_err();
        assert_eq!(err.kind, TransportKind::Connect, "{err}");
        assert!(!err.message.contains(KEY));
        assert!(matches!(
            client(&base).get_bucket("b").await.outcome(),
            Outcome::Transport(TransportError {
                kind: TransportKind::Connect,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_silent_server_is_a_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (release, held) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            read_request(&mut stream).await;
            // Hold the connection open without answering until the test ends.
            let _ = held.await;
        });
        let mut c = cfg(&base);
        c.timeout = Duration::from_millis(300);
        let client = ApiClient::new(&c, ApiKey::new(KEY).unwrap()).unwrap();
        let resp = client.send(&create_request()).await;
        release.send(()).unwrap();
        server.await.unwrap();
        assert_eq!(resp.result.unwrap_err().kind, TransportKind::Timeout);
    }

    #[tokio::test]
    async fn a_connection_dropped_before_the_answer_is_a_transport_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            read_request(&mut stream).await;
            drop(stream);
        });
        let resp = client(&base).send(&create_request()).await;
        server.await.unwrap();
        let err = resp.result.unwrap_err();
        assert!(
            matches!(err.kind, TransportKind::Other | TransportKind::Body),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn long_bodies_are_cut_and_flagged() {
        let body = "x".repeat(100);
        let (base, server) = serve_once(http_response("200 OK", "", &body)).await;
        let mut resp = reqwest::get(format!("{base}/")).await.unwrap();
        let (cut, truncated) = read_body(&mut resp, 10).await.unwrap();
        server.await.unwrap();
        assert_eq!(cut, b"xxxxxxxxxx");
        assert!(truncated);
    }

    #[tokio::test]
    async fn unknown_methods_are_refused_locally() {
        let c = client("http://127.0.0.1:1");
        let resp = c
            .send(&HttpRequest {
                method: "BAD METHOD",
                path: "/v1/x".to_owned(),
                body: Value::Null,
            })
            .await;
        assert_eq!(resp.result.unwrap_err().kind, TransportKind::Other);
    }

    #[test]
    fn debug_and_display_hide_the_key() {
        let key = ApiKey::new(KEY).unwrap();
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
        assert_eq!(format!("{key}"), "ApiKey(<redacted>)");
        let client = client("https://api.mixpeek.com/");
        let debug = format!("{client:?}");
        assert!(!debug.contains(KEY), "{debug}");
        assert!(debug.contains("https://api.mixpeek.com"), "{debug}");
        assert_eq!(client.base_url(), "https://api.mixpeek.com");
    }

    #[rstest]
    #[case::not_a_url("api.mixpeek.com")]
    #[case::scheme("ftp://api.mixpeek.com")]
    #[case::query("https://api.mixpeek.com/?x=1")]
    #[case::fragment("https://api.mixpeek.com/#top")]
    fn bad_base_urls_are_refused(#[case] url: &str) {
        let err = ApiClient::new(&cfg(url), ApiKey::new(KEY).unwrap()).unwrap_err();
        assert!(matches!(err, ApiError::InvalidBaseUrl { .. }), "{err}");
    }

    #[test]
    fn a_namespace_that_cannot_be_a_header_is_refused() {
        let mut c = cfg("https://api.mixpeek.com");
        c.namespace = Some("bad\nname".to_owned());
        let err = ApiClient::new(&c, ApiKey::new(KEY).unwrap()).unwrap_err();
        assert!(matches!(err, ApiError::InvalidNamespace(_)), "{err}");
    }

    // --- key loading -------------------------------------------------------

    struct KeyPlaces {
        dir: tempfile::TempDir,
        cfg: ApiConfig,
        env: Vec<(String, OsString)>,
    }

    impl KeyPlaces {
        fn new() -> KeyPlaces {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = cfg("https://api.mixpeek.com");
            cfg.api_key_env = "TEST_ONLY_MIXPEEK_KEY".to_owned();
            KeyPlaces {
                dir,
                cfg,
                env: Vec::new(),
            }
        }
        fn key_file(&mut self, content: &[u8]) -> PathBuf {
            let path = self.dir.path().join("api_key");
            std::fs::write(&path, content).unwrap();
            self.cfg.api_key_file = Some(path.clone());
            path
        }
        fn credential(&mut self, content: Option<&[u8]>) {
            let creds = self.dir.path().join("creds");
            std::fs::create_dir_all(&creds).unwrap();
            if let Some(content) = content {
                std::fs::write(creds.join(CREDENTIAL_NAME), content).unwrap();
            }
            self.env
                .push(("CREDENTIALS_DIRECTORY".to_owned(), creds.into_os_string()));
        }
        fn env_var(&mut self, value: impl Into<OsString>) {
            self.env.push((self.cfg.api_key_env.clone(), value.into()));
        }
        fn load(&self) -> Result<ApiKey, KeyError> {
            load_api_key_from(&self.cfg, |name| {
                self.env
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            })
        }
    }

    #[test]
    fn the_key_file_wins() {
        let mut p = KeyPlaces::new();
        let path = p.key_file(b"from_file\n");
        p.credential(Some(b"from_credential"));
        p.env_var("from_env");
        let key = p.load().unwrap();
        assert_eq!(key.expose(), "from_file");
        assert_eq!(key.source(), &KeySource::File(path));
    }

    #[test]
    fn the_credential_beats_the_environment() {
        let mut p = KeyPlaces::new();
        p.credential(Some(b"  from_credential \r\n"));
        p.env_var("from_env");
        let key = p.load().unwrap();
        assert_eq!(key.expose(), "from_credential");
        assert!(matches!(key.source(), KeySource::Credential(_)));
    }

    #[test]
    fn a_credential_directory_without_the_key_falls_through() {
        let mut p = KeyPlaces::new();
        p.credential(None);
        p.env_var("from_env");
        let key = p.load().unwrap();
        assert_eq!(key.expose(), "from_env");
        assert_eq!(
            key.source(),
            &KeySource::Env("TEST_ONLY_MIXPEEK_KEY".to_owned())
        );
    }

    #[test]
    fn a_configured_file_that_is_missing_is_an_error_not_a_fallback() {
        let mut p = KeyPlaces::new();
        let path = p.key_file(b"x");
        std::fs::remove_file(&path).unwrap();
        p.env_var("from_env");
        let err = p.load().unwrap_err();
        assert!(matches!(err, KeyError::Read { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn nothing_found_says_where_to_put_it() {
        let p = KeyPlaces::new();
        let err = p.load().unwrap_err().to_string();
        for needle in [
            "api.api_key_file",
            "LoadCredential=mixpeek_api_key:",
            "$CREDENTIALS_DIRECTORY/mixpeek_api_key",
            "export TEST_ONLY_MIXPEEK_KEY=",
        ] {
            assert!(err.contains(needle), "{needle} missing from: {err}");
        }
    }

    #[rstest]
    #[case::empty_file(Some(&b""[..]), None, "is empty")]
    #[case::blank_file(Some(&b" \n\n"[..]), None, "is empty")]
    #[case::inner_space(Some(&b"secret part two"[..]), None, "contains spaces")]
    #[case::two_lines(Some(&b"secret\npart2\n"[..]), None, "contains spaces")]
    #[case::not_utf8(Some(&b"sec\xffret"[..]), None, "not valid UTF-8")]
    #[case::empty_env(None, Some(""), "is empty")]
    #[case::bad_env(None, Some("has space"), "contains spaces")]
    fn unusable_keys(
        #[case] file: Option<&[u8]>,
        #[case] env: Option<&str>,
        #[case] expected: &str,
    ) {
        let mut p = KeyPlaces::new();
        if let Some(content) = file {
            p.key_file(content);
        }
        if let Some(value) = env {
            p.env_var(value);
        }
        let err = p.load().unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
        for secret_part in ["secret", "part", "has space"] {
            assert!(!err.contains(secret_part), "{err}");
        }
    }

    #[test]
    fn an_env_var_that_is_not_unicode_is_reported() {
        let mut p = KeyPlaces::new();
        p.env_var(OsString::from_vec(vec![b'k', 0xff]));
        let err = p.load().unwrap_err();
        assert!(
            matches!(err, KeyError::NotUnicode(KeySource::Env(_))),
            "{err}"
        );
    }

    #[test]
    fn load_api_key_reads_the_configured_file() {
        let mut p = KeyPlaces::new();
        p.key_file(b"real_path_key\n");
        assert_eq!(load_api_key(&p.cfg).unwrap().expose(), "real_path_key");
    }

    #[rstest]
    #[case(0o600, false)]
    #[case(0o400, false)]
    #[case(0o640, true)]
    #[case(0o604, true)]
    #[case(0o644, true)]
    #[case(0o620, true)]
    fn key_file_modes(#[case] mode: u32, #[case] warns: bool) {
        let mut p = KeyPlaces::new();
        let path = p.key_file(b"k");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let warning = key_file_warning(&path);
        assert_eq!(warning.is_some(), warns, "{warning:?}");
        if let Some(w) = warning {
            assert!(w.contains(&path.display().to_string()), "{w}");
            assert!(w.contains(&format!("{mode:04o}")), "{w}");
        }
    }

    #[test]
    fn key_file_warning_of_a_missing_file_is_none() {
        assert_eq!(key_file_warning(Path::new("/nonexistent/api_key")), None);
    }

    #[test]
    fn scrub_replaces_every_occurrence() {
        let key = ApiKey::new("abc").unwrap();
        assert_eq!(key.scrub(b"xabcyabc".to_vec()), b"x<redacted>y<redacted>");
        assert_eq!(key.scrub(b"ab".to_vec()), b"ab");
        assert_eq!(key.scrub_str("abc!".to_owned()), "<redacted>!");
    }

    // --- success bodies ----------------------------------------------------

    #[rstest]
    #[case::objects_create(
        r#"{"task_id":"t1","status":"PENDING","inputs":[],"outputs":[]}"#,
        None, Some("t1"), Some("PENDING"), &["inputs", "outputs"][..]
    )]
    #[case::object_response(
        r#"{"object_id":"obj_1","bucket_id":"bkt_1","status":"DRAFT","blobs":[]}"#,
        Some("obj_1"), None, Some("DRAFT"), &["bucket_id", "blobs"][..]
    )]
    #[case::unknown_status(r#"{"status":"QUANTUM"}"#, None, None, Some("QUANTUM"), &[][..])]
    #[case::numeric_status(r#"{"status":3}"#, None, None, None, &["status"][..])]
    #[case::nulls(r#"{"object_id":null,"task_id":null}"#, None, None, None, &[][..])]
    #[case::array("[1]", None, None, None, &[][..])]
    #[case::html("<html>", None, None, None, &[][..])]
    #[case::empty("", None, None, None, &[][..])]
    fn create_acks(
        #[case] body: &str,
        #[case] object_id: Option<&str>,
        #[case] task_id: Option<&str>,
        #[case] status: Option<&str>,
        #[case] extra: &[&str],
    ) {
        let ack = parse_create_ack(body.as_bytes());
        assert_eq!(ack.object_id.as_deref(), object_id);
        assert_eq!(ack.task_id.as_deref(), task_id);
        assert_eq!(ack.status.as_deref(), status);
        let mut keys: Vec<&str> = ack.extra.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = extra.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
    }
}
