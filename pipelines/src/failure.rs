//! Why a job did not succeed, and so what happens next: bad media fails
//! the asset at once, infrastructure trouble is retried with backoff, a
//! lost lease or a drain leaves no trace.

use lectern_transcoder::MediaError;

/// Why a job did not succeed.
#[derive(Debug)]
pub(crate) enum JobFailure {
    /// The media itself is at fault, or a transient media-side problem.
    Media(MediaError),
    /// Database or storage trouble: always worth a retry.
    Infrastructure(String),
    /// The asset names an encoding profile this deployment does not have;
    /// no retry can fix that.
    InvalidProfile(String),
    /// The job row itself is inconsistent (a part without its spec…): a
    /// retry reads the same row.
    InvalidSpec(String),
    /// Another worker owns the job now; this attempt must leave no trace.
    LeaseLost,
    /// Shutdown drain ran out: give the job back untouched.
    Interrupted,
}

impl From<sqlx::Error> for JobFailure {
    fn from(e: sqlx::Error) -> Self {
        Self::Infrastructure(format!("database: {e}"))
    }
}

impl From<lectern_storage::StorageError> for JobFailure {
    fn from(e: lectern_storage::StorageError) -> Self {
        Self::Infrastructure(format!("storage: {e}"))
    }
}

impl From<std::io::Error> for JobFailure {
    fn from(e: std::io::Error) -> Self {
        Self::Infrastructure(format!("local disk: {e}"))
    }
}
