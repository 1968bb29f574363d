//! Bytes on the wire: the bandwidth cap, and presigned PUTs streamed from disk.
//!
//! Inputs: `api.max_bytes_per_second`, request bodies, and the files of
//! `upload` blobs ([`UploadFile`]) with the presigned URL the API gave.
//! Outputs: request bodies that go out no faster than the cap, and a
//! [`Put`] per presigned PUT: the answer (with its `ETag`), and whether the
//! bytes that went out hash to what was recorded.
//!
//! Invariants:
//! - One [`Throttle`] is shared by every request body of the API client and
//!   every PUT, so the cap holds for the daemon as a whole. It meters body
//!   bytes (headers are a few hundred bytes a request) with a token bucket
//!   whose burst is one chunk: over any window of `t` seconds at most
//!   `cap × t + chunk` body bytes leave.
//! - A PUT streams the file in fixed chunks: memory does not grow with the
//!   file. It goes to the presigned URL with `Content-Length` and
//!   `Content-Type` and never with the API key: the client here has no
//!   default headers, and the URL's own signature is the credential.
//! - A PUT only starts on the version of the file that was hashed (size and
//!   mtime checked on the open file), and its bytes are hashed on the way
//!   out; a file that changed meanwhile is reported, so the caller never
//!   confirms content that is not what was recorded.
//!
//! The token bucket is `governor`'s; a chunk is at most 64 KiB, or the cap
//! itself when that is smaller, so a small cap still sends.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream;
use reqwest::header::{self, HeaderValue};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::api::{self, ApiError, Response, USER_AGENT};
use crate::config::ApiConfig;
use crate::daemon::hash::{self, ReadError};
use crate::pipeline::UploadFile;

/// Largest piece of a body metered at once.
const MAX_CHUNK: usize = 64 * 1024;
/// Read size of a PUT without a cap.
const READ_CHUNK: usize = 256 * 1024;
/// The slowest link a PUT is expected to make progress on: its timeout is
/// `api.timeout` plus the file's size at this rate (or at the cap, when
/// lower), so a large file on a slow link is not cut off, and a stalled one
/// still ends.
const SLOWEST_LINK: u64 = 64 * 1024;

/// The shared bandwidth cap (`api.max_bytes_per_second`; 0 = none).
pub struct Throttle {
    limiter: Option<governor::DefaultDirectRateLimiter>,
    chunk: usize,
    bytes_per_second: u64,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("bytes_per_second", &self.bytes_per_second)
            .finish()
    }
}

impl Throttle {
    pub fn new(bytes_per_second: u64) -> Throttle {
        // Above 4 GiB/s there is nothing to protect on any link this runs on.
        let rate = u32::try_from(bytes_per_second)
            .ok()
            .and_then(NonZeroU32::new);
        let Some(rate) = rate else {
            return Throttle {
                limiter: None,
                chunk: READ_CHUNK,
                bytes_per_second: 0,
            };
        };
        let chunk = MAX_CHUNK.min(rate.get() as usize);
        let burst = NonZeroU32::new(u32::try_from(chunk).unwrap_or(u32::MAX))
            .expect("the chunk is at least one byte: the rate is not zero");
        let quota = governor::Quota::per_second(rate).allow_burst(burst);
        Throttle {
            limiter: Some(governor::RateLimiter::direct(quota)),
            chunk,
            bytes_per_second: u64::from(rate.get()),
        }
    }

    /// The cap in bytes per second; 0 when there is none.
    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second
    }

    /// Waits until `n` more bytes (at most one chunk) may go out.
    async fn take(&self, n: usize) {
        let Some(limiter) = &self.limiter else {
            return;
        };
        let Some(n) = NonZeroU32::new(u32::try_from(n.min(self.chunk)).unwrap_or(u32::MAX)) else {
            return;
        };
        // `n` never exceeds the burst, so this cannot fail for good.
        if limiter.until_n_ready(n).await.is_err() {
            debug_assert!(false, "a chunk larger than the burst");
        }
    }

    /// A request body that leaves no faster than the cap (as is without one).
    pub fn body(self: &Arc<Self>, bytes: Vec<u8>) -> reqwest::Body {
        if self.limiter.is_none() {
            return reqwest::Body::from(bytes);
        }
        let throttle = Arc::clone(self);
        let bytes = bytes::Bytes::from(bytes);
        let pieces = stream::unfold(0usize, move |at| {
            let throttle = Arc::clone(&throttle);
            let bytes = bytes.clone();
            async move {
                if at >= bytes.len() {
                    return None;
                }
                let end = (at + throttle.chunk).min(bytes.len());
                throttle.take(end - at).await;
                Some((Ok::<_, std::io::Error>(bytes.slice(at..end)), end))
            }
        });
        reqwest::Body::wrap_stream(pieces)
    }
}

/// What a presigned PUT came to.
#[derive(Debug)]
pub enum Put {
    /// The storage answered; `intact` says whether the bytes sent hash to
    /// the recorded SHA-256 (false: the file changed during the PUT).
    Answered { response: Response, intact: bool },
    /// The file is not the version that was hashed any more, or is gone: the
    /// PUT did not start.
    FileChanged(String),
}

/// The client for presigned URLs: no API key, no default headers.
#[derive(Clone)]
pub struct Presigned {
    http: reqwest::Client,
    throttle: Arc<Throttle>,
    timeout: Duration,
}

impl Presigned {
    pub fn new(cfg: &ApiConfig, throttle: Arc<Throttle>) -> Result<Presigned, ApiError> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(cfg.timeout)
            // Storage services redirect PUTs only by mistake; a followed
            // redirect would resend the body to a place nobody signed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ApiError::Build)?;
        Ok(Presigned {
            http,
            throttle,
            timeout: cfg.timeout,
        })
    }

    /// How long a PUT of `size` bytes may take.
    fn put_timeout(&self, size: u64) -> Duration {
        let rate = match self.throttle.bytes_per_second() {
            0 => SLOWEST_LINK,
            cap => cap.min(SLOWEST_LINK),
        };
        self.timeout + Duration::from_secs(size / rate)
    }

    /// Streams `file` to `url`.
    pub async fn put(&self, url: &str, file: &UploadFile) -> Put {
        let opened = {
            let path = std::path::Path::new(&file.path);
            hash::open_checked(path, file.size, file.mtime_ns, file.follow_symlinks)
        };
        let std_file = match opened {
            Ok(f) => f,
            Err(ReadError::Vanished) => {
                return Put::FileChanged(format!("{} was deleted before its upload", file.path));
            }
            Err(err) => return Put::FileChanged(format!("{}: {err}", file.path)),
        };
        let digest: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let body = file_body(
            tokio::fs::File::from_std(std_file),
            Arc::clone(&self.throttle),
            file.size,
            Arc::clone(&digest),
        );
        let content_type = HeaderValue::try_from(file.mime_type.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
        let sent = self
            .http
            .put(url)
            .timeout(self.put_timeout(file.size))
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, file.size)
            .body(body)
            .send()
            .await;
        // The presigned URL carries its signature, a credential until it
        // expires: an error must not put it into a log line or a reason.
        let response = api::receive(sent.map_err(reqwest::Error::without_url), None).await;
        let intact = digest
            .lock()
            .expect("digest lock poisoned")
            .as_deref()
            .is_some_and(|d| d == file.sha256);
        Put::Answered { response, intact }
    }
}

/// The file as a body of at most `size` bytes, hashed on the way out; the
/// hex digest lands in `digest` once every byte was read.
fn file_body(
    file: tokio::fs::File,
    throttle: Arc<Throttle>,
    size: u64,
    digest: Arc<Mutex<Option<String>>>,
) -> reqwest::Body {
    struct State {
        file: tokio::fs::File,
        hasher: Option<Sha256>,
        left: u64,
        buf: Vec<u8>,
    }
    let chunk = throttle.chunk;
    let state = State {
        file,
        hasher: Some(Sha256::new()),
        left: size,
        buf: vec![0u8; chunk],
    };
    let pieces = stream::unfold(state, move |mut st| {
        let throttle = Arc::clone(&throttle);
        let digest = Arc::clone(&digest);
        async move {
            if st.left == 0 {
                return None;
            }
            let want = usize::try_from(st.left).unwrap_or(usize::MAX).min(chunk);
            let n = match st.file.read(&mut st.buf[..want]).await {
                Ok(0) => {
                    let err = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file shrank during its upload",
                    );
                    return Some((Err(err), st));
                }
                Ok(n) => n,
                Err(err) => return Some((Err(err), st)),
            };
            throttle.take(n).await;
            if let Some(hasher) = st.hasher.as_mut() {
                hasher.update(&st.buf[..n]);
            }
            st.left -= n as u64;
            if st.left == 0
                && let Some(hasher) = st.hasher.take()
            {
                // Everything promised by Content-Length was read (the HTTP
                // client polls no further once it has that many): the digest
                // is of exactly what goes out.
                *digest.lock().expect("digest lock poisoned") =
                    Some(hex::encode(hasher.finalize()));
            }
            let piece = bytes::Bytes::copy_from_slice(&st.buf[..n]);
            Some((Ok(piece), st))
        }
    });
    reqwest::Body::wrap_stream(pieces)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn no_cap_means_no_limiter() {
        let t = Throttle::new(0);
        assert!(t.limiter.is_none());
        assert_eq!(t.bytes_per_second(), 0);
        // Above what a u32 holds: no cap either.
        assert!(Throttle::new(u64::from(u32::MAX) + 1).limiter.is_none());
    }

    #[test]
    fn the_chunk_never_exceeds_the_cap() {
        assert_eq!(Throttle::new(1000).chunk, 1000);
        assert_eq!(Throttle::new(10 * 1024 * 1024).chunk, MAX_CHUNK);
    }

    #[tokio::test]
    async fn capped_bytes_wait_for_their_tokens() {
        // 200 kB/s, burst one 64 KiB chunk: four chunks need three refills
        // of 64 KiB / 200 kB/s ≈ 0.33 s each. A lower bound only, which a
        // slow machine cannot break.
        let throttle = Throttle::new(200_000);
        assert_eq!(throttle.chunk, MAX_CHUNK);
        let started = Instant::now();
        for _ in 0..4 {
            throttle.take(MAX_CHUNK).await;
        }
        assert!(started.elapsed() >= Duration::from_millis(900));
        // Without a cap nothing waits (and nothing panics on odd sizes).
        let free = Throttle::new(0);
        free.take(usize::MAX).await;
        free.take(0).await;
    }
}
