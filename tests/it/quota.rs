//! `api.requests_per_minute` spaces requests client-side (SPEC §7).

use std::time::Duration;

use crate::harness::{Env, create_requests};

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
