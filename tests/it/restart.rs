//! The restart fast path (SPEC §6, §12): files whose path, size and mtime
//! match their delivered record are not opened again.

use std::time::Duration;

use crate::harness::Env;

/// 100,000 files in 1,000 folders: delivered once, then a second run opens
/// none of them and sends nothing. Asserted on counters, not on time.
#[test]
fn a_restart_over_100k_delivered_files_hashes_and_sends_nothing() {
    const DIRS: usize = 1_000;
    const PER_DIR: usize = 100;
    let env = Env::new();
    for d in 0..DIRS {
        let dir = env.drop_dir().join(format!("d{d:04}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..PER_DIR {
            // Unique content: identical files would be skipped as duplicates.
            std::fs::write(dir.join(format!("f{f:03}.txt")), format!("{d}/{f}")).unwrap();
        }
    }
    env.config(
        r#"dialect = "objects"
max_in_flight = 8"#,
        "",
    );

    // Hashing 100,000 files and recording 1,000 objects in a debug build,
    // beside the rest of the suite on two cores: minutes, not seconds.
    let first = env.run_within(Duration::from_secs(600), &["once"], |_| {});
    first.assert_code(0);
    assert_eq!(first.counter("files_hashed"), (DIRS * PER_DIR) as u64);
    assert_eq!(first.counter("objects_delivered"), DIRS as u64);

    let requests = env.server.request_count();
    let second = env.run(&["once"]);
    second.assert_code(0);
    assert_eq!(
        second.counter("files_hashed"),
        0,
        "a delivered file was opened again"
    );
    assert_eq!(second.counter("requests"), 0);
    assert_eq!(env.server.request_count(), requests);
}
