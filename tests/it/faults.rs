//! The promises under faults (SPEC §2 promises 2 and 3, §7 retries).
//!
//! Each test runs the real binary against its own emulator and hurts it: a
//! storm of SIGKILLs while files keep arriving, an abort at each named crash
//! point (`MIXPEEK_INGEST_FAILPOINT`, honoured by debug builds), an outage
//! answering 503 and then refusing connections, a run of 429s carrying
//! `Retry-After`. After each, a normal run must deliver every group at least
//! once, with the files' exact content, nothing that was never dropped, and no
//! more duplicates than the requests in flight when the process died.
//!
//! Every watch uses the `objects-create` dialect (one object per request) and
//! `rescan_interval = "1h"`, so "objects in flight" means "requests in flight"
//! and whatever is delivered was found by the start scan or an OS event.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mixpeek_mock::{Fault, Outage, RecordedObject, RecordedRequest};
use nix::sys::signal::Signal;
use rstest::rstest;

use crate::harness::{
    Config, Daemon, Env, FAILPOINT, TIMEOUT, Watch, blob_bytes, blob_key, blobs, count_by_prefix,
    create_requests, key_prefix, tail, wait_until,
};

/// Requests the daemon may have in flight: the duplicate bound of the kill
/// storm is `kills × MAX_IN_FLIGHT`, so it is kept small.
const MAX_IN_FLIGHT: usize = 2;

/// Long enough that a missing or duplicate object is not merely late on a
/// loaded machine, short enough to keep "nothing else arrives" checks cheap.
const QUIET: Duration = Duration::from_secs(2);

/// An env configured as every test here wants it: one object per request,
/// few in flight, and no periodic rescan within a test.
fn env() -> Env {
    let env = Env::new();
    Config::new()
        .api(&format!(
            "dialect = \"objects-create\"\nmax_in_flight = {MAX_IN_FLIGHT}"
        ))
        .watch(Watch::documents().no_periodic_rescan())
        .write(&env);
    env
}

/// Lets a fault last for `phase`. The length of an outage is the stimulus
/// under test, not a wait for a result: every outcome is then waited for
/// with [`wait_until`].
fn hold(phase: Duration) {
    std::thread::sleep(phase);
}

// ---------------------------------------------------------------------------
// Groups and what the emulator recorded
// ---------------------------------------------------------------------------

/// A group as dropped: its object `key_prefix` and its files by blob
/// `key_prefix`, with their content.
#[derive(Debug, Clone)]
struct Group {
    prefix: String,
    files: BTreeMap<String, Vec<u8>>,
}

/// Drops `drop/<name>/{a,b}.txt` at once: both files are written in
/// `staging/` and the directory is renamed into the tree, so the daemon can
/// never see half a group (which it would rightly send as two objects). The
/// content names the group and the file, so no blob is a duplicate of another
/// (the daemon leaves out blobs whose hash the bucket already has).
fn drop_group(root: &Path, name: &str) -> Group {
    let staging = root.join("staging").join(name);
    std::fs::create_dir_all(&staging).unwrap();
    let mut files = BTreeMap::new();
    for file in ["a.txt", "b.txt"] {
        let content = format!("{name}/{file}: dropped once, unique\n").into_bytes();
        std::fs::write(staging.join(file), &content).unwrap();
        files.insert(format!("/{file}"), content);
    }
    std::fs::rename(&staging, root.join("drop").join(name)).unwrap();
    Group {
        prefix: format!("/documents/{name}"),
        files,
    }
}

/// A thread dropping a new group every `every` until stopped.
struct Producer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Group>>,
}

impl Producer {
    fn start(root: PathBuf, every: Duration) -> Producer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut groups = Vec::new();
            while !flag.load(Ordering::Acquire) {
                groups.push(drop_group(&root, &format!("g{:05}", groups.len())));
                // Paces the producer: the rate of arrivals is the stimulus.
                std::thread::sleep(every);
            }
            groups
        });
        Producer { stop, thread }
    }

    /// Stops the producer; returns every group it dropped.
    fn stop(self) -> Vec<Group> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().unwrap()
    }
}

/// Create requests per object `key_prefix`, in arrival order.
fn requests_by_prefix(requests: &[RecordedRequest]) -> BTreeMap<String, Vec<&RecordedRequest>> {
    let mut by_prefix: BTreeMap<String, Vec<&RecordedRequest>> = BTreeMap::new();
    for request in requests {
        let prefix = request.body["key_prefix"].as_str().unwrap().to_owned();
        by_prefix.entry(prefix).or_default().push(request);
    }
    by_prefix
}

/// Asserts the conservation laws over everything the emulator accepted:
/// each object is a dropped group, each blob one of its files with exactly
/// its content, and every file of every group arrived at least once.
#[track_caller]
fn assert_conserved(objects: &[RecordedObject], groups: &[Group]) {
    let by_prefix: BTreeMap<&str, &Group> = groups.iter().map(|g| (g.prefix.as_str(), g)).collect();
    let mut arrived: BTreeSet<(String, String)> = BTreeSet::new();
    for object in objects {
        let prefix = key_prefix(object);
        let group = by_prefix
            .get(prefix)
            .unwrap_or_else(|| panic!("an object that was never dropped: {}", object.body));
        for blob in blobs(object) {
            let key = blob_key(blob);
            let content = group
                .files
                .get(key)
                .unwrap_or_else(|| panic!("{prefix}: a blob that was never dropped: {key}"));
            assert_eq!(
                &blob_bytes(blob),
                content,
                "{prefix}{key}: the blob does not hold the file's content"
            );
            arrived.insert((prefix.to_owned(), key.to_owned()));
        }
    }
    let missing: Vec<String> = groups
        .iter()
        .flat_map(|g| g.files.keys().map(move |k| (g.prefix.clone(), k.clone())))
        .filter(|file| !arrived.contains(file))
        .map(|(prefix, key)| format!("{prefix}{key}"))
        .collect();
    assert!(missing.is_empty(), "files never delivered: {missing:?}");
}

/// [`assert_conserved`], and each group in exactly one accepted object.
#[track_caller]
fn assert_delivered_once(objects: &[RecordedObject], groups: &[Group]) {
    assert_conserved(objects, groups);
    let counts = count_by_prefix(objects);
    assert!(
        counts.len() == groups.len() && counts.values().all(|n| *n == 1),
        "each object exactly once: {counts:?}"
    );
}

/// SplitMix64: a tiny deterministic generator, so a failing kill schedule
/// can be replayed from its seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn a_kill_storm_loses_nothing_and_duplicates_at_most_what_was_in_flight() {
    const KILLS: usize = 20;
    const SEED: u64 = 0x6d69_7870_6565_6b21;
    let env = env();
    let producer = Producer::start(env.root().to_owned(), Duration::from_millis(50));

    let mut rng = SplitMix64(SEED);
    let mut schedule = Vec::new();
    for _ in 0..KILLS {
        let mut daemon = Daemon::start(&env);
        let lifetime = Duration::from_millis(rng.between(100, 700));
        schedule.push(lifetime);
        // The kill schedule is the fault under test: a random moment of the
        // daemon's life, from its start scan to the middle of a request.
        hold(lifetime);
        daemon.kill();
    }
    let groups = producer.stop();
    let during_storm = env.server.objects().len();
    // A storm that never let a request through would prove nothing about
    // requests in flight.
    assert!(
        during_storm > 0,
        "no object was accepted during the storm (seed {SEED:#x}, schedule {schedule:?})"
    );

    let mut daemon = Daemon::start(&env);
    let all_delivered = || {
        let counts = count_by_prefix(&env.server.objects());
        groups.iter().all(|g| counts.contains_key(&g.prefix))
    };
    let quiet = daemon.wait_for(TIMEOUT, || {
        all_delivered() && env.status()["counts"]["pending"] == 0
    });
    let counts = count_by_prefix(&env.server.objects());
    assert!(
        quiet,
        "{} of {} groups delivered after the storm, status {} (seed {SEED:#x})",
        counts.len(),
        groups.len(),
        env.status()
    );

    let objects = env.server.objects();
    assert_conserved(&objects, &groups);
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= KILLS * MAX_IN_FLIGHT,
        "{duplicates} duplicates after {KILLS} kills with max_in_flight = {MAX_IN_FLIGHT} \
         (seed {SEED:#x}, schedule {schedule:?}): {:?}",
        counts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    let summary = env.status();
    assert_eq!(summary["counts"]["dead"], 0, "{summary}");
    assert_eq!(
        summary["counts"]["delivered"],
        groups.len(),
        "one delivered record per group: {summary}"
    );

    // The daemon is healthy after the storm: a new group goes through.
    let fresh = drop_group(env.root(), "fresh");
    assert!(
        daemon.wait_for(TIMEOUT, || count_by_prefix(&env.server.objects())
            .contains_key(&fresh.prefix)),
        "a group dropped after the storm was not delivered"
    );
    daemon.stop(TIMEOUT);
    let mut everything = groups;
    everything.push(fresh);
    assert_conserved(&env.server.objects(), &everything);
    assert_eq!(
        count_by_prefix(&env.server.objects())["/documents/fresh"],
        1,
        "the fresh group is delivered once"
    );
}

/// One crash point per case: how many create requests reached the emulator
/// before the abort, and how many accepted objects the restart may leave.
#[rstest]
#[case::after_hash("after-hash", 0, 1)]
#[case::after_enqueue("after-enqueue", 0, 1)]
// The server accepted the object, the daemon died before recording it: the
// restart sends it again, once at most.
#[case::after_response("after-response", 1, 2)]
#[case::after_record("after-record", 1, 1)]
fn a_crash_at_each_point_loses_nothing_and_resends_only_the_unrecorded(
    #[case] point: &str,
    #[case] sent_before_crash: usize,
    #[case] max_objects: usize,
) {
    let env = env();
    let group = drop_group(env.root(), "crash");

    let mut crashing = Daemon::start_with(&env, &["once"], |cmd| {
        cmd.env(FAILPOINT, point);
    });
    let status_code = crashing.wait_status(TIMEOUT);
    let log = crashing.log();
    assert_eq!(
        status_code.signal(),
        Some(Signal::SIGABRT as i32),
        "{point}: expected an abort, got {status_code}; stderr:\n{}",
        tail(&log, 40)
    );
    assert!(
        log.contains(point),
        "{point}: the abort does not name the failpoint; stderr:\n{}",
        tail(&log, 40)
    );
    drop(crashing);
    let before = create_requests(&env.server);
    assert_eq!(
        before.len(),
        sent_before_crash,
        "{point}: create requests before the crash: {before:?}"
    );
    assert!(before.iter().all(|r| r.status == 200), "{before:?}");

    let run = env.run(&["once"]);
    run.assert_code(0);
    let objects = env.server.objects();
    assert!(
        (1..=max_objects).contains(&objects.len()),
        "{point}: {} objects accepted, expected 1..={max_objects}",
        objects.len()
    );
    assert_conserved(&objects, std::slice::from_ref(&group));
    let summary = env.status();
    assert_eq!(summary["counts"]["delivered"], 1, "{point}: {summary}");
    assert_eq!(summary["counts"]["pending"], 0, "{point}: {summary}");
    assert_eq!(summary["counts"]["dead"], 0, "{point}: {summary}");

    // Nothing is left to send.
    let requests = env.server.request_count();
    env.run(&["once"]).assert_code(0);
    assert_eq!(
        env.server.request_count(),
        requests,
        "{point}: a second run sent again"
    );
}

#[test]
fn an_outage_delays_delivery_without_a_busy_loop_and_loses_nothing() {
    const GROUPS: usize = 5;
    const PHASE: Duration = Duration::from_secs(3);
    let env = env();
    env.server.set_outage(Some(Outage::Status(503)));
    let mut daemon = Daemon::start(&env);
    let groups: Vec<Group> = (0..GROUPS)
        .map(|g| drop_group(env.root(), &format!("o{g}")))
        .collect();

    // Every object is refused, and tried again: the daemon keeps retrying.
    let refused_twice = || {
        let requests = create_requests(&env.server);
        let by_prefix = requests_by_prefix(&requests);
        by_prefix.len() == GROUPS && by_prefix.values().all(|r| r.len() >= 2)
    };
    assert!(
        daemon.wait_for(TIMEOUT, refused_twice),
        "not every object was retried during the 503 outage: {:?}",
        requests_by_prefix(&create_requests(&env.server))
            .iter()
            .map(|(p, r)| (p.clone(), r.len()))
            .collect::<Vec<_>>()
    );
    let first = create_requests(&env.server)[0].received_at;
    hold(PHASE.saturating_sub(first.elapsed()));
    env.server.set_outage(Some(Outage::ClosedPort));
    let phase = first.elapsed();
    let during_503 = env.server.requests();
    assert!(
        during_503.iter().all(|r| r.status == 503 || r.status == 0),
        "an answer other than the outage's: {during_503:?}"
    );
    // Full jitter: attempt n waits a uniform time in [0, min(2 s, 100 ms·2^n)].
    // The first five waits are capped at 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s; every
    // later one averages 1 s. Allowing each object 10 attempts for that ramp
    // plus 3 per second (three times the mean rate) leaves a correct backoff
    // far below the bound: 14 waits uniform on [0, 2 s] summing under 3 s has
    // a probability near 1e-9. A busy loop against a local emulator makes
    // hundreds of requests per second per object and breaks it at once.
    let per_object = 10 + 3 * usize::try_from(phase.as_secs()).unwrap();
    assert!(
        during_503.len() <= GROUPS * per_object,
        "{} requests for {GROUPS} objects in {phase:?} of 503s: not backing off",
        during_503.len()
    );

    // Connections refused: nothing reaches the emulator, so the check is the
    // daemon's CPU time; reconnecting in a loop would burn a core.
    let cpu_before = daemon.cpu_time();
    let closed = Instant::now();
    hold(PHASE);
    let cpu = daemon.cpu_time().saturating_sub(cpu_before);
    let closed_for = closed.elapsed();
    assert!(
        daemon.is_running(),
        "the daemon died during the outage; stderr:\n{}",
        tail(&daemon.log(), 40)
    );
    assert!(
        cpu < closed_for / 3,
        "the daemon used {cpu:?} of CPU in {closed_for:?} of refused connections"
    );

    env.server.set_outage(None);
    assert!(
        daemon.wait_for(TIMEOUT, || env.server.objects().len() >= GROUPS),
        "{} of {GROUPS} objects delivered after the outage",
        env.server.objects().len()
    );
    assert!(
        !wait_until(QUIET, || env.server.objects().len() > GROUPS),
        "sent again after delivery: {:?}",
        count_by_prefix(&env.server.objects())
    );
    assert_delivered_once(&env.server.objects(), &groups);
    daemon.stop(TIMEOUT);
    let summary = env.status();
    assert_eq!(summary["counts"]["delivered"], GROUPS, "{summary}");
    assert_eq!(summary["counts"]["pending"], 0, "{summary}");
}

#[test]
fn a_429_storm_is_waited_out_as_retry_after_says() {
    const GROUPS: usize = 3;
    const REFUSALS: usize = 6;
    let env = env();
    let groups: Vec<Group> = (0..GROUPS)
        .map(|g| drop_group(env.root(), &format!("r{g}")))
        .collect();
    for _ in 0..REFUSALS {
        env.server.push_fault(Fault::status(429).retry_after("1"));
    }

    env.run(&["once"]).assert_code(0);
    assert_eq!(env.server.pending_faults(), 0, "every 429 was answered");
    let requests = create_requests(&env.server);
    assert_eq!(
        requests.iter().filter(|r| r.status == 429).count(),
        REFUSALS
    );
    // `received_at` of the refused request precedes the 429 reaching the
    // daemon, so a gap of at least 1 s is a lower bound on the real wait.
    for (prefix, tries) in requests_by_prefix(&requests) {
        for pair in tries.windows(2) {
            if pair[0].status == 429 {
                let gap = pair[1].received_at - pair[0].received_at;
                assert!(
                    gap >= Duration::from_secs(1),
                    "{prefix}: retried {gap:?} after a 429 with Retry-After: 1"
                );
            }
        }
    }
    assert_delivered_once(&env.server.objects(), &groups);
}
