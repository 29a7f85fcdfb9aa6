//! `lectern serve` over TLS, probed with the `openssl` CLI as an assessor
//! would: TLS 1.1 is refused, TLS 1.2 and 1.3 handshake, responses carry
//! HSTS and the security headers, SIGTERM still exits 0 — and plain HTTP
//! on a public address is refused at start-up.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_addr, lectern, Server};

fn self_signed(dir: &Path) -> (String, String) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

/// `openssl s_client` with one protocol version, sending `request`.
fn s_client(addr: &str, version: &str, request: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("openssl")
        // SECLEVEL=0 so the client itself is willing to offer TLS 1.1: the
        // refusal we assert must come from the server.
        .args([
            "s_client",
            "-connect",
            addr,
            version,
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-ign_eof",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

#[test]
fn tls_1_2_and_1_3_only_with_hsts_and_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let addr = free_addr();
    let server = Server(
        lectern(dir.path())
            .arg("serve")
            .env("LECTERN_HTTP_ADDR", &addr)
            .env("LECTERN_TLS_CERT", &cert)
            .env("LECTERN_TLS_KEY", &key)
            // No database is needed to speak TLS; nothing listens here.
            .env("DATABASE_URL", "postgres://lectern@127.0.0.1:9/lectern")
            .env("LECTERN_DEV_OUTBOX", "true")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let tls13 = loop {
        let out = s_client(&addr, "-tls1_3", HEALTHZ);
        if out.status.success() {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "no TLS 1.3 handshake: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let text = String::from_utf8_lossy(&tls13.stdout).to_string();
    println!(
        "TLS 1.3: {}",
        text.lines().find(|l| l.contains("TLSv1.3")).unwrap_or("?")
    );
    assert!(text.contains("TLSv1.3"), "{text}");
    assert!(text.contains("HTTP/1.1 200 OK"), "{text}");
    let lower = text.to_lowercase();
    for header in [
        "strict-transport-security: max-age=31536000",
        "x-content-type-options: nosniff",
        "x-frame-options: deny",
        "content-security-policy: frame-ancestors 'none'",
        "referrer-policy: no-referrer",
    ] {
        assert!(lower.contains(header), "missing {header}: {text}");
    }

    // A scraper on this machine reads /metrics without credentials (the
    // client address comes through the TLS listener).
    let metrics = s_client(
        &addr,
        "-tls1_3",
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&metrics.stdout).to_string();
    assert!(text.contains("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.contains("lectern_logins_total{outcome=\"failure\"} 0"),
        "{text}"
    );
    let proxied = s_client(
        &addr,
        "-tls1_3",
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 203.0.113.1\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&proxied.stdout).to_string();
    assert!(
        text.contains("HTTP/1.1 401"),
        "a request forwarded by a local proxy is not local: {text}"
    );

    let tls12 = s_client(&addr, "-tls1_2", HEALTHZ);
    let text = String::from_utf8_lossy(&tls12.stdout).to_string();
    println!(
        "TLS 1.2: {}",
        text.lines().find(|l| l.contains("TLSv1.2")).unwrap_or("?")
    );
    assert!(tls12.status.success(), "{text}");
    assert!(
        text.contains("TLSv1.2") && text.contains("HTTP/1.1 200 OK"),
        "{text}"
    );

    for old in ["-tls1_1", "-tls1"] {
        let refused = s_client(&addr, old, HEALTHZ);
        let stderr = String::from_utf8_lossy(&refused.stderr).to_string();
        println!(
            "{old}: exit {:?}; {}",
            refused.status.code(),
            stderr.lines().next().unwrap_or("")
        );
        assert!(
            !refused.status.success(),
            "{old} must not handshake: {stderr}"
        );
        assert!(!String::from_utf8_lossy(&refused.stdout).contains("200 OK"));
    }

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg(format!("http://{addr}/healthz"))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain.stdout), "200");

    let status = server.terminate();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}

#[test]
fn plain_http_on_a_public_address_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = lectern(dir.path())
        .arg("serve")
        .env("LECTERN_HTTP_ADDR", "0.0.0.0:0")
        .env("DATABASE_URL", "postgres://lectern@127.0.0.1:9/lectern")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("LECTERN_HTTP_ADDR") && stderr.contains("LECTERN_TLS_CERT"),
        "{stderr}"
    );

    let (cert, _) = self_signed(dir.path());
    let out = lectern(dir.path())
        .arg("serve")
        .env("LECTERN_TLS_CERT", &cert)
        .env("LECTERN_TLS_KEY", dir.path().join("missing.pem"))
        .env("DATABASE_URL", "postgres://lectern@127.0.0.1:9/lectern")
        .env("LECTERN_DEV_OUTBOX", "true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("LECTERN_TLS_KEY"));
}

/// A client that completes the TLS handshake and then sends nothing is
/// disconnected once the header-read timeout passes (a slowloris over TLS
/// holds a connection no longer than one over plain HTTP).
#[test]
fn an_idle_tls_connection_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let addr = free_addr();
    let _server = Server(
        lectern(dir.path())
            .arg("serve")
            .env("LECTERN_HTTP_ADDR", &addr)
            .env("LECTERN_TLS_CERT", &cert)
            .env("LECTERN_TLS_KEY", &key)
            .env("LECTERN_HTTP_HEADER_TIMEOUT", "2s")
            .env("DATABASE_URL", "postgres://lectern@127.0.0.1:9/lectern")
            .env("LECTERN_DEV_OUTBOX", "true")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s_client(&addr, "-tls1_3", HEALTHZ).status.success() {
        assert!(Instant::now() < deadline, "no TLS handshake");
        std::thread::sleep(Duration::from_millis(250));
    }
    // Handshakes, then holds its end open and says nothing.
    let mut idle = Command::new("openssl")
        .args(["s_client", "-connect", &addr, "-tls1_3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = idle.stdin.take();
    let deadline = Instant::now() + Duration::from_secs(20);
    let closed = loop {
        if idle.try_wait().unwrap().is_some() {
            break true;
        }
        if Instant::now() > deadline {
            let _ = idle.kill();
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(stdin);
    let out = idle.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("TLSv1.3"), "no handshake: {text}");
    assert!(closed, "an idle TLS connection stayed open");
}
