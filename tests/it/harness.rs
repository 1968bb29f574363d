//! Test harness: temp trees, the emulator, configs and the binary.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mixpeek_mock::{MockConfig, MockServer};

pub const KEY: &str = "sk-test-0123456789abcdef";
pub const BUCKET: &str = "contracts";

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

    /// Writes `rel` under the drop folder, creating parents.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let path = self.drop_dir().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Writes `config.toml` with an `[api]` pointing at the emulator, fast
    /// retries and settle, and `extra` appended to the single `[[watch]]`.
    pub fn config(&self, api_extra: &str, watch_extra: &str) -> PathBuf {
        std::fs::write(self.root().join("api_key"), KEY).unwrap();
        std::fs::set_permissions(
            self.root().join("api_key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let text = format!(
            r#"
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

[[watch]]
path = "{root}/drop"
bucket = "{BUCKET}"
key_prefix = "/documents"
settle = "200ms"
{watch_extra}
"#,
            url = self.server.base_url(),
            root = self.root().display(),
        );
        let path = self.root().join("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `mixpeek-ingest --config <config> <args>` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, |_| {})
    }

    pub fn run_with(&self, args: &[&str], tweak: impl FnOnce(&mut Command)) -> Run {
        let mut cmd = bin();
        cmd.arg("--config")
            .arg(self.root().join("config.toml"))
            .args(args);
        tweak(&mut cmd);
        Run::wait(cmd.spawn().unwrap(), TIMEOUT)
    }
}

pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mixpeek-ingest"));
    cmd.env_remove("MIXPEEK_API_KEY")
        .env_remove("MIXPEEK_INGEST_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

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

/// The create requests the emulator received (any status), in order.
pub fn create_requests(server: &MockServer) -> Vec<mixpeek_mock::RecordedRequest> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.contains("/objects"))
        .collect()
}
