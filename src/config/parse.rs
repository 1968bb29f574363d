//! Configuration loading (SPEC §8): the text of `config.toml` → a validated [`Config`].
//!
//! Inputs: the file's text and its path. Output: a [`Config`] in which every value
//! is valid, or a [`ConfigError`] listing every problem found, each with its line,
//! column, dotted key (`watch[0].settle`) and a message saying what is wrong and
//! what would be valid.
//!
//! How: the TOML crate parses the text into its spanned document model
//! ([`DeTable`]), and one small function per table walks it through a [`Table`]
//! whose typed getters record a problem and return `None` for anything invalid, so
//! one bad value never stops the walk and a single run reports everything. The keys
//! each table accepts are one [`Schema`] constant, which drives both the unknown-key
//! check and the test that `config.example.toml` documents every key.
//!
//! Decisions where SPEC is silent:
//! - TOML syntax errors (duplicate keys included) are reported on their own: a
//!   document the parser had to repair would only produce misleading follow-ups.
//! - Relative paths (`watch.path`, `watch.move_to`, `state.dir`,
//!   `api.api_key_file`) are resolved against the directory holding the
//!   configuration file, so a configuration and the trees it names can move
//!   together. All paths are then normalised lexically (`.` and `..` removed);
//!   nothing is resolved or checked on disk: the daemon checks that watch paths
//!   exist when it starts.
//! - Indices in keys are 0-based: `watch[0]` is the first `[[watch]]`.
//! - Besides the overlap of watches, `move_to` and `state.dir` may not lie inside a
//!   watch (moved files and the state store would be ingested again), `delivery =
//!   "upload"` is refused with `dialect = "objects-create"` (that dialect has no
//!   upload flow), and `settle`, `rescan_interval` and `api.timeout` must be above
//!   zero.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::{Range, RangeInclusive};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeInteger, DeTable, DeValue};

use super::{
    AfterDelivery, ApiConfig, Config, DeliveryMode, DialectSetting, GroupBy, LogConfig, LogFormat,
    MetricsConfig, RetryConfig, Rule, StateConfig, Watch,
};

/// Every problem found in one configuration file, or the reason it could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{}", render_error(.path, .problems, .io))]
pub struct ConfigError {
    /// The configuration file, as it was named.
    pub path: PathBuf,
    /// In file order; empty when the file could not be read (see `io`).
    pub problems: Vec<ConfigProblem>,
    /// Set when the file could not be read at all.
    #[source]
    pub io: Option<std::io::Error>,
}

impl ConfigError {
    /// The file at `path` could not be read.
    pub fn io(path: impl Into<PathBuf>, err: std::io::Error) -> ConfigError {
        ConfigError {
            path: path.into(),
            problems: Vec::new(),
            io: Some(err),
        }
    }
}

fn render_error(path: &Path, problems: &[ConfigProblem], io: &Option<std::io::Error>) -> String {
    if let Some(err) = io {
        return format!(
            "{}: cannot read the configuration file: {err}",
            path.display()
        );
    }
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}:{p}", path.display()))
        .collect();
    lines.join("\n")
}

/// One thing wrong with the configuration, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Dotted key, such as `watch[1].settle`; empty for a TOML syntax error.
    pub key: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.line, self.column, self.key, self.message
            )
        }
    }
}

/// Reads and parses the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError::io(path, err))?;
    parse_str(&text, path)
}

/// Parses configuration text; `path` names the file in problems and anchors
/// relative paths (module docs).
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut report = Report {
        text,
        problems: Vec::new(),
    };
    let (doc, syntax_errors) = DeTable::parse_recoverable(text);
    for err in &syntax_errors {
        let span = err.span().unwrap_or(0..0);
        // Parser messages may span lines; problems are one line each.
        let message = err.message().trim().replace('\n', "; ");
        report.add(span, "", message);
    }
    let config = if syntax_errors.is_empty() {
        Some(read_config(&mut report, &doc, &config_dir(path)))
    } else {
        None
    };
    let mut problems = report.problems;
    problems.sort_by_key(|p| (p.line, p.column));
    problems.dedup();
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ConfigError {
            path: path.to_owned(),
            problems,
            io: None,
        }),
    }
}

/// The directory relative paths in the file are resolved against.
fn config_dir(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // `absolute` only consults the working directory for a relative `dir`; if even
    // that fails, relative paths stay relative and are still normalised.
    normalise_path(&std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned()))
}

// ---------------------------------------------------------------------------
// Schemas and defaults
// ---------------------------------------------------------------------------

/// The keys one table accepts. The walker reads exactly these (checked in debug
/// builds by [`Table::finish`]) and the example file must show each of them.
struct Schema {
    /// How messages name the table.
    title: &'static str,
    keys: &'static [&'static str],
}

const ROOT: Schema = Schema {
    title: "the top level",
    keys: &[
        "shutdown_grace",
        "api",
        "retry",
        "state",
        "metrics",
        "log",
        "watch",
    ],
};
const API: Schema = Schema {
    title: "[api]",
    keys: &[
        "base_url",
        "namespace",
        "api_key_file",
        "api_key_env",
        "dialect",
        "auto_process",
        "timeout",
        "requests_per_minute",
        "max_in_flight",
        "max_bytes_per_second",
    ],
};
const RETRY: Schema = Schema {
    title: "[retry]",
    keys: &["initial", "max"],
};
const STATE: Schema = Schema {
    title: "[state]",
    keys: &["dir"],
};
const METRICS: Schema = Schema {
    title: "[metrics]",
    keys: &["listen", "stuck_after"],
};
const LOG: Schema = Schema {
    title: "[log]",
    keys: &["format", "level"],
};
const WATCH: Schema = Schema {
    title: "[[watch]]",
    keys: &[
        "path",
        "bucket",
        "key_prefix",
        "group_by",
        "settle",
        "ready_marker",
        "max_group_wait",
        "include",
        "exclude",
        "follow_symlinks",
        "poll_interval",
        "rescan_interval",
        "skip_duplicates",
        "after_delivery",
        "move_to",
        "delivery",
        "inline_max_bytes",
        "url_template",
        "default_type",
        "metadata_file",
        "metadata",
        "types",
        "rule",
    ],
};
const RULE: Schema = Schema {
    title: "[[watch.rule]]",
    keys: &["match", "property", "type", "mime_type", "delivery"],
};

const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_BASE_URL: &str = "https://api.mixpeek.com";
const DEFAULT_API_KEY_ENV: &str = "MIXPEEK_API_KEY";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_IN_FLIGHT: u64 = 4;
const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(5 * 60);
const DEFAULT_STATE_DIR: &str = "/var/lib/mixpeek-ingest";
const DEFAULT_LOG_LEVEL: &str = "info";
const DEFAULT_SETTLE: Duration = Duration::from_secs(2);
const DEFAULT_MAX_GROUP_WAIT: Duration = Duration::from_secs(10 * 60);
const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(5 * 60);
const DEFAULT_INLINE_MAX_BYTES: u64 = 5 * 1024 * 1024;
const DEFAULT_METADATA_FILE: &str = "_metadata.json";
const DEFAULT_INCLUDE: &str = "**/*";

const DIALECTS: &[(&str, DialectSetting)] = &[
    ("auto", DialectSetting::Auto),
    ("objects-create", DialectSetting::ObjectsCreate),
    ("objects", DialectSetting::Objects),
];
const LOG_FORMATS: &[(&str, LogFormat)] = &[("text", LogFormat::Text), ("json", LogFormat::Json)];
const GROUP_BYS: &[(&str, GroupBy)] = &[
    ("directory", GroupBy::Directory),
    ("stem", GroupBy::Stem),
    ("file", GroupBy::File),
];
const AFTER_DELIVERIES: &[(&str, AfterDelivery)] = &[
    ("keep", AfterDelivery::Keep),
    ("delete", AfterDelivery::Delete),
    ("move", AfterDelivery::Move),
];
const DELIVERY_MODES: &[(&str, DeliveryMode)] = &[
    ("auto", DeliveryMode::Auto),
    ("inline", DeliveryMode::Inline),
    ("upload", DeliveryMode::Upload),
    ("url", DeliveryMode::Url),
];
/// Mixpeek's blob types (lower-case, as sent).
const BLOB_TYPES: &[&str] = &[
    "json", "object", "text", "image", "video", "audio", "pdf", "excel", "string", "number",
    "integer", "float", "boolean", "array", "date", "datetime",
];
/// Placeholders `url_template` may use.
const URL_PLACEHOLDERS: &[&str] = &["key_prefix", "file_name"];
const MAX_PROPERTY_CHARS: usize = 100;

const EXPECT_DURATION: &str = "a duration string like \"2s\", \"500ms\" or \"10m\"";
const EXPECT_SIZE: &str = "a number of bytes or a string like \"5MiB\", \"512KiB\" or \"1GB\"";
const EXPECT_PATH: &str = "a path string";
const EXPECT_GLOB: &str = "a glob string like \"**/*.pdf\"";

// ---------------------------------------------------------------------------
// The walker: one function per table
// ---------------------------------------------------------------------------

fn read_config(r: &mut Report, doc: &Spanned<DeTable<'_>>, base: &Path) -> Config {
    // Stands in for sections the file leaves out, so every default comes from the
    // same getters as an explicit value.
    let empty = DeTable::new();
    let mut root = Table::new(doc.get_ref(), doc.span(), String::new(), &ROOT);

    let shutdown_grace = root
        .duration(r, "shutdown_grace", Ok)
        .unwrap_or(DEFAULT_SHUTDOWN_GRACE);
    let table = root.section(r, "api", &API, &empty);
    let api = read_api(r, table, base);
    let table = root.section(r, "retry", &RETRY, &empty);
    let retry = read_retry(r, table);
    let table = root.section(r, "state", &STATE, &empty);
    let state_dir_span = table.span_of("dir");
    let state = read_state(r, table, base);
    let table = root.section(r, "metrics", &METRICS, &empty);
    let metrics = read_metrics(r, table);
    let table = root.section(r, "log", &LOG, &empty);
    let log = read_log(r, table);

    let watch_tables = root.tables(r, "watch", &WATCH);
    if watch_tables.as_ref().is_some_and(Vec::is_empty) || !root.has("watch") {
        r.add(
            root.span_of("watch"),
            "watch",
            "at least one [[watch]] is required: a table with `path` (the directory to \
             watch) and `bucket` (where its objects go)",
        );
    }
    let placed: Vec<PlacedWatch> = watch_tables
        .unwrap_or_default()
        .into_iter()
        .map(|t| read_watch(r, t, base, api.dialect))
        .collect();
    root.finish(r);

    check_overlaps(r, &placed);
    check_inside_watches(
        r,
        &placed,
        &state.dir,
        state_dir_span,
        "state.dir",
        "the state store",
    );
    for w in &placed {
        if let (Some(move_to), Some(span)) = (&w.watch.move_to, &w.move_to_span) {
            let key = format!("{}.move_to", w.name);
            check_inside_watches(r, &placed, move_to, span.clone(), &key, "moved files");
        }
    }

    Config {
        api,
        retry,
        state,
        metrics,
        log,
        shutdown_grace,
        watches: placed.into_iter().map(|w| w.watch).collect(),
    }
}

fn read_api(r: &mut Report, mut t: Table<'_, '_>, base: &Path) -> ApiConfig {
    let base_url = t
        .string(r, "base_url", "a URL", parse_base_url)
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
    let namespace = t.string(r, "namespace", "a string", non_empty);
    let api_key_file = t.path(r, "api_key_file", base);
    let api_key_env = t
        .string(
            r,
            "api_key_env",
            "an environment variable name",
            parse_env_name,
        )
        .unwrap_or_else(|| DEFAULT_API_KEY_ENV.to_owned());
    let dialect = t
        .choice(r, "dialect", DIALECTS)
        .unwrap_or(DialectSetting::Auto);
    let auto_process = t.bool(r, "auto_process").unwrap_or(true);
    let timeout = t
        .duration(r, "timeout", above_zero)
        .unwrap_or(DEFAULT_TIMEOUT);
    let requests_per_minute = t
        .integer(r, "requests_per_minute", 0..=u64::from(u32::MAX))
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    // The upper bound is a sanity limit against typos (40000 for 4): far more
    // connections than any Mixpeek quota would let through.
    let max_in_flight = t
        .integer(r, "max_in_flight", 1..=4096)
        .unwrap_or(DEFAULT_MAX_IN_FLIGHT);
    let max_bytes_per_second = t.size(r, "max_bytes_per_second").unwrap_or(0);
    t.finish(r);
    ApiConfig {
        base_url,
        namespace,
        api_key_file,
        api_key_env,
        dialect,
        auto_process,
        timeout,
        requests_per_minute,
        max_in_flight: usize::try_from(max_in_flight).unwrap_or(usize::MAX),
        max_bytes_per_second,
    }
}

fn read_retry(r: &mut Report, mut t: Table<'_, '_>) -> RetryConfig {
    let initial = t.duration(r, "initial", above_zero);
    let max = t.duration(r, "max", above_zero);
    // A value the file sets but gets wrong is already reported; comparing its
    // default instead would only add a misleading second problem.
    let comparable = (initial.is_some() || !t.has("initial")) && (max.is_some() || !t.has("max"));
    let initial = initial.unwrap_or(DEFAULT_RETRY_INITIAL);
    let max = max.unwrap_or(DEFAULT_RETRY_MAX);
    if comparable && initial > max {
        // Point at whichever of the two the file actually sets.
        let key = if t.has("initial") { "initial" } else { "max" };
        r.add(
            t.span_of(key),
            t.key(key),
            format!(
                "retry.initial ({}) is above retry.max ({}): the first wait must not exceed \
                 the longest one",
                humantime::format_duration(initial),
                humantime::format_duration(max)
            ),
        );
    }
    t.finish(r);
    RetryConfig { initial, max }
}

fn read_state(r: &mut Report, mut t: Table<'_, '_>, base: &Path) -> StateConfig {
    let dir = t
        .path(r, "dir", base)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    t.finish(r);
    StateConfig { dir }
}

fn read_metrics(r: &mut Report, mut t: Table<'_, '_>) -> MetricsConfig {
    let listen = t.string(r, "listen", "an address string", |s| {
        s.parse::<SocketAddr>().map_err(|_| {
            format!(
                "invalid listen address {s:?}: expected an IP address and port, like \
                 \"127.0.0.1:9464\" or \"[::1]:9464\""
            )
        })
    });
    let stuck_after = t.duration(r, "stuck_after", above_zero);
    t.finish(r);
    MetricsConfig {
        listen,
        stuck_after,
    }
}

fn read_log(r: &mut Report, mut t: Table<'_, '_>) -> LogConfig {
    let format = t
        .choice(r, "format", LOG_FORMATS)
        .unwrap_or(LogFormat::Text);
    let level = t
        .string(r, "level", "a log filter string", parse_log_filter)
        .unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_owned());
    t.finish(r);
    LogConfig { format, level }
}

/// A watch with what the cross-watch checks need to point at.
struct PlacedWatch {
    watch: Watch,
    /// `watch[i]`.
    name: String,
    path_span: Range<usize>,
    move_to_span: Option<Range<usize>>,
}

fn read_watch(
    r: &mut Report,
    mut t: Table<'_, '_>,
    base: &Path,
    dialect: DialectSetting,
) -> PlacedWatch {
    t.require(r, "path", "the directory tree to watch");
    t.require(r, "bucket", "the bucket its objects go to");
    let path_span = t.span_of("path");
    let path = t.path(r, "path", base).unwrap_or_default();
    let bucket = t
        .string(r, "bucket", "a bucket id or name", parse_bucket)
        .unwrap_or_default();
    let key_prefix = t
        .string(
            r,
            "key_prefix",
            "a key prefix string like \"/documents\"",
            normalise_key_prefix,
        )
        .unwrap_or_else(|| "/".to_owned());
    let group_by = t
        .choice(r, "group_by", GROUP_BYS)
        .unwrap_or(GroupBy::Directory);
    let settle = t.duration(r, "settle", above_zero);
    let ready_marker = t.string(r, "ready_marker", "a file name", parse_file_name);
    // An invalid `settle` is already reported; zero keeps it out of this check.
    let settle_for_check = match settle {
        Some(settle) => settle,
        None if t.has("settle") => Duration::ZERO,
        None => DEFAULT_SETTLE,
    };
    let max_group_wait = t
        .duration(r, "max_group_wait", |d| {
            if d < settle_for_check {
                Err(format!(
                    "max_group_wait ({}) is below settle ({}): a group could never wait for \
                     its files to settle",
                    humantime::format_duration(d),
                    humantime::format_duration(settle_for_check)
                ))
            } else {
                Ok(d)
            }
        })
        .unwrap_or(DEFAULT_MAX_GROUP_WAIT);
    let include = t
        .globs(r, "include")
        .unwrap_or_else(|| vec![DEFAULT_INCLUDE.to_owned()]);
    if include.is_empty() {
        r.add(
            t.span_of("include"),
            t.key("include"),
            "an empty include list takes no files: use [\"**/*\"] to take every file",
        );
    }
    let exclude = t.globs(r, "exclude").unwrap_or_default();
    let follow_symlinks = t.bool(r, "follow_symlinks").unwrap_or(false);
    let poll_interval = t.duration(r, "poll_interval", Ok).unwrap_or(Duration::ZERO);
    let rescan_interval = t
        .duration(r, "rescan_interval", above_zero)
        .unwrap_or(DEFAULT_RESCAN_INTERVAL);
    let skip_duplicates = t.bool(r, "skip_duplicates").unwrap_or(true);
    let after_delivery = t
        .choice(r, "after_delivery", AFTER_DELIVERIES)
        .unwrap_or(AfterDelivery::Keep);
    let move_to_span = t.has("move_to").then(|| t.span_of("move_to"));
    let move_to = t.path(r, "move_to", base);
    if after_delivery == AfterDelivery::Move && !t.has("move_to") {
        r.add(
            t.span_of("after_delivery"),
            t.key("after_delivery"),
            "after_delivery = \"move\" needs `move_to`, the directory delivered files are \
             moved to (outside every watch)",
        );
    }
    let url_template = t.string(
        r,
        "url_template",
        "a URL template string",
        parse_url_template,
    );
    let delivery = t
        .choice(r, "delivery", DELIVERY_MODES)
        .unwrap_or(DeliveryMode::Auto);
    check_delivery(r, &t, "delivery", delivery, t.has("url_template"), dialect);
    let inline_max_bytes = t
        .size(r, "inline_max_bytes")
        .unwrap_or(DEFAULT_INLINE_MAX_BYTES);
    let default_type = t.string(r, "default_type", "a blob type string", parse_blob_type);
    let metadata_file = t
        .string(r, "metadata_file", "a file name", parse_file_name)
        .unwrap_or_else(|| DEFAULT_METADATA_FILE.to_owned());
    let metadata = t.metadata(r, "metadata").unwrap_or_default();
    let types = t.types(r, "types").unwrap_or_default();
    let has_url_template = t.has("url_template");
    let rules = t
        .tables(r, "rule", &RULE)
        .unwrap_or_default()
        .into_iter()
        .map(|rt| read_rule(r, rt, has_url_template, dialect))
        .collect();
    let name = t.name.clone();
    t.finish(r);

    PlacedWatch {
        watch: Watch {
            path,
            bucket,
            key_prefix,
            group_by,
            settle: settle.unwrap_or(DEFAULT_SETTLE),
            ready_marker,
            max_group_wait,
            include,
            exclude,
            follow_symlinks,
            poll_interval,
            rescan_interval,
            skip_duplicates,
            after_delivery,
            move_to,
            delivery,
            inline_max_bytes,
            url_template,
            default_type,
            metadata_file,
            metadata,
            types,
            rules,
        },
        name,
        path_span,
        move_to_span,
    }
}

fn read_rule(
    r: &mut Report,
    mut t: Table<'_, '_>,
    has_url_template: bool,
    dialect: DialectSetting,
) -> Rule {
    t.require(r, "match", "the glob of the files this rule applies to");
    let matches = t
        .string(r, "match", EXPECT_GLOB, parse_glob)
        .unwrap_or_default();
    let property = t.string(r, "property", "a property name string", parse_property);
    let blob_type = t.string(r, "type", "a blob type string", parse_blob_type);
    let mime_type = t.string(r, "mime_type", "a MIME type string", |s| {
        parse_mime(s, false)
    });
    let delivery = t.choice(r, "delivery", DELIVERY_MODES);
    if let Some(delivery) = delivery {
        check_delivery(r, &t, "delivery", delivery, has_url_template, dialect);
    }
    t.finish(r);
    Rule {
        matches,
        property,
        blob_type,
        mime_type,
        delivery,
    }
}

/// A delivery mode the rest of the configuration cannot carry out.
fn check_delivery(
    r: &mut Report,
    t: &Table<'_, '_>,
    key: &str,
    delivery: DeliveryMode,
    has_url_template: bool,
    dialect: DialectSetting,
) {
    let problem = match delivery {
        DeliveryMode::Url if !has_url_template => {
            "delivery = \"url\" needs the watch's `url_template`, like \
             \"https://cdn.example.com/drop{key_prefix}/{file_name}\""
        }
        DeliveryMode::Upload if dialect == DialectSetting::ObjectsCreate => {
            "delivery = \"upload\" needs api.dialect \"objects\" or \"auto\": dialect \
             \"objects-create\" has no upload flow"
        }
        _ => return,
    };
    r.add(t.span_of(key), t.key(key), problem);
}

/// Two watches may not share files: no watch path equal to or inside another.
/// Reported at the later watch.
fn check_overlaps(r: &mut Report, watches: &[PlacedWatch]) {
    for (j, later) in watches.iter().enumerate() {
        for earlier in &watches[..j] {
            let (a, b) = (&earlier.watch.path, &later.watch.path);
            if a.as_os_str().is_empty() || b.as_os_str().is_empty() {
                continue;
            }
            let relation = if a == b {
                "is the same directory as"
            } else if b.starts_with(a) {
                "is inside"
            } else if a.starts_with(b) {
                "contains"
            } else {
                continue;
            };
            r.add(
                later.path_span.clone(),
                format!("{}.path", later.name),
                format!(
                    "{} {relation} {}.path ({}): watches may not overlap; watch separate \
                     directories",
                    b.display(),
                    earlier.name,
                    a.display()
                ),
            );
        }
    }
}

/// `dir` (what `what` is) must not lie inside a watch, where it would be ingested.
fn check_inside_watches(
    r: &mut Report,
    watches: &[PlacedWatch],
    dir: &Path,
    span: Range<usize>,
    key: &str,
    what: &str,
) {
    for w in watches {
        let root = &w.watch.path;
        if !root.as_os_str().is_empty() && dir.starts_with(root) {
            r.add(
                span.clone(),
                key,
                format!(
                    "{} is inside {}.path ({}): {what} would be picked up as new files; \
                     choose a directory outside every watch",
                    dir.display(),
                    w.name,
                    root.display()
                ),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Tables and typed getters
// ---------------------------------------------------------------------------

/// Collects problems, turning byte spans into lines and columns.
struct Report<'s> {
    text: &'s str,
    problems: Vec<ConfigProblem>,
}

impl Report<'_> {
    fn add(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        let (line, column) = line_col(self.text, span.start);
        self.problems.push(ConfigProblem {
            line,
            column,
            key: key.into(),
            message: message.into(),
        });
    }
}

/// 1-based line and character column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// One TOML table being read against its schema.
struct Table<'t, 'i> {
    entries: &'t DeTable<'i>,
    /// The header (`[[watch]]`), inline table or key that defines it.
    span: Range<usize>,
    /// Dotted name of the table in problems; empty for the root.
    name: String,
    schema: &'static Schema,
    /// Keys the walker asked for, to check the schema against the walker.
    asked: Vec<&'static str>,
}

impl<'t, 'i> Table<'t, 'i> {
    fn new(
        entries: &'t DeTable<'i>,
        span: Range<usize>,
        name: String,
        schema: &'static Schema,
    ) -> Self {
        Table {
            entries,
            span,
            name,
            schema,
            asked: Vec::new(),
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'t Spanned<DeValue<'i>>> {
        debug_assert!(
            self.schema.keys.contains(&key),
            "`{key}` is read but not listed in the schema of {}",
            self.schema.title
        );
        self.asked.push(key);
        self.entries.get(key)
    }

    fn has(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Dotted key of an entry, for problems.
    fn key(&self, key: &str) -> String {
        join_key(&self.name, key)
    }

    /// Where a problem about `key` points: its value, or the table when absent.
    fn span_of(&self, key: &str) -> Range<usize> {
        self.entries
            .get(key)
            .map_or_else(|| self.span.clone(), Spanned::span)
    }

    fn require(&mut self, r: &mut Report, key: &'static str, what: &str) {
        if self.get(key).is_none() {
            r.add(
                self.span.clone(),
                self.key(key),
                format!("missing required key `{key}`: {what}"),
            );
        }
    }

    /// A string value, checked and converted by `parse`, whose error is reported
    /// at the value.
    fn string<T>(
        &mut self,
        r: &mut Report,
        key: &'static str,
        expected: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = self.get(key)?;
        let key = self.key(key);
        let text = expect_str(r, &key, value, expected)?;
        parse(text)
            .map_err(|message| r.add(value.span(), key, message))
            .ok()
    }

    fn bool(&mut self, r: &mut Report, key: &'static str) -> Option<bool> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                r.add(
                    value.span(),
                    self.key(key),
                    expected("true or false", other),
                );
                None
            }
        }
    }

    fn integer(
        &mut self,
        r: &mut Report,
        key: &'static str,
        range: RangeInclusive<u64>,
    ) -> Option<u64> {
        let value = self.get(key)?;
        let key = self.key(key);
        let n = match value.get_ref() {
            DeValue::Integer(i) => integer_value(i),
            other => {
                r.add(value.span(), key, expected("an integer", other));
                return None;
            }
        };
        match n.and_then(|n| u64::try_from(n).ok()) {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                r.add(
                    value.span(),
                    key,
                    format!(
                        "{} is out of range: expected an integer from {} to {}",
                        value.get_ref().as_integer().map_or("?", DeInteger::as_str),
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// A duration, then `check` (which may refuse it with a message).
    fn duration(
        &mut self,
        r: &mut Report,
        key: &'static str,
        check: impl FnOnce(Duration) -> Result<Duration, String>,
    ) -> Option<Duration> {
        self.string(r, key, EXPECT_DURATION, |s| {
            parse_duration(s).and_then(check)
        })
    }

    fn size(&mut self, r: &mut Report, key: &'static str) -> Option<u64> {
        let value = self.get(key)?;
        let key = self.key(key);
        let size = match value.get_ref() {
            DeValue::Integer(i) => integer_value(i)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| format!("invalid size {i}: expected {EXPECT_SIZE}, not negative")),
            DeValue::String(s) => parse_size(s),
            other => Err(expected(EXPECT_SIZE, other)),
        };
        size.map_err(|message| r.add(value.span(), key, message))
            .ok()
    }

    fn choice<T: Copy>(
        &mut self,
        r: &mut Report,
        key: &'static str,
        choices: &[(&'static str, T)],
    ) -> Option<T> {
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        let expectation = format!("one of {}", quoted_list(&names));
        self.string(r, key, &expectation, |s| {
            choices
                .iter()
                .find(|(name, _)| *name == s)
                .map(|(_, value)| *value)
                .ok_or_else(|| format!("invalid value {s:?}: expected {expectation}"))
        })
    }

    fn path(&mut self, r: &mut Report, key: &'static str, base: &Path) -> Option<PathBuf> {
        self.string(r, key, EXPECT_PATH, |s| {
            if s.is_empty() {
                Err("empty path: expected a directory path such as \"/srv/drop\"".to_owned())
            } else if s.contains('\0') {
                Err("a path may not contain a NUL character".to_owned())
            } else {
                Ok(normalise_path(&base.join(s)))
            }
        })
    }

    /// An array of glob strings.
    fn globs(&mut self, r: &mut Report, key: &'static str) -> Option<Vec<String>> {
        let value = self.get(key)?;
        let key = self.key(key);
        let DeValue::Array(items) = value.get_ref() else {
            r.add(
                value.span(),
                key,
                expected(
                    "an array of glob strings like [\"**/*.pdf\"]",
                    value.get_ref(),
                ),
            );
            return None;
        };
        let mut globs = Vec::with_capacity(items.len());
        let mut valid = true;
        for (i, item) in items.iter().enumerate() {
            let item_key = format!("{key}[{i}]");
            let glob = expect_str(r, &item_key, item, EXPECT_GLOB).and_then(|s| {
                parse_glob(s)
                    .map_err(|message| r.add(item.span(), item_key, message))
                    .ok()
            });
            match glob {
                Some(glob) => globs.push(glob),
                None => valid = false,
            }
        }
        valid.then_some(globs)
    }

    /// A sub-table read against `schema`; `empty` when the file leaves it out.
    fn section(
        &mut self,
        r: &mut Report,
        key: &'static str,
        schema: &'static Schema,
        empty: &'t DeTable<'i>,
    ) -> Table<'t, 'i> {
        let name = self.key(key);
        match self.get(key) {
            Some(value) => match value.get_ref() {
                DeValue::Table(table) => Table::new(table, value.span(), name, schema),
                other => {
                    r.add(
                        value.span(),
                        name.clone(),
                        expected(&format!("a table ({})", schema.title), other),
                    );
                    Table::new(empty, value.span(), name, schema)
                }
            },
            None => Table::new(empty, self.span.clone(), name, schema),
        }
    }

    /// An array of tables (`[[watch]]`); `None` when absent or not an array.
    fn tables(
        &mut self,
        r: &mut Report,
        key: &'static str,
        schema: &'static Schema,
    ) -> Option<Vec<Table<'t, 'i>>> {
        let value = self.get(key)?;
        let name = self.key(key);
        let expectation = format!("an array of tables ({})", schema.title);
        let DeValue::Array(items) = value.get_ref() else {
            r.add(value.span(), name, expected(&expectation, value.get_ref()));
            return None;
        };
        let mut tables = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_name = format!("{name}[{i}]");
            match item.get_ref() {
                DeValue::Table(table) => {
                    tables.push(Table::new(table, item.span(), item_name, schema));
                }
                other => r.add(item.span(), item_name, expected(&expectation, other)),
            }
        }
        Some(tables)
    }

    /// Any TOML table, as a JSON object.
    fn metadata(
        &mut self,
        r: &mut Report,
        key: &'static str,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let value = self.get(key)?;
        let key = self.key(key);
        match value.get_ref() {
            DeValue::Table(_) => match to_json(r, &key, value)? {
                serde_json::Value::Object(map) => Some(map),
                _ => None,
            },
            other => {
                r.add(
                    value.span(),
                    key,
                    expected("a table, like { category = \"contracts\" }", other),
                );
                None
            }
        }
    }

    /// The MIME pattern → blob type overrides.
    fn types(&mut self, r: &mut Report, key: &'static str) -> Option<BTreeMap<String, String>> {
        let value = self.get(key)?;
        let key = self.key(key);
        let DeValue::Table(table) = value.get_ref() else {
            r.add(
                value.span(),
                key,
                expected(
                    "a table of MIME pattern = blob type, like { \"text/csv\" = \"excel\" }",
                    value.get_ref(),
                ),
            );
            return None;
        };
        let mut types = BTreeMap::new();
        let mut valid = true;
        for (pattern, blob_type) in table.iter() {
            let entry_key = join_key(&key, pattern.get_ref());
            if let Err(message) = parse_mime(pattern.get_ref(), true) {
                r.add(pattern.span(), entry_key.clone(), message);
                valid = false;
            }
            let parsed = expect_str(r, &entry_key, blob_type, "a blob type string").and_then(|s| {
                parse_blob_type(s)
                    .map_err(|message| r.add(blob_type.span(), entry_key, message))
                    .ok()
            });
            match parsed {
                Some(parsed) => {
                    types.insert(pattern.get_ref().to_string(), parsed);
                }
                None => valid = false,
            }
        }
        valid.then_some(types)
    }

    /// Reports keys outside the schema, each with the valid ones.
    fn finish(self, r: &mut Report) {
        for (key, _) in self.entries.iter() {
            let name: &str = key.get_ref();
            if !self.schema.keys.contains(&name) {
                let hint = closest(name, self.schema.keys)
                    .map(|k| format!("did you mean `{k}`? "))
                    .unwrap_or_default();
                r.add(
                    key.span(),
                    self.key(name),
                    format!(
                        "unknown key `{name}`: {hint}valid keys in {} are {}",
                        self.schema.title,
                        self.schema.keys.join(", ")
                    ),
                );
            }
        }
        debug_assert!(
            self.schema.keys.iter().all(|k| self.asked.contains(k)),
            "the walker of {} never reads some keys of its schema: {:?}",
            self.schema.title,
            self.schema
                .keys
                .iter()
                .filter(|k| !self.asked.contains(k))
                .collect::<Vec<_>>()
        );
    }
}

// ---------------------------------------------------------------------------
// Value checks: text in, value or message out
// ---------------------------------------------------------------------------

fn expect_str<'v>(
    r: &mut Report,
    key: &str,
    value: &'v Spanned<DeValue<'_>>,
    expectation: &str,
) -> Option<&'v str> {
    match value.get_ref() {
        DeValue::String(s) => Some(s.as_ref()),
        other => {
            r.add(value.span(), key, expected(expectation, other));
            None
        }
    }
}

/// "expected X, found integer 2".
fn expected(expectation: &str, found: &DeValue<'_>) -> String {
    let found = match found {
        DeValue::String(s) => format!("string {s:?}"),
        DeValue::Integer(i) => format!("integer {i}"),
        DeValue::Float(f) => format!("float {f}"),
        DeValue::Boolean(b) => format!("boolean {b}"),
        DeValue::Datetime(d) => format!("datetime {d}"),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    };
    format!("expected {expectation}, found {found}")
}

fn integer_value(i: &DeInteger<'_>) -> Option<i64> {
    i64::from_str_radix(i.as_str(), i.radix()).ok()
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|err| {
        format!(
            "invalid duration {s:?} ({err}): expected a number with a unit, like \"2s\", \
             \"500ms\", \"10m\""
        )
    })
}

fn above_zero(d: Duration) -> Result<Duration, String> {
    if d.is_zero() {
        Err("must be above zero, like \"1s\"".to_owned())
    } else {
        Ok(d)
    }
}

/// Bytes from `"5MiB"`, `"512 KiB"`, `"1GB"` or a plain `"1024"`.
fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|err| format!("invalid size {s:?} ({err}): expected {EXPECT_SIZE}"))
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

fn parse_base_url(s: &str) -> Result<String, String> {
    let hint = "expected an http(s) URL like \"https://api.mixpeek.com\"";
    let url = reqwest::Url::parse(s).map_err(|err| format!("invalid URL {s:?} ({err}): {hint}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("invalid URL {s:?}: {hint}"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{s:?} has a query or fragment: {hint}"));
    }
    Ok(s.trim_end_matches('/').to_owned())
}

fn parse_env_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains(['=', '\0']) {
        Err(format!(
            "invalid environment variable name {s:?}: expected a name like \"MIXPEEK_API_KEY\""
        ))
    } else {
        Ok(s.to_owned())
    }
}

fn parse_log_filter(s: &str) -> Result<String, String> {
    let hint = "expected a level (\"error\", \"warn\", \"info\", \"debug\", \"trace\") or \
                directives like \"info,mixpeek_ingest=debug\"";
    if s.trim().is_empty() {
        return Err(format!("empty log level: {hint}"));
    }
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|err| format!("invalid log filter {s:?} ({err}): {hint}"))
}

/// Bucket ids and names go into URL paths, so they may not carry separators.
fn parse_bucket(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty bucket: expected the bucket's id or name".to_owned());
    }
    if s.chars()
        .any(|c| c == '/' || c == '?' || c == '#' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "invalid bucket {s:?}: expected an id or name without '/', '?', '#' or spaces"
        ));
    }
    Ok(s.to_owned())
}

/// A plain file name, looked up in every directory of the watch.
fn parse_file_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s == "." || s == ".." || s.contains(['/', '\0']) {
        Err(format!(
            "invalid file name {s:?}: expected a name without '/', like \"_READY\""
        ))
    } else {
        Ok(s.to_owned())
    }
}

fn parse_glob(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err(format!("empty glob: expected {EXPECT_GLOB}"));
    }
    globset::Glob::new(s).map(|_| s.to_owned()).map_err(|err| {
        format!(
            "invalid glob {s:?} ({}): globs use *, **, ?, [abc] and {{a,b}}, like \"**/*.pdf\"",
            err.kind()
        )
    })
}

fn parse_blob_type(s: &str) -> Result<String, String> {
    if BLOB_TYPES.contains(&s) {
        return Ok(s.to_owned());
    }
    let lower = s.to_lowercase();
    let hint = if BLOB_TYPES.contains(&lower.as_str()) {
        format!(" (types are lower-case: {lower:?})")
    } else {
        String::new()
    };
    Err(format!(
        "invalid blob type {s:?}{hint}: expected one of {}",
        BLOB_TYPES.join(", ")
    ))
}

/// 1 to 100 characters of `[a-z0-9_]`, as Mixpeek requires of blob properties.
fn parse_property(s: &str) -> Result<String, String> {
    let valid = (1..=MAX_PROPERTY_CHARS).contains(&s.chars().count())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "invalid property {s:?}: expected 1 to {MAX_PROPERTY_CHARS} characters of a-z, 0-9 \
             and _, like \"thumbnail\""
        ))
    }
}

/// `type/subtype`, lower-case; with `wildcard`, also `type/*`.
fn parse_mime(s: &str, wildcard: bool) -> Result<String, String> {
    let token = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "!#$&^_.+-".contains(c))
    };
    let valid = match s.split_once('/') {
        Some((kind, "*")) => wildcard && token(kind),
        Some((kind, sub)) => token(kind) && token(sub),
        None => false,
    };
    if valid {
        Ok(s.to_owned())
    } else if wildcard {
        Err(format!(
            "invalid MIME pattern {s:?}: expected lower-case \"type/subtype\" or \"type/*\", \
             like \"text/csv\" or \"image/*\""
        ))
    } else {
        Err(format!(
            "invalid MIME type {s:?}: expected lower-case \"type/subtype\", like \"image/jpeg\""
        ))
    }
}

/// Checks the `{placeholders}` of a `url_template`.
fn parse_url_template(s: &str) -> Result<String, String> {
    let valid = quoted_list(
        &URL_PLACEHOLDERS
            .iter()
            .map(|p| format!("{{{p}}}"))
            .collect::<Vec<_>>(),
    );
    if s.trim().is_empty() {
        return Err(format!(
            "empty url_template: expected a URL using {valid}, like \
             \"https://cdn.example.com/drop{{key_prefix}}/{{file_name}}\""
        ));
    }
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!(
                "unclosed '{{' in url_template {s:?}: placeholders are {valid}"
            ));
        };
        let name = &after[..close];
        if !URL_PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "unknown placeholder {{{name}}} in url_template: placeholders are {valid}"
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(s.to_owned())
}

/// SPEC §4: starts with `/`, `/` separators, no trailing `/` except the root, no `..`.
fn normalise_key_prefix(s: &str) -> Result<String, String> {
    if s.contains("..") {
        return Err(format!(
            "invalid key_prefix {s:?}: it may not contain \"..\"; expected a path like \
             \"/documents\""
        ));
    }
    if s.contains('\\') || s.chars().any(char::is_control) {
        return Err(format!(
            "invalid key_prefix {s:?}: expected '/' separators and no control characters, \
             like \"/documents/2024\""
        ));
    }
    let segments: Vec<&str> = s.split('/').filter(|seg| !seg.is_empty()).collect();
    if segments.contains(&".") {
        return Err(format!(
            "invalid key_prefix {s:?}: a segment may not be \".\"; expected a path like \
             \"/documents\""
        ));
    }
    Ok(format!("/{}", segments.join("/")))
}

/// Removes `.` and resolves `..` without touching the disk.
fn normalise_path(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    out.pop();
                } else if !out.has_root() {
                    // Only reachable when the base stayed relative.
                    out.push("..");
                }
                // `..` at the root stays at the root, as the kernel does.
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// A TOML value as JSON; floats that JSON cannot hold are problems.
fn to_json(r: &mut Report, key: &str, value: &Spanned<DeValue<'_>>) -> Option<serde_json::Value> {
    use serde_json::Value;
    Some(match value.get_ref() {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Integer(i) => match integer_value(i) {
            Some(n) => Value::from(n),
            None => {
                r.add(
                    value.span(),
                    key,
                    format!("integer {i} does not fit in 64 bits"),
                );
                return None;
            }
        },
        DeValue::Float(f) => {
            let number = f
                .as_str()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64);
            match number {
                Some(n) => Value::Number(n),
                None => {
                    r.add(
                        value.span(),
                        key,
                        format!(
                            "float {f} cannot be represented in JSON: expected a finite number"
                        ),
                    );
                    return None;
                }
            }
        }
        DeValue::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut valid = true;
            for (i, item) in items.iter().enumerate() {
                match to_json(r, &format!("{key}[{i}]"), item) {
                    Some(v) => out.push(v),
                    None => valid = false,
                }
            }
            if !valid {
                return None;
            }
            Value::Array(out)
        }
        DeValue::Table(table) => {
            let mut out = serde_json::Map::new();
            let mut valid = true;
            for (k, v) in table.iter() {
                match to_json(r, &join_key(key, k.get_ref()), v) {
                    Some(v) => {
                        out.insert(k.get_ref().to_string(), v);
                    }
                    None => valid = false,
                }
            }
            if !valid {
                return None;
            }
            Value::Object(out)
        }
    })
}

/// `prefix.key`, quoting keys that TOML would quote.
fn join_key(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

fn quoted_list<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{:?}", s.as_ref())).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

/// The schema key nearest to a misspelt one, if it is near enough to be a typo.
fn closest<'k>(name: &str, keys: &[&'k str]) -> Option<&'k str> {
    keys.iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    const CONFIG_PATH: &str = "/etc/mixpeek-ingest/config.toml";
    const MINIMAL: &str = "[[watch]]\npath = \"/srv/drop\"\nbucket = \"contracts\"\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_str(text, Path::new(CONFIG_PATH))
    }

    fn parse_ok(text: &str) -> Config {
        match parse(text) {
            Ok(config) => config,
            Err(err) => panic!("unexpected problems:\n{err}"),
        }
    }

    fn problems(text: &str) -> Vec<ConfigProblem> {
        match parse(text) {
            Ok(config) => panic!("expected problems, parsed {config:?}"),
            Err(err) => err.problems,
        }
    }

    /// The minimal watch followed by `extra` lines in the same `[[watch]]`.
    fn watch_with(extra: &str) -> String {
        format!("{MINIMAL}{extra}\n")
    }

    #[test]
    fn minimal_config_gets_every_default() {
        let expected = Config {
            api: ApiConfig {
                base_url: "https://api.mixpeek.com".to_owned(),
                namespace: None,
                api_key_file: None,
                api_key_env: "MIXPEEK_API_KEY".to_owned(),
                dialect: DialectSetting::Auto,
                auto_process: true,
                timeout: Duration::from_secs(60),
                requests_per_minute: 0,
                max_in_flight: 4,
                max_bytes_per_second: 0,
            },
            retry: RetryConfig {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(300),
            },
            state: StateConfig {
                dir: PathBuf::from("/var/lib/mixpeek-ingest"),
            },
            metrics: MetricsConfig {
                listen: None,
                stuck_after: None,
            },
            log: LogConfig {
                format: LogFormat::Text,
                level: "info".to_owned(),
            },
            shutdown_grace: Duration::from_secs(10),
            watches: vec![Watch {
                path: PathBuf::from("/srv/drop"),
                bucket: "contracts".to_owned(),
                key_prefix: "/".to_owned(),
                group_by: GroupBy::Directory,
                settle: Duration::from_secs(2),
                ready_marker: None,
                max_group_wait: Duration::from_secs(600),
                include: vec!["**/*".to_owned()],
                exclude: vec![],
                follow_symlinks: false,
                poll_interval: Duration::ZERO,
                rescan_interval: Duration::from_secs(300),
                skip_duplicates: true,
                after_delivery: AfterDelivery::Keep,
                move_to: None,
                delivery: DeliveryMode::Auto,
                inline_max_bytes: 5_242_880,
                url_template: None,
                default_type: None,
                metadata_file: "_metadata.json".to_owned(),
                metadata: serde_json::Map::new(),
                types: BTreeMap::new(),
                rules: vec![],
            }],
        };
        assert_eq!(parse_ok(MINIMAL), expected);
    }

    /// One mistake each: the key, line and column reported, and a fragment of
    /// the message (which must also say what is valid).
    #[rstest]
    #[case::unknown_top_level_key(
        &format!("shutdown_grce = \"1s\"\n{MINIMAL}"),
        "shutdown_grce", 1, 1, "did you mean `shutdown_grace`? valid keys in the top level are"
    )]
    #[case::unknown_watch_key(
        &watch_with("colour = \"red\""),
        "watch[0].colour", 4, 1, "valid keys in [[watch]] are path, bucket, key_prefix"
    )]
    #[case::unknown_rule_key(
        &watch_with("[[watch.rule]]\nmatch = \"*.jpg\"\nproperty_name = \"x\""),
        "watch[0].rule[0].property_name", 6, 1, "valid keys in [[watch.rule]] are match,"
    )]
    #[case::wrong_type(
        &format!("[api]\ntimeout = 60\n{MINIMAL}"),
        "api.timeout", 2, 11, "expected a duration string like \"2s\", \"500ms\" or \"10m\", found integer 60"
    )]
    #[case::wrong_type_bool(
        &watch_with("skip_duplicates = \"yes\""),
        "watch[0].skip_duplicates", 4, 19, "expected true or false, found string \"yes\""
    )]
    #[case::section_not_a_table(
        &format!("api = 3\n{MINIMAL}"),
        "api", 1, 7, "expected a table ([api]), found integer 3"
    )]
    #[case::watch_not_an_array(
        "[watch]\npath = \"/srv/drop\"\nbucket = \"b\"\n",
        "watch",
        1,
        1,
        "expected an array of tables ([[watch]]), found a table"
    )]
    #[case::bad_duration(
        &watch_with("settle = \"soon\""),
        "watch[0].settle", 4, 10, "invalid duration \"soon\""
    )]
    #[case::zero_settle(
        &watch_with("settle = \"0s\""),
        "watch[0].settle", 4, 10, "must be above zero"
    )]
    #[case::group_wait_below_settle(
        &watch_with("settle = \"30s\"\nmax_group_wait = \"10s\""),
        "watch[0].max_group_wait", 5, 18, "max_group_wait (10s) is below settle (30s)"
    )]
    #[case::bad_size(
        &watch_with("inline_max_bytes = \"5 MeB\""),
        "watch[0].inline_max_bytes", 4, 20, "invalid size \"5 MeB\""
    )]
    #[case::negative_size(
        &watch_with("inline_max_bytes = -1"),
        "watch[0].inline_max_bytes", 4, 20, "not negative"
    )]
    #[case::bad_enum(
        &watch_with("group_by = \"dir\""),
        "watch[0].group_by", 4, 12, "invalid value \"dir\": expected one of \"directory\", \"stem\" or \"file\""
    )]
    #[case::bad_dialect(
        &format!("[api]\ndialect = \"v2\"\n{MINIMAL}"),
        "api.dialect", 2, 11, "expected one of \"auto\", \"objects-create\" or \"objects\""
    )]
    #[case::missing_path(
        "[[watch]]\nbucket = \"b\"\n",
        "watch[0].path",
        1,
        1,
        "missing required key `path`"
    )]
    #[case::missing_bucket(
        "shutdown_grace = \"1s\"\n\n[[watch]]\npath = \"/srv/drop\"\n",
        "watch[0].bucket",
        3,
        1,
        "missing required key `bucket`"
    )]
    #[case::no_watch(
        "[api]\ntimeout = \"5s\"\n",
        "watch",
        1,
        1,
        "at least one [[watch]] is required"
    )]
    #[case::bad_include_glob(
        &watch_with("include = [\"**/*\", \"a[\"]"),
        "watch[0].include[1]", 4, 20, "invalid glob \"a[\""
    )]
    #[case::empty_include(
        &watch_with("include = []"),
        "watch[0].include", 4, 11, "an empty include list takes no files"
    )]
    #[case::bad_exclude_glob(
        &watch_with("exclude = [\"{a,b\"]"),
        "watch[0].exclude[0]", 4, 12, "invalid glob \"{a,b\""
    )]
    #[case::bad_rule_glob(
        &watch_with("[[watch.rule]]\nmatch = \"**/[z-a]\""),
        "watch[0].rule[0].match", 5, 9, "invalid glob \"**/[z-a]\""
    )]
    #[case::rule_without_match(
        &watch_with("[[watch.rule]]\nproperty = \"x\""),
        "watch[0].rule[0].match", 4, 1, "missing required key `match`"
    )]
    #[case::move_without_move_to(
        &watch_with("after_delivery = \"move\""),
        "watch[0].after_delivery", 4, 18, "after_delivery = \"move\" needs `move_to`"
    )]
    #[case::url_without_template(
        &watch_with("delivery = \"url\""),
        "watch[0].delivery", 4, 12, "delivery = \"url\" needs the watch's `url_template`"
    )]
    #[case::rule_url_without_template(
        &watch_with("[[watch.rule]]\nmatch = \"*.mp4\"\ndelivery = \"url\""),
        "watch[0].rule[0].delivery", 6, 12, "needs the watch's `url_template`"
    )]
    #[case::upload_with_objects_create(
        &format!("[api]\ndialect = \"objects-create\"\n{MINIMAL}delivery = \"upload\"\n"),
        "watch[0].delivery", 6, 12, "dialect \"objects-create\" has no upload flow"
    )]
    #[case::unknown_url_placeholder(
        &watch_with("url_template = \"https://cdn/{path}\""),
        "watch[0].url_template", 4, 16, "unknown placeholder {path} in url_template: placeholders are \"{key_prefix}\" or \"{file_name}\""
    )]
    #[case::retry_initial_above_max(
        &format!("[retry]\ninitial = \"10m\"\nmax = \"1m\"\n{MINIMAL}"),
        "retry.initial", 2, 11, "retry.initial (10m) is above retry.max (1m)"
    )]
    #[case::retry_max_below_default_initial(
        &format!("[retry]\nmax = \"500ms\"\n{MINIMAL}"),
        "retry.max", 2, 7, "retry.initial (1s) is above retry.max (500ms)"
    )]
    #[case::retry_initial_zero(
        &format!("[retry]\ninitial = \"0s\"\n{MINIMAL}"),
        "retry.initial", 2, 11, "must be above zero"
    )]
    #[case::max_in_flight_zero(
        &format!("[api]\nmax_in_flight = 0\n{MINIMAL}"),
        "api.max_in_flight", 2, 17, "0 is out of range: expected an integer from 1 to 4096"
    )]
    #[case::negative_rate(
        &format!("[api]\nrequests_per_minute = -5\n{MINIMAL}"),
        "api.requests_per_minute", 2, 23, "out of range: expected an integer from 0 to"
    )]
    #[case::bad_base_url(
        &format!("[api]\nbase_url = \"ftp://api.mixpeek.com\"\n{MINIMAL}"),
        "api.base_url", 2, 12, "expected an http(s) URL"
    )]
    #[case::bad_listen(
        &format!("[metrics]\nlisten = \"localhost:9464\"\n{MINIMAL}"),
        "metrics.listen", 2, 10, "expected an IP address and port, like \"127.0.0.1:9464\""
    )]
    #[case::bad_log_level(
        &format!("[log]\nlevel = \"mixpeek_ingest=loud\"\n{MINIMAL}"),
        "log.level", 2, 9, "invalid log filter \"mixpeek_ingest=loud\""
    )]
    #[case::bad_log_format(
        &format!("[log]\nformat = \"xml\"\n{MINIMAL}"),
        "log.format", 2, 10, "expected one of \"text\" or \"json\""
    )]
    #[case::key_prefix_dot_dot(
        &watch_with("key_prefix = \"/a/../b\""),
        "watch[0].key_prefix", 4, 14, "may not contain \"..\""
    )]
    #[case::key_prefix_malformed(
        &watch_with("key_prefix = \"/a/./b\""),
        "watch[0].key_prefix", 4, 14, "a segment may not be \".\""
    )]
    #[case::blob_type_upper_case(
        &watch_with("default_type = \"Image\""),
        "watch[0].default_type", 4, 16, "(types are lower-case: \"image\"): expected one of json, object, text"
    )]
    #[case::blob_type_unknown(
        &watch_with("[[watch.rule]]\nmatch = \"*.x\"\ntype = \"picture\""),
        "watch[0].rule[0].type", 6, 8, "invalid blob type \"picture\": expected one of json"
    )]
    #[case::types_value(
        &watch_with("[watch.types]\n\"image/*\" = \"picture\""),
        "watch[0].types.\"image/*\"", 5, 13, "invalid blob type \"picture\""
    )]
    #[case::types_pattern(
        &watch_with("[watch.types]\nimage = \"image\""),
        "watch[0].types.image", 5, 1, "invalid MIME pattern \"image\": expected lower-case \"type/subtype\" or \"type/*\""
    )]
    #[case::rule_mime_type(
        &watch_with("[[watch.rule]]\nmatch = \"*.x\"\nmime_type = \"image/*\""),
        "watch[0].rule[0].mime_type", 6, 13, "invalid MIME type \"image/*\""
    )]
    #[case::rule_property(
        &watch_with("[[watch.rule]]\nmatch = \"*.jpg\"\nproperty = \"Thumb-Nail\""),
        "watch[0].rule[0].property", 6, 12, "expected 1 to 100 characters of a-z, 0-9 and _"
    )]
    #[case::rule_property_too_long(
        &watch_with(&format!("[[watch.rule]]\nmatch = \"*.jpg\"\nproperty = \"{}\"", "p".repeat(101))),
        "watch[0].rule[0].property", 6, 12, "expected 1 to 100 characters"
    )]
    #[case::ready_marker_with_slash(
        &watch_with("ready_marker = \"a/_READY\""),
        "watch[0].ready_marker", 4, 16, "expected a name without '/'"
    )]
    #[case::metadata_not_a_table(
        &watch_with("metadata = \"x\""),
        "watch[0].metadata", 4, 12, "expected a table"
    )]
    #[case::metadata_nan(
        &watch_with("metadata = { scores = [1.5, nan] }"),
        "watch[0].metadata.scores[1]", 4, 29, "cannot be represented in JSON"
    )]
    #[case::state_dir_inside_watch(
        &format!("[state]\ndir = \"/srv/drop/.state\"\n{MINIMAL}"),
        "state.dir", 2, 7, "the state store would be picked up as new files"
    )]
    #[case::move_to_inside_watch(
        &watch_with("after_delivery = \"move\"\nmove_to = \"/srv/drop/done\""),
        "watch[0].move_to", 5, 11, "is inside watch[0].path (/srv/drop): moved files"
    )]
    #[case::empty_path(
        "[[watch]]\npath = \"\"\nbucket = \"b\"\n",
        "watch[0].path",
        2,
        8,
        "empty path"
    )]
    #[case::bucket_with_slash(
        "[[watch]]\npath = \"/srv/drop\"\nbucket = \"a/b\"\n",
        "watch[0].bucket",
        3,
        10,
        "invalid bucket \"a/b\""
    )]
    #[case::toml_syntax(
        &format!("{MINIMAL}settle = \"2s\n"),
        "", 4, 13, "invalid basic string"
    )]
    #[case::toml_duplicate_key(
        &format!("{MINIMAL}bucket = \"other\"\n"),
        "", 4, 1, "duplicate key"
    )]
    fn each_problem_is_reported_where_it_is(
        #[case] text: &str,
        #[case] key: &str,
        #[case] line: usize,
        #[case] column: usize,
        #[case] fragment: &str,
    ) {
        let found = problems(text);
        assert_eq!(found.len(), 1, "expected one problem, got {found:#?}");
        let problem = &found[0];
        assert_eq!(
            (problem.key.as_str(), problem.line, problem.column),
            (key, line, column),
            "{problem:#?}"
        );
        assert!(
            problem.message.contains(fragment),
            "message {:?} lacks {fragment:?}",
            problem.message
        );
    }

    #[test]
    fn three_mistakes_give_exactly_three_problems_in_file_order() {
        let text = "\
[api]
timeout = \"sixty\"
[retry]
initial = \"1s\"
max = 5
[[watch]]
path = \"/srv/a\"
bucket = \"b\"
grup_by = \"file\"
";
        let found = problems(text);
        let summary: Vec<(usize, usize, &str)> = found
            .iter()
            .map(|p| (p.line, p.column, p.key.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (2, 11, "api.timeout"),
                (5, 7, "retry.max"),
                (9, 1, "watch[0].grup_by"),
            ]
        );
        assert!(found[2].message.contains("did you mean `group_by`?"));
    }

    #[test]
    fn problems_in_many_watches_are_all_collected() {
        let text = "\
[[watch]]
path = \"/a\"
bucket = \"a\"
settle = \"x\"

[[watch]]
path = \"/b\"

[[watch]]
path = \"/c\"
bucket = \"c\"
group_by = \"dirs\"
";
        let keys: Vec<String> = problems(text).into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            vec!["watch[0].settle", "watch[1].bucket", "watch[2].group_by"]
        );
    }

    #[rstest]
    #[case::disjoint(&["/srv/a", "/srv/b"], None)]
    #[case::sibling_with_common_prefix(&["/srv/a", "/srv/ab"], None)]
    #[case::equal(&["/srv/a", "/srv/a"], Some("is the same directory as watch[0].path"))]
    #[case::equal_after_normalising(&["/srv/a/", "/srv/./b/../a"], Some("is the same directory as"))]
    #[case::inside(&["/srv/a", "/srv/a/b"], Some("/srv/a/b is inside watch[0].path (/srv/a)"))]
    #[case::contains(&["/srv/a/b", "/srv"], Some("/srv contains watch[0].path (/srv/a/b)"))]
    #[case::relative_inside_absolute(&["/etc/mixpeek-ingest/drop", "drop/x"], Some("is inside"))]
    fn overlapping_watches_are_reported_at_the_second(
        #[case] paths: &[&str],
        #[case] fragment: Option<&str>,
    ) {
        let text: String = paths
            .iter()
            .enumerate()
            .map(|(i, p)| format!("[[watch]]\npath = \"{p}\"\nbucket = \"b{i}\"\n"))
            .collect();
        match (parse(&text), fragment) {
            (Ok(_), None) => {}
            (Err(err), Some(fragment)) => {
                assert_eq!(err.problems.len(), 1, "{err}");
                let problem = &err.problems[0];
                assert_eq!(
                    (problem.key.as_str(), problem.line, problem.column),
                    ("watch[1].path", 5, 8)
                );
                assert!(problem.message.contains(fragment), "{}", problem.message);
            }
            (result, fragment) => panic!("expected {fragment:?}, got {result:?}"),
        }
    }

    #[test]
    fn every_overlapping_pair_is_reported_once() {
        let text = "\
[[watch]]
path = \"/srv/a\"
bucket = \"a\"
[[watch]]
path = \"/srv/b\"
bucket = \"b\"
[[watch]]
path = \"/srv\"
bucket = \"c\"
";
        let found = problems(text);
        let summary: Vec<(&str, usize)> = found.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(summary, vec![("watch[2].path", 8), ("watch[2].path", 8)]);
        assert!(found[0].message.contains("contains watch[0].path (/srv/a)"));
        assert!(found[1].message.contains("contains watch[1].path (/srv/b)"));
    }

    #[rstest]
    #[case("\"5MiB\"", 5_242_880)]
    #[case("\"0\"", 0)]
    #[case("1024", 1024)]
    #[case("0", 0)]
    #[case("\"512 KiB\"", 524_288)]
    #[case("\"1GB\"", 1_000_000_000)]
    #[case("\"1.5KiB\"", 1536)]
    fn sizes_parse(#[case] toml_value: &str, #[case] bytes: u64) {
        let text = format!(
            "[api]\nmax_bytes_per_second = {toml_value}\n{MINIMAL}inline_max_bytes = {toml_value}\n"
        );
        let config = parse_ok(&text);
        assert_eq!(config.api.max_bytes_per_second, bytes);
        assert_eq!(config.watches[0].inline_max_bytes, bytes);
    }

    #[rstest]
    #[case("2s", Duration::from_secs(2))]
    #[case("500ms", Duration::from_millis(500))]
    #[case("10m", Duration::from_secs(600))]
    #[case("1h 30m", Duration::from_secs(5400))]
    #[case("0", Duration::ZERO)]
    fn durations_parse(#[case] text: &str, #[case] duration: Duration) {
        let config = parse_ok(&format!(
            "shutdown_grace = \"{text}\"\n{MINIMAL}poll_interval = \"{text}\"\n"
        ));
        assert_eq!(config.shutdown_grace, duration);
        assert_eq!(config.watches[0].poll_interval, duration);
    }

    #[rstest]
    #[case("", "/")]
    #[case("/", "/")]
    #[case("//", "/")]
    #[case("documents", "/documents")]
    #[case("/documents/", "/documents")]
    #[case("//a//b//", "/a/b")]
    #[case("a/b/c", "/a/b/c")]
    #[case("/a.b/c-d_e", "/a.b/c-d_e")]
    fn key_prefix_is_normalised(#[case] written: &str, #[case] normalised: &str) {
        assert_eq!(normalise_key_prefix(written).as_deref(), Ok(normalised));
        let config = parse_ok(&watch_with(&format!("key_prefix = {written:?}")));
        assert_eq!(config.watches[0].key_prefix, normalised);
    }

    #[rstest]
    #[case("/a/../b")]
    #[case("..")]
    #[case("/a..b")]
    #[case("/a/./b")]
    #[case(".")]
    #[case("a\\b")]
    #[case("/a\tb")]
    fn malformed_key_prefixes_are_refused(#[case] written: &str) {
        assert!(normalise_key_prefix(written).is_err(), "{written:?}");
    }

    #[rstest]
    #[case("/a/./b/../c", "/a/c")]
    #[case("/srv/drop/", "/srv/drop")]
    #[case("/..", "/")]
    #[case("/a/../..", "/")]
    #[case("a/../../b", "../b")]
    #[case("../../x", "../../x")]
    fn paths_are_normalised_lexically(#[case] written: &str, #[case] normalised: &str) {
        assert_eq!(
            normalise_path(Path::new(written)),
            PathBuf::from(normalised)
        );
    }

    proptest::proptest! {
        #[test]
        fn normalised_key_prefixes_keep_the_spec_invariants(written in "[a-z/._]{0,20}") {
            if let Ok(prefix) = normalise_key_prefix(&written) {
                proptest::prop_assert!(prefix.starts_with('/'));
                proptest::prop_assert!(!prefix.contains("//"));
                proptest::prop_assert!(!prefix.contains(".."));
                proptest::prop_assert!(prefix == "/" || !prefix.ends_with('/'));
                proptest::prop_assert_eq!(normalise_key_prefix(&prefix), Ok(prefix.clone()));
            }
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let text = "\
[api]
api_key_file = \"keys/../api_key\"
[state]
dir = \"state\"
[[watch]]
path = \"./drop/contracts/\"
bucket = \"b\"
after_delivery = \"move\"
move_to = \"../done\"
";
        let config = parse_str(text, Path::new("/opt/ingest/config.toml")).unwrap();
        assert_eq!(
            config.api.api_key_file,
            Some(PathBuf::from("/opt/ingest/api_key"))
        );
        assert_eq!(config.state.dir, PathBuf::from("/opt/ingest/state"));
        assert_eq!(
            config.watches[0].path,
            PathBuf::from("/opt/ingest/drop/contracts")
        );
        assert_eq!(config.watches[0].move_to, Some(PathBuf::from("/opt/done")));
    }

    #[test]
    fn rules_types_and_metadata_are_read() {
        let text = format!(
            "{MINIMAL}url_template = \"https://cdn.example.com{{key_prefix}}/{{file_name}}\"
metadata = {{ n = 1, s = \"x\", list = [true, 2.5], when = 1979-05-27, nested = {{ k = \"v\" }} }}
[watch.types]
\"image/*\" = \"video\"
\"text/csv\" = \"text\"
[[watch.rule]]
match = \"**/*.jpg\"
property = \"thumbnail\"
type = \"image\"
mime_type = \"image/jpeg\"
delivery = \"url\"
[[watch.rule]]
match = \"*.json\"
"
        );
        let watch = parse_ok(&text).watches.remove(0);
        assert_eq!(
            serde_json::Value::Object(watch.metadata),
            json!({"n": 1, "s": "x", "list": [true, 2.5], "when": "1979-05-27", "nested": {"k": "v"}})
        );
        assert_eq!(
            watch.types,
            BTreeMap::from([
                ("image/*".to_owned(), "video".to_owned()),
                ("text/csv".to_owned(), "text".to_owned()),
            ])
        );
        assert_eq!(
            watch.rules,
            vec![
                Rule {
                    matches: "**/*.jpg".to_owned(),
                    property: Some("thumbnail".to_owned()),
                    blob_type: Some("image".to_owned()),
                    mime_type: Some("image/jpeg".to_owned()),
                    delivery: Some(DeliveryMode::Url),
                },
                Rule {
                    matches: "*.json".to_owned(),
                    property: None,
                    blob_type: None,
                    mime_type: None,
                    delivery: None,
                },
            ]
        );
    }

    #[test]
    fn base_url_loses_its_trailing_slash() {
        let config = parse_ok(&format!(
            "[api]\nbase_url = \"http://127.0.0.1:8080/\"\n{MINIMAL}"
        ));
        assert_eq!(config.api.base_url, "http://127.0.0.1:8080");
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let found = problems(&watch_with("metadata_file = \"é/x\""));
        assert_eq!((found[0].line, found[0].column), (4, 17));
        let found = problems(&format!("{MINIMAL}# é\u{1F600}\n\"élan\" = 1\n"));
        assert_eq!(found[0].key, "watch[0].\"élan\"");
        assert_eq!((found[0].line, found[0].column), (5, 1));
        assert_eq!(line_col("aé\u{1F600}b", 7), (1, 4));
    }

    #[test]
    fn display_puts_one_problem_per_line() {
        let err = parse("[api]\ntimeout = 60\ndialect = \"x\"\n").unwrap_err();
        let text = err.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with(
            "/etc/mixpeek-ingest/config.toml:1:1: watch: at least one [[watch]] is required"
        ));
        assert!(lines[1].starts_with(
            "/etc/mixpeek-ingest/config.toml:2:11: api.timeout: expected a duration string"
        ));
        assert!(
            lines[2].starts_with(
                "/etc/mixpeek-ingest/config.toml:3:11: api.dialect: invalid value \"x\""
            )
        );
    }

    #[test]
    fn a_syntax_error_is_reported_alone_without_a_key() {
        let err = parse(&format!("shutdown_grace = \"x\"\n[api\n{MINIMAL}")).unwrap_err();
        assert!(!err.problems.is_empty());
        assert!(err.problems.iter().all(|p| p.key.is_empty()), "{err}");
        assert_eq!(err.problems[0].line, 2, "{err}");
        assert!(
            err.to_string()
                .starts_with("/etc/mixpeek-ingest/config.toml:2:")
        );
    }

    #[test]
    fn load_reads_the_file_and_names_it_when_it_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[[watch]]\npath = \"drop\"\nbucket = \"b\"\n").unwrap();
        let config = load(&path).unwrap();
        assert_eq!(config.watches[0].path, dir.path().join("drop"));

        let missing = dir.path().join("missing.toml");
        let err = load(&missing).unwrap_err();
        assert!(err.problems.is_empty());
        assert_eq!(
            err.io.as_ref().map(std::io::Error::kind),
            Some(std::io::ErrorKind::NotFound)
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}: cannot read", missing.display())),
            "{text}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    const EXAMPLE: &str = include_str!("../../config.example.toml");

    #[test]
    fn the_example_config_is_valid_and_shows_its_values() {
        let config = parse_ok(EXAMPLE);
        assert_eq!(config.api.namespace.as_deref(), Some("netflix_prod"));
        assert_eq!(config.api.max_bytes_per_second, 0);
        assert_eq!(
            config.metrics.listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        let watch = &config.watches[0];
        assert_eq!(watch.path, PathBuf::from("/srv/drop/contracts"));
        assert_eq!(watch.key_prefix, "/documents");
        assert_eq!(watch.inline_max_bytes, 5_242_880);
        assert_eq!(watch.move_to, Some(PathBuf::from("/srv/done/contracts")));
        assert_eq!(watch.metadata["category"], json!("contracts"));
        assert_eq!(watch.types["text/markdown"], "text");
        assert_eq!(watch.rules[0].property.as_deref(), Some("thumbnail"));
        assert_eq!(watch.rules[0].blob_type.as_deref(), Some("image"));
    }

    /// Adding a key to a schema without showing it in `config.example.toml`
    /// fails here.
    #[test]
    fn the_example_config_shows_every_key() {
        fn assert_shows(table: &DeTable<'_>, schema: &Schema) {
            let missing: Vec<&str> = schema
                .keys
                .iter()
                .copied()
                .filter(|key| !table.contains_key(*key))
                .collect();
            assert!(
                missing.is_empty(),
                "config.example.toml does not show {missing:?} in {}",
                schema.title
            );
        }
        fn table<'t, 'i>(value: &'t Spanned<DeValue<'i>>) -> &'t DeTable<'i> {
            match value.get_ref() {
                DeValue::Table(table) => table,
                DeValue::Array(items) => table(&items[0]),
                other => panic!("expected a table, found {other:?}"),
            }
        }
        let doc = DeTable::parse(EXAMPLE).unwrap();
        let root = doc.get_ref();
        assert_shows(root, &ROOT);
        let sections: [(&str, &Schema); 5] = [
            ("api", &API),
            ("retry", &RETRY),
            ("state", &STATE),
            ("metrics", &METRICS),
            ("log", &LOG),
        ];
        for (key, schema) in sections {
            assert_shows(table(&root[key]), schema);
        }
        let watch = table(&root["watch"]);
        assert_shows(watch, &WATCH);
        assert_shows(table(&watch["rule"]), &RULE);
    }
}
