//! HTTP plumbing every area shares, and nothing of any area: the error
//! vocabulary ([`ErrorCode`], [`ApiError`]), extractors that answer in it,
//! who may do what ([`access`]), the route registry that makes every route
//! declare it ([`ApiRouter`]), and where a request came from ([`client`]).
//!
//! **API boundary:** every crate that serves HTTP builds on this one; it
//! depends on no Lectern crate.

pub mod access;
pub mod client;
pub mod doc;
pub mod error;
mod extract;
pub mod html;
pub mod metrics;
pub mod page;
pub mod router;

pub use access::{Access, Credential, Permission, Principal, Role};
pub use client::{ClientContext, Unaudited};
pub use doc::{Accepted, Created, NoContent};
pub use error::{ApiError, ErrorCode};
pub use extract::{ApiJson, ApiPath, ApiQuery};
pub use page::{Cursor, Limit};
pub use router::{ApiRouter, Gate, RouteSpec, Routes, StepUpCheck};
