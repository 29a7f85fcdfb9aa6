//! Upload intake: where assets are born. Partners' uploads (tus), URL pulls
//! and recording drops all end the same way: a source object in storage and
//! an asset row, which the pipeline's queue picks up (a database trigger
//! enqueues its transcode job in the same transaction).

mod auth;
pub mod drops;
pub mod http;
pub mod pull;
mod sniff;
pub mod tus;

pub use auth::{AuthError, Partner, PartnerAuthenticator};
