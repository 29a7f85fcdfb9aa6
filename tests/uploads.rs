//! Partner uploads through `lectern serve` itself: a partner key made with
//! `lectern admin`, a real tus client (tus-js-client, installed by
//! `ingest/tests/clients/setup`) killed mid-upload and then resuming across
//! a `kill -9` of the server; the stored source equals the file, the asset
//! answers at `/api/v1/assets/{upload id}`, and the server's peak memory
//! stays far below the upload's size (bytes stream to storage). Also: a
//! corrupt upload fails at once and its webhook arrives signed, and a good
//! one becomes ready with a `master_url` that ffmpeg plays through the
//! origin. And a URL pull whose server is killed mid-download is resumed
//! by the restarted server from its sealed, presigned-style URL.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest;
use sqlx::PgPool;
use uuid::Uuid;

use common::{free_addr, lectern, workdir, Server};

const MIB: usize = 1024 * 1024;

/// One `lectern` deployment on a per-test database with fs storage.
struct Deployment {
    url: String,
    secrets: Vec<(&'static str, String)>,
    dir: tempfile::TempDir,
    addr: String,
    workers: usize,
    extra: Vec<(String, String)>,
}

impl Deployment {
    async fn new(db: &PgPool, workers: usize) -> Self {
        Self {
            url: common::database_url(db).await,
            secrets: common::deployment_secrets(),
            dir: workdir(),
            addr: free_addr(),
            workers,
            extra: Vec::new(),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = lectern(self.dir.path());
        cmd.env("DATABASE_URL", &self.url)
            .envs(self.secrets.iter().map(|(k, v)| (k, v)))
            .env("LECTERN_HTTP_ADDR", &self.addr)
            .env("LECTERN_SERVE_WORKERS", self.workers.to_string())
            .env("LECTERN_LOG", "warn");
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        cmd
    }

    fn admin(&self, args: &[&str]) -> String {
        let out = self.command().arg("admin").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "lectern admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Starts `lectern serve` and waits until it is ready.
    fn serve(&self) -> Server {
        let child = self
            .command()
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let server = Server(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(out) = curl(&[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &self.base("/readyz"),
            ]) {
                if out == "200" {
                    return server;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("lectern serve did not become ready");
    }

    fn base(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn storage(&self) -> PathBuf {
        self.dir.path().join(".lectern/storage")
    }
}

fn curl(args: &[&str]) -> std::io::Result<String> {
    let out = Command::new("curl").args(args).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn get_json(url: &str, token: &str) -> serde_json::Value {
    let out = curl(&["-s", "-H", &format!("Authorization: Bearer {token}"), url]).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("{url} answered {out}"))
}

fn clients_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ingest/tests/clients");
    assert!(
        dir.join("node_modules/tus-js-client").is_dir(),
        "the tus test clients are not installed; run ingest/tests/clients/setup"
    );
    dir
}

/// Runs tus-js-client; returns (succeeded, the upload URL it announced).
fn tus_js(options: serde_json::Value) -> (bool, Option<String>) {
    let mut child = Command::new("node")
        .arg(clients_dir().join("tus-js-upload.mjs"))
        .arg(options.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut url = None;
    let mut done = false;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if let Some(u) = event["url"].as_str() {
            url = Some(u.to_owned());
        }
        done |= event["event"] == "done";
    }
    let status = child.wait().unwrap();
    (status.success() && done, url)
}

/// Bytes that sniff as MP4 (an `ftyp` box) followed by noise: storage and
/// the tus layer accept them; the transcoder will call them corrupt.
fn fake_mp4(path: &Path, len: usize) -> String {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = sha2::Sha256::new();
    let mut header = vec![0, 0, 0, 24];
    header.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2");
    let mut written = 0;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    while written < len {
        let mut piece = Vec::with_capacity(MIB);
        if written == 0 {
            piece.extend_from_slice(&header);
        }
        while piece.len() < MIB.min(len - written) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            piece.extend_from_slice(&state.to_le_bytes());
        }
        piece.truncate(MIB.min(len - written));
        hasher.update(&piece);
        file.write_all(&piece).unwrap();
        written += piece.len();
    }
    file.flush().unwrap();
    hex::encode(hasher.finalize())
}

fn peak_rss_mib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.0.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        / 1024
}

async fn received(db: &PgPool, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT received FROM uploads WHERE id = $1")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_partner_upload_survives_a_killed_client_and_a_killed_server(db: PgPool) {
    let deployment = Deployment::new(&db, 0).await;
    deployment.admin(&["create-org", "Cardiology Society"]);
    let token = deployment.admin(&["create-partner-key", "--org", "Cardiology Society"]);
    assert!(token.starts_with("lk_"), "{token}");
    let len = 300 * MIB;
    let file = deployment.dir.path().join("grand-rounds.mp4");
    let sha256 = fake_mp4(&file, len);
    let endpoint = deployment.base("/api/v1/uploads");

    let server = deployment.serve();
    // Without a key: 401 from the API's own authorisation.
    let anonymous = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "-H",
        "Tus-Resumable: 1.0.0",
        "-H",
        "Upload-Length: 10",
        &endpoint,
    ])
    .unwrap();
    assert_eq!(anonymous, "401");

    // 1. The client is killed 40 MiB in.
    let (ok, url) = tus_js(serde_json::json!({
        "endpoint": endpoint, "file": file, "token": token, "chunkSize": 8 * MIB,
        "dieAfter": 40 * MIB,
    }));
    assert!(!ok, "the first client was killed");
    let url = url.expect("the client announced its upload URL");
    let id: Uuid = url.rsplit('/').next().unwrap().parse().unwrap();
    assert!(url.starts_with(&endpoint), "{url}");
    let before = received(&db, id).await;
    assert!(before > 0 && (before as usize) < len, "{before}");

    // 2. A new client resumes; the server is killed -9 under it and started
    //    again on the same address; the client rides it out.
    let resume = {
        let (endpoint, file, token, url) =
            (endpoint.clone(), file.clone(), token.clone(), url.clone());
        std::thread::spawn(move || {
            tus_js(serde_json::json!({
                "endpoint": endpoint, "uploadUrl": url, "file": file, "token": token,
                "chunkSize": 8 * MIB, "paceMs": 50,
            }))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    while (received(&db, id).await as usize) < before as usize + 60 * MIB {
        assert!(
            Instant::now() < deadline,
            "the resumed upload makes no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let peak_before_kill = peak_rss_mib(&server);
    drop(server); // SIGKILL
    let server = deployment.serve();
    let (ok, _) = resume.join().unwrap();
    assert!(ok, "the resumed client finished");
    let peak = peak_rss_mib(&server).max(peak_before_kill);
    println!("lectern serve peak RSS during a 300 MiB tus upload: {peak} MiB (fs storage)");
    assert!(
        peak < 200,
        "lectern serve must stream uploads, not hold them: peak RSS {peak} MiB for a 300 MiB upload"
    );

    // The stored source is the file, byte for byte.
    let stored = lectern_storage::FsStore::open(deployment.storage())
        .await
        .unwrap();
    let object = lectern_storage::Store::get(&stored, &lectern_assets::keys::source_key(id), None)
        .await
        .unwrap();
    let mut hasher = sha2::Sha256::new();
    let mut stream = object.body;
    let mut total = 0;
    use futures::StreamExt;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!((total, hex::encode(hasher.finalize())), (len, sha256));

    // The partner polls the asset under the upload's id.
    let asset = get_json(&deployment.base(&format!("/api/v1/assets/{id}")), &token);
    assert_eq!(asset["id"], id.to_string(), "{asset}");
    assert_eq!(asset["status"], "uploaded", "{asset}");
    assert!(
        asset["error"].is_null() && asset["master_url"].is_null(),
        "{asset}"
    );
    // Another organisation's key sees nothing.
    deployment.admin(&["create-org", "Alumni Office"]);
    let other = deployment.admin(&["create-partner-key", "--org", "Alumni Office"]);
    let hidden = get_json(&deployment.base(&format!("/api/v1/assets/{id}")), &other);
    assert_eq!(hidden["error"]["code"], "not_found", "{hidden}");
    server.terminate();
}

/// The whole partner loop on one `lectern serve` with its in-process
/// worker: register a webhook, upload a file that only looks like MP4 with
/// tus-js-client, and receive `asset.failed` with `corrupt_media`, signed
/// with the secret shown at registration, within seconds, and only once.
#[sqlx::test]
async fn a_corrupt_upload_fails_fast_and_its_webhook_arrives_signed(db: PgPool) {
    use std::sync::{Arc, Mutex};
    let mut deployment = Deployment::new(&db, 1).await;
    deployment
        .extra
        .push(("LECTERN_WEBHOOK_ALLOW".into(), "127.0.0.1".into()));
    deployment.admin(&["create-org", "Medical Association"]);
    let token = deployment.admin(&["create-partner-key", "--org", "Medical Association"]);

    // (signature header, raw body) of each request.
    type Seen = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
    let received: Seen = Arc::default();
    let seen = received.clone();
    let receiver = axum::Router::new().route(
        "/lectern",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let signature = headers
                        .get("lectern-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    seen.lock().unwrap().push((signature, body.to_vec()));
                    axum::http::StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/lectern", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let server = deployment.serve();
    let created = curl(&[
        "-s",
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-H",
        "Content-Type: application/json",
        "-d",
        &serde_json::json!({ "url": hook }).to_string(),
        &deployment.base("/api/v1/webhooks"),
    ])
    .unwrap();
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let secret = created["secret"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();

    let file = deployment.dir.path().join("broken.mp4");
    fake_mp4(&file, 2 * MIB);
    let (ok, url) = tus_js(serde_json::json!({
        "endpoint": deployment.base("/api/v1/uploads"), "file": file, "token": token,
    }));
    assert!(ok, "the upload itself succeeds");
    let id = url.unwrap().rsplit('/').next().unwrap().to_owned();
    let uploaded = Instant::now();

    let deadline = uploaded + Duration::from_secs(120);
    while received.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no webhook arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "upload finished → signed asset.failed webhook received: {:.1} s",
        uploaded.elapsed().as_secs_f64()
    );
    let asset = get_json(&deployment.base(&format!("/api/v1/assets/{id}")), &token);
    assert_eq!(asset["status"], "failed", "{asset}");
    assert_eq!(asset["error"]["code"], "corrupt_media", "{asset}");
    let (signature, body) = received.lock().unwrap()[0].clone();
    let (t, v1) = signature
        .split_once(",v1=")
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v)))
        .unwrap_or_else(|| panic!("signature header {signature:?}"));
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(&body);
    mac.verify_slice(&hex::decode(v1).unwrap())
        .expect("the webhook is signed with the partner's secret");
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["event"], "asset.failed");
    assert_eq!(event["asset"]["id"], id);
    assert_eq!(event["asset"]["error"]["code"], "corrupt_media");
    // Not retried, not sent twice.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(received.lock().unwrap().len(), 1);
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM jobs WHERE asset_id = $1::uuid")
        .bind(&id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(attempts, 1, "corrupt media is never retried");
    server.terminate();
}

/// The partner's whole happy path on one `lectern serve` with its
/// in-process worker: a real clip uploaded with tus-js-client becomes
/// `ready` with progress 100 and renditions, and its `master_url` from the
/// assets API is opened by a real HLS client (the ffmpeg CLI) that follows
/// every playlist and segment through `/media` with the signed tokens the
/// origin writes into them, and decodes the whole ladder.
#[sqlx::test]
async fn a_good_upload_becomes_ready_and_its_master_url_plays_through_the_origin(db: PgPool) {
    let deployment = Deployment::new(&db, 1).await;
    deployment.admin(&["create-org", "Alumni Learning"]);
    let token = deployment.admin(&["create-partner-key", "--org", "Alumni Learning"]);
    let server = deployment.serve();

    let clip = deployment.dir.path().join("lecture.mp4");
    let made = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg("testsrc2=size=640x360:rate=25:duration=9")
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=9",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
        ])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(made.success());
    let (ok, url) = tus_js(serde_json::json!({
        "endpoint": deployment.base("/api/v1/uploads"), "file": clip, "token": token,
    }));
    assert!(ok, "the upload succeeds");
    let id = url.unwrap().rsplit('/').next().unwrap().to_owned();

    let deadline = Instant::now() + Duration::from_secs(180);
    let asset = loop {
        let asset = get_json(&deployment.base(&format!("/api/v1/assets/{id}")), &token);
        assert_ne!(asset["status"], "failed", "{asset}");
        if asset["status"] == "ready" {
            break asset;
        }
        assert!(Instant::now() < deadline, "not ready in time: {asset}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(asset["progress"], 100.0, "{asset}");
    assert!(asset["error"].is_null(), "{asset}");
    assert!(
        asset["renditions"].as_array().is_some_and(|r| r.len() >= 2),
        "{asset}"
    );
    let master = asset["master_url"]
        .as_str()
        .unwrap_or_else(|| panic!("{asset}"));
    let master = if master.starts_with('/') {
        deployment.base(master)
    } else {
        master.to_owned()
    };
    let played = Command::new("ffmpeg")
        .args(["-v", "error", "-allowed_extensions", "ALL", "-i", &master])
        .args(["-map", "0", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        played.status.success() && played.stderr.is_empty(),
        "ffmpeg could not play {master}: {}",
        String::from_utf8_lossy(&played.stderr)
    );
    // The URL is the capability: altered, it opens nothing.
    let forged = master.replace("token=", "token=x");
    let status = curl(&["-s", "-o", "/dev/null", "-w", "%{http_code}", &forged]).unwrap();
    assert_eq!(status, "403", "{forged}");
    server.terminate();
}

/// A source host for URL pulls: answers `GET /lecture.mp4?signature=s3cret`
/// (403 without the signature, like a presigned URL). The first download
/// sends the headers and 64 KiB, then holds the connection open without
/// another byte; later ones send everything.
struct HeldSource {
    port: u16,
    downloads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn held_source(body: Vec<u8>) -> HeldSource {
    use std::io::Read;
    use std::sync::atomic::Ordering;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let downloads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = downloads.clone();
    let body = std::sync::Arc::new(body);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let (body, counted) = (body.clone(), counted.clone());
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                    request.push(byte[0]);
                }
                let line = String::from_utf8_lossy(&request);
                if !line.starts_with("GET /lecture.mp4?signature=s3cret ") {
                    let _ = conn.write_all(
                        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                    return;
                }
                let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: video/mp4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                if first {
                    let _ = conn.write_all(&body[..64 * 1024]);
                    // Held until the puller goes away (its process is killed).
                    let _ = conn.read(&mut byte);
                } else {
                    let _ = conn.write_all(&body);
                }
            });
        }
    });
    HeldSource { port, downloads }
}

/// How the server running a pull goes away.
enum Stop {
    /// `kill -9`: the pull goes silent and is resumed once that is noticed.
    Kill,
    /// SIGTERM: the server hands the pull back on its way out, claimable
    /// at once.
    Terminate,
}

#[sqlx::test]
async fn a_url_pull_survives_a_killed_server(db: PgPool) {
    url_pull_survives(db, Stop::Kill).await;
}

#[sqlx::test]
async fn a_url_pull_is_handed_back_by_a_server_that_stops(db: PgPool) {
    url_pull_survives(db, Stop::Terminate).await;
}

async fn url_pull_survives(db: PgPool, stop: Stop) {
    let mut deployment = Deployment::new(&db, 0).await;
    deployment
        .extra
        .push(("LECTERN_PULL_ALLOW".into(), "127.0.0.1".into()));
    deployment.admin(&["create-org", "District Training Centre"]);
    let token = deployment.admin(&["create-partner-key", "--org", "District Training Centre"]);
    let file = deployment.dir.path().join("workshop.mp4");
    let sha256 = fake_mp4(&file, 4 * MIB);
    let source = held_source(std::fs::read(&file).unwrap());
    let url = format!(
        "http://127.0.0.1:{}/lecture.mp4?signature=s3cret",
        source.port
    );

    let server = deployment.serve();
    let answer = curl(&[
        "-s",
        "-H",
        &format!("Authorization: Bearer {token}"),
        "-H",
        "content-type: application/json",
        "-d",
        &serde_json::json!({"source_url": url, "title": "Workshop, day 2"}).to_string(),
        &deployment.base("/api/v1/assets"),
    ])
    .unwrap();
    let pull: serde_json::Value =
        serde_json::from_str(&answer).unwrap_or_else(|_| panic!("{answer}"));
    assert_eq!(pull["state"], "pulling", "{pull}");
    let id: Uuid = pull["id"].as_str().unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while source.downloads.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the pull never reached the source"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    match stop {
        Stop::Kill => {
            drop(server); // kill -9 mid-download
                          // Its heartbeat stopped; pretend the minute of silence has passed.
            sqlx::query(
                "UPDATE pulls SET updated_at = now() - interval '10 minutes' WHERE id = $1",
            )
            .bind(id)
            .execute(&db)
            .await
            .unwrap();
        }
        Stop::Terminate => {
            assert!(server.terminate().success());
            let (state, attempt, claimable): (String, i32, bool) = sqlx::query_as(
                "SELECT state, attempt, updated_at < now() - interval '1 minute'
                 FROM pulls WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&db)
            .await
            .unwrap();
            assert_eq!(
                (state.as_str(), attempt, claimable),
                ("pulling", 1, true),
                "a stopping server hands its pulls back, claimable at once"
            );
        }
    }
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT source_url_sealed FROM pulls WHERE id = $1")
        .bind(id)
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&sealed).contains("s3cret"),
        "the URL's secret is stored sealed only"
    );

    let _server = deployment.serve();
    let pull_url = deployment.base(&format!("/api/v1/pulls/{id}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let pull = loop {
        let pull = get_json(&pull_url, &token);
        if pull["state"] != "pulling" {
            break pull;
        }
        assert!(
            Instant::now() < deadline,
            "the pull was not resumed: {pull}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(pull["state"], "completed", "{pull}");
    assert_eq!(pull["attempt"], 2, "{pull}");
    assert_eq!(pull["received_bytes"], 4 * MIB, "{pull}");
    assert!(!pull["source_url"].as_str().unwrap().contains("s3cret"));
    assert_eq!(
        source.downloads.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    let asset = get_json(&deployment.base(&format!("/api/v1/assets/{id}")), &token);
    assert_eq!(asset["title"], "Workshop, day 2", "{asset}");
    let stored = lectern_storage::FsStore::open(deployment.storage())
        .await
        .unwrap();
    let key = lectern_assets::keys::pull_attempt_key(id, 2);
    let object = lectern_storage::Store::get(&stored, &key, None)
        .await
        .expect("the resumed attempt's source");
    let bytes = object.bytes().await.unwrap();
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), sha256);
    let first = lectern_assets::keys::source_key(id);
    assert!(
        lectern_storage::Store::head(&stored, &first).await.is_err(),
        "the killed attempt left nothing under its key"
    );
}
