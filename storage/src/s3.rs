//! The S3 backend: any S3-compatible service through aws-sdk-s3.
//!
//! The client is built from [`S3Config`] alone, without aws-config: no
//! environment, profile or instance-metadata lookups, so what the operator
//! configured is exactly what is used, and non-AWS services (Alibaba OSS,
//! Tencent COS, Huawei OBS, MinIO, Garage) work with an endpoint and a static
//! key. Request checksums are only sent when an operation requires them,
//! because several of those services reject the SDK's default aws-chunked
//! checksum trailers.
//!
//! Uploads stream: the body is cut into 8 MiB parts (`PART_SIZE`); a body that ends
//! within the first part is one `PutObject`, anything larger a multipart upload
//! with at most `PARTS_IN_FLIGHT` parts in memory, aborted on any error so no
//! orphaned parts are billed.
//!
//! Resumable uploads map onto one multipart upload, created lazily with the
//! first full part. tus clients may send chunks of any size, but S3 parts
//! must be at least 5 MiB (except the last), so the bytes after the last
//! full part are staged as a small ordinary object in the bucket
//! (`<key>.upload-<token>/<uuid>`) and read back in front of the next
//! append. This keeps nothing on local disk and nothing in memory between
//! requests (a restarted server resumes from the handle alone), at the cost
//! of re-reading and re-writing up to one part per append: clients that
//! send chunks of `PART_SIZE` or more (tus-js-client's and tuspy's defaults
//! send the whole file in one request) pay nothing extra. An append holds at
//! most one part in memory and uploads its parts one after another.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use crate::key::split_prefix;
use crate::resumable::{BackendState, StagedTail, StoredPart};
use crate::{
    validate_key, Appended, ByteRange, ByteStream, GetObject, ObjectMeta, PutOptions, Result,
    ResumableUpload, StorageError, Store,
};

const BACKEND: &str = "s3";
/// Multipart part size. S3 needs parts of at least 5 MiB (except the last) and
/// at most 10 000 of them, so objects up to 80 GiB fit.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded concurrently; bounds upload memory to about
/// `(PARTS_IN_FLIGHT + 1) * PART_SIZE`.
const PARTS_IN_FLIGHT: usize = 4;
const MAX_PARTS: i32 = 10_000;

/// Where and how to reach an S3-compatible bucket.
#[derive(Clone)]
pub struct S3Config {
    /// Service URL, e.g. `http://127.0.0.1:3900`; `None` means AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `https://host/bucket/key` instead of `https://bucket.host/key`; MinIO and
    /// Garage usually need it, Alibaba OSS refuses it.
    pub path_style: bool,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret must never reach logs.
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("path_style", &self.path_style)
            .finish()
    }
}

/// A bucket on an S3-compatible service.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// For error messages: which service a failure came from.
    endpoint: String,
}

impl S3Store {
    /// Completes a multipart upload; returns the object's ETag.
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<Option<String>> {
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.map_err("CompleteMultipartUpload", key, e))?;
        Ok(out.e_tag().map(str::to_owned))
    }

    /// Builds the client; no request is made (use [`Store::check`] for that).
    pub fn new(config: S3Config) -> Result<Self> {
        for (field, value) in [
            ("region", &config.region),
            ("bucket", &config.bucket),
            ("access_key_id", &config.access_key_id),
            ("secret_access_key", &config.secret_access_key),
        ] {
            if value.trim().is_empty() {
                return Err(backend(format!(
                    "S3 configuration field `{field}` is empty"
                )));
            }
        }
        let credentials = Credentials::new(
            config.access_key_id,
            config.secret_access_key,
            None,
            None,
            "lectern-static",
        );
        let mut builder = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region))
            .credentials_provider(credentials)
            .force_path_style(config.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(S3Store {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket,
            endpoint: config.endpoint.unwrap_or_else(|| "AWS".to_owned()),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Turns an SDK failure into a [`StorageError`], keeping the service's
    /// error code and message for anything that is not a plain "missing".
    fn map_err<E>(&self, op: &str, key: &str, err: SdkError<E>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code();
        // HEAD has no body, so a missing key shows only as a bare 404; a missing
        // bucket is a configuration problem, not a missing object.
        if code == Some("NoSuchKey") || (status == Some(404) && code != Some("NoSuchBucket")) {
            return StorageError::NotFound {
                key: key.to_owned(),
            };
        }
        let hint = match (code, status) {
            (Some("NoSuchBucket"), _) => "; create the bucket or fix the bucket setting",
            (Some("InvalidAccessKeyId" | "SignatureDoesNotMatch"), _) | (_, Some(403)) => {
                "; check the access key, secret and region, and that the key may use this bucket"
            }
            (None, None) => "; is the S3 endpoint reachable?",
            _ => "",
        };
        backend(format!(
            "{op} `{key}` in bucket `{}` at {} failed (code {}, HTTP {}): {}{hint}",
            self.bucket,
            self.endpoint,
            code.unwrap_or("none"),
            status.map_or("none".to_owned(), |s| s.to_string()),
            DisplayErrorContext(&err),
        ))
    }

    /// The error for a range the service refused; its size comes from a HEAD
    /// because 416 responses do not reliably carry it.
    async fn unsatisfiable(&self, key: &str) -> StorageError {
        match self.head(key).await {
            Ok(meta) => StorageError::RangeNotSatisfiable { size: meta.size },
            Err(e) => e,
        }
    }

    async fn put_single(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<ObjectMeta> {
        let size = body.len() as u64;
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_content_type(opts.content_type.clone())
            .set_cache_control(opts.cache_control.clone())
            .body(body.into())
            .send()
            .await
            .map_err(|e| self.map_err("PutObject", key, e))?;
        Ok(written_meta(key, size, out.e_tag(), opts))
    }

    /// Uploads the parts of the multipart upload `upload_id`: `first`, then
    /// those cut from `rest`. Returns the object size and the parts in order.
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        first: Bytes,
        rest: PartSource,
    ) -> Result<(u64, Vec<CompletedPart>)> {
        let uploaded: Vec<(u64, CompletedPart)> = futures::stream::once(async { Ok(first) })
            .chain(rest.into_parts())
            .zip(futures::stream::iter(1..))
            .map(|(part, number): (Result<Bytes>, i32)| async move {
                let part = part?;
                if number > MAX_PARTS {
                    return Err(backend(format!(
                        "`{key}` is larger than {MAX_PARTS} parts of {PART_SIZE} bytes, \
                         the most one S3 multipart upload can hold"
                    )));
                }
                let size = part.len() as u64;
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(part.into())
                    .send()
                    .await
                    .map_err(|e| self.map_err("UploadPart", key, e))?;
                let part = CompletedPart::builder()
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .part_number(number)
                    .build();
                Ok((size, part))
            })
            .buffer_unordered(PARTS_IN_FLIGHT)
            .try_collect()
            .await?;
        let size = uploaded.iter().map(|(size, _)| size).sum();
        let mut parts: Vec<CompletedPart> = uploaded.into_iter().map(|(_, part)| part).collect();
        // buffer_unordered finishes parts in any order; S3 wants them ascending.
        parts.sort_by_key(|p| p.part_number());
        Ok((size, parts))
    }

    async fn put_multipart(
        &self,
        key: &str,
        first: Bytes,
        rest: PartSource,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_content_type(opts.content_type.clone())
            .set_cache_control(opts.cache_control.clone())
            .send()
            .await
            .map_err(|e| self.map_err("CreateMultipartUpload", key, e))?;
        let upload_id = created.upload_id().ok_or_else(|| {
            backend(format!(
                "CreateMultipartUpload `{key}` at {} returned no upload id",
                self.endpoint
            ))
        })?;
        let result = async {
            let (size, parts) = self.upload_parts(key, upload_id, first, rest).await?;
            let etag = self.complete_multipart(key, upload_id, parts).await?;
            Ok(written_meta(key, size, etag.as_deref(), opts))
        }
        .await;
        if result.is_err() {
            // Parts of an unfinished upload are stored (and billed) until aborted.
            if let Err(abort) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await
            {
                tracing::warn!(
                    key,
                    upload_id,
                    error = %DisplayErrorContext(&abort),
                    "could not abort a failed multipart upload; its parts stay in the bucket \
                     until a lifecycle rule removes them"
                );
            }
        }
        result
    }
}

/// The S3 bookkeeping of a resumable upload handle, owned and mutable.
struct MultipartProgress {
    multipart_id: Option<String>,
    parts: Vec<StoredPart>,
    tail: Option<StagedTail>,
    token: String,
}

impl MultipartProgress {
    fn of(upload: &ResumableUpload) -> Result<Self> {
        match &upload.backend {
            BackendState::S3 {
                multipart_id,
                parts,
                tail,
                token,
            } => Ok(MultipartProgress {
                multipart_id: multipart_id.clone(),
                parts: parts.clone(),
                tail: tail.clone(),
                token: token.clone(),
            }),
            BackendState::Fs { .. } => Err(backend(
                "resumable upload handle belongs to the fs backend, not s3".to_owned(),
            )),
        }
    }

    fn into_state(self) -> BackendState {
        BackendState::S3 {
            multipart_id: self.multipart_id,
            parts: self.parts,
            tail: self.tail,
            token: self.token,
        }
    }

    /// Where this upload's staged tails live; under the key's own name so
    /// whoever cleans a prefix cleans them too.
    fn staging_prefix(&self, key: &str) -> String {
        format!("{key}.upload-{}/", self.token)
    }
}

impl S3Store {
    /// Uploads one part of a resumable upload, creating its multipart upload
    /// on first use.
    async fn upload_resumable_part(
        &self,
        upload: &ResumableUpload,
        progress: &mut MultipartProgress,
        part: Bytes,
    ) -> Result<()> {
        let key = upload.key.as_str();
        let number = i32::try_from(progress.parts.len() + 1).unwrap_or(i32::MAX);
        if number > MAX_PARTS {
            return Err(backend(format!(
                "`{key}` is larger than {MAX_PARTS} parts of {PART_SIZE} bytes, \
                 the most one S3 multipart upload can hold"
            )));
        }
        let multipart_id = match &progress.multipart_id {
            Some(id) => id.clone(),
            None => {
                let opts = upload.opts();
                let created = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .set_content_type(opts.content_type)
                    .set_cache_control(opts.cache_control)
                    .send()
                    .await
                    .map_err(|e| self.map_err("CreateMultipartUpload", key, e))?;
                let id = created.upload_id().map(str::to_owned).ok_or_else(|| {
                    backend(format!(
                        "CreateMultipartUpload `{key}` at {} returned no upload id",
                        self.endpoint
                    ))
                })?;
                progress.multipart_id = Some(id.clone());
                id
            }
        };
        let size = part.len() as u64;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&multipart_id)
            .part_number(number)
            .body(part.into())
            .send()
            .await
            .map_err(|e| self.map_err("UploadPart", key, e))?;
        progress.parts.push(StoredPart {
            number,
            etag: out.e_tag().unwrap_or_default().to_owned(),
            size,
        });
        Ok(())
    }

    async fn read_tail(&self, tail: &Option<StagedTail>) -> Result<BytesMut> {
        let mut buffer = BytesMut::with_capacity(PART_SIZE);
        if let Some(tail) = tail {
            buffer.extend_from_slice(&self.get(&tail.key, None).await?.bytes().await?);
            if buffer.len() as u64 != tail.size {
                return Err(backend(format!(
                    "staged upload tail `{}` is {} bytes, expected {}",
                    tail.key,
                    buffer.len(),
                    tail.size
                )));
            }
        }
        Ok(buffer)
    }

    async fn publish_resumable(&self, upload: &ResumableUpload) -> Result<ObjectMeta> {
        let key = upload.key.as_str();
        let mut progress = MultipartProgress::of(upload)?;
        let tail = self.read_tail(&progress.tail).await?.freeze();
        let Some(multipart_id) = progress.multipart_id.clone() else {
            return self.put_single(key, tail, upload.opts()).await;
        };
        if !tail.is_empty() {
            // The last part may be shorter than 5 MiB.
            self.upload_resumable_part(upload, &mut progress, tail)
                .await?;
        }
        let parts = progress
            .parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .e_tag(&p.etag)
                    .part_number(p.number)
                    .build()
            })
            .collect();
        let etag = self.complete_multipart(key, &multipart_id, parts).await?;
        Ok(written_meta(
            key,
            upload.size,
            etag.as_deref(),
            upload.opts(),
        ))
    }

    /// Removes a resumable upload's staged tails and every unfinished
    /// multipart upload for its key, including ones left by appends whose
    /// handles the caller rejected. Best effort: leftovers only cost space.
    async fn sweep_resumable(&self, upload: &ResumableUpload, progress: &MultipartProgress) {
        let key = upload.key.as_str();
        match self.list(&progress.staging_prefix(key)).await {
            Ok(staged) => {
                for object in staged {
                    if let Err(e) = self.delete(&object.key).await {
                        tracing::warn!(key = object.key, error = %e, "cannot delete a staged upload tail");
                    }
                }
            }
            Err(e) => tracing::warn!(key, error = %e, "cannot list staged upload tails"),
        }
        let unfinished = match self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(key, error = %DisplayErrorContext(&e), "cannot list unfinished multipart uploads");
                return;
            }
        };
        for stray in unfinished.uploads() {
            let (Some(stray_key), Some(id)) = (stray.key(), stray.upload_id()) else {
                continue;
            };
            if stray_key != key {
                continue;
            }
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(id)
                .send()
                .await
            {
                tracing::warn!(key, error = %DisplayErrorContext(&e), "cannot abort an unfinished multipart upload");
            }
        }
    }
}

/// What is left of an upload body after the first part was cut from it.
struct PartSource {
    body: ByteStream,
    buffered: BytesMut,
    /// The body already returned its end, so it must not be polled again.
    ended: bool,
}

impl PartSource {
    /// Reads from the body until a whole part is buffered or the body ends.
    async fn fill(&mut self) -> Result<()> {
        while !self.ended && self.buffered.len() < PART_SIZE {
            match self.body.next().await {
                Some(chunk) => self.buffered.extend_from_slice(&chunk?),
                None => self.ended = true,
            }
        }
        Ok(())
    }

    fn take_part(&mut self) -> Bytes {
        let len = self.buffered.len().min(PART_SIZE);
        self.buffered.split_to(len).freeze()
    }

    /// The remaining parts, each `PART_SIZE` bytes except the last.
    fn into_parts(self) -> impl futures::Stream<Item = Result<Bytes>> + Send {
        futures::stream::try_unfold(self, |mut source| async move {
            source.fill().await?;
            if source.buffered.is_empty() {
                return Ok(None);
            }
            let part = source.take_part();
            Ok(Some((part, source)))
        })
    }
}

#[async_trait]
impl Store for S3Store {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> Result<ObjectMeta> {
        validate_key(key)?;
        let mut source = PartSource {
            body,
            buffered: BytesMut::new(),
            ended: false,
        };
        source.fill().await?;
        let first = source.take_part();
        if source.ended && source.buffered.is_empty() {
            return self.put_single(key, first, opts).await;
        }
        self.put_multipart(key, first, source, opts).await
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetObject> {
        validate_key(key)?;
        if range.is_some_and(ByteRange::never_satisfiable) {
            return Err(self.unsatisfiable(key).await);
        }
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range.map(ByteRange::http_header))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if is_range_refusal(&e) => return Err(self.unsatisfiable(key).await),
            Err(e) => return Err(self.map_err("GetObject", key, e)),
        };
        let (returned, size) = match out.content_range().and_then(parse_content_range) {
            Some((returned, size)) => (returned, size),
            None => {
                // A 200 with the whole object: either no range was asked for, or
                // the service decided the range covers everything (or nothing).
                let size = non_negative(out.content_length());
                let returned = match range {
                    Some(r) => r.resolve(size)?,
                    None => 0..size,
                };
                if returned != (0..size) {
                    return Err(backend(format!(
                        "GetObject `{key}` at {} ignored the Range header and sent the \
                         whole object; this service does not support ranged reads",
                        self.endpoint
                    )));
                }
                (returned, size)
            }
        };
        let meta = ObjectMeta {
            key: key.to_owned(),
            size,
            etag: unquote(out.e_tag()),
            content_type: out.content_type().map(str::to_owned),
            cache_control: out.cache_control().map(str::to_owned),
            last_modified: to_chrono(out.last_modified()),
        };
        let body: ByteStream = Box::pin(futures::stream::unfold(out.body, |mut body| async {
            let chunk = body.next().await?;
            Some((chunk.map_err(std::io::Error::from), body))
        }));
        Ok(GetObject {
            meta,
            range: returned,
            body,
        })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        validate_key(key)?;
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.map_err("HeadObject", key, e))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: non_negative(out.content_length()),
            etag: unquote(out.e_tag()),
            content_type: out.content_type().map(str::to_owned),
            cache_control: out.cache_control().map(str::to_owned),
            last_modified: to_chrono(out.last_modified()),
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.map_err("DeleteObject", key, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // Same refusals as the fs backend, so a prefix valid on one is valid on both.
        split_prefix(prefix)?;
        let mut found = Vec::new();
        let mut continuation = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(continuation.take())
                .send()
                .await
                .map_err(|e| self.map_err("ListObjectsV2 prefix", prefix, e))?;
            found.extend(out.contents().iter().filter_map(|obj| {
                Some(ObjectMeta {
                    key: obj.key()?.to_owned(),
                    size: non_negative(obj.size()),
                    etag: unquote(obj.e_tag()),
                    content_type: None,
                    cache_control: None,
                    last_modified: to_chrono(obj.last_modified()),
                })
            }));
            // Pages hold at most 1000 keys; follow the token until the last one.
            match out.next_continuation_token() {
                Some(token) if out.is_truncated() == Some(true) => {
                    continuation = Some(token.to_owned())
                }
                _ => break,
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn presign_get(&self, key: &str, expires: Duration) -> Result<Option<String>> {
        validate_key(key)?;
        let config = PresigningConfig::expires_in(expires).map_err(|e| {
            backend(format!(
                "cannot presign `{key}` for {expires:?}: {e} (S3 allows at most 7 days)"
            ))
        })?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| self.map_err("presign GetObject", key, e))?;
        Ok(Some(request.uri().to_owned()))
    }

    async fn begin_upload(&self, key: &str, opts: PutOptions) -> Result<ResumableUpload> {
        validate_key(key)?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        // The staging keys must be valid too; check once, up front.
        validate_key(&format!(
            "{key}.upload-{token}/{}",
            uuid::Uuid::nil().simple()
        ))?;
        Ok(ResumableUpload {
            key: key.to_owned(),
            size: 0,
            content_type: opts.content_type,
            cache_control: opts.cache_control,
            backend: BackendState::S3 {
                multipart_id: None,
                parts: Vec::new(),
                tail: None,
                token,
            },
        })
    }

    async fn append_upload(
        &self,
        upload: &ResumableUpload,
        mut body: ByteStream,
    ) -> Result<Appended> {
        validate_key(&upload.key)?;
        let mut progress = MultipartProgress::of(upload)?;
        let mut buffer = self.read_tail(&progress.tail).await?;
        let mut received = 0u64;
        let mut interrupted = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    received += chunk.len() as u64;
                    buffer.extend_from_slice(&chunk);
                    while buffer.len() >= PART_SIZE {
                        let part = buffer.split_to(PART_SIZE).freeze();
                        self.upload_resumable_part(upload, &mut progress, part)
                            .await?;
                    }
                }
                Err(e) => {
                    interrupted = Some(e);
                    break;
                }
            }
        }
        if received > 0 {
            // A new key every time: the old tail stays readable for the old
            // handle in case the caller rejects this append.
            progress.tail = if buffer.is_empty() {
                None
            } else {
                let key = format!(
                    "{}{}",
                    progress.staging_prefix(&upload.key),
                    uuid::Uuid::new_v4().simple()
                );
                let size = buffer.len() as u64;
                self.put_single(&key, buffer.freeze(), PutOptions::default())
                    .await?;
                Some(StagedTail { key, size })
            };
        }
        let mut next = upload.clone();
        next.size += received;
        next.backend = progress.into_state();
        Ok(Appended {
            upload: next,
            interrupted,
        })
    }

    async fn complete_upload(&self, upload: &ResumableUpload) -> Result<ObjectMeta> {
        validate_key(&upload.key)?;
        let progress = MultipartProgress::of(upload)?;
        let meta = match self.publish_resumable(upload).await {
            Ok(meta) => meta,
            // A retry after a success finds the multipart upload or the
            // staged tail gone; the object itself is the proof of success.
            Err(e) => match self.head(&upload.key).await {
                Ok(meta) if meta.size == upload.size => meta,
                _ => return Err(e),
            },
        };
        self.sweep_resumable(upload, &progress).await;
        Ok(meta)
    }

    async fn abort_upload(&self, upload: &ResumableUpload) -> Result<()> {
        validate_key(&upload.key)?;
        let progress = MultipartProgress::of(upload)?;
        self.sweep_resumable(upload, &progress).await;
        Ok(())
    }

    async fn check(&self) -> Result<()> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => {
                Err(backend(format!(
                    "bucket `{}` does not exist at {}; create it or fix the bucket setting",
                    self.bucket, self.endpoint
                )))
            }
            Err(e) => Err(self.map_err("HeadBucket", "", e)),
        }
    }
}

fn is_range_refusal<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    err.raw_response().map(|r| r.status().as_u16()) == Some(416)
        || err.code() == Some("InvalidRange")
}

/// Parses `bytes start-end/size` into the returned range and the object size.
fn parse_content_range(header: &str) -> Option<(std::ops::Range<u64>, u64)> {
    let (span, size) = header.strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let (start, end, size) = (
        start.parse().ok()?,
        end.parse::<u64>().ok()?,
        size.parse().ok()?,
    );
    Some((start..end + 1, size))
}

/// Meta for an object this process just wrote. The time is local: S3 write
/// responses carry no Last-Modified, and a HEAD could race a later writer.
fn written_meta(key: &str, size: u64, etag: Option<&str>, opts: PutOptions) -> ObjectMeta {
    ObjectMeta {
        key: key.to_owned(),
        size,
        etag: unquote(etag),
        content_type: opts.content_type,
        cache_control: opts.cache_control,
        last_modified: Utc::now(),
    }
}

fn unquote(etag: Option<&str>) -> String {
    etag.unwrap_or_default().trim_matches('"').to_owned()
}

fn non_negative(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

/// Services always send Last-Modified; the epoch marks the impossible case
/// as obviously unknown rather than inventing a plausible time.
fn to_chrono(t: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or(DateTime::UNIX_EPOCH)
}

fn backend(message: String) -> StorageError {
    StorageError::Backend {
        backend: BACKEND,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        assert_eq!(parse_content_range("bytes 0-99/1000"), Some((0..100, 1000)));
        assert_eq!(
            parse_content_range("bytes 900-999/1000"),
            Some((900..1000, 1000))
        );
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(parse_content_range("bytes 0-99/*"), None);
    }

    #[test]
    fn config_debug_hides_the_secret() {
        let config = S3Config {
            endpoint: None,
            region: "garage".into(),
            bucket: "b".into(),
            access_key_id: "GK1".into(),
            secret_access_key: "very-secret".into(),
            path_style: true,
        };
        assert!(!format!("{config:?}").contains("very-secret"));
    }
}
