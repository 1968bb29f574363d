//! The durable state of the daemon: files seen, objects, the outbox, dead letters.
//!
//! Role: the `outbox` and `record` boxes of the pipeline. Everything the daemon must
//! remember across a crash lives here, in one SQLite file, `state.db` in
//! `[state] dir` (SPEC §2, §6, §10). The store is synchronous; the async shell calls
//! it from `spawn_blocking`.
//!
//! Inputs: objects built by the pipeline ([`NewObject`]) and the outcome of each
//! submission (`mark_delivered`, `mark_retry`, `mark_dead`). Outputs: the objects due
//! for sending ([`Store::due`]), what is known about each file ([`Store::file`],
//! [`Store::file_stat`]), delivered hashes for `skip_duplicates`, and a
//! [`Summary`] for `status`.
//!
//! # Durability
//!
//! WAL journal, `synchronous=FULL`: a method that returned `Ok` survives SIGKILL and
//! power loss. Every method that changes more than one row does so in one
//! `IMMEDIATE` transaction, so a crash leaves either all of it or none of it
//! (an object is never queued without its files, never delivered without its
//! hashes). `IMMEDIATE` takes the write lock up front, so a second process (the
//! `retry` command next to a running daemon) waits on the 5 s busy timeout instead
//! of failing with `SQLITE_BUSY` halfway through.
//!
//! # Tables
//!
//! - `meta(key TEXT PRIMARY KEY, value TEXT)`: `schema_version` (the migration
//!   level, see below) and small remembered settings, e.g. `dialect` (the API
//!   dialect `auto` settled on, SPEC §7).
//! - `objects(id, watch, bucket, key_prefix, spec, status, attempts,
//!   next_attempt_ms, last_error, server_object_id, task_id, created_ms,
//!   updated_ms)`: one row per object the daemon decided to create. `spec` is the
//!   `ObjectSpec` JSON, rendered into a dialect only at send time. `status` is
//!   `pending | delivered | dead | skipped`:
//!   - the outbox is `status = 'pending'`, sent when `next_attempt_ms` (unix ms)
//!     has passed; `attempts` counts failed attempts, `last_error` the latest;
//!   - dead letters are `status = 'dead'`, `last_error` holding the reason (the
//!     server's message, or a local reason for objects never sent);
//!   - `skipped` objects were not sent because every blob was a duplicate.
//!
//!   Ids come from `AUTOINCREMENT`, so an id shown by `status` and given to
//!   `retry ID` never names another object later. Index `(status,
//!   next_attempt_ms)` serves `due`, `next_due_ms` and the counts.
//! - `object_files(object_id, rel, size, mtime_ns, sha256)`: the files that went
//!   into each object (for `status`, and for the hashes recorded on delivery).
//! - `files(watch, rel, size, mtime_ns, sha256, object_id, state)`, key
//!   `(watch, rel)`: the last version of each file that went into an object, and
//!   that object's status as the file's `state`. A file whose size, mtime and hash
//!   match a delivered row is never sent again (SPEC §6). `state` follows the
//!   object only while `files.object_id` still names it: once a newer version of
//!   the file is queued, the old object's outcome no longer touches the row.
//! - `delivered_hashes(bucket, sha256)`: every hash delivered to a bucket, for the
//!   local `skip_duplicates` check.
//! - `disposals(object_id, rel, size, mtime_ns)`: for watches with
//!   `after_delivery = delete | move`, the files (blobs, and the sidecar and
//!   marker that go with the group) to dispose of once the object is delivered
//!   or skipped, written with the object. A row leaves only after its file was
//!   disposed of, so a crash between the delivery commit and the disposal
//!   redoes the disposal at the next start, and never the delivery (SPEC §2,
//!   promise 4).
//! - `uploads(object_id, property, upload_id, presigned_url, expires_ms, etag,
//!   put_done, confirmed)`: the presigned upload of each `upload` blob of a
//!   pending object, written after every step (created, PUT, confirmed), so a
//!   restart resumes at the step it reached instead of uploading again. The
//!   rows leave with the delivery.
//! - `tasks(task_id, object_id, state, outcome, polls, next_poll_ms, error,
//!   updated_ms)`: the processing tasks the API answered with, polled until
//!   `outcome` is set (`ok`, `failed`, or `unknown` for a task the API no
//!   longer knows). Index on `next_poll_ms` of the tasks still polled.
//!
//! # Invariants
//!
//! - A file that is not a SQLite database, a SQLite database of another program,
//!   and a state store written by a newer version are refused with an error naming
//!   the file, before anything is written to it.
//! - Migrations run in one transaction; `meta.schema_version` moves with them.
//! - The directory is created `0700`, the database file `0600` (SPEC §10); SQLite
//!   gives its `-wal` and `-shm` files the database file's mode.
//! - Outcomes only move an object forward: `mark_retry` and `mark_dead` apply to a
//!   pending object and are ignored (stale) for any other; `mark_delivered` wins
//!   from any status, because the server's ack is the truth.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, ToSql, Transaction, TransactionBehavior,
    params,
};
use serde::Serialize;

use crate::pipeline::task::Outcome as TaskOutcome;

/// The database file's name inside `[state] dir`.
pub const DB_FILE: &str = "state.db";

/// How long a statement waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// `meta` key holding why submissions are paused, while they are; written by
/// the daemon so `status` can tell the operator.
pub const PAUSE_META_KEY: &str = "pause";

/// How many pending errors `summary` lists.
const RECENT_ERRORS: usize = 10;
/// How many failed tasks `summary` lists.
const FAILED_TASKS: usize = 20;

/// `MIGRATIONS[n]` takes the schema from version `n` to `n + 1`. Append only: a
/// released migration is never edited, because databases in the field already ran it.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    "CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE objects (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        watch            TEXT NOT NULL,
        bucket           TEXT NOT NULL,
        key_prefix       TEXT NOT NULL,
        spec             TEXT NOT NULL,
        status           TEXT NOT NULL
                         CHECK (status IN ('pending', 'delivered', 'dead', 'skipped')),
        attempts         INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms  INTEGER NOT NULL,
        last_error       TEXT,
        server_object_id TEXT,
        task_id          TEXT,
        created_ms       INTEGER NOT NULL,
        updated_ms       INTEGER NOT NULL
    );
    CREATE INDEX objects_by_status_next ON objects (status, next_attempt_ms);

    CREATE TABLE object_files (
        object_id INTEGER NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
        rel       TEXT NOT NULL,
        size      INTEGER NOT NULL,
        mtime_ns  INTEGER NOT NULL,
        sha256    TEXT NOT NULL,
        PRIMARY KEY (object_id, rel)
    ) WITHOUT ROWID;

    CREATE TABLE files (
        watch     TEXT NOT NULL,
        rel       TEXT NOT NULL,
        size      INTEGER NOT NULL,
        mtime_ns  INTEGER NOT NULL,
        sha256    TEXT NOT NULL,
        object_id INTEGER NOT NULL REFERENCES objects (id),
        state     TEXT NOT NULL
                  CHECK (state IN ('pending', 'delivered', 'dead', 'skipped')),
        PRIMARY KEY (watch, rel)
    ) WITHOUT ROWID;
    CREATE INDEX files_by_object ON files (object_id);

    CREATE TABLE delivered_hashes (
        bucket TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        PRIMARY KEY (bucket, sha256)
    ) WITHOUT ROWID;",
    // 2: files to delete or move once their object is delivered.
    "CREATE TABLE disposals (
        object_id INTEGER NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
        rel       TEXT NOT NULL,
        size      INTEGER NOT NULL,
        mtime_ns  INTEGER NOT NULL,
        PRIMARY KEY (object_id, rel)
    ) WITHOUT ROWID;",
    // 3: presigned uploads in progress (one row per upload blob, so a restart
    // resumes at the step it reached), and the tasks the API answered with.
    "CREATE TABLE uploads (
        object_id     INTEGER NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
        property      TEXT NOT NULL,
        upload_id     TEXT NOT NULL,
        presigned_url TEXT,
        expires_ms    INTEGER,
        etag          TEXT,
        put_done      INTEGER NOT NULL DEFAULT 0,
        confirmed     INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (object_id, property)
    ) WITHOUT ROWID;

    CREATE TABLE tasks (
        task_id      TEXT PRIMARY KEY NOT NULL,
        object_id    INTEGER NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
        state        TEXT NOT NULL,
        outcome      TEXT CHECK (outcome IN ('ok', 'failed', 'unknown')),
        polls        INTEGER NOT NULL DEFAULT 0,
        next_poll_ms INTEGER NOT NULL,
        error        TEXT,
        updated_ms   INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX tasks_to_poll ON tasks (next_poll_ms) WHERE outcome IS NULL;",
    // 4: whether a queued request carries upload blobs (such an object is
    // sent on its own, never held for a batch), so the submitter can tell
    // without loading the request. NULL for rows queued before: unknown.
    "ALTER TABLE objects ADD COLUMN has_uploads INTEGER;",
];

/// The schema version this binary writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Errors of the store. Each names the database file, so a fatal one tells the
/// operator which file to look at.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open state database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{path} is not a SQLite database; refusing to use or overwrite it \
         (move it away to start with an empty state)"
    )]
    NotADatabase { path: PathBuf },
    #[error(
        "{path} is a SQLite database of another program (it has no mixpeek-ingest \
         schema version); refusing to use or overwrite it"
    )]
    Foreign { path: PathBuf },
    #[error(
        "{path} has schema version {found}, newer than the {supported} this version \
         of mixpeek-ingest understands; run a newer mixpeek-ingest"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "{path} has schema version {found}, older than {supported}; it cannot be \
         upgraded read-only: start the daemon once to migrate it"
    )]
    NeedsMigration {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state database {path}: no object with id {id}")]
    NoSuchObject { path: PathBuf, id: i64 },
}

impl StoreError {
    /// Whether the disk holding the store is full (`SQLITE_FULL`, `ENOSPC`).
    ///
    /// The daemon treats this as "stop taking new work and retry later" rather
    /// than as a fault of the object at hand (SPEC §2, promise 6).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Open { source, .. } | StoreError::Sqlite { source, .. } => {
                source.sqlite_error_code() == Some(ErrorCode::DiskFull)
            }
            StoreError::Io { source, .. } => source.kind() == io::ErrorKind::StorageFull,
            _ => false,
        }
    }

    /// Whether the state disk refuses writes for now (full, or mounted
    /// read-only): a condition the daemon waits out rather than dies of.
    pub fn is_unwritable(&self) -> bool {
        if self.is_disk_full() {
            return true;
        }
        match self {
            StoreError::Open { source, .. } | StoreError::Sqlite { source, .. } => {
                source.sqlite_error_code() == Some(ErrorCode::ReadOnly)
            }
            StoreError::Io { source, .. } => source.kind() == io::ErrorKind::ReadOnlyFilesystem,
            _ => false,
        }
    }

    /// The database file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            StoreError::Open { path, .. }
            | StoreError::NotADatabase { path }
            | StoreError::Foreign { path }
            | StoreError::NewerSchema { path, .. }
            | StoreError::NeedsMigration { path, .. }
            | StoreError::Sqlite { path, .. }
            | StoreError::Io { path, .. }
            | StoreError::NoSuchObject { path, .. } => path,
        }
    }
}

/// Where an object (and the files in it) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectStatus {
    /// In the outbox: not yet acknowledged.
    Pending,
    /// The API answered 2xx and the answer is recorded.
    Delivered,
    /// A dead letter: refused for good, or never sendable.
    Dead,
    /// Not sent: every blob was already delivered to the bucket.
    Skipped,
}

impl ObjectStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectStatus::Pending => "pending",
            ObjectStatus::Delivered => "delivered",
            ObjectStatus::Dead => "dead",
            ObjectStatus::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<ObjectStatus> {
        match s {
            "pending" => Some(ObjectStatus::Pending),
            "delivered" => Some(ObjectStatus::Delivered),
            "dead" => Some(ObjectStatus::Dead),
            "skipped" => Some(ObjectStatus::Skipped),
            _ => None,
        }
    }
}

impl std::fmt::Display for ObjectStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for ObjectStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for ObjectStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = value.as_str()?;
        ObjectStatus::parse(s)
            .ok_or_else(|| FromSqlError::Other(format!("unknown object status {s:?}").into()))
    }
}

/// Identifies a file: the watch's path as a string (its stable id) and the path
/// relative to the watch root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey<'a> {
    pub watch: &'a str,
    pub rel: &'a str,
}

/// The last version of a file that went into an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRecord {
    pub size: u64,
    pub mtime_ns: i64,
    pub sha256: String,
    /// The status of `object_id`, the object this version went into.
    pub state: ObjectStatus,
    pub object_id: i64,
}

/// One file of an object about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFile {
    pub rel: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub sha256: String,
}

/// One object for [`Store::record`], with the status it is recorded in:
/// `Pending` (queued), `Dead` (a local dead letter, with its reason) or
/// `Skipped` (with its reason).
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub object: &'a NewObject,
    pub status: ObjectStatus,
    pub reason: Option<&'a str>,
    /// Whether its request carries upload blobs; `None` when not known
    /// (taken as maybe).
    pub has_uploads: Option<bool>,
}

/// An object about to be recorded (queued, dead-lettered locally, or skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewObject {
    pub watch: String,
    pub bucket: String,
    pub key_prefix: String,
    /// `ObjectSpec` as JSON.
    pub spec_json: String,
    /// Distinct `rel`s; a repeated one fails the whole insert.
    pub files: Vec<NewFile>,
    /// Files to delete or move once the object is delivered; empty under
    /// `after_delivery = "keep"`.
    pub dispose: Vec<DisposeFile>,
}

/// A file to dispose of, in the version that went into the object: a newer
/// version found in its place is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisposeFile {
    pub rel: String,
    pub size: u64,
    pub mtime_ns: i64,
}

/// A disposal that may run now: its object is delivered (or skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disposal {
    pub object_id: i64,
    pub watch: String,
    pub file: DisposeFile,
}

/// An object due for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: i64,
    pub watch: String,
    pub bucket: String,
    pub key_prefix: String,
    pub spec_json: String,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// A due object as [`Store::due_list`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueEntry {
    pub id: i64,
    /// Bytes of its stored request.
    pub bytes: usize,
    /// Its request may hold an upload blob (never false when it does).
    pub may_upload: bool,
}

/// How a pending object ends without a delivery (`Store::end_pending`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Refused for good (`mark_dead`).
    Dead,
    /// Built for a flow the API does not have (`mark_dead_unsendable`).
    Unsendable,
    /// A file changed after it was queued (`mark_superseded`).
    Superseded,
}

/// A 2xx for one object, as [`Store::mark_delivered_many`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub id: i64,
    pub server_object_id: Option<String>,
    pub task_id: Option<String>,
}

/// Where the presigned upload of one blob stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    /// The blob's property: its identity within the object.
    pub property: String,
    pub upload_id: String,
    /// `None` when the API found the content already uploaded (no PUT).
    pub presigned_url: Option<String>,
    /// When the presigned URL stops working (unix ms), if the API said.
    pub expires_ms: Option<i64>,
    /// The ETag the PUT answered.
    pub etag: Option<String>,
    pub put_done: bool,
    pub confirmed: bool,
}

/// A task still being polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub task_id: String,
    pub object_id: i64,
    pub bucket: String,
    pub key_prefix: String,
    /// The state last reported.
    pub state: String,
    /// Polls so far.
    pub polls: u32,
}

/// One file of a recorded object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectFile {
    pub rel: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub sha256: String,
}

/// Everything recorded about one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectRow {
    pub id: i64,
    pub watch: String,
    pub bucket: String,
    pub key_prefix: String,
    pub spec_json: String,
    pub status: ObjectStatus,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    /// The latest error while pending; the reason once dead or skipped.
    pub last_error: Option<String>,
    pub server_object_id: Option<String>,
    pub task_id: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Ordered by `rel`.
    pub files: Vec<ObjectFile>,
}

/// Number of objects in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    pub pending: u64,
    pub delivered: u64,
    pub dead: u64,
    pub skipped: u64,
}

impl StatusCounts {
    pub fn get(&self, status: ObjectStatus) -> u64 {
        match status {
            ObjectStatus::Pending => self.pending,
            ObjectStatus::Delivered => self.delivered,
            ObjectStatus::Dead => self.dead,
            ObjectStatus::Skipped => self.skipped,
        }
    }

    fn slot(&mut self, status: ObjectStatus) -> &mut u64 {
        match status {
            ObjectStatus::Pending => &mut self.pending,
            ObjectStatus::Delivered => &mut self.delivered,
            ObjectStatus::Dead => &mut self.dead,
            ObjectStatus::Skipped => &mut self.skipped,
        }
    }
}

/// A pending object whose last attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecentError {
    pub id: i64,
    pub watch: String,
    pub bucket: String,
    pub key_prefix: String,
    pub attempts: u32,
    pub error: String,
    pub next_attempt_ms: i64,
    pub updated_ms: i64,
}

/// A dead letter, with the reason and the files it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub watch: String,
    pub bucket: String,
    pub key_prefix: String,
    pub reason: String,
    /// Relative paths, ordered.
    pub files: Vec<String>,
    pub updated_ms: i64,
}

/// The outbox at one moment ([`Store::outbox_figures`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxFigures {
    pub pending: u64,
    /// Pending objects whose next attempt time has come.
    pub due: u64,
    /// When the oldest pending object was first queued (unix ms).
    pub oldest_created_ms: Option<i64>,
}

/// What `status` shows (SPEC §9).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub counts: StatusCounts,
    /// Age of the oldest pending object (since it was first queued), if any.
    pub oldest_pending_age_ms: Option<i64>,
    /// Pending objects whose last attempt failed, newest first, at most 10.
    pub recent_errors: Vec<RecentError>,
    /// Every dead letter, oldest first.
    pub dead_letters: Vec<DeadLetter>,
    /// Why submissions are paused, when they are (`meta.pause`).
    pub paused: Option<String>,
    /// The processing tasks of delivered objects, by outcome.
    pub tasks: TaskCounts,
    /// Tasks that ended failed, newest first, at most 20.
    pub failed_tasks: Vec<FailedTask>,
}

/// Number of tasks polled, and how those done ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TaskCounts {
    pub polling: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
}

/// A task that ended `FAILED`, `CANCELED` or `COMPLETED_WITH_ERRORS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedTask {
    pub task_id: String,
    /// The object it processes.
    pub id: i64,
    pub bucket: String,
    pub key_prefix: String,
    pub state: String,
    pub error: Option<String>,
    pub updated_ms: i64,
}

/// The text of `status` (without `--json`).
impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.counts;
        write!(
            f,
            "objects: {} pending, {} delivered, {} dead, {} skipped",
            c.pending, c.delivered, c.dead, c.skipped
        )?;
        if let Some(reason) = &self.paused {
            write!(f, "\nsubmissions PAUSED: {reason}")?;
        }
        if let Some(age) = self.oldest_pending_age_ms {
            // Whole seconds: milliseconds are noise in an operator's view.
            let age = Duration::from_secs(u64::try_from(age / 1000).unwrap_or(0));
            write!(f, "\noldest pending: {}", humantime::format_duration(age))?;
        }
        if !self.recent_errors.is_empty() {
            write!(f, "\nrecent errors (newest first):")?;
            for e in &self.recent_errors {
                write!(
                    f,
                    "\n  #{} {} {} ({} attempt{}): {}",
                    e.id,
                    e.bucket,
                    e.key_prefix,
                    e.attempts,
                    if e.attempts == 1 { "" } else { "s" },
                    e.error
                )?;
            }
        }
        let t = &self.tasks;
        if t.polling + t.ok + t.failed + t.unknown > 0 {
            write!(
                f,
                "\ntasks: {} polling, {} completed, {} failed, {} unknown",
                t.polling, t.ok, t.failed, t.unknown
            )?;
        }
        if !self.failed_tasks.is_empty() {
            write!(f, "\nfailed tasks (newest first):")?;
            for task in &self.failed_tasks {
                write!(
                    f,
                    "\n  {} {} #{} {} {}",
                    task.state, task.task_id, task.id, task.bucket, task.key_prefix
                )?;
                if let Some(error) = &task.error {
                    write!(f, ": {error}")?;
                }
            }
        }
        if !self.dead_letters.is_empty() {
            write!(f, "\ndead letters:")?;
            for d in &self.dead_letters {
                write!(
                    f,
                    "\n  #{} {} {}: {}",
                    d.id, d.bucket, d.key_prefix, d.reason
                )?;
                if !d.files.is_empty() {
                    write!(f, "\n      files: {}", d.files.join(", "))?;
                }
            }
            write!(
                f,
                "\nput them back into the outbox with `mixpeek-ingest retry ID...` or `retry --all`"
            )?;
        }
        Ok(())
    }
}

/// The current wall-clock time in unix milliseconds, as the store records it.
pub fn unix_now_ms() -> i64 {
    // A clock before 1970 is a broken clock; 0 keeps the arithmetic defined.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The daemon's durable state. See the module docs for the tables.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    /// `dir/state.db`, also for the in-memory stand-in of `open_read_only`.
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) `dir/state.db` for reading and writing, and
    /// migrates it to this binary's schema.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        let path = dir.join(DB_FILE);
        // Create the file ourselves so it is born 0600: SQLite would create it
        // with 0644 (less the umask).
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(StoreError::Io { path, source }),
        }
        if !has_sqlite_header(&path)? {
            return Err(StoreError::NotADatabase { path });
        }

        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| open_error(&path, source))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|source| open_error(&path, source))?;

        // Check what the file is before anything writes to it: switching to WAL
        // rewrites the header, and a refused file must stay byte-identical.
        let found = schema_version(&conn, &path)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }

        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|source| open_error(&path, source))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Some network file systems cannot share the WAL index. Rollback
            // journal with synchronous=FULL is slower but just as durable.
            tracing::warn!(path = %path.display(), journal_mode = %mode, "state database cannot use WAL");
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|source| open_error(&path, source))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|source| open_error(&path, source))?;

        migrate(&mut conn, &path)?;
        Ok(Store { conn, path })
    }

    /// Opens `dir/state.db` read-only, for `plan` and `status`: nothing is
    /// created, migrated or written. A missing (or empty) database gives an
    /// empty in-memory store with the schema, so callers work the same.
    pub fn open_read_only(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join(DB_FILE);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == 0 => return Store::empty(path),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Store::empty(path),
            Err(source) => return Err(StoreError::Io { path, source }),
        }
        if !has_sqlite_header(&path)? {
            return Err(StoreError::NotADatabase { path });
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| open_error(&path, source))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|source| open_error(&path, source))?;
        match schema_version(&conn, &path)? {
            0 => Store::empty(path),
            found if found > SCHEMA_VERSION => Err(StoreError::NewerSchema {
                path,
                found,
                supported: SCHEMA_VERSION,
            }),
            found if found < SCHEMA_VERSION => Err(StoreError::NeedsMigration {
                path,
                found,
                supported: SCHEMA_VERSION,
            }),
            _ => Ok(Store { conn, path }),
        }
    }

    /// An in-memory store with the current schema, reporting `path` as its file.
    fn empty(path: PathBuf) -> Result<Store, StoreError> {
        let mut conn = Connection::open_in_memory().map_err(|source| open_error(&path, source))?;
        migrate(&mut conn, &path)?;
        Ok(Store { conn, path })
    }

    /// The database file (`dir/state.db`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql_error(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` in one IMMEDIATE transaction and commits it.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let path = &self.path;
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let out = f(&tx).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(out)
    }

    /// The last recorded version of one file.
    pub fn file(&self, key: FileKey<'_>) -> Result<Option<FileRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT size, mtime_ns, sha256, state, object_id
                 FROM files WHERE watch = ?1 AND rel = ?2",
            )
            .map_err(self.sql_error())?;
        stmt.query_row(params![key.watch, key.rel], file_record)
            .optional()
            .map_err(self.sql_error())
    }

    /// Size and mtime of the last recorded version of one file: the restart
    /// fast path asks this of every file a scan finds, so it reads the
    /// primary key and nothing else.
    pub fn file_stat(&self, key: FileKey<'_>) -> Result<Option<(u64, i64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT size, mtime_ns FROM files WHERE watch = ?1 AND rel = ?2")
            .map_err(self.sql_error())?;
        stmt.query_row(params![key.watch, key.rel], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
        })
        .optional()
        .map(|stat| stat.map(|(size, mtime_ns)| (u64::try_from(size).unwrap_or(0), mtime_ns)))
        .map_err(self.sql_error())
    }

    /// Every recorded file of a watch, keyed by `rel`, in one query: what
    /// tests check the store's view against (the daemon asks `file_stat`).
    #[cfg(test)]
    pub fn files_of_watch(
        &self,
        watch: &str,
    ) -> Result<std::collections::HashMap<String, FileRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT size, mtime_ns, sha256, state, object_id, rel
                 FROM files WHERE watch = ?1",
            )
            .map_err(self.sql_error())?;
        let rows = stmt
            .query_map(params![watch], |row| Ok((row.get(5)?, file_record(row)?)))
            .map_err(self.sql_error())?;
        rows.collect::<rusqlite::Result<std::collections::HashMap<String, FileRecord>>>()
            .map_err(self.sql_error())
    }

    /// Queues an object: the object (pending, due now), its files, and the files'
    /// latest versions, in one transaction. Returns the object id.
    pub fn enqueue(&mut self, obj: &NewObject) -> Result<i64, StoreError> {
        self.insert(obj, ObjectStatus::Pending, None)
    }

    /// Records an object that will never be sent (a property clash, a file that
    /// could not be classified, a bad sidecar) as a dead letter with `reason`.
    pub fn record_local_dead(&mut self, obj: &NewObject, reason: &str) -> Result<i64, StoreError> {
        self.insert(obj, ObjectStatus::Dead, Some(reason))
    }

    /// Records an object not sent because all its blobs were already delivered.
    pub fn record_skipped(&mut self, obj: &NewObject, reason: &str) -> Result<i64, StoreError> {
        self.insert(obj, ObjectStatus::Skipped, Some(reason))
    }

    fn insert(
        &mut self,
        obj: &NewObject,
        status: ObjectStatus,
        reason: Option<&str>,
    ) -> Result<i64, StoreError> {
        let ids = self.record(&[Record {
            object: obj,
            status,
            reason,
            has_uploads: None,
        }])?;
        Ok(ids[0])
    }

    /// Records objects in one transaction (one commit, so one wait for the
    /// disk, for all of them), each as `enqueue`, `record_local_dead` or
    /// `record_skipped` would. Returns their ids in order.
    pub fn record(&mut self, records: &[Record<'_>]) -> Result<Vec<i64>, StoreError> {
        let now = unix_now_ms();
        self.write(|tx| {
            let mut object = tx.prepare_cached(
                "INSERT INTO objects (watch, bucket, key_prefix, spec, status, attempts,
                                      next_attempt_ms, last_error, created_ms, updated_ms,
                                      has_uploads)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?6, ?6, ?8)",
            )?;
            let mut object_file = tx.prepare_cached(
                "INSERT INTO object_files (object_id, rel, size, mtime_ns, sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut file = tx.prepare_cached(
                "INSERT INTO files (watch, rel, size, mtime_ns, sha256, object_id, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (watch, rel) DO UPDATE SET
                     size = excluded.size, mtime_ns = excluded.mtime_ns,
                     sha256 = excluded.sha256, object_id = excluded.object_id,
                     state = excluded.state",
            )?;
            let mut dispose = tx.prepare_cached(
                "INSERT OR IGNORE INTO disposals (object_id, rel, size, mtime_ns)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut ids = Vec::with_capacity(records.len());
            for Record {
                object: obj,
                status,
                reason,
                has_uploads,
            } in records
            {
                object.execute(params![
                    obj.watch,
                    obj.bucket,
                    obj.key_prefix,
                    obj.spec_json,
                    status,
                    now,
                    reason,
                    has_uploads
                ])?;
                let id = tx.last_insert_rowid();
                for f in &obj.files {
                    object_file.execute(params![id, f.rel, f.size, f.mtime_ns, f.sha256])?;
                    file.execute(params![
                        obj.watch, f.rel, f.size, f.mtime_ns, f.sha256, id, status
                    ])?;
                }
                for d in &obj.dispose {
                    dispose.execute(params![id, d.rel, d.size, d.mtime_ns])?;
                }
                ids.push(id);
            }
            Ok(ids)
        })
    }

    /// Disposals whose object is delivered or skipped, oldest object first.
    pub fn due_disposals(&self, limit: usize) -> Result<Vec<Disposal>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT d.object_id, o.watch, d.rel, d.size, d.mtime_ns
                 FROM disposals d JOIN objects o ON o.id = d.object_id
                 WHERE o.status IN ('delivered', 'skipped')
                 ORDER BY d.object_id, d.rel LIMIT ?1",
            )
            .map_err(self.sql_error())?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![limit], |row| {
                Ok(Disposal {
                    object_id: row.get(0)?,
                    watch: row.get(1)?,
                    file: DisposeFile {
                        rel: row.get(2)?,
                        size: row.get(3)?,
                        mtime_ns: row.get(4)?,
                    },
                })
            })
            .map_err(self.sql_error())?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(self.sql_error())
    }

    /// Forgets a disposal that was carried out (or found moot).
    pub fn disposed(&mut self, object_id: i64, rel: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM disposals WHERE object_id = ?1 AND rel = ?2")?
                .execute(params![object_id, rel])?;
            Ok(())
        })
    }

    /// Pending objects whose `next_attempt_ms <= now_ms`, at most `limit`, the
    /// longest overdue first (ties by id, i.e. queue order).
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, watch, bucket, key_prefix, spec, attempts FROM objects
                 WHERE status = 'pending' AND next_attempt_ms <= ?1
                 ORDER BY next_attempt_ms, id LIMIT ?2",
            )
            .map_err(self.sql_error())?;
        // SQLite's LIMIT is an i64; more than that many rows cannot exist.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![now_ms, limit], outbox_item)
            .map_err(self.sql_error())?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.sql_error())
    }

    /// Ids and due times of the pending objects due at `now_ms`, the longest
    /// overdue first, at most `limit`: what is waiting, without the requests.
    pub fn due_ids(&self, now_ms: i64, limit: usize) -> Result<Vec<(i64, i64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, next_attempt_ms FROM objects
                 WHERE status = 'pending' AND next_attempt_ms <= ?1
                 ORDER BY next_attempt_ms, id LIMIT ?2",
            )
            .map_err(self.sql_error())?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![now_ms, limit], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(self.sql_error())?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(self.sql_error())
    }

    /// The pending objects due at `now_ms`, longest overdue first, at most
    /// `limit`, without their requests: each one's size, and whether its
    /// request may carry an upload. The submitter decides from this list
    /// which requests to load, instead of loading and parsing all of them
    /// at every wake.
    pub fn due_list(&self, now_ms: i64, limit: usize) -> Result<Vec<DueEntry>, StoreError> {
        // `octet_length` reads the size from the record header, not the
        // text; an object queued before `has_uploads` existed may have some.
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, octet_length(spec), coalesce(has_uploads, 1)
                 FROM objects
                 WHERE status = 'pending' AND next_attempt_ms <= ?1
                 ORDER BY next_attempt_ms, id LIMIT ?2",
            )
            .map_err(self.sql_error())?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![now_ms, limit], |row| {
                Ok(DueEntry {
                    id: row.get(0)?,
                    bytes: usize::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                    may_upload: row.get(2)?,
                })
            })
            .map_err(self.sql_error())?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(self.sql_error())
    }

    /// The pending objects with these ids, in the order given; ids no
    /// longer pending are left out.
    pub fn pending_items(&self, ids: &[i64]) -> Result<Vec<OutboxItem>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, watch, bucket, key_prefix, spec, attempts FROM objects
                 WHERE id = ?1 AND status = 'pending'",
            )
            .map_err(self.sql_error())?;
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            let item = stmt
                .query_row(params![id], outbox_item)
                .optional()
                .map_err(self.sql_error())?;
            items.extend(item);
        }
        Ok(items)
    }

    /// When the next pending object becomes due (unix ms), if any is pending.
    pub fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT MIN(next_attempt_ms) FROM objects WHERE status = 'pending'")
            .map_err(self.sql_error())?;
        stmt.query_row([], |row| row.get(0))
            .map_err(self.sql_error())
    }

    /// Records the server's ack, in one transaction: the object is delivered, the
    /// files whose latest version it holds are delivered, every file hash is
    /// remembered as delivered to the bucket, its uploads are forgotten, and a
    /// task id is queued for polling.
    pub fn mark_delivered(
        &mut self,
        id: i64,
        server_object_id: Option<&str>,
        task_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let found = self.write(|tx| deliver(tx, id, server_object_id, task_id, unix_now_ms()))?;
        self.found(id, found)
    }

    /// [`Store::mark_delivered`] for many objects (a batch create) in one
    /// transaction: one commit, one wait for the disk. Objects that no longer
    /// exist are ignored.
    pub fn mark_delivered_many(&mut self, acks: &[Ack]) -> Result<(), StoreError> {
        let now = unix_now_ms();
        self.write(|tx| {
            for ack in acks {
                deliver(
                    tx,
                    ack.id,
                    ack.server_object_id.as_deref(),
                    ack.task_id.as_deref(),
                    now,
                )?;
            }
            Ok(())
        })
    }

    /// Ends a pending object that cannot be sent any more without blaming it:
    /// a file of an `upload` blob changed or vanished after the object was
    /// queued (its new version, if any, is queued as an object of its own).
    /// Recorded as `skipped` with `reason`. Ignored if no longer pending.
    pub fn mark_superseded(&mut self, id: i64, reason: &str) -> Result<(), StoreError> {
        self.end_pending(id, Ending::Superseded, reason)
    }

    /// The recorded upload steps of an object's `upload` blobs.
    pub fn uploads_of(&self, object_id: i64) -> Result<Vec<UploadRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT property, upload_id, presigned_url, expires_ms, etag, put_done, confirmed
                 FROM uploads WHERE object_id = ?1 ORDER BY property",
            )
            .map_err(self.sql_error())?;
        let rows = stmt
            .query_map(params![object_id], |row| {
                Ok(UploadRow {
                    property: row.get(0)?,
                    upload_id: row.get(1)?,
                    presigned_url: row.get(2)?,
                    expires_ms: row.get(3)?,
                    etag: row.get(4)?,
                    put_done: row.get(5)?,
                    confirmed: row.get(6)?,
                })
            })
            .map_err(self.sql_error())?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(self.sql_error())
    }

    /// Records where an upload stands (replacing what was recorded for the
    /// blob: a renewed upload starts over). Ignored unless the object is
    /// still pending.
    pub fn record_upload(&mut self, object_id: i64, row: &UploadRow) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO uploads (object_id, property, upload_id, presigned_url, expires_ms,
                                      etag, put_done, confirmed)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
                 WHERE EXISTS (SELECT 1 FROM objects WHERE id = ?1 AND status = 'pending')
                 ON CONFLICT (object_id, property) DO UPDATE SET
                     upload_id = excluded.upload_id, presigned_url = excluded.presigned_url,
                     expires_ms = excluded.expires_ms, etag = excluded.etag,
                     put_done = excluded.put_done, confirmed = excluded.confirmed",
            )?
            .execute(params![
                object_id,
                row.property,
                row.upload_id,
                row.presigned_url,
                row.expires_ms,
                row.etag,
                row.put_done,
                row.confirmed
            ])?;
            Ok(())
        })
    }

    /// Forgets a blob's upload (its presigned URL expired before the PUT, or
    /// the API no longer knows it): the next attempt creates a new one.
    pub fn forget_upload(&mut self, object_id: i64, property: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM uploads WHERE object_id = ?1 AND property = ?2")?
                .execute(params![object_id, property])?;
            Ok(())
        })
    }

    /// Tasks still polled whose `next_poll_ms <= now_ms`, the longest overdue
    /// first, at most `limit`.
    pub fn due_tasks(&self, now_ms: i64, limit: usize) -> Result<Vec<TaskRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT t.task_id, t.object_id, o.bucket, o.key_prefix, t.state, t.polls
                 FROM tasks t JOIN objects o ON o.id = t.object_id
                 WHERE t.outcome IS NULL AND t.next_poll_ms <= ?1
                 ORDER BY t.next_poll_ms LIMIT ?2",
            )
            .map_err(self.sql_error())?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![now_ms, limit], |row| {
                Ok(TaskRow {
                    task_id: row.get(0)?,
                    object_id: row.get(1)?,
                    bucket: row.get(2)?,
                    key_prefix: row.get(3)?,
                    state: row.get(4)?,
                    polls: row.get(5)?,
                })
            })
            .map_err(self.sql_error())?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(self.sql_error())
    }

    /// When the next task poll is due (unix ms), if any task is still polled.
    pub fn next_task_poll_ms(&self) -> Result<Option<i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT MIN(next_poll_ms) FROM tasks WHERE outcome IS NULL")
            .map_err(self.sql_error())?;
        stmt.query_row([], |row| row.get(0))
            .map_err(self.sql_error())
    }

    /// Records one poll of a task: the state it reported, its outcome once
    /// final (`None` keeps it polled), when to poll next, and its error.
    pub fn record_task(
        &mut self,
        task_id: &str,
        state: &str,
        outcome: Option<TaskOutcome>,
        next_poll_ms: i64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = unix_now_ms();
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE tasks SET state = ?2, outcome = ?3, polls = MIN(polls + 1, 4294967295),
                     next_poll_ms = ?4, error = COALESCE(?5, error), updated_ms = ?6
                 WHERE task_id = ?1",
            )?
            .execute(params![
                task_id,
                state,
                outcome.map(TaskOutcome::as_str),
                next_poll_ms,
                error,
                now
            ])?;
            Ok(())
        })
    }

    /// Records a failed attempt of a pending object: `attempts += 1`, the error,
    /// and when to try again. Ignored if the object is no longer pending.
    pub fn mark_retry(
        &mut self,
        id: i64,
        next_attempt_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let now = unix_now_ms();
        let found = self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE objects SET attempts = MIN(attempts + 1, 4294967295),
                         next_attempt_ms = ?2, last_error = ?3, updated_ms = ?4
                     WHERE id = ?1 AND status = 'pending'",
                )?
                .execute(params![id, next_attempt_ms, error, now])?;
            Ok(changed > 0 || object_exists(tx, id)?)
        })?;
        self.found(id, found)
    }

    /// Holds a pending object until `next_attempt_ms` without counting an
    /// attempt against it: the pause was not the object's fault (SPEC §7).
    pub fn defer(&mut self, id: i64, next_attempt_ms: i64, reason: &str) -> Result<(), StoreError> {
        let now = unix_now_ms();
        let found = self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE objects SET next_attempt_ms = ?2, last_error = ?3, updated_ms = ?4
                     WHERE id = ?1 AND status = 'pending'",
                )?
                .execute(params![id, next_attempt_ms, reason, now])?;
            Ok(changed > 0 || object_exists(tx, id)?)
        })?;
        self.found(id, found)
    }

    /// Turns a pending object into a dead letter with `reason` (a permanent
    /// refusal), with its files. Ignored if the object is no longer pending.
    pub fn mark_dead(&mut self, id: i64, reason: &str) -> Result<(), StoreError> {
        self.end_pending(id, Ending::Dead, reason)
    }

    /// Turns a pending object into a dead letter whose stored request can
    /// never be sent as it is (it was built for a dialect the API turned out
    /// not to have): like a local dead letter, `retry` rebuilds it from the
    /// files on disk instead of resending it. Ignored if no longer pending.
    pub fn mark_dead_unsendable(&mut self, id: i64, reason: &str) -> Result<(), StoreError> {
        self.end_pending(id, Ending::Unsendable, reason)
    }

    /// Ends a pending object without a delivery, in one transaction: the
    /// object and the files whose latest version it holds take the ending's
    /// status, with `reason`. A dead letter counts the attempt and keeps its
    /// upload steps (a `retry` resends it and reuses them); the other two
    /// endings forget them, and an unsendable object forgets its request,
    /// which makes `retry` rebuild it from the files like a local dead
    /// letter. Ignored if the object is no longer pending.
    fn end_pending(&mut self, id: i64, ending: Ending, reason: &str) -> Result<(), StoreError> {
        let now = unix_now_ms();
        let (status, attempt, forget_spec) = match ending {
            Ending::Dead => (ObjectStatus::Dead, 1, false),
            Ending::Unsendable => (ObjectStatus::Dead, 0, true),
            Ending::Superseded => (ObjectStatus::Skipped, 0, false),
        };
        let found = self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE objects SET status = ?2,
                         attempts = MIN(attempts + ?3, 4294967295),
                         spec = CASE WHEN ?4 THEN '' ELSE spec END,
                         last_error = ?5, updated_ms = ?6
                     WHERE id = ?1 AND status = 'pending'",
                )?
                .execute(params![id, status, attempt, forget_spec, reason, now])?;
            if changed == 0 {
                return object_exists(tx, id);
            }
            tx.prepare_cached("UPDATE files SET state = ?2 WHERE object_id = ?1")?
                .execute(params![id, status])?;
            if ending != Ending::Dead {
                tx.prepare_cached("DELETE FROM uploads WHERE object_id = ?1")?
                    .execute(params![id])?;
            }
            Ok(true)
        })?;
        self.found(id, found)
    }

    /// Puts dead letters back into the outbox (`retry`): all of them with `None`,
    /// else those of `ids` that are dead (others are left alone). They are due at
    /// once with a fresh attempt count, and their files are pending again.
    /// Returns how many objects went back.
    pub fn retry_dead(&mut self, ids: Option<&[i64]>) -> Result<usize, StoreError> {
        let now = unix_now_ms();
        self.write(|tx| {
            let ids: Vec<i64> = match ids {
                Some(ids) => ids.to_vec(),
                None => tx
                    .prepare_cached("SELECT id FROM objects WHERE status = 'dead' ORDER BY id")?
                    .query_map([], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()?,
            };
            // A local dead letter (never built into a request: a property
            // clash, an unclassifiable file, a broken sidecar) has nothing to
            // resend. Retrying it forgets its files, so the next scan builds
            // the group again from what is on disk now.
            let mut forget_files = tx.prepare_cached(
                "DELETE FROM files WHERE object_id = ?1
                   AND EXISTS (SELECT 1 FROM objects WHERE id = ?1 AND status = 'dead' AND spec = '')",
            )?;
            let mut forget_object =
                tx.prepare_cached("DELETE FROM objects WHERE id = ?1 AND status = 'dead' AND spec = ''")?;
            let mut object = tx.prepare_cached(
                "UPDATE objects SET status = 'pending', attempts = 0,
                     next_attempt_ms = ?2, last_error = NULL, updated_ms = ?2
                 WHERE id = ?1 AND status = 'dead'",
            )?;
            let mut files =
                tx.prepare_cached("UPDATE files SET state = 'pending' WHERE object_id = ?1")?;
            let mut count = 0;
            for id in ids {
                forget_files.execute(params![id])?;
                if forget_object.execute(params![id])? > 0 {
                    count += 1;
                } else if object.execute(params![id, now])? > 0 {
                    // A repeated id matches only once: the first pass made it pending.
                    files.execute(params![id])?;
                    count += 1;
                }
            }
            Ok(count)
        })
    }

    /// Objects in the outbox (for `once`, which waits for it to empty).
    pub fn pending_count(&self) -> Result<u64, StoreError> {
        self.count(ObjectStatus::Pending)
    }

    /// The outbox at `now_ms`, in one read, for health and metrics: objects
    /// pending, those of them due (not waiting for a retry time), and when
    /// the oldest was first queued.
    pub fn outbox_figures(&self, now_ms: i64) -> Result<OutboxFigures, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(next_attempt_ms <= ?1), 0), MIN(created_ms)
                 FROM objects WHERE status = 'pending'",
            )
            .map_err(self.sql_error())?;
        stmt.query_row(params![now_ms], |row| {
            Ok(OutboxFigures {
                pending: row.get(0)?,
                due: row.get(1)?,
                oldest_created_ms: row.get(2)?,
            })
        })
        .map_err(self.sql_error())
    }

    /// Dead letters, local or refused by the server.
    pub fn dead_count(&self) -> Result<u64, StoreError> {
        self.count(ObjectStatus::Dead)
    }

    fn count(&self, status: ObjectStatus) -> Result<u64, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM objects WHERE status = ?1")
            .map_err(self.sql_error())?;
        stmt.query_row(params![status], |row| row.get(0))
            .map_err(self.sql_error())
    }

    /// Whether a blob with this hash was already delivered to `bucket`.
    pub fn hash_delivered(&self, bucket: &str, sha256: &str) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM delivered_hashes WHERE bucket = ?1 AND sha256 = ?2)",
            )
            .map_err(self.sql_error())?;
        stmt.query_row(params![bucket, sha256], |row| row.get(0))
            .map_err(self.sql_error())
    }

    /// A remembered setting (e.g. `dialect`).
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .map_err(self.sql_error())?;
        stmt.query_row(params![key], |row| row.get(0))
            .optional()
            .map_err(self.sql_error())
    }

    /// Remembers a setting. `schema_version` belongs to the migrations; callers
    /// use their own keys.
    /// Removes a remembered value; absent keys are fine.
    pub fn clear_meta(&mut self, key: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached("DELETE FROM meta WHERE key = ?1")?
                .execute(params![key])?;
            Ok(())
        })
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, value])?;
            Ok(())
        })
    }

    /// The figures `status` prints. Reads in one transaction so the counts and
    /// lists agree with each other while a daemon writes.
    pub fn summary(&self, now_ms: i64) -> Result<Summary, StoreError> {
        self.summary_inner(now_ms).map_err(self.sql_error())
    }

    fn summary_inner(&self, now_ms: i64) -> rusqlite::Result<Summary> {
        // A read transaction (unchecked: `&self`) gives one consistent snapshot.
        let tx = self.conn.unchecked_transaction()?;
        let mut counts = StatusCounts::default();
        {
            let mut stmt =
                tx.prepare_cached("SELECT status, COUNT(*) FROM objects GROUP BY status")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let status: ObjectStatus = row.get(0)?;
                *counts.slot(status) = row.get(1)?;
            }
        }
        let oldest: Option<i64> = tx
            .prepare_cached("SELECT MIN(created_ms) FROM objects WHERE status = 'pending'")?
            .query_row([], |row| row.get(0))?;
        let recent_errors = tx
            .prepare_cached(
                "SELECT id, watch, bucket, key_prefix, attempts, last_error,
                        next_attempt_ms, updated_ms
                 FROM objects WHERE status = 'pending' AND last_error IS NOT NULL
                 ORDER BY updated_ms DESC, id DESC LIMIT ?1",
            )?
            .query_map(params![RECENT_ERRORS], |row| {
                Ok(RecentError {
                    id: row.get(0)?,
                    watch: row.get(1)?,
                    bucket: row.get(2)?,
                    key_prefix: row.get(3)?,
                    attempts: row.get(4)?,
                    error: row.get(5)?,
                    next_attempt_ms: row.get(6)?,
                    updated_ms: row.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut dead_letters = tx
            .prepare_cached(
                "SELECT id, watch, bucket, key_prefix, COALESCE(last_error, ''), updated_ms
                 FROM objects WHERE status = 'dead' ORDER BY id",
            )?
            .query_map([], |row| {
                Ok(DeadLetter {
                    id: row.get(0)?,
                    watch: row.get(1)?,
                    bucket: row.get(2)?,
                    key_prefix: row.get(3)?,
                    reason: row.get(4)?,
                    files: Vec::new(),
                    updated_ms: row.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        {
            let mut files = tx
                .prepare_cached("SELECT rel FROM object_files WHERE object_id = ?1 ORDER BY rel")?;
            for dead in &mut dead_letters {
                dead.files = files
                    .query_map(params![dead.id], |row| row.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?;
            }
        }
        let paused = tx
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [PAUSE_META_KEY],
                |row| row.get(0),
            )
            .optional()?;
        let mut tasks = TaskCounts::default();
        {
            let mut stmt =
                tx.prepare_cached("SELECT outcome, COUNT(*) FROM tasks GROUP BY outcome")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let outcome: Option<String> = row.get(0)?;
                let n: u64 = row.get(1)?;
                match outcome.as_deref() {
                    None => tasks.polling = n,
                    Some("ok") => tasks.ok = n,
                    Some("failed") => tasks.failed = n,
                    Some(_) => tasks.unknown += n,
                }
            }
        }
        let failed_tasks = tx
            .prepare_cached(
                "SELECT t.task_id, t.object_id, o.bucket, o.key_prefix, t.state, t.error,
                        t.updated_ms
                 FROM tasks t JOIN objects o ON o.id = t.object_id
                 WHERE t.outcome = 'failed'
                 ORDER BY t.updated_ms DESC, t.object_id DESC LIMIT ?1",
            )?
            .query_map(params![FAILED_TASKS], |row| {
                Ok(FailedTask {
                    task_id: row.get(0)?,
                    id: row.get(1)?,
                    bucket: row.get(2)?,
                    key_prefix: row.get(3)?,
                    state: row.get(4)?,
                    error: row.get(5)?,
                    updated_ms: row.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        tx.finish()?;
        Ok(Summary {
            tasks,
            failed_tasks,
            counts,
            // The wall clock may step back; an age is never negative.
            oldest_pending_age_ms: oldest.map(|created| now_ms.saturating_sub(created).max(0)),
            recent_errors,
            dead_letters,
            paused,
        })
    }

    /// Everything recorded about one object, with its files.
    pub fn object(&self, id: i64) -> Result<Option<ObjectRow>, StoreError> {
        self.object_inner(id).map_err(self.sql_error())
    }

    fn object_inner(&self, id: i64) -> rusqlite::Result<Option<ObjectRow>> {
        let tx = self.conn.unchecked_transaction()?;
        let row = tx
            .prepare_cached(
                "SELECT id, watch, bucket, key_prefix, spec, status, attempts,
                        next_attempt_ms, last_error, server_object_id, task_id,
                        created_ms, updated_ms
                 FROM objects WHERE id = ?1",
            )?
            .query_row(params![id], |row| {
                Ok(ObjectRow {
                    id: row.get(0)?,
                    watch: row.get(1)?,
                    bucket: row.get(2)?,
                    key_prefix: row.get(3)?,
                    spec_json: row.get(4)?,
                    status: row.get(5)?,
                    attempts: row.get(6)?,
                    next_attempt_ms: row.get(7)?,
                    last_error: row.get(8)?,
                    server_object_id: row.get(9)?,
                    task_id: row.get(10)?,
                    created_ms: row.get(11)?,
                    updated_ms: row.get(12)?,
                    files: Vec::new(),
                })
            })
            .optional()?;
        let Some(mut row) = row else {
            return Ok(None);
        };
        row.files = tx
            .prepare_cached(
                "SELECT rel, size, mtime_ns, sha256 FROM object_files
                 WHERE object_id = ?1 ORDER BY rel",
            )?
            .query_map(params![id], |r| {
                Ok(ObjectFile {
                    rel: r.get(0)?,
                    size: r.get(1)?,
                    mtime_ns: r.get(2)?,
                    sha256: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        tx.finish()?;
        Ok(Some(row))
    }

    fn found(&self, id: i64, found: bool) -> Result<(), StoreError> {
        if found {
            Ok(())
        } else {
            Err(StoreError::NoSuchObject {
                path: self.path.clone(),
                id,
            })
        }
    }
}

/// Maps a row of `size, mtime_ns, sha256, state, object_id` (columns 0–4).
fn file_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        size: row.get(0)?,
        mtime_ns: row.get(1)?,
        sha256: row.get(2)?,
        state: row.get(3)?,
        object_id: row.get(4)?,
    })
}

/// The body of `mark_delivered`; `Ok(false)` when no such object exists.
fn deliver(
    tx: &Transaction<'_>,
    id: i64,
    server_object_id: Option<&str>,
    task_id: Option<&str>,
    now: i64,
) -> rusqlite::Result<bool> {
    let changed = tx
        .prepare_cached(
            "UPDATE objects SET status = 'delivered',
                 server_object_id = COALESCE(?2, server_object_id),
                 task_id = COALESCE(?3, task_id),
                 updated_ms = ?4
             WHERE id = ?1",
        )?
        .execute(params![id, server_object_id, task_id, now])?;
    if changed == 0 {
        return Ok(false);
    }
    tx.prepare_cached("UPDATE files SET state = 'delivered' WHERE object_id = ?1")?
        .execute(params![id])?;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO delivered_hashes (bucket, sha256)
         SELECT o.bucket, f.sha256 FROM object_files f
         JOIN objects o ON o.id = f.object_id
         WHERE f.object_id = ?1",
    )?
    .execute(params![id])?;
    tx.prepare_cached("DELETE FROM uploads WHERE object_id = ?1")?
        .execute(params![id])?;
    if let Some(task_id) = task_id {
        // The first poll after a second: most tasks are not done sooner.
        tx.prepare_cached(
            "INSERT OR IGNORE INTO tasks (task_id, object_id, state, next_poll_ms, updated_ms)
             VALUES (?1, ?2, 'SUBMITTED', ?3, ?4)",
        )?
        .execute(params![task_id, id, now + 1000, now])?;
    }
    Ok(true)
}

fn object_exists(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM objects WHERE id = ?1)")?
        .query_row(params![id], |row| row.get(0))
}

/// Whether the file is empty (SQLite's "new database") or starts with the SQLite
/// header. Checked with a plain read so a stray file is never handed to SQLite.
fn has_sqlite_header(path: &Path) -> Result<bool, StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    // A FIFO would block the open, a directory the read: only a regular file
    // can be a database.
    if !std::fs::metadata(path).map_err(io_err)?.is_file() {
        return Ok(false);
    }
    let file = File::open(path).map_err(io_err)?;
    let mut head = Vec::with_capacity(SQLITE_HEADER.len());
    file.take(SQLITE_HEADER.len() as u64)
        .read_to_end(&mut head)
        .map_err(io_err)?;
    Ok(head.is_empty() || head == SQLITE_HEADER)
}

/// An error while opening: "not a database" gets its own, clearer variant.
/// An outbox item from a row of `id, watch, bucket, key_prefix, spec, attempts`.
fn outbox_item(row: &rusqlite::Row<'_>) -> rusqlite::Result<OutboxItem> {
    Ok(OutboxItem {
        id: row.get(0)?,
        watch: row.get(1)?,
        bucket: row.get(2)?,
        key_prefix: row.get(3)?,
        spec_json: row.get(4)?,
        attempts: row.get(5)?,
    })
}

fn open_error(path: &Path, source: rusqlite::Error) -> StoreError {
    if source.sqlite_error_code() == Some(ErrorCode::NotADatabase) {
        StoreError::NotADatabase {
            path: path.to_path_buf(),
        }
    } else {
        StoreError::Open {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The schema version of an open database: 0 for an empty one; an error for a
/// database that has tables but no mixpeek-ingest `meta.schema_version`.
fn schema_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master
             WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
        )
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(|source| open_error(path, source))?;
    if tables.is_empty() {
        return Ok(0);
    }
    let foreign = || StoreError::Foreign {
        path: path.to_path_buf(),
    };
    if !tables.iter().any(|t| t == "meta") {
        return Err(foreign());
    }
    let value: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(|_| foreign())?;
    value
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|v| *v > 0)
        .ok_or_else(foreign)
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction. The version is
/// read again inside it, so two processes opening a new store at once cannot
/// both run a migration.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let found = schema_version(&tx, path)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    // `found` is within 0..SCHEMA_VERSION here, so the index is in range.
    let from = usize::try_from(found).expect("schema version checked non-negative");
    for (i, step) in MIGRATIONS.iter().enumerate().skip(from) {
        tx.execute_batch(step).map_err(err)?;
        tracing::debug!(path = %path.display(), version = i + 1, "state database migrated");
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![SCHEMA_VERSION.to_string()],
    )
    .map_err(err)?;
    tx.commit().map_err(err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::os::unix::fs::PermissionsExt;

    use proptest::prelude::*;
    use proptest::sample::Index;
    use rstest::rstest;

    use super::*;

    /// A "now" later than any wall-clock time the tests run at.
    const FAR: i64 = i64::MAX / 2;

    fn sha(n: u32) -> String {
        format!("{n:064x}")
    }

    fn new_file(rel: &str, sha256: &str) -> NewFile {
        NewFile {
            rel: rel.to_string(),
            size: 10,
            mtime_ns: 1_700_000_000_000_000_000,
            sha256: sha256.to_string(),
        }
    }

    fn new_object(watch: &str, key_prefix: &str, files: &[(&str, &str)]) -> NewObject {
        NewObject {
            watch: watch.to_string(),
            bucket: format!("bucket-of-{watch}"),
            key_prefix: key_prefix.to_string(),
            spec_json: format!(r#"{{"key_prefix":"{key_prefix}"}}"#),
            files: files.iter().map(|(r, s)| new_file(r, s)).collect(),
            dispose: Vec::new(),
        }
    }

    #[test]
    fn due_list_gives_sizes_and_flags_uploads_and_pending_items_follow_the_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let objects = [
            new_object("/w", "/a", &[("a", "1")]),
            new_object("/w", "/b", &[("b", "2")]),
            new_object("/w", "/c", &[("c", "3")]),
        ];
        let record = |object, has_uploads| Record {
            object,
            status: ObjectStatus::Pending,
            reason: None,
            has_uploads,
        };
        let ids = store
            .record(&[
                record(&objects[0], Some(false)),
                record(&objects[1], Some(true)),
                record(&objects[2], None),
            ])
            .unwrap();
        let listed = store.due_list(FAR, 10).unwrap();
        let entry = |i: usize, may_upload| DueEntry {
            id: ids[i],
            bytes: objects[i].spec_json.len(),
            may_upload,
        };
        // Not known counts as maybe.
        assert_eq!(listed, [entry(0, false), entry(1, true), entry(2, true)]);
        let items = store.pending_items(&[ids[1], ids[0], 999]).unwrap();
        assert_eq!(
            items.iter().map(|i| i.id).collect::<Vec<_>>(),
            [ids[1], ids[0]]
        );
        assert_eq!(items[0].spec_json, objects[1].spec_json);
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn due_ids(store: &Store, now: i64) -> Vec<i64> {
        store.due(now, 1000).unwrap().iter().map(|i| i.id).collect()
    }

    fn status(store: &Store, id: i64) -> ObjectStatus {
        store.object(id).unwrap().unwrap().status
    }

    fn file_state(store: &Store, watch: &str, rel: &str) -> (ObjectStatus, i64) {
        let rec = store.file(FileKey { watch, rel }).unwrap().unwrap();
        (rec.state, rec.object_id)
    }

    fn upload_row(property: &str, upload_id: &str) -> UploadRow {
        UploadRow {
            property: property.to_owned(),
            upload_id: upload_id.to_owned(),
            presigned_url: Some(format!("http://storage/{upload_id}")),
            expires_ms: Some(1_800_000_000_000),
            etag: None,
            put_done: false,
            confirmed: false,
        }
    }

    #[test]
    fn upload_steps_are_recorded_replaced_and_leave_with_the_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = store
            .enqueue(&new_object("w", "/a", &[("a/v.mp4", &sha(1))]))
            .unwrap();
        let mut row = upload_row("video", "upl_1");
        store.record_upload(id, &row).unwrap();
        row.etag = Some("\"abc\"".to_owned());
        row.put_done = true;
        store.record_upload(id, &row).unwrap();
        store
            .record_upload(id, &upload_row("clip", "upl_2"))
            .unwrap();
        assert_eq!(
            store.uploads_of(id).unwrap(),
            vec![upload_row("clip", "upl_2"), row.clone()]
        );

        // A renewal replaces the blob's row; forgetting removes it.
        store
            .record_upload(id, &upload_row("video", "upl_3"))
            .unwrap();
        store.forget_upload(id, "clip").unwrap();
        assert_eq!(
            store.uploads_of(id).unwrap(),
            vec![upload_row("video", "upl_3")]
        );

        // Survives a reopen (a crash), then leaves with the delivery.
        drop(store);
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.uploads_of(id).unwrap().len(), 1);
        store.mark_delivered(id, Some("obj_1"), None).unwrap();
        assert!(store.uploads_of(id).unwrap().is_empty());
        // Nothing is recorded for an object that is no longer pending.
        store.record_upload(id, &row).unwrap();
        assert!(store.uploads_of(id).unwrap().is_empty());
    }

    #[test]
    fn many_acks_are_recorded_in_one_go_and_tasks_are_queued() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let a = store
            .enqueue(&new_object("w", "/a", &[("a/x", &sha(1))]))
            .unwrap();
        let b = store
            .enqueue(&new_object("w", "/b", &[("b/x", &sha(2))]))
            .unwrap();
        let c = store
            .enqueue(&new_object("w", "/c", &[("c/x", &sha(3))]))
            .unwrap();
        store
            .mark_delivered_many(&[
                Ack {
                    id: a,
                    server_object_id: Some("obj_a".into()),
                    task_id: Some("task_a".into()),
                },
                Ack {
                    id: b,
                    server_object_id: None,
                    task_id: None,
                },
                Ack {
                    id: 999,
                    server_object_id: None,
                    task_id: None,
                },
            ])
            .unwrap();
        assert_eq!(status(&store, a), ObjectStatus::Delivered);
        assert_eq!(status(&store, b), ObjectStatus::Delivered);
        assert_eq!(status(&store, c), ObjectStatus::Pending);
        assert!(store.hash_delivered("bucket-of-w", &sha(2)).unwrap());
        assert_eq!(
            store
                .due_ids(FAR, 10)
                .unwrap()
                .iter()
                .map(|r| r.0)
                .collect::<Vec<_>>(),
            vec![c]
        );

        // The task is polled from a second after the delivery.
        assert!(store.due_tasks(0, 10).unwrap().is_empty());
        let due = store.due_tasks(FAR, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].task_id.as_str(), due[0].object_id, due[0].polls),
            ("task_a", a, 0)
        );
        assert_eq!(due[0].state, "SUBMITTED");
        store
            .record_task("task_a", "PROCESSING", None, 5, None)
            .unwrap();
        assert_eq!(store.next_task_poll_ms().unwrap(), Some(5));
        assert_eq!(store.due_tasks(FAR, 10).unwrap()[0].polls, 1);
        store
            .record_task(
                "task_a",
                "FAILED",
                Some(TaskOutcome::Failed),
                6,
                Some("decoder crashed"),
            )
            .unwrap();
        assert!(store.due_tasks(FAR, 10).unwrap().is_empty());
        assert_eq!(store.next_task_poll_ms().unwrap(), None);
        let summary = store.summary(0).unwrap();
        assert_eq!(
            summary.tasks,
            TaskCounts {
                polling: 0,
                ok: 0,
                failed: 1,
                unknown: 0
            }
        );
        assert_eq!(summary.failed_tasks.len(), 1);
        assert_eq!(
            summary.failed_tasks[0].error.as_deref(),
            Some("decoder crashed")
        );
        assert!(
            summary
                .to_string()
                .contains("FAILED task_a #1 bucket-of-w /a: decoder crashed")
        );
    }

    #[test]
    fn a_dead_letter_counts_the_attempt_and_keeps_its_uploads_for_retry() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = store
            .enqueue(&new_object("w", "/a", &[("a/v", &sha(1))]))
            .unwrap();
        store.record_upload(id, &upload_row("v", "upl_1")).unwrap();
        store.mark_dead(id, "HTTP 422: bad").unwrap();
        let row = store.object(id).unwrap().unwrap();
        assert_eq!((row.status, row.attempts), (ObjectStatus::Dead, 1));
        assert!(!row.spec_json.is_empty());
        assert_eq!(store.uploads_of(id).unwrap().len(), 1);
        // Retried, it is sent again with the same request and uploads.
        assert_eq!(store.retry_dead(Some(&[id])).unwrap(), 1);
        assert_eq!(status(&store, id), ObjectStatus::Pending);
        assert_eq!(store.uploads_of(id).unwrap().len(), 1);
    }

    #[test]
    fn an_unsendable_dead_letter_is_rebuilt_by_retry() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = store
            .enqueue(&new_object("w", "/a", &[("a/v", &sha(1))]))
            .unwrap();
        store
            .mark_dead_unsendable(id, "needs dialect objects")
            .unwrap();
        assert_eq!(status(&store, id), ObjectStatus::Dead);
        assert_eq!(file_state(&store, "w", "a/v").0, ObjectStatus::Dead);
        // Like a local dead letter: retry forgets it, the next scan rebuilds.
        assert_eq!(store.retry_dead(None).unwrap(), 1);
        assert!(store.object(id).unwrap().is_none());
        assert!(
            store
                .file(FileKey {
                    watch: "w",
                    rel: "a/v"
                })
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_superseded_object_is_skipped_without_blame() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let id = store
            .enqueue(&new_object("w", "/a", &[("a/v", &sha(1))]))
            .unwrap();
        store.record_upload(id, &upload_row("v", "upl_1")).unwrap();
        store.mark_superseded(id, "a/v changed").unwrap();
        let row = store.object(id).unwrap().unwrap();
        assert_eq!((row.status, row.attempts), (ObjectStatus::Skipped, 0));
        assert_eq!(row.last_error.as_deref(), Some("a/v changed"));
        assert_eq!(file_state(&store, "w", "a/v").0, ObjectStatus::Skipped);
        assert!(store.uploads_of(id).unwrap().is_empty());
        // Not pending any more: a second call changes nothing.
        store.mark_superseded(id, "again").unwrap();
        assert_eq!(
            store.object(id).unwrap().unwrap().last_error.as_deref(),
            Some("a/v changed")
        );
    }

    fn dir_entries(dir: &Path) -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn open_creates_private_dir_and_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/state");
        let mut store = Store::open(&dir).unwrap();
        store
            .enqueue(&new_object("/w", "/x", &[("x", &sha(1))]))
            .unwrap();

        for d in [tmp.path().join("a"), tmp.path().join("a/b"), dir.clone()] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        assert_eq!(store.path(), dir.join(DB_FILE));
        assert_eq!(mode(store.path()), 0o600);
        // The WAL is live while the store is open; it must be as private.
        let wal = dir.join("state.db-wal");
        assert!(wal.exists());
        assert_eq!(mode(&wal), 0o600);
    }

    #[test]
    fn open_sets_pragmas() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let get = |name: &str| -> String {
            store
                .conn
                .pragma_query_value(None, name, |r| r.get::<_, rusqlite::types::Value>(0))
                .map(|v| format!("{v:?}"))
                .unwrap()
        };
        assert_eq!(get("journal_mode"), r#"Text("wal")"#);
        assert_eq!(get("synchronous"), "Integer(2)"); // FULL
        assert_eq!(get("foreign_keys"), "Integer(1)");
        assert_eq!(get("busy_timeout"), "Integer(5000)");
    }

    #[test]
    fn reopen_keeps_data() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = {
            let mut store = Store::open(tmp.path()).unwrap();
            let a = store
                .enqueue(&new_object("/w", "/a", &[("a/1", &sha(1))]))
                .unwrap();
            let b = store
                .enqueue(&new_object("/w", "/b", &[("b/1", &sha(2))]))
                .unwrap();
            store.mark_delivered(a, Some("obj_1"), None).unwrap();
            store.set_meta("dialect", "objects").unwrap();
            (a, b)
        };
        let store = Store::open(tmp.path()).unwrap();
        assert_eq!(status(&store, a), ObjectStatus::Delivered);
        assert_eq!(due_ids(&store, FAR), vec![b]);
        assert_eq!(store.meta("dialect").unwrap().as_deref(), Some("objects"));
        assert!(store.hash_delivered("bucket-of-/w", &sha(1)).unwrap());
        assert_eq!(
            store.meta("schema_version").unwrap(),
            Some(SCHEMA_VERSION.to_string())
        );
    }

    /// Like SIGKILL: the connection is never closed, the WAL never checkpointed.
    #[test]
    fn committed_writes_survive_an_unclosed_store() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path()).unwrap();
        let a = store
            .enqueue(&new_object("/w", "/a", &[("a", &sha(1))]))
            .unwrap();
        let b = store
            .enqueue(&new_object("/w", "/b", &[("b", &sha(2))]))
            .unwrap();
        store.mark_delivered(a, None, Some("task_1")).unwrap();
        std::mem::forget(store);

        let store = Store::open(tmp.path()).unwrap();
        assert_eq!(status(&store, a), ObjectStatus::Delivered);
        assert_eq!(
            store.object(a).unwrap().unwrap().task_id.as_deref(),
            Some("task_1")
        );
        assert_eq!(due_ids(&store, FAR), vec![b]);
    }

    fn sqlite_header_then(rest: &[u8]) -> Vec<u8> {
        let mut v = SQLITE_HEADER.to_vec();
        v.extend_from_slice(rest);
        v
    }

    #[rstest]
    #[case::text(b"this is not a database, it is a shopping list\n".to_vec())]
    #[case::one_byte(b"x".to_vec())]
    #[case::noise((0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect())]
    #[case::sqlite_header_then_garbage(sqlite_header_then(&[0xAB; 4080]))]
    fn garbage_file_is_refused_and_left_alone(#[case] content: Vec<u8>) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(DB_FILE);
        std::fs::write(&path, &content).unwrap();

        for result in [Store::open(tmp.path()), Store::open_read_only(tmp.path())] {
            let err = result.unwrap_err();
            assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
            assert_eq!(err.path(), path);
        }
        assert_eq!(std::fs::read(&path).unwrap(), content);
        assert_eq!(
            dir_entries(tmp.path()),
            BTreeSet::from([DB_FILE.to_string()])
        );
    }

    #[test]
    fn directory_in_place_of_the_database_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join(DB_FILE)).unwrap();
        for result in [Store::open(tmp.path()), Store::open_read_only(tmp.path())] {
            let err = result.unwrap_err();
            assert!(matches!(err, StoreError::NotADatabase { .. }), "{err:?}");
        }
    }

    #[test]
    fn database_of_another_program_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(DB_FILE);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE songs (title TEXT); INSERT INTO songs VALUES ('x');")
                .unwrap();
        }
        let before = std::fs::read(&path).unwrap();

        for result in [Store::open(tmp.path()), Store::open_read_only(tmp.path())] {
            let err = result.unwrap_err();
            assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
        }
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn newer_schema_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(DB_FILE);
        drop(Store::open(tmp.path()).unwrap());
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute(
                "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
                [],
            )
            .unwrap();
        }
        let before = std::fs::read(&path).unwrap();

        for result in [Store::open(tmp.path()), Store::open_read_only(tmp.path())] {
            let err = result.unwrap_err();
            match &err {
                StoreError::NewerSchema {
                    found, supported, ..
                } => {
                    assert_eq!((*found, *supported), (99, SCHEMA_VERSION));
                }
                other => panic!("expected NewerSchema, got {other:?}"),
            }
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
        }
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn outbox_flow_from_enqueue_to_delivered() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path()).unwrap();
        let before = unix_now_ms();
        let a = store
            .enqueue(&new_object(
                "/w",
                "/a",
                &[("a/1.txt", &sha(1)), ("a/2.txt", &sha(2))],
            ))
            .unwrap();
        let b = store
            .enqueue(&new_object("/w", "/b", &[("b.txt", &sha(3))]))
            .unwrap();
        assert!(b > a);

        // Due at once, oldest first; nothing is due before it was queued.
        assert_eq!(due_ids(&store, FAR), vec![a, b]);
        assert_eq!(due_ids(&store, before - 1), Vec::<i64>::new());
        assert_eq!(store.due(FAR, 1).unwrap().len(), 1);
        let item = &store.due(FAR, 10).unwrap()[0];
        assert_eq!(
            (
                item.watch.as_str(),
                item.bucket.as_str(),
                item.key_prefix.as_str(),
                item.attempts
            ),
            ("/w", "bucket-of-/w", "/a", 0)
        );
        assert_eq!(item.spec_json, r#"{"key_prefix":"/a"}"#);
        assert_eq!(
            file_state(&store, "/w", "a/1.txt"),
            (ObjectStatus::Pending, a)
        );
        let next = store.next_due_ms().unwrap().unwrap();
        assert!(next >= before && next <= unix_now_ms());

        // A retry moves `a` behind its backoff; `b` is still due.
        let later = unix_now_ms() + 60_000;
        store
            .mark_retry(a, later, "503 Service Unavailable")
            .unwrap();
        assert_eq!(due_ids(&store, later - 1), vec![b]);
        assert_eq!(due_ids(&store, later), vec![b, a]);
        assert_eq!(store.due(later, 10).unwrap()[1].attempts, 1);
        let row = store.object(a).unwrap().unwrap();
        assert_eq!(row.last_error.as_deref(), Some("503 Service Unavailable"));
        assert_eq!(row.next_attempt_ms, later);
        let b_next = store.object(b).unwrap().unwrap().next_attempt_ms;
        assert_eq!(store.next_due_ms().unwrap(), Some(b_next));

        store.mark_retry(a, later + 1, "timeout").unwrap();
        assert_eq!(store.object(a).unwrap().unwrap().attempts, 2);

        assert!(!store.hash_delivered("bucket-of-/w", &sha(1)).unwrap());
        store
            .mark_delivered(a, Some("obj_123"), Some("task_9"))
            .unwrap();
        let row = store.object(a).unwrap().unwrap();
        assert_eq!(row.status, ObjectStatus::Delivered);
        assert_eq!(row.server_object_id.as_deref(), Some("obj_123"));
        assert_eq!(row.task_id.as_deref(), Some("task_9"));
        assert_eq!(
            row.files.iter().map(|f| f.rel.as_str()).collect::<Vec<_>>(),
            vec!["a/1.txt", "a/2.txt"]
        );
        assert_eq!(
            file_state(&store, "/w", "a/1.txt"),
            (ObjectStatus::Delivered, a)
        );
        assert_eq!(
            file_state(&store, "/w", "a/2.txt"),
            (ObjectStatus::Delivered, a)
        );
        assert_eq!(
            file_state(&store, "/w", "b.txt"),
            (ObjectStatus::Pending, b)
        );
        assert!(store.hash_delivered("bucket-of-/w", &sha(1)).unwrap());
        assert!(store.hash_delivered("bucket-of-/w", &sha(2)).unwrap());
        assert!(!store.hash_delivered("bucket-of-/w", &sha(3)).unwrap());
        assert!(!store.hash_delivered("another-bucket", &sha(1)).unwrap());
        assert_eq!(due_ids(&store, FAR), vec![b]);

        store.mark_delivered(b, None, None).unwrap();
        assert_eq!(store.next_due_ms().unwrap(), None);
        assert_eq!(due_ids(&store, FAR), Vec::<i64>::new());
    }

    #[test]
    fn files_of_watch_returns_every_file_of_that_watch_only() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path()).unwrap();
        let a = store
            .enqueue(&new_object(
                "/w1",
                "/a",
                &[("a/1", &sha(1)), ("a/2", &sha(2))],
            ))
            .unwrap();
        let b = store
            .enqueue(&new_object("/w2", "/a", &[("a/1", &sha(3))]))
            .unwrap();
        store.mark_delivered(a, None, None).unwrap();

        let w1 = store.files_of_watch("/w1").unwrap();
        assert_eq!(w1.len(), 2);
        assert_eq!(
            w1["a/1"],
            FileRecord {
                size: 10,
                mtime_ns: 1_700_000_000_000_000_000,
                sha256: sha(1),
                state: ObjectStatus::Delivered,
                object_id: a,
            }
        );
        let w2 = store.files_of_watch("/w2").unwrap();
        assert_eq!(w2.len(), 1);
        assert_eq!(
            (w2["a/1"].state, w2["a/1"].object_id),
            (ObjectStatus::Pending, b)
        );
        assert!(store.files_of_watch("/none").unwrap().is_empty());
        assert_eq!(
            store
                .file(FileKey {
                    watch: "/w1",
                    rel: "nope"
                })
                .unwrap(),
            None
        );
    }

    /// An old object's outcome must not relabel a newer version of its files.
    #[test]
    fn outcome_of_old_object_does_not_touch_newer_file_version() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path()).unwrap();
        let old = store
            .enqueue(&new_object(
                "/w",
                "/d",
                &[("d/x", &sha(1)), ("d/y", &sha(2))],
            ))
            .unwrap();
        let new = store
            .enqueue(&new_object("/w", "/d", &[("d/x", &sha(9))]))
            .unwrap();

        store.mark_delivered(old, None, None).unwrap();
        let x = store
            .file(FileKey {
                watch: "/w",
                rel: "d/x",
            })
            .unwrap()
            .unwrap();
        assert_eq!(
            (x.state, x.object_id, x.sha256.as_str()),
            (ObjectStatus::Pending, new, sha(9).as_str())
        );
        assert_eq!(
            file_state(&store, "/w", "d/y"),
            (ObjectStatus::Delivered, old)
        );
        // The old content was delivered, even if the file has moved on.
        assert!(store.hash_delivered("bucket-of-/w", &sha(1)).unwrap());
        assert!(!store.hash_delivered("bucket-of-/w", &sha(9)).unwrap());

        store.mark_dead(new, "422 bad").unwrap();
        assert_eq!(file_state(&store, "/w", "d/x"), (ObjectStatus::Dead, new));
        assert_eq!(
            file_state(&store, "/w", "d/y"),
            (ObjectStatus::Delivered, old)
        );
    }

    #[rstest]
    #[case::by_ids(false)]
    #[case::all(true)]
    fn dead_letters_and_retry_dead(#[case] all: bool) {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path()).unwrap();
        let a = store
            .enqueue(&new_object(
                "/w",
                "/a",
                &[("a/2", &sha(2)), ("a/1", &sha(1))],
            ))
            .unwrap();
        let b = store
            .enqueue(&new_object("/w", "/b", &[("b", &sha(3))]))
            .unwrap();
        let c = store
            .enqueue(&new_object("/w", "/c", &[("c", &sha(4))]))
            .unwrap();
        store.mark_retry(a, 0, "502").unwrap();
        store.mark_dead(a, "422: property too long").unwrap();
        store.mark_dead(b, "400: bad blob").unwrap();

        assert_eq!(due_ids(&store, FAR), vec![c]);
        assert_eq!(file_state(&store, "/w", "a/1"), (ObjectStatus::Dead, a));
        let row = store.object(a).unwrap().unwrap();
        assert_eq!((row.status, row.attempts), (ObjectStatus::Dead, 2));
        assert_eq!(row.last_error.as_deref(), Some("422: property too long"));
        let summary = store.summary(unix_now_ms()).unwrap();
        assert_eq!(summary.counts.dead, 2);
        assert_eq!(
            summary
                .dead_letters
                .iter()
                .map(|d| (d.id, d.reason.as_str(), d.files.clone()))
                .collect::<Vec<_>>(),
            vec![
                (
                    a,
                    "422: property too long",
                    vec!["a/1".to_string(), "a/2".to_string()]
                ),
                (b, "400: bad blob", vec!["b".to_string()]),
            ]
        );

        let retried = if all {
            store.retry_dead(None).unwrap()
        } else {
            // Repeated, not dead, and unknown ids are no-ops.
            store.retry_dead(Some(&[a, a, c, b, 999])).unwrap()
        };
        assert_eq!(retried, 2);
        for id in [a, b] {
            let row = store.object(id).unwrap().unwrap();
            assert_eq!(
                (row.status, row.attempts, row.last_error),
                (ObjectStatus::Pending, 0, None)
            );
        }
        assert_eq!(file_state(&store, "/w", "a/1"), (ObjectStatus::Pending, a));
        assert_eq!(file_state(&store, "/w", "b"), (ObjectStatus::Pending, b));
        assert_eq!(due_ids(&store, FAR).len(), 3);
        assert_eq!(store.retry_dead(None).unwrap(), 0);
        assert_eq!(store.retry_dead(Some(&[])).unwrap(), 0);
        assert!(
            store
                .summary(unix_now_ms())
                .unwrap()
                .dead_letters
                .is_empty()
        );
    }

    /// A local dead letter has no request to resend: retrying it must make
    /// its files unknown again, so the next scan rebuilds the group.
    #[test]
    fn retrying_a_local_dead_letter_forgets_its_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path()).unwrap();
        let local = NewObject {
            spec_json: String::new(),
            ..new_object(
                "/w",
                "/clash",
                &[("clash/a.txt", &sha(1)), ("clash/a.json", &sha(2))],
            )
        };
        let id = store.record_local_dead(&local, "property clash").unwrap();
        assert_eq!(store.files_of_watch("/w").unwrap().len(), 2);
        assert_eq!(store.retry_dead(None).unwrap(), 1);
        assert!(store.files_of_watch("/w").unwrap().is_empty());
        assert!(store.object(id).unwrap().is_none());
        assert_eq!(store.pending_count().unwrap(), 0);
        assert_eq!(store.dead_count().unwrap(), 0);
    }

    #[test]
    fn defer_holds_an_object_without_counting_an_attempt() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path()).unwrap();
        let id = store
            .enqueue(&new_object("/w", "/a", &[("a", &sha(1))]))
            .unwrap();
        store.defer(id, FAR, "paused: key refused").unwrap();
        let row = store.object(id).unwrap().unwrap();
        assert_eq!(row.attempts, 0);
        assert_eq!(store.next_due_ms().unwrap(), Some(FAR));
        assert!(due_ids(&store, FAR - 1).is_empty());
    }

    #[test]
    fn retry_dead_by_id_leaves_other_dead_letters() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path()).unwrap();
        let a = store
            .enqueue(&new_object("/w", "/a", &[("a", &sha(1))]))
            .unwrap();
        let b = store
            .enqueue(&new_object("/w", "/b", &[("b", &sha(2))]))
            .unwrap();
        store.mark_dead(a, "x").unwrap();
        store.mark_dead(b, "y").unwrap();
        assert_eq!(store.retry_dead(Some(&[b])).unwrap(), 1);
        assert_eq!(status(&store, a), ObjectStatus::Dead);
        assert_eq!(status(&store, b), ObjectStatus::Pending);
        assert_eq!(file_state(&store, "/w", "a"), (ObjectStatus::Dead, a));
    }

    #[rstest]
    #[case::local_dead(ObjectStatus::Dead)]
    #[case::skipped(ObjectStatus::Skipped)]
    fn objects_recorded_without_sending(#[case] kind: ObjectStatus) {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path()).unwrap();
        let obj = new_object("/w", "/g", &[("g/a.jpg", &sha(1)), ("g/b.jpg", &sha(2))]);
        let id = match kind {
            ObjectStatus::Dead => store.record_local_dead(&obj, "two files map to property `a`"),
            _ => store.record_skipped(&obj, "all blobs already delivered"),
        }
        .unwrap();

        let row = store.object(id).unwrap().unwrap();
        assert_eq!((row.status, row.attempts), (kind, 0));
        assert!(row.last_error.is_some());
        assert_eq!(file_state(&store, "/w", "g/a.jpg"), (kind, id));
        assert_eq!(due_ids(&store, FAR), Vec::<i64>::new());
        assert_eq!(store.next_due_ms().unwrap(), None);
        let summary = store.summary(unix_now_ms()).unwrap();
        assert_eq!(summary.counts.get(kind), 1);
        assert_eq!(summary.counts.pending, 0);
        assert_eq!(summary.oldest_pending_age_ms, None);
        assert_eq!(
            summary.dead_letters.len(),
            usize::from(kind == ObjectStatus::Dead)
        );
        // Not delivered: the hashes are not recorded.
        assert!(!store.hash_delivered("bucket-of-/w", &sha(1)).unwrap());
    }

    #[test]
    fn outcomes_for_unknown_or_settled_objects() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path()).unwrap();
        for result in [
            store.mark_delivered(42, None, None),
            store.mark_retry(42, 0, "x"),
            store.mark_dead(42, "x"),
        ] {
            assert!(
                matches!(result, Err(StoreError::NoSuchObject { id: 42, .. })),
                "{result:?}"
            );
        }

        let a = store
            .enqueue(&new_object("/w", "/a", &[("a", &sha(1))]))
            .unwrap();
        store.mark_delivered(a, Some("obj_1"), None).unwrap();
        // A late failure report must not undo a recorded ack.
        store.mark_retry(a, FAR, "late").unwrap();
        store.mark_dead(a, "late").unwrap();
        let row = store.object(a).unwrap().unwrap();
        assert_eq!(
            (row.status, row.attempts, row.last_error),
            (ObjectStatus::Delivered, 0, None)
        );
        assert_eq!(file_state(&store, "/w", "a"), (ObjectStatus::Delivered, a));
        // A second ack keeps what the first one recorded.
        store.mark_delivered(a, None, Some("task_2")).unwrap();
        let row = store.object(a).unwrap().unwrap();
        assert_eq!(row.server_object_id.as_deref(), Some("obj_1"));
        assert_eq!(row.task_id.as_deref(), Some("task_2"));
        assert_eq!(store.object(999).unwrap(), None);
    }

    #[test]
    fn failed_enqueue_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path()).unwrap();
        // The same rel twice violates object_files' key halfway through.
        let obj = new_object("/w", "/a", &[("a", &sha(1)), ("a", &sha(2))]);
        assert!(matches!(
            store.enqueue(&obj),
            Err(StoreError::Sqlite { .. })
        ));
        assert_eq!(store.summary(0).unwrap().counts, StatusCounts::default());
        assert_eq!(
            store
                .file(FileKey {
                    watch: "/w",
                    rel: "a"
                })
                .unwrap(),
            None
        );
        // The store is still usable.
        store
            .enqueue(&new_object("/w", "/a", &[("a", &sha(1))]))
            .unwrap();
    }

    #[test]
    fn summary_ages_and_recent_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path()).unwrap();
        let ids: Vec<i64> = (0..12)
            .map(|i| {
                let key = format!("/o{i}");
                store
                    .enqueue(&new_object("/w", &key, &[(&key[1..], &sha(i))]))
                    .unwrap()
            })
            .collect();
        let first_created = store.object(ids[0]).unwrap().unwrap().created_ms;
        for (i, id) in ids.iter().enumerate() {
            store.mark_retry(*id, FAR, &format!("error {i}")).unwrap();
        }

        let summary = store.summary(first_created + 5_000).unwrap();
        assert_eq!(summary.counts.pending, 12);
        assert_eq!(summary.oldest_pending_age_ms, Some(5_000));
        assert_eq!(summary.recent_errors.len(), RECENT_ERRORS);
        assert_eq!(summary.recent_errors[0].id, ids[11]);
        assert_eq!(summary.recent_errors[0].error, "error 11");
        assert_eq!(summary.recent_errors[0].attempts, 1);
        assert_eq!(summary.recent_errors[9].id, ids[2]);
        // A clock that stepped back never shows a negative age.
        assert_eq!(store.summary(0).unwrap().oldest_pending_age_ms, Some(0));
        // It serializes for `status --json`.
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["counts"]["pending"], 12);
        assert_eq!(json["recent_errors"][0]["error"], "error 11");
    }

    #[test]
    fn counts_by_status() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path()).unwrap();
        assert_eq!(
            (store.pending_count().unwrap(), store.dead_count().unwrap()),
            (0, 0)
        );
        let a = store
            .enqueue(&new_object("/w", "/a", &[("a", &sha(1))]))
            .unwrap();
        store
            .enqueue(&new_object("/w", "/b", &[("b", &sha(2))]))
            .unwrap();
        store
            .record_local_dead(&new_object("/w", "/c", &[("c", &sha(3))]), "clash")
            .unwrap();
        assert_eq!(
            (store.pending_count().unwrap(), store.dead_count().unwrap()),
            (2, 1)
        );
        store.mark_dead(a, "422").unwrap();
        assert_eq!(
            (store.pending_count().unwrap(), store.dead_count().unwrap()),
            (1, 2)
        );
    }

    #[test]
    fn summary_text_names_counts_errors_and_dead_letters() {
        let tmp = tempfile::tempdir().unwrap();
        let mut store = Store::open(tmp.path()).unwrap();
        let empty = store.summary(0).unwrap().to_string();
        assert_eq!(empty, "objects: 0 pending, 0 delivered, 0 dead, 0 skipped");

        let a = store
            .enqueue(&new_object("/w", "/a", &[("a/x.pdf", &sha(1))]))
            .unwrap();
        let b = store
            .enqueue(&new_object(
                "/w",
                "/b",
                &[("b/1.jpg", &sha(2)), ("b/2.jpg", &sha(3))],
            ))
            .unwrap();
        store.mark_retry(a, FAR, "503 Service Unavailable").unwrap();
        store.mark_dead(b, "422: property too long").unwrap();
        let created = store.object(a).unwrap().unwrap().created_ms;
        let text = store.summary(created + 125_400).unwrap().to_string();
        for want in [
            "objects: 1 pending, 0 delivered, 1 dead, 0 skipped",
            "oldest pending: 2m 5s",
            &format!("#{a} bucket-of-/w /a (1 attempt): 503 Service Unavailable"),
            &format!("#{b} bucket-of-/w /b: 422: property too long"),
            "files: b/1.jpg, b/2.jpg",
            "retry",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
    }

    #[test]
    fn read_only_open_of_missing_store_is_empty_and_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("never-created");
        let store = Store::open_read_only(&dir).unwrap();
        assert_eq!(store.path(), dir.join(DB_FILE));
        assert_eq!(store.summary(0).unwrap(), Summary::default());
        assert_eq!(due_ids(&store, FAR), Vec::<i64>::new());
        assert_eq!(store.next_due_ms().unwrap(), None);
        assert_eq!(store.meta("dialect").unwrap(), None);
        assert!(store.files_of_watch("/w").unwrap().is_empty());
        assert!(!store.hash_delivered("b", &sha(1)).unwrap());
        assert!(!dir.exists());
    }

    #[test]
    fn read_only_open_sees_a_live_writer_and_cannot_write() {
        let tmp = tempfile::tempdir().unwrap();
        let mut writer = Store::open(tmp.path()).unwrap();
        let a = writer
            .enqueue(&new_object("/w", "/a", &[("a", &sha(1))]))
            .unwrap();
        writer.set_meta("dialect", "objects-create").unwrap();

        let mut reader = Store::open_read_only(tmp.path()).unwrap();
        assert_eq!(due_ids(&reader, FAR), vec![a]);
        assert_eq!(
            reader.meta("dialect").unwrap().as_deref(),
            Some("objects-create")
        );
        let err = reader.set_meta("dialect", "objects").unwrap_err();
        assert!(matches!(err, StoreError::Sqlite { .. }), "{err:?}");
        assert!(!err.is_disk_full());

        // A write after the reader opened is visible to its next read.
        writer.mark_delivered(a, None, None).unwrap();
        assert_eq!(status(&reader, a), ObjectStatus::Delivered);

        // And after the writer is gone (WAL checkpointed and removed).
        drop(writer);
        drop(reader);
        let reader = Store::open_read_only(tmp.path()).unwrap();
        assert_eq!(reader.summary(0).unwrap().counts.delivered, 1);
    }

    #[test]
    fn meta_values_are_set_replaced_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(tmp.path()).unwrap();
            assert_eq!(store.meta("dialect").unwrap(), None);
            store.set_meta("dialect", "objects-create").unwrap();
            store.set_meta("dialect", "objects").unwrap();
            store.set_meta("other", "1").unwrap();
            assert_eq!(store.meta("dialect").unwrap().as_deref(), Some("objects"));
        }
        let store = Store::open(tmp.path()).unwrap();
        assert_eq!(store.meta("dialect").unwrap().as_deref(), Some("objects"));
        assert_eq!(store.meta("other").unwrap().as_deref(), Some("1"));
    }

    fn sqlite_failure(code: std::os::raw::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[rstest]
    #[case::sqlite_full(StoreError::Sqlite { path: "p".into(), source: sqlite_failure(rusqlite::ffi::SQLITE_FULL) }, true)]
    #[case::open_full(StoreError::Open { path: "p".into(), source: sqlite_failure(rusqlite::ffi::SQLITE_FULL) }, true)]
    #[case::sqlite_busy(StoreError::Sqlite { path: "p".into(), source: sqlite_failure(rusqlite::ffi::SQLITE_BUSY) }, false)]
    #[case::io_full(StoreError::Io { path: "p".into(), source: io::Error::from_raw_os_error(28) }, true)]
    #[case::io_denied(StoreError::Io { path: "p".into(), source: io::Error::from(io::ErrorKind::PermissionDenied) }, false)]
    #[case::not_a_db(StoreError::NotADatabase { path: "p".into() }, false)]
    fn disk_full_is_recognised(#[case] err: StoreError, #[case] full: bool) {
        assert_eq!(err.is_disk_full(), full, "{err:?}");
    }

    #[rstest]
    #[case(ObjectStatus::Pending, "pending")]
    #[case(ObjectStatus::Delivered, "delivered")]
    #[case(ObjectStatus::Dead, "dead")]
    #[case(ObjectStatus::Skipped, "skipped")]
    fn status_names_round_trip(#[case] status: ObjectStatus, #[case] name: &str) {
        assert_eq!(status.as_str(), name);
        assert_eq!(ObjectStatus::parse(name), Some(status));
        assert_eq!(serde_json::to_value(status).unwrap(), name);
    }

    #[test]
    fn unknown_status_name_is_rejected() {
        assert_eq!(ObjectStatus::parse("Pending"), None);
        assert_eq!(ObjectStatus::parse(""), None);
    }

    // ---- model-based property test --------------------------------------------

    #[derive(Debug, Clone)]
    enum Op {
        /// kind 0..=2: enqueue, 3: local dead letter, 4: skipped.
        Insert {
            watch: u8,
            files: BTreeMap<u8, u8>,
            kind: u8,
        },
        Retry {
            pick: Index,
            due: bool,
        },
        Deliver {
            pick: Index,
        },
        Dead {
            pick: Index,
        },
        RetryDead {
            picks: Option<Vec<Index>>,
        },
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..2, prop::collection::btree_map(0u8..4, 0u8..6, 1..=3), 0u8..5)
                .prop_map(|(watch, files, kind)| Op::Insert { watch, files, kind }),
            2 => (any::<Index>(), any::<bool>()).prop_map(|(pick, due)| Op::Retry { pick, due }),
            2 => any::<Index>().prop_map(|pick| Op::Deliver { pick }),
            1 => any::<Index>().prop_map(|pick| Op::Dead { pick }),
            1 => prop::option::of(prop::collection::vec(any::<Index>(), 0..3))
                .prop_map(|picks| Op::RetryDead { picks }),
            1 => Just(Op::Reopen),
        ]
    }

    #[derive(Debug)]
    struct ModelObject {
        bucket: String,
        status: ObjectStatus,
        attempts: u32,
        /// `None`: "now" when it was (re)queued, i.e. due at `FAR`.
        next: Option<i64>,
        files: Vec<String>, // sha256s
    }

    #[derive(Debug, Default)]
    struct Model {
        objects: BTreeMap<i64, ModelObject>,
        /// (watch, rel) -> (object_id, sha256)
        files: BTreeMap<(String, String), (i64, String)>,
        hashes: BTreeSet<(String, String)>,
    }

    impl Model {
        fn pick(&self, index: &Index) -> Option<i64> {
            if self.objects.is_empty() {
                return None;
            }
            self.objects
                .keys()
                .nth(index.index(self.objects.len()))
                .copied()
        }

        fn check(&self, store: &Store) {
            for (id, m) in &self.objects {
                let row = store.object(*id).unwrap().unwrap();
                assert_eq!(
                    (row.status, row.attempts),
                    (m.status, m.attempts),
                    "object {id}"
                );
                if let (Some(next), ObjectStatus::Pending) = (m.next, m.status) {
                    assert_eq!(row.next_attempt_ms, next, "object {id}");
                }
            }
            for watch in ["/w0", "/w1"] {
                let got = store.files_of_watch(watch).unwrap();
                let want: BTreeMap<&str, (i64, &str, ObjectStatus)> = self
                    .files
                    .iter()
                    .filter(|((w, _), _)| w == watch)
                    .map(|((_, rel), (id, sha))| {
                        (rel.as_str(), (*id, sha.as_str(), self.objects[id].status))
                    })
                    .collect();
                let got: BTreeMap<&str, (i64, &str, ObjectStatus)> = got
                    .iter()
                    .map(|(rel, r)| (rel.as_str(), (r.object_id, r.sha256.as_str(), r.state)))
                    .collect();
                assert_eq!(got, want, "files of {watch}");
            }
            let want_due: BTreeSet<i64> = self
                .objects
                .iter()
                .filter(|(_, m)| {
                    m.status == ObjectStatus::Pending && m.next.is_none_or(|n| n <= FAR)
                })
                .map(|(id, _)| *id)
                .collect();
            assert_eq!(
                due_ids(store, FAR).into_iter().collect::<BTreeSet<_>>(),
                want_due
            );
            let any_pending = self
                .objects
                .values()
                .any(|m| m.status == ObjectStatus::Pending);
            assert_eq!(store.next_due_ms().unwrap().is_some(), any_pending);

            let summary = store.summary(FAR).unwrap();
            for s in [
                ObjectStatus::Pending,
                ObjectStatus::Delivered,
                ObjectStatus::Dead,
                ObjectStatus::Skipped,
            ] {
                let want = self.objects.values().filter(|m| m.status == s).count() as u64;
                assert_eq!(summary.counts.get(s), want, "count of {s}");
            }
            for bucket in ["b0", "b1"] {
                for n in 0..6 {
                    let h = sha(n);
                    assert_eq!(
                        store.hash_delivered(bucket, &h).unwrap(),
                        self.hashes.contains(&(bucket.to_string(), h.clone())),
                        "hash {n} in {bucket}"
                    );
                }
            }
        }
    }

    fn apply(op: &Op, store: &mut Store, model: &mut Model, dir: &Path) {
        match op {
            Op::Insert { watch, files, kind } => {
                let watch_s = format!("/w{watch}");
                let obj = NewObject {
                    watch: watch_s.clone(),
                    bucket: format!("b{watch}"),
                    key_prefix: "/k".to_string(),
                    spec_json: "{}".to_string(),
                    files: files
                        .iter()
                        .map(|(rel, content)| {
                            new_file(&format!("r{rel}"), &sha(u32::from(*content)))
                        })
                        .collect(),
                    dispose: Vec::new(),
                };
                let (id, status) = match kind {
                    0..=2 => (store.enqueue(&obj).unwrap(), ObjectStatus::Pending),
                    3 => (
                        store.record_local_dead(&obj, "clash").unwrap(),
                        ObjectStatus::Dead,
                    ),
                    _ => (
                        store.record_skipped(&obj, "dup").unwrap(),
                        ObjectStatus::Skipped,
                    ),
                };
                assert!(model.objects.keys().all(|old| *old < id), "ids grow");
                for f in &obj.files {
                    model
                        .files
                        .insert((watch_s.clone(), f.rel.clone()), (id, f.sha256.clone()));
                }
                model.objects.insert(
                    id,
                    ModelObject {
                        bucket: obj.bucket.clone(),
                        status,
                        attempts: 0,
                        next: None,
                        files: obj.files.iter().map(|f| f.sha256.clone()).collect(),
                    },
                );
            }
            Op::Retry { pick, due } => {
                let Some(id) = model.pick(pick) else { return };
                let next = if *due { FAR - 1 } else { FAR + 1 };
                store.mark_retry(id, next, "503").unwrap();
                let m = model.objects.get_mut(&id).unwrap();
                if m.status == ObjectStatus::Pending {
                    m.attempts += 1;
                    m.next = Some(next);
                }
            }
            Op::Deliver { pick } => {
                let Some(id) = model.pick(pick) else { return };
                store.mark_delivered(id, Some("srv"), None).unwrap();
                let m = model.objects.get_mut(&id).unwrap();
                m.status = ObjectStatus::Delivered;
                for h in &m.files {
                    model.hashes.insert((m.bucket.clone(), h.clone()));
                }
            }
            Op::Dead { pick } => {
                let Some(id) = model.pick(pick) else { return };
                store.mark_dead(id, "422").unwrap();
                let m = model.objects.get_mut(&id).unwrap();
                if m.status == ObjectStatus::Pending {
                    m.status = ObjectStatus::Dead;
                    m.attempts += 1;
                }
            }
            Op::RetryDead { picks } => {
                let ids: Option<Vec<i64>> = picks
                    .as_ref()
                    .map(|p| p.iter().filter_map(|i| model.pick(i)).collect());
                let n = store.retry_dead(ids.as_deref()).unwrap();
                let mut want = 0;
                for (id, m) in &mut model.objects {
                    let chosen = ids.as_ref().is_none_or(|ids| ids.contains(id));
                    if chosen && m.status == ObjectStatus::Dead {
                        m.status = ObjectStatus::Pending;
                        m.attempts = 0;
                        m.next = None;
                        want += 1;
                    }
                }
                assert_eq!(n, want);
            }
            Op::Reopen => {
                // Replace first so the old connection closes after the new one
                // opened: both orders must work.
                let old = std::mem::replace(store, Store::open(dir).unwrap());
                drop(old);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// The store agrees with a plain in-memory model of object statuses, file
        /// records and delivered hashes over random sequences of operations and
        /// reopenings.
        #[test]
        fn store_matches_model(ops in prop::collection::vec(op(), 1..40)) {
            let tmp = tempfile::tempdir().unwrap();
            let mut store = Store::open(tmp.path()).unwrap();
            let mut model = Model::default();
            for op in &ops {
                apply(op, &mut store, &mut model, tmp.path());
                model.check(&store);
            }
            drop(store);
            model.check(&Store::open(tmp.path()).unwrap());
            model.check(&Store::open_read_only(tmp.path()).unwrap());
        }
    }

    #[test]
    fn outbox_figures_count_pending_due_and_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        assert_eq!(store.outbox_figures(FAR).unwrap(), OutboxFigures::default());
        let a = store
            .enqueue(&new_object("w", "/a", &[("a/1", &sha(1))]))
            .unwrap();
        let b = store
            .enqueue(&new_object("w", "/b", &[("b/1", &sha(2))]))
            .unwrap();
        let c = store
            .enqueue(&new_object("w", "/c", &[("c/1", &sha(3))]))
            .unwrap();
        store.mark_retry(b, FAR + 1, "HTTP 503").unwrap();
        store.mark_delivered(c, None, None).unwrap();
        let figures = store.outbox_figures(FAR).unwrap();
        assert_eq!((figures.pending, figures.due), (2, 1));
        let first = store.object(a).unwrap().unwrap().created_ms;
        assert_eq!(figures.oldest_created_ms, Some(first));
        store.mark_dead(a, "refused").unwrap();
        let figures = store.outbox_figures(FAR).unwrap();
        assert_eq!((figures.pending, figures.due), (1, 0));
    }
}
