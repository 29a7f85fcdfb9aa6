//! The community through the composed app on a real PostgreSQL: reviews
//! and their Bayesian average, comments with moments and replies,
//! questions to the experts of a course, moderation (pre and post, the
//! sensitive-word list however a word is disguised, reports, decisions
//! with reasons the author reads in their inbox, the audit row), a
//! course review sent back with a reason, and the posting limits (time
//! moved on a manual clock, never slept).

use std::time::Duration;

use axum::http::StatusCode;
use lectern_api::Settings;
use lectern_clock::Clock;
use lectern_community::limits::Rate;
use lectern_community::CommunitySettings;
use lectern_testkit::World;
use lectern_web::Role;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

struct Org {
    w: World,
    org: Uuid,
    admin: String,
    /// Two learners: `learner` posts, `other` reads.
    learner: String,
    learner_id: Uuid,
    other: String,
    other_id: Uuid,
    /// An expert named on the course.
    expert: String,
    expert_id: Uuid,
    /// An expert of the organisation not named on it.
    outsider: String,
    course: Uuid,
    lesson: Uuid,
}

async fn org(db: PgPool) -> Org {
    let w = World::new(db).await;
    let org = w.org("协和继续教育").await;
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for (email, role) in [
        ("admin@c.example.org", Role::ContentAdmin),
        ("learner@c.example.org", Role::Learner),
        ("other@c.example.org", Role::Learner),
        ("expert@c.example.org", Role::Expert),
        ("outsider@c.example.org", Role::Expert),
    ] {
        ids.push(w.user(Some(org), email, role).await);
        tokens.push(w.login(email).await);
    }
    let (course, lesson) = lesson(&w, org, "心力衰竭诊疗").await;
    for (user, named) in [(ids[3], true), (ids[4], false)] {
        let expert = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO experts (id, organisation_id, user_id, name) VALUES ($1, $2, $3, '专家')",
        )
        .bind(expert)
        .bind(org)
        .bind(user)
        .execute(w.db())
        .await
        .unwrap();
        if named {
            sqlx::query("INSERT INTO course_experts (course_id, expert_id) VALUES ($1, $2)")
                .bind(course)
                .bind(expert)
                .execute(w.db())
                .await
                .unwrap();
        }
    }
    let mut t = tokens.into_iter();
    Org {
        w,
        org,
        admin: t.next().unwrap(),
        learner: t.next().unwrap(),
        learner_id: ids[1],
        other: t.next().unwrap(),
        other_id: ids[2],
        expert: t.next().unwrap(),
        expert_id: ids[3],
        outsider: t.next().unwrap(),
        course,
        lesson,
    }
}

/// A published course of `org` with one lesson playing a 600 s video.
async fn lesson(w: &World, org: Uuid, title: &str) -> (Uuid, Uuid) {
    let (course, lesson, asset) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(
        "INSERT INTO courses (id, organisation_id, title, state, published_at)
         VALUES ($1, $2, $3, 'published', now())",
    )
    .bind(course)
    .bind(org)
    .bind(title)
    .execute(w.db())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO assets (id, organisation_id, status, source_key, duration_s, output_prefix)
         VALUES ($1, $2, 'ready', $3, 600, $4)",
    )
    .bind(asset)
    .bind(org)
    .bind(format!("sources/{asset}"))
    .bind(format!("assets/{asset}/out/attempt-1/"))
    .execute(w.db())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO lessons (id, organisation_id, course_id, title, asset_id)
         VALUES ($1, $2, $3, '第一课', $4)",
    )
    .bind(lesson)
    .bind(org)
    .bind(course)
    .bind(asset)
    .execute(w.db())
    .await
    .unwrap();
    (course, lesson)
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
    assert!(!status.is_success(), "{method} {path}: {status} {body}");
    (status, body["error"]["code"].as_str().unwrap().to_string())
}

/// The ids of the comments on the lesson's first page as `token` sees them.
async fn visible_comments(o: &Org, token: &str) -> Vec<String> {
    let page = ok(
        &o.w,
        "GET",
        &format!("/api/v1/lessons/{}/comments", o.lesson),
        token,
        None,
    )
    .await;
    page["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// The inbox items of `user`: (topic, params).
async fn inbox(w: &World, user: Uuid) -> Vec<(String, Value)> {
    sqlx::query_as("SELECT topic, params FROM inbox_items WHERE user_id = $1 ORDER BY id")
        .bind(user)
        .fetch_all(w.db())
        .await
        .unwrap()
}

async fn comment(o: &Org, token: &str, body: &str) -> Value {
    ok(
        &o.w,
        "POST",
        &format!("/api/v1/lessons/{}/comments", o.lesson),
        token,
        Some(json!({ "body": body })),
    )
    .await
}

async fn queue(o: &Org) -> Value {
    ok(&o.w, "GET", "/api/v1/moderation/queue", &o.admin, None).await
}

fn case_of(queue: &Value, post: &Value) -> String {
    queue["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["post_id"] == post["id"])
        .unwrap_or_else(|| panic!("{post} not queued: {queue}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[sqlx::test(migrations = "../migrations")]
async fn listed_words_hold_comments_however_they_are_written(db: PgPool) {
    let o = org(db).await;
    for word in ["敏感词", "spam"] {
        ok(
            &o.w,
            "POST",
            "/api/v1/moderation/words",
            &o.admin,
            Some(json!({ "word": word })),
        )
        .await;
    }
    // The list compares folded: a disguised duplicate is the same word.
    assert_eq!(
        fails(
            &o.w,
            "POST",
            "/api/v1/moderation/words",
            &o.admin,
            Some(json!({ "word": "ＳＰ ＡＭ" }))
        )
        .await,
        (StatusCode::CONFLICT, "word_exists".into())
    );
    // Post-moderation (the default): clean text shows at once; text with a
    // listed word, plain, spaced out, full-width or punctuated, waits.
    let clean = comment(&o, &o.learner, "讲得很清楚，谢谢老师").await;
    assert_eq!(clean["state"], "published");
    let mut held = Vec::new();
    for body in [
        "这里有敏感词",
        "这里有敏 感 词",
        "这里有敏　感　词",
        "买 ＳＰＡＭ 吗",
        "s.p.a.m here",
    ] {
        let c = comment(&o, &o.learner, body).await;
        assert_eq!(c["state"], "pending", "{body}");
        held.push(c);
    }
    let others = visible_comments(&o, &o.other).await;
    assert_eq!(others, vec![clean["id"].as_str().unwrap().to_string()]);
    // The author sees their own, pending.
    assert_eq!(visible_comments(&o, &o.learner).await.len(), 6);
    let q = queue(&o).await;
    assert_eq!(q["open"], 5);
    let first = &q["cases"][0];
    assert_eq!(first["cause"], "sensitive_word");
    assert_eq!(first["matched"], json!(["敏感词"]));
    assert_eq!(first["body"], "这里有敏感词");
    assert!(first["age_s"].as_f64().unwrap() >= 0.0);
    assert!(q["median_decision_s"].is_null());

    // Approve one, reject another with a reason.
    let approved = &held[0];
    let rejected = &held[1];
    let case = case_of(&q, approved);
    let d = ok(
        &o.w,
        "POST",
        &format!("/api/v1/moderation/cases/{case}/decision"),
        &o.admin,
        Some(json!({ "decision": "approve" })),
    )
    .await;
    assert_eq!(d["post_state"], "published");
    assert_eq!(
        fails(
            &o.w,
            "POST",
            &format!("/api/v1/moderation/cases/{case}/decision"),
            &o.admin,
            Some(json!({ "decision": "hide" }))
        )
        .await,
        (StatusCode::CONFLICT, "already_decided".into())
    );
    let case = case_of(&q, rejected);
    assert_eq!(
        fails(
            &o.w,
            "POST",
            &format!("/api/v1/moderation/cases/{case}/decision"),
            &o.admin,
            Some(json!({ "decision": "reject" }))
        )
        .await,
        (StatusCode::UNPROCESSABLE_ENTITY, "reason_required".into())
    );
    ok(
        &o.w,
        "POST",
        &format!("/api/v1/moderation/cases/{case}/decision"),
        &o.admin,
        Some(json!({ "decision": "reject", "reason": "含有不当用语" })),
    )
    .await;
    let others = visible_comments(&o, &o.other).await;
    assert!(others.contains(&approved["id"].as_str().unwrap().to_string()));
    assert!(!others.contains(&rejected["id"].as_str().unwrap().to_string()));
    // The author reads the reason on the post and in the inbox.
    let page = ok(
        &o.w,
        "GET",
        &format!("/api/v1/lessons/{}/comments", o.lesson),
        &o.learner,
        None,
    )
    .await;
    let mine = page["comments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == rejected["id"])
        .unwrap();
    assert_eq!(mine["state"], "rejected");
    assert_eq!(mine["moderation_reason"], "含有不当用语");
    let items = inbox(&o.w, o.learner_id).await;
    let outcomes: Vec<&Value> = items
        .iter()
        .filter(|(t, _)| t == "moderation_outcome")
        .map(|(_, p)| p)
        .collect();
    assert_eq!(outcomes.len(), 2, "{items:?}");
    assert_eq!(outcomes[0]["outcome"], "approved");
    assert_eq!(outcomes[1]["outcome"], "rejected");
    assert_eq!(outcomes[1]["reason"], "含有不当用语");
    assert_eq!(outcomes[1]["kind"], "comment");
    // The other learner's view carries no reason of someone else's post.
    assert!(inbox(&o.w, o.other_id).await.is_empty());
    // The queue's pace, and the audit rows: post and decision, not the text.
    let q = queue(&o).await;
    assert_eq!(q["open"], 3);
    assert_eq!(q["decided_30d"], 2);
    assert!(q["median_decision_s"].as_f64().unwrap() >= 0.0);
    o.w.audit_flushed().await;
    let details: Vec<String> = sqlx::query_scalar(
        "SELECT detail FROM audit_log WHERE action = 'moderation.decision' ORDER BY id",
    )
    .fetch_all(o.w.db())
    .await
    .unwrap();
    assert_eq!(details.len(), 2);
    assert!(details[1].contains(rejected["id"].as_str().unwrap()));
    assert!(details[1].contains("\"rejected\""));
    assert!(!details
        .iter()
        .any(|d| d.contains("敏") || d.contains("不当")));
}

/// The list has a ceiling (every comment is matched against all of it):
/// the last word under it is added, the next one is refused with a code
/// the console can explain.
#[sqlx::test(migrations = "../migrations")]
async fn the_word_list_stops_at_its_maximum(db: PgPool) {
    let o = org(db).await;
    let max = lectern_community::moderation::MAX_WORDS;
    sqlx::query(
        "INSERT INTO sensitive_words (id, organisation_id, word, folded)
         SELECT gen_random_uuid(), $1, 'w' || n, 'w' || n FROM generate_series(1, $2) AS n",
    )
    .bind(o.org)
    .bind(max - 1)
    .execute(o.w.db())
    .await
    .unwrap();
    ok(
        &o.w,
        "POST",
        "/api/v1/moderation/words",
        &o.admin,
        Some(json!({ "word": "最后一个" })),
    )
    .await;
    assert_eq!(
        fails(
            &o.w,
            "POST",
            "/api/v1/moderation/words",
            &o.admin,
            Some(json!({ "word": "one too many" }))
        )
        .await,
        (StatusCode::UNPROCESSABLE_ENTITY, "word_list_full".into())
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn pre_moderation_shows_nothing_before_approval(db: PgPool) {
    let o = org(db).await;
    ok(
        &o.w,
        "PUT",
        "/api/v1/moderation/settings",
        &o.admin,
        Some(json!({ "moderation": "pre" })),
    )
    .await;
    ok(
        &o.w,
        "POST",
        "/api/v1/moderation/words",
        &o.admin,
        Some(json!({ "word": "违禁药" })),
    )
    .await;
    let clean = comment(&o, &o.learner, "第三分钟的图很有用").await;
    // Full-width digits and spaces between the characters.
    let listed = comment(&o, &o.learner, "哪里买违 禁 药？电话１２３").await;
    assert_eq!(clean["state"], "pending");
    assert_eq!(listed["state"], "pending");
    assert!(visible_comments(&o, &o.other).await.is_empty());
    let q = queue(&o).await;
    assert_eq!(case_of(&q, &clean).len(), 36);
    let causes: Vec<&str> = q["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cause"].as_str().unwrap())
        .collect();
    assert_eq!(causes, vec!["pre_moderation", "sensitive_word"]);
    ok(
        &o.w,
        "POST",
        &format!("/api/v1/moderation/cases/{}/decision", case_of(&q, &clean)),
        &o.admin,
        Some(json!({ "decision": "approve" })),
    )
    .await;
    ok(
        &o.w,
        "POST",
        &format!("/api/v1/moderation/cases/{}/decision", case_of(&q, &listed)),
        &o.admin,
        Some(json!({ "decision": "reject", "reason": "广告" })),
    )
    .await;
    assert_eq!(
        visible_comments(&o, &o.other).await,
        vec![clean["id"].as_str().unwrap().to_string()]
    );
    let reasons: Vec<Value> = inbox(&o.w, o.learner_id)
        .await
        .into_iter()
        .map(|(_, p)| p["reason"].clone())
        .collect();
    assert!(reasons.contains(&json!("广告")), "{reasons:?}");
    // Pre-moderation covers questions and reviews too.
    let q = ok(
        &o.w,
        "POST",
        "/api/v1/questions",
        &o.learner,
        Some(json!({ "body": "剂量？", "lesson_id": o.lesson })),
    )
    .await;
    assert_eq!(q["state"], "pending");
    let queue_of_expert = ok(&o.w, "GET", "/api/v1/questions/queue", &o.expert, None).await;
    assert!(queue_of_expert["questions"].as_array().unwrap().is_empty());
    let r = ok(
        &o.w,
        "PUT",
        &format!("/api/v1/courses/{}/review", o.course),
        &o.learner,
        Some(json!({ "rating": 5, "body": "很好" })),
    )
    .await;
    assert_eq!(r["state"], "pending");
    let course = ok(
        &o.w,
        "GET",
        &format!("/api/v1/courses/{}", o.course),
        &o.other,
        None,
    )
    .await;
    assert_eq!(
        course["rating"]["count"], 0,
        "a pending review counts for nothing"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn reports_hide_a_post_until_a_moderator_decides(db: PgPool) {
    let o = org(db).await;
    ok(
        &o.w,
        "PUT",
        "/api/v1/moderation/settings",
        &o.admin,
        Some(json!({ "report_threshold": 2 })),
    )
    .await;
    let third = {
        o.w.user(Some(o.org), "third@c.example.org", Role::Learner)
            .await;
        o.w.login("third@c.example.org").await
    };
    let c = comment(&o, &o.learner, "加我微信").await;
    let report = json!({ "kind": "comment", "post_id": c["id"], "reason": "广告" });
    assert_eq!(
        fails(
            &o.w,
            "POST",
            "/api/v1/reports",
            &o.learner,
            Some(report.clone())
        )
        .await,
        (StatusCode::CONFLICT, "own_post".into())
    );
    let r = ok(
        &o.w,
        "POST",
        "/api/v1/reports",
        &o.other,
        Some(report.clone()),
    )
    .await;
    assert_eq!(r["hidden_pending_review"], false);
    assert_eq!(
        fails(
            &o.w,
            "POST",
            "/api/v1/reports",
            &o.other,
            Some(report.clone())
        )
        .await,
        (StatusCode::CONFLICT, "already_reported".into())
    );
    assert_eq!(visible_comments(&o, &third).await.len(), 1);
    let r = ok(
        &o.w,
        "POST",
        "/api/v1/reports",
        &third,
        Some(report.clone()),
    )
    .await;
    assert_eq!(r["hidden_pending_review"], true);
    assert!(visible_comments(&o, &o.other).await.is_empty());
    let q = queue(&o).await;
    assert_eq!(q["cases"][0]["cause"], "reported");
    assert_eq!(q["cases"][0]["reports"], 2);
    // A learner cannot moderate; an expert neither.
    let case = case_of(&q, &c);
    for token in [&o.other, &o.expert] {
        assert_eq!(
            fails(
                &o.w,
                "POST",
                &format!("/api/v1/moderation/cases/{case}/decision"),
                token,
                Some(json!({ "decision": "approve" }))
            )
            .await,
            (StatusCode::FORBIDDEN, "forbidden".into())
        );
    }
    ok(
        &o.w,
        "POST",
        &format!("/api/v1/moderation/cases/{case}/decision"),
        &o.admin,
        Some(json!({ "decision": "hide", "reason": "推广信息" })),
    )
    .await;
    assert!(visible_comments(&o, &o.other).await.is_empty());
    // Another organisation's moderator and learners: 404.
    let b = o.w.org("Other").await;
    o.w.user(Some(b), "admin@b.example.org", Role::ContentAdmin)
        .await;
    o.w.user(Some(b), "learner@b.example.org", Role::Learner)
        .await;
    let admin_b = o.w.login("admin@b.example.org").await;
    let learner_b = o.w.login("learner@b.example.org").await;
    let c2 = comment(&o, &o.learner, "第二条").await;
    assert_eq!(
        fails(
            &o.w,
            "POST",
            "/api/v1/reports",
            &learner_b,
            Some(json!({ "kind": "comment", "post_id": c2["id"] }))
        )
        .await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    assert_eq!(
        fails(
            &o.w,
            "GET",
            &format!("/api/v1/lessons/{}/comments", o.lesson),
            &learner_b,
            None
        )
        .await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    ok(
        &o.w,
        "POST",
        "/api/v1/reports",
        &o.other,
        Some(json!({ "kind": "comment", "post_id": c2["id"] })),
    )
    .await;
    let case2 = case_of(&queue(&o).await, &c2);
    assert_eq!(
        fails(
            &o.w,
            "POST",
            &format!("/api/v1/moderation/cases/{case2}/decision"),
            &admin_b,
            Some(json!({ "decision": "hide" }))
        )
        .await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn reviews_rank_by_a_bayesian_average_and_helpful_votes(db: PgPool) {
    let o = org(db).await;
    let c = format!("/api/v1/courses/{}", o.course);
    let mine = ok(
        &o.w,
        "PUT",
        &format!("{c}/review"),
        &o.learner,
        Some(json!({ "rating": 5, "body": "<b>非常好</b> 的课程" })),
    )
    .await;
    assert_eq!(mine["state"], "published");
    // Text is returned as written, as a JSON string: never rendered.
    assert_eq!(mine["body"], "<b>非常好</b> 的课程");
    ok(
        &o.w,
        "PUT",
        &format!("{c}/review"),
        &o.other,
        Some(json!({ "rating": 3, "body": "一般" })),
    )
    .await;
    let course = ok(&o.w, "GET", &c, &o.other, None).await;
    assert_eq!(course["rating"]["count"], 2);
    assert_eq!(course["rating"]["average"], 4.0);
    assert_eq!(
        course["rating"]["bayesian_average"],
        json!(lectern_catalogue::ratings::bayesian_average(8.0, 2.0))
    );
    // The stars-only route keeps its path and the review's text.
    let r = ok(
        &o.w,
        "PUT",
        &format!("{c}/rating"),
        &o.learner,
        Some(json!({ "rating": 4 })),
    )
    .await;
    assert_eq!(r["rating"], 4);
    let own = ok(&o.w, "GET", &format!("{c}/review"), &o.learner, None).await;
    assert_eq!(own["body"], "<b>非常好</b> 的课程");
    // Helpful: once per learner, never one's own.
    let id = own["id"].as_str().unwrap();
    assert_eq!(
        fails(
            &o.w,
            "PUT",
            &format!("/api/v1/reviews/{id}/helpful"),
            &o.learner,
            None
        )
        .await,
        (StatusCode::CONFLICT, "own_post".into())
    );
    for _ in 0..2 {
        let v = ok(
            &o.w,
            "PUT",
            &format!("/api/v1/reviews/{id}/helpful"),
            &o.other,
            None,
        )
        .await;
        assert_eq!(v["helpful_count"], 1);
    }
    let helpful = ok(
        &o.w,
        "GET",
        &format!("{c}/reviews?sort=helpful"),
        &o.other,
        None,
    )
    .await;
    assert_eq!(helpful["reviews"][0]["id"], id);
    assert_eq!(helpful["reviews"][0]["voted_helpful"], true);
    let newest = ok(&o.w, "GET", &format!("{c}/reviews?limit=1"), &o.other, None).await;
    assert_eq!(
        newest["reviews"][0]["mine"], true,
        "the other learner's is newest"
    );
    let next = newest["next"].as_str().unwrap();
    let page2 = ok(
        &o.w,
        "GET",
        &format!("{c}/reviews?limit=1&cursor={next}"),
        &o.other,
        None,
    )
    .await;
    assert_eq!(page2["reviews"][0]["id"], id);
    assert!(page2["next"].is_null());
    assert_eq!(
        fails(
            &o.w,
            "GET",
            &format!("{c}/reviews?sort=helpful&cursor={next}"),
            &o.other,
            None
        )
        .await,
        (StatusCode::BAD_REQUEST, "invalid_cursor".into())
    );
    assert_eq!(
        fails(
            &o.w,
            "GET",
            &format!("{c}/reviews?sort=best"),
            &o.other,
            None
        )
        .await,
        (StatusCode::BAD_REQUEST, "invalid_review_sort".into())
    );
    ok(&o.w, "DELETE", &format!("{c}/review"), &o.learner, None).await;
    let course = ok(&o.w, "GET", &c, &o.other, None).await;
    assert_eq!(course["rating"]["count"], 1);
    assert_eq!(
        fails(&o.w, "GET", &format!("{c}/review"), &o.learner, None).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    // Over-long text has its own code.
    assert_eq!(
        fails(
            &o.w,
            "PUT",
            &format!("{c}/review"),
            &o.learner,
            Some(json!({ "rating": 5, "body": "好".repeat(5001) }))
        )
        .await,
        (StatusCode::UNPROCESSABLE_ENTITY, "text_too_long".into())
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn comments_point_into_the_video_reply_once_and_page_by_keyset(db: PgPool) {
    let o = org(db).await;
    let path = format!("/api/v1/lessons/{}/comments", o.lesson);
    let c = ok(
        &o.w,
        "POST",
        &path,
        &o.learner,
        Some(json!({ "body": "12:34 这里的心电图", "at_s": 754.0 - 200.0 })),
    )
    .await;
    assert_eq!(c["at_s"], 554.0);
    for (at, code) in [(600.5, "past_duration"), (-1.0, "negative_value")] {
        assert_eq!(
            fails(
                &o.w,
                "POST",
                &path,
                &o.learner,
                Some(json!({ "body": "x", "at_s": at }))
            )
            .await,
            (StatusCode::UNPROCESSABLE_ENTITY, code.into())
        );
    }
    assert_eq!(
        fails(
            &o.w,
            "POST",
            &path,
            &o.learner,
            Some(json!({ "body": "  " }))
        )
        .await,
        (StatusCode::UNPROCESSABLE_ENTITY, "text_empty".into())
    );
    let reply = ok(
        &o.w,
        "POST",
        &path,
        &o.expert,
        Some(json!({ "body": "是房颤", "parent_id": c["id"] })),
    )
    .await;
    assert_eq!(
        fails(
            &o.w,
            "POST",
            &path,
            &o.other,
            Some(json!({ "body": "谢谢", "parent_id": reply["id"] }))
        )
        .await,
        (StatusCode::UNPROCESSABLE_ENTITY, "nested_reply".into())
    );
    let replies = ok(
        &o.w,
        "GET",
        &format!("/api/v1/comments/{}/replies", c["id"].as_str().unwrap()),
        &o.other,
        None,
    )
    .await;
    assert_eq!(replies["comments"][0]["id"], reply["id"]);
    // Only the author edits or deletes.
    let cid = c["id"].as_str().unwrap();
    assert_eq!(
        fails(
            &o.w,
            "PATCH",
            &format!("/api/v1/comments/{cid}"),
            &o.other,
            Some(json!({ "body": "改" }))
        )
        .await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let edited = ok(
        &o.w,
        "PATCH",
        &format!("/api/v1/comments/{cid}"),
        &o.learner,
        Some(json!({ "body": "12:34 这里的心电图（已更正）" })),
    )
    .await;
    assert!(edited["edited_at"].is_string());
    // 45 more comments (written directly, past the posting limit): pages
    // of 20 neither skip nor repeat, newest first.
    for i in 0..45 {
        sqlx::query(
            "INSERT INTO lesson_comments (id, organisation_id, lesson_id, author_id, body, state)
             VALUES ($1, $2, $3, $4, $5, 'published')",
        )
        .bind(Uuid::now_v7())
        .bind(o.org)
        .bind(o.lesson)
        .bind(o.other_id)
        .bind(format!("评论 {i}"))
        .execute(o.w.db())
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let p = match &after {
            Some(a) => format!("{path}?after={a}"),
            None => path.clone(),
        };
        let page = ok(&o.w, "GET", &p, &o.other, None).await;
        seen.extend(
            page["comments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["body"].as_str().unwrap().to_string()),
        );
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 46);
    assert_eq!(seen[0], "评论 44");
    assert_eq!(seen[45], "12:34 这里的心电图（已更正）");
    let top = ok(&o.w, "GET", &path, &o.other, None).await;
    assert_eq!(top["comments"].as_array().unwrap().len(), 20);
    ok(
        &o.w,
        "DELETE",
        &format!("/api/v1/comments/{cid}"),
        &o.learner,
        None,
    )
    .await;
    let replies: i64 =
        sqlx::query_scalar("SELECT count(*) FROM lesson_comments WHERE parent_id IS NOT NULL")
            .fetch_one(o.w.db())
            .await
            .unwrap();
    assert_eq!(replies, 0, "replies go with their comment");
}

#[sqlx::test(migrations = "../migrations")]
async fn experts_answer_the_questions_of_their_courses(db: PgPool) {
    let o = org(db).await;
    let q = ok(
        &o.w,
        "POST",
        "/api/v1/questions",
        &o.learner,
        Some(json!({ "body": "β受体阻滞剂的起始剂量？", "lesson_id": o.lesson })),
    )
    .await;
    let qid = q["id"].as_str().unwrap();
    assert_eq!(q["answered"], false);
    // The named expert is told, and sees it in their queue with its age.
    let told = inbox(&o.w, o.expert_id).await;
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].0, "question_asked");
    assert_eq!(told[0].1["course_title"], "心力衰竭诊疗");
    // Links are app paths: the expert's question queue in the console.
    assert_eq!(
        told[0].1["link"],
        format!("/admin/questions?question={qid}").as_str()
    );
    let queue = ok(&o.w, "GET", "/api/v1/questions/queue", &o.expert, None).await;
    assert_eq!(queue["questions"][0]["id"], qid);
    assert!(queue["questions"][0]["age_s"].as_f64().unwrap() >= 0.0);
    // An expert not named on the course neither sees nor answers it.
    let other_queue = ok(&o.w, "GET", "/api/v1/questions/queue", &o.outsider, None).await;
    assert!(other_queue["questions"].as_array().unwrap().is_empty());
    let answer = json!({ "body": "从小剂量开始，逐渐加量。" });
    assert_eq!(
        fails(
            &o.w,
            "POST",
            &format!("/api/v1/questions/{qid}/answers"),
            &o.outsider,
            Some(answer.clone())
        )
        .await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    // Nor does a learner, nor another learner read it.
    assert_eq!(
        fails(
            &o.w,
            "POST",
            &format!("/api/v1/questions/{qid}/answers"),
            &o.learner,
            Some(answer.clone())
        )
        .await,
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    assert_eq!(
        fails(
            &o.w,
            "GET",
            &format!("/api/v1/questions/{qid}"),
            &o.other,
            None
        )
        .await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    // A second, newer question stays ahead of the answered one.
    let q2 = ok(
        &o.w,
        "POST",
        "/api/v1/questions",
        &o.other,
        Some(json!({ "body": "需要监测什么？", "lesson_id": o.lesson })),
    )
    .await;
    let a = ok(
        &o.w,
        "POST",
        &format!("/api/v1/questions/{qid}/answers"),
        &o.expert,
        Some(answer),
    )
    .await;
    let queue = ok(&o.w, "GET", "/api/v1/questions/queue", &o.expert, None).await;
    let order: Vec<&str> = queue["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        vec![q2["id"].as_str().unwrap(), qid],
        "unanswered first"
    );
    let told = inbox(&o.w, o.learner_id).await;
    assert_eq!(told.last().unwrap().0, "question_answered");
    // The asker reads the answer beside the lesson's video.
    assert_eq!(
        told.last().unwrap().1["link"],
        format!("/app/courses/{}/lessons/{}", o.course, o.lesson).as_str()
    );
    // The asker accepts it, once.
    let accept = json!({ "answer_id": a["id"] });
    let t = ok(
        &o.w,
        "POST",
        &format!("/api/v1/questions/{qid}/accept"),
        &o.learner,
        Some(accept.clone()),
    )
    .await;
    assert_eq!(t["accepted_answer_id"], a["id"]);
    assert_eq!(t["answers"][0]["accepted"], true);
    assert_eq!(
        fails(
            &o.w,
            "POST",
            &format!("/api/v1/questions/{qid}/accept"),
            &o.learner,
            Some(accept)
        )
        .await,
        (StatusCode::CONFLICT, "answer_already_accepted".into())
    );
    assert_eq!(
        inbox(&o.w, o.expert_id).await.last().unwrap().0,
        "answer_accepted"
    );
    let mine = ok(&o.w, "GET", "/api/v1/questions/mine", &o.learner, None).await;
    assert_eq!(mine["questions"][0]["answered"], true);
    // Asked directly: only that expert sees it.
    let outsider_expert: Uuid = sqlx::query_scalar(
        "SELECT e.id FROM experts e WHERE e.organisation_id = $1
           AND NOT EXISTS (SELECT 1 FROM course_experts ce WHERE ce.expert_id = e.id)",
    )
    .bind(o.org)
    .fetch_one(o.w.db())
    .await
    .unwrap();
    let direct = ok(
        &o.w,
        "POST",
        "/api/v1/questions",
        &o.learner,
        Some(json!({ "body": "想请教您一个病例", "expert_id": outsider_expert })),
    )
    .await;
    let queue = ok(&o.w, "GET", "/api/v1/questions/queue", &o.outsider, None).await;
    assert_eq!(queue["questions"][0]["id"], direct["id"]);
    assert_eq!(
        fails(
            &o.w,
            "GET",
            &format!("/api/v1/questions/{}", direct["id"].as_str().unwrap()),
            &o.expert,
            None
        )
        .await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_rejected_course_review_carries_its_reason_to_the_experts(db: PgPool) {
    let o = org(db).await;
    let c = format!("/api/v1/courses/{}", o.course);
    sqlx::query("UPDATE courses SET state = 'in_review' WHERE id = $1")
        .bind(o.course)
        .execute(o.w.db())
        .await
        .unwrap();
    assert_eq!(
        fails(
            &o.w,
            "POST",
            &format!("{c}/reject"),
            &o.admin,
            Some(json!({ "reason": " " }))
        )
        .await,
        (StatusCode::UNPROCESSABLE_ENTITY, "reason_required".into())
    );
    assert_eq!(
        fails(
            &o.w,
            "POST",
            &format!("{c}/reject"),
            &o.expert,
            Some(json!({ "reason": "x" }))
        )
        .await,
        (StatusCode::FORBIDDEN, "forbidden".into())
    );
    let t = ok(
        &o.w,
        "POST",
        &format!("{c}/reject"),
        &o.admin,
        Some(json!({ "reason": "第二课视频声音过小" })),
    )
    .await;
    assert_eq!(
        (t["from"].as_str(), t["state"].as_str()),
        (Some("in_review"), Some("draft"))
    );
    let seen = ok(&o.w, "GET", &c, &o.expert, None).await;
    assert_eq!(seen["review"]["outcome"], "rejected");
    assert_eq!(seen["review"]["reason"], "第二课视频声音过小");
    let told = inbox(&o.w, o.expert_id).await;
    assert_eq!(told[0].0, "course_review_outcome");
    assert_eq!(told[0].1["reason"], "第二课视频声音过小");
    // A second rejection of a draft is not a transition.
    assert_eq!(
        fails(
            &o.w,
            "POST",
            &format!("{c}/reject"),
            &o.admin,
            Some(json!({ "reason": "again" }))
        )
        .await,
        (StatusCode::CONFLICT, "invalid_transition".into())
    );
    // Approval replaces the outcome.
    ok(&o.w, "POST", &format!("{c}/submit"), &o.expert, None).await;
    ok(&o.w, "POST", &format!("{c}/publish"), &o.admin, None).await;
    let seen = ok(&o.w, "GET", &c, &o.admin, None).await;
    assert_eq!(seen["review"]["outcome"], "published");
    assert!(seen["review"]["reason"].is_null());
    // …and the experts are told it is published, in the same transaction.
    let told = inbox(&o.w, o.expert_id).await;
    assert_eq!(told.len(), 2, "{told:?}");
    assert_eq!(told[1].0, "course_published");
    assert_eq!(
        told[1].1["link"],
        format!("/app/courses/{}", o.course).as_str()
    );
    let learner_view = ok(&o.w, "GET", &c, &o.learner, None).await;
    assert!(learner_view["review"].is_null());
}

#[sqlx::test(migrations = "../migrations")]
async fn posting_limits_follow_the_clock_per_person_and_per_address(db: PgPool) {
    let mut o = org(db).await;
    let (clock, hand) = Clock::manual();
    let minute = Duration::from_secs(60);
    let settings = Settings {
        community: CommunitySettings {
            clock,
            per_user: Rate {
                count: 3,
                per: minute,
            },
            per_address: Rate {
                count: 5,
                per: minute,
            },
        },
        ..o.w.settings()
    };
    o.w.rebuild(None, settings);
    let path = format!("/api/v1/lessons/{}/comments", o.lesson);
    for i in 0..3 {
        comment(&o, &o.learner, &format!("第{i}条")).await;
    }
    let (status, headers, body) =
        o.w.call_with_headers(
            "POST",
            &path,
            Some(&o.learner),
            Some(json!({ "body": "第四条" })),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("posting_too_fast"));
    assert_eq!(headers["retry-after"], "60");
    // Another person is not limited by this one's posts.
    comment(&o, &o.other, "我的第一条").await;
    hand.advance(minute - Duration::from_millis(1));
    assert_eq!(
        fails(
            &o.w,
            "POST",
            &path,
            &o.learner,
            Some(json!({ "body": "还不行" }))
        )
        .await,
        (StatusCode::TOO_MANY_REQUESTS, "posting_too_fast".into())
    );
    hand.advance(Duration::from_millis(1));
    comment(&o, &o.learner, "现在可以了").await;
    // One address, many people: five posts within the minute, then 429.
    hand.advance(minute);
    let mut statuses = Vec::new();
    for (i, token) in [
        &o.learner, &o.other, &o.expert, &o.learner, &o.other, &o.expert,
    ]
    .into_iter()
    .enumerate()
    {
        let (status, _) =
            o.w.call_from(
                Some("203.0.113.7"),
                &[],
                "POST",
                &path,
                Some(token),
                Some(json!({ "body": format!("同一网络 {i}") })),
            )
            .await;
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses, vec![201, 201, 201, 201, 201, 429]);
    let (status, _) =
        o.w.call_from(
            Some("203.0.113.8"),
            &[],
            "POST",
            &path,
            Some(&o.expert),
            Some(json!({ "body": "另一个网络" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}
