//! Build: how each blob travels, and the HTTP request for an object in either
//! API dialect (SPEC §6, §7).
//!
//! Inputs: the watch's delivery settings, a classified file's blob type, size
//! and content, and an [`ObjectSpec`] from the outbox.
//!
//! Outputs: a [`Delivery`] choice (or a dead-letter reason saying which
//! setting would fix it), the blob's [`BlobData`], the dialect's
//! [`HttpRequest`], and the redacted view of it that `plan` prints.
//!
//! Decisions where SPEC is silent:
//! - JSON blobs (type `json`) up to `inline_max_bytes` always carry their
//!   parsed value, whatever the delivery mode: Mixpeek's `object` type takes
//!   a JSON value, which a base64 envelope or a URL is not.
//!   Above the limit they take the large-file path like any other file, so a
//!   request body never holds more than `inline_max_bytes` of one file.
//! - Text that is not valid UTF-8 is sent inline (base64) instead.
//! - A UTF-8 byte order mark is dropped from JSON and text content.
//! - `url` delivery: `{key_prefix}` is the object's key prefix with each
//!   segment percent-encoded (the root `/` gives an empty string, so
//!   `https://cdn/drop{key_prefix}/{file_name}` has no `//`), and
//!   `{file_name}` is the percent-encoded file name.
//! - Dialect `objects` puts metadata fields at the body's root. A metadata key
//!   that names a request field (`key_prefix`, `blobs`, `skip_duplicates`,
//!   `canonicalize_source`, `force_remirror`) must not change the request, so
//!   such keys move into a nested `metadata` object instead
//!   ([`reserved_metadata_keys`] lets the shell warn about them).
//! - An `upload` blob is rendered with its `upload_id` once the submitter
//!   has one; before that (in `plan`) the id reads
//!   `<upload of N bytes sha256:HEX>`.
//! - `delivery = "upload"` on a file that fits `inline_max_bytes` still
//!   uploads it (the operator asked for it), except JSON, which keeps its
//!   value as above.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::config::{DeliveryMode, Watch};
use crate::pipeline::{BlobData, Dialect, HttpRequest, ObjectSpec, UploadFile};

/// Request fields of dialect `objects` (`CreateObjectRequest`) that metadata
/// at the body's root must not overwrite.
pub const RESERVED_ROOT_FIELDS: &[&str] = &[
    "key_prefix",
    "blobs",
    "skip_duplicates",
    "canonicalize_source",
    "force_remirror",
];

/// How one blob's content travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// The parsed JSON value.
    Json,
    /// The UTF-8 text.
    Text,
    /// Base64 with MIME type and file name.
    Inline,
    /// A URL from `url_template`.
    Url,
    /// The presigned upload flow (dialect `objects`).
    Upload,
}

/// Picks the delivery of one blob (SPEC §7 "Blob data by delivery mode").
/// `rule_delivery` is a matching `[[watch.rule]]`'s, which beats the watch's.
pub fn choose_delivery(
    watch: &Watch,
    rule_delivery: Option<DeliveryMode>,
    blob_type: &str,
    size: u64,
    dialect_has_upload: bool,
) -> Result<Delivery, String> {
    let max = watch.inline_max_bytes;
    let fits = size <= max;
    if blob_type == "json" && fits {
        return Ok(Delivery::Json);
    }
    let has_template = watch.url_template.is_some();
    match rule_delivery.unwrap_or(watch.delivery) {
        DeliveryMode::Auto if fits && blob_type == "text" => Ok(Delivery::Text),
        DeliveryMode::Auto | DeliveryMode::Inline if fits => Ok(Delivery::Inline),
        DeliveryMode::Auto if dialect_has_upload => Ok(Delivery::Upload),
        DeliveryMode::Auto if has_template => Ok(Delivery::Url),
        DeliveryMode::Auto => Err(format!(
            "file is {size} bytes, above inline_max_bytes ({max}); use api.dialect = \"objects\" \
             (presigned uploads), set url_template for a tree that is already published, or \
             raise inline_max_bytes if the bucket's plan accepts larger inline files"
        )),
        DeliveryMode::Inline => Err(format!(
            "delivery = \"inline\" but the file is {size} bytes, above inline_max_bytes \
             ({max}); raise inline_max_bytes, or use delivery = \"upload\" (api.dialect = \
             \"objects\") or \"url\" with url_template"
        )),
        DeliveryMode::Url if has_template => Ok(Delivery::Url),
        DeliveryMode::Url => Err("delivery = \"url\" needs url_template on the watch, e.g. \
             \"https://cdn.example.com/drop{key_prefix}/{file_name}\""
            .to_owned()),
        // An empty file has nothing to upload (`file_size_bytes` must be at
        // least 1); it travels inline as an empty payload.
        DeliveryMode::Upload if size == 0 => Ok(Delivery::Inline),
        DeliveryMode::Upload if dialect_has_upload => Ok(Delivery::Upload),
        DeliveryMode::Upload => Err(
            "delivery = \"upload\" needs api.dialect = \"objects\" (or \"auto\" against an API \
             that has it); the objects/create dialect has no presigned uploads"
                .to_owned(),
        ),
    }
}

fn strip_bom(content: &[u8]) -> &[u8] {
    content.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(content)
}

/// The blob's `data` for the chosen delivery. Errors are dead-letter reasons
/// naming the file.
pub fn blob_data(
    delivery: Delivery,
    content: &[u8],
    mime: &str,
    file_name: &str,
    object_key_prefix: &str,
    url_template: Option<&str>,
) -> Result<BlobData, String> {
    let inline = || BlobData::Inline {
        base64: STANDARD.encode(content),
        mime_type: mime.to_owned(),
        filename: file_name.to_owned(),
    };
    match delivery {
        Delivery::Json => serde_json::from_slice(strip_bom(content))
            .map(|value| BlobData::Json { value })
            .map_err(|e| format!("`{file_name}` is not valid JSON: {e}")),
        Delivery::Text => Ok(match std::str::from_utf8(strip_bom(content)) {
            Ok(text) => BlobData::Text {
                text: text.to_owned(),
            },
            Err(_) => inline(),
        }),
        Delivery::Inline => Ok(inline()),
        Delivery::Upload => Err(format!(
            "`{file_name}`: an upload blob is made from the file, not from its content"
        )),
        Delivery::Url => {
            let template = url_template.ok_or_else(|| {
                format!("`{file_name}`: delivery is url but the watch has no url_template")
            })?;
            let key_prefix = object_key_prefix
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| format!("/{}", percent_encode(s)))
                .collect::<String>();
            let url = template
                .replace("{key_prefix}", &key_prefix)
                .replace("{file_name}", &percent_encode(file_name));
            Ok(BlobData::Url {
                url,
                mime_type: mime.to_owned(),
            })
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so the
/// result is one safe path segment.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The metadata keys that would collide with request fields in dialect
/// `objects` (they are nested under `metadata` there).
pub fn reserved_metadata_keys(metadata: &Map<String, Value>) -> Vec<&str> {
    metadata
        .keys()
        .map(String::as_str)
        .filter(|k| RESERVED_ROOT_FIELDS.contains(k))
        .collect()
}

fn blob_body(blob: &crate::pipeline::BlobSpec, dialect: Dialect) -> Value {
    let blob_type = match (dialect, blob.blob_type.as_str()) {
        (Dialect::Objects, "json") => "object",
        (_, t) => t,
    };
    let data = match &blob.data {
        BlobData::Json { value } => value.clone(),
        BlobData::Text { text } => Value::String(text.clone()),
        BlobData::Inline {
            base64,
            mime_type,
            filename,
        } => json!({"base64": base64, "mime_type": mime_type, "filename": filename}),
        BlobData::Url { url, mime_type } => match dialect {
            Dialect::ObjectsCreate => json!({"filename": url, "mime_type": mime_type}),
            Dialect::Objects => Value::String(url.clone()),
        },
        BlobData::Upload { file, upload_id } => {
            let upload_id = upload_id.clone().unwrap_or_else(|| {
                format!("<upload of {} bytes sha256:{}>", file.size, file.sha256)
            });
            return json!({
                "property": blob.property,
                "type": blob_type,
                "key_prefix": blob.key_prefix,
                "upload_id": upload_id,
            });
        }
    };
    json!({
        "property": blob.property,
        "type": blob_type,
        "key_prefix": blob.key_prefix,
        "data": data,
    })
}

/// Whether any blob of the object goes through the presigned upload flow.
pub fn has_uploads(spec: &ObjectSpec) -> bool {
    spec.blobs
        .iter()
        .any(|b| matches!(b.data, BlobData::Upload { .. }))
}

/// `POST /v1/buckets/{bucket}/uploads` (`CreateUploadRequest`) for one file:
/// the object is created by the daemon afterwards, so
/// `create_object_on_confirm` is false.
pub fn render_upload_create(bucket: &str, file: &UploadFile, skip_duplicates: bool) -> HttpRequest {
    HttpRequest {
        method: "POST",
        path: format!("/v1/buckets/{}/uploads", percent_encode(bucket)),
        body: json!({
            "filename": file.filename,
            "content_type": file.mime_type,
            "file_size_bytes": file.size,
            "file_hash": file.sha256,
            "create_object_on_confirm": false,
            "skip_duplicates": skip_duplicates,
        }),
    }
}

/// `POST /v1/buckets/{bucket}/uploads/{upload_id}/confirm`
/// (`ConfirmUploadRequest`) after the PUT. `etag` is `None` when no PUT was
/// needed.
pub fn render_upload_confirm(
    bucket: &str,
    upload_id: &str,
    etag: Option<&str>,
    size: u64,
) -> HttpRequest {
    HttpRequest {
        method: "POST",
        path: format!(
            "/v1/buckets/{}/uploads/{}/confirm",
            percent_encode(bucket),
            percent_encode(upload_id)
        ),
        body: json!({"etag": etag, "file_size_bytes": size}),
    }
}

/// The JSON body of one object in `dialect` (also one entry of a batch).
pub fn object_body(spec: &ObjectSpec, dialect: Dialect) -> Value {
    let blobs: Vec<Value> = spec.blobs.iter().map(|b| blob_body(b, dialect)).collect();
    match dialect {
        Dialect::ObjectsCreate => json!({
            "key_prefix": spec.key_prefix,
            "blobs": blobs,
            "metadata": spec.metadata,
            "skip_duplicates": spec.skip_duplicates,
        }),
        Dialect::Objects => {
            let mut body = spec.metadata.clone();
            let reserved: Vec<String> = reserved_metadata_keys(&body)
                .into_iter()
                .map(str::to_owned)
                .collect();
            if !reserved.is_empty() {
                // Keys the user wrote under a nested `metadata` object stay
                // as written; a non-object `metadata` value moves one level
                // down so nothing is dropped.
                let mut nested = match body.remove("metadata") {
                    Some(Value::Object(m)) => m,
                    Some(other) => Map::from_iter([("metadata".to_owned(), other)]),
                    None => Map::new(),
                };
                for key in reserved {
                    if let Some(v) = body.remove(&key) {
                        nested.entry(key).or_insert(v);
                    }
                }
                body.insert("metadata".to_owned(), Value::Object(nested));
            }
            body.insert(
                "key_prefix".to_owned(),
                Value::String(spec.key_prefix.clone()),
            );
            body.insert("blobs".to_owned(), Value::Array(blobs));
            body.insert(
                "skip_duplicates".to_owned(),
                Value::Bool(spec.skip_duplicates),
            );
            Value::Object(body)
        }
    }
}

/// The create request for one object in `dialect`. `auto_process` applies to
/// dialect `objects` only.
pub fn render(spec: &ObjectSpec, dialect: Dialect, auto_process: bool) -> HttpRequest {
    let bucket = percent_encode(&spec.bucket);
    let path = match dialect {
        Dialect::ObjectsCreate => format!("/v1/buckets/{bucket}/objects/create"),
        Dialect::Objects => format!("/v1/buckets/{bucket}/objects?auto_process={auto_process}"),
    };
    HttpRequest {
        method: "POST",
        path,
        body: object_body(spec, dialect),
    }
}

/// The batch create request of dialect `objects`
/// (`POST /v1/buckets/{bucket}/objects/batch`, at most 100 objects; the
/// caller splits). Every spec is rendered as is; they are meant to share
/// `bucket`.
pub fn render_batch(bucket: &str, specs: &[ObjectSpec], auto_process: bool) -> HttpRequest {
    let objects: Vec<Value> = specs
        .iter()
        .map(|s| object_body(s, Dialect::Objects))
        .collect();
    HttpRequest {
        method: "POST",
        path: format!(
            "/v1/buckets/{}/objects/batch?auto_process={auto_process}",
            percent_encode(bucket)
        ),
        body: json!({ "objects": objects }),
    }
}

/// What `plan` prints for a request: `{"method","path","body"}` with every
/// base64 payload (`blobs[].data.base64`, in single and batch bodies) replaced
/// by `<base64 N bytes sha256:HEX>` of the decoded bytes.
pub fn plan_view(req: &HttpRequest) -> Value {
    json!({"method": req.method, "path": req.path, "body": redact_base64(&req.body)})
}

/// A copy of a create body (single or batch, either dialect) with each
/// `blobs[].data.base64` payload replaced by `<base64 N bytes sha256:HEX>`.
/// Blobs of type `json`/`object` carry a file's own JSON value, never an
/// inline envelope, so their `base64` fields are content and are kept.
pub fn redact_base64(body: &Value) -> Value {
    let mut body = body.clone();
    redact_object(&mut body);
    if let Some(objects) = body.get_mut("objects").and_then(Value::as_array_mut) {
        objects.iter_mut().for_each(redact_object);
    }
    body
}

fn redact_object(object: &mut Value) {
    let Some(blobs) = object.get_mut("blobs").and_then(Value::as_array_mut) else {
        return;
    };
    for blob in blobs {
        if matches!(
            blob.get("type").and_then(Value::as_str),
            Some("json" | "object")
        ) {
            continue;
        }
        if let Some(Value::String(payload)) = blob.pointer_mut("/data/base64") {
            *payload = redacted(payload);
        }
    }
}

fn redacted(payload: &str) -> String {
    match STANDARD.decode(payload) {
        Ok(bytes) => format!(
            "<base64 {} bytes sha256:{}>",
            bytes.len(),
            hex::encode(Sha256::digest(&bytes))
        ),
        Err(_) => format!("<base64 {} chars, not valid base64>", payload.len()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pipeline::BlobSpec;
    use crate::pipeline::settle::tests::watch;
    use rstest::rstest;

    const MAX: u64 = 100;

    fn w(delivery: DeliveryMode, template: bool) -> Watch {
        let mut w = watch();
        w.delivery = delivery;
        w.inline_max_bytes = MAX;
        w.url_template =
            template.then(|| "https://cdn.example.com/drop{key_prefix}/{file_name}".to_owned());
        w
    }

    use DeliveryMode::{Auto, Inline as In, Upload, Url as U};

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    // auto: JSON and text by value, others inline, up to the limit.
    #[case(Auto, None, false, "json", 100, false, Ok(Delivery::Json))]
    #[case(Auto, None, false, "text", 100, false, Ok(Delivery::Text))]
    #[case(Auto, None, false, "pdf", 100, false, Ok(Delivery::Inline))]
    #[case(Auto, None, false, "excel", 0, false, Ok(Delivery::Inline))]
    // auto above the limit: upload where the dialect has it, else url
    // with a template, else a reason.
    #[case(Auto, None, true, "video", 101, true, Ok(Delivery::Upload))]
    #[case(Auto, None, true, "video", 101, false, Ok(Delivery::Url))]
    #[case(Auto, None, true, "text", 101, false, Ok(Delivery::Url))]
    #[case(Auto, None, true, "json", 101, false, Ok(Delivery::Url))]
    #[case(Auto, None, false, "video", 101, true, Ok(Delivery::Upload))]
    #[case(Auto, None, false, "json", 101, true, Ok(Delivery::Upload))]
    #[case(Auto, None, false, "video", 101, false, Err("raise inline_max_bytes"))]
    #[case(Auto, None, false, "json", 101, false, Err("url_template"))]
    // explicit inline.
    #[case(In, None, false, "text", 100, false, Ok(Delivery::Inline))]
    #[case(In, None, false, "image", 101, false, Err("delivery = \"inline\""))]
    // JSON keeps its value in every mode when it fits.
    #[case(In, None, false, "json", 100, false, Ok(Delivery::Json))]
    #[case(U, None, true, "json", 100, false, Ok(Delivery::Json))]
    #[case(Upload, None, false, "json", 1, true, Ok(Delivery::Json))]
    // explicit url.
    #[case(U, None, true, "image", 1, false, Ok(Delivery::Url))]
    #[case(U, None, false, "image", 1, false, Err("needs url_template"))]
    // explicit upload: whatever the size, where the dialect has it.
    #[case(Upload, None, false, "video", 1, true, Ok(Delivery::Upload))]
    #[case(Upload, None, true, "video", 10_000, true, Ok(Delivery::Upload))]
    #[case(Upload, None, false, "video", 1, false, Err("needs api.dialect = \"objects\""))]
    #[case(Upload, None, false, "video", 0, true, Ok(Delivery::Inline))]
    // A rule's mode beats the watch's.
    #[case(Auto, Some(U), true, "image", 1, false, Ok(Delivery::Url))]
    #[case(U, Some(Auto), true, "image", 1, false, Ok(Delivery::Inline))]
    #[case(Auto, Some(Upload), false, "image", 1, true, Ok(Delivery::Upload))]
    fn delivery_table(
        #[case] mode: DeliveryMode,
        #[case] rule: Option<DeliveryMode>,
        #[case] template: bool,
        #[case] blob_type: &str,
        #[case] size: u64,
        #[case] has_upload: bool,
        #[case] want: Result<Delivery, &str>,
    ) {
        let got = choose_delivery(&w(mode, template), rule, blob_type, size, has_upload);
        match (got, want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w),
            (Err(reason), Err(needle)) => assert!(reason.contains(needle), "{reason}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn large_file_reason_names_sizes_and_settings() {
        let reason = choose_delivery(&w(Auto, false), None, "video", 5000, false).unwrap_err();
        for needle in [
            "5000 bytes",
            "inline_max_bytes (100)",
            "url_template",
            "api.dialect",
        ] {
            assert!(reason.contains(needle), "{needle}: {reason}");
        }
    }

    #[test]
    fn blob_data_by_delivery() {
        let json = blob_data(
            Delivery::Json,
            b"\xEF\xBB\xBF{\"n\": 5}",
            "application/json",
            "c.json",
            "/",
            None,
        );
        assert_eq!(
            json.unwrap(),
            BlobData::Json {
                value: json!({"n": 5})
            }
        );

        let err = blob_data(
            Delivery::Json,
            b"{oops",
            "application/json",
            "c.json",
            "/",
            None,
        )
        .unwrap_err();
        assert!(
            err.starts_with("`c.json` is not valid JSON: key must be a string"),
            "{err}"
        );

        let text = blob_data(
            Delivery::Text,
            "héllo\n".as_bytes(),
            "text/plain",
            "a.txt",
            "/",
            None,
        );
        assert_eq!(
            text.unwrap(),
            BlobData::Text {
                text: "héllo\n".to_owned()
            }
        );

        // Invalid UTF-8 falls back to inline.
        let latin1 = blob_data(Delivery::Text, b"caf\xE9", "text/plain", "a.txt", "/", None);
        assert_eq!(
            latin1.unwrap(),
            BlobData::Inline {
                base64: "Y2Fm6Q==".to_owned(),
                mime_type: "text/plain".to_owned(),
                filename: "a.txt".to_owned(),
            }
        );

        let inline = blob_data(
            Delivery::Inline,
            b"\x89PNG",
            "image/png",
            "t.png",
            "/",
            None,
        );
        assert_eq!(
            inline.unwrap(),
            BlobData::Inline {
                base64: "iVBORw==".to_owned(),
                mime_type: "image/png".to_owned(),
                filename: "t.png".to_owned(),
            }
        );
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    #[case("/contract-2024", "thumbnail.jpg", "https://cdn.example.com/drop/contract-2024/thumbnail.jpg")]
    #[case("/", "a.jpg", "https://cdn.example.com/drop/a.jpg")]
    #[case("/docs/Q1 2024", "Final #1.pdf", "https://cdn.example.com/drop/docs/Q1%202024/Final%20%231.pdf")]
    #[case("/ü", "ß.pdf", "https://cdn.example.com/drop/%C3%BC/%C3%9F.pdf")]
    fn url_template(#[case] kp: &str, #[case] name: &str, #[case] want: &str) {
        let t = "https://cdn.example.com/drop{key_prefix}/{file_name}";
        let got = blob_data(Delivery::Url, b"ignored", "image/jpeg", name, kp, Some(t)).unwrap();
        assert_eq!(
            got,
            BlobData::Url {
                url: want.to_owned(),
                mime_type: "image/jpeg".to_owned()
            }
        );
        assert!(blob_data(Delivery::Url, b"", "image/jpeg", name, kp, None).is_err());
    }

    fn upload_file() -> UploadFile {
        UploadFile {
            path: "/srv/drop/reel/video.mp4".to_owned(),
            size: 300,
            mtime_ns: 1,
            sha256: "ab".repeat(32),
            mime_type: "video/mp4".to_owned(),
            filename: "video.mp4".to_owned(),
            follow_symlinks: false,
        }
    }

    #[test]
    fn upload_requests_follow_create_upload_and_confirm() {
        let create = render_upload_create("my bucket", &upload_file(), true);
        assert_eq!(create.path, "/v1/buckets/my%20bucket/uploads");
        assert_eq!(
            create.body,
            json!({
                "filename": "video.mp4",
                "content_type": "video/mp4",
                "file_size_bytes": 300,
                "file_hash": "ab".repeat(32),
                "create_object_on_confirm": false,
                "skip_duplicates": true,
            })
        );
        let confirm = render_upload_confirm("b", "upl_1", Some("\"e\""), 300);
        assert_eq!(confirm.path, "/v1/buckets/b/uploads/upl_1/confirm");
        assert_eq!(
            confirm.body,
            json!({"etag": "\"e\"", "file_size_bytes": 300})
        );
        let duplicate = render_upload_confirm("b", "upl_1", None, 300);
        assert_eq!(duplicate.body["etag"], Value::Null);
    }

    #[test]
    fn an_upload_blob_carries_its_id_or_a_placeholder() {
        let mut spec = docs_object();
        spec.blobs.truncate(1);
        spec.blobs.push(BlobSpec {
            property: "video".to_owned(),
            blob_type: "video".to_owned(),
            key_prefix: "/video.mp4".to_owned(),
            data: BlobData::Upload {
                file: upload_file(),
                upload_id: None,
            },
        });
        assert!(has_uploads(&spec));
        let planned = render(&spec, Dialect::Objects, true);
        assert_eq!(
            planned.body["blobs"][1],
            json!({
                "property": "video",
                "type": "video",
                "key_prefix": "/video.mp4",
                "upload_id": format!("<upload of 300 bytes sha256:{}>", "ab".repeat(32)),
            })
        );
        if let BlobData::Upload { upload_id, .. } = &mut spec.blobs[1].data {
            *upload_id = Some("upl_7".to_owned());
        }
        let sent = render(&spec, Dialect::Objects, true);
        assert_eq!(sent.body["blobs"][1]["upload_id"], "upl_7");
        assert!(sent.body["blobs"][1].get("data").is_none());
        // The stored form never holds an id: the store's uploads table does.
        let stored: ObjectSpec =
            serde_json::from_str(&serde_json::to_string(&docs_object()).unwrap()).unwrap();
        assert!(!has_uploads(&stored));
    }

    /// Every body the daemon can send, checked against the project's
    /// request contract (`mixpeek_mock::contract`, written from Mixpeek's
    /// openapi.json and the create-object docs page), for any object the
    /// pipeline can build.
    mod contract {
        use super::*;
        use mixpeek_mock::contract::Contract;
        use proptest::prelude::*;

        const TYPES: &[&str] = &["image", "video", "audio", "pdf", "json", "text", "excel"];

        fn data() -> impl Strategy<Value = BlobData> {
            prop_oneof![
                any::<i32>().prop_map(|n| BlobData::Json {
                    value: json!({"n": n, "list": [n]})
                }),
                "\\PC{0,40}".prop_map(|text| BlobData::Text { text }),
                proptest::collection::vec(any::<u8>(), 0..64).prop_map(|bytes| BlobData::Inline {
                    base64: STANDARD.encode(bytes),
                    mime_type: "application/octet-stream".to_owned(),
                    filename: "f.bin".to_owned(),
                }),
                "[a-z0-9]{1,12}".prop_map(|name| BlobData::Url {
                    url: format!("https://cdn.example.com/drop/{name}.jpg"),
                    mime_type: "image/jpeg".to_owned(),
                }),
                (1u64..u64::from(u32::MAX), "[a-z0-9_-]{1,20}").prop_map(|(size, id)| {
                    BlobData::Upload {
                        file: UploadFile {
                            size,
                            ..upload_file()
                        },
                        upload_id: Some(format!("upl_{id}")),
                    }
                }),
            ]
        }

        fn blob() -> impl Strategy<Value = BlobSpec> {
            (
                "[a-z0-9_]{1,100}",
                0..TYPES.len(),
                "[a-zA-Z0-9 ._-]{1,30}",
                data(),
            )
                .prop_map(|(property, t, name, data)| BlobSpec {
                    property,
                    // JSON values go with the json type, as the pipeline pairs them.
                    blob_type: match data {
                        BlobData::Json { .. } => "json".to_owned(),
                        _ if TYPES[t] == "json" => "text".to_owned(),
                        _ => TYPES[t].to_owned(),
                    },
                    key_prefix: format!("/{name}"),
                    data,
                })
        }

        fn spec() -> impl Strategy<Value = ObjectSpec> {
            let key = prop_oneof![
                Just("key_prefix".to_owned()),
                Just("blobs".to_owned()),
                Just("skip_duplicates".to_owned()),
                Just("metadata".to_owned()),
                "[a-z_]{1,12}",
            ];
            (
                proptest::collection::vec(blob(), 0..5),
                proptest::collection::btree_map(key, any::<i16>(), 0..4),
                "(/[a-zA-Z0-9 _-]{1,12}){0,3}",
                any::<bool>(),
            )
                .prop_map(|(blobs, metadata, key_prefix, skip_duplicates)| {
                    ObjectSpec {
                        bucket: "contracts".to_owned(),
                        key_prefix: if key_prefix.is_empty() {
                            "/".to_owned()
                        } else {
                            key_prefix
                        },
                        metadata: metadata.into_iter().map(|(k, v)| (k, json!(v))).collect(),
                        skip_duplicates,
                        blobs,
                    }
                })
        }

        fn check(contract: Contract, body: &Value) -> Result<(), TestCaseError> {
            contract.check(body).map_err(|violations| {
                TestCaseError::fail(format!("{contract:?} refuses {body}: {violations:?}"))
            })
        }

        proptest! {
            #[test]
            fn every_request_the_daemon_sends_meets_the_contract(
                specs in proptest::collection::vec(spec(), 1..4),
                auto_process in any::<bool>(),
            ) {
                for spec in &specs {
                    check(Contract::CreateObject, &render(spec, Dialect::Objects, auto_process).body)?;
                    // objects-create has no upload ids: the pipeline never
                    // sends upload blobs in that dialect.
                    if !has_uploads(spec) {
                        check(Contract::ObjectsCreate, &render(spec, Dialect::ObjectsCreate, true).body)?;
                    }
                    for blob in &spec.blobs {
                        if let BlobData::Upload { file, upload_id } = &blob.data {
                            let create = render_upload_create(&spec.bucket, file, spec.skip_duplicates);
                            check(Contract::CreateUpload, &create.body)?;
                            let id = upload_id.as_deref().unwrap_or("upl_x");
                            for etag in [Some("\"0a1b\""), None] {
                                let confirm = render_upload_confirm(&spec.bucket, id, etag, file.size);
                                check(Contract::ConfirmUpload, &confirm.body)?;
                            }
                        }
                    }
                }
                check(Contract::CreateObjectsBatch, &render_batch("contracts", &specs, auto_process).body)?;
            }
        }
    }

    /// The create-object-docs example object.
    fn docs_object() -> ObjectSpec {
        ObjectSpec {
            bucket: "contracts".to_owned(),
            key_prefix: "/contract-2024".to_owned(),
            metadata: json!({"category": "contracts", "status": "draft", "year": 2024})
                .as_object()
                .unwrap()
                .clone(),
            skip_duplicates: true,
            blobs: vec![
                BlobSpec {
                    property: "content".to_owned(),
                    blob_type: "json".to_owned(),
                    key_prefix: "/content.json".to_owned(),
                    data: BlobData::Json {
                        value: json!({"num_pages": 5, "title": "Service Agreement 2024"}),
                    },
                },
                BlobSpec {
                    property: "thumbnail".to_owned(),
                    blob_type: "image".to_owned(),
                    key_prefix: "/thumbnail.jpg".to_owned(),
                    data: BlobData::Url {
                        url: "https://example.com/images/smartphone-x1.jpg".to_owned(),
                        mime_type: "image/jpeg".to_owned(),
                    },
                },
                BlobSpec {
                    property: "notes".to_owned(),
                    blob_type: "text".to_owned(),
                    key_prefix: "/notes.txt".to_owned(),
                    data: BlobData::Text {
                        text: "signed".to_owned(),
                    },
                },
                BlobSpec {
                    property: "scan".to_owned(),
                    blob_type: "pdf".to_owned(),
                    key_prefix: "/scan.pdf".to_owned(),
                    data: BlobData::Inline {
                        base64: "JVBERg==".to_owned(),
                        mime_type: "application/pdf".to_owned(),
                        filename: "scan.pdf".to_owned(),
                    },
                },
            ],
        }
    }

    #[test]
    fn render_objects_create_golden() {
        let req = render(&docs_object(), Dialect::ObjectsCreate, true);
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/v1/buckets/contracts/objects/create");
        assert_eq!(
            req.body,
            json!({
                "key_prefix": "/contract-2024",
                "blobs": [
                    {"property": "content", "type": "json", "key_prefix": "/content.json",
                     "data": {"num_pages": 5, "title": "Service Agreement 2024"}},
                    {"property": "thumbnail", "type": "image", "key_prefix": "/thumbnail.jpg",
                     "data": {"filename": "https://example.com/images/smartphone-x1.jpg",
                              "mime_type": "image/jpeg"}},
                    {"property": "notes", "type": "text", "key_prefix": "/notes.txt",
                     "data": "signed"},
                    {"property": "scan", "type": "pdf", "key_prefix": "/scan.pdf",
                     "data": {"base64": "JVBERg==", "mime_type": "application/pdf",
                              "filename": "scan.pdf"}},
                ],
                "metadata": {"category": "contracts", "status": "draft", "year": 2024},
                "skip_duplicates": true,
            })
        );
    }

    #[test]
    fn render_objects_golden() {
        let mut spec = docs_object();
        spec.bucket = "my bucket/2".to_owned();
        spec.skip_duplicates = false;
        let req = render(&spec, Dialect::Objects, false);
        assert_eq!(
            req.path,
            "/v1/buckets/my%20bucket%2F2/objects?auto_process=false"
        );
        assert_eq!(
            req.body,
            json!({
                "key_prefix": "/contract-2024",
                "blobs": [
                    {"property": "content", "type": "object", "key_prefix": "/content.json",
                     "data": {"num_pages": 5, "title": "Service Agreement 2024"}},
                    {"property": "thumbnail", "type": "image", "key_prefix": "/thumbnail.jpg",
                     "data": "https://example.com/images/smartphone-x1.jpg"},
                    {"property": "notes", "type": "text", "key_prefix": "/notes.txt",
                     "data": "signed"},
                    {"property": "scan", "type": "pdf", "key_prefix": "/scan.pdf",
                     "data": {"base64": "JVBERg==", "mime_type": "application/pdf",
                              "filename": "scan.pdf"}},
                ],
                "skip_duplicates": false,
                "category": "contracts",
                "status": "draft",
                "year": 2024,
            })
        );
        let req = render(&spec, Dialect::Objects, true);
        assert!(req.path.ends_with("?auto_process=true"));
    }

    // One case per line: the table reads as a table.
    #[rustfmt::skip]
    #[rstest]
    // No collision: everything at the root, a user `metadata` key included.
    #[case(json!({"a": 1, "metadata": {"x": 1}}), json!({"a": 1, "metadata": {"x": 1}}))]
    // Colliding keys move under `metadata`; request fields are untouched.
    #[case(json!({"a": 1, "key_prefix": "mine", "blobs": 3}),
           json!({"a": 1, "metadata": {"key_prefix": "mine", "blobs": 3}}))]
    // Merged into a user `metadata` object; the user's nested keys stay.
    #[case(json!({"skip_duplicates": "x", "metadata": {"y": 2, "skip_duplicates": "nested"}}),
           json!({"metadata": {"y": 2, "skip_duplicates": "nested"}}))]
    // A non-object user `metadata` moves one level down.
    #[case(json!({"force_remirror": true, "metadata": "s"}),
           json!({"metadata": {"force_remirror": true, "metadata": "s"}}))]
    fn objects_metadata_never_overwrites_request_fields(#[case] md: Value, #[case] want_md: Value) {
        let mut spec = docs_object();
        spec.blobs.truncate(1);
        spec.metadata = md.as_object().unwrap().clone();
        let body = render(&spec, Dialect::Objects, true).body;
        let mut body = body.as_object().unwrap().clone();
        assert_eq!(body.remove("key_prefix"), Some(json!("/contract-2024")));
        assert_eq!(body.remove("skip_duplicates"), Some(json!(true)));
        assert_eq!(body.remove("blobs").unwrap().as_array().unwrap().len(), 1);
        assert_eq!(Value::Object(body), want_md);
    }

    #[test]
    fn reserved_keys_are_listed() {
        let md = json!({"blobs": 1, "year": 2, "canonicalize_source": 3});
        let mut got = reserved_metadata_keys(md.as_object().unwrap());
        got.sort();
        assert_eq!(got, ["blobs", "canonicalize_source"]);
    }

    #[test]
    fn render_batch_golden() {
        let mut a = docs_object();
        a.blobs.truncate(1);
        a.metadata.clear();
        let mut b = a.clone();
        b.key_prefix = "/other".to_owned();
        let req = render_batch("contracts", &[a.clone(), b], true);
        assert_eq!(
            req.path,
            "/v1/buckets/contracts/objects/batch?auto_process=true"
        );
        let objects = req.body["objects"].as_array().unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0], render(&a, Dialect::Objects, true).body);
        assert_eq!(objects[1]["key_prefix"], "/other");
    }

    #[test]
    fn plan_view_redacts_base64_payloads() {
        // "JVBERg==" is the 4 bytes "%PDF".
        let want = format!(
            "<base64 4 bytes sha256:{}>",
            hex::encode(Sha256::digest(b"%PDF"))
        );
        for dialect in [Dialect::ObjectsCreate, Dialect::Objects] {
            let req = render(&docs_object(), dialect, true);
            let view = plan_view(&req);
            assert_eq!(view["method"], "POST");
            assert_eq!(view["path"], req.path.as_str());
            assert_eq!(view["body"]["blobs"][3]["data"]["base64"], want.as_str());
            // Everything else is shown as sent.
            let mut unredacted = view["body"].clone();
            unredacted["blobs"][3]["data"]["base64"] = json!("JVBERg==");
            assert_eq!(unredacted, req.body);
            assert!(!view.to_string().contains("JVBERg=="));
        }
        let batch = render_batch("b", &[docs_object(), docs_object()], false);
        let view = plan_view(&batch);
        for i in 0..2 {
            assert_eq!(
                view["body"]["objects"][i]["blobs"][3]["data"]["base64"],
                want.as_str()
            );
        }
        // A JSON file's own `base64` field is content, not a payload.
        let mut spec = docs_object();
        spec.blobs[0].data = BlobData::Json {
            value: json!({"base64": "keep"}),
        };
        for dialect in [Dialect::ObjectsCreate, Dialect::Objects] {
            let view = plan_view(&render(&spec, dialect, true));
            assert_eq!(view["body"]["blobs"][0]["data"]["base64"], "keep");
        }
        // Something that is not base64 is still hidden.
        assert_eq!(redacted("@@@"), "<base64 3 chars, not valid base64>");
        assert_eq!(
            redacted(""),
            format!(
                "<base64 0 bytes sha256:{}>",
                hex::encode(Sha256::digest(b""))
            )
        );
    }

    #[test]
    fn blob_data_round_trips_through_render() {
        let content = b"\x89PNG\r\n\x1a\nrest";
        let data = blob_data(Delivery::Inline, content, "image/png", "p.png", "/", None).unwrap();
        let spec = ObjectSpec {
            bucket: "b".to_owned(),
            key_prefix: "/p".to_owned(),
            metadata: Map::new(),
            skip_duplicates: true,
            blobs: vec![BlobSpec {
                property: "p".to_owned(),
                blob_type: "image".to_owned(),
                key_prefix: "/p.png".to_owned(),
                data,
            }],
        };
        let body = render(&spec, Dialect::ObjectsCreate, true).body;
        let b64 = body["blobs"][0]["data"]["base64"].as_str().unwrap();
        assert_eq!(STANDARD.decode(b64).unwrap(), content);
    }
}
