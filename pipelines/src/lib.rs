//! Encoding profiles as data ([`profiles`]), the workflow that turns a
//! source file into an HLS ladder ([`transcode`]), and the durable side:
//! the asset lifecycle (`lectern-assets`), the job queue ([`jobs`]) and the
//! worker that drains it ([`worker`]).

mod chunked;
mod failure;
mod jobs;
pub mod profiles;
mod progressive;
pub mod stage;
pub mod transcode;
pub mod worker;
