//! Black-box tests of the emulator over HTTP: each test starts its own
//! `MockServer` on a free port and talks to it with a blocking client.
//! This file holds the helpers and the single-create, fault and binary tests;
//! the modules hold batch create, uploads, tasks and the quota.

#![allow(clippy::unwrap_used)]

mod batch;
mod quota;
mod tasks;
mod uploads;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mixpeek_mock::{Dialects, Fault, MockConfig, MockServer, Outage};
use reqwest::blocking::{Client, Response};
use rstest::rstest;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn client() -> Client {
    // No pooled connections: tests that close the port must not meet a stale one.
    Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(WAIT)
        .build()
        .unwrap()
}

fn start(cfg: MockConfig) -> MockServer {
    MockServer::start(cfg).unwrap()
}

fn post(server: &MockServer, path: &str, body: &Value) -> Response {
    client()
        .post(format!("{}{path}", server.base_url()))
        .json(body)
        .send()
        .unwrap()
}

fn get(server: &MockServer, path: &str) -> Response {
    client()
        .get(format!("{}{path}", server.base_url()))
        .send()
        .unwrap()
}

fn status_and_json(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().unwrap())
}

fn docs_body() -> Value {
    json!({
        "key_prefix": "/documents/contract-2024",
        "blobs": [
            {"property": "content", "type": "json", "key_prefix": "/content.json",
             "data": {"title": "Service Agreement"}},
            {"property": "thumbnail", "type": "image", "key_prefix": "/thumbnail.jpg",
             "data": {"base64": "aGVsbG8=", "mime_type": "image/jpeg", "filename": "thumbnail.jpg"}}
        ],
        "metadata": {"category": "contracts"},
        "skip_duplicates": true
    })
}

fn objects_body() -> Value {
    json!({
        "key_prefix": "/documents/contract-2024",
        "category": "contracts",
        "blobs": [
            {"property": "content", "type": "pdf", "key_prefix": "/content.pdf",
             "data": {"base64": "JVBERi0=", "mime_type": "application/pdf", "filename": "content.pdf"}},
            {"property": "video", "type": "video", "data": "https://cdn.example.com/v.mp4"}
        ]
    })
}

#[test]
fn objects_create_accepts_the_docs_body_and_records_it() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let (status, body) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects/create",
        &docs_body(),
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task_id"], json!("task_1"));
    assert_eq!(body["status"], json!("PENDING"));
    assert_eq!(
        (body["inputs"].clone(), body["outputs"].clone()),
        (json!([]), json!([]))
    );

    let objects = server.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].dialect, "objects-create");
    assert_eq!(objects[0].bucket, "docs");
    assert_eq!(objects[0].body, docs_body());
    assert_eq!(objects[0].object_id, "obj_1");
    assert_eq!(objects[0].task_id.as_deref(), Some("task_1"));
}

#[rstest]
#[case::auto_process("?auto_process=true", Some("task_1"))]
#[case::no_auto_process("?auto_process=false", None)]
#[case::default_is_false("", None)]
fn objects_accepts_an_openapi_body_and_answers_an_object(
    #[case] query: &str,
    #[case] task: Option<&str>,
) {
    let server = start(MockConfig::default().with_bucket("docs"));
    let (status, body) = status_and_json(post(
        &server,
        &format!("/v1/buckets/docs/objects{query}"),
        &objects_body(),
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object_id"], json!("obj_1"));
    assert_eq!(body["bucket_id"], json!("bkt_docs"));
    assert_eq!(body["key_prefix"], json!("/documents/contract-2024"));
    assert_eq!(body["metadata"], json!({"category": "contracts"}));
    assert_eq!(body["blobs"][0]["property"], json!("content"));
    assert_eq!(body["blobs"][1]["type"], json!("video"));
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body.get("task_id").and_then(Value::as_str), task);

    let objects = server.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].dialect, "objects");
    assert_eq!(objects[0].body, objects_body());
    assert_eq!(objects[0].task_id.as_deref(), task);
    assert_eq!(objects[0].batch, None);
}

#[rstest]
#[case::upper_case_type("objects-create", json!({"property": "content", "type": "PDF", "data": "x"}), json!(["body", "blobs", 0, "type"]))]
#[case::empty_property("objects-create", json!({"property": "", "type": "pdf", "data": "x"}), json!(["body", "blobs", 0, "property"]))]
#[case::long_property("objects-create", json!({"property": "p".repeat(101), "type": "pdf", "data": "x"}), json!(["body", "blobs", 0, "property"]))]
#[case::missing_data("objects-create", json!({"property": "content", "type": "pdf"}), json!(["body", "blobs", 0, "data"]))]
#[case::upper_case_type_objects("objects", json!({"property": "content", "type": "PDF", "data": "x"}), json!(["body", "blobs", 0, "type"]))]
#[case::data_and_upload_id("objects", json!({"property": "content", "type": "pdf", "data": "x", "upload_id": "upl_1"}), json!(["body", "blobs", 0]))]
#[case::bad_upload_id("objects", json!({"property": "content", "type": "pdf", "upload_id": "upload-1"}), json!(["body", "blobs", 0, "upload_id"]))]
fn invalid_blobs_get_422_with_fastapi_detail(
    #[case] dialect: &str,
    #[case] blob: Value,
    #[case] loc: Value,
) {
    let server = start(MockConfig::default().with_bucket("docs"));
    let path = match dialect {
        "objects-create" => "/v1/buckets/docs/objects/create",
        _ => "/v1/buckets/docs/objects",
    };
    let (status, body) = status_and_json(post(&server, path, &json!({"blobs": [blob]})));
    assert_eq!(status, 422, "{body}");
    let detail = body["detail"].as_array().unwrap();
    assert_eq!(detail.len(), 1, "{body}");
    assert_eq!(detail[0]["loc"], loc);
    // The contract's JSON pointer is named too: the loc after "body".
    let pointer: String = loc.as_array().unwrap()[1..]
        .iter()
        .map(|part| match part {
            Value::String(s) => format!("/{s}"),
            other => format!("/{other}"),
        })
        .collect();
    assert_eq!(detail[0]["ctx"]["pointer"], json!(pointer));
    assert!(detail[0]["msg"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(detail[0]["type"].is_string());
    assert!(server.objects().is_empty());
    assert_eq!(server.requests()[0].status, 422);
}

#[test]
fn invalid_json_and_empty_bodies_get_422() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let url = format!("{}/v1/buckets/docs/objects/create", server.base_url());
    for raw in ["{not json", ""] {
        let response = client()
            .post(&url)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .unwrap();
        let (status, body) = status_and_json(response);
        assert_eq!(status, 422);
        assert_eq!(body["detail"][0]["loc"][0], json!("body"));
    }
    // Bytes are counted whether or not the body parses.
    let sizes: Vec<u64> = server.requests().iter().map(|r| r.body_bytes).collect();
    assert_eq!(sizes, vec![9, 0]);
}

#[test]
fn schema_mismatch_gets_422_envelope() {
    let schema = json!({"properties": {"content": {"type": "pdf"}, "meta": {"type": "object"}}});
    let server = start(MockConfig::default().with_bucket_schema("docs", schema));

    let wrong_type = json!({"blobs": [{"property": "content", "type": "image", "data": "x"}]});
    let (status, body) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects/create",
        &wrong_type,
    ));
    assert_eq!(status, 422);
    assert_eq!(body["success"], json!(false));
    assert_eq!(body["status"], json!(422));
    assert_eq!(body["error"]["type"], json!("ValidationError"));
    assert_eq!(body["error"]["details"]["expected"], json!("pdf"));

    let unknown = json!({"blobs": [{"property": "cover", "type": "image", "data": "x"}]});
    let (status, body) = status_and_json(post(&server, "/v1/buckets/docs/objects", &unknown));
    assert_eq!(status, 422);
    assert_eq!(body["error"]["details"]["property"], json!("cover"));

    let fits = json!({"blobs": [
        {"property": "content", "type": "pdf", "data": "x"},
        {"property": "meta", "type": "json", "data": {"a": 1}}
    ]});
    let (status, _) = status_and_json(post(&server, "/v1/buckets/docs/objects/create", &fits));
    assert_eq!(status, 200);
    assert_eq!(server.objects().len(), 1);
}

#[test]
fn wrong_or_missing_key_gets_401_envelope() {
    let server = start(
        MockConfig::default()
            .with_bucket("docs")
            .with_api_key("sk_right"),
    );
    let url = format!("{}/v1/buckets/docs/objects/create", server.base_url());
    for auth in [None, Some("Bearer sk_wrong"), Some("sk_right")] {
        let mut request = client().post(&url).json(&docs_body());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let (status, body) = status_and_json(request.send().unwrap());
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(
            body,
            json!({"success": false, "status": 401, "error": {
                "message": "Invalid or missing API key", "type": "AuthenticationError"}})
        );
    }
    let response = client()
        .post(&url)
        .bearer_auth("sk_right")
        .json(&docs_body())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    server.set_api_key(Some("sk_rotated".to_string()));
    let response = client()
        .post(&url)
        .bearer_auth("sk_right")
        .json(&docs_body())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    server.set_api_key(None);
    assert_eq!(
        post(&server, "/v1/buckets/docs/objects/create", &docs_body())
            .status()
            .as_u16(),
        200
    );
    let recorded = server.requests();
    assert_eq!(recorded[3].header("Authorization"), Some("Bearer sk_right"));
}

#[rstest]
#[case::objects_create("/v1/buckets/nope/objects/create")]
#[case::objects("/v1/buckets/nope/objects")]
fn unknown_bucket_gets_404_envelope(#[case] path: &str) {
    let server = start(MockConfig::default().with_bucket("docs"));
    let (status, body) = status_and_json(post(&server, path, &docs_body()));
    assert_eq!(status, 404);
    assert_eq!(body["success"], json!(false));
    assert_eq!(body["error"]["type"], json!("NotFoundError"));
    assert_eq!(
        body["error"]["details"],
        json!({"resource": "bucket", "id": "nope"})
    );
}

#[test]
fn unknown_route_gets_404_with_empty_body() {
    let server = start(MockConfig::default().with_bucket("docs"));
    for path in ["/v1/buckets/docs/objects/create/extra", "/v2/anything", "/"] {
        let response = post(&server, path, &docs_body());
        assert_eq!(response.status().as_u16(), 404, "{path}");
        assert_eq!(response.text().unwrap(), "", "{path}");
    }
    assert_eq!(
        server.requests().iter().filter(|r| r.status == 404).count(),
        3
    );
}

#[rstest]
#[case::objects_create_disabled(Dialects { objects_create: false, objects: true }, 405, 200)]
#[case::objects_disabled(Dialects { objects_create: true, objects: false }, 200, 405)]
fn disabled_dialect_gets_405_with_empty_body(
    #[case] dialects: Dialects,
    #[case] create_status: u16,
    #[case] objects_status: u16,
) {
    let server = start(
        MockConfig::default()
            .with_bucket("docs")
            .with_dialects(dialects),
    );
    let response = post(&server, "/v1/buckets/docs/objects/create", &docs_body());
    assert_eq!(response.status().as_u16(), create_status);
    if create_status == 405 {
        assert_eq!(response.text().unwrap(), "");
    }
    let response = post(&server, "/v1/buckets/docs/objects", &objects_body());
    assert_eq!(response.status().as_u16(), objects_status);
    if objects_status == 405 {
        assert_eq!(response.text().unwrap(), "");
    }
    assert_eq!(server.objects().len(), 1);
}

#[test]
fn disabled_dialect_answers_405_before_checking_the_key() {
    let server = start(
        MockConfig::default()
            .with_bucket("docs")
            .with_api_key("k")
            .with_dialects(Dialects {
                objects_create: false,
                objects: true,
            }),
    );
    let response = post(&server, "/v1/buckets/docs/objects/create", &docs_body());
    assert_eq!(response.status().as_u16(), 405);
    server.set_dialects(Dialects::default());
    let response = post(&server, "/v1/buckets/docs/objects/create", &docs_body());
    assert_eq!(response.status().as_u16(), 401);
}

#[test]
fn wrong_method_on_a_known_route_gets_405() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let response = get(&server, "/v1/buckets/docs/objects/create");
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.text().unwrap(), "");
}

#[test]
fn faults_are_answered_fifo_before_auth_and_validation() {
    let server = start(MockConfig::default().with_bucket("docs").with_api_key("k"));
    server.push_fault(Fault::status(503).retry_after("2"));
    server.push_fault(Fault::status(429).retry_after("Wed, 21 Oct 2015 07:28:00 GMT"));
    server.push_fault(Fault::status(500).body(json!({"detail": "boom"})));

    // No key and an invalid body: faults still answer first.
    let bad = json!({"blobs": "nope"});
    let response = post(&server, "/v1/buckets/docs/objects/create", &bad);
    assert_eq!(response.headers()["retry-after"], "2");
    let (status, body) = status_and_json(response);
    assert_eq!(status, 503);
    assert_eq!(body["error"]["type"], json!("ServiceUnavailableError"));

    let response = post(&server, "/v1/buckets/docs/objects/create", &bad);
    assert_eq!(
        response.headers()["retry-after"],
        "Wed, 21 Oct 2015 07:28:00 GMT"
    );
    assert_eq!(response.status().as_u16(), 429);

    let response = post(&server, "/v1/buckets/docs/objects/create", &bad);
    assert!(response.headers().get("retry-after").is_none());
    assert_eq!(status_and_json(response), (500, json!({"detail": "boom"})));

    // Script exhausted: back to normal checks.
    assert_eq!(
        post(&server, "/v1/buckets/docs/objects/create", &bad)
            .status()
            .as_u16(),
        401
    );
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 429, 500, 401]);
    assert!(server.objects().is_empty());
}

#[test]
fn delayed_fault_makes_a_short_client_timeout_fire() {
    let server = start(MockConfig::default().with_bucket("docs"));
    server.push_fault(Fault::status(200).delay(Duration::from_millis(500)));
    let quick = Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let result = quick
        .get(format!("{}/v1/buckets/docs", server.base_url()))
        .send();
    assert!(result.unwrap_err().is_timeout());
    // The client hung up before the answer: recorded as unanswered.
    assert!(server.wait_for_requests(1, WAIT));
    assert_eq!(server.requests()[0].status, 0);
}

#[test]
fn dropped_connection_gives_the_client_a_transport_error() {
    let server = start(MockConfig::default().with_bucket("docs"));
    server.push_drop_connection(None);
    let result = client()
        .post(format!(
            "{}/v1/buckets/docs/objects/create",
            server.base_url()
        ))
        .json(&docs_body())
        .send();
    let error = result.unwrap_err();
    assert!(!error.is_timeout(), "{error:?}");
    assert!(server.objects().is_empty());
    assert_eq!(server.requests()[0].status, 0);
    assert_eq!(server.requests()[0].body, docs_body());
    // Only that one connection: the next request is served.
    assert_eq!(
        post(&server, "/v1/buckets/docs/objects/create", &docs_body())
            .status()
            .as_u16(),
        200
    );
}

#[test]
fn status_outage_answers_every_request_until_cleared() {
    let server = start(MockConfig::default().with_bucket("docs"));
    server.set_outage(Some(Outage::Status(503)));
    for path in ["/v1/buckets/docs/objects/create", "/elsewhere"] {
        let (status, body) = status_and_json(post(&server, path, &docs_body()));
        assert_eq!(status, 503);
        assert_eq!(body["status"], json!(503));
    }
    server.set_outage(None);
    assert_eq!(
        post(&server, "/v1/buckets/docs/objects/create", &docs_body())
            .status()
            .as_u16(),
        200
    );
    assert_eq!(server.objects().len(), 1);
}

#[test]
fn closed_port_outage_refuses_connections_and_reopens_the_same_port() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let addr = server.addr();
    assert_eq!(get(&server, "/v1/buckets/docs").status().as_u16(), 200);

    server.set_outage(Some(Outage::ClosedPort));
    let error = client()
        .get(format!("{}/v1/buckets/docs", server.base_url()))
        .send()
        .unwrap_err();
    assert!(error.is_connect(), "{error:?}");
    assert!(std::net::TcpStream::connect(addr).is_err());

    server.set_outage(None);
    assert_eq!(server.addr(), addr);
    assert_eq!(get(&server, "/v1/buckets/docs").status().as_u16(), 200);
    // Closing twice and reopening twice are harmless.
    server.set_outage(Some(Outage::ClosedPort));
    server.set_outage(Some(Outage::ClosedPort));
    server.set_outage(None);
    server.set_outage(None);
    assert_eq!(get(&server, "/v1/buckets/docs").status().as_u16(), 200);
}

#[test]
fn closed_port_drops_a_request_in_flight() {
    let server = start(MockConfig::default().with_bucket("docs"));
    server.push_fault(Fault::status(200).delay(Duration::from_secs(60)));
    let url = format!("{}/v1/buckets/docs", server.base_url());
    let in_flight = std::thread::spawn(move || client().get(url).send());
    // The fault leaves the script when the request reaches the emulator.
    assert!(wait_until(WAIT, || server.pending_faults() == 0));
    server.set_outage(Some(Outage::ClosedPort));
    let result = in_flight.join().unwrap();
    assert!(result.is_err(), "the in-flight request must fail");
    assert!(server.wait_for_requests(1, WAIT));
    assert_eq!(server.requests()[0].status, 0, "no answer was sent");
}

/// Polls `condition` until it holds or `timeout` passes.
fn wait_until(timeout: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

#[test]
fn rate_limit_answers_429_after_n_requests() {
    let server = start(MockConfig::default().with_bucket("docs").with_rate_limit(3));
    for _ in 0..3 {
        assert_eq!(
            post(&server, "/v1/buckets/docs/objects/create", &docs_body())
                .status()
                .as_u16(),
            200
        );
    }
    let response = post(&server, "/v1/buckets/docs/objects/create", &docs_body());
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let (status, body) = status_and_json(response);
    assert_eq!(status, 429);
    assert_eq!(body["error"]["type"], json!("RateLimitError"));
    assert_eq!(server.objects().len(), 3);
}

#[test]
fn tasks_are_found_by_id() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let (_, created) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects/create",
        &docs_body(),
    ));
    let task_id = created["task_id"].as_str().unwrap();
    let (status, task) = status_and_json(get(&server, &format!("/v1/tasks/{task_id}")));
    assert_eq!(status, 200);
    assert_eq!(task["task_id"], json!(task_id));
    assert_eq!(task["task_type"], json!("api_buckets_objects_create"));
    assert_eq!(task["status"], json!("COMPLETED"));
    assert_eq!(
        (task["inputs"].clone(), task["outputs"].clone()),
        (json!([]), json!(["obj_1"]))
    );
    assert_eq!(task["additional_data"]["object_id"], json!("obj_1"));

    let (status, missing) = status_and_json(get(&server, "/v1/tasks/task_999"));
    assert_eq!(status, 404);
    assert_eq!(
        missing["error"]["details"],
        json!({"resource": "task", "id": "task_999"})
    );
}

#[test]
fn bucket_get_shows_schema_and_count_and_follows_changes() {
    let server = start(MockConfig::default().with_bucket("docs"));
    post(&server, "/v1/buckets/docs/objects", &objects_body());
    let (status, bucket) = status_and_json(get(&server, "/v1/buckets/docs"));
    assert_eq!(status, 200);
    assert_eq!(bucket["bucket_id"], json!("bkt_docs"));
    assert_eq!(bucket["bucket_name"], json!("docs"));
    assert_eq!(bucket["bucket_schema"], json!({"properties": {}}));
    assert_eq!(bucket["object_count"], json!(1));
    assert_eq!(bucket["status"], json!("ACTIVE"));
    // The id works as identifier too.
    assert_eq!(get(&server, "/v1/buckets/bkt_docs").status().as_u16(), 200);

    let schema = json!({"properties": {"content": {"type": "pdf"}}});
    server.set_bucket_schema("other", schema.clone());
    let (_, other) = status_and_json(get(&server, "/v1/buckets/other"));
    assert_eq!(other["bucket_schema"], schema);

    server.remove_bucket("docs");
    assert_eq!(get(&server, "/v1/buckets/docs").status().as_u16(), 404);
    assert_eq!(
        post(&server, "/v1/buckets/docs/objects", &objects_body())
            .status()
            .as_u16(),
        404
    );
}

#[test]
fn requests_are_recorded_with_path_query_headers_and_body() {
    let server = start(MockConfig::default().with_bucket("docs"));
    client()
        .post(format!(
            "{}/v1/buckets/docs/objects?auto_process=true",
            server.base_url()
        ))
        .header("X-Namespace", "ns_1")
        .json(&objects_body())
        .send()
        .unwrap();
    get(&server, "/v1/buckets/docs");
    let requests = server.requests();
    assert_eq!(server.request_count(), 2);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(
        requests[0].path,
        "/v1/buckets/docs/objects?auto_process=true"
    );
    assert_eq!(requests[0].status, 200);
    assert_eq!(requests[0].header("x-namespace"), Some("ns_1"));
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
    assert_eq!(requests[0].body, objects_body());
    // reqwest's `.json()` sends serde_json's compact form.
    assert_eq!(
        requests[0].body_bytes,
        serde_json::to_vec(&objects_body()).unwrap().len() as u64
    );
    assert_eq!(requests[1].method, "GET");
    assert_eq!(requests[1].body, Value::Null);
    assert_eq!(requests[1].body_bytes, 0);
    assert!(requests[0].received_at <= requests[1].received_at);
}

#[test]
fn wait_for_objects_wakes_when_objects_arrive_and_times_out_otherwise() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let url = format!("{}/v1/buckets/docs/objects/create", server.base_url());
    let sender = std::thread::spawn(move || {
        for _ in 0..3 {
            client().post(&url).json(&docs_body()).send().unwrap();
        }
    });
    assert!(server.wait_for_objects(3, WAIT));
    sender.join().unwrap();
    assert!(!server.wait_for_objects(4, Duration::from_millis(50)));
}

#[tokio::test(flavor = "current_thread")]
async fn works_from_inside_another_runtime() {
    let server = MockServer::start(MockConfig::default().with_bucket("docs")).unwrap();
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/buckets/docs/objects/create",
            server.base_url()
        ))
        .json(&docs_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(server.objects().len(), 1);
    server.shutdown();
}

#[test]
fn shutdown_closes_the_port() {
    let server = start(MockConfig::default());
    let addr = server.addr();
    server.shutdown();
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn binary_prints_its_url_first_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mixpeek-mock"))
        .args(["--bucket", "docs", "--api-key", "sk_bin"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let response = client()
        .post(format!("{url}/v1/buckets/docs/objects/create"))
        .bearer_auth("sk_bin")
        .json(&docs_body())
        .send()
        .unwrap();
    let status = response.status().as_u16();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200);
}

#[test]
fn binary_help_explains_the_mixpeek_ingest_config() {
    let output = Command::new(env!("CARGO_BIN_EXE_mixpeek-mock"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(
        help.contains("[api]") && help.contains("base_url"),
        "{help}"
    );
}
