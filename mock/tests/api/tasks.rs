//! `GET /v1/tasks/{task_id}`: states over time, scripted outcomes, forgetting.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mixpeek_mock::{MockConfig, MockServer, TaskStatus, TaskTimeline};
use rstest::rstest;
use serde_json::{Value, json};

use crate::{WAIT, client, docs_body, get, post, start, status_and_json, wait_until};

/// Creates one object-create and returns its task id.
fn new_task(server: &MockServer) -> String {
    let (status, body) = status_and_json(post(
        server,
        "/v1/buckets/docs/objects/create",
        &docs_body(),
    ));
    assert_eq!(status, 200, "{body}");
    body["task_id"].as_str().unwrap().to_string()
}

fn task(server: &MockServer, task_id: &str) -> (u16, Value) {
    status_and_json(get(server, &format!("/v1/tasks/{task_id}")))
}

fn status_of(server: &MockServer, task_id: &str) -> String {
    task(server, task_id).1["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[rstest]
#[case::pending_phase(TaskTimeline::new(Duration::from_secs(600), Duration::ZERO), "PENDING")]
#[case::processing_phase(
    TaskTimeline::new(Duration::ZERO, Duration::from_secs(600)),
    "PROCESSING"
)]
#[case::done_at_once(TaskTimeline::default(), "COMPLETED")]
fn a_new_task_answers_its_current_phase(#[case] timeline: TaskTimeline, #[case] status: &str) {
    let server = start(
        MockConfig::default()
            .with_bucket("docs")
            .with_task_timeline(timeline),
    );
    let task_id = new_task(&server);
    let (code, body) = task(&server, &task_id);
    assert_eq!(code, 200);
    assert_eq!(body["status"], json!(status));
    assert_eq!(body["error"], Value::Null);
    let expected_outputs = if status == "COMPLETED" {
        json!(["obj_1"])
    } else {
        json!([])
    };
    assert_eq!(body["outputs"], expected_outputs);
}

#[test]
fn a_task_completes_after_its_delays_and_not_before() {
    let delay = Duration::from_millis(150);
    let server = start(
        MockConfig::default()
            .with_bucket("docs")
            .with_task_timeline(TaskTimeline::new(delay, delay)),
    );
    let before = Instant::now();
    let task_id = new_task(&server);
    let seen = std::cell::RefCell::new(Vec::new());
    assert!(wait_until(WAIT, || {
        let status = status_of(&server, &task_id);
        let mut seen = seen.borrow_mut();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        status == "COMPLETED"
    }));
    let seen = seen.into_inner();
    // The task was created after `before`, so both delays have passed since.
    assert!(before.elapsed() >= delay * 2, "{:?}", before.elapsed());
    let order = ["PENDING", "PROCESSING", "COMPLETED"];
    let positions: Vec<usize> = seen
        .iter()
        .map(|s| order.iter().position(|o| o == s).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}

#[rstest]
#[case::completed_with_errors(TaskStatus::CompletedWithErrors, "COMPLETED_WITH_ERRORS", true)]
#[case::failed(TaskStatus::Failed, "FAILED", true)]
#[case::canceled(TaskStatus::Canceled, "CANCELED", false)]
#[case::docs_done(TaskStatus::Done, "DONE", false)]
#[case::docs_skipped(TaskStatus::Skipped, "SKIPPED", false)]
#[case::docs_cancelled(TaskStatus::Cancelled, "CANCELLED", false)]
#[case::unknown_string(TaskStatus::Other("DOWNLOADING".into()), "DOWNLOADING", false)]
fn scripted_outcomes_apply_to_the_next_task_only(
    #[case] outcome: TaskStatus,
    #[case] shown: &str,
    #[case] has_error: bool,
) {
    let server = start(MockConfig::default().with_bucket("docs"));
    server.push_task_outcome(outcome);
    let scripted = new_task(&server);
    let normal = new_task(&server);
    let (_, body) = task(&server, &scripted);
    assert_eq!(body["status"], json!(shown));
    assert_eq!(body["error"].is_string(), has_error, "{body}");
    assert_eq!(status_of(&server, &normal), "COMPLETED");
}

#[test]
fn an_existing_task_can_be_given_an_outcome_and_forgotten() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let task_id = new_task(&server);
    assert!(server.set_task_outcome(&task_id, TaskStatus::Failed));
    assert_eq!(status_of(&server, &task_id), "FAILED");
    assert!(!server.set_task_outcome("task_999", TaskStatus::Failed));

    let tasks = server.tasks();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].task_id, task_id);
    assert_eq!(tasks[0].task_type, "api_buckets_objects_create");
    assert_eq!(tasks[0].object_ids, ["obj_1"]);
    assert_eq!(tasks[0].status, TaskStatus::Failed);

    assert!(server.forget_task(&task_id));
    assert!(!server.forget_task(&task_id));
    let (status, body) = task(&server, &task_id);
    assert_eq!(status, 404);
    assert_eq!(
        body["error"]["details"],
        json!({"resource": "task", "id": task_id})
    );
    assert!(server.tasks().is_empty());
}

#[test]
fn the_timeline_can_change_at_run_time() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let early = new_task(&server);
    server.set_task_timeline(
        TaskTimeline::new(Duration::ZERO, Duration::from_secs(600)).ending(TaskStatus::Failed),
    );
    let late = new_task(&server);
    assert_eq!(status_of(&server, &early), "COMPLETED");
    assert_eq!(status_of(&server, &late), "PROCESSING");
}

#[test]
fn objects_creates_get_tasks_only_with_auto_process() {
    let server = start(MockConfig::default().with_bucket("docs"));
    let object = json!({"blobs": [{"property": "p", "type": "text", "data": "x"}]});
    let (_, plain) = status_and_json(post(&server, "/v1/buckets/docs/objects", &object));
    assert!(plain.get("task_id").is_none());
    let (_, processed) = status_and_json(post(
        &server,
        "/v1/buckets/docs/objects?auto_process=true",
        &object,
    ));
    let task_id = processed["task_id"].as_str().unwrap();
    assert_eq!(status_of(&server, task_id), "COMPLETED");
    assert_eq!(server.tasks().len(), 1);
}

#[test]
fn binary_flags_set_the_task_timeline() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mixpeek-mock"))
        .args([
            "--bucket",
            "docs",
            "--task-pending",
            "10m",
            "--task-outcome",
            "failed",
        ])
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
    let created: Value = client()
        .post(format!("{url}/v1/buckets/docs/objects/create"))
        .json(&docs_body())
        .send()
        .and_then(reqwest::blocking::Response::json)
        .unwrap();
    let task: reqwest::Result<Value> = client()
        .get(format!(
            "{url}/v1/tasks/{}",
            created["task_id"].as_str().unwrap()
        ))
        .send()
        .and_then(reqwest::blocking::Response::json);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(task.unwrap()["status"], json!("PENDING"));
}
