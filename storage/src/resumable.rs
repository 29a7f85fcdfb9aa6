//! Resumable uploads: an object written over many requests, possibly by
//! several processes one after another, and published whole at the end.
//!
//! The caller keeps the [`ResumableUpload`] handle (it is plain serde data,
//! meant for a database row) and passes it back for every step, so no
//! process holds upload state in memory between requests and a restarted
//! server resumes from the last handle it persisted.
//!
//! **A handle is a snapshot that stays valid until the caller moves on.** An
//! append never destroys what the handle it was given refers to: the fs
//! backend truncates its append file back to the handle's size before
//! writing, and the S3 backend writes new parts under new part numbers and
//! its short tail under a new staging key. A caller that rejects an append
//! (a bad checksum, a lost race) therefore simply keeps the old handle and
//! the rejected bytes are overwritten or swept up at completion or abort.
//! The price: one key has at most one resumable upload at a time, and
//! appends to one upload must be serialised by the caller.

use serde::{Deserialize, Serialize};

use crate::PutOptions;

/// Where a resumable upload stands: which key it will become, how many bytes
/// are stored so far, and the backend's own bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumableUpload {
    pub(crate) key: String,
    pub(crate) size: u64,
    pub(crate) content_type: Option<String>,
    pub(crate) cache_control: Option<String>,
    pub(crate) backend: BackendState,
}

impl ResumableUpload {
    /// The key the object is published under on completion.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Bytes durably stored so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn opts(&self) -> PutOptions {
        PutOptions {
            content_type: self.content_type.clone(),
            cache_control: self.cache_control.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub(crate) enum BackendState {
    /// An append file under `<root>/uploads/`.
    Fs { file: String },
    S3 {
        /// Created with the first full part, so small uploads never leave a
        /// multipart upload behind.
        multipart_id: Option<String>,
        parts: Vec<StoredPart>,
        /// Bytes after the last full part, staged as an ordinary object
        /// because S3 parts must be at least 5 MiB.
        tail: Option<StagedTail>,
        /// Names this upload's staging prefix.
        token: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredPart {
    pub(crate) number: i32,
    pub(crate) etag: String,
    pub(crate) size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StagedTail {
    pub(crate) key: String,
    pub(crate) size: u64,
}

/// The outcome of [`crate::Store::append_upload`].
#[derive(Debug)]
pub struct Appended {
    /// The handle after the append, covering every byte that was received
    /// and stored, even when the body failed part-way.
    pub upload: ResumableUpload,
    /// Set when the body stream failed (client gone, checksum refused by a
    /// wrapping stream): `upload` then covers the bytes before the failure.
    pub interrupted: Option<std::io::Error>,
}
