//! Batch create (SPEC §7, dialect `objects`): ready objects of one bucket go
//! to `objects/batch` in requests of up to 100, and each object of a batch
//! gets its own outcome.

use mixpeek_mock::{Fault, MockConfig, RecordedRequest};
use serde_json::json;

use crate::harness::{BUCKET, Env};

fn batch_requests(env: &Env) -> Vec<RecordedRequest> {
    env.server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.contains("/objects/batch"))
        .collect()
}

fn drop_groups(env: &Env, n: usize, extra: impl Fn(usize) -> bool) {
    for g in 0..n {
        env.write(
            &format!("g{g:03}/content.txt"),
            format!("group {g}").as_bytes(),
        );
        if extra(g) {
            env.write(&format!("g{g:03}/extra.txt"), b"not in the schema");
        }
    }
}

#[test]
fn two_hundred_fifty_ready_objects_go_in_three_batches() {
    let env = Env::new();
    drop_groups(&env, 250, |_| false);
    env.config("dialect = \"objects\"\nmax_in_flight = 4", "");

    env.run(&["once"]).assert_code(0);

    let objects = env.server.objects();
    assert_eq!(objects.len(), 250);
    assert!(
        objects.iter().all(|o| o.batch.is_some()),
        "a single create slipped through"
    );
    let mut sizes: Vec<usize> = batch_requests(&env)
        .iter()
        .map(|r| r.body["objects"].as_array().unwrap().len())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![50, 100, 100]);
    assert_eq!(env.status()["counts"]["delivered"], 250);
}

#[test]
fn a_batch_with_two_refused_objects_delivers_the_other_98() {
    let schema = json!({"properties": {"content": {"type": "text"}}});
    let env = Env::with(MockConfig::default().with_bucket_schema(BUCKET, schema));
    // Groups 17 and 60 hold a file whose property the bucket does not have.
    drop_groups(&env, 100, |g| g == 17 || g == 60);
    env.config("dialect = \"objects\"", "");

    env.run(&["once"]).assert_code(1);

    let batches = batch_requests(&env);
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(env.server.objects().len(), 98);
    let status = env.status();
    assert_eq!(status["counts"]["delivered"], 98);
    let dead = status["dead_letters"].as_array().unwrap();
    let mut prefixes: Vec<&str> = dead
        .iter()
        .map(|d| d["key_prefix"].as_str().unwrap())
        .collect();
    prefixes.sort_unstable();
    assert_eq!(prefixes, vec!["/documents/g017", "/documents/g060"]);
    for d in dead {
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.contains("Blob property 'extra' is not defined in the schema"),
            "{reason}"
        );
    }
}

#[test]
fn a_batch_refused_as_a_whole_dead_letters_only_the_objects_it_names() {
    // A service validating the batch body as one pydantic model refuses the
    // whole request, naming the culprit by its place in `objects[]`.
    let env = Env::new();
    drop_groups(&env, 10, |_| false);
    env.config("dialect = \"objects\"", "");
    env.server
        .push_fault(Fault::status(422).body(json!({"detail": [{
            "loc": ["body", "objects", 4, "blobs", 0, "type"],
            "msg": "Input should be 'text', 'image', 'video', 'audio', 'pdf', 'excel' or 'object'",
            "type": "enum",
        }]})));

    env.run(&["once"]).assert_code(1);

    assert_eq!(env.server.objects().len(), 9);
    let status = env.status();
    let dead = status["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("body.objects.4.blobs.0.type: Input should be"),
        "{reason}"
    );
    // The refused batch, then the nine others together.
    let sizes: Vec<usize> = batch_requests(&env)
        .iter()
        .map(|r| r.body["objects"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, vec![10, 9]);
}

#[test]
fn a_batch_refused_without_naming_objects_is_sent_one_by_one() {
    let env = Env::new();
    drop_groups(&env, 3, |_| false);
    env.config("dialect = \"objects\"", "");
    env.server.push_fault(Fault::status(413));

    env.run(&["once"]).assert_code(0);

    assert_eq!(env.server.objects().len(), 3);
    assert_eq!(batch_requests(&env).len(), 1);
    let singles = env
        .server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.contains("/objects?"))
        .count();
    assert_eq!(singles, 3);
}

#[test]
fn a_batch_met_by_a_transient_error_is_retried_whole() {
    let env = Env::new();
    drop_groups(&env, 5, |_| false);
    env.config("dialect = \"objects\"", "");
    env.server.push_fault(Fault::status(503).retry_after("0"));

    env.run(&["once"]).assert_code(0);

    let batches = batch_requests(&env);
    let statuses: Vec<u16> = batches.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 200]);
    assert_eq!(
        batches[0].body, batches[1].body,
        "the retry is the same batch"
    );
    assert_eq!(env.server.objects().len(), 5);
}
