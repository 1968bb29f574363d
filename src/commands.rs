//! One function per subcommand (SPEC §9). Each returns its exit code or a
//! fatal error; `main` turns the error into its exit code.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tracing::{info, warn};

use crate::api::{self, ApiClient};
use crate::config::{self, Config};
use crate::daemon::intake::Intake;
use crate::daemon::shutdown::{Control, Signals};
use crate::daemon::submit::{DIALECT_META_KEY, planned_dialect};
use crate::daemon::{Engine, OnceEnd, StoreHandle, build::Built};
use crate::error::{FatalError, exit};
use crate::pipeline::{Dialect, ObjectSpec, request};
use crate::store::{Store, unix_now_ms};
use crate::telemetry::{self, Counters};

/// Loads the configuration and installs logging as it asks.
pub fn load_config(path: &Path) -> Result<Config, FatalError> {
    let config = config::load(path)?;
    telemetry::init_logging(&config.log);
    if let Some(warning) =
        config::permission_warning(path, "the configuration file", 0o004, "chmod 640")
    {
        warn!("{warning}");
    }
    for warning in config.not_yet_applied() {
        warn!("{warning}");
    }
    Ok(config)
}

/// `once`: deliver everything ready, then exit. 1 when objects ended as
/// dead letters, submissions were paused, or a watch root could not be read;
/// 130 when interrupted.
pub async fn once(config: Config, shutdown: impl Future<Output = ()>) -> Result<u8, FatalError> {
    let key = api::load_api_key(&config.api)?;
    let engine = Engine::new(Arc::new(config), key, Arc::new(Counters::default()))?;
    let report = engine.once(shutdown).await?;
    eprintln!("once: {}", report.counters);
    let mut code = exit::OK;
    if !report.awaiting_marker.is_empty() {
        eprintln!(
            "once: {} group(s) wait for their ready_marker",
            report.awaiting_marker.len()
        );
    }
    for root in &report.unscannable {
        eprintln!("once: watch root {} could not be scanned", root.display());
        code = exit::FAILURE;
    }
    if report.counters.objects_dead > 0 {
        eprintln!(
            "once: {} object(s) ended as dead letters; see `mixpeek-ingest status`",
            report.counters.objects_dead
        );
        code = exit::FAILURE;
    }
    match report.end {
        OnceEnd::Done => {}
        OnceEnd::Paused(reason) => {
            eprintln!(
                "once: submissions paused: {reason}; the outbox keeps what was not sent, run again once fixed"
            );
            code = exit::FAILURE;
        }
        OnceEnd::Interrupted => code = exit::INTERRUPTED,
    }
    Ok(code)
}

/// `run`: the daemon, until SIGTERM or SIGINT. SIGHUP restarts the engine
/// on the new configuration once it has loaded; requests in flight finish
/// first, and nothing recorded is lost across the switch.
pub async fn run(config: Config, path: &Path) -> Result<u8, FatalError> {
    let mut signals = Signals::install()?;
    let counters = Arc::new(Counters::default());
    let mut config = config;
    loop {
        let key = api::load_api_key(&config.api)?;
        let engine = Engine::new(Arc::new(config.clone()), key, Arc::clone(&counters))?;
        match engine.run(signals.next(path)).await? {
            Control::Stop => {
                info!("stopped; what was not delivered stays in the outbox");
                return Ok(exit::OK);
            }
            Control::Reload(new) => {
                info!(watches = new.watches.len(), "configuration reloaded");
                config = *new;
            }
        }
    }
}

/// `plan`: what would be sent now, one JSON line per object; no network, no
/// state writes. Files are taken as they are, without waiting for them to settle.
pub fn plan(config: &Config, out: &mut impl std::io::Write) -> Result<u8, FatalError> {
    let store = Store::open_read_only(&config.state.dir)?;
    let remembered = store
        .meta(DIALECT_META_KEY)?
        .as_deref()
        .and_then(Dialect::parse);
    let dialect = planned_dialect(config.api.dialect, remembered);
    let mut print = |spec: &ObjectSpec| -> Result<(), FatalError> {
        let request = request::render(spec, dialect, config.api.auto_process);
        writeln!(out, "{}", request::plan_view(&request))
            .map_err(|err| FatalError::io("standard output", err))
    };
    for item in store.due(i64::MAX, usize::MAX)? {
        match serde_json::from_str::<ObjectSpec>(&item.spec_json) {
            Ok(spec) => print(&spec)?,
            Err(err) => warn!(id = item.id, error = %err, "stored request is unreadable"),
        }
    }
    let watches: Vec<_> = config
        .watches
        .iter()
        .map(|w| config::Watch {
            settle: std::time::Duration::ZERO,
            ..w.clone()
        })
        .collect();
    let mut intake = Intake::new(&watches, &store)?;
    let counters = Counters::default();
    let now = std::time::Instant::now();
    for index in 0..intake.len() {
        intake.scan(index, &counters);
    }
    let (plans, waiting) = intake.ready(now, false);
    let store = StoreHandle::new(store);
    for plan in plans {
        let (built, _) = plan.build(&store, dialect.has_upload(), &counters);
        match built {
            Built::Object { spec, .. } => print(&spec)?,
            Built::LocalDead { reason, .. } => {
                eprintln!("plan: {} would be a dead letter: {reason}", plan.key_prefix);
            }
            Built::Skipped { .. } => {
                eprintln!(
                    "plan: {} would be skipped: every blob already delivered",
                    plan.key_prefix
                );
            }
            Built::Unsettled { .. } | Built::Empty => {}
        }
    }
    for key_prefix in waiting.awaiting_marker {
        eprintln!("plan: {key_prefix} waits for its ready_marker");
    }
    Ok(exit::OK)
}

/// `status [--json]`.
pub fn status(
    config: &Config,
    as_json: bool,
    out: &mut impl std::io::Write,
) -> Result<u8, FatalError> {
    let store = Store::open_read_only(&config.state.dir)?;
    let summary = store.summary(unix_now_ms())?;
    let text = if as_json {
        serde_json::to_string_pretty(&summary).expect("a summary always serialises")
    } else {
        summary.to_string()
    };
    writeln!(out, "{text}").map_err(|err| FatalError::io("standard output", err))?;
    Ok(exit::OK)
}

/// `retry [--all | ID…]`.
pub fn retry(config: &Config, all: bool, ids: &[i64]) -> Result<u8, FatalError> {
    let mut store = Store::open(&config.state.dir)?;
    let requeued = store.retry_dead(if all { None } else { Some(ids) })?;
    println!("{requeued} dead letter(s) back in the outbox");
    Ok(if all || requeued == ids.len() {
        exit::OK
    } else {
        eprintln!("some ids are not dead letters; see `mixpeek-ingest status`");
        exit::FAILURE
    })
}

/// `check [--online]`: the configuration is valid (loading it proved that);
/// report what would still stop the daemon or surprise an operator.
pub async fn check(config: &Config, path: &Path, online: bool) -> Result<u8, FatalError> {
    let mut problems = 0;
    println!(
        "{}: configuration is valid ({} watch(es))",
        path.display(),
        config.watches.len()
    );
    for watch in &config.watches {
        if !watch.path.is_dir() {
            println!(
                "warning: watch {}: not a directory yet; it is scanned once it exists",
                watch.path.display()
            );
        }
    }
    if let Some(key_file) = &config.api.api_key_file
        && let Some(warning) = api::key_file_warning(key_file)
    {
        println!("warning: {warning}");
    }
    if online {
        let key = api::load_api_key(&config.api)?;
        let client = ApiClient::new(&config.api, key)?;
        for watch in &config.watches {
            let response = client.get_bucket(&watch.bucket).await;
            match response.status() {
                Some(200..=299) => println!("bucket {}: reachable", watch.bucket),
                Some(401 | 403) => {
                    problems += 1;
                    println!(
                        "error: the API key was refused; fix api.api_key_file, the credential or ${}",
                        config.api.api_key_env
                    );
                }
                Some(404) => {
                    problems += 1;
                    println!(
                        "error: bucket {} does not exist; create it or fix watch.bucket",
                        watch.bucket
                    );
                }
                other => {
                    problems += 1;
                    let detail =
                        other.map_or_else(|| response.error_text(), |code| format!("HTTP {code}"));
                    println!("error: bucket {}: {detail}", watch.bucket);
                }
            }
        }
    }
    Ok(if problems == 0 {
        exit::OK
    } else {
        exit::FAILURE
    })
}
