//! One function per subcommand (SPEC §9). Each returns its exit code or a
//! fatal error; `main` turns the error into its exit code.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tracing::{info, warn};

use crate::api::{self, ApiClient};
use crate::config::{self, Config};
use crate::daemon::hash::{self, HEAD_SIZE};
use crate::daemon::intake::Intake;
use crate::daemon::scan;
use crate::daemon::shutdown::{Control, Signals};
use crate::daemon::submit::{DIALECT_META_KEY, planned_dialect};
use crate::daemon::{Engine, OnceEnd, StoreHandle, build::Built};
use crate::error::{FatalError, exit};
use crate::pipeline::classify::Classifier;
use crate::pipeline::group::{self, Role};
use crate::pipeline::schema::{self, Mismatch, Sample, Sampler};
use crate::pipeline::settle::NameFilter;
use crate::pipeline::{Dialect, ObjectSpec, request};
use crate::progress::{Progress, Style};
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

/// Loads the API key for a command that sends requests, with a warning when
/// its file can be read by others than the daemon's user (`check` prints
/// the same finding on stdout instead).
fn load_key(config: &Config) -> Result<api::ApiKey, FatalError> {
    let key = api::load_api_key(&config.api)?;
    if let Some(warning) = config
        .api
        .api_key_file
        .as_deref()
        .and_then(api::key_file_warning)
    {
        warn!("{warning}");
    }
    Ok(key)
}

/// `once`: deliver everything ready, then exit. 1 when objects ended as
/// dead letters, submissions were paused, or a watch root could not be read;
/// 130 when interrupted.
///
/// Progress goes to stderr as it happens (a bar on a terminal, a plain line
/// every few seconds otherwise; see [`crate::progress`]), then a summary
/// line, then the `once: files_seen=…` line of every counter.
pub async fn once(config: Config, shutdown: impl Future<Output = ()>) -> Result<u8, FatalError> {
    let key = load_key(&config)?;
    let state_dir = config.state.dir.clone();
    let engine = Engine::new(Arc::new(config), key, Arc::new(Counters::default()))?;
    let progress = Progress::start(Arc::clone(engine.counters()), &state_dir, Style::detect());
    // On the same task as `once`, and dropped with it: the display can
    // neither outlive the work nor hold up its end. On an error, dropping
    // `progress` clears the bar before `main` prints the error.
    let report = alongside(engine.once(shutdown), progress.report()).await?;
    progress.finish(&report.counters).await;
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
/// first, and nothing recorded is lost across the switch. Each start also
/// compares the watches with their bucket schemas, beside the engine, as
/// warnings only.
pub async fn run(config: Config, path: &Path) -> Result<u8, FatalError> {
    let mut signals = Signals::install()?;
    let counters = Arc::new(Counters::default());
    let mut config = config;
    loop {
        let key = load_key(&config)?;
        let shared = Arc::new(config.clone());
        let engine = Engine::new(Arc::clone(&shared), key.clone(), Arc::clone(&counters))?;
        // The engine's own client: the check's GETs count against
        // `requests_per_minute` like every other API call.
        let schema_check = warn_schema_mismatches(shared, engine.client().clone());
        let control = alongside(engine.run(signals.next(path)), schema_check).await?;
        match control {
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
    let mut intake = Intake::new(&watches)?;
    let counters = Counters::default();
    let now = std::time::Instant::now();
    let store = StoreHandle::new(store);
    for index in 0..intake.len() {
        intake.scan(index, &counters, &store);
    }
    let (plans, _) = intake.ready(now, false);
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
    for key_prefix in intake.awaiting_marker() {
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
/// report what would still stop the daemon or surprise an operator. Exit 1
/// when a key, bucket or schema problem was found (the file itself is valid,
/// so not 78).
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
        for finding in schema_findings(config, &client).await {
            problems += print_bucket_finding(config, &finding);
        }
    }
    Ok(if problems == 0 {
        exit::OK
    } else {
        exit::FAILURE
    })
}

/// Prints what `check --online` found for one bucket; returns the number of
/// problems.
fn print_bucket_finding(config: &Config, finding: &BucketFinding) -> usize {
    let bucket = &finding.bucket;
    match &finding.answer {
        BucketAnswer::KeyRefused => {
            println!(
                "error: the API key was refused; fix api.api_key_file, the credential or ${}",
                config.api.api_key_env
            );
            1
        }
        BucketAnswer::NotFound => {
            println!("error: bucket {bucket} does not exist; create it or fix watch.bucket");
            1
        }
        BucketAnswer::Failed(detail) => {
            println!("error: bucket {bucket}: {detail}");
            1
        }
        BucketAnswer::Unchecked(reason) => {
            println!("bucket {bucket}: reachable");
            println!("warning: bucket {bucket}: {reason}");
            0
        }
        BucketAnswer::Compared(watches) => {
            println!("bucket {bucket}: reachable");
            let mut problems = 0;
            for watch in watches {
                let path = watch.path.display();
                problems += watch.mismatches.len();
                for mismatch in watch.mismatches.iter().take(MISMATCHES_LISTED) {
                    println!("error: watch {path}: {mismatch}");
                }
                if let Some(more) = watch.unlisted() {
                    println!("error: watch {path}: {more}");
                }
                if watch.mismatches.is_empty() && watch.properties > 0 {
                    println!(
                        "watch {path}: {} blob propert{} match the bucket schema of {bucket}",
                        watch.properties,
                        if watch.properties == 1 { "y" } else { "ies" }
                    );
                }
                if let Some(note) = watch.sampling_note() {
                    println!("warning: watch {path}: {note}");
                }
            }
            problems
        }
    }
}

/// Logs the bucket schema comparison as warnings, one per mismatch. Run
/// beside the engine at `run` start: it never blocks or fails the start, and
/// whatever goes wrong is one warning.
async fn warn_schema_mismatches(config: Arc<Config>, client: ApiClient) {
    for finding in schema_findings(&config, &client).await {
        let bucket = &finding.bucket;
        match &finding.answer {
            BucketAnswer::KeyRefused => {
                warn!(%bucket, "bucket schema not checked: the API key was refused");
            }
            BucketAnswer::NotFound => {
                warn!(%bucket, "bucket schema not checked: the bucket does not exist");
            }
            BucketAnswer::Failed(detail) => {
                warn!(%bucket, error = %detail, "bucket schema not checked");
            }
            // Nothing will be refused for it: worth knowing, not a warning.
            BucketAnswer::Unchecked(reason) => info!(%bucket, "{reason}"),
            BucketAnswer::Compared(watches) => {
                for watch in watches {
                    let path = watch.path.display();
                    for mismatch in watch.mismatches.iter().take(MISMATCHES_LISTED) {
                        warn!(watch = %path, %bucket, "bucket schema mismatch: {mismatch}");
                    }
                    if let Some(more) = watch.unlisted() {
                        warn!(watch = %path, %bucket, "bucket schema mismatch: {more}");
                    }
                    if let Some(note) = watch.sampling_note() {
                        info!(watch = %path, "{note}");
                    }
                }
            }
        }
    }
}

/// Polls `main` to its end while `side` runs beside it on the same task;
/// `side` is dropped unfinished when `main` ends first, so it can never hold
/// up a stop.
async fn alongside<T>(main: impl Future<Output = T>, side: impl Future<Output = ()>) -> T {
    tokio::pin!(main, side);
    let mut side_done = false;
    loop {
        tokio::select! {
            biased;
            out = &mut main => return out,
            () = &mut side, if !side_done => side_done = true,
        }
    }
}

/// Most files whose first bytes a schema check reads per watch, so a tree of
/// a million files costs a bounded number of opens.
const SCHEMA_SAMPLE_LIMIT: usize = 10_000;
/// Most mismatches listed per watch: grouped by `file`, a watch has a
/// property per file name, and a thousand lines would bury the fix.
const MISMATCHES_LISTED: usize = 20;

/// What one bucket's GET said, and the comparison of its watches.
struct BucketFinding {
    bucket: String,
    answer: BucketAnswer,
}

enum BucketAnswer {
    KeyRefused,
    NotFound,
    /// Any other failure: transport error, unexpected status.
    Failed(String),
    /// Reachable, but there is no schema to compare with.
    Unchecked(String),
    Compared(Vec<WatchFinding>),
}

struct WatchFinding {
    path: std::path::PathBuf,
    mismatches: Vec<Mismatch>,
    /// Distinct properties the watch can send.
    properties: usize,
    /// Files not read because of [`SCHEMA_SAMPLE_LIMIT`].
    passed_over: usize,
}

impl WatchFinding {
    /// The line that stands for the mismatches beyond [`MISMATCHES_LISTED`].
    fn unlisted(&self) -> Option<String> {
        let more = self.mismatches.len().checked_sub(MISMATCHES_LISTED)?;
        (more > 0).then(|| {
            format!(
                "{more} more properties do not fit the bucket schema; name the properties of \
                 these files with `property` in [[watch.rule]]s"
            )
        })
    }

    fn sampling_note(&self) -> Option<String> {
        (self.passed_over > 0).then(|| {
            format!(
                "{} file(s) were not looked at: the check reads at most {SCHEMA_SAMPLE_LIMIT} \
                 files per watch, one per property, extension and matching rules",
                self.passed_over
            )
        })
    }
}

/// GETs each bucket once (watches sharing a bucket share the answer) while
/// the watches' expectations are read, then compares.
async fn schema_findings(config: &Config, client: &ApiClient) -> Vec<BucketFinding> {
    let mut buckets: Vec<&str> = Vec::new();
    for watch in &config.watches {
        if !buckets.contains(&watch.bucket.as_str()) {
            buckets.push(&watch.bucket);
        }
    }
    let watches = config.watches.clone();
    let state_dir = config.state.dir.clone();
    let setting = config.api.dialect;
    let local = tokio::task::spawn_blocking(move || {
        let remembered = Store::open_read_only(&state_dir)
            .ok()
            .and_then(|store| store.meta(DIALECT_META_KEY).ok().flatten())
            .as_deref()
            .and_then(Dialect::parse);
        let expected: Vec<_> = watches.iter().map(watch_expectations).collect();
        (planned_dialect(setting, remembered), expected)
    });
    // One after the other: a config names few buckets, and the scan beside
    // takes longer anyway.
    let answers = async {
        let mut answers = Vec::with_capacity(buckets.len());
        for bucket in &buckets {
            answers.push(client.get_bucket(bucket).await);
        }
        answers
    };
    let (local, answers) = tokio::join!(local, answers);
    let (dialect, expected) = match local {
        Ok(local) => local,
        Err(err) => {
            // A panic in the scan is a bug; the check says so and the
            // daemon goes on.
            let reason = format!("the watches could not be read: {err}");
            return buckets
                .iter()
                .map(|b| BucketFinding {
                    bucket: (*b).to_owned(),
                    answer: BucketAnswer::Failed(reason.clone()),
                })
                .collect();
        }
    };
    buckets
        .iter()
        .zip(answers)
        .map(|(bucket, response)| {
            let answer = match response.status() {
                Some(200..=299) => compare_bucket(config, bucket, &response, dialect, &expected),
                Some(401 | 403) => BucketAnswer::KeyRefused,
                Some(404) => BucketAnswer::NotFound,
                // The status with the server's message, or the transport error.
                _ => BucketAnswer::Failed(response.error_text()),
            };
            BucketFinding {
                bucket: (*bucket).to_owned(),
                answer,
            }
        })
        .collect()
}

/// Compares every watch of `bucket` with the schema in its GET answer.
fn compare_bucket(
    config: &Config,
    bucket: &str,
    response: &api::Response,
    dialect: Dialect,
    expected: &[(Vec<schema::Expectation>, usize)],
) -> BucketAnswer {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(response.body()) else {
        return BucketAnswer::Unchecked(
            "the bucket's answer is not JSON; the bucket schema was not checked".to_owned(),
        );
    };
    let bucket_schema = schema::bucket_schema(&body);
    let mut watches = Vec::new();
    for (watch, (expectations, passed_over)) in config.watches.iter().zip(expected) {
        if watch.bucket != bucket {
            continue;
        }
        match schema::compare(expectations, dialect, bucket_schema) {
            Ok(mismatches) => {
                let properties: std::collections::BTreeSet<&str> =
                    expectations.iter().map(|e| e.property.as_str()).collect();
                watches.push(WatchFinding {
                    path: watch.path.clone(),
                    mismatches,
                    properties: properties.len(),
                    passed_over: *passed_over,
                });
            }
            Err(missing) => return BucketAnswer::Unchecked(missing.to_string()),
        }
    }
    BucketAnswer::Compared(watches)
}

/// What a watch can send: the properties its rules name, and those of the
/// files in it now, classified as the daemon would (scan, ignore rules,
/// grouping roles, first bytes). Blocking; no network, no state writes.
/// Returns the expectations and the number of files not read for the limit.
fn watch_expectations(watch: &config::Watch) -> (Vec<schema::Expectation>, usize) {
    let mut expected = schema::rule_expectations(watch);
    // These compile globs config validation already checked; a failure here
    // leaves the rules' expectations alone.
    let (Ok(filter), Ok(classifier), Ok(mut sampler)) = (
        NameFilter::new(watch),
        Classifier::new(watch),
        Sampler::new(watch, SCHEMA_SAMPLE_LIMIT),
    ) else {
        return (expected, 0);
    };
    // A watch root that does not exist yet has no files to compare.
    let Ok(mut scanned) = scan::scan(&watch.path, watch.follow_symlinks, &filter) else {
        return (expected, 0);
    };
    scanned.files.sort_by(|a, b| a.rel.cmp(&b.rel));
    for file in &scanned.files {
        let is_blob = group::assign(watch, &file.rel).is_ok_and(|a| a.role == Role::Blob);
        if !is_blob || sampler.offer(&file.rel, &classifier.property(&file.rel)) != Sample::Take {
            continue;
        }
        // A file that cannot be read or classified is the daemon's to
        // report, with its path, when it comes to send it.
        let Ok(head) = read_head(file, watch.follow_symlinks) else {
            continue;
        };
        if let Ok(classified) = classifier.classify(&file.rel, &head) {
            expected.push(schema::file_expectation(&file.rel, &classified));
        }
    }
    (expected, sampler.passed_over())
}

/// The first bytes of a file the scan found, for classification. Opened as
/// the daemon opens it (`hash::open_checked`: a FIFO or a symlink swapped in
/// since the scan is refused before a byte is read, so nothing can hang).
fn read_head(file: &scan::ScannedFile, follow_symlinks: bool) -> Result<Vec<u8>, hash::ReadError> {
    use std::io::Read;
    let opened = hash::open_checked(&file.abs, file.size, file.mtime_ns, follow_symlinks)?;
    let mut head = Vec::with_capacity(HEAD_SIZE);
    opened.take(HEAD_SIZE as u64).read_to_end(&mut head)?;
    Ok(head)
}
