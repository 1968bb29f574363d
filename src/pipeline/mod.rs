//! The pure core of the pipeline: every decision, no I/O.
//!
//! ```text
//! discover ─► settle ─► group ─► hash ─► classify ─► build ─► outbox ─► submit ─► record ─► dispose
//!            settle.rs  group.rs        classify.rs  request.rs         retry.rs
//! ```
//!
//! Each module takes `now` and plain inputs and returns plain values (a list of
//! ready groups, a blob type, a request body, a retry decision). The shell in
//! `crate::daemon` does the reading, hashing, storing and sending, so these rules
//! are tested from tables with an explicit clock.
//!
//! This file holds the vocabulary the stages share.

pub mod batch;
pub mod classify;
pub mod group;
pub mod health;
pub mod request;
pub mod retry;
pub mod schema;
pub mod settle;
pub mod task;

use serde::{Deserialize, Serialize};

/// The two request shapes Mixpeek accepts for creating an object (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    /// `POST /v1/buckets/{bucket}/objects/create`, metadata nested under `metadata`.
    ObjectsCreate,
    /// `POST /v1/buckets/{bucket}/objects`, metadata fields at the body's root.
    Objects,
}

impl Dialect {
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::ObjectsCreate => "objects-create",
            Dialect::Objects => "objects",
        }
    }

    pub fn parse(s: &str) -> Option<Dialect> {
        match s {
            "objects-create" => Some(Dialect::ObjectsCreate),
            "objects" => Some(Dialect::Objects),
            _ => None,
        }
    }

    /// Whether the presigned upload flow exists in this dialect.
    pub fn has_upload(self) -> bool {
        matches!(self, Dialect::Objects)
    }
}

/// One object as the daemon means to send it, independent of the dialect.
///
/// This is what the outbox stores: rendering it into a dialect's request body
/// happens at send time (`request::render`), so a switch of dialect under `auto`
/// does not invalidate queued objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectSpec {
    pub bucket: String,
    /// The object's `key_prefix` (SPEC §4); also the group's identity.
    pub key_prefix: String,
    /// `watch.metadata` merged with the sidecar.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub skip_duplicates: bool,
    pub blobs: Vec<BlobSpec>,
}

/// One blob of an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobSpec {
    pub property: String,
    /// Lower-case blob type in the neutral vocabulary (`json`, not `object`);
    /// `request::render` maps it to the dialect's word.
    pub blob_type: String,
    /// `/{file name}`.
    pub key_prefix: String,
    pub data: BlobData,
}

/// How a blob's content travels (SPEC §7, "Blob data by delivery mode").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BlobData {
    /// A JSON file's parsed value.
    Json { value: serde_json::Value },
    /// A text file's UTF-8 content.
    Text { text: String },
    /// Base64 of the file's bytes.
    Inline {
        base64: String,
        mime_type: String,
        filename: String,
    },
    /// A URL where the file is already published (`url_template`).
    Url { url: String, mime_type: String },
    /// A file sent through the presigned upload flow (dialect `objects`): the
    /// bytes are streamed from disk at send time, and only the version that
    /// was hashed is sent.
    Upload {
        file: UploadFile,
        /// Filled in at send time, once the upload is confirmed; the outbox
        /// stores `None` (the store's `uploads` table holds the steps).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        upload_id: Option<String>,
    },
}

/// The file behind an `upload` blob, as it was when it was hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadFile {
    /// Absolute path.
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
    /// Lower-case hex SHA-256 (sent as `file_hash`).
    pub sha256: String,
    pub mime_type: String,
    /// Base name (sent as `filename`).
    pub filename: String,
    /// The watch's `follow_symlinks`: whether the path may be a symlink.
    #[serde(default)]
    pub follow_symlinks: bool,
}

/// A request ready to go on the wire: what `plan` prints and `submit` sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpRequest {
    pub method: &'static str,
    /// Path and query, starting with `/v1/`.
    pub path: String,
    pub body: serde_json::Value,
}
