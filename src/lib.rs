//! `mixpeek-ingest`: files dropped into local folders become Mixpeek bucket objects.
//!
//! ```text
//! discover ─► settle ─► group ─► hash ─► classify ─► build ─► outbox ─► submit ─► record ─► dispose
//! (scan+watch)                                              (durable)  (retry)   (durable)  (keep/delete/move)
//! ```
//!
//! - `pipeline`: the pure decisions of every box (settle, group, classify, build,
//!   retry); no I/O, tested from tables with an explicit clock.
//! - `daemon`: the shell that carries them out: scan, hash, submit, and the
//!   one place that drives the stages.
//! - `store`: the durable state (files seen, objects, outbox, dead letters).
//! - `api`: the Mixpeek HTTP client.
//! - `config`, `cli`, `error`, `telemetry`: the edges.

pub mod api;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod error;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod store;
pub mod telemetry;
pub mod transfer;
