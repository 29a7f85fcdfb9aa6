//! Real tus clients nobody here wrote — tus-js-client under Node and tuspy
//! under Python — against the router served on a loopback port, with the fs
//! store and with Garage. Uploads are interrupted by killing the client and
//! by restarting the server (a new server on the same database, storage and
//! port), and must still arrive byte for byte.
//!
//! The clients are installed by `ingest/tests/clients/setup`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use lectern_assets::keys::source_key;
use lectern_ingest::tus::{self, TusConfig, TusState};
use lectern_storage::{FsStore, Store};
use sqlx::postgres::PgConnectOptions;
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt;
use uuid::Uuid;

const MIB: usize = 1024 * 1024;

fn clients_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    assert!(
        dir.join("node_modules/tus-js-client").is_dir() && venv_python().is_file(),
        "the tus test clients are not installed; run ingest/tests/clients/setup"
    );
    dir
}

fn venv_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.lectern/ingest-clients-venv/bin/python")
}

#[derive(Clone)]
enum Backend {
    Fs(PathBuf),
    Garage,
}

impl Backend {
    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Backend::Fs(root) => Arc::new(FsStore::open(root).await.expect("open fs store")),
            Backend::Garage => common::s3_store(),
        }
    }
}

/// A Lectern tus server on its own runtime, so dropping it kills every
/// connection and request in flight, as a crash or restart would.
struct Server {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(db: PgConnectOptions, backend: Backend, port: u16) -> Server {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            runtime.block_on(async move {
                let listener = bind(port).await;
                let db = PgPool::connect_lazy_with(db);
                let auth = common::TableAuthenticator::install(&db).await;
                let state = TusState::new(db, backend.open().await, auth, TusConfig::default());
                let app = axum::Router::new().nest("/api/v1/uploads", tus::router(state));
                ready_tx
                    .send(listener.local_addr().expect("address").port())
                    .expect("report port");
                tokio::spawn(async move { axum::serve(listener, app).await });
                let _ = stop_rx.await;
            });
            // Shutting the runtime down cancels every connection task
            // mid-request, as a crash would, and closes the listener.
            runtime.shutdown_timeout(Duration::from_secs(5));
        });
        let port = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server start");
        Server {
            port,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/uploads", self.port)
    }
}

/// Binds the port, waiting out a previous server on it whose runtime is
/// still letting go of the listener.
async fn bind(port: u16) -> tokio::net::TcpListener {
    let mut attempts = 0;
    loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("bind the test server to port {port}: {e}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One run of a client script; collects the upload URL it announced.
struct ClientRun {
    child: tokio::process::Child,
    url: Arc<std::sync::Mutex<Option<String>>>,
    reader: tokio::task::JoinHandle<bool>,
}

fn spawn_client(program: &Path, script: &str, options: serde_json::Value) -> ClientRun {
    let mut child = tokio::process::Command::new(program)
        .arg(clients_dir().join(script))
        .arg(options.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let url = Arc::new(std::sync::Mutex::new(None));
    let seen = url.clone();
    let stdout = child.stdout.take().expect("stdout");
    let reader = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut done = false;
        while let Ok(Some(line)) = lines.next_line().await {
            let event: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("client printed {line}"));
            if let Some(u) = event["url"].as_str() {
                *seen.lock().unwrap() = Some(u.to_owned());
            }
            done |= event["event"] == "done";
        }
        done
    });
    ClientRun { child, url, reader }
}

impl ClientRun {
    /// Waits for the client to exit; returns whether it reported success,
    /// and the upload URL.
    async fn finish(mut self) -> (std::process::ExitStatus, bool, String) {
        let status = tokio::time::timeout(Duration::from_secs(300), self.child.wait())
            .await
            .expect("the client finishes within 5 minutes")
            .expect("wait for client");
        let done = self.reader.await.expect("stdout reader");
        let url = self
            .url
            .lock()
            .unwrap()
            .clone()
            .expect("the client announced its upload URL");
        (status, done, url)
    }
}

fn node() -> PathBuf {
    PathBuf::from("node")
}

fn upload_id(url: &str) -> Uuid {
    url.rsplit('/')
        .next()
        .unwrap()
        .parse()
        .expect("upload URL ends in an id")
}

async fn received(db: &PgPool, id: Uuid) -> (i64, String) {
    sqlx::query_as("SELECT received, state FROM uploads WHERE id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .expect("upload row")
}

/// The upload's progress once no request is writing to it any more (none
/// holds its lease): the server keeps storing what a vanished client sent
/// before it vanished.
async fn settled(db: &PgPool, id: Uuid) -> (i64, String) {
    for _ in 0..1000 {
        let row = sqlx::query_as(
            "SELECT received, state FROM uploads WHERE id = $1 AND lease_id IS NULL",
        )
        .bind(id)
        .fetch_optional(db)
        .await
        .unwrap();
        match row {
            Some(row) => return row,
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    panic!("upload {id} stays leased");
}

/// A source file of `len` media-looking bytes, written piece by piece so
/// the test's own memory stays small; returns it and its SHA-256.
fn source_file(dir: &Path, len: usize) -> (PathBuf, String) {
    use sha2::Digest;
    use std::io::Write;
    let path = dir.join("lecture.mp4");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut hasher = sha2::Sha256::new();
    let mut written = 0;
    while written < len {
        let piece = common::media_slice(written, MIB.min(len - written));
        hasher.update(&piece);
        file.write_all(&piece).unwrap();
        written += piece.len();
    }
    file.flush().unwrap();
    (path, hex::encode(hasher.finalize()))
}

/// Peak resident memory of this process so far (the server runs in it;
/// the clients do not), in MiB.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib / 1024
}

async fn assert_stored(db: &PgPool, store: &dyn Store, id: Uuid, len: usize, sha256: &str) {
    let (got_len, got_sha) = common::stored_sha256(store, &source_key(id)).await;
    assert_eq!(
        (got_len, got_sha.as_str()),
        (len as u64, sha256),
        "stored object equals the source"
    );
    let (state,): (String,) = sqlx::query_as("SELECT state FROM uploads WHERE id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(state, "completed");
    let assets: i64 = sqlx::query_scalar("SELECT count(*) FROM assets WHERE id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(assets, 1, "exactly one asset, under the upload id");
}

/// Returns the peak RSS of the test process in MiB.
async fn tus_js_client_survives_kill_and_restart(
    db: PgPool,
    backend: Backend,
    len: usize,
    resume_chunk: usize,
) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let (file, sha256) = source_file(dir.path(), len);
    common::TableAuthenticator::install(&db).await;
    let (_, token) = common::organisation(&db, "Cardiology Society").await;
    let options = (*db.connect_options()).clone();

    let server = Server::start(options.clone(), backend.clone(), 0);
    // 1. The client dies mid-request, inside a 16 MiB PATCH. (With one
    // PATCH of the whole file, Node's progress events on an idle machine
    // can come only after all of it was sent, and nothing is left to cut.)
    let killed = spawn_client(
        &node(),
        "tus-js-upload.mjs",
        serde_json::json!({ "endpoint": server.endpoint(), "file": file, "token": token, "dieAfter": 12 * MIB, "chunkSize": 16 * MIB }),
    );
    let (status, done, url) = killed.finish().await;
    assert!(
        !status.success() && !done,
        "the first client was killed: {status}"
    );
    let id = upload_id(&url);
    let (after_kill, _) = settled(&db, id).await;
    assert!(
        after_kill > 0 && (after_kill as usize) < len,
        "partial progress kept: {after_kill}"
    );

    // 2. A new client resumes; the server restarts under it mid-way.
    let resumed = spawn_client(
        &node(),
        "tus-js-upload.mjs",
        serde_json::json!({
            "endpoint": server.endpoint(), "uploadUrl": url, "file": file, "token": token,
            "chunkSize": resume_chunk, "paceMs": 40,
        }),
    );
    let mut waited = 0;
    loop {
        let (now, _) = received(&db, id).await;
        if now >= after_kill + (len as i64 - after_kill) / 3 {
            break;
        }
        waited += 1;
        assert!(
            waited < 12_000,
            "the resumed client makes no progress (at {now})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let port = server.port;
    drop(server);
    let (at_restart, _) = received(&db, id).await;
    assert!(
        (at_restart as usize) < len,
        "the restart happened mid-upload"
    );
    let server = Server::start(options, backend.clone(), port);
    let (status, done, _) = resumed.finish().await;
    assert!(
        status.success() && done,
        "the resumed client finished: {status}"
    );
    let peak = peak_rss_mib();
    let store = backend.open().await;
    assert_stored(&db, store.as_ref(), id, len, &sha256).await;
    drop(server);
    // The Garage bucket is shared; leave nothing behind.
    store.delete(&source_key(id)).await.expect("clean up");
    peak
}

async fn tuspy_survives_kill_and_restart(db: PgPool, backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let len = 30 * MIB + 5;
    let (file, sha256) = source_file(dir.path(), len);
    common::TableAuthenticator::install(&db).await;
    let (_, token) = common::organisation(&db, "Alumni Office").await;
    let options = (*db.connect_options()).clone();
    let python = venv_python();

    let server = Server::start(options.clone(), backend.clone(), 0);
    let endpoint = server.endpoint();
    let killed = spawn_client(
        &python,
        "tuspy-upload.py",
        serde_json::json!({
            "endpoint": endpoint, "file": file, "token": token,
            "chunkSize": 3 * MIB, "checksum": true, "dieAfter": 10 * MIB,
        }),
    );
    let (status, done, url) = killed.finish().await;
    assert!(
        !status.success() && !done,
        "the first client was killed: {status}"
    );
    let id = upload_id(&url);
    let (after_kill, state) = settled(&db, id).await;
    assert_eq!(
        (after_kill as usize, state.as_str()),
        (12 * MIB, "receiving")
    );

    // Restart the server while no client is connected, then resume.
    let port = server.port;
    drop(server);
    let server = Server::start(options, backend.clone(), port);
    let resumed = spawn_client(
        &python,
        "tuspy-upload.py",
        serde_json::json!({
            "endpoint": endpoint, "uploadUrl": url, "file": file, "token": token,
            "chunkSize": 3 * MIB, "checksum": true,
        }),
    );
    let (status, done, _) = resumed.finish().await;
    assert!(
        status.success() && done,
        "the resumed client finished: {status}"
    );
    let store = backend.open().await;
    assert_stored(&db, store.as_ref(), id, len, &sha256).await;
    drop(server);
    // The Garage bucket is shared; leave nothing behind.
    store.delete(&source_key(id)).await.expect("clean up");
}

#[sqlx::test(migrations = "../migrations")]
async fn tus_js_client_to_fs(db: PgPool) {
    let root = tempfile::tempdir().unwrap();
    let backend = Backend::Fs(root.path().to_owned());
    tus_js_client_survives_kill_and_restart(db, backend, 48 * MIB + 321, 2 * MIB).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn tus_js_client_to_garage(db: PgPool) {
    tus_js_client_survives_kill_and_restart(db, Backend::Garage, 48 * MIB + 321, 2 * MIB).await;
}

/// The acceptance size: 300 MiB, interrupted by a killed client and by a
/// server restart, while the server's memory stays flat (bytes stream to
/// storage; at most one 8 MiB S3 part per upload is buffered).
const LARGE: usize = 300 * MIB + 1;
const LARGE_PEAK_RSS_MIB: u64 = 160;

#[sqlx::test(migrations = "../migrations")]
async fn tus_js_client_300_mib_to_fs_with_flat_memory(db: PgPool) {
    let root = tempfile::tempdir().unwrap();
    let backend = Backend::Fs(root.path().to_owned());
    let peak = tus_js_client_survives_kill_and_restart(db, backend, LARGE, 16 * MIB).await;
    eprintln!("peak RSS of the test process (server included): {peak} MiB");
    assert!(
        peak < LARGE_PEAK_RSS_MIB,
        "peak RSS {peak} MiB for a 300 MiB upload"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn tus_js_client_300_mib_to_garage_with_flat_memory(db: PgPool) {
    let peak = tus_js_client_survives_kill_and_restart(db, Backend::Garage, LARGE, 16 * MIB).await;
    eprintln!("peak RSS of the test process (server included): {peak} MiB");
    assert!(
        peak < LARGE_PEAK_RSS_MIB,
        "peak RSS {peak} MiB for a 300 MiB upload"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn tuspy_to_fs(db: PgPool) {
    let root = tempfile::tempdir().unwrap();
    tuspy_survives_kill_and_restart(db, Backend::Fs(root.path().to_owned())).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn tuspy_to_garage(db: PgPool) {
    tuspy_survives_kill_and_restart(db, Backend::Garage).await;
}
