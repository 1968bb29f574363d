//! `after_delivery = "delete" | "move"`: files go only after the delivery is
//! recorded, a crash in between redoes the disposal and never the delivery
//! (SPEC §2, promise 4), and a move never overwrites.

use crate::harness::{Env, FAILPOINT};

/// A group with a sidecar and a ready marker, which go with it.
fn lay_out(env: &Env) {
    env.write("g/content.txt", b"the content");
    env.write("g/_metadata.json", br#"{"k": "v"}"#);
    env.write("g/_READY", b"");
}

#[test]
fn delete_removes_the_group_with_its_sidecar_and_marker() {
    let env = Env::new();
    lay_out(&env);
    env.config("", "ready_marker = \"_READY\"\nafter_delivery = \"delete\"");
    env.run(&["once"]).assert_code(0);
    assert_eq!(env.server.objects().len(), 1);
    for rel in ["g/content.txt", "g/_metadata.json", "g/_READY"] {
        assert!(!env.drop_dir().join(rel).exists(), "{rel} was not deleted");
    }
}

#[test]
fn move_keeps_the_relative_path_and_never_overwrites() {
    let env = Env::new();
    let done = env.root().join("done");
    std::fs::create_dir_all(done.join("g")).unwrap();
    std::fs::write(done.join("g/content.txt"), b"an earlier delivery").unwrap();
    lay_out(&env);
    env.config(
        "",
        &format!(
            "ready_marker = \"_READY\"\nafter_delivery = \"move\"\nmove_to = \"{}\"",
            done.display()
        ),
    );
    env.run(&["once"]).assert_code(0);
    assert_eq!(
        std::fs::read(done.join("g/content.txt")).unwrap(),
        b"an earlier delivery"
    );
    assert_eq!(
        std::fs::read(done.join("g/content-1.txt")).unwrap(),
        b"the content"
    );
    assert!(done.join("g/_metadata.json").exists());
    assert!(!env.drop_dir().join("g/content.txt").exists());
}

#[test]
fn a_crash_between_record_and_disposal_redoes_the_disposal_only() {
    let env = Env::new();
    lay_out(&env);
    env.config("", "ready_marker = \"_READY\"\nafter_delivery = \"delete\"");
    let crashed = env.run_with(&["once"], |cmd| {
        cmd.env(FAILPOINT, "after-record");
    });
    assert_ne!(
        crashed.code, 0,
        "the failpoint did not fire:\n{}",
        crashed.stderr
    );
    assert_eq!(env.server.objects().len(), 1);
    assert!(
        env.drop_dir().join("g/content.txt").exists(),
        "disposed before the crash"
    );

    let requests = env.server.request_count();
    env.run(&["once"]).assert_code(0);
    assert_eq!(
        env.server.request_count(),
        requests,
        "the delivery was sent again"
    );
    assert!(
        !env.drop_dir().join("g/content.txt").exists(),
        "not disposed after restart"
    );
    assert!(!env.drop_dir().join("g/_READY").exists());
}

#[test]
fn a_dead_letter_keeps_its_files() {
    let env = Env::new();
    env.write("g/content.txt", b"refused");
    env.config("", "after_delivery = \"delete\"");
    env.server.push_fault(mixpeek_mock::Fault::status(422));
    env.run(&["once"]).assert_code(1);
    assert!(env.drop_dir().join("g/content.txt").exists());
}
