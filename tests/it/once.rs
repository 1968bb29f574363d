//! `once` end to end: the create-object docs layout in both dialects, exact
//! request bodies, dialect detection, and the no-op second run.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mixpeek_mock::{Dialects, MockConfig};
use serde_json::{Value, json};

use crate::harness::{BUCKET, Env, KEY, create_requests};

const PDF: &[u8] = include_bytes!("../../assets/demo/content.pdf");
const JPEG: &[u8] = include_bytes!("../../assets/demo/thumbnail.jpg");

/// `contract-2024/` as on Mixpeek's create-object docs page.
fn lay_out_contract(env: &Env) {
    env.write("contract-2024/content.pdf", PDF);
    env.write("contract-2024/thumbnail.jpg", JPEG);
    env.write(
        "contract-2024/details.json",
        br#"{"num_pages": 5, "title": "Service Agreement 2024"}"#,
    );
    env.write(
        "contract-2024/_metadata.json",
        br#"{"status": "draft", "year": 2024}"#,
    );
}

fn inline(bytes: &[u8], mime: &str, name: &str) -> Value {
    json!({"base64": STANDARD.encode(bytes), "mime_type": mime, "filename": name})
}

/// The blobs of `contract-2024/` as both dialects send them, in order;
/// `details_type` is the dialect's blob type for a JSON file.
fn contract_blobs(details_type: &str) -> Value {
    json!([
        {"property": "content", "type": "pdf", "key_prefix": "/content.pdf",
         "data": inline(PDF, "application/pdf", "content.pdf")},
        {"property": "details", "type": details_type, "key_prefix": "/details.json",
         "data": {"num_pages": 5, "title": "Service Agreement 2024"}},
        {"property": "thumbnail", "type": "image", "key_prefix": "/thumbnail.jpg",
         "data": inline(JPEG, "image/jpeg", "thumbnail.jpg")},
    ])
}

#[test]
fn objects_create_dialect_sends_the_docs_layout_exactly() {
    let env = Env::new();
    lay_out_contract(&env);
    env.config(
        r#"dialect = "objects-create""#,
        "metadata = { category = \"contracts\" }",
    );
    env.run(&["once"]).assert_code(0);

    let objects = env.server.objects();
    assert_eq!(objects.len(), 1, "one object for one folder");
    assert_eq!(objects[0].dialect, "objects-create");
    let expected = json!({
        "key_prefix": "/documents/contract-2024",
        "blobs": contract_blobs("json"),
        "metadata": {"category": "contracts", "status": "draft", "year": 2024},
        "skip_duplicates": true,
    });
    assert_eq!(objects[0].body, expected);

    let requests = create_requests(&env.server);
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].path,
        format!("/v1/buckets/{BUCKET}/objects/create")
    );
    let header = |name: &str| {
        requests[0]
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("authorization"), Some(format!("Bearer {KEY}")));
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert!(header("user-agent").unwrap().starts_with("mixpeek-ingest/"));
}

#[test]
fn objects_dialect_puts_metadata_at_the_root() {
    let env = Env::new();
    lay_out_contract(&env);
    env.config(
        "dialect = \"objects\"\nauto_process = false\nnamespace = \"netflix_prod\"",
        "metadata = { category = \"contracts\" }",
    );
    env.run(&["once"]).assert_code(0);

    let objects = env.server.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].dialect, "objects");
    let expected = json!({
        "key_prefix": "/documents/contract-2024",
        "blobs": contract_blobs("object"),
        "skip_duplicates": true,
        "category": "contracts",
        "status": "draft",
        "year": 2024,
    });
    assert_eq!(objects[0].body, expected);
    let requests = create_requests(&env.server);
    assert_eq!(
        requests[0].path,
        format!("/v1/buckets/{BUCKET}/objects?auto_process=false")
    );
    assert!(
        requests[0]
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("x-namespace") && v == "netflix_prod")
    );
}

#[test]
fn auto_dialect_switches_on_405_and_remembers_it() {
    let env = Env::with(
        MockConfig {
            dialects: Dialects {
                objects_create: false,
                objects: true,
            },
            ..MockConfig::default()
        }
        .with_bucket(BUCKET),
    );
    env.write("a/one.txt", b"first");
    env.config("", "");
    env.run(&["once"]).assert_code(0);
    let paths: Vec<_> = create_requests(&env.server)
        .into_iter()
        .map(|r| (r.path, r.status))
        .collect();
    assert_eq!(
        paths,
        vec![
            (format!("/v1/buckets/{BUCKET}/objects/create"), 405),
            (
                format!("/v1/buckets/{BUCKET}/objects?auto_process=true"),
                200
            ),
        ]
    );

    // A later run goes straight to the remembered dialect.
    env.write("b/two.txt", b"second");
    env.run(&["once"]).assert_code(0);
    let last = create_requests(&env.server).pop().unwrap();
    assert_eq!(
        last.path,
        format!("/v1/buckets/{BUCKET}/objects?auto_process=true")
    );
    assert_eq!(create_requests(&env.server).len(), 3);
}

#[test]
fn a_second_once_over_an_unchanged_tree_sends_and_hashes_nothing() {
    let env = Env::new();
    lay_out_contract(&env);
    env.write("loose.txt", b"a file in the root is its own object");
    env.config("", "");
    let first = env.run(&["once"]);
    first.assert_code(0);
    assert_eq!(first.counter("objects_delivered"), 2);
    assert_eq!(first.counter("files_hashed"), 4);
    let requests_after_first = env.server.request_count();

    let second = env.run(&["once"]);
    second.assert_code(0);
    assert_eq!(second.counter("files_hashed"), 0);
    assert_eq!(second.counter("requests"), 0);
    assert_eq!(env.server.request_count(), requests_after_first);

    // A changed file is sent again, alone in a new object for its group.
    env.write("contract-2024/details.json", br#"{"num_pages": 6}"#);
    let third = env.run(&["once"]);
    third.assert_code(0);
    assert_eq!(third.counter("files_hashed"), 1);
    let last = env.server.objects().pop().unwrap();
    assert_eq!(last.body["key_prefix"], "/documents/contract-2024");
    assert_eq!(last.body["blobs"].as_array().unwrap().len(), 1);
    assert_eq!(last.body["blobs"][0]["data"], json!({"num_pages": 6}));
}

#[test]
fn plan_prints_requests_without_network_or_state() {
    let env = Env::new();
    lay_out_contract(&env);
    env.config(r#"dialect = "objects-create""#, "");
    let run = env.run(&["plan"]);
    run.assert_code(0);
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", run.stdout);
    assert_eq!(lines[0]["method"], "POST");
    assert_eq!(
        lines[0]["path"],
        format!("/v1/buckets/{BUCKET}/objects/create")
    );
    let pdf = lines[0]["body"]["blobs"][0]["data"]["base64"]
        .as_str()
        .unwrap();
    assert!(
        pdf.starts_with(&format!("<base64 {} bytes sha256:", PDF.len())),
        "{pdf}"
    );
    assert_eq!(env.server.request_count(), 0);
    assert!(!env.state_dir().exists(), "plan must not write state");
}
