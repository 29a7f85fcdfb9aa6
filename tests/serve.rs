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

/// The outbox notifier keeps one-time codes in a table in the clear: with a
/// shared database, `serve` needs to be told this deployment is development.
#[test]
fn serve_refuses_the_dev_outbox_with_an_external_database() {
    let dir = workdir();
    let mut server = Server(
        lectern(dir.path())
            .arg("serve")
            .env("LECTERN_HTTP_ADDR", free_addr())
            // Nothing listens here: the refusal must come before any connection.
            .env("DATABASE_URL", "postgres://lectern@127.0.0.1:9/lectern")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "serve started with the dev outbox and an external database"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    use std::io::Read;
    server
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("LECTERN_DEV_OUTBOX"), "stderr: {stderr}");
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
            .env("LECTERN_DEV_OUTBOX", "true")
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

/// `serve` with no database to wait for (nothing listens on port 9), so it
/// answers `/healthz` at once; `extra` are more variables.
fn serve_without_database(dir: &std::path::Path, addr: &str, extra: &[(&str, &str)]) -> Server {
    Server(
        lectern(dir)
            .arg("serve")
            .env("LECTERN_HTTP_ADDR", addr)
            .env("DATABASE_URL", "postgres://lectern@127.0.0.1:9/lectern")
            .env("LECTERN_DEV_OUTBOX", "true")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Reads until the server closes the connection, while `keep_busy` (if
/// any) trickles bytes at it; true if it closed within `within`.
async fn closed_by_server(
    stream: tokio::net::TcpStream,
    keep_busy: Option<&[u8]>,
    within: Duration,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut read, mut write) = stream.into_split();
    let reader = async move {
        let mut buf = [0u8; 4096];
        // Data (a 408, say) may come first; the end is what counts.
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let trickle = async move {
        if let Some(bytes) = keep_busy {
            for b in bytes.iter().cycle() {
                if write.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        std::future::pending::<()>().await
    };
    tokio::time::timeout(within, async {
        tokio::select! {
            () = reader => {},
            () = trickle => {},
        }
    })
    .await
    .is_ok()
}

/// A slowloris sends its headers a byte at a time and never finishes; an
/// idle client sends nothing; a keep-alive client goes quiet after its
/// response. The server must close all three once the header-read timeout
/// passes, and keep answering others.
#[tokio::test]
async fn slow_and_idle_connections_are_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let dir = workdir();
    let addr = free_addr();
    let _server =
        serve_without_database(dir.path(), &addr, &[("LECTERN_HTTP_HEADER_TIMEOUT", "2s")]);
    wait_for(
        &format!("http://{addr}/healthz"),
        200,
        Duration::from_secs(60),
    )
    .await;
    // Generous: the timeout is 2 s; a server that never closes fails.
    let within = Duration::from_secs(20);

    let idle = TcpStream::connect(&addr).await.unwrap();
    assert!(
        closed_by_server(idle, None, within).await,
        "an idle connection stayed open"
    );

    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    assert!(
        closed_by_server(slow, Some(b"X-Slow: 1\r\n"), within).await,
        "a connection trickling its headers stayed open"
    );

    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(
        closed_by_server(kept, None, within).await,
        "an idle keep-alive connection stayed open"
    );

    let health = wait_for(
        &format!("http://{addr}/healthz"),
        200,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(health["status"], "ok");
}

/// 2,000 half-open requests against a server started, as systemd starts
/// services, with a soft limit of 1,024 open files: `/healthz` still
/// answers at once (the server raises its soft limit to the hard one, and
/// each connection is its own task).
#[tokio::test]
async fn a_slowloris_of_2000_half_open_requests_does_not_stop_healthz() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let dir = workdir();
    let addr = free_addr();
    let mut cmd = std::process::Command::new("sh");
    for (key, _) in std::env::vars() {
        if key.starts_with("LECTERN_") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    let _server = Server(
        cmd.current_dir(dir.path())
            .args(["-c", "ulimit -Sn 1024 && exec \"$0\" serve"])
            .arg(env!("CARGO_BIN_EXE_lectern"))
            .env("LECTERN_HTTP_ADDR", &addr)
            .env("DATABASE_URL", "postgres://lectern@127.0.0.1:9/lectern")
            .env("LECTERN_DEV_OUTBOX", "true")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(
        &format!("http://{addr}/healthz"),
        200,
        Duration::from_secs(60),
    )
    .await;

    let mut held = Vec::new();
    // A server that stops accepting makes connects hang: bound the attack.
    let deadline = Instant::now() + Duration::from_secs(30);
    while held.len() < 2000 && Instant::now() < deadline {
        let connect = TcpStream::connect(&addr);
        let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(1), connect).await else {
            continue;
        };
        if stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
            .await
            .is_ok()
        {
            held.push(stream);
        }
    }
    println!("{} half-open requests held", held.len());

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let answer = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .map(|r| r.status().as_u16());
    assert_eq!(
        answer.as_ref().ok(),
        Some(&200),
        "/healthz under a slowloris of {} half-open requests: {answer:?}",
        held.len()
    );
    drop(held);
}

/// The embedded cluster is private to the service: another local user
/// (`nobody`) cannot connect to it, not even knowing where its socket is,
/// while the service, with the generated password, can.
#[tokio::test]
async fn another_local_user_cannot_connect_to_the_embedded_database() {
    // Acting as another local user needs root.
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipped: acting as another local user needs root");
        return;
    }
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
    wait_for(
        &format!("http://{addr}/readyz"),
        200,
        Duration::from_secs(120),
    )
    .await;
    let lectern_dir = dir.path().join(".lectern");
    let pid_file = std::fs::read_to_string(lectern_dir.join("pg/data/postmaster.pid")).unwrap();
    let mut lines = pid_file.lines().skip(3);
    let port = lines.next().unwrap().trim().to_owned();
    let socket_dir = lines.next().unwrap().trim().to_owned();
    let psql = |user: &str, password: Option<&str>| {
        let mut cmd = std::process::Command::new("runuser");
        cmd.args(["-u", user, "--", "psql", "-w", "-X", "-q", "-tA"])
            .args([
                "-h",
                &socket_dir,
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "lectern",
            ])
            .args(["-c", "select 1"])
            .current_dir("/")
            .env_remove("PGPASSWORD");
        if let Some(password) = password {
            cmd.env("PGPASSWORD", password);
        }
        cmd.output().unwrap()
    };
    let other = psql("nobody", None);
    let refusal = String::from_utf8_lossy(&other.stderr).to_string();
    println!("nobody: {}", refusal.trim());
    assert!(
        !other.status.success(),
        "another local user connected to the embedded database: {}",
        String::from_utf8_lossy(&other.stdout)
    );
    assert!(refusal.contains("connection to server"), "{refusal}");

    // The control: the service's own user, with the password, gets in —
    // and without it does not.
    let password = std::fs::read_to_string(lectern_dir.join("pg_password")).unwrap();
    let own = psql("root", Some(password.trim()));
    assert!(
        own.status.success(),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    assert!(!psql("root", None).status.success(), "no password needed");

    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&lectern_dir.join("pg_password")), 0o600);
    assert_eq!(mode(std::path::Path::new(&socket_dir)), 0o700);
    let hba = std::fs::read_to_string(lectern_dir.join("pg/data/pg_hba.conf")).unwrap();
    assert!(
        !hba.lines().any(|l| l
            .split('#')
            .next()
            .unwrap()
            .split_whitespace()
            .any(|f| f == "trust")),
        "pg_hba.conf trusts: {hba}"
    );
    let status = server.terminate();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

/// A cluster an older Lectern made with `trust` auth is given the generated
/// password and switched to scram-sha-256 when `serve` starts on it.
#[tokio::test]
async fn an_old_trusting_embedded_cluster_is_given_a_password() {
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipped: the cluster runs as the postgres user only under root");
        return;
    }
    let dir = workdir();
    let base = dir.path().join(".lectern/pg");
    std::fs::create_dir_all(&base).unwrap();
    let chown = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&base)
        .status()
        .unwrap();
    assert!(chown.success());
    // What embedded mode's initdb used to be.
    let initdb = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pg_bin().join("initdb"))
        .arg("-D")
        .arg(base.join("data"))
        .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        initdb.status.success(),
        "{}",
        String::from_utf8_lossy(&initdb.stderr)
    );
    let addr = free_addr();
    let server = Server(
        lectern(dir.path())
            .arg("serve")
            .env("LECTERN_HTTP_ADDR", &addr)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let body = wait_for(
        &format!("http://{addr}/readyz"),
        200,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(body["checks"]["database"], "ok", "{body}");
    let hba = std::fs::read_to_string(base.join("data/pg_hba.conf")).unwrap();
    assert!(
        !hba.lines().any(|l| l
            .split('#')
            .next()
            .unwrap()
            .split_whitespace()
            .any(|f| f == "trust")),
        "pg_hba.conf still trusts: {hba}"
    );
    let without_password = std::process::Command::new("psql")
        .args([
            "-w", "-X", "-tA", "-U", "postgres", "-d", "lectern", "-c", "select 1",
        ])
        .arg("-h")
        .arg(base.join("run"))
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert!(
        !without_password.status.success(),
        "the old cluster still lets anyone in without a password"
    );
    let status = server.terminate();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

/// PostgreSQL's server binaries, as embedded mode finds them.
fn pg_bin() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("LECTERN_PG_BIN") {
        return dir.into();
    }
    let mut versions: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL binaries (run infra/dev/setup)")
}
