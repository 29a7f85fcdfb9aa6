//! Partner uploads: the tus server of `lectern_ingest`, mounted at
//! `/api/v1/uploads` behind the same identity and authorisation as every
//! other route. Ingest knows nothing of API keys or sessions; this module
//! tells it which organisation a request acts for.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::http::{HeaderMap, Method};
use lectern_ingest::tus::{self, TusState};
use lectern_ingest::{AuthError, Partner, PartnerAuthenticator};

use lectern_identity::session;
use lectern_web::{Access, ApiRouter, Credential, Permission};
use tokio_util::sync::CancellationToken;

use crate::AppState;

pub const MOUNT: &str = "/api/v1/uploads";

pub fn routes(api: ApiRouter<AppState>, state: &AppState) -> ApiRouter<AppState> {
    let upload = Access::Permission(Permission::UploadMedia);
    // OPTIONS describes the server (versions, extensions, max size) and is
    // what browsers send before a cross-origin upload: no credentials.
    let routes = [
        (Method::OPTIONS, MOUNT, Access::Public),
        (Method::POST, MOUNT, upload),
        (
            Method::OPTIONS,
            "/api/v1/uploads/{upload_id}",
            Access::Public,
        ),
        (Method::HEAD, "/api/v1/uploads/{upload_id}", upload),
        (Method::PATCH, "/api/v1/uploads/{upload_id}", upload),
        (Method::DELETE, "/api/v1/uploads/{upload_id}", upload),
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
