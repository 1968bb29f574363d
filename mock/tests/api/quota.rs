//! The per-minute quota: what it counts, and its counters.

use mixpeek_mock::{Fault, MockConfig, RateLimitStats};
use reqwest::header::CONTENT_TYPE;
use serde_json::json;

use crate::{client, docs_body, get, post, start, status_and_json};

#[test]
fn every_api_request_counts_but_faults_and_presigned_puts_do_not() {
    let server = start(
        MockConfig::default()
            .with_bucket("docs")
            .with_api_key("k")
            .with_rate_limit(3),
    );
    let base = server.base_url();
    let with_key = |path: &str| {
        client()
            .post(format!("{base}{path}"))
            .bearer_auth("k")
            .json(&json!({
                "filename": "a.txt", "content_type": "text/plain",
                "file_size_bytes": 2, "create_object_on_confirm": false
            }))
            .send()
            .unwrap()
    };
    // 1: a 401 still counts.
    assert_eq!(
        post(&server, "/v1/buckets/docs/objects/create", &docs_body())
            .status()
            .as_u16(),
        401
    );
    // A scripted answer comes first and is not counted.
    server.push_fault(Fault::status(503));
    assert_eq!(get(&server, "/v1/buckets/docs").status().as_u16(), 503);
    // 2: the upload.
    let (status, created) = status_and_json(with_key("/v1/buckets/docs/uploads"));
    assert_eq!(status, 201, "{created}");
    // The presigned PUT is storage, not API: no key, not counted.
    let put = client()
        .put(created["presigned_url"].as_str().unwrap())
        .header(CONTENT_TYPE, "text/plain")
        .body("hi")
        .send()
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    // 3: the confirmation.
    let upload_id = created["upload_id"].as_str().unwrap();
    let confirm = format!("/v1/buckets/docs/uploads/{upload_id}/confirm");
    assert_eq!(with_key(&confirm).status().as_u16(), 200);
    // 4: over the quota.
    let refused = with_key("/v1/buckets/docs/uploads");
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        server.rate_limit_stats(),
        RateLimitStats {
            admitted: 3,
            limited: 1
        }
    );

    // Lifting the limit lets requests through; the counters carry on.
    server.set_rate_limit(None);
    assert_eq!(with_key("/v1/buckets/docs/uploads").status().as_u16(), 201);
    assert_eq!(
        server.rate_limit_stats(),
        RateLimitStats {
            admitted: 4,
            limited: 1
        }
    );
}

#[test]
fn a_new_limit_starts_a_fresh_window() {
    let server = start(MockConfig::default().with_bucket("docs").with_rate_limit(1));
    assert_eq!(get(&server, "/v1/buckets/docs").status().as_u16(), 200);
    assert_eq!(get(&server, "/v1/buckets/docs").status().as_u16(), 429);
    server.set_rate_limit(Some(2));
    for _ in 0..2 {
        assert_eq!(get(&server, "/v1/buckets/docs").status().as_u16(), 200);
    }
    assert_eq!(get(&server, "/v1/buckets/docs").status().as_u16(), 429);
    assert_eq!(server.rate_limit_stats().limited, 2);
}
