//! Presigned uploads (SPEC §7, dialect `objects`): create the upload, PUT
//! the file to the presigned URL, confirm, for every `upload` blob of an
//! object, so its create can carry the upload ids.
//!
//! Inputs: an outbox item whose spec has `upload` blobs, and the steps the
//! store recorded for them. Outputs: the spec with its upload ids filled in,
//! or the [`UploadEnd`] that keeps the object from being created now.
//!
//! Invariants:
//! - Every step is recorded before the next starts (created, PUT done with
//!   its ETag, confirmed), so a restart resumes at the step it reached: a
//!   file that was PUT is never PUT again for the same upload.
//! - The blobs of one object upload side by side; PUTs of all objects share
//!   `api.max_in_flight` slots. Uploads' PUTs go around the request quota
//!   (they are storage, not API) but through the bandwidth cap.
//! - A presigned URL past its expiry (less a margin), or refused by the
//!   storage, is renewed with a new upload, once per attempt.
//! - Content that is not the recorded version (changed, vanished, changed
//!   during the PUT) is never confirmed: the object ends as superseded.
//! - The storage's answers are not the API's: its 401/403 say nothing about
//!   the key and its 4xx nothing about the object, so they are retried
//!   (a 413 excepted).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;
use tracing::debug;

use super::{StoreHandle, failpoint};
use crate::api::{ApiClient, Response, parse_upload_ack};
use crate::error::FatalError;
use crate::pipeline::retry::{self, Backoff, Context, Decision};
use crate::pipeline::{BlobData, ObjectSpec, UploadFile, request};
use crate::store::{OutboxItem, UploadRow, unix_now_ms};
use crate::telemetry::{Counters, RequestKind};
use crate::transfer::{Presigned, Put};

/// How long before its stated expiry a presigned URL is renewed rather than
/// used: a PUT that starts a moment before expiry fails halfway.
const EXPIRY_MARGIN_MS: i64 = 60_000;

/// Where an object's uploads ended for this attempt (for one blob, or the
/// one that decides for the object).
pub enum UploadEnd {
    /// Confirmed: the blob carries this id.
    Ready(String),
    /// The file is not the version that was hashed any more.
    Superseded(String),
    /// The API's verdict on a step (retry, dead letter, pause).
    Failed(Decision),
}

/// One blob to upload, with what its requests need to know.
#[derive(Clone, Copy)]
struct Blob<'a> {
    item: &'a OutboxItem,
    bucket: &'a str,
    skip_duplicates: bool,
    /// The dialect is not settled (`auto`): see [`Uploader::upload_all`].
    probing: bool,
    property: &'a str,
    file: &'a UploadFile,
}

pub struct Uploader {
    client: ApiClient,
    presigned: Presigned,
    store: StoreHandle,
    backoff: Backoff,
    counters: Arc<Counters>,
    /// PUTs in flight, across objects (`api.max_in_flight`).
    put_slots: Semaphore,
    /// PUTs sending right now (not waiting for a slot).
    putting: AtomicUsize,
}

/// Counts a PUT as under way while it lives.
struct Putting<'a>(&'a AtomicUsize);

impl<'a> Putting<'a> {
    fn start(count: &'a AtomicUsize) -> Putting<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Putting(count)
    }
}

impl Drop for Putting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Uploader {
    pub fn new(
        client: ApiClient,
        presigned: Presigned,
        store: StoreHandle,
        backoff: Backoff,
        counters: Arc<Counters>,
        max_in_flight: usize,
    ) -> Uploader {
        Uploader {
            client,
            presigned,
            store,
            backoff,
            counters,
            put_slots: Semaphore::new(max_in_flight.max(1)),
            putting: AtomicUsize::new(0),
        }
    }

    /// A presigned PUT is sending.
    pub fn transferring(&self) -> bool {
        self.putting.load(Ordering::SeqCst) > 0
    }

    /// Runs the upload of every `upload` blob of `spec`, side by side, from
    /// the step each reached. `None` when all are confirmed (their ids are
    /// filled in); else the end that decides for the object: a superseded
    /// file first, then a missing upload endpoint, a pause, a dead letter, a
    /// retry.
    ///
    /// `probing`: the dialect is not settled yet (`auto`), so an upload
    /// endpoint that does not exist answers [`Decision::WrongDialect`].
    pub async fn upload_all(
        &self,
        item: &OutboxItem,
        spec: &mut ObjectSpec,
        probing: bool,
    ) -> Result<Option<UploadEnd>, FatalError> {
        let id = item.id;
        let recorded: BTreeMap<String, UploadRow> = self
            .store
            .run(move |store| store.uploads_of(id))
            .await?
            .into_iter()
            .map(|row| (row.property.clone(), row))
            .collect();
        let jobs = spec.blobs.iter().filter_map(|blob| match &blob.data {
            BlobData::Upload { file, .. } => {
                let row = recorded.get(&blob.property).cloned();
                let blob_job = Blob {
                    item,
                    bucket: &spec.bucket,
                    skip_duplicates: spec.skip_duplicates,
                    probing,
                    property: &blob.property,
                    file,
                };
                Some(async move {
                    let end = self.upload_steps(&blob_job, row).await;
                    (blob_job.property.to_owned(), end)
                })
            }
            _ => None,
        });
        let ends = futures_util::future::join_all(jobs).await;
        let mut ids = BTreeMap::new();
        let mut worst: Option<UploadEnd> = None;
        for (property, end) in ends {
            match end? {
                UploadEnd::Ready(upload_id) => {
                    ids.insert(property, upload_id);
                }
                // The first superseded file, else the first pause, else the
                // first failure decides: they end the attempt in that order.
                end => {
                    let rank = |e: &UploadEnd| match e {
                        UploadEnd::Superseded(_) => 0,
                        UploadEnd::Failed(Decision::WrongDialect { .. }) => 1,
                        UploadEnd::Failed(Decision::Pause { .. }) => 2,
                        UploadEnd::Failed(Decision::DeadLetter { .. }) => 3,
                        _ => 4,
                    };
                    if worst.as_ref().is_none_or(|w| rank(&end) < rank(w)) {
                        worst = Some(end);
                    }
                }
            }
        }
        if worst.is_none() {
            for blob in &mut spec.blobs {
                if let BlobData::Upload { upload_id, .. } = &mut blob.data {
                    *upload_id = ids.remove(&blob.property);
                }
            }
        }
        Ok(worst)
    }

    /// One blob's upload, from the step `row` reached to confirmed.
    async fn upload_steps(
        &self,
        blob: &Blob<'_>,
        mut row: Option<UploadRow>,
    ) -> Result<UploadEnd, FatalError> {
        let Blob {
            item,
            bucket,
            skip_duplicates,
            probing,
            property,
            file,
        } = *blob;
        let ctx = Context {
            attempt: item.attempts,
            probing_dialect: false,
        };
        let create_ctx = Context {
            probing_dialect: probing,
            ..ctx
        };
        let id = item.id;
        // One renewal per attempt: a URL refused twice in a row is a storage
        // problem, retried with backoff like any other.
        let mut renewed = false;
        loop {
            let Some(mut current) = row.take() else {
                let request = request::render_upload_create(bucket, file, skip_duplicates);
                let response = self.client.send(&request).await;
                let decision = classify(&response, &create_ctx, &self.backoff);
                if decision != Decision::Success {
                    return Ok(UploadEnd::Failed(decision));
                }
                let Some(ack) = parse_upload_ack(response.body()) else {
                    return Ok(UploadEnd::Failed(Decision::Retry {
                        after: self.backoff.delay(item.attempts, &mut rand::rng()),
                        reason: format!(
                            "the upload answer for {} has no upload_id: {}",
                            file.filename,
                            retry::error_message(response.body())
                        ),
                    }));
                };
                let duplicate = ack.presigned_url.is_none();
                let new = UploadRow {
                    property: property.to_owned(),
                    upload_id: ack.upload_id,
                    presigned_url: ack.presigned_url,
                    expires_ms: ack.expires_ms,
                    etag: None,
                    put_done: duplicate,
                    confirmed: duplicate
                        && ack
                            .status
                            .is_some_and(|s| s.eq_ignore_ascii_case("COMPLETED")),
                };
                if duplicate {
                    debug!(file = %file.filename, upload_id = %new.upload_id, "already uploaded; no PUT");
                }
                let stored = new.clone();
                self.store
                    .run(move |store| store.record_upload(id, &stored))
                    .await?;
                row = Some(new);
                continue;
            };
            if !current.put_done {
                let url = current.presigned_url.clone().unwrap_or_default();
                let expired = current
                    .expires_ms
                    .is_some_and(|at| at - EXPIRY_MARGIN_MS <= unix_now_ms());
                if expired {
                    debug!(file = %file.filename, "presigned URL expired before the PUT; renewing");
                    self.forget(id, property).await?;
                    continue;
                }
                let put = {
                    let _slot = self
                        .put_slots
                        .acquire()
                        .await
                        .expect("the PUT semaphore is never closed");
                    let _putting = Putting::start(&self.putting);
                    self.presigned.put(&url, file).await
                };
                let (response, intact) = match put {
                    Put::FileChanged(reason) => return Ok(UploadEnd::Superseded(reason)),
                    Put::Answered { response, intact } => (response, intact),
                };
                self.counters
                    .answered(RequestKind::Presigned, response.status());
                match response.status() {
                    Some(200..=299) if intact => {
                        current.etag = response.result.as_ref().ok().and_then(|r| r.etag.clone());
                        current.put_done = true;
                        let stored = current.clone();
                        self.store
                            .run(move |store| store.record_upload(id, &stored))
                            .await?;
                        failpoint::hit(failpoint::AFTER_PUT);
                    }
                    Some(200..=299) => {
                        return Ok(UploadEnd::Superseded(format!(
                            "{} changed while it was uploaded",
                            file.path
                        )));
                    }
                    // A refused signature (expired, revoked, clock skew):
                    // a new upload gets a new URL.
                    Some(400 | 401 | 403) if !renewed => {
                        debug!(file = %file.filename, status = ?response.status(), "presigned PUT refused; renewing the upload");
                        renewed = true;
                        self.forget(id, property).await?;
                        continue;
                    }
                    Some(413) => {
                        return Ok(UploadEnd::Failed(Decision::DeadLetter {
                            reason: format!(
                                "the storage refused {} as too large (HTTP 413): {}",
                                file.filename,
                                retry::error_message(response.body())
                            ),
                        }));
                    }
                    _ => {
                        // The storage is not the API: its 4xx are no verdict
                        // on the object, and its 401/403 not on the key.
                        self.forget(id, property).await?;
                        return Ok(UploadEnd::Failed(Decision::Retry {
                            after: self.backoff.delay(item.attempts, &mut rand::rng()),
                            reason: format!(
                                "presigned PUT of {}: {}",
                                file.filename,
                                response.error_text()
                            ),
                        }));
                    }
                }
            }
            if !current.confirmed {
                let request = request::render_upload_confirm(
                    bucket,
                    &current.upload_id,
                    current.etag.as_deref(),
                    file.size,
                );
                let response = self.client.send(&request).await;
                match classify(&response, &ctx, &self.backoff) {
                    Decision::Success => {
                        current.confirmed = true;
                        let stored = current.clone();
                        self.store
                            .run(move |store| store.record_upload(id, &stored))
                            .await?;
                    }
                    // The API no longer knows the upload, or refuses what
                    // storage holds: start it over rather than give up on
                    // the file.
                    Decision::DeadLetter { reason } if !renewed => {
                        debug!(file = %file.filename, %reason, "confirmation refused; uploading again");
                        renewed = true;
                        self.forget(id, property).await?;
                        continue;
                    }
                    other => return Ok(UploadEnd::Failed(other)),
                }
            }
            return Ok(UploadEnd::Ready(current.upload_id));
        }
    }

    async fn forget(&self, id: i64, property: &str) -> Result<(), FatalError> {
        let property = property.to_owned();
        self.store
            .run(move |store| store.forget_upload(id, &property))
            .await?;
        Ok(())
    }
}

fn classify(response: &Response, ctx: &Context, backoff: &Backoff) -> Decision {
    retry::classify(&response.outcome(), ctx, backoff, &mut rand::rng())
}
