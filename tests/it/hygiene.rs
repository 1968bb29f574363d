//! File hygiene from the outside (SPEC §10): the state directory and its
//! files stay private even under a permissive umask, and a configuration or
//! key file others can read is warned about at `check`, `once` and `run`.
//!
//! Already covered elsewhere: the store's unit test
//! `open_creates_private_dir_and_files` (directory 0700, database and WAL
//! 0600 under the test's own umask) and the key-file mode table of
//! `api::tests::key_file_modes`.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use rstest::rstest;

use crate::harness::{Daemon, Env, FAILPOINT, Run, TIMEOUT, wait_until};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `sh -c 'umask 000; touch <probe>; exec mixpeek-ingest --config … <args>'`,
/// with the binary's environment as [`crate::harness::bin`] sets it. The
/// probe file shows the umask really was 000 for the process.
fn under_umask_000(env: &Env, probe: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"umask 000 && touch "$0" && exec "$@""#)
        .arg(probe)
        .arg(env!("CARGO_BIN_EXE_mixpeek-ingest"))
        .arg("--config")
        .arg(env.config_path())
        .args(args)
        .env_remove("MIXPEEK_API_KEY")
        .env_remove("MIXPEEK_INGEST_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove(FAILPOINT)
        .stdin(Stdio::null());
    cmd
}

#[test]
fn the_state_directory_and_its_files_are_private_under_umask_000() {
    let env = Env::new();
    env.write("a/one.txt", b"hello");
    env.config("", "");
    let probe = env.root().join("probe");
    let log = env.root().join("run.log");
    let mut cmd = under_umask_000(&env, &probe, &["run"]);
    cmd.stdout(Stdio::null())
        .stderr(File::create(&log).unwrap());
    let mut child = cmd.spawn().unwrap();
    let state = env.state_dir();
    // Once an object is delivered, the store has been written: the WAL and
    // its index are live while the daemon runs.
    let live = wait_until(TIMEOUT, || {
        env.server.objects().len() == 1
            && state.join("state.db-wal").exists()
            && state.join("state.db-shm").exists()
    });
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let checked = live.then(|| {
        [
            ("state dir", mode(&state)),
            ("state.db", mode(&state.join("state.db"))),
            ("state.db-wal", mode(&state.join("state.db-wal"))),
            ("state.db-shm", mode(&state.join("state.db-shm"))),
            ("lock", mode(&state.join("lock"))),
        ]
    });
    let _ = child.kill();
    let _ = child.wait();
    let checked = checked.unwrap_or_else(|| panic!("the daemon did not deliver:\n{logged}"));

    assert_eq!(mode(&probe), 0o666, "the umask was not 000");
    assert_eq!(
        checked,
        [
            ("state dir", 0o700),
            ("state.db", 0o600),
            ("state.db-wal", 0o600),
            ("state.db-shm", 0o600),
            ("lock", 0o600),
        ]
    );
}

#[test]
fn a_nested_state_directory_is_created_private_by_once_under_umask_000() {
    let env = Env::new();
    env.write("a/one.txt", b"hello");
    env.config("", "");
    // Every missing parent of state.dir is created too, and as private.
    let nested = env.root().join("var/lib/ingest");
    let config = std::fs::read_to_string(env.config_path()).unwrap();
    let old = format!("dir = \"{}\"", env.state_dir().display());
    assert!(config.contains(&old), "{config}");
    std::fs::write(
        env.config_path(),
        config.replace(&old, &format!("dir = \"{}\"", nested.display())),
    )
    .unwrap();
    let probe = env.root().join("probe");
    let mut cmd = under_umask_000(&env, &probe, &["once"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let run = Run::wait(cmd.spawn().unwrap(), TIMEOUT);
    run.assert_code(0);
    assert_eq!(mode(&probe), 0o666, "the umask was not 000");
    for dir in ["var", "var/lib", "var/lib/ingest"] {
        assert_eq!(mode(&env.root().join(dir)), 0o700, "{dir}");
    }
    assert_eq!(mode(&nested.join("state.db")), 0o600);
    assert_eq!(mode(&nested.join("lock")), 0o600);
}

/// What `check` says about the modes of the config and key files. The
/// config may be group-readable (`chmod 640` for a service group, the fix
/// the warning itself names); the key file is for the daemon's user only.
#[rstest]
#[case::both_private(0o600, 0o600, false, false)]
#[case::config_for_a_group(0o640, 0o600, false, false)]
#[case::config_for_everyone(0o644, 0o600, true, false)]
#[case::key_for_a_group(0o600, 0o640, false, true)]
#[case::key_for_everyone(0o600, 0o604, false, true)]
#[case::key_read_only(0o600, 0o400, false, false)]
fn check_warns_about_readable_config_and_key_files(
    #[case] config_mode: u32,
    #[case] key_mode: u32,
    #[case] config_warned: bool,
    #[case] key_warned: bool,
) {
    let env = Env::new();
    env.config("", "");
    chmod(&env.config_path(), config_mode);
    chmod(&env.root().join("api_key"), key_mode);
    let run = env.run(&["check"]);
    run.assert_code(0);
    assert_eq!(
        config_warning(&run.stderr, config_mode),
        config_warned,
        "{}",
        run.stderr
    );
    assert_eq!(
        key_warning(&run.stdout, key_mode),
        key_warned,
        "{}",
        run.stdout
    );
}

#[test]
fn once_and_run_warn_about_readable_config_and_key_files_at_start() {
    let env = Env::new();
    env.write("a/one.txt", b"hello");
    env.config("", "");
    chmod(&env.config_path(), 0o644);
    chmod(&env.root().join("api_key"), 0o644);

    let run = env.run(&["once"]);
    run.assert_code(0);
    assert!(config_warning(&run.stderr, 0o644), "{}", run.stderr);
    assert!(key_warning(&run.stderr, 0o644), "{}", run.stderr);

    let mut daemon = Daemon::start(&env);
    assert!(
        daemon.wait_log(TIMEOUT, |l| key_warning(l, 0o644)),
        "{}",
        daemon.log()
    );
    assert!(config_warning(&daemon.log(), 0o644), "{}", daemon.log());
    daemon.stop(TIMEOUT);
}

/// The warning about the config file, with its mode, in `text`.
fn config_warning(text: &str, mode: u32) -> bool {
    text.lines().any(|l| {
        l.contains("the configuration file")
            && l.contains(&format!("too widely readable (mode {mode:04o})"))
            && l.contains("chmod 640")
    })
}

/// The warning about the key file, with its mode, in `text`.
fn key_warning(text: &str, mode: u32) -> bool {
    text.lines().any(|l| {
        l.contains("the API key file")
            && l.contains(&format!("too widely readable (mode {mode:04o})"))
            && l.contains("chmod 600")
    })
}
