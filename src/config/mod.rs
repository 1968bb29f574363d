//! Configuration: the typed, validated form of `config.toml` (SPEC §8).
//!
//! `parse.rs` turns TOML text into these types, collecting every problem
//! (unknown key, wrong type, bad duration, overlapping watches …) with its line
//! and column before failing. Everything downstream takes these types and never
//! sees raw TOML, so a value that reaches the pipeline is already valid.

mod parse;

pub use parse::{ConfigError, ConfigProblem, load, parse_str};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mixpeek-ingest/config.toml";
/// Environment variable that names the configuration file.
pub const CONFIG_ENV: &str = "MIXPEEK_INGEST_CONFIG";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub api: ApiConfig,
    pub retry: RetryConfig,
    pub state: StateConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    pub shutdown_grace: Duration,
    pub watches: Vec<Watch>,
}

/// A warning when `path` grants any of the permission bits in `mask` (e.g.
/// `0o004`, readable by every user), naming `what` the file is and the fix.
pub fn permission_warning(
    path: &std::path::Path,
    what: &str,
    mask: u32,
    fix: &str,
) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & mask != 0).then(|| {
        format!(
            "{what} {} is too widely readable (mode {:04o}); restrict it with {fix}",
            path.display(),
            mode & 0o7777
        )
    })
}

impl Config {
    /// Settings this build accepts but does not act on yet, one sentence
    /// each, so an operator is told instead of silently surprised. Every
    /// setting is applied at the moment; the list stays for the next one.
    pub fn not_yet_applied(&self) -> Vec<String> {
        Vec::new()
    }

    /// How long work may be due with no submission finishing before the
    /// daemon calls itself stuck (`/healthz`, the watchdog):
    /// `metrics.stuck_after`, or the default for `api.timeout` and
    /// `api.requests_per_minute` (`pipeline::health`).
    pub fn stuck_after(&self) -> Duration {
        self.metrics.stuck_after.unwrap_or_else(|| {
            crate::pipeline::health::default_stuck_after(
                self.api.timeout,
                self.api.requests_per_minute,
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialectSetting {
    Auto,
    ObjectsCreate,
    Objects,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// Without a trailing slash.
    pub base_url: String,
    pub namespace: Option<String>,
    pub api_key_file: Option<PathBuf>,
    /// Name of the environment variable holding the key (default `MIXPEEK_API_KEY`).
    pub api_key_env: String,
    pub dialect: DialectSetting,
    pub auto_process: bool,
    pub timeout: Duration,
    /// 0 = no client-side limit.
    pub requests_per_minute: u32,
    pub max_in_flight: usize,
    /// 0 = no cap.
    pub max_bytes_per_second: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    pub initial: Duration,
    pub max: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served (port 0: any
    /// free port, logged at start).
    pub listen: Option<std::net::SocketAddr>,
    /// Overrides the stuck threshold; see [`Config::stuck_after`].
    pub stuck_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter directive such as `info` or `mixpeek_ingest=debug`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Directory,
    Stem,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterDelivery {
    Keep,
    Delete,
    Move,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    Auto,
    Inline,
    Upload,
    Url,
}

/// One `[[watch]]`: a directory tree tied to one bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    /// Absolute path of the watch root.
    pub path: PathBuf,
    pub bucket: String,
    /// Normalised: starts with `/`, no trailing `/` (except the root `/`), no `..`.
    pub key_prefix: String,
    pub group_by: GroupBy,
    pub settle: Duration,
    pub ready_marker: Option<String>,
    pub max_group_wait: Duration,
    /// Globs relative to the watch root; a file is taken only if one matches.
    pub include: Vec<String>,
    /// Globs added to the built-in ignore list (SPEC §3).
    pub exclude: Vec<String>,
    pub follow_symlinks: bool,
    /// Zero: use OS events.
    pub poll_interval: Duration,
    pub rescan_interval: Duration,
    pub skip_duplicates: bool,
    pub after_delivery: AfterDelivery,
    pub move_to: Option<PathBuf>,
    pub delivery: DeliveryMode,
    pub inline_max_bytes: u64,
    /// Template for `url` delivery, with `{key_prefix}` (the object's) and `{file_name}`.
    pub url_template: Option<String>,
    /// Blob type for files whose MIME type the type table does not cover.
    pub default_type: Option<String>,
    /// Sidecar metadata file name (default `_metadata.json`).
    pub metadata_file: String,
    /// Static object metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Overrides of the MIME → blob type table, by MIME pattern (`image/*`, `text/csv`).
    pub types: BTreeMap<String, String>,
    pub rules: Vec<Rule>,
}

/// A `[[watch.rule]]`: per-glob overrides for the files it matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Glob relative to the watch root.
    pub matches: String,
    pub property: Option<String>,
    pub blob_type: Option<String>,
    pub mime_type: Option<String>,
    pub delivery: Option<DeliveryMode>,
}
