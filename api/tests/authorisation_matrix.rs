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

/// The matrix's entries: one per registered route.
async fn fixture(w: &World, orgs: &Orgs, method: &Method, path: &str) -> Option<Call> {
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
            let token = w
                .last_message(&email)
                .await
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string();
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
            addresses_org_a: true,
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
            let token = w
                .last_message(&email)
                .await
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string();
            call(
                path.into(),
                Some(json!({ "token": token, "password": PASSWORD })),
                ok(200),
            )
        }
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
                    | ("PUT", "/rating" | "/order")
                    | (
                        "POST",
                        "/chapters" | "/lessons" | "/submit" | "/publish" | "/unpublish" | "/draft"
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
                ("GET" | "PUT", "" | "/rating") => "published",
                ("POST", "/publish") => "in_review",
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
        _ => return None,
    })
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
                w.user(Some(org), &email, role).await;
                let token = w.login(&email).await;
                callers.push(Caller {
                    label,
                    role: Some(role),
                    org: Some(org),
                    email: Some(email),
                    token: Some(token),
                });
            }
        }
    }
    w.user(None, "root@lectern.example", Role::SuperAdmin).await;
    let root_token = w.login("root@lectern.example").await;
    callers.push(Caller {
        label: "super_admin@global".into(),
        role: Some(Role::SuperAdmin),
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
                let Some(call) = fixture(&w, &orgs, &route.method, route.path).await else {
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
