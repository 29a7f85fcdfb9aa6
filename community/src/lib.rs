//! Community: what learners and experts write around the catalogue, and
//! how an organisation keeps it clean.
//!
//! - [`reviews`]: stars and text per learner per course (the catalogue's
//!   `course_ratings` rows, extended), sorted newest or most helpful,
//!   "helpful" votes; averages are the catalogue's ([`lectern_catalogue::ratings`]).
//! - [`comments`]: comments on lessons with one level of replies and an
//!   optional moment of the video; keyset pages.
//! - [`questions`]: consultation with experts: questions about a lesson
//!   (the course's experts answer) or to one expert, answers, acceptance,
//!   the expert's queue.
//! - [`moderation`]: every post passes [`moderation::admit`] in the
//!   transaction that writes it, which decides whether it shows at once
//!   (post-moderation) or waits in the queue (pre-moderation, or a listed
//!   word, [`words`]); reports, the queue, decisions (audited, the author
//!   notified), the per-organisation settings and word list.
//! - [`course_review`]: a course review rejected with a reason.
//! - [`surveys`]: satisfaction surveys an operator defines and attaches to
//!   courses, answered once at a course's completion, results per course
//!   and a CSV export; [`surveys::course_survey_summary`] is what
//!   analytics reads.
//! - [`limits`] and [`text`]: posting rates and lengths.
//! - [`notices`]: every notification this crate sends, in one place.
//!
//! Posts are scoped to the caller's organisation like everything else:
//! another organisation's post answers 404. User text is stored as text
//! and answered as JSON strings, never as HTML (see [`text`]).

pub mod comments;
pub mod course_review;
pub mod limits;
pub mod moderation;
pub mod notices;
pub mod questions;
pub mod reviews;
pub mod surveys;
pub mod text;
pub mod words;

use std::sync::Arc;
use std::time::Duration;

use lectern_clock::Clock;
use lectern_identity::Identity;
use lectern_web::{ApiError, ApiRouter, ClientContext, Permission, Principal};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use limits::{PostingLimiter, Rate};
use words::WordCache;

/// What a deployment decides about community posting.
#[derive(Debug, Clone)]
pub struct CommunitySettings {
    /// The time posting limits read; tests pass a manual clock.
    pub clock: Clock,
    /// Posts (reviews, comments, questions, answers, reports) one person
    /// may make within a window.
    pub per_user: Rate,
    /// Posts one client address may make within a window.
    pub per_address: Rate,
}

impl Default for CommunitySettings {
    fn default() -> Self {
        Self {
            clock: Clock::system(),
            per_user: Rate {
                count: 20,
                per: Duration::from_secs(600),
            },
            per_address: Rate {
                count: 200,
                per: Duration::from_secs(600),
            },
        }
    }
}

/// What posting needs besides the database: the compiled word lists and
/// the posting windows of this node.
pub struct Community {
    pub words: WordCache,
    pub limiter: PostingLimiter,
}

impl Community {
    pub fn new(settings: &CommunitySettings) -> Self {
        Self {
            words: WordCache::default(),
            limiter: PostingLimiter::new(
                settings.clock.clone(),
                settings.per_user,
                settings.per_address,
            ),
        }
    }
}

/// The community's state.
#[derive(Clone)]
pub struct CommunityState {
    pub db: PgPool,
    /// For the audit rows of moderation decisions.
    pub identity: Identity,
    pub community: Arc<Community>,
}

impl CommunityState {
    pub fn new(db: PgPool, identity: Identity, settings: &CommunitySettings) -> Self {
        Self {
            db,
            identity,
            community: Arc::new(Community::new(settings)),
        }
    }
}

pub fn routes(api: ApiRouter<CommunityState>) -> ApiRouter<CommunityState> {
    let api = reviews::routes(api);
    let api = comments::routes(api);
    let api = questions::routes(api);
    let api = moderation::routes(api);
    let api = surveys::routes(api);
    course_review::routes(api)
}

/// What kind of post something is: moderation, reports and notifications
/// name posts by kind and id.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    sqlx::Type,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum PostKind {
    Review,
    Comment,
    Question,
    Answer,
}

impl PostKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PostKind::Review => "review",
            PostKind::Comment => "comment",
            PostKind::Question => "question",
            PostKind::Answer => "answer",
        }
    }

    /// The table holding posts of this kind.
    pub(crate) fn table(self) -> &'static str {
        match self {
            PostKind::Review => "course_ratings",
            PostKind::Comment => "lesson_comments",
            PostKind::Question => "questions",
            PostKind::Answer => "answers",
        }
    }

    /// The column naming a post's author in its table.
    pub(crate) fn author_column(self) -> &'static str {
        match self {
            PostKind::Review => "user_id",
            _ => "author_id",
        }
    }
}

/// Where a post stands in moderation. Only `published` posts are seen by
/// anyone but their author and the moderators.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum PostState {
    /// Waiting for a moderator (pre-moderation, a listed word, or reports).
    Pending,
    Published,
    /// Refused by a moderator; the author sees the reason.
    Rejected,
    /// Taken down by a moderator.
    Hidden,
}

/// Who is posting, as the handlers hand it to the functions that write:
/// a signed-in person of an organisation.
#[derive(Debug, Clone)]
pub struct Author {
    pub user_id: Uuid,
    pub org_id: Uuid,
    pub ip: Option<String>,
}

impl Author {
    /// The caller as an author; partners' keys and global super admins
    /// (no organisation) do not post, and the permission table keeps them
    /// out before this is reached.
    pub fn of(principal: &Principal, context: &ClientContext) -> Result<Self, ApiError> {
        match (principal.user_id(), principal.org_id) {
            (Some(user_id), Some(org_id)) => Ok(Self {
                user_id,
                org_id,
                ip: context.ip.clone(),
            }),
            _ => Err(ApiError::new(
                lectern_web::ErrorCode::Forbidden,
                "posts come from signed-in people of an organisation",
            )),
        }
    }
}

/// Whether the caller moderates (and so sees posts in every state).
pub(crate) fn moderates(principal: &Principal) -> bool {
    Permission::ModerateCommunity.granted_to(principal.role)
}
