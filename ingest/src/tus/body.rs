//! The PATCH body on its way to storage: held to the upload's declared
//! length and, when the client sent `Upload-Checksum`, verified as it flows.
//! A refusal surfaces as a stream error at the point it is known (the end,
//! for a checksum), so storage keeps streaming and never needs the chunk in
//! memory; the handler then discards what was written by keeping the old
//! storage handle.
//!
//! Before that, [`paced`] ends a body that arrives slower than the
//! [`TransferFloor`] or outlives its writer's lease: the stream then simply
//! ends early, like a client that went away, and the bytes that arrived
//! are kept for the client to resume after.

use lectern_web::ErrorCode;
use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use tokio::time::Instant;

use base64::Engine;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use lectern_storage::ByteStream;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::error::TusError;
use super::lease::LeaseClock;

/// The slowest a PATCH body may arrive: fewer than `bytes` in `window` of
/// waiting on the client ends the request, keeping what arrived (tus
/// clients resume after it). Time storage spends on the bytes does not
/// count, only time spent waiting for the client's next ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferFloor {
    pub bytes: u64,
    pub window: Duration,
}

impl Default for TransferFloor {
    /// 32 KiB a minute: far below any working connection, far above a
    /// client that trickles bytes to hold an upload (and a request) open.
    fn default() -> Self {
        TransferFloor {
            bytes: 32 * 1024,
            window: Duration::from_secs(60),
        }
    }
}

/// `body` as a stream that ends with a `TimedOut` error once it falls below
/// `floor` or once `lease` runs out.
pub fn paced(
    body: Body,
    floor: TransferFloor,
    lease: Arc<LeaseClock>,
) -> impl Stream<Item = std::io::Result<Bytes>> {
    struct Pace {
        stream: axum::body::BodyDataStream,
        floor: TransferFloor,
        lease: Arc<LeaseClock>,
        /// Time spent waiting on the client in the current window.
        waited: Duration,
        /// Bytes that arrived in it.
        arrived: u64,
    }
    let pace = Pace {
        stream: body.into_data_stream(),
        floor,
        lease,
        waited: Duration::ZERO,
        arrived: 0,
    };
    let stop = |why: String| Some((Err(std::io::Error::new(ErrorKind::TimedOut, why)), None));
    futures::stream::unfold(Some(pace), move |pace| async move {
        let mut p = pace?;
        loop {
            if p.waited >= p.floor.window {
                if p.arrived < p.floor.bytes {
                    return stop(format!(
                        "fewer than {} bytes arrived in {} s",
                        p.floor.bytes,
                        p.floor.window.as_secs_f64()
                    ));
                }
                p.waited = Duration::ZERO;
                p.arrived = 0;
            }
            let started = Instant::now();
            let lease_ends = p.lease.deadline();
            if started >= lease_ends {
                return stop("the upload's lease could not be renewed".to_owned());
            }
            let wake = (started + (p.floor.window - p.waited)).min(lease_ends);
            let next = tokio::time::timeout_at(wake, p.stream.next()).await;
            p.waited += started.elapsed();
            match next {
                Ok(Some(Ok(chunk))) => {
                    p.arrived += chunk.len() as u64;
                    return Some((Ok(chunk), Some(p)));
                }
                Ok(Some(Err(e))) => return Some((Err(std::io::Error::other(e)), None)),
                Ok(None) => return None,
                // Woken for the floor or the lease: both are checked above.
                Err(_) => continue,
            }
        }
    })
}

/// Algorithms advertised in `Tus-Checksum-Algorithm`.
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256";

/// Why a chunk was refused; carried inside the body's `io::Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkRefusal {
    #[error("the body goes past the upload's length")]
    BeyondLength,
    #[error("the body does not match Upload-Checksum")]
    ChecksumMismatch,
}

impl ChunkRefusal {
    /// The refusal behind a body error, if it was one of ours.
    pub fn of(error: &std::io::Error) -> Option<ChunkRefusal> {
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ChunkRefusal>())
            .copied()
    }
}

enum Hasher {
    Sha1(Sha1),
    Sha256(Sha256),
}

/// A parsed `Upload-Checksum: <algorithm> <base64 digest>`.
pub struct ExpectedChecksum {
    hasher: Hasher,
    digest: Vec<u8>,
}

impl ExpectedChecksum {
    pub fn parse(header: &str) -> Result<Self, TusError> {
        let (algorithm, encoded) = header.trim().split_once(' ').ok_or_else(|| {
            TusError::bad_request(
                ErrorCode::InvalidChecksum,
                "Upload-Checksum must be `<algorithm> <base64 digest>`",
            )
        })?;
        let (hasher, len) = match algorithm {
            "sha1" => (Hasher::Sha1(Sha1::new()), 20),
            "sha256" => (Hasher::Sha256(Sha256::new()), 32),
            other => {
                return Err(TusError::bad_request(
                    ErrorCode::UnsupportedChecksumAlgorithm,
                    format!(
                    "checksum algorithm `{}` is not supported; use one of {CHECKSUM_ALGORITHMS}",
                    other.chars().take(32).collect::<String>()
                ),
                ))
            }
        };
        let digest = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .filter(|d| d.len() == len)
            .ok_or_else(|| {
                TusError::bad_request(
                    ErrorCode::InvalidChecksum,
                    format!("Upload-Checksum digest must be {len} bytes in base64 for {algorithm}"),
                )
            })?;
        Ok(ExpectedChecksum { hasher, digest })
    }

    fn update(&mut self, data: &[u8]) {
        match &mut self.hasher {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    fn matches(self) -> bool {
        let actual = match self.hasher {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
        };
        actual == self.digest
    }
}

/// Wraps a request body; see the module docs.
pub struct GuardedBody {
    inner: ByteStream,
    remaining: u64,
    checksum: Option<ExpectedChecksum>,
    finished: bool,
}

impl GuardedBody {
    pub fn new(inner: ByteStream, remaining: u64, checksum: Option<ExpectedChecksum>) -> Self {
        GuardedBody {
            inner,
            remaining,
            checksum,
            finished: false,
        }
    }

    fn refuse(&mut self, refusal: ChunkRefusal) -> Poll<Option<std::io::Result<Bytes>>> {
        self.finished = true;
        Poll::Ready(Some(Err(std::io::Error::other(refusal))))
    }
}

impl Stream for GuardedBody {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                let len = chunk.len() as u64;
                if len > self.remaining {
                    return self.refuse(ChunkRefusal::BeyondLength);
                }
                self.remaining -= len;
                if let Some(checksum) = &mut self.checksum {
                    checksum.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.finished = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                if self.checksum.take().is_some_and(|c| !c.matches()) {
                    return self.refuse(ChunkRefusal::ChecksumMismatch);
                }
                self.finished = true;
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any `Upload-Checksum` value is parsed or refused with one of the
        /// checksum codes; never a panic.
        #[test]
        fn any_checksum_header_is_parsed_or_refused(header in "\\PC{0,200}") {
            if let Err(e) = ExpectedChecksum::parse(&header) {
                prop_assert!(matches!(
                    e.code(),
                    ErrorCode::InvalidChecksum | ErrorCode::UnsupportedChecksumAlgorithm
                ));
            }
        }
    }
}
