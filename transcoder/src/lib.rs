//! Pure media work: probing a source ([`probe`]), planning an HLS ladder from
//! what was probed ([`ladder`]), and encoding that ladder with GStreamer
//! ([`encode`]).
//!
//! Invariant: this crate never touches the network, SQL or object storage.
//! Files in, files out; every failure comes back as a [`MediaError`] value
//! with a stable code, never a panic or a hang.

pub mod content;
pub mod encode;
mod error;
pub mod ladder;
pub mod loudness;
mod media_info;
pub mod probe;
pub mod split;

pub use error::{MediaError, MediaErrorCode};
pub use ladder::{AudioRendition, LadderPlan, LadderProfile, VideoRendition};
pub use media_info::{AudioStream, MediaInfo, Rational, StreamInfo, VideoStream};
