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
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mixpeek_mock::{MockConfig, RecordedObject};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::harness::{BUCKET, Env, KEY, TIMEOUT, bin, create_requests, wait_until};

const PDF: &[u8] = include_bytes!("../../assets/demo/content.pdf");

/// The second bucket of the reload test.
const ARCHIVE: &str = "archive";

/// Long enough that a missing object is not merely late on a loaded machine,
/// short enough to keep "nothing else arrives" checks cheap.
const QUIET: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// The daemon as a child process
// ---------------------------------------------------------------------------

/// `mixpeek-ingest --config <root>/config.toml run`, with its stderr collected
/// as it comes so tests can wait for log lines. Dropping it kills the process
/// (and prints its log when the test is failing).
struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Daemon {
    fn start(env: &Env) -> Daemon {
        let mut child = bin()
            .arg("--config")
            .arg(env.root().join("config.toml"))
            .arg("run")
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let err_pipe = child.stderr.take().unwrap();
        readers.push(drain(err_pipe, Some(Arc::clone(&stderr))));
        // stdout is drained too, so a chatty daemon never blocks on a full pipe.
        let out_pipe = child.stdout.take().unwrap();
        readers.push(drain(out_pipe, None));
        Daemon {
            child,
            stderr,
            readers,
        }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    /// Everything the daemon logged so far.
    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Length of the log so far: a mark for [`Daemon::wait_log`].
    fn log_mark(&self) -> usize {
        self.stderr.lock().unwrap().len()
    }

    /// Waits until a line logged after `mark` satisfies `matches`.
    fn wait_log(&self, mark: usize, timeout: Duration, matches: impl Fn(&str) -> bool) -> bool {
        self.wait_for(timeout, || {
            let log = self.stderr.lock().unwrap();
            log.get(mark..).is_some_and(|new| new.lines().any(&matches))
        })
    }

    /// Waits until `condition` holds; gives up early when the daemon died, as
    /// nothing it was expected to do can happen any more.
    fn wait_for(&self, timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
        let mut met = false;
        wait_until(timeout, || {
            met = condition();
            met || !self.alive()
        });
        met
    }

    /// Not exited. Works on `&self`: an exited child stays a zombie until
    /// it is waited for.
    fn alive(&self) -> bool {
        proc_state(self.pid()).is_some_and(|state| state != 'Z' && state != 'X')
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to exit and returns its exit code; a hang or a
    /// death by signal fails the test with the log.
    fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within {timeout:?}; stderr:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        status.code().unwrap_or_else(|| {
            panic!(
                "the daemon died by a signal ({status}); stderr:\n{}",
                self.log()
            )
        })
    }

    /// SIGTERM, then asserts a clean exit within `timeout`.
    #[track_caller]
    fn stop(&mut self, timeout: Duration) {
        self.signal(Signal::SIGTERM);
        let code = self.wait_exit(timeout);
        assert_eq!(code, 0, "exit code after SIGTERM; stderr:\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        if std::thread::panicking() {
            eprintln!("--- daemon stderr ---\n{}", self.log());
        }
    }
}

/// Reads `pipe` to its end, appending to `sink` when given.
fn drain(mut pipe: impl Read + Send + 'static, sink: Option<Arc<Mutex<String>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if let Some(sink) = &sink {
                        sink.lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            }
        }
    })
}

/// The scheduler state of `pid` from `/proc/<pid>/stat` (`T` when stopped).
fn proc_state(pid: Pid) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the state follows
    // the last `)`.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// One `[[watch]]` table for `<root>/<dir>`. `extra` is appended as is.
fn watch_block(
    env: &Env,
    dir: &str,
    bucket: &str,
    key_prefix: &str,
    settle: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[[watch]]
path = "{root}/{dir}"
bucket = "{bucket}"
key_prefix = "{key_prefix}"
settle = "{settle}"
rescan_interval = "1h"
{extra}
"#,
        root = env.root().display(),
    )
}

/// The usual single watch on `drop/` into [`BUCKET`] under `/documents`.
fn drop_watch(env: &Env, settle: &str, extra: &str) -> String {
    watch_block(env, "drop", BUCKET, "/documents", settle, extra)
}

/// Writes `<root>/config.toml` as the harness does (emulator, key file, fast
/// retries, debug log), with `top` before the first table, `api_extra` in
/// `[api]` and the given `[[watch]]` tables.
fn write_config(env: &Env, top: &str, api_extra: &str, watches: &[String]) -> PathBuf {
    let key_file = env.root().join("api_key");
    std::fs::write(&key_file, KEY).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        r#"{top}

[api]
base_url = "{url}"
api_key_file = "{root}/api_key"
timeout = "10s"
{api_extra}

[retry]
initial = "100ms"
max = "2s"

[state]
dir = "{root}/state"

[log]
level = "debug"
{watches}"#,
        url = env.server.base_url(),
        root = env.root().display(),
        watches = watches.concat(),
    );
    let path = env.root().join("config.toml");
    std::fs::write(&path, text).unwrap();
    // Not world-readable, so the log holds no warning about it.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

// ---------------------------------------------------------------------------
// Reading what the emulator recorded
// ---------------------------------------------------------------------------

fn key_prefix(object: &RecordedObject) -> &str {
    object.body["key_prefix"].as_str().unwrap()
}

fn blobs(object: &RecordedObject) -> &[Value] {
    object.body["blobs"].as_array().unwrap()
}

fn blob_key(blob: &Value) -> &str {
    blob["key_prefix"].as_str().unwrap()
}

/// The bytes a blob carries: a text file's text, or inline base64.
fn blob_bytes(blob: &Value) -> Vec<u8> {
    match &blob["data"] {
        Value::String(text) => text.clone().into_bytes(),
        Value::Object(inline) if inline.contains_key("base64") => {
            STANDARD.decode(inline["base64"].as_str().unwrap()).unwrap()
        }
        other => panic!("blob data is neither text nor inline base64: {other}"),
    }
}

/// Accepted objects per object `key_prefix`.
fn count_by_prefix(objects: &[RecordedObject]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for object in objects {
        *counts.entry(key_prefix(object).to_owned()).or_insert(0) += 1;
    }
    counts
}

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
    write_config(&env, "", "", &[drop_watch(&env, "1s", "")]);
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
    assert!(
        !wait_until(QUIET, || env.server.objects().len() > 1),
        "delivered more than once: {:?}",
        count_by_prefix(&env.server.objects())
    );
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
    write_config(
        &env,
        "",
        r#"dialect = "objects-create""#,
        &[drop_watch(
            &env,
            "2s",
            "delivery = \"url\"\nurl_template = \"https://cdn.example.com/drop{key_prefix}/{file_name}\"",
        )],
    );

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
    assert!(
        !wait_until(QUIET, || env.server.objects().len() > 1),
        "delivered more than once"
    );
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
    write_config(&env, "", "", &[drop_watch(&env, "200ms", "")]);
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
    assert!(
        !wait_until(QUIET, || env.server.objects().len() > 1),
        "delivered more than once: {:?}",
        count_by_prefix(&env.server.objects())
    );
    let objects = env.server.objects();
    let keys: Vec<&str> = blobs(&objects[0]).iter().map(blob_key).collect();
    assert_eq!(keys, ["/name.pdf"]);
    assert_eq!(blob_bytes(&blobs(&objects[0])[0]), PDF);
    for request in create_requests(&env.server) {
        assert!(
            !request.body.to_string().contains(".part"),
            "a request named the temporary file: {}",
            request.body
        );
    }
}

#[test]
fn a_ready_marker_holds_the_group_until_it_appears() {
    let env = Env::new();
    write_config(
        &env,
        "",
        "",
        &[drop_watch(&env, "200ms", r#"ready_marker = "_READY""#)],
    );
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
    assert!(
        !wait_until(QUIET, || env.server.objects().len() > 1),
        "delivered more than once: {:?}",
        count_by_prefix(&env.server.objects())
    );
    let objects = env.server.objects();
    assert_eq!(key_prefix(&objects[0]), "/documents/g");
    let keys: BTreeSet<&str> = blobs(&objects[0]).iter().map(blob_key).collect();
    assert_eq!(keys, BTreeSet::from(["/one.txt", "/two.txt"]));
    for request in create_requests(&env.server) {
        assert!(
            !request.body.to_string().contains("_READY"),
            "the marker was uploaded: {}",
            request.body
        );
    }
}

#[test]
fn files_dropped_while_stopped_are_delivered_at_start_and_nothing_is_resent() {
    let env = Env::new();
    write_config(&env, "", "", &[drop_watch(&env, "200ms", "")]);
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
    write_config(
        &env,
        "",
        r#"dialect = "objects""#,
        &[drop_watch(&env, "200ms", "")],
    );
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
        wait_until(TIMEOUT, || proc_state(daemon.pid()) == Some('T')),
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
    write_config(
        &env,
        "",
        "",
        &[drop_watch(&env, "200ms", r#"poll_interval = "200ms""#)],
    );
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
    write_config(
        &env,
        r#"shutdown_grace = "5s""#,
        "dialect = \"objects-create\"\nmax_in_flight = 2",
        &[drop_watch(&env, "200ms", "")],
    );
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
    let first = drop_watch(&env, "200ms", "");
    let second = |extra: &str| watch_block(&env, "drop2", ARCHIVE, "/second", "200ms", extra);
    let api = r#"dialect = "objects-create""#;
    write_config(&env, "", api, std::slice::from_ref(&first));
    let mut daemon = Daemon::start(&env);
    env.write("before/a.txt", b"before the reload");
    assert!(
        daemon.wait_for(TIMEOUT, || has_prefix(&env, "/documents/before")),
        "not delivered; stderr:\n{}",
        daemon.log()
    );

    // A second watch, added without a restart.
    write_config(&env, "", api, &[first.clone(), second("")]);
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
    let broken = first.replace(r#"settle = "200ms""#, r#"settle = "soon""#);
    assert_ne!(broken, first);
    write_config(&env, "", api, &[broken, second("")]);
    let mark = daemon.log_mark();
    daemon.signal(Signal::SIGHUP);
    assert!(
        daemon.wait_log(mark, TIMEOUT, |l| l.contains("soon")),
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
    write_config(&env, "", api, &[second("metadata = { generation = 3 }")]);
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

/// The last `n` lines of `log`, for failure messages that stay readable.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
