//! `api.requests_per_minute` spaces requests client-side (SPEC §7).

use std::time::Duration;

use mixpeek_mock::MockConfig;

use crate::harness::{BUCKET, Daemon, Env, TIMEOUT, create_requests};

#[test]
fn requests_per_minute_spaces_requests_evenly() {
    const GROUPS: usize = 8;
    let env = Env::new();
    for g in 0..GROUPS {
        env.write(&format!("g{g}/file.txt"), format!("group {g}").as_bytes());
    }
    // 300 a minute: one request every 200 ms, however many are ready.
    env.config(
        "dialect = \"objects-create\"\nrequests_per_minute = 300\nmax_in_flight = 4",
        "",
    );
    env.run(&["once"]).assert_code(0);
    assert_eq!(env.server.objects().len(), GROUPS);
    let requests = create_requests(&env.server);
    assert_eq!(requests.len(), GROUPS);
    let span = requests[GROUPS - 1].received_at - requests[0].received_at;
    // Unthrottled, eight ready requests go out within milliseconds; spaced,
    // the last leaves at least 7 × 200 ms after the first (less a margin for
    // the network delivering one request late and the next on time).
    let floor = Duration::from_millis(200) * (GROUPS as u32 - 1) * 9 / 10;
    assert!(
        span >= floor,
        "eight requests within {span:?}; expected at least {floor:?}"
    );
}

/// With the emulator allowing N requests a minute and the daemon configured
/// for N, a long run of steady drops (more than the quota can carry) sees
/// (almost) no 429 and uses the allowance: counted by the emulator, not
/// timed by the test.
#[test]
fn a_quota_limited_account_is_used_fully_without_429s() {
    const PER_MINUTE: u32 = 300;
    const DROPS: usize = 330;
    let env = Env::with(
        MockConfig::default()
            .with_bucket(BUCKET)
            .with_rate_limit(PER_MINUTE),
    );
    env.config(
        &format!(
            "dialect = \"objects-create\"\nrequests_per_minute = {PER_MINUTE}\nmax_in_flight = 4"
        ),
        "",
    );
    let mut daemon = Daemon::start(&env);
    assert!(daemon.wait_log(TIMEOUT, |l| l.contains("watching")));

    // Ten new folders a second for 33 s: twice what the quota carries, so
    // the daemon always has something due. The pacing makes the load; no
    // assertion depends on it.
    for g in 0..DROPS {
        env.write(&format!("g{g:04}/note.txt"), format!("drop {g}").as_bytes());
        std::thread::sleep(Duration::from_millis(100));
    }
    let api: Vec<_> = env
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1/"))
        .collect();
    daemon.stop(TIMEOUT);

    let stats = env.server.rate_limit_stats();
    let admitted: Vec<_> = api.iter().filter(|r| r.status != 429).collect();
    let span = admitted.last().unwrap().received_at - admitted[0].received_at;
    assert!(span >= Duration::from_secs(30), "only {span:?} of requests");
    // The allowance over the span of admitted requests, at N per minute.
    let allowance = span.as_secs_f64() * f64::from(PER_MINUTE) / 60.0 + 1.0;
    let used = admitted.len() as f64;
    eprintln!(
        "{} admitted, {} refused (429) over {span:?}; allowance {allowance:.1}",
        admitted.len(),
        stats.limited
    );
    assert!(
        stats.limited <= 1,
        "{} requests met the 429 limit",
        stats.limited
    );
    assert!(
        used >= 0.95 * allowance,
        "{used} requests admitted of an allowance of {allowance:.1}"
    );
    assert!(
        used <= allowance + 1.0,
        "{used} is above the allowance {allowance:.1}"
    );
}
