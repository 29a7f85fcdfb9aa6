//! Who may do what, in one place: the roles, the permissions, the one table
//! that says which role holds which permission ([`Permission::roles`]),
//! the [`Access`] a route declares, and the [`Principal`] the identity
//! middleware puts in each request. No handler checks a role by hand;
//! handlers scope their queries to the caller's organisation
//! ([`Principal::org_scope`]) so another organisation's resources answer
//! 404, never revealing that they exist.
//!
//! The table lives here rather than in `lectern-identity` because every
//! HTTP crate declares its routes with these permissions, and `ingest`
//! must not depend on identity; identity owns how a principal is
//! recognised and how a step-up is proven (see [`crate::router::StepUpCheck`]).

use uuid::Uuid;

use crate::{ApiError, ErrorCode};
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Learner,
    Expert,
    Partner,
    ContentAdmin,
    SuperAdmin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Learner,
        Role::Expert,
        Role::Partner,
        Role::ContentAdmin,
        Role::SuperAdmin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Learner => "learner",
            Role::Expert => "expert",
            Role::Partner => "partner",
            Role::ContentAdmin => "content_admin",
            Role::SuperAdmin => "super_admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = ApiError;

    fn from_str(s: &str) -> Result<Self, ApiError> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRole,
                format!("{s:?} is not a role; expected learner, expert, partner, content_admin or super_admin"),
            )
        })
    }
}

/// What a route needs its caller to be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Bring a source in: tus uploads and URL pulls.
    UploadMedia,
    /// Read assets' status, progress and events; manage webhooks.
    ReadAssets,
    /// Create, list and disable the organisation's webhooks.
    ManageWebhooks,
    /// How an asset is delivered: HLS AES-128 encryption on or off.
    ManageAssets,
    /// The pipeline's per-asset event log (workers, attempts): operators.
    ReadPipelineEvents,
    /// How delivery performs for the organisation's learners (QoE
    /// summaries: startup time, rebuffering, switches, fatal errors).
    ReadPlaybackQuality,
    /// Draft courses: create, edit drafts, chapters, lessons, order, submit
    /// for review, take back to draft.
    ManageCourses,
    /// Publish (approve a review or relist) and unpublish courses.
    PublishCourses,
    /// The organisation's disciplines and expert profiles.
    ManageCatalogue,
    /// Rate and review published courses (stars and text), and vote
    /// other learners' reviews helpful.
    RateCourses,
    /// Comment on lessons and reply to comments.
    PostComments,
    /// Report another person's post to the moderators.
    ReportPosts,
    /// Ask the experts a question about a lesson, or ask one directly.
    AskQuestions,
    /// Answer questions: an expert, on the courses they are named on and
    /// the questions put to them (the handler scopes this, not the role).
    AnswerQuestions,
    /// The moderation queue and its decisions, the organisation's
    /// moderation mode and sensitive-word list.
    ModerateCommunity,
    /// Satisfaction surveys: define them, attach them to courses, read
    /// their results and export them.
    ManageSurveys,
    /// Answer a course's satisfaction survey once the course is completed.
    AnswerSurveys,
    /// Live lectures: schedule them, see and rotate their stream keys,
    /// end them (the replay is published from what was streamed).
    ManageLive,
    /// Lessons' captions: upload (WebVTT or SRT), replace and delete the
    /// caption track of a language. Whoever brings content in (partners,
    /// experts on the courses that credit them, content admins): captions
    /// are not part of what a course review approves.
    ManageCaptions,
    DeleteCourses,
    ListUsers,
    InviteExperts,
    ChangeRoles,
    DeleteUsers,
    ExportPersonalData,
    ReadAudit,
    ReadMetrics,
    /// The organisation's learning reports (overview, courses, lessons,
    /// experts, QoE) and their aggregate exports.
    ReadReports,
    /// An expert's report of the courses they are named on.
    ReadOwnCourseReports,
    /// Learner-level records (transcripts, xAPI statements, exports
    /// naming learners): personal data, so a step-up and an audit row.
    ExportLearnerRecords,
    /// The reporting time zone, credit rules and course credit designations.
    ManageCredits,
    /// Add or remove one's own ways in (a phone number, WeChat, single
    /// sign-on identities): anyone signed in, with a fresh step-up.
    LinkSignIns,
    /// The organisation's sign-in policy (which ways in, just-in-time
    /// learners or invitations) and its identity providers.
    ManageSignIn,
}

impl Permission {
    /// THE permission matrix: which roles hold each permission. A super
    /// admin of an organisation holds it within that organisation; a global
    /// super admin (no organisation) everywhere.
    pub fn roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Permission::UploadMedia
            | Permission::ReadAssets
            | Permission::ManageWebhooks
            | Permission::ManageAssets => &[Partner, ContentAdmin, SuperAdmin],
            Permission::ManageCourses => &[Expert, ContentAdmin, SuperAdmin],
            Permission::ManageCaptions => &[Partner, Expert, ContentAdmin, SuperAdmin],
            Permission::RateCourses | Permission::AskQuestions | Permission::AnswerSurveys => {
                &[Learner]
            }
            Permission::PostComments | Permission::ReportPosts => &[Learner, Expert],
            Permission::AnswerQuestions => &[Expert],
            Permission::ReadPipelineEvents
            | Permission::ReadPlaybackQuality
            | Permission::PublishCourses
            | Permission::ManageCatalogue
            | Permission::DeleteCourses
            | Permission::ListUsers
            | Permission::InviteExperts
            | Permission::ModerateCommunity
            | Permission::ReadReports
            | Permission::ExportLearnerRecords
            | Permission::ManageCredits
            | Permission::ManageSurveys
            | Permission::ManageLive => &[ContentAdmin, SuperAdmin],
            Permission::ReadOwnCourseReports => &[Expert],
            // Not partners: their API keys have no session to step up or to sign in with.
            Permission::LinkSignIns => &[Learner, Expert, ContentAdmin, SuperAdmin],
            Permission::ChangeRoles
            | Permission::DeleteUsers
            | Permission::ExportPersonalData
            | Permission::ReadAudit
            | Permission::ReadMetrics
            | Permission::ManageSignIn => &[SuperAdmin],
        }
    }

    /// Critical operations need a fresh step-up of the same session
    /// (TOTP or a one-time code), consumed by the one request it allows.
    pub fn requires_step_up(self) -> bool {
        matches!(
            self,
            Permission::ChangeRoles
                | Permission::DeleteUsers
                | Permission::DeleteCourses
                | Permission::ExportPersonalData
                | Permission::ExportLearnerRecords
                | Permission::LinkSignIns
                | Permission::ManageSignIn
        )
    }

    pub fn granted_to(self, role: Role) -> bool {
        self.roles().contains(&role)
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// A signed-in person (a session), not a partner API key.
    Session,
    /// Any caller that authenticated, by session or API key.
    Authenticated,
    /// A caller whose role holds the permission.
    Permission(Permission),
}

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Session { user_id: Uuid, session_id: Uuid },
    PartnerKey { key_id: Uuid },
}

/// The authenticated caller, put in the request by the identity middleware.
/// As an extractor it answers 401 when the request has no caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub credential: Credential,
    /// `None` for a global super admin.
    pub org_id: Option<Uuid>,
    pub role: Role,
}

impl Principal {
    /// The organisation the caller's queries are limited to; `None` means
    /// every organisation (a global super admin).
    pub fn org_scope(&self) -> Option<Uuid> {
        self.org_id
    }

    pub fn user_id(&self) -> Option<Uuid> {
        match self.credential {
            Credential::Session { user_id, .. } => Some(user_id),
            Credential::PartnerKey { .. } => None,
        }
    }

    pub fn session_id(&self) -> Option<Uuid> {
        match self.credential {
            Credential::Session { session_id, .. } => Some(session_id),
            Credential::PartnerKey { .. } => None,
        }
    }

    /// The organisation something new is created in: the caller's own
    /// (naming it is allowed), or for a global super admin the one named.
    /// Naming another organisation answers 404, as if it did not exist.
    pub fn target_org(&self, named: Option<Uuid>) -> Result<Uuid, ApiError> {
        match (self.org_id, named) {
            (Some(own), None) => Ok(own),
            (Some(own), Some(named)) if named == own => Ok(own),
            (Some(_), Some(named)) => Err(ApiError::not_found(format!("no organisation {named}"))),
            (None, Some(named)) => Ok(named),
            (None, None) => Err(ApiError::new(
                ErrorCode::OrgRequired,
                "a global super admin must say which organisation this belongs to (org_id)",
            )),
        }
    }

    /// `user:<id>` or `key:<id>`, as the audit log names actors.
    pub fn actor(&self) -> String {
        match self.credential {
            Credential::Session { user_id, .. } => format!("user:{user_id}"),
            Credential::PartnerKey { key_id } => format!("key:{key_id}"),
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .copied()
            .ok_or_else(ApiError::unauthenticated)
    }
}
