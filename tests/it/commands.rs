//! `check`, `status`, `retry` and `demo` from the outside.

use crate::harness::{Daemon, Env, TIMEOUT, run_bin, wait_until};

#[test]
fn check_reports_every_mistake_with_its_line() {
    let env = Env::new();
    let path = env.root().join("config.toml");
    std::fs::write(
        &path,
        r#"[api]
dialect = "newest"

[[watch]]
path = "/srv/drop"
bucket = "b"
settle = "two seconds"
colour = "blue"
"#,
    )
    .unwrap();
    let run = env.run(&["check"]);
    run.assert_code(78);
    let problems: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("config.toml:"))
        .collect();
    assert_eq!(problems.len(), 3, "{}", run.stderr);
    assert!(
        problems[0].contains(":2:") && problems[0].contains("dialect"),
        "{}",
        problems[0]
    );
    assert!(
        problems[1].contains(":7:") && problems[1].contains("settle"),
        "{}",
        problems[1]
    );
    assert!(
        problems[2].contains(":8:") && problems[2].contains("colour"),
        "{}",
        problems[2]
    );
}

#[test]
fn the_example_config_passes_check() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let run = run_bin(&["--config", example, "check"], |_| {});
    run.assert_code(0);
}

#[test]
fn a_missing_config_is_a_configuration_error_naming_the_file() {
    let run = run_bin(&["--config", "/nonexistent/mixpeek.toml", "once"], |_| {});
    run.assert_code(78);
    assert!(
        run.stderr.contains("/nonexistent/mixpeek.toml"),
        "{}",
        run.stderr
    );
}

#[test]
fn demo_once_delivers_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_bin(&["demo", "--once"], |cmd| {
        cmd.current_dir(dir.path());
    });
    run.assert_code(0);
    assert!(
        run.stdout.contains("\"key_prefix\": \"/contract-2024\""),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("\"property\": \"thumbnail\""),
        "{}",
        run.stdout
    );
    assert!(
        dir.path()
            .join("mixpeek-demo/drop/contract-2024/content.pdf")
            .is_file()
    );
}

#[test]
fn retry_puts_a_dead_letter_back_and_it_is_delivered() {
    let env = Env::new();
    env.write("a/file.txt", b"hello");
    env.config("", "");
    env.server.push_fault(mixpeek_mock::Fault::status(422));
    env.run(&["once"]).assert_code(1);
    assert!(env.server.objects().is_empty());
    env.run(&["retry", "--all"]).assert_code(0);
    env.run(&["once"]).assert_code(0);
    assert_eq!(env.server.objects().len(), 1);
}

#[test]
fn a_second_instance_on_the_same_state_is_refused() {
    let env = Env::new();
    env.config("", "");
    let daemon = Daemon::start(&env);
    let pid = daemon.id().to_string();
    let lock = env.state_dir().join("lock");
    let holds_lock = wait_until(TIMEOUT, || {
        std::fs::read_to_string(&lock).is_ok_and(|held| held.trim() == pid)
    });
    let second = env.run(&["once"]);
    assert!(holds_lock, "the daemon never took the lock");
    second.assert_code(1);
    assert!(
        second.stderr.contains("another mixpeek-ingest") && second.stderr.contains(&pid),
        "{}",
        second.stderr
    );
}

#[test]
fn demo_refuses_a_folder_it_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), "precious").unwrap();
    let run = run_bin(&["demo", "--once", "--dir"], |cmd| {
        cmd.arg(dir.path());
    });
    run.assert_code(2);
    assert!(run.stderr.contains("not empty"), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("config.toml")).unwrap(),
        "precious"
    );
}

#[test]
fn a_foreign_state_file_is_refused_and_left_untouched() {
    let env = Env::new();
    env.write("a/file.txt", b"hello");
    env.config("", "");
    std::fs::create_dir_all(env.state_dir()).unwrap();
    let db = env.state_dir().join("state.db");
    std::fs::write(&db, b"this is not a database, and it is someone's").unwrap();
    let run = env.run(&["once"]);
    run.assert_code(74);
    assert!(
        run.stderr.contains(&db.display().to_string()),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        b"this is not a database, and it is someone's"
    );
    assert_eq!(env.server.request_count(), 0);
}

/// A local dead letter (a property clash) retried while the daemon runs:
/// the daemon forgets the files and rebuilds the group from the disk.
#[test]
fn retry_of_a_local_dead_letter_reaches_a_running_daemon() {
    let env = Env::new();
    env.write("clash/a.txt", b"text");
    env.write("clash/a.json", br#"{"json": true}"#);
    env.config("", r#"poll_interval = "200ms""#);
    let daemon = Daemon::start(&env);
    let dead = daemon.wait_log(TIMEOUT, |l| l.contains("dead letter"));

    // The operator renames one file and retries.
    std::fs::rename(
        env.drop_dir().join("clash/a.json"),
        env.drop_dir().join("clash/b.json"),
    )
    .unwrap();
    let retried = env.run(&["retry", "--all"]);
    let sent = |name: &str| {
        env.server.objects().iter().any(|o| {
            o.body["blobs"]
                .as_array()
                .is_some_and(|b| b.iter().any(|b| b["key_prefix"] == format!("/{name}")))
        })
    };
    let both = wait_until(TIMEOUT, || sent("a.txt") && sent("b.json"));
    assert!(dead, "no dead letter for the clash:\n{}", daemon.log());
    retried.assert_code(0);
    assert!(both, "the retried group was not rebuilt:\n{}", daemon.log());
}
