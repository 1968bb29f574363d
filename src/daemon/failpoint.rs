//! Test-only crash points.
//!
//! Promise 2 and 3 (SPEC §2) are about what survives a SIGKILL between any
//! two state transitions. Killing from outside cannot aim at a transition, so
//! debug builds (what `cargo test` runs) abort the process, as a SIGKILL
//! would, the first time execution reaches the point named by
//! `MIXPEEK_INGEST_FAILPOINT`. Release builds compile every point away.

/// The variable naming the point to crash at.
pub const ENV: &str = "MIXPEEK_INGEST_FAILPOINT";

/// A group was read and hashed; its object is not in the outbox yet.
pub const AFTER_HASH: &str = "after-hash";
/// The outbox commit is done; no request was sent.
pub const AFTER_ENQUEUE: &str = "after-enqueue";
/// A 2xx came back and is not recorded yet.
pub const AFTER_RESPONSE: &str = "after-response";
/// A presigned PUT succeeded and is recorded; the upload is not confirmed.
pub const AFTER_PUT: &str = "after-put";
/// The delivery is recorded; disposal has not run.
pub const AFTER_RECORD: &str = "after-record";

/// Aborts the process if `name` is the configured failpoint.
#[cfg(debug_assertions)]
pub fn hit(name: &str) {
    if std::env::var(ENV).is_ok_and(|wanted| wanted == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_name: &str) {}
