//! The behaviour every [`Store`] backend promises, one function per contract.
//! `fs_contract.rs` and `s3_contract.rs` run each of them against a real
//! backend, so the two cannot drift apart.
//!
//! Every contract works only under the key prefix it is given and removes
//! what it wrote.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use lectern_storage::{ByteRange, ByteStream, ObjectMeta, PutOptions, StorageError, Store};
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;

fn opts(content_type: Option<&str>, cache_control: Option<&str>) -> PutOptions {
    PutOptions {
        content_type: content_type.map(str::to_owned),
        cache_control: cache_control.map(str::to_owned),
    }
}

async fn read_all(
    store: &dyn Store,
    key: &str,
    range: Option<ByteRange>,
) -> (Bytes, ObjectMeta, std::ops::Range<u64>) {
    let got = store
        .get(key, range)
        .await
        .unwrap_or_else(|e| panic!("get {key} {range:?}: {e}"));
    let (meta, returned) = (got.meta.clone(), got.range.clone());
    let body = got.bytes().await.expect("read body");
    (body, meta, returned)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deletes every object under `prefix` with bounded concurrency.
pub async fn remove_all(store: &dyn Store, prefix: &str) {
    let keys: Vec<String> = store
        .list(prefix)
        .await
        .expect("list for cleanup")
        .into_iter()
        .map(|m| m.key)
        .collect();
    futures::stream::iter(keys)
        .map(|key| async move { store.delete(&key).await.map_err(|e| format!("{key}: {e}")) })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .expect("delete during cleanup");
}

/// A large object whose bytes are a pure function of their chunk, so the test
/// can stream it in, and recompute any slice of it, without holding it.
struct Generated {
    base: Vec<u8>,
    chunk: u64,
    size: u64,
}

impl Generated {
    fn new(size: u64) -> Self {
        // An odd chunk size, so chunks never line up with S3 part boundaries.
        let chunk = MIB + 7;
        let mut base = vec![0u8; chunk as usize];
        rand::rngs::StdRng::seed_from_u64(42).fill(&mut base[..]);
        Generated { base, chunk, size }
    }

    fn chunk_count(&self) -> u64 {
        self.size.div_ceil(self.chunk)
    }

    /// Chunk `i`: the random base with `i` stamped in front, so every chunk
    /// differs and a reordered or repeated part changes the hash.
    fn chunk_bytes(&self, i: u64) -> Bytes {
        let len = self.chunk.min(self.size - i * self.chunk) as usize;
        let mut data = self.base[..len].to_vec();
        let stamp = i.to_le_bytes();
        let n = stamp.len().min(len);
        data[..n].copy_from_slice(&stamp[..n]);
        Bytes::from(data)
    }

    fn stream(self: Arc<Self>) -> ByteStream {
        Box::pin(futures::stream::iter(0..self.chunk_count()).map(move |i| Ok(self.chunk_bytes(i))))
    }

    fn slice(&self, range: std::ops::Range<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        for i in range.start / self.chunk..range.end.div_ceil(self.chunk) {
            let chunk = self.chunk_bytes(i);
            let chunk_start = i * self.chunk;
            let from = range.start.max(chunk_start) - chunk_start;
            let to = range.end.min(chunk_start + chunk.len() as u64) - chunk_start;
            out.extend_from_slice(&chunk[from as usize..to as usize]);
        }
        out
    }

    fn sha256_hex(&self) -> String {
        let mut hasher = Sha256::new();
        for i in 0..self.chunk_count() {
            hasher.update(self.chunk_bytes(i));
        }
        hex::encode(hasher.finalize())
    }
}

/// 200 MiB streamed in and read back byte-exact, plus ranges across the
/// multipart boundaries and at the end.
pub async fn large_object_streams_byte_exact(store: Arc<dyn Store>, prefix: &str) {
    let key = format!("{prefix}large/source.bin");
    let size = 200 * MIB;
    let generated = Arc::new(Generated::new(size));
    let expected = generated.sha256_hex();

    let meta = store
        .put(
            &key,
            generated.clone().stream(),
            opts(Some("video/mp4"), None),
        )
        .await
        .expect("put 200 MiB stream");
    assert_eq!(meta.size, size);

    let got = store.get(&key, None).await.expect("get large object");
    assert_eq!(got.range, 0..size);
    assert_eq!(got.meta.size, size);
    let mut hasher = Sha256::new();
    let mut read = 0u64;
    let mut body = got.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("read large body");
        read += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(read, size);
    assert_eq!(
        hex::encode(hasher.finalize()),
        expected,
        "content differs after round trip"
    );
    assert_eq!(store.head(&key).await.expect("head").size, size);

    // 8 MiB is the S3 part size; a range spanning it reads from two parts.
    for range in [
        ByteRange::FromTo(8 * MIB - 100, 8 * MIB + 99),
        ByteRange::FromTo(100 * MIB, 100 * MIB + 4095),
        ByteRange::Suffix(1000),
    ] {
        let (body, meta, returned) = read_all(store.as_ref(), &key, Some(range)).await;
        assert_eq!(meta.size, size);
        assert_eq!(body.len() as u64, returned.end - returned.start);
        assert!(
            body[..] == generated.slice(returned.clone())[..],
            "{range:?} content differs"
        );
    }
    store.delete(&key).await.expect("delete large object");
}

/// Ranged reads clamp like HTTP and refuse ranges past the end.
pub async fn ranged_reads(store: Arc<dyn Store>, prefix: &str) {
    let key = format!("{prefix}ranges/object.bin");
    let content: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    store
        .put_bytes(&key, Bytes::from(content.clone()), PutOptions::default())
        .await
        .expect("put");

    for (range, expected) in [
        (ByteRange::FromTo(0, 99), 0..100),
        (ByteRange::FromTo(450, 549), 450..550),
        (ByteRange::FromTo(900, 999), 900..1000),
        (ByteRange::FromTo(900, 5000), 900..1000),
        (ByteRange::From(990), 990..1000),
        (ByteRange::Suffix(100), 900..1000),
        (ByteRange::Suffix(5000), 0..1000),
    ] {
        let (body, meta, returned) = read_all(store.as_ref(), &key, Some(range)).await;
        assert_eq!(returned, expected, "{range:?}");
        assert_eq!(meta.size, 1000, "{range:?} meta.size is the whole object");
        assert_eq!(
            &body[..],
            &content[expected.start as usize..expected.end as usize],
            "{range:?}"
        );
    }

    for range in [
        ByteRange::From(1000),
        ByteRange::FromTo(2000, 3000),
        ByteRange::Suffix(0),
    ] {
        match store.get(&key, Some(range)).await {
            Err(e @ StorageError::RangeNotSatisfiable { size: 1000 }) => {
                assert!(
                    e.to_string().contains("1000 bytes"),
                    "message names the size: {e}"
                );
            }
            other => panic!("{range:?} past the end gave {other:?}"),
        }
    }
    store.delete(&key).await.expect("delete");
}

/// Content type and cache control come back from head and get, for bodies
/// put from memory and from a file.
pub async fn metadata_round_trips(store: Arc<dyn Store>, prefix: &str) {
    store.check().await.expect("readiness check");
    let key = format!("{prefix}meta/playlist.m3u8");
    let put = opts(
        Some("application/vnd.apple.mpegurl"),
        Some("public, max-age=31536000, immutable"),
    );
    let written = store
        .put_bytes(&key, Bytes::from_static(b"#EXTM3U\n"), put.clone())
        .await
        .expect("put");
    assert_eq!(written.size, 8);
    let head = store.head(&key).await.expect("head");
    assert_eq!(head.content_type, put.content_type);
    assert_eq!(head.cache_control, put.cache_control);
    assert_eq!(head.size, 8);
    assert_eq!(head.etag, written.etag);
    let (body, meta, _) = read_all(store.as_ref(), &key, None).await;
    assert_eq!(&body[..], b"#EXTM3U\n");
    assert_eq!(meta, head, "get and head agree");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("segment.ts");
    let segment: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    tokio::fs::write(&path, &segment)
        .await
        .expect("write local file");
    let file_key = format!("{prefix}meta/segment.ts");
    store
        .put_file(&file_key, &path, opts(Some("video/mp2t"), Some("no-cache")))
        .await
        .expect("put_file");
    let (body, meta, _) = read_all(store.as_ref(), &file_key, None).await;
    assert!(body[..] == segment[..], "put_file content differs");
    assert_eq!(meta.content_type.as_deref(), Some("video/mp2t"));
    assert_eq!(meta.cache_control.as_deref(), Some("no-cache"));
    remove_all(store.as_ref(), prefix).await;
}

/// A second put replaces content and metadata.
pub async fn overwrite_replaces_object(store: Arc<dyn Store>, prefix: &str) {
    let key = format!("{prefix}overwrite/object");
    let first = store
        .put_bytes(
            &key,
            Bytes::from_static(b"first version"),
            opts(Some("text/plain"), Some("no-store")),
        )
        .await
        .expect("first put");
    let second = store
        .put_bytes(
            &key,
            Bytes::from_static(b"{\"v\":2}"),
            opts(Some("application/json"), None),
        )
        .await
        .expect("second put");
    assert_ne!(first.etag, second.etag);
    let (body, meta, _) = read_all(store.as_ref(), &key, None).await;
    assert_eq!(&body[..], b"{\"v\":2}");
    assert_eq!(meta.size, 7);
    assert_eq!(meta.etag, second.etag);
    assert_eq!(meta.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        meta.cache_control, None,
        "old cache control must not survive"
    );
    store.delete(&key).await.expect("delete");
}

/// Deleted objects are gone; deleting twice, or something never written, is fine.
pub async fn delete_then_not_found(store: Arc<dyn Store>, prefix: &str) {
    let key = format!("{prefix}delete/object");
    store
        .put_bytes(&key, Bytes::from_static(b"bye"), PutOptions::default())
        .await
        .expect("put");
    store.delete(&key).await.expect("delete");
    match store.get(&key, None).await {
        Err(StorageError::NotFound { key: k }) => assert_eq!(k, key),
        other => panic!("get after delete gave {other:?}"),
    }
    assert!(matches!(
        store.head(&key).await,
        Err(StorageError::NotFound { .. })
    ));
    store.delete(&key).await.expect("second delete is Ok");
    store
        .delete(&format!("{prefix}delete/never-written"))
        .await
        .expect("deleting a missing key is Ok");
    assert!(store.list(prefix).await.expect("list").is_empty());
}

/// Listing pages past 1000 keys, is sorted, and treats the prefix as a plain
/// string prefix.
pub async fn list_pages_past_1000_keys(store: Arc<dyn Store>, prefix: &str) {
    let keys: Vec<String> = (0..1100)
        .map(|i| format!("{prefix}list/item-{i:05}"))
        .collect();
    futures::stream::iter(keys.iter().cloned())
        .map(|key| {
            let store = store.clone();
            async move {
                let body = Bytes::from(key.clone().into_bytes());
                store
                    .put_bytes(&key, body, PutOptions::default())
                    .await
                    .map_err(|e| format!("{key}: {e}"))
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("put 1100 objects");
    for sibling in [format!("{prefix}list-sibling/x"), format!("{prefix}lis")] {
        store
            .put_bytes(&sibling, Bytes::from_static(b"x"), PutOptions::default())
            .await
            .expect("put sibling");
    }

    let listed = store.list(&format!("{prefix}list/")).await.expect("list");
    let listed_keys: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(listed_keys, keys, "all 1100 keys, sorted, nothing else");
    for meta in &listed {
        assert_eq!(meta.size, meta.key.len() as u64, "{}", meta.key);
        assert!(!meta.etag.is_empty());
    }

    let partial = store
        .list(&format!("{prefix}list/item-001"))
        .await
        .expect("list partial");
    assert_eq!(partial.len(), 100);
    assert_eq!(partial[0].key, format!("{prefix}list/item-00100"));
    assert_eq!(partial[99].key, format!("{prefix}list/item-00199"));

    let with_siblings = store
        .list(&format!("{prefix}lis"))
        .await
        .expect("list siblings");
    assert_eq!(with_siblings.len(), 1102);
    // Byte order: `-` (0x2d) sorts before `/` (0x2f).
    assert_eq!(with_siblings[0].key, format!("{prefix}lis"));
    assert_eq!(with_siblings[1].key, format!("{prefix}list-sibling/x"));
    assert_eq!(with_siblings[2].key, format!("{prefix}list/item-00000"));

    remove_all(store.as_ref(), prefix).await;
    assert!(store
        .list(prefix)
        .await
        .expect("list after cleanup")
        .is_empty());
}

/// Keys that could escape a directory or alias another key are refused by
/// every operation before anything is written.
pub async fn invalid_keys_rejected(store: Arc<dyn Store>, prefix: &str) {
    let too_long = format!("{prefix}{}", "k".repeat(1100));
    let bad = [
        "../escape.txt".to_owned(),
        format!("{prefix}a/../../../escape.txt"),
        "/tmp/lectern-escape.txt".to_owned(),
        format!("{prefix}a//b"),
        format!("{prefix}./a"),
        format!("{prefix}a\\..\\b"),
        format!("{prefix}nul\0byte"),
        format!("{prefix}trailing/"),
        String::new(),
        too_long,
    ];
    for key in &bad {
        let refused = |what: &str, r: Result<(), StorageError>| match r {
            Err(StorageError::InvalidKey { reason, .. }) => assert!(!reason.is_empty()),
            other => panic!("{what} {key:?} gave {other:?}, want InvalidKey"),
        };
        refused(
            "put",
            store
                .put_bytes(key, Bytes::from_static(b"evil"), PutOptions::default())
                .await
                .map(drop),
        );
        refused("get", store.get(key, None).await.map(drop));
        refused("head", store.head(key).await.map(drop));
        refused("delete", store.delete(key).await);
        refused(
            "presign",
            store
                .presign_get(key, Duration::from_secs(60))
                .await
                .map(drop),
        );
    }
    assert!(matches!(
        store.list("../").await,
        Err(StorageError::InvalidKey { .. })
    ));
    assert!(
        store.list(prefix).await.expect("list").is_empty(),
        "nothing was written"
    );
}

/// Eight writers racing on one key leave exactly one of their payloads, whole.
pub async fn concurrent_writers_leave_one_whole_object(store: Arc<dyn Store>, prefix: &str) {
    let key = format!("{prefix}race/object");
    let payloads: Vec<Bytes> = (0..8u64)
        .map(|seed| {
            let mut data = vec![0u8; 4 * MIB as usize];
            rand::rngs::StdRng::seed_from_u64(seed).fill(&mut data[..]);
            Bytes::from(data)
        })
        .collect();
    let writers: Vec<_> = payloads
        .iter()
        .cloned()
        .map(|payload| {
            let store = store.clone();
            let key = key.clone();
            tokio::spawn(async move {
                // Small chunks with yields, so the writers really interleave.
                let chunks: Vec<std::io::Result<Bytes>> = (0..payload.len())
                    .step_by(64 * 1024)
                    .map(|at| Ok(payload.slice(at..(at + 64 * 1024).min(payload.len()))))
                    .collect();
                let body: ByteStream = Box::pin(futures::stream::iter(chunks).then(|c| async {
                    tokio::task::yield_now().await;
                    c
                }));
                store.put(&key, body, PutOptions::default()).await
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer task").expect("concurrent put");
    }
    let (body, meta, _) = read_all(store.as_ref(), &key, None).await;
    assert_eq!(body.len() as u64, 4 * MIB);
    let got = sha256_hex(&body);
    assert!(
        payloads.iter().any(|p| sha256_hex(p) == got),
        "stored object is not any single writer's payload"
    );
    assert_eq!(store.head(&key).await.expect("head").etag, meta.etag);
    store.delete(&key).await.expect("delete");
}

/// A presigned URL is fetchable by a plain HTTP client; backends that cannot
/// presign (fs) say so with `None`.
pub async fn presigned_get_is_fetchable(store: Arc<dyn Store>, prefix: &str) {
    let key = format!("{prefix}presign/clip.mp4");
    let content = Bytes::from_static(b"presigned bytes over plain HTTP");
    store
        .put_bytes(&key, content.clone(), opts(Some("video/mp4"), None))
        .await
        .expect("put");
    match store
        .presign_get(&key, Duration::from_secs(300))
        .await
        .expect("presign")
    {
        Some(url) => {
            let (status, body) = http_get(&url).await;
            assert_eq!(status, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
            assert_eq!(body, content);
            let missing = store
                .presign_get(
                    &format!("{prefix}presign/missing"),
                    Duration::from_secs(300),
                )
                .await
                .expect("presign missing")
                .expect("a URL");
            assert_eq!(http_get(&missing).await.0, 404);
        }
        None => assert_eq!(
            store.backend_name(),
            "fs",
            "only the fs backend may decline to presign"
        ),
    }
    store.delete(&key).await.expect("delete");
}

/// A minimal HTTP/1.1 GET over a TCP socket: the point is that nothing but
/// the URL (no SDK, no credentials) is needed to fetch a presigned object.
async fn http_get(url: &str) -> (u16, Bytes) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("this test client speaks plain http only: {url}"));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut socket = tokio::net::TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    socket
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut response = Vec::new();
    socket
        .read_to_end(&mut response)
        .await
        .expect("read response");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response has a header block");
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let mut body = response[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, Bytes::from(body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex chunk size");
        if size == 0 {
            return out;
        }
        data = &data[line_end + 2..];
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A body that fails part-way (a dropped client upload) stores nothing, even
/// when it failed after several S3 multipart parts were sent.
pub async fn failed_upload_stores_nothing(store: Arc<dyn Store>, prefix: &str) {
    let key = format!("{prefix}failed/upload.bin");
    let chunk = Bytes::from(vec![7u8; MIB as usize]);
    let body: ByteStream = Box::pin(futures::stream::iter(0..40).map(move |i| {
        if i < 20 {
            Ok(chunk.clone())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "client went away",
            ))
        }
    }));
    match store.put(&key, body, PutOptions::default()).await {
        Err(StorageError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        other => panic!("put of a failing body gave {other:?}"),
    }
    assert!(matches!(
        store.head(&key).await,
        Err(StorageError::NotFound { .. })
    ));
    assert!(store.list(prefix).await.expect("list").is_empty());
}

/// Deterministic bytes for resumable-upload contracts: position-dependent,
/// so a chunk stored twice or out of order changes the digest.
fn pattern(start: u64, len: usize) -> Vec<u8> {
    (start..start + len as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn one_chunk(data: Vec<u8>) -> ByteStream {
    Box::pin(futures::stream::once(async move { Ok(Bytes::from(data)) }))
}

/// A body that delivers `data` in 64 KiB chunks and then fails, as a client
/// that disconnects mid-request does.
fn failing_after(data: Vec<u8>) -> ByteStream {
    let chunks: Vec<std::io::Result<Bytes>> = data
        .chunks(64 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .chain(std::iter::once(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client went away",
        ))))
        .collect();
    Box::pin(futures::stream::iter(chunks))
}

/// Chunks of every awkward size (tiny, just under and over a part, several
/// parts at once) assemble into exactly the bytes sent, under the key only.
pub async fn resumable_upload_assembles_appends(store: Arc<dyn Store>, prefix: &str) {
    let key = format!("{prefix}resumable/source");
    let sizes = [
        3usize,
        MIB as usize,
        9 * MIB as usize,
        100,
        7 * MIB as usize,
        17 * MIB as usize + 5,
    ];
    let mut upload = store
        .begin_upload(&key, opts(Some("video/mp4"), None))
        .await
        .expect("begin");
    let mut expected = Sha256::new();
    let mut offset = 0u64;
    for size in sizes {
        let data = pattern(offset, size);
        expected.update(&data);
        let appended = store
            .append_upload(&upload, one_chunk(data))
            .await
            .expect("append");
        assert!(appended.interrupted.is_none());
        offset += size as u64;
        assert_eq!(appended.upload.size(), offset);
        upload = appended.upload;
    }
    let meta = store.complete_upload(&upload).await.expect("complete");
    assert_eq!(meta.size, offset);
    let (body, meta, _) = read_all(store.as_ref(), &key, None).await;
    assert_eq!(meta.content_type.as_deref(), Some("video/mp4"));
    assert_eq!(sha256_hex(&body), hex::encode(expected.finalize()));
    let listed: Vec<String> = store
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, [key], "no staging debris is left beside the object");
}

/// A body that fails part-way keeps what arrived; the next append continues
/// exactly there.
pub async fn resumable_upload_keeps_bytes_of_an_interrupted_append(
    store: Arc<dyn Store>,
    prefix: &str,
) {
    let key = format!("{prefix}interrupted");
    let upload = store
        .begin_upload(&key, PutOptions::default())
        .await
        .unwrap();
    let first = pattern(0, 10 * MIB as usize + 123);
    let appended = store
        .append_upload(&upload, failing_after(first.clone()))
        .await
        .unwrap();
    assert!(appended.interrupted.is_some(), "the failure is reported");
    assert_eq!(appended.upload.size(), first.len() as u64);
    let second = pattern(first.len() as u64, 2 * MIB as usize);
    let upload = store
        .append_upload(&appended.upload, one_chunk(second.clone()))
        .await
        .unwrap()
        .upload;
    store.complete_upload(&upload).await.unwrap();
    let (body, _, _) = read_all(store.as_ref(), &key, None).await;
    assert_eq!(body.len(), first.len() + second.len());
    assert_eq!(sha256_hex(&body), sha256_hex(&[first, second].concat()));
}

/// A caller may reject an append (bad checksum) by keeping the handle it
/// had: the rejected bytes never reach the object.
pub async fn resumable_upload_rejected_append_leaves_no_trace(store: Arc<dyn Store>, prefix: &str) {
    let key = format!("{prefix}rejected");
    let upload = store
        .begin_upload(&key, PutOptions::default())
        .await
        .unwrap();
    let a = pattern(0, 6 * MIB as usize);
    let kept = store
        .append_upload(&upload, one_chunk(a.clone()))
        .await
        .unwrap()
        .upload;
    // Crosses a part boundary, so S3 uploads a part the handle never lists.
    let rejected = vec![0xEEu8; 5 * MIB as usize];
    let discarded = store
        .append_upload(&kept, one_chunk(rejected))
        .await
        .unwrap();
    assert_eq!(discarded.upload.size(), 11 * MIB);
    let c = pattern(a.len() as u64, 3 * MIB as usize + 1);
    let upload = store
        .append_upload(&kept, one_chunk(c.clone()))
        .await
        .unwrap()
        .upload;
    store.complete_upload(&upload).await.unwrap();
    let (body, _, _) = read_all(store.as_ref(), &key, None).await;
    assert_eq!(sha256_hex(&body), sha256_hex(&[a, c].concat()));
}

/// Completing again after a success (a retry after a crash) returns the
/// same object instead of failing or changing it.
pub async fn resumable_upload_completion_is_idempotent(store: Arc<dyn Store>, prefix: &str) {
    for (name, size) in [
        ("small", 1000usize),
        ("multipart", 9 * MIB as usize),
        ("empty", 0),
    ] {
        let key = format!("{prefix}idempotent-{name}");
        let upload = store
            .begin_upload(&key, PutOptions::default())
            .await
            .unwrap();
        let data = pattern(0, size);
        let upload = if size > 0 {
            store
                .append_upload(&upload, one_chunk(data.clone()))
                .await
                .unwrap()
                .upload
        } else {
            upload
        };
        let first = store
            .complete_upload(&upload)
            .await
            .expect("first completion");
        let again = store
            .complete_upload(&upload)
            .await
            .expect("repeated completion");
        assert_eq!(
            (first.size, again.size),
            (size as u64, size as u64),
            "{name}"
        );
        let (body, _, _) = read_all_or_empty(store.as_ref(), &key).await;
        assert_eq!(sha256_hex(&body), sha256_hex(&data), "{name}");
    }
}

async fn read_all_or_empty(
    store: &dyn Store,
    key: &str,
) -> (Bytes, ObjectMeta, std::ops::Range<u64>) {
    let meta = store.head(key).await.expect("head");
    if meta.size == 0 {
        return (Bytes::new(), meta, 0..0);
    }
    read_all(store, key, None).await
}

/// Aborting leaves nothing readable and nothing listed; aborting twice is fine.
pub async fn resumable_upload_abort_removes_everything(store: Arc<dyn Store>, prefix: &str) {
    let key = format!("{prefix}aborted");
    let upload = store
        .begin_upload(&key, PutOptions::default())
        .await
        .unwrap();
    let upload = store
        .append_upload(&upload, one_chunk(pattern(0, 9 * MIB as usize)))
        .await
        .unwrap()
        .upload;
    store.abort_upload(&upload).await.expect("abort");
    store.abort_upload(&upload).await.expect("abort again");
    assert!(matches!(
        store.head(&key).await,
        Err(StorageError::NotFound { .. })
    ));
    assert!(
        store.list(prefix).await.unwrap().is_empty(),
        "nothing listed after abort"
    );
    assert!(
        store.complete_upload(&upload).await.is_err(),
        "an aborted upload cannot complete"
    );
}
