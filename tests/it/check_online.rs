//! `check --online` against the emulator: auth, bucket, and the bucket schema
//! comparison; and the same comparison as warnings at `run` start.

use mixpeek_mock::{MockConfig, Outage};
use serde_json::{Value, json};

use crate::harness::{BUCKET, Daemon, Env, Run, TIMEOUT};

const PDF: &[u8] = b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n";
const JPEG: &[u8] = b"\xFF\xD8\xFF\xE0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0";

/// An emulator whose bucket [`BUCKET`] has `properties` as its schema.
fn env_with_schema(properties: &Value) -> Env {
    Env::with(MockConfig::default().with_bucket_schema(BUCKET, json!({ "properties": properties })))
}

/// The `error: watch …` lines of a run.
fn watch_errors(run: &Run) -> Vec<&str> {
    run.stdout
        .lines()
        .filter(|l| l.starts_with("error: watch "))
        .collect()
}

#[test]
fn a_property_missing_from_the_schema_is_listed_with_its_fix() {
    let env = env_with_schema(&json!({ "content": { "type": "pdf" } }));
    env.write("contract-2024/content.pdf", PDF);
    env.write("contract-2024/thumbnail.jpg", JPEG);
    env.config("", "");
    let run = env.run(&["check", "--online"]);
    run.assert_code(1);
    assert!(
        run.stdout.contains(&format!("bucket {BUCKET}: reachable")),
        "{}",
        run.stdout
    );
    let errors = watch_errors(&run);
    assert_eq!(errors.len(), 1, "{}", run.stdout);
    let drop = env.drop_dir();
    let expected = format!(
        "error: watch {}: property `thumbnail` is not in the bucket schema; the watch sends it as \
         `image` (file `contract-2024/thumbnail.jpg`); fix: add property `thumbnail` of type `image` \
         to the bucket schema, or set `property = \"...\"` in a [[watch.rule]] matching these files \
         to one the schema has (content)",
        drop.display()
    );
    assert_eq!(errors[0], expected);
}

#[test]
fn a_type_that_differs_is_listed_and_rules_count_without_files() {
    let env = env_with_schema(&json!({
        "content": { "type": "image" },
        "details": { "type": "text" },
    }));
    env.write("contract-2024/content.pdf", PDF);
    env.config(
        r#"dialect = "objects""#,
        "[[watch.rule]]\nmatch = \"**/*.json\"\nproperty = \"details\"\n\n\
         [[watch.rule]]\nmatch = \"clips/*.mp4\"\nproperty = \"clip\"",
    );
    let run = env.run(&["check", "--online"]);
    run.assert_code(1);
    let errors = watch_errors(&run);
    assert_eq!(errors.len(), 3, "{}", run.stdout);
    // Sorted by property: clip, content, details.
    assert!(
        errors[0].contains("property `clip` is not in the bucket schema; the watch sends it as `video` (rule `clips/*.mp4`)")
            && errors[0].contains("add property `clip` of type `video`"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains(
            "property `content` is `image` in the bucket schema, but the watch sends it as `pdf` (file `contract-2024/content.pdf`)"
        ) && errors[1].contains("change the type of `content` in the bucket schema to `pdf`"),
        "{}",
        errors[1]
    );
    // Dialect `objects` sends JSON files as `object`, and says so.
    assert!(
        errors[2].contains(
            "property `details` is `text` in the bucket schema, but the watch sends it as `object` (rule `**/*.json`)"
        ),
        "{}",
        errors[2]
    );
}

#[test]
fn a_matching_schema_passes() {
    let env = env_with_schema(&json!({
        "content": { "type": "pdf" },
        "thumbnail": { "type": "image" },
        "details": { "type": "object" },
    }));
    env.write("contract-2024/content.pdf", PDF);
    env.write("contract-2024/thumbnail.jpg", JPEG);
    env.write("contract-2024/details.json", br#"{"num_pages": 5}"#);
    // Sidecars are not blobs: no property `_metadata` is expected.
    env.write("contract-2024/_metadata.json", br#"{"year": 2024}"#);
    env.config("", "");
    let run = env.run(&["check", "--online"]);
    run.assert_code(0);
    assert!(watch_errors(&run).is_empty(), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("3 blob properties match the bucket schema of contracts"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_bucket_without_schema_properties_is_said_once_and_passes() {
    let env = Env::new();
    env.write("a/content.pdf", PDF);
    env.write("a/thumbnail.jpg", JPEG);
    env.config("", "");
    let run = env.run(&["check", "--online"]);
    run.assert_code(0);
    let warnings: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("defines no properties"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", run.stdout);
    assert!(warnings[0].starts_with(&format!("warning: bucket {BUCKET}: ")));
    assert!(watch_errors(&run).is_empty(), "{}", run.stdout);
}

#[test]
fn a_refused_key_and_a_missing_bucket_are_errors() {
    let env = Env::new();
    env.config("", "");
    env.server.set_api_key(Some("another-key".to_owned()));
    let run = env.run(&["check", "--online"]);
    run.assert_code(1);
    assert!(
        run.stdout.contains("error: the API key was refused"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("reachable"), "{}", run.stdout);

    let env = Env::new();
    env.config("", "");
    let config = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        env.config_path(),
        config.replace(&format!("bucket = \"{BUCKET}\""), "bucket = \"nope\""),
    )
    .unwrap();
    let run = env.run(&["check", "--online"]);
    run.assert_code(1);
    assert!(
        run.stdout
            .contains("error: bucket nope does not exist; create it or fix watch.bucket"),
        "{}",
        run.stdout
    );
}

#[test]
fn run_start_logs_each_mismatch_as_a_warning_and_keeps_delivering() {
    let env = env_with_schema(&json!({ "content": { "type": "pdf" } }));
    env.write("ok/content.pdf", PDF);
    env.write("bad/thumbnail.jpg", JPEG);
    env.config("", "");
    let mut daemon = Daemon::start(&env);
    assert!(
        daemon.wait_log(TIMEOUT, |l| l.contains("WARN")
            && l.contains("bucket schema mismatch")
            && l.contains("property `thumbnail` is not in the bucket schema")
            && l.contains("add property `thumbnail` of type `image`")),
        "no schema warning; stderr:\n{}",
        daemon.log()
    );
    // A warning, not a stop: what fits the schema is delivered.
    assert!(
        daemon.wait_for(TIMEOUT, || env
            .server
            .objects()
            .iter()
            .any(|o| o.body["key_prefix"] == "/documents/ok")),
        "the fitting object was not delivered; stderr:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert_eq!(
        log.matches("bucket schema mismatch").count(),
        1,
        "one warning per mismatch:\n{log}"
    );
    daemon.stop(TIMEOUT);
}

#[test]
fn run_start_with_the_api_down_warns_once_and_delivers_when_it_returns() {
    let env = env_with_schema(&json!({ "content": { "type": "pdf" } }));
    env.write("ok/content.pdf", PDF);
    env.config("", "");
    env.server.set_outage(Some(Outage::Status(503)));
    let mut daemon = Daemon::start(&env);
    assert!(
        daemon.wait_log(TIMEOUT, |l| l.contains("WARN")
            && l.contains("bucket schema not checked")
            && l.contains("503")),
        "no warning about the unchecked schema; stderr:\n{}",
        daemon.log()
    );
    env.server.set_outage(None);
    assert!(
        daemon.wait_for(TIMEOUT, || !env.server.objects().is_empty()),
        "not delivered after the outage; stderr:\n{}",
        daemon.log()
    );
    assert_eq!(
        daemon.log().matches("bucket schema not checked").count(),
        1,
        "{}",
        daemon.log()
    );
    daemon.stop(TIMEOUT);
}
