//! Media errors with stable machine-readable codes, shown to partners and
//! stored on failed assets. Codes never change once published.

use serde::Serialize;

/// Stable error codes. The string form (`code()`) is the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaErrorCode {
    /// The bytes are not a media container at all (a PDF, a zero-byte file).
    NotMedia,
    /// A container, but with no audio or video stream we can decode.
    NoDecodableStream,
    /// Decoding failed part-way: truncated or damaged data.
    CorruptMedia,
    /// A stream codec we recognise but cannot decode here.
    UnsupportedCodec,
    /// A picture larger than the worker's limits (see `ladder::SourceLimits`),
    /// refused at probe before anything decodes it.
    FrameTooLarge,
    /// Longer than the worker's limit, refused at probe.
    DurationTooLong,
    /// The job was cancelled by the caller.
    Cancelled,
    /// Reading or writing local files failed.
    Io,
    /// A bug or an environment problem (missing GStreamer element...).
    Internal,
}

impl MediaErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotMedia => "not_media",
            Self::NoDecodableStream => "no_decodable_stream",
            Self::CorruptMedia => "corrupt_media",
            Self::UnsupportedCodec => "unsupported_codec",
            Self::FrameTooLarge => "frame_too_large",
            Self::DurationTooLong => "duration_too_long",
            Self::Cancelled => "cancelled",
            Self::Io => "io_error",
            Self::Internal => "internal",
        }
    }

    /// Whether retrying the same input could succeed. Bad media never does.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Io | Self::Internal)
    }
}

/// A media failure: a stable code plus a message a partner can act on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct MediaError {
    pub code: MediaErrorCode,
    pub message: String,
}

impl MediaError {
    pub fn new(code: MediaErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The JSON shape every Lectern surface uses for errors:
    /// `{"error":{"code":"…","message":"…"}}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "code": self.code.as_str(), "message": self.message } })
    }
}

impl From<std::io::Error> for MediaError {
    fn from(e: std::io::Error) -> Self {
        Self::new(MediaErrorCode::Io, e.to_string())
    }
}
