//! The systemd notification protocol (SPEC §10): READY=1 once the start scan
//! is queued, WATCHDOG=1 and STATUS= while running, RELOADING=1 on SIGHUP,
//! STOPPING=1 on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::{Env, TIMEOUT, bin};

/// Collects datagrams until `done` says the sequence is complete.
fn collect(
    socket: &UnixDatagram,
    timeout: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !done(&seen) {
        if let Ok(n) = socket.recv(&mut buf) {
            seen.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_owned),
            );
        }
    }
    seen
}

#[test]
fn the_daemon_speaks_sd_notify() {
    let env = Env::new();
    env.config("", "");
    let path = env.root().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut cmd = bin();
    cmd.arg("--config")
        .arg(env.root().join("config.toml"))
        .arg("run")
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "1000000")
        .stderr(std::process::Stdio::null());
    let mut daemon = cmd.spawn().unwrap();
    let pid = Pid::from_raw(i32::try_from(daemon.id()).unwrap());

    let started = collect(&socket, TIMEOUT, |s| {
        s.iter().any(|l| l == "READY=1")
            && s.iter().filter(|l| *l == "WATCHDOG=1").count() >= 2
            && s.iter().any(|l| l.starts_with("STATUS="))
    });
    kill(pid, Signal::SIGHUP).unwrap();
    let reloaded = collect(&socket, TIMEOUT, |s| {
        s.iter().any(|l| l == "RELOADING=1") && s.iter().any(|l| l == "READY=1")
    });
    kill(pid, Signal::SIGTERM).unwrap();
    let stopped = collect(&socket, TIMEOUT, |s| s.iter().any(|l| l == "STOPPING=1"));
    let status = daemon.wait().unwrap();

    assert!(started.iter().any(|l| l == "READY=1"), "{started:?}");
    assert!(
        started.iter().filter(|l| *l == "WATCHDOG=1").count() >= 2,
        "{started:?}"
    );
    assert!(
        started
            .iter()
            .any(|l| l.starts_with("STATUS=") && l.contains("delivered")),
        "{started:?}"
    );
    assert!(reloaded.iter().any(|l| l == "RELOADING=1"), "{reloaded:?}");
    assert!(
        reloaded.iter().any(|l| l == "READY=1"),
        "ready again after the reload: {reloaded:?}"
    );
    assert!(stopped.iter().any(|l| l == "STOPPING=1"), "{stopped:?}");
    assert!(status.success(), "{status}");
}
