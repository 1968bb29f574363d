//! The systemd notification protocol (SPEC §10): READY=1 once the start scan
//! is queued, STATUS= while running, WATCHDOG=1 while the pipeline moves (and
//! not while it is stuck), RELOADING=1 on SIGHUP, STOPPING=1 on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::{Config, Daemon, Env, TIMEOUT, Watch, bin};
use crate::metrics::stall_next_request;

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

/// WATCHDOG=1 only while the pipeline moves (SPEC §10): with an API answer
/// held past `metrics.stuck_after`, the pings stop (STATUS= says STUCK) and
/// systemd would restart the service; once the answer comes, they resume.
#[test]
fn the_watchdog_is_fed_only_while_the_pipeline_moves() {
    let env = Env::new();
    Config::new()
        .top("[metrics]\nstuck_after = \"1s\"")
        .watch(Watch::documents().no_periodic_rescan())
        .write(&env);
    let path = env.root().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut daemon = Daemon::start_with(&env, &["run"], |cmd| {
        // A ping every 100 ms.
        cmd.env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "200000");
    });

    let healthy = collect(&socket, TIMEOUT, |s| {
        s.iter().any(|l| l == "READY=1") && s.iter().filter(|l| *l == "WATCHDOG=1").count() >= 3
    });
    assert!(
        healthy.iter().filter(|l| *l == "WATCHDOG=1").count() >= 3,
        "{healthy:?}"
    );

    stall_next_request(&env, &daemon);
    env.write("contract.txt", b"signed");
    let is_stuck = |l: &String| l.starts_with("STATUS=") && l.contains("STUCK");
    let is_moving = |l: &String| l.starts_with("STATUS=") && !l.contains("STUCK");
    let until_stuck = collect(&socket, TIMEOUT, |s| s.iter().any(is_stuck));
    assert!(
        until_stuck.iter().any(is_stuck),
        "never stuck: {until_stuck:?}"
    );
    // Everything from the stall's report until the status moves again.
    let stuck = collect(&socket, TIMEOUT, |s| s.iter().any(is_moving));
    let during: Vec<&String> = stuck.iter().take_while(|l| !is_moving(l)).collect();
    assert!(
        during.iter().filter(|l| is_stuck(l)).count() >= 3,
        "the stall lasted several checks: {stuck:?}"
    );
    assert!(
        !during.iter().any(|l| *l == "WATCHDOG=1"),
        "no ping while stuck: {during:?}"
    );
    // The held answer came, the retry delivered: the pings are back.
    let resumed = collect(&socket, TIMEOUT, |s| s.iter().any(|l| l == "WATCHDOG=1"));
    assert!(
        stuck.iter().any(|l| l == "WATCHDOG=1") || resumed.iter().any(|l| l == "WATCHDOG=1"),
        "pings resumed: {resumed:?}"
    );
    assert!(env.server.wait_for_objects(1, TIMEOUT));
    daemon.stop(TIMEOUT);
}
