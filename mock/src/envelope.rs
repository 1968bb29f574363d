//! The bodies of the emulator's error answers, and small response builders.
//!
//! Role: one place that knows the two error shapes a Mixpeek client must parse:
//! Mixpeek's `ErrorResponse` envelope
//! `{"success": false, "status": N, "error": {"message", "type", "details"?}}`
//! and FastAPI's request-validation body `{"detail": [{"loc", "msg", "type"}]}`.
//! Inputs: a status and a message (or field errors). Outputs: JSON values and
//! axum responses. Invariant: every envelope's `status` equals the HTTP status
//! it is sent with.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use crate::validate::FieldError;

/// Mixpeek's stable error `type` for a status.
pub(crate) fn error_type(status: u16) -> &'static str {
    match status {
        400 => "BadRequestError",
        401 => "AuthenticationError",
        403 => "PermissionDeniedError",
        404 => "NotFoundError",
        405 => "MethodNotAllowedError",
        408 => "RequestTimeoutError",
        409 => "ConflictError",
        413 => "PayloadTooLargeError",
        415 => "UnsupportedMediaTypeError",
        422 => "ValidationError",
        429 => "RateLimitError",
        500 => "InternalServerError",
        502 => "BadGatewayError",
        503 => "ServiceUnavailableError",
        504 => "GatewayTimeoutError",
        _ if status >= 500 => "ServerError",
        _ => "ClientError",
    }
}

/// Mixpeek's `ErrorResponse`; `details` is left out when `None`.
pub(crate) fn envelope(status: u16, message: &str, details: Option<Value>) -> Value {
    let mut error = json!({ "message": message, "type": error_type(status) });
    if let Some(details) = details {
        error["details"] = details;
    }
    json!({ "success": false, "status": status, "error": error })
}

/// The envelope for `status` with the status's reason phrase as message, used
/// for scripted faults and outages that carry no body of their own.
pub(crate) fn default_envelope(status: u16) -> Value {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    envelope(status, reason, None)
}

/// 401 for a missing or wrong bearer key.
pub(crate) fn unauthorized() -> Value {
    envelope(401, "Invalid or missing API key", None)
}

/// 404 for a bucket, task or other resource that does not exist.
pub(crate) fn not_found(resource: &str, id: &str) -> Value {
    let label = match resource {
        "bucket" => "Bucket",
        "task" => "Task",
        "upload" => "Upload",
        _ => "Resource",
    };
    envelope(
        404,
        &format!("{label} '{id}' not found"),
        Some(json!({ "resource": resource, "id": id })),
    )
}

/// FastAPI's 422 body for request-validation errors.
pub(crate) fn validation_detail(errors: &[FieldError]) -> Value {
    json!({ "detail": errors.iter().map(FieldError::to_json).collect::<Vec<_>>() })
}

/// A JSON answer. An unknown status (outside 100..=999) becomes 500, the only
/// sane reading of a scripted status that HTTP cannot carry.
pub(crate) fn json_response(status: u16, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status_code(status);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// An answer without a body, as a bare router gives for unknown routes or methods.
pub(crate) fn empty_response(status: u16) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status_code(status);
    response
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(401, "AuthenticationError")]
    #[case(404, "NotFoundError")]
    #[case(422, "ValidationError")]
    #[case(429, "RateLimitError")]
    #[case(503, "ServiceUnavailableError")]
    #[case(418, "ClientError")]
    #[case(599, "ServerError")]
    fn default_envelope_names_the_status(#[case] status: u16, #[case] kind: &str) {
        let body = default_envelope(status);
        assert_eq!(body["success"], json!(false));
        assert_eq!(body["status"], json!(status));
        assert_eq!(body["error"]["type"], json!(kind));
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(body["error"].get("details").is_none());
    }

    #[test]
    fn not_found_carries_resource_details() {
        let body = not_found("bucket", "nope");
        assert_eq!(
            body["error"]["details"],
            json!({"resource": "bucket", "id": "nope"})
        );
        assert_eq!(body["error"]["type"], json!("NotFoundError"));
    }

    #[test]
    fn responses_carry_their_status() {
        assert_eq!(
            json_response(422, &json!({})).status(),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(empty_response(405).status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            empty_response(1000).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
