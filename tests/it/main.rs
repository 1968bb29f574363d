//! Integration tests: the real `mixpeek-ingest` binary against the emulator.
//!
//! Each test gets its own temp dir and its own emulator on 127.0.0.1:0, and
//! waits on conditions with a timeout, never on a fixed sleep.

#![allow(clippy::unwrap_used)]

mod bad_input;
mod bandwidth;
mod batch;
mod check_online;
mod commands;
mod daemon;
mod disk;
mod dispose;
mod faults;
mod harness;
mod hygiene;
mod metrics;
mod notify;
mod once;
mod progress;
mod quota;
mod redaction;
mod restart;
mod retry;
mod systemd;
mod tasks;
mod uploads;
