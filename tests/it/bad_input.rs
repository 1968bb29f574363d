//! Bad input gets a clear error, never a hang or a crash (SPEC §2, promise 6).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use mixpeek_mock::RecordedObject;

use crate::harness::Env;

/// The one object the emulator accepted.
#[track_caller]
fn only_object(env: &Env) -> RecordedObject {
    let mut objects = env.server.objects();
    assert_eq!(objects.len(), 1);
    objects.remove(0)
}

#[test]
fn a_fifo_in_the_tree_is_skipped_without_hanging() {
    let env = Env::new();
    env.write("a/real.txt", b"real");
    std::fs::create_dir_all(env.drop_dir().join("b")).unwrap();
    nix::unistd::mkfifo(
        &env.drop_dir().join("b/pipe.txt"),
        nix::sys::stat::Mode::S_IRWXU,
    )
    .unwrap();
    env.config("", "");
    let run = env.run(&["once"]);
    run.assert_code(0);
    assert!(run.stderr.contains("pipe.txt"), "{}", run.stderr);
    assert!(run.stderr.contains("fifo"), "{}", run.stderr);
    assert_eq!(only_object(&env).body["key_prefix"], "/documents/a");
}

#[test]
fn an_unreadable_file_is_reported_and_skipped() {
    let env = Env::new();
    env.write("a/ok.txt", b"fine");
    let secret = env.write("b/secret.txt", b"no access");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    env.config("", "");
    // Root reads anything: run the daemon as an unprivileged user then.
    let as_root = nix::unistd::geteuid().is_root();
    if as_root {
        for path in [
            env.root().to_path_buf(),
            env.drop_dir(),
            env.drop_dir().join("a"),
            env.drop_dir().join("b"),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        for path in [
            env.root().join("config.toml"),
            env.root().join("api_key"),
            env.drop_dir().join("a/ok.txt"),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let run = env.run_with(&["once"], |cmd| {
        if as_root {
            cmd.uid(65534).gid(65534);
        }
    });
    run.assert_code(0);
    assert!(
        run.stderr.contains("secret.txt") && run.stderr.contains("ermission denied"),
        "{}",
        run.stderr
    );
    assert_eq!(only_object(&env).body["key_prefix"], "/documents/a");
}

#[test]
fn a_non_utf8_name_is_reported_and_the_rest_delivered() {
    let env = Env::new();
    env.write("a/good.txt", b"good");
    let bad = env
        .drop_dir()
        .join("a")
        .join(std::ffi::OsStr::from_bytes(b"bad-\xff.txt"));
    std::fs::write(&bad, b"bad name").unwrap();
    env.config("", "");
    let run = env.run(&["once"]);
    run.assert_code(0);
    assert!(run.stderr.contains("not valid UTF-8"), "{}", run.stderr);
    let object = only_object(&env);
    let blobs = object.body["blobs"].as_array().unwrap();
    assert_eq!(blobs.len(), 1);
    assert_eq!(blobs[0]["key_prefix"], "/good.txt");
}

#[test]
fn a_symlink_outside_the_root_is_never_followed() {
    let env = Env::new();
    let outside = env.root().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("private.txt"), b"must not leave the box").unwrap();
    env.write("a/inside.txt", b"inside");
    std::os::unix::fs::symlink(&outside, env.drop_dir().join("escape")).unwrap();
    std::os::unix::fs::symlink(
        outside.join("private.txt"),
        env.drop_dir().join("a/link.txt"),
    )
    .unwrap();
    // A loop must not hang the scan either.
    std::os::unix::fs::symlink(env.drop_dir(), env.drop_dir().join("a/loop")).unwrap();
    for follow in ["false", "true"] {
        let state = env.state_dir();
        let _ = std::fs::remove_dir_all(&state);
        env.config("", &format!("follow_symlinks = {follow}"));
        let run = env.run(&["once"]);
        run.assert_code(0);
        for object in env.server.objects() {
            let text = object.body.to_string();
            assert!(
                !text.contains("private"),
                "follow_symlinks = {follow}: {text}"
            );
        }
    }
    assert!(
        env.server
            .objects()
            .iter()
            .all(|o| o.body["key_prefix"] == "/documents/a")
    );
}

#[test]
fn a_symlink_inside_the_root_is_followed_only_when_asked() {
    for (follow, expected) in [("false", 0), ("true", 1)] {
        let env = Env::new();
        env.write("target/real.txt", b"inside the watch");
        std::fs::create_dir_all(env.drop_dir().join("links")).unwrap();
        std::os::unix::fs::symlink(
            env.drop_dir().join("target/real.txt"),
            env.drop_dir().join("links/alias.txt"),
        )
        .unwrap();
        env.config("", &format!("follow_symlinks = {follow}"));
        env.run(&["once"]).assert_code(0);
        let linked = env
            .server
            .objects()
            .iter()
            .filter(|o| o.body["key_prefix"] == "/documents/links")
            .count();
        assert_eq!(linked, expected, "follow_symlinks = {follow}");
    }
}
