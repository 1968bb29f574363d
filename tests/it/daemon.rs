//! `run` end to end: the live daemon against the emulator (SPEC §2, §3, §10).
//!
//! Each test starts the real binary as a long-running child ([`Daemon`]),
//! drops files into its tree while it runs, and watches the emulator and the
//! daemon's stderr. Every watch sets `rescan_interval = "1h"`, so what is
//! delivered within a test was found by the start scan, by OS events (or
//! polling), or by the rescan an event-queue overflow triggers: never by the
//! periodic rescan.
//!
//! Invariants shown: no partial or temporary file is ever sent; every settled
//! file is delivered exactly once, across stops, restarts, signals, overflows
//! and reloads; a `ready_marker` holds its group back and is never uploaded.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use mixpeek_mock::{MockConfig, RecordedObject};
use nix::sys::signal::Signal;

use crate::harness::{
    BUCKET, Config, Daemon, Env, TIMEOUT, Watch, blob_bytes, blob_key, blobs, count_by_prefix,
    create_requests, key_prefix, tail, wait_until,
};

const PDF: &[u8] = include_bytes!("../../assets/demo/content.pdf");

/// The second bucket of the reload test.
const ARCHIVE: &str = "archive";

/// Long enough that a missing object is not merely late on a loaded machine,
/// short enough to keep "nothing else arrives" checks cheap.
const QUIET: Duration = Duration::from_secs(2);

/// The usual watch on `drop/`, never rescanned periodically within a test.
fn drop_watch() -> Watch {
    Watch::documents().no_periodic_rescan()
}

// ---------------------------------------------------------------------------
// Reading what the emulator recorded
// ---------------------------------------------------------------------------

/// The objects accepted for `prefix`.
fn objects_for(env: &Env, prefix: &str) -> Vec<RecordedObject> {
    env.server
        .objects()
        .into_iter()
        .filter(|o| key_prefix(o) == prefix)
        .collect()
}

/// At least one object for `prefix` was accepted.
fn has_prefix(env: &Env, prefix: &str) -> bool {
    !objects_for(env, prefix).is_empty()
}

/// `delivered` log lines: the message token `delivered` followed by fields.
fn delivered_lines(log: &str) -> usize {
    log.lines()
        .filter(|line| {
            line.split_whitespace().any(|t| t == "delivered") && line.contains("key_prefix=")
        })
        .count()
}

/// Asserts that no second object arrives within [`QUIET`].
#[track_caller]
fn assert_no_second_object(env: &Env) {
    assert!(
        !wait_until(QUIET, || env.server.objects().len() > 1),
        "delivered more than once: {:?}",
        count_by_prefix(&env.server.objects())
    );
}

/// Asserts that no create request body holds `text`; `what` says what that
/// would mean.
#[track_caller]
fn assert_no_request_contains(env: &Env, text: &str, what: &str) {
    for request in create_requests(&env.server) {
        assert!(
            !request.body.to_string().contains(text),
            "{what}: {}",
            request.body
        );
    }
}

/// Writes `chunks` to `path` one after the other, `gap` apart, through one
/// open handle; returns when the last chunk was written.
fn write_slowly(path: &Path, chunks: &[&[u8]], gap: Duration) -> Instant {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut file = std::fs::File::create(path).unwrap();
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            // Paces the writer: each chunk is a separate change the daemon sees.
            std::thread::sleep(gap);
        }
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
    }
    let done = Instant::now();
    drop(file);
    done
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn a_file_written_slowly_is_delivered_once_with_its_final_content() {
    let env = Env::new();
    Config::new().watch(drop_watch().settle("1s")).write(&env);
    let daemon = Daemon::start(&env);

    let chunks: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("chunk {i:02} {}\n", "x".repeat(1000)).into_bytes())
        .collect();
    let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    let last_write = write_slowly(
        &env.drop_dir().join("slow/report.txt"),
        &refs,
        Duration::from_millis(300),
    );

    assert!(
        daemon.wait_for(TIMEOUT, || !env.server.objects().is_empty()),
        "not delivered; stderr:\n{}",
        daemon.log()
    );
    assert_no_second_object(&env);
    let objects = env.server.objects();
    let object = &objects[0];
    assert_eq!(key_prefix(object), "/documents/slow");
    assert_eq!(blobs(object).len(), 1);
    assert_eq!(blob_key(&blobs(object)[0]), "/report.txt");
    assert_eq!(
        blob_bytes(&blobs(object)[0]),
        chunks.concat(),
        "the blob holds the final version, all 10 chunks"
    );
    // The daemon saw the last change no earlier than it happened, and waits a
    // full settle after it.
    assert!(
        object.received_at >= last_write + Duration::from_secs(1),
        "sent {:?} after the last write, before settle (1s) passed",
        object.received_at.saturating_duration_since(last_write)
    );
}

#[test]
fn a_large_copy_is_sent_once_and_only_after_cp_finished() {
    let env = Env::new();
    // A longer settle: writeback may pause a 200 MiB copy for a moment, and a
    // pause longer than settle would rightly count as "complete".
    Config::new()
        .api(r#"dialect = "objects-create""#)
        .watch(drop_watch().settle("2s").with(
            "delivery = \"url\"\nurl_template = \"https://cdn.example.com/drop{key_prefix}/{file_name}\"",
        ))
        .write(&env);

    // The source lives outside the drop tree, written in 1 MiB blocks.
    let source = env.root().join("movie.mp4");
    {
        let mut file = std::fs::File::create(&source).unwrap();
        let mut block = vec![0u8; 1 << 20];
        for i in 0..200u32 {
            block.fill(u8::try_from(i % 251).unwrap());
            block[..4].copy_from_slice(&i.to_be_bytes());
            file.write_all(&block).unwrap();
        }
    }

    let daemon = Daemon::start(&env);
    std::fs::create_dir(env.drop_dir().join("big")).unwrap();
    let status = std::process::Command::new("cp")
        .arg(&source)
        .arg(env.drop_dir().join("big/movie.mp4"))
        .status()
        .unwrap();
    let copied = Instant::now();
    assert!(status.success(), "cp failed: {status}");

    // A dead letter ends the wait early: it would never become an object.
    daemon.wait_for(TIMEOUT, || {
        !env.server.objects().is_empty() || daemon.log().contains("dead letter")
    });
    assert!(
        !env.server.objects().is_empty(),
        "not delivered; stderr:\n{}",
        daemon.log()
    );
    assert_no_second_object(&env);
    for request in create_requests(&env.server) {
        assert!(
            request.received_at >= copied,
            "a create request arrived while cp was still copying: {}",
            request.body
        );
    }
    let objects = env.server.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(key_prefix(&objects[0]), "/documents/big");
    let sent = blobs(&objects[0]);
    assert_eq!(sent.len(), 1);
    assert_eq!(blob_key(&sent[0]), "/movie.mp4");
    assert_eq!(sent[0]["type"], "video");
    assert_eq!(
        sent[0]["data"]["filename"],
        "https://cdn.example.com/drop/documents/big/movie.mp4"
    );
    let size = std::fs::metadata(env.drop_dir().join("big/movie.mp4"))
        .unwrap()
        .len();
    assert_eq!(size, 200 << 20, "the copy is complete");
}

#[test]
fn a_part_file_renamed_into_place_is_delivered_under_its_final_name() {
    let env = Env::new();
    Config::new().watch(drop_watch()).write(&env);
    let daemon = Daemon::start(&env);

    // Gaps longer than settle: only the name keeps the daemon off the .part file.
    let part = env.drop_dir().join("r/name.part");
    let third = PDF.len() / 3;
    write_slowly(
        &part,
        &[&PDF[..third], &PDF[third..2 * third], &PDF[2 * third..]],
        Duration::from_millis(400),
    );
    std::fs::rename(&part, env.drop_dir().join("r/name.pdf")).unwrap();

    assert!(
        daemon.wait_for(TIMEOUT, || has_prefix(&env, "/documents/r")),
        "not delivered; stderr:\n{}",
        daemon.log()
    );
    assert_no_second_object(&env);
    let objects = env.server.objects();
    let keys: Vec<&str> = blobs(&objects[0]).iter().map(blob_key).collect();
    assert_eq!(keys, ["/name.pdf"]);
    assert_eq!(blob_bytes(&blobs(&objects[0])[0]), PDF);
    assert_no_request_contains(&env, ".part", "a request named the temporary file");
}

#[test]
fn a_ready_marker_holds_the_group_until_it_appears() {
    let env = Env::new();
    Config::new()
        .watch(drop_watch().with(r#"ready_marker = "_READY""#))
        .write(&env);
    let daemon = Daemon::start(&env);

    env.write("g/one.txt", b"first");
    env.write("g/two.txt", b"second");
    // Well past settle: both files are settled, and still nothing may go.
    let anything_sent = || !create_requests(&env.server).is_empty();
    assert!(
        !wait_until(Duration::from_millis(1500), anything_sent),
        "sent before its ready marker: {:?}",
        create_requests(&env.server)
    );

    env.write("g/_READY", b"");
    let marked = Instant::now();
    assert!(
        daemon.wait_for(TIMEOUT, || !env.server.objects().is_empty()),
        "not delivered after the marker; stderr:\n{}",
        daemon.log()
    );
    let objects = env.server.objects();
    let latency = objects[0].received_at.saturating_duration_since(marked);
    assert!(
        latency < Duration::from_secs(5),
        "delivered {latency:?} after the marker appeared"
    );
    assert_no_second_object(&env);
    let objects = env.server.objects();
    assert_eq!(key_prefix(&objects[0]), "/documents/g");
    let keys: BTreeSet<&str> = blobs(&objects[0]).iter().map(blob_key).collect();
    assert_eq!(keys, BTreeSet::from(["/one.txt", "/two.txt"]));
    assert_no_request_contains(&env, "_READY", "the marker was uploaded");
}

#[test]
fn files_dropped_while_stopped_are_delivered_at_start_and_nothing_is_resent() {
    let env = Env::new();
    Config::new().watch(drop_watch()).write(&env);
    let mut daemon = Daemon::start(&env);
    env.write("a/one.txt", b"delivered in the first run");
    assert!(
        daemon.wait_for(TIMEOUT, || has_prefix(&env, "/documents/a")),
        "not delivered; stderr:\n{}",
        daemon.log()
    );
    daemon.stop(TIMEOUT);
    assert_eq!(delivered_lines(&daemon.log()), 1, "one `delivered` line");
    drop(daemon);

    env.write("b/two.txt", b"dropped while stopped");
    env.write("c/three.txt", b"also dropped while stopped");
    let mut daemon = Daemon::start(&env);
    assert!(
        daemon.wait_for(TIMEOUT, || count_by_prefix(&env.server.objects()).len()
            == 3),
        "not picked up at start: {:?}; stderr:\n{}",
        count_by_prefix(&env.server.objects()),
        daemon.log()
    );
    assert!(
        !wait_until(QUIET, || env.server.objects().len() > 3),
        "something was sent again: {:?}",
        count_by_prefix(&env.server.objects())
    );
    let expected: BTreeMap<String, usize> = ["/documents/a", "/documents/b", "/documents/c"]
        .into_iter()
        .map(|p| (p.to_owned(), 1))
        .collect();
    assert_eq!(count_by_prefix(&env.server.objects()), expected);
    daemon.stop(TIMEOUT);
    assert_eq!(
        delivered_lines(&daemon.log()),
        2,
        "the second run delivered b and c only"
    );
}

#[test]
fn an_event_queue_overflow_loses_nothing() {
    const DIRS: usize = 100;
    // Each file raises at least one event (IN_CREATE) in an already-watched
    // directory, so this many overflow the queue. Capped at 20,000 files to
    // keep the test bounded when a machine raises max_queued_events.
    let max_queued: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(16_384);
    let files = (max_queued + 1000).min(20_000);

    let env = Env::new();
    Config::new()
        .api(r#"dialect = "objects""#)
        .watch(drop_watch())
        .write(&env);
    // The directories exist (and are watched) before the daemon is paused:
    // files created in them then raise events that pile up in the queue.
    for d in 0..DIRS {
        std::fs::create_dir(env.drop_dir().join(format!("d{d:03}"))).unwrap();
    }
    let mut daemon = Daemon::start(&env);
    env.write("warm/up.txt", b"warm-up");
    assert!(
        daemon.wait_for(TIMEOUT, || has_prefix(&env, "/documents/warm")),
        "warm-up not delivered; stderr:\n{}",
        daemon.log()
    );

    daemon.signal(Signal::SIGSTOP);
    assert!(
        wait_until(TIMEOUT, || daemon.is_stopped()),
        "the daemon did not stop"
    );
    let mut expected = BTreeSet::new();
    for i in 0..files {
        let dir = format!("d{:03}", i % DIRS);
        let name = format!("f{i:05}.txt");
        std::fs::write(env.drop_dir().join(&dir).join(&name), name.as_bytes()).unwrap();
        expected.insert((format!("/documents/{dir}"), format!("/{name}")));
    }
    daemon.signal(Signal::SIGCONT);

    // Every file in exactly one accepted object, across all objects.
    let delivered = || {
        let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
        for object in env.server.objects() {
            for blob in blobs(&object) {
                *seen
                    .entry((key_prefix(&object).to_owned(), blob_key(blob).to_owned()))
                    .or_insert(0) += 1;
            }
        }
        seen.remove(&("/documents/warm".to_owned(), "/up.txt".to_owned()));
        seen
    };
    // Generous for a loaded 2-core machine, but a minute without progress
    // means the rest was lost: no need to sit out the whole timeout.
    let mut progress = (0, Instant::now());
    daemon.wait_for(Duration::from_secs(300), || {
        let n = delivered().len();
        if n > progress.0 {
            progress = (n, Instant::now());
        }
        n >= files || progress.1.elapsed() > Duration::from_secs(60)
    });
    let seen = delivered();
    assert!(
        seen.len() >= files,
        "{} of {files} files delivered after the overflow; stderr tail:\n{}",
        seen.len(),
        tail(&daemon.log(), 40)
    );
    assert!(
        !wait_until(QUIET, || delivered().values().sum::<usize>() > files),
        "files were sent more than once after the overflow"
    );
    let seen = delivered();
    let keys: BTreeSet<_> = seen.keys().cloned().collect();
    assert_eq!(keys, expected, "exactly the files created");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert!(daemon.is_running());
}

#[test]
fn polling_mode_delivers_a_dropped_file() {
    let env = Env::new();
    Config::new()
        .watch(drop_watch().with(r#"poll_interval = "200ms""#))
        .write(&env);
    let daemon = Daemon::start(&env);
    env.write("polled/file.txt", b"found by polling");
    assert!(
        daemon.wait_for(TIMEOUT, || has_prefix(&env, "/documents/polled")),
        "not delivered; stderr:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(
        log.lines().any(|l| l.to_lowercase().contains("polling")),
        "no log line says the watch is polled; stderr:\n{log}"
    );
    let objects = env.server.objects();
    assert_eq!(objects.len(), 1);
    assert_eq!(blob_bytes(&blobs(&objects[0])[0]), b"found by polling");
}

#[test]
fn sigterm_mid_burst_exits_cleanly_and_the_rest_goes_after_restart() {
    const GROUPS: usize = 200;
    let env = Env::new();
    // One request per object, so the burst takes a while.
    Config::new()
        .top(r#"shutdown_grace = "5s""#)
        .api("dialect = \"objects-create\"\nmax_in_flight = 2")
        .watch(drop_watch())
        .write(&env);
    let body = "y".repeat(64 * 1024);
    for g in 0..GROUPS {
        env.write(&format!("g{g:03}/doc.txt"), format!("{g}{body}").as_bytes());
    }

    let mut daemon = Daemon::start(&env);
    assert!(
        daemon.wait_for(TIMEOUT, || env.server.objects().len() >= 3),
        "the burst did not start; stderr:\n{}",
        daemon.log()
    );
    daemon.signal(Signal::SIGTERM);
    let code = daemon.wait_exit(Duration::from_secs(20));
    assert_eq!(
        code,
        0,
        "exit code after SIGTERM; stderr:\n{}",
        daemon.log()
    );
    let first_run = env.server.objects().len();
    // Sending the whole burst takes seconds; a daemon that stopped taking
    // work at SIGTERM sent only part of it.
    assert!(
        first_run < GROUPS,
        "all {GROUPS} objects were sent after SIGTERM; stderr:\n{}",
        tail(&daemon.log(), 20)
    );
    let first_log = daemon.log();
    drop(daemon);
    assert_eq!(
        delivered_lines(&first_log),
        first_run,
        "one `delivered` line per accepted object"
    );

    let mut daemon = Daemon::start(&env);
    assert!(
        daemon.wait_for(TIMEOUT, || count_by_prefix(&env.server.objects()).len()
            == GROUPS),
        "{} of {GROUPS} groups delivered after the restart; stderr:\n{}",
        count_by_prefix(&env.server.objects()).len(),
        tail(&daemon.log(), 40)
    );
    assert!(
        !wait_until(QUIET, || env.server.objects().len() > GROUPS),
        "something was sent twice"
    );
    let twice: Vec<_> = count_by_prefix(&env.server.objects())
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    daemon.stop(TIMEOUT);
    assert_eq!(
        delivered_lines(&daemon.log()),
        GROUPS - first_run,
        "the second run delivered only what the first had not"
    );
}

#[test]
fn sighup_reloads_watches_and_keeps_the_old_config_when_the_new_one_is_invalid() {
    let env = Env::with(
        MockConfig::default()
            .with_bucket(BUCKET)
            .with_bucket(ARCHIVE),
    );
    std::fs::create_dir(env.root().join("drop2")).unwrap();
    let first = drop_watch();
    let second = Watch::new("drop2", ARCHIVE, "/second").no_periodic_rescan();
    let config = Config::new().api(r#"dialect = "objects-create""#);
    config.clone().watch(first.clone()).write(&env);
    let mut daemon = Daemon::start(&env);
    env.write("before/a.txt", b"before the reload");
    assert!(
        daemon.wait_for(TIMEOUT, || has_prefix(&env, "/documents/before")),
        "not delivered; stderr:\n{}",
        daemon.log()
    );

    // A second watch, added without a restart.
    config
        .clone()
        .watch(first.clone())
        .watch(second.clone())
        .write(&env);
    daemon.signal(Signal::SIGHUP);
    std::fs::create_dir_all(env.root().join("drop2/added")).unwrap();
    std::fs::write(env.root().join("drop2/added/b.txt"), b"in the new watch").unwrap();
    assert!(
        daemon.wait_for(TIMEOUT, || has_prefix(&env, "/second/added")),
        "the added watch delivered nothing; stderr:\n{}",
        daemon.log()
    );
    assert_eq!(objects_for(&env, "/second/added")[0].bucket, ARCHIVE);
    assert!(daemon.is_running());

    // An invalid config is logged and changes nothing.
    let broken = first.clone().settle("soon");
    assert_ne!(broken, first);
    config
        .clone()
        .watch(broken)
        .watch(second.clone())
        .write(&env);
    let mark = daemon.log_mark();
    daemon.signal(Signal::SIGHUP);
    assert!(
        daemon.wait_log_since(mark, TIMEOUT, |l| l.contains("soon")),
        "the config error was not logged; stderr:\n{}",
        daemon.log()
    );
    assert!(daemon.is_running(), "an invalid config stopped the daemon");
    env.write("after/c.txt", b"after the broken reload");
    std::fs::create_dir_all(env.root().join("drop2/still")).unwrap();
    std::fs::write(env.root().join("drop2/still/d.txt"), b"still watched").unwrap();
    assert!(
        daemon.wait_for(TIMEOUT, || has_prefix(&env, "/documents/after"))
            && daemon.wait_for(TIMEOUT, || has_prefix(&env, "/second/still")),
        "the old config is not in force: {:?}; stderr:\n{}",
        count_by_prefix(&env.server.objects()),
        daemon.log()
    );

    // A removed watch stops taking files. The reload is seen taking effect
    // through a metadata value only the new config sets.
    config
        .watch(second.with("metadata = { generation = 3 }"))
        .write(&env);
    daemon.signal(Signal::SIGHUP);
    let mut probe = 0;
    let reloaded = daemon.wait_for(TIMEOUT, || {
        probe += 1;
        let dir = env.root().join(format!("drop2/probe{probe}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.txt"), format!("probe {probe}")).unwrap();
        wait_until(Duration::from_secs(1), || {
            env.server
                .objects()
                .iter()
                .any(|o| o.body["metadata"]["generation"] == 3)
        })
    });
    assert!(
        reloaded,
        "the reload never took effect; stderr:\n{}",
        daemon.log()
    );
    env.write("removed/e.txt", b"no longer watched");
    assert!(
        !wait_until(QUIET, || has_prefix(&env, "/documents/removed")),
        "a removed watch still delivered"
    );
    daemon.stop(TIMEOUT);
    let twice: Vec<_> = count_by_prefix(&env.server.objects())
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
}
