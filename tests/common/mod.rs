//! Helpers shared by the binary's end-to-end tests.

#![allow(dead_code)] // each test file uses its own subset

pub mod deployment;
pub mod nginx;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The `lectern` binary, run in `cwd` with no Lectern configuration at all
/// (trace export included), whatever the caller's environment holds.
pub fn lectern(cwd: &Path) -> Command {
    lectern_binary(Path::new(env!("CARGO_BIN_EXE_lectern")), cwd)
}

/// Another build of `lectern` (the previous release's), run the same way.
pub fn lectern_binary(binary: &Path, cwd: &Path) -> Command {
    let mut cmd = Command::new(binary);
    cmd.current_dir(cwd);
    for (key, _) in std::env::vars() {
        if key.starts_with("LECTERN_") || key.starts_with("OTEL_") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A loopback address nothing listens on right now.
pub fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A private working directory the `postgres` user can reach (tempdirs are
/// 0700), so an embedded cluster lives and dies inside it.
pub fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A spawned `lectern` process, killed if the test ends without stopping it.
pub struct Server(pub Child);

impl Server {
    /// SIGTERM, as an orchestrator would: the server must drain and exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "lectern did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The URL of the per-test database `#[sqlx::test]` gave `db`, for a
/// `lectern` process to connect to: the server of `DATABASE_URL`, that name.
pub async fn database_url(db: &sqlx::PgPool) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(db)
        .await
        .unwrap();
    let base = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL (run `make test`, or source .lectern/env)");
    format!("{}/{name}", &base[..base.rfind('/').unwrap()])
}

/// The secrets a deployment on an external database must be given before it
/// is ready — identity field keys, blind-index key, token key and playback
/// signing keys — freshly generated, as `(variable, value)` pairs; and, as
/// these tests read one-time codes from the outbox, `LECTERN_DEV_OUTBOX`.
#[allow(dead_code)]
pub fn deployment_secrets() -> Vec<(&'static str, String)> {
    let (field, blind, token) = lectern_secrets::Keyring::generate_settings();
    vec![
        ("LECTERN_DEV_OUTBOX", "true".into()),
        ("LECTERN_FIELD_KEYS", field),
        ("LECTERN_BLIND_INDEX_KEY", blind),
        ("LECTERN_TOKEN_KEY", token),
        (
            "LECTERN_PLAYBACK_KEYS",
            lectern_secrets::PlaybackKey::generate("t1").to_setting(),
        ),
    ]
}

/// Seconds since the Unix epoch, as playback tokens count expiry.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

/// Runs `cmd` with `stdin` (if any) as its input and its output captured.
pub fn run_with_input(cmd: &mut Command, stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}
