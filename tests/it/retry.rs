//! Retry behaviour against emulator faults (SPEC §7).

use std::time::Duration;

use mixpeek_mock::Fault;

use crate::harness::{Env, create_requests};

#[test]
fn three_503s_then_success_delivers_once() {
    let env = Env::new();
    env.write("a/file.txt", b"hello");
    env.config("", "");
    for _ in 0..3 {
        env.server.push_fault(Fault::status(503));
    }
    let run = env.run(&["once"]);
    run.assert_code(0);
    let statuses: Vec<u16> = create_requests(&env.server)
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![503, 503, 503, 200]);
    assert_eq!(env.server.objects().len(), 1);
    assert_eq!(run.counter("retries"), 3);
}

#[test]
fn a_429_is_not_retried_before_its_retry_after() {
    let env = Env::new();
    env.write("a/file.txt", b"hello");
    env.config("", "");
    env.server.push_fault(Fault::status(429).retry_after("2"));
    env.run(&["once"]).assert_code(0);
    let requests = create_requests(&env.server);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].status, 429);
    let gap = requests[1].received_at - requests[0].received_at;
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?}, before Retry-After: 2"
    );
}

#[test]
fn a_422_becomes_a_dead_letter_and_others_still_go_through() {
    let env = Env::new();
    env.write("a/file.txt", b"first");
    env.write("b/file.txt", b"second");
    env.write("c/file.txt", b"third");
    env.config("", "");
    // The first create is refused with a validation error.
    env.server.push_fault(Fault::status(422).body(serde_json::json!({
        "detail": [{"loc": ["body", "blobs", 0, "property"], "msg": "no such property in the bucket schema", "type": "value_error"}]
    })));
    let run = env.run(&["once"]);
    run.assert_code(1);
    assert_eq!(
        env.server.objects().len(),
        2,
        "the other objects are delivered"
    );

    let text = env.status().to_string();
    assert!(
        text.contains("no such property in the bucket schema"),
        "the dead letter keeps the server's message: {text}"
    );

    // Not sent again by a later run.
    let before = env.server.request_count();
    env.run(&["once"]).assert_code(0);
    assert_eq!(env.server.request_count(), before);
}

#[test]
fn a_401_pauses_instead_of_dead_lettering_and_resumes_when_fixed() {
    let env = Env::new();
    env.write("a/file.txt", b"hello");
    env.config("", "");
    env.server.set_api_key(Some("a-rotated-key".to_owned()));

    // `once` does not wait out a refused key: it stops, keeping the object.
    let run = env.run(&["once"]);
    run.assert_code(1);
    assert!(run.stderr.contains("paused"), "{}", run.stderr);
    assert_eq!(run.counter("objects_dead"), 0);
    let status = env.run(&["status", "--json"]);
    let summary: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(summary["counts"]["pending"], 1, "{summary}");
    assert_eq!(summary["counts"]["dead"], 0, "{summary}");
    assert!(
        summary["paused"]
            .as_str()
            .is_some_and(|r| r.contains("401")),
        "status tells why submissions are paused: {summary}"
    );

    // Fixed on the server side, as an operator would: the next run delivers.
    env.server.set_api_key(Some(crate::harness::KEY.to_owned()));
    env.run(&["once"]).assert_code(0);
    assert_eq!(env.server.objects().len(), 1);
    assert_eq!(
        create_requests(&env.server)
            .iter()
            .filter(|r| r.status == 401)
            .count(),
        1,
        "one refused attempt, then a pause"
    );
}
