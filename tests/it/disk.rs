//! A full state disk (SPEC §2, promise 6): a clear error, no corruption, no
//! crash, and work resumes on its own once space returns.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::harness::{Env, TIMEOUT, bin, wait_until};

/// Unmounts the test's tmpfs even when the test fails.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_state_disk_holds_work_and_resumes_when_space_returns() {
    // The state goes on a 4 MiB tmpfs, which needs root (CI runs as root).
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "skipped: mounting a small tmpfs for the state needs root; run the tests as root to include this one"
        );
        return;
    }
    let env = Env::new();
    let state = env.state_dir();
    std::fs::create_dir(&state).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs"])
        .arg(&state)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!(
            "skipped: this machine does not allow mounting a tmpfs; allow it to include this test"
        );
        return;
    }
    let _mount = Mount(state.clone());

    env.write("first/a.txt", b"before the disk filled");
    env.config("", "");
    let log_path = env.root().join("daemon.log");
    let mut cmd = bin();
    cmd.arg("--config")
        .arg(env.root().join("config.toml"))
        .arg("run")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut daemon = cmd.spawn().unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(env.server.wait_for_objects(1, TIMEOUT), "{}", log());

    // Fill the state disk to the last byte.
    let filler = state.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file
        .write_all(&block)
        .and_then(|()| file.sync_all())
        .is_ok()
    {}
    drop(file);

    env.write("second/b.txt", b"while the disk was full");
    assert!(
        wait_until(TIMEOUT, || log().contains("state disk full or read-only")),
        "no clear error:\n{}",
        log()
    );
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon died:\n{}",
        log()
    );
    assert_eq!(
        env.server.objects().len(),
        1,
        "sent without a durable record"
    );

    std::fs::remove_file(&filler).unwrap();
    assert!(
        env.server.wait_for_objects(2, TIMEOUT),
        "did not resume once space returned:\n{}",
        log()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(daemon.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(daemon.wait().unwrap().success(), "{}", log());

    let status = env.run(&["status", "--json"]);
    status.assert_code(0);
    let summary: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(summary["counts"]["delivered"], 2, "{summary}");
    assert_eq!(summary["counts"]["pending"], 0, "{summary}");
}
