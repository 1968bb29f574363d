//! `POST /v1/buckets/{bucket}/objects/batch`: limits, partial success, records.

use mixpeek_mock::{BatchShapeErrors, BatchSlot, Dialects, MockConfig};
use rstest::rstest;
use serde_json::{Value, json};

use crate::{get, post, start, status_and_json};

fn pdf_object(n: usize) -> Value {
    json!({
        "key_prefix": format!("/docs/{n}"),
        "source": "scanner",
        "blobs": [{"property": "content", "type": "pdf", "data": "https://cdn.example.com/a.pdf"}]
    })
}

fn batch(objects: Vec<Value>) -> Value {
    json!({ "objects": objects })
}

fn schema() -> Value {
    json!({"properties": {"content": {"type": "pdf"}}})
}

#[test]
fn partial_success_creates_the_good_objects_and_lists_the_bad() {
    let server = start(MockConfig::default().with_bucket_schema("docs", schema()));
    let cover = json!({"blobs": [{"property": "cover", "type": "image", "data": "x"}]});
    let body = batch(vec![pdf_object(0), cover, pdf_object(2)]);
    let (status, answer) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects/batch?auto_process=true",
        &body,
    ));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["total_requested"], json!(3));
    assert_eq!(answer["succeeded_count"], json!(2));
    assert_eq!(answer["failed_count"], json!(1));
    let failed = answer["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["object_index"], json!(1));
    assert_eq!(failed[0]["error_type"], json!("ValidationError"));
    assert!(
        failed[0]["error"].as_str().unwrap().contains("'cover'"),
        "{answer}"
    );

    let succeeded = answer["succeeded"].as_array().unwrap();
    let ids: Vec<&str> = succeeded
        .iter()
        .map(|o| o["object_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["obj_1", "obj_2"]);
    assert_eq!(succeeded[1]["key_prefix"], json!("/docs/2"));
    assert_eq!(succeeded[1]["metadata"], json!({"source": "scanner"}));
    assert_eq!(succeeded[0]["task_id"], json!("task_1"));
    assert_eq!(succeeded[1]["task_id"], json!("task_1"));

    let objects = server.objects();
    assert_eq!(objects.len(), 2);
    for (object, index) in objects.iter().zip([0, 2]) {
        assert_eq!(object.dialect, "objects");
        assert_eq!(object.bucket, "docs");
        assert_eq!(object.body, body["objects"][index]);
        assert_eq!(object.task_id.as_deref(), Some("task_1"));
        assert_eq!(
            object.batch,
            Some(BatchSlot {
                batch_id: "btch_1".into(),
                index
            })
        );
    }
    let (_, bucket) = status_and_json(get(&server, "/v1/buckets/docs"));
    assert_eq!(bucket["object_count"], json!(2));

    // One processing task covers the batch.
    let (status, task) = status_and_json(get(&server, "/v1/tasks/task_1"));
    assert_eq!(status, 200);
    assert_eq!(task["task_type"], json!("api_buckets_batches_process"));
    assert_eq!(task["inputs"], json!(["btch_1"]));
    assert_eq!(
        task["additional_data"]["object_ids"],
        json!(["obj_1", "obj_2"])
    );
}

#[test]
fn without_auto_process_no_task_is_started() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let (status, answer) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects/batch",
        &batch(vec![pdf_object(0)]),
    ));
    assert_eq!(status, 200, "{answer}");
    assert!(answer["succeeded"][0].get("task_id").is_none());
    assert_eq!(server.objects()[0].task_id, None);
    assert!(server.tasks().is_empty());
}

#[rstest]
#[case::at_the_limit(100, 200)]
#[case::over_the_limit(101, 422)]
fn at_most_100_objects_per_batch(#[case] n: usize, #[case] expected: u16) {
    let server = start(MockConfig::default().with_bucket("docs"));
    let body = batch((0..n).map(pdf_object).collect());
    let (status, answer) = status_and_json(post(&server, "/v1/buckets/docs/objects/batch", &body));
    assert_eq!(status, expected);
    if expected == 200 {
        assert_eq!(answer["succeeded_count"], json!(100));
        assert_eq!(server.objects().len(), 100);
        assert_eq!(server.objects()[99].batch.as_ref().unwrap().index, 99);
    } else {
        assert_eq!(answer["detail"][0]["loc"], json!(["body", "objects"]));
        assert_eq!(answer["detail"][0]["type"], json!("too_long"));
        assert!(server.objects().is_empty());
    }
}

#[test]
fn a_malformed_object_refuses_the_batch_by_default() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let bad = json!({"blobs": [{"property": "content", "type": "PDF", "data": "x"}]});
    let (status, answer) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects/batch",
        &batch(vec![pdf_object(0), bad]),
    ));
    assert_eq!(status, 422);
    assert_eq!(
        answer["detail"][0]["loc"],
        json!(["body", "objects", 1, "blobs", 0, "type"])
    );
    assert_eq!(answer["detail"][0]["type"], json!("enum"));
    assert!(server.objects().is_empty());
}

#[test]
fn per_object_mode_lists_a_malformed_object_as_failed() {
    let server = start(
        MockConfig::default()
            .with_bucket("docs")
            .with_batch_shape_errors(BatchShapeErrors::PerObject),
    );
    let bad = json!({"blobs": [{"property": "", "type": "pdf", "data": "x"}]});
    let (status, answer) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects/batch",
        &batch(vec![bad, pdf_object(1)]),
    ));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["failed"][0]["object_index"], json!(0));
    assert_eq!(answer["failed"][0]["error_type"], json!("ValidationError"));
    assert!(
        answer["failed"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("blobs.0.property: "),
        "{answer}"
    );
    assert_eq!(server.objects().len(), 1);
    assert_eq!(server.objects()[0].batch.as_ref().unwrap().index, 1);
}

#[test]
fn a_batch_where_everything_failed_is_a_422_envelope() {
    let server = start(MockConfig::default().with_bucket_schema("docs", schema()));
    let cover = json!({"blobs": [{"property": "cover", "type": "image", "data": "x"}]});
    let (status, answer) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects/batch",
        &batch(vec![cover.clone(), cover]),
    ));
    assert_eq!(status, 422);
    assert_eq!(answer["success"], json!(false));
    assert_eq!(answer["error"]["type"], json!("ValidationError"));
    let details = &answer["error"]["details"];
    assert_eq!(details["failed_count"], json!(2));
    assert_eq!(details["failed"][1]["object_index"], json!(1));
    assert!(server.objects().is_empty());
}

#[test]
fn an_empty_batch_creates_nothing() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let (status, answer) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects/batch",
        &batch(Vec::new()),
    ));
    assert_eq!(status, 200);
    assert_eq!(answer["total_requested"], json!(0));
    assert!(server.objects().is_empty());
}

#[test]
fn unknown_upload_ids_fail_their_object_only() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let with_upload =
        json!({"blobs": [{"property": "video", "type": "video", "upload_id": "upl_missing"}]});
    let (status, answer) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects/batch",
        &batch(vec![with_upload, pdf_object(1)]),
    ));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["failed"][0]["object_index"], json!(0));
    assert_eq!(answer["failed"][0]["error_type"], json!("NotFoundError"));
    assert!(
        answer["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("upl_missing")
    );
    assert_eq!(server.objects().len(), 1);
}

#[rstest]
#[case::missing_objects(json!({}), json!(["body", "objects"]), "missing")]
#[case::objects_not_a_list(json!({"objects": {}}), json!(["body", "objects"]), "list_type")]
#[case::not_an_object(json!([]), json!(["body"]), "model_attributes_type")]
fn malformed_batch_bodies_get_422(#[case] body: Value, #[case] loc: Value, #[case] kind: &str) {
    let server = start(MockConfig::default().with_bucket("docs"));
    let (status, answer) = status_and_json(post(&server, "/v1/buckets/docs/objects/batch", &body));
    assert_eq!(status, 422);
    assert_eq!(answer["detail"][0]["loc"], loc);
    assert_eq!(answer["detail"][0]["type"], json!(kind));
}

#[test]
fn batch_follows_the_objects_dialect_key_and_bucket() {
    let server = start(
        MockConfig::default()
            .with_bucket("docs")
            .with_api_key("k")
            .with_dialects(Dialects {
                objects_create: true,
                objects: false,
            }),
    );
    let body = batch(vec![pdf_object(0)]);
    let response = post(&server, "/v1/buckets/docs/objects/batch", &body);
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.text().unwrap(), "");
    server.set_dialects(Dialects::default());
    assert_eq!(
        post(&server, "/v1/buckets/docs/objects/batch", &body)
            .status()
            .as_u16(),
        401
    );
    server.set_api_key(None);
    let (status, answer) = status_and_json(post(&server, "/v1/buckets/nope/objects/batch", &body));
    assert_eq!(status, 404);
    assert_eq!(answer["error"]["details"]["resource"], json!("bucket"));
    let (status, _) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects/batch?auto_process=maybe",
        &body,
    ));
    assert_eq!(status, 422);
}
