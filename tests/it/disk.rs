//! A full state disk (SPEC §2, promise 6): a clear error, no corruption, no
//! crash, and work resumes on its own once space returns.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use crate::harness::{Daemon, Env, TIMEOUT};

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
    let mut daemon = Daemon::start(&env);
    assert!(env.server.wait_for_objects(1, TIMEOUT), "{}", daemon.log());

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
        daemon.wait_log(TIMEOUT, |l| l.contains("state disk full or read-only")),
        "no clear error:\n{}",
        daemon.log()
    );
    assert!(daemon.is_running(), "the daemon died:\n{}", daemon.log());
    assert_eq!(
        env.server.objects().len(),
        1,
        "sent without a durable record"
    );

    std::fs::remove_file(&filler).unwrap();
    assert!(
        env.server.wait_for_objects(2, TIMEOUT),
        "did not resume once space returned:\n{}",
        daemon.log()
    );
    daemon.stop(TIMEOUT);

    let summary = env.status();
    assert_eq!(summary["counts"]["delivered"], 2, "{summary}");
    assert_eq!(summary["counts"]["pending"], 0, "{summary}");
}
