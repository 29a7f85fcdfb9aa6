//! NOTIFICATIONS: every notification the community sends, in one place.
//! Each function runs inside the caller's transaction, so a notice exists
//! if and only if the decision it announces committed (the transactional
//! outbox of `lectern_notify::enqueue`).
//!
//! Who hears what:
//! - a post's author, of every moderation decision on it, with the reason
//!   (`moderation_outcome`);
//! - a course's experts (or the one expert asked), of a question once it
//!   is visible (`question_asked`);
//! - the asker, of an answer once it is visible (`question_answered`);
//! - the answering expert, when their answer is accepted (`answer_accepted`);
//! - a course's experts, when its review is rejected, with the reason
//!   (`course_review_rejected`).
//!
//! Every notice is for an account (`user_id`): notify resolves the
//! address, writes the inbox item and schedules the e-mail or SMS the
//! person's preferences allow. None of these topics holds a secret, so
//! parameters are enqueued in the clear (erased once delivered).
//!
//! Links are API paths of the thing concerned; clients map them to their
//! own pages.

use std::collections::BTreeMap;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::PostKind;

use lectern_notify::{enqueue, Notification, Topic};

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn to_user(
    conn: &mut PgConnection,
    org: Uuid,
    user: Uuid,
    topic: Topic,
    pairs: &[(&str, &str)],
) -> Result<(), sqlx::Error> {
    enqueue(
        conn,
        &Notification {
            org_id: Some(org),
            user_id: Some(user),
            to: None,
            topic,
            params: params(pairs),
        },
    )
    .await?;
    Ok(())
}

/// A moderator decided on `kind` by `author`: `outcome` is approved,
/// rejected or hidden.
pub async fn moderation_outcome(
    conn: &mut PgConnection,
    org: Uuid,
    author: Uuid,
    kind: PostKind,
    outcome: &str,
    reason: &str,
    excerpt: &str,
) -> Result<(), sqlx::Error> {
    to_user(
        conn,
        org,
        author,
        Topic::ModerationOutcome,
        &[
            ("kind", kind.as_str()),
            ("outcome", outcome),
            ("reason", reason),
            ("excerpt", excerpt),
        ],
    )
    .await
}

/// Where an expert answers: the console's question queue. Links are app
/// paths; notify makes them absolute for e-mail and SMS.
fn expert_questions_link(question_id: Uuid) -> String {
    format!("/admin/questions?question={question_id}")
}

/// A question became visible: to each expert who should answer it.
pub async fn question_asked(
    conn: &mut PgConnection,
    org: Uuid,
    experts: &[Uuid],
    course_title: &str,
    lesson_title: &str,
    excerpt: &str,
    question_id: Uuid,
) -> Result<(), sqlx::Error> {
    let link = expert_questions_link(question_id);
    for expert in experts {
        to_user(
            conn,
            org,
            *expert,
            Topic::QuestionAsked,
            &[
                ("course_title", course_title),
                ("lesson_title", lesson_title),
                ("excerpt", excerpt),
                ("link", &link),
            ],
        )
        .await?;
    }
    Ok(())
}

/// An answer became visible: to the asker.
pub async fn question_answered(
    conn: &mut PgConnection,
    org: Uuid,
    asker: Uuid,
    course_title: &str,
    excerpt: &str,
    course_id: Option<Uuid>,
    lesson_id: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    // The lesson's page (questions are read beside the video), else the
    // course's, else the learner's inbox.
    let link = match (course_id, lesson_id) {
        (Some(c), Some(l)) => format!("/app/courses/{c}/lessons/{l}"),
        (Some(c), None) => format!("/app/courses/{c}"),
        _ => "/app/me/inbox".to_string(),
    };
    to_user(
        conn,
        org,
        asker,
        Topic::QuestionAnswered,
        &[
            ("course_title", course_title),
            ("excerpt", excerpt),
            ("link", &link),
        ],
    )
    .await
}

/// The asker accepted an answer: to its author.
pub async fn answer_accepted(
    conn: &mut PgConnection,
    org: Uuid,
    answerer: Uuid,
    excerpt: &str,
    question_id: Uuid,
) -> Result<(), sqlx::Error> {
    let link = expert_questions_link(question_id);
    to_user(
        conn,
        org,
        answerer,
        Topic::AnswerAccepted,
        &[("excerpt", excerpt), ("link", &link)],
    )
    .await
}

/// A course review was rejected: to each of the course's experts with an account.
pub async fn course_review_rejected(
    conn: &mut PgConnection,
    org: Uuid,
    experts: &[Uuid],
    course_title: &str,
    reason: &str,
) -> Result<(), sqlx::Error> {
    for expert in experts {
        to_user(
            conn,
            org,
            *expert,
            Topic::CourseReviewOutcome,
            &[
                ("course_title", course_title),
                ("outcome", "rejected"),
                ("reason", reason),
            ],
        )
        .await?;
    }
    Ok(())
}
