//! Test harness: temp trees, the emulator, configs and the binary.
//!
//! - [`Env`]: a temp dir (drop tree, state dir, config) with its own emulator.
//! - [`Config`] and [`Watch`]: the one writer of `config.toml`; [`Env::config`]
//!   is its one-watch shorthand.
//! - [`Run`]: a finished run of the binary; [`Daemon`]: a running one, with
//!   its stderr collected as it comes. Every child is bounded by a timeout, so
//!   a hang fails its test instead of stalling the suite.
//! - Readers of what the emulator recorded (`key_prefix`, `blobs`, …).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mixpeek_mock::{MockConfig, MockServer, RecordedObject};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

pub const KEY: &str = "sk-test-0123456789abcdef";
pub const BUCKET: &str = "contracts";

/// The variable that makes a debug build abort at a named point.
pub const FAILPOINT: &str = "MIXPEEK_INGEST_FAILPOINT";

/// Generous: a loaded 2-core CI machine runs many of these at once.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A temp dir holding a drop tree (`drop/`), a state dir and a config.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub server: MockServer,
}

impl Env {
    pub fn new() -> Env {
        Env::with(MockConfig::default().with_bucket(BUCKET))
    }

    pub fn with(config: MockConfig) -> Env {
        let server = MockServer::start(MockConfig {
            api_key: Some(KEY.to_owned()),
            ..config
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("drop")).unwrap();
        Env { dir, server }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn drop_dir(&self) -> PathBuf {
        self.dir.path().join("drop")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Where [`Config::write`] puts the config and every command reads it.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Writes `rel` under the drop folder, creating parents.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let path = self.drop_dir().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Writes the usual config: `api_extra` in `[api]` and one
    /// [`Watch::documents`] with `watch_extra` appended.
    pub fn config(&self, api_extra: &str, watch_extra: &str) -> PathBuf {
        Config::new()
            .api(api_extra)
            .watch(Watch::documents().with(watch_extra))
            .write(self)
    }

    /// Runs `mixpeek-ingest --config <config> <args>` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, |_| {})
    }

    /// [`Env::run`], with `tweak` applied to the command before it starts.
    pub fn run_with(&self, args: &[&str], tweak: impl FnOnce(&mut Command)) -> Run {
        self.run_within(TIMEOUT, args, tweak)
    }

    /// [`Env::run_with`] for the few runs that legitimately take longer than
    /// [`TIMEOUT`] on a loaded machine (a first run over 100,000 files).
    pub fn run_within(
        &self,
        timeout: Duration,
        args: &[&str],
        tweak: impl FnOnce(&mut Command),
    ) -> Run {
        let mut cmd = bin();
        cmd.arg("--config").arg(self.config_path()).args(args);
        tweak(&mut cmd);
        Run::wait(cmd.spawn().unwrap(), timeout)
    }

    /// `status --json`, parsed; the command must succeed.
    #[track_caller]
    pub fn status(&self) -> Value {
        let run = self.run(&["status", "--json"]);
        run.assert_code(0);
        serde_json::from_str(&run.stdout).unwrap()
    }
}

/// The binary, with nothing of the caller's environment that would change
/// what it reads or does (config, key, failpoint), and piped output.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mixpeek-ingest"));
    cmd.env_remove("MIXPEEK_API_KEY")
        .env_remove("MIXPEEK_INGEST_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove(FAILPOINT)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs the binary with `args` (no `--config` of an [`Env`]) to completion,
/// with `tweak` applied to the command before it starts.
pub fn run_bin(args: &[&str], tweak: impl FnOnce(&mut Command)) -> Run {
    let mut cmd = bin();
    cmd.args(args);
    tweak(&mut cmd);
    Run::wait(cmd.spawn().unwrap(), TIMEOUT)
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// A `config.toml` against the emulator: its key file, fast retries, a debug
/// log, and what a test adds (top-level keys, `[api]` lines, watches).
#[derive(Debug, Clone, Default)]
pub struct Config {
    top: Vec<String>,
    api: Vec<String>,
    watches: Vec<Watch>,
}

impl Config {
    /// No extra keys and no watch yet.
    pub fn new() -> Config {
        Config::default()
    }

    /// Top-level `key = value` lines (`shutdown_grace = "5s"`), written
    /// before the first table.
    pub fn top(mut self, lines: &str) -> Config {
        self.top.push(lines.to_owned());
        self
    }

    /// Lines appended to `[api]` as they are (`dialect = "objects"`).
    pub fn api(mut self, lines: &str) -> Config {
        self.api.push(lines.to_owned());
        self
    }

    /// One more `[[watch]]` table.
    pub fn watch(mut self, watch: Watch) -> Config {
        self.watches.push(watch);
        self
    }

    /// Writes the API key file and `<root>/config.toml`, both mode 0600 (so
    /// the log holds no warning about a readable config); returns the path.
    pub fn write(&self, env: &Env) -> PathBuf {
        let key_file = env.root().join("api_key");
        std::fs::write(&key_file, KEY).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let root = env.root().display();
        let mut text = format!(
            r#"{top}

[api]
base_url = "{url}"
api_key_file = "{root}/api_key"
timeout = "10s"
{api}

[retry]
initial = "100ms"
max = "2s"

[state]
dir = "{root}/state"

[log]
level = "debug"
"#,
            top = self.top.join("\n"),
            url = env.server.base_url(),
            api = self.api.join("\n"),
        );
        for watch in &self.watches {
            text.push_str(&watch.render(env.root()));
        }
        let path = env.config_path();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }
}

/// One `[[watch]]` table on a folder under the test's root.
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    dir: String,
    bucket: String,
    key_prefix: String,
    settle: String,
    lines: Vec<String>,
}

impl Watch {
    /// The usual watch: `drop/` into [`BUCKET`] under `/documents`, settling
    /// for 200 ms.
    pub fn documents() -> Watch {
        Watch::new("drop", BUCKET, "/documents")
    }

    /// `<root>/<dir>` into `bucket` under `key_prefix`, settling for 200 ms.
    pub fn new(dir: &str, bucket: &str, key_prefix: &str) -> Watch {
        Watch {
            dir: dir.to_owned(),
            bucket: bucket.to_owned(),
            key_prefix: key_prefix.to_owned(),
            settle: "200ms".to_owned(),
            lines: Vec::new(),
        }
    }

    /// The `settle` value, written as is (an invalid one makes a broken config).
    pub fn settle(mut self, settle: &str) -> Watch {
        settle.clone_into(&mut self.settle);
        self
    }

    /// `rescan_interval = "1h"`: within a test, whatever is delivered was
    /// found by the start scan, by OS events (or polling), or by the rescan an
    /// event-queue overflow triggers, never by the periodic rescan.
    pub fn no_periodic_rescan(self) -> Watch {
        self.with(r#"rescan_interval = "1h""#)
    }

    /// Lines appended to the table as they are (`ready_marker = "_READY"`).
    pub fn with(mut self, lines: &str) -> Watch {
        self.lines.push(lines.to_owned());
        self
    }

    fn render(&self, root: &Path) -> String {
        format!(
            r#"
[[watch]]
path = "{root}/{dir}"
bucket = "{bucket}"
key_prefix = "{key_prefix}"
settle = "{settle}"
{lines}
"#,
            root = root.display(),
            dir = self.dir,
            bucket = self.bucket,
            key_prefix = self.key_prefix,
            settle = self.settle,
            lines = self.lines.join("\n"),
        )
    }
}

// ---------------------------------------------------------------------------
// The binary run to completion
// ---------------------------------------------------------------------------

/// A finished run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Waits for `child`, killing it after `timeout` so a hang fails the test
    /// instead of stalling the suite.
    pub fn wait(mut child: Child, timeout: Duration) -> Run {
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            stdout.read_to_string(&mut s).unwrap();
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            stderr.read_to_string(&mut s).unwrap();
            s
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                let stderr = err.join().unwrap();
                panic!("mixpeek-ingest did not finish within {timeout:?}; stderr:\n{stderr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            code: status.code().unwrap_or(-1),
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        }
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "exit code {} (expected {code})\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// The value of `name=` in the `once:` summary line.
    #[track_caller]
    pub fn counter(&self, name: &str) -> u64 {
        let line = self
            .stderr
            .lines()
            .find(|l| l.starts_with("once: files_seen="))
            .unwrap_or_else(|| panic!("no summary line in stderr:\n{}", self.stderr));
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no counter {name} in {line}"))
            .parse()
            .unwrap()
    }
}

/// Output of a command as a `Run` (for commands run without the helper).
impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

// ---------------------------------------------------------------------------
// The binary kept running
// ---------------------------------------------------------------------------

/// `mixpeek-ingest --config <root>/config.toml run` (or another command) as a
/// child process, with its stderr collected as it comes so tests can wait for
/// log lines. Dropping it kills the process (and prints the end of its log
/// when the test is failing).
pub struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Daemon {
    /// `run` on the env's config.
    pub fn start(env: &Env) -> Daemon {
        Daemon::start_with(env, &["run"], |_| {})
    }

    /// `<args>` on the env's config, with `tweak` applied to the command
    /// before it starts (a failpoint, say).
    pub fn start_with(env: &Env, args: &[&str], tweak: impl FnOnce(&mut Command)) -> Daemon {
        let mut cmd = bin();
        cmd.arg("--config").arg(env.config_path()).args(args);
        tweak(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            drain(child.stderr.take().unwrap(), Some(Arc::clone(&stderr))),
            // Drained too, so a chatty process never blocks on a full pipe.
            drain(child.stdout.take().unwrap(), None),
        ];
        Daemon {
            child,
            stderr,
            readers,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Length of the log so far: a mark for [`Daemon::wait_log_since`].
    pub fn log_mark(&self) -> usize {
        self.stderr.lock().unwrap().len()
    }

    /// Waits until a logged line satisfies `matches`.
    pub fn wait_log(&self, timeout: Duration, matches: impl Fn(&str) -> bool) -> bool {
        self.wait_log_since(0, timeout, matches)
    }

    /// Waits until a line logged after `mark` satisfies `matches`.
    pub fn wait_log_since(
        &self,
        mark: usize,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> bool {
        self.wait_for(timeout, || {
            let log = self.stderr.lock().unwrap();
            log.get(mark..).is_some_and(|new| new.lines().any(&matches))
        })
    }

    /// Waits until `condition` holds; gives up early when the process
    /// exited, as nothing it was expected to do can happen any more.
    pub fn wait_for(&self, timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
        let mut met = false;
        wait_until(timeout, || {
            met = condition();
            met || !self.alive()
        });
        met
    }

    /// Not exited. Works on `&self` (so a condition may read the log): an
    /// exited child stays a zombie until it is waited for.
    fn alive(&self) -> bool {
        self.sched_state()
            .is_some_and(|state| state != 'Z' && state != 'X')
    }

    /// Stopped by a signal (SIGSTOP).
    pub fn is_stopped(&self) -> bool {
        self.sched_state() == Some('T')
    }

    /// The scheduler state from `/proc/<pid>/stat` (`T` when stopped).
    fn sched_state(&self) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // The command name is in parentheses and may hold spaces: the state
        // follows the last `)`.
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    /// Not exited yet (reaps the process when it has).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to end, however it ends; a hang fails the test.
    pub fn wait_status(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit within {timeout:?}; stderr:\n{}",
                tail(&self.log(), 40)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit and returns its exit code; a hang or a
    /// death by signal fails the test with the log.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let status = self.wait_status(timeout);
        status.code().unwrap_or_else(|| {
            panic!(
                "the process died by a signal ({status}); stderr:\n{}",
                tail(&self.log(), 40)
            )
        })
    }

    /// SIGTERM, then asserts a clean exit within `timeout`.
    #[track_caller]
    pub fn stop(&mut self, timeout: Duration) {
        self.signal(Signal::SIGTERM);
        let code = self.wait_exit(timeout);
        assert_eq!(
            code,
            0,
            "exit code after SIGTERM; stderr:\n{}",
            tail(&self.log(), 40)
        );
    }

    /// SIGKILL, and waits until the process is gone (so its state-directory
    /// lock is released before the next start). It must still be running.
    #[track_caller]
    pub fn kill(&mut self) {
        assert!(
            self.is_running(),
            "the daemon exited before it was killed; stderr:\n{}",
            tail(&self.log(), 40)
        );
        self.signal(Signal::SIGKILL);
        let status = self.wait_status(TIMEOUT);
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32), "{status}");
    }

    /// CPU time the process used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // The command name is in parentheses and may hold spaces; utime and
        // stime are fields 14 and 15, the 12th and 13th after the `)`.
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
        Duration::from_millis((fields[0] + fields[1]) * 10)
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
            eprintln!("--- daemon stderr (tail) ---\n{}", tail(&self.log(), 80));
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

/// The last `n` lines of `log`, for failure messages that stay readable.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `condition` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// What the emulator recorded
// ---------------------------------------------------------------------------

/// The create requests the emulator received (any status), in order.
pub fn create_requests(server: &MockServer) -> Vec<mixpeek_mock::RecordedRequest> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.contains("/objects"))
        .collect()
}

/// An accepted object's own `key_prefix`.
pub fn key_prefix(object: &RecordedObject) -> &str {
    object.body["key_prefix"].as_str().unwrap()
}

pub fn blobs(object: &RecordedObject) -> &[Value] {
    object.body["blobs"].as_array().unwrap()
}

/// A blob's `key_prefix`: its file's path in the group.
pub fn blob_key(blob: &Value) -> &str {
    blob["key_prefix"].as_str().unwrap()
}

/// The bytes a blob carries: a text file's text, or inline base64.
pub fn blob_bytes(blob: &Value) -> Vec<u8> {
    match &blob["data"] {
        Value::String(text) => text.clone().into_bytes(),
        Value::Object(inline) if inline.contains_key("base64") => {
            STANDARD.decode(inline["base64"].as_str().unwrap()).unwrap()
        }
        other => panic!("blob data is neither text nor inline base64: {other}"),
    }
}

/// Accepted objects per object `key_prefix`.
pub fn count_by_prefix(objects: &[RecordedObject]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for object in objects {
        *counts.entry(key_prefix(object).to_owned()).or_insert(0) += 1;
    }
    counts
}
