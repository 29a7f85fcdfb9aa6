//! Search against a real PostgreSQL, with real Chinese and English titles:
//! segmentation, ranking, filters, organisation and publication scoping,
//! the index following edits, cursor pagination, and random text against
//! PostgreSQL's own parsers.

use axum::http::StatusCode;
use lectern_testkit::World;
use lectern_web::Role;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

async fn ok(w: &World, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let (status, body) = w.call(method, path, Some(token), body).await;
    assert!(status.is_success(), "{method} {path}: {status} {body}");
    body
}

struct Catalogue {
    w: World,
    org: Uuid,
    admin: String,
    learner: String,
}

impl Catalogue {
    async fn new(db: PgPool, name: &str) -> Self {
        let w = World::new(db).await;
        Self::in_world(w, name).await
    }

    async fn in_world(w: World, name: &str) -> Self {
        let org = w.org(name).await;
        let tag = name.to_lowercase().replace(' ', "");
        let admin_email = format!("admin@{tag}.example.org");
        let learner_email = format!("learner@{tag}.example.org");
        w.user(Some(org), &admin_email, Role::ContentAdmin).await;
        w.user(Some(org), &learner_email, Role::Learner).await;
        let admin = w.login(&admin_email).await;
        let learner = w.login(&learner_email).await;
        Catalogue {
            w,
            org,
            admin,
            learner,
        }
    }

    /// A course with `lessons` (title, duration), published unless `draft`.
    async fn course(&self, body: Value, lessons: &[(&str, f64)], publish: bool) -> Uuid {
        let w = &self.w;
        let course = ok(w, "POST", "/api/v1/courses", &self.admin, Some(body)).await;
        let id: Uuid = course["id"].as_str().unwrap().parse().unwrap();
        for (title, duration) in lessons {
            let asset = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO assets (id, organisation_id, status, source_key, duration_s)
                 VALUES ($1, $2, 'ready', 'sources/x', $3)",
            )
            .bind(asset)
            .bind(self.org)
            .bind(duration)
            .execute(w.db())
            .await
            .unwrap();
            ok(
                w,
                "POST",
                &format!("/api/v1/courses/{id}/lessons"),
                &self.admin,
                Some(json!({ "title": title, "asset_id": asset })),
            )
            .await;
        }
        if publish {
            ok(
                w,
                "POST",
                &format!("/api/v1/courses/{id}/submit"),
                &self.admin,
                None,
            )
            .await;
            ok(
                w,
                "POST",
                &format!("/api/v1/courses/{id}/publish"),
                &self.admin,
                None,
            )
            .await;
        }
        id
    }

    async fn search(&self, query: &str) -> Vec<Value> {
        let page = ok(
            &self.w,
            "GET",
            &format!("/api/v1/search?{query}"),
            &self.learner,
            None,
        )
        .await;
        page["results"].as_array().unwrap().clone()
    }

    /// Course titles of the results, in order, each once.
    async fn courses(&self, query: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.search(query).await {
            let t = r["course"]["title"].as_str().unwrap().to_string();
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }
}

fn q(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[sqlx::test(migrations = "../migrations")]
async fn chinese_and_english_queries_find_published_lessons_of_the_organisation(db: PgPool) {
    let a = Catalogue::new(db.clone(), "Org A").await;
    let cardio = ok(
        &a.w,
        "POST",
        "/api/v1/disciplines",
        &a.admin,
        Some(json!({ "name": "内科学" })),
    )
    .await;
    let heart = ok(
        &a.w,
        "POST",
        "/api/v1/disciplines",
        &a.admin,
        Some(json!({ "name": "心血管内科", "parent_id": cardio["id"] })),
    )
    .await;
    let neuro = ok(
        &a.w,
        "POST",
        "/api/v1/disciplines",
        &a.admin,
        Some(json!({ "name": "神经内科" })),
    )
    .await;
    let wang = ok(
        &a.w,
        "POST",
        "/api/v1/experts",
        &a.admin,
        Some(json!({ "name": "王磊" })),
    )
    .await;
    let smith = ok(
        &a.w,
        "POST",
        "/api/v1/experts",
        &a.admin,
        Some(json!({ "name": "John Smith" })),
    )
    .await;

    a.course(
        json!({ "title": "心血管疾病诊疗指南", "resource_type": "guideline",
        "discipline_id": heart["id"], "expert_ids": [wang["id"]], "tags": ["高血压"],
        "description": "中国心血管疾病预防与治疗的临床实践指南" }),
        &[
            ("第一讲 高血压的诊断", 1800.0),
            ("第二讲 冠心病的治疗", 2400.0),
        ],
        true,
    )
    .await;
    a.course(
        json!({ "title": "心血管影像学入门", "resource_type": "video_course",
        "discipline_id": heart["id"], "description": "结合最新指南讲解心脏超声与冠脉CT" }),
        &[("心脏超声基础", 900.0)],
        true,
    )
    .await;
    a.course(
        json!({ "title": "急性心肌梗死病例讨论", "resource_type": "clinical_case",
        "discipline_id": cardio["id"], "tags": ["Cardiology"], "expert_ids": [wang["id"]] }),
        &[("病例一：胸痛三小时", 1200.0)],
        true,
    )
    .await;
    a.course(
        json!({ "title": "Heart Failure Management", "resource_type": "live_replay",
        "discipline_id": heart["id"], "expert_ids": [smith["id"]],
        "description": "Live session on guideline-directed medical therapy" }),
        &[("Diagnosis and staging of heart failure", 3600.0)],
        true,
    )
    .await;
    a.course(json!({ "title": "脑卒中康复指南", "resource_type": "guideline", "discipline_id": neuro["id"] }),
        &[("康复评估", 600.0)], true).await;
    // Never visible: a draft, an unpublished course, another organisation.
    a.course(
        json!({ "title": "心血管草稿课程" }),
        &[("草稿", 60.0)],
        false,
    )
    .await;
    let gone = a
        .course(
            json!({ "title": "心血管旧版课程" }),
            &[("旧版", 60.0)],
            true,
        )
        .await;
    ok(
        &a.w,
        "POST",
        &format!("/api/v1/courses/{gone}/unpublish"),
        &a.admin,
        None,
    )
    .await;
    let b = Catalogue::in_world(World::new(db.clone()).await, "Org B").await;
    b.course(
        json!({ "title": "心血管疾病诊疗指南（B）", "resource_type": "guideline" }),
        &[("B 的课", 60.0)],
        true,
    )
    .await;

    // "心血管" finds the guideline (both lessons), the imaging course, and
    // the live replay filed under 心血管内科; titles rank first.
    let found = a.courses(&format!("q={}", q("心血管"))).await;
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found[..2].contains(&"心血管疾病诊疗指南".to_string()),
        "{found:?}"
    );
    assert!(
        found[..2].contains(&"心血管影像学入门".to_string()),
        "{found:?}"
    );
    assert_eq!(found[2], "Heart Failure Management");
    assert_eq!(a.search(&format!("q={}", q("心血管"))).await.len(), 4);

    // "指南" ranks guidelines first, then what only mentions guidelines.
    let found = a.courses(&format!("q={}", q("指南"))).await;
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[..2].iter().all(|t| t.ends_with("指南")), "{found:?}");
    assert_eq!(found[2], "心血管影像学入门");

    // English, case-insensitive; a word as a prefix ("guideline-directed").
    assert_eq!(
        a.courses("q=heart+failure").await,
        ["Heart Failure Management"]
    );
    assert_eq!(a.courses("q=CARDIOLOGY").await, ["急性心肌梗死病例讨论"]);
    assert_eq!(
        a.courses("q=guideline+therapy").await,
        ["Heart Failure Management"]
    );
    // Expert names, a lesson title, a tag.
    assert_eq!(
        a.courses(&format!("q={}&sort=newest", q("王磊")))
            .await
            .len(),
        2
    );
    assert_eq!(
        a.courses(&format!("q={}", q("胸痛"))).await,
        ["急性心肌梗死病例讨论"]
    );
    let hits = a.search(&format!("q={}", q("高血压的诊断"))).await;
    assert_eq!(hits[0]["title"], "第一讲 高血压的诊断");

    // Filters compose: discipline (with descendants) × type × expert × duration.
    let under_internal = a
        .courses(&format!("discipline={}", cardio["id"].as_str().unwrap()))
        .await;
    assert_eq!(under_internal.len(), 4, "{under_internal:?}");
    assert_eq!(
        a.courses(&format!(
            "discipline={}&type=guideline",
            cardio["id"].as_str().unwrap()
        ))
        .await,
        ["心血管疾病诊疗指南"]
    );
    assert_eq!(
        a.courses(&format!(
            "q={}&type=guideline&expert={}",
            q("指南"),
            wang["id"].as_str().unwrap()
        ))
        .await,
        ["心血管疾病诊疗指南"]
    );
    let long = a
        .search(&format!(
            "min_duration=2000&discipline={}",
            cardio["id"].as_str().unwrap()
        ))
        .await;
    let mut titles: Vec<&str> = long.iter().map(|r| r["title"].as_str().unwrap()).collect();
    titles.sort();
    assert_eq!(
        titles,
        [
            "Diagnosis and staging of heart failure",
            "第二讲 冠心病的治疗"
        ]
    );
    assert_eq!(
        a.search("min_duration=1000&max_duration=1300").await.len(),
        1
    );
    let today = chrono::Utc::now().date_naive();
    assert_eq!(a.search(&format!("from={today}&to={today}")).await.len(), 6);
    assert_eq!(
        a.search(&format!("to={}", today.pred_opt().unwrap()))
            .await
            .len(),
        0
    );

    // Organisation B sees only its own.
    assert_eq!(
        b.courses(&format!("q={}", q("心血管"))).await,
        ["心血管疾病诊疗指南（B）"]
    );

    // Bad input is a clear 400.
    for (query, code) in [
        ("sort=popular", "invalid_sort"),
        ("type=podcast", "invalid_type"),
        ("limit=0", "invalid_limit"),
        ("min_duration=-1", "invalid_duration"),
        ("from=yesterday", "invalid_date"),
        ("cursor=abc", "invalid_cursor"),
        ("discipline=not-a-uuid", "invalid_query"),
    ] {
        let (status, body) =
            a.w.call(
                "GET",
                &format!("/api/v1/search?{query}"),
                Some(&a.learner),
                None,
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{query}: {body}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn the_index_follows_catalogue_edits(db: PgPool) {
    let a = Catalogue::new(db, "Org A").await;
    let expert = ok(
        &a.w,
        "POST",
        "/api/v1/experts",
        &a.admin,
        Some(json!({ "name": "李华" })),
    )
    .await;
    let id = a
        .course(
            json!({ "title": "糖尿病管理", "expert_ids": [expert["id"]] }),
            &[("胰岛素治疗", 600.0)],
            true,
        )
        .await;
    assert_eq!(a.courses(&format!("q={}", q("糖尿病"))).await.len(), 1);

    // Rename: unpublish, back to draft, edit, review, publish again.
    let c = format!("/api/v1/courses/{id}");
    ok(&a.w, "POST", &format!("{c}/unpublish"), &a.admin, None).await;
    assert!(a.courses(&format!("q={}", q("糖尿病"))).await.is_empty());
    ok(&a.w, "POST", &format!("{c}/draft"), &a.admin, None).await;
    ok(
        &a.w,
        "PATCH",
        &c,
        &a.admin,
        Some(json!({ "title": "甲状腺疾病管理", "tags": ["内分泌"] })),
    )
    .await;
    ok(&a.w, "POST", &format!("{c}/submit"), &a.admin, None).await;
    ok(&a.w, "POST", &format!("{c}/publish"), &a.admin, None).await;
    assert!(a.courses(&format!("q={}", q("糖尿病"))).await.is_empty());
    assert_eq!(
        a.courses(&format!("q={}", q("甲状腺"))).await,
        ["甲状腺疾病管理"]
    );
    assert_eq!(
        a.courses(&format!("q={}", q("内分泌"))).await,
        ["甲状腺疾病管理"]
    );

    // Renaming the expert re-indexes their courses.
    ok(
        &a.w,
        "PATCH",
        &format!("/api/v1/experts/{}", expert["id"].as_str().unwrap()),
        &a.admin,
        Some(json!({ "name": "李明" })),
    )
    .await;
    assert!(a.courses(&format!("q={}", q("李华"))).await.is_empty());
    assert_eq!(
        a.courses(&format!("q={}", q("李明"))).await,
        ["甲状腺疾病管理"]
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn cursor_pages_are_stable_under_ties_for_every_sort(db: PgPool) {
    let a = Catalogue::new(db, "Org A").await;
    let lessons: Vec<(String, f64)> = (0..7).map(|i| (format!("高血压讲座 {i}"), 600.0)).collect();
    let refs: Vec<(&str, f64)> = lessons.iter().map(|(t, d)| (t.as_str(), *d)).collect();
    let first = a
        .course(json!({ "title": "高血压系列讲座" }), &refs, true)
        .await;
    let second = a
        .course(json!({ "title": "高血压病例" }), &[("病例", 600.0)], true)
        .await;

    // Watchers for most_watched; a rating for rating.
    let top: Uuid =
        sqlx::query_scalar("SELECT id FROM lessons WHERE course_id = $1 ORDER BY id DESC LIMIT 1")
            .bind(first)
            .fetch_one(a.w.db())
            .await
            .unwrap();
    for i in 0..2 {
        let user =
            a.w.user(
                Some(a.org),
                &format!("viewer{i}@orga.example.org"),
                Role::Learner,
            )
            .await;
        sqlx::query("INSERT INTO lesson_progress (user_id, lesson_id, organisation_id, last_beat_at) VALUES ($1, $2, $3, now())")
            .bind(user).bind(top).bind(a.org).execute(a.w.db()).await.unwrap();
    }
    ok(
        &a.w,
        "PUT",
        &format!("/api/v1/courses/{second}/rating"),
        &a.learner,
        Some(json!({ "rating": 5 })),
    )
    .await;

    for sort in ["relevance", "newest", "most_watched", "rating"] {
        let base = format!("q={}&sort={sort}&limit=3", q("高血压"));
        let mut seen: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let path = match &cursor {
                Some(c) => format!("/api/v1/search?{base}&cursor={c}"),
                None => format!("/api/v1/search?{base}"),
            };
            let page = ok(&a.w, "GET", &path, &a.learner, None).await;
            seen.extend(
                page["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["lesson_id"].as_str().unwrap().to_string()),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!((seen.len(), unique.len()), (8, 8), "{sort}: {seen:?}");
        match sort {
            "most_watched" => assert_eq!(seen[0], top.to_string()),
            "rating" => {
                let page = a.search(&base).await;
                assert_eq!(page[0]["course"]["id"], json!(second));
                assert_eq!(
                    page[0]["rating"],
                    json!({ "average": 5.0, "count": 1,
                            "bayesian_average": lectern_catalogue::ratings::bayesian_average(5.0, 1.0) })
                );
            }
            _ => {}
        }
        // A cursor belongs to its query.
        if let Some(c) =
            a.w.call(
                "GET",
                &format!("/api/v1/search?{base}"),
                Some(&a.learner),
                None,
            )
            .await
            .1["next_cursor"]
                .as_str()
        {
            let (status, body) =
                a.w.call(
                    "GET",
                    &format!("/api/v1/search?q=x&sort={sort}&limit=3&cursor={c}"),
                    Some(&a.learner),
                    None,
                )
                .await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (StatusCode::BAD_REQUEST, Some("invalid_cursor"))
            );
        }
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn filters_follow_course_changes_and_relevance_ranks_a_bounded_set(db: PgPool) {
    let a = Catalogue::new(db, "Org A").await;
    let discipline = ok(
        &a.w,
        "POST",
        "/api/v1/disciplines",
        &a.admin,
        Some(json!({ "name": "内分泌科" })),
    )
    .await;
    let id = a
        .course(
            json!({ "title": "糖尿病指南", "resource_type": "guideline" }),
            &[("胰岛素", 600.0)],
            true,
        )
        .await;
    assert_eq!(a.courses("type=guideline").await, ["糖尿病指南"]);

    // Type and discipline are copied onto the lessons: a change of the
    // course shows in the filters at once.
    let c = format!("/api/v1/courses/{id}");
    ok(&a.w, "POST", &format!("{c}/unpublish"), &a.admin, None).await;
    assert!(a.courses("type=guideline").await.is_empty());
    ok(&a.w, "POST", &format!("{c}/draft"), &a.admin, None).await;
    ok(
        &a.w,
        "PATCH",
        &c,
        &a.admin,
        Some(json!({ "resource_type": "clinical_case", "discipline_id": discipline["id"] })),
    )
    .await;
    ok(&a.w, "POST", &format!("{c}/submit"), &a.admin, None).await;
    ok(&a.w, "POST", &format!("{c}/publish"), &a.admin, None).await;
    assert!(a.courses("type=guideline").await.is_empty());
    assert_eq!(a.courses("type=clinical_case").await, ["糖尿病指南"]);
    let by_discipline = format!("discipline={}", discipline["id"].as_str().unwrap());
    assert_eq!(a.courses(&by_discipline).await, ["糖尿病指南"]);

    // A lesson written straight into the table (as the demo seeder does)
    // inherits its course's publication.
    sqlx::query(
        "INSERT INTO lessons (id, organisation_id, course_id, title, position, search_doc)
         SELECT gen_random_uuid(), $1, $2, '附录 ' || i, i, 'broadword:1A'::tsvector
         FROM generate_series(1, 1005) AS i",
    )
    .bind(a.org)
    .bind(id)
    .execute(a.w.db())
    .await
    .unwrap();

    // Relevance ranks at most the newest RANK_CANDIDATES matches and pages
    // through them without repeats; newest pages through every match.
    for (sort, expected) in [
        (
            "relevance",
            lectern_catalogue::search::RANK_CANDIDATES as usize,
        ),
        ("newest", 1005),
    ] {
        let mut seen = std::collections::HashSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/search?q=broadword&sort={sort}&limit=100");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = ok(&a.w, "GET", &path, &a.learner, None).await;
            for r in page["results"].as_array().unwrap() {
                assert!(seen.insert(r["lesson_id"].as_str().unwrap().to_string()));
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(seen.len(), expected, "sort={sort}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn pages_sorted_by_a_fractional_key_neither_repeat_nor_skip(db: PgPool) {
    // An average of 13/11 is a float8 that JSON without exact float
    // parsing reads back one unit too large: the cursor after the first
    // lesson of that course then led back to the same lesson.
    let a = Catalogue::new(db, "Org A").await;
    let rated = a
        .course(
            json!({ "title": "高血压病例" }),
            &[("病例一", 600.0), ("病例二", 600.0), ("病例三", 600.0)],
            true,
        )
        .await;
    a.course(json!({ "title": "高血压指南" }), &[("指南", 600.0)], true)
        .await;
    for i in 0..11 {
        let user =
            a.w.user(
                Some(a.org),
                &format!("rater{i}@orga.example.org"),
                Role::Learner,
            )
            .await;
        sqlx::query("INSERT INTO course_ratings (course_id, user_id, rating) VALUES ($1, $2, $3)")
            .bind(rated)
            .bind(user)
            .bind(if i < 2 { 2i16 } else { 1 })
            .execute(a.w.db())
            .await
            .unwrap();
    }
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut path = format!("/api/v1/search?q={}&sort=rating&limit=1", q("高血压"));
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = ok(&a.w, "GET", &path, &a.learner, None).await;
        seen.extend(
            page["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["lesson_id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (4, 4), "{seen:?}");
}

/// Text as hostile as a query string can carry: any Unicode, controls and
/// NUL included, CJK, ASCII words, quotes, backslashes, tsquery operators.
fn hostile_text(max: usize) -> impl Strategy<Value = String> {
    let c = prop_oneof![
        4 => any::<char>(),
        3 => proptest::char::range('\u{4e00}', '\u{9fa5}'),
        3 => proptest::char::range('a', 'z'),
        1 => proptest::sample::select(vec![
            ' ', '\t', '\n', '\0', '\u{7f}', '\'', '"', '\\', ':', '*', '&', '|', '!', '(', ')',
            '<', '>', '-', '，', 'İ',
        ]),
    ];
    proptest::collection::vec(c, 0..max).prop_map(String::from_iter)
}

#[sqlx::test(migrations = "../migrations")]
async fn random_text_never_fails_a_search(db: PgPool) {
    let a = Catalogue::new(db, "Org A").await;
    a.course(
        json!({ "title": "O'Brien 心血管 \\ guideline" }),
        &[("高血压的诊断", 600.0)],
        true,
    )
    .await;
    let mut runner = TestRunner::default();
    let texts = hostile_text(260);
    for _ in 0..48 {
        let text = texts.new_tree(&mut runner).unwrap().current();
        // And the route answers results or a documented 400, never a 500.
        let (status, body) =
            a.w.call(
                "GET",
                &format!("/api/v1/search?q={}", q(&text)),
                Some(&a.learner),
                None,
            )
            .await;
        let too_long = text.trim().chars().count() > lectern_catalogue::search::MAX_QUERY_CHARS;
        match status {
            StatusCode::OK => assert!(!too_long, "{text:?}"),
            StatusCode::BAD_REQUEST => {
                assert!(too_long, "{text:?}: {body}");
                assert_eq!(body["error"]["code"], "invalid_query_text");
            }
            _ => panic!("{text:?}: {status} {body}"),
        }
    }
}
