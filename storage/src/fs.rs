//! The local-disk backend, Lectern's embedded default: each object is one file
//! under a root directory.
//!
//! Layout:
//! ```text
//! <root>/objects/<key>      object bytes, then a metadata trailer
//! <root>/tmp/<uuid>.part    writes in flight; renamed into objects/ when whole
//! <root>/uploads/<uuid>     resumable uploads: an append file, published by
//!                           adding the trailer and renaming it into objects/
//! ```
//!
//! Resumable uploads live outside `tmp/` because they may legitimately sit
//! idle longer than the day after which stale temp files are removed; their
//! owner (ingest) expires and aborts them.
//!
//! **Metadata lives in a trailer inside the object file, not in a sidecar.**
//! Each file is `content ‖ JSON {size, etag, content_type, cache_control} ‖
//! JSON length (u32 LE) ‖ "LCTNOBJ1"`. A sidecar would need two renames per
//! write, and two concurrent writers (the `serve` and `worker` processes share
//! a root) can interleave them so that writer A's data ends up paired with
//! writer B's metadata for good; preventing that needs cross-process locks.
//! With the trailer, one `rename(2)` publishes content and metadata together,
//! so a reader always sees one whole object, old or new, and a crash leaves at
//! worst a stray file in `tmp/` (removed at the next open once it is a day
//! old). The cost is that files under `objects/` are not plain copies of the
//! objects; [`Store::get`] strips the trailer.
//!
//! Keys pass [`validate_key`] and are joined segment by segment under
//! `objects/`, so they cannot name anything outside it; symlinks are never
//! followed out of the root either (canonical paths are checked before use).
//! On disk a key cannot be both an object and a prefix of another object
//! (`a` and `a/b`): the second write fails with a message saying so.
//! Deleting an object removes directories it leaves empty, so such a
//! conflict disappears with the object.
//!
//! Reads: an object up to `READ_WHOLE_MAX` (4 MiB: every HLS segment and
//! playlist) is read whole in the one blocking call that opens it and
//! handed out as a single chunk, because a blocking-pool hop per 64 KiB
//! chunk cost the origin more than the read itself; larger objects stream
//! in `STREAM_CHUNK`s.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::key::split_prefix;
use crate::resumable::BackendState;
use crate::{
    validate_key, Appended, ByteRange, ByteStream, GetObject, ObjectMeta, PutOptions, Result,
    ResumableUpload, StorageError, Store, STREAM_CHUNK,
};

const BACKEND: &str = "fs";
const MAGIC: &[u8; 8] = b"LCTNOBJ1";
/// JSON length (u32) plus magic.
const FOOTER_LEN: u64 = 4 + MAGIC.len() as u64;
/// Temp files older than this at start-up belong to writes that died.
const STALE_TMP_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Objects (with their trailer) up to this size are read whole in the one
/// blocking call that opens them, and handed out as a single chunk: HLS
/// segments and playlists are this small, and a hop to the blocking pool
/// per 64 KiB chunk costs more than the read itself. Larger objects stream.
const READ_WHOLE_MAX: u64 = 4 * 1024 * 1024;

/// Objects as files under a root directory. Cheap to clone behind an `Arc`.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    /// Canonical `<root>/objects`; every path used must stay under it.
    objects: PathBuf,
    /// `<root>/tmp`, on the same filesystem as `objects` so rename is atomic.
    tmp: PathBuf,
    /// `<root>/uploads`, append files of resumable uploads; same filesystem.
    uploads: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Trailer {
    size: u64,
    etag: String,
    content_type: Option<String>,
    cache_control: Option<String>,
}

impl FsStore {
    /// Opens (creating if needed) a store rooted at `root`, and clears temp
    /// files left behind by writes that crashed.
    pub async fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        blocking(move || {
            let objects = root.join("objects");
            let tmp = root.join("tmp");
            let uploads = root.join("uploads");
            for dir in [&objects, &tmp, &uploads] {
                std::fs::create_dir_all(dir).map_err(|e| {
                    backend(format!(
                        "cannot create storage directory {}: {e}; check that the fs \
                         storage root exists and is writable by this user",
                        dir.display()
                    ))
                })?;
            }
            let objects = std::fs::canonicalize(&objects)?;
            let tmp = std::fs::canonicalize(&tmp)?;
            let uploads = std::fs::canonicalize(&uploads)?;
            remove_stale_tmp(&tmp);
            Ok(FsStore {
                root,
                objects,
                tmp,
                uploads,
            })
        })
        .await
    }

    /// The directory this store was opened on.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn object_path(&self, key: &str) -> PathBuf {
        // Join segment by segment: the key is validated, and this keeps the
        // path built from nothing but validated segments.
        key.split('/').fold(self.objects.clone(), |p, s| p.join(s))
    }

    /// Writes the stream to a new temp file, hashing as it goes; returns the
    /// still-open file with the content written.
    async fn write_content(
        &self,
        tmp_path: &Path,
        mut body: ByteStream,
    ) -> Result<(File, u64, String)> {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp_path)
            .await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok((file.into_std().await, size, hex::encode(hasher.finalize())))
    }

    /// The append file of an fs upload handle, refusing handles of other
    /// backends and names that are not ours (the handle comes from a database
    /// row, so it is checked like any other input).
    fn upload_path(&self, upload: &ResumableUpload) -> Result<PathBuf> {
        match &upload.backend {
            BackendState::Fs { file } if uuid::Uuid::parse_str(file).is_ok() => {
                Ok(self.uploads.join(file))
            }
            BackendState::Fs { file } => Err(backend(format!(
                "resumable upload handle names `{file}`, which is not an upload file"
            ))),
            BackendState::S3 { .. } => Err(backend(
                "resumable upload handle belongs to the s3 backend, not fs".to_owned(),
            )),
        }
    }
}

#[async_trait]
impl Store for FsStore {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    async fn put(&self, key: &str, body: ByteStream, opts: PutOptions) -> Result<ObjectMeta> {
        validate_key(key)?;
        let tmp_path = self.tmp.join(format!("{}.part", uuid::Uuid::new_v4()));
        let written = match self.write_content(&tmp_path, body).await {
            Ok(w) => w,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp_path).await;
                return Err(e);
            }
        };
        let store = self.clone();
        let key = key.to_owned();
        blocking(move || {
            let (file, size, etag) = written;
            let result = store.publish(&key, &tmp_path, file, size, etag, opts);
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp_path);
            }
            result
        })
        .await
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<GetObject> {
        validate_key(key)?;
        let store = self.clone();
        let key = key.to_owned();
        let (opened, meta, range) = blocking(move || {
            let (opened, meta) = store.open_for_read(&key)?;
            let range = match range {
                Some(r) => r.resolve(meta.size)?,
                None => 0..meta.size,
            };
            Ok(match opened {
                Opened::Read(all) => {
                    let part = all.slice(range.start as usize..range.end as usize);
                    (Opened::Read(part), meta, range)
                }
                Opened::File(mut file) => {
                    file.seek(SeekFrom::Start(range.start))?;
                    (Opened::File(file), meta, range)
                }
            })
        })
        .await?;
        let body: ByteStream = match opened {
            Opened::Read(bytes) => Box::pin(futures::stream::once(async move { Ok(bytes) })),
            Opened::File(file) => {
                let content = tokio::fs::File::from_std(file).take(range.end - range.start);
                Box::pin(tokio_util::io::ReaderStream::with_capacity(
                    content,
                    STREAM_CHUNK,
                ))
            }
        };
        Ok(GetObject { meta, range, body })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        validate_key(key)?;
        let store = self.clone();
        let key = key.to_owned();
        blocking(move || store.open_object(&key).map(|(_, meta)| meta)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        let store = self.clone();
        let key = key.to_owned();
        blocking(move || store.delete_blocking(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let (dir, _) = split_prefix(prefix)?;
        let start = if dir.is_empty() {
            self.objects.clone()
        } else {
            self.object_path(dir)
        };
        let start_key = dir.to_owned();
        let prefix = prefix.to_owned();
        let store = self.clone();
        blocking(move || store.list_blocking(start, start_key, &prefix)).await
    }

    async fn presign_get(&self, key: &str, _expires: Duration) -> Result<Option<String>> {
        validate_key(key)?;
        Ok(None)
    }

    async fn begin_upload(&self, key: &str, opts: PutOptions) -> Result<ResumableUpload> {
        validate_key(key)?;
        let file = uuid::Uuid::new_v4().to_string();
        tokio::fs::File::create_new(self.uploads.join(&file)).await?;
        Ok(ResumableUpload {
            key: key.to_owned(),
            size: 0,
            content_type: opts.content_type,
            cache_control: opts.cache_control,
            backend: BackendState::Fs { file },
        })
    }

    async fn append_upload(
        &self,
        upload: &ResumableUpload,
        mut body: ByteStream,
    ) -> Result<Appended> {
        let path = self.upload_path(upload)?;
        let mut file = match tokio::fs::OpenOptions::new().write(true).open(&path).await {
            Ok(f) => f,
            Err(e) if is_missing(&e) => return Err(upload_gone(upload)),
            Err(e) => return Err(e.into()),
        };
        // Bytes past the handle's size belong to an append its caller
        // rejected; they are overwritten, never kept.
        file.set_len(upload.size).await?;
        file.seek(SeekFrom::Start(upload.size)).await?;
        let mut received = 0u64;
        let mut interrupted = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) => {
                    file.write_all(&chunk).await?;
                    received += chunk.len() as u64;
                }
                Err(e) => {
                    interrupted = Some(e);
                    break;
                }
            }
        }
        file.flush().await?;
        // The caller acknowledges this offset to the client: it must survive a crash.
        file.sync_data().await?;
        let mut upload = upload.clone();
        upload.size += received;
        Ok(Appended {
            upload,
            interrupted,
        })
    }

    async fn complete_upload(&self, upload: &ResumableUpload) -> Result<ObjectMeta> {
        validate_key(&upload.key)?;
        let path = self.upload_path(upload)?;
        let store = self.clone();
        let upload = upload.clone();
        blocking(move || {
            let mut file = match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
            {
                Ok(f) => f,
                // Already published by an earlier call that succeeded.
                Err(e) if is_missing(&e) => return store.already_completed(&upload),
                Err(e) => return Err(e.into()),
            };
            file.set_len(upload.size)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; STREAM_CHUNK];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            let etag = hex::encode(hasher.finalize());
            store.publish(&upload.key, &path, file, upload.size, etag, upload.opts())
        })
        .await
    }

    async fn abort_upload(&self, upload: &ResumableUpload) -> Result<()> {
        let path = self.upload_path(upload)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if is_missing(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn check(&self) -> Result<()> {
        let store = self.clone();
        blocking(move || {
            if !store.objects.is_dir() {
                return Err(backend(format!(
                    "storage directory {} is missing; was the fs storage root removed?",
                    store.objects.display()
                )));
            }
            let probe = store.tmp.join(format!("{}.probe", uuid::Uuid::new_v4()));
            std::fs::File::create_new(&probe)
                .and_then(|mut f| f.write_all(b"ok"))
                .and_then(|()| std::fs::remove_file(&probe))
                .map_err(|e| {
                    backend(format!(
                        "storage directory {} is not writable: {e}",
                        store.tmp.display()
                    ))
                })
        })
        .await
    }
}

/// Blocking halves of the operations, run on tokio's blocking pool: a listing
/// or a publish is many small syscalls, cheaper in one blocking task than as
/// one async hop each.
impl FsStore {
    fn publish(
        &self,
        key: &str,
        tmp_path: &Path,
        mut file: File,
        size: u64,
        etag: String,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        let trailer = Trailer {
            size,
            etag,
            content_type: opts.content_type,
            cache_control: opts.cache_control,
        };
        let json = serde_json::to_vec(&trailer)
            .map_err(|e| backend(format!("cannot encode object metadata: {e}")))?;
        let json_len = u32::try_from(json.len()).map_err(|_| {
            backend("content type and cache control are too long to store".to_owned())
        })?;
        file.write_all(&json)?;
        file.write_all(&json_len.to_le_bytes())?;
        file.write_all(MAGIC)?;
        // Durable before visible: after the rename the object must survive a crash.
        file.sync_all()?;
        let last_modified = file.metadata()?.modified()?;
        drop(file);

        let target = self.object_path(key);
        // Deleting a sibling prunes empty directories, which can race with
        // creating them here; retrying closes that window.
        let mut attempts = 0;
        let parent = loop {
            attempts += 1;
            let parent = self.create_parent(key, &target)?;
            let name = target
                .file_name()
                .expect("validated keys have a last segment");
            match std::fs::rename(tmp_path, parent.join(name)) {
                Ok(()) => break parent,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 3 => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::IsADirectory | std::io::ErrorKind::DirectoryNotEmpty
                    ) =>
                {
                    return Err(backend(format!(
                        "cannot store `{key}`: other objects exist under `{key}/`, and on the \
                         fs backend a key cannot also be a prefix of other keys"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        };
        File::open(&parent)?.sync_all()?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            etag: trailer.etag,
            content_type: trailer.content_type,
            cache_control: trailer.cache_control,
            last_modified: DateTime::<Utc>::from(last_modified),
        })
    }

    /// Creates the directories above `target` and proves they resolve inside
    /// the root, returning the canonical parent.
    fn create_parent(&self, key: &str, target: &Path) -> Result<PathBuf> {
        let parent = target.parent().expect("object paths are below the root");
        std::fs::create_dir_all(parent).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotADirectory | std::io::ErrorKind::AlreadyExists => {
                backend(format!(
                    "cannot store `{key}`: a leading part of it is already an object, and on \
                     the fs backend a key cannot also be a prefix of other keys ({e})"
                ))
            }
            _ => e.into(),
        })?;
        self.contained(std::fs::canonicalize(parent)?)
    }

    fn contained(&self, canonical: PathBuf) -> Result<PathBuf> {
        if canonical.starts_with(&self.objects) {
            Ok(canonical)
        } else {
            Err(backend(format!(
                "refusing to follow a symlink out of the storage root {} (to {})",
                self.objects.display(),
                canonical.display()
            )))
        }
    }

    /// Opens an object for [`Store::get`]: small objects come back read
    /// whole (one `read`, trailer parsed from memory), others as the file.
    fn open_for_read(&self, key: &str) -> Result<(Opened, ObjectMeta)> {
        let (mut file, stat, canonical) = self.open_file(key)?;
        if stat.len() > READ_WHOLE_MAX {
            let (file, meta) = self.object_meta(key, file, &stat, &canonical)?;
            return Ok((Opened::File(file), meta));
        }
        // Not `vec![0; len]`: zeroing a buffer the read overwrites showed
        // up as a tenth of the origin's CPU in benchmarks/origin.
        let mut all = Vec::with_capacity(stat.len() as usize);
        (&mut file).take(stat.len()).read_to_end(&mut all)?;
        let trailer = trailer_in(&all).map_err(|reason| unreadable(&canonical, &reason))?;
        all.truncate(trailer.size as usize);
        let meta = ObjectMeta {
            key: key.to_owned(),
            size: trailer.size,
            etag: trailer.etag,
            content_type: trailer.content_type,
            cache_control: trailer.cache_control,
            last_modified: DateTime::<Utc>::from(stat.modified()?),
        };
        Ok((Opened::Read(bytes::Bytes::from(all)), meta))
    }

    /// Opens an object and reads its trailer; the file is left positioned anywhere.
    fn open_object(&self, key: &str) -> Result<(File, ObjectMeta)> {
        let (file, stat, canonical) = self.open_file(key)?;
        self.object_meta(key, file, &stat, &canonical)
    }

    fn object_meta(
        &self,
        key: &str,
        mut file: File,
        stat: &std::fs::Metadata,
        canonical: &Path,
    ) -> Result<(File, ObjectMeta)> {
        let trailer =
            read_trailer(&mut file, stat.len()).map_err(|reason| unreadable(canonical, &reason))?;
        let meta = ObjectMeta {
            key: key.to_owned(),
            size: trailer.size,
            etag: trailer.etag,
            content_type: trailer.content_type,
            cache_control: trailer.cache_control,
            last_modified: DateTime::<Utc>::from(stat.modified()?),
        };
        Ok((file, meta))
    }

    /// The object's file, opened, with its metadata and canonical path.
    fn open_file(&self, key: &str) -> Result<(File, std::fs::Metadata, PathBuf)> {
        let not_found = || StorageError::NotFound {
            key: key.to_owned(),
        };
        let canonical = match std::fs::canonicalize(self.object_path(key)) {
            Ok(p) => self.contained(p)?,
            Err(e) if is_missing(&e) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        let file = match File::open(&canonical) {
            Ok(f) => f,
            Err(e) if is_missing(&e) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        let stat = file.metadata()?;
        if !stat.is_file() {
            // A directory here is a prefix of other keys, not an object.
            return Err(not_found());
        }
        Ok((file, stat, canonical))
    }

    /// The answer to completing a handle whose append file is gone: fine if
    /// the object it became is there, whole.
    fn already_completed(&self, upload: &ResumableUpload) -> Result<ObjectMeta> {
        match self.open_object(&upload.key) {
            Ok((_, meta)) if meta.size == upload.size => Ok(meta),
            Ok(_) | Err(StorageError::NotFound { .. }) => Err(upload_gone(upload)),
            Err(e) => Err(e),
        }
    }

    fn delete_blocking(&self, key: &str) -> Result<()> {
        let path = self.object_path(key);
        let parent = path.parent().expect("object paths are below the root");
        let parent = match std::fs::canonicalize(parent) {
            Ok(p) => self.contained(p)?,
            Err(e) if is_missing(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let name = path
            .file_name()
            .expect("validated keys have a last segment");
        match std::fs::remove_file(parent.join(name)) {
            Ok(()) => {}
            // Missing, or a directory (a prefix, not an object): nothing to delete.
            Err(e) if is_missing(&e) || e.kind() == std::io::ErrorKind::IsADirectory => {
                return Ok(())
            }
            Err(e) => return Err(e.into()),
        }
        // Prune directories this delete emptied; stop at the first non-empty one.
        let mut dir = parent.as_path();
        while dir != self.objects && std::fs::remove_dir(dir).is_ok() {
            dir = dir.parent().expect("below the root");
        }
        Ok(())
    }

    fn list_blocking(
        &self,
        start: PathBuf,
        start_key: String,
        prefix: &str,
    ) -> Result<Vec<ObjectMeta>> {
        let mut found = Vec::new();
        let mut pending = vec![(start, start_key)];
        while let Some((dir, dir_key)) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            for entry in entries {
                let entry = entry?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    tracing::warn!(path = %entry.path().display(), "skipping non-UTF-8 name under the storage root");
                    continue;
                };
                let key = if dir_key.is_empty() {
                    name
                } else {
                    format!("{dir_key}/{name}")
                };
                // file_type does not follow symlinks, so a link is never listed or descended.
                let file_type = entry.file_type()?;
                if file_type.is_dir() {
                    let as_prefix = format!("{key}/");
                    if as_prefix.starts_with(prefix) || prefix.starts_with(&as_prefix) {
                        pending.push((entry.path(), key));
                    }
                } else if file_type.is_file() && key.starts_with(prefix) {
                    match self.open_object(&key) {
                        Ok((_, mut meta)) => {
                            meta.content_type = None;
                            meta.cache_control = None;
                            found.push(meta);
                        }
                        // Deleted between read_dir and open: it is simply gone.
                        Err(StorageError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }
}

/// Reads and checks the metadata trailer; the error is a reason for a message.
/// What [`FsStore::open_for_read`] found.
enum Opened {
    /// The object's content (or the requested part), read whole.
    Read(bytes::Bytes),
    File(File),
}

fn unreadable(path: &Path, reason: &str) -> StorageError {
    backend(format!(
        "{} is not a readable Lectern object ({reason}); files under the storage \
         root must only be written through Lectern",
        path.display()
    ))
}

/// The trailer of a whole object file held in memory.
fn trailer_in(file: &[u8]) -> std::result::Result<Trailer, String> {
    read_trailer(&mut std::io::Cursor::new(file), file.len() as u64)
}

fn read_trailer(
    file: &mut (impl Read + Seek),
    file_len: u64,
) -> std::result::Result<Trailer, String> {
    if file_len < FOOTER_LEN {
        return Err("file too short for a metadata trailer".to_owned());
    }
    let mut footer = [0u8; FOOTER_LEN as usize];
    file.seek(SeekFrom::Start(file_len - FOOTER_LEN))
        .and_then(|_| file.read_exact(&mut footer))
        .map_err(|e| format!("cannot read trailer: {e}"))?;
    if &footer[4..] != MAGIC {
        return Err("metadata trailer missing".to_owned());
    }
    let json_len = u64::from(u32::from_le_bytes(footer[..4].try_into().expect("4 bytes")));
    let Some(content_len) = file_len.checked_sub(FOOTER_LEN + json_len) else {
        return Err("metadata trailer length is larger than the file".to_owned());
    };
    let mut json = vec![0u8; json_len as usize];
    file.seek(SeekFrom::Start(content_len))
        .and_then(|_| file.read_exact(&mut json))
        .map_err(|e| format!("cannot read trailer: {e}"))?;
    let trailer: Trailer =
        serde_json::from_slice(&json).map_err(|e| format!("metadata trailer is damaged: {e}"))?;
    if trailer.size != content_len {
        return Err(format!(
            "content is {content_len} bytes but the trailer records {}",
            trailer.size
        ));
    }
    Ok(trailer)
}

/// Best effort: a temp file we cannot remove only wastes space.
fn remove_stale_tmp(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|m| now.duration_since(m).unwrap_or_default() > STALE_TMP_AGE);
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn is_missing(e: &std::io::Error) -> bool {
    // NotADirectory: `a/b` where `a` is an object, so `a/b` cannot exist.
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

fn upload_gone(upload: &ResumableUpload) -> StorageError {
    backend(format!(
        "resumable upload for `{}` no longer exists (aborted, or completed into a \
         different object)",
        upload.key
    ))
}

fn backend(message: String) -> StorageError {
    StorageError::Backend {
        backend: BACKEND,
        message,
    }
}

async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => Err(StorageError::Io(std::io::Error::other(join))),
    }
}
