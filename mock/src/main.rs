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

use clap::{Parser, ValueEnum};
use mixpeek_mock::{Dialects, MockConfig, MockServer};
use serde_json::Value;

const LONG_ABOUT: &str = "\
A local emulator of the Mixpeek bucket-object API, for trying mixpeek-ingest \
without an account, and for tests and benchmarks.

It serves both create dialects (POST /v1/buckets/{bucket}/objects/create and \
POST /v1/buckets/{bucket}/objects), GET /v1/buckets/{bucket} and \
GET /v1/tasks/{task_id}. Bodies are validated as Mixpeek does (422 on a bad \
type, property or upload_id); unknown buckets answer 404. Nothing is stored: \
accepted objects are only logged, one line per request on stderr.

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

    /// API requests allowed per minute; more get 429 with Retry-After.
    #[arg(long, value_name = "N")]
    rate_limit: Option<u32>,

    /// Make a create endpoint answer 405, as a server without it would (repeatable).
    #[arg(long = "disable-dialect", value_enum, value_name = "DIALECT")]
    disabled_dialects: Vec<DialectArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DialectArg {
    /// POST /v1/buckets/{bucket}/objects/create
    ObjectsCreate,
    /// POST /v1/buckets/{bucket}/objects
    Objects,
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
