//! `api.max_bytes_per_second` (issue: edge boxes on metered links): the
//! bytes the daemon sends, request bodies and presigned PUTs together, stay
//! under the cap. Measured by counting what the emulator received against
//! its own clock, not by timing the test.

use std::time::Instant;

use mixpeek_mock::MockConfig;
use serde_json::json;

use crate::harness::{BUCKET, Daemon, Env, TIMEOUT, tail};

const KIB: u64 = 1024;
const CAP: u64 = 512 * KIB;
/// The token bucket's burst: one 64 KiB chunk.
const BURST: u64 = 64 * KIB;

#[test]
fn bodies_and_uploads_together_stay_under_the_cap() {
    let schema = json!({"properties": {"video": {"type": "video"}, "scan": {"type": "image"}}});
    let env = Env::with(MockConfig::default().with_bucket_schema(BUCKET, schema));
    // One file above inline_max_bytes (a presigned PUT), three inline ones
    // (base64 in request bodies).
    let mut video = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom".to_vec();
    video.resize(1536 * 1024, 7);
    env.write("reel/video.mp4", &video);
    for g in 0..3u8 {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.resize(100 * 1024, g);
        env.write(&format!("scans{g}/scan.png"), &png);
    }
    env.config(
        "dialect = \"objects\"\nmax_bytes_per_second = \"512KiB\"",
        "inline_max_bytes = \"512KiB\"",
    );

    let mut daemon = Daemon::start(&env);
    let delivered = daemon.wait_for(TIMEOUT, || env.server.objects().len() == 4);
    let observed_end = Instant::now();
    assert!(delivered, "{}", tail(&daemon.log(), 30));
    daemon.stop(TIMEOUT);

    // The PUT alone: its bytes over its own duration, as the emulator saw it.
    let puts = env.server.uploads();
    assert_eq!(puts.len(), 1);
    let put = &puts[0];
    assert_eq!(put.bytes, video.len() as u64);
    let put_secs = put
        .finished_at
        .saturating_duration_since(put.started_at)
        .as_secs_f64();
    let put_rate = (put.bytes - BURST) as f64 / put_secs;
    assert!(
        put_rate <= CAP as f64 * 1.05,
        "the PUT ran at {put_rate:.0} B/s over {put_secs:.2} s; cap {CAP} B/s"
    );

    // Everything: every body byte received, over the span from the first
    // request to the moment all objects were there.
    let requests = env.server.requests();
    let first = requests.iter().map(|r| r.received_at).min().unwrap();
    let total: u64 = requests.iter().map(|r| r.body_bytes).sum();
    let inline: u64 = requests
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.body_bytes)
        .sum();
    assert!(
        inline > 3 * 100 * KIB,
        "the inline files went in bodies: {inline}"
    );
    let span = observed_end.saturating_duration_since(first).as_secs_f64();
    let allowed = CAP as f64 * span + 2.0 * BURST as f64;
    eprintln!(
        "PUT {put_rate:.0} B/s; {total} bytes in {span:.2} s = {:.0} B/s; cap {CAP} B/s",
        total as f64 / span
    );
    assert!(
        (total as f64) <= allowed,
        "{total} bytes in {span:.2} s is above the cap's {allowed:.0}"
    );
}
