//! The upload routes of dialect `objects`, and the presigned PUT.
//!
//! Role: carry out the flow modelled in `uploads.rs` over HTTP:
//! - `POST /v1/buckets/{bucket}/uploads`: 201 with an `UploadResponse` whose
//!   `presigned_url` points at this emulator (`{base}/presigned/{upload_id}?X-Amz-…`,
//!   `base` from the request's `Host`), or 200 with the existing confirmed
//!   upload and `presigned_url: null` for a duplicate `file_hash`;
//! - `PUT /presigned/{upload_id}`: the body is streamed: counted and hashed
//!   chunk by chunk, never held whole; answers 200 with `ETag: "<sha256 hex>"`,
//!   or S3's XML errors;
//! - `POST /v1/buckets/{bucket}/uploads/{upload_id}/confirm` and
//!   `GET /v1/buckets/{bucket}/uploads/{upload_id}`.
//!
//! Inputs: requests passed on by the gate in `routes.rs` (JSON bodies already
//! read; presigned PUT bodies unread); the shared state. Outputs: answers;
//! upload records; one [`crate::RecordedUpload`] per presigned PUT.
//! Invariants: the presigned PUT is outside `/v1`: no bearer key, no API fault
//! script, no quota (it has its own script); a PUT stores content only when
//! its whole body arrived and every check passed; its record is written before
//! its answer leaves (or with status 0 when no answer is sent).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::Fault;
use crate::envelope::{empty_response, envelope, json_response, not_found, validation_detail};
use crate::fault::PresignedScripted;
use crate::routes::{BodyBytes, ConnectionKill, RequestBody, admit_bucket, json_body};
use crate::state::{ConfirmRefusal, Shared, UploadCreated, bucket_id, object_on_confirm};
use crate::uploads::{
    PutHead, RecordedUpload, S3Error, Stored, etag, hex, presigned_url, validate_confirm_request,
    validate_upload_request,
};
use crate::validate::{Dialect, Rejection, validate_create};

/// Path prefix of presigned PUT URLs.
pub(crate) const PRESIGNED_PREFIX: &str = "/presigned/";

/// A refused PUT's body is read and thrown away up to this many bytes, so the
/// client gets the answer instead of a reset while it is still sending; past
/// it, the answer is sent unread and the connection closes, as S3 does.
const DRAIN_LIMIT: u64 = 8 * 1024 * 1024;

/// `POST /v1/buckets/{bucket}/uploads`.
pub(crate) async fn create_upload(
    State(shared): State<Arc<Shared>>,
    Path(identifier): Path<String>,
    headers: HeaderMap,
    Extension(body): Extension<RequestBody>,
) -> Response {
    let (bucket, schema) = match admit_bucket(&shared, Dialect::Objects, &identifier, &headers) {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let value = match json_body(&body) {
        Ok(value) => value,
        Err(answer) => return answer,
    };
    let request = match validate_upload_request(value) {
        Ok(request) => request,
        Err(errors) => return json_response(422, &validation_detail(&errors)),
    };
    let now = Instant::now();
    if request.create_object_on_confirm {
        // Mixpeek checks the future object against the bucket schema before it
        // issues a URL; the same check as a create with this blob.
        let probe = object_on_confirm(&request, "upl_probe");
        match validate_create(Dialect::Objects, &probe, &bucket, &schema) {
            Ok(_) => {}
            Err(Rejection::Schema { message, details }) => {
                return json_response(422, &envelope(422, &message, Some(details)));
            }
            Err(Rejection::Shape(errors)) => {
                let reasons: Vec<&str> = errors.iter().map(|e| e.msg.as_str()).collect();
                let message = format!(
                    "The object created on confirmation would be invalid: {}",
                    reasons.join("; ")
                );
                return json_response(422, &envelope(422, &message, None));
            }
        }
    }
    let base = self_base_url(&shared, &headers);
    let bucket_id = bucket_id(&bucket);
    match shared.update(|s| s.create_upload(&bucket, request, now)) {
        UploadCreated::Fresh(upload) => {
            let url = presigned_url(
                &base,
                &upload.upload_id,
                upload.created_wall,
                upload.request.presigned_url_expiration,
            );
            json_response(201, &upload.response(&bucket_id, Some(&url), false))
        }
        UploadCreated::Duplicate(upload) => {
            json_response(200, &upload.response(&bucket_id, None, true))
        }
    }
}

/// `http://{Host}` of the request, else the address the emulator listens on.
fn self_base_url(shared: &Shared, headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty())
        .map_or_else(
            || shared.lock().self_url.clone(),
            |host| format!("http://{host}"),
        )
}

/// `GET /v1/buckets/{bucket}/uploads/{upload_id}`: the upload's current state
/// (`presigned_url` is not repeated).
pub(crate) async fn get_upload(
    State(shared): State<Arc<Shared>>,
    Path((identifier, upload_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (bucket, _) = match admit_bucket(&shared, Dialect::Objects, &identifier, &headers) {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let state = shared.lock();
    match state.uploads.get(&upload_id).filter(|u| u.bucket == bucket) {
        Some(upload) => json_response(200, &upload.response(&bucket_id(&bucket), None, false)),
        None => json_response(404, &not_found("upload", &upload_id)),
    }
}

/// `POST /v1/buckets/{bucket}/uploads/{upload_id}/confirm` (`?async=` is
/// accepted and ignored: confirmation is always synchronous here).
pub(crate) async fn confirm_upload(
    State(shared): State<Arc<Shared>>,
    Path((identifier, upload_id)): Path<(String, String)>,
    headers: HeaderMap,
    Extension(body): Extension<RequestBody>,
) -> Response {
    let (bucket, _) = match admit_bucket(&shared, Dialect::Objects, &identifier, &headers) {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let value = match json_body(&body) {
        Ok(value) => value,
        Err(answer) => return answer,
    };
    let request = match validate_confirm_request(value) {
        Ok(request) => request,
        Err(errors) => return json_response(422, &validation_detail(&errors)),
    };
    let outcome =
        shared.update(|s| s.confirm_upload(&bucket, &upload_id, &request, Instant::now()));
    match outcome {
        Ok(answer) => json_response(200, &answer),
        Err(ConfirmRefusal::UnknownUpload) => json_response(404, &not_found("upload", &upload_id)),
        Err(ConfirmRefusal::UnknownBucket) => json_response(404, &not_found("bucket", &identifier)),
        Err(ConfirmRefusal::Mismatch(message)) => json_response(
            400,
            &envelope(
                400,
                &message,
                Some(json!({ "resource": "upload", "id": upload_id })),
            ),
        ),
    }
}

/// What a presigned PUT does, decided under the lock from its head.
enum PutPlan {
    Fault(Fault),
    DropAfter(u64),
    Refuse(S3Error),
    Store,
}

/// `PUT /presigned/{upload_id}`: see the module doc.
pub(crate) async fn put_presigned(
    State(shared): State<Arc<Shared>>,
    Path(upload_id): Path<String>,
    request: Request,
) -> Response {
    let (parts, mut body) = request.into_parts();
    let text = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = text(header::CONTENT_TYPE);
    let content_length = text(header::CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    let signature = parts
        .uri
        .query()
        .and_then(|q| query_value(q, "X-Amz-Signature"));
    let has_authorization = parts.headers.contains_key(header::AUTHORIZATION);
    let kill = parts.extensions.get::<ConnectionKill>().cloned();
    let counted = parts.extensions.get::<BodyBytes>().cloned();
    let mut recording = PutRecording::new(
        Arc::clone(&shared),
        counted,
        RecordedUpload {
            upload_id: upload_id.clone(),
            content_type: content_type.clone(),
            content_length,
            bytes: 0,
            sha256: String::new(),
            status: 0,
            started_at: Instant::now(),
            finished_at: Instant::now(),
        },
    );

    let plan = shared.update(|s| {
        if let Some(scripted) = s.presigned_script.pop_front() {
            return match scripted {
                PresignedScripted::Answer(fault) => PutPlan::Fault(fault),
                PresignedScripted::DropAfter(n) => PutPlan::DropAfter(n),
            };
        }
        if has_authorization {
            return PutPlan::Refuse(S3Error::authorization_header());
        }
        let Some(upload) = s.uploads.get(&upload_id) else {
            return PutPlan::Refuse(S3Error::unknown_upload(&upload_id));
        };
        let head = PutHead {
            signature: signature.as_deref(),
            content_type: content_type.as_deref(),
            content_length,
        };
        match upload.check_put(head, Instant::now()) {
            Ok(()) => PutPlan::Store,
            Err(refusal) => PutPlan::Refuse(refusal),
        }
    });

    match plan {
        PutPlan::Refuse(refusal) => {
            recording.read(&mut body, Some(DRAIN_LIMIT)).await;
            let answer = s3_response(&refusal, &upload_id);
            recording.finish(refusal.status);
            answer
        }
        PutPlan::Fault(fault) => {
            recording.read(&mut body, Some(DRAIN_LIMIT)).await;
            if let Some(delay) = fault.delay {
                tokio::time::sleep(delay).await;
            }
            let mut answer = match &fault.body {
                Some(json) => json_response(fault.status, json),
                None => {
                    let mut refusal = S3Error::for_status(fault.status);
                    refusal.status = fault.status;
                    s3_response(&refusal, &upload_id)
                }
            };
            if let Some(value) = fault
                .retry_after
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                answer.headers_mut().insert(header::RETRY_AFTER, value);
            }
            recording.finish(answer.status().as_u16());
            answer
        }
        PutPlan::DropAfter(limit) => {
            recording.read(&mut body, Some(limit)).await;
            // Status 0: no answer is sent.
            drop(recording);
            if let Some(ConnectionKill(notify)) = kill {
                notify.notify_one();
                // The connection task drops this future together with the connection.
                return std::future::pending().await;
            }
            // Without a connection handle (router driven directly), the
            // closest thing to a cut connection is a bare gateway error.
            empty_response(502)
        }
        PutPlan::Store => {
            let complete = recording.read(&mut body, None).await;
            let received = recording.bytes();
            if !complete || content_length.is_some_and(|expected| expected != received) {
                let refusal = S3Error::new(
                    400,
                    "IncompleteBody",
                    "You did not provide the number of bytes specified by the Content-Length HTTP header",
                );
                let answer = s3_response(&refusal, &upload_id);
                recording.finish(400);
                return answer;
            }
            let stored = Stored {
                bytes: received,
                sha256: recording.digest(),
            };
            let tag = etag(&stored.sha256);
            shared.update(|s| {
                if let Some(upload) = s.uploads.get_mut(&upload_id) {
                    upload.stored = Some(stored);
                }
            });
            let mut answer = empty_response(200);
            if let Ok(value) = HeaderValue::from_str(&tag) {
                answer.headers_mut().insert(header::ETAG, value);
            }
            insert_request_id(&mut answer, &upload_id);
            recording.finish(200);
            answer
        }
    }
}

/// The value of `key` in a query string (values of presigned URLs are
/// URL-safe, so no percent-decoding is needed for the one key read).
fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

fn insert_request_id(response: &mut Response, upload_id: &str) {
    if let Ok(value) = HeaderValue::from_str(&format!("mock-{upload_id}")) {
        response.headers_mut().insert("x-amz-request-id", value);
    }
}

/// An S3 XML error answer.
fn s3_response(refusal: &S3Error, upload_id: &str) -> Response {
    let mut answer = Response::new(Body::from(refusal.xml(&format!("mock-{upload_id}"))));
    *answer.status_mut() = axum::http::StatusCode::from_u16(refusal.status)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    insert_request_id(&mut answer, upload_id);
    answer
}

/// The next data chunk of `body` (trailers are skipped); `None` at its end.
pub(crate) async fn next_chunk(body: &mut Body) -> Option<Result<Bytes, axum::Error>> {
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        match frame {
            Err(e) => return Some(Err(e)),
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(Ok(data));
                }
            }
        }
    }
}

/// Records one presigned PUT exactly once: with its answered status through
/// [`PutRecording::finish`], or with status 0 when dropped first.
struct PutRecording {
    shared: Arc<Shared>,
    /// The gate's count for the request record (absent when the router is
    /// driven without the gate).
    counted: Option<BodyBytes>,
    entry: Option<RecordedUpload>,
    hasher: Sha256,
}

impl PutRecording {
    fn new(shared: Arc<Shared>, counted: Option<BodyBytes>, entry: RecordedUpload) -> Self {
        PutRecording {
            shared,
            counted,
            entry: Some(entry),
            hasher: Sha256::new(),
        }
    }

    fn bytes(&self) -> u64 {
        self.entry.as_ref().map_or(0, |e| e.bytes)
    }

    /// Hex SHA-256 of the bytes read so far.
    fn digest(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }

    /// Reads the body chunk by chunk, hashing and counting, until its end
    /// (true), a read error (false), or `limit` bytes were passed (false).
    async fn read(&mut self, body: &mut Body, limit: Option<u64>) -> bool {
        loop {
            if limit.is_some_and(|limit| self.bytes() >= limit) {
                return false;
            }
            match next_chunk(body).await {
                None => return true,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "presigned PUT body ended early");
                    return false;
                }
                Some(Ok(chunk)) => {
                    self.hasher.update(&chunk);
                    let n = chunk.len() as u64;
                    if let Some(entry) = &mut self.entry {
                        entry.bytes += n;
                    }
                    self.shared.add_presigned_bytes(n);
                    if let Some(counted) = &self.counted {
                        counted.add(n);
                    }
                }
            }
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
        entry.sha256 = self.digest();
        entry.finished_at = Instant::now();
        tracing::info!(
            upload_id = %entry.upload_id,
            bytes = entry.bytes,
            status,
            "presigned PUT"
        );
        self.shared.update(|s| s.upload_log.push(entry));
    }
}

impl Drop for PutRecording {
    fn drop(&mut self) {
        self.write(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("a=1&X-Amz-Signature=abc&b=2", Some("abc"))]
    #[case("X-Amz-Signature=", Some(""))]
    #[case("x-amz-signature=abc", None)]
    #[case("", None)]
    fn signature_from_the_query(#[case] query: &str, #[case] value: Option<&str>) {
        assert_eq!(query_value(query, "X-Amz-Signature").as_deref(), value);
    }

    #[test]
    fn s3_answers_are_xml_with_their_status() {
        let answer = s3_response(&S3Error::authorization_header(), "upl_1");
        assert_eq!(answer.status().as_u16(), 400);
        assert_eq!(answer.headers()[header::CONTENT_TYPE], "application/xml");
        assert_eq!(answer.headers()["x-amz-request-id"], "mock-upl_1");
    }
}
