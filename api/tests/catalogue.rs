//! The catalogue against a real PostgreSQL: disciplines as a tree, experts,
//! courses with chapters and lessons, the publication state machine, what
//! learners may read, ratings, and the OpenAPI document of every route.

use axum::http::StatusCode;
use lectern_testkit::World;
use lectern_web::Role;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

struct Setup {
    w: World,
    org: Uuid,
    admin: String,
    expert: String,
    learner: String,
}

async fn setup(db: PgPool) -> Setup {
    let w = World::new(db).await;
    let org = w.org("Medical Association").await;
    w.user(Some(org), "admin@med.example.org", Role::ContentAdmin)
        .await;
    w.user(Some(org), "expert@med.example.org", Role::Expert)
        .await;
    w.user(Some(org), "learner@med.example.org", Role::Learner)
        .await;
    let admin = w.login("admin@med.example.org").await;
    let expert = w.login("expert@med.example.org").await;
    let learner = w.login("learner@med.example.org").await;
    Setup {
        w,
        org,
        admin,
        expert,
        learner,
    }
}

async fn ok(w: &World, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let (status, body) = w.call(method, path, Some(token), body).await;
    assert!(status.is_success(), "{method} {path}: {status} {body}");
    body
}

async fn fails(
    w: &World,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let (status, body) = w.call(method, path, Some(token), body).await;
    assert!(!status.is_success(), "{method} {path} succeeded: {body}");
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

async fn asset(w: &World, org: Uuid, duration: f64) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO assets (id, organisation_id, status, source_key, duration_s)
         VALUES ($1, $2, 'ready', 'sources/x', $3)",
    )
    .bind(id)
    .bind(org)
    .bind(duration)
    .execute(w.db())
    .await
    .unwrap();
    id
}

#[sqlx::test(migrations = "../migrations")]
async fn a_course_is_drafted_reviewed_published_and_read_by_learners(db: PgPool) {
    let Setup {
        w,
        org,
        admin,
        expert,
        learner,
    } = setup(db).await;
    let cardio = ok(
        &w,
        "POST",
        "/api/v1/disciplines",
        &admin,
        Some(json!({ "name": "心血管内科" })),
    )
    .await;
    // The expert's profile, linked to their account: they edit only
    // courses that credit it.
    let (_, me) = w.call("GET", "/api/v1/me", Some(&expert), None).await;
    let author = ok(
        &w,
        "POST",
        "/api/v1/experts",
        &admin,
        Some(json!({ "name": "王磊", "title": "主任医师", "user_id": me["id"] })),
    )
    .await;

    // Experts draft.
    let course = ok(
        &w,
        "POST",
        "/api/v1/courses",
        &expert,
        Some(json!({
            "title": "心血管疾病诊疗指南",
            "description": "覆盖高血压、冠心病与心力衰竭",
            "resource_type": "guideline",
            "discipline_id": cardio["id"],
            "expert_ids": [author["id"]],
            "tags": ["心内科", "指南", "心内科"],
        })),
    )
    .await;
    assert_eq!(course["state"], "draft");
    let c = format!("/api/v1/courses/{}", course["id"].as_str().unwrap());

    let ch1 = ok(
        &w,
        "POST",
        &format!("{c}/chapters"),
        &expert,
        Some(json!({ "title": "第一章 高血压" })),
    )
    .await;
    let ch2 = ok(
        &w,
        "POST",
        &format!("{c}/chapters"),
        &expert,
        Some(json!({ "title": "第二章 冠心病" })),
    )
    .await;
    let own_asset = asset(&w, org, 600.0).await;
    let other_org = w.org("Other").await;
    let foreign_asset = asset(&w, other_org, 600.0).await;
    assert_eq!(
        fails(
            &w,
            "POST",
            &format!("{c}/lessons"),
            &expert,
            Some(json!({ "title": "x", "asset_id": foreign_asset }))
        )
        .await,
        (StatusCode::UNPROCESSABLE_ENTITY, "unknown_asset".into())
    );
    let l1 = ok(
        &w,
        "POST",
        &format!("{c}/lessons"),
        &expert,
        Some(json!({ "title": "高血压的诊断", "chapter_id": ch1["id"], "asset_id": own_asset })),
    )
    .await;
    let l2 = ok(
        &w,
        "POST",
        &format!("{c}/lessons"),
        &expert,
        Some(json!({ "title": "高血压的治疗", "chapter_id": ch1["id"] })),
    )
    .await;
    let l3 = ok(
        &w,
        "POST",
        &format!("{c}/lessons"),
        &expert,
        Some(json!({ "title": "冠心病概述", "chapter_id": ch2["id"] })),
    )
    .await;
    assert_eq!(
        (l1["position"].clone(), l2["position"].clone()),
        (json!(0), json!(1))
    );

    // Reorder: chapter 2 first, the treatment lesson moves into it.
    assert_eq!(
        fails(
            &w,
            "PUT",
            &format!("{c}/order"),
            &expert,
            Some(json!({ "chapters": [{ "id": ch2["id"], "lessons": [l3["id"]] }] }))
        )
        .await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_order".into())
    );
    let ordered = ok(
        &w,
        "PUT",
        &format!("{c}/order"),
        &expert,
        Some(json!({ "chapters": [
        { "id": ch2["id"], "lessons": [l3["id"], l2["id"]] },
        { "id": ch1["id"], "lessons": [l1["id"]] },
    ] })),
    )
    .await;
    let titles = |course: &Value| -> Vec<Vec<String>> {
        course["chapters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ch| {
                std::iter::once(ch["title"].as_str().unwrap().to_string())
                    .chain(
                        ch["lessons"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|l| l["title"].as_str().unwrap().to_string()),
                    )
                    .collect()
            })
            .collect()
    };
    let want = vec![
        vec![
            "第二章 冠心病".to_string(),
            "冠心病概述".into(),
            "高血压的治疗".into(),
        ],
        vec!["第一章 高血压".to_string(), "高血压的诊断".into()],
    ];
    assert_eq!(titles(&ordered), want);

    // Learners do not see drafts; the expert may not publish.
    assert_eq!(
        fails(&w, "GET", &c, &learner, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        fails(&w, "POST", &format!("{c}/publish"), &expert, None).await,
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    assert_eq!(
        fails(&w, "POST", &format!("{c}/publish"), &admin, None).await,
        (StatusCode::CONFLICT, "invalid_transition".into())
    );
    let moved = ok(&w, "POST", &format!("{c}/submit"), &expert, None).await;
    assert_eq!(
        (moved["from"].as_str(), moved["state"].as_str()),
        (Some("draft"), Some("in_review"))
    );
    // What is under review is frozen.
    assert_eq!(
        fails(&w, "PATCH", &c, &expert, Some(json!({ "title": "改" }))).await,
        (StatusCode::CONFLICT, "course_not_editable".into())
    );
    ok(&w, "POST", &format!("{c}/publish"), &admin, None).await;
    assert_eq!(
        fails(&w, "POST", &format!("{c}/submit"), &expert, None).await,
        (StatusCode::CONFLICT, "invalid_transition".into())
    );

    let seen = ok(&w, "GET", &c, &learner, None).await;
    assert_eq!(seen["state"], "published");
    assert_eq!(titles(&seen), want);
    assert_eq!(seen["discipline"]["name"], "心血管内科");
    assert_eq!(seen["experts"][0]["name"], "王磊");
    assert_eq!(seen["tags"], json!(["心内科", "指南"]));
    let first = &seen["chapters"][1]["lessons"][0];
    assert_eq!(
        (first["asset_id"].as_str(), first["duration_s"].as_f64()),
        (Some(own_asset.to_string().as_str()), Some(600.0))
    );

    // 下架, then back to draft for edits.
    ok(&w, "POST", &format!("{c}/unpublish"), &admin, None).await;
    assert_eq!(
        fails(&w, "GET", &c, &learner, None).await.0,
        StatusCode::NOT_FOUND
    );
    ok(&w, "POST", &format!("{c}/draft"), &expert, None).await;
    let edited = ok(
        &w,
        "PATCH",
        &c,
        &expert,
        Some(json!({ "title": "心血管疾病诊疗指南（2026版）", "tags": [] })),
    )
    .await;
    assert_eq!(
        (edited["title"].as_str(), edited["tags"].clone()),
        (Some("心血管疾病诊疗指南（2026版）"), json!([]))
    );

    // Every transition is in the audit log under its own action.
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE action LIKE 'POST /api/v1/courses/{course_id}/%' AND outcome = 'ok' ORDER BY id",
    )
    .fetch_all(w.db())
    .await
    .unwrap();
    let actions: Vec<&str> = actions
        .iter()
        .map(|a| a.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "chapters",
            "chapters",
            "lessons",
            "lessons",
            "lessons",
            "submit",
            "publish",
            "unpublish",
            "draft"
        ]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn publishing_needs_a_lesson_and_bad_input_is_refused_clearly(db: PgPool) {
    let Setup { w, admin, .. } = setup(db).await;
    let course = ok(
        &w,
        "POST",
        "/api/v1/courses",
        &admin,
        Some(json!({ "title": "空课程" })),
    )
    .await;
    let c = format!("/api/v1/courses/{}", course["id"].as_str().unwrap());
    ok(&w, "POST", &format!("{c}/submit"), &admin, None).await;
    assert_eq!(
        fails(&w, "POST", &format!("{c}/publish"), &admin, None).await,
        (StatusCode::CONFLICT, "course_empty".into())
    );
    for (body, code) in [
        (
            json!({ "title": "x", "resource_type": "podcast" }),
            "invalid_resource_type",
        ),
        (json!({ "title": "" }), "invalid_title"),
        (json!({ "title": "x", "tags": [""] }), "invalid_tag"),
        (
            json!({ "title": "x", "expert_ids": [Uuid::now_v7()] }),
            "unknown_expert",
        ),
        (
            json!({ "title": "x", "discipline_id": Uuid::now_v7() }),
            "unknown_discipline",
        ),
    ] {
        assert_eq!(
            fails(&w, "POST", "/api/v1/courses", &admin, Some(body)).await,
            (StatusCode::UNPROCESSABLE_ENTITY, code.to_string())
        );
    }
    assert_eq!(
        fails(
            &w,
            "POST",
            "/api/v1/courses",
            &admin,
            Some(json!({ "name": "x" }))
        )
        .await
        .1,
        "invalid_body"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn disciplines_form_a_tree_and_moves_refuse_cycles(db: PgPool) {
    let Setup {
        w, admin, learner, ..
    } = setup(db).await;
    let new = |name: &'static str, parent: Option<Value>| {
        let (w, admin) = (&w, admin.clone());
        async move {
            ok(
                w,
                "POST",
                "/api/v1/disciplines",
                &admin,
                Some(json!({ "name": name, "parent_id": parent })),
            )
            .await["id"]
                .clone()
        }
    };
    let medicine = new("临床医学", None).await;
    let internal = new("内科学", Some(medicine.clone())).await;
    let cardio = new("心血管内科", Some(internal.clone())).await;
    let surgery = new("外科学", None).await;

    assert_eq!(
        fails(
            &w,
            "POST",
            "/api/v1/disciplines",
            &admin,
            Some(json!({ "name": "内科学", "parent_id": medicine }))
        )
        .await,
        (StatusCode::CONFLICT, "discipline_exists".into())
    );
    for target in [&medicine, &cardio] {
        assert_eq!(
            fails(
                &w,
                "PATCH",
                &format!("/api/v1/disciplines/{}", medicine.as_str().unwrap()),
                &admin,
                Some(json!({ "parent_id": target }))
            )
            .await,
            (StatusCode::CONFLICT, "discipline_cycle".into())
        );
    }
    // Move 内科学 (with its child) under 外科学's sibling root, then rename.
    ok(
        &w,
        "PATCH",
        &format!("/api/v1/disciplines/{}", internal.as_str().unwrap()),
        &admin,
        Some(json!({ "parent_id": null, "name": "内科" })),
    )
    .await;
    ok(
        &w,
        "PATCH",
        &format!("/api/v1/disciplines/{}", surgery.as_str().unwrap()),
        &admin,
        Some(json!({ "parent_id": medicine })),
    )
    .await;

    let tree = ok(&w, "GET", "/api/v1/disciplines", &learner, None).await;
    let shape = |node: &Value| -> Value {
        fn walk(n: &Value) -> Value {
            json!([
                n["name"],
                n["children"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(walk)
                    .collect::<Vec<_>>()
            ])
        }
        json!(node
            .as_array()
            .unwrap()
            .iter()
            .map(walk)
            .collect::<Vec<_>>())
    };
    assert_eq!(
        shape(&tree["disciplines"]),
        json!([
            ["临床医学", [["外科学", []]]],
            ["内科", [["心血管内科", []]]]
        ])
    );

    // Another organisation's discipline is not a parent here.
    let other = w.org("Other").await;
    w.user(Some(other), "admin@other.example.org", Role::ContentAdmin)
        .await;
    let other_admin = w.login("admin@other.example.org").await;
    assert_eq!(
        fails(
            &w,
            "POST",
            "/api/v1/disciplines",
            &other_admin,
            Some(json!({ "name": "x", "parent_id": cardio }))
        )
        .await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    assert_eq!(
        fails(
            &w,
            "PATCH",
            &format!("/api/v1/disciplines/{}", cardio.as_str().unwrap()),
            &other_admin,
            Some(json!({ "name": "y" }))
        )
        .await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn learners_rate_published_courses(db: PgPool) {
    let Setup {
        w, admin, learner, ..
    } = setup(db).await;
    let course = ok(
        &w,
        "POST",
        "/api/v1/courses",
        &admin,
        Some(json!({ "title": "急性心肌梗死病例讨论" })),
    )
    .await;
    let c = format!("/api/v1/courses/{}", course["id"].as_str().unwrap());
    ok(
        &w,
        "POST",
        &format!("{c}/lessons"),
        &admin,
        Some(json!({ "title": "病例一" })),
    )
    .await;
    assert_eq!(
        fails(
            &w,
            "PUT",
            &format!("{c}/rating"),
            &learner,
            Some(json!({ "rating": 5 }))
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    ok(&w, "POST", &format!("{c}/submit"), &admin, None).await;
    ok(&w, "POST", &format!("{c}/publish"), &admin, None).await;
    assert_eq!(
        fails(
            &w,
            "PUT",
            &format!("{c}/rating"),
            &learner,
            Some(json!({ "rating": 6 }))
        )
        .await,
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_rating".into())
    );
    ok(
        &w,
        "PUT",
        &format!("{c}/rating"),
        &learner,
        Some(json!({ "rating": 2 })),
    )
    .await;
    let r = ok(
        &w,
        "PUT",
        &format!("{c}/rating"),
        &learner,
        Some(json!({ "rating": 4 })),
    )
    .await;
    assert_eq!(
        (r["average"].as_f64(), r["count"].as_i64()),
        (Some(4.0), Some(1))
    );
    let seen = ok(&w, "GET", &c, &learner, None).await;
    assert_eq!(
        seen["rating"],
        json!({ "average": 4.0, "count": 1,
                "bayesian_average": lectern_catalogue::ratings::bayesian_average(4.0, 1.0) })
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn the_openapi_document_lists_every_registered_route(db: PgPool) {
    let w = World::new(db).await;
    let (status, doc) = w.call("GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["openapi"], "3.1.0");
    let table = lectern_api::route_table(&w.state);
    for route in &table {
        let op = &doc["paths"][route.path][route.method.as_str().to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} is missing from the document",
            route.method,
            route.path
        );
        assert!(op["responses"]["default"].is_object());
    }
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        operations,
        table.len(),
        "the document has routes the table does not"
    );
    let search = &doc["paths"]["/api/v1/search"]["get"];
    let params: Vec<&str> = search["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "q",
        "discipline",
        "type",
        "expert",
        "min_duration",
        "max_duration",
        "from",
        "to",
        "sort",
        "cursor",
        "limit",
    ] {
        assert!(params.contains(&p), "search parameter {p} undocumented");
    }
    let answers = |method: &str, path: &str, status: &str| {
        doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
            ["$ref"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("#/components/schemas/")
            .to_string()
    };
    for (method, path, status, schema) in [
        ("get", "/api/v1/search", "200", "SearchPage"),
        ("get", "/api/v1/courses", "200", "CoursePage"),
        ("post", "/api/v1/courses", "201", "Course"),
        ("get", "/api/v1/courses/{course_id}", "200", "Course"),
        ("patch", "/api/v1/courses/{course_id}", "200", "Course"),
        ("put", "/api/v1/courses/{course_id}/order", "200", "Course"),
        (
            "post",
            "/api/v1/courses/{course_id}/publish",
            "200",
            "CourseTransition",
        ),
        (
            "put",
            "/api/v1/courses/{course_id}/rating",
            "200",
            "CourseRating",
        ),
        (
            "post",
            "/api/v1/courses/{course_id}/lessons",
            "201",
            "Lesson",
        ),
        (
            "post",
            "/api/v1/courses/{course_id}/chapters",
            "201",
            "Chapter",
        ),
        ("get", "/api/v1/disciplines", "200", "DisciplineTree"),
        ("get", "/api/v1/experts", "200", "ExpertList"),
    ] {
        assert_eq!(answers(method, path, status), schema, "{method} {path}");
    }
    for schema in [
        "SearchPage",
        "SearchResult",
        "SearchCourse",
        "Course",
        "CourseSummary",
        "ChapterWithLessons",
        "RatingSummary",
        "Heartbeat",
        "ErrorBody",
        "ErrorCode",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    // Closed sets list their values, so clients can generate enums.
    let values = |schema: &str| -> Vec<String> {
        let s = &doc["components"]["schemas"][schema];
        let listed = match s["enum"].as_array() {
            Some(values) => values.clone(),
            None => s["oneOf"]
                .as_array()
                .unwrap_or_else(|| panic!("{schema} lists no values: {s}"))
                .iter()
                .map(|v| v["const"].clone())
                .collect(),
        };
        listed
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        values("CourseState"),
        ["draft", "in_review", "published", "unpublished"]
    );
    assert_eq!(
        values("ResourceType"),
        ["video_course", "clinical_case", "guideline", "live_replay"]
    );
    assert_eq!(
        values("SearchSort"),
        ["relevance", "newest", "most_watched", "rating"]
    );
    let sort = search["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "sort")
        .unwrap();
    assert!(
        sort["schema"]
            .to_string()
            .contains("#/components/schemas/SearchSort"),
        "{sort}"
    );
    let delete = &doc["paths"]["/api/v1/courses/{course_id}"]["delete"];
    assert_eq!(delete["x-lectern-step-up"], true);
    assert_eq!(delete["parameters"][0]["name"], "course_id");
}

#[sqlx::test(migrations = "../migrations")]
async fn an_expert_edits_only_their_own_profile_and_the_courses_that_credit_them(db: PgPool) {
    let Setup {
        w,
        org,
        admin,
        expert,
        ..
    } = setup(db).await;
    let b_id = w
        .user(Some(org), "expert.b@med.example.org", Role::Expert)
        .await;
    let expert_b = w.login("expert.b@med.example.org").await;
    let (_, me) = w.call("GET", "/api/v1/me", Some(&expert), None).await;
    // Without a profile an expert's draft could credit nobody they are.
    assert_eq!(
        fails(
            &w,
            "POST",
            "/api/v1/courses",
            &expert,
            Some(json!({ "title": "无名课程" }))
        )
        .await,
        (StatusCode::CONFLICT, "expert_profile_required".into())
    );
    let profile_a = ok(
        &w,
        "POST",
        "/api/v1/experts",
        &admin,
        Some(json!({ "name": "王磊", "user_id": me["id"] })),
    )
    .await;
    let profile_b = ok(
        &w,
        "POST",
        "/api/v1/experts",
        &admin,
        Some(json!({ "name": "李娜", "user_id": b_id })),
    )
    .await;
    // Expert A's draft credits A without being told to.
    let course = ok(
        &w,
        "POST",
        "/api/v1/courses",
        &expert,
        Some(json!({ "title": "心电图入门" })),
    )
    .await;
    assert_eq!(course["experts"][0]["id"], profile_a["id"]);
    let c = format!("/api/v1/courses/{}", course["id"].as_str().unwrap());

    // Expert B reads it, but changes none of it.
    ok(&w, "GET", &c, &expert_b, None).await;
    for (method, path, body) in [
        ("PATCH", c.clone(), Some(json!({ "title": "改" }))),
        (
            "POST",
            format!("{c}/chapters"),
            Some(json!({ "title": "第一章" })),
        ),
        ("POST", format!("{c}/submit"), None),
    ] {
        assert_eq!(
            fails(&w, method, &path, &expert_b, body).await,
            (StatusCode::FORBIDDEN, "not_course_expert".into()),
            "{method} {path}"
        );
    }
    // Expert A and the content admin do.
    ok(
        &w,
        "PATCH",
        &c,
        &expert,
        Some(json!({ "title": "心电图入门（第二版）" })),
    )
    .await;
    ok(
        &w,
        "POST",
        &format!("{c}/chapters"),
        &admin,
        Some(json!({ "title": "第一章" })),
    )
    .await;
    // A cannot drop themselves off their own draft by accident.
    let patched = ok(
        &w,
        "PATCH",
        &c,
        &expert,
        Some(json!({ "expert_ids": [profile_b["id"]] })),
    )
    .await;
    let credited: Vec<&str> = patched["experts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(credited, ["李娜", "王磊"]);
    // Now that it credits B, B may edit it too.
    ok(
        &w,
        "PATCH",
        &c,
        &expert_b,
        Some(json!({ "description": "合著" })),
    )
    .await;

    // Profiles: each expert edits their own, never another's.
    let own = ok(
        &w,
        "PATCH",
        "/api/v1/me/expert-profile",
        &expert_b,
        Some(json!({ "title": "副主任医师" })),
    )
    .await;
    assert_eq!(
        (own["id"].clone(), own["title"].clone()),
        (profile_b["id"].clone(), json!("副主任医师"))
    );
    assert_eq!(
        fails(
            &w,
            "PATCH",
            &format!("/api/v1/experts/{}", profile_a["id"].as_str().unwrap()),
            &expert_b,
            Some(json!({ "title": "改" }))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let a = ok(&w, "GET", "/api/v1/me/expert-profile", &expert, None).await;
    assert_eq!(a["title"], "");
}
