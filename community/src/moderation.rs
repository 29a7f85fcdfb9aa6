//! Moderation: how an organisation decides what shows.
//!
//! Every post is written with the state [`admit`] chose, in the same
//! transaction: `pending` when the organisation pre-moderates (先审后发)
//! or when the text holds a word of its sensitive-word list (in either
//! mode), `published` otherwise. A pending post gets an open case in the
//! organisation's queue ([`open_case`]); so does a published post on its
//! first report, and when reports reach the organisation's threshold the
//! post is taken back to `pending` (hidden until a moderator decides).
//!
//! A moderator approves (→ `published`; reports are dismissed), rejects
//! with a reason (→ `rejected`; the author sees the reason) or hides
//! (→ `hidden`). Each decision closes the case, notifies the author in
//! the same transaction ([`crate::notices`]) and writes an audit event
//! `moderation.decision` naming the post and the decision — never its text.
//! The queue answers oldest first with each case's age, and the median
//! time from opening to decision over the last 30 days.
//!
//! Routes: the organisation's settings and word list, the queue, a
//! decision, and a learner's report.

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use std::sync::Arc;
use uuid::Uuid;

use lectern_identity::audit::{self, AuditEvent};
use lectern_web::{Access, ApiError, ApiRouter, ErrorCode, Permission, Principal};
use lectern_web::{ApiJson, ApiPath, ApiQuery, ClientContext, Created, Cursor, Limit, NoContent};

use crate::text::{self, REASON_MAX};
use crate::words::{fold, Matcher};
use crate::{notices, questions, Author, Community, CommunityState, PostKind, PostState};

pub fn routes(api: ApiRouter<CommunityState>) -> ApiRouter<CommunityState> {
    let moderate = Access::Permission(Permission::ModerateCommunity);
    api.route(
        Method::GET,
        "/api/v1/moderation/settings",
        moderate,
        get_settings,
    )
    .route(
        Method::PUT,
        "/api/v1/moderation/settings",
        moderate,
        put_settings,
    )
    .route(
        Method::GET,
        "/api/v1/moderation/words",
        moderate,
        list_words,
    )
    .route(Method::POST, "/api/v1/moderation/words", moderate, add_word)
    .route(
        Method::DELETE,
        "/api/v1/moderation/words/{word_id}",
        moderate,
        delete_word,
    )
    .route(Method::GET, "/api/v1/moderation/queue", moderate, queue)
    .route(
        Method::POST,
        "/api/v1/moderation/cases/{case_id}/decision",
        moderate,
        decide,
    )
    .route(
        Method::POST,
        "/api/v1/reports",
        Access::Permission(Permission::ReportPosts),
        report,
    )
}

// --- admission ----------------------------------------------------------

/// An organisation's moderation settings as posting reads them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrgModeration {
    /// `pre` or `post`.
    pub moderation: String,
    pub report_threshold: i32,
    pub words_version: i64,
}

pub(crate) async fn settings_of(
    conn: &mut PgConnection,
    org: Uuid,
) -> Result<OrgModeration, sqlx::Error> {
    Ok(sqlx::query_as(
        "SELECT moderation, report_threshold, words_version FROM community_settings
         WHERE organisation_id = $1",
    )
    .bind(org)
    .fetch_optional(conn)
    .await?
    .unwrap_or(OrgModeration {
        moderation: "post".into(),
        report_threshold: 3,
        words_version: 0,
    }))
}

/// The organisation's compiled word list, rebuilt only when its version moved.
async fn matcher(
    conn: &mut PgConnection,
    community: &Community,
    org: Uuid,
    version: i64,
) -> Result<Arc<Matcher>, sqlx::Error> {
    if let Some(m) = community.words.get(org, version) {
        return Ok(m);
    }
    let folded: Vec<String> =
        sqlx::query_scalar("SELECT folded FROM sensitive_words WHERE organisation_id = $1")
            .bind(org)
            .fetch_all(conn)
            .await?;
    let m = Arc::new(Matcher::new(folded));
    community.words.put(org, version, m.clone());
    Ok(m)
}

/// Why a case was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Cause {
    /// The organisation pre-moderates: nothing shows before approval.
    PreModeration,
    /// The text holds listed words (held in either mode).
    SensitiveWord,
    /// Learners reported it.
    Reported,
}

/// The state a new or edited post starts in, and the case it needs.
#[derive(Debug, Clone)]
pub struct Admission {
    pub state: PostState,
    pub cause: Option<Cause>,
    /// The listed words found (folded).
    pub matched: Vec<String>,
}

/// Decides how a post of `org` with `text` starts: pending in
/// pre-moderation or when listed words match, published otherwise.
pub async fn admit(
    conn: &mut PgConnection,
    community: &Community,
    org: Uuid,
    text: &str,
) -> Result<Admission, sqlx::Error> {
    let settings = settings_of(conn, org).await?;
    let matched = matcher(conn, community, org, settings.words_version)
        .await?
        .find(text);
    Ok(if !matched.is_empty() {
        Admission {
            state: PostState::Pending,
            cause: Some(Cause::SensitiveWord),
            matched,
        }
    } else if settings.moderation == "pre" {
        Admission {
            state: PostState::Pending,
            cause: Some(Cause::PreModeration),
            matched,
        }
    } else {
        Admission {
            state: PostState::Published,
            cause: None,
            matched,
        }
    })
}

/// Puts the post in the queue when its admission needs a moderator (or
/// updates the open case's cause after an edit).
pub async fn open_case(
    conn: &mut PgConnection,
    org: Uuid,
    kind: PostKind,
    post_id: Uuid,
    admission: &Admission,
) -> Result<(), sqlx::Error> {
    let Some(cause) = admission.cause else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO moderation_cases (id, organisation_id, post_kind, post_id, cause, matched)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (post_kind, post_id) WHERE decided_at IS NULL
         DO UPDATE SET cause = EXCLUDED.cause, matched = EXCLUDED.matched",
    )
    .bind(Uuid::now_v7())
    .bind(org)
    .bind(kind)
    .bind(post_id)
    .bind(cause)
    .bind(&admission.matched)
    .execute(conn)
    .await?;
    Ok(())
}

/// A post is being deleted by its author: its open case and reports go
/// with it (decided cases stay, for the queue's statistics).
pub async fn forget_post(
    conn: &mut PgConnection,
    kind: PostKind,
    post_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM moderation_cases WHERE post_kind = $1 AND post_id = $2 AND decided_at IS NULL",
    )
    .bind(kind)
    .bind(post_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM post_reports WHERE post_kind = $1 AND post_id = $2")
        .bind(kind)
        .bind(post_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The reason of the latest decision on a post, for its author.
pub(crate) const LATEST_REASON: &str = "(SELECT m.reason FROM moderation_cases m
      WHERE m.post_kind = $KIND AND m.post_id = $ID AND m.decided_at IS NOT NULL
      ORDER BY m.decided_at DESC LIMIT 1)";

/// [`LATEST_REASON`] for posts of `kind` whose id is the SQL expression `id`.
pub(crate) fn latest_reason(kind: PostKind, id: &str) -> String {
    LATEST_REASON
        .replace("$KIND", &format!("'{}'", kind.as_str()))
        .replace("$ID", id)
}

// --- settings -------------------------------------------------------------

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgQuery {
    /// Only a global super admin names the organisation.
    org_id: Option<Uuid>,
}

/// An organisation's moderation settings.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ModerationSettings {
    pub org_id: Uuid,
    /// `pre` (先审后发: posts show only once approved) or `post` (posts
    /// show at once; reports and listed words bring them to the queue).
    pub moderation: String,
    /// Reports from this many learners hide a post until a moderator decides.
    pub report_threshold: i32,
}

/// `GET /api/v1/moderation/settings`: post-moderation with a threshold
/// of 3 until changed.
async fn get_settings(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<OrgQuery>,
) -> Result<Json<ModerationSettings>, ApiError> {
    let org = principal.target_org(q.org_id)?;
    let mut conn = state.db.acquire().await?;
    let s = settings_of(&mut conn, org).await?;
    Ok(Json(ModerationSettings {
        org_id: org,
        moderation: s.moderation,
        report_threshold: s.report_threshold,
    }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    /// `pre` or `post`.
    moderation: Option<String>,
    /// 1–1000.
    report_threshold: Option<i32>,
    org_id: Option<Uuid>,
}

/// `PUT /api/v1/moderation/settings {"moderation"?, "report_threshold"?}`.
async fn put_settings(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiJson(body): ApiJson<SettingsUpdate>,
) -> Result<Json<ModerationSettings>, ApiError> {
    let org = principal.target_org(body.org_id)?;
    if body
        .moderation
        .as_deref()
        .is_some_and(|m| m != "pre" && m != "post")
        || body
            .report_threshold
            .is_some_and(|t| !(1..=1000).contains(&t))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidModeration,
            "moderation is `pre` or `post`; report_threshold is 1–1000",
        ));
    }
    let row: Option<(String, i32)> = sqlx::query_as(
        "INSERT INTO community_settings (organisation_id, moderation, report_threshold)
         SELECT id, coalesce($2, 'post'), coalesce($3, 3) FROM organisations WHERE id = $1
         ON CONFLICT (organisation_id) DO UPDATE SET
             moderation = coalesce($2, community_settings.moderation),
             report_threshold = coalesce($3, community_settings.report_threshold),
             updated_at = now()
         RETURNING moderation, report_threshold",
    )
    .bind(org)
    .bind(&body.moderation)
    .bind(body.report_threshold)
    .fetch_optional(&state.db)
    .await?;
    let (moderation, report_threshold) =
        row.ok_or_else(|| ApiError::not_found(format!("no organisation {org}")))?;
    Ok(Json(ModerationSettings {
        org_id: org,
        moderation,
        report_threshold,
    }))
}

// --- the word list --------------------------------------------------------

/// A listed word.
#[derive(Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct SensitiveWord {
    pub id: Uuid,
    /// As the admin typed it.
    pub word: String,
    /// As posts are compared with it: NFKC, lower case, letters and digits only.
    pub folded: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct WordList {
    pub words: Vec<SensitiveWord>,
}

/// `GET /api/v1/moderation/words`: the organisation's list, alphabetical.
async fn list_words(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<OrgQuery>,
) -> Result<Json<WordList>, ApiError> {
    let org = principal.target_org(q.org_id)?;
    let words = sqlx::query_as(
        "SELECT id, word, folded, created_at FROM sensitive_words
         WHERE organisation_id = $1 ORDER BY folded",
    )
    .bind(org)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(WordList { words }))
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWord {
    /// Chinese or English; up to 100 characters. Spacing, punctuation,
    /// width and case do not matter.
    word: String,
    org_id: Option<Uuid>,
}

/// Moves the list's version, so every node rebuilds its matcher.
async fn bump_version(conn: &mut PgConnection, org: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO community_settings (organisation_id, words_version) VALUES ($1, 1)
         ON CONFLICT (organisation_id) DO UPDATE
             SET words_version = community_settings.words_version + 1, updated_at = now()",
    )
    .bind(org)
    .execute(conn)
    .await?;
    Ok(())
}

/// Words one organisation may list: the matcher is rebuilt from the whole
/// list when it changes and held in memory per organisation.
pub const MAX_WORDS: i64 = 10_000;

/// `POST /api/v1/moderation/words {"word"}` → 201; 409 `word_exists` when
/// the list has it already (compared folded); 422 `word_list_full` at
/// [`MAX_WORDS`].
async fn add_word(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiJson(body): ApiJson<NewWord>,
) -> Result<Created<SensitiveWord>, ApiError> {
    let org = principal.target_org(body.org_id)?;
    let word = body.word.trim().to_string();
    let folded = fold(&word);
    if folded.is_empty() || word.chars().count() > 100 || folded.chars().count() > 100 {
        return Err(ApiError::new(
            ErrorCode::InvalidWord,
            "a listed word has 1–100 characters, at least one of them a letter or digit",
        ));
    }
    let mut tx = state.db.begin().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM organisations WHERE id = $1)")
            .bind(org)
            .fetch_one(&mut *tx)
            .await?;
    if !exists {
        return Err(ApiError::not_found(format!("no organisation {org}")));
    }
    // The version row's lock orders concurrent additions, so the cap below
    // holds; every text posted is matched against the whole list.
    bump_version(&mut tx, org).await?;
    let listed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sensitive_words WHERE organisation_id = $1")
            .bind(org)
            .fetch_one(&mut *tx)
            .await?;
    if listed >= MAX_WORDS {
        return Err(ApiError::new(
            ErrorCode::WordListFull,
            format!("the list holds its maximum of {MAX_WORDS} words; remove some first"),
        ));
    }
    let row: Option<SensitiveWord> = sqlx::query_as(
        "INSERT INTO sensitive_words (id, organisation_id, word, folded) VALUES ($1, $2, $3, $4)
         ON CONFLICT (organisation_id, folded) DO NOTHING
         RETURNING id, word, folded, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(org)
    .bind(&word)
    .bind(&folded)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(ApiError::new(
            ErrorCode::WordExists,
            format!("the list already has {folded:?}"),
        ));
    };
    tx.commit().await?;
    Ok(Created::at(
        format!("/api/v1/moderation/words/{}", row.id),
        row,
    ))
}

/// `DELETE /api/v1/moderation/words/{word_id}`.
async fn delete_word(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiPath(word_id): ApiPath<Uuid>,
) -> Result<NoContent, ApiError> {
    let mut tx = state.db.begin().await?;
    let org: Option<Uuid> = sqlx::query_scalar(
        "DELETE FROM sensitive_words WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2)
         RETURNING organisation_id",
    )
    .bind(word_id)
    .bind(principal.org_scope())
    .fetch_optional(&mut *tx)
    .await?;
    let org = org.ok_or_else(|| ApiError::not_found(format!("no listed word {word_id}")))?;
    bump_version(&mut tx, org).await?;
    tx.commit().await?;
    Ok(NoContent)
}

// --- the queue ------------------------------------------------------------

const QUEUE_PAGE: Limit = Limit::new(50, 200);

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueQuery {
    org_id: Option<Uuid>,
    /// The previous page's `next`.
    cursor: Option<String>,
    /// 1–200; 50 by default.
    limit: Option<i64>,
}

/// An open case: the post, why it is here, and how long it has waited.
#[derive(Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct QueuedCase {
    pub id: Uuid,
    pub post_kind: PostKind,
    pub post_id: Uuid,
    pub cause: Cause,
    /// The listed words found in the post (folded).
    pub matched: Vec<String>,
    pub opened_at: DateTime<Utc>,
    /// Seconds since the case was opened.
    pub age_s: f64,
    pub post_state: PostState,
    pub author_id: Uuid,
    /// The post's text (plain text; escape it when displaying).
    pub body: String,
    /// A review's stars.
    pub rating: Option<i16>,
    /// How many learners reported the post.
    pub reports: i64,
}

/// The queue's page and the organisation's pace.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ModerationQueue {
    /// Oldest first.
    pub cases: Vec<QueuedCase>,
    pub next: Option<String>,
    /// Open cases in all.
    pub open: i64,
    /// Median seconds from a case's opening to its decision, over the
    /// last 30 days; null when nothing was decided.
    pub median_decision_s: Option<f64>,
    /// Cases decided in the last 30 days.
    pub decided_30d: i64,
}

#[derive(Serialize, Deserialize)]
struct QueueCursor {
    at: DateTime<Utc>,
    id: Uuid,
}

/// `GET /api/v1/moderation/queue?cursor=&limit=`: open cases, oldest first.
async fn queue(
    State(state): State<CommunityState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<QueueQuery>,
) -> Result<Json<ModerationQueue>, ApiError> {
    let org = principal.target_org(q.org_id)?;
    let limit = QUEUE_PAGE.of(q.limit)?;
    let after: Option<QueueCursor> = q.cursor.as_deref().map(Cursor::decode).transpose()?;
    let mut cases: Vec<QueuedCase> = sqlx::query_as(
        "SELECT m.id, m.post_kind, m.post_id, m.cause, m.matched, m.opened_at,
                extract(epoch FROM now() - m.opened_at)::float8 AS age_s,
                coalesce(r.state, c.state, q.state, a.state) AS post_state,
                coalesce(r.user_id, c.author_id, q.author_id, a.author_id) AS author_id,
                coalesce(r.body, c.body, q.body, a.body) AS body,
                r.rating,
                (SELECT count(*) FROM post_reports p
                  WHERE p.post_kind = m.post_kind AND p.post_id = m.post_id) AS reports
         FROM moderation_cases m
         LEFT JOIN course_ratings r ON m.post_kind = 'review' AND r.id = m.post_id
         LEFT JOIN lesson_comments c ON m.post_kind = 'comment' AND c.id = m.post_id
         LEFT JOIN questions q ON m.post_kind = 'question' AND q.id = m.post_id
         LEFT JOIN answers a ON m.post_kind = 'answer' AND a.id = m.post_id
         WHERE m.organisation_id = $1 AND m.decided_at IS NULL
           AND coalesce(r.id, c.id, q.id, a.id) IS NOT NULL
           AND ($2::timestamptz IS NULL OR (m.opened_at, m.id) > ($2, $3))
         ORDER BY m.opened_at, m.id LIMIT $4",
    )
    .bind(org)
    .bind(after.as_ref().map(|c| c.at))
    .bind(after.as_ref().map(|c| c.id))
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    let next = if cases.len() as i64 > limit {
        cases.truncate(limit as usize);
        cases.last().map(|c| {
            Cursor::encode(&QueueCursor {
                at: c.opened_at,
                id: c.id,
            })
        })
    } else {
        None
    };
    #[derive(sqlx::FromRow)]
    struct Pace {
        open: i64,
        median_decision_s: Option<f64>,
        decided_30d: i64,
    }
    let pace: Pace = sqlx::query_as(
        "SELECT (SELECT count(*) FROM moderation_cases
                  WHERE organisation_id = $1 AND decided_at IS NULL) AS open,
                percentile_cont(0.5) WITHIN GROUP (
                    ORDER BY extract(epoch FROM decided_at - opened_at))::float8 AS median_decision_s,
                count(*) AS decided_30d
         FROM moderation_cases
         WHERE organisation_id = $1 AND decided_at IS NOT NULL
           AND decided_at > now() - interval '30 days'",
    )
    .bind(org)
    .fetch_one(&state.db)
    .await?;
    Ok(Json(ModerationQueue {
        cases,
        next,
        open: pace.open,
        median_decision_s: pace.median_decision_s,
        decided_30d: pace.decided_30d,
    }))
}

// --- decisions ------------------------------------------------------------

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// `approve`, `reject` (needs a reason) or `hide`.
    decision: String,
    /// Shown to the author: required to reject, optional to hide; up to
    /// 500 characters.
    reason: Option<String>,
}

/// What a decision did.
#[derive(Serialize, schemars::JsonSchema)]
pub struct DecisionOutcome {
    pub case_id: Uuid,
    pub post_kind: PostKind,
    pub post_id: Uuid,
    /// `approved`, `rejected` or `hidden`.
    pub decision: String,
    /// The post's state now.
    pub post_state: PostState,
}

#[derive(sqlx::FromRow)]
struct OpenCase {
    organisation_id: Uuid,
    post_kind: PostKind,
    post_id: Uuid,
    decided: bool,
}

#[derive(sqlx::FromRow)]
struct DecidedPost {
    author: Uuid,
    body: String,
    was: PostState,
}

/// `POST /api/v1/moderation/cases/{case_id}/decision {"decision", "reason"?}`.
async fn decide(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiPath(case_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Decision>,
) -> Result<Json<DecisionOutcome>, ApiError> {
    let (decision, post_state) = match body.decision.as_str() {
        "approve" => ("approved", PostState::Published),
        "reject" => ("rejected", PostState::Rejected),
        "hide" => ("hidden", PostState::Hidden),
        other => {
            return Err(ApiError::new(
                ErrorCode::InvalidDecision,
                format!("decision {other:?} is not one of approve, reject, hide"),
            ))
        }
    };
    let reason = text::checked(
        body.reason.as_deref().unwrap_or(""),
        "reason",
        REASON_MAX,
        true,
    )?;
    if decision == "rejected" && reason.is_empty() {
        return Err(ApiError::new(
            ErrorCode::ReasonRequired,
            "a rejection needs a reason (1–500 characters) for its author",
        ));
    }
    let mut tx = state.db.begin().await?;
    let case: OpenCase = sqlx::query_as(
        "SELECT organisation_id, post_kind, post_id, decided_at IS NOT NULL AS decided
         FROM moderation_cases
         WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2) FOR UPDATE",
    )
    .bind(case_id)
    .bind(principal.org_scope())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no moderation case {case_id}")))?;
    if case.decided {
        return Err(ApiError::new(
            ErrorCode::AlreadyDecided,
            "this case has been decided already",
        ));
    }
    let kind = case.post_kind;
    let post: Option<DecidedPost> = sqlx::query_as(&format!(
        "UPDATE {table} p SET state = $2 FROM {table} old
         WHERE p.id = $1 AND old.id = p.id
         RETURNING p.{author} AS author, p.body, old.state AS was",
        table = kind.table(),
        author = kind.author_column(),
    ))
    .bind(case.post_id)
    .bind(post_state)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE moderation_cases SET decided_at = now(), decision = $2, reason = $3, decided_by = $4
         WHERE id = $1",
    )
    .bind(case_id)
    .bind(decision)
    .bind((!reason.is_empty()).then_some(&reason))
    .bind(principal.user_id())
    .execute(&mut *tx)
    .await?;
    if post_state == PostState::Published {
        // Approval dismisses the reports that brought the post here.
        sqlx::query("DELETE FROM post_reports WHERE post_kind = $1 AND post_id = $2")
            .bind(kind)
            .bind(case.post_id)
            .execute(&mut *tx)
            .await?;
    }
    if let Some(post) = &post {
        notices::moderation_outcome(
            &mut tx,
            case.organisation_id,
            post.author,
            kind,
            decision,
            &reason,
            &text::excerpt(&post.body),
        )
        .await?;
        if post_state == PostState::Published && post.was != PostState::Published {
            // Now visible: whoever waits for it hears of it.
            match kind {
                PostKind::Question => questions::announce_question(&mut tx, case.post_id).await?,
                PostKind::Answer => questions::announce_answer(&mut tx, case.post_id).await?,
                PostKind::Review | PostKind::Comment => {}
            }
        }
    }
    tx.commit().await?;
    // Who decided what about which post; never the post's text.
    audit::record_or_log(
        &state.identity,
        &AuditEvent {
            action: "moderation.decision".into(),
            target: Some(format!("{}:{}", kind.as_str(), case.post_id)),
            outcome: "ok",
            detail: Some(
                serde_json::json!({
                    "case_id": case_id,
                    "post_kind": kind.as_str(),
                    "post_id": case.post_id,
                    "decision": decision,
                })
                .to_string(),
            ),
            ..AuditEvent::by(Some(&principal), &context)
        },
    )
    .await;
    Ok(Json(DecisionOutcome {
        case_id,
        post_kind: kind,
        post_id: case.post_id,
        decision: decision.into(),
        post_state,
    }))
}

// --- reports --------------------------------------------------------------

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReport {
    pub kind: PostKind,
    pub post_id: Uuid,
    /// Why, in up to 500 characters (optional).
    #[serde(default)]
    pub reason: String,
}

/// A report received.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ReportReceipt {
    pub kind: PostKind,
    pub post_id: Uuid,
    /// Whether this report took the post off view until a moderator decides.
    pub hidden_pending_review: bool,
}

#[derive(sqlx::FromRow)]
struct Reported {
    organisation_id: Uuid,
    author: Uuid,
    state: PostState,
}

/// The organisation, author and state of a post the caller can see.
fn reportable_sql(kind: PostKind) -> String {
    let org = match kind {
        PostKind::Review => "(SELECT c.organisation_id FROM courses c WHERE c.id = p.course_id)",
        _ => "p.organisation_id",
    };
    format!(
        "SELECT {org} AS organisation_id, p.{author} AS author, p.state
         FROM {table} p WHERE p.id = $1 FOR UPDATE",
        author = kind.author_column(),
        table = kind.table(),
    )
}

/// `POST /api/v1/reports {"kind", "post_id", "reason"?}` → 201: one report
/// per person per post (409 `already_reported`), never one's own (409
/// `own_post`). Reports from the organisation's threshold of people hide
/// the post until a moderator decides.
async fn report(
    State(state): State<CommunityState>,
    principal: Principal,
    context: ClientContext,
    ApiJson(body): ApiJson<NewReport>,
) -> Result<Created<ReportReceipt>, ApiError> {
    let author = Author::of(&principal, &context)?;
    let reason = text::checked(&body.reason, "reason", REASON_MAX, true)?;
    state
        .community
        .limiter
        .admit(author.user_id, author.ip.as_deref())?;
    let mut tx = state.db.begin().await?;
    let post: Option<Reported> = sqlx::query_as(&reportable_sql(body.kind))
        .bind(body.post_id)
        .fetch_optional(&mut *tx)
        .await?;
    // What the reporter cannot see (another organisation's, or not
    // published) answers as if it did not exist.
    let post = post
        .filter(|p| p.organisation_id == author.org_id && p.state == PostState::Published)
        .ok_or_else(|| {
            ApiError::not_found(format!("no {} {}", body.kind.as_str(), body.post_id))
        })?;
    if post.author == author.user_id {
        return Err(ApiError::new(
            ErrorCode::OwnPost,
            "one does not report one's own post; edit or delete it instead",
        ));
    }
    let added = sqlx::query(
        "INSERT INTO post_reports (post_kind, post_id, reporter_id, organisation_id, reason)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(body.kind)
    .bind(body.post_id)
    .bind(author.user_id)
    .bind(author.org_id)
    .bind(&reason)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if added == 0 {
        return Err(ApiError::new(
            ErrorCode::AlreadyReported,
            "you have reported this post already",
        ));
    }
    let reports: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM post_reports WHERE post_kind = $1 AND post_id = $2",
    )
    .bind(body.kind)
    .bind(body.post_id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO moderation_cases (id, organisation_id, post_kind, post_id, cause)
         VALUES ($1, $2, $3, $4, 'reported')
         ON CONFLICT (post_kind, post_id) WHERE decided_at IS NULL DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(author.org_id)
    .bind(body.kind)
    .bind(body.post_id)
    .execute(&mut *tx)
    .await?;
    let threshold = settings_of(&mut tx, author.org_id).await?.report_threshold;
    let hide = reports >= i64::from(threshold);
    if hide {
        sqlx::query(&format!(
            "UPDATE {} SET state = 'pending' WHERE id = $1",
            body.kind.table()
        ))
        .bind(body.post_id)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Created::at(
        "/api/v1/moderation/queue".to_string(),
        ReportReceipt {
            kind: body.kind,
            post_id: body.post_id,
            hidden_pending_review: hide,
        },
    ))
}

/// Whether an edit by the author puts a post back in the queue: the same
/// rule as a new post.
pub async fn readmit(
    conn: &mut PgConnection,
    community: &Community,
    org: Uuid,
    kind: PostKind,
    post_id: Uuid,
    text: &str,
) -> Result<Admission, sqlx::Error> {
    let admission = admit(conn, community, org, text).await?;
    open_case(conn, org, kind, post_id, &admission).await?;
    Ok(admission)
}
