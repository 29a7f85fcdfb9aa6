//! A course as every route answers it: its metadata, authors, tags,
//! rating, and its chapters with their lessons in order ([`course_view`]).
//! Shared by the routes that edit a course's metadata (`courses`) and its
//! structure (`structure`), which both answer the course as it now is.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use lectern_web::{ApiError, Principal};

use crate::{sees_unpublished, CourseState, ResourceType};

/// A discipline as a course or a search result names it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DisciplineRef {
    pub id: Uuid,
    pub name: String,
}

/// An author a course credits.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct ExpertRef {
    pub id: Uuid,
    pub name: String,
    /// Their professional title (主任医师, Professor of Cardiology); may be empty.
    pub title: String,
}

/// Learners' ratings of a course: published reviews only (see
/// [`crate::ratings`]).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct RatingSummary {
    /// The plain mean of the ratings (1–5); null while nobody has rated it.
    pub average: Option<f64>,
    /// How many learners rated it.
    pub count: i64,
    /// The mean pulled towards a prior (3.5, weighing as 5 reviews), so a
    /// course with few reviews is not over-ranked: what to display, and
    /// what search's `sort=rating` orders by.
    pub bayesian_average: f64,
}

/// Why a course's last review ended as it did, for those who draft and
/// publish courses.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct ReviewOutcome {
    /// `published` or `rejected`.
    pub outcome: String,
    /// The reviewer's reason for a rejection (plain text).
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// A whole course: metadata, authors, tags, rating, and its chapters with
/// their lessons in order. Every route that changes a course's content
/// answers it as it now is.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Course {
    pub id: Uuid,
    /// The organisation that owns the course.
    pub org_id: Uuid,
    pub title: String,
    /// Plain text; may be empty.
    pub description: String,
    pub resource_type: ResourceType,
    pub state: CourseState,
    /// Where the course is filed, if anywhere.
    pub discipline: Option<DisciplineRef>,
    /// Its authors, in the order they are credited.
    pub experts: Vec<ExpertRef>,
    /// Sorted, without duplicates.
    pub tags: Vec<String>,
    pub rating: RatingSummary,
    /// The outcome of its last review (a rejection with its reason); only
    /// for those who draft or publish courses, null for learners.
    pub review: Option<ReviewOutcome>,
    /// When it was last published; kept while it is unpublished.
    pub published_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Its chapters in order, each with its lessons in order.
    pub chapters: Vec<ChapterWithLessons>,
    /// Lessons outside any chapter, in order.
    pub lessons: Vec<Lesson>,
}

#[derive(sqlx::FromRow)]
struct CourseRow {
    id: Uuid,
    org_id: Uuid,
    title: String,
    description: String,
    resource_type: ResourceType,
    state: CourseState,
    discipline_id: Option<Uuid>,
    discipline_name: Option<String>,
    tags: Vec<String>,
    #[sqlx(flatten)]
    rating: RatingSummary,
    review_outcome: Option<String>,
    review_reason: Option<String>,
    reviewed_at: Option<DateTime<Utc>>,
    published_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The course as every route that answers a course shows it, if the
/// caller may see it (their organisation's; published only, unless they
/// draft courses): 404 otherwise, as if it did not exist.
pub(crate) async fn course_view(
    conn: &mut PgConnection,
    principal: &Principal,
    id: Uuid,
) -> Result<Course, ApiError> {
    let c: CourseRow = sqlx::query_as(&format!(
        "SELECT c.id, c.organisation_id AS org_id, c.title, c.description, c.resource_type,
                c.state, c.discipline_id, d.name AS discipline_name,
                ARRAY(SELECT t.tag FROM course_tags t WHERE t.course_id = c.id ORDER BY t.tag) AS tags,
                {},
                c.review_outcome, c.review_reason, c.reviewed_at,
                c.published_at, c.created_at, c.updated_at
         FROM courses c LEFT JOIN disciplines d ON d.id = c.discipline_id
         WHERE c.id = $1 AND ($2::uuid IS NULL OR c.organisation_id = $2)
           AND ($3 OR c.state = 'published')",
        crate::ratings::summary_columns("c.id")
    ))
    .bind(id)
    .bind(principal.org_scope())
    .bind(sees_unpublished(principal))
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no course {id}")))?;
    let experts: Vec<ExpertRef> = sqlx::query_as(
        "SELECT e.id, e.name, e.title FROM course_experts ce JOIN experts e ON e.id = ce.expert_id
         WHERE ce.course_id = $1 ORDER BY ce.position, e.name",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let (chapters, lessons) = course_outline(conn, id).await?;
    Ok(Course {
        id: c.id,
        org_id: c.org_id,
        title: c.title,
        description: c.description,
        resource_type: c.resource_type,
        state: c.state,
        discipline: c.discipline_id.map(|id| DisciplineRef {
            id,
            name: c.discipline_name.unwrap_or_default(),
        }),
        experts,
        tags: c.tags,
        rating: c.rating,
        review: match (sees_unpublished(principal), c.review_outcome, c.reviewed_at) {
            (true, Some(outcome), Some(at)) => Some(ReviewOutcome {
                outcome,
                reason: c.review_reason,
                at,
            }),
            _ => None,
        },
        published_at: c.published_at,
        created_at: c.created_at,
        updated_at: c.updated_at,
        chapters,
        lessons,
    })
}

// --- routes -----------------------------------------------------------------

/// A chapter of a course.
#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Chapter {
    pub id: Uuid,
    pub course_id: Uuid,
    pub title: String,
    /// Its place among the course's chapters, from 0.
    pub position: i32,
}

/// A chapter with its lessons, as a course lists them.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ChapterWithLessons {
    #[serde(flatten)]
    pub chapter: Chapter,
    /// Its lessons, in order.
    pub lessons: Vec<Lesson>,
}

/// A lesson: one video of a course.
#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
pub struct Lesson {
    pub id: Uuid,
    pub course_id: Uuid,
    /// Its chapter; null for a lesson outside any chapter.
    pub chapter_id: Option<Uuid>,
    pub title: String,
    /// Plain text; may be empty.
    pub description: String,
    /// Its place in its chapter (or among the lessons outside any), from 0.
    pub position: i32,
    /// The video it plays, an asset of the same organisation; null until one is chosen.
    pub asset_id: Option<Uuid>,
    /// The video's length in seconds, once it has been probed.
    pub duration_s: Option<f64>,
}

/// The columns of a [`Lesson`], over `l` (lessons, or rows just written to
/// them) left-joined with `a` (its asset).
pub(crate) const LESSON_COLUMNS: &str =
    "l.id, l.course_id, l.chapter_id, l.title, l.description, l.position, \
     l.asset_id, a.duration_s";

/// A course's chapters with their lessons, and the lessons outside any
/// chapter, each in order.
pub(crate) async fn course_outline(
    conn: &mut PgConnection,
    course_id: Uuid,
) -> Result<(Vec<ChapterWithLessons>, Vec<Lesson>), ApiError> {
    let chapters: Vec<Chapter> = sqlx::query_as(
        "SELECT id, course_id, title, position FROM chapters WHERE course_id = $1
         ORDER BY position, created_at, id",
    )
    .bind(course_id)
    .fetch_all(&mut *conn)
    .await?;
    let lessons: Vec<Lesson> = sqlx::query_as(&format!(
        "SELECT {LESSON_COLUMNS} FROM lessons l LEFT JOIN assets a ON a.id = l.asset_id
         WHERE l.course_id = $1 ORDER BY l.position, l.created_at, l.id"
    ))
    .bind(course_id)
    .fetch_all(&mut *conn)
    .await?;
    let (mut in_chapters, loose): (Vec<Lesson>, Vec<Lesson>) =
        lessons.into_iter().partition(|l| l.chapter_id.is_some());
    let chapters = chapters
        .into_iter()
        .map(|chapter| {
            let (mine, rest): (Vec<Lesson>, Vec<Lesson>) = std::mem::take(&mut in_chapters)
                .into_iter()
                .partition(|l| l.chapter_id == Some(chapter.id));
            in_chapters = rest;
            ChapterWithLessons {
                chapter,
                lessons: mine,
            }
        })
        .collect();
    Ok((chapters, loose))
}

// --- routes -----------------------------------------------------------------
