//! Partner uploads: the tus server of `lectern_ingest`, mounted at
//! `/api/v1/uploads` behind the same identity and authorisation as every
//! other route. Ingest knows nothing of API keys or sessions; this module
//! tells it which organisation a request acts for.
//!
//! The tus server routes its own paths, so it is mounted with
//! `ApiRouter::nest_service`, which records every (method, path) it
//! answers with its `Access` (OPTIONS public, the rest `UploadMedia`) and
//! refuses any other method with 405 before tus sees it: the tus routes
//! sit in the authorisation matrix and the OpenAPI document like any
//! other. `serve` runs [`sweep_periodically`] every five minutes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::{HeaderMap, Method};
use lectern_ingest::tus::{self, TusState};
use lectern_ingest::{AuthError, Partner, PartnerAuthenticator};

use lectern_identity::session;
use lectern_web::router::NestedRoute;
use lectern_web::{Access, ApiRouter, Credential, Permission};
use tokio_util::sync::CancellationToken;

use crate::AppState;

pub const MOUNT: &str = "/api/v1/uploads";

pub fn routes(api: ApiRouter<AppState>, state: &AppState) -> ApiRouter<AppState> {
    let upload = Access::Permission(Permission::UploadMedia);
    // OPTIONS describes the server (versions, extensions, max size) and is
    // what browsers send before a cross-origin upload: no credentials.
    // The tus 1.0.0 protocol (core, creation, checksum, expiration,
    // termination) is headers, not JSON: each route says what it is.
    let one: &str = "/api/v1/uploads/{upload_id}";
    let routes: [NestedRoute; 6] = [
        (Method::OPTIONS, MOUNT, Access::Public, |op| {
            op.summary =
                Some("tus: what this server supports (Tus-Version, Tus-Extension, Tus-Max-Size)");
            op.response(204, "the server's tus capabilities, in headers", None);
        }),
        (Method::POST, MOUNT, upload, |op| {
            op.summary = Some("tus creation: a new upload (Upload-Length, Upload-Metadata: filename, title, profile)");
            op.response(
                201,
                "created; Location names the upload, whose id is the asset's",
                None,
            );
        }),
        (Method::OPTIONS, one, Access::Public, |op| {
            op.summary = Some("tus: CORS preflight of an upload");
            op.response(204, "the server's tus capabilities, in headers", None);
        }),
        (Method::HEAD, one, upload, |op| {
            op.summary = Some("tus: where the upload stands (Upload-Offset, Upload-Length)");
            op.response(200, "the offset to resume from, in headers", None);
        }),
        (Method::PATCH, one, upload, |op| {
            op.summary = Some("tus: append bytes at Upload-Offset (application/offset+octet-stream, optional Upload-Checksum)");
            op.request = Some((
                "application/offset+octet-stream",
                schemars::json_schema!({ "type": "string", "contentMediaType": "application/offset+octet-stream" }),
            ));
            op.response(204, "appended; Upload-Offset is the new offset", None);
        }),
        (Method::DELETE, one, upload, |op| {
            op.summary = Some("tus termination: abandon the upload");
            op.response(204, "terminated", None);
        }),
    ];
    let service = tus::router(tus_state(state));
    api.nest_service(MOUNT, &routes, service)
}

/// The tus server's view of this deployment.
pub fn tus_state(state: &AppState) -> TusState {
    TusState::new(
        state.db.clone(),
        state.store.clone(),
        Arc::new(Callers(state.clone())),
        (*state.uploads).clone(),
    )
}

/// Expires abandoned uploads and finishes interrupted completions, every
/// `every`, until `cancel`. Safe on every node at once.
pub async fn sweep_periodically(state: AppState, every: Duration, cancel: CancellationToken) {
    let tus = tus_state(&state);
    {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !state
                .schema_ready
                .load(std::sync::atomic::Ordering::Acquire)
            {
                continue;
            }
            match tus::sweep(&tus).await {
                Ok(report) if report.expired + report.finished > 0 => {
                    tracing::info!(
                        expired = report.expired,
                        finished = report.finished,
                        "upload sweep"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "upload sweep failed; retrying next round"),
            }
        }
    }
}

/// Recognises the caller as the identity middleware does (partner key or
/// session); the route's [`Access`] has already been enforced, so this only
/// names the organisation the upload belongs to.
struct Callers(AppState);

#[async_trait]
impl PartnerAuthenticator for Callers {
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Partner, AuthError> {
        let principal = session::authenticate(&self.0.identity, headers)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?
            .ok_or(AuthError::Missing)?;
        if !Permission::UploadMedia.granted_to(principal.role) {
            return Err(AuthError::Invalid);
        }
        // A global super admin belongs to no organisation: uploads need one.
        let organisation_id = principal.org_id.ok_or(AuthError::Invalid)?;
        let key_id = match principal.credential {
            Credential::PartnerKey { key_id } => key_id,
            Credential::Session { session_id, .. } => session_id,
        };
        Ok(Partner {
            organisation_id,
            key_id,
        })
    }
}
