//! Where a request came from ([`ClientContext`], put in the request by the
//! identity middleware, which alone knows the trusted proxies), and the
//! marker a telemetry handler sets so its successes are not audited.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};

/// Where a request came from, for the audit log, throttling and alerts.
#[derive(Debug, Clone, Default)]
pub struct ClientContext {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientContext>()
            .cloned()
            .unwrap_or_default())
    }
}

/// The TCP peer of the request, when the server recorded it.
pub fn peer(request: &Request) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

/// Whether the request comes from this machine itself (for `/metrics`
/// scrapers). A request a proxy forwarded is never local, even when the
/// proxy runs on this machine: it carries the proxy's forwarding headers.
pub fn is_loopback_peer(request: &Request) -> bool {
    let forwarded = ["x-forwarded-for", "forwarded", "x-real-ip"]
        .iter()
        .any(|h| request.headers().contains_key(*h));
    !forwarded && peer(request).is_some_and(|p| p.ip().is_loopback())
}

/// Put in a response's extensions by a handler whose requests are
/// telemetry rather than operations (progress heartbeats, thousands a
/// second): the audit middleware then writes no row for a success or a
/// server error (overload must not add audit writes). Denials and client
/// errors of such requests are still audited.
#[derive(Debug, Clone, Copy)]
pub struct Unaudited;
