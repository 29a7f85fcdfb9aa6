//! Satisfaction surveys through the composed app on a real PostgreSQL:
//! an operator defines a survey with its own options, attaches it to a
//! course and opens it; learners answer once, only after completing
//! every lesson (read from `lesson_progress`); the results are exact on
//! a known set of answers; the CSV export defuses a formula written into
//! free text; and a survey changed after it was answered keeps its
//! results meaning what was asked (questions freeze; retire and add).

use axum::http::StatusCode;
use lectern_testkit::World;
use lectern_web::Role;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

struct Org {
    w: World,
    org: Uuid,
    admin: String,
    /// Learners, all of whom complete the course (`complete`).
    learners: Vec<(Uuid, String)>,
    course: Uuid,
    lessons: [Uuid; 2],
}

async fn org(db: PgPool, learners: usize) -> Org {
    let w = World::new(db).await;
    let org = w.org("中小企业培训平台").await;
    w.user(Some(org), "admin@s.example.org", Role::ContentAdmin)
        .await;
    let admin = w.login("admin@s.example.org").await;
    let mut people = Vec::new();
    for i in 0..learners {
        let email = format!("learner{i}@s.example.org");
        let id = w.user(Some(org), &email, Role::Learner).await;
        people.push((id, w.login(&email).await));
    }
    let course = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO courses (id, organisation_id, title, state, published_at)
         VALUES ($1, $2, '=cmd|'' /C calc''!A0 企业财务入门', 'published', now())",
    )
    .bind(course)
    .bind(org)
    .execute(w.db())
    .await
    .unwrap();
    let mut lessons = [Uuid::nil(); 2];
    for (i, lesson) in lessons.iter_mut().enumerate() {
        *lesson = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO lessons (id, organisation_id, course_id, title, position)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(*lesson)
        .bind(org)
        .bind(course)
        .bind(format!("第{}课", i + 1))
        .bind(i as i32)
        .execute(w.db())
        .await
        .unwrap();
    }
    Org {
        w,
        org,
        admin,
        learners: people,
        course,
        lessons,
    }
}

/// `user` watched `lesson` to completion, as the progress flusher records it.
async fn finish(o: &Org, user: Uuid, lesson: Uuid) {
    sqlx::query(
        "INSERT INTO lesson_progress (user_id, lesson_id, organisation_id, watched_s, duration_s,
                                      completed_at, last_beat_at)
         VALUES ($1, $2, $3, 600, 600, now(), now())",
    )
    .bind(user)
    .bind(lesson)
    .bind(o.org)
    .execute(o.w.db())
    .await
    .unwrap();
}

async fn complete(o: &Org, user: Uuid) {
    for lesson in o.lessons {
        finish(o, user, lesson).await;
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
    assert!(!status.is_success(), "{method} {path}: {status} {body}");
    (status, body["error"]["code"].as_str().unwrap().to_string())
}

fn id(v: &Value) -> String {
    v.as_str().unwrap().to_string()
}

/// The survey's question at `i` and its option ids.
fn question(survey: &Value, i: usize) -> (String, Vec<String>) {
    let q = &survey["questions"][i];
    let options = q["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| id(&o["id"]))
        .collect();
    (id(&q["id"]), options)
}

/// Creates, attaches and opens a survey: satisfaction (single choice),
/// what helped (multiple choice, optional), a 1–5 scale, suggestions
/// (free text, optional).
async fn open_survey(o: &Org) -> Value {
    let survey = ok(
        &o.w,
        "POST",
        "/api/v1/surveys",
        &o.admin,
        Some(json!({
            "title": "课程满意度调查",
            "description": "请在完成课程后填写",
            "questions": [
                { "kind": "single_choice", "prompt": "您对本课程满意吗？",
                  "options": ["满意", "一般", "不满意"] },
                { "kind": "multiple_choice", "prompt": "哪些内容对您有帮助？", "required": false,
                  "options": ["案例", "讲义", "练习"] },
                { "kind": "scale", "prompt": "请为讲师打分",
                  "scale": { "min": 1, "max": 5, "min_label": "很差", "max_label": "很好" } },
                { "kind": "free_text", "prompt": "其他建议", "required": false },
            ],
        })),
    )
    .await;
    assert_eq!(survey["state"], "draft");
    let sid = id(&survey["id"]);
    ok(
        &o.w,
        "PUT",
        &format!("/api/v1/courses/{}/surveys/{sid}", o.course),
        &o.admin,
        None,
    )
    .await;
    ok(
        &o.w,
        "PATCH",
        &format!("/api/v1/surveys/{sid}"),
        &o.admin,
        Some(json!({ "state": "open" })),
    )
    .await
}

fn respond_path(o: &Org, survey: &Value) -> String {
    format!(
        "/api/v1/courses/{}/surveys/{}/responses",
        o.course,
        id(&survey["id"])
    )
}

#[sqlx::test(migrations = "../migrations")]
async fn learners_answer_once_after_completion_and_results_are_exact(db: PgPool) {
    let o = org(db, 5).await;
    let w = &o.w;
    // A learner does not define surveys.
    let (status, code) = fails(
        w,
        "POST",
        "/api/v1/surveys",
        &o.learners[0].1,
        Some(json!({ "title": "我的调查" })),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );

    let survey = open_survey(&o).await;
    let sid = id(&survey["id"]);
    let (single, s_opts) = question(&survey, 0);
    let (multi, m_opts) = question(&survey, 1);
    let (scale, _) = question(&survey, 2);
    let (free, _) = question(&survey, 3);
    let path = respond_path(&o, &survey);
    let answers = |choice: usize, helped: &[usize], stars: i64, text: Option<&str>| {
        let mut a = vec![
            json!({ "question_id": single, "option_ids": [s_opts[choice]] }),
            json!({ "question_id": scale, "value": stars }),
        ];
        if !helped.is_empty() {
            let ids: Vec<&String> = helped.iter().map(|&i| &m_opts[i]).collect();
            a.push(json!({ "question_id": multi, "option_ids": ids }));
        }
        if let Some(t) = text {
            a.push(json!({ "question_id": free, "text": t }));
        }
        json!({ "answers": a })
    };

    // The course shows the survey; before completion it cannot be answered.
    let (l0, t0) = &o.learners[0];
    let shown = ok(
        w,
        "GET",
        &format!("/api/v1/courses/{}/surveys", o.course),
        t0,
        None,
    )
    .await;
    assert_eq!(shown["completed"], false);
    assert_eq!(shown["surveys"][0]["id"], survey["id"]);
    assert_eq!(
        shown["surveys"][0]["questions"].as_array().unwrap().len(),
        4
    );
    assert_eq!(
        shown["surveys"][0]["questions"][0]["options"][1]["label"],
        "一般"
    );
    finish(&o, *l0, o.lessons[0]).await;
    let (status, code) = fails(w, "POST", &path, t0, Some(answers(0, &[0], 5, None))).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "course_not_completed")
    );
    finish(&o, *l0, o.lessons[1]).await;
    for (user, _) in &o.learners[1..] {
        complete(&o, *user).await;
    }
    let shown = ok(
        w,
        "GET",
        &format!("/api/v1/courses/{}/surveys", o.course),
        t0,
        None,
    )
    .await;
    assert_eq!(shown["completed"], true);
    assert_eq!(shown["surveys"][0]["answered_at"], Value::Null);

    // Answers that do not fit are refused with the code that says why.
    let missing_required =
        json!({ "answers": [{ "question_id": single, "option_ids": [s_opts[0]] }] });
    let (status, code) = fails(w, "POST", &path, t0, Some(missing_required)).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_survey_answer")
    );
    let (_, code) = fails(w, "POST", &path, t0, Some(answers(0, &[], 6, None))).await;
    assert_eq!(code, "invalid_survey_answer");
    let (_, code) = fails(
        w,
        "POST",
        &path,
        t0,
        Some(json!({ "answers": [
            { "question_id": single, "option_ids": [m_opts[0]] },
            { "question_id": scale, "value": 3 },
        ] })),
    )
    .await;
    assert_eq!(code, "invalid_survey_answer", "another question's option");

    // The known set of answers.
    let formula = "=HYPERLINK(\"http://evil.example\",\"点我\")";
    let given = [
        answers(0, &[0, 1], 5, Some("讲得很好")),
        answers(0, &[1], 4, Some(formula)),
        answers(1, &[], 4, Some("   ")),
        answers(2, &[0, 1, 2], 2, None),
    ];
    for ((_, token), body) in o.learners.iter().zip(given) {
        let r = ok(w, "POST", &path, token, Some(body)).await;
        assert_eq!(r["survey_id"], survey["id"]);
    }
    // Once only.
    let (status, code) = fails(w, "POST", &path, t0, Some(answers(2, &[], 1, None))).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "survey_already_answered")
    );
    let shown = ok(
        w,
        "GET",
        &format!("/api/v1/courses/{}/surveys", o.course),
        t0,
        None,
    )
    .await;
    assert!(shown["surveys"][0]["answered_at"].is_string());

    // The figures, exactly.
    let results = ok(
        w,
        "GET",
        &format!("/api/v1/courses/{}/surveys/{sid}/results", o.course),
        &o.admin,
        None,
    )
    .await;
    assert_eq!(results["responses"], 4);
    let q = &results["questions"];
    let counts = |i: usize| -> Vec<(String, i64)> {
        q[i]["options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (id(&o["label"]), o["count"].as_i64().unwrap()))
            .collect()
    };
    assert_eq!(q[0]["answered"], 4);
    assert_eq!(
        counts(0),
        [("满意".into(), 2), ("一般".into(), 1), ("不满意".into(), 1)]
    );
    assert_eq!(q[1]["answered"], 3);
    assert_eq!(
        counts(1),
        [("案例".into(), 2), ("讲义".into(), 3), ("练习".into(), 1)]
    );
    assert_eq!(q[2]["answered"], 4);
    assert_eq!(q[2]["scale"]["mean"], 3.75);
    assert_eq!(q[2]["scale"]["min_label"], "很差");
    assert_eq!(
        q[2]["scale"]["distribution"],
        json!([
            { "value": 1, "count": 0 }, { "value": 2, "count": 1 }, { "value": 3, "count": 0 },
            { "value": 4, "count": 2 }, { "value": 5, "count": 1 },
        ])
    );
    // Whitespace-only text counts as not answered.
    assert_eq!(q[3]["answered"], 2);
    assert_eq!(q[3]["scale"], Value::Null);

    // Free text, paged newest first, exactly as written.
    let texts = format!(
        "/api/v1/courses/{}/surveys/{sid}/questions/{free}/texts",
        o.course
    );
    let first = ok(w, "GET", &format!("{texts}?limit=1"), &o.admin, None).await;
    assert_eq!(first["answers"][0]["text"], formula);
    let next = id(&first["next"]);
    let second = ok(
        w,
        "GET",
        &format!("{texts}?limit=1&after={next}"),
        &o.admin,
        None,
    )
    .await;
    assert_eq!(second["answers"][0]["text"], "讲得很好");
    assert_eq!(second["next"], Value::Null);
    let (status, _) = fails(
        w,
        "GET",
        &format!(
            "/api/v1/courses/{}/surveys/{sid}/questions/{scale}/texts",
            o.course
        ),
        &o.admin,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a scale has no texts");

    // The typed summary analytics reads has the same figures.
    let mut conn = w.db().acquire().await.unwrap();
    let summary =
        lectern_community::surveys::course_survey_summary(&mut conn, Some(o.org), o.course)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(summary.surveys.len(), 1);
    let s = &summary.surveys[0];
    assert_eq!(s.responses, 4);
    assert_eq!(s.questions[2].scale.as_ref().unwrap().mean, Some(3.75));
    assert_eq!(s.questions[1].options[1].count, 3);
    assert_eq!(
        serde_json::to_value(s).unwrap(),
        results,
        "the route answers the summary's figures"
    );
    assert!(
        lectern_community::surveys::course_survey_summary(
            &mut conn,
            Some(Uuid::now_v7()),
            o.course
        )
        .await
        .unwrap()
        .is_none(),
        "another organisation's scope sees nothing"
    );
    drop(conn);

    // The course report carries the same results.
    let report = ok(
        w,
        "GET",
        &format!("/api/v1/reports/courses/{}", o.course),
        &o.admin,
        None,
    )
    .await;
    assert_eq!(report["course_id"], json!(o.course));
    assert_eq!(report["surveys"], json!([results]), "{report}");

    // The CSV export: streamed, one row per response, formulas defused.
    let (status, headers, csv) = w
        .call_with_headers(
            "GET",
            &format!("/api/v1/surveys/{sid}/responses.csv?course_id={}", o.course),
            Some(&o.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{csv}");
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    let csv = csv
        .strip_prefix('\u{feff}')
        .expect("a UTF-8 BOM for spreadsheets");
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 5, "{csv}");
    assert_eq!(
        lines[0],
        "response_id,course_id,course_title,submitted_at,Q1 您对本课程满意吗？,Q2 哪些内容对您有帮助？,Q3 请为讲师打分,Q4 其他建议"
    );
    assert!(
        lines[1].ends_with(",满意,案例; 讲义,5,讲得很好"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2]
            .ends_with(",满意,讲义,4,\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"点我\"\")\""),
        "the formula is defused: {}",
        lines[2]
    );
    assert!(lines[3].ends_with(",一般,,4,"), "{}", lines[3]);
    // The course title an operator typed is a cell like any other.
    assert!(
        lines[1].contains(",'=cmd|' /C calc'!A0 企业财务入门,"),
        "{}",
        lines[1]
    );
    for line in &lines {
        for cell in line.split(',') {
            assert!(
                !cell.trim_start_matches('"').starts_with(['=', '+', '@']),
                "{cell} would run as a formula"
            );
        }
    }
    w.audit_flushed().await;
    let exported: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'surveys.export' AND target = $1",
    )
    .bind(format!("survey:{sid}"))
    .fetch_one(w.db())
    .await
    .unwrap();
    assert_eq!(exported, 1);

    // Closed: no more responses, results stay.
    ok(
        w,
        "PATCH",
        &format!("/api/v1/surveys/{sid}"),
        &o.admin,
        Some(json!({ "state": "closed" })),
    )
    .await;
    let (status, code) = fails(
        w,
        "POST",
        &path,
        &o.learners[4].1,
        Some(answers(0, &[], 3, None)),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "survey_closed")
    );
    let shown = ok(
        w,
        "GET",
        &format!("/api/v1/courses/{}/surveys", o.course),
        &o.learners[4].1,
        None,
    )
    .await;
    assert_eq!(
        shown["surveys"],
        json!([]),
        "learners see open surveys only"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn another_organisation_and_drafts_stay_out_of_sight(db: PgPool) {
    let o = org(db, 1).await;
    let w = &o.w;
    let b = w.org("另一家企业").await;
    w.user(Some(b), "admin@b.example.org", Role::ContentAdmin)
        .await;
    let admin_b = w.login("admin@b.example.org").await;
    w.user(Some(b), "learner@b.example.org", Role::Learner)
        .await;
    let learner_b = w.login("learner@b.example.org").await;
    let survey = ok(
        w,
        "POST",
        "/api/v1/surveys",
        &o.admin,
        Some(json!({ "title": "草稿", "questions": [
            { "kind": "scale", "prompt": "推荐指数", "scale": { "min": 0, "max": 10 } }
        ] })),
    )
    .await;
    let sid = id(&survey["id"]);
    ok(
        w,
        "PUT",
        &format!("/api/v1/courses/{}/surveys/{sid}", o.course),
        &o.admin,
        None,
    )
    .await;
    let (l, t) = &o.learners[0];
    complete(&o, *l).await;
    let (scale, _) = question(&survey, 0);
    let body = json!({ "answers": [{ "question_id": scale, "value": 9 }] });
    // A draft is invisible to learners.
    let shown = ok(
        w,
        "GET",
        &format!("/api/v1/courses/{}/surveys", o.course),
        t,
        None,
    )
    .await;
    assert_eq!(shown["surveys"], json!([]));
    let (status, _) = fails(w, "POST", &respond_path(&o, &survey), t, Some(body.clone())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Another organisation's operators and learners get 404 everywhere.
    for (method, path) in [
        ("GET", format!("/api/v1/surveys/{sid}")),
        ("PATCH", format!("/api/v1/surveys/{sid}")),
        ("GET", format!("/api/v1/surveys/{sid}/responses.csv")),
        (
            "GET",
            format!("/api/v1/courses/{}/surveys/{sid}/results", o.course),
        ),
        ("PUT", format!("/api/v1/courses/{}/surveys/{sid}", o.course)),
    ] {
        let (status, code) = fails(w, method, &path, &admin_b, Some(json!({}))).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::NOT_FOUND, "not_found"),
            "{method} {path}"
        );
    }
    // An operator of B cannot attach A's survey to B's course either.
    let course_b = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO courses (id, organisation_id, title, state, published_at)
         VALUES ($1, $2, 'B 的课程', 'published', now())",
    )
    .bind(course_b)
    .bind(b)
    .execute(w.db())
    .await
    .unwrap();
    let (status, _) = fails(
        w,
        "PUT",
        &format!("/api/v1/courses/{course_b}/surveys/{sid}"),
        &admin_b,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    ok(
        w,
        "PATCH",
        &format!("/api/v1/surveys/{sid}"),
        &o.admin,
        Some(json!({ "state": "open" })),
    )
    .await;
    let (status, _) = fails(
        w,
        "POST",
        &respond_path(&o, &survey),
        &learner_b,
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    ok(w, "POST", &respond_path(&o, &survey), t, Some(body)).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn questions_freeze_once_asked_and_a_running_survey_changes_by_retire_and_add(db: PgPool) {
    let o = org(db, 2).await;
    let w = &o.w;
    for (user, _) in &o.learners {
        complete(&o, *user).await;
    }
    let survey = open_survey(&o).await;
    let sid = id(&survey["id"]);
    let base = format!("/api/v1/surveys/{sid}");
    let (single, _) = question(&survey, 0);
    let (multi, _) = question(&survey, 1);
    let (scale, _) = question(&survey, 2);
    let (free, _) = question(&survey, 3);

    // Before anyone answered, every question may change or go.
    let edited = ok(
        w,
        "PUT",
        &format!("{base}/questions/{single}"),
        &o.admin,
        Some(
            json!({ "kind": "single_choice", "prompt": "您对本课程满意吗？",
                     "options": ["非常满意", "满意", "不满意"] }),
        ),
    )
    .await;
    let (_, s_opts) = question(&edited, 0);
    assert_eq!(edited["questions"][0]["options"][0]["label"], "非常满意");
    assert_eq!(edited["questions"][0]["frozen"], false);
    let (status, _) = w
        .call(
            "DELETE",
            &format!("{base}/questions/{multi}"),
            Some(&o.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, code) = fails(
        w,
        "PATCH",
        &base,
        &o.admin,
        Some(json!({ "state": "draft" })),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_survey")
    );

    // The first response freezes every question it was asked.
    let path = respond_path(&o, &survey);
    ok(
        w,
        "POST",
        &path,
        &o.learners[0].1,
        Some(json!({ "answers": [
            { "question_id": single, "option_ids": [s_opts[1]] },
            { "question_id": scale, "value": 3 },
        ] })),
    )
    .await;
    let now = ok(w, "GET", &base, &o.admin, None).await;
    assert!(now["questions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|q| q["frozen"] == true));
    for (method, target, body) in [
        (
            "PUT",
            format!("{base}/questions/{single}"),
            Some(
                json!({ "kind": "single_choice", "prompt": "改过的问题", "options": ["是", "否"] }),
            ),
        ),
        ("DELETE", format!("{base}/questions/{scale}"), None),
        // Even the skipped free text was asked.
        (
            "PUT",
            format!("{base}/questions/{free}"),
            Some(json!({ "kind": "free_text", "prompt": "改过的问题" })),
        ),
    ] {
        let (status, code) = fails(w, method, &target, &o.admin, body).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::CONFLICT, "survey_question_frozen"),
            "{method} {target}"
        );
    }
    let (status, code) = fails(w, "DELETE", &base, &o.admin, None).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "survey_has_responses")
    );
    // Title and description may change: they do not change what was asked.
    ok(
        w,
        "PATCH",
        &base,
        &o.admin,
        Some(json!({ "title": "2026 年课程满意度调查" })),
    )
    .await;

    // The survey grows by adding a question (editable until asked) and
    // drops one by retiring it.
    let grown = ok(
        w,
        "POST",
        &format!("{base}/questions"),
        &o.admin,
        Some(json!({ "kind": "single_choice", "prompt": "会推荐给同事吗", "options": ["会", "不会"] })),
    )
    .await;
    let (added, _) = question(&grown, 3);
    assert_eq!(grown["questions"][3]["frozen"], false);
    let grown = ok(
        w,
        "PUT",
        &format!("{base}/questions/{added}"),
        &o.admin,
        Some(
            json!({ "kind": "single_choice", "prompt": "会推荐给同事吗？",
                     "options": ["会", "不一定", "不会"] }),
        ),
    )
    .await;
    let (_, added_opts) = question(&grown, 3);
    let retired = ok(
        w,
        "POST",
        &format!("{base}/questions/{single}/retire"),
        &o.admin,
        None,
    )
    .await;
    assert_eq!(retired["questions"][0]["retired"], true);
    assert_eq!(retired["question_count"], 3);
    let shown = ok(
        w,
        "GET",
        &format!("/api/v1/courses/{}/surveys", o.course),
        &o.learners[1].1,
        None,
    )
    .await;
    let asked: Vec<String> = shown["surveys"][0]["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| id(&q["id"]))
        .collect();
    assert_eq!(asked, [scale.clone(), free.clone(), added.clone()]);
    // A retired question is not answered any more.
    let (_, code) = fails(
        w,
        "POST",
        &path,
        &o.learners[1].1,
        Some(json!({ "answers": [
            { "question_id": single, "option_ids": [s_opts[0]] },
            { "question_id": scale, "value": 5 },
            { "question_id": added, "option_ids": [added_opts[1]] },
        ] })),
    )
    .await;
    assert_eq!(code, "invalid_survey_answer");
    ok(
        w,
        "POST",
        &path,
        &o.learners[1].1,
        Some(json!({ "answers": [
            { "question_id": scale, "value": 5 },
            { "question_id": added, "option_ids": [added_opts[1]] },
        ] })),
    )
    .await;

    // The results keep the retired question's answers as they were given.
    let results = ok(
        w,
        "GET",
        &format!("/api/v1/courses/{}/surveys/{sid}/results", o.course),
        &o.admin,
        None,
    )
    .await;
    let q = &results["questions"];
    assert_eq!(results["responses"], 2);
    assert_eq!(q[0]["retired"], true);
    assert_eq!(q[0]["answered"], 1);
    assert_eq!(q[0]["options"][1]["label"], "满意");
    assert_eq!(q[0]["options"][1]["count"], 1);
    assert_eq!(q[1]["answered"], 2);
    assert_eq!(q[1]["scale"]["mean"], 4.0);
    assert_eq!(q[3]["prompt"], "会推荐给同事吗？");
    assert_eq!(q[3]["answered"], 1);
    assert_eq!(q[3]["options"][1]["count"], 1);
    let now = ok(w, "GET", &base, &o.admin, None).await;
    assert_eq!(now["questions"][3]["frozen"], true, "asked now, so frozen");
}
