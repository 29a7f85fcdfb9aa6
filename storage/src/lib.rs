//! Object storage for every byte of video Lectern keeps: uploaded sources,
//! renditions, HLS playlists and segments.
//!
//! This crate owns one async trait, [`Store`], and two backends behind it:
//! - [`FsStore`] (module `fs`): the embedded default, objects as files under a
//!   root directory;
//! - [`S3Store`] (module `s3`): any S3-compatible service through aws-sdk-s3
//!   (AWS, Alibaba OSS, Tencent COS, Huawei OBS, MinIO, Garage).
//!
//! Callers hold an `Arc<dyn Store>` and never learn which backend they talk to.
//! Key rules (module `key`) and range arithmetic (module `range`) live here once
//! so both backends accept and refuse exactly the same requests. Module
//! [`replicate`] copies one store into another incrementally (the media
//! backup). Module [`changes`] tells waiters in this process that an
//! object was rewritten (a live playlist's blocking reload).

pub mod changes;
mod error;
mod fs;
mod key;
mod range;
pub mod replicate;
mod resumable;
mod s3;

use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use futures::StreamExt;

pub use error::{Result, StorageError};
pub use fs::FsStore;
pub use key::{validate_key, MAX_KEY_LEN};
pub use range::ByteRange;
pub use resumable::{Appended, ResumableUpload};
pub use s3::{S3Config, S3Store};

/// A body flowing into or out of a store, chunk by chunk, so no object is ever
/// held in memory whole.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// HTTP metadata stored with an object and served back with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// `None` leaves it to the backend: fs stores none, S3 services usually
    /// fill in `binary/octet-stream`.
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
}

/// What a store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    /// Size of the whole object, even when a ranged read returned less.
    pub size: u64,
    /// Opaque version tag: changes when the content changes. Hex SHA-256 of
    /// the content on the fs backend, the service's ETag (quotes stripped) on S3.
    pub etag: String,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub last_modified: DateTime<Utc>,
}

/// The answer to [`Store::get`].
pub struct GetObject {
    pub meta: ObjectMeta,
    /// The bytes of the object that `body` carries (a sub-range for ranged reads).
    pub range: std::ops::Range<u64>,
    pub body: ByteStream,
}

impl std::fmt::Debug for GetObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetObject")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

impl GetObject {
    /// Collects the body into memory; for small objects such as playlists.
    pub async fn bytes(self) -> Result<Bytes> {
        let len = usize::try_from(self.range.end - self.range.start).unwrap_or(0);
        let mut body = self.body;
        let Some(first) = body.next().await.transpose()? else {
            return Ok(Bytes::new());
        };
        // The fs backend hands small objects out as one chunk: no copy.
        let Some(second) = body.next().await.transpose()? else {
            return Ok(first);
        };
        let mut out = Vec::with_capacity(len.max(first.len() + second.len()));
        out.extend_from_slice(&first);
        out.extend_from_slice(&second);
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(Bytes::from(out))
    }
}

/// Object storage. Keys follow [`validate_key`]; every method refuses others
/// with [`StorageError::InvalidKey`] before touching the backend.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Short backend name for logs and readiness output: `"fs"` or `"s3"`.
    fn backend_name(&self) -> &'static str;

    /// Stores `body` under `key`, replacing any existing object atomically:
    /// readers see the old object or the new one, never a mix.
    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> Result<ObjectMeta>;

    /// Stores an in-memory value; for small objects such as playlists.
    async fn put_bytes(&self, key: &str, bytes: Bytes, opts: PutOptions) -> Result<ObjectMeta> {
        let body: ByteStream = Box::pin(futures::stream::once(async move { Ok(bytes) }));
        self.put(key, body, opts).await
    }

    /// Streams a local file into the store without reading it into memory.
    async fn put_file(&self, key: &str, path: &Path, opts: PutOptions) -> Result<ObjectMeta> {
        // Validate first so a bad key is reported as such even when the file is missing.
        validate_key(key)?;
        let file = tokio::fs::File::open(path).await?;
        let body: ByteStream = Box::pin(tokio_util::io::ReaderStream::with_capacity(
            file,
            STREAM_CHUNK,
        ));
        self.put(key, body, opts).await
    }

    /// Reads an object, or the part of it selected by `range` (HTTP semantics:
    /// an end past the object is clamped, a start past it is
    /// [`StorageError::RangeNotSatisfiable`]).
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetObject>;

    /// Metadata of one object, or [`StorageError::NotFound`].
    async fn head(&self, key: &str) -> Result<ObjectMeta>;

    /// Removes an object. Removing a missing object succeeds, so retries are safe.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Every object whose key starts with `prefix` (a plain string prefix, not
    /// only a directory), sorted by key.
    ///
    /// `content_type` and `cache_control` are always `None` here: S3 listings do
    /// not carry them, and the fs backend matches so no caller comes to rely on
    /// them. Use [`Store::head`] when they are needed.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// A URL a plain HTTP client can GET the object from until `expires`
    /// passes, or `None` when the backend cannot issue one (fs); callers then
    /// serve the bytes themselves.
    async fn presign_get(&self, key: &str, expires: Duration) -> Result<Option<String>>;

    /// Cheap readiness probe: can this store be reached and written to?
    async fn check(&self) -> Result<()>;

    /// Starts a resumable upload that [`Store::complete_upload`] will publish
    /// under `key` (see the `resumable` module for the handle's rules).
    async fn begin_upload(&self, key: &str, opts: PutOptions) -> Result<ResumableUpload>;

    /// Appends `body` after the bytes `upload` covers, durably, streaming:
    /// at most one S3 part is in memory and nothing is staged on local disk
    /// for S3. A failing body is not an error: the bytes before the failure
    /// are kept and reported in [`Appended::interrupted`]. On `Err`, the
    /// given handle is still valid.
    async fn append_upload(&self, upload: &ResumableUpload, body: ByteStream) -> Result<Appended>;

    /// Publishes the bytes `upload` covers as one ordinary object at its key
    /// and removes the upload's scratch state. Idempotent: completing a
    /// handle again after a success (a retry after a crash) returns the
    /// published object's metadata.
    async fn complete_upload(&self, upload: &ResumableUpload) -> Result<ObjectMeta>;

    /// Throws an unfinished upload away. Aborting twice succeeds.
    async fn abort_upload(&self, upload: &ResumableUpload) -> Result<()>;
}

/// Chunk size for bodies read from disk: large enough to keep syscalls and
/// per-chunk hashing overhead low, small enough to keep many streams cheap.
pub(crate) const STREAM_CHUNK: usize = 64 * 1024;
