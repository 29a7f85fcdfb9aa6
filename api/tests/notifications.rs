//! Notifications that arrive, against the real services: e-mail goes over
//! SMTP to the local test server (aiosmtpd, started by `infra/dev/services
//! up`, which writes each message as an `.eml` file into
//! `LECTERN_TEST_SMTP_MAILDIR`), and the tests read the delivered message
//! there — invitations whose link completes sign-up (and dies when
//! resent or revoked), one-time codes that work and never reach the
//! inbox or the delivery log, retries with backoff while the server is
//! away, giving up after the last attempt, and the inbox itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine;
use lectern_api::NotifySettings;
use lectern_notify::transport::smtp::{SmtpMailer, SmtpSettings, SmtpTls};
use lectern_notify::{DispatchSettings, Notification, Topic};
use lectern_testkit::{link_token, one_time_code, wait_until, Relay, World, PASSWORD};
use lectern_web::Role;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// The test SMTP server (`infra/dev/services up` exports where it is).
struct SmtpServer {
    addr: String,
    maildir: PathBuf,
}

fn smtp_server() -> SmtpServer {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run `infra/dev/services up` and load .lectern/env")
        })
    };
    SmtpServer {
        addr: format!(
            "{}:{}",
            var("LECTERN_TEST_SMTP_HOST"),
            var("LECTERN_TEST_SMTP_PORT")
        ),
        maildir: var("LECTERN_TEST_SMTP_MAILDIR").into(),
    }
}

fn mailer(addr: &str) -> SmtpMailer {
    let (host, port) = addr.rsplit_once(':').unwrap();
    SmtpMailer::new(&SmtpSettings {
        host: host.into(),
        port: Some(port.parse().unwrap()),
        tls: SmtpTls::None,
        user: None,
        password: None,
        from: "Lectern <no-reply@lectern.example>".into(),
        timeout: Duration::from_secs(5),
    })
    .unwrap()
}

/// A world whose e-mail goes over SMTP to `addr`.
async fn world_mailing(db: PgPool, addr: &str, dispatch: DispatchSettings) -> World {
    let mut w = World::new(db).await;
    let mut settings = w.settings();
    settings.notify = NotifySettings {
        email: Some(Arc::new(mailer(addr))),
        sms: None,
        dispatch,
    };
    w.rebuild(None, settings);
    w
}

/// A world whose dispatcher allows `per_hour` notices and
/// `secret_per_hour` codes per recipient and hour.
async fn world_limited(db: PgPool, per_hour: i64, secret_per_hour: i64) -> World {
    let mut w = World::new(db).await;
    let mut settings = w.settings();
    settings.notify.dispatch = DispatchSettings {
        rate: lectern_notify::RateLimits {
            per_hour,
            secret_per_hour,
        },
        ..DispatchSettings::default()
    };
    w.rebuild(None, settings);
    w
}

/// An address no earlier run used (the maildir outlives test runs).
fn fresh(name: &str) -> String {
    format!("{name}.{}@hospital.example.cn", Uuid::new_v4().simple())
}

/// A delivered message, decoded.
struct Mail {
    headers: String,
    body: String,
}

fn decode_body(headers: &str, body: &str) -> String {
    let encoding = headers
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-transfer-encoding:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    match encoding.as_str() {
        "base64" => {
            let joined: String = body.split_whitespace().collect();
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(joined)
                    .unwrap(),
            )
            .unwrap()
        }
        "quoted-printable" => {
            let text = body.replace("=\r\n", "").replace("=\n", "");
            let b = text.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'=' && i + 2 < b.len() {
                    if let Ok(v) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                }
                out.push(b[i]);
                i += 1;
            }
            String::from_utf8(out).unwrap()
        }
        _ => body.to_string(),
    }
}

/// Every message the SMTP server received for `to`, oldest first.
fn mails_for(server: &SmtpServer, to: &str) -> Vec<Mail> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(&server.maildir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    names.sort();
    let envelope = format!("X-Envelope-To: {to}");
    names
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter(|raw| raw.lines().any(|l| l.trim_end() == envelope))
        .map(|raw| {
            let (headers, body) = raw
                .split_once("\r\n\r\n")
                .or_else(|| raw.split_once("\n\n"))
                .unwrap();
            Mail {
                body: decode_body(headers, body),
                headers: headers.to_string(),
            }
        })
        .collect()
}

/// The newest message for `to`, waiting for it (the dispatcher has
/// handed it over; the server writes it as it acknowledges).
async fn mail_for(server: &SmtpServer, to: &str, count: usize) -> Mail {
    wait_until(
        &format!("message {count} for {to} at the SMTP server"),
        Duration::from_secs(10),
        || async { mails_for(server, to).len() >= count },
    )
    .await;
    mails_for(server, to).pop().unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn an_invitation_email_arrives_its_link_completes_sign_up_and_resend_and_revoke_kill_links(
    db: PgPool,
) {
    let smtp = smtp_server();
    let w = world_mailing(db, &smtp.addr, DispatchSettings::default()).await;
    let org = w.org("中华医学会").await;
    w.user(Some(org), "admin@med.example.org", Role::ContentAdmin)
        .await;
    let admin = w.login("admin@med.example.org").await;
    let invitee = fresh("dr.li");
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/invitations",
            Some(&admin),
            Some(json!({ "email": invitee })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    w.dispatch().await;
    let first = mail_for(&smtp, &invitee, 1).await;
    assert!(
        first.headers.contains("text/plain"),
        "text only: {}",
        first.headers
    );
    // zh-CN first, then English; the link points at the app.
    let zh = first.body.find("邀请您").expect("the Chinese text");
    let en = first.body.find("invites you").expect("the English text");
    assert!(zh < en, "{}", first.body);
    assert!(first.body.contains("中华医学会"), "{}", first.body);
    assert!(
        first
            .body
            .contains("http://127.0.0.1:8080/app/invitation?token="),
        "{}",
        first.body
    );
    let old_token = link_token(&first.body);

    // Resent: a new message with a new link; the old link dies.
    let (status, body) = w
        .call(
            "POST",
            &format!("/api/v1/invitations/{id}/resend"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    w.dispatch().await;
    let second = mail_for(&smtp, &invitee, 2).await;
    let token = link_token(&second.body);
    assert_ne!(token, old_token);
    let inspect = |token: &str| Some(json!({ "token": token }));
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/invitations/inspect",
            None,
            inspect(&old_token),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::GONE, Some("invitation_superseded"))
    );
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/invitations/accept",
            None,
            Some(json!({ "token": old_token, "password": PASSWORD })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::GONE, Some("invitation_superseded"))
    );

    // Following the new link: what it is for, then sign-up completes.
    let (status, body) = w
        .call("POST", "/api/v1/invitations/inspect", None, inspect(&token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["org_name"].as_str(), body["needs_password"].as_bool()),
        (Some("中华医学会"), Some(true))
    );
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/invitations/accept",
            None,
            Some(json!({ "token": token, "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "expert");
    let expert = w.login(&invitee).await;
    let (_, me) = w.call("GET", "/api/v1/me", Some(&expert), None).await;
    assert_eq!(me["role"], "expert");

    // Revoked: its link fails with a clear code.
    let revoked = fresh("dr.zhao");
    let (_, body) = w
        .call(
            "POST",
            "/api/v1/invitations",
            Some(&admin),
            Some(json!({ "email": revoked })),
        )
        .await;
    let revoked_id = body["id"].as_str().unwrap().to_string();
    w.dispatch().await;
    let revoked_token = link_token(&mail_for(&smtp, &revoked, 1).await.body);
    let (status, body) = w
        .call(
            "POST",
            &format!("/api/v1/invitations/{revoked_id}/revoke"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    for route in ["/api/v1/invitations/inspect", "/api/v1/invitations/accept"] {
        let (status, body) = w
            .call(
                "POST",
                route,
                None,
                Some(json!({ "token": revoked_token, "password": PASSWORD })),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::GONE, Some("invitation_revoked")),
            "{route}"
        );
    }
    let (status, body) = w
        .call(
            "POST",
            &format!("/api/v1/invitations/{revoked_id}/resend"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("invitation_not_pending"))
    );

    // Listed with their state; filtered by it.
    let (status, body) = w
        .call("GET", "/api/v1/invitations", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let states: Vec<(String, String, i64)> = body["invitations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["email"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
                i["resent"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            (revoked.clone(), "revoked".into(), 0),
            (invitee.clone(), "accepted".into(), 1)
        ]
    );
    let (_, body) = w
        .call(
            "GET",
            "/api/v1/invitations?status=revoked",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(body["invitations"].as_array().unwrap().len(), 1);
    // The invitation's link never reached the delivery log.
    assert_log_holds_none_of(&w, &[&token, &old_token, &revoked_token, &invitee]).await;
}

/// Neither the delivery log nor the deliveries' errors nor the (erased)
/// queued parameters hold any of `secrets`.
async fn assert_log_holds_none_of(w: &World, secrets: &[&str]) {
    let dump: String = sqlx::query_scalar(
        "SELECT coalesce((SELECT string_agg(row_to_json(l)::text, ' ') FROM notification_delivery_log l), '') \
             || coalesce((SELECT string_agg(row_to_json(d)::text, ' ') FROM notification_deliveries d), '') \
             || coalesce((SELECT string_agg(coalesce(payload::text, '') || coalesce(encode(payload_ct, 'escape'), ''), ' ') FROM notifications), '')",
    )
    .fetch_one(w.db())
    .await
    .unwrap();
    assert!(!dump.is_empty());
    for secret in secrets {
        assert!(!dump.contains(secret), "{secret} is in the log: {dump}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_step_up_code_is_emailed_works_and_never_reaches_the_inbox_or_the_log(db: PgPool) {
    let smtp = smtp_server();
    let w = world_mailing(db, &smtp.addr, DispatchSettings::default()).await;
    let org = w.org("Medical Association").await;
    let email = fresh("chief");
    w.user(Some(org), &email, Role::ContentAdmin).await;
    let token = w.login(&email).await;
    let (status, body) = w
        .call("POST", "/api/v1/auth/step-up/code", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    w.dispatch().await;
    let mail = mail_for(&smtp, &email, 1).await;
    // The account has no language preference: zh-CN.
    assert!(mail.body.contains("验证码"), "{}", mail.body);
    let code = one_time_code(&mail.body);
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/step-up",
            Some(&token),
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["method"], "code");

    let (_, inbox) = w.call("GET", "/api/v1/me/inbox", Some(&token), None).await;
    assert_eq!(inbox["items"], json!([]), "a code never reaches the inbox");
    let (_, unread) = w
        .call("GET", "/api/v1/me/inbox/unread", Some(&token), None)
        .await;
    assert_eq!(unread["unread"], 0);
    let logged: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM notification_delivery_log WHERE topic = 'step_up_code'",
    )
    .fetch_all(w.db())
    .await
    .unwrap();
    assert_eq!(logged, vec!["sent".to_string()]);
    assert_log_holds_none_of(&w, &[&code, &email]).await;
    let erased: bool = sqlx::query_scalar(
        "SELECT bool_and(payload IS NULL AND payload_ct IS NULL) FROM notifications",
    )
    .fetch_one(w.db())
    .await
    .unwrap();
    assert!(erased, "the code is erased from the queue once sent");
    // An e-mail preference cannot silence codes.
    let (status, body) = w
        .call(
            "PUT",
            "/api/v1/me/notification-preferences",
            Some(&token),
            Some(json!({ "topics": [{ "topic": "step_up_code", "email": false }] })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("notification_mandatory")
        )
    );
}

/// Queues a `course_published` notice for `user` as another area would.
async fn notify_course(w: &World, org: Uuid, user: Uuid, title: &str) {
    let mut tx = w.db().begin().await.unwrap();
    lectern_notify::enqueue(
        &mut tx,
        &Notification {
            org_id: Some(org),
            user_id: Some(user),
            to: None,
            topic: Topic::CoursePublished,
            params: [
                ("course_title".to_string(), title.to_string()),
                (
                    "link".to_string(),
                    "https://learn.example.org/c/1".to_string(),
                ),
            ]
            .into(),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[derive(sqlx::FromRow, Debug)]
struct DeliveryState {
    status: String,
    attempts: i32,
    last_error: Option<String>,
}

async fn delivery(w: &World) -> DeliveryState {
    sqlx::query_as(
        "SELECT status, attempts, last_error FROM notification_deliveries \
         ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_one(w.db())
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_delivery_to_a_down_smtp_server_is_retried_with_backoff_until_it_is_back_or_given_up(
    db: PgPool,
) {
    let smtp = smtp_server();
    let relay = Relay::to(smtp.addr.clone()).await;
    let dispatch = DispatchSettings {
        max_attempts: 3,
        backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(5),
        ..DispatchSettings::default()
    };
    let w = world_mailing(db, &relay.addr().to_string(), dispatch).await;
    let org = w.org("Medical Association").await;
    let email = fresh("learner");
    let user = w.user(Some(org), &email, Role::Learner).await;

    relay.cut();
    notify_course(&w, org, user, "Cardiology").await;
    assert_eq!(w.state.notify.run_once().await.unwrap(), 1);
    let first = delivery(&w).await;
    assert_eq!((first.status.as_str(), first.attempts), ("pending", 1));
    assert!(first.last_error.is_some(), "{first:?}");
    // Not due again before its backoff: the next pass claims nothing.
    assert_eq!(w.state.notify.run_once().await.unwrap(), 0);
    wait_until(
        "the first retry to fall due",
        Duration::from_secs(10),
        || async { w.state.notify.run_once().await.unwrap() == 1 },
    )
    .await;
    let second = delivery(&w).await;
    assert_eq!((second.status.as_str(), second.attempts), ("pending", 2));
    // Each wait doubles the one before: exponential backoff.
    let backoffs: Vec<i64> = sqlx::query_scalar(
        "SELECT backoff_ms FROM notification_delivery_log WHERE outcome = 'retry' ORDER BY id",
    )
    .fetch_all(w.db())
    .await
    .unwrap();
    assert_eq!(backoffs, [1000, 2000]);

    // The server is back: the next attempt delivers.
    relay.restore();
    wait_until("the retry to deliver", Duration::from_secs(10), || async {
        w.state.notify.run_once().await.unwrap();
        delivery(&w).await.status == "sent"
    })
    .await;
    let mail = mail_for(&smtp, &email, 1).await;
    assert!(mail.body.contains("Cardiology"), "{}", mail.body);
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM notification_delivery_log ORDER BY id")
            .fetch_all(w.db())
            .await
            .unwrap();
    assert_eq!(outcomes, ["retry", "retry", "sent"]);

    // Down for good: given up after the last attempt, and why is recorded.
    relay.cut();
    notify_course(&w, org, user, "Neurology").await;
    wait_until(
        "the delivery to be given up",
        Duration::from_secs(20),
        || async {
            w.state.notify.run_once().await.unwrap();
            delivery(&w).await.status == "failed"
        },
    )
    .await;
    let failed = delivery(&w).await;
    assert_eq!(failed.attempts, 3);
    let reason = failed.last_error.unwrap();
    assert!(
        reason.starts_with("gave up after 3 attempts: smtp"),
        "{reason}"
    );
    let last: (String, String) = sqlx::query_as(
        "SELECT outcome, detail FROM notification_delivery_log ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(w.db())
    .await
    .unwrap();
    assert_eq!(last, ("failed".to_string(), reason));
    assert_eq!(mails_for(&smtp, &email).len(), 1, "Neurology never arrived");

    // `/metrics` counts every attempt by channel and outcome (this test's
    // process holds only these: the counters are per node).
    w.user(None, "root@notices.example", Role::SuperAdmin).await;
    let root = w.login("root@notices.example").await;
    let (status, metrics) = w.call_raw("GET", "/metrics", Some(&root), None).await;
    assert_eq!(status, StatusCode::OK, "{metrics}");
    for line in [
        "lectern_notification_deliveries_total{channel=\"email\",outcome=\"sent\"} 1",
        "lectern_notification_deliveries_total{channel=\"email\",outcome=\"retried\"} 4",
        "lectern_notification_deliveries_total{channel=\"email\",outcome=\"given_up\"} 1",
        "lectern_notification_deliveries_total{channel=\"email\",outcome=\"failed\"} 0",
        "lectern_notification_deliveries_total{channel=\"sms\",outcome=\"sent\"} 0",
        "lectern_notification_deliveries_total{channel=\"inbox\",outcome=\"sent\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} missing:\n{metrics}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_inbox_counts_unread_marks_read_and_answers_404_for_other_peoples_items(db: PgPool) {
    let w = World::new(db).await;
    let org = w.org("Alumni Office").await;
    let a = w
        .user(Some(org), "a@alumni.example.edu", Role::Learner)
        .await;
    let b = w
        .user(Some(org), "b@alumni.example.edu", Role::Learner)
        .await;
    for title in ["心血管", "Neurology", "Oncology"] {
        notify_course(&w, org, a, title).await;
    }
    notify_course(&w, org, b, "B's course").await;
    let ta = w.login("a@alumni.example.edu").await;
    let tb = w.login("b@alumni.example.edu").await;

    let (_, unread) = w
        .call("GET", "/api/v1/me/inbox/unread", Some(&ta), None)
        .await;
    assert_eq!(unread["unread"], 3);
    let (status, page) = w
        .call("GET", "/api/v1/me/inbox?limit=2", Some(&ta), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    // Newest first, rendered in the reader's language (zh-CN by default).
    assert!(items[0]["subject"].as_str().unwrap().contains("Oncology"));
    assert!(items[0]["subject"]
        .as_str()
        .unwrap()
        .starts_with("课程已发布"));
    let next = page["next"].as_str().unwrap();
    let (_, rest) = w
        .call(
            "GET",
            &format!("/api/v1/me/inbox?limit=2&after={next}"),
            Some(&ta),
            None,
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next"].is_null());
    assert!(rest["items"][0]["subject"]
        .as_str()
        .unwrap()
        .contains("心血管"));

    let item = items[0]["id"].as_str().unwrap();
    // Another person's item does not exist for them.
    let (status, body) = w
        .call(
            "POST",
            &format!("/api/v1/me/inbox/{item}/read"),
            Some(&tb),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, _) = w
        .call(
            "POST",
            &format!("/api/v1/me/inbox/{item}/read"),
            Some(&ta),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, unread) = w
        .call("GET", "/api/v1/me/inbox/unread", Some(&ta), None)
        .await;
    assert_eq!(unread["unread"], 2);
    let (_, unread_b) = w
        .call("GET", "/api/v1/me/inbox/unread", Some(&tb), None)
        .await;
    assert_eq!(unread_b["unread"], 1, "B's item was not touched");

    // English from now on; then everything read at once.
    let (status, prefs) = w
        .call(
            "PUT",
            "/api/v1/me/notification-preferences",
            Some(&ta),
            Some(json!({ "language": "en" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{prefs}");
    assert_eq!(prefs["language"], "en");
    let (_, page) = w.call("GET", "/api/v1/me/inbox", Some(&ta), None).await;
    assert!(page["items"][0]["subject"]
        .as_str()
        .unwrap()
        .starts_with("Course published"));
    assert!(page["items"][0]["read_at"].is_string());
    let (_, marked) = w
        .call("POST", "/api/v1/me/inbox/read", Some(&ta), None)
        .await;
    assert_eq!(marked["marked"], 2);
    let (_, unread) = w
        .call("GET", "/api/v1/me/inbox/unread", Some(&ta), None)
        .await;
    assert_eq!(unread["unread"], 0);

    // Turned off in the inbox: the next notice goes by e-mail only.
    let (status, _) = w
        .call(
            "PUT",
            "/api/v1/me/notification-preferences",
            Some(&ta),
            Some(json!({ "topics": [{ "topic": "course_published", "inbox": false }] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    notify_course(&w, org, a, "Dermatology").await;
    let (_, unread) = w
        .call("GET", "/api/v1/me/inbox/unread", Some(&ta), None)
        .await;
    assert_eq!(unread["unread"], 0);
    let message = w.last_message("a@alumni.example.edu").await;
    assert!(message.contains("Dermatology"), "{message}");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_recipient_gets_at_most_its_hourly_share_and_codes_are_counted_apart(db: PgPool) {
    let w = world_limited(db, 2, 1).await;
    let org = w.org("Medical Association").await;
    let email = "busy@med.example.org";
    let user = w.user(Some(org), email, Role::Learner).await;
    for title in ["One", "Two", "Three"] {
        notify_course(&w, org, user, title).await;
    }
    w.dispatch().await;
    let states: Vec<(String, i32)> =
        sqlx::query_as("SELECT status, attempts FROM notification_deliveries ORDER BY created_at")
            .fetch_all(w.db())
            .await
            .unwrap();
    // The third waits for the hour to have room, without spending an attempt.
    assert_eq!(
        states,
        [
            ("sent".into(), 1),
            ("sent".into(), 1),
            ("pending".into(), 0)
        ]
    );
    let deferred: (String, i64) = sqlx::query_as(
        "SELECT outcome, backoff_ms FROM notification_delivery_log ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(w.db())
    .await
    .unwrap();
    assert_eq!(deferred.0, "deferred");
    assert!(
        deferred.1 > 3_500_000,
        "waits most of an hour: {deferred:?}"
    );
    // A one-time code is not held back by the notices…
    let token = w.login(email).await;
    let (status, _) = w
        .call("POST", "/api/v1/auth/step-up/code", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let message = w.last_message(email).await;
    let code = one_time_code(&message);
    // …but codes have their own bound.
    let (status, _) = w
        .call("POST", "/api/v1/auth/step-up/code", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let newest = w.last_message(email).await;
    assert_eq!(one_time_code(&newest), code, "the second code waits");
}

#[sqlx::test(migrations = "../migrations")]
async fn a_rejected_comments_author_reads_the_reason_in_an_email_from_the_smtp_server(db: PgPool) {
    let smtp = smtp_server();
    let w = world_mailing(db, &smtp.addr, DispatchSettings::default()).await;
    let org = w.org("协和继续教育").await;
    w.user(Some(org), "admin@c.example.org", Role::ContentAdmin)
        .await;
    let admin = w.login("admin@c.example.org").await;
    let author = fresh("learner");
    w.user(Some(org), &author, Role::Learner).await;
    let learner = w.login(&author).await;
    let (course, lesson) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "INSERT INTO courses (id, organisation_id, title, state, published_at)
         VALUES ($1, $2, '心力衰竭诊疗', 'published', now())",
    )
    .bind(course)
    .bind(org)
    .execute(w.db())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO lessons (id, organisation_id, course_id, title) VALUES ($1, $2, $3, '第一课')",
    )
    .bind(lesson)
    .bind(org)
    .bind(course)
    .execute(w.db())
    .await
    .unwrap();
    let call = |method: &'static str, path: String, token: String, body: serde_json::Value| {
        let w = &w;
        async move {
            let (status, body) = w.call(method, &path, Some(&token), Some(body)).await;
            assert!(status.is_success(), "{method} {path}: {status} {body}");
            body
        }
    };
    call(
        "POST",
        "/api/v1/moderation/words".into(),
        admin.clone(),
        json!({ "word": "敏感词" }),
    )
    .await;
    let comment = call(
        "POST",
        format!("/api/v1/lessons/{lesson}/comments"),
        learner.clone(),
        json!({ "body": "这里有敏 感 词" }),
    )
    .await;
    assert_eq!(comment["state"], "pending");
    let (_, queue) = w
        .call("GET", "/api/v1/moderation/queue", Some(&admin), None)
        .await;
    let case = queue["cases"][0]["id"].as_str().unwrap().to_string();
    call(
        "POST",
        format!("/api/v1/moderation/cases/{case}/decision"),
        admin.clone(),
        json!({ "decision": "reject", "reason": "含有不当用语" }),
    )
    .await;
    w.dispatch().await;
    let mail = mail_for(&smtp, &author, 1).await;
    // zh-CN, the author's default: the kind, the outcome and the reason.
    assert!(mail.body.contains("评论"), "{}", mail.body);
    assert!(mail.body.contains("未通过"), "{}", mail.body);
    assert!(mail.body.contains("含有不当用语"), "{}", mail.body);
    let (_, unread) = w
        .call("GET", "/api/v1/me/inbox/unread", Some(&learner), None)
        .await;
    assert_eq!(unread["unread"], 1, "and in the inbox");
}

/// Notices queued for one person go out in the order they were queued,
/// however a pass claims them: a second one-time code must not reach the
/// mailbox before the first, which it replaced (the person would type the
/// dead one), and the hourly limit must hold back the newest notices, not
/// arbitrary ones.
#[sqlx::test(migrations = "../migrations")]
async fn a_second_code_arrives_after_the_first_it_replaced(db: PgPool) {
    let w = world_limited(db, 10_000, 10_000).await;
    let org = w.org("Medical Association").await;
    let email = "reader@med.example.org";
    let user = w.user(Some(org), email, Role::Learner).await;
    // A queue with history: sent rows, and the dead versions their sends
    // left behind.
    for n in 0..300 {
        notify_course(&w, org, user, &format!("Course {n}")).await;
    }
    // Statistics taken while they were pending, as autovacuum may have
    // left them: the planner then expects a full batch to be due.
    sqlx::query("ANALYZE notification_deliveries")
        .execute(w.db())
        .await
        .unwrap();
    w.dispatch().await;
    let token = w.login(email).await;
    let ask = || async {
        let (status, _) = w
            .call("POST", "/api/v1/auth/step-up/code", Some(&token), None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    };
    // The first code's delivery is written at the end of the table; a
    // vacuum then frees room near its start, where the second's lands: the
    // table's physical order is no longer the queue's.
    ask().await;
    sqlx::query("VACUUM notification_deliveries")
        .execute(w.db())
        .await
        .unwrap();
    ask().await;
    let message = w.last_message(email).await;
    let sent_in_order: bool = sqlx::query_scalar(
        "SELECT bool_and(previous IS NULL OR previous <= sent_at) FROM ( \
           SELECT sent_at, lag(sent_at) OVER (ORDER BY created_at, id) AS previous \
           FROM notification_deliveries) d",
    )
    .fetch_one(w.db())
    .await
    .unwrap();
    assert!(sent_in_order, "deliveries went out of queue order");
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/step-up",
            Some(&token),
            Some(json!({ "code": one_time_code(&message) })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the newest message holds the live code: {body}"
    );
}
