//! Keeping each lesson's `search_doc` in step with the catalogue. Every
//! handler that changes something a document contains calls
//! [`reindex_course`] (or [`reindex_expert`]) inside its own transaction, so
//! the index is never behind a committed change and never ahead of a
//! rolled-back one.

use sqlx::PgConnection;
use uuid::Uuid;

use super::text::{Document, Weight};

/// Words a learner may type for a resource type, in both languages, so
/// "指南" or "guideline" also finds guidelines whose titles do not say so.
pub fn type_labels(resource_type: &str) -> &'static str {
    match resource_type {
        "video_course" => "视频课程 video course",
        "clinical_case" => "诊疗案例 病例 clinical case",
        "guideline" => "指南 guideline",
        "live_replay" => "直播回放 live replay",
        _ => "",
    }
}

/// The text of one course that every lesson's document shares.
#[derive(sqlx::FromRow)]
pub struct CourseText {
    pub title: String,
    pub description: String,
    pub resource_type: String,
    pub discipline: Option<String>,
    pub tags: Vec<String>,
    pub experts: Vec<String>,
}

/// One lesson's search document: lesson and course titles (A), then tags,
/// experts, type and discipline (B), then descriptions (C).
pub fn lesson_document(course: &CourseText, title: &str, description: &str) -> String {
    let mut doc = Document::default();
    doc.add(title, Weight::A);
    doc.gap();
    doc.add(&course.title, Weight::A);
    doc.gap();
    for tag in &course.tags {
        doc.add_whole(tag, Weight::B);
        doc.gap();
    }
    for expert in &course.experts {
        doc.add_whole(expert, Weight::B);
        doc.gap();
    }
    doc.add(type_labels(&course.resource_type), Weight::B);
    doc.gap();
    if let Some(discipline) = &course.discipline {
        doc.add_whole(discipline, Weight::B);
        doc.gap();
    }
    doc.add(description, Weight::C);
    doc.gap();
    doc.add(&course.description, Weight::C);
    doc.to_tsvector_literal()
}

/// The text of one lesson of its own.
#[derive(sqlx::FromRow)]
struct LessonText {
    id: Uuid,
    title: String,
    description: String,
}

/// Rewrites the documents of every lesson of `course_id`.
pub async fn reindex_course(conn: &mut PgConnection, course_id: Uuid) -> sqlx::Result<()> {
    let Some(course) = sqlx::query_as::<_, CourseText>(
        "SELECT c.title, c.description, c.resource_type, d.name AS discipline,
                ARRAY(SELECT t.tag FROM course_tags t WHERE t.course_id = c.id ORDER BY t.tag) AS tags,
                ARRAY(SELECT e.name FROM course_experts ce JOIN experts e ON e.id = ce.expert_id
                      WHERE ce.course_id = c.id ORDER BY ce.position, e.name) AS experts
         FROM courses c LEFT JOIN disciplines d ON d.id = c.discipline_id
         WHERE c.id = $1",
    )
    .bind(course_id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(());
    };
    let lessons: Vec<LessonText> =
        sqlx::query_as("SELECT id, title, description FROM lessons WHERE course_id = $1")
            .bind(course_id)
            .fetch_all(&mut *conn)
            .await?;
    if lessons.is_empty() {
        return Ok(());
    }
    let (ids, docs): (Vec<Uuid>, Vec<String>) = lessons
        .iter()
        .map(|l| (l.id, lesson_document(&course, &l.title, &l.description)))
        .unzip();
    sqlx::query(
        "UPDATE lessons SET search_doc = d.doc::tsvector
         FROM unnest($1::uuid[], $2::text[]) AS d(id, doc)
         WHERE lessons.id = d.id",
    )
    .bind(&ids)
    .bind(&docs)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Rewrites the documents of every course `expert_id` is an author of
/// (after a rename).
pub async fn reindex_expert(conn: &mut PgConnection, expert_id: Uuid) -> sqlx::Result<()> {
    let courses: Vec<Uuid> =
        sqlx::query_scalar("SELECT course_id FROM course_experts WHERE expert_id = $1")
            .bind(expert_id)
            .fetch_all(&mut *conn)
            .await?;
    for course in courses {
        reindex_course(conn, course).await?;
    }
    Ok(())
}

/// Rewrites the documents of every course filed under `discipline_id`
/// (after a rename).
pub async fn reindex_discipline(conn: &mut PgConnection, discipline_id: Uuid) -> sqlx::Result<()> {
    let courses: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM courses WHERE discipline_id = $1")
        .bind(discipline_id)
        .fetch_all(&mut *conn)
        .await?;
    for course in courses {
        reindex_course(conn, course).await?;
    }
    Ok(())
}
