//! End-to-end tests of the `lectern` binary: configuration errors, serving
//! on embedded defaults, readiness with a dead database, migrations against
//! the real PostgreSQL from `infra/dev/services`.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{free_addr, lectern, workdir, Server};

/// Polls `url` until it answers with `want`, returning the last body.
async fn wait_for(url: &str, want: u16, within: Duration) -> serde_json::Value {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        if let Ok(resp) = client.get(url).send().await {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            if status == want {
                return serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
            }
            last = format!("{status} {body}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{url} never answered {want} within {within:?}; last: {last}");
}

#[test]
fn invalid_configuration_exits_with_one_line_naming_the_variable() {
    let dir = workdir();
    let out = lectern(dir.path())
        .arg("serve")
        .env("LECTERN_STORAGE", "s4")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.contains("LECTERN_STORAGE"), "stderr: {stderr}");
    assert!(stderr.contains("s4"), "stderr: {stderr}");
}

#[tokio::test]
async fn serve_with_no_configuration_is_ready_on_embedded_defaults() {
    let dir = workdir();
    let addr = free_addr();
    let server = Server(
        lectern(dir.path())
            .arg("serve")
            .env("LECTERN_HTTP_ADDR", &addr)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // First start runs initdb: allow for a slow machine.
    let body = wait_for(
        &format!("http://{addr}/readyz"),
        200,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(body["checks"]["database"], "ok", "{body}");
    assert_eq!(body["checks"]["storage"], "ok", "{body}");
    let health = wait_for(
        &format!("http://{addr}/healthz"),
        200,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(health["status"], "ok");
    assert!(
        dir.path().join(".lectern/pg/data/PG_VERSION").exists(),
        "the private cluster lives under ./.lectern/pg"
    );
    assert!(dir.path().join(".lectern/storage").is_dir());
    let status = server.terminate();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

#[tokio::test]
async fn readiness_names_an_unreachable_database() {
    let dir = workdir();
    let addr = free_addr();
    // Nothing listens on port 9 (discard) on loopback.
    let _server = Server(
        lectern(dir.path())
            .arg("serve")
            .env("LECTERN_HTTP_ADDR", &addr)
            .env("DATABASE_URL", "postgres://lectern@127.0.0.1:9/lectern")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let body = wait_for(
        &format!("http://{addr}/readyz"),
        503,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(body["error"]["code"], "not_ready", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("database"), "{body}");
    assert!(body["checks"]["database"]["error"].is_string(), "{body}");
    assert_eq!(body["checks"]["storage"], "ok", "{body}");
}

#[tokio::test]
async fn migrate_applies_the_schema_to_a_real_server() {
    let admin_url = std::env::var("DATABASE_URL").expect(
        "DATABASE_URL must point at the test PostgreSQL: run `infra/dev/services up` \
         and `set -a; . .lectern/env; set +a` (make test does both)",
    );
    let name = format!("lectern_cli_{}", std::process::id());
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = match admin_url.rfind('/') {
        Some(i) => format!("{}/{name}", &admin_url[..i]),
        None => panic!("unexpected DATABASE_URL {admin_url}"),
    };
    eprintln!("migrating a fresh database on the real server: {url}");
    let dir = workdir();
    for _ in 0..2 {
        // Twice: migrations are idempotent.
        let out = lectern(dir.path())
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'organisations'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 1);
    drop(conn);
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}
