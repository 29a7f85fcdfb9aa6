//! CORS for players served from another origin (the learner site, a
//! mini-program web view), layered around [`crate::media_routes`]: media is
//! public bytes gated by a URL token, so any origin may read it, players
//! send ranges and validators and need Content-Range to seek. The layer
//! answers every `OPTIONS` itself. No `Vary`: the answer is the same for
//! every origin, and a CDN honouring `Vary: Origin` would keep one copy
//! of each segment per learner site.
//!
//! Written out rather than tower-http's `CorsLayer`, which this project
//! uses where it can, because this layer wraps every `/media` request, the
//! origin's hot path, and the answer never depends on the request: every
//! value is static, so the layer and its headers are copied per request
//! without an allocation or a shared reference count. tower-http's layer
//! (cloned with the route service per request, its header values shared
//! and copied into a fresh map per response) cost the cached origin 3 %
//! of its requests per second (`benchmarks/RESULTS.md`, media origin).
//! `api/tests/origin.rs` checks the headers and the preflight answer.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use futures::future::{Either, FutureExt, Map, Ready};
use tower::{Layer, Service};

const ALLOW_ORIGIN: HeaderValue = HeaderValue::from_static("*");
const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET,HEAD,OPTIONS");
const ALLOW_HEADERS: HeaderValue =
    HeaderValue::from_static("range,if-none-match,if-modified-since,if-range");
const EXPOSE_HEADERS: HeaderValue =
    HeaderValue::from_static("content-range,content-length,accept-ranges,etag");
const MAX_AGE: HeaderValue = HeaderValue::from_static("86400");

#[derive(Clone, Copy, Debug, Default)]
pub struct Cors;

impl<S> Layer<S> for Cors {
    type Service = CorsService<S>;

    fn layer(&self, inner: S) -> CorsService<S> {
        CorsService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct CorsService<S> {
    inner: S,
}

type Answered = Result<Response, Infallible>;

impl<S> Service<Request> for CorsService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Answered>, Map<S::Future, fn(Answered) -> Answered>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.method() == Method::OPTIONS {
            return Either::Left(futures::future::ready(Ok(preflight())));
        }
        Either::Right(
            self.inner
                .call(request)
                .map(expose as fn(Answered) -> Answered),
        )
    }
}

/// Any `OPTIONS` is a preflight here: no route under the layer answers it.
fn preflight() -> Response {
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW_ORIGIN);
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
    response
}

fn expose(answered: Answered) -> Answered {
    let Ok(mut response) = answered;
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW_ORIGIN);
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS);
    Ok(response)
}
