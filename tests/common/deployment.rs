//! A `lectern` deployment on the test's own database, as an operator runs
//! it: shared secrets, one working directory (so every node it starts
//! shares the local-disk store), `lectern admin` for the first accounts and
//! `lectern serve` nodes on addresses of their own.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::{free_addr, lectern_binary, workdir, Server};

pub const PASSWORD: &str = "correct horse 42";
pub const LEARNER: &str = "learner@crash.example.org";
const ORG: &str = "Crash Test Hospital";

pub struct Deployment {
    url: String,
    secrets: Vec<(&'static str, String)>,
    pub dir: tempfile::TempDir,
    /// The address `serve` listens on unless told another.
    pub addr: String,
    extra: Vec<(&'static str, String)>,
    binary: std::path::PathBuf,
}

impl Deployment {
    /// `extra` settings apply to every command; the flush interval is
    /// `flush` unless `extra` says otherwise.
    pub async fn new(db: &PgPool, flush: Duration, extra: Vec<(&'static str, String)>) -> Self {
        let mut all = vec![(
            "LECTERN_PROGRESS_FLUSH_INTERVAL",
            format!("{}ms", flush.as_millis()),
        )];
        all.extend(extra);
        Self {
            url: super::database_url(db).await,
            secrets: super::deployment_secrets(),
            dir: workdir(),
            addr: free_addr(),
            extra: all,
            binary: env!("CARGO_BIN_EXE_lectern").into(),
        }
    }

    /// Runs every later command with `binary` instead of this build's.
    pub fn use_binary(&mut self, binary: &std::path::Path) {
        self.binary = binary.to_path_buf();
    }

    fn command_at(&self, addr: &str) -> Command {
        let mut cmd = lectern_binary(&self.binary, self.dir.path());
        cmd.env("DATABASE_URL", &self.url)
            .envs(self.secrets.iter().map(|(k, v)| (k, v)))
            .env("LECTERN_HTTP_ADDR", addr)
            .env("LECTERN_SERVE_WORKERS", "0")
            .env("LECTERN_LOG", "warn");
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn admin(&self, args: &[&str], stdin: Option<&str>) {
        let mut child = self
            .command_at(&self.addr)
            .arg("admin")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "lectern admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `lectern serve` on the deployment's address, once ready.
    pub async fn serve(&self, http: &reqwest::Client) -> Server {
        self.serve_at(http, &self.addr).await
    }

    /// `lectern serve` on `addr`, once ready.
    pub async fn serve_at(&self, http: &reqwest::Client, addr: &str) -> Server {
        let child = self
            .command_at(addr)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let server = Server(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = http.get(format!("http://{addr}/readyz")).send().await {
                if r.status() == 200 {
                    return server;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("lectern serve on {addr} did not become ready");
    }

    pub fn base(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// `lessons` published lessons of 600 s (each with an asset of its own,
/// output under `assets/<asset>/out/attempt-1/`) in a new organisation with
/// one learner; returns `(lesson, asset)` pairs.
pub async fn catalogue(db: &PgPool, d: &Deployment, lessons: usize) -> Vec<(Uuid, Uuid)> {
    d.admin(&["create-org", ORG], None);
    d.admin(
        &[
            "create-user",
            "--org",
            ORG,
            "--email",
            LEARNER,
            "--role",
            "learner",
        ],
        Some(PASSWORD),
    );
    let org: Uuid = sqlx::query_scalar("SELECT id FROM organisations WHERE name = $1")
        .bind(ORG)
        .fetch_one(db)
        .await
        .unwrap();
    let course = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO courses (id, organisation_id, title, state, published_at)
         VALUES ($1, $2, 'Resuscitation', 'published', now())",
    )
    .bind(course)
    .bind(org)
    .execute(db)
    .await
    .unwrap();
    let mut out = Vec::new();
    for _ in 0..lessons {
        let (asset, lesson) = (Uuid::now_v7(), Uuid::now_v7());
        sqlx::query(
            "INSERT INTO assets (id, organisation_id, status, source_key, duration_s, output_prefix)
             VALUES ($1, $2, 'ready', $3, 600, $4)",
        )
        .bind(asset)
        .bind(org)
        .bind(format!("sources/{asset}"))
        .bind(format!("assets/{asset}/out/attempt-1/"))
        .execute(db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO lessons (id, organisation_id, course_id, title, asset_id)
             VALUES ($1, $2, $3, '心肺复苏', $4)",
        )
        .bind(lesson)
        .bind(org)
        .bind(course)
        .bind(asset)
        .execute(db)
        .await
        .unwrap();
        out.push((lesson, asset));
    }
    out
}

/// The learner's session token, signed in at `base`.
pub async fn login(http: &reqwest::Client, base: &str) -> String {
    let r: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({ "email": LEARNER, "password": PASSWORD }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["token"]
        .as_str()
        .unwrap_or_else(|| panic!("login: {r}"))
        .to_string()
}

/// The learner's playback session for `lesson`, opened at `base`.
pub async fn playback(http: &reqwest::Client, base: &str, token: &str, lesson: Uuid) -> Value {
    let r = http
        .post(format!("{base}/api/v1/lessons/{lesson}/playback"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The resume position PostgreSQL holds for `lesson`, if any.
pub async fn stored_position(db: &PgPool, lesson: Uuid) -> Option<f64> {
    sqlx::query_scalar("SELECT position_s FROM lesson_progress WHERE lesson_id = $1")
        .bind(lesson)
        .fetch_optional(db)
        .await
        .unwrap()
}
