//! Certificates: issued to a learner for a completed course that carries a
//! credit designation, with the credits their unique watched seconds earn
//! ([`crate::credits`]). What a certificate states is frozen in its row
//! when issued (the learner's name sealed with the field keys); the PDF is
//! rendered from that row on request and is always the same statement.
//!
//! The PDF embeds a **subset** of the distribution's Noto Sans CJK
//! (`fonts-noto-cjk`; a ~20 MB collection, of which only the glyphs used
//! are written, so a certificate is tens of kilobytes) and a QR code (the
//! `qrcode` crate's module matrix drawn as filled squares) pointing to
//! `<public base>/verify/<serial>`, the public verification page. That
//! page, and its JSON twin, show only what the certificate states; an
//! unknown (forged) serial answers 404. Serials carry 80 random bits, so
//! they cannot be enumerated.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use lectern_web::{ApiError, ApiJson, ApiPath, ErrorCode, Principal};

use crate::reports::{credit_rule, transcript_of};
use crate::AnalyticsState;

/// Where the distribution installs Noto Sans CJK, and the face of the
/// collection that is Simplified Chinese.
pub const FONT_PATH: &str = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc";
const FONT_INDEX_SC: u32 = 2;

/// What a certificate states (and all the verification page shows).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Statement {
    pub serial: String,
    pub learner_name: String,
    pub course_title: String,
    pub organisation: String,
    pub credits: f64,
    pub credit_class: i16,
    pub credit_label: String,
    pub project_code: String,
    pub issued_at: DateTime<Utc>,
}

/// A certificate as its learner sees it.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Certificate {
    #[serde(flatten)]
    pub statement: Statement,
    pub course_id: Option<Uuid>,
    /// Hours actually watched (unique seconds ÷ 3600) the credits are for.
    pub watched_hours: f64,
    /// The public page the QR code points to.
    pub verification_url: String,
    /// `GET` this (signed in) for the PDF.
    pub pdf_url: String,
}

/// `POST /api/v1/me/courses/{course_id}/certificate`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct IssueRequest {
    /// The name printed on the certificate (2–50 characters), e.g. 张三.
    /// Needed unless the account has a real name on file.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    serial: String,
    course_id: Option<Uuid>,
    learner_name_ct: Vec<u8>,
    course_title: String,
    organisation_name: String,
    credit_class: i16,
    credit_label: String,
    credits: f64,
    project_code: String,
    watched_s: f64,
    issued_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, serial, course_id, learner_name_ct, course_title, organisation_name, \
                       credit_class, credit_label, credits, project_code, watched_s, issued_at";
const NAME_FIELD: &str = "certificates.learner_name";

fn serial() -> String {
    // Crockford base32 without I, L, O, U: read aloud and typed safely.
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut rng = rand::rng();
    let body: String = (0..16)
        .map(|_| ALPHABET[rng.random_range(0..32)] as char)
        .collect();
    format!(
        "LEC-{}-{}-{}-{}",
        &body[..4],
        &body[4..8],
        &body[8..12],
        &body[12..]
    )
}

fn verification_url(state: &AnalyticsState, serial: &str) -> String {
    format!(
        "{}/verify/{serial}",
        state.settings.public_base_url.trim_end_matches('/')
    )
}

impl Row {
    fn open(self, state: &AnalyticsState) -> Result<Certificate, ApiError> {
        let keys = state.identity.keyring()?;
        let learner_name = keys
            .open(NAME_FIELD, self.id, &self.learner_name_ct)
            .map_err(ApiError::internal)?;
        Ok(Certificate {
            verification_url: verification_url(state, &self.serial),
            pdf_url: format!("/api/v1/me/certificates/{}/pdf", self.serial),
            course_id: self.course_id,
            watched_hours: self.watched_s / 3600.0,
            statement: Statement {
                serial: self.serial,
                learner_name,
                course_title: self.course_title,
                organisation: self.organisation_name,
                credits: self.credits,
                credit_class: self.credit_class,
                credit_label: self.credit_label,
                project_code: self.project_code,
                issued_at: self.issued_at,
            },
        })
    }
}

fn signed_in(principal: &Principal) -> Result<Uuid, ApiError> {
    principal
        .user_id()
        .ok_or_else(|| ApiError::new(ErrorCode::Forbidden, "this needs a signed-in person"))
}

fn valid_name(name: &str) -> Option<String> {
    let name = name.trim();
    let n = name.chars().count();
    ((2..=50).contains(&n) && !name.chars().any(char::is_control)).then(|| name.to_string())
}

pub async fn issue(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiPath(course_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<IssueRequest>,
) -> Result<Json<Certificate>, ApiError> {
    let user_id = signed_in(&principal)?;
    let keys = state.identity.keyring()?;
    #[derive(sqlx::FromRow)]
    struct CourseRow {
        organisation_id: Uuid,
        title: String,
        organisation_name: String,
        credit_class: Option<i16>,
        project_code: Option<String>,
    }
    let course: CourseRow = sqlx::query_as(
        "SELECT c.organisation_id, c.title, o.name AS organisation_name, d.credit_class,
                d.project_code
         FROM courses c JOIN organisations o ON o.id = c.organisation_id
         LEFT JOIN course_credit_designations d ON d.course_id = c.id
         WHERE c.id = $1 AND ($2::uuid IS NULL OR c.organisation_id = $2)",
    )
    .bind(course_id)
    .bind(principal.org_scope())
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no course {course_id}")))?;
    let existing: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM certificates WHERE user_id = $1 AND course_id = $2"
    ))
    .bind(user_id)
    .bind(course_id)
    .fetch_optional(&state.db)
    .await?;
    if let Some(row) = existing {
        return Ok(Json(row.open(&state)?));
    }
    let org = course.organisation_id;
    let Some(credit_class) = course.credit_class else {
        return Err(ApiError::new(
            ErrorCode::NoCreditDesignation,
            format!("course {course_id} awards no credit, so it has no certificate"),
        ));
    };
    let transcript = transcript_of(&state.db, org, user_id, Some(course_id)).await?;
    let record = transcript
        .courses
        .into_iter()
        .find(|c| c.course_id == course_id)
        .filter(|c| c.completed)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::CourseNotCompleted,
                "the course is not completed yet: watch at least 90 % of every lesson",
            )
        })?;
    let asked = body.name;
    let name = match asked {
        Some(n) => Some(valid_name(&n).ok_or_else(|| {
            ApiError::new(
                ErrorCode::NameRequired,
                "name must be 2–50 characters without control characters",
            )
        })?),
        None => {
            let sealed: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT real_name_ct FROM users WHERE id = $1")
                    .bind(user_id)
                    .fetch_optional(&state.db)
                    .await?
                    .flatten();
            match sealed {
                Some(ct) => keys
                    .open("users.real_name", user_id, &ct)
                    .ok()
                    .and_then(|n| valid_name(&n)),
                None => None,
            }
        }
    }
    .ok_or_else(|| {
        ApiError::new(
            ErrorCode::NameRequired,
            "send the name to print on the certificate as `name`",
        )
    })?;
    let rule = credit_rule(&state.db, org).await?;
    let label = if credit_class == 1 {
        rule.class_i_label
    } else {
        rule.class_ii_label
    };
    let id = Uuid::new_v4();
    let row: Option<Row> = sqlx::query_as(&format!(
        "INSERT INTO certificates (id, serial, organisation_id, user_id, course_id, learner_name_ct,
             key_id, course_title, organisation_name, credit_class, credit_label, credits,
             project_code, watched_s)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (user_id, course_id) DO NOTHING
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(serial())
    .bind(org)
    .bind(user_id)
    .bind(course_id)
    .bind(keys.seal(NAME_FIELD, id, &name))
    .bind(keys.active_key_id())
    .bind(&course.title)
    .bind(&course.organisation_name)
    .bind(credit_class)
    .bind(&label)
    .bind(record.credits)
    .bind(course.project_code.unwrap_or_default())
    .bind(record.watched_s)
    .fetch_optional(&state.db)
    .await?;
    let row = match row {
        Some(r) => r,
        // Issued by a concurrent request: that one stands.
        None => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM certificates WHERE user_id = $1 AND course_id = $2"
            ))
            .bind(user_id)
            .bind(course_id)
            .fetch_one(&state.db)
            .await?
        }
    };
    Ok(Json(row.open(&state)?))
}

/// `GET /api/v1/me/certificates`.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Certificates {
    pub certificates: Vec<Certificate>,
}

pub async fn mine(
    State(state): State<AnalyticsState>,
    principal: Principal,
) -> Result<Json<Certificates>, ApiError> {
    let user_id = signed_in(&principal)?;
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM certificates WHERE user_id = $1 ORDER BY issued_at DESC, id"
    ))
    .bind(user_id)
    .fetch_all(&state.db)
    .await?;
    let certificates = rows
        .into_iter()
        .map(|r| r.open(&state))
        .collect::<Result<_, _>>()?;
    Ok(Json(Certificates { certificates }))
}

async fn by_serial(state: &AnalyticsState, serial: &str) -> Result<Row, ApiError> {
    let not_found = || ApiError::not_found(format!("no certificate {serial}"));
    if serial.len() > 40 {
        return Err(not_found());
    }
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM certificates WHERE serial = $1"
    ))
    .bind(serial)
    .fetch_optional(&state.db)
    .await?;
    row.ok_or_else(not_found)
}

/// `GET /api/v1/me/certificates/{serial}/pdf`: the caller's own only.
pub async fn pdf(
    State(state): State<AnalyticsState>,
    principal: Principal,
    ApiPath(serial): ApiPath<String>,
) -> Result<Response, ApiError> {
    let user_id = signed_in(&principal)?;
    let owner: Option<Uuid> =
        sqlx::query_scalar("SELECT user_id FROM certificates WHERE serial = $1")
            .bind(&serial)
            .fetch_optional(&state.db)
            .await?;
    if owner != Some(user_id) {
        return Err(ApiError::not_found(format!("no certificate {serial}")));
    }
    let cert = by_serial(&state, &serial).await?.open(&state)?;
    let url = cert.verification_url.clone();
    let statement = cert.statement;
    let bytes = tokio::task::spawn_blocking(move || render_pdf(&statement, &url))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{serial}.pdf\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// `GET /api/v1/certificates/{serial}`: public; 404 for an unknown serial.
pub async fn verify(
    State(state): State<AnalyticsState>,
    ApiPath(serial): ApiPath<String>,
) -> Result<Json<Statement>, ApiError> {
    Ok(Json(
        by_serial(&state, &serial).await?.open(&state)?.statement,
    ))
}

/// `GET /verify/{serial}`: the page the QR code opens.
pub async fn verify_page(
    State(state): State<AnalyticsState>,
    ApiPath(serial): ApiPath<String>,
) -> Result<Response, ApiError> {
    let s = by_serial(&state, &serial).await?.open(&state)?.statement;
    let page = format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>证书验证 Certificate verification</title></head><body>\
         <h1>证书有效 · Certificate valid</h1><dl>\
         <dt>编号 Serial</dt><dd>{}</dd><dt>姓名 Name</dt><dd>{}</dd>\
         <dt>课程 Course</dt><dd>{}</dd><dt>机构 Organisation</dt><dd>{}</dd>\
         <dt>学分 Credits</dt><dd>{} {}</dd><dt>项目编号 Project</dt><dd>{}</dd>\
         <dt>颁发日期 Issued</dt><dd>{}</dd></dl></body></html>",
        lectern_web::html::escape(&s.serial),
        lectern_web::html::escape(&s.learner_name),
        lectern_web::html::escape(&s.course_title),
        lectern_web::html::escape(&s.organisation),
        s.credits,
        lectern_web::html::escape(&s.credit_label),
        lectern_web::html::escape(&s.project_code),
        s.issued_at.format("%Y-%m-%d"),
    );
    Ok(Html(page).into_response())
}

static FONT: OnceLock<Result<Arc<Vec<u8>>, String>> = OnceLock::new();

fn font_bytes() -> Result<Arc<Vec<u8>>, String> {
    FONT.get_or_init(|| {
        std::fs::read(FONT_PATH)
            .map(Arc::new)
            .map_err(|e| format!("cannot read {FONT_PATH} (install fonts-noto-cjk): {e}"))
    })
    .clone()
}

/// The certificate as a one-page A4 landscape PDF.
pub fn render_pdf(s: &Statement, verification_url: &str) -> Result<Vec<u8>, String> {
    use krilla::color::rgb;
    use krilla::geom::{PathBuilder, Point, Rect};
    use krilla::page::PageSettings;
    use krilla::paint::{Fill, FillRule};
    use krilla::text::{Font, TextDirection};
    use krilla::Document;

    let data = font_bytes()?;
    let font = Font::new(krilla::Data::from(data), FONT_INDEX_SC)
        .ok_or_else(|| format!("{FONT_PATH} has no face {FONT_INDEX_SC}"))?;
    let (w, h) = (842.0f32, 595.0f32);
    let mut document = Document::new();
    {
        let mut page = document.start_page_with(PageSettings::from_wh(w, h).ok_or("page size")?);
        let mut surface = page.surface();
        let black = Fill {
            paint: rgb::Color::new(0, 0, 0).into(),
            opacity: krilla::num::NormalizedF32::ONE,
            rule: FillRule::NonZero,
        };
        surface.set_fill(Some(black.clone()));
        let mut line = |y: f32, size: f32, text: &str| {
            surface.draw_text(
                Point::from_xy(60.0, y),
                font.clone(),
                size,
                text,
                false,
                TextDirection::Auto,
            );
        };
        line(90.0, 30.0, "继续医学教育学分证书");
        line(125.0, 16.0, "Continuing Medical Education Certificate");
        line(200.0, 26.0, &s.learner_name);
        line(240.0, 14.0, "完成课程 has completed the course");
        line(275.0, 20.0, &format!("《{}》", s.course_title));
        line(
            320.0,
            16.0,
            &format!(
                "授予 {} 学分 · {} credits · {}",
                s.credits, s.credits, s.credit_label
            ),
        );
        if !s.project_code.is_empty() {
            line(
                350.0,
                12.0,
                &format!("项目编号 Project: {}", s.project_code),
            );
        }
        line(
            380.0,
            12.0,
            &format!("颁发机构 Issued by: {}", s.organisation),
        );
        line(
            405.0,
            12.0,
            &format!("颁发日期 Date: {}", s.issued_at.format("%Y-%m-%d")),
        );
        line(520.0, 11.0, &format!("证书编号 Serial: {}", s.serial));
        line(540.0, 9.0, &format!("扫码验证 Verify: {verification_url}"));

        // The QR code, bottom right: one filled square per dark module,
        // with the four-module quiet zone the standard asks for.
        let code = qrcode::QrCode::new(verification_url.as_bytes()).map_err(|e| e.to_string())?;
        let n = code.width();
        let module = 4.0f32;
        let size = module * (n as f32 + 8.0);
        let (x0, y0) = (w - 60.0 - size, h - 50.0 - size);
        let mut pb = PathBuilder::new();
        for (i, c) in code.to_colors().iter().enumerate() {
            if *c == qrcode::Color::Dark {
                let (x, y) = ((i % n) as f32 + 4.0, (i / n) as f32 + 4.0);
                if let Some(r) = Rect::from_xywh(x0 + x * module, y0 + y * module, module, module) {
                    pb.push_rect(r);
                }
            }
        }
        if let Some(path) = pb.finish() {
            surface.set_fill(Some(black));
            surface.draw_path(&path);
        }
        surface.finish();
        page.finish();
    }
    document.finish().map_err(|e| format!("{e:?}"))
}
