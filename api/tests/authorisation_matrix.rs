//! The authorisation matrix, generated from the route registry: every
//! route (`lectern_api::api(..).table()`) is called as anonymous, as every
//! role of the organisation that owns the addressed resources, as every
//! role of another organisation, and as a global super admin. The expected
//! status of each call follows from the route's `Access` and the
//! permission table in `authz.rs`; the fixture below only says how to call
//! the route and what success looks like. A route without a fixture fails
//! the test, so a new route cannot ship without its row in the matrix.

use axum::http::{Method, StatusCode};
use lectern_testkit::{World, PASSWORD};
use lectern_web::{Access, Role};
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Expect {
    status: u16,
    code: Option<&'static str>,
}

const fn ok(status: u16) -> Expect {
    Expect { status, code: None }
}

const fn err(status: u16, code: &'static str) -> Expect {
    Expect {
        status,
        code: Some(code),
    }
}

/// How to call one route, and what a caller allowed to call it gets.
struct Call {
    path: String,
    body: Option<Value>,
    allowed: Expect,
    /// Addresses a resource of organisation A by id: other organisations
    /// get 404, never a hint that it exists.
    addresses_org_a: bool,
    /// The call ends the caller's session, so it uses a fresh one.
    ends_session: bool,
}

struct Caller {
    label: String,
    role: Option<Role>,
    /// The caller's account, for routes that act on their own posts.
    user_id: Option<Uuid>,
    /// `None`: anonymous or the global super admin.
    org: Option<Uuid>,
    email: Option<String>,
    token: Option<String>,
}

struct Orgs {
    a: Uuid,
    b: Uuid,
    counter: std::sync::atomic::AtomicU32,
}

impl Orgs {
    fn fresh(&self) -> u32 {
        self.counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// A fresh invitation into organisation A, and the token its message carries.
async fn invite(w: &World, orgs: &Orgs) -> (Uuid, String) {
    let email = format!("managed{}@x.example.org", orgs.fresh());
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/invitations",
            Some(&w.login("contentadmin@a.example.org").await),
            Some(json!({ "email": email })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = lectern_testkit::link_token(&w.last_message(&email).await);
    (body["id"].as_str().unwrap().parse().unwrap(), token)
}

/// An inbox item of a person of organisation A who is none of the callers.
async fn inbox_item_of_someone_else(w: &World, orgs: &Orgs) -> Uuid {
    let owner = w
        .user(
            Some(orgs.a),
            &format!("owner{}@a.example.org", orgs.fresh()),
            Role::Learner,
        )
        .await;
    let mut conn = w.db().acquire().await.unwrap();
    lectern_notify::enqueue(
        &mut conn,
        &lectern_notify::Notification {
            org_id: Some(orgs.a),
            user_id: Some(owner),
            to: None,
            topic: lectern_notify::Topic::CoursePublished,
            params: [("course_title".to_string(), "Cardiology".to_string())].into(),
        },
    )
    .await
    .unwrap();
    sqlx::query_scalar("SELECT id FROM inbox_items WHERE user_id = $1")
        .bind(owner)
        .fetch_one(w.db())
        .await
        .unwrap()
}

/// The matrix's entries: one per registered route.
async fn fixture(
    w: &World,
    orgs: &Orgs,
    me: Option<Uuid>,
    method: &Method,
    path: &str,
) -> Option<Call> {
    let call = |path: String, body: Option<Value>, allowed: Expect| Call {
        path,
        body,
        allowed,
        addresses_org_a: false,
        ends_session: false,
    };
    Some(match (method.as_str(), path) {
        ("GET", "/healthz") => call(path.into(), None, ok(200)),
        ("GET", "/readyz") => call(path.into(), None, ok(200)),
        // The demo page and its files are public. Tests run where no player
        // SDK is built (`player-sdk/dist` relative to the crate), so the page
        // is the "not built" explanation and the bundle a JSON 404.
        ("GET", "/") => call(path.into(), None, ok(503)),
        ("GET", "/demo/app.js") => call(path.into(), None, ok(200)),
        ("GET", "/demo/style.css") => call(path.into(), None, ok(200)),
        ("GET", "/player/{file}") => call(
            "/player/lectern-player.js".into(),
            None,
            err(404, "player_not_built"),
        ),
        // The web apps are public pages too; tests run where no app is built
        // (`apps/` relative to the crate), so pages are the "not built"
        // explanation and a hashed file a JSON 404.
        ("GET", "/app") | ("GET", "/admin") => call(path.into(), None, ok(308)),
        ("GET", "/app/") | ("GET", "/admin/") => call(path.into(), None, ok(503)),
        ("GET", "/app/{*path}") => call("/app/courses/x".into(), None, ok(503)),
        ("GET", "/admin/{*path}") => call(
            "/admin/assets/index-0.js".into(),
            None,
            err(404, "not_found"),
        ),
        ("POST", "/api/v1/auth/login") => call(
            path.into(),
            Some(json!({ "email": "learner@a.example.org", "password": PASSWORD })),
            ok(200),
        ),
        ("POST", "/api/v1/auth/signup") => {
            open_signup(w, orgs.a).await;
            call(
                path.into(),
                Some(json!({
                    "org_id": orgs.a,
                    "email": format!("signup{}@x.example.org", orgs.fresh()),
                    "password": PASSWORD,
                })),
                ok(202),
            )
        }
        ("POST", "/api/v1/auth/signup/confirm") => {
            open_signup(w, orgs.a).await;
            let email = format!("confirm{}@x.example.org", orgs.fresh());
            let (status, body) = w
                .call(
                    "POST",
                    "/api/v1/auth/signup",
                    None,
                    Some(json!({ "org_id": orgs.a, "email": email, "password": PASSWORD })),
                )
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            let token = lectern_testkit::link_token(&w.last_message(&email).await);
            call(path.into(), Some(json!({ "token": token })), ok(201))
        }
        ("PUT", "/api/v1/organisations/{org_id}/signup") => Call {
            addresses_org_a: true,
            ..call(
                format!("/api/v1/organisations/{}/signup", orgs.a),
                Some(json!({ "enabled": true })),
                ok(200),
            )
        },
        ("GET", "/api/v1/organisations/{org_id}/sign-in-policy") => call(
            format!("/api/v1/organisations/{}/sign-in-policy", orgs.a),
            None,
            ok(200),
        ),
        ("PUT", "/api/v1/organisations/{org_id}/sign-in-policy") => Call {
            addresses_org_a: true,
            ..call(
                format!("/api/v1/organisations/{}/sign-in-policy", orgs.a),
                Some(json!({ "methods": ["sms"], "new_accounts": "invitation" })),
                ok(200),
            )
        },
        ("POST", "/api/v1/auth/sms/code") => {
            allow_sms(w, orgs.a).await;
            call(
                path.into(),
                Some(json!({ "org_id": orgs.a, "phone": fresh_phone(orgs) })),
                ok(202),
            )
        }
        ("POST", "/api/v1/auth/sms/sign-in") => {
            allow_sms(w, orgs.a).await;
            call(
                path.into(),
                Some(json!({ "org_id": orgs.a, "phone": fresh_phone(orgs), "code": "000000" })),
                err(403, "invalid_code"),
            )
        }
        ("GET", "/api/v1/me/sign-ins") => call(path.into(), None, ok(200)),
        // No provider answers in this test: an allowed caller reaches the
        // handler, which refuses a plain-http issuer before any request.
        ("PUT", "/api/v1/organisations/{org_id}/oidc") => Call {
            addresses_org_a: true,
            ..call(
                format!("/api/v1/organisations/{}/oidc", orgs.a),
                Some(json!({
                    "issuer": "http://127.0.0.1:9",
                    "client_id": "lectern",
                    "client_secret": "s3cret",
                })),
                err(502, "provider_unavailable"),
            )
        },
        // Organisation A does not allow OIDC in the matrix.
        ("GET", "/api/v1/auth/oidc/{org_id}/start") => call(
            format!("/api/v1/auth/oidc/{}/start", orgs.a),
            None,
            err(403, "sign_in_method_disabled"),
        ),
        ("GET", "/api/v1/auth/oidc/{org_id}/callback") => call(
            format!("/api/v1/auth/oidc/{}/callback?code=c&state=s", orgs.a),
            None,
            err(401, "sign_in_rejected"),
        ),
        ("PUT", "/api/v1/organisations/{org_id}/ldap") => Call {
            addresses_org_a: true,
            ..call(
                format!("/api/v1/organisations/{}/ldap", orgs.a),
                Some(json!({
                    "url": "ldaps://ldap.a.example.org",
                    "user_base": "ou=people,dc=a,dc=example,dc=org",
                    "group_base": "ou=groups,dc=a,dc=example,dc=org",
                    "group_roles": { "doctors": "learner" },
                })),
                ok(200),
            )
        },
        // Organisation A does not allow LDAP in the matrix.
        ("POST", "/api/v1/auth/ldap/sign-in") => call(
            path.into(),
            Some(json!({ "org_id": orgs.a, "login": "zhang.wei", "password": "x" })),
            err(403, "sign_in_method_disabled"),
        ),
        ("PUT", "/api/v1/organisations/{org_id}/wechat-apps/{appid}") => Call {
            addresses_org_a: true,
            ..call(
                format!(
                    "/api/v1/organisations/{}/wechat-apps/wx00000000000000a1",
                    orgs.a
                ),
                Some(json!({ "kind": "mini_program", "secret": "s3cret" })),
                ok(200),
            )
        },
        // No app is registered under these ids in the matrix.
        ("POST", "/api/v1/auth/wechat/mini-program") => call(
            path.into(),
            Some(json!({ "appid": "wx00000000000000b2", "code": "c" })),
            err(409, "provider_not_configured"),
        ),
        ("GET", "/api/v1/auth/wechat/{appid}/authorize") => call(
            "/api/v1/auth/wechat/wx00000000000000b2/authorize".into(),
            None,
            err(409, "provider_not_configured"),
        ),
        ("GET", "/api/v1/auth/wechat/{appid}/callback") => call(
            "/api/v1/auth/wechat/wx00000000000000b2/callback?code=c&state=s".into(),
            None,
            err(401, "sign_in_rejected"),
        ),
        // Any person's session mints a code for itself.
        ("POST", "/api/v1/auth/handoff") => call(path.into(), None, ok(200)),
        // A code nobody minted: refused the same way for everyone.
        ("POST", "/api/v1/auth/handoff/redeem") => call(
            path.into(),
            Some(json!({ "code": "lh_forged" })),
            err(401, "handoff_invalid"),
        ),
        // The callers' sessions did not come from a mini-program.
        ("POST", "/api/v1/me/wechat/user-data") => call(
            path.into(),
            Some(json!({ "encrypted_data": "AAAA", "iv": "AAAA" })),
            err(400, "invalid_request"),
        ),
        ("POST", "/api/v1/auth/oidc/logout") => Call {
            ends_session: true,
            ..call(path.into(), None, ok(200))
        },
        ("POST", "/api/v1/me/sign-ins/oidc") => call(
            path.into(),
            Some(json!({})),
            err(403, "sign_in_method_disabled"),
        ),
        ("DELETE", "/api/v1/me/sign-ins/{identity_id}") => {
            let identity = match me {
                Some(me) => linked_identity(w, orgs, me).await,
                None => Uuid::now_v7(),
            };
            call(format!("/api/v1/me/sign-ins/{identity}"), None, ok(204))
        }
        ("POST", "/api/v1/me/phone") => call(
            path.into(),
            Some(json!({ "phone": fresh_phone(orgs) })),
            ok(202),
        ),
        ("POST", "/api/v1/me/phone/confirm") => call(
            path.into(),
            Some(json!({ "code": "000000" })),
            err(403, "invalid_code"),
        ),
        ("DELETE", "/api/v1/me/phone") => {
            if let Some(me) = me {
                give_phone(w, orgs, me).await;
            }
            call(path.into(), None, ok(204))
        }
        ("POST", "/api/v1/auth/logout") => Call {
            ends_session: true,
            ..call(path.into(), None, ok(204))
        },
        ("GET", "/api/v1/me") => call(path.into(), None, ok(200)),
        ("POST", "/api/v1/me/sessions/revoke") => Call {
            ends_session: true,
            ..call(path.into(), None, ok(200))
        },
        ("POST", "/api/v1/me/totp") => {
            call(path.into(), Some(json!({ "password": PASSWORD })), ok(200))
        }
        ("POST", "/api/v1/me/totp/confirm") => call(
            path.into(),
            Some(json!({ "code": "not-a-code" })),
            err(403, "invalid_code"),
        ),
        ("POST", "/api/v1/auth/step-up/code") => call(path.into(), None, ok(202)),
        ("POST", "/api/v1/auth/step-up") => call(
            path.into(),
            Some(json!({ "totp": "not-a-code" })),
            err(409, "totp_not_enabled"),
        ),
        ("GET", "/api/v1/users") => call(path.into(), None, ok(200)),
        ("GET", "/api/v1/users/export") => call(path.into(), None, ok(200)),
        ("PUT", "/api/v1/users/{user_id}/role") => {
            let victim = w
                .user(
                    Some(orgs.a),
                    &format!("role{}@a.example.org", orgs.fresh()),
                    Role::Learner,
                )
                .await;
            Call {
                addresses_org_a: true,
                ..call(
                    format!("/api/v1/users/{victim}/role"),
                    Some(json!({ "role": "expert" })),
                    ok(200),
                )
            }
        }
        ("DELETE", "/api/v1/users/{user_id}") => {
            let victim = w
                .user(
                    Some(orgs.a),
                    &format!("del{}@a.example.org", orgs.fresh()),
                    Role::Learner,
                )
                .await;
            Call {
                addresses_org_a: true,
                ..call(format!("/api/v1/users/{victim}"), None, ok(204))
            }
        }
        ("POST", "/api/v1/courses") => Call {
            addresses_org_a: {
                everyone_has_a_profile(w, orgs).await;
                true
            },
            ..call(
                path.into(),
                Some(json!({ "title": "心血管疾病诊疗指南", "org_id": orgs.a })),
                ok(201),
            )
        },
        ("DELETE", "/api/v1/courses/{course_id}") => {
            let course = Uuid::now_v7();
            sqlx::query("INSERT INTO courses (id, organisation_id, title) VALUES ($1, $2, $3)")
                .bind(course)
                .bind(orgs.a)
                .bind(format!("course {}", orgs.fresh()))
                .execute(w.db())
                .await
                .unwrap();
            Call {
                addresses_org_a: true,
                ..call(format!("/api/v1/courses/{course}"), None, ok(204))
            }
        }
        ("POST", "/api/v1/invitations") => Call {
            addresses_org_a: true,
            ..call(
                path.into(),
                Some(
                    json!({ "email": format!("invitee{}@x.example.org", orgs.fresh()), "org_id": orgs.a }),
                ),
                ok(201),
            )
        },
        ("POST", "/api/v1/invitations/accept") => {
            let email = format!("accept{}@x.example.org", orgs.fresh());
            let (status, body) = w
                .call(
                    "POST",
                    "/api/v1/invitations",
                    Some(&w.login("contentadmin@a.example.org").await),
                    Some(json!({ "email": email })),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            let token = lectern_testkit::link_token(&w.last_message(&email).await);
            call(
                path.into(),
                Some(json!({ "token": token, "password": PASSWORD })),
                ok(200),
            )
        }
        ("GET", "/api/v1/invitations") => call(path.into(), None, ok(200)),
        ("POST", "/api/v1/invitations/{invitation_id}/resend")
        | ("POST", "/api/v1/invitations/{invitation_id}/revoke") => {
            let invitation = invite(w, orgs).await.0;
            Call {
                addresses_org_a: true,
                ..call(
                    path.replace("{invitation_id}", &invitation.to_string()),
                    None,
                    ok(if path.ends_with("resend") { 200 } else { 204 }),
                )
            }
        }
        ("POST", "/api/v1/invitations/inspect") => {
            let token = invite(w, orgs).await.1;
            call(path.into(), Some(json!({ "token": token })), ok(200))
        }
        ("GET", "/api/v1/me/expert-profile") => {
            everyone_has_a_profile(w, orgs).await;
            call(path.into(), None, ok(200))
        }
        ("PATCH", "/api/v1/me/expert-profile") => {
            everyone_has_a_profile(w, orgs).await;
            call(path.into(), Some(json!({ "title": "主任医师" })), ok(200))
        }
        // The inbox is the caller's own: every person may read theirs, and
        // an item of someone else (here of a person no caller is) is 404.
        ("GET", "/api/v1/me/inbox") | ("GET", "/api/v1/me/inbox/unread") => {
            call(path.into(), None, ok(200))
        }
        ("POST", "/api/v1/me/inbox/read") => call(path.into(), None, ok(200)),
        ("POST", "/api/v1/me/inbox/{item_id}/read") => {
            let item = inbox_item_of_someone_else(w, orgs).await;
            call(
                path.replace("{item_id}", &item.to_string()),
                None,
                err(404, "not_found"),
            )
        }
        ("GET", "/api/v1/me/notification-preferences") => call(path.into(), None, ok(200)),
        ("PUT", "/api/v1/me/notification-preferences") => call(
            path.into(),
            Some(
                json!({ "language": "en", "topics": [{ "topic": "course_published", "sms": false }] }),
            ),
            ok(200),
        ),
        // tus: whoever may upload gets past authorisation to the protocol,
        // which refuses these calls for lacking `Tus-Resumable` (412). That
        // another organisation's upload answers 404 is tested in ingest.
        ("OPTIONS", "/api/v1/uploads") | ("OPTIONS", "/api/v1/uploads/{upload_id}") => call(
            path.replace("{upload_id}", &Uuid::new_v4().to_string()),
            None,
            ok(204),
        ),
        ("POST", "/api/v1/uploads") => call(path.into(), None, err(412, "unsupported_tus_version")),
        ("HEAD", "/api/v1/uploads/{upload_id}")
        | ("PATCH", "/api/v1/uploads/{upload_id}")
        | ("DELETE", "/api/v1/uploads/{upload_id}") => call(
            path.replace("{upload_id}", &Uuid::new_v4().to_string()),
            None,
            ok(412),
        ),
        ("GET", "/api/v1/assets") => call(path.into(), None, ok(200)),
        // URL pull: whoever may upload gets past authorisation to the SSRF
        // check, which refuses a loopback source without any network use.
        ("POST", "/api/v1/assets") => Call {
            addresses_org_a: true,
            ..call(
                path.into(),
                Some(json!({ "source_url": "http://127.0.0.1:9/lecture.mp4", "org_id": orgs.a })),
                err(422, "private_address"),
            )
        },
        ("GET", "/api/v1/pulls/{pull_id}") => {
            let pull = Uuid::new_v4();
            sqlx::query(
                "INSERT INTO pulls (id, organisation_id, source_url, profile)
                 VALUES ($1, $2, 'https://media.example.org/a.mp4', 'default')",
            )
            .bind(pull)
            .bind(orgs.a)
            .execute(w.db())
            .await
            .unwrap();
            Call {
                addresses_org_a: true,
                ..call(path.replace("{pull_id}", &pull.to_string()), None, ok(200))
            }
        }
        ("GET", "/api/v1/assets/{asset_id}") | ("GET", "/api/v1/assets/{asset_id}/events") => {
            let asset = Uuid::new_v4();
            lectern_assets::create(
                w.db(),
                &lectern_assets::NewAsset {
                    id: asset,
                    organisation_id: orgs.a,
                    source_key: lectern_assets::keys::source_key(asset),
                    title: Some("Grand rounds".into()),
                    profile: "default".into(),
                    priority: 0,
                },
            )
            .await
            .unwrap();
            Call {
                addresses_org_a: true,
                ..call(
                    path.replace("{asset_id}", &asset.to_string()),
                    None,
                    ok(200),
                )
            }
        }
        ("POST", "/api/v1/live-events") => {
            let (course, chapter, _) = catalogue_course(w, orgs.a, "draft").await;
            Call {
                addresses_org_a: true,
                ..call(
                    path.into(),
                    Some(json!({
                        "course_id": course,
                        "chapter_id": chapter,
                        "title": "直播 · Live grand rounds",
                        "scheduled_start": "2026-12-07T10:00:00Z",
                    })),
                    ok(201),
                )
            }
        }
        ("GET", "/api/v1/live-events") | ("GET", "/api/v1/live-now") => {
            call(path.into(), None, ok(200))
        }
        ("GET", "/api/v1/live-events/{event_id}")
        | ("POST", "/api/v1/live-events/{event_id}/stream-key")
        | ("POST", "/api/v1/live-events/{event_id}/end") => {
            let event = live_event(w, orgs.a).await;
            Call {
                addresses_org_a: true,
                ..call(
                    path.replace("{event_id}", &event.to_string()),
                    None,
                    ok(200),
                )
            }
        }
        ("POST", "/api/v1/webhooks") => Call {
            addresses_org_a: true,
            ..call(
                path.into(),
                Some(json!({ "url": "https://hooks.example.org/lectern", "org_id": orgs.a })),
                ok(201),
            )
        },
        ("GET", "/api/v1/webhooks") => call(path.into(), None, ok(200)),
        ("DELETE", "/api/v1/webhooks/{webhook_id}")
        | ("GET", "/api/v1/webhooks/{webhook_id}/deliveries") => {
            let webhook = Uuid::new_v4();
            sqlx::query(
                "INSERT INTO webhook_endpoints (id, organisation_id, url, secret_sealed)
                 VALUES ($1, $2, 'https://hooks.example.org/a', '\\x00')",
            )
            .bind(webhook)
            .bind(orgs.a)
            .execute(w.db())
            .await
            .unwrap();
            let allowed = if method == Method::DELETE {
                ok(204)
            } else {
                ok(200)
            };
            Call {
                addresses_org_a: true,
                ..call(
                    path.replace("{webhook_id}", &webhook.to_string()),
                    None,
                    allowed,
                )
            }
        }
        ("GET", "/api/v1/disciplines") | ("GET", "/api/v1/experts") => Call {
            addresses_org_a: true,
            ..call(format!("{path}?org_id={}", orgs.a), None, ok(200))
        },
        ("POST", "/api/v1/disciplines") => Call {
            addresses_org_a: true,
            ..call(
                path.into(),
                Some(json!({ "name": format!("心内科 {}", orgs.fresh()), "org_id": orgs.a })),
                ok(201),
            )
        },
        ("PATCH", "/api/v1/disciplines/{discipline_id}") => {
            let id = Uuid::now_v7();
            sqlx::query("INSERT INTO disciplines (id, organisation_id, name) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(orgs.a)
                .bind(format!("discipline {}", orgs.fresh()))
                .execute(w.db())
                .await
                .unwrap();
            Call {
                addresses_org_a: true,
                ..call(
                    format!("/api/v1/disciplines/{id}"),
                    Some(json!({ "name": format!("心血管内科 {}", orgs.fresh()) })),
                    ok(200),
                )
            }
        }
        ("POST", "/api/v1/experts") => Call {
            addresses_org_a: true,
            ..call(
                path.into(),
                Some(json!({ "name": "张医生", "org_id": orgs.a })),
                ok(201),
            )
        },
        ("PATCH", "/api/v1/experts/{expert_id}") => {
            let id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO experts (id, organisation_id, name) VALUES ($1, $2, '李医生')",
            )
            .bind(id)
            .bind(orgs.a)
            .execute(w.db())
            .await
            .unwrap();
            Call {
                addresses_org_a: true,
                ..call(
                    format!("/api/v1/experts/{id}"),
                    Some(json!({ "title": "主任医师" })),
                    ok(200),
                )
            }
        }
        ("GET", "/api/v1/courses") | ("GET", "/api/v1/search") | ("GET", "/api/openapi.json") => {
            call(path.into(), None, ok(200))
        }
        (method, path)
            if matches!(
                (
                    method,
                    path.trim_start_matches("/api/v1/courses/{course_id}")
                ),
                ("GET" | "PATCH", "")
                    | ("PUT", "/rating" | "/order" | "/review")
                    | ("GET", "/reviews")
                    | (
                        "POST",
                        "/chapters"
                            | "/lessons"
                            | "/submit"
                            | "/publish"
                            | "/unpublish"
                            | "/draft"
                            | "/reject"
                    )
                    | ("PATCH", "/chapters/{chapter_id}" | "/lessons/{lesson_id}")
            ) && path.starts_with("/api/v1/courses/{course_id}") =>
        {
            // Each route gets a fresh course of organisation A in the state
            // its success needs.
            let state = match (
                method,
                path.trim_start_matches("/api/v1/courses/{course_id}"),
            ) {
                ("GET" | "PUT", "" | "/rating" | "/review" | "/reviews") => "published",
                ("POST", "/publish" | "/reject") => "in_review",
                ("POST", "/unpublish") => "published",
                ("POST", "/draft") => "unpublished",
                _ => "draft",
            };
            let (course, chapter, lesson) = catalogue_course(w, orgs.a, state).await;
            let (suffix, body, allowed) = match (
                method,
                path.trim_start_matches("/api/v1/courses/{course_id}"),
            ) {
                ("GET", "") => (String::new(), None, ok(200)),
                ("PATCH", "") => (String::new(), Some(json!({ "title": "新标题" })), ok(200)),
                ("PUT", "/rating") => ("/rating".into(), Some(json!({ "rating": 4 })), ok(200)),
                ("PUT", "/review") => (
                    "/review".into(),
                    Some(json!({ "rating": 4, "body": "讲解清楚，病例典型" })),
                    ok(200),
                ),
                ("GET", "/reviews") => ("/reviews?sort=helpful".into(), None, ok(200)),
                ("POST", "/reject") => (
                    "/reject".into(),
                    Some(json!({ "reason": "第二章缺少参考文献" })),
                    ok(200),
                ),
                ("POST", "/chapters") => (
                    "/chapters".into(),
                    Some(json!({ "title": "第二章" })),
                    ok(201),
                ),
                ("PATCH", "/chapters/{chapter_id}") => (
                    format!("/chapters/{chapter}"),
                    Some(json!({ "title": "第一章 总论" })),
                    ok(200),
                ),
                ("POST", "/lessons") => (
                    "/lessons".into(),
                    Some(json!({ "title": "第二课" })),
                    ok(201),
                ),
                ("PATCH", "/lessons/{lesson_id}") => (
                    format!("/lessons/{lesson}"),
                    Some(json!({ "description": "更新" })),
                    ok(200),
                ),
                ("PUT", "/order") => (
                    "/order".into(),
                    Some(json!({ "chapters": [{ "id": chapter, "lessons": [lesson] }] })),
                    ok(200),
                ),
                (_, transition) if method == "POST" => (transition.to_string(), None, ok(200)),
                _ => return None,
            };
            Call {
                addresses_org_a: true,
                ..call(format!("/api/v1/courses/{course}{suffix}"), body, allowed)
            }
        }
        // Learning: a published lesson of organisation A with a playable asset.
        // Captions: learners read those of lessons they can play; the
        // upload fixture's body is JSON, not a caption file, so an allowed
        // caller gets as far as the file's check.
        ("GET", "/api/v1/lessons/{lesson_id}/captions") => {
            let (lesson, _) = captioned_lesson(w, orgs.a).await;
            Call {
                addresses_org_a: true,
                ..call(format!("/api/v1/lessons/{lesson}/captions"), None, ok(200))
            }
        }
        ("GET", "/api/v1/lessons/{lesson_id}/captions/{language}") => {
            let (lesson, language) = captioned_lesson(w, orgs.a).await;
            Call {
                addresses_org_a: true,
                ..call(
                    format!("/api/v1/lessons/{lesson}/captions/{language}"),
                    None,
                    ok(200),
                )
            }
        }
        ("PUT", "/api/v1/lessons/{lesson_id}/captions/{language}") => {
            let (_, lesson) = watchable_lesson(w, orgs.a).await;
            Call {
                addresses_org_a: true,
                ..call(
                    format!("/api/v1/lessons/{lesson}/captions/en"),
                    Some(json!({ "not": "a caption file" })),
                    err(422, "caption_format"),
                )
            }
        }
        ("PATCH", "/api/v1/lessons/{lesson_id}/captions/{language}") => {
            let (lesson, language) = captioned_lesson(w, orgs.a).await;
            Call {
                addresses_org_a: true,
                ..call(
                    format!("/api/v1/lessons/{lesson}/captions/{language}"),
                    Some(json!({ "label": "English (CC)", "default": true })),
                    ok(200),
                )
            }
        }
        ("DELETE", "/api/v1/lessons/{lesson_id}/captions/{language}") => {
            let (lesson, language) = captioned_lesson(w, orgs.a).await;
            Call {
                addresses_org_a: true,
                ..call(
                    format!("/api/v1/lessons/{lesson}/captions/{language}"),
                    None,
                    ok(204),
                )
            }
        }
        ("POST", "/api/v1/lessons/{lesson_id}/playback")
        | ("POST", "/api/v1/progress")
        | ("POST", "/api/v1/qoe")
        | ("GET", "/api/v1/courses/{course_id}/progress") => {
            let (course, lesson) = watchable_lesson(w, orgs.a).await;
            let (target, body, allowed) = match path {
                "/api/v1/lessons/{lesson_id}/playback" => {
                    (format!("/api/v1/lessons/{lesson}/playback"), None, ok(200))
                }
                "/api/v1/progress" => (
                    path.to_string(),
                    Some(json!({ "lesson_id": lesson, "position_s": 5, "speed": 1.5,
                                 "played_from_s": 0, "played_to_s": 5 })),
                    ok(204),
                ),
                "/api/v1/qoe" => (
                    path.to_string(),
                    Some(json!({ "lesson_id": lesson, "kind": "startup", "startup_ms": 900 })),
                    ok(204),
                ),
                _ => (format!("/api/v1/courses/{course}/progress"), None, ok(200)),
            };
            Call {
                addresses_org_a: true,
                ..call(target, body, allowed)
            }
        }
        ("GET", "/api/v1/me/continue-watching")
        | ("GET", "/api/v1/me/history")
        | ("GET", "/api/v1/qoe/summary") => call(path.into(), None, ok(200)),
        ("GET", "/api/v1/audit") => call(path.into(), None, ok(200)),
        ("GET", "/metrics") => call(path.into(), None, ok(200)),
        // Media: the playback token in the URL is the credential, whoever calls.
        ("GET", "/media/{*key}") | ("HEAD", "/media/{*key}") | ("OPTIONS", "/media/{*key}") => {
            let asset = Uuid::new_v4();
            let key = format!("assets/{asset}/out/attempt-1/seg_00000.m4s");
            w.state
                .store
                .put_bytes(&key, vec![7u8; 64].into(), Default::default())
                .await
                .unwrap();
            let token = w.state.delivery.playback.token(asset, None).unwrap();
            // OPTIONS: tower-http's CORS layer answers the preflight, 200.
            call(format!("/media/{key}?token={token}"), None, ok(200))
        }
        ("GET", "/media-auth") => call(path.into(), None, err(400, "missing_original_uri")),
        ("PUT", "/api/v1/assets/{asset_id}/encryption") => {
            let asset = Uuid::new_v4();
            lectern_assets::create(
                w.db(),
                &lectern_assets::NewAsset {
                    id: asset,
                    organisation_id: orgs.a,
                    source_key: lectern_assets::keys::source_key(asset),
                    title: None,
                    profile: "default".into(),
                    priority: 0,
                },
            )
            .await
            .unwrap();
            Call {
                addresses_org_a: true,
                ..call(
                    path.replace("{asset_id}", &asset.to_string()),
                    Some(json!({ "enabled": true })),
                    ok(200),
                )
            }
        }
        // The key: a session-bound playback token is the credential, whoever calls.
        ("GET", "/media-key/{asset_id}/{key_id}") => {
            let (_, lesson) = watchable_lesson(w, orgs.a).await;
            let asset: Uuid = sqlx::query_scalar("SELECT asset_id FROM lessons WHERE id = $1")
                .bind(lesson)
                .fetch_one(w.db())
                .await
                .unwrap();
            let (status, body) = w
                .call(
                    "PUT",
                    &format!("/api/v1/assets/{asset}/encryption"),
                    Some(&w.login("contentadmin@a.example.org").await),
                    Some(json!({ "enabled": true })),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let key_id = body["key_id"].as_str().unwrap().to_string();
            let session: Uuid = sqlx::query_scalar(
                "SELECT id FROM sessions WHERE revoked_at IS NULL AND expires_at > now() LIMIT 1",
            )
            .fetch_one(w.db())
            .await
            .unwrap();
            let token = w
                .state
                .delivery
                .playback
                .token(asset, Some(session))
                .unwrap();
            call(
                format!("/media-key/{asset}/{key_id}?token={token}"),
                None,
                ok(200),
            )
        }
        // Community. Posts live in organisation A; "own" posts are the
        // caller's (a caller of organisation B owns one there too, and
        // still gets 404: their organisation is not the post's).
        ("GET" | "DELETE", "/api/v1/courses/{course_id}/review") => {
            let (course, _, _) = catalogue_course(w, orgs.a, "published").await;
            let author = match me {
                Some(me) => me,
                None => fresh_learner(w, orgs).await,
            };
            review(w, course, author).await;
            let allowed = if method == Method::GET {
                ok(200)
            } else {
                ok(204)
            };
            Call {
                addresses_org_a: true,
                ..call(format!("/api/v1/courses/{course}/review"), None, allowed)
            }
        }
        ("PUT" | "DELETE", "/api/v1/reviews/{review_id}/helpful") => {
            let (course, _, _) = catalogue_course(w, orgs.a, "published").await;
            let author = fresh_learner(w, orgs).await;
            let id = review(w, course, author).await;
            Call {
                addresses_org_a: true,
                ..call(format!("/api/v1/reviews/{id}/helpful"), None, ok(200))
            }
        }
        ("GET", "/api/v1/lessons/{lesson_id}/comments") => {
            let (_, lesson) = watchable_lesson(w, orgs.a).await;
            Call {
                addresses_org_a: true,
                ..call(format!("/api/v1/lessons/{lesson}/comments"), None, ok(200))
            }
        }
        ("POST", "/api/v1/lessons/{lesson_id}/comments") => {
            let (_, lesson) = watchable_lesson(w, orgs.a).await;
            Call {
                addresses_org_a: true,
                ..call(
                    format!("/api/v1/lessons/{lesson}/comments"),
                    Some(json!({ "body": "这里讲得很清楚", "at_s": 12.5 })),
                    ok(201),
                )
            }
        }
        ("GET", "/api/v1/comments/{comment_id}/replies")
        | ("PATCH", "/api/v1/comments/{comment_id}")
        | ("DELETE", "/api/v1/comments/{comment_id}") => {
            let (_, lesson) = watchable_lesson(w, orgs.a).await;
            let author = match (method.as_str(), me) {
                ("PATCH" | "DELETE", Some(me)) => me,
                _ => fresh_learner(w, orgs).await,
            };
            let id = comment(w, orgs.a, lesson, author, "published").await;
            let (target, body, allowed) = match method.as_str() {
                "GET" => (format!("/api/v1/comments/{id}/replies"), None, ok(200)),
                "PATCH" => (
                    format!("/api/v1/comments/{id}"),
                    Some(json!({ "body": "补充：见第二章" })),
                    ok(200),
                ),
                _ => (format!("/api/v1/comments/{id}"), None, ok(204)),
            };
            Call {
                addresses_org_a: true,
                ..call(target, body, allowed)
            }
        }
        ("POST", "/api/v1/reports") => {
            let (_, lesson) = watchable_lesson(w, orgs.a).await;
            let author = fresh_learner(w, orgs).await;
            let id = comment(w, orgs.a, lesson, author, "published").await;
            Call {
                addresses_org_a: true,
                ..call(
                    path.into(),
                    Some(json!({ "kind": "comment", "post_id": id, "reason": "广告" })),
                    ok(201),
                )
            }
        }
        ("POST", "/api/v1/questions") => {
            let (_, lesson) = watchable_lesson(w, orgs.a).await;
            Call {
                addresses_org_a: true,
                ..call(
                    path.into(),
                    Some(json!({ "body": "这个剂量怎么调整？", "lesson_id": lesson })),
                    ok(201),
                )
            }
        }
        ("GET", "/api/v1/questions/mine") | ("GET", "/api/v1/questions/queue") => {
            call(path.into(), None, ok(200))
        }
        ("GET", "/api/v1/questions/{question_id}")
        | ("POST", "/api/v1/questions/{question_id}/answers")
        | ("POST", "/api/v1/questions/{question_id}/accept") => {
            let (course, lesson) = watchable_lesson(w, orgs.a).await;
            let asker = match (path, me) {
                ("/api/v1/questions/{question_id}/answers", _) | (_, None) => {
                    fresh_learner(w, orgs).await
                }
                (_, Some(me)) => me,
            };
            let question = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO questions (id, organisation_id, course_id, lesson_id, author_id, body, state)
                 VALUES ($1, $2, $3, $4, $5, '怎么调整剂量？', 'published')",
            )
            .bind(question)
            .bind(orgs.a)
            .bind(course)
            .bind(lesson)
            .bind(asker)
            .execute(w.db())
            .await
            .unwrap();
            // The answering caller is named on the course.
            let expert = Uuid::now_v7();
            let expert_user = match (path, me) {
                ("/api/v1/questions/{question_id}/answers", Some(me)) => Some(me),
                _ => None,
            };
            sqlx::query("INSERT INTO experts (id, organisation_id, user_id, name) VALUES ($1, $2, $3, '王医生')")
                .bind(expert)
                .bind(orgs.a)
                .bind(expert_user)
                .execute(w.db())
                .await
                .unwrap();
            sqlx::query("INSERT INTO course_experts (course_id, expert_id) VALUES ($1, $2)")
                .bind(course)
                .bind(expert)
                .execute(w.db())
                .await
                .unwrap();
            let (target, body, allowed) = match path {
                "/api/v1/questions/{question_id}" => {
                    (format!("/api/v1/questions/{question}"), None, ok(200))
                }
                "/api/v1/questions/{question_id}/answers" => (
                    format!("/api/v1/questions/{question}/answers"),
                    Some(json!({ "body": "按体重调整，见指南第三章。" })),
                    ok(201),
                ),
                _ => {
                    let answerer = fresh_learner(w, orgs).await;
                    let answer = Uuid::now_v7();
                    sqlx::query(
                        "INSERT INTO answers (id, organisation_id, question_id, author_id, expert_id, body, state)
                         VALUES ($1, $2, $3, $4, $5, '见指南', 'published')",
                    )
                    .bind(answer)
                    .bind(orgs.a)
                    .bind(question)
                    .bind(answerer)
                    .bind(expert)
                    .execute(w.db())
                    .await
                    .unwrap();
                    (
                        format!("/api/v1/questions/{question}/accept"),
                        Some(json!({ "answer_id": answer })),
                        ok(200),
                    )
                }
            };
            Call {
                addresses_org_a: true,
                ..call(target, body, allowed)
            }
        }
        ("GET", "/api/v1/moderation/settings")
        | ("GET", "/api/v1/moderation/words")
        | ("GET", "/api/v1/moderation/queue") => Call {
            addresses_org_a: true,
            ..call(format!("{path}?org_id={}", orgs.a), None, ok(200))
        },
        ("PUT", "/api/v1/moderation/settings") => Call {
            addresses_org_a: true,
            ..call(
                path.into(),
                Some(json!({ "moderation": "post", "report_threshold": 3, "org_id": orgs.a })),
                ok(200),
            )
        },
        ("POST", "/api/v1/moderation/words") => Call {
            addresses_org_a: true,
            ..call(
                path.into(),
                Some(json!({ "word": format!("违禁词{}", orgs.fresh()), "org_id": orgs.a })),
                ok(201),
            )
        },
        ("DELETE", "/api/v1/moderation/words/{word_id}") => {
            let id = Uuid::now_v7();
            let word = format!("词{}", orgs.fresh());
            sqlx::query(
                "INSERT INTO sensitive_words (id, organisation_id, word, folded) VALUES ($1, $2, $3, $3)",
            )
            .bind(id)
            .bind(orgs.a)
            .bind(&word)
            .execute(w.db())
            .await
            .unwrap();
            Call {
                addresses_org_a: true,
                ..call(format!("/api/v1/moderation/words/{id}"), None, ok(204))
            }
        }
        ("POST", "/api/v1/moderation/cases/{case_id}/decision") => {
            let (_, lesson) = watchable_lesson(w, orgs.a).await;
            let author = fresh_learner(w, orgs).await;
            let post = comment(w, orgs.a, lesson, author, "pending").await;
            let case = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO moderation_cases (id, organisation_id, post_kind, post_id, cause)
                 VALUES ($1, $2, 'comment', $3, 'pre_moderation')",
            )
            .bind(case)
            .bind(orgs.a)
            .bind(post)
            .execute(w.db())
            .await
            .unwrap();
            Call {
                addresses_org_a: true,
                ..call(
                    format!("/api/v1/moderation/cases/{case}/decision"),
                    Some(json!({ "decision": "approve" })),
                    ok(200),
                )
            }
        }
        // Analytics: reports name organisation A (a global super admin must
        // name one; another organisation's admin naming it gets 404).
        ("GET", "/api/v1/reports/overview")
        | ("GET", "/api/v1/reports/courses")
        | ("GET", "/api/v1/reports/qoe")
        | ("GET", "/api/v1/reports/courses.csv")
        | ("GET", "/api/v1/reports/learner-activity.csv")
        | ("GET", "/api/v1/credit-rule") => Call {
            addresses_org_a: true,
            ..call(format!("{path}?org_id={}", orgs.a), None, ok(200))
        },
        ("PUT", "/api/v1/credit-rule") => Call {
            addresses_org_a: true,
            ..call(
                format!("{path}?org_id={}", orgs.a),
                Some(json!({ "credits_per_hour": 1, "rounding_step": 0.25,
                             "class_i_label": "I类学分", "class_ii_label": "II类学分" })),
                ok(200),
            )
        },
        ("PUT", "/api/v1/reporting/time-zone") => Call {
            addresses_org_a: true,
            ..call(
                format!("{path}?org_id={}", orgs.a),
                Some(json!({ "time_zone": "Asia/Shanghai" })),
                ok(200),
            )
        },
        ("GET", "/api/v1/reports/courses/{course_id}")
        | ("GET", "/api/v1/reports/lessons/{lesson_id}")
        | ("PUT", "/api/v1/courses/{course_id}/credit-designation") => {
            let (course, lesson) = watchable_lesson(w, orgs.a).await;
            let (target, body) = match path {
                "/api/v1/reports/courses/{course_id}" => (
                    format!("/api/v1/reports/courses/{course}?org_id={}", orgs.a),
                    None,
                ),
                "/api/v1/reports/lessons/{lesson_id}" => (
                    format!("/api/v1/reports/lessons/{lesson}?org_id={}", orgs.a),
                    None,
                ),
                _ => (
                    format!("/api/v1/courses/{course}/credit-designation"),
                    Some(
                        json!({ "credit_class": 1, "max_credits": 2, "project_code": "2026-01-01-001" }),
                    ),
                ),
            };
            Call {
                addresses_org_a: true,
                ..call(target, body, ok(200))
            }
        }
        ("GET", "/api/v1/reports/experts/{expert_id}") => {
            let id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO experts (id, organisation_id, name) VALUES ($1, $2, '王医生')",
            )
            .bind(id)
            .bind(orgs.a)
            .execute(w.db())
            .await
            .unwrap();
            Call {
                addresses_org_a: true,
                ..call(
                    format!("/api/v1/reports/experts/{id}?org_id={}", orgs.a),
                    None,
                    ok(200),
                )
            }
        }
        // Each organisation's expert account has a profile of its own.
        ("GET", "/api/v1/me/expert-report") => {
            sqlx::query(
                "INSERT INTO experts (id, organisation_id, user_id, name)
                 SELECT gen_random_uuid(), u.org_id, u.id, '本人'
                 FROM users u WHERE u.role = 'expert' AND u.org_id IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM experts e WHERE e.user_id = u.id)",
            )
            .execute(w.db())
            .await
            .unwrap();
            call(path.into(), None, ok(200))
        }
        ("GET", "/api/v1/reports/learners/{user_id}/transcript")
        | ("GET", "/api/v1/reports/learners/{user_id}/xapi") => {
            let learner = w
                .user(
                    Some(orgs.a),
                    &format!("reported{}@a.example.org", orgs.fresh()),
                    Role::Learner,
                )
                .await;
            Call {
                addresses_org_a: true,
                ..call(
                    path.replace("{user_id}", &learner.to_string()),
                    None,
                    ok(200),
                )
            }
        }
        ("GET", "/api/v1/me/transcript")
        | ("GET", "/api/v1/me/xapi")
        | ("GET", "/api/v1/me/certificates") => call(path.into(), None, ok(200)),
        ("POST", "/api/v1/reports/exports") => Call {
            addresses_org_a: true,
            ..call(
                path.into(),
                Some(json!({ "report": "courses", "format": "csv", "org_id": orgs.a })),
                ok(202),
            )
        },
        ("GET", "/api/v1/reports/exports/{export_id}")
        | ("GET", "/api/v1/reports/exports/{export_id}/download") => {
            // A queued export of organisation A: its status answers, its
            // download is not ready.
            let id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO report_exports (id, organisation_id, report, format)
                 VALUES ($1, $2, 'courses', 'csv')",
            )
            .bind(id)
            .bind(orgs.a)
            .execute(w.db())
            .await
            .unwrap();
            let allowed = if path.ends_with("/download") {
                err(409, "export_not_ready")
            } else {
                ok(200)
            };
            Call {
                addresses_org_a: true,
                ..call(path.replace("{export_id}", &id.to_string()), None, allowed)
            }
        }
        // A course of A without a credit designation: no certificate, for
        // anyone who may see the course.
        ("POST", "/api/v1/me/courses/{course_id}/certificate") => {
            let (course, _) = watchable_lesson(w, orgs.a).await;
            Call {
                addresses_org_a: true,
                ..call(
                    format!("/api/v1/me/courses/{course}/certificate"),
                    Some(json!({ "name": "张三" })),
                    err(409, "no_credit_designation"),
                )
            }
        }
        // Only its learner may download a certificate; a serial nobody
        // holds is 404 for everyone (the owner's download is tested in
        // api/tests/analytics.rs).
        ("GET", "/api/v1/me/certificates/{serial}/pdf") => call(
            "/api/v1/me/certificates/LEC-0000-0000-0000-0000/pdf".into(),
            None,
            err(404, "not_found"),
        ),
        // Verification is public: a real serial answers everyone.
        ("GET", "/api/v1/certificates/{serial}") | ("GET", "/verify/{serial}") => {
            let serial = certificate(w, orgs.a).await;
            call(path.replace("{serial}", &serial), None, ok(200))
        }
        // Surveys: a fresh survey of organisation A per call (a scale and
        // a free-text question); operators define, learners answer.
        ("POST", "/api/v1/surveys") => Call {
            addresses_org_a: true,
            ..call(
                path.into(),
                Some(json!({
                    "title": "课程满意度调查",
                    "org_id": orgs.a,
                    "questions": [{ "kind": "scale", "prompt": "总体满意度",
                                    "scale": { "min": 1, "max": 5 } }],
                })),
                ok(201),
            )
        },
        ("GET", "/api/v1/surveys") => Call {
            addresses_org_a: true,
            ..call(format!("{path}?org_id={}", orgs.a), None, ok(200))
        },
        ("GET" | "PATCH" | "DELETE", "/api/v1/surveys/{survey_id}")
        | ("GET", "/api/v1/surveys/{survey_id}/responses.csv")
        | ("POST", "/api/v1/surveys/{survey_id}/questions")
        | ("PUT" | "DELETE", "/api/v1/surveys/{survey_id}/questions/{question_id}")
        | ("POST", "/api/v1/surveys/{survey_id}/questions/{question_id}/retire") => {
            let (survey, _, text) = survey(w, orgs.a, "draft").await;
            let base = format!("/api/v1/surveys/{survey}");
            let question = json!({ "kind": "single_choice", "prompt": "会推荐给同事吗？",
                                   "options": ["会", "不会"] });
            let (target, body, allowed) = match (method.as_str(), path) {
                ("GET", "/api/v1/surveys/{survey_id}") => (base, None, ok(200)),
                ("PATCH", _) => (base, Some(json!({ "title": "新标题" })), ok(200)),
                ("DELETE", "/api/v1/surveys/{survey_id}") => (base, None, ok(204)),
                ("GET", _) => (format!("{base}/responses.csv"), None, ok(200)),
                ("POST", "/api/v1/surveys/{survey_id}/questions") => {
                    (format!("{base}/questions"), Some(question), ok(201))
                }
                ("PUT", _) => (format!("{base}/questions/{text}"), Some(question), ok(200)),
                ("DELETE", _) => (format!("{base}/questions/{text}"), None, ok(204)),
                _ => (format!("{base}/questions/{text}/retire"), None, ok(200)),
            };
            Call {
                addresses_org_a: true,
                ..call(target, body, allowed)
            }
        }
        ("PUT" | "DELETE", "/api/v1/courses/{course_id}/surveys/{survey_id}")
        | ("GET", "/api/v1/courses/{course_id}/surveys/{survey_id}/results")
        | (
            "GET",
            "/api/v1/courses/{course_id}/surveys/{survey_id}/questions/{question_id}/texts",
        )
        | ("GET", "/api/v1/courses/{course_id}/surveys")
        | ("POST", "/api/v1/courses/{course_id}/surveys/{survey_id}/responses") => {
            let (course, _, lesson) = catalogue_course(w, orgs.a, "published").await;
            let (survey, scale, text) = survey(w, orgs.a, "open").await;
            if method != Method::PUT {
                sqlx::query("INSERT INTO course_surveys (course_id, survey_id) VALUES ($1, $2)")
                    .bind(course)
                    .bind(survey)
                    .execute(w.db())
                    .await
                    .unwrap();
            }
            if let Some(me) = me {
                // The caller completed the course (only a learner may answer).
                sqlx::query(
                    "INSERT INTO lesson_progress (user_id, lesson_id, organisation_id, completed_at, last_beat_at)
                     VALUES ($1, $2, $3, now(), now())",
                )
                .bind(me)
                .bind(lesson)
                .bind(orgs.a)
                .execute(w.db())
                .await
                .unwrap();
            }
            let base = format!("/api/v1/courses/{course}/surveys");
            let (target, body, allowed) = match (method.as_str(), path) {
                ("PUT", _) => (format!("{base}/{survey}"), None, ok(204)),
                ("DELETE", _) => (format!("{base}/{survey}"), None, ok(204)),
                ("GET", "/api/v1/courses/{course_id}/surveys") => (base, None, ok(200)),
                ("GET", "/api/v1/courses/{course_id}/surveys/{survey_id}/results") => {
                    (format!("{base}/{survey}/results"), None, ok(200))
                }
                ("GET", _) => (
                    format!("{base}/{survey}/questions/{text}/texts"),
                    None,
                    ok(200),
                ),
                _ => (
                    format!("{base}/{survey}/responses"),
                    Some(json!({ "answers": [{ "question_id": scale, "value": 4 }] })),
                    ok(201),
                ),
            };
            Call {
                addresses_org_a: true,
                ..call(target, body, allowed)
            }
        }
        _ => return None,
    })
}

/// A new learner of organisation A (the author of someone else's post).
async fn fresh_learner(w: &World, orgs: &Orgs) -> Uuid {
    w.user(
        Some(orgs.a),
        &format!("author{}@a.example.org", orgs.fresh()),
        Role::Learner,
    )
    .await
}

/// A survey of `org` in `state` asking a required 1–5 scale and an
/// optional free text: (survey, scale question, free-text question).
async fn survey(w: &World, org: Uuid, state: &str) -> (Uuid, Uuid, Uuid) {
    let (survey, scale, text) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "INSERT INTO surveys (id, organisation_id, title, state) VALUES ($1, $2, '满意度调查', $3)",
    )
    .bind(survey)
    .bind(org)
    .bind(state)
    .execute(w.db())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO survey_questions (id, survey_id, position, kind, prompt, scale_min, scale_max)
         VALUES ($1, $3, 0, 'scale', '总体满意度', 1, 5),
                ($2, $3, 1, 'free_text', '建议', NULL, NULL)",
    )
    .bind(scale)
    .bind(text)
    .bind(survey)
    .execute(w.db())
    .await
    .unwrap();
    sqlx::query("UPDATE survey_questions SET required = false WHERE id = $1")
        .bind(text)
        .execute(w.db())
        .await
        .unwrap();
    (survey, scale, text)
}

/// A published review of `course` by `author`: its id.
async fn review(w: &World, course: Uuid, author: Uuid) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO course_ratings (course_id, user_id, rating, body) VALUES ($1, $2, 5, '很好')
         RETURNING id",
    )
    .bind(course)
    .bind(author)
    .fetch_one(w.db())
    .await
    .unwrap()
}

/// A comment on `lesson` by `author` in `state`: its id.
async fn comment(w: &World, org: Uuid, lesson: Uuid, author: Uuid, state: &str) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO lesson_comments (id, organisation_id, lesson_id, author_id, body, state)
         VALUES ($1, $2, $3, $4, '第一课讲得很好', $5)",
    )
    .bind(id)
    .bind(org)
    .bind(lesson)
    .bind(author)
    .bind(state)
    .execute(w.db())
    .await
    .unwrap();
    id
}

fn expected(access: Access, caller: &Caller, orgs: &Orgs, call: &Call, stepped_up: bool) -> Expect {
    let Some(role) = caller.role else {
        return if access == Access::Public {
            call.allowed
        } else {
            err(401, "unauthenticated")
        };
    };
    let is_key = caller.email.is_none();
    match access {
        // Readers of another organisation's resources learn nothing of them.
        Access::Authenticated if call.addresses_org_a && caller.org == Some(orgs.b) => {
            err(404, "not_found")
        }
        Access::Public | Access::Authenticated => call.allowed,
        Access::Session if is_key => err(403, "forbidden"),
        // Readers of another organisation's resources learn nothing of them.
        Access::Session if call.addresses_org_a && caller.org == Some(orgs.b) => {
            err(404, "not_found")
        }
        Access::Session => call.allowed,
        Access::Permission(p) if !p.granted_to(role) => err(403, "forbidden"),
        Access::Permission(p) if p.requires_step_up() && !stepped_up => {
            err(403, "step_up_required")
        }
        Access::Permission(_) if call.addresses_org_a && caller.org == Some(orgs.b) => {
            err(404, "not_found")
        }
        Access::Permission(_) => call.allowed,
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn every_route_answers_every_role_as_the_permission_table_says(db: sqlx::PgPool) {
    let w = World::new(db.clone()).await;
    let a = w.org("Org A").await;
    let b = w.org("Org B").await;
    let mut callers = vec![Caller {
        label: "anonymous".into(),
        role: None,
        user_id: None,
        org: None,
        email: None,
        token: None,
    }];
    for role in Role::ALL {
        for (org, tag) in [(a, "A"), (b, "B")] {
            let label = format!("{}@{}", role.as_str(), tag);
            if role == Role::Partner {
                // Partners call the API with organisation-scoped keys.
                let (_, key) = lectern_identity::users::create_partner_key(&db, org, "matrix")
                    .await
                    .unwrap();
                callers.push(Caller {
                    label,
                    role: Some(role),
                    user_id: None,
                    org: Some(org),
                    email: None,
                    token: Some(key),
                });
            } else {
                let email = format!(
                    "{}@{}.example.org",
                    role.as_str().replace('_', ""),
                    tag.to_lowercase()
                );
                let user_id = w.user(Some(org), &email, role).await;
                let token = w.login(&email).await;
                callers.push(Caller {
                    label,
                    role: Some(role),
                    user_id: Some(user_id),
                    org: Some(org),
                    email: Some(email),
                    token: Some(token),
                });
            }
        }
    }
    let root = w.user(None, "root@lectern.example", Role::SuperAdmin).await;
    let root_token = w.login("root@lectern.example").await;
    callers.push(Caller {
        label: "super_admin@global".into(),
        role: Some(Role::SuperAdmin),
        user_id: Some(root),
        org: None,
        email: Some("root@lectern.example".into()),
        token: Some(root_token),
    });
    let orgs = Orgs {
        a,
        b,
        counter: Default::default(),
    };

    let table = lectern_api::route_table(&w.state);
    assert!(
        table.len() >= 17,
        "the registry lists every route: {table:?}"
    );
    let mut missing = Vec::new();
    let mut mismatches = Vec::new();
    let mut rows = Vec::new();
    for route in &table {
        // Critical routes are called twice: as is, and right after a step-up.
        let passes: &[bool] = match route.access {
            Access::Permission(p) if p.requires_step_up() => &[false, true],
            _ => &[false],
        };
        for &stepped_up in passes {
            let mut cells = Vec::new();
            for caller in callers.iter_mut() {
                let Some(call) =
                    fixture(&w, &orgs, caller.user_id, &route.method, route.path).await
                else {
                    missing.push(format!("{} {}", route.method, route.path));
                    break;
                };
                let token = match (&caller.email, call.ends_session) {
                    (Some(email), true) => Some(w.login(email).await),
                    _ => caller.token.clone(),
                };
                // Each cell stands alone: a grant left unused by an earlier
                // cell (its call was forbidden before the grant was spent)
                // must not let this one through.
                sqlx::query("DELETE FROM step_up_grants")
                    .execute(w.db())
                    .await
                    .unwrap();
                // Nor may the limit on step-up codes sent per account, which
                // a caller's many critical routes reach within one run.
                sqlx::query("DELETE FROM login_throttle WHERE subject LIKE 'step-up-send:%'")
                    .execute(w.db())
                    .await
                    .unwrap();
                if stepped_up {
                    if let (Some(email), Some(token)) = (&caller.email, &token) {
                        step_up(&w, token, email).await;
                    }
                }
                let (status, body) = w
                    .call(
                        route.method.as_str(),
                        &call.path,
                        token.as_deref(),
                        call.body.clone(),
                    )
                    .await;
                let want = expected(route.access, &*caller, &orgs, &call, stepped_up);
                let code = body["error"]["code"].as_str().map(str::to_string);
                // A HEAD answer has no body to carry an error code.
                let fits = status.as_u16() == want.status
                    && (want.code.is_none()
                        || route.method == Method::HEAD
                        || code.as_deref() == want.code);
                let cell = match (&code, status.as_u16()) {
                    (Some(c), 403) if c == "step_up_required" => "403su".to_string(),
                    (_, s) => s.to_string(),
                };
                if !fits {
                    mismatches.push(format!(
                        "{} {}{} as {}: got {} {:?}, want {} {:?}",
                        route.method,
                        route.path,
                        if stepped_up { " after a step-up" } else { "" },
                        caller.label,
                        status.as_u16(),
                        code,
                        want.status,
                        want.code
                    ));
                }
                cells.push(if fits { cell } else { format!("{cell}!") });
                // Signing out everywhere also ended the caller's own session.
                if let (Some(email), true) = (caller.email.clone(), call.ends_session) {
                    caller.token = Some(w.login(&email).await);
                }
            }
            let name = format!(
                "{} {}{}",
                route.method,
                route.path,
                if stepped_up { " +step-up" } else { "" }
            );
            rows.push((name, format!("{:?}", route.access), cells));
        }
    }

    // The matrix, as a table (403su = allowed, but needs a step-up first).
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(10);
    let mut out = format!("{:width$}  {:34}", "route", "access");
    for c in &callers {
        out.push_str(&format!(" {:>8}", short(&c.label)));
    }
    out.push('\n');
    for (route, access, cells) in &rows {
        out.push_str(&format!("{route:width$}  {access:34}"));
        for cell in cells {
            out.push_str(&format!(" {cell:>8}"));
        }
        out.push('\n');
    }
    println!("{out}");
    assert!(
        missing.is_empty(),
        "routes without a matrix entry: {missing:?}"
    );
    assert!(
        mismatches.is_empty(),
        "{} unexpected answers:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// A step-up with a one-time code from the dev outbox.
async fn step_up(w: &World, token: &str, email: &str) {
    let (status, _) = w
        .call("POST", "/api/v1/auth/step-up/code", Some(token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let message = w.last_message(email).await;
    let code = message
        .split(|c: char| !c.is_ascii_digit())
        .find(|d| d.len() == 6)
        .unwrap()
        .to_string();
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/step-up",
            Some(token),
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// SMS sign-in allowed in `org`, accounts by invitation.
async fn allow_sms(w: &World, org: Uuid) {
    sqlx::query(
        "INSERT INTO sign_in_policies (org_id, methods) VALUES ($1, '{sms}') \
         ON CONFLICT (org_id) DO UPDATE SET methods = '{sms}'",
    )
    .bind(org)
    .execute(w.db())
    .await
    .unwrap();
}

/// A mainland mobile number no earlier call used.
fn fresh_phone(orgs: &Orgs) -> String {
    format!("+86139{:08}", orgs.fresh())
}

/// A proven phone number on `user`'s account.
async fn give_phone(w: &World, orgs: &Orgs, user: Uuid) {
    let phone = fresh_phone(orgs);
    sqlx::query(
        "UPDATE users SET phone_ct = $2, phone_bidx = $3, phone_verified_at = now() WHERE id = $1",
    )
    .bind(user)
    .bind(w.keys.seal("users.phone", user, &phone))
    .bind(w.keys.phone_index(&phone))
    .execute(w.db())
    .await
    .unwrap();
}

/// An OIDC identity linked to `user`'s account.
async fn linked_identity(w: &World, orgs: &Orgs, user: Uuid) -> Uuid {
    let id = Uuid::now_v7();
    let subject = format!("subject-{}", orgs.fresh());
    sqlx::query(
        "INSERT INTO external_identities (id, user_id, org_id, kind, issuer, subject_bidx, subject_ct, key_id) \
         SELECT $1, u.id, coalesce(u.org_id, $5), 'oidc', 'https://idp.example.org', $2, $3, $4 \
         FROM users u WHERE u.id = $6",
    )
    .bind(id)
    .bind(w.keys.blind_index("oidc|https://idp.example.org", &subject))
    .bind(w.keys.seal("external_identities.subject", id, &subject))
    .bind(w.keys.active_key_id())
    .bind(orgs.a)
    .bind(user)
    .execute(w.db())
    .await
    .unwrap();
    id
}

/// Self sign-up on for `org` (it is off by default).
async fn open_signup(w: &World, org: Uuid) {
    sqlx::query("UPDATE organisations SET self_signup = true WHERE id = $1")
        .bind(org)
        .execute(w.db())
        .await
        .unwrap();
}

fn short(label: &str) -> String {
    label
        .replace("content_admin", "cadmin")
        .replace("super_admin", "sadmin")
        .replace("learner", "learn")
        .replace("partner", "partn")
        .replace("@global", "@*")
}

/// A course of `org` in `state` with one chapter holding one lesson:
/// (course, chapter, lesson).
/// A published course of `org` with one lesson whose asset is transcoded.
async fn watchable_lesson(w: &World, org: Uuid) -> (Uuid, Uuid) {
    let (course, _, lesson) = catalogue_course(w, org, "published").await;
    let asset = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO assets (id, organisation_id, status, source_key, duration_s, output_prefix)
         VALUES ($1, $2, 'ready', $3, 60, $4)",
    )
    .bind(asset)
    .bind(org)
    .bind(format!("sources/{asset}"))
    .bind(format!("assets/{asset}/out/attempt-1/"))
    .execute(w.db())
    .await
    .unwrap();
    sqlx::query("UPDATE lessons SET asset_id = $2 WHERE id = $1")
        .bind(lesson)
        .bind(asset)
        .execute(w.db())
        .await
        .unwrap();
    (course, lesson)
}

/// A watchable lesson of `org` with an English caption track (its row and
/// its whole WebVTT file in storage, as an upload leaves them).
async fn captioned_lesson(w: &World, org: Uuid) -> (Uuid, &'static str) {
    let (_, lesson) = watchable_lesson(w, org).await;
    let asset: Uuid = sqlx::query_scalar("SELECT asset_id FROM lessons WHERE id = $1")
        .bind(lesson)
        .fetch_one(w.db())
        .await
        .unwrap();
    let prefix = lectern_assets::keys::captions_prefix(asset, Uuid::now_v7());
    w.state
        .store
        .put_bytes(
            &format!("{prefix}captions.vtt"),
            "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nhello\n".into(),
            lectern_storage::PutOptions::default(),
        )
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO lesson_captions (id, organisation_id, lesson_id, language, label,
             source_format, cue_count, source_bytes, asset_id, prefix)
         VALUES ($1, $2, $3, 'en', 'English', 'webvtt', 1, 40, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(org)
    .bind(lesson)
    .bind(asset)
    .bind(&prefix)
    .execute(w.db())
    .await
    .unwrap();
    (lesson, "en")
}

/// A scheduled live event of `org` (its lesson, asset and key digest).
async fn live_event(w: &World, org: Uuid) -> Uuid {
    let (_, _, lesson) = catalogue_course(w, org, "draft").await;
    let (asset, event) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "INSERT INTO assets (id, organisation_id, status, source_key, profile)
         VALUES ($1, $2, 'transcoding', $3, 'live')",
    )
    .bind(asset)
    .bind(org)
    .bind(format!("assets/{asset}/live"))
    .execute(w.db())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO live_events (id, organisation_id, lesson_id, asset_id, scheduled_start, stream_key_sha256)
         VALUES ($1, $2, $3, $4, now(), $5)",
    )
    .bind(event)
    .bind(org)
    .bind(lesson)
    .bind(asset)
    .bind(lectern_secrets::token_fingerprint(&event.to_string()))
    .execute(w.db())
    .await
    .unwrap();
    event
}

/// The expert profile of the person with `email`, created if missing.
async fn profile_of(w: &World, org: Uuid, email: &str) -> Uuid {
    let user: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email_bidx = $1")
        .bind(w.keys.email_index(email))
        .fetch_one(w.db())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO experts (id, organisation_id, name, user_id)
         SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM experts WHERE user_id = $4)",
    )
    .bind(Uuid::now_v7())
    .bind(org)
    .bind(email)
    .bind(user)
    .execute(w.db())
    .await
    .unwrap();
    sqlx::query_scalar("SELECT id FROM experts WHERE user_id = $1")
        .bind(user)
        .fetch_one(w.db())
        .await
        .unwrap()
}

/// Every caller who may manage courses has an expert profile of their own.
async fn everyone_has_a_profile(w: &World, orgs: &Orgs) {
    for (org, tag) in [(orgs.a, "a"), (orgs.b, "b")] {
        for role in ["expert", "contentadmin", "superadmin"] {
            profile_of(w, org, &format!("{role}@{tag}.example.org")).await;
        }
    }
    profile_of(w, orgs.a, "root@lectern.example").await;
}

async fn catalogue_course(w: &World, org: Uuid, state: &str) -> (Uuid, Uuid, Uuid) {
    let (course, chapter, lesson) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "INSERT INTO courses (id, organisation_id, title, state, published_at)
         VALUES ($1, $2, '心血管疾病诊疗指南', $3, CASE WHEN $3 = 'published' THEN now() END)",
    )
    .bind(course)
    .bind(org)
    .bind(state)
    .execute(w.db())
    .await
    .unwrap();
    sqlx::query("INSERT INTO chapters (id, course_id, title) VALUES ($1, $2, '第一章')")
        .bind(chapter)
        .bind(course)
        .execute(w.db())
        .await
        .unwrap();
    // It credits the organisation's expert, who may therefore edit it.
    let name: String = sqlx::query_scalar("SELECT name FROM organisations WHERE id = $1")
        .bind(org)
        .fetch_one(w.db())
        .await
        .unwrap();
    let tag = if name == "Org A" { "a" } else { "b" };
    let author = profile_of(w, org, &format!("expert@{tag}.example.org")).await;
    sqlx::query("INSERT INTO course_experts (course_id, expert_id) VALUES ($1, $2)")
        .bind(course)
        .bind(author)
        .execute(w.db())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO lessons (id, organisation_id, course_id, chapter_id, title)
         VALUES ($1, $2, $3, $4, '第一课')",
    )
    .bind(lesson)
    .bind(org)
    .bind(course)
    .bind(chapter)
    .execute(w.db())
    .await
    .unwrap();
    (course, chapter, lesson)
}

/// A certificate of a fresh learner of `org`, as issued (sealed name).
async fn certificate(w: &World, org: Uuid) -> String {
    let learner = w
        .user(
            Some(org),
            &format!("certified{}@a.example.org", Uuid::now_v7().simple()),
            Role::Learner,
        )
        .await;
    let id = Uuid::now_v7();
    let serial = format!("LEC-TEST-{}", &id.simple().to_string()[20..]).to_uppercase();
    let keys = w.state.identity.keyring().unwrap();
    sqlx::query(
        "INSERT INTO certificates (id, serial, organisation_id, user_id, course_id, learner_name_ct,
             key_id, course_title, organisation_name, credit_class, credit_label, credits,
             project_code, watched_s)
         VALUES ($1, $2, $3, $4, NULL, $5, $6, '心电图基础', 'Org A', 1, 'I类学分', 1.5, '', 5400)",
    )
    .bind(id)
    .bind(&serial)
    .bind(org)
    .bind(learner)
    .bind(keys.seal("certificates.learner_name", id, "张三"))
    .bind(keys.active_key_id())
    .execute(w.db())
    .await
    .unwrap();
    serial
}
