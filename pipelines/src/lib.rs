//! Encoding profiles as data ([`profiles`]) and the workflow that turns a
//! source file into a published HLS ladder ([`transcode`]).

pub mod profiles;
pub mod transcode;
