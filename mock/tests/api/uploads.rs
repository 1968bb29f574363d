//! The presigned upload flow: create, streamed PUT, confirm, use in an object.

use std::io::Read;
use std::sync::mpsc;

use mixpeek_mock::{Dialects, Fault, MockConfig, MockServer};
use reqwest::blocking::{Body, Client, RequestBuilder, Response};
use reqwest::header::CONTENT_TYPE;
use rstest::rstest;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{WAIT, client, get, post, start, status_and_json, wait_until};

const VIDEO: &[u8] = b"not really an mp4, but bytes all the same";

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The request SPEC §7 has the daemon send for `data`.
fn upload_request(filename: &str, data: &[u8]) -> Value {
    json!({
        "filename": filename,
        "content_type": "video/mp4",
        "file_size_bytes": data.len(),
        "file_hash": sha256_hex(data),
        "create_object_on_confirm": false,
        "skip_duplicates": true,
    })
}

fn create(server: &MockServer, body: &Value) -> (u16, Value) {
    status_and_json(post(server, "/v1/buckets/docs/uploads", body))
}

fn put(url: &str, data: &[u8]) -> Response {
    client()
        .put(url)
        .header(CONTENT_TYPE, "video/mp4")
        .body(data.to_vec())
        .send()
        .unwrap()
}

fn confirm(server: &MockServer, upload_id: &str, body: &Value) -> (u16, Value) {
    status_and_json(post(
        server,
        &format!("/v1/buckets/docs/uploads/{upload_id}/confirm"),
        body,
    ))
}

fn video_object(upload_id: &str) -> Value {
    json!({"key_prefix": "/clips/a", "blobs": [{"property": "video", "type": "video", "upload_id": upload_id}]})
}

/// Creates an upload of `data` and returns `(upload_id, presigned_url)`.
fn fresh_upload(server: &MockServer, data: &[u8]) -> (String, String) {
    let (status, created) = create(server, &upload_request("clip.mp4", data));
    assert_eq!(status, 201, "{created}");
    (
        created["upload_id"].as_str().unwrap().to_string(),
        created["presigned_url"].as_str().unwrap().to_string(),
    )
}

#[test]
fn create_put_confirm_then_use_in_an_object() {
    let server = start(MockConfig::default().with_bucket("docs").with_api_key("k"));
    let created = client()
        .post(format!("{}/v1/buckets/docs/uploads", server.base_url()))
        .bearer_auth("k")
        .json(&upload_request("clip.mp4", VIDEO))
        .send()
        .unwrap();
    let (status, created) = status_and_json(created);
    assert_eq!(status, 201, "{created}");
    let upload_id = created["upload_id"].as_str().unwrap().to_string();
    assert!(
        upload_id.starts_with("upl_") && upload_id.len() == 20,
        "{upload_id}"
    );
    assert_eq!(created["status"], json!("PENDING"));
    assert_eq!(created["bucket_id"], json!("bkt_docs"));
    assert_eq!(created["is_duplicate"], json!(false));
    assert_eq!(created["presigned_url_expiration"], json!(3600));
    let url = created["presigned_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/presigned/{upload_id}?", server.base_url())),
        "{url}"
    );

    // The PUT carries no key: a presigned URL is its own authorisation.
    let response = put(url, VIDEO);
    assert_eq!(response.status().as_u16(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(VIDEO)));

    let uploads = server.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].upload_id, upload_id);
    assert_eq!(uploads[0].bytes, VIDEO.len() as u64);
    assert_eq!(uploads[0].sha256, sha256_hex(VIDEO));
    assert_eq!(uploads[0].status, 200);
    assert_eq!(uploads[0].content_type.as_deref(), Some("video/mp4"));
    assert_eq!(uploads[0].content_length, Some(VIDEO.len() as u64));
    assert!(uploads[0].finished_at >= uploads[0].started_at);
    assert_eq!(server.presigned_bytes_received(), VIDEO.len() as u64);
    let put_request = server
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT")
        .unwrap();
    assert_eq!((put_request.status, put_request.body), (200, Value::Null));
    assert_eq!(put_request.body_bytes, VIDEO.len() as u64);

    server.set_api_key(None);
    let (status, confirmed) = confirm(
        &server,
        &upload_id,
        &json!({"etag": etag, "file_size_bytes": VIDEO.len()}),
    );
    assert_eq!(status, 200, "{confirmed}");
    assert_eq!(confirmed["status"], json!("COMPLETED"));
    assert_eq!(confirmed["file_hash"], json!(sha256_hex(VIDEO)));
    assert_eq!(confirmed["object_id"], Value::Null);
    // Confirming again (a client resuming after a crash) is harmless.
    let (status, again) = confirm(&server, &upload_id, &json!({"etag": etag}));
    assert_eq!((status, again["status"].clone()), (200, json!("COMPLETED")));

    let (status, object) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects",
        &video_object(&upload_id),
    ));
    assert_eq!(status, 200, "{object}");
    assert_eq!(
        object["blobs"][0]["properties"]["upload_id"],
        json!(upload_id)
    );
    assert_eq!(server.objects()[0].body, video_object(&upload_id));

    let (status, fetched) = status_and_json(get(
        &server,
        &format!("/v1/buckets/docs/uploads/{upload_id}"),
    ));
    assert_eq!(status, 200);
    assert_eq!(fetched["status"], json!("COMPLETED"));
    assert_eq!(fetched["etag"], json!(etag));
}

#[test]
fn the_same_file_hash_again_is_a_duplicate_without_a_url() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let (upload_id, url) = fresh_upload(&server, VIDEO);
    // Before confirmation, the same hash is not a duplicate yet.
    let (status, _) = create(&server, &upload_request("again.mp4", VIDEO));
    assert_eq!(status, 201);
    assert_eq!(put(&url, VIDEO).status().as_u16(), 200);
    assert_eq!(confirm(&server, &upload_id, &json!({})).0, 200);

    let (status, duplicate) = create(&server, &upload_request("copy.mp4", VIDEO));
    assert_eq!(status, 200, "{duplicate}");
    assert_eq!(duplicate["presigned_url"], Value::Null);
    assert_eq!(duplicate["is_duplicate"], json!(true));
    assert_eq!(duplicate["upload_id"], json!(upload_id));
    assert_eq!(duplicate["duplicate_of_upload_id"], json!(upload_id));
    assert_eq!(duplicate["status"], json!("COMPLETED"));
    // The duplicate's upload id is usable in an object at once.
    let (status, _) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects",
        &video_object(&upload_id),
    ));
    assert_eq!(status, 200);

    let mut no_skip = upload_request("copy.mp4", VIDEO);
    no_skip["skip_duplicates"] = json!(false);
    let (status, fresh) = create(&server, &no_skip);
    assert_eq!(status, 201);
    assert!(fresh["presigned_url"].is_string());
}

#[test]
fn objects_may_only_use_confirmed_uploads_of_their_bucket() {
    let server = start(
        MockConfig::default()
            .with_bucket("docs")
            .with_bucket("other"),
    );
    let (upload_id, url) = fresh_upload(&server, VIDEO);
    let (status, pending) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects",
        &video_object(&upload_id),
    ));
    assert_eq!(status, 400, "{pending}");
    assert!(
        pending["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not confirmed")
    );
    let (status, unknown) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects",
        &video_object("upl_unknown"),
    ));
    assert_eq!(status, 404);
    assert_eq!(
        unknown["error"]["details"],
        json!({"resource": "upload", "id": "upl_unknown"})
    );
    assert!(server.objects().is_empty());

    put(&url, VIDEO);
    assert_eq!(confirm(&server, &upload_id, &json!({})).0, 200);
    let (status, _) = status_and_json(post(
        &server,
        "/v1/buckets/other/objects",
        &video_object(&upload_id),
    ));
    assert_eq!(status, 404, "an upload belongs to one bucket");
    let (status, _) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects",
        &video_object(&upload_id),
    ));
    assert_eq!(status, 200);
}

/// Builds a PUT to the presigned `url` that breaks one S3 rule.
type BadPut = fn(&Client, &str) -> RequestBuilder;

fn with_authorization(c: &Client, url: &str) -> RequestBuilder {
    c.put(url)
        .bearer_auth("k")
        .header(CONTENT_TYPE, "video/mp4")
        .body(VIDEO.to_vec())
}

fn with_other_content_type(c: &Client, url: &str) -> RequestBuilder {
    c.put(url)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(VIDEO.to_vec())
}

fn without_query(c: &Client, url: &str) -> RequestBuilder {
    let bare = url.split('?').next().unwrap();
    c.put(bare)
        .header(CONTENT_TYPE, "video/mp4")
        .body(VIDEO.to_vec())
}

fn chunked(c: &Client, url: &str) -> RequestBuilder {
    // A reader of unknown length makes reqwest send Transfer-Encoding: chunked.
    c.put(url)
        .header(CONTENT_TYPE, "video/mp4")
        .body(Body::new(std::io::Cursor::new(VIDEO.to_vec())))
}

fn too_large(c: &Client, url: &str) -> RequestBuilder {
    let mut data = VIDEO.to_vec();
    data.push(b'!');
    c.put(url).header(CONTENT_TYPE, "video/mp4").body(data)
}

fn unknown_upload(c: &Client, url: &str) -> RequestBuilder {
    let (base, _) = url.split_once("/presigned/").unwrap();
    c.put(format!("{base}/presigned/upl_nope"))
        .header(CONTENT_TYPE, "video/mp4")
        .body(VIDEO.to_vec())
}

#[rstest]
#[case::authorization_header(with_authorization as BadPut, 400, "InvalidArgument")]
#[case::other_content_type(with_other_content_type as BadPut, 403, "SignatureDoesNotMatch")]
#[case::query_string_dropped(without_query as BadPut, 403, "SignatureDoesNotMatch")]
#[case::chunked_body(chunked as BadPut, 411, "MissingContentLength")]
#[case::size_differs_from_declared(too_large as BadPut, 400, "EntityTooLarge")]
#[case::unknown_upload(unknown_upload as BadPut, 403, "AccessDenied")]
fn bad_puts_get_s3_errors_and_store_nothing(
    #[case] request: BadPut,
    #[case] status: u16,
    #[case] code: &str,
) {
    let server = start(MockConfig::default().with_bucket("docs"));
    let (upload_id, url) = fresh_upload(&server, VIDEO);
    let response = request(&client(), &url).send().unwrap();
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/xml");
    let xml = response.text().unwrap();
    assert!(xml.contains(&format!("<Code>{code}</Code>")), "{xml}");
    assert!(server.wait_for_uploads(1, WAIT));
    assert_eq!(server.uploads()[0].status, status);

    let (status, refused) = confirm(&server, &upload_id, &json!({}));
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("PUT it"),
        "{refused}"
    );
}

#[test]
fn expired_urls_answer_403_until_a_new_upload_is_created() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let (_, url) = fresh_upload(&server, VIDEO);
    server.expire_presigned_urls();
    let response = put(&url, VIDEO);
    assert_eq!(response.status().as_u16(), 403);
    let xml = response.text().unwrap();
    assert!(xml.contains("<Code>AccessDenied</Code>"), "{xml}");
    assert!(
        xml.contains("<Message>Request has expired</Message>"),
        "{xml}"
    );

    // Renewal: a new upload gets a working URL.
    let (upload_id, url) = fresh_upload(&server, VIDEO);
    assert_eq!(put(&url, VIDEO).status().as_u16(), 200);
    assert_eq!(confirm(&server, &upload_id, &json!({})).0, 200);
}

#[rstest]
#[case::wrong_etag(json!({"etag": "\"0123\""}), "ETag")]
#[case::wrong_size(json!({"file_size_bytes": 3}), "size")]
fn confirm_refuses_what_does_not_match_the_put(#[case] body: Value, #[case] word: &str) {
    let server = start(MockConfig::default().with_bucket("docs"));
    let (upload_id, url) = fresh_upload(&server, VIDEO);
    put(&url, VIDEO);
    let (status, refused) = confirm(&server, &upload_id, &body);
    assert_eq!(status, 400);
    assert_eq!(refused["error"]["type"], json!("BadRequestError"));
    assert!(
        refused["error"]["message"].as_str().unwrap().contains(word),
        "{refused}"
    );
    // Still pending: the upload cannot be used yet.
    let (status, _) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects",
        &video_object(&upload_id),
    ));
    assert_eq!(status, 400);
}

#[test]
fn confirm_and_get_of_unknown_uploads_are_404() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let (status, body) = confirm(&server, "upl_nope", &json!({}));
    assert_eq!(status, 404);
    assert_eq!(body["error"]["details"]["resource"], json!("upload"));
    let (status, _) = status_and_json(get(&server, "/v1/buckets/docs/uploads/upl_nope"));
    assert_eq!(status, 404);
    let (status, body) = confirm(&server, "upl_nope", &json!({"file_size_bytes": 0}));
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["body", "file_size_bytes"]));
}

#[rstest]
#[case::no_filename(json!({"content_type": "video/mp4"}), json!(["body", "filename"]))]
#[case::path_as_filename(json!({"filename": "a/b.mp4", "content_type": "video/mp4"}), json!(["body", "filename"]))]
#[case::bad_hash(json!({"filename": "b.mp4", "content_type": "video/mp4", "file_hash": "ABC"}), json!(["body", "file_hash"]))]
fn invalid_upload_requests_get_422(#[case] body: Value, #[case] loc: Value) {
    let server = start(MockConfig::default().with_bucket("docs"));
    let (status, answer) = create(&server, &body);
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["detail"][0]["loc"], loc);
}

#[test]
fn create_object_on_confirm_is_checked_early_and_creates_the_object() {
    let schema = json!({"properties": {"clip": {"type": "video"}}});
    let server = start(MockConfig::default().with_bucket_schema("docs", schema));
    let mut other = upload_request("other.mp4", VIDEO);
    other["create_object_on_confirm"] = json!(true);
    let (status, refused) = create(&server, &other);
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["details"]["property"], json!("other"));

    let mut clip = upload_request("clip.mp4", VIDEO);
    clip["create_object_on_confirm"] = json!(true);
    clip["object_metadata"] = json!({"title": "Clip"});
    let (status, created) = create(&server, &clip);
    assert_eq!(status, 201, "{created}");
    let upload_id = created["upload_id"].as_str().unwrap();
    put(created["presigned_url"].as_str().unwrap(), VIDEO);
    let (status, confirmed) = confirm(&server, upload_id, &json!({}));
    assert_eq!(status, 200);
    assert_eq!(confirmed["object_id"], json!("obj_1"));
    let objects = server.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(
        objects[0].body,
        json!({"title": "Clip", "blobs": [{"property": "clip", "type": "video", "upload_id": upload_id}]})
    );
}

#[test]
fn presigned_faults_and_cut_connections_store_nothing() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let data = vec![7u8; 256 * 1024];
    let (upload_id, url) = fresh_upload(&server, &data);

    server.push_presigned_fault(Fault::status(503).retry_after("1"));
    let response = put(&url, &data);
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(response.text().unwrap().contains("<Code>SlowDown</Code>"));

    server.push_presigned_drop(1000);
    let error = put_result(&url, &data).unwrap_err();
    assert!(!error.is_timeout(), "{error:?}");
    assert!(server.wait_for_uploads(2, WAIT));
    let cut = &server.uploads()[1];
    assert_eq!(cut.status, 0);
    assert!(
        cut.bytes >= 1000 && cut.bytes < data.len() as u64,
        "{}",
        cut.bytes
    );
    // The request record counts what arrived before the cut, like the upload record.
    let cut_put = || {
        server
            .requests()
            .into_iter()
            .find(|r| r.method == "PUT" && r.status == 0)
    };
    assert!(wait_until(WAIT, || cut_put().is_some()));
    assert_eq!(cut_put().unwrap().body_bytes, cut.bytes);
    assert_eq!(confirm(&server, &upload_id, &json!({})).0, 400);

    // The scripts are spent: the next PUT is stored.
    assert_eq!(put(&url, &data).status().as_u16(), 200);
    assert_eq!(confirm(&server, &upload_id, &json!({})).0, 200);
    assert_eq!(server.pending_faults(), 0);
}

fn put_result(url: &str, data: &[u8]) -> reqwest::Result<Response> {
    client()
        .put(url)
        .header(CONTENT_TYPE, "video/mp4")
        .body(data.to_vec())
        .send()
}

/// A body whose chunks the test hands over one at a time.
struct ChannelReader {
    chunks: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.current.len() {
            match self.chunks.recv() {
                Ok(next) => {
                    self.current = next;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn put_bodies_are_consumed_as_they_arrive() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let half = vec![1u8; 512 * 1024];
    let mut whole = half.clone();
    whole.extend(vec![2u8; half.len()]);
    let (upload_id, url) = fresh_upload(&server, &whole);

    let (chunks, rx) = mpsc::channel();
    let reader = ChannelReader {
        chunks: rx,
        current: Vec::new(),
        pos: 0,
    };
    let total = whole.len() as u64;
    let sender = std::thread::spawn(move || {
        client()
            .put(url)
            .header(CONTENT_TYPE, "video/mp4")
            .body(Body::sized(reader, total))
            .send()
    });
    chunks.send(half.clone()).unwrap();
    // The first half is counted while the second has not even been produced.
    assert!(wait_until(WAIT, || server.presigned_bytes_received()
        >= half.len() as u64));
    assert!(server.uploads().is_empty(), "the PUT has not ended yet");
    chunks.send(vec![2u8; half.len()]).unwrap();
    drop(chunks);
    let response = sender.join().unwrap().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["etag"].to_str().unwrap(),
        format!("\"{}\"", sha256_hex(&whole))
    );
    let recorded = &server.uploads()[0];
    assert_eq!((recorded.bytes, recorded.status), (total, 200));
    assert_eq!(recorded.sha256, sha256_hex(&whole));
    assert!(recorded.bytes_per_second().is_some_and(|rate| rate > 0.0));
    assert_eq!(confirm(&server, &upload_id, &json!({})).0, 200);
}

#[test]
fn upload_routes_belong_to_the_objects_dialect() {
    let server = start(
        MockConfig::default()
            .with_bucket("docs")
            .with_dialects(Dialects {
                objects_create: true,
                objects: false,
            }),
    );
    let response = post(
        &server,
        "/v1/buckets/docs/uploads",
        &upload_request("clip.mp4", VIDEO),
    );
    assert_eq!(response.status().as_u16(), 405);
    let response = post(
        &server,
        "/v1/buckets/docs/uploads/upl_1/confirm",
        &json!({}),
    );
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.text().unwrap(), "");
}
