//! The emulated HTTP API: the request gate and the route handlers.
//!
//! Role: turn one HTTP request into one answer, like Mixpeek's API would. This
//! file holds the gate, the object routes (single and batch create), bucket
//! and task GETs; `upload_routes.rs` holds the upload routes and the presigned
//! PUT.
//! Inputs: requests from the connection layer (`server.rs`), each carrying a
//! [`ConnectionKill`] handle; the shared [`State`].
//! Outputs: responses; entries in the request and object records.
//!
//! Order of checks, outermost first (the gate, then the handler):
//! 1. outage (every path), fault script and quota (`/v1/...` only);
//! 2. routing: unknown path → 404 with an empty body, known path with another
//!    method or a disabled dialect → 405 with an empty body (what a bare router
//!    answers, and what dialect auto-detection keys on);
//! 3. bearer key → 401 envelope; bucket → 404 envelope; body → 422 (FastAPI
//!    `detail` for shape errors, envelope for schema mismatches).
//!
//! Invariant: every request that reaches the gate is recorded once, with the
//! status it was answered (0 for a scripted dropped connection), before the
//! answer leaves, so a client that got an answer always finds its request in
//! the record. The gate reads JSON bodies whole (they are small); presigned
//! PUT bodies pass through unread, for their handler to stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;

use crate::envelope::{
    empty_response, envelope, json_response, not_found, unauthorized, validation_detail,
};
use crate::state::{Accepted, Admission, RecordedRequest, RefusedUpload, Shared, bucket_id};
use crate::timestamp::rfc3339;
use crate::upload_routes;
use crate::validate::{
    BatchItem, Dialect, FieldError, ItemFailure, Rejection, ValidObject, validate_batch,
    validate_create,
};

/// Largest request body the gate reads (inline blobs are at most 50 MiB of
/// base64 on Mixpeek's biggest tier).
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Closes the connection a request arrived on, without an answer.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionKill(pub(crate) Arc<Notify>);

/// Body bytes a streamed request's handler has read so far, handed to it by
/// the gate, which records the count ([`RecordedRequest::body_bytes`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct BodyBytes(Arc<AtomicU64>);

impl BodyBytes {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The request body as the gate read it, handed to handlers.
#[derive(Debug, Clone)]
pub(crate) enum RequestBody {
    Empty,
    Json(Arc<Value>),
    Invalid,
}

impl RequestBody {
    fn parse(bytes: &Bytes) -> Self {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return RequestBody::Empty;
        }
        match serde_json::from_slice(bytes) {
            Ok(value) => RequestBody::Json(Arc::new(value)),
            Err(_) => RequestBody::Invalid,
        }
    }

    fn recorded(&self) -> Value {
        match self {
            RequestBody::Json(value) => Value::clone(value),
            RequestBody::Empty | RequestBody::Invalid => Value::Null,
        }
    }

    /// The parsed JSON, or the field error of an empty or malformed body
    /// (answered with [`field_error`]).
    pub(crate) fn json(&self) -> Result<&Value, FieldError> {
        match self {
            RequestBody::Json(value) => Ok(value),
            RequestBody::Empty => Err(FieldError::new(
                vec![json!("body")],
                "missing",
                "Field required",
            )),
            RequestBody::Invalid => Err(FieldError::new(
                vec![json!("body"), json!(0)],
                "json_invalid",
                "JSON decode error",
            )),
        }
    }
}

/// FastAPI's 422 for one field error.
pub(crate) fn field_error(error: FieldError) -> Response {
    json_response(422, &validation_detail(&[error]))
}

/// Paths whose bodies the gate leaves unread: presigned PUTs are streamed.
fn is_streamed_path(path: &str) -> bool {
    path.starts_with(upload_routes::PRESIGNED_PREFIX)
}

/// The router with the gate around it.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/buckets/{bucket}", get(get_bucket))
        .route("/v1/buckets/{bucket}/objects", post(create_objects))
        .route(
            "/v1/buckets/{bucket}/objects/create",
            post(create_objects_create),
        )
        .route(
            "/v1/buckets/{bucket}/objects/batch",
            post(create_objects_batch),
        )
        .route(
            "/v1/buckets/{bucket}/uploads",
            post(upload_routes::create_upload),
        )
        .route(
            "/v1/buckets/{bucket}/uploads/{upload_id}",
            get(upload_routes::get_upload),
        )
        .route(
            "/v1/buckets/{bucket}/uploads/{upload_id}/confirm",
            post(upload_routes::confirm_upload),
        )
        .route(
            &format!("{}{{upload_id}}", upload_routes::PRESIGNED_PREFIX),
            put(upload_routes::put_presigned),
        )
        .route("/v1/tasks/{task_id}", get(get_task))
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), gate))
        .with_state(shared)
}

/// Reads and records every request; answers it from the outage, the fault
/// script or the quota when they say so, else passes it to the router.
async fn gate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let received_at = Instant::now();
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or_else(
        || parts.uri.path().to_string(),
        |pq| pq.as_str().to_string(),
    );
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_string(), value)
        })
        .collect();
    let mut recording = Recording {
        shared: Arc::clone(&shared),
        entry: Some(RecordedRequest {
            method: parts.method.to_string(),
            path,
            status: 0,
            headers,
            body: Value::Null,
            body_bytes: 0,
            received_at,
        }),
        streamed: None,
    };
    let kill = parts.extensions.get::<ConnectionKill>().cloned();

    let body = if is_streamed_path(parts.uri.path()) {
        let counter = BodyBytes::default();
        recording.streamed = Some(counter.clone());
        parts.extensions.insert(counter);
        Err(body)
    } else {
        match read_body(body).await {
            Err(received) => {
                let message =
                    format!("Request body larger than {MAX_BODY_BYTES} bytes or unreadable");
                let answer = json_response(413, &envelope(413, &message, None));
                recording.set_body(Value::Null, received);
                recording.finish(413);
                return answer;
            }
            Ok(bytes) => {
                let parsed = RequestBody::parse(&bytes);
                recording.set_body(parsed.recorded(), bytes.len() as u64);
                Ok(parsed)
            }
        }
    };

    let admission = shared.update(|s| s.admit(parts.uri.path(), received_at));
    let response = match admission {
        Admission::Pass => match body {
            Ok(body) => {
                parts.extensions.insert(body);
                next.run(Request::from_parts(parts, Body::empty())).await
            }
            // A streamed body goes to its handler unread.
            Err(raw) => next.run(Request::from_parts(parts, raw)).await,
        },
        Admission::Answer {
            status,
            retry_after,
            delay,
            body,
        } => {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let mut answer = json_response(status, &body);
            if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
                answer.headers_mut().insert(header::RETRY_AFTER, value);
            }
            answer
        }
        Admission::Drop { delay } => {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let Some(ConnectionKill(notify)) = kill else {
                // Without a connection handle (router driven directly) the
                // closest thing to a dropped connection is a bare gateway error.
                recording.finish(502);
                return empty_response(502);
            };
            recording.finish(0);
            notify.notify_one();
            // The connection task drops this future together with the connection.
            return std::future::pending().await;
        }
    };
    recording.finish(response.status().as_u16());
    response
}

/// Reads a JSON request body whole, counting what arrives. `Err` with the
/// bytes received when it grows past [`MAX_BODY_BYTES`] or breaks off.
async fn read_body(mut body: Body) -> Result<Bytes, u64> {
    let mut whole = Vec::new();
    let mut received: u64 = 0;
    while let Some(chunk) = upload_routes::next_chunk(&mut body).await {
        let Ok(chunk) = chunk else {
            return Err(received);
        };
        received += chunk.len() as u64;
        if whole.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(received);
        }
        whole.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(whole))
}

/// Records its request exactly once: with the answered status through
/// [`Recording::finish`], or with status 0 when dropped first (no answer was
/// sent: a scripted drop, a closed port, or a client that went away while its
/// answer was delayed).
struct Recording {
    shared: Arc<Shared>,
    entry: Option<RecordedRequest>,
    /// For a streamed body: what its handler read, copied in when recorded.
    streamed: Option<BodyBytes>,
}

impl Recording {
    fn set_body(&mut self, body: Value, bytes: u64) {
        if let Some(entry) = &mut self.entry {
            entry.body = body;
            entry.body_bytes = bytes;
        }
    }

    fn finish(mut self, status: u16) {
        self.write(status);
    }

    fn write(&mut self, status: u16) {
        let Some(mut entry) = self.entry.take() else {
            return;
        };
        entry.status = status;
        if let Some(counter) = &self.streamed {
            entry.body_bytes = counter.get();
        }
        tracing::info!(
            method = %entry.method,
            path = %entry.path,
            status,
            elapsed_ms = u64::try_from(entry.received_at.elapsed().as_millis()).unwrap_or(u64::MAX),
            "request"
        );
        self.shared.update(|s| s.requests.push(entry));
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.write(0);
    }
}

/// False when a key is configured and the request does not carry it as
/// `Authorization: Bearer <key>`.
pub(crate) fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let state = shared.lock();
    let Some(expected) = state.api_key.as_deref() else {
        return true;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    presented == Some(expected)
}

/// The name and schema of the bucket a path identifies.
pub(crate) fn find_bucket(shared: &Shared, identifier: &str) -> Option<(String, Value)> {
    let state = shared.lock();
    state.bucket_name(identifier).and_then(|name| {
        let schema = state.buckets.get(&name)?.schema.clone();
        Some((name, schema))
    })
}

async fn create_objects_create(
    State(shared): State<Arc<Shared>>,
    Path(bucket): Path<String>,
    headers: HeaderMap,
    Extension(body): Extension<RequestBody>,
) -> Response {
    create(
        &shared,
        Dialect::ObjectsCreate,
        &bucket,
        &headers,
        &body,
        true,
    )
}

async fn create_objects(
    State(shared): State<Arc<Shared>>,
    Path(bucket): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Extension(body): Extension<RequestBody>,
) -> Response {
    let auto_process = match auto_process(&query) {
        Ok(flag) => flag,
        Err(error) => return field_error(error),
    };
    create(
        &shared,
        Dialect::Objects,
        &bucket,
        &headers,
        &body,
        auto_process,
    )
}

/// `?auto_process=` as pydantic reads it: absent is false; a value that is not
/// a boolean is FastAPI's 422.
fn auto_process(query: &HashMap<String, String>) -> Result<bool, FieldError> {
    match query.get("auto_process").map(|v| parse_bool(v)) {
        None => Ok(false),
        Some(Some(flag)) => Ok(flag),
        Some(None) => Err(FieldError::new(
            vec![json!("query"), json!("auto_process")],
            "bool_parsing",
            "Input should be a valid boolean, unable to interpret input",
        )),
    }
}

/// Whether the routes of `dialect` are enabled; a disabled one answers 405
/// with an empty body, before the key is checked.
/// The checks every bucket route makes first, in the order Mixpeek answers
/// them: the route exists in this dialect (405, empty body), the key (401),
/// the bucket (404). Either the bucket's name and schema, or the answer.
// The error is the HTTP answer itself, returned at once by the handler;
// boxing it would only add an allocation.
#[allow(clippy::result_large_err)]
pub(crate) fn admit_bucket(
    shared: &Shared,
    dialect: Dialect,
    identifier: &str,
    headers: &HeaderMap,
) -> Result<(String, Value), Response> {
    if !dialect_enabled(shared, dialect) {
        return Err(empty_response(405));
    }
    if !authorized(shared, headers) {
        return Err(json_response(401, &unauthorized()));
    }
    find_bucket(shared, identifier)
        .ok_or_else(|| json_response(404, &not_found("bucket", identifier)))
}

/// The request's JSON body, or the 422 for a missing or malformed one.
#[allow(clippy::result_large_err)]
pub(crate) fn json_body(body: &RequestBody) -> Result<&Value, Response> {
    body.json().map_err(field_error)
}

pub(crate) fn dialect_enabled(shared: &Shared, dialect: Dialect) -> bool {
    let dialects = shared.lock().dialects;
    match dialect {
        Dialect::ObjectsCreate => dialects.objects_create,
        Dialect::Objects => dialects.objects,
    }
}

/// pydantic's lax boolean parsing of query values.
fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
        "false" | "0" | "no" | "off" | "f" | "n" => Some(false),
        _ => None,
    }
}

fn create(
    shared: &Shared,
    dialect: Dialect,
    identifier: &str,
    headers: &HeaderMap,
    body: &RequestBody,
    with_task: bool,
) -> Response {
    let (bucket, schema) = match admit_bucket(shared, dialect, identifier, headers) {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let value = match json_body(body) {
        Ok(value) => value,
        Err(answer) => return answer,
    };
    let object = match validate_create(dialect, value, &bucket, &schema) {
        Ok(object) => object,
        Err(Rejection::Shape(errors)) => {
            return json_response(422, &validation_detail(&errors));
        }
        Err(Rejection::Schema { message, details }) => {
            return json_response(422, &envelope(422, &message, Some(details)));
        }
    };
    // Upload references are checked under the same lock as the acceptance.
    let accepted = shared.update(|s| -> Result<_, RefusedUpload> {
        s.check_upload_refs(&bucket, &object)?;
        Ok(s.accept(
            dialect,
            &bucket,
            Value::clone(value),
            with_task,
            Instant::now(),
        ))
    });
    let accepted = match accepted {
        Ok(Some(accepted)) => accepted,
        Ok(None) => return json_response(404, &not_found("bucket", identifier)),
        Err(refused) => return json_response(refused.status, &refused.body),
    };
    let answer = match dialect {
        Dialect::ObjectsCreate => json!({
            "task_id": accepted.task_id,
            "status": "PENDING",
            "inputs": [],
            "outputs": [],
        }),
        Dialect::Objects => object_response(&object, &accepted, &bucket),
    };
    json_response(200, &answer)
}

/// `ObjectResponse` for an accepted object. Blob payloads are not echoed (the
/// real service answers storage URLs, not the data).
fn object_response(object: &ValidObject, accepted: &Accepted, bucket: &str) -> Value {
    let number = accepted.object_id.trim_start_matches("obj_");
    let blobs: Vec<Value> = object
        .blobs
        .iter()
        .enumerate()
        .map(|(index, blob)| {
            let mut properties = blob.metadata.clone();
            properties.insert(
                "url".to_string(),
                json!(format!(
                    "s3://mixpeek-mock/{bucket}/{}/{}",
                    accepted.object_id, blob.property
                )),
            );
            if let Some(upload_id) = &blob.upload_id {
                properties.insert("upload_id".to_string(), json!(upload_id));
            }
            json!({
                "blob_id": format!("blob_{number}_{}", index + 1),
                "property": blob.property,
                "type": blob.kind,
                "key_prefix": blob.key_prefix,
                "properties": properties,
            })
        })
        .collect();
    let now = rfc3339(SystemTime::now());
    let mut answer = Map::new();
    answer.insert("object_id".into(), json!(accepted.object_id));
    answer.insert("bucket_id".into(), json!(accepted.bucket_id));
    answer.insert("key_prefix".into(), json!(object.key_prefix));
    answer.insert("blobs".into(), Value::Array(blobs));
    answer.insert("metadata".into(), Value::Object(object.metadata.clone()));
    answer.insert("skip_duplicates".into(), json!(object.skip_duplicates));
    answer.insert("status".into(), json!("PENDING"));
    if let Some(task_id) = &accepted.task_id {
        answer.insert("task_id".into(), json!(task_id));
    }
    answer.insert("created_at".into(), json!(now));
    answer.insert("updated_at".into(), json!(now));
    Value::Object(answer)
}

/// `POST /v1/buckets/{bucket}/objects/batch`: every object validated like a
/// single `objects` create; partial success (`CreateObjectsBatchResponse`).
/// 200 when at least one object was created or the batch was empty; when every
/// object failed, 422 in Mixpeek's envelope with the failures in
/// `error.details.failed` (the endpoint only promises 200 "as long as at least
/// one object is created").
async fn create_objects_batch(
    State(shared): State<Arc<Shared>>,
    Path(identifier): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    Extension(body): Extension<RequestBody>,
) -> Response {
    let (bucket, schema) = match admit_bucket(&shared, Dialect::Objects, &identifier, &headers) {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let auto_process = match auto_process(&query) {
        Ok(flag) => flag,
        Err(error) => return field_error(error),
    };
    let value = match json_body(&body) {
        Ok(value) => value,
        Err(answer) => return answer,
    };
    let mode = shared.lock().batch_shape_errors;
    let items = match validate_batch(value, &bucket, &schema, mode) {
        Ok(items) => items,
        Err(errors) => return json_response(422, &validation_detail(&errors)),
    };
    let total = items.len();

    let outcome = shared.update(|s| {
        let mut valid = Vec::new();
        let mut to_accept = Vec::new();
        let mut failed = Vec::new();
        for BatchItem {
            index,
            body,
            result,
        } in items
        {
            let checked = result.and_then(|object| {
                s.check_upload_refs(&bucket, &object)
                    .map(|()| object)
                    .map_err(|refused| ItemFailure {
                        error: refused.message(),
                        error_type: crate::envelope::error_type(refused.status),
                    })
            });
            match checked {
                Ok(object) => {
                    to_accept.push((index, Value::clone(body)));
                    valid.push(object);
                }
                Err(failure) => failed.push(json!({
                    "object_index": index,
                    "error": failure.error,
                    "error_type": failure.error_type,
                })),
            }
        }
        s.accept_batch(&bucket, to_accept, auto_process, Instant::now())
            .map(|accepted| (valid, accepted, failed))
    });
    let Some((valid, accepted, failed)) = outcome else {
        return json_response(404, &not_found("bucket", &identifier));
    };
    let succeeded: Vec<Value> = valid
        .iter()
        .zip(&accepted)
        .map(|(object, accepted)| object_response(object, accepted, &bucket))
        .collect();
    let answer = json!({
        "succeeded": succeeded,
        "failed": failed,
        "total_requested": total,
        "succeeded_count": succeeded.len(),
        "failed_count": failed.len(),
    });
    if succeeded.is_empty() && !failed.is_empty() {
        let message = format!("No object was created: all {total} objects failed");
        return json_response(422, &envelope(422, &message, Some(answer)));
    }
    json_response(200, &answer)
}

async fn get_bucket(
    State(shared): State<Arc<Shared>>,
    Path(identifier): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&shared, &headers) {
        return json_response(401, &unauthorized());
    }
    let state = shared.lock();
    let Some((name, bucket)) = state
        .bucket_name(&identifier)
        .and_then(|name| state.buckets.get(&name).map(|b| (name, b)))
    else {
        return json_response(404, &not_found("bucket", &identifier));
    };
    let created = rfc3339(bucket.created_at);
    json_response(
        200,
        &json!({
            "bucket_id": bucket_id(&name),
            "bucket_name": name,
            "description": null,
            "bucket_schema": bucket.schema,
            "metadata": {},
            "object_count": bucket.object_count,
            "total_size_bytes": 0,
            "created_at": created,
            "updated_at": created,
            "status": "ACTIVE",
            "is_locked": false,
        }),
    )
}

async fn get_task(
    State(shared): State<Arc<Shared>>,
    Path(task_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&shared, &headers) {
        return json_response(401, &unauthorized());
    }
    let state = shared.lock();
    let Some(task) = state.tasks.get(&task_id) else {
        return json_response(404, &not_found("task", &task_id));
    };
    json_response(200, &task.to_json(&task_id, Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("true", Some(true))]
    #[case("False", Some(false))]
    #[case("1", Some(true))]
    #[case("off", Some(false))]
    #[case("maybe", None)]
    #[case("", None)]
    fn auto_process_parsing(#[case] raw: &str, #[case] parsed: Option<bool>) {
        assert_eq!(parse_bool(raw), parsed);
    }

    #[rstest]
    #[case(b"".as_slice(), Value::Null)]
    #[case(b"  \n".as_slice(), Value::Null)]
    #[case(b"{\"a\":1}".as_slice(), json!({"a": 1}))]
    #[case(b"not json".as_slice(), Value::Null)]
    fn bodies_are_recorded_as_json_or_null(#[case] raw: &[u8], #[case] recorded: Value) {
        let body = RequestBody::parse(&Bytes::copy_from_slice(raw));
        assert_eq!(body.recorded(), recorded);
    }
}
