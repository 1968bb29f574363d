//! Build: turn one ready group into the object to send.
//!
//! This is the shell around the pure `hash ─► classify ─► build` boxes: it
//! reads each member once (`hash::read_file`), asks `pipeline::classify` for its
//! type, `pipeline::request` for its delivery and data, `pipeline::group` for
//! its property and metadata, and returns what the store should record. Every
//! outcome that concerns the group alone (a property clash, a file nobody can
//! classify, a broken sidecar) comes back as `Built::LocalDead`, never as an
//! error that stops the pipeline.

use std::path::PathBuf;

use serde_json::{Map, Value};
use tracing::{debug, warn};

use super::hash::{self, ReadError};
use super::scan::ScannedFile;
use crate::config::{AfterDelivery, Watch};
use crate::pipeline::classify::Classifier;
use crate::pipeline::group;
use crate::pipeline::request;
use crate::pipeline::{BlobData, BlobSpec, ObjectSpec, UploadFile};
use crate::store::{DisposeFile, NewFile, NewObject};
use crate::telemetry::Counters;

/// Largest sidecar read; metadata is small, anything bigger is a mistake.
const SIDECAR_MAX_BYTES: u64 = 1024 * 1024;
/// Most file bytes one object carries in its request body. The whole body is
/// held in memory and in one outbox row; a folder of many inline files
/// beyond this is refused with the settings that fix it, instead of taking
/// the daemon's memory with it.
pub const MAX_OBJECT_PAYLOAD: u64 = 64 * 1024 * 1024;

/// What became of a group.
#[derive(Debug)]
pub enum Built {
    /// Ready to enqueue.
    Object {
        object: NewObject,
        spec: ObjectSpec,
        bytes: u64,
    },
    /// Refused locally; recorded as a dead letter, never sent.
    LocalDead { object: NewObject, reason: String },
    /// Every blob was already delivered to this bucket (`skip_duplicates`).
    Skipped { object: NewObject },
    /// Members that changed or vanished while read; they go back to settling.
    Unsettled { changed: Vec<String> },
    /// Nothing left to send: every member vanished or could not be read.
    Empty,
}

/// A member file that could not be read for a reason of its own (permissions,
/// I/O); it is left out of this attempt and retried at the next scan.
#[derive(Debug)]
pub struct Unreadable {
    pub rel: String,
    pub path: PathBuf,
    pub error: String,
}

/// Everything `build_group` needs to know about its watch.
pub struct GroupContext<'a> {
    pub watch: &'a Watch,
    pub watch_id: &'a str,
    pub classifier: &'a Classifier,
    pub dialect_has_upload: bool,
    pub counters: &'a Counters,
}

/// Reads, classifies and builds one group. `is_delivered(sha256)` answers
/// whether a blob with that hash was already delivered to the bucket.
pub fn build_group(
    ctx: &GroupContext<'_>,
    key_prefix: &str,
    members: &[ScannedFile],
    sidecars: &[ScannedFile],
    controls: &[ScannedFile],
    is_delivered: &dyn Fn(&str) -> bool,
    unreadable: &mut Vec<Unreadable>,
) -> Built {
    let watch = ctx.watch;
    let mut changed = Vec::new();
    let mut files = Vec::new();
    let mut blobs = Vec::new();
    let mut properties = Vec::new();
    let mut problems = Vec::new();
    let mut bytes = 0u64;
    let mut all_duplicates = true;

    for member in members {
        let read = match hash::read_file(
            &member.abs,
            member.size,
            member.mtime_ns,
            watch.inline_max_bytes,
            watch.follow_symlinks,
        ) {
            Ok(read) => read,
            Err(ReadError::Changed) => {
                changed.push(member.rel.clone());
                continue;
            }
            Err(ReadError::Vanished) => continue,
            Err(err) => {
                unreadable.push(Unreadable {
                    rel: member.rel.clone(),
                    path: member.abs.clone(),
                    error: err.to_string(),
                });
                continue;
            }
        };
        Counters::add(&ctx.counters.files_hashed, 1);
        Counters::add(&ctx.counters.bytes_hashed, read.size);
        files.push(NewFile {
            rel: member.rel.clone(),
            size: read.size,
            mtime_ns: read.mtime_ns,
            sha256: read.sha256.clone(),
        });

        let classified = match ctx.classifier.classify(&member.rel, &read.head) {
            Ok(classified) => classified,
            Err(reason) => {
                problems.push(reason);
                continue;
            }
        };
        properties.push((member.rel.clone(), classified.property.clone()));

        if watch.skip_duplicates && is_delivered(&read.sha256) {
            debug!(path = %member.abs.display(), "blob already delivered to this bucket; left out");
            continue;
        }
        all_duplicates = false;

        let blob_key_prefix = group::blob_key_prefix(&member.rel);
        let file_name = &blob_key_prefix[1..];
        let delivery = match request::choose_delivery(
            watch,
            classified.delivery,
            &classified.blob_type,
            read.size,
            ctx.dialect_has_upload,
        ) {
            Ok(delivery) => delivery,
            Err(reason) => {
                problems.push(format!("{}: {reason}", member.rel));
                continue;
            }
        };
        if delivery == request::Delivery::Upload {
            // Streamed from disk at send time: nothing of it is held here,
            // and the request body carries only its upload id.
            let Some(path) = member.abs.to_str() else {
                problems.push(format!(
                    "{}: the path is not valid UTF-8, which the upload flow cannot record; \
                     rename the file",
                    member.rel
                ));
                continue;
            };
            blobs.push(BlobSpec {
                property: classified.property,
                blob_type: classified.blob_type,
                key_prefix: blob_key_prefix.clone(),
                data: BlobData::Upload {
                    file: UploadFile {
                        path: path.to_owned(),
                        size: read.size,
                        mtime_ns: read.mtime_ns,
                        sha256: read.sha256.clone(),
                        mime_type: classified.mime.clone(),
                        filename: file_name.to_owned(),
                        follow_symlinks: watch.follow_symlinks,
                    },
                    upload_id: None,
                },
            });
            continue;
        }
        // A URL carries no content; every other delivery carries the bytes read.
        let content = match (delivery, read.content.as_deref()) {
            (request::Delivery::Url, _) => &[][..],
            (_, Some(content)) => content,
            (_, None) => {
                problems.push(format!(
                    "{}: {} bytes is above inline_max_bytes ({}) and cannot be sent as a value",
                    member.rel, read.size, watch.inline_max_bytes
                ));
                continue;
            }
        };
        if bytes + content.len() as u64 > MAX_OBJECT_PAYLOAD {
            problems.push(format!(
                "the group's files add up to more than {} MiB sent in one request; \
                 use group_by = \"file\" or \"stem\", delivery = \"upload\" or \"url\", or a smaller inline_max_bytes",
                MAX_OBJECT_PAYLOAD / (1024 * 1024)
            ));
            break;
        }
        match request::blob_data(
            delivery,
            content,
            &classified.mime,
            file_name,
            key_prefix,
            watch.url_template.as_deref(),
        ) {
            Ok(data) => {
                bytes += content.len() as u64;
                blobs.push(BlobSpec {
                    property: classified.property,
                    blob_type: classified.blob_type,
                    key_prefix: blob_key_prefix.clone(),
                    data,
                });
            }
            Err(reason) => problems.push(format!("{}: {reason}", member.rel)),
        }
    }

    if !changed.is_empty() {
        return Built::Unsettled { changed };
    }
    if files.is_empty() {
        return Built::Empty;
    }
    let dispose = if watch.after_delivery == AfterDelivery::Keep {
        Vec::new()
    } else {
        files
            .iter()
            .map(|f| DisposeFile {
                rel: f.rel.clone(),
                size: f.size,
                mtime_ns: f.mtime_ns,
            })
            .chain(controls.iter().map(|c| DisposeFile {
                rel: c.rel.clone(),
                size: c.size,
                mtime_ns: c.mtime_ns,
            }))
            .collect()
    };
    let object = NewObject {
        watch: ctx.watch_id.to_owned(),
        bucket: watch.bucket.clone(),
        key_prefix: key_prefix.to_owned(),
        spec_json: String::new(),
        files,
        dispose,
    };
    if let Err(reason) = group::check_property_clash(&properties) {
        problems.push(reason);
    }
    let metadata = match read_metadata(watch, sidecars) {
        Ok(metadata) => metadata,
        Err(SidecarError::Changed(rel)) => return Built::Unsettled { changed: vec![rel] },
        Err(SidecarError::Invalid(reason)) => {
            problems.push(reason);
            Map::new()
        }
    };
    if !problems.is_empty() {
        return Built::LocalDead {
            object,
            reason: problems.join("; "),
        };
    }
    if all_duplicates {
        return Built::Skipped { object };
    }
    let spec = ObjectSpec {
        bucket: watch.bucket.clone(),
        key_prefix: key_prefix.to_owned(),
        metadata,
        skip_duplicates: watch.skip_duplicates,
        blobs,
    };
    let spec_json = serde_json::to_string(&spec).expect("an ObjectSpec always serialises");
    Built::Object {
        object: NewObject {
            spec_json,
            ..object
        },
        spec,
        bytes,
    }
}

enum SidecarError {
    /// The sidecar changed while it was read: the group is not settled.
    Changed(String),
    /// The group cannot be sent with this sidecar.
    Invalid(String),
}

/// `watch.metadata` merged with the group's sidecars, in order. Sidecars are
/// read like any member (no FIFO can hang it, no symlink leads out).
fn read_metadata(
    watch: &Watch,
    sidecars: &[ScannedFile],
) -> Result<Map<String, Value>, SidecarError> {
    let mut metadata = watch.metadata.clone();
    for sidecar in sidecars {
        if sidecar.size > SIDECAR_MAX_BYTES {
            return Err(SidecarError::Invalid(format!(
                "{}: sidecar is {} bytes; metadata sidecars are limited to {SIDECAR_MAX_BYTES}",
                sidecar.rel, sidecar.size
            )));
        }
        let read = hash::read_file(
            &sidecar.abs,
            sidecar.size,
            sidecar.mtime_ns,
            SIDECAR_MAX_BYTES,
            watch.follow_symlinks,
        );
        let bytes = match read {
            Ok(read) => read.content.unwrap_or_default(),
            Err(ReadError::Vanished) => continue,
            Err(ReadError::Changed) => return Err(SidecarError::Changed(sidecar.rel.clone())),
            Err(err) => {
                warn!(path = %sidecar.abs.display(), error = %err, "sidecar unreadable");
                return Err(SidecarError::Invalid(format!(
                    "{}: cannot read sidecar: {err}",
                    sidecar.rel
                )));
            }
        };
        metadata = group::merge_metadata(&metadata, Some(&bytes), &sidecar.rel)
            .map_err(SidecarError::Invalid)?;
    }
    Ok(metadata)
}
