//! The catalogue's closed sets — a course's [`CourseState`], its
//! [`ResourceType`], a search's [`SearchSort`] — as they are stored (text
//! columns with a CHECK constraint), answered and documented: the OpenAPI
//! document lists their values.
//!
//! Requests carry them as text and the handler reads them with
//! [`ClosedSet::read`], so a wrong value gets its own error code
//! (`invalid_state`, `invalid_resource_type`, `invalid_type`,
//! `invalid_sort`) rather than the generic `invalid_body`/`invalid_query`
//! of a body or query that does not parse.

use serde::{Deserialize, Serialize};

use lectern_web::{ApiError, ErrorCode};

/// A set of values named by snake_case text.
pub trait ClosedSet: Copy + 'static {
    const ALL: &'static [Self];

    /// The text a client sends and the database stores.
    fn as_str(self) -> &'static str;

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == text)
    }

    /// The value a client named in `field`, or `code` with a message
    /// listing every value.
    fn read(text: &str, field: &str, code: ErrorCode) -> Result<Self, ApiError> {
        Self::parse(text).ok_or_else(|| {
            let all: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
            ApiError::new(
                code,
                format!("{field}={text:?} is not one of {}", all.join(", ")),
            )
        })
    }
}

/// Where a course stands in its review: draft → in_review → published →
/// unpublished (→ draft for edits). Only drafts are edited; learners see
/// published courses only.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum CourseState {
    Draft,
    InReview,
    Published,
    Unpublished,
}

impl ClosedSet for CourseState {
    const ALL: &'static [Self] = &[
        Self::Draft,
        Self::InReview,
        Self::Published,
        Self::Unpublished,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::InReview => "in_review",
            Self::Published => "published",
            Self::Unpublished => "unpublished",
        }
    }
}

/// What kind of resource a course is; search filters by it (`type=`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ResourceType {
    VideoCourse,
    ClinicalCase,
    Guideline,
    LiveReplay,
}

impl ClosedSet for ResourceType {
    const ALL: &'static [Self] = &[
        Self::VideoCourse,
        Self::ClinicalCase,
        Self::Guideline,
        Self::LiveReplay,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::VideoCourse => "video_course",
            Self::ClinicalCase => "clinical_case",
            Self::Guideline => "guideline",
            Self::LiveReplay => "live_replay",
        }
    }
}

/// The order of search results: `relevance` (the default; by publication
/// time when `q` has no searchable words), `newest`, `most_watched`
/// (learners with progress on the lesson), `rating` (the course's average).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SearchSort {
    Relevance,
    Newest,
    MostWatched,
    Rating,
}

impl ClosedSet for SearchSort {
    const ALL: &'static [Self] = &[
        Self::Relevance,
        Self::Newest,
        Self::MostWatched,
        Self::Rating,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Relevance => "relevance",
            Self::Newest => "newest",
            Self::MostWatched => "most_watched",
            Self::Rating => "rating",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agrees<
        T: ClosedSet + Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    >() {
        for v in T::ALL {
            let wire = serde_json::to_value(v).unwrap();
            assert_eq!(wire, v.as_str(), "serde and as_str disagree");
            assert_eq!(serde_json::from_value::<T>(wire).unwrap(), *v);
            assert_eq!(T::parse(v.as_str()), Some(*v));
        }
        let err = T::read("nonsense", "field", ErrorCode::InvalidState).unwrap_err();
        assert!(err.message.contains(T::ALL[0].as_str()), "{}", err.message);
    }

    #[test]
    fn the_text_of_each_value_is_its_serde_name() {
        agrees::<CourseState>();
        agrees::<ResourceType>();
        agrees::<SearchSort>();
    }
}
