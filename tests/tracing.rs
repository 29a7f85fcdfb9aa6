//! Trace export end to end: `lectern serve` with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at an OTLP/HTTP receiver this
//! test runs (it decodes the protobuf the collector would). A partner
//! uploads a file with tus (its final PATCH creates the asset, whose
//! transcode job the database queues in the same statement), the
//! in-process worker claims the job and fails it as corrupt media, and the
//! server is stopped (which flushes the last batch). The receiver must
//! hold the PATCH's request span, named by its route template, and the
//! job's span as its child in the same trace; and nothing it received may
//! contain the partner's bearer token or the upload's raw path.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use sqlx::PgPool;
use uuid::Uuid;

use common::{free_addr, lectern, workdir, Server};

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Exported {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: BTreeMap<String, String>,
    service: String,
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn decode(bodies: &[Vec<u8>]) -> Vec<Exported> {
    let mut out = Vec::new();
    for body in bodies {
        let request = ExportTraceServiceRequest::decode(body.as_slice())
            .expect("the exporter posts OTLP protobuf");
        for resource in request.resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(kv.value.as_ref()))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    out.push(Exported {
                        name: span.name,
                        trace_id: hex::encode(span.trace_id),
                        span_id: hex::encode(span.span_id),
                        parent_span_id: hex::encode(span.parent_span_id),
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                            .collect(),
                        service: service.clone(),
                    });
                }
            }
        }
    }
    out
}

/// Bytes that sniff as MP4 and are not: the worker fails them at once.
fn corrupt_mp4() -> Vec<u8> {
    let mut bytes = vec![0, 0, 0, 24];
    bytes.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    while bytes.len() < 64 * 1024 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes
}

#[sqlx::test]
async fn an_upload_and_its_transcode_are_one_exported_trace(db: PgPool) {
    // The OTLP/HTTP receiver: keeps every body posted to /v1/traces.
    let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let kept = bodies.clone();
    let receiver = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    assert_eq!(
                        headers.get("content-type").and_then(|v| v.to_str().ok()),
                        Some("application/x-protobuf")
                    );
                    kept.lock().unwrap().push(body.to_vec());
                    // An empty ExportTraceServiceResponse: all accepted.
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            },
        ),
    );
    // On a runtime of its own: the test's runtime blocks while it waits
    // for the server to exit, which is when the last batch is posted.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, receiver).await
            })
    });

    let dir = workdir();
    let addr = free_addr();
    let url = common::database_url(&db).await;
    let command = || {
        let mut cmd = lectern(dir.path());
        cmd.env("DATABASE_URL", &url)
            .envs(common::deployment_secrets())
            .env("LECTERN_HTTP_ADDR", &addr)
            .env("LECTERN_SERVE_WORKERS", "1")
            .env("LECTERN_LOG", "warn")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)
            .env("OTEL_SERVICE_NAME", "lectern-trace-test");
        cmd
    };
    let admin = |args: &[&str]| {
        let out = command().arg("admin").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    admin(&["create-org", "Tracing Society"]);
    let token = admin(&["create-partner-key", "--org", "Tracing Society"]);
    assert!(token.starts_with("lk_"), "{token}");

    let server = Server(
        command()
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match http.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status() == 200 => break,
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "lectern serve did not become ready"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    // tus: create, then one PATCH with every byte (it completes the upload
    // and creates the asset).
    let body = corrupt_mp4();
    let created = http
        .post(format!("{base}/api/v1/uploads"))
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", body.len().to_string())
        .header("Upload-Metadata", "filename Y29ycnVwdC5tcDQ=")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let asset: Uuid = location.rsplit('/').next().unwrap().parse().unwrap();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("{base}{location}")
    };
    let patched = http
        .patch(&location)
        .bearer_auth(&token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 204, "{:?}", patched.text().await);

    // The job carries the request's trace context, and the worker ends it.
    let traceparent: Option<String> =
        sqlx::query_scalar("SELECT traceparent FROM jobs WHERE asset_id = $1")
            .bind(asset)
            .fetch_one(&db)
            .await
            .unwrap();
    let traceparent = traceparent.expect("the job stored the request's traceparent");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status: String = sqlx::query_scalar("SELECT status::text FROM assets WHERE id = $1")
            .bind(asset)
            .fetch_one(&db)
            .await
            .unwrap();
        if status == "failed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job did not finish: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // SIGTERM: the exporter flushes its last batch before the exit.
    let status = server.terminate();
    assert!(status.success(), "{status:?}");

    let raw = bodies.lock().unwrap().clone();
    assert!(!raw.is_empty(), "nothing was exported");
    let spans = decode(&raw);
    let patch = spans
        .iter()
        .find(|s| {
            s.attributes.get("http.request.method").map(String::as_str) == Some("PATCH")
                && s.attributes
                    .get("http.response.status_code")
                    .map(String::as_str)
                    == Some("204")
        })
        .unwrap_or_else(|| panic!("no PATCH request span among {spans:#?}"));
    let route = &patch.attributes["http.route"];
    assert!(route.starts_with("/api/v1/uploads"), "{patch:#?}");
    assert!(
        !route.contains(&asset.to_string()) && !patch.name.contains(&asset.to_string()),
        "the route template, not the raw path: {patch:#?}"
    );
    assert_eq!(patch.name, "request");
    assert_eq!(patch.service, "lectern-trace-test");
    let job = spans
        .iter()
        .find(|s| s.name == "job" && s.attributes.get("asset") == Some(&asset.to_string()))
        .unwrap_or_else(|| panic!("no job span for {asset} among {spans:#?}"));
    assert_eq!(job.attributes["kind"], "transcode", "{job:#?}");
    assert_eq!(
        job.trace_id, patch.trace_id,
        "the job continues the upload's trace: {patch:#?}\n{job:#?}"
    );
    assert_eq!(
        job.parent_span_id, patch.span_id,
        "the job's parent is the request that queued it"
    );
    assert!(
        traceparent.contains(&patch.trace_id) && traceparent.contains(&patch.span_id),
        "{traceparent}"
    );

    // Nothing exported holds the credential or the upload's raw path.
    let raw_path = format!("/api/v1/uploads/{asset}");
    for body in &raw {
        for secret in [token.as_bytes(), raw_path.as_bytes()] {
            assert!(
                !body.windows(secret.len()).any(|w| w == secret),
                "{:?} was exported",
                String::from_utf8_lossy(secret)
            );
        }
    }
}
