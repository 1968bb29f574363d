//! The presigned-upload flow of dialect `objects`, as a pure model.
//!
//! Role: validate `CreateUploadRequest` and `ConfirmUploadRequest` bodies, hold
//! one upload's record, decide whether a presigned PUT is allowed and whether a
//! confirmation matches what was PUT, and build the `UploadResponse` and
//! `ConfirmUploadResponse` answers (openapi.json 0.81).
//!
//! ```text
//! POST /v1/buckets/{b}/uploads ─► upload PENDING, presigned URL {base}/presigned/{id}?X-Amz-…
//!                                  (or the confirmed upload with the same file_hash:
//!                                   presigned_url null, is_duplicate true)
//! PUT  {presigned URL}         ─► content stored (bytes, SHA-256); answers ETag "<sha256 hex>"
//! POST …/uploads/{id}/confirm  ─► checks etag / sizes / file_hash against the content → COMPLETED
//! POST …/objects {upload_id}   ─► accepted only for a COMPLETED upload of that bucket
//! ```
//!
//! Inputs: parsed bodies, the facts of a PUT's headers, `now`. Outputs: typed
//! requests or FastAPI field errors, [`S3Error`] refusals in S3's XML error
//! shape, JSON answers.
//! Invariants: the ETag is the quoted lower-case hex SHA-256 of the content
//! (not S3's MD5: one digest serves both the ETag and `file_hash`); a failed or
//! refused PUT never replaces stored content (as in S3); a confirmed upload's
//! content never changes, even if its URL is PUT to again. No clock is read
//! here: callers pass `now`.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::contract::Contract;
use crate::timestamp::rfc3339;
use crate::validate::{FieldError, body_loc, contract_errors, field_types, unreadable};

/// `CreateUploadRequest.presigned_url_expiration` default, in seconds (the
/// bounds are the contract's).
const EXPIRATION_DEFAULT_SECS: u64 = 3_600;

/// One presigned PUT the emulator received, for assertions and bandwidth
/// measurements ([`crate::MockServer::uploads`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedUpload {
    /// The upload id from the URL path (recorded even when unknown).
    pub upload_id: String,
    /// The `Content-Type` header sent.
    pub content_type: Option<String>,
    /// The `Content-Length` header sent.
    pub content_length: Option<u64>,
    /// Body bytes received (also for refused PUTs, whose body is read and
    /// discarded up to a limit, and for PUTs cut short).
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the bytes received.
    pub sha256: String,
    /// Status answered; 0 when the connection was dropped (scripted) or the
    /// client went away.
    pub status: u16,
    /// When the request head arrived.
    pub started_at: Instant,
    /// When the last body byte was read (or the PUT was refused or cut).
    pub finished_at: Instant,
}

impl RecordedUpload {
    /// Mean body bytes per second between `started_at` and `finished_at`
    /// (`None` for an instant PUT).
    pub fn bytes_per_second(&self) -> Option<f64> {
        let secs = self
            .finished_at
            .saturating_duration_since(self.started_at)
            .as_secs_f64();
        // Precision loss above 2^53 bytes is irrelevant for a rate.
        #[allow(clippy::cast_precision_loss)]
        (secs > 0.0).then(|| self.bytes as f64 / secs)
    }
}

/// A valid `CreateUploadRequest`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UploadRequest {
    pub(crate) filename: String,
    pub(crate) content_type: String,
    pub(crate) file_size_bytes: Option<u64>,
    pub(crate) presigned_url_expiration: u64,
    pub(crate) metadata: Map<String, Value>,
    pub(crate) create_object_on_confirm: bool,
    pub(crate) object_metadata: Option<Map<String, Value>>,
    pub(crate) blob_property: Option<String>,
    pub(crate) blob_type: Option<String>,
    pub(crate) file_hash: Option<String>,
    pub(crate) skip_duplicates: bool,
}

impl UploadRequest {
    /// The blob property of the object created on confirmation: `blob_property`,
    /// else the file name without its extension.
    pub(crate) fn property(&self) -> String {
        self.blob_property
            .clone()
            .unwrap_or_else(|| match self.filename.rsplit_once('.') {
                Some((stem, _)) if !stem.is_empty() => stem.to_string(),
                _ => self.filename.clone(),
            })
    }

    /// The blob type of the object created on confirmation: `blob_type`
    /// lower-cased, else derived from `content_type` as Mixpeek does.
    pub(crate) fn kind(&self) -> String {
        if let Some(kind) = &self.blob_type {
            return kind.to_ascii_lowercase();
        }
        let mime = self.content_type.to_ascii_lowercase();
        let kind = match mime.split_once('/') {
            Some(("image", _)) => "image",
            Some(("video", _)) => "video",
            Some(("audio", _)) => "audio",
            Some(("text", "csv")) => "excel",
            Some(("text", _)) => "text",
            _ if mime == "application/pdf" => "pdf",
            _ if mime == "application/json" => "object",
            _ if mime.contains("spreadsheet") || mime.contains("ms-excel") => "excel",
            _ => "text",
        };
        kind.to_string()
    }
}

/// A valid `ConfirmUploadRequest`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ConfirmRequest {
    pub(crate) etag: Option<String>,
    pub(crate) file_size_bytes: Option<u64>,
}

/// Validates a `CreateUploadRequest` body, reporting every problem at once:
/// the contract's violations, then what openapi states only in prose (a
/// base name for `filename`, a MIME type for `content_type`, a
/// `BucketSchemaFieldType` in any case for `blob_type`), each checked only on
/// a field the contract found no fault with (pydantic's one error per field).
pub(crate) fn validate_upload_request(body: &Value) -> Result<UploadRequest, Vec<FieldError>> {
    let mut errors = contract_errors(Contract::CreateUpload, body);
    let Some(root) = body.as_object() else {
        return Err(errors);
    };
    let faulty = |errors: &[FieldError], key: &str| {
        errors
            .iter()
            .any(|e| e.loc.get(1).and_then(Value::as_str) == Some(key))
    };
    let text = |key: &str| root.get(key).and_then(Value::as_str);
    let loc = |key: &str| body_loc(&[json!(key)]);

    if let Some(name) = text("filename")
        && !faulty(&errors, "filename")
        && (name.contains('/') || name.contains('\\') || name == ".." || name == ".")
    {
        errors.push(FieldError::new(
            loc("filename"),
            "value_error",
            "Value error, filename must be a base name without path traversal characters (/, \\, ..)",
        ));
    }
    if let Some(mime) = text("content_type")
        && !faulty(&errors, "content_type")
        && !is_mime_type(mime)
    {
        errors.push(FieldError::new(
            loc("content_type"),
            "value_error",
            "Value error, content_type must be a MIME type such as 'video/mp4'",
        ));
    }
    let types = field_types();
    if let Some(kind) = text("blob_type")
        && !faulty(&errors, "blob_type")
        && !types.contains(&kind.to_ascii_lowercase().as_str())
    {
        errors.push(FieldError::new(
            loc("blob_type"),
            "value_error",
            format!(
                "Value error, blob_type must be a BucketSchemaFieldType ({})",
                types.join(", ")
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let (Some(filename), Some(content_type)) = (text("filename"), text("content_type")) else {
        return Err(vec![unreadable(&[])]);
    };
    let flag = |key: &str, default: bool| root.get(key).and_then(Value::as_bool).unwrap_or(default);
    let object = |key: &str| root.get(key).and_then(Value::as_object).cloned();
    Ok(UploadRequest {
        filename: filename.to_string(),
        content_type: content_type.to_string(),
        file_size_bytes: root.get("file_size_bytes").and_then(Value::as_u64),
        presigned_url_expiration: root
            .get("presigned_url_expiration")
            .and_then(Value::as_u64)
            .unwrap_or(EXPIRATION_DEFAULT_SECS),
        metadata: object("metadata").unwrap_or_default(),
        create_object_on_confirm: flag("create_object_on_confirm", true),
        object_metadata: object("object_metadata"),
        blob_property: text("blob_property").map(str::to_string),
        blob_type: text("blob_type").map(str::to_string),
        file_hash: text("file_hash").map(str::to_string),
        skip_duplicates: flag("skip_duplicates", true),
    })
}

/// Validates a `ConfirmUploadRequest` body (every field is optional).
pub(crate) fn validate_confirm_request(body: &Value) -> Result<ConfirmRequest, Vec<FieldError>> {
    let errors = contract_errors(Contract::ConfirmUpload, body);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ConfirmRequest {
        etag: body.get("etag").and_then(Value::as_str).map(str::to_string),
        file_size_bytes: body.get("file_size_bytes").and_then(Value::as_u64),
    })
}

/// `type/subtype` with non-empty token parts (parameters after `;` allowed).
fn is_mime_type(raw: &str) -> bool {
    let essence = raw.split(';').next().unwrap_or("").trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c))
    };
    essence
        .split_once('/')
        .is_some_and(|(kind, sub)| token(kind) && token(sub))
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The `ETag` header value for content of digest `sha256` (hex): quoted, as S3 sends it.
pub(crate) fn etag(sha256: &str) -> String {
    format!("\"{sha256}\"")
}

/// The `X-Amz-Signature` of an upload's presigned URL: a stable digest of its id,
/// so a URL only works for the upload it was issued for.
pub(crate) fn signature(upload_id: &str) -> String {
    hex(&Sha256::digest(format!(
        "mixpeek-mock presigned PUT {upload_id}"
    )))
}

/// The presigned PUT URL of `upload_id` on the emulator at `base`
/// (`http://host:port`), shaped like an S3 SigV4 presigned URL.
pub(crate) fn presigned_url(
    base: &str,
    upload_id: &str,
    issued: SystemTime,
    expires_in: u64,
) -> String {
    let amz_date: String = rfc3339(issued)
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!(
        "{base}/presigned/{upload_id}?X-Amz-Algorithm=AWS4-HMAC-SHA256\
         &X-Amz-Credential=mixpeek-mock%2Fus-east-1%2Fs3%2Faws4_request\
         &X-Amz-Date={amz_date}&X-Amz-Expires={expires_in}\
         &X-Amz-SignedHeaders=content-type%3Bhost&X-Amz-Signature={}",
        signature(upload_id)
    )
}

/// Content stored by a successful PUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) bytes: u64,
    /// Lower-case hex SHA-256.
    pub(crate) sha256: String,
}

/// A refusal in S3's words: answered with `<Error><Code>…</Code><Message>…</Message></Error>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct S3Error {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl S3Error {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        S3Error {
            status,
            code,
            message: message.into(),
        }
    }

    /// A presigned URL never carries an Authorization header: S3 refuses two
    /// authentication mechanisms in one request.
    pub(crate) fn authorization_header() -> Self {
        S3Error::new(
            400,
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, \
             Signature query string parameter or the Authorization header should be specified",
        )
    }

    pub(crate) fn unknown_upload(upload_id: &str) -> Self {
        S3Error::new(
            403,
            "AccessDenied",
            format!("No presigned upload '{upload_id}' was issued by this server"),
        )
    }

    /// The default answer of a scripted presigned fault with no body.
    pub(crate) fn for_status(status: u16) -> Self {
        match status {
            400 => S3Error::new(400, "BadRequest", "Bad Request"),
            403 => S3Error::new(403, "AccessDenied", "Access Denied"),
            404 => S3Error::new(404, "NoSuchKey", "The specified key does not exist."),
            500 => S3Error::new(
                500,
                "InternalError",
                "We encountered an internal error. Please try again.",
            ),
            503 => S3Error::new(503, "SlowDown", "Please reduce your request rate."),
            _ => S3Error::new(status, "Error", format!("HTTP {status}")),
        }
    }

    /// The XML body.
    pub(crate) fn xml(&self, request_id: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>\
             <RequestId>{}</RequestId><HostId>mixpeek-mock</HostId></Error>",
            self.code,
            xml_escape(&self.message),
            xml_escape(request_id)
        )
    }
}

fn xml_escape(raw: &str) -> String {
    raw.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What a presigned PUT's request head says, for [`UploadRecord::check_put`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PutHead<'a> {
    /// `X-Amz-Signature` from the query string.
    pub(crate) signature: Option<&'a str>,
    pub(crate) content_type: Option<&'a str>,
    pub(crate) content_length: Option<u64>,
}

/// Upload status as `UploadResponse.status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UploadStatus {
    Pending,
    Completed,
}

impl UploadStatus {
    fn as_str(self) -> &'static str {
        match self {
            UploadStatus::Pending => "PENDING",
            UploadStatus::Completed => "COMPLETED",
        }
    }
}

/// One upload the emulator issued.
#[derive(Debug, Clone)]
pub(crate) struct UploadRecord {
    pub(crate) upload_id: String,
    /// Bucket name.
    pub(crate) bucket: String,
    pub(crate) request: UploadRequest,
    pub(crate) created_wall: SystemTime,
    /// When the presigned URL stops working.
    pub(crate) expires_at: Instant,
    /// Set by [`crate::MockServer::expire_presigned_urls`].
    pub(crate) url_revoked: bool,
    /// The last successful PUT.
    pub(crate) stored: Option<Stored>,
    /// The content as confirmed; `Some` once COMPLETED.
    pub(crate) confirmed: Option<Stored>,
    pub(crate) completed_wall: Option<SystemTime>,
    /// The object created on confirmation (`create_object_on_confirm`).
    pub(crate) object_id: Option<String>,
}

impl UploadRecord {
    pub(crate) fn new(
        upload_id: String,
        bucket: String,
        request: UploadRequest,
        now: Instant,
        now_wall: SystemTime,
    ) -> Self {
        let expires_at = now + Duration::from_secs(request.presigned_url_expiration);
        UploadRecord {
            upload_id,
            bucket,
            request,
            created_wall: now_wall,
            expires_at,
            url_revoked: false,
            stored: None,
            confirmed: None,
            completed_wall: None,
            object_id: None,
        }
    }

    pub(crate) fn status(&self) -> UploadStatus {
        if self.confirmed.is_some() {
            UploadStatus::Completed
        } else {
            UploadStatus::Pending
        }
    }

    /// Whether a PUT with these headers may store content, checked in S3's
    /// order: signature, expiry, the signed Content-Type, Content-Length.
    pub(crate) fn check_put(&self, head: PutHead<'_>, now: Instant) -> Result<(), S3Error> {
        if head.signature != Some(signature(&self.upload_id).as_str()) {
            return Err(S3Error::new(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided \
                 (use the presigned URL exactly as issued, query string included)",
            ));
        }
        if self.url_revoked || now >= self.expires_at {
            return Err(S3Error::new(403, "AccessDenied", "Request has expired"));
        }
        let signed = &self.request.content_type;
        if !head
            .content_type
            .is_some_and(|sent| sent.trim().eq_ignore_ascii_case(signed))
        {
            return Err(S3Error::new(
                403,
                "SignatureDoesNotMatch",
                format!(
                    "The request signature we calculated does not match the signature you provided: \
                     Content-Type {} differs from the signed '{signed}'",
                    head.content_type
                        .map_or_else(|| "(none)".to_string(), |t| format!("'{t}'"))
                ),
            ));
        }
        let Some(length) = head.content_length else {
            return Err(S3Error::new(
                411,
                "MissingContentLength",
                "You must provide the Content-Length HTTP header.",
            ));
        };
        match self.request.file_size_bytes {
            Some(declared) if length > declared => Err(S3Error::new(
                400,
                "EntityTooLarge",
                format!(
                    "Your proposed upload of {length} bytes exceeds the file_size_bytes \
                     ({declared}) declared when the upload was created"
                ),
            )),
            Some(declared) if length < declared => Err(S3Error::new(
                400,
                "EntityTooSmall",
                format!(
                    "Your proposed upload of {length} bytes is smaller than the file_size_bytes \
                     ({declared}) declared when the upload was created"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The content a confirmation with `request` finalises: the stored content
    /// on a first confirmation, the confirmed one on a repeat. `Err` holds the
    /// message of a 400 answer.
    pub(crate) fn verify(&self, request: &ConfirmRequest) -> Result<Stored, String> {
        let id = &self.upload_id;
        let Some(content) = self.confirmed.as_ref().or(self.stored.as_ref()) else {
            return Err(format!(
                "Upload '{id}' has no file in storage: PUT it to the presigned URL before confirming"
            ));
        };
        if let Some(sent) = &request.etag {
            let bare = sent.trim().trim_matches('"').to_ascii_lowercase();
            if bare != content.sha256 {
                return Err(format!(
                    "ETag mismatch for upload '{id}': got {sent}, storage has {}",
                    etag(&content.sha256)
                ));
            }
        }
        for (what, size) in [
            ("file_size_bytes", request.file_size_bytes),
            ("declared file_size_bytes", self.request.file_size_bytes),
        ] {
            if let Some(size) = size
                && size != content.bytes
            {
                return Err(format!(
                    "File size mismatch for upload '{id}': {what} is {size}, storage has {} bytes",
                    content.bytes
                ));
            }
        }
        if let Some(hash) = &self.request.file_hash
            && *hash != content.sha256
        {
            return Err(format!(
                "File hash mismatch for upload '{id}': file_hash was {hash}, the stored content hashes to {}",
                content.sha256
            ));
        }
        Ok(content.clone())
    }

    /// `s3_key` as Mixpeek documents its format.
    fn s3_key(&self) -> String {
        format!(
            "mixpeek-mock/ns_default/api_buckets_uploads_create/{}/{}",
            self.upload_id, self.request.filename
        )
    }

    /// `UploadResponse`. `presigned_url` is `None` for duplicates and for GETs.
    pub(crate) fn response(
        &self,
        bucket_id: &str,
        presigned_url: Option<&str>,
        duplicate: bool,
    ) -> Value {
        let request = &self.request;
        let content = self.confirmed.as_ref();
        let expires_wall =
            self.created_wall + Duration::from_secs(request.presigned_url_expiration);
        let completed = self.completed_wall.map(rfc3339);
        let message = duplicate.then_some({
            "File already exists with the same content hash. No upload needed - returning existing upload."
        });
        json!({
            "upload_id": self.upload_id,
            "bucket_id": bucket_id,
            "filename": request.filename,
            "content_type": request.content_type,
            "file_size_bytes": content.map(|c| c.bytes).or(request.file_size_bytes),
            "presigned_url": presigned_url,
            "presigned_url_expiration": request.presigned_url_expiration,
            "s3_key": self.s3_key(),
            "status": self.status().as_str(),
            "metadata": request.metadata,
            "create_object_on_confirm": request.create_object_on_confirm,
            "object_metadata": request.object_metadata,
            "blob_property": request.blob_property,
            "blob_type": request.blob_type,
            "file_hash": content.map(|c| c.sha256.clone()).or_else(|| request.file_hash.clone()),
            "skip_duplicates": request.skip_duplicates,
            "is_duplicate": duplicate,
            "duplicate_of_upload_id": duplicate.then_some(&self.upload_id),
            "skipped_unique_key": false,
            "existing_object_id": null,
            "message": message,
            "created_at": rfc3339(self.created_wall),
            "expires_at": rfc3339(expires_wall),
            "completed_at": completed,
            "verified_at": completed,
            "etag": content.map(|c| etag(&c.sha256)),
            "object_id": self.object_id,
            "task_id": null,
        })
    }

    /// `ConfirmUploadResponse` of a confirmed upload.
    pub(crate) fn confirm_response(&self, repeat: bool) -> Value {
        let content = self.confirmed.as_ref();
        let completed = self.completed_wall.map(rfc3339);
        let message = if repeat {
            "Upload was already confirmed"
        } else {
            "Upload confirmed"
        };
        json!({
            "upload_id": self.upload_id,
            "status": self.status().as_str(),
            "etag": content.map(|c| etag(&c.sha256)),
            "file_size_bytes": content.map(|c| c.bytes),
            "file_hash": content.map(|c| c.sha256.clone()),
            "verified_at": completed,
            "completed_at": completed,
            "object_id": self.object_id,
            "task_id": null,
            "message": message,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    const HASH: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn request(extra: Value) -> Value {
        let mut body = json!({
            "filename": "clip.mp4",
            "content_type": "video/mp4",
            "file_size_bytes": 5,
            "file_hash": HASH,
            "create_object_on_confirm": false,
            "skip_duplicates": true,
        });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    }

    fn errors(body: &Value) -> Vec<(String, String)> {
        validate_upload_request(body)
            .unwrap_err()
            .into_iter()
            .map(|e| (Value::Array(e.loc).to_string(), e.kind.into_owned()))
            .collect()
    }

    #[test]
    fn the_spec_request_is_valid_and_defaults_apply() {
        let valid = validate_upload_request(&request(json!({}))).unwrap();
        assert_eq!(valid.filename, "clip.mp4");
        assert_eq!(valid.file_size_bytes, Some(5));
        assert_eq!(valid.presigned_url_expiration, 3600);
        assert!(!valid.create_object_on_confirm);
        let minimal = validate_upload_request(
            &json!({"filename": "a.pdf", "content_type": "application/pdf"}),
        )
        .unwrap();
        assert!(minimal.create_object_on_confirm && minimal.skip_duplicates);
        assert_eq!((minimal.file_size_bytes, minimal.file_hash), (None, None));
    }

    #[rstest]
    #[case::missing_filename(json!({"filename": null}), r#"["body","filename"]"#, "string_type")]
    #[case::empty_filename(json!({"filename": ""}), r#"["body","filename"]"#, "string_too_short")]
    #[case::long_filename(json!({"filename": "f".repeat(256)}), r#"["body","filename"]"#, "string_too_long")]
    #[case::path_in_filename(json!({"filename": "dir/clip.mp4"}), r#"["body","filename"]"#, "value_error")]
    #[case::backslash_in_filename(json!({"filename": "dir\\clip.mp4"}), r#"["body","filename"]"#, "value_error")]
    #[case::bad_mime(json!({"content_type": "video"}), r#"["body","content_type"]"#, "value_error")]
    #[case::zero_size(json!({"file_size_bytes": 0}), r#"["body","file_size_bytes"]"#, "greater_than_equal")]
    #[case::string_size(json!({"file_size_bytes": "5"}), r#"["body","file_size_bytes"]"#, "int_type")]
    #[case::short_expiry(json!({"presigned_url_expiration": 59}), r#"["body","presigned_url_expiration"]"#, "greater_than_equal")]
    #[case::long_expiry(json!({"presigned_url_expiration": 86_401}), r#"["body","presigned_url_expiration"]"#, "less_than_equal")]
    #[case::upper_case_hash(json!({"file_hash": HASH.to_uppercase()}), r#"["body","file_hash"]"#, "string_pattern_mismatch")]
    #[case::short_hash(json!({"file_hash": "abc"}), r#"["body","file_hash"]"#, "string_too_short")]
    #[case::flag_as_string(json!({"create_object_on_confirm": "false"}), r#"["body","create_object_on_confirm"]"#, "bool_type")]
    #[case::bad_property(json!({"blob_property": "my-video"}), r#"["body","blob_property"]"#, "string_pattern_mismatch")]
    #[case::bad_blob_type(json!({"blob_type": "document"}), r#"["body","blob_type"]"#, "value_error")]
    #[case::metadata_list(json!({"metadata": []}), r#"["body","metadata"]"#, "dict_type")]
    fn bad_upload_requests_are_refused(
        #[case] extra: Value,
        #[case] loc: &str,
        #[case] kind: &'static str,
    ) {
        assert_eq!(
            errors(&request(extra)),
            vec![(loc.to_string(), kind.to_string())]
        );
    }

    #[test]
    fn missing_required_fields_are_all_reported() {
        let found = errors(&json!({}));
        assert_eq!(
            found,
            vec![
                (r#"["body","filename"]"#.to_string(), "missing".to_string()),
                (
                    r#"["body","content_type"]"#.to_string(),
                    "missing".to_string()
                ),
            ]
        );
    }

    #[rstest]
    #[case(json!({}), Ok(ConfirmRequest::default()))]
    #[case(json!({"etag": "\"ab\"", "file_size_bytes": 3}), Ok(ConfirmRequest { etag: Some("\"ab\"".into()), file_size_bytes: Some(3) }))]
    #[case(json!({"file_size_bytes": 0}), Err("greater_than_equal"))]
    #[case(json!({"etag": 5}), Err("string_type"))]
    #[case(json!([]), Err("model_attributes_type"))]
    fn confirm_requests(#[case] body: Value, #[case] expected: Result<ConfirmRequest, &str>) {
        let got = validate_confirm_request(&body).map_err(|e| e[0].kind.to_string());
        let expected = expected.map_err(str::to_string);
        assert_eq!(got, expected);
    }

    #[rstest]
    #[case("clip.mp4", None, None, "video/mp4", "clip", "video")]
    #[case(
        "archive.tar.gz",
        None,
        None,
        "application/gzip",
        "archive.tar",
        "text"
    )]
    #[case("noext", Some("cover"), Some("IMAGE"), "image/png", "cover", "image")]
    #[case("report.pdf", None, None, "application/pdf", "report", "pdf")]
    #[case("rows.csv", None, None, "text/csv", "rows", "excel")]
    fn object_on_confirm_property_and_type(
        #[case] filename: &str,
        #[case] property: Option<&str>,
        #[case] kind: Option<&str>,
        #[case] mime: &str,
        #[case] want_property: &str,
        #[case] want_kind: &str,
    ) {
        let body = json!({"filename": filename, "content_type": mime,
                          "blob_property": property, "blob_type": kind});
        let request = validate_upload_request(&body).unwrap();
        assert_eq!(
            (request.property().as_str(), request.kind().as_str()),
            (want_property, want_kind)
        );
    }

    fn record(now: Instant) -> UploadRecord {
        let request = validate_upload_request(&request(json!({}))).unwrap();
        UploadRecord::new(
            "upl_1".into(),
            "docs".into(),
            request,
            now,
            SystemTime::UNIX_EPOCH,
        )
    }

    fn good_head(sig: &str) -> PutHead<'_> {
        PutHead {
            signature: Some(sig),
            content_type: Some("video/mp4"),
            content_length: Some(5),
        }
    }

    #[rstest]
    #[case::accepted(|h: &mut PutHead| { let _ = h; }, None)]
    #[case::content_type_case_is_ignored(|h: &mut PutHead| h.content_type = Some("Video/MP4"), None)]
    #[case::no_signature(|h: &mut PutHead| h.signature = None, Some((403, "SignatureDoesNotMatch")))]
    #[case::other_signature(|h: &mut PutHead| h.signature = Some("abc"), Some((403, "SignatureDoesNotMatch")))]
    #[case::other_content_type(|h: &mut PutHead| h.content_type = Some("application/octet-stream"), Some((403, "SignatureDoesNotMatch")))]
    #[case::no_content_type(|h: &mut PutHead| h.content_type = None, Some((403, "SignatureDoesNotMatch")))]
    #[case::chunked(|h: &mut PutHead| h.content_length = None, Some((411, "MissingContentLength")))]
    #[case::too_large(|h: &mut PutHead| h.content_length = Some(6), Some((400, "EntityTooLarge")))]
    #[case::too_small(|h: &mut PutHead| h.content_length = Some(4), Some((400, "EntityTooSmall")))]
    fn put_checks(#[case] change: fn(&mut PutHead), #[case] refusal: Option<(u16, &str)>) {
        let now = Instant::now();
        let upload = record(now);
        let sig = signature("upl_1");
        let mut head = good_head(&sig);
        change(&mut head);
        let got = upload
            .check_put(head, now)
            .err()
            .map(|e| (e.status, e.code));
        assert_eq!(got, refusal);
    }

    #[test]
    fn urls_expire_with_time_or_when_revoked() {
        let now = Instant::now();
        let mut upload = record(now);
        let sig = signature("upl_1");
        let late = now + Duration::from_secs(3600);
        let refusal = upload.check_put(good_head(&sig), late).unwrap_err();
        assert_eq!((refusal.status, refusal.code), (403, "AccessDenied"));
        assert_eq!(refusal.message, "Request has expired");
        assert!(upload.check_put(good_head(&sig), now).is_ok());
        upload.url_revoked = true;
        assert!(upload.check_put(good_head(&sig), now).is_err());
    }

    #[test]
    fn confirmation_checks_the_stored_content() {
        let mut upload = record(Instant::now());
        let confirm = |etag: Option<&str>, size: Option<u64>| ConfirmRequest {
            etag: etag.map(str::to_string),
            file_size_bytes: size,
        };
        assert!(
            upload
                .verify(&confirm(None, None))
                .unwrap_err()
                .contains("PUT it")
        );

        let stored = Stored {
            bytes: 5,
            sha256: HASH.to_string(),
        };
        upload.stored = Some(stored.clone());
        let quoted = etag(HASH);
        assert_eq!(
            upload.verify(&confirm(Some(&quoted), Some(5))),
            Ok(stored.clone())
        );
        assert_eq!(
            upload.verify(&confirm(Some(HASH), None)),
            Ok(stored.clone())
        );
        assert!(
            upload
                .verify(&confirm(Some("\"00\""), None))
                .unwrap_err()
                .contains("ETag")
        );
        assert!(
            upload
                .verify(&confirm(None, Some(4)))
                .unwrap_err()
                .contains("size")
        );

        // Content that is not what was declared at creation.
        upload.stored = Some(Stored {
            bytes: 5,
            sha256: "0".repeat(64),
        });
        assert!(
            upload
                .verify(&confirm(None, None))
                .unwrap_err()
                .contains("hash")
        );
        upload.stored = Some(Stored {
            bytes: 6,
            sha256: HASH.to_string(),
        });
        assert!(
            upload
                .verify(&confirm(None, None))
                .unwrap_err()
                .contains("declared")
        );

        // Once confirmed, later PUTs do not change what a repeat confirms.
        upload.confirmed = Some(stored.clone());
        assert_eq!(upload.verify(&confirm(Some(&quoted), Some(5))), Ok(stored));
    }

    #[test]
    fn responses_follow_the_upload_state() {
        let mut upload = record(Instant::now());
        let url = presigned_url("http://127.0.0.1:9", "upl_1", SystemTime::UNIX_EPOCH, 3600);
        assert!(url.starts_with("http://127.0.0.1:9/presigned/upl_1?X-Amz-Algorithm="));
        assert!(url.contains("X-Amz-Date=19700101T000000Z&X-Amz-Expires=3600"));
        assert!(url.ends_with(&format!("X-Amz-Signature={}", signature("upl_1"))));

        let fresh = upload.response("bkt_docs", Some(&url), false);
        assert_eq!(fresh["status"], json!("PENDING"));
        assert_eq!(fresh["presigned_url"], json!(url));
        assert_eq!(fresh["is_duplicate"], json!(false));
        assert_eq!(fresh["expires_at"], json!("1970-01-01T01:00:00Z"));
        assert_eq!(fresh["etag"], Value::Null);

        upload.confirmed = Some(Stored {
            bytes: 5,
            sha256: HASH.to_string(),
        });
        upload.completed_wall = Some(SystemTime::UNIX_EPOCH);
        let duplicate = upload.response("bkt_docs", None, true);
        assert_eq!(duplicate["status"], json!("COMPLETED"));
        assert_eq!(duplicate["presigned_url"], Value::Null);
        assert_eq!(duplicate["duplicate_of_upload_id"], json!("upl_1"));
        assert_eq!(duplicate["etag"], json!(etag(HASH)));
        let confirmed = upload.confirm_response(false);
        assert_eq!(confirmed["status"], json!("COMPLETED"));
        assert_eq!(confirmed["file_hash"], json!(HASH));
        assert_eq!(confirmed["file_size_bytes"], json!(5));
    }

    #[test]
    fn s3_errors_are_xml_and_escaped() {
        let xml = S3Error::new(403, "AccessDenied", "a <b> & \"c\"").xml("req-1");
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        assert!(xml.contains("<Code>AccessDenied</Code>"));
        assert!(xml.contains("<Message>a &lt;b&gt; &amp; &quot;c&quot;</Message>"));
        assert!(xml.contains("<RequestId>req-1</RequestId>"));
        assert_eq!(S3Error::for_status(503).code, "SlowDown");
    }

    #[rstest]
    #[case(b"".as_slice(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")]
    #[case(b"hello".as_slice(), HASH)]
    fn hex_of_sha256(#[case] data: &[u8], #[case] expected: &str) {
        assert_eq!(hex(&Sha256::digest(data)), expected);
        // What the emulator hashes is what the contract takes as a file_hash.
        let body = json!({"filename": "a", "content_type": "a/b", "file_hash": expected});
        assert_eq!(Contract::CreateUpload.check(&body), Ok(()));
    }
}
