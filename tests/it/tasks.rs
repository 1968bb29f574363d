//! Task status (SPEC §7): the task a create answers with is polled until it
//! ends, its final state is recorded, failed ones are shown by `status`, and
//! a task the API forgot ends as `unknown`.

use std::time::Duration;

use mixpeek_mock::{MockConfig, TaskStatus, TaskTimeline};

use crate::harness::{BUCKET, Daemon, Env, TIMEOUT, key_prefix, tail, wait_until};

#[test]
fn tasks_are_polled_to_every_terminal_state_and_a_forgotten_one_ends_unknown() {
    // Long enough that the forgotten task cannot have ended before the test
    // forgets it: its first polls see PENDING or PROCESSING.
    let timeline = TaskTimeline::new(Duration::from_secs(2), Duration::from_secs(2));
    let env = Env::with(
        MockConfig::default()
            .with_bucket(BUCKET)
            .with_task_timeline(timeline),
    );
    let outcomes = [
        TaskStatus::Completed,
        TaskStatus::CompletedWithErrors,
        TaskStatus::Failed,
        TaskStatus::Canceled,
        TaskStatus::Done,
        TaskStatus::Skipped,
        TaskStatus::Cancelled,
        TaskStatus::Completed,
    ];
    for outcome in &outcomes {
        env.server.push_task_outcome(outcome.clone());
    }
    for g in 0..outcomes.len() {
        env.write(&format!("g{g}/note.txt"), format!("task {g}").as_bytes());
    }
    env.config("dialect = \"objects-create\"", "");

    let mut daemon = Daemon::start(&env);
    assert!(
        daemon.wait_for(TIMEOUT, || env.server.objects().len() == outcomes.len()),
        "{}",
        tail(&daemon.log(), 30)
    );
    // The API forgets one task: polling it answers 404.
    let forgotten = env
        .server
        .objects()
        .into_iter()
        .find(|o| key_prefix(o) == "/documents/g0")
        .and_then(|o| o.task_id)
        .unwrap();
    assert!(env.server.forget_task(&forgotten));

    let done = wait_until(TIMEOUT, || {
        let tasks = &env.status()["tasks"];
        tasks["polling"] == 0 && tasks["ok"].as_u64().unwrap() > 0
    });
    assert!(
        done,
        "tasks still polled; log:\n{}",
        tail(&daemon.log(), 30)
    );
    daemon.stop(TIMEOUT);

    // What the emulator says each remaining task ended as, against what
    // the daemon recorded.
    let ended = env.server.tasks();
    assert_eq!(ended.len(), outcomes.len() - 1);
    let failed = ended
        .iter()
        .filter(|t| {
            matches!(
                t.status,
                TaskStatus::CompletedWithErrors
                    | TaskStatus::Failed
                    | TaskStatus::Canceled
                    | TaskStatus::Cancelled
            )
        })
        .count();
    let ok = ended.len() - failed;
    let status = env.status();
    let tasks = &status["tasks"];
    assert_eq!(tasks["ok"], ok as u64, "{status}");
    assert_eq!(tasks["failed"], failed as u64, "{status}");
    assert_eq!(tasks["unknown"], 1, "{status}");

    let listed: Vec<&str> = status["failed_tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), failed);
    for state in listed {
        assert!(
            ["COMPLETED_WITH_ERRORS", "FAILED", "CANCELED", "CANCELLED"].contains(&state),
            "{state}"
        );
    }
    let text = env.run(&["status"]);
    assert!(
        text.stdout.contains(&format!(
            "tasks: 0 polling, {ok} completed, {failed} failed, 1 unknown"
        )),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("failed tasks (newest first):"),
        "{}",
        text.stdout
    );
}
