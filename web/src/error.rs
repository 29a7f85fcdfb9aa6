//! One error vocabulary for every endpoint: an [`ErrorCode`] names what
//! went wrong, and the code alone decides the HTTP status and whether the
//! client may retry, so the same mistake gets the same answer everywhere.
//! Every error body is [`ErrorBody`],
//! `{"error":{"code":"…","message":"…"}}`; codes are stable and
//! machine-readable, messages are for people. Bad input is never a 500, and
//! a database that cannot be reached is a 503 with `Retry-After` on every
//! route (see `From<sqlx::Error>`).
//!
//! `docs/errors.md` is generated from [`ErrorCode::ALL`] (a test compares
//! them), and the OpenAPI document lists the codes as an enum.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])+ $variant:ident = ($code:literal, $status:literal, $retry:literal); )+) => {
        /// What went wrong, as clients branch on it. See the module docs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])+ $variant, )+
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$( ErrorCode::$variant, )+];

            /// The stable snake_case code in the body.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $code, )+ }
            }

            pub fn status(self) -> StatusCode {
                let code: u16 = match self { $( ErrorCode::$variant => $status, )+ };
                StatusCode::from_u16(code).expect("every status in the table is valid")
            }

            /// Whether the same request may succeed later unchanged.
            pub fn retryable(self) -> bool {
                match self { $( ErrorCode::$variant => $retry, )+ }
            }

            /// What the code means, for the generated reference.
            pub fn meaning(self) -> &'static str {
                match self { $( ErrorCode::$variant => concat!($($doc),+).trim_ascii(), )+ }
            }
        }
    };
}

error_codes! {
    // --- the request itself ---------------------------------------------
    /// The JSON body does not parse or does not have the expected shape.
    InvalidBody = ("invalid_body", 422, false);
    /// The body is not declared as `application/json`.
    UnsupportedMediaType = ("unsupported_media_type", 415, false);
    /// A path parameter does not parse (say, a malformed id), or a media path could not be an object key.
    InvalidPath = ("invalid_path", 400, false);
    /// The query string does not parse or has a value of the wrong type.
    InvalidQuery = ("invalid_query", 400, false);
    /// A request that is malformed in a way no more specific code describes.
    InvalidRequest = ("invalid_request", 400, false);
    /// No such route, or no such resource visible to the caller.
    NotFound = ("not_found", 404, false);
    /// The route exists but not with this method.
    MethodNotAllowed = ("method_not_allowed", 405, false);
    /// `limit` is outside the range the list allows.
    InvalidLimit = ("invalid_limit", 400, false);
    /// A pagination cursor that this server did not issue or that no longer applies.
    InvalidCursor = ("invalid_cursor", 400, false);
    /// A global super admin must name the organisation (`org_id`).
    OrgRequired = ("org_required", 422, false);

    // --- who is calling -------------------------------------------------
    /// No valid session or API key.
    Unauthenticated = ("unauthenticated", 401, false);
    /// The caller's role does not hold the permission this needs.
    Forbidden = ("forbidden", 403, false);
    /// A critical operation needs a fresh step-up of this session (TOTP or a one-time code).
    StepUpRequired = ("step_up_required", 403, false);
    /// Wrong email or password.
    InvalidCredentials = ("invalid_credentials", 401, false);
    /// Too many failed sign-ins: the account is locked for a while (`Retry-After`).
    AccountLocked = ("account_locked", 429, true);
    /// Too many failed attempts from this address or for this account (`Retry-After`).
    LockedOut = ("locked_out", 429, true);
    /// This address sent too many requests that were refused or went to routes that do not exist; wait for `Retry-After` seconds.
    RateLimited = ("rate_limited", 429, true);
    /// The TOTP or one-time code is wrong or expired.
    InvalidCode = ("invalid_code", 403, false);
    /// TOTP is enabled; the sign-in needs its code.
    TotpRequired = ("totp_required", 401, false);
    /// TOTP is already enabled for this account.
    TotpAlreadyEnabled = ("totp_already_enabled", 409, false);
    /// TOTP is not enabled for this account.
    TotpNotEnabled = ("totp_not_enabled", 409, false);
    /// No TOTP enrolment is waiting for confirmation.
    NoPendingTotp = ("no_pending_totp", 409, false);
    /// The email address is not a valid address.
    InvalidEmail = ("invalid_email", 400, false);
    /// The password is too short or too common.
    WeakPassword = ("weak_password", 400, false);
    /// A password is needed to create the account.
    PasswordRequired = ("password_required", 400, false);
    /// Another account uses this email address.
    EmailInUse = ("email_in_use", 409, false);
    /// The role name is not one of learner, expert, partner, content_admin, super_admin.
    InvalidRole = ("invalid_role", 400, false);
    /// The invitee already holds a role at least as privileged.
    AlreadyPrivileged = ("already_privileged", 409, false);
    /// The invitation has been accepted already.
    InvitationUsed = ("invitation_used", 410, false);
    /// The invitation has expired; ask for a new one.
    InvitationExpired = ("invitation_expired", 410, false);
    /// The invitation was revoked by the organisation; ask for a new one.
    InvitationRevoked = ("invitation_revoked", 410, false);
    /// A newer invitation was sent to this address; use the link in the newest message.
    InvitationSuperseded = ("invitation_superseded", 410, false);
    /// The invitation was already accepted or revoked, so it cannot be resent or revoked.
    InvitationNotPending = ("invitation_not_pending", 409, false);
    /// Experts change only the courses that credit their own expert profile.
    NotCourseExpert = ("not_course_expert", 403, false);
    /// An expert needs an expert profile linked to their account before drafting courses; a content admin creates it.
    ExpertProfileRequired = ("expert_profile_required", 409, false);
    /// This notification cannot be turned off by e-mail (one-time codes, invitations, sign-up messages).
    NotificationMandatory = ("notification_mandatory", 422, false);
    /// A signed token (invitation, playback) is malformed, forged or signed with an unknown key.
    InvalidToken = ("invalid_token", 403, false);
    /// The audit export format is not one the server writes.
    InvalidFormat = ("invalid_format", 400, false);
    /// This needs the account's password again, or a fresh step-up of this session.
    ReauthenticationRequired = ("reauthentication_required", 403, false);
    /// The password given to confirm this operation is wrong.
    WrongPassword = ("wrong_password", 403, false);
    /// The organisation does not accept self sign-up; ask it for an invitation.
    SignupDisabled = ("signup_disabled", 403, false);
    /// The sign-up confirmation has expired or was used already; sign up again.
    ConfirmationExpired = ("confirmation_expired", 410, false);
    /// The organisation does not allow this way of signing in (its sign-in policy).
    SignInMethodDisabled = ("sign_in_method_disabled", 403, false);
    /// The phone number is not a number SMS can reach (E.164, or 11 digits in mainland China).
    InvalidPhone = ("invalid_phone", 400, false);
    /// Another account has proven this phone number.
    PhoneInUse = ("phone_in_use", 409, false);
    /// This identity (WeChat, OIDC, LDAP) is linked to another account already.
    IdentityInUse = ("identity_in_use", 409, false);
    /// Removing this would leave the account with no way to sign in.
    LastSignInMethod = ("last_sign_in_method", 409, false);
    /// No account matches and the organisation creates accounts only by invitation.
    InvitationRequired = ("invitation_required", 403, false);
    /// The single sign-on answer failed a check (state, nonce, signature, audience, expiry); start again.
    SignInRejected = ("sign_in_rejected", 401, false);
    /// The identity provider could not be reached or answered an error; try again later.
    ProviderUnavailable = ("provider_unavailable", 502, true);
    /// The organisation has not configured this way of signing in.
    ProviderNotConfigured = ("provider_not_configured", 409, false);
    /// The hand-off code (mini-program → H5) is unknown or forged, the session that made it has ended, or it belongs to another organisation; sign in again in the mini-program.
    HandoffInvalid = ("handoff_invalid", 401, false);
    /// The hand-off code was redeemed already (it works once); open the page again from the mini-program.
    HandoffUsed = ("handoff_used", 410, false);
    /// The hand-off code expired (it lives about a minute); open the page again from the mini-program.
    HandoffExpired = ("handoff_expired", 410, false);

    // --- media delivery -------------------------------------------------
    /// A media request without `?token=`.
    MissingToken = ("missing_token", 401, false);
    /// A genuine playback token of another asset.
    WrongAsset = ("wrong_asset", 403, false);
    /// The playback token has expired; ask for a new playback session.
    ExpiredToken = ("expired_token", 403, false);
    /// The sign-in session the token is bound to has ended.
    SessionEnded = ("session_ended", 403, false);
    /// This needs a token bound to a signed-in session (encrypted media keys).
    SessionRequired = ("session_required", 403, false);
    /// The asset is encrypted: its clear path is not served.
    EncryptedPath = ("encrypted_path", 404, false);
    /// The path names an encryption key the asset no longer uses.
    StaleMediaPath = ("stale_media_path", 404, false);
    /// No such encryption key for the asset.
    KeyNotFound = ("key_not_found", 404, false);
    /// The byte range lies outside the object.
    RangeNotSatisfiable = ("range_not_satisfiable", 416, false);
    /// A live playlist's `_HLS_msn` / `_HLS_part` is not a number, `_HLS_part` came without `_HLS_msn`, or it asks for a segment or part too far ahead of the live edge (LL-HLS blocking reload).
    InvalidDeliveryDirective = ("invalid_delivery_directive", 400, false);
    /// The live playlist did not reach the segment or part asked for within three target durations; reload it.
    PlaylistUpdatePending = ("playlist_update_pending", 503, true);
    /// The CDN's token check did not say which URI it checks.
    MissingOriginalUri = ("missing_original_uri", 400, false);
    /// The player SDK bundle has not been built (`make player-sdk`).
    PlayerNotBuilt = ("player_not_built", 404, false);

    // --- assets, uploads, pulls, webhooks ------------------------------
    /// The status filter is not an asset status.
    InvalidStatus = ("invalid_status", 400, false);
    /// The title is empty or too long.
    InvalidTitle = ("invalid_title", 422, false);
    /// The encoding profile does not exist.
    InvalidProfile = ("invalid_profile", 422, false);
    /// The URL is not an http(s) URL Lectern may fetch.
    UrlNotAllowed = ("url_not_allowed", 422, false);
    /// The URL's host resolves to a private, loopback or link-local address not on the operator's allow-list.
    PrivateAddress = ("private_address", 422, false);
    /// The source is larger than this server accepts.
    SourceTooLarge = ("source_too_large", 413, false);
    /// The source took too long or went quiet.
    SourceTimeout = ("source_timeout", 502, true);
    /// The source could not be reached.
    SourceUnreachable = ("source_unreachable", 502, true);
    /// The source answered with an HTTP error.
    SourceHttpError = ("source_http_error", 502, true);
    /// The bytes are not a video or audio file.
    NotMedia = ("not_media", 422, false);
    /// A newer attempt took the pull over.
    PullSuperseded = ("pull_superseded", 409, false);
    /// The server stopped during a download that cannot be resumed; submit the URL again.
    PullInterrupted = ("pull_interrupted", 409, false);
    /// A live event's schedule or settings are out of range (an end before the start, a window outside its bounds).
    InvalidLiveEvent = ("invalid_live_event", 422, false);
    /// The live event is over: it cannot be ended again or take a new stream key.
    LiveEventEnded = ("live_event_ended", 409, false);
    /// A webhook URL that is not https, or not reachable under the egress rules.
    InvalidUrl = ("invalid_url", 422, false);
    /// A webhook subscription names an unknown event.
    InvalidEvents = ("invalid_events", 422, false);
    /// The tus version is not 1.0.0.
    UnsupportedTusVersion = ("unsupported_tus_version", 412, false);
    /// No such upload.
    UploadNotFound = ("upload_not_found", 404, false);
    /// The upload expired or was terminated.
    UploadGone = ("upload_gone", 410, false);
    /// `Upload-Offset` is not where the upload stands; HEAD it and resume from there.
    OffsetMismatch = ("offset_mismatch", 409, false);
    /// Another request is writing to this upload right now.
    UploadBusy = ("upload_busy", 409, true);
    /// The upload is complete; nothing more can be appended.
    UploadFinished = ("upload_finished", 409, false);
    /// The upload is larger than this server accepts.
    UploadTooLarge = ("upload_too_large", 413, false);
    /// The organisation's quota of unfinished uploads is used up.
    QuotaExceeded = ("quota_exceeded", 413, true);
    /// The body goes beyond the declared `Upload-Length`.
    BodyExceedsUploadLength = ("body_exceeds_upload_length", 413, false);
    /// The chunk's checksum does not match its bytes; send the chunk again (tus's own status 460).
    ChecksumMismatch = ("checksum_mismatch", 460, true);
    /// `Upload-Checksum` is not `<algorithm> <base64 digest>` of the right length.
    InvalidChecksum = ("invalid_checksum", 400, false);
    /// The chunk ended before its declared end, so its checksum cannot be verified; it was discarded.
    IncompleteChunk = ("incomplete_chunk", 400, true);
    /// A tus header is missing or malformed.
    InvalidHeader = ("invalid_header", 400, false);
    /// `Upload-Metadata` is malformed.
    InvalidMetadata = ("invalid_metadata", 400, false);
    /// The checksum algorithm is not supported (sha1, sha256).
    UnsupportedChecksumAlgorithm = ("unsupported_checksum_algorithm", 400, false);
    /// `Upload-Length` is required; deferred lengths are not supported.
    DeferredLengthUnsupported = ("deferred_length_unsupported", 400, false);
    /// `Upload-Offset` is missing.
    MissingUploadOffset = ("missing_upload_offset", 400, false);
    /// `Upload-Length` is missing.
    MissingUploadLength = ("missing_upload_length", 400, false);
    /// An upload of zero bytes.
    EmptyUpload = ("empty_upload", 400, false);
    /// A PATCH body must be `application/offset+octet-stream`.
    UnsupportedContentType = ("unsupported_content_type", 415, false);
    /// The organisation has as many URL pulls, or as many bytes of them, in flight as it may; submit again once some have finished.
    PullQuotaExceeded = ("pull_quota_exceeded", 429, true);

    // --- catalogue and search --------------------------------------------
    /// A name is empty or too long.
    InvalidName = ("invalid_name", 422, false);
    /// A description is too long.
    InvalidDescription = ("invalid_description", 422, false);
    /// A tag is empty, too long or repeated.
    InvalidTag = ("invalid_tag", 422, false);
    /// The resource type is not one of the catalogue's types.
    InvalidResourceType = ("invalid_resource_type", 422, false);
    /// The course state filter is not a course state.
    InvalidState = ("invalid_state", 400, false);
    /// The course cannot move from its state to the one asked for.
    InvalidTransition = ("invalid_transition", 409, false);
    /// Only draft courses can be edited; take it back to draft first.
    CourseNotEditable = ("course_not_editable", 409, false);
    /// A course needs a lesson with a ready video before review.
    CourseEmpty = ("course_empty", 409, false);
    /// The order lists other items than the container holds.
    InvalidOrder = ("invalid_order", 422, false);
    /// A rating must be a whole number from 1 to 5.
    InvalidRating = ("invalid_rating", 422, false);
    /// No such discipline in the organisation.
    UnknownDiscipline = ("unknown_discipline", 422, false);
    /// No such expert in the organisation.
    UnknownExpert = ("unknown_expert", 422, false);
    /// No such chapter in the course.
    UnknownChapter = ("unknown_chapter", 422, false);
    /// No such asset in the organisation.
    UnknownAsset = ("unknown_asset", 422, false);
    /// A sibling discipline already has this name.
    DisciplineExists = ("discipline_exists", 409, false);
    /// The move would put a discipline under itself.
    DisciplineCycle = ("discipline_cycle", 409, false);
    /// The search text is too long.
    InvalidQueryText = ("invalid_query_text", 400, false);
    /// The `type` filter is not a resource type.
    InvalidType = ("invalid_type", 400, false);
    /// The sort is not one the search offers.
    InvalidSort = ("invalid_sort", 400, false);
    /// A date filter is not a date (YYYY-MM-DD) or an RFC 3339 time.
    InvalidDate = ("invalid_date", 400, false);
    /// A duration filter is negative or not a number.
    InvalidDuration = ("invalid_duration", 400, false);

    // --- captions --------------------------------------------------------
    /// The language is not a BCP-47 tag such as `zh-CN` or `en`.
    InvalidLanguage = ("invalid_language", 422, false);
    /// The caption file is larger than captions may be (2 MiB).
    CaptionTooLarge = ("caption_too_large", 413, false);
    /// The caption file is not UTF-8 text (UTF-16, GBK and other encodings are not read).
    CaptionEncoding = ("caption_encoding", 422, false);
    /// The file is neither WebVTT nor SRT.
    CaptionFormat = ("caption_format", 422, false);
    /// A line of the caption file does not parse (a timestamp, a cue, a header); the message names the line.
    CaptionMalformed = ("caption_malformed", 422, false);
    /// A cue ends before (or when) it starts.
    CaptionCueTiming = ("caption_cue_timing", 422, false);
    /// A cue starts before the cue above it; cues are listed in the order they start.
    CaptionCueOrder = ("caption_cue_order", 422, false);
    /// The caption file has no cues.
    CaptionEmpty = ("caption_empty", 422, false);
    /// A cue starts after the lesson's video ends: the file belongs to another video.
    CaptionBeyondDuration = ("caption_beyond_duration", 422, false);
    /// Captions need the lesson's video to be ready (transcoded) first.
    LessonVideoNotReady = ("lesson_video_not_ready", 409, false);
    /// The lesson has as many caption languages as it may (50).
    TooManyCaptions = ("too_many_captions", 409, false);

    // --- community ------------------------------------------------------
    /// A post's text is empty (after trimming) where text is required.
    TextEmpty = ("text_empty", 422, false);
    /// A post's text is longer than its kind allows (reviews 5,000, comments 2,000, questions 5,000, answers 10,000, reasons 500 characters).
    TextTooLong = ("text_too_long", 422, false);
    /// A post's text holds control characters other than newlines and tabs.
    InvalidText = ("invalid_text", 422, false);
    /// This person or address posted too much in a short time; wait for `Retry-After` seconds.
    PostingTooFast = ("posting_too_fast", 429, true);
    /// Replies are one level deep: a reply cannot be replied to.
    NestedReply = ("nested_reply", 422, false);
    /// This cannot be done to one's own post (a helpful vote, a report).
    OwnPost = ("own_post", 409, false);
    /// This person has reported this post already.
    AlreadyReported = ("already_reported", 409, false);
    /// The question already has an accepted answer.
    AnswerAlreadyAccepted = ("answer_already_accepted", 409, false);
    /// The moderation case has been decided already.
    AlreadyDecided = ("already_decided", 409, false);
    /// A rejection (of a post or a course review) needs a reason of 1–500 characters.
    ReasonRequired = ("reason_required", 422, false);
    /// The moderation decision is not one of approve, reject, hide.
    InvalidDecision = ("invalid_decision", 422, false);
    /// The moderation mode is not `pre` or `post`, or the report threshold is outside 1–1000.
    InvalidModeration = ("invalid_moderation", 422, false);
    /// A sensitive word is empty once spacing and punctuation are removed, or longer than 100 characters.
    InvalidWord = ("invalid_word", 422, false);
    /// The organisation's list already has this word (compared after folding).
    WordExists = ("word_exists", 409, false);
    /// The organisation's sensitive-word list is at its maximum.
    WordListFull = ("word_list_full", 422, false);
    /// A sort of reviews other than `newest` or `helpful`.
    InvalidReviewSort = ("invalid_review_sort", 400, false);
    /// A survey or one of its questions is malformed (no options for a choice question, a scale outside 0–10, too many questions or options, a survey opened without questions); the message says which.
    InvalidSurvey = ("invalid_survey", 422, false);
    /// The question was asked in a response already, so it cannot change or be deleted; retire it and add a new question instead.
    SurveyQuestionFrozen = ("survey_question_frozen", 409, false);
    /// The survey has responses, so it cannot be deleted; close it instead.
    SurveyHasResponses = ("survey_has_responses", 409, false);
    /// The survey is closed: it takes no more responses.
    SurveyClosed = ("survey_closed", 409, false);
    /// The caller has not completed the course yet (every lesson 90 % watched), which its survey and its certificate need.
    CourseNotCompleted = ("course_not_completed", 409, false);
    /// The caller has answered this survey for this course already; a response cannot be changed.
    SurveyAlreadyAnswered = ("survey_already_answered", 409, false);
    /// A survey response does not fit the survey's questions (an unknown or retired question, a required one missing, an option of another question, a scale value out of range); the message says which.
    InvalidSurveyAnswer = ("invalid_survey_answer", 422, false);

    // --- learning -------------------------------------------------------
    /// The playback speed is outside the allowed range.
    InvalidSpeed = ("invalid_speed", 422, false);
    /// A watched interval ends before it starts.
    InvalidInterval = ("invalid_interval", 422, false);
    /// A watched interval is longer than a heartbeat can cover.
    IntervalTooLong = ("interval_too_long", 422, false);
    /// A position or time is negative.
    NegativeValue = ("negative_value", 422, false);
    /// A position lies beyond the lesson's end.
    PastDuration = ("past_duration", 422, false);
    /// A QoE report is malformed.
    InvalidQoe = ("invalid_qoe", 422, false);
    /// The QoE window is outside 1–720 hours.
    InvalidHours = ("invalid_hours", 400, false);
    /// A heartbeat's `playback_id` is not a live playback session of this learner for this lesson (it expired, the server forgot it, or it is another lesson's): start a new one with `POST /api/v1/lessons/{id}/playback` and send its `playback_id`.
    PlaybackSessionExpired = ("playback_session_expired", 409, false);

    // --- analytics, credits and certificates ----------------------------
    /// A report's date range is malformed, reversed, or longer than the report allows.
    InvalidDateRange = ("invalid_date_range", 400, false);
    /// The time zone is not an IANA name PostgreSQL knows (e.g. `Asia/Shanghai`).
    InvalidTimeZone = ("invalid_time_zone", 400, false);
    /// A credit rule or designation is outside what the platform allows (rate, rounding step, cap, class).
    InvalidCreditRule = ("invalid_credit_rule", 422, false);
    /// The course has no credit designation, so it awards no certificate.
    NoCreditDesignation = ("no_credit_designation", 409, false);
    /// A certificate needs the learner's name: send `name` (2–50 characters).
    NameRequired = ("name_required", 422, false);
    /// The report is not one of the exportable reports, or the format is not csv or xlsx.
    InvalidExport = ("invalid_export", 400, false);
    /// The export has not finished yet (see its `state` and progress).
    ExportNotReady = ("export_not_ready", 409, true);

    // --- the server -----------------------------------------------------
    /// The database cannot be reached or is overloaded right now.
    DatabaseUnavailable = ("database_unavailable", 503, true);
    /// Object storage cannot be reached right now.
    StorageUnavailable = ("storage_unavailable", 503, true);
    /// The progress store (Redis) cannot be reached right now.
    ProgressUnavailable = ("progress_unavailable", 503, true);
    /// A dependency is briefly unavailable.
    TemporarilyUnavailable = ("temporarily_unavailable", 503, true);
    /// A setting this needs is missing on the server (the message names it).
    NotConfigured = ("not_configured", 503, false);
    /// The node is not ready (see `/readyz`).
    NotReady = ("not_ready", 503, true);
    /// A failure of ours; it has been logged.
    Internal = ("internal", 500, true);
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The codes as a string enum (the OpenAPI document describes each).
impl schemars::JsonSchema for ErrorCode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ErrorCode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        schemars::json_schema!({ "type": "string", "enum": codes })
    }
}

/// Codes compare with their wire form, as clients see them.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Seconds a client should wait before retrying a 503 of ours.
const RETRY_AFTER_UNAVAILABLE: u64 = 5;

#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Sent as `Retry-After`; 503s get a default.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            ErrorCode::Unauthenticated,
            "sign in, or send a valid bearer token",
        )
    }

    /// A setting this needs is missing (`/readyz` names it too).
    pub fn not_configured(variable: &str) -> Self {
        Self::new(
            ErrorCode::NotConfigured,
            format!("{variable} is not configured"),
        )
    }

    /// A failure of ours, not the caller's: logged in full, shown briefly.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            ErrorCode::Internal,
            "an internal error occurred; it has been logged",
        )
    }

    /// The database cannot serve us right now: the caller may retry.
    pub fn database_unavailable(err: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %err, "database unavailable");
        Self::new(
            ErrorCode::DatabaseUnavailable,
            "the database is unavailable right now; try again shortly",
        )
    }
}

/// Whether a database error means "PostgreSQL cannot be reached or is
/// overloaded" (retry later) rather than a fault in our query.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // 08: connection exception; 57P01–57P03: admin shutdown, crash
            // shutdown, cannot connect now; 53300: too many connections.
            c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            Self::database_unavailable(e)
        } else {
            Self::internal(e)
        }
    }
}

/// The body of every error response.
#[derive(Debug, serde::Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let retry_after = self.retry_after.or_else(|| {
            (status == StatusCode::SERVICE_UNAVAILABLE && self.code.retryable())
                .then_some(RETRY_AFTER_UNAVAILABLE)
        });
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

/// The fallback of the whole router.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_documented() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert!(!code.meaning().is_empty(), "{s} has no meaning");
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }
}
