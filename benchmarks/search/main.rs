//! Search benchmark: 100k generated lessons (Chinese and English titles from
//! a medical vocabulary) in a fresh database, indexed exactly as the API
//! indexes them, then a mixed query set through `lectern_catalogue::search::search`
//! (the handler's code: segmentation, SQL, JSON) against a baseline of the
//! same queries as a plain `ILIKE '%…%'` scan, in the same run.
//!
//! `benchmarks/search/run` builds and runs it; it prints a Markdown section
//! for `benchmarks/RESULTS.md`. Needs DATABASE_URL (a role that may create
//! databases). With SEARCH_BENCH_KEEP set, the database is left in place
//! for EXPLAIN ANALYZE.

use std::time::{Duration, Instant};

use lectern_catalogue::search::index::{lesson_document, CourseText};
use lectern_catalogue::search::{search, SearchParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, Executor, PgConnection, PgPool};
use uuid::Uuid;

const LESSONS: usize = 100_000;
const LESSONS_PER_COURSE: usize = 10;
const ROUNDS: usize = 5;
const DB: &str = "lectern_bench_search";

const DISEASES: &[&str] = &[
    "高血压",
    "冠心病",
    "心力衰竭",
    "心律失常",
    "房颤",
    "心肌梗死",
    "糖尿病",
    "甲状腺疾病",
    "慢性肾病",
    "肺炎",
    "慢阻肺",
    "哮喘",
    "肺癌",
    "胃癌",
    "肝硬化",
    "脑卒中",
    "帕金森病",
    "阿尔茨海默病",
    "癫痫",
    "抑郁症",
    "类风湿关节炎",
    "骨质疏松",
    "乳腺癌",
    "结直肠癌",
    "脓毒症",
    "急性胰腺炎",
    "贫血",
    "白血病",
    "儿童哮喘",
    "妊娠期糖尿病",
];
const ASPECTS: &[&str] = &[
    "诊疗指南",
    "诊断与鉴别诊断",
    "规范化治疗",
    "病例讨论",
    "最新进展",
    "护理要点",
    "影像学表现",
    "药物治疗",
    "介入治疗",
    "外科治疗",
    "康复管理",
    "急诊处理",
    "基层管理",
    "专家共识解读",
    "随访管理",
];
const EN_DISEASES: &[&str] = &[
    "Hypertension",
    "Heart Failure",
    "Atrial Fibrillation",
    "Coronary Artery Disease",
    "Diabetes",
    "Stroke",
    "Sepsis",
    "Asthma",
    "COPD",
    "Pneumonia",
    "Chronic Kidney Disease",
    "Lung Cancer",
    "Breast Cancer",
    "Parkinson Disease",
    "Epilepsy",
    "Depression",
];
const EN_ASPECTS: &[&str] = &[
    "Guideline Update",
    "Diagnosis",
    "Management",
    "Case Review",
    "Imaging",
    "Pharmacotherapy",
    "Emergency Care",
    "Rehabilitation",
    "Nursing Care",
    "Clinical Trials Review",
];
const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "磊", "敏", "静", "强", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超",
];
const TAGS: &[&str] = &[
    "心内科",
    "内分泌",
    "呼吸科",
    "神经内科",
    "肿瘤",
    "急诊",
    "儿科",
    "全科",
    "CME",
    "继续教育",
];
const TYPES: &[&str] = &["video_course", "clinical_case", "guideline", "live_replay"];
const DISCIPLINES: &[(&str, Option<usize>)] = &[
    ("临床医学", None),
    ("内科学", Some(0)),
    ("心血管内科", Some(1)),
    ("内分泌科", Some(1)),
    ("呼吸内科", Some(1)),
    ("神经内科", Some(1)),
    ("外科学", Some(0)),
    ("普通外科", Some(6)),
    ("肿瘤学", Some(0)),
    ("儿科学", Some(0)),
];

fn pick<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

/// The mixed query set: (label, params).
fn queries(disciplines: &[Uuid]) -> Vec<(String, SearchParams)> {
    let text = |q: &str| SearchParams {
        q: Some(q.to_string()),
        ..Default::default()
    };
    let mut out: Vec<(String, SearchParams)> = Vec::new();
    for q in [
        "心血管",
        "高血压",
        "指南",
        "糖尿病 药物治疗",
        "心力衰竭 诊疗指南",
        "脑卒中康复",
        "病例讨论",
        "王磊",
        "heart failure",
        "diabetes management",
        "guideline",
        "stroke rehabilitation",
        "COPD",
        "急性胰腺炎 急诊处理",
        "甲状腺",
    ] {
        out.push((format!("q={q}"), text(q)));
    }
    out.push((
        "q=高血压 type=guideline".into(),
        SearchParams {
            resource_type: Some("guideline".into()),
            ..text("高血压")
        },
    ));
    out.push((
        "q=指南 discipline=内科学(+descendants)".into(),
        SearchParams {
            discipline: Some(disciplines[1]),
            ..text("指南")
        },
    ));
    out.push((
        "q=heart sort=newest".into(),
        SearchParams {
            sort: Some("newest".into()),
            ..text("heart")
        },
    ));
    out.push((
        "q=糖尿病 sort=most_watched".into(),
        SearchParams {
            sort: Some("most_watched".into()),
            ..text("糖尿病")
        },
    ));
    out.push((
        "q=肺癌 sort=rating".into(),
        SearchParams {
            sort: Some("rating".into()),
            ..text("肺癌")
        },
    ));
    out.push((
        "q=冠心病 min_duration=1200 max_duration=2400".into(),
        SearchParams {
            min_duration: Some(1200.0),
            max_duration: Some(2400.0),
            ..text("冠心病")
        },
    ));
    out.push((
        "type=live_replay discipline=心血管内科 sort=newest".into(),
        SearchParams {
            resource_type: Some("live_replay".into()),
            discipline: Some(disciplines[2]),
            sort: Some("newest".into()),
            ..Default::default()
        },
    ));
    out
}

/// The baseline: the same query as a plain scan, every word as
/// `ILIKE '%word%'` over the same fields, same filters, newest first.
async fn baseline(db: &PgPool, org: Uuid, p: &SearchParams) -> usize {
    let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new(
        "SELECT l.id FROM lessons l JOIN courses c ON c.id = l.course_id
         LEFT JOIN assets a ON a.id = l.asset_id
         WHERE c.state = 'published' AND l.organisation_id = ",
    );
    qb.push_bind(org);
    for word in p.q.as_deref().unwrap_or("").split_whitespace() {
        let pat = format!("%{word}%");
        qb.push(" AND (l.title ILIKE ").push_bind(pat.clone())
            .push(" OR c.title ILIKE ").push_bind(pat.clone())
            .push(" OR l.description ILIKE ").push_bind(pat.clone())
            .push(" OR c.description ILIKE ").push_bind(pat.clone())
            .push(" OR EXISTS (SELECT 1 FROM course_tags t WHERE t.course_id = c.id AND t.tag ILIKE ").push_bind(pat.clone())
            .push(") OR EXISTS (SELECT 1 FROM course_experts ce JOIN experts e ON e.id = ce.expert_id WHERE ce.course_id = c.id AND e.name ILIKE ").push_bind(pat)
            .push("))");
    }
    if let Some(t) = &p.resource_type {
        qb.push(" AND c.resource_type = ").push_bind(t.clone());
    }
    if let Some(d) = p.discipline {
        qb.push(" AND c.discipline_id IN (WITH RECURSIVE sub AS (SELECT id FROM disciplines WHERE id = ")
            .push_bind(d)
            .push(" UNION ALL SELECT dd.id FROM disciplines dd JOIN sub ON dd.parent_id = sub.id) SELECT id FROM sub)");
    }
    if let Some(v) = p.min_duration {
        qb.push(" AND a.duration_s >= ").push_bind(v);
    }
    if let Some(v) = p.max_duration {
        qb.push(" AND a.duration_s <= ").push_bind(v);
    }
    qb.push(" ORDER BY c.published_at DESC, l.id LIMIT 20");
    qb.build().fetch_all(db).await.unwrap().len()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn generate(db: &PgPool) -> (Uuid, Vec<Uuid>) {
    let mut rng = StdRng::seed_from_u64(7);
    let org = Uuid::now_v7();
    sqlx::query("INSERT INTO organisations (id, name) VALUES ($1, 'Bench Medical')")
        .bind(org)
        .execute(db)
        .await
        .unwrap();
    let mut disciplines: Vec<Uuid> = Vec::new();
    for (name, parent) in DISCIPLINES {
        let id = Uuid::now_v7();
        sqlx::query("INSERT INTO disciplines (id, organisation_id, parent_id, name) VALUES ($1, $2, $3, $4)")
            .bind(id).bind(org).bind(parent.map(|p| disciplines[p])).bind(name)
            .execute(db).await.unwrap();
        disciplines.push(id);
    }
    let mut experts: Vec<(Uuid, String)> = Vec::new();
    for _ in 0..300 {
        let name = format!("{}{}", pick(&mut rng, SURNAMES), pick(&mut rng, GIVEN));
        let id = Uuid::now_v7();
        sqlx::query("INSERT INTO experts (id, organisation_id, name) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(org)
            .bind(&name)
            .execute(db)
            .await
            .unwrap();
        experts.push((id, name));
    }
    let courses = LESSONS / LESSONS_PER_COURSE;
    let batch = 500;
    let mut done = 0;
    while done < courses {
        let n = batch.min(courses - done);
        let mut tx = db.begin().await.unwrap();
        let (mut c_ids, mut c_titles, mut c_desc, mut c_types, mut c_disc, mut c_state, mut c_pub) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        let (mut ce_course, mut ce_expert) = (vec![], vec![]);
        let (mut t_course, mut t_tag) = (vec![], vec![]);
        let (mut a_ids, mut a_dur) = (vec![], vec![]);
        let (mut l_ids, mut l_course, mut l_titles, mut l_pos, mut l_asset, mut l_docs) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..n {
            let id = Uuid::now_v7();
            let english = rng.random_bool(0.3);
            let (disease, aspect) = if english {
                (pick(&mut rng, EN_DISEASES), pick(&mut rng, EN_ASPECTS))
            } else {
                (pick(&mut rng, DISEASES), pick(&mut rng, ASPECTS))
            };
            let title = if english {
                format!("{disease}: {aspect}")
            } else {
                format!("{disease}{aspect}")
            };
            let rtype = if aspect.contains("指南") || aspect.contains("Guideline") {
                "guideline"
            } else if aspect.contains("病例") || aspect.contains("Case") {
                "clinical_case"
            } else {
                pick(&mut rng, TYPES)
            };
            let description = if english {
                format!("A course on {disease} for physicians: {aspect}, evidence and practice.")
            } else {
                format!(
                    "本课程面向临床医师，系统讲解{disease}的{aspect}，结合最新研究证据与临床实践。"
                )
            };
            let discipline = disciplines[rng.random_range(0..disciplines.len())];
            let discipline_name =
                DISCIPLINES[disciplines.iter().position(|d| *d == discipline).unwrap()].0;
            let author = &experts[rng.random_range(0..experts.len())];
            let tags: Vec<String> = {
                let mut t = vec![pick(&mut rng, TAGS).to_string()];
                let second = pick(&mut rng, TAGS).to_string();
                if second != t[0] {
                    t.push(second);
                }
                t
            };
            let published = rng.random_bool(0.9);
            let text = CourseText {
                title: title.clone(),
                description: description.clone(),
                resource_type: rtype.to_string(),
                discipline: Some(discipline_name.to_string()),
                tags: tags.clone(),
                experts: vec![author.1.clone()],
            };
            for i in 0..LESSONS_PER_COURSE {
                let lesson_title = if english {
                    format!(
                        "Part {}: {} in {}",
                        i + 1,
                        pick(&mut rng, EN_ASPECTS),
                        disease
                    )
                } else {
                    format!("第{}讲 {}的{}", i + 1, disease, pick(&mut rng, ASPECTS))
                };
                let asset = Uuid::now_v7();
                a_ids.push(asset);
                a_dur.push(rng.random_range(300.0..5400.0f64));
                l_docs.push(lesson_document(&text, &lesson_title, ""));
                l_ids.push(Uuid::now_v7());
                l_course.push(id);
                l_titles.push(lesson_title);
                l_pos.push(i as i32);
                l_asset.push(asset);
            }
            c_ids.push(id);
            c_titles.push(title);
            c_desc.push(description);
            c_types.push(rtype.to_string());
            c_disc.push(discipline);
            c_state.push(if published { "published" } else { "draft" }.to_string());
            c_pub.push(published.then(|| {
                chrono::Utc::now() - chrono::Duration::minutes(rng.random_range(0..500_000))
            }));
            ce_course.push(id);
            ce_expert.push(author.0);
            for t in tags {
                t_course.push(id);
                t_tag.push(t);
            }
        }
        sqlx::query("INSERT INTO courses (id, organisation_id, title, description, resource_type, discipline_id, state, published_at)
                     SELECT u.id, $1, u.t, u.d, u.r, u.di, u.s, u.p
                     FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::uuid[], $7::text[], $8::timestamptz[]) AS u(id, t, d, r, di, s, p)")
            .bind(org).bind(&c_ids).bind(&c_titles).bind(&c_desc).bind(&c_types).bind(&c_disc).bind(&c_state).bind(&c_pub)
            .execute(&mut *tx).await.unwrap();
        sqlx::query("INSERT INTO course_experts (course_id, expert_id) SELECT * FROM unnest($1::uuid[], $2::uuid[])")
            .bind(&ce_course).bind(&ce_expert).execute(&mut *tx).await.unwrap();
        sqlx::query(
            "INSERT INTO course_tags (course_id, tag) SELECT * FROM unnest($1::uuid[], $2::text[])",
        )
        .bind(&t_course)
        .bind(&t_tag)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query("INSERT INTO assets (id, organisation_id, status, source_key, duration_s)
                     SELECT u.id, $1, 'ready', 'bench', u.d FROM unnest($2::uuid[], $3::float8[]) AS u(id, d)")
            .bind(org).bind(&a_ids).bind(&a_dur).execute(&mut *tx).await.unwrap();
        sqlx::query("INSERT INTO lessons (id, organisation_id, course_id, title, position, asset_id, search_doc)
                     SELECT u.id, $1, u.c, u.t, u.p, u.a, u.doc::tsvector
                     FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::int[], $6::uuid[], $7::text[]) AS u(id, c, t, p, a, doc)")
            .bind(org).bind(&l_ids).bind(&l_course).bind(&l_titles).bind(&l_pos).bind(&l_asset).bind(&l_docs)
            .execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        done += n;
    }
    sqlx::query("ANALYZE").execute(db).await.unwrap();
    (org, disciplines)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let mut admin = PgConnection::connect(&url).await.unwrap();
    admin
        .execute(format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)").as_str())
        .await
        .unwrap();
    admin
        .execute(format!("CREATE DATABASE {DB}").as_str())
        .await
        .unwrap();
    let bench_url = match url.rsplit_once('/') {
        Some((base, tail)) => match tail.split_once('?') {
            Some((_, query)) => format!("{base}/{DB}?{query}"),
            None => format!("{base}/{DB}"),
        },
        None => panic!("DATABASE_URL has no database name"),
    };
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect(&bench_url)
        .await
        .unwrap();
    sqlx::migrate!("../migrations").run(&db).await.unwrap();

    let started = Instant::now();
    let (org, disciplines) = generate(&db).await;
    let generated = started.elapsed();
    let set = queries(&disciplines);
    // Warm caches and the segmenter for both methods.
    for (_, p) in &set {
        search(&db, Some(org), p).await.unwrap();
        baseline(&db, org, p).await;
    }
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut rows = Vec::new();
    for (label, p) in &set {
        let (mut o, mut b) = (Vec::new(), Vec::new());
        let mut hits = 0;
        for _ in 0..ROUNDS {
            let t = Instant::now();
            hits = search(&db, Some(org), p).await.unwrap().results.len();
            o.push(t.elapsed());
            let t = Instant::now();
            baseline(&db, org, p).await;
            b.push(t.elapsed());
        }
        o.sort();
        b.sort();
        rows.push(format!(
            "| `{label}` | {hits} | {:.1} | {:.1} |",
            percentile(&o, 0.5),
            percentile(&b, 0.5)
        ));
        ours.extend(o);
        theirs.extend(b);
    }
    ours.sort();
    theirs.sort();
    let lessons: i64 = sqlx::query_scalar("SELECT count(*) FROM lessons")
        .fetch_one(&db)
        .await
        .unwrap();
    let published: i64 = sqlx::query_scalar("SELECT count(*) FROM lessons l JOIN courses c ON c.id = l.course_id WHERE c.state = 'published'")
        .fetch_one(&db).await.unwrap();
    println!("{lessons} lessons ({published} published) in {} courses, generated and indexed in {:.0} s; {} queries × {ROUNDS} rounds each.\n",
        lessons / LESSONS_PER_COURSE as i64, generated.as_secs_f64(), set.len());
    println!("| method | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: |");
    println!(
        "| lectern search (jieba + tsvector GIN, ts_rank_cd over ≤ 1000 newest matches) | {:.1} | {:.1} | {:.1} |",
        percentile(&ours, 0.5),
        percentile(&ours, 0.99),
        percentile(&ours, 1.0)
    );
    println!(
        "| baseline: `ILIKE '%…%'` scan, newest first | {:.1} | {:.1} | {:.1} |",
        percentile(&theirs, 0.5),
        percentile(&theirs, 0.99),
        percentile(&theirs, 1.0)
    );
    println!(
        "\np99 baseline / lectern: **{:.1}×**\n",
        percentile(&theirs, 0.99) / percentile(&ours, 0.99)
    );
    println!("| query | results (page of ≤ 20) | lectern p50 ms | ILIKE p50 ms |\n| --- | ---: | ---: | ---: |");
    for r in rows {
        println!("{r}");
    }
    db.close().await;
    if std::env::var_os("SEARCH_BENCH_KEEP").is_some() {
        // Left for EXPLAIN ANALYZE; the next run drops it.
        return;
    }
    admin
        .execute(format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)").as_str())
        .await
        .unwrap();
}
