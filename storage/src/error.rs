//! The one error type every store returns.

/// Errors from any [`crate::Store`]. Messages name the key or backend involved
/// and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object `{key}` does not exist")]
    NotFound { key: String },

    #[error("invalid object key `{key}`: {reason}")]
    InvalidKey { key: String, reason: String },

    #[error(
        "requested byte range is not satisfiable: the object is {size} bytes, \
         so a range must start below {size}"
    )]
    RangeNotSatisfiable { size: u64 },

    #[error("{backend} storage backend error: {message}")]
    Backend {
        backend: &'static str,
        message: String,
    },

    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
