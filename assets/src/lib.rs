//! The asset, the one thing every station of the video's life shares:
//! ingest creates it, pipelines move it through its [`AssetStatus`]es,
//! delivery serves its outputs. Its storage-key layout ([`keys`]) is
//! written here once, so no crate builds or parses `assets/<id>/…` by hand.
//!
//! **API boundary:** ingest, pipelines and delivery depend on this crate;
//! it depends on nothing of theirs (only sqlx for the rows it writes).

pub mod keys;
mod lifecycle;

pub use lifecycle::{create, set_progress, transition, transition_in, NewAsset};

/// Lifecycle states, as stored (`assets.status`) and as shown to partners.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    sqlx::Type,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AssetStatus {
    /// The source is stored; waiting for a worker.
    Uploaded,
    /// A worker is reading the source's streams and duration.
    Probing,
    /// The ladder is being encoded; `progress` says how far.
    Transcoding,
    /// Playlists are being written and published.
    Packaging,
    /// Every rendition is published; `master_url` plays the whole ladder.
    Ready,
    /// Stopped for good; `error` says why.
    Failed,
    /// Stopped on request.
    Cancelled,
}

impl AssetStatus {
    pub const ALL: [AssetStatus; 7] = [
        Self::Uploaded,
        Self::Probing,
        Self::Transcoding,
        Self::Packaging,
        Self::Ready,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uploaded => "uploaded",
            Self::Probing => "probing",
            Self::Transcoding => "transcoding",
            Self::Packaging => "packaging",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for AssetStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AssetStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("{s:?} is not a status; expected one of {}", all.join(", "))
            })
    }
}

/// What a job in the queue (`jobs.kind`) does to its asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum JobKind {
    /// The whole asset: probe, encode (or split into parts), package, publish.
    Transcode,
    /// One chunk of a long source, or its audio and artwork (part 0).
    EncodePart,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transcode => "transcode",
            Self::EncodePart => "encode_part",
        }
    }
}
