//! The learner demo page at `/`: sign in, pick a published lesson, watch it
//! with the player SDK (speed buttons, quality menu). The page, its script
//! and its style are compiled into the binary; the SDK bundle is read from
//! [`DemoSettings::player_dir`] (built by `npm run build` in `player-sdk/`),
//! so the binary and the bundle can be rebuilt independently.
//!
//! The page runs no inline code, so its CSP allows scripts from this origin
//! only; `blob:` is needed for media because hls.js feeds the video element
//! through Media Source Extensions, and for its transmuxing worker.

use std::path::PathBuf;

use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use lectern_web::{Access, ApiError, ApiPath, ApiRouter, ErrorCode};

use crate::AppState;

/// Where the demo page finds the player SDK bundle.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// The SDK's `dist/` directory (`LECTERN_PLAYER_DIR`).
    pub player_dir: PathBuf,
}

impl Default for DemoSettings {
    fn default() -> Self {
        Self {
            player_dir: PathBuf::from(DEFAULT_PLAYER_DIR),
        }
    }
}

/// Relative to the working directory: `make demo` runs from the checkout.
pub const DEFAULT_PLAYER_DIR: &str = "player-sdk/dist";

/// The SDK files the page may load; anything else under `/player/` is 404.
const PLAYER_FILES: [(&str, &str); 4] = [
    ("lectern-player.js", "text/javascript; charset=utf-8"),
    ("lectern-player.js.map", "application/json"),
    ("lectern-player.mjs", "text/javascript; charset=utf-8"),
    ("lectern-player.mjs.map", "application/json"),
];

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");
const NOT_BUILT: &str = include_str!("not_built.html");

/// The page's policy: its own scripts and styles only, media from this
/// origin (the `/media` origin) and MSE blobs, API calls to this origin.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; \
     worker-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes(api: ApiRouter<AppState>) -> ApiRouter<AppState> {
    api.route(Method::GET, "/", Access::Public, page)
        .describe(|op| {
            op.summary = Some("the learner demo page");
            op.raw(200, "text/html", "the page");
            op.raw(
                503,
                "text/html",
                "a page saying how to build the player SDK",
            );
        })
        .route(Method::GET, "/demo/app.js", Access::Public, script)
        .describe(|op| {
            op.raw(200, "text/javascript", "the demo page's script");
        })
        .route(Method::GET, "/demo/style.css", Access::Public, style)
        .describe(|op| {
            op.raw(200, "text/css", "the demo page's style");
        })
        .route(Method::GET, "/player/{file}", Access::Public, player_file)
        .describe(|op| {
            op.summary = Some("the player SDK bundle (lectern-player.js, .mjs and their maps)");
            op.raw(200, "text/javascript", "a file of the SDK bundle");
        })
}

fn bundle_path(settings: &DemoSettings) -> PathBuf {
    settings.player_dir.join(PLAYER_FILES[0].0)
}

async fn page(State(state): State<AppState>) -> Response {
    let built = tokio::fs::try_exists(bundle_path(&state.demo))
        .await
        .unwrap_or(false);
    let (status, body) = if built {
        (StatusCode::OK, PAGE.to_string())
    } else {
        // Paths are the operator's own configuration, shown to help them fix it.
        let dir = state.demo.player_dir.display().to_string();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            NOT_BUILT.replace("{{player_dir}}", &lectern_web::html::escape(&dir)),
        )
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn embedded(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn script() -> Response {
    embedded("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    embedded("text/css; charset=utf-8", STYLE)
}

async fn player_file(
    State(state): State<AppState>,
    ApiPath(file): ApiPath<String>,
) -> Result<Response, ApiError> {
    // An allow-list, so no request can name any other file on disk.
    let Some((name, content_type)) = PLAYER_FILES.iter().find(|(name, _)| *name == file) else {
        return Err(ApiError::not_found(format!(
            "no player file {file:?}; the SDK is /player/lectern-player.js (IIFE) or /player/lectern-player.mjs (ES module)"
        )));
    };
    let path = state.demo.player_dir.join(name);
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok((
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ApiError::new(
            ErrorCode::PlayerNotBuilt,
            format!(
                "{} does not exist: build the player SDK (`cd player-sdk && npm ci && npm run build`, or `make demo`) or point LECTERN_PLAYER_DIR at its dist/ directory",
                path.display()
            ),
        )),
        Err(e) => Err(ApiError::internal(format!("reading {}: {e}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_has_no_inline_script() {
        // The CSP allows no inline code: every script must be a file.
        assert!(!PAGE.contains("<script>"));
        assert!(PAGE.contains("src=\"/player/lectern-player.js\""));
        assert!(PAGE.contains("src=\"/demo/app.js\""));
    }
}
