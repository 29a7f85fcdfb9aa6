//! Learning analytics end to end, against the real PostgreSQL: players'
//! heartbeats (two devices, overlaps, a rewind, 2×, a skip) go through
//! learning's absorber and flusher, the triggers queue what changed, the
//! rollup folds it, and every report, export, credit and certificate is
//! checked against figures worked out by hand below.
//!
//! The lesson is one hour (3600 s). Learner 1, two hours ago:
//! - phone, 1×: 0–1440, skips to 2520, plays 2520–2880 (1800 s of wall time);
//! - laptop, 2×: 1080–2160, rewinds to 1800, 1800–2160 again, then
//!   2160–3420 (2700 media s, 1350 s of wall time).
//!
//! Union [0, 3420] = 3420 unique s = 95 % → complete; 3420 s = 0.95 h →
//! 0.75 credits at 1 credit/hour in 0.25 steps. Then, now (a second
//! viewing, > 30 min later), the laptop plays all 3600 s at 2× (1800 s of
//! wall time): 3600 unique s → 1.0 credit; 2 views.
//!
//! Learner 2: 0–120 at 1×, then skips to the end: 120 unique s, 120 s of
//! watch time, not complete, no credit.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use lectern_learning::flush;
use lectern_testkit::World;
use lectern_web::Role;
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

const D: f64 = 3600.0;

struct Fixture {
    w: World,
    org: Uuid,
    course: Uuid,
    lesson: Uuid,
    admin: String,
}

impl Fixture {
    async fn new(db: PgPool) -> Self {
        let w = World::new(db).await;
        let org = w.org("心血管学会").await;
        w.user(Some(org), "admin@a.example.org", Role::ContentAdmin)
            .await;
        let admin = w.login("admin@a.example.org").await;
        let course = Uuid::now_v7();
        // A title a spreadsheet would run as a formula, unguarded.
        sqlx::query(
            "INSERT INTO courses (id, organisation_id, title, state, published_at)
             VALUES ($1, $2, '=1+1 心力衰竭', 'published', now())",
        )
        .bind(course)
        .bind(org)
        .execute(w.db())
        .await
        .unwrap();
        let asset = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO assets (id, organisation_id, status, source_key, duration_s, output_prefix)
             VALUES ($1, $2, 'ready', $3, $4, $5)",
        )
        .bind(asset)
        .bind(org)
        .bind(format!("sources/{asset}"))
        .bind(D)
        .bind(format!("assets/{asset}/out/attempt-1/"))
        .execute(w.db())
        .await
        .unwrap();
        let lesson = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO lessons (id, organisation_id, course_id, title, position, asset_id)
             VALUES ($1, $2, $3, '心力衰竭的诊断', 1, $4)",
        )
        .bind(lesson)
        .bind(org)
        .bind(course)
        .bind(asset)
        .execute(w.db())
        .await
        .unwrap();
        Self {
            w,
            org,
            course,
            lesson,
            admin,
        }
    }

    async fn playback(&self, token: &str) -> Uuid {
        let (status, body) = self
            .w
            .call(
                "POST",
                &format!("/api/v1/lessons/{}/playback", self.lesson),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_value(body["playback_id"].clone()).unwrap()
    }

    /// Plays `from`–`to` at `speed` in beats of `step` media seconds, the
    /// clock moving by each beat's wall time; `secs_ago` dates the beats.
    #[allow(clippy::too_many_arguments)]
    async fn play(
        &self,
        token: &str,
        playback: Uuid,
        from: f64,
        to: f64,
        speed: f64,
        step: f64,
        secs_ago: Option<i64>,
    ) {
        let mut at = from;
        while at < to {
            let next = (at + step).min(to);
            self.w
                .state
                .learning
                .learning
                .clock
                .advance(Duration::from_secs_f64((next - at) / speed));
            let mut body = json!({
                "lesson_id": self.lesson, "playback_id": playback, "position_s": next,
                "speed": speed, "played_from_s": at, "played_to_s": next,
            });
            if let Some(ago) = secs_ago {
                // Beats of the past, still in the order they were sent.
                body["sent_at"] = json!(chrono::Utc::now() - chrono::Duration::seconds(ago));
            }
            let (status, resp) = self
                .w
                .call("POST", "/api/v1/progress", Some(token), Some(body))
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{resp}");
            at = next;
        }
    }

    /// Flushes what the absorber holds and folds the queue into rollups.
    async fn settle(&self) {
        flush::flush_once(self.w.db(), &self.w.state.learning.learning.absorber)
            .await
            .unwrap();
        lectern_analytics::rollup::fold_all(self.w.db())
            .await
            .unwrap();
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.w.call("GET", path, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    async fn bytes(&self, path: &str, token: &str) -> (StatusCode, String, Vec<u8>) {
        let req = Request::get(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let resp = self.w.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let kind = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, kind, body)
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[sqlx::test(migrations = "../migrations")]
async fn heartbeats_become_exact_reports_credits_and_a_verifiable_certificate(db: PgPool) {
    let f = Fixture::new(db).await;
    let w = &f.w;
    // Credit rule and designation: 1 credit per hour, quarter steps, a
    // 2-credit class I project.
    let (status, body) = w
        .call(
            "PUT",
            "/api/v1/credit-rule",
            Some(&f.admin),
            Some(json!({ "credits_per_hour": 1, "rounding_step": 0.25,
                         "class_i_label": "I类学分", "class_ii_label": "II类学分" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = w
        .call(
            "PUT",
            &format!("/api/v1/courses/{}/credit-designation", f.course),
            Some(&f.admin),
            Some(json!({ "credit_class": 1, "max_credits": 2, "project_code": "2026-03-01-042" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let l1 = w
        .user(Some(f.org), "learner1@a.example.org", Role::Learner)
        .await;
    let phone = w.login("learner1@a.example.org").await;
    let laptop = w.login("learner1@a.example.org").await;
    w.user(Some(f.org), "learner2@a.example.org", Role::Learner)
        .await;
    let l2 = w.login("learner2@a.example.org").await;

    // Learner 1, two hours ago: the phone, then the laptop (flushed per
    // device, as two players a flush interval apart would be).
    let ago = Some(7200);
    let p = f.playback(&phone).await;
    f.play(&phone, p, 0.0, 1440.0, 1.0, 120.0, ago).await;
    // The skip: a beat at 2520 that played nothing.
    let sent = chrono::Utc::now() - chrono::Duration::seconds(7200);
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/progress",
            Some(&phone),
            Some(
                json!({ "lesson_id": f.lesson, "playback_id": p, "position_s": 2520,
                         "speed": 1, "played_from_s": 2520, "played_to_s": 2520,
                         "sent_at": sent }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    f.play(&phone, p, 2520.0, 2880.0, 1.0, 120.0, ago).await;
    f.settle().await;
    let q = f.playback(&laptop).await;
    f.play(&laptop, q, 1080.0, 2160.0, 2.0, 180.0, ago).await;
    f.settle().await;
    // The rewind, flushed right after the first beat that follows it.
    f.play(&laptop, q, 1800.0, 1890.0, 2.0, 180.0, ago).await;
    f.settle().await;
    f.play(&laptop, q, 1890.0, 2160.0, 2.0, 180.0, ago).await;
    f.play(&laptop, q, 2160.0, 3420.0, 2.0, 180.0, ago).await;
    f.settle().await;

    // Learner 2: 0–120, then a skip to the end that plays nothing.
    let r = f.playback(&l2).await;
    f.play(&l2, r, 0.0, 120.0, 1.0, 60.0, None).await;
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/progress",
            Some(&l2),
            Some(
                json!({ "lesson_id": f.lesson, "playback_id": r, "position_s": 3590,
                         "speed": 1, "played_from_s": 3590, "played_to_s": 3590 }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    f.settle().await;

    // After the first viewing: 3420 unique seconds, 0.75 credits.
    let t = f
        .get(
            &format!("/api/v1/reports/learners/{l1}/transcript"),
            &f.admin,
        )
        .await;
    let c = &t["courses"][0];
    assert_eq!(c["watched_s"], 3420.0, "{t}");
    assert_eq!(c["watch_time_s"], 3150.0, "{t}");
    assert_eq!(c["completion"], 0.95, "{t}");
    assert_eq!(c["completed"], true, "{t}");
    assert_eq!(c["credits"], 0.75, "{t}");
    assert_eq!(c["credit_label"], "I类学分");
    let t2 = f.get("/api/v1/me/transcript", &l2).await;
    assert_eq!(t2["courses"][0]["watched_s"], 120.0, "{t2}");
    assert_eq!(t2["courses"][0]["watch_time_s"], 120.0, "{t2}");
    assert_eq!(t2["courses"][0]["completed"], false);
    assert_eq!(t2["courses"][0]["credits"], 0.0);

    // The certificate, issued now: 0.75 credits, frozen.
    let (status, cert) = w
        .call(
            "POST",
            &format!("/api/v1/me/courses/{}/certificate", f.course),
            Some(&phone),
            Some(json!({ "name": "张三丰" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cert}");
    assert_eq!(cert["credits"], 0.75);
    assert_eq!(cert["learner_name"], "张三丰");
    let serial = cert["serial"].as_str().unwrap().to_string();
    let url = cert["verification_url"].as_str().unwrap().to_string();
    assert_eq!(url, format!("http://localhost:8080/verify/{serial}"));
    // Learner 2 has not completed: no certificate.
    let (status, body) = w
        .call(
            "POST",
            &format!("/api/v1/me/courses/{}/certificate", f.course),
            Some(&l2),
            Some(json!({ "name": "李四" })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "course_not_completed");

    // The second viewing, now: the whole lesson at 2× on the laptop.
    let q2 = f.playback(&laptop).await;
    f.play(&laptop, q2, 0.0, 3600.0, 2.0, 200.0, None).await;
    f.settle().await;

    let t = f.get("/api/v1/me/transcript", &phone).await;
    assert_eq!(t["courses"][0]["watched_s"], 3600.0, "{t}");
    assert_eq!(t["courses"][0]["watch_time_s"], 4950.0, "{t}");
    assert_eq!(t["courses"][0]["credits"], 1.0, "{t}");
    assert_eq!(t["courses"][0]["certificate_serial"], serial.as_str());

    // Course report.
    let org = f.org;
    let c = f
        .get(
            &format!("/api/v1/reports/courses/{}?org_id={org}", f.course),
            &f.admin,
        )
        .await;
    assert_eq!(c["lessons"], 1, "{c}");
    assert_eq!(c["enrolled"], 2, "{c}");
    assert_eq!(c["started"], 2, "{c}");
    assert_eq!(c["completed"], 1, "{c}");
    assert_eq!(c["completion_rate"], 0.5, "{c}");
    // Median of 4950 and 120.
    assert_eq!(c["median_watch_s"], 2535.0, "{c}");
    // Media played ÷ wall: (1800 + 2700 + 3600 + 120) ÷ (1800 + 1350 + 1800 + 120).
    assert!(
        close(c["average_speed"].as_f64().unwrap(), 8220.0 / 5070.0),
        "{c}"
    );
    // Watched twice counts twice for views (learner 1: 2, learner 2: 1).
    assert_eq!(c["views"], 3, "{c}");
    assert!(
        close(c["watch_hours"].as_f64().unwrap(), 5070.0 / 3600.0),
        "{c}"
    );
    assert_eq!(c["completions"], 1, "{c}");

    // Lesson report: retention over the two starters' unions,
    // [0, 3600] and [0, 120]: both to 3 % (108 s), then one of two.
    let l = f
        .get(
            &format!("/api/v1/reports/lessons/{}?org_id={org}", f.lesson),
            &f.admin,
        )
        .await;
    assert_eq!(l["starters"], 2, "{l}");
    assert_eq!(l["completed"], 1, "{l}");
    let curve: Vec<f64> = serde_json::from_value(l["retention"].clone()).unwrap();
    let want: Vec<f64> = (0..=100).map(|k| if k <= 3 { 1.0 } else { 0.5 }).collect();
    assert_eq!(curve, want);
    // Re-watched: learner 1 played 8100 media s of 3600 unique.
    assert_eq!(l["rewatched_s"], 4500.0, "{l}");
    // The rewind landed at 1890 s: bin 52 (52–53 % of an hour).
    assert_eq!(l["rewatched_moments"][0]["bin"], 52, "{l}");
    assert_eq!(l["rewatched_moments"][0]["rewinds"], 1, "{l}");

    // Overview.
    let o = f
        .get(&format!("/api/v1/reports/overview?org_id={org}"), &f.admin)
        .await;
    assert_eq!(o["views"], 3, "{o}");
    assert_eq!(o["completions"], 1, "{o}");
    assert!(
        close(o["watch_hours"].as_f64().unwrap(), 5070.0 / 3600.0),
        "{o}"
    );
    assert!(
        close(o["unique_hours"].as_f64().unwrap(), 3720.0 / 3600.0),
        "{o}"
    );
    assert_eq!(o["active_learners"]["last_30_days"], 2, "{o}");
    assert_eq!(o["online_now"], 2, "{o}");
    assert_eq!(o["new_courses"], 1, "{o}");
    assert_eq!(o["time_zone"], "Asia/Shanghai");

    // The whole organisation reads its own rollups (organisation days,
    // each learner's newest day); a course filter de-duplicates learner
    // rows. With the one course, both must say the same.
    let filtered = f
        .get(
            &format!(
                "/api/v1/reports/overview?org_id={org}&course_id={}",
                f.course
            ),
            &f.admin,
        )
        .await;
    for figure in [
        "views",
        "completions",
        "watch_hours",
        "unique_hours",
        "active_learners",
        "daily",
    ] {
        assert_eq!(o[figure], filtered[figure], "{figure}: {o} / {filtered}");
    }
    // Learner 1 watched two hours ago and learner 2 now: one day in
    // Shanghai, or two between 00:00 and 02:00 there (UTC+8, no summer
    // time), when "two hours ago" was yesterday.
    let shanghai = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    let now = chrono::Utc::now();
    let days = if (now - chrono::Duration::seconds(7200))
        .with_timezone(&shanghai)
        .date_naive()
        == now.with_timezone(&shanghai).date_naive()
    {
        1
    } else {
        2
    };
    assert_eq!(o["daily"].as_array().map(Vec::len), Some(days), "{o}");

    // The course report from the course's summary (computed every
    // SUMMARY_INTERVAL) says what it said computed live.
    let live = f
        .get(&format!("/api/v1/reports/courses?org_id={org}"), &f.admin)
        .await;
    assert_eq!(
        lectern_analytics::rollup::refresh_course_summaries(f.w.db())
            .await
            .unwrap(),
        1
    );
    let summarised = f
        .get(&format!("/api/v1/reports/courses?org_id={org}"), &f.admin)
        .await;
    assert_eq!(live, summarised);
    assert_eq!(
        summarised["courses"][0]["median_watch_s"], 2535.0,
        "{summarised}"
    );

    // The certificate PDF: Chinese name extracted as text, rendered to PNG,
    // its QR code decoding to the verification URL.
    let (status, kind, pdf) = f
        .bytes(&format!("/api/v1/me/certificates/{serial}/pdf"), &phone)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kind, "application/pdf");
    assert!(pdf.starts_with(b"%PDF"), "not a PDF");
    // A subset of the ~20 MB collection, not the collection.
    assert!(pdf.len() < 300_000, "the PDF is {} bytes", pdf.len());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("certificate.pdf");
    std::fs::write(&path, &pdf).unwrap();
    let text = std::process::Command::new("pdftotext")
        .arg(&path)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils; infra/dev/setup)");
    let text = String::from_utf8(text.stdout).unwrap();
    for expected in [
        "张三丰",
        "=1+1 心力衰竭",
        "I类学分",
        serial.as_str(),
        "2026-03-01-042",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} not in the PDF text:\n{text}"
        );
    }
    let png = dir.path().join("certificate");
    let rendered = std::process::Command::new("pdftoppm")
        .args(["-png", "-r", "150", "-singlefile"])
        .arg(&path)
        .arg(&png)
        .status()
        .expect("pdftoppm (poppler-utils; infra/dev/setup)");
    assert!(rendered.success());
    let png = dir.path().join("certificate.png");
    assert!(std::fs::metadata(&png).unwrap().len() > 10_000);
    let decoded = std::process::Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(&png)
        .output()
        .expect("zbarimg (zbar-tools; infra/dev/setup)");
    assert_eq!(String::from_utf8(decoded.stdout).unwrap().trim(), url);
    // Someone else's session cannot download it.
    let (status, _, _) = f
        .bytes(&format!("/api/v1/me/certificates/{serial}/pdf"), &l2)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The verification page the QR code opens answers for the real serial,
    // with what the certificate states; a forged serial is 404.
    let path = url.trim_start_matches("http://localhost:8080");
    let (status, page) = w.call_raw("GET", path, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("张三丰") && page.contains("0.75"), "{page}");
    let (status, statement) = w
        .call("GET", &format!("/api/v1/certificates/{serial}"), None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(statement["learner_name"], "张三丰");
    assert_eq!(statement["credits"], 0.75);
    assert!(statement.get("watched_hours").is_none(), "{statement}");
    // Another last character, whatever the real one is (a fixed "X" would
    // be the real serial one time in the alphabet's size).
    let last = if serial.ends_with('X') { 'Y' } else { 'X' };
    let forged = format!("{}{last}", &serial[..serial.len() - 1]);
    let (status, _) = w
        .call_raw("GET", &format!("/verify/{forged}"), None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = w
        .call("GET", &format!("/api/v1/certificates/{forged}"), None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // xAPI: learner 1 completed the lesson once and experienced it.
    let x = f.get("/api/v1/me/xapi", &phone).await;
    let statements = x["statements"].as_array().unwrap();
    let completed: Vec<&Value> = statements
        .iter()
        .filter(|s| s["verb"]["id"] == "http://adlnet.gov/expapi/verbs/completed")
        .collect();
    assert_eq!(completed.len(), 1, "{x}");
    assert_eq!(completed[0]["result"]["duration"], "PT1H22M30S");
    let experienced: f64 = statements
        .iter()
        .filter(|s| s["verb"]["id"] == "http://adlnet.gov/expapi/verbs/experienced")
        .map(|s| {
            s["result"]["extensions"]["http://localhost:8080/xapi/extensions/unique-seconds"]
                .as_f64()
                .unwrap()
        })
        .sum();
    assert_eq!(experienced, 3600.0, "{x}");
    assert_eq!(
        x["statements"][0]["actor"]["account"]["name"],
        l1.to_string()
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn exports_stream_guard_formulas_and_run_as_jobs(db: PgPool) {
    let f = Fixture::new(db).await;
    let w = &f.w;
    let learner = w
        .user(Some(f.org), "learner1@a.example.org", Role::Learner)
        .await;
    let t = w.login("learner1@a.example.org").await;
    let p = f.playback(&t).await;
    f.play(&t, p, 0.0, 600.0, 1.0, 60.0, None).await;
    f.settle().await;
    let org = f.org;

    // The course report as CSV, with the formula-looking title guarded.
    let (status, kind, csv) = f
        .bytes(
            &format!("/api/v1/reports/courses.csv?org_id={org}"),
            &f.admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.starts_with("text/csv"));
    let csv = String::from_utf8(csv).unwrap();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("course_id,title,"));
    let row = lines.next().unwrap();
    assert!(row.contains(",'=1+1 心力衰竭,"), "{row}");

    // Learner activity names learners: a step-up first.
    let (status, body) = w
        .call(
            "GET",
            &format!("/api/v1/reports/learner-activity.csv?org_id={org}"),
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "step_up_required");
    w.step_up(&f.admin, "admin@a.example.org").await;
    let (status, _, csv) = f
        .bytes(
            &format!("/api/v1/reports/learner-activity.csv?org_id={org}"),
            &f.admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let csv = String::from_utf8(csv).unwrap();
    // Every column, exactly: the learner-day's ids, the opened email, the
    // titles (the formula-looking one guarded) and the figures.
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "day,learner_id,email,course_id,course,lesson_id,lesson,views,watch_s,unique_s,completions"
    );
    assert_eq!(lines.len(), 2, "{csv}");
    let (day, rest) = lines[1].split_once(',').unwrap();
    assert!(
        chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").is_ok(),
        "{day}"
    );
    assert_eq!(
        rest,
        format!(
            "{learner},learner1@a.example.org,{},'=1+1 心力衰竭,{},心力衰竭的诊断,1,600,600,0",
            f.course, f.lesson
        )
    );
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'reports.export' AND outcome = 'ok'",
    )
    .fetch_one(w.db())
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // The same as a background XLSX job: queued, run, downloaded.
    w.step_up(&f.admin, "admin@a.example.org").await;
    let (status, job) = w
        .call(
            "POST",
            "/api/v1/reports/exports",
            Some(&f.admin),
            Some(json!({ "report": "learner_activity", "format": "xlsx" })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["state"], "queued");
    let id = job["id"].as_str().unwrap().to_string();
    let ran = lectern_analytics::export::run_pending(&w.state.analytics)
        .await
        .unwrap();
    assert_eq!(ran, 1);
    let status_of = f
        .get(&format!("/api/v1/reports/exports/{id}"), &f.admin)
        .await;
    assert_eq!(status_of["state"], "done", "{status_of}");
    assert_eq!(status_of["rows_written"], 1, "{status_of}");
    let download = status_of["download_url"].as_str().unwrap().to_string();
    w.step_up(&f.admin, "admin@a.example.org").await;
    let (status, kind, xlsx) = f.bytes(&download, &f.admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.contains("spreadsheetml"), "{kind}");
    assert!(xlsx.starts_with(b"PK"), "an XLSX is a zip");
}

#[sqlx::test(migrations = "../migrations")]
async fn experts_ratings_qoe_and_time_zones(db: PgPool) {
    let f = Fixture::new(db).await;
    let w = &f.w;
    let org = f.org;
    // An expert named on the course.
    let expert_user = w
        .user(Some(org), "expert@a.example.org", Role::Expert)
        .await;
    let expert = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO experts (id, organisation_id, user_id, name) VALUES ($1, $2, $3, '王医生')",
    )
    .bind(expert)
    .bind(org)
    .bind(expert_user)
    .execute(w.db())
    .await
    .unwrap();
    sqlx::query("INSERT INTO course_experts (course_id, expert_id) VALUES ($1, $2)")
        .bind(f.course)
        .bind(expert)
        .execute(w.db())
        .await
        .unwrap();
    let expert_token = w.login("expert@a.example.org").await;
    for (i, stars) in [4, 5].into_iter().enumerate() {
        let email = format!("rater{i}@a.example.org");
        w.user(Some(org), &email, Role::Learner).await;
        let t = w.login(&email).await;
        let p = f.playback(&t).await;
        f.play(&t, p, 0.0, 3600.0, 2.0, 200.0, None).await;
        let (status, body) = w
            .call(
                "PUT",
                &format!("/api/v1/courses/{}/rating", f.course),
                Some(&t),
                Some(json!({ "rating": stars })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // QoE: startups of 1 s and 3 s, one rebuffer of 2 s, one failure.
        let event = if i == 0 {
            json!({ "lesson_id": f.lesson, "kind": "startup", "startup_ms": 1000 })
        } else {
            json!({ "lesson_id": f.lesson, "kind": "startup", "startup_ms": 3000 })
        };
        let trouble = if i == 0 {
            json!({ "lesson_id": f.lesson, "kind": "rebuffer", "rebuffer_ms": 2000, "rebuffer_count": 1 })
        } else {
            json!({ "lesson_id": f.lesson, "kind": "fatal_error", "error_code": "networkError" })
        };
        for e in [event, trouble] {
            let (status, body) = w.call("POST", "/api/v1/qoe", Some(&t), Some(e)).await;
            assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        }
    }
    f.settle().await;

    let e = f.get("/api/v1/me/expert-report", &expert_token).await;
    assert_eq!(e["expert_id"], expert.to_string());
    assert_eq!(e["views"], 2, "{e}");
    assert_eq!(e["course_completions"], 2, "{e}");
    assert_eq!(e["rating_average"], 4.5, "{e}");
    assert_eq!(e["rating_count"], 2, "{e}");
    let same = f
        .get(
            &format!("/api/v1/reports/experts/{expert}?org_id={org}"),
            &f.admin,
        )
        .await;
    assert_eq!(same["views"], e["views"]);

    let q = f
        .get(&format!("/api/v1/reports/qoe?org_id={org}"), &f.admin)
        .await;
    assert_eq!(q["startups"], 2, "{q}");
    assert_eq!(q["startup_p50_ms"], 2000.0, "{q}");
    assert_eq!(q["startup_p95_ms"], 2900.0, "{q}");
    let score = q["startup_score"].as_f64().unwrap();
    assert!(close(score, (8.0 / 9.0 + 8.0 / 11.0) / 2.0), "{q}");
    assert_eq!(q["failures"], 1, "{q}");
    assert_eq!(q["failure_rate"], 0.5, "{q}");
    assert_eq!(q["rebuffer_s"], 2.0, "{q}");
    // 2 s stalled against 3600 s played.
    assert!(
        close(q["rebuffer_ratio"].as_f64().unwrap(), 2.0 / 3602.0),
        "{q}"
    );

    // Time zones: a known name is taken, an unknown one refused.
    let (status, body) = w
        .call(
            "PUT",
            "/api/v1/reporting/time-zone",
            Some(&f.admin),
            Some(json!({ "time_zone": "Mars/Olympus_Mons" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_time_zone");
    let (status, _) = w
        .call(
            "PUT",
            "/api/v1/reporting/time-zone",
            Some(&f.admin),
            Some(json!({ "time_zone": "Europe/Berlin" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let o = f
        .get(&format!("/api/v1/reports/overview?org_id={org}"), &f.admin)
        .await;
    assert_eq!(o["time_zone"], "Europe/Berlin");
    // A reversed range is refused.
    let (status, body) = w
        .call(
            "GET",
            "/api/v1/reports/overview?from=2026-12-05&to=2026-12-01",
            Some(&f.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_date_range");
}
