//! The two web apps built from `apps/` (Vue + Vite): the learner H5 app at
//! `/app/` and the admin console at `/admin/`. Both are read from disk under
//! [`AppsSettings::dir`] (`LECTERN_APPS_DIR`, `<dir>/learner/dist` and
//! `<dir>/admin/dist`, built by `npm run build` in `apps/` or `make apps`),
//! so the binary and the bundles are rebuilt independently, as for the demo
//! page's player bundle.
//!
//! How a request under a mount is answered:
//! - `assets/…` (Vite puts a content hash in every file name there) is the
//!   file, cached for a year as `immutable`: a new build has new names. A
//!   `.gz` sibling written by the build is sent instead to a client that
//!   accepts gzip. Only plain relative names are looked up, never `..`.
//! - any other path without a dot in its last segment is a client route:
//!   the app's `index.html`, `no-cache` (it names the current hashed
//!   files), so deep links and reloads work (SPA fallback).
//! - anything else is 404.
//!
//! Every page carries [`APP_CSP`]: scripts and styles from this origin only,
//! no inline code and no eval (Vite emits none; vue-i18n compiles messages
//! without `new Function`), media from this origin and MSE blobs.
//! When a bundle is not built, its pages are a 503 saying how to build it.

use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use lectern_web::{Access, ApiError, ApiPath, ApiRouter};

use crate::AppState;

/// Where the built apps are.
#[derive(Debug, Clone)]
pub struct AppsSettings {
    /// The `apps/` workspace (`LECTERN_APPS_DIR`); each app's build is its `dist/`.
    pub dir: PathBuf,
}

impl Default for AppsSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(DEFAULT_APPS_DIR),
        }
    }
}

/// Relative to the working directory: `make demo` runs from the checkout.
pub const DEFAULT_APPS_DIR: &str = "apps";

/// One app: the URL prefix it is served under (spelled as the three
/// routes it takes) and its workspace folder.
#[derive(Debug, Clone, Copy)]
pub struct App {
    pub mount: &'static str,
    index: &'static str,
    files: &'static str,
    pub folder: &'static str,
}

pub const LEARNER: App = App {
    mount: "/app",
    index: "/app/",
    files: "/app/{*path}",
    folder: "learner",
};
pub const ADMIN: App = App {
    mount: "/admin",
    index: "/admin/",
    files: "/admin/{*path}",
    folder: "admin",
};

/// The apps' policy. `form-action 'self'` because sign-in forms submit
/// (the apps send them with `fetch`, but a form without script must not
/// post elsewhere); `data:` images and fonts for the component libraries'
/// inlined icons.
pub const APP_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; font-src 'self' data:; media-src 'self' blob:; \
     connect-src 'self'; worker-src 'self' blob:; manifest-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Hashed files never change under their name.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

const NOT_BUILT: &str = include_str!("apps_not_built.html");

pub fn routes(api: ApiRouter<AppState>) -> ApiRouter<AppState> {
    let mut api = api;
    for app in [LEARNER, ADMIN] {
        api = mount(api, app);
    }
    api
}

fn mount(api: ApiRouter<AppState>, app: App) -> ApiRouter<AppState> {
    api.route(Method::GET, app.mount, Access::Public, move || async move {
        Redirect::permanent(app.index).into_response()
    })
        .describe(|op| {
            op.summary = Some("redirects to the app with a trailing slash");
            op.raw(308, "text/plain", "the app's address");
        })
        .route(
            Method::GET,
            app.index,
            Access::Public,
            move |state: State<AppState>, headers: HeaderMap| async move {
                serve(state, headers, app, String::new()).await
            },
        )
        .describe(|op| {
            op.summary = Some("a web app's page (index.html)");
            op.raw(200, "text/html", "the page");
            op.raw(503, "text/html", "a page saying how to build the app");
        })
        .route(
            Method::GET,
            app.files,
            Access::Public,
            move |state: State<AppState>, headers: HeaderMap, ApiPath(path): ApiPath<String>| async move {
                serve(state, headers, app, path).await
            },
        )
        .describe(|op| {
            op.summary = Some(
                "a web app's hashed file (assets/…, cached as immutable), or its page for a client route",
            );
            op.raw(200, "*/*", "the file, or the page for a client route");
            op.raw(503, "text/html", "a page saying how to build the app");
        })
}

/// Where an app's build is.
pub fn dist(settings: &AppsSettings, app: App) -> PathBuf {
    settings.dir.join(app.folder).join("dist")
}

async fn serve(
    State(state): State<AppState>,
    headers: HeaderMap,
    app: App,
    path: String,
) -> Result<Response, ApiError> {
    let dist = dist(&state.apps, app);
    match classify(&path) {
        Request::Asset(relative) => asset(&dist, relative, &headers).await,
        Request::Page => Ok(page(&dist, app).await),
        Request::Missing => Err(ApiError::not_found(format!(
            "no file {path:?} in the app at {}/",
            app.mount
        ))),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Request<'a> {
    /// A built file under `assets/`, by its relative name.
    Asset(&'a str),
    /// A client route: the app's page.
    Page,
    Missing,
}

fn classify(path: &str) -> Request<'_> {
    if let Some(name) = path.strip_prefix("assets/") {
        let plain = !name.is_empty()
            && name.split('/').all(|segment| {
                !segment.is_empty()
                    && !segment.starts_with('.')
                    && segment
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            });
        return if plain {
            Request::Asset(path)
        } else {
            Request::Missing
        };
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    if last.contains('.') {
        Request::Missing
    } else {
        Request::Page
    }
}

async fn page(dist: &Path, app: App) -> Response {
    let index = dist.join("index.html");
    let (status, body) = match tokio::fs::read_to_string(&index).await {
        Ok(html) => (StatusCode::OK, html),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            // The path is the operator's own configuration, shown to help them fix it.
            NOT_BUILT
                .replace(
                    "{{dist}}",
                    &lectern_web::html::escape(&dist.display().to_string()),
                )
                .replace("{{app}}", app.folder),
        ),
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(APP_CSP),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn asset(dist: &Path, relative: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let path = dist.join(relative);
    let content_type = content_type(relative);
    let gzip = accepts_gzip(headers) && compressible(content_type);
    if gzip {
        let mut compressed = path.clone().into_os_string();
        compressed.push(".gz");
        if let Ok(bytes) = tokio::fs::read(&compressed).await {
            return Ok(file_response(content_type, bytes, Some("gzip")));
        }
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok(file_response(content_type, bytes, None)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::not_found(format!(
            "no built file {relative:?}: an older or newer build? reload the page"
        ))),
        Err(e) => Err(ApiError::internal(format!(
            "reading {}: {e}",
            path.display()
        ))),
    }
}

fn file_response(
    content_type: &'static str,
    bytes: Vec<u8>,
    encoding: Option<&'static str>,
) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if let Some(encoding) = encoding {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    response
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.starts_with("application/json")
        || content_type.starts_with("image/svg")
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or_default() {
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_files_client_routes_and_the_rest() {
        assert_eq!(
            classify("assets/index-B4wmwnXg.js"),
            Request::Asset("assets/index-B4wmwnXg.js")
        );
        assert_eq!(classify(""), Request::Page);
        assert_eq!(classify("courses/0193/lessons/0194"), Request::Page);
        assert_eq!(classify("favicon.ico"), Request::Missing);
        assert_eq!(classify(".vite/manifest.json"), Request::Missing);
        for sneaky in [
            "assets/../index.html",
            "assets/..",
            "assets/.gz",
            "assets/",
            "assets//x.js",
            "assets/a b.js",
            "assets/%2e%2e/x",
        ] {
            assert_eq!(classify(sneaky), Request::Missing, "{sneaky}");
        }
    }

    #[test]
    fn gzip_only_when_accepted() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_gzip(&headers));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.8"),
        );
        assert!(accepts_gzip(&headers));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0, br"),
        );
        assert!(!accepts_gzip(&headers));
    }

    #[test]
    fn policy_allows_no_inline_code() {
        assert!(APP_CSP.contains("script-src 'self';"));
        assert!(!APP_CSP.contains("unsafe"));
        assert!(APP_CSP.contains("frame-ancestors 'none'"));
    }
}
