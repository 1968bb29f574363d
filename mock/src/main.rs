//! `mixpeek-mock`: run the Mixpeek API emulator by hand.
//!
//! Role: the command-line shell around [`mixpeek_mock::MockServer`].
//! Inputs: flags (see `--help`). Outputs: `listening on http://IP:PORT` as the
//! first line on stdout (scripts read the port from it), one log line per request
//! on stderr. Runs until Ctrl-C or SIGTERM.
//! Exit codes: 0 after a signal, 2 usage, 74 the address cannot be bound or
//! signals cannot be watched, 78 a bucket schema file is unreadable or invalid.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use mixpeek_mock::{BatchShapeErrors, Dialects, MockConfig, MockServer, TaskStatus, TaskTimeline};
use serde_json::Value;

const LONG_ABOUT: &str = "\
A local emulator of the Mixpeek bucket-object API, for trying mixpeek-ingest \
without an account, and for tests and benchmarks.

It serves both create dialects (POST /v1/buckets/{bucket}/objects/create and \
POST /v1/buckets/{bucket}/objects), GET /v1/buckets/{bucket} and \
GET /v1/tasks/{task_id}. Bodies are validated as Mixpeek does, against the \
request contract's JSON Schemas (422 naming the JSON pointer of a bad type, \
property or upload_id); unknown buckets answer 404. Nothing is stored: \
accepted objects are only logged, one line per request on stderr, and \
uploaded files are only counted and hashed.

Batch create: POST /v1/buckets/{bucket}/objects/batch takes {\"objects\": [...]} \
with at most 100 objects (more: 422). Each object is checked like a single \
create; objects that do not fit the bucket schema or name an unusable \
upload_id are listed in failed[] (object_index, error, error_type) while the \
others are created (succeeded[]). The answer is 200 if at least one object \
was created, else 422. A malformed object refuses the whole batch with 422, \
as pydantic does, unless --batch-shape-errors per-object.

Uploads: POST /v1/buckets/{bucket}/uploads (filename, content_type, \
file_size_bytes, file_hash, create_object_on_confirm, skip_duplicates, ...) \
answers 201 with an upload_id (upl_...) and a presigned_url on this emulator \
(/presigned/{upload_id}?X-Amz-...), or 200 with presigned_url null and \
is_duplicate true when a confirmed upload of the bucket has the same \
file_hash. The PUT to the presigned URL is streamed (counted and hashed, never \
kept in memory) and behaves like S3: it must carry the signed Content-Type \
and a Content-Length (chunked bodies get 411) equal to file_size_bytes, and \
no Authorization header (400), before presigned_url_expiration seconds \
have passed (then 403 AccessDenied, Request has expired: create a new \
upload); errors are S3 XML bodies. It answers \
ETag: \"<hex SHA-256 of the content>\" (SHA-256, not MD5). Then \
POST .../uploads/{upload_id}/confirm checks etag and file_size_bytes against \
what was PUT; only a confirmed upload of the same bucket may be used as \
{\"upload_id\": ...} in an object's blobs. Presigned PUTs need no API key \
and do not count against --rate-limit.

Tasks: objects-create answers, and objects creates or batches with \
?auto_process=true, return a task_id. GET /v1/tasks/{task_id} answers \
PENDING for --task-pending, then PROCESSING for --task-processing, then \
--task-outcome (default COMPLETED, at once).

Rate limit: --rate-limit N admits N API requests per fixed 60-second window \
that opens with the first request after the previous window ended; further \
requests get 429 with Retry-After (seconds until the window ends) and do not \
use up quota. Every /v1 request counts, whatever its status.

The first line on stdout is the address it listens on.";

const AFTER_HELP: &str = "\
Running it by hand:

  mixpeek-mock --listen 127.0.0.1:8080 --bucket contracts --api-key sk_test

then point mixpeek-ingest at it in its config file:

  [api]
  base_url = \"http://127.0.0.1:8080\"

  [[watch]]
  path = \"/tmp/drop\"
  bucket = \"contracts\"

and give mixpeek-ingest the same key (MIXPEEK_API_KEY=sk_test). With the \
default --listen 127.0.0.1:0 a free port is picked: read it from the first \
line printed. A bucket schema file holds a bucket_schema, e.g. \
{\"properties\": {\"content\": {\"type\": \"pdf\"}}}; blobs must then use those \
properties and types. Set RUST_LOG=debug for connection-level logs. Stop with Ctrl-C.";

#[derive(Debug, Parser)]
#[command(
    name = "mixpeek-mock",
    version,
    about = "A local emulator of the Mixpeek bucket-object API",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP
)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Require `Authorization: Bearer KEY` on every API request.
    #[arg(
        long,
        value_name = "KEY",
        env = "MIXPEEK_MOCK_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,

    /// A bucket that accepts any property (repeatable).
    #[arg(long = "bucket", value_name = "NAME")]
    buckets: Vec<String>,

    /// A bucket with the bucket_schema read from a JSON file (repeatable).
    #[arg(long = "bucket-schema", value_name = "NAME=PATH.json", value_parser = parse_schema_arg)]
    bucket_schemas: Vec<(String, PathBuf)>,

    /// API requests allowed per fixed 60 s window; more get 429 with Retry-After.
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,

    /// Time until a new task reaches its outcome: PENDING for the first half,
    /// PROCESSING for the second (e.g. 2s, 500ms, 1m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          conflicts_with_all = ["task_pending", "task_processing"])]
    task_delay: Option<Duration>,

    /// How long a new task answers PENDING.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    task_pending: Duration,

    /// How long a task then answers PROCESSING.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    task_processing: Duration,

    /// The status tasks end in: COMPLETED, COMPLETED_WITH_ERRORS, FAILED,
    /// CANCELED, or the docs page's DONE, SKIPPED, CANCELLED (also PENDING or
    /// PROCESSING, for tasks that never finish).
    #[arg(long, value_name = "STATUS", value_parser = parse_task_status, default_value = "COMPLETED")]
    task_outcome: TaskStatus,

    /// What a batch create does with a malformed object.
    #[arg(long, value_enum, value_name = "MODE", default_value = "reject-batch")]
    batch_shape_errors: BatchShapeArg,

    /// Make a create endpoint answer 405, as a server without it would (repeatable).
    #[arg(long = "disable-dialect", value_enum, value_name = "DIALECT")]
    disabled_dialects: Vec<DialectArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DialectArg {
    /// POST /v1/buckets/{bucket}/objects/create
    ObjectsCreate,
    /// POST /v1/buckets/{bucket}/objects, with objects/batch and the uploads routes
    Objects,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BatchShapeArg {
    /// Refuse the whole batch with 422 (FastAPI's detail), as pydantic does
    RejectBatch,
    /// List the object in failed[] and create the others
    PerObject,
}

impl From<BatchShapeArg> for BatchShapeErrors {
    fn from(arg: BatchShapeArg) -> Self {
        match arg {
            BatchShapeArg::RejectBatch => BatchShapeErrors::RejectBatch,
            BatchShapeArg::PerObject => BatchShapeErrors::PerObject,
        }
    }
}

/// `250ms`, `2s`, `1.5s`, `10m`, `1h`, or a bare number of seconds.
fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 2s or 500ms, got '{raw}'"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{raw}': use ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("'{raw}': {e}"))
}

fn parse_task_status(raw: &str) -> Result<TaskStatus, String> {
    TaskStatus::named(raw).ok_or_else(|| {
        let names: Vec<&str> = TaskStatus::NAMED.iter().map(TaskStatus::as_str).collect();
        format!(
            "unknown task status '{raw}': use one of {}",
            names.join(", ")
        )
    })
}

fn parse_schema_arg(raw: &str) -> Result<(String, PathBuf), String> {
    match raw.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!("expected NAME=PATH.json, got '{raw}'")),
    }
}

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error("cannot read the schema of bucket '{bucket}' from {}: {source}", path.display())]
    SchemaRead {
        bucket: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the schema of bucket '{bucket}' in {} is not valid: {reason}", path.display())]
    SchemaInvalid {
        bucket: String,
        path: PathBuf,
        reason: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot watch for Ctrl-C: {0}")]
    Signal(std::io::Error),
}

impl MainError {
    /// sysexits: 78 configuration error, 74 I/O error.
    fn exit_code(&self) -> u8 {
        match self {
            MainError::SchemaRead { .. } | MainError::SchemaInvalid { .. } => 78,
            MainError::Listen { .. } | MainError::Signal(_) => 74,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mixpeek-mock: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(args: Args) -> Result<(), MainError> {
    let config = config_from(&args)?;
    if config.buckets.is_empty() {
        tracing::warn!("no bucket configured (--bucket NAME): every create will answer 404");
    }
    let server = MockServer::start(config).map_err(|source| MainError::Listen {
        addr: args.listen,
        source,
    })?;
    println!("listening on {}", server.base_url());
    // A script piping stdout waits for this line; do not leave it in a buffer.
    let _ = std::io::stdout().flush();
    wait_for_stop_signal().map_err(MainError::Signal)?;
    tracing::info!(
        requests = server.request_count(),
        objects = server.objects().len(),
        "stopping"
    );
    server.shutdown();
    Ok(())
}

fn config_from(args: &Args) -> Result<MockConfig, MainError> {
    let mut config = MockConfig {
        api_key: args.api_key.clone(),
        listen: args.listen,
        rate_limit_per_minute: args.rate_limit,
        task_timeline: task_timeline(args),
        batch_shape_errors: args.batch_shape_errors.into(),
        dialects: Dialects {
            objects_create: !args.disabled_dialects.contains(&DialectArg::ObjectsCreate),
            objects: !args.disabled_dialects.contains(&DialectArg::Objects),
        },
        ..MockConfig::default()
    };
    for name in &args.buckets {
        config = config.with_bucket(name.clone());
    }
    for (bucket, path) in &args.bucket_schemas {
        let schema = read_schema(bucket, path)?;
        config = config.with_bucket_schema(bucket.clone(), schema);
    }
    Ok(config)
}

fn task_timeline(args: &Args) -> TaskTimeline {
    let (pending, processing) = match args.task_delay {
        Some(total) => (total / 2, total - total / 2),
        None => (args.task_pending, args.task_processing),
    };
    TaskTimeline::new(pending, processing).ending(args.task_outcome.clone())
}

fn read_schema(bucket: &str, path: &PathBuf) -> Result<Value, MainError> {
    let text = std::fs::read_to_string(path).map_err(|source| MainError::SchemaRead {
        bucket: bucket.to_string(),
        path: path.clone(),
        source,
    })?;
    let invalid = |reason: String| MainError::SchemaInvalid {
        bucket: bucket.to_string(),
        path: path.clone(),
        reason,
    };
    let schema: Value = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    check_schema(&schema).map_err(invalid)?;
    Ok(schema)
}

/// A `bucket_schema` is `{"properties": {NAME: {"type": TYPE, ...}, ...}}`.
fn check_schema(schema: &Value) -> Result<(), String> {
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .ok_or("expected a JSON object with a \"properties\" object")?;
    for (name, field) in properties {
        if field.get("type").and_then(Value::as_str).is_none() {
            return Err(format!("property '{name}' has no \"type\" string"));
        }
    }
    Ok(())
}

fn wait_for_stop_signal() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                result = tokio::signal::ctrl_c() => result,
                _ = term.recv() => Ok(()),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use rstest::rstest;
    use serde_json::json;

    #[test]
    fn cli_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn help_explains_pointing_mixpeek_ingest_at_it() {
        let help = Args::command().render_long_help().to_string();
        assert!(
            help.contains("base_url = \"http://127.0.0.1:8080\""),
            "{help}"
        );
        assert!(help.contains("--disable-dialect"));
        for needle in [
            "/presigned/",
            "ETag",
            "SHA-256",
            "Content-Length",
            "objects/batch",
            "failed[]",
            "--task-delay",
            "--task-outcome",
            "fixed 60-second window",
        ] {
            assert!(help.contains(needle), "{needle} missing from --help");
        }
    }

    #[test]
    fn task_and_batch_flags_become_a_config() {
        let args = Args::try_parse_from([
            "mixpeek-mock",
            "--task-pending",
            "250ms",
            "--task-processing",
            "2s",
            "--task-outcome",
            "completed-with-errors",
            "--batch-shape-errors",
            "per-object",
        ])
        .expect("valid flags");
        let config = config_from(&args).expect("no schema files to read");
        assert_eq!(
            config.task_timeline,
            TaskTimeline::new(Duration::from_millis(250), Duration::from_secs(2))
                .ending(TaskStatus::CompletedWithErrors)
        );
        assert_eq!(config.batch_shape_errors, BatchShapeErrors::PerObject);

        let args = Args::try_parse_from(["mixpeek-mock", "--task-delay", "3s"]).expect("valid");
        let timeline = config_from(&args).expect("config").task_timeline;
        assert_eq!(
            (timeline.pending, timeline.processing),
            (Duration::from_millis(1500), Duration::from_millis(1500))
        );
        let defaults =
            config_from(&Args::try_parse_from(["mixpeek-mock"]).expect("valid")).expect("config");
        assert_eq!(defaults.task_timeline, TaskTimeline::default());
        assert_eq!(defaults.batch_shape_errors, BatchShapeErrors::RejectBatch);
    }

    #[rstest]
    #[case(&["--task-delay", "1s", "--task-pending", "1s"])]
    #[case(&["--task-outcome", "DOWNLOADING"])]
    #[case(&["--task-pending", "2 fortnights"])]
    fn bad_task_flags_are_usage_errors(#[case] flags: &[&str]) {
        let mut argv = vec!["mixpeek-mock"];
        argv.extend_from_slice(flags);
        assert!(Args::try_parse_from(argv).is_err());
    }

    #[rstest]
    #[case("0", Some(Duration::ZERO))]
    #[case("250ms", Some(Duration::from_millis(250)))]
    #[case("2s", Some(Duration::from_secs(2)))]
    #[case("1.5s", Some(Duration::from_millis(1500)))]
    #[case("10m", Some(Duration::from_secs(600)))]
    #[case("1h", Some(Duration::from_secs(3600)))]
    #[case("3", Some(Duration::from_secs(3)))]
    #[case("s", None)]
    #[case("-1s", None)]
    #[case("2d", None)]
    fn durations(#[case] raw: &str, #[case] parsed: Option<Duration>) {
        assert_eq!(parse_duration(raw).ok(), parsed);
    }

    #[test]
    fn flags_become_a_config() {
        let args = Args::try_parse_from([
            "mixpeek-mock",
            "--listen",
            "127.0.0.1:8080",
            "--api-key",
            "k",
            "--bucket",
            "a",
            "--bucket",
            "b",
            "--rate-limit",
            "10",
            "--disable-dialect",
            "objects-create",
        ])
        .expect("valid flags");
        let config = config_from(&args).expect("no schema files to read");
        assert_eq!(config.listen, "127.0.0.1:8080".parse().expect("address"));
        assert_eq!(config.api_key.as_deref(), Some("k"));
        assert_eq!(config.buckets.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(config.rate_limit_per_minute, Some(10));
        assert_eq!(
            config.dialects,
            Dialects {
                objects_create: false,
                objects: true
            }
        );
    }

    #[rstest]
    #[case("docs=/tmp/s.json", Some(("docs", "/tmp/s.json")))]
    #[case("docs=", None)]
    #[case("=/tmp/s.json", None)]
    #[case("docs", None)]
    fn schema_arg_parsing(#[case] raw: &str, #[case] parsed: Option<(&str, &str)>) {
        let expected = parsed.map(|(n, p)| (n.to_string(), PathBuf::from(p)));
        assert_eq!(parse_schema_arg(raw).ok(), expected);
    }

    #[rstest]
    #[case(json!({"properties": {}}), true)]
    #[case(json!({"properties": {"content": {"type": "pdf"}}}), true)]
    #[case(json!({"content": {"type": "pdf"}}), false)]
    #[case(json!({"properties": {"content": {}}}), false)]
    #[case(json!([]), false)]
    fn schema_shape(#[case] schema: Value, #[case] ok: bool) {
        assert_eq!(check_schema(&schema).is_ok(), ok);
    }

    #[test]
    fn unreadable_schema_file_is_a_config_error() {
        let err = read_schema("docs", &PathBuf::from("/nonexistent/schema.json"))
            .expect_err("the file does not exist");
        assert_eq!(err.exit_code(), 78);
        assert!(err.to_string().contains("'docs'"));
    }
}
