//! The metrics endpoint on `metrics.listen` (SPEC §10): Prometheus text on
//! `/metrics` whose figures move as a run proceeds, and `/healthz` in its
//! three states: healthy, paused for a refused key, stuck.
//!
//! Every config here listens on `127.0.0.1:0`; the daemon logs the address
//! it got, and the tests read it from the log.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use mixpeek_mock::{Fault, Outage};

use crate::harness::{Config, Daemon, Env, KEY, TIMEOUT, Watch, wait_until};

/// The `[metrics]` table of these tests, written before `[api]`.
fn metrics_table(extra: &str) -> String {
    format!("[metrics]\nlisten = \"127.0.0.1:0\"\n{extra}")
}

/// Starts `run` on `config` and returns it with the endpoint's address.
fn start(env: &Env, config: &Config) -> (Daemon, SocketAddr) {
    config.write(env);
    let daemon = Daemon::start(env);
    assert!(
        daemon.wait_log(TIMEOUT, |l| l.contains("serving /metrics")),
        "the endpoint never started:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("serving /metrics"))
        .unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no addr= in {line}"))
        .parse()
        .unwrap();
    (daemon, addr)
}

/// `GET path`: the status code and the body; status 0 when nothing listens
/// (between the engines of a reload).
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = match TcpStream::connect(addr) {
        Ok(stream) => stream,
        Err(err) => return (0, err.to_string()),
    };
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// One scrape, as samples keyed by name and labels.
#[derive(Debug)]
struct Samples(BTreeMap<(String, BTreeMap<String, String>), f64>);

impl Samples {
    fn scrape(addr: SocketAddr) -> Samples {
        let (status, text) = get(addr, "/metrics");
        assert_eq!(status, 200, "{text}");
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (
                    name,
                    rest.trim_end_matches('}')
                        .split(',')
                        .map(|pair| {
                            let (k, v) = pair.split_once('=').unwrap();
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect(),
                ),
                None => (series, BTreeMap::new()),
            };
            samples.insert((name.to_owned(), labels), value.parse().unwrap());
        }
        Samples(samples)
    }

    /// The sample `mixpeek_ingest_<name>` with exactly these labels; 0 when
    /// absent (a labelled counter appears once it is counted).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.0
            .get(&(format!("mixpeek_ingest_{name}"), labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// The sum of `name` over every label set whose `label` starts with `prefix`.
    fn sum(&self, name: &str, label: &str, prefix: &str) -> f64 {
        let name = format!("mixpeek_ingest_{name}");
        self.0
            .iter()
            .filter(|((n, l), _)| *n == name && l.get(label).is_some_and(|v| v.starts_with(prefix)))
            .map(|(_, v)| v)
            .sum()
    }
}

/// Scrapes until `condition` holds; the last scrape either way.
fn scrape_until(
    daemon: &Daemon,
    addr: SocketAddr,
    condition: impl Fn(&Samples) -> bool,
) -> Samples {
    let mut last = Samples::scrape(addr);
    daemon.wait_for(TIMEOUT, || {
        last = Samples::scrape(addr);
        condition(&last)
    });
    last
}

/// Polls `/healthz` until its status is `status` and its body starts with
/// `prefix`; the last answer either way.
fn health_until(daemon: &Daemon, addr: SocketAddr, status: u16, prefix: &str) -> (u16, String) {
    let mut last = get(addr, "/healthz");
    daemon.wait_for(TIMEOUT, || {
        last = get(addr, "/healthz");
        last.0 == status && last.1.starts_with(prefix)
    });
    last
}

#[test]
fn metrics_move_as_the_run_proceeds() {
    let env = Env::new();
    env.write(".hidden", b"never sent");
    env.write("draft.part", b"still being written");
    let config = Config::new().top(&metrics_table("")).watch(
        Watch::documents()
            .no_periodic_rescan()
            .with(r#"group_by = "file""#),
    );
    let (mut daemon, addr) = start(&env, &config);

    let before = scrape_until(&daemon, addr, |s| s.get("ready", &[]) == 1.0);
    let drop_dir = env.drop_dir().display().to_string();
    assert_eq!(
        before.get("rescans_total", &[("reason", "start")]),
        1.0,
        "{before:?}"
    );
    assert_eq!(
        before.get("watch_mode", &[("watch", &drop_dir), ("mode", "events")]),
        1.0,
        "{before:?}"
    );
    assert_eq!(
        before.get("files_ignored_total", &[("reason", "hidden")]),
        1.0
    );
    assert_eq!(
        before.get("files_ignored_total", &[("reason", "temporary")]),
        1.0
    );
    assert_eq!(before.get("files_discovered_total", &[]), 0.0);
    assert_eq!(before.get("outbox_pending", &[]), 0.0);
    assert_eq!(before.get("submissions_paused", &[]), 0.0);
    assert_eq!(before.get("healthy", &[]), 1.0);

    // Every API call fails for now: the objects wait in the outbox.
    env.server.set_outage(Some(Outage::Status(503)));
    env.write("a.txt", b"first");
    env.write("b.txt", b"second");
    let held = scrape_until(&daemon, addr, |s| {
        s.get("outbox_pending", &[]) == 2.0 && s.get("retries_total", &[]) >= 1.0
    });
    assert_eq!(held.get("outbox_pending", &[]), 2.0, "{held:?}");
    assert_eq!(held.get("files_discovered_total", &[]), 2.0, "{held:?}");
    assert_eq!(held.get("files_hashed_total", &[]), 2.0, "{held:?}");
    assert_eq!(held.get("hashed_bytes_total", &[]), 11.0, "{held:?}");
    assert_eq!(held.get("objects_enqueued_total", &[]), 2.0, "{held:?}");
    assert_eq!(held.get("objects_delivered_total", &[]), 0.0, "{held:?}");
    assert!(
        held.get("requests_total", &[("kind", "api"), ("code", "503")]) >= 1.0,
        "{held:?}"
    );
    assert!(held.get("outbox_oldest_pending_age_seconds", &[]) >= 0.0);

    env.server.set_outage(None);
    let after = scrape_until(&daemon, addr, |s| {
        s.get("objects_delivered_total", &[]) == 2.0 && s.get("outbox_pending", &[]) == 0.0
    });
    assert_eq!(after.get("objects_delivered_total", &[]), 2.0, "{after:?}");
    assert_eq!(after.get("outbox_pending", &[]), 0.0, "{after:?}");
    assert_eq!(after.get("outbox_oldest_pending_age_seconds", &[]), 0.0);
    assert!(after.sum("requests_total", "code", "2") >= 2.0, "{after:?}");
    assert!(after.get("retries_total", &[]) >= held.get("retries_total", &[]));
    assert_eq!(after.get("objects_dead_total", &[]), 0.0);
    assert_eq!(env.server.objects().len(), 2);
    daemon.stop(TIMEOUT);
}

#[test]
fn healthz_is_unhealthy_while_the_key_is_refused() {
    let env = Env::new();
    let config = Config::new()
        .top(&metrics_table(""))
        .watch(Watch::documents().no_periodic_rescan());
    let (mut daemon, addr) = start(&env, &config);

    let (status, body) = health_until(&daemon, addr, 200, "ok");
    assert_eq!((status, body.as_str()), (200, "ok: nothing due\n"));
    assert!(
        wait_until(TIMEOUT, || get(addr, "/readyz")
            == (200, "ready\n".to_owned())),
        "/readyz never answered 200"
    );

    env.server.set_api_key(Some("sk-another-key".to_owned()));
    env.write("contract.txt", b"signed");
    let (status, body) = health_until(&daemon, addr, 503, "paused: ");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("paused: the API key was refused (HTTP 401)"),
        "{body}"
    );
    assert!(!body.contains(KEY));
    let paused = Samples::scrape(addr);
    assert_eq!(paused.get("submissions_paused", &[]), 1.0, "{paused:?}");
    assert_eq!(paused.get("healthy", &[]), 0.0, "{paused:?}");
    assert!(paused.get("requests_total", &[("kind", "api"), ("code", "401")]) >= 1.0);

    // The key is accepted again: the next probe (within retry.max) delivers.
    env.server.set_api_key(Some(KEY.to_owned()));
    let (status, body) = health_until(&daemon, addr, 200, "ok");
    assert_eq!(status, 200, "{body}");
    assert!(env.server.wait_for_objects(1, TIMEOUT));
    daemon.stop(TIMEOUT);
}

/// How long the emulator holds the create answer in the stuck tests: well
/// past `stuck_after = "1s"`, and below the harness's `api.timeout` (10 s),
/// so the request is in flight the whole time.
pub const STALL: Duration = Duration::from_secs(6);

/// Makes the next API request (after the start's schema check, which must
/// not take the fault) hang for [`STALL`], then answer 503.
pub fn stall_next_request(env: &Env, daemon: &Daemon) {
    assert!(
        daemon.wait_for(TIMEOUT, || env.server.request_count() >= 1),
        "the start's bucket check never came"
    );
    env.server.push_fault(Fault::status(503).delay(STALL));
}

#[test]
fn healthz_reports_a_stuck_submitter_and_its_recovery() {
    let env = Env::new();
    let config = Config::new()
        .top(&metrics_table(r#"stuck_after = "1s""#))
        .watch(Watch::documents().no_periodic_rescan());
    let (mut daemon, addr) = start(&env, &config);
    assert_eq!(health_until(&daemon, addr, 200, "ok").0, 200);

    stall_next_request(&env, &daemon);
    env.write("contract.txt", b"signed");
    let (status, body) = health_until(&daemon, addr, 503, "stuck: ");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("stuck: 1 object(s) due and no submission finished for"),
        "{body}"
    );
    assert!(
        daemon.wait_log(TIMEOUT, |l| l.contains("pipeline stuck")),
        "the stall is logged"
    );
    assert_eq!(Samples::scrape(addr).get("healthy", &[]), 0.0);

    // The held answer comes (503), the retry delivers: healthy again.
    let (status, body) = health_until(&daemon, addr, 200, "ok");
    assert_eq!(status, 200, "{body}");
    assert!(env.server.wait_for_objects(1, TIMEOUT));
    assert!(daemon.wait_log(TIMEOUT, |l| l.contains("pipeline moving again")));
    daemon.stop(TIMEOUT);
}

#[test]
fn a_taken_metrics_address_stops_the_daemon_with_an_io_error() {
    let env = Env::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    Config::new()
        .top(&format!("[metrics]\nlisten = \"{addr}\""))
        .watch(Watch::documents())
        .write(&env);
    let mut daemon = Daemon::start(&env);
    let code = daemon.wait_exit(TIMEOUT);
    assert_eq!(code, 74, "{}", daemon.log());
    assert!(
        daemon.log().contains(&format!("metrics.listen = {addr}")),
        "{}",
        daemon.log()
    );
}

#[test]
fn once_does_not_serve_metrics() {
    let env = Env::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    Config::new()
        .top(&format!("[metrics]\nlisten = \"{addr}\""))
        .watch(Watch::documents())
        .write(&env);
    env.write("a.txt", b"a");
    // The address is taken: `once` would fail if it tried to listen.
    let run = env.run(&["once"]);
    run.assert_code(0);
    assert_eq!(run.counter("objects_delivered"), 1);
    assert!(!run.stderr.contains("metrics.listen"), "{}", run.stderr);
}

#[test]
fn the_endpoint_comes_back_on_the_same_address_after_a_reload() {
    let env = Env::new();
    // A free port, named in the config: a reload must listen on it again.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = Config::new()
        .top(&format!("[metrics]\nlisten = \"{addr}\""))
        .watch(Watch::documents().no_periodic_rescan());
    let (mut daemon, served) = start(&env, &config);
    assert_eq!(served, addr);
    assert!(wait_until(TIMEOUT, || get(addr, "/readyz").0 == 200));

    let mark = daemon.log_mark();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        daemon.wait_log_since(mark, TIMEOUT, |l| l.contains("serving /metrics")),
        "not served again after the reload:\n{}",
        daemon.log()
    );
    assert!(
        wait_until(TIMEOUT, || get(addr, "/readyz").0 == 200),
        "not ready again after the reload"
    );
    assert_eq!(get(addr, "/healthz").0, 200);
    daemon.stop(TIMEOUT);
}
