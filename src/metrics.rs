//! Metrics and health: Prometheus text exposition, `/healthz`, `/readyz` (SPEC §10).
//!
//! Role: the HTTP endpoint on `metrics.listen` that `run` serves beside the
//! pipeline. Inputs: a [`Probe`] (the engine implements it) that answers
//! with a [`Scrape`] of the figures, the [`Health`] verdict of
//! `pipeline::health`, and whether the start scan is queued. Outputs:
//! - `GET /metrics`: the Prometheus text format (0.0.4), encoded by the
//!   official client (`prometheus-client`), every name prefixed
//!   `mixpeek_ingest_` (see [`render`] for the list);
//! - `GET /healthz`: 200 with `ok: …`, or 503 with `paused: <reason>` (a
//!   refused key, a missing bucket, a wrong endpoint, a full state disk) or
//!   `stuck: …` (or `error: …` when the state store did not answer);
//! - `GET /readyz`: 503 until the start scan is queued (the moment
//!   `READY=1` goes to systemd), 200 after.
//!
//! Invariants: rendering is a pure function of a [`Scrape`], so what a scrape
//! shows is tested without a server; counters come from the process-wide
//! `telemetry::Counters` and only grow (a reload keeps them); gauges are read
//! at scrape time, so they are never stale.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};

use crate::error::FatalError;
use crate::pipeline::health::Health;
use crate::telemetry::{CountersSnapshot, RequestKind};

/// The prefix of every metric name.
pub const PREFIX: &str = "mixpeek_ingest";

/// The label value of `requests_total{code}` for a call that got no answer
/// (timeout, refused connection, cut stream).
pub const NO_ANSWER: &str = "transport";

/// Everything one scrape shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub counters: CountersSnapshot,
    /// Paths passed over, by reason.
    pub files_ignored: BTreeMap<&'static str, u64>,
    /// HTTP calls by kind and status (`None`: no answer).
    pub answers: BTreeMap<(RequestKind, Option<u16>), u64>,
    /// Full scans by reason.
    pub rescans: BTreeMap<&'static str, u64>,
    pub tasks_polled: u64,
    /// Tasks ended, by outcome.
    pub tasks_ended: BTreeMap<&'static str, u64>,
    /// `None` when the state store did not answer in time: the outbox
    /// gauges are left out rather than shown wrong.
    pub outbox: Option<Outbox>,
    /// Each watch's root and how it learns of changes (`events`, `polling`).
    pub watches: Vec<(String, &'static str)>,
    pub paused: bool,
    /// A write waits for the state disk (full, or read-only).
    pub disk_blocked: bool,
    pub healthy: bool,
    pub ready: bool,
}

/// The outbox gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outbox {
    pub pending: u64,
    pub due: u64,
    /// Since the oldest pending object was queued; zero when none is.
    pub oldest_pending_age: Duration,
}

/// What the endpoint asks the engine.
pub trait Probe: Send + Sync + 'static {
    /// The figures now.
    fn scrape(&self) -> impl Future<Output = Scrape> + Send;
    /// The verdict now; an error says why there is none (the state store did
    /// not answer).
    fn health(&self) -> impl Future<Output = Result<Health, String>> + Send;
    /// The start scan is queued.
    fn is_ready(&self) -> bool;
}

/// The exposition text of `scrape`. Metrics (all prefixed `mixpeek_ingest_`):
///
/// | name | type | labels |
/// |---|---|---|
/// | `files_discovered_total` | counter | |
/// | `files_ignored_total` | counter | `reason` |
/// | `files_hashed_total` | counter | |
/// | `hashed_bytes_total` | counter | |
/// | `objects_enqueued_total`, `objects_delivered_total`, `objects_skipped_total`, `objects_dead_total` | counter | |
/// | `requests_total` | counter | `kind` (`api`, `presigned`), `code` (status, or `transport`) |
/// | `retries_total` | counter | |
/// | `rescans_total` | counter | `reason` (`start`, `periodic`, `poll`, `overflow`, `watch_error`) |
/// | `tasks_polled_total` | counter | |
/// | `tasks_ended_total` | counter | `outcome` (`ok`, `failed`, `unknown`) |
/// | `outbox_pending`, `outbox_due` | gauge | |
/// | `outbox_oldest_pending_age_seconds` | gauge | |
/// | `watch_mode` | gauge (1) | `watch`, `mode` (`events`, `polling`) |
/// | `submissions_paused`, `state_disk_blocked`, `healthy`, `ready` | gauge (0/1) | |
pub fn render(scrape: &Scrape) -> String {
    let mut registry = Registry::with_prefix(PREFIX);
    let c = &scrape.counters;
    let counters: [(&str, &str, u64); 8] = [
        (
            "files_discovered",
            "Files found in the watches, each new version once",
            c.files_seen,
        ),
        (
            "files_hashed",
            "Files read and hashed for an object",
            c.files_hashed,
        ),
        (
            "objects_enqueued",
            "Objects recorded in the outbox",
            c.objects_enqueued,
        ),
        (
            "objects_delivered",
            "Objects the API acknowledged",
            c.objects_delivered,
        ),
        (
            "objects_skipped",
            "Objects not sent: every blob already delivered, or a file changed before its upload",
            c.objects_skipped,
        ),
        (
            "objects_dead",
            "Objects that ended as dead letters",
            c.objects_dead,
        ),
        (
            "retries",
            "Failed attempts scheduled again with backoff",
            c.retries,
        ),
        (
            "tasks_polled",
            "Processing task status polls sent",
            scrape.tasks_polled,
        ),
    ];
    for (name, help, value) in counters {
        registry.register(name, help, ConstCounter::new(value));
    }
    registry.register_with_unit(
        "hashed",
        "Bytes read and hashed for objects",
        Unit::Bytes,
        ConstCounter::new(c.bytes_hashed),
    );
    registry.register(
        "files_ignored",
        "Paths passed over, by reason",
        labelled(
            scrape
                .files_ignored
                .iter()
                .map(|(reason, n)| (vec![("reason", (*reason).to_owned())], *n)),
        ),
    );
    registry.register(
        "requests",
        "HTTP calls by kind (api, presigned) and status code (transport: no answer)",
        labelled(scrape.answers.iter().map(|((kind, code), n)| {
            let code = code.map_or_else(|| NO_ANSWER.to_owned(), |c| c.to_string());
            (vec![("kind", kind.as_str().to_owned()), ("code", code)], *n)
        })),
    );
    registry.register(
        "rescans",
        "Full scans of a watch, by reason",
        labelled(
            scrape
                .rescans
                .iter()
                .map(|(reason, n)| (vec![("reason", (*reason).to_owned())], *n)),
        ),
    );
    registry.register(
        "tasks_ended",
        "Processing tasks that reached an outcome",
        labelled(
            scrape
                .tasks_ended
                .iter()
                .map(|(outcome, n)| (vec![("outcome", (*outcome).to_owned())], *n)),
        ),
    );
    if let Some(outbox) = scrape.outbox {
        registry.register(
            "outbox_pending",
            "Objects in the outbox: queued, or waiting for a retry",
            ConstGauge::new(gauge_value(outbox.pending)),
        );
        registry.register(
            "outbox_due",
            "Objects in the outbox whose time to be sent has come",
            ConstGauge::new(gauge_value(outbox.due)),
        );
        registry.register_with_unit(
            "outbox_oldest_pending_age",
            "Time since the oldest object in the outbox was queued",
            Unit::Seconds,
            ConstGauge::new(outbox.oldest_pending_age.as_secs_f64()),
        );
    }
    let modes: Family<Vec<(&'static str, String)>, Gauge> = Family::default();
    for (watch, mode) in &scrape.watches {
        modes
            .get_or_create(&vec![
                ("watch", watch.clone()),
                ("mode", (*mode).to_owned()),
            ])
            .set(1);
    }
    registry.register(
        "watch_mode",
        "How each watch learns of changes: OS events or polling (1 for the mode in use)",
        modes,
    );
    let flags = [
        (
            "submissions_paused",
            "1 while submissions are paused (refused key, missing bucket, wrong endpoint)",
            scrape.paused,
        ),
        (
            "state_disk_blocked",
            "1 while work waits for the state disk to take writes again (full or read-only)",
            scrape.disk_blocked,
        ),
        (
            "healthy",
            "1 while /healthz answers 200: nothing held, not stuck",
            scrape.healthy,
        ),
        (
            "ready",
            "1 once the start scan is queued (/readyz)",
            scrape.ready,
        ),
    ];
    for (name, help, on) in flags {
        registry.register(name, help, ConstGauge::new(i64::from(on)));
    }
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry)
        .expect("writing to a String cannot fail, and every name is valid");
    text
}

/// A counter family holding the given counts.
fn labelled(
    counts: impl Iterator<Item = (Vec<(&'static str, String)>, u64)>,
) -> Family<Vec<(&'static str, String)>, Counter> {
    let family = Family::<Vec<(&'static str, String)>, Counter>::default();
    for (labels, n) in counts {
        family.get_or_create(&labels).inc_by(n);
    }
    family
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Binds `metrics.listen`. A failure is fatal, naming the setting: a daemon
/// an operator cannot watch should not run as if it could be.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, FatalError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|err| {
        FatalError::io(
            format!("metrics.listen = {addr}: cannot listen (is another process using it?)"),
            err,
        )
    })
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `stop`
/// completes; requests being answered then finish first.
pub async fn serve<P: Probe>(
    listener: tokio::net::TcpListener,
    probe: Arc<P>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/metrics", get(metrics::<P>))
        .route("/healthz", get(healthz::<P>))
        .route("/readyz", get(readyz::<P>))
        .with_state(probe);
    axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
}

async fn metrics<P: Probe>(State(probe): State<Arc<P>>) -> Response {
    let text = render(&probe.scrape().await);
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

async fn healthz<P: Probe>(State(probe): State<Arc<P>>) -> Response {
    let (status, body) = match probe.health().await {
        Ok(health) if health.is_healthy() => (StatusCode::OK, health.to_string()),
        Ok(health) => (StatusCode::SERVICE_UNAVAILABLE, health.to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("error: {why}")),
    };
    (status, text_body(body)).into_response()
}

async fn readyz<P: Probe>(State(probe): State<Arc<P>>) -> Response {
    if probe.is_ready() {
        (StatusCode::OK, text_body("ready".to_owned())).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            text_body("starting: the start scan is not queued yet".to_owned()),
        )
            .into_response()
    }
}

fn text_body(mut line: String) -> ([(header::HeaderName, &'static str); 1], String) {
    line.push('\n');
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], line)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// One sample line: name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// Reads the exposition text back: `# TYPE` lines by name, and samples.
    fn parse(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').unwrap();
                    let labels = inner
                        .split(',')
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').unwrap();
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), BTreeMap::new()),
            };
            samples.push((name, labels, value.parse().unwrap()));
        }
        (types, samples)
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|(.., v)| *v)
    }

    fn example() -> Scrape {
        Scrape {
            counters: CountersSnapshot {
                files_seen: 7,
                files_skipped: 3,
                files_hashed: 6,
                bytes_hashed: 4096,
                objects_enqueued: 5,
                objects_delivered: 4,
                objects_skipped: 1,
                objects_dead: 2,
                requests: 9,
                retries: 3,
            },
            files_ignored: BTreeMap::from([("hidden", 2), ("temporary", 1)]),
            answers: BTreeMap::from([
                ((RequestKind::Api, Some(200)), 6),
                ((RequestKind::Api, Some(503)), 2),
                ((RequestKind::Api, None), 1),
                ((RequestKind::Presigned, Some(200)), 1),
            ]),
            rescans: BTreeMap::from([("start", 2), ("overflow", 1)]),
            tasks_polled: 8,
            tasks_ended: BTreeMap::from([("ok", 3)]),
            outbox: Some(Outbox {
                pending: 2,
                due: 1,
                oldest_pending_age: Duration::from_millis(1500),
            }),
            watches: vec![
                ("/srv/drop/a".to_owned(), "events"),
                ("/mnt/nfs/b".to_owned(), "polling"),
            ],
            paused: true,
            disk_blocked: false,
            healthy: false,
            ready: true,
        }
    }

    #[rstest::rstest]
    #[case("mixpeek_ingest_files_discovered_total", &[], 7.0)]
    #[case("mixpeek_ingest_files_ignored_total", &[("reason", "hidden")], 2.0)]
    #[case("mixpeek_ingest_files_ignored_total", &[("reason", "temporary")], 1.0)]
    #[case("mixpeek_ingest_files_hashed_total", &[], 6.0)]
    #[case("mixpeek_ingest_hashed_bytes_total", &[], 4096.0)]
    #[case("mixpeek_ingest_objects_enqueued_total", &[], 5.0)]
    #[case("mixpeek_ingest_objects_delivered_total", &[], 4.0)]
    #[case("mixpeek_ingest_objects_skipped_total", &[], 1.0)]
    #[case("mixpeek_ingest_objects_dead_total", &[], 2.0)]
    #[case("mixpeek_ingest_requests_total", &[("kind", "api"), ("code", "200")], 6.0)]
    #[case("mixpeek_ingest_requests_total", &[("kind", "api"), ("code", "503")], 2.0)]
    #[case("mixpeek_ingest_requests_total", &[("kind", "api"), ("code", "transport")], 1.0)]
    #[case("mixpeek_ingest_requests_total", &[("kind", "presigned"), ("code", "200")], 1.0)]
    #[case("mixpeek_ingest_retries_total", &[], 3.0)]
    #[case("mixpeek_ingest_rescans_total", &[("reason", "start")], 2.0)]
    #[case("mixpeek_ingest_rescans_total", &[("reason", "overflow")], 1.0)]
    #[case("mixpeek_ingest_tasks_polled_total", &[], 8.0)]
    #[case("mixpeek_ingest_tasks_ended_total", &[("outcome", "ok")], 3.0)]
    #[case("mixpeek_ingest_outbox_pending", &[], 2.0)]
    #[case("mixpeek_ingest_outbox_due", &[], 1.0)]
    #[case("mixpeek_ingest_outbox_oldest_pending_age_seconds", &[], 1.5)]
    #[case("mixpeek_ingest_watch_mode", &[("watch", "/srv/drop/a"), ("mode", "events")], 1.0)]
    #[case("mixpeek_ingest_watch_mode", &[("watch", "/mnt/nfs/b"), ("mode", "polling")], 1.0)]
    #[case("mixpeek_ingest_submissions_paused", &[], 1.0)]
    #[case("mixpeek_ingest_state_disk_blocked", &[], 0.0)]
    #[case("mixpeek_ingest_healthy", &[], 0.0)]
    #[case("mixpeek_ingest_ready", &[], 1.0)]
    fn every_figure_is_rendered(
        #[case] name: &str,
        #[case] labels: &[(&str, &str)],
        #[case] want: f64,
    ) {
        let text = render(&example());
        let (_, samples) = parse(&text);
        assert_eq!(value(&samples, name, labels), Some(want), "{text}");
    }

    #[test]
    fn types_are_declared_and_counters_end_in_total() {
        let (types, samples) = parse(&render(&example()));
        for (name, ..) in &samples {
            let kind = types
                .get(name)
                .unwrap_or_else(|| panic!("no # TYPE for {name}"));
            assert_eq!(
                name.ends_with("_total"),
                kind == "counter",
                "{name} is a {kind}"
            );
            assert!(name.starts_with("mixpeek_ingest_"), "{name}");
        }
        assert_eq!(types["mixpeek_ingest_outbox_pending"], "gauge");
    }

    #[test]
    fn without_the_store_the_outbox_gauges_are_left_out() {
        let scrape = Scrape {
            outbox: None,
            ..example()
        };
        let (types, _) = parse(&render(&scrape));
        assert!(!types.contains_key("mixpeek_ingest_outbox_pending"));
        assert!(types.contains_key("mixpeek_ingest_objects_delivered_total"));
    }

    #[test]
    fn label_values_are_escaped() {
        let scrape = Scrape {
            watches: vec![("/srv/a \"quoted\"".to_owned(), "events")],
            ..Scrape::default()
        };
        let text = render(&scrape);
        assert!(text.contains(r#"watch="/srv/a \"quoted\"""#), "{text}");
    }

    /// A probe whose answers the test sets.
    struct Fake {
        health: Mutex<Result<Health, String>>,
        ready: AtomicBool,
    }

    impl Probe for Fake {
        async fn scrape(&self) -> Scrape {
            example()
        }

        async fn health(&self) -> Result<Health, String> {
            self.health.lock().unwrap().clone()
        }

        fn is_ready(&self) -> bool {
            self.ready.load(Ordering::SeqCst)
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, content_type, response.text().await.unwrap())
    }

    #[tokio::test]
    async fn the_endpoint_answers_each_path() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let probe = Arc::new(Fake {
            health: Mutex::new(Ok(Health::Healthy { due: 0 })),
            ready: AtomicBool::new(false),
        });
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            Arc::clone(&probe),
            stop.clone().cancelled_owned(),
        ));

        let (status, content_type, text) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(content_type, prometheus_text::CONTENT_TYPE);
        assert!(
            text.contains("mixpeek_ingest_objects_delivered_total 4"),
            "{text}"
        );

        assert_eq!(get(addr, "/healthz").await.0, 200);
        *probe.health.lock().unwrap() = Ok(Health::Paused {
            reason: "the API key was refused (HTTP 401)".to_owned(),
        });
        let (status, _, text) = get(addr, "/healthz").await;
        assert_eq!(status, 503);
        assert_eq!(text, "paused: the API key was refused (HTTP 401)\n");
        *probe.health.lock().unwrap() = Ok(Health::Stuck {
            due: 2,
            stalled: Duration::from_secs(61),
        });
        let (status, _, text) = get(addr, "/healthz").await;
        assert_eq!(status, 503);
        assert!(text.starts_with("stuck: 2 object(s) due"), "{text}");
        *probe.health.lock().unwrap() = Err("the state store did not answer".to_owned());
        let (status, _, text) = get(addr, "/healthz").await;
        assert_eq!(status, 503);
        assert!(text.starts_with("error: "), "{text}");

        assert_eq!(get(addr, "/readyz").await.0, 503);
        probe.ready.store(true, Ordering::SeqCst);
        assert_eq!(
            get(addr, "/readyz").await,
            (
                200,
                "text/plain; charset=utf-8".to_owned(),
                "ready\n".to_owned()
            )
        );
        assert_eq!(get(addr, "/nothing").await.0, 404);

        stop.cancel();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_taken_address_is_an_error_naming_the_setting() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr).await.unwrap_err();
        assert!(err.to_string().contains("metrics.listen"), "{err}");
        assert_eq!(err.exit_code(), crate::error::exit::IO);
    }
}
