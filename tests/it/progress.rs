//! Progress of `once` (SPEC §9): plain periodic lines and a summary without
//! a terminal, a bar on one.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use mixpeek_mock::Fault;
use nix::pty::{Winsize, openpty};

use crate::harness::{Env, TIMEOUT, bin, wait_until};

/// Three groups of one text file each, 15 bytes in all.
fn env_with_three_groups() -> Env {
    let env = Env::new();
    env.write("a/one.txt", b"first");
    env.write("b/two.txt", b"secnd");
    env.write("c/six.txt", b"third");
    env.config("", "");
    env
}

const SUMMARY: &str = "once: summary: 3 files hashed (15 B), 3 objects delivered, 0 skipped, \
                       0 dead, 0 pending, in ";

#[test]
fn once_without_a_terminal_prints_periodic_lines_then_a_summary() {
    let env = env_with_three_groups();
    // The first answer takes a while: `once` lasts well past a few intervals.
    env.server
        .push_fault(Fault::status(503).delay(Duration::from_millis(600)));
    let run = env.run_with(&["once"], |cmd| {
        cmd.env("MIXPEEK_INGEST_PROGRESS_EVERY", "50ms");
    });
    run.assert_code(0);

    let periodic: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("progress: "))
        .collect();
    assert!(
        !periodic.is_empty(),
        "no periodic line in a once that lasted over 600 ms:\n{}",
        run.stderr
    );
    for line in &periodic {
        assert!(is_progress_line(line), "malformed: {line}");
    }
    // Lines are taken while the 503 is awaited: at least one shows every
    // file hashed and the object the 503 holds back still pending.
    assert!(
        periodic
            .iter()
            .any(|l| l.starts_with("progress: 3 files hashed (15 B), ")
                && !l.ends_with(" 0 pending")),
        "{}",
        run.stderr
    );

    let summaries: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("once: summary: "))
        .collect();
    assert_eq!(summaries.len(), 1, "{}", run.stderr);
    assert!(summaries[0].starts_with(SUMMARY), "{}", summaries[0]);
    // The counters line that scripts and tests read is still there.
    assert_eq!(run.counter("objects_delivered"), 3);
}

#[test]
fn an_unreadable_interval_is_a_warning_and_the_default() {
    let env = env_with_three_groups();
    let run = env.run_with(&["once"], |cmd| {
        cmd.env("MIXPEEK_INGEST_PROGRESS_EVERY", "often");
    });
    run.assert_code(0);
    assert!(
        run.stderr.lines().any(|l| l.contains("WARN")
            && l.contains("MIXPEEK_INGEST_PROGRESS_EVERY")
            && l.contains("\"often\"")),
        "{}",
        run.stderr
    );
    // The default interval (10 s) is far longer than this run.
    assert!(
        run.stderr.lines().any(|l| l.starts_with(SUMMARY)),
        "{}",
        run.stderr
    );
}

#[test]
fn once_on_a_terminal_draws_a_bar_then_the_summary() {
    let env = env_with_three_groups();
    env.server
        .push_fault(Fault::status(503).delay(Duration::from_millis(600)));
    let winsize = Winsize {
        ws_row: 30,
        ws_col: 160,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&winsize), None).unwrap();
    let mut cmd = bin();
    cmd.arg("--config")
        .arg(env.config_path())
        .arg("once")
        .env("TERM", "xterm")
        .stdout(Stdio::null())
        .stderr(Stdio::from(pty.slave));
    let mut child = cmd.spawn().unwrap();
    // `cmd` holds the parent's copy of the slave: without dropping it, the
    // master would never see the end of the output.
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // Reading a pty master whose slave is closed fails with EIO: the end.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    let mut status = None;
    assert!(
        wait_until(TIMEOUT, || {
            status = child.try_wait().unwrap();
            status.is_some()
        }),
        "once on a terminal did not finish"
    );
    let screen = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert_eq!(status.unwrap().code(), Some(0), "{screen}");
    // The bar's own text (the plain line reads "files hashed (").
    assert!(
        screen.contains("files hashed, ") && screen.contains("objects delivered"),
        "no bar drawn:\n{screen:?}"
    );
    assert!(screen.contains(SUMMARY), "no summary:\n{screen:?}");
    assert!(
        !screen.contains("progress: "),
        "plain lines on a terminal:\n{screen:?}"
    );
    // Log lines are written between redraws of the bar, never glued to it:
    // no stretch of the screen between two carriage returns or newlines
    // holds both.
    let glued: Vec<&str> = screen
        .split(['\r', '\n'])
        .filter(|s| s.contains("INFO") && s.contains("files hashed"))
        .collect();
    assert!(glued.is_empty(), "log lines glued to the bar: {glued:?}");
    // (On a terminal the level is coloured: "INFO" sits between escapes.)
    assert!(screen.contains("INFO"), "no log line reached the terminal");
}

/// `progress: N files hashed (SIZE), N objects delivered, N skipped, N dead, N pending`
fn is_progress_line(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("progress: ") else {
        return false;
    };
    let Some((files, rest)) = rest.split_once(" files hashed (") else {
        return false;
    };
    let Some((_size, rest)) = rest.split_once("), ") else {
        return false;
    };
    let parts: Vec<&str> = rest.split(", ").collect();
    let suffixes = [" objects delivered", " skipped", " dead", " pending"];
    files.parse::<u64>().is_ok()
        && parts.len() == suffixes.len()
        && parts.iter().zip(suffixes).all(|(part, suffix)| {
            part.strip_suffix(suffix)
                .is_some_and(|n| n.parse::<u64>().is_ok())
        })
}
